"""Every hole in exactly-once that was found, on the real dev server and the real providers.

Each test targets one order with faults scoped to its keys (``key_prefix``), waits for
conditions rather than for time, and asserts the ledger and the customer's email text.
"""

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowUpdateHandle, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode

from activities.warehouse import ORDER_CLOSED
from orders.client.orders import OrderRefused, resolve_order, ship_order, start_order
from orders.domain.models import (
    CancelRequest,
    Order,
    OrderOptions,
    OrderView,
    ResolveRequest,
    Shipment,
)
from orders.domain.status import EmailTemplate, OperatorAction, OrderStatus, Step, StepState
from sandbox.admin_client import SandboxAdmin
from tests.support import (
    eventually,
    make_order,
    order_awaiting_shipment,
    until_view,
    wait_for_status,
)
from workflows.order import OrderWorkflow

UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")
REFUNDED = "has been refunded"
NOTHING_CHARGED = "Nothing was charged"


async def until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Poll ``condition`` (run in a thread: it may call the providers) until it holds."""
    await eventually(lambda: asyncio.to_thread(condition), what, within)


def hold(sandbox: SandboxAdmin, service: str, order: Order, step: Step) -> str:
    """Hold the next request of ``order``'s ``step`` at ``service``; return its key."""
    key = f"{order.id}:{step.value}"
    sandbox.set_faults(service, hold_next=1, key_prefix=key)
    return key


async def held(sandbox: SandboxAdmin, service: str, key: str) -> None:
    """Wait until ``service`` holds the request with ``key``."""
    await until(lambda: key in sandbox.held_keys()[service], f"{service} holds {key}")


def stored_under(sandbox: SandboxAdmin, key: str) -> dict[str, Any]:
    """What the providers keep under exactly ``key`` (empty until a request claims it)."""
    return next((entry for entry in sandbox.keys(key) if entry["key"] == key), {})


def email_body(sandbox: SandboxAdmin, order: Order, template: EmailTemplate) -> str:
    """The one email of ``template`` the order sent."""
    sent = sandbox.list("/mail/messages", order_id=order.id, template=template.value)
    assert len(sent) == 1, f"{len(sent)} {template.value} emails"
    body: str = sent[0]["body"]
    return body


async def start_cancel(
    client: Client, order: Order, reason: str
) -> WorkflowUpdateHandle[OrderView]:
    """Send a cancel and return once the order has accepted it."""
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order.id)
    return await handle.start_update(
        OrderWorkflow.cancel,
        CancelRequest(reason=reason),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )


def cancelling_at(step: Step) -> Callable[[OrderView], bool]:
    """True once the order is winding down and ``step`` is its latest line."""

    def condition(view: OrderView) -> bool:
        latest = view.timeline[-1] if view.timeline else None
        return view.winding_down_to is not None and latest is not None and latest.step == step

    return condition


@pytest.mark.parametrize("commits", [True, False], ids=["commits", "fails"])
@pytest.mark.parametrize(
    "step", [Step.PAYMENT_CONFIRM, Step.PAYMENT_CAPTURE], ids=["authorize", "capture"]
)
async def test_customer_cancel_while_the_gateway_holds_a_payment_call_lets_the_gateway_decide(
    client: Client, sandbox: SandboxAdmin, task_queue: str, step: Step, commits: bool
) -> None:
    """A cancel meets the authorization or the capture in flight at the gateway.

    The gateway refuses to cancel the intent while that call holds it (``lock_timeout``,
    retried): nothing is guessed. Once the call has an outcome the cancel releases an
    authorization, or meets a captured intent, whose charge is refunded once.
    """
    order = make_order()
    key = hold(sandbox, "payments", order, step)
    await start_order(client, order, task_queue)
    await held(sandbox, "payments", key)

    cancel = await start_cancel(client, order, "changed my mind")
    await until_view(client, order.id, cancelling_at(Step.PAYMENT_CANCEL), "it cancels the intent")
    assert sandbox.effects(order.id).charges == 0
    sandbox.release("payments", fail=not commits)
    view = await cancel.result()

    assert view.status == OrderStatus.CANCELLED
    effects = sandbox.effects(order.id)
    assert effects.emails == {EmailTemplate.ORDER_CANCELLED: 1}  # no confirmation email
    authorized = commits or step == Step.PAYMENT_CAPTURE
    captured = commits and step == Step.PAYMENT_CAPTURE
    assert effects.authorizations == int(authorized)
    assert (effects.charges, effects.refunds) == (int(captured), int(captured))
    assert effects.released == int(authorized and not captured)
    assert effects.refunded_amount == effects.charged_amount == (order.total if captured else 0)
    assert (view.refund_id is not None) == captured
    body = email_body(sandbox, order, EmailTemplate.ORDER_CANCELLED)
    assert (REFUNDED if captured else NOTHING_CHARGED) in body


