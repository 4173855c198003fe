"""Replay recorded histories: a workflow change that breaks orders in flight fails here first.

Histories under ``tests/histories`` were recorded from real runs of the workflow. To record new
ones for the current version, run ``RECORD_HISTORIES=1 ./scripts/test -k record``; keep the older
versions' files: they are the orders still in flight when a new version is deployed.
"""

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateStage
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from orders.client.orders import cancel_order, order_status, resolve_order, ship_order, start_order
from orders.client.temporal import DATA_CONVERTER
from orders.domain.models import (
    CancelRequest,
    GatewayEvent,
    Order,
    OrderOptions,
    OrderView,
    ResolveRequest,
    Shipment,
)
from orders.domain.status import OperatorAction, OrderStatus, Step
from sandbox.admin_client import SandboxAdmin
from tests.support import (
    authenticate,
    make_order,
    until_cancel_request_handled,
    wait_for_status,
)
from worker import sandboxed_runner
from workflows.order import OrderWorkflow

HISTORIES = Path(__file__).parent / "histories"
UPS = Shipment(carrier="UPS", tracking_number="1Z99")


def recorded_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


async def replay(workflow_class: type, path: Path) -> None:
    """Replay one recorded history through ``workflow_class``, as a new worker would."""
    replayer = Replayer(
        workflows=[workflow_class],
        data_converter=DATA_CONVERTER,
        workflow_runner=sandboxed_runner(DATA_CONVERTER),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer.replay_workflow(history)


@pytest.mark.parametrize("path", recorded_histories(), ids=lambda p: p.stem)
async def test_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    await replay(OrderWorkflow, path)  # raises on any replay failure (the SDK default)


SCENARIOS = (
    "completed",
    "payment-declined",
    "cancelled",
    "out-of-stock",
    "operator-retry",
    "refused-step-retry",
    "prompt-cancel-stuck-payment",
    "cancel-held-confirm",
    "early-shipped-signal",
    "email-local-try-lost",
    "temporal-cancel",
    "temporal-cancel-after-shipment",
    "cancel-held-capture",
    "shipped-by-webhook",
    "cancel-meets-shipped",
    "shipped-unpaid",
    "cancel-meets-unpaid-parcel",
    "authorization-expired",
    "reauthorized",
    "refund-failed",
    "authenticated",
    "authentication-failed",
    "not-authenticated",
    "cancel-while-authenticating",
    "refund-woken",
    "authorization-canceled-by-event",
)
"""Every path an order can take (completed, declined, cancelled before, during or after a step,
parked for an operator, shipped unpaid, its authorization expired or renewed, a refund failed,
3-D Secure completed, failed or never done), recorded for each build."""
CURRENT = "v14"
"""Today's build: patch level 2 (``workflows.patches.LOCAL_PICKLIST_AND_CAPTURE``)."""
RECORDED = {
    "v12": SCENARIOS,  # the baseline, before any patch level: orders it started still run
    "v13": SCENARIOS,  # patch level 1 (``COALESCED_STATUS_UPSERTS``)
    CURRENT: SCENARIOS,
}
"""The recorded orders, per build; a build that adds a patch level records its own beside."""


def test_histories_are_committed() -> None:
    names = {path.stem for path in recorded_histories()}
    for version, scenarios in RECORDED.items():
        assert {f"{version}-{scenario}" for scenario in scenarios} <= names


@pytest.mark.skipif(not os.environ.get("RECORD_HISTORIES"), reason="set RECORD_HISTORIES=1")
async def test_record_histories(client: Client, sandbox: SandboxAdmin, task_queue: str) -> None:
    """Record the current version's histories from real runs; older ones stay as they were."""
    orders = {scenario: make_order() for scenario in RECORDED[CURRENT]}
    orders["payment-declined"] = make_order(payment_method="pm_card_chargeDeclined")
    sku = f"SKU-GONE-{orders['out-of-stock'].id}"
    sandbox.set_stock(sku, 0)
    orders["out-of-stock"] = make_order(items=[{"sku": sku, "quantity": 1, "unit_price": 100}])

    for scenario in ("completed", "payment-declined", "cancelled", "out-of-stock"):
        await start_order(client, orders[scenario], task_queue)
    await wait_for_status(client, orders["completed"].id, OrderStatus.AWAITING_SHIPMENT)
    await ship_order(client, orders["completed"].id, UPS)
    await wait_for_status(client, orders["cancelled"].id, OrderStatus.AWAITING_SHIPMENT)
    await cancel_order(client, orders["cancelled"].id, "customer changed their mind")

    retried = orders["operator-retry"].id
    sandbox.set_faults("payments", error_rate=1.0, key_prefix=f"{retried}:")
    budget = OrderOptions(payment_retry_budget=timedelta(seconds=2))
    await start_order(client, orders["operator-retry"], task_queue, budget)
    await wait_for_status(client, retried, OrderStatus.NEEDS_ATTENTION)
    sandbox.reset_faults()
    await resolve_order(client, retried, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))
    await wait_for_status(client, retried, OrderStatus.AWAITING_SHIPMENT)

    refused = orders["refused-step-retry"].id
    sandbox.set_faults("warehouse", refuse_next=1, key_prefix=f"{refused}:")
    await start_order(client, orders["refused-step-retry"], task_queue)
    await wait_for_status(client, refused, OrderStatus.NEEDS_ATTENTION)
    await resolve_order(client, refused, ResolveRequest(action=OperatorAction.RETRY))
    await wait_for_status(client, refused, OrderStatus.AWAITING_SHIPMENT)

    await record_cancels_and_early_reports(client, sandbox, task_queue, orders)
    await record_lost_local_answers(client, sandbox, task_queue, orders)
    await record_temporal_cancels(client, sandbox, task_queue, orders)
    await record_held_capture_and_webhooks(client, sandbox, task_queue, orders)
    await record_real_world_money(client, sandbox, task_queue, orders)
    await record_customer_in_the_loop(client, sandbox, task_queue, orders)

    for scenario, order in orders.items():
        handle = client.get_workflow_handle(order.id)
        if scenario not in (
            "operator-retry",
            "refused-step-retry",
            "early-shipped-signal",
            "reauthorized",
        ):
            await handle.result()
        history = await handle.fetch_history()
        (HISTORIES / f"{CURRENT}-{scenario}.json").write_text(history.to_json())


