"""The trace context over HTTP: W3C ``traceparent`` out of the activities.

``client_span`` wraps one outgoing call in a client span and writes its ``traceparent`` into
the request's headers; it does nothing while tracing is off. On the other side, FastAPI's own
telemetry (``FastAPI(telemetry=...)``, on by default) runs each request in a server span under
that ``traceparent``, named after its route, with the process's tracer provider.
"""

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from orders.telemetry.tracing import enabled

_TRACER = "orders.http"


@contextmanager
def client_span(
    name: str, method: str, url: str, headers: MutableMapping[str, str]
) -> Iterator[Span | None]:
    """Run an outgoing HTTP call in a client span; its context goes into ``headers``.

    Yields the span (``None`` while tracing is off) so the caller can add the answer's status.
    """
    if not enabled():
        yield None
        return
    attributes = {"http.request.method": method, "url.full": url}
    tracer = trace.get_tracer(_TRACER)
    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        propagate.inject(headers)
        yield span


def record_status(span: Span | None, status: int) -> None:
    """Note an HTTP answer's status on ``span``; 5xx marks it as an error."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
