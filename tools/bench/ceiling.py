"""The ceiling: a no-op workflow with the naive order shape, to measure the real one against.

Six regular activities in sequence that return at once (payment intent, authorization,
picklist, capture, confirmation email, shipped email) and the warehouse's shipped signal between
the confirmation and the shipped email. It takes the same ``Order`` input, schedules its
activities with the real steps' timeouts and retry policy (``workflows.policy``), and runs in
a worker with the real worker's sandbox and settings (``tools.bench.ceiling_worker``). Whatever the
real workflow costs above this is the project's own; a real workflow at or above the ceiling's
throughput has fewer round trips than the naive shape.
"""

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from orders.domain.models import Order, Shipment
    from tools.bench import ceiling_activities
    from workflows.policy import PROVIDER_CALL_TIMEOUT, PROVIDER_HEARTBEAT_TIMEOUT, PROVIDER_RETRY

STEP_BUDGET = timedelta(hours=6)
"""Like the real steps' schedule-to-close (their retry budget)."""


@workflow.defn
class CeilingOrderWorkflow:
    """Authorize, reserve, capture, confirm, wait for the shipment, tell the customer: no-ops."""

    def __init__(self) -> None:
        self._shipment: Shipment | None = None

    @workflow.run
    async def run(self, order: Order) -> str:
        """Run the steps with the shipped signal before the shipped email."""
        for step in ceiling_activities.ALL[:-1]:
            await self._step(step, order.id)
        await workflow.wait_condition(lambda: self._shipment is not None)
        await self._step(ceiling_activities.send_shipped_email, order.id)
        return "completed"

    async def _step(self, activity: Callable[[str], Awaitable[str]], order_id: str) -> str:
        return await workflow.execute_activity(
            activity,
            order_id,
            start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
            heartbeat_timeout=PROVIDER_HEARTBEAT_TIMEOUT,
            schedule_to_close_timeout=STEP_BUDGET,
            retry_policy=PROVIDER_RETRY,
        )

    @workflow.signal
    def warehouse_shipped(self, shipment: Shipment) -> None:
        """The warehouse reports the parcel has left."""
        self._shipment = shipment