async def record_cancels_and_early_reports(
    client: Client, sandbox: SandboxAdmin, task_queue: str, orders: dict[str, Order]
) -> None:
    """A cancel that interrupts a failing payment, one the gateway decides, an early report."""
    stuck = orders["prompt-cancel-stuck-payment"]
    sandbox.set_faults("payments", error_rate=1.0, key_prefix=f"{stuck.id}:")
    await start_order(client, stuck, task_queue)
    await wait_until_step(client, stuck.id, Step.PAYMENT_INTENT)
    await cancel_order(client, stuck.id, "gateway down too long")
    sandbox.reset_faults()

    held = orders["cancel-held-confirm"]
    await cancel_while_held(client, sandbox, task_queue, held, Step.PAYMENT_CONFIRM)

    early = orders["early-shipped-signal"]
    sandbox.set_faults("payments", hold_next=1, key_prefix=f"{early.id}:payment-intent")
    await start_order(client, early, task_queue)
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    await client.get_workflow_handle(early.id).signal("warehouse_shipped", UPS.model_dump())
    sandbox.release("payments")
    await wait_for_status(client, early.id, OrderStatus.AWAITING_SHIPMENT)


async def record_lost_local_answers(
    client: Client, sandbox: SandboxAdmin, task_queue: str, orders: dict[str, Order]
) -> None:
    """A confirmation email sent by its local try whose answer was lost: the activity replays it."""
    lost = orders["email-local-try-lost"]
    sandbox.set_faults("mail", drop_next=1, key_prefix=f"{lost.id}:{Step.CONFIRMATION_EMAIL}")
    await start_order(client, lost, task_queue)
    await wait_for_status(client, lost.id, OrderStatus.AWAITING_SHIPMENT)
    await ship_order(client, lost.id, UPS)


