"""Operations on orders through Temporal: what ``starter.py``, the tests and tools call.

The workflow is the only record of an order: there is no second database that could drift
from it. Each failure a person can cause is raised as an ``OrderError`` with a clear message.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config.settings import TASK_QUEUE
from domain import search_attributes
from domain.currencies import format_money
from domain.models import CancelRequest, Order, OrderOptions, OrderView, ResolveRequest, Shipment
from domain.rules import cancel_refusal, ship_refusal
from domain.status import OrderStatus
from workflows.order import OPTIONS_MEMO, OrderWorkflow

QUERY_TIMEOUT = timedelta(seconds=5)


class OrderError(Exception):
    """A request about an order that cannot be carried out; the message says why."""

    exit_code = 1


class OrderExists(OrderError):
    """An order with this id was already started (now or in the past)."""

    exit_code = 3


class OrderNotFound(OrderError):
    """No order with this id exists."""

    exit_code = 4


class OrderRefused(OrderError):
    """The order exists but cannot do what was asked in its current state."""

    exit_code = 5


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
    """Start the order's workflow; refused if an order with this id ever existed."""
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
        )
    except WorkflowAlreadyStartedError as err:
        raise OrderExists(
            f"order {order.id} already exists; every order id can be used once. "
            f"See it with: starter.py status {order.id}"
        ) from err


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


async def cancel_order(client: Client, order_id: str, reason: str) -> OrderView:
    """Cancel an order that has not shipped; returns it refunded and wound down."""
    view = await order_status(client, order_id)
    if (refusal := cancel_refusal(view)) is not None:
        raise OrderRefused(refusal)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    try:
        return await handle.execute_update(OrderWorkflow.cancel, CancelRequest(reason=reason))
    except WorkflowUpdateFailedError as err:
        raise OrderRefused(str(err.cause)) from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it ended since we read it
            raise OrderRefused(await _ended(client, order_id, "cancelled")) from err
        raise


async def resolve_order(client: Client, order_id: str, request: ResolveRequest) -> OrderView:
    """Apply an operator's decision to an order that needs attention; returns its outcome.

    Whether the decision fits the order's state is the workflow's validator's call; its
    refusal is raised as ``OrderRefused``.
    """
    # Read first: an unknown order or a missing worker gets its own clear message.
    await order_status(client, order_id)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    try:
        return await handle.execute_update(OrderWorkflow.resolve, request)
    except WorkflowUpdateFailedError as err:
        raise OrderRefused(str(err.cause)) from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it has ended
            raise OrderRefused(await _ended(client, order_id, "resolved")) from err
        raise


async def _ended(client: Client, order_id: str, verb: str) -> str:
    """Why an order that is no longer running can't be ``verb`` (cancelled, resolved)."""
    view = await order_status(client, order_id)
    refusal = cancel_refusal(view) if verb == "cancelled" else None
    return refusal or f"order {order_id} is already {view.status.value}; it can't be {verb}"


async def list_orders(
    client: Client, status: OrderStatus | None = None, limit: int = 50
) -> AsyncIterator[OrderSummary]:
    """Orders newest first, optionally only those with one status."""
    query = f"WorkflowType = '{OrderWorkflow.__name__}'"
    if status is not None:
        query += f" AND {search_attributes.ORDER_STATUS.name} = '{status.value}'"
    async for execution in client.list_workflows(query, limit=limit):
        attributes = execution.typed_search_attributes
        yield OrderSummary(
            order_id=execution.id,
            status=attributes.get(search_attributes.ORDER_STATUS) or "?",
            customer_id=attributes.get(search_attributes.CUSTOMER_ID) or "?",
            started_at=execution.start_time,
            closed_at=execution.close_time,
        )


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
