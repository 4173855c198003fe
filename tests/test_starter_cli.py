"""``starter.py`` as people run it: clear errors, right exit codes, never a traceback."""

import asyncio
import json
import uuid
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import cast

import pytest
from temporalio.client import Client

from orders.client import orders
from orders.client.errors import OrderError
from orders.client.orders import OrderNotFound, follow_order, order_status, start_order
from orders.domain.models import OrderView
from orders.domain.rules import ship_refusal
from orders.domain.status import OrderStatus, Step
from sandbox.admin_client import SandboxAdmin
from tests.support import (
    make_order,
    order_awaiting_shipment,
    run_starter,
    until_listed,
    wait_for_status,
)
from tools.stack.processes import free_port
from workflows.order import OrderWorkflow


@pytest.fixture(scope="module")
def address(client: Client) -> str:
    return client.service_client.config.target_host


def hold_next_request(sandbox: SandboxAdmin, service: str, order_id: str, step: Step) -> None:
    """Hold this order's next request for ``step`` at the provider until ``release``."""
    sandbox.set_faults(service, hold_next=1, key_prefix=f"{order_id}:", key_suffix=f":{step.value}")


def accepted_line(order_id: str, action: str) -> str:
    return f"order {order_id}: {action} accepted;"


def write_order(tmp_path: Path, **overrides: object) -> tuple[str, Path]:
    order = make_order(**overrides)
    path = tmp_path / "order.json"
    path.write_text(order.model_dump_json())
    return order.id, path


async def test_start_ship_status_and_list_through_the_cli(
    client: Client, address: str, task_queue: str, tmp_path: Path
) -> None:
    order_id, path = write_order(tmp_path)
    started = await run_starter(
        "start", "--file", str(path), address=address, task_queue=task_queue
    )
    assert started.returncode == 0, started.stderr
    assert f"order {order_id} started: 45.00 USD" in started.stdout
    await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
    await until_listed(client, order_id, OrderStatus.AWAITING_SHIPMENT)

    listed = await run_starter("list", "--status", "awaiting-shipment", address=address)
    assert listed.returncode == 0 and order_id in listed.stdout

    shipped = await run_starter(
        "ship", order_id, "--carrier", "UPS", "--tracking", "1Z999", address=address
    )
    assert shipped.returncode == 0, shipped.stderr
    await wait_for_status(client, order_id, OrderStatus.COMPLETED)

    status = await run_starter("status", order_id, address=address)
    assert status.returncode == 0, status.stderr
    assert f"order {order_id}: completed" in status.stdout
    assert "tracking     UPS 1Z999" in status.stdout
    as_json = json.loads((await run_starter("status", order_id, "--json", address=address)).stdout)
    assert as_json["status"] == "completed"
    assert as_json["transaction_id"].startswith("ch_")


async def test_order_from_flags(client: Client, address: str, task_queue: str) -> None:
    order_id = make_order().id
    started = await run_starter(
        "start", "--order-id", order_id, "--customer-id", "c-9", "--name", "Alan Turing",
        "--email", "alan@example.com", "--item", "SKU-1:3:999", "--currency", "JPY",
        "--line1", "Bletchley Park", "--city", "Milton Keynes", "--postal-code", "MK3 6EB",
        "--country", "gb", address=address, task_queue=task_queue,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "2997 JPY for alan@example.com" in started.stdout
    view = await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
    assert (view.total, view.currency) == (2997, "JPY")


async def test_invalid_order_is_refused_per_field_and_nothing_starts(
    client: Client, address: str, tmp_path: Path
) -> None:
    order_id, path = write_order(tmp_path)
    result = await run_starter(
        "start", "--file", str(path), "--email", "nobody", "--currency", "XXX",
        "--payment-method", "4242424242424242", "--item", "SKU-1:0:100", address=address,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "customer.email: malformed email address 'nobody'" in result.stderr
    assert "currency: unknown currency 'XXX'" in result.stderr
    assert "payment_method: looks like a raw card number" in result.stderr
    assert "items.0.quantity: Input should be greater than 0" in result.stderr
    assert "4242424242424242" not in result.stderr  # a card number is never echoed
    with pytest.raises(OrderNotFound):
        await order_status(client, order_id)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["start", "--file", "missing.json"], 2, "cannot read missing.json"),
        (["start", "--item", "SKU"], 2, "is not SKU:QUANTITY:UNIT_PRICE"),
        (["status", "no-such-order"], 4, "no order no-such-order"),
        (["ship", "no-such-order", "--carrier", "UPS", "--tracking", "1Z999"], 4, "no order"),
        (["ship", "x", "--carrier", "UPS", "--tracking", "?"], 2, "tracking_number"),
        (["list", "--status", "lost"], 2, "invalid choice: 'lost'"),
        (["cancel", "x", "--reason", "r", "--timeout", "soon"], 2, "'soon' is not a duration"),
        (
            ["cancel", "x", "--reason", "r", "--no-wait", "--timeout", "5s"],
            2,
            "not allowed with argument --no-wait",
        ),
    ],
)
async def test_user_mistakes_get_a_message_and_exit_code(
    address: str, args: list[str], code: int, message: str
) -> None:
    result = await run_starter(*args, address=address)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