async def test_operator_cancel_after_the_payment_budget_ran_out_with_the_capture_held(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """The case that kept a customer's money: the held capture commits after the cancel."""
    order = make_order()
    key = hold(sandbox, "payments", order, Step.PAYMENT_CAPTURE)
    budget = OrderOptions(payment_retry_budget=timedelta(seconds=3))
    await start_order(client, order, task_queue, budget)
    await held(sandbox, "payments", key)
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    assert view.attention_step == Step.PAYMENT_CAPTURE

    resolving = asyncio.create_task(
        resolve_order(client, order.id, ResolveRequest(action=OperatorAction.CANCEL))
    )
    await until_view(client, order.id, cancelling_at(Step.PAYMENT_CANCEL), "it cancels the intent")
    sandbox.release("payments")  # the gateway captures now, long after the order gave up
    view = await resolving

    assert view.status == OrderStatus.CANCELLED
    effects = sandbox.effects(order.id)
    assert (effects.authorizations, effects.charges, effects.refunds) == (1, 1, 1)
    assert effects.refunded_amount == effects.charged_amount == order.total
    assert effects.emails == {EmailTemplate.ORDER_CANCELLED: 1}
    assert REFUNDED in email_body(sandbox, order, EmailTemplate.ORDER_CANCELLED)


async def test_cancel_is_prompt_while_the_gateway_answers_503(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """With the default one-hour payment budget, only a prompt cancel ends within the wait."""
    order = make_order()
    sandbox.set_faults("payments", error_rate=1.0, key_prefix=f"{order.id}:")
    await start_order(client, order, task_queue)
    await until_view(
        client,
        order.id,
        lambda view: bool(view.timeline) and view.timeline[0].step == Step.PAYMENT_INTENT,
        "it tries to create the intent",
    )
    await until(
        lambda: sandbox.fired("payments", f"{order.id}:")["fail"] >= 2,
        "the gateway answered two of its tries 503",
    )

    cancel = await start_cancel(client, order, "gave up waiting")
    view = await asyncio.wait_for(cancel.result(), timeout=60)

    assert view.status == OrderStatus.CANCELLED
    effects = sandbox.effects(order.id)
    assert (effects.payment_intents, effects.charges, effects.refunds) == (0, 0, 0)
    assert effects.emails == {EmailTemplate.ORDER_CANCELLED: 1}
    assert NOTHING_CHARGED in email_body(sandbox, order, EmailTemplate.ORDER_CANCELLED)
    intent_line = view.timeline[0]
    assert (intent_line.step, intent_line.state) == (Step.PAYMENT_INTENT, StepState.FAILED)


async def test_cancel_during_the_reservation_takes_the_picklist_back_and_releases(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    key = hold(sandbox, "warehouse", order, Step.PICKLIST)
    await start_order(client, order, task_queue)
    await held(sandbox, "warehouse", key)

    # The picklist's local try holds the workflow task, and the cancel with it, until it gives
    # up (LOCAL_TRY_TIMEOUT); its regular retry, under the same key, is cut short by the cancel.
    cancel = await start_cancel(client, order, "ordered twice")
    assert sandbox.release("warehouse") == 1
    view = await cancel.result()

    assert view.status == OrderStatus.CANCELLED
    effects = sandbox.effects(order.id)
    # The stock is reserved before the money moves: the cancel releases the authorization.
    assert (effects.authorizations, effects.released) == (1, 1)
    assert (effects.charges, effects.refunds) == (0, 0)
    assert effects.picklists == effects.cancelled_picklists == 1
    assert effects.emails == {EmailTemplate.ORDER_CANCELLED: 1}
    assert NOTHING_CHARGED in email_body(sandbox, order, EmailTemplate.ORDER_CANCELLED)


async def test_a_picklist_request_still_on_its_way_when_the_customer_cancels_picks_nothing(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """The picklist request is delayed before it reaches the warehouse (no key claimed, no
    lock: nothing there can see it) and the customer cancels meanwhile. The undo cancels the
    order at the warehouse, which closes it, so the request that arrives afterwards is refused:
    nothing is picked for a cancelled order, not even for a moment."""
    sku = f"SKU-LATE-{uuid.uuid4().hex[:8]}"
    order = make_order(items=[{"sku": sku, "quantity": 2, "unit_price": 1250}])
    sandbox.set_stock(sku, 5)
    key = f"{order.id}:{Step.PICKLIST.value}"
    # The picklist requests themselves, not the cancel's (its key starts the same): the local
    # try's, and its regular retry's if that goes out before the cancel cuts it short.
    sandbox.set_faults("warehouse", delay_next=2, key_prefix=key, key_suffix=f":{Step.PICKLIST}")
    await start_order(client, order, task_queue)
    await until(lambda: key in sandbox.delayed_keys()["warehouse"], f"{key} is on its way")

    cancel = await start_cancel(client, order, "changed my mind")
    view = await cancel.result()
    assert view.status == OrderStatus.CANCELLED
    assert view.picklist_id is None  # the picklist step was cut short before any answer
    assert sandbox.deliver("warehouse") >= 1  # the requests reach the warehouse at last
    await until(lambda: stored_under(sandbox, key).get("state") == "done", f"{key} answered")

    open_picklists = [
        picklist
        for picklist in sandbox.list("/warehouse/picklists", order_id=order.id)
        if picklist["status"] != "cancelled"
    ]
    assert open_picklists == []
    assert sandbox.stock(sku) == 5
    effects = sandbox.effects(order.id)
    assert effects.picklists == 0  # no picklist made to find one, nor by the late request
    assert (effects.authorizations, effects.released, effects.charges) == (1, 1, 0)
    assert effects.emails == {EmailTemplate.ORDER_CANCELLED: 1}
    assert NOTHING_CHARGED in email_body(sandbox, order, EmailTemplate.ORDER_CANCELLED)
    late = stored_under(sandbox, key)
    assert (late["status"], late["body"]["error"]["code"]) == (422, ORDER_CLOSED)


async def test_a_stored_refusal_retried_by_an_operator_is_not_replayed(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    sandbox.set_faults("warehouse", refuse_next=1, key_prefix=f"{order.id}:")
    await start_order(client, order, task_queue)
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    assert view.attention_reason and "injected_refusal" in view.attention_reason

    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY))
    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)

    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.picklists) == (1, 1)
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1}
    picklist_lines = [line for line in view.timeline if line.step == Step.PICKLIST]
    assert [line.state for line in picklist_lines] == [StepState.FAILED, StepState.COMPLETED]


