"""What the activities count: calls to each provider, and the answers that were not plain success.

Recorded through the activity's metric meter (``activity.metric_meter()``), so they reach the
worker's Prometheus endpoint with the activity's labels; outside an activity they are skipped.
"""

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import OUT_OF_STOCK, PAYMENT_DECLINED, PROVIDER_REJECTED, PROVIDER_THROTTLED
from orders.telemetry.names import PROVIDER_ERRORS, PROVIDER_REQUESTS, ProviderErrorKind

_KINDS = {
    PAYMENT_DECLINED: ProviderErrorKind.DECLINED,
    OUT_OF_STOCK: ProviderErrorKind.OUT_OF_STOCK,
    PROVIDER_REJECTED: ProviderErrorKind.REFUSED,
    PROVIDER_THROTTLED: ProviderErrorKind.THROTTLED,
}


def provider_called(service: str) -> None:
    """Count one HTTP call to ``service``."""
    if activity.in_activity():
        meter = activity.metric_meter()
        meter.create_counter(PROVIDER_REQUESTS, "HTTP calls to a provider").add(
            1, {"service": service}
        )


def provider_error(service: str, kind: str) -> None:
    """Count one answer of ``kind`` (see ``ProviderErrorKind``) from ``service``."""
    if activity.in_activity():
        counter = activity.metric_meter().create_counter(
            PROVIDER_ERRORS, "provider answers that were not a plain success"
        )
        counter.add(1, {"service": service, "kind": kind})


def error_kind(error: ApplicationError) -> str:
    """The kind of a classified provider error (``activities.errors``)."""
    return _KINDS.get(error.type or "", ProviderErrorKind.UNAVAILABLE)
