"""The providers' own metrics for Prometheus: requests, errors, idempotent replays and 409s.

Counted by an ASGI middleware from each answer's status line and headers, per service
(``payments``, which includes the gateway's Stripe API under ``/v1``, ``mail``,
``warehouse``, ``admin``; everything else is ``other``), and served at
``/metrics`` in Prometheus' text format. Each app has its own registry, so several apps in one
process (the tests) never share counts.
"""

from __future__ import annotations

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVICES = frozenset({"payments", "mail", "warehouse", "admin"})
_UNCOUNTED = frozenset({"/metrics", "/healthz"})


class ProviderMetrics:
    """The counters of one providers app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["service", "method", "status"]
        self.requests = Counter(
            "providers_requests",
            "HTTP requests answered, by service, method and status ('dropped': cut after commit)",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "providers_errors",
            "HTTP answers with a 4xx or 5xx status, or dropped, by service and status",
            ["service", "status"],
            registry=self.registry,
        )
        self.replays = Counter(
            "providers_idempotent_replays",
            "stored answers replayed for an idempotency key (Idempotent-Replayed: true)",
            ["service"],
            registry=self.registry,
        )
        self.conflicts = Counter(
            "providers_conflicts",
            "409 answers (and the gateway's 429 lock_timeout): the same key, or the same "
            "resource, still in flight",
            ["service"],
            registry=self.registry,
        )

    def count(self, path: str, method: str, status: str, replayed: bool) -> None:
        """Count one answer."""
        service = _service(path)
        self.requests.labels(service, method, status).inc()
        if status == "dropped" or int(status) >= 400:
            self.errors.labels(service, status).inc()
        if status == "409" or (status == "429" and service == "payments"):
            self.conflicts.labels(service).inc()
        if replayed:
            self.replays.labels(service).inc()

    def exposition(self) -> Response:
        """The counters in Prometheus' text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """ASGI middleware counting every HTTP answer in ``ProviderMetrics``."""

    def __init__(self, app: ASGIApp, metrics: ProviderMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the call on, noting the status and replay header of its answer."""
        if scope["type"] != "http" or scope["path"] in _UNCOUNTED:
            await self.app(scope, receive, send)
            return
        answer: dict[str, object] = {}

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = str(message["status"])
                headers = dict(message.get("headers", []))
                answer["replayed"] = headers.get(b"idempotent-replayed") == b"true"
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            # Started but cut short (an injected drop after commit), or crashed before answering.
            answer["status"] = "dropped" if "status" in answer else "500"
            raise
        finally:
            self.metrics.count(
                scope["path"],
                scope["method"],
                str(answer.get("status", "500")),
                bool(answer.get("replayed")),
            )


_ALIASES = {"v1": "payments", "resend": "mail"}
"""Path prefixes served by a service of another name: Stripe's API is the payment gateway,
Resend's the mail service."""


def _service(path: str) -> str:
    first = path.strip("/").split("/", 1)[0]
    first = _ALIASES.get(first, first)
    return first if first in SERVICES else "other"


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the app's counters (no API key: they hold no customer data)."""
    metrics: ProviderMetrics = request.app.state.metrics
    return metrics.exposition()
