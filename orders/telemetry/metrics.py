"""The worker's Prometheus endpoint: the SDK's own metrics and the orders' business metrics.

The Temporal SDK's native runtime serves ``/metrics`` itself once it is built with a
``PrometheusConfig``; every client connected with that runtime (and every worker built on such a
client) reports through it, and so do the meters that workflows (``workflow.metric_meter()``,
replay-safe) and activities (``activity.metric_meter()``) record business metrics on.
"""

import os

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from orders.telemetry.names import (
    SCHEDULE_TO_START_BUCKETS_MS,
    STEP_LATENCY,
    STEP_LATENCY_BUCKETS_MS,
)

METRICS_PORT_ENV = "ORDERS_METRICS_PORT"
"""The worker's metrics port; unset means no metrics endpoint."""
METRICS_HOST_ENV = "ORDERS_METRICS_HOST"
"""The address the endpoint binds to (default ``127.0.0.1``; ``0.0.0.0`` in a container)."""
DEFAULT_METRICS_HOST = "127.0.0.1"

_BUCKETS: dict[str, list[float]] = {
    STEP_LATENCY: [float(b) for b in STEP_LATENCY_BUCKETS_MS],
    "workflow_task_schedule_to_start_latency": [float(b) for b in SCHEDULE_TO_START_BUCKETS_MS],
    "activity_schedule_to_start_latency": [float(b) for b in SCHEDULE_TO_START_BUCKETS_MS],
}


class MetricsConfigError(Exception):
    """The metrics endpoint cannot be set up as asked; the message says why."""


def metrics_port_from_env() -> int | None:
    """``ORDERS_METRICS_PORT`` as a port number, or ``None`` when unset or empty."""
    text = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise MetricsConfigError(f"{METRICS_PORT_ENV}={text!r} is not a port number") from None


def metrics_runtime(port: int | None, host: str | None = None) -> Runtime | None:
    """A Temporal runtime serving Prometheus metrics on ``host:port``; ``None`` if no port.

    One runtime per process: connect every client with it (``orders.client.temporal.connect``).
    """
    if port is None:
        return None
    host = host or os.environ.get(METRICS_HOST_ENV) or DEFAULT_METRICS_HOST
    config = PrometheusConfig(bind_address=f"{host}:{port}", histogram_bucket_overrides=_BUCKETS)
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=config))
    except ValueError as err:  # the SDK's words for a port in use or a bad address
        raise MetricsConfigError(f"cannot serve metrics on {host}:{port}: {err}") from err


def metrics_url(port: int, host: str | None = None) -> str:
    """Where Prometheus scrapes a worker serving metrics on ``port``."""
    host = host or os.environ.get(METRICS_HOST_ENV) or DEFAULT_METRICS_HOST
    shown = "127.0.0.1" if host == "0.0.0.0" else host
    return f"http://{shown}:{port}/metrics"