EFFECTS_AN_OPERATOR_RETRIES = pytest.mark.parametrize(
    ("service", "step"),
    [("mail", Step.CONFIRMATION_EMAIL), ("warehouse", Step.PICKLIST)],
    ids=["email", "picklist"],
)
ACTIVITY_OF = {Step.CONFIRMATION_EMAIL: "send_email", Step.PICKLIST: "send_picklist"}


@EFFECTS_AN_OPERATOR_RETRIES
async def test_an_effect_whose_answer_was_lost_and_key_expired_happens_once(
    client: Client, sandbox: SandboxAdmin, task_queue: str, service: str, step: Step
) -> None:
    """The provider acts, every answer is lost, the step's budget runs out, the key expires;
    the operator's retry adopts the effect instead of acting a second time."""
    order = make_order()
    sandbox.set_faults(
        service, drop_rate=1.0, drop_replays=True, key_prefix=f"{order.id}:{step.value}"
    )
    budget = OrderOptions(step_retry_budget=timedelta(seconds=3))
    await start_order(client, order, task_queue, budget)
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    assert view.attention_step == step
    assert view.attention_reason and "failing for over 3 seconds" in view.attention_reason
    # The provider did act, once, and every answer (replays too) was lost on the way.
    assert sandbox.fired(service, f"{order.id}:{step.value}")["drop"] >= 2
    effects = sandbox.effects(order.id)
    assert effects.picklists == 1  # the picklist comes before the email
    assert effects.emails_of(EmailTemplate.ORDER_CONFIRMATION) == int(step != Step.PICKLIST)

    sandbox.reset_faults()
    assert sandbox.expire_keys(f"{order.id}:") > 0
    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY))
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)

    effects = sandbox.effects(order.id)
    assert effects.emails_of(EmailTemplate.ORDER_CONFIRMATION) == 1
    assert (effects.charges, effects.picklists) == (1, 1)