async def record_temporal_cancels(
    client: Client, sandbox: SandboxAdmin, task_queue: str, orders: dict[str, Order]
) -> None:
    """Workflow cancels requested through Temporal: one winds the order down, one is ignored."""
    cancelled, shipped = orders["temporal-cancel"], orders["temporal-cancel-after-shipment"]
    for order in (cancelled, shipped):
        await start_order(client, order, task_queue)
        await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    await client.get_workflow_handle(cancelled.id).cancel()
    sandbox.set_faults("mail", hold_next=1, key_prefix=f"{shipped.id}:")
    await ship_order(client, shipped.id, UPS)
    await asyncio.to_thread(sandbox.wait_held, "mail", 1)
    await client.get_workflow_handle(shipped.id).cancel()
    await until_cancel_request_handled(client.get_workflow_handle(shipped.id))
    sandbox.release("mail")


async def record_held_capture_and_webhooks(
    client: Client, sandbox: SandboxAdmin, task_queue: str, orders: dict[str, Order]
) -> None:
    """A cancel that meets the capture in flight: the gateway decides, the charge is refunded."""
    held = orders["cancel-held-capture"]
    view = await cancel_while_held(client, sandbox, task_queue, held, Step.PAYMENT_CAPTURE)
    assert view.refund_id is not None

    webhook = orders["shipped-by-webhook"]
    await start_order(client, webhook, task_queue)
    await wait_for_status(client, webhook.id, OrderStatus.AWAITING_SHIPMENT)
    shipped = client.get_workflow_handle_for(OrderWorkflow.run, webhook.id)
    await shipped.execute_update(OrderWorkflow.report_shipment, UPS, id="shipment:evt_v8")

    left = orders["cancel-meets-shipped"]
    await start_order(client, left, task_queue)
    await wait_for_status(client, left.id, OrderStatus.AWAITING_SHIPMENT)
    [picklist] = sandbox.list("/warehouse/picklists", order_id=left.id)
    ship = f"{sandbox.base_url}/warehouse/picklists/{picklist['id']}/ship"
    headers = {"Authorization": f"Bearer {sandbox.api_key}", "Idempotency-Key": f"{left.id}:s"}
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.post(ship, headers=headers)).raise_for_status()
    assert (await cancel_order(client, left.id, "too late")).status == OrderStatus.COMPLETED


