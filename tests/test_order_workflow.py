"""The order workflow end to end: real Temporal dev server, real providers, effects counted."""

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from orders.client.orders import (
    OrderExists,
    OrderRefused,
    order_status,
    ship_order,
    start_order,
)
from orders.domain import search_attributes
from orders.domain.models import Shipment
from orders.domain.status import EmailTemplate, OrderStatus, Step, StepState, idempotency_key
from sandbox.admin_client import SandboxAdmin
from tests.support import make_order, order_awaiting_shipment, wait_for_status
from workflows import patches
from workflows.order import OrderWorkflow

UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")


async def test_happy_path_charges_once_and_sends_each_email_once(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    await start_order(client, order, task_queue)

    waiting = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    effects = sandbox.effects(order.id)
    assert (effects.payment_intents, effects.authorizations, effects.charges) == (1, 1, 1)
    assert (effects.picklists, effects.released) == (1, 0)
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1}
    assert waiting.transaction_id == sandbox.list("/payments/charges", order_id=order.id)[0]["id"]

    await ship_order(client, order.id, UPS)
    result = await client.get_workflow_handle_for(OrderWorkflow.run, order.id).result()

    assert result.status == OrderStatus.COMPLETED
    assert result.shipment == UPS
    effects = sandbox.effects(order.id)
    assert (effects.payment_intents, effects.charges, effects.picklists, effects.refunds) == (
        1,
        1,
        1,
        0,
    )
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1, EmailTemplate.ORDER_SHIPPED: 1}
    charge = sandbox.list("/payments/charges", order_id=order.id)[0]
    assert charge["amount"] == order.total == 4500


async def test_a_new_order_asks_the_newest_patch_and_upserts_only_statuses_it_waits_in(
    client: Client, task_queue: str
) -> None:
    """Paid and shipped are passed within one workflow task: visibility never writes them."""
    order = make_order()
    await start_order(client, order, task_queue)
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    await ship_order(client, order.id, UPS)
    view = await client.get_workflow_handle_for(OrderWorkflow.run, order.id).result()
    events = (await client.get_workflow_handle(order.id).fetch_history()).events

    patch_markers = [
        e
        for e in events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert len(patch_markers) == 1  # the newest level only, whatever the number of levels
    assert _upserted(events, "TemporalChangeVersion") == [f'["{patches.LEVELS[-1]}"]']
    assert _upserted(events, search_attributes.ORDER_STATUS.name) == [
        f'"{status}"' for status in ("authorized", "awaiting-shipment", "completed")
    ]
    assert view.status == OrderStatus.COMPLETED and view.transaction_id is not None  # paid
    assert _upserted(events, search_attributes.CUSTOMER_ID.name) == []  # given at the start
    started = events[0].workflow_execution_started_event_attributes.search_attributes
    assert set(started.indexed_fields) == {"OrderStatus", "CustomerId"}
    # What the order itself wrote, not how its work was cut into workflow tasks (a busy
    # machine splits it into more tasks, each 3 events, and orders some events differently).
    written = Counter(e.event_type for e in events if e.event_type not in _WORKFLOW_TASK_EVENTS)
    assert written == _ORDER_EVENTS


async def test_a_passing_status_reaches_visibility_when_the_order_waits_in_it(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """The confirmation's local try fails: the order waits on Temporal while paid, listed so."""
    order = make_order()
    key = idempotency_key(order.id, Step.CONFIRMATION_EMAIL)
    sandbox.set_faults("mail", fail_next=1, key_prefix=key)
    await start_order(client, order, task_queue)
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    events = (await client.get_workflow_handle(order.id).fetch_history()).events
    assert _upserted(events, search_attributes.ORDER_STATUS.name) == [
        f'"{status}"' for status in ("authorized", "paid", "awaiting-shipment")
    ]
    confirmation = [
        e
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_email"
    ]
    assert len(confirmation) == 1  # its regular retry, after the failed local try
    assert sandbox.effects(order.id).emails == {EmailTemplate.ORDER_CONFIRMATION: 1}


_WORKFLOW_TASK_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
}
_ORDER_EVENTS = Counter(
    {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: 1,
        # The patch level it asked; the local tries of the payment intent, the picklist, the
        # capture, the confirmation, the release and the shipped email.
        EventType.EVENT_TYPE_MARKER_RECORDED: 7,
        # The patch level's TemporalChangeVersion; authorized, awaiting-shipment, completed.
        EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: 4,
        # The authorization, never local (see workflows/policy.py).
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: 1,
        EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED: 1,
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: 1,
        # The shipment's delay deadline. The authorization's watch is moot (captured) within
        # the workflow task that set its timer, so the SDK never sends that timer.
        EventType.EVENT_TYPE_TIMER_STARTED: 1,
        EventType.EVENT_TYPE_TIMER_CANCELED: 1,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: 1,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: 1,
    }
)
"""What a new order writes to its history besides its workflow tasks."""


def _upserted(events: Sequence[HistoryEvent], name: str) -> list[str]:
    """The values the search attribute ``name`` was upserted to, as the history's JSON."""
    upserts = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    return [fields[name].data.decode() for fields in upserts if name in fields]


async def test_status_query_shows_timeline_transaction_and_tracking(
    client: Client, task_queue: str
) -> None:
    order = make_order()
    await start_order(client, order, task_queue)
    waiting = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)

    assert [r.step for r in waiting.timeline] == [
        Step.PAYMENT_INTENT,
        Step.PAYMENT_CONFIRM,
        Step.PICKLIST,
        Step.PAYMENT_CAPTURE,
        Step.CONFIRMATION_EMAIL,
        Step.PICKLIST_RELEASE,
        Step.SHIPMENT,
    ]
    assert [r.state for r in waiting.timeline][-1] == StepState.STARTED
    assert all(r.state == StepState.COMPLETED for r in waiting.timeline[:-1])
    assert waiting.transaction_id and waiting.transaction_id.startswith("ch_")
    assert waiting.payment_intent_id and waiting.payment_intent_id.startswith("pi_")
    assert waiting.shipment is None

    await ship_order(client, order.id, UPS)
    done = await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    assert done.shipment == UPS
    assert done.timeline[-1].step == Step.SHIPPED_EMAIL
    assert all(r.state == StepState.COMPLETED for r in done.timeline)
    assert (await order_status(client, order.id)) == done  # served from the result once closed