async def retried_while_held(client: Client, order_id: str, activity: str) -> None:
    """Wait until the order's pending ``activity`` has been answered and tried again."""
    handle = client.get_workflow_handle(order_id)

    async def retried() -> bool:
        pending = (await handle.describe()).raw_description.pending_activities
        return any(p.activity_type.name == activity and p.attempt >= 2 for p in pending)

    await eventually(retried, f"{activity} of {order_id} was tried again while held")


@EFFECTS_AN_OPERATOR_RETRIES
async def test_a_request_still_in_flight_when_the_operator_retries_takes_effect_once(
    client: Client, sandbox: SandboxAdmin, task_queue: str, service: str, step: Step
) -> None:
    """The provider holds the step's request past the step's budget (slow, not down); the
    operator's retry sends the same key, so the provider makes it wait for that request and
    answers with its result, where a new key would have acted a second time."""
    order = make_order()
    key = hold(sandbox, service, order, step)
    budget = OrderOptions(step_retry_budget=timedelta(seconds=3))
    await start_order(client, order, task_queue, budget)
    await held(sandbox, service, key)
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    assert view.attention_step == step

    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY))
    await retried_while_held(client, order.id, ACTIVITY_OF[step])  # it met the held request
    assert sandbox.release(service) == 1
    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)

    effects = sandbox.effects(order.id)
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1}
    assert (effects.charges, effects.picklists, effects.cancelled_picklists) == (1, 1, 0)
    lines = [line.state for line in view.timeline if line.step == step]
    assert lines == [StepState.FAILED, StepState.COMPLETED]


async def test_a_capture_answered_with_a_stored_500_is_adopted_under_a_new_key(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """Stripe stores a 500 under its key like any answer and replays it to every retry.

    Here the capture took effect and its key holds a 500: retrying that key can never learn
    it, so the order asks an operator (not 6 hours of replayed 500s), and the operator's retry
    sends a new key, which Stripe answers with ``payment_intent_unexpected_state``: the
    activity retrieves the intent and adopts its charge. One capture, no second one.
    """
    order = make_order()
    key = f"{order.id}:{Step.PAYMENT_CAPTURE}"
    sandbox.set_faults("payments", server_error_next=1, key_prefix=key)
    await start_order(client, order, task_queue)
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)
    assert view.attention_step == Step.PAYMENT_CAPTURE
    assert view.attention_reason and "answered 500" in view.attention_reason
    assert stored_under(sandbox, key)["status"] == 500
    assert sandbox.effects(order.id).charges == 1  # it did take effect

    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))
    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)

    effects = sandbox.effects(order.id)
    assert (effects.authorizations, effects.charges, effects.refunds) == (1, 1, 0)
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1}
    charge = sandbox.list("/payments/charges", order_id=order.id)[0]
    assert view.transaction_id == charge["id"]
    assert stored_under(sandbox, f"{key}:attempt-2")["status"] == 400  # unexpected state


