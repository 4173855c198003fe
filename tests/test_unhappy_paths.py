"""Orders that go wrong: cancel with refund, out of stock, a gateway down past its budget."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from orders.client.orders import (
    OrderRefused,
    cancel_order,
    order_status,
    resolve_order,
    ship_order,
    start_order,
)
from orders.domain.models import Order, OrderOptions, OrderView, ResolveRequest, Shipment
from orders.domain.status import EmailTemplate, OperatorAction, OrderStatus, Step
from sandbox.admin_client import SandboxAdmin
from tests.support import (
    make_order,
    order_awaiting_shipment,
    until_cancel_request_handled,
    until_view,
    wait_for_status,
)
from workflows.order import TEMPORAL_CANCEL_REASON, OrderWorkflow

UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")
SHORT_BUDGET = OrderOptions(payment_retry_budget=timedelta(seconds=3))


CustomerCancel = Callable[[Client, str], Awaitable[OrderView]]


async def cancel_through_the_update(client: Client, order_id: str) -> OrderView:
    """``starter.py cancel``: the cancel update, answered once the order is wound down."""
    return await cancel_order(client, order_id, "customer changed their mind")


async def cancel_through_temporal(client: Client, order_id: str) -> OrderView:
    """What the Web UI's "Request Cancellation" does; the workflow still completes."""
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    await handle.cancel()
    view = await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    return view


@pytest.mark.parametrize(
    ("cancel", "reason"),
    [
        (cancel_through_the_update, "customer changed their mind"),
        (cancel_through_temporal, TEMPORAL_CANCEL_REASON),
    ],
    ids=["cancel-update", "temporal-workflow-cancel"],
)
async def test_cancel_before_shipment_refunds_and_takes_back_the_picklist(
    client: Client, sandbox: SandboxAdmin, task_queue: str, cancel: CustomerCancel, reason: str
) -> None:
    order = await order_awaiting_shipment(client, task_queue)

    view = await cancel(client, order.id)

    assert view.status == OrderStatus.CANCELLED
    assert view.failure_reason == f"cancelled: {reason}"
    assert view.refund_id is not None
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.refunds, effects.cancelled_picklists) == (1, 1, 1)
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1, EmailTemplate.ORDER_CANCELLED: 1}
    refund = sandbox.list("/payments/refunds", order_id=order.id)[0]
    assert (refund["id"], refund["amount"]) == (view.refund_id, order.total)