async def test_duplicate_start_exits_3(address: str, task_queue: str, tmp_path: Path) -> None:
    _, path = write_order(tmp_path)
    first = await run_starter("start", "--file", str(path), address=address, task_queue=task_queue)
    assert first.returncode == 0, first.stderr
    second = await run_starter("start", "--file", str(path), address=address, task_queue=task_queue)
    assert second.returncode == 3
    assert "already exists" in second.stderr


async def test_unreachable_server_exits_1_with_a_hint(tmp_path: Path) -> None:
    _, path = write_order(tmp_path)
    result = await run_starter("start", "--file", str(path), address=f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach Temporal at 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


async def test_cancel_says_accepted_at_once_then_prints_progress_and_the_outcome(
    client: Client, sandbox: SandboxAdmin, address: str, task_queue: str
) -> None:
    order = await order_awaiting_shipment(client, task_queue)

    cancelled = await run_starter("cancel", order.id, "--reason", "wrong size", address=address)

    assert cancelled.returncode == 0, cancelled.stderr
    lines = cancelled.stdout.splitlines()
    assert lines[0] == (
        f"order {order.id}: cancel accepted; winding down (refund, picklist, email)"
    )
    final = lines.index(f"order {order.id}: cancelled")
    progress = lines[1:final]
    assert progress, cancelled.stdout  # at least the state first seen after acceptance
    assert all(line.startswith("  ") for line in progress), cancelled.stdout
    assert all(a != b for a, b in pairwise(progress)), "one line per change"
    assert progress[-1].startswith("  cancelled: "), cancelled.stdout
    assert "refund       re_" in cancelled.stdout
    assert "reason       cancelled: wrong size" in cancelled.stdout
    effects = sandbox.effects(order.id)
    assert (effects.refunds, effects.refunded_amount) == (1, order.total)

    again = await run_starter("cancel", order.id, "--reason", "again", address=address)
    assert again.returncode == 5
    assert f"order {order.id} is already cancelled; it can't be cancelled" in again.stderr
    assert "accepted" not in again.stdout
    assert sandbox.effects(order.id).refunds == 1


async def test_cancel_no_wait_returns_once_accepted_and_the_order_still_cancels(
    client: Client, sandbox: SandboxAdmin, address: str, task_queue: str
) -> None:
    order = await order_awaiting_shipment(client, task_queue)
    hold_next_request(sandbox, "payments", order.id, Step.REFUND)

    result = await run_starter(
        "cancel", order.id, "--reason", "found it cheaper", "--no-wait", address=address
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(accepted_line(order.id, "cancel"))
    assert "timeline" not in result.stdout  # it did not wait for the outcome
    # The refund is still held at the gateway: the command returned before the wind-down ended.
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    assert (await order_status(client, order.id)).status == OrderStatus.CANCELLING
    sandbox.release("payments")
    view = await wait_for_status(client, order.id, OrderStatus.CANCELLED)
    assert view.refund_id is not None
    assert sandbox.effects(order.id).refunds == 1


async def test_cancel_timeout_exits_6_with_a_hint_and_the_order_carries_on(
    client: Client, sandbox: SandboxAdmin, address: str, task_queue: str
) -> None:
    order = await order_awaiting_shipment(client, task_queue)
    hold_next_request(sandbox, "payments", order.id, Step.REFUND)

    result = await run_starter(
        "cancel", order.id, "--reason", "too slow", "--timeout", "1s", address=address
    )

    assert result.returncode == 6, result.stderr
    assert (
        f"order {order.id} is still cancelling; follow it with: starter.py status {order.id}"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith(accepted_line(order.id, "cancel"))
    assert "  cancelling: refund started" in result.stdout.splitlines()
    # The refund is still held at the gateway: the order goes on without the command.
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    sandbox.release("payments")
    seen: list[OrderView] = []
    view = await follow_order(
        client, order.id, lambda v: v.status.is_final, seen.append, within=timedelta(seconds=30)
    )
    assert view.status == OrderStatus.CANCELLED
    assert view.refund_id is not None
    assert seen and seen[-1] == view  # on_change saw the views up to the last
    effects = sandbox.effects(order.id)
    assert (effects.refunds, effects.refunded_amount) == (1, order.total)


async def test_cancel_without_a_worker_says_so_instead_of_hanging(
    client: Client, address: str
) -> None:
    order = make_order()
    await start_order(client, order, f"no-worker-{uuid.uuid4().hex[:8]}")
    try:
        result = await run_starter("cancel", order.id, "--reason", "r", address=address)
        assert result.returncode == 1
        assert "no worker answered" in result.stderr
        assert "Start the stack with ./scripts/run" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        await client.get_workflow_handle_for(OrderWorkflow.run, order.id).terminate("test over")


async def test_waiting_for_acceptance_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker to run the validator: the wait for acceptance ends with a hint, not a hang."""
    monkeypatch.setattr(orders, "ACCEPT_TIMEOUT", timedelta(milliseconds=100))
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(OrderError, match="no worker answered") as raised:
        await orders._accepted(cast(Client, None), "o-1", "cancel", "cancelled", never)
    assert "Start the stack with ./scripts/run" in str(raised.value)
    assert type(raised.value) is OrderError  # exit 1, not "refused"


async def test_shipping_before_payment_is_refused_by_the_rule(
    client: Client, sandbox: SandboxAdmin, address: str, task_queue: str
) -> None:
    order = make_order()
    hold_next_request(sandbox, "payments", order.id, Step.PAYMENT_INTENT)
    await start_order(client, order, task_queue)
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    refusal = ship_refusal(await order_status(client, order.id))
    assert refusal is not None

    shipped = await run_starter(
        "ship", order.id, "--carrier", "UPS", "--tracking", "1Z999", address=address
    )

    assert shipped.returncode == 5, shipped.stderr
    assert f"error: {refusal}" in shipped.stderr
    assert "it can ship only once it is paid and picked" in shipped.stderr
    assert "Traceback" not in shipped.stderr
    sandbox.release("payments")
    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    assert view.shipment is None  # nothing was sent


async def test_resolve_and_listing_the_needs_attention_queue(
    client: Client, sandbox: SandboxAdmin, address: str, task_queue: str, tmp_path: Path
) -> None:
    order_id, path = write_order(tmp_path)
    sandbox.set_faults("payments", error_rate=1.0, key_prefix=f"{order_id}:")
    started = await run_starter(
        "start", "--file", str(path), "--payment-retry-budget", "2s",
        address=address, task_queue=task_queue,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    await wait_for_status(client, order_id, OrderStatus.NEEDS_ATTENTION)
    assert sandbox.fired("payments", f"{order_id}:")["fail"] > 0  # the gateway did fail it
    await until_listed(client, order_id, OrderStatus.NEEDS_ATTENTION)

    queue = await run_starter("list", "--status", "needs-attention", address=address)
    assert order_id in queue.stdout
    status = await run_starter("status", order_id, address=address)
    assert "attention    payment failing for over 2 seconds" in status.stdout

    sandbox.reset_faults()
    resolved = await run_starter("resolve", order_id, "--action", "retry-payment", address=address)
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.startswith(accepted_line(order_id, "retry-payment"))
    await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
    assert sandbox.effects(order_id).charges == 1

    refused = await run_starter("resolve", order_id, "--action", "cancel", address=address)
    assert refused.returncode == 5
    assert "not needs-attention; there is nothing to resolve" in refused.stderr
    assert "accepted" not in refused.stdout


async def test_bad_durations_are_refused(address: str, tmp_path: Path) -> None:
    _, path = write_order(tmp_path)
    bad = await run_starter("start", "--file", str(path), "--shipment-delayed-after", "soon",
                            address=address)  # fmt: skip
    assert bad.returncode == 2
    assert "'soon' is not a duration such as 90s, 15m, 2h or 3d" in bad.stderr
    inverted = await run_starter(
        "start", "--file", str(path), "--shipment-delayed-after", "5d",
        "--shipment-attention-after", "2d", address=address,
    )  # fmt: skip
    assert inverted.returncode == 2
    assert "shipment_attention_after must be later than shipment_delayed_after" in inverted.stderr