async def record_real_world_money(
    client: Client, sandbox: SandboxAdmin, task_queue: str, orders: dict[str, Order]
) -> None:
    """Parcels that left unpaid, authorizations that expire, a refund that fails."""
    capture = f":{Step.PAYMENT_CAPTURE.value}"
    unpaid = orders["shipped-unpaid"]
    sandbox.set_faults("payments", refuse_next=1, key_prefix=f"{unpaid.id}{capture}")
    await start_order(client, unpaid, task_queue)
    await wait_for_status(client, unpaid.id, OrderStatus.NEEDS_ATTENTION)
    await ship_anyway(sandbox, unpaid.id)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, unpaid.id)
    await handle.execute_update(OrderWorkflow.report_shipment, UPS, id="shipment:evt_v10")
    await resolve_order(client, unpaid.id, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))

    met = orders["cancel-meets-unpaid-parcel"]
    sandbox.set_faults("payments", hold_next=1, key_prefix=f"{met.id}{capture}")
    sandbox.set_faults("warehouse", delay_next=1, key_prefix=f"{met.id}:", key_suffix=":close")
    await start_order(client, met, task_queue)
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, met.id)
    cancel = await handle.start_update(
        OrderWorkflow.cancel,
        CancelRequest(reason="changed my mind"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    await wait_until_step(client, met.id, Step.PICKLIST_CANCEL)
    await ship_anyway(sandbox, met.id)
    sandbox.deliver("warehouse")
    sandbox.release("payments")
    assert (await cancel.result()).status == OrderStatus.COMPLETED
    sandbox.reset_faults()

    sandbox.set_faults("payments", authorization_validity_s=4)
    expired = orders["authorization-expired"]
    sandbox.set_faults("warehouse", refuse_next=1, key_prefix=f"{expired.id}:")
    await start_order(client, expired, task_queue)
    renewed = orders["reauthorized"]
    sandbox.set_faults("payments", refuse_next=1, key_prefix=f"{renewed.id}{capture}")
    await start_order(client, renewed, task_queue, OrderOptions(reauthorize_expired=True))
    await wait_for_status(client, expired.id, OrderStatus.CANCELLED, within=60)
    await wait_for_status(client, renewed.id, OrderStatus.AWAITING_SHIPMENT, within=60)
    sandbox.reset_faults()

    failing = orders["refund-failed"]
    await start_order(client, failing, task_queue)
    await wait_for_status(client, failing.id, OrderStatus.AWAITING_SHIPMENT)
    sandbox.set_faults(
        "payments",
        refunds_pending_s=1,
        refunds_fail_with="declined",
        key_suffix=f":{Step.REFUND.value}",
    )
    cancel = await client.get_workflow_handle_for(OrderWorkflow.run, failing.id).start_update(
        OrderWorkflow.cancel,
        CancelRequest(reason="changed my mind"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    await wait_for_status(client, failing.id, OrderStatus.NEEDS_ATTENTION)
    sandbox.reset_faults()
    await resolve_order(client, failing.id, ResolveRequest(action=OperatorAction.RETRY))
    assert (await cancel.result()).status == OrderStatus.CANCELLED


async def record_customer_in_the_loop(
    client: Client, sandbox: SandboxAdmin, task_queue: str, orders: dict[str, Order]
) -> None:
    """3-D Secure: completed, failed, never done within the wait, a cancel while it waits."""
    authenticating = (
        "authenticated",
        "authentication-failed",
        "not-authenticated",
        "cancel-while-authenticating",
    )
    for scenario in authenticating:
        orders[scenario] = make_order(payment_method="pm_card_authenticationRequired")
    done, failed = orders["authenticated"], orders["authentication-failed"]
    lapsed, cancelled = orders["not-authenticated"], orders["cancel-while-authenticating"]
    for order in (done, failed, cancelled):
        await start_order(client, order, task_queue)
    await start_order(
        client, lapsed, task_queue, OrderOptions(authentication_wait=timedelta(seconds=4))
    )
    # A gateway event while the order waits: its read of the intent starts over at once.
    await wait_until_step(client, done.id, Step.AUTHENTICATION)
    news = GatewayEvent(id="evt_v11", type="payment_intent.requires_action", object_id="pi_x")
    handle = client.get_workflow_handle_for(OrderWorkflow.run, done.id)
    await handle.execute_update(OrderWorkflow.gateway_event, news, id="stripe:evt_v11")
    await authenticate(sandbox, done.id)
    await authenticate(sandbox, failed.id, "fail")
    await wait_for_status(client, done.id, OrderStatus.AWAITING_SHIPMENT, within=60)
    await ship_order(client, done.id, UPS)
    await wait_for_status(client, cancelled.id, OrderStatus.AWAITING_AUTHENTICATION)
    await cancel_order(client, cancelled.id, "changed my mind")
    await wait_for_status(client, lapsed.id, OrderStatus.CANCELLED, within=60)

    # A refund's event while the order follows it: read again at once.
    woken = orders["refund-woken"]
    await start_order(client, woken, task_queue)
    await wait_for_status(client, woken.id, OrderStatus.AWAITING_SHIPMENT)
    sandbox.set_faults("payments", refunds_pending_s=2, key_suffix=f":{Step.REFUND.value}")
    handle = client.get_workflow_handle_for(OrderWorkflow.run, woken.id)
    cancel = await handle.start_update(
        OrderWorkflow.cancel,
        CancelRequest(reason="changed my mind"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    await wait_until_step(client, woken.id, Step.REFUND_OUTCOME)
    news = GatewayEvent(id="evt_v11_refund", type="charge.refund.updated", object_id="re_x")
    await handle.execute_update(OrderWorkflow.gateway_event, news, id="stripe:evt_v11_refund")
    assert (await cancel.result()).refund_status == "succeeded"
    sandbox.reset_faults()

    # Stripe says the held authorization's intent was cancelled: the watch acts at once.
    gone = orders["authorization-canceled-by-event"]
    sandbox.set_faults("warehouse", refuse_next=1, key_prefix=f"{gone.id}:")
    await start_order(client, gone, task_queue)
    view = await wait_for_status(client, gone.id, OrderStatus.NEEDS_ATTENTION)
    assert view.payment_intent_id is not None
    news = GatewayEvent(
        id="evt_v11_canceled", type="payment_intent.canceled", object_id=view.payment_intent_id
    )
    handle = client.get_workflow_handle_for(OrderWorkflow.run, gone.id)
    await handle.execute_update(OrderWorkflow.gateway_event, news, id="stripe:evt_v11_canceled")
    await wait_for_status(client, gone.id, OrderStatus.CANCELLED, within=60)
    sandbox.reset_faults()


async def ship_anyway(sandbox: SandboxAdmin, order_id: str) -> None:
    """The warehouse ships the order's held picklist by mistake."""
    [picklist] = sandbox.list("/warehouse/picklists", order_id=order_id)
    ship = f"{sandbox.base_url}/warehouse/picklists/{picklist['id']}/ship"
    headers = {"Authorization": f"Bearer {sandbox.api_key}", "Idempotency-Key": f"{order_id}:s"}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(ship, headers=headers, json={"ignore_release": True})
        response.raise_for_status()


async def cancel_while_held(
    client: Client, sandbox: SandboxAdmin, task_queue: str, order: Order, step: Step
) -> OrderView:
    """Cancel ``order`` while the gateway holds its ``step``, then let that call commit."""
    sandbox.set_faults("payments", hold_next=1, key_prefix=f"{order.id}:{step}")
    await start_order(client, order, task_queue)
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order.id)
    cancel = await handle.start_update(
        OrderWorkflow.cancel,
        CancelRequest(reason="changed my mind"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    await wait_until_step(client, order.id, Step.PAYMENT_CANCEL)
    sandbox.release("payments")
    return await cancel.result()


async def wait_until_step(client: Client, order_id: str, step: Step) -> None:
    """Poll until ``step`` is the order's latest timeline line."""
    for _ in range(600):
        timeline = (await order_status(client, order_id)).timeline
        if timeline and timeline[-1].step == step:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{order_id} never reached {step.value}")


@workflow.defn(name="OrderWorkflow")
class _CaptureFirstWorkflow(OrderWorkflow):
    """A change to the steps deployed WITHOUT a patch: capture before the stock is reserved."""

    @workflow.run
    async def run(self, order: Order) -> OrderView:
        return await super().run(order)

    async def _authorize_reserve_capture(self) -> None:
        await self._payment.authorize()
        await self._payment.capture()
        await self._picking.send()


@pytest.mark.parametrize("version", ["v13", CURRENT])
async def test_an_unpatched_step_change_is_caught_by_replay(version: str) -> None:
    """The replay test can fail: reordering steps without a patch breaks orders in flight.

    v13 ran the picklist and the capture as regular activities: one out of place is a
    ``NondeterminismError``. Today's build runs them as local activities, whose markers the
    SDK matches by position, not by name: the capture is handed the picklist's recorded
    result, which does not decode as a charge, and the workflow task fails.
    """
    expected = NondeterminismError if version == "v13" else RuntimeError
    with pytest.raises(expected):
        await replay(_CaptureFirstWorkflow, HISTORIES / f"{version}-completed.json")
