"""The names of the business metrics, in one place for the code, the alerts and the dashboard.

The worker records them through the Temporal SDK's metric meters, so they are exported next to
the SDK's own ``temporal_*`` metrics, with the SDK's labels (``namespace``, ``task_queue``,
``workflow_type`` or ``activity_type``) added. Counters carry ``_total`` in their names (the
SDK's exporter does not add it); amounts are integers in minor units, as everywhere else.
"""

ORDERS_STARTED = "orders_started_total"
"""Orders whose workflow began to run."""
ORDERS_FINISHED = "orders_finished_total"
"""Orders that reached a final status; label ``status`` (``completed``, ``cancelled``, ...)."""
ORDERS_NEEDS_ATTENTION = "orders_needs_attention_total"
"""Orders that entered ``needs-attention``; label ``step`` (the step that asks for a person)."""
CHARGED = "orders_charged_minor_units_total"
"""Money the gateway took, as it answered; label ``currency``."""
REFUNDED = "orders_refunded_minor_units_total"
"""Money the gateway gave back (refunds that succeeded, not pending ones); label ``currency``."""
AUTHORIZATIONS_EXPIRING = "orders_authorizations_expiring_total"
"""Orders whose card authorization is about to expire with nothing captured (an operator's)."""
AUTHORIZATIONS_EXPIRED = "orders_authorizations_expired_total"
"""Orders whose card authorization expired before the capture."""
DISPUTES = "orders_disputes_total"
"""Chargebacks opened on orders' payments (``charge.dispute.created``), running or ended."""
STEP_LATENCY = "orders_step_latency_ms"
"""Histogram of a step's time in the order (retries and waits included), in milliseconds;
labels ``step`` and ``outcome`` (``completed`` or ``failed``)."""
PROVIDER_REQUESTS = "orders_provider_requests_total"
"""HTTP calls the activities made to a provider; label ``service``."""
PROVIDER_ERRORS = "orders_provider_errors_total"
"""Provider answers that were not a plain success; labels ``service`` and ``kind``."""

STEP_LATENCY_BUCKETS_MS = (
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000,
    21_600_000, 86_400_000, 259_200_000, 1_209_600_000,
)  # fmt: skip
"""From a fast call (50 ms) to the shipment's 14-day deadline."""

SCHEDULE_TO_START_BUCKETS_MS = (10, 25, 50, 100, 200, 500, 1_000, 5_000, 10_000, 60_000)
"""For the SDK's schedule-to-start latencies: Temporal's guidance alerts on a p99 above 200 ms,
so 200 is a bucket boundary (the SDK's default buckets jump from 100 to 500)."""


class ProviderErrorKind:
    """The ``kind`` label of ``orders_provider_errors_total``."""

    DECLINED = "declined"
    """The card was declined (a business outcome)."""
    OUT_OF_STOCK = "out_of_stock"
    """The warehouse could not fill the picklist (a business outcome)."""
    REFUSED = "refused"
    """A 4xx that retries cannot fix: the order is parked for an operator."""
    UNAVAILABLE = "unavailable"
    """5xx, 409 (same key in flight), a locked object, timeouts, dropped connections: retried."""
    THROTTLED = "throttled"
    """A 429 for the account's request rate (Stripe's ``rate_limit``): back-pressure, retried."""
    REPLAYED = "replayed"
    """The provider replayed its stored answer for an idempotency key (``Idempotent-Replayed``)."""
