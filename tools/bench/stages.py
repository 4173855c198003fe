"""An order's stages read from its workflow history: when it was charged, confirmed, awaited.

Every time here is an event's timestamp written by the Temporal server, not a client's clock:

- **start**: ``WorkflowExecutionStarted``;
- **charged**: ``ActivityTaskCompleted`` of the capture (``capture_payment``), when money moves;
- **confirmation email**: ``ActivityTaskCompleted`` of the first email scheduled (the order
  confirmation: no other email is sent before it on the happy path), or, when it ran as a local
  activity, the completion time the worker wrote in its marker (the marker event itself is
  written only when the workflow task completes);
- **awaiting shipment**: the search-attribute upsert to ``awaiting-shipment`` (the real order);
  for the ceiling, which has no status, the workflow task that took its last step's result (the
  confirmation email), after which it waits for the signal: both mark the moment the order was
  ready to ship;
- **shipped signal**: ``WorkflowExecutionSignaled`` (the first ``warehouse_shipped``);
- **completed**: ``WorkflowExecutionCompleted``.

The same reading also finds the workflow tasks (how many, how long each waited in the queue and
ran on the worker, and any that timed out or failed) and retried activity attempts.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.history.v1 import HistoryEvent

from orders.domain import search_attributes
from orders.domain.status import OrderStatus
from tools.harness.drive import local_activity

SHIPPED_SIGNAL = "warehouse_shipped"


@dataclass(frozen=True)
class Shape:
    """What to look for in one workflow type's history."""

    workflow_type: str
    charge_activity: str
    email_activity: str
    """The activity type of the confirmation email (the first one scheduled)."""
    last_before_wait: str | None
    """``None``: awaiting shipment is the status upsert; else the workflow task after this
    activity completed."""


REAL = Shape("OrderWorkflow", "capture_payment", "send_email", None)
CEILING = Shape(
    "CeilingOrderWorkflow",
    "ceiling_capture_payment",
    "ceiling_send_confirmation_email",
    "ceiling_send_confirmation_email",
)


def _seconds(event: HistoryEvent) -> float:
    return float(event.event_time.ToMicroseconds()) / 1e6


class AwaitingShipment:
    """Fed a history's events in order, says when the order became ready to ship.

    The benchmark follows each order's history live with this to send the shipped signal at
    once, and reads the stage's time with it afterwards: one definition for both.
    """

    def __init__(self, shape: Shape) -> None:
        self._shape = shape
        self._activity_types: dict[int, str] = {}
        self._ready = False
        self.at: float | None = None
        """The event time at which the order awaited shipment, once seen."""

    def feed(self, event: HistoryEvent) -> bool:
        """Take the next event; True once (and after) the order awaits shipment."""
        if self.at is not None:
            return True
        kind = event.event_type
        if self._shape.last_before_wait is None:
            if upserted_status(event) == OrderStatus.AWAITING_SHIPMENT.value:
                self.at = _seconds(event)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            self._activity_types[event.event_id] = scheduled.activity_type.name
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled_id = event.activity_task_completed_event_attributes.scheduled_event_id
            if self._activity_types.get(scheduled_id) == self._shape.last_before_wait:
                self._ready = True
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and self._ready:
            self.at = _seconds(event)
        return self.at is not None


def upserted_status(event: HistoryEvent) -> str | None:
    """The order status an event sets as the order's search attribute, if it is such an event."""
    if event.event_type != EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
        return None
    fields = event.upsert_workflow_search_attributes_event_attributes
    payload = fields.search_attributes.indexed_fields.get(search_attributes.ORDER_STATUS.name)
    status = None if payload is None else json.loads(payload.data or b"null")
    return status if isinstance(status, str) else None


@dataclass
class OrderHistory:
    """The stages of one order and its workflow tasks, from its history."""

    started: float | None = None
    charged: float | None = None
    confirmation_email: float | None = None
    awaiting_shipment: float | None = None
    shipped_signal: float | None = None
    completed: float | None = None
    events: int = 0
    workflow_task_queue_s: list[float] = field(default_factory=list)
    """Per workflow task: scheduled to started (waiting for a worker to take it)."""
    workflow_task_run_s: list[float] = field(default_factory=list)
    """Per workflow task: started to completed (the worker running it)."""
    workflow_task_timeouts: int = 0
    """Workflow tasks a worker took but did not finish within the task timeout (4 s)."""
    sticky_task_timeouts: int = 0
    """Workflow tasks not taken from the caching worker's sticky queue within its timeout
    (``STICKY_QUEUE_TIMEOUT``), so moved to the normal queue (and replayed from history)."""
    workflow_task_failures: int = 0
    activity_retries: int = 0
    parked: bool = False
    """The order asked an operator (its status was ``needs-attention``) at some point."""

    def stage(self, since: str, until: str) -> float | None:
        """Seconds from one stage to another, if the history has both."""
        start, end = getattr(self, since), getattr(self, until)
        return None if start is None or end is None else float(end - start)


def read_history(shape: Shape, events: Iterable[HistoryEvent]) -> OrderHistory:
    """The stages and workflow tasks of one order's whole history."""
    history = OrderHistory()
    awaiting = AwaitingShipment(shape)
    activity_types: dict[int, str] = {}
    first_email: int | None = None  # the scheduled event of the confirmation email
    task_times: dict[int, float] = {}
    for event in events:
        history.events += 1
        at, kind = _seconds(event), event.event_type
        if awaiting.feed(event) and history.awaiting_shipment is None:
            history.awaiting_shipment = awaiting.at
        if upserted_status(event) == OrderStatus.NEEDS_ATTENTION.value:
            history.parked = True
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            history.started = at
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            activity_types[event.event_id] = name
            if name == shape.email_activity and first_email is None:
                first_email = event.event_id
        elif local := local_activity(event):
            name, completed = local
            if name == shape.charge_activity:
                history.charged = completed
            elif name == shape.email_activity and first_email is None:
                first_email = event.event_id
                history.confirmation_email = completed
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            history.activity_retries += event.activity_task_started_event_attributes.attempt - 1
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled_id = event.activity_task_completed_event_attributes.scheduled_event_id
            if activity_types.get(scheduled_id) == shape.charge_activity:
                history.charged = at
            elif scheduled_id == first_email:
                history.confirmation_email = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            task_times[event.event_id] = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            scheduled_id = event.workflow_task_started_event_attributes.scheduled_event_id
            if scheduled_id in task_times:
                history.workflow_task_queue_s.append(at - task_times[scheduled_id])
            task_times[event.event_id] = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            started_id = event.workflow_task_completed_event_attributes.started_event_id
            if started_id in task_times:
                history.workflow_task_run_s.append(at - task_times[started_id])
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            timeout = event.workflow_task_timed_out_event_attributes.timeout_type
            if timeout == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START:
                history.sticky_task_timeouts += 1
            else:
                history.workflow_task_timeouts += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            history.workflow_task_failures += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signal = event.workflow_execution_signaled_event_attributes.signal_name
            if signal == SHIPPED_SIGNAL and history.shipped_signal is None:
                history.shipped_signal = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            history.completed = at
    return history
