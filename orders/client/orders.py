"""Operations on orders through Temporal: what ``starter.py``, the tests and tools call.

The workflow is the only record of an order: there is no second database that could drift
from it. Each failure a person can cause is raised as an ``OrderError`` with a clear message.
"""

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from orders.client.errors import OrderError
from orders.client.temporal import ACCEPT_TIMEOUT
from orders.config.settings import TASK_QUEUE
from orders.domain import search_attributes
from orders.domain.currencies import format_money
from orders.domain.models import (
    CancelRequest,
    Dispute,
    Order,
    OrderOptions,
    OrderView,
    ResolveRequest,
    Shipment,
)
from orders.domain.rules import cancel_refusal, ship_refusal
from orders.domain.status import OrderStatus
from orders.domain.stripe_currencies import charge_refusal
from orders.intake.client import check_intake
from workflows.dispute import DisputeWorkflow
from workflows.order import OPTIONS_MEMO, OrderWorkflow
from workflows.policy import WORKFLOW_TASK_TIMEOUT

QUERY_TIMEOUT = timedelta(seconds=5)
POLL_INTERVAL = timedelta(seconds=0.5)
"""How often ``follow_order`` reads the order's status."""
# An accepted update has no outcome yet, so polling for it with this deadline ends at once; a
# refused one carries its refusal in the answer to start_update (see ``_refusal``).
_PROBE_TIMEOUT = timedelta(milliseconds=1)


class OrderUnchargeable(OrderError):
    """The order's total is one Stripe would refuse to charge: nothing was started."""

    exit_code = 2


class OrderExists(OrderError):
    """An order with this id was already started (now or in the past)."""

    exit_code = 3


class OrderNotFound(OrderError):
    """No order with this id exists."""

    exit_code = 4


class OrderRefused(OrderError):
    """The order exists but cannot do what was asked in its current state."""

    exit_code = 5


class OrderStillRunning(OrderError):
    """The order accepted the request but had not finished it when the wait ran out.

    Nothing is lost: the order carries on without anyone waiting.
    """

    exit_code = 6

    def __init__(self, order_id: str, view: OrderView | None) -> None:
        self.order_id = order_id
        self.view = view
        """The order as last seen, if it was seen at all."""
        status = view.status.value if view else "running"
        super().__init__(
            f"order {order_id} is still {status}; follow it with: starter.py status {order_id}"
        )


@dataclass(frozen=True)
class AcceptedRequest:
    """A cancel or an operator's decision that the order accepted; it goes on without a waiter."""

    order_id: str
    action: str
    """What was accepted: ``cancel``, or the operator's action (``retry``, ``retry-payment``)."""
    update: WorkflowUpdateHandle[OrderView]

    async def outcome(self) -> OrderView:
        """Wait until the order has done what it accepted, and return it then."""
        try:
            return await self.update.result()
        except WorkflowUpdateFailedError as err:
            raise OrderError(
                f"order {self.order_id}: {self.action} failed after it was accepted: {err.cause}"
            ) from err


@dataclass(frozen=True)
class OrderSummary:
    """One line of an order listing, read from Temporal's visibility store."""

    order_id: str
    status: str
    customer_id: str
    started_at: datetime | None
    closed_at: datetime | None


async def start_order(
    client: Client,
    order: Order,
    task_queue: str = TASK_QUEUE,
    options: OrderOptions | None = None,
) -> None:
    """Start the order's workflow; refused if an order with this id ever existed.

    Refused with ``OrderUnchargeable`` (nothing started) when Stripe would refuse to charge the
    order's total (``placement_refusal``), and with ``IntakePaused`` while intake is paused
    (``orders.intake.client``).
    """
    if (refusal := placement_refusal(order)) is not None:
        raise OrderUnchargeable(refusal)
    await check_intake(client, task_queue)
    try:
        await client.start_workflow(
            OrderWorkflow.run,
            order,
            id=order.id,
            task_queue=task_queue,
            # Workflow id = order id, never reused: two starts of one order cannot both run.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"{order.customer.name}: {format_money(order.total, order.currency)}",
            memo={OPTIONS_MEMO: options or OrderOptions()},
            # Searchable from the start, without an upsert in the order's first task.
            search_attributes=search_attributes.of_order(OrderStatus.RECEIVED, order.customer.id),
            task_timeout=WORKFLOW_TASK_TIMEOUT,
        )
    except WorkflowAlreadyStartedError as err:
        raise OrderExists(
            f"order {order.id} already exists; every order id can be used once. "
            f"See it with: starter.py status {order.id}"
        ) from err


def placement_refusal(order: Order) -> str | None:
    """Why the order cannot be placed although it is valid: Stripe would refuse its total.

    One line naming Stripe's rule and the fix, or ``None``. Checked before anything starts, so
    an order is never parked after its card was authorized for an amount Stripe refuses.
    """
    refusal = charge_refusal(order.total, order.currency)
    return None if refusal is None else f"order {order.id} refused: {refusal}"


