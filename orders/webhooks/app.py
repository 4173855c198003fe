"""The webhook receiver: ``POST /webhooks/warehouse`` turns signed shipment events into shipments.

Every call is checked before it can have any effect, in this order, and refused with a 4xx in
the shape ``{"error": {"code", "message"}}``:

1. the body is at most ``max_body_bytes`` (413 ``request_too_large``, before anything parses it);
2. the ``Warehouse-Signature`` header is present and well formed, one of its ``v1`` signatures
   matches the raw body under one of the secrets, and its timestamp is within the tolerance
   (400 ``signature_missing``, ``signature_malformed``, ``signature_mismatch``,
   ``timestamp_out_of_tolerance``);
3. the body is a ``shipment.shipped`` event (400 ``invalid_event``), whose carrier and tracking
   number the order model accepts (422 ``invalid_shipment``).

Then the order takes it or says why not (``orders.webhooks.handoff``), and the warehouse hears:

| the order | answer | the warehouse |
|---|---|---|
| shipped now | 200 ``{"outcome": "shipped"}`` | delivered |
| already shipped with this shipment (a redelivery, a replay) | 200 ``duplicate`` | delivered |
| still paying or picking | 409 ``order_not_ready`` + ``Retry-After`` | retries later |
| cancelled, or shipped with another parcel | 422 ``order_cannot_ship`` | failed: an operator |
| no such order | 404 ``order_not_found`` | failed: an operator |
| Temporal unreachable, no worker answering | 503 ``unavailable`` + ``Retry-After`` | retries |
"""

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from temporalio.client import Client

from orders.config import stripe_events
from orders.config.settings import TASK_QUEUE
from orders.config.stripe_events import SIGNATURE_HEADER as STRIPE_SIGNATURE_HEADER
from orders.config.stripe_events import WEBHOOK_PATH as STRIPE_WEBHOOK_PATH
from orders.config.webhooks import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TOLERANCE_S,
    SIGNATURE_HEADER,
    WEBHOOK_PATH,
)
from orders.webhooks import signature, stripe_handoff
from orders.webhooks.events import SHIPMENT_SHIPPED, ShipmentShipped
from orders.webhooks.handoff import DEFAULT_TIMEOUT, Handoff, Outcome, hand_over

log = logging.getLogger("webhooks")

ClientSource = Callable[[], Awaitable[Client]]
"""Gives the Temporal client (connecting on first use); raises when Temporal is unreachable."""

RETRY_AFTER_S = 10
"""The default ``Retry-After`` of a 409 or 503: when the warehouse should try again."""

_ANSWERS: dict[Outcome, tuple[int, str]] = {
    Outcome.SHIPPED: (200, "shipped"),
    Outcome.DUPLICATE: (200, "duplicate"),
    Outcome.NOT_YET: (409, "order_not_ready"),
    Outcome.REFUSED: (422, "order_cannot_ship"),
    Outcome.UNKNOWN_ORDER: (404, "order_not_found"),
    Outcome.UNAVAILABLE: (503, "unavailable"),
}


SignatureHeader = Annotated[
    str | None,
    Header(
        alias=SIGNATURE_HEADER,
        description="t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t.body)>[,v1=...]; "
        "required (a call without it is refused with 400 signature_missing).",
    ),
]
"""Declared, so the OpenAPI document names the header (PITFALLS 12); checked by the handler."""


class _Refused(Exception):
    """A call refused before it reached an order."""

    def __init__(self, status: int, code: str, message: str, outcome: str = "invalid") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.outcome = status, code, message, outcome


