"""The payment gateway's client: Stripe's API through the official ``stripe`` library.

Every call goes through ``StripeGateway.send``, so each rule lives here once: it sends the
step's idempotency key and no other (the library's own network retries are off, so no retry
and no key exists that the workflow does not know about: Temporal's retry policy retries, with
the same key), heartbeats while it waits, counts the call and carries the trace context, and
turns a failure into the project's classification (``activities.errors``): a decline ends the
order, 5xx, 409, 429 (``lock_timeout``) and transport errors are retried, other 4xx park it.
A 429 for the account's request rate (Stripe's ``rate_limit``) is back-pressure: retried under
the same key after a backoff with jitter (``activities.errors.throttled``), never counted
against the gateway's health. Stripe's ``Stripe-Should-Retry`` header only steers the library's
own retries, which are off; Temporal's retry policy decides, so one rule covers every call.
"""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import aiohttp
import stripe
from stripe import RequestOptions
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.errors import ProviderAnswer, error_for_response, error_for_transport
from activities.heartbeat import heartbeating
from orders.telemetry.http_tracing import client_span, record_status
from orders.telemetry.names import ProviderErrorKind

SERVICE = "payments"
"""The gateway's name in metrics and error messages."""

T = TypeVar("T", bound=stripe.StripeObject)

UNEXPECTED_STATE = "payment_intent_unexpected_state"
"""Stripe's answer to an action the intent's status no longer allows (confirm a confirmed one,
cancel a captured one): the caller retrieves the intent and goes by its status."""
IDEMPOTENCY_ERROR = "idempotency_error"
"""Stripe's error type for a key reused with other parameters (it has no code)."""


class StripeGateway:
    """Stripe's API (or the sandbox's copy of it) for the payment activities."""

    def __init__(self, client: stripe.StripeClient, base_url: str) -> None:
        self.v1 = client.v1
        """The library's v1 services: ``payment_intents``, ``refunds``, ..."""
        self._base_url = base_url

    async def send(
        self,
        what: str,
        call: Callable[[RequestOptions], Awaitable[T]],
        *,
        idempotency_key: str | None = None,
    ) -> T:
        """Make one gateway call (``what`` names it, e.g. ``POST /v1/payment_intents``).

        ``call`` gets the request options to pass to the library. Raises ``ApplicationError``
        classified as every provider failure is.
        """
        headers: dict[str, str] = {}
        method = what.split(" ", 1)[0]
        metrics.provider_called(SERVICE)
        with client_span(what, method, self._base_url, headers) as span:
            options: RequestOptions = {"headers": headers}
            if idempotency_key is not None:
                options["idempotency_key"] = idempotency_key
            try:
                result = await heartbeating(call(options))
            except stripe.StripeError as err:
                record_status(span, err.http_status or 0)
                raise _classified(err) from err.__cause__ or err
            except (aiohttp.ClientError, TimeoutError) as err:
                # The library reads the answer's body outside its own error handling: a
                # connection cut mid-answer arrives as aiohttp's error, not as Stripe's.
                metrics.provider_error(SERVICE, ProviderErrorKind.UNAVAILABLE)
                raise error_for_transport(SERVICE, err) from err
            response = result.last_response
            if response is not None:
                record_status(span, response.code)
                if response.headers.get("Idempotent-Replayed") == "true":
                    metrics.provider_error(SERVICE, ProviderErrorKind.REPLAYED)
        return result


def error_code(err: ApplicationError) -> str | None:
    """Stripe's error ``code`` of a classified gateway failure, if it has one."""
    details = err.details[0] if err.details else None
    code = details.get("code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else None


def error_type(err: ApplicationError) -> str | None:
    """Stripe's error ``type`` of a classified gateway failure (``idempotency_error``...)."""
    details = err.details[0] if err.details else None
    kind = details.get("type") if isinstance(details, dict) else None
    return kind if isinstance(kind, str) else None


def _classified(err: stripe.StripeError) -> ApplicationError:
    """The project's error for a failed Stripe call, counted by kind."""
    if err.http_status is None:  # no answer: a timeout or a dropped connection
        metrics.provider_error(SERVICE, ProviderErrorKind.UNAVAILABLE)
        cause = err.__cause__ if isinstance(err.__cause__, Exception) else err
        error = error_for_transport(SERVICE, cause)
        error.__cause__ = cause  # a TimeoutError stays visible (the intake breaker counts it)
        return error
    body = err.json_body if isinstance(err.json_body, dict) else {}
    answer = ProviderAnswer(
        status=err.http_status,
        body=json.dumps(body).encode() if body else str(err).encode(),
        replayed=(err.headers or {}).get("Idempotent-Replayed") == "true",
    )
    if answer.replayed:
        metrics.provider_error(SERVICE, ProviderErrorKind.REPLAYED)
    error = error_for_response(SERVICE, answer)
    metrics.provider_error(SERVICE, metrics.error_kind(error))
    return error


@asynccontextmanager
async def open_gateway(
    base_url: str, secret_key: str, timeout_seconds: float, idle_seconds: float
) -> AsyncIterator[StripeGateway]:
    """Open the gateway's client (one aiohttp connection pool), closed on exit.

    ``max_network_retries=0``: the library must not retry on its own, under keys of its own.
    ``idle_seconds``: how long an idle connection is kept (below the server's keep-alive).
    """
    connector = aiohttp.TCPConnector(keepalive_timeout=idle_seconds)
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    http = stripe.AIOHTTPClient(timeout=timeout, connector=connector)
    client = stripe.StripeClient(
        secret_key,
        base_addresses={"api": base_url.rstrip("/")},
        http_client=http,
        max_network_retries=0,
    )
    try:
        yield StripeGateway(client, base_url)
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