async def test_declined_card_is_not_retried_and_gets_one_decline_email(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order(payment_method="pm_card_chargeDeclined")
    await start_order(client, order, task_queue)
    result = await client.get_workflow_handle_for(OrderWorkflow.run, order.id).result()

    assert result.status == OrderStatus.PAYMENT_DECLINED
    assert result.failure_reason == "payment declined: generic_decline"
    assert result.transaction_id is None
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.picklists) == (0, 0)
    assert effects.emails == {EmailTemplate.PAYMENT_DECLINED: 1}
    confirm = next(r for r in result.timeline if r.step == Step.PAYMENT_CONFIRM)
    assert confirm.state == StepState.FAILED


@pytest.mark.parametrize(
    ("faults", "fired"),
    [
        # 503 before anything happens: the first three tries at each provider.
        ({"fail_next": 3}, {"payments": {"fail": 3}, "mail": {"fail": 3}}),
        # Intent, authorization and capture commit, then the answer is lost (the email once:
        # its retry gets the stored answer, which is not dropped).
        ({"drop_next": 3}, {"payments": {"drop": 3}, "mail": {"drop": 1}}),
    ],
    ids=["5xx", "commit-then-drop"],
)
async def test_transient_gateway_faults_are_retried_to_exactly_one_charge(
    client: Client,
    sandbox: SandboxAdmin,
    task_queue: str,
    faults: dict[str, int],
    fired: dict[str, dict[str, int]],
) -> None:
    order = make_order()
    sandbox.set_faults("payments", key_prefix=f"{order.id}:", **faults)
    sandbox.set_faults("mail", key_prefix=f"{order.id}:", **faults)
    await start_order(client, order, task_queue)
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    for service, counted in fired.items():  # the faults fired, counted at the providers
        assert sandbox.fired(service, f"{order.id}:") == counted, service

    effects = sandbox.effects(order.id)
    assert (effects.payment_intents, effects.authorizations, effects.charges) == (1, 1, 1)
    assert (effects.picklists, effects.released) == (1, 0)
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1}


async def test_second_start_of_an_order_is_refused(client: Client, task_queue: str) -> None:
    order = make_order()
    await start_order(client, order, task_queue)
    with pytest.raises(OrderExists, match=f"order {order.id} already exists"):
        await start_order(client, order, task_queue)


async def test_racing_starts_of_one_order_start_it_once(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    results = await asyncio.gather(
        *(start_order(client, order, task_queue) for _ in range(5)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert sum(isinstance(r, OrderExists) for r in results) == 4
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    assert sandbox.effects(order.id).charges == 1


async def test_invalid_and_duplicate_shipped_signals_never_break_the_order(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = await order_awaiting_shipment(client, task_queue)
    handle = client.get_workflow_handle(order.id)

    # Malformed payloads (as a buggy warehouse might send) are dropped by the workflow.
    await handle.signal("warehouse_shipped", {"carrier": "", "tracking_number": "??"})
    await handle.signal("warehouse_shipped", "not a shipment")

    # Two valid reports racing in: the first wins, the second is ignored.
    second = Shipment(carrier="DHL", tracking_number="JD0146000012345")
    await handle.signal(OrderWorkflow.warehouse_shipped, UPS)
    await handle.signal(OrderWorkflow.warehouse_shipped, second)
    result = await client.get_workflow_handle_for(OrderWorkflow.run, order.id).result()

    assert result.status == OrderStatus.COMPLETED
    assert result.shipment == UPS
    assert sandbox.effects(order.id).emails_of(EmailTemplate.ORDER_SHIPPED) == 1
    events = (await handle.fetch_history()).events
    # A report arriving while the workflow completes makes Temporal reject that completion
    # (UnhandledCommand) and run the task again with the report: no failure of the workflow.
    failed = [
        e.workflow_task_failed_event_attributes.cause
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert set(failed) <= {WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND}
    with pytest.raises(OrderRefused, match="already shipped with UPS"):
        await ship_order(client, order.id, second)


async def test_shipping_a_declined_order_is_refused(client: Client, task_queue: str) -> None:
    order = make_order(payment_method="pm_card_chargeDeclinedInsufficientFunds")
    await start_order(client, order, task_queue)
    await wait_for_status(client, order.id, OrderStatus.PAYMENT_DECLINED)
    with pytest.raises(OrderRefused, match="is payment-declined; there is nothing to ship"):
        await ship_order(client, order.id, UPS)