class ReceiverMetrics:
    """The receiver's counters, in a registry of its own (served at ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "webhooks_events",
            "warehouse webhook calls by outcome: shipped, duplicate, not_yet, refused, "
            "unknown_order, unavailable, invalid, too_large, bad_signature",
            ["outcome"],
            registry=self.registry,
        )
        self.signature_failures = Counter(
            "webhooks_signature_failures",
            "calls refused for their signature, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "webhooks_request_duration_seconds",
            "time to answer a webhook call, by outcome",
            ["outcome"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes: a longer one is refused before it is all read."""
    too_large = _Refused(
        413, "request_too_large", f"the body is larger than {limit} bytes", "too_large"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Refused(400, "incomplete_body", "the caller went away mid-body") from None
    return b"".join(chunks)


def _parse(body: bytes) -> ShipmentShipped:
    try:
        event = ShipmentShipped.model_validate_json(body)
    except ValidationError as err:
        kinds = sorted({str(problem["type"]) for problem in err.errors()})
        if "literal_error" in kinds:
            message = f"only {SHIPMENT_SHIPPED} events are accepted"
        else:
            message = f"the body is not a {SHIPMENT_SHIPPED} event ({', '.join(kinds)})"
        raise _Refused(400, "invalid_event", message) from None
    return event


def create_app(
    secrets: Sequence[str],
    temporal: ClientSource,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    handoff_wait: timedelta = DEFAULT_TIMEOUT,
    retry_after_s: int = RETRY_AFTER_S,
    stripe_secrets: Sequence[str] = (),
) -> FastAPI:
    """The receiver's app, verifying with ``secrets`` and reaching orders through ``temporal``.

    With ``stripe_secrets`` (the Stripe endpoint's signing secrets) it serves Stripe's events
    too, at ``/webhooks/stripe``.
    """
    if not secrets:
        raise ValueError("the receiver needs at least one webhook secret")
    app = FastAPI(title="Warehouse webhook receiver", docs_url=None, redoc_url=None)
    metrics = ReceiverMetrics()
    app.state.metrics = metrics

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        """Liveness: the process answers (Temporal may still be unreachable)."""
        return {"ok": True}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        """The receiver's counters in Prometheus' text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(WEBHOOK_PATH)
    async def receive(request: Request, warehouse_signature: SignatureHeader = None) -> Response:
        """Verify a warehouse event and hand it to its order; the answer says what to do next."""
        started = time.perf_counter()
        outcome = "invalid"
        try:
            body = await _read_body(request, max_body_bytes)
            try:
                signature.verify(warehouse_signature, body, secrets, tolerance_s)
            except signature.SignatureError as err:
                metrics.signature_failures.labels(err.reason.value).inc()
                raise _Refused(400, err.reason.value, str(err), "bad_signature") from None
            event = _parse(body)
            try:
                shipment = event.data.shipment()
            except ValidationError as err:
                fields = ", ".join(sorted({str(p["loc"][0]) for p in err.errors() if p["loc"]}))
                message = f"the order model does not accept this shipment's {fields}"
                raise _Refused(422, "invalid_shipment", message) from None
            handoff = await _hand_over(event, shipment)
            outcome = handoff.outcome.value
            return _answer(event, handoff)
        except _Refused as refused:
            outcome = refused.outcome
            log.warning("refused a webhook call: %s %s", refused.code, refused.message)
            return _error(refused.status, refused.code, refused.message)
        finally:
            metrics.events.labels(outcome).inc()
            metrics.latency.labels(outcome).observe(time.perf_counter() - started)

    async def _hand_over(event: ShipmentShipped, shipment: Any) -> Handoff:
        try:
            client = await temporal()
        except Exception as err:
            return Handoff(Outcome.UNAVAILABLE, f"Temporal is unreachable: {err}")
        return await hand_over(client, event.data.order_id, shipment, event.id, handoff_wait)

    def _answer(event: ShipmentShipped, handoff: Handoff) -> Response:
        status, code = _ANSWERS[handoff.outcome]
        order_id = event.data.order_id
        log.info("event %s for order %s: %s", event.id, order_id, handoff.outcome.value)
        if status == 200:
            body = {"outcome": code, "event": event.id, "order_id": order_id}
            return JSONResponse({**body, "message": handoff.message})
        retry = {"Retry-After": str(retry_after_s)} if status in (409, 503) else {}
        return _error(status, code, handoff.message, **retry)

    if stripe_secrets:
        _add_stripe_endpoint(
            app, stripe_secrets, temporal, tolerance_s, max_body_bytes, handoff_wait
        )
    return app


StripeSignatureHeader = Annotated[
    str | None,
    Header(
        alias=STRIPE_SIGNATURE_HEADER,
        description="Stripe's signature, verified by stripe.Webhook.construct_event.",
    ),
]


def _add_stripe_endpoint(
    app: FastAPI,
    secrets: Sequence[str],
    temporal: ClientSource,
    tolerance_s: float,
    max_body_bytes: int,
    handoff_wait: timedelta,
) -> None:
    """``POST /webhooks/stripe``: Stripe's events, verified, handed to their orders.

    400 for a body that the official library does not verify with the endpoint's secret (or
    that is not JSON), 413 for a body too large, 503 (Stripe retries) when the order cannot
    answer now; every other event 200, including events for objects the shop does not know
    and for orders that have ended.
    """
    counter = Counter(
        "webhooks_stripe_events",
        "Stripe events by outcome: taken, no_order, not_running, unavailable, bad_signature",
        ["outcome"],
        registry=app.state.metrics.registry,
    )

    @app.post(STRIPE_WEBHOOK_PATH)
    async def receive_stripe(
        request: Request, stripe_signature: StripeSignatureHeader = None
    ) -> Response:
        """Verify a Stripe event with the official library and hand it to its order."""
        outcome = "bad_signature"
        try:
            body = await _read_body(request, max_body_bytes)
            try:
                event = stripe_handoff.verify(body, stripe_signature, secrets, tolerance_s)
            except stripe_handoff.VerificationFailed as err:
                raise _Refused(400, "signature_verification_failed", str(err)) from None
            handoff = await _to_order(event)
            outcome = handoff.outcome.value
            log.info("stripe event %s %s: %s", event.id, event.type, handoff.message)
            if handoff.outcome == stripe_handoff.StripeOutcome.UNAVAILABLE:
                return _error(503, "unavailable", handoff.message, **{"Retry-After": "10"})
            return JSONResponse({"outcome": outcome, "event": event.id, "message": handoff.message})
        except _Refused as refused:
            log.warning("refused a Stripe event: %s %s", refused.code, refused.message)
            return _error(refused.status, refused.code, refused.message)
        finally:
            counter.labels(outcome).inc()

    async def _to_order(event: Any) -> stripe_handoff.StripeHandoff:
        dispute = event.type in stripe_handoff.DISPUTE_EVENTS
        order_id = stripe_handoff.order_of(event)
        if not dispute and order_id is None:
            return stripe_handoff.StripeHandoff(
                stripe_handoff.StripeOutcome.NO_ORDER, f"{event.type} names no order"
            )
        try:
            client = await temporal()
        except Exception as err:
            return stripe_handoff.StripeHandoff(
                stripe_handoff.StripeOutcome.UNAVAILABLE, f"Temporal is unreachable: {err}"
            )
        if dispute:
            notify = stripe_events.operations_email()
            return await stripe_handoff.hand_dispute(client, event, TASK_QUEUE, notify)
        assert order_id is not None
        return await stripe_handoff.hand_over(client, order_id, event, handoff_wait)
