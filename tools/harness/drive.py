"""Drive many orders through a local stack: start them, ship them, wait, time recoveries.

Shared by the crash scenarios, the benchmark and the demo. Waiting reads Temporal's visibility
store (one count per poll, whatever the number of orders) and tolerates Temporal being briefly
unreachable, because some scenarios kill it on purpose.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.history.v1 import HistoryEvent, MarkerRecordedEventAttributes
from temporalio.client import Client
from temporalio.service import RPCError

from orders.client.orders import start_order
from orders.domain import search_attributes
from orders.domain.models import Order, Shipment
from orders.domain.status import OrderStatus
from tools.stack.processes import ROOT
from workflows.order import OrderWorkflow

T = TypeVar("T")

SHIPMENT = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")
DECLINED_CARD = "pm_card_chargeDeclined"


def sample_order(order_id: str, payment_method: str = "pm_card_visa") -> Order:
    """The README's example order (``examples/order.json``) under another id, placed now."""
    data = json.loads((ROOT / "examples" / "order.json").read_text())
    return Order.model_validate(
        {**data, "id": order_id, "payment_method": payment_method, "placed_at": datetime.now(UTC)}
    )


@dataclass(frozen=True)
class Placed:
    """An order as a run placed it, and the end the run meant it to reach.

    The checker holds the order's outcome and its money to this, not to what the order says
    about itself.
    """

    order: Order
    meant: OrderStatus

    @classmethod
    def sample(cls, order_id: str, payment_method: str = "pm_card_visa") -> "Placed":
        """The README's example order, meant to be declined if it pays with ``DECLINED_CARD``.

        Any other card is meant to complete.
        """
        declined = payment_method == DECLINED_CARD
        meant = OrderStatus.PAYMENT_DECLINED if declined else OrderStatus.COMPLETED
        return cls(sample_order(order_id, payment_method), meant)

    @property
    def order_id(self) -> str:
        """The order's id."""
        return self.order.id


async def gather_limited(calls: Iterable[Awaitable[T]], concurrency: int = 20) -> list[T]:
    """Await every call, at most ``concurrency`` at a time; results in the calls' order."""
    limit = asyncio.Semaphore(concurrency)

    async def limited(call: Awaitable[T]) -> T:
        async with limit:
            return await call

    return await asyncio.gather(*(limited(call) for call in calls))


async def start_orders(client: Client, orders: Iterable[Order]) -> None:
    """Start every order, a few at a time."""
    await gather_limited(start_order(client, order) for order in orders)


async def ship(client: Client, order_id: str) -> None:
    """Report the order shipped, as the warehouse does: a signal, needing no worker."""
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    await handle.signal(OrderWorkflow.warehouse_shipped, SHIPMENT)


async def count(client: Client, status: OrderStatus | None = None, running: bool = True) -> int:
    """How many orders have ``status`` (any, if ``None``), among running or closed ones."""
    query = f"WorkflowType = '{OrderWorkflow.__name__}'"
    query += f" AND ExecutionStatus {'=' if running else '!='} 'Running'"
    if status is not None:
        query += f" AND {search_attributes.ORDER_STATUS.name} = '{status.value}'"
    return (await client.count_workflows(query)).count


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, within: float, poll: float = 0.2
) -> None:
    """Poll ``condition`` until it holds; Temporal being unreachable counts as "not yet"."""
    deadline = time.monotonic() + within
    while True:
        try:
            if await condition():
                return
        except RPCError:
            pass  # Temporal restarting: ask again
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {within:.0f}s waiting until {what}")
        await asyncio.sleep(poll)


async def wait_for_count(
    client: Client, status: OrderStatus | None, at_least: int, within: float, running: bool = True
) -> None:
    """Wait until at least ``at_least`` (running or closed) orders have ``status``."""
    where = "running" if running else "closed"
    label = status.value if status else "any status"
    await wait_until(
        lambda: _at_least(count(client, status, running), at_least),
        f"{at_least} {where} orders are {label}",
        within,
    )


async def _at_least(counted: Awaitable[int], minimum: int) -> bool:
    return await counted >= minimum


