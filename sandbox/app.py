"""Assemble the sandbox providers app: one FastAPI app for payments, mail and warehouse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI

from orders.telemetry import tracing
from sandbox import admin, mail, pages, payments, resend, stripe, warehouse, webhooks
from sandbox.auth import api_key_dependency
from sandbox.body_limit import BodySizeLimit
from sandbox.errors import install_error_handlers
from sandbox.faults import (
    DEFAULT_AUTHORIZATION_VALIDITY_S,
    DEFAULT_SEARCH_LAG_MS,
    Faults,
    MailBehaviour,
    QuietDrops,
    RateLimits,
)
from sandbox.idempotency import Idempotency
from sandbox.ledger import Ledger
from sandbox.metrics import MetricsMiddleware, ProviderMetrics, metrics_endpoint
from sandbox.stripe import authentication, clock, disputes, events
from sandbox.stripe.errors import restyle
from sandbox.stripe.rate_limits import RateLimiter
from sandbox.stripe.request_ids import RequestIds


def create_app(
    db_path: str | Path,
    api_key: str,
    search_lag_ms: int = DEFAULT_SEARCH_LAG_MS,
    webhook_settings: webhooks.SenderSettings | None = None,
    authorization_validity_s: float = DEFAULT_AUTHORIZATION_VALIDITY_S,
    rate_limits: RateLimits | None = None,
    mail_behaviour: MailBehaviour | None = None,
    stripe_webhook_settings: webhooks.SenderSettings | None = None,
) -> FastAPI:
    """Build the app on the SQLite ledger at ``db_path``, guarded by ``api_key``.

    ``search_lag_ms`` is how long the gateway's search lags its writes, and
    ``authorization_validity_s`` how long a card authorization can be captured, and
    ``rate_limits`` the gateway account's rate limits (default: Stripe's test mode), unless the
    ``payments`` faults say otherwise. ``webhook_settings``: how the warehouse sends its
    webhooks, ``stripe_webhook_settings`` how the gateway sends Stripe's events (both by
    default from the environment). ``mail_behaviour``: how the mail service treats keys and
    load unless its faults say otherwise (default: Resend's 24 h keys, no limit).
    """
    ledger = Ledger(db_path)
    faults = Faults(search_lag_ms, authorization_validity_s, rate_limits, mail_behaviour)
    idempotency = Idempotency(ledger, faults)
    idempotency.release_stale_claims()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Installed here, after uvicorn has configured its loggers.
        quiet = QuietDrops()
        logging.getLogger("uvicorn.error").addFilter(quiet)
        tracing.configure("orders-providers")  # only if OTEL_* variables ask for it
        # The outbox's events still pending (from before a restart too) go out from here on.
        sending = asyncio.create_task(sender.run())
        telling = asyncio.create_task(stripe_sender.run())  # the gateway's Stripe events
        ticking = asyncio.create_task(clock.run(ledger))  # expiries and settlements
        try:
            yield
        finally:
            for task in (sending, telling, ticking):
                task.cancel()
            await asyncio.gather(sending, telling, ticking, return_exceptions=True)
            logging.getLogger("uvicorn.error").removeFilter(quiet)
            tracing.shutdown()
            ledger.close()

    # The default /docs and /openapi.json would be unauthenticated; a guarded schema is below.
    app = FastAPI(
        title="Sandbox providers",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ledger = ledger
    app.state.faults = faults
    app.state.rate_limiter = RateLimiter(faults.rate_limit)
    app.state.idempotency = idempotency
    app.state.mail_rate_limiter = resend.RateLimiter()
    app.state.metrics = metrics = ProviderMetrics()
    sender = webhooks.WebhookSender(
        ledger, webhook_settings or webhooks.SenderSettings.from_env(), metrics.registry
    )
    app.state.webhooks = sender
    stripe_sender = events.StripeEventSender(
        ledger, stripe_webhook_settings or events.settings_from_env(), metrics.registry
    )
    app.state.stripe_events = stripe_sender
    # Under /v1 errors are worded as Stripe's, so its library raises the right exceptions.
    install_error_handlers(app, {stripe.PREFIX: restyle, resend.PREFIX: resend.restyle})
    app.add_middleware(BodySizeLimit)  # 413 for a body over 1 MB, before anything parses it
    # Each request is counted. Tracing needs nothing here: FastAPI's own telemetry runs each
    # request in a server span under the caller's traceparent once tracing is configured.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIds)  # Request-Id: req_... on every answer, as Stripe's

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        """Readiness probe; with ``/metrics``, the only endpoints without authentication."""
        return {"ok": True}

    # Unauthenticated like /healthz, so Prometheus can scrape it: counts only, no customer data.
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)

    # Stripe's API takes the key from the Authorization header only, and so does /v1 here.
    guarded = [Depends(api_key_dependency(api_key, header_only=(stripe.PREFIX,)))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> dict[str, Any]:
        """The OpenAPI schema of this app."""
        return app.openapi()

    for module in (
        stripe,
        payments,
        mail,
        resend,
        warehouse,
        admin,
        webhooks,
        events,
        disputes,
        pages,
    ):
        app.include_router(module.router, dependencies=guarded)
    # The customer's 3-D Secure page: its link's client secret, not the shop's key, guards it.
    app.include_router(authentication.router)
    return app
