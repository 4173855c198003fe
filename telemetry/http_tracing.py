"""The trace context over HTTP: W3C ``traceparent`` out of the activities, into the providers.

``client_span`` wraps one outgoing call in a client span and writes its ``traceparent`` into
the request's headers; ``TraceContextMiddleware`` reads it in the providers and runs the
request's handler in a server span under it. Both do nothing while tracing is off.
"""

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry.tracing import enabled

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


class TraceContextMiddleware:
    """ASGI middleware: each HTTP request runs in a server span, under the caller's trace.

    The span is named after the route that handled the request (``POST /payments/intents``),
    so names stay few whatever the ids in the paths.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call; only HTTP requests are traced, and only while tracing is on."""
        if scope["type"] != "http" or not enabled():
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        tracer = trace.get_tracer(_TRACER)
        with tracer.start_as_current_span(
            f"{method} {scope['path']}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    record_status(span, int(message["status"]))
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