async def finish_orders(client: Client, order_ids: Iterable[str], within: float) -> None:
    """Ship each order as soon as it awaits shipment, until no order is running."""
    pending = set(order_ids)
    shipped: set[str] = set()

    async def all_finished() -> bool:
        query = f"{search_attributes.ORDER_STATUS.name} = '{OrderStatus.AWAITING_SHIPMENT.value}'"
        ready = [
            execution.id
            async for execution in client.list_workflows(f"{query} AND ExecutionStatus='Running'")
            if execution.id in pending - shipped
        ]
        await asyncio.gather(*(ship(client, order_id) for order_id in ready))
        shipped.update(ready)
        return await count(client) == 0

    await wait_until(all_finished, "every order has finished", within, poll=0.5)


LOCAL_ACTIVITY_MARKER = "core_local_activity"
"""The marker the SDK records for each local activity's result."""


def local_activity(event: HistoryEvent) -> tuple[str, float] | None:
    """The activity type and completion time of a successful local activity's marker.

    The marker is written when its workflow task completes; the completion time is the one the
    worker wrote into it (the task's start plus the call's run time).
    """
    if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
        return None
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or marker.HasField("failure"):
        return None
    data = marker.details["data"].payloads
    fields = json.loads(data[0].data) if data else {}
    completed = fields.get("complete_time")
    if isinstance(completed, dict):
        at = int(completed.get("seconds", 0)) + int(completed.get("nanos", 0)) / 1e9
    elif isinstance(completed, str):
        at = datetime.fromisoformat(completed.replace("Z", "+00:00")).timestamp()
    else:
        at = event.event_time.ToMicroseconds() / 1e6
    return str(fields.get("activity_type", "")), at


async def recovery_seconds(client: Client, order_id: str, killed_at: float) -> float | None:
    """Seconds from a kill until the order's next step had completed and been recorded.

    That is the first activity of the order to complete after ``killed_at`` (a regular one, or
    a local one's marker), and the workflow task that recorded it (so the order has moved on):
    both read from the order's history.
    ``None`` if no step completed after the kill.
    """
    step_done = False
    async for event in client.get_workflow_handle(order_id).fetch_history_events():
        at = event.event_time.ToMicroseconds() / 1e6
        if at < killed_at:
            continue
        if local_activity(event):
            return at - killed_at  # recorded by the workflow task that just completed
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            step_done = True
        elif step_done and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return at - killed_at
    return None


async def lost_with(client: Client, order_id: str, kills: Mapping[str, float]) -> float | None:
    """When the order lost work with a killed worker: that kill's time, else ``None``.

    ``kills`` maps a worker's Temporal identity (``pid@host``) to when it was killed. The
    evidence is in the order's history: a workflow task that timed out while started on, or
    stuck on the sticky queue of, a killed worker; or an activity retried after a timeout
    (its lost attempt ran on the worker that scheduled it, as activities run eagerly).
    """
    holder = started_by = ""  # the worker holding the order in its cache; running its task
    async for event in client.get_workflow_handle(order_id).fetch_history_events():
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            started_by = event.workflow_task_started_event_attributes.identity
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            holder = event.workflow_task_completed_event_attributes.identity
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            timeout = event.workflow_task_timed_out_event_attributes.timeout_type
            lost = started_by if timeout == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE else holder
            if lost in kills:
                return kills[lost]
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            retry = event.activity_task_started_event_attributes
            if retry.last_failure.HasField("timeout_failure_info") and holder in kills:
                return kills[holder]
    return None


async def retried_attempts(client: Client, order_id: str) -> int:
    """How many of the order's activity attempts failed and were tried again.

    A local try that failed on a fault is one: its step went on as the regular activity (a
    refusal or a cancel ends the step instead).
    """
    retried = 0
    async for event in client.get_workflow_handle(order_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            retried += event.activity_task_started_event_attributes.attempt - 1
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            retried += _local_try_failed_on_a_fault(event.marker_recorded_event_attributes)
    return retried


def _local_try_failed_on_a_fault(marker: MarkerRecordedEventAttributes) -> bool:
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or not marker.HasField("failure"):
        return False
    failure = marker.failure
    refused = failure.application_failure_info.non_retryable
    return not (refused or failure.HasField("canceled_failure_info"))