async def test_an_order_id_reused_after_its_first_run_is_gone_is_never_charged_again(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """Two orders completed, forgotten by Temporal, then placed again under the same ids.

    After 24 hours (keys pruned; the order was placed two days ago) Stripe's search finds the
    first run's captured intent; within them (placed now: no search at all), the step's key
    brings that intent back even while the search could not see it yet (a search lag far
    longer than the test), so neither protection rests on the other.
    """
    placed = {"after": datetime.now(UTC) - timedelta(days=2), "within": datetime.now(UTC)}
    after_a_day, within_a_day = [
        await order_awaiting_shipment(client, task_queue, placed_at=placed[regime])
        for regime in ("after", "within")
    ]
    for order in (after_a_day, within_a_day):
        await ship_order(client, order.id, UPS)
        await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    await asyncio.gather(*(forget_in_temporal(client, o.id) for o in (after_a_day, within_a_day)))
    sandbox.expire_keys(f"{after_a_day.id}:")

    await start_order(client, after_a_day, task_queue)
    reused = [await wait_for_status(client, after_a_day.id, OrderStatus.NEEDS_ATTENTION)]
    sandbox.set_faults("payments", search_lag_ms=600_000)  # nothing searchable: only the key
    searches = sandbox.rate_limits()["admitted"]["search"]
    await start_order(client, within_a_day, task_queue)
    reused.append(await wait_for_status(client, within_a_day.id, OrderStatus.NEEDS_ATTENTION))
    assert sandbox.rate_limits()["admitted"]["search"] == searches  # the key alone refused it

    for order, view in zip((after_a_day, within_a_day), reused, strict=True):
        assert view.attention_reason and "was already used" in view.attention_reason
        effects = sandbox.effects(order.id)
        assert (effects.payment_intents, effects.authorizations, effects.charges) == (1, 1, 1)
        assert effects.emails_of(EmailTemplate.ORDER_CONFIRMATION) == 1


async def forget_in_temporal(client: Client, order_id: str) -> None:
    """Delete the order's run, as Temporal does once the namespace's retention has passed."""
    execution = WorkflowExecution(workflow_id=order_id)
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(namespace=client.namespace, workflow_execution=execution)
    )
    # The dev server deletes in the background: about 35 s measured here.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            await client.get_workflow_handle(order_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        await asyncio.sleep(0.5)
    raise AssertionError(f"{order_id} was not deleted")


async def test_a_shipped_signal_before_payment_is_refused_and_changes_nothing(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    key = hold(sandbox, "payments", order, Step.PAYMENT_INTENT)
    await start_order(client, order, task_queue)
    await held(sandbox, "payments", key)

    with pytest.raises(OrderRefused, match="it can ship only once it is paid and picked"):
        await ship_order(client, order.id, UPS)
    # A warehouse that signals anyway is ignored by the workflow itself.
    await client.get_workflow_handle_for(OrderWorkflow.run, order.id).signal(
        OrderWorkflow.warehouse_shipped, UPS
    )
    sandbox.release("payments")
    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    assert view.shipment is None

    # The early report did not block a cancel.
    cancel = await start_cancel(client, order, "too slow")
    view = await cancel.result()
    assert view.status == OrderStatus.CANCELLED
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.refunds) == (1, 1)
    assert effects.emails_of(EmailTemplate.ORDER_SHIPPED) == 0