async def order_status(client: Client, order_id: str) -> OrderView:
    """The order's read model, from the running workflow or the finished one's result."""
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    execution_status = await _execution_status(handle)
    if execution_status == WorkflowExecutionStatus.COMPLETED:
        return await handle.result()
    try:
        return await handle.query(OrderWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:
        if execution_status == WorkflowExecutionStatus.RUNNING:
            raise OrderError(
                f"order {order_id} is running but no worker answered ({err.message}); "
                "is a worker running? Start the stack with ./scripts/run"
            ) from err
        raise OrderRefused(
            f"order {order_id} ended as {execution_status.name.lower()}: {err.message}"
        ) from err
    except WorkflowFailureError as err:
        raise OrderRefused(f"order {order_id} failed: {err.cause}") from err


async def ship_order(client: Client, order_id: str, shipment: Shipment) -> OrderView:
    """Send the warehouse-shipped signal; refused unless the order is waiting to ship."""
    view = await order_status(client, order_id)
    if (refusal := ship_refusal(view)) is not None:
        raise OrderRefused(refusal)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    await handle.signal(OrderWorkflow.warehouse_shipped, shipment)
    return view


async def request_cancel(client: Client, order_id: str, reason: str) -> AcceptedRequest:
    """Ask the order to cancel; returns as soon as it has accepted (or raises if refused).

    The wind-down (refund, picklist taken back, one email) then runs whether or not anyone
    waits; ``AcceptedRequest.outcome`` or ``follow_order`` waits for it.
    """
    view = await order_status(client, order_id)
    if (refusal := cancel_refusal(view)) is not None:
        raise OrderRefused(refusal)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    return await _accepted(
        client,
        order_id,
        "cancel",
        "cancelled",
        handle.start_update(
            OrderWorkflow.cancel,
            CancelRequest(reason=reason),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            rpc_timeout=ACCEPT_TIMEOUT,
        ),
    )


async def request_resolve(
    client: Client, order_id: str, request: ResolveRequest
) -> AcceptedRequest:
    """Send an operator's decision; returns as soon as the order has accepted it.

    Whether the decision fits the order's state is the workflow's validator's call; its
    refusal is raised as ``OrderRefused``.
    """
    # Read first: an unknown order or a missing worker gets its own clear message.
    await order_status(client, order_id)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    return await _accepted(
        client,
        order_id,
        request.action.value,
        "resolved",
        handle.start_update(
            OrderWorkflow.resolve,
            request,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            rpc_timeout=ACCEPT_TIMEOUT,
        ),
    )


async def cancel_order(client: Client, order_id: str, reason: str) -> OrderView:
    """Cancel an order that has not shipped; returns it refunded and wound down."""
    return await (await request_cancel(client, order_id, reason)).outcome()


async def resolve_order(client: Client, order_id: str, request: ResolveRequest) -> OrderView:
    """Apply an operator's decision to an order that needs attention; returns its outcome."""
    return await (await request_resolve(client, order_id, request)).outcome()


async def list_orders(
    client: Client, status: OrderStatus | None = None, limit: int = 50
) -> AsyncIterator[OrderSummary]:
    """Orders newest first, optionally only those with one status.

    ``disputed``: the orders with a chargeback waiting for an answer, listed from their
    disputes' workflows (an order that has ended is among them).
    """
    disputed = status == OrderStatus.DISPUTED
    workflow_type = DisputeWorkflow if disputed else OrderWorkflow
    query = f"WorkflowType = '{workflow_type.__name__}'"
    if status is not None:
        query += f" AND {search_attributes.ORDER_STATUS.name} = '{status.value}'"
    async for execution in client.list_workflows(query, limit=limit):
        attributes = execution.typed_search_attributes
        order_id = attributes.get(search_attributes.ORDER_ID) if disputed else None
        yield OrderSummary(
            order_id=order_id or execution.id,
            status=attributes.get(search_attributes.ORDER_STATUS) or "?",
            customer_id=attributes.get(search_attributes.CUSTOMER_ID) or "?",
            started_at=execution.start_time,
            closed_at=execution.close_time,
        )


async def order_dispute(client: Client, order_id: str) -> Dispute | None:
    """The chargeback on the order's payment, if one was opened (from its dispute's workflow).

    The order's own view has it only if it ran when the dispute came; this finds it either way
    (visibility lags writes by about a second).
    """
    query = (
        f"WorkflowType = '{DisputeWorkflow.__name__}' "
        f"AND {search_attributes.ORDER_ID.name} = '{order_id}'"
    )
    async for execution in client.list_workflows(query, limit=1):
        handle = client.get_workflow_handle_for(DisputeWorkflow.run, execution.id)
        return await handle.query(DisputeWorkflow.dispute, rpc_timeout=QUERY_TIMEOUT)
    return None


async def follow_order(
    client: Client,
    order_id: str,
    until: Callable[[OrderView], bool] | Awaitable[OrderView],
    on_change: Callable[[OrderView], object] | None = None,
    *,
    within: timedelta | None = None,
    poll_every: timedelta = POLL_INTERVAL,
) -> OrderView:
    """Watch an order until it gets where ``until`` says, and return it then.

    ``until`` is a test of the order's view (``lambda view: view.status.is_final``) or an
    awaitable of the outcome, such as ``AcceptedRequest.outcome()``; its view is returned
    and its errors are raised. The order's status is read every ``poll_every``, and
    ``on_change`` gets the first view and every later one whose status or latest timeline
    step differs. After ``within`` (``None``: no limit) ``OrderStillRunning`` is raised; the
    order itself goes on.
    """
    outcome: asyncio.Future[OrderView] | None = None
    arrived: Callable[[OrderView], bool] | None = None
    if inspect.isawaitable(until):
        outcome = asyncio.ensure_future(until)
    else:
        arrived = until
    seen: tuple[object, ...] | None = None
    last: OrderView | None = None

    def saw(view: OrderView) -> None:
        nonlocal seen, last
        last = view
        if (key := _progress(view)) != seen:
            seen = key
            if on_change is not None:
                on_change(view)

    waiting = asyncio.timeout(within.total_seconds() if within is not None else None)
    try:
        async with waiting:
            while True:
                view = await order_status(client, order_id)
                saw(view)
                if arrived is not None and arrived(view):
                    return view
                if outcome is None:
                    await asyncio.sleep(poll_every.total_seconds())
                    continue
                await asyncio.wait({outcome}, timeout=poll_every.total_seconds())
                if outcome.done():
                    view = outcome.result()
                    saw(view)
                    return view
    except TimeoutError:
        if waiting.expired():
            raise OrderStillRunning(order_id, last) from None
        raise
    finally:
        if outcome is not None and not outcome.done():
            outcome.cancel()
            # The SDK turns the cancellation into its own error; retrieve it so that asyncio
            # does not log it as never retrieved.
            outcome.add_done_callback(lambda done: done.cancelled() or done.exception())


def _progress(view: OrderView) -> tuple[object, ...]:
    """What a person following the order sees change: its status and its latest step."""
    if not view.timeline:
        return (view.status,)
    latest = view.timeline[-1]
    # The timeline's length tells a step run again from the same step seen earlier.
    return (view.status, len(view.timeline), latest.step, latest.state)


async def _accepted(
    client: Client,
    order_id: str,
    action: str,
    verb: str,
    start: Awaitable[WorkflowUpdateHandle[OrderView]],
) -> AcceptedRequest:
    """Wait, boundedly, until the order accepts or refuses an update; raise if refused."""
    try:
        # Acceptance needs a worker to run the validator. Without one the SDK would retry
        # forever; the rpc timeout alone bounds each try, not the whole wait.
        async with asyncio.timeout(ACCEPT_TIMEOUT.total_seconds()):
            update = await start
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
        # The server may still hold the request and hand it to the next worker that starts,
        # so say it was not confirmed rather than that it failed.
        raise OrderError(
            f"order {order_id}: no worker answered within {ACCEPT_TIMEOUT.total_seconds():.0f}s; "
            "is the worker running? Start the stack with ./scripts/run. The "
            f"{action} was not confirmed and may still take effect once a worker runs; "
            f"check with: starter.py status {order_id}"
        ) from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it ended since we read it
            raise OrderRefused(await _ended(client, order_id, verb)) from err
        raise OrderError(f"order {order_id}: Temporal refused the {action}: {err.message}") from err
    if (refusal := await _refusal(update)) is not None:
        raise OrderRefused(refusal)
    return AcceptedRequest(order_id=order_id, action=action, update=update)


async def _refusal(update: WorkflowUpdateHandle[OrderView]) -> str | None:
    """The validator's reason if the order refused the update, else ``None``.

    ``start_update`` returns for a refused update too, the refusal already in the server's
    answer: ``result()`` then raises it without a network call. An accepted update has no
    outcome yet, so polling for it with a 1 ms deadline times out at once (the Temporal CLI
    checks acceptance the same way).
    """
    try:
        await update.result(rpc_timeout=_PROBE_TIMEOUT)
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        return None  # accepted and under way
    except WorkflowUpdateFailedError as err:
        return str(err.cause)
    return None  # accepted and already done


async def _ended(client: Client, order_id: str, verb: str) -> str:
    """Why an order that is no longer running can't be ``verb`` (cancelled, resolved)."""
    view = await order_status(client, order_id)
    refusal = cancel_refusal(view) if verb == "cancelled" else None
    return refusal or f"order {order_id} is already {view.status.value}; it can't be {verb}"


async def _execution_status(
    handle: WorkflowHandle[OrderWorkflow, OrderView],
) -> WorkflowExecutionStatus:
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(f"no order {handle.id}; list orders with: starter.py list") from err
        raise
    if description.status is None:
        raise OrderError(f"order {handle.id} has no status yet; try again")
    return description.status