async def test_cancel_is_refused_once_shipped_or_cancelled_and_changes_nothing(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    shipped, cancelled = make_order(), make_order()
    for order in (shipped, cancelled):
        await start_order(client, order, task_queue)
        await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    await ship_order(client, shipped.id, UPS)
    await cancel_order(client, cancelled.id, "duplicate order")
    await wait_for_status(client, shipped.id, OrderStatus.COMPLETED)

    with pytest.raises(OrderRefused, match="is already completed; it can't be cancelled"):
        await cancel_order(client, shipped.id, "too late")
    with pytest.raises(OrderRefused, match="is already cancelled; it can't be cancelled"):
        await cancel_order(client, cancelled.id, "again")
    assert sandbox.effects(shipped.id).refunds == 0
    assert sandbox.effects(cancelled.id).refunds == 1
    assert sandbox.effects(cancelled.id).emails_of(EmailTemplate.ORDER_CANCELLED) == 1


async def shipped_with_its_email_held(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> Order:
    """An order reported shipped whose shipped email waits at the mail service (released by
    ``sandbox.release("mail")``)."""
    order = await order_awaiting_shipment(client, task_queue)
    sandbox.set_faults("mail", hold_next=1, key_prefix=f"{order.id}:")
    await ship_order(client, order.id, UPS)
    await asyncio.to_thread(sandbox.wait_held, "mail", 1)
    return order


async def test_cancel_while_shipped_signal_pending_is_refused_by_the_validator(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = await shipped_with_its_email_held(client, sandbox, task_queue)
    with pytest.raises(OrderRefused, match="has shipped; it can't be cancelled"):
        await cancel_order(client, order.id, "too late")
    sandbox.release("mail")
    result = await client.get_workflow_handle_for(OrderWorkflow.run, order.id).result()
    assert result.status == OrderStatus.COMPLETED
    assert sandbox.effects(order.id).refunds == 0


async def test_a_workflow_cancel_through_temporal_after_shipment_is_ignored(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = await shipped_with_its_email_held(client, sandbox, task_queue)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order.id)

    await handle.cancel()
    await until_cancel_request_handled(handle)
    sandbox.release("mail")

    await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.refunds, effects.cancelled_picklists) == (1, 0, 0)
    assert effects.emails_of(EmailTemplate.ORDER_SHIPPED) == 1
    assert effects.emails_of(EmailTemplate.ORDER_CANCELLED) == 0


async def test_cancel_during_payment_charges_nothing(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    # The payment intent waits at the gateway; the cancel does not wait for it.
    sandbox.set_faults("payments", hold_next=1, key_prefix=f"{order.id}:")
    await start_order(client, order, task_queue)
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    view = await cancel_order(client, order.id, "changed my mind")
    sandbox.release("payments")  # the intent is made now, and can never be confirmed

    assert view.status == OrderStatus.CANCELLED
    assert view.refund_id is None
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.refunds, effects.picklists) == (0, 0, 0)
    assert effects.emails == {EmailTemplate.ORDER_CANCELLED: 1}
    assert "Nothing was charged" in sandbox.list("/mail/messages", order_id=order.id)[0]["body"]


async def test_out_of_stock_releases_the_authorization_and_apologises_once(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    sku = f"SKU-RARE-{uuid.uuid4().hex}"
    sandbox.set_stock(sku, 0)
    order = make_order(items=[{"sku": sku, "quantity": 1, "unit_price": 5000}])
    await start_order(client, order, task_queue)
    result = await client.get_workflow_handle_for(OrderWorkflow.run, order.id).result()

    assert result.status == OrderStatus.OUT_OF_STOCK
    assert result.failure_reason == f"out of stock: {sku}"
    assert (result.transaction_id, result.refund_id) == (None, None)
    effects = sandbox.effects(order.id)
    assert (effects.authorizations, effects.released) == (1, 1)
    assert (effects.charges, effects.refunds, effects.picklists) == (0, 0, 0)
    assert effects.emails == {EmailTemplate.OUT_OF_STOCK: 1}  # never "order confirmed"
    apology = sandbox.list("/mail/messages", order_id=order.id)[0]["body"]
    assert "Nothing was charged" in apology


async def test_three_orders_racing_for_the_last_unit_one_is_captured_two_released(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """Each card is authorized, the stock reserved, and only the order that got it is charged."""
    sku = f"SKU-LAST-{uuid.uuid4().hex}"
    sandbox.set_stock(sku, 1)
    orders = [make_order(items=[{"sku": sku, "quantity": 1, "unit_price": 900}]) for _ in "abc"]
    await asyncio.gather(*(start_order(client, order, task_queue) for order in orders))
    results = {order.id: await settled(client, order.id) for order in orders}
    statuses = sorted(view.status.value for view in results.values())
    assert statuses == ["awaiting-shipment", "out-of-stock", "out-of-stock"]
    winner = next(o for o in orders if results[o.id].status == OrderStatus.AWAITING_SHIPMENT)
    await ship_order(client, winner.id, UPS)
    await wait_for_status(client, winner.id, OrderStatus.COMPLETED)

    for order in orders:
        effects, won = sandbox.effects(order.id), order is winner
        assert effects.authorizations == 1
        assert (effects.charges, effects.released, effects.refunds) == (int(won), int(not won), 0)
        assert effects.emails_of(EmailTemplate.ORDER_CONFIRMATION) == int(won)
        assert effects.emails_of(EmailTemplate.OUT_OF_STOCK) == int(not won)
        assert effects.emails_of(EmailTemplate.ORDER_SHIPPED) == int(won)
    assert sandbox.stock(sku) == 0


async def settled(client: Client, order_id: str) -> OrderView:
    settled = (OrderStatus.AWAITING_SHIPMENT, OrderStatus.OUT_OF_STOCK)
    return await until_view(client, order_id, lambda view: view.status in settled, "settled")


async def test_gateway_down_past_budget_needs_attention_then_retry_succeeds(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    sandbox.set_faults("payments", error_rate=1.0, key_prefix=f"{order.id}:")
    await start_order(client, order, task_queue, SHORT_BUDGET)
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    assert view.attention_reason and "payment failing for over 3 seconds" in view.attention_reason
    assert sandbox.effects(order.id).charges == 0

    sandbox.reset_faults()
    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.picklists) == (1, 1)
    timeline_steps = [r.step for r in (await order_status(client, order.id)).timeline]
    assert Step.OPERATOR in timeline_steps


async def test_gateway_authorized_without_answering_then_operator_cancel_releases_it(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    sandbox.set_faults("payments", hold_next=2, key_prefix=f"{order.id}:")
    await start_order(client, order, task_queue, SHORT_BUDGET)
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    sandbox.release("payments")  # the intent goes through; the confirm is held next
    await asyncio.to_thread(sandbox.wait_held, "payments", 1)
    await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    sandbox.release("payments")  # now the gateway authorizes, but nobody is listening
    deadline = time.monotonic() + 10
    while sandbox.effects(order.id).authorizations == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    view = await resolve_order(
        client, order.id, ResolveRequest(action=OperatorAction.CANCEL, reason="gateway outage")
    )

    assert view.status == OrderStatus.CANCELLED
    effects = sandbox.effects(order.id)
    assert (effects.authorizations, effects.released) == (1, 1)
    assert (effects.charges, effects.refunds, effects.picklists) == (0, 0, 0)
    assert effects.emails == {EmailTemplate.ORDER_CANCELLED: 1}
    assert (view.transaction_id, view.refund_id) == (None, None)


async def test_resolve_is_refused_unless_the_order_needs_attention(
    client: Client, task_queue: str
) -> None:
    order = await order_awaiting_shipment(client, task_queue)
    with pytest.raises(OrderRefused, match="not needs-attention; there is nothing to resolve"):
        await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))


async def test_a_refused_picklist_waits_for_an_operator_instead_of_failing_the_order(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    sandbox.set_faults("warehouse", reject_next=1, key_prefix=f"{order.id}:")
    await start_order(client, order, task_queue)
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    assert view.attention_reason and view.attention_reason.startswith("picklist refused:")
    assert "injected_rejection" in view.attention_reason
    with pytest.raises(OrderRefused, match="its picklist step failed: use --action retry"):
        await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))

    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY))
    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    assert view.attention_reason is None
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.picklists, effects.refunds) == (1, 1, 0)
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1}


async def test_a_refused_email_while_cancelling_can_only_be_retried(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = await order_awaiting_shipment(client, task_queue)
    sandbox.set_faults("mail", reject_next=1, key_prefix=f"{order.id}:")
    cancelling = asyncio.create_task(cancel_order(client, order.id, "wrong colour"))
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    assert view.attention_reason and view.attention_reason.startswith("cancellation-email refused")
    with pytest.raises(OrderRefused, match="is already being cancelled"):
        await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.CANCEL))

    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY))
    assert (await cancelling).status == OrderStatus.CANCELLED
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.refunds, effects.cancelled_picklists) == (1, 1, 1)
    assert effects.emails_of(EmailTemplate.ORDER_CANCELLED) == 1
