"""The order's business metrics, recorded from workflow code through the replay-safe meter.

``workflow.metric_meter()`` records nothing while a worker replays history, so an order that
moves to another worker is not counted twice, and recording adds no command to the history:
replays stay identical. (A workflow task that fails after recording and runs again may count
its part once more; these are operational signals, the ledger is the record.)
"""

from temporalio import workflow
from temporalio.common import MetricCounter

with workflow.unsafe.imports_passed_through():
    from activities.payment import Charge, PaymentIntent, Refund
    from orders.domain.models import StepRecord
    from orders.domain.status import OrderStatus, RefundStatus, Step
    from orders.telemetry import names


def order_started() -> None:
    """Count an order whose workflow began."""
    _counter(names.ORDERS_STARTED, "orders started").add(1)


def status_changed(previous: OrderStatus, status: OrderStatus, step: Step | None) -> None:
    """Count an order entering ``needs-attention`` (at ``step``) or a final status."""
    if status == previous:
        return
    if status == OrderStatus.NEEDS_ATTENTION:
        attention = _counter(names.ORDERS_NEEDS_ATTENTION, "orders that entered needs-attention")
        attention.add(1, {"step": step.value if step else "unknown"})
    elif status.is_final:
        _counter(names.ORDERS_FINISHED, "orders by final status").add(1, {"status": status.value})


def authorization_expiring() -> None:
    """Count an order whose authorization expires soon with nothing captured (an alert's)."""
    _counter(names.AUTHORIZATIONS_EXPIRING, "authorizations about to expire uncaptured").add(1)


def authorization_expired() -> None:
    """Count an order whose authorization expired before its capture."""
    _counter(names.AUTHORIZATIONS_EXPIRED, "authorizations that expired uncaptured").add(1)


def dispute_opened(reason: str) -> None:
    """Count a chargeback opened on an order's payment (an alert's)."""
    _counter(names.DISPUTES, "chargebacks opened on orders").add(1, {"reason": reason})


def step_finished(line: StepRecord, result: object, currency: str) -> None:
    """Record a step's latency, and the money its answer says moved."""
    if line.finished_at is None:
        return
    millis = int((line.finished_at - line.started_at).total_seconds() * 1000)
    outcome = line.state.value  # completed, failed, or restarted (news made it read again)
    latency = workflow.metric_meter().create_histogram(
        names.STEP_LATENCY, "time of a step in the order, retries included", "ms"
    )
    latency.record(max(millis, 0), {"step": line.step.value, "outcome": outcome})
    if isinstance(result, Charge):
        _charged(result.amount, result.currency)
    elif isinstance(result, PaymentIntent) and result.charged:
        _charged(result.amount, result.currency)  # a cancel answered: it was charged
    elif isinstance(result, Refund) and result.status == RefundStatus.SUCCEEDED:
        _counter(names.REFUNDED, "money refunded, minor units", "minor units").add(
            result.amount, {"currency": currency}
        )


def _charged(amount: int, currency: str) -> None:
    _counter(names.CHARGED, "money charged, minor units", "minor units").add(
        amount, {"currency": currency}
    )


def _counter(name: str, description: str, unit: str = "1") -> MetricCounter:
    return workflow.metric_meter().create_counter(name, description, unit)
