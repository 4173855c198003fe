"""The mail service's Resend API, through the official ``resend`` library on the worker's aiohttp.

The library carries the idempotency key (``send_async(params, {"idempotency_key": ...})``) and
has an async path whose HTTP client is pluggable (``resend.AsyncHTTPClient``): it runs here on
the worker's shared aiohttp session, so an email costs what any other provider call costs, with
the same heartbeats, metrics and client span. The library keeps its address and key in module
globals (``resend.api_url``, ``resend.api_key``): a worker talks to one mail service, set while
its provider clients are open (``configured``).

Its errors become Temporal errors as every provider's do (``activities.errors``): a lost answer,
a 5xx, a key still in flight (409 ``concurrent_idempotent_requests``) and a rate limit (429
``rate_limit_exceeded``, retried no sooner than its ``retry-after``) are retried with the same
key; a key reused with another payload (409 ``invalid_idempotent_request``) and other 4xx are
refusals that park the step for an operator.
"""

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import resend
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.errors import (
    PROVIDER_REJECTED,
    PROVIDER_UNAVAILABLE,
    ProviderAnswer,
    error_for_response,
)
from activities.heartbeat import heartbeating
from orders.telemetry.http_tracing import client_span, record_status
from orders.telemetry.names import ProviderErrorKind

SERVICE = "mail"
RESEND_PREFIX = "/resend"
"""Where the sandbox serves Resend's API (``sandbox.resend``)."""
RATE_LIMITED = "MailRateLimited"
"""The error type of a 429: back-pressure, retried after the provider's ``retry-after``."""
_TRANSPORT = "HttpClientError"
"""The library's error type for a call that got no answer (its HTTP client raised)."""
_KEY_REUSED = "invalid_idempotent_request"


class AiohttpClient(resend.AsyncHTTPClient):
    """The library's async HTTP client, on a shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        """Make one call; a transport failure is raised (the library wraps it as its error)."""
        metrics.provider_called(SERVICE)
        sent = dict(headers)
        verb = method.upper()
        with client_span(f"{verb} /{SERVICE}", verb, url, sent) as span:
            async with self._session.request(method, url, json=json, headers=sent) as response:
                body = await response.read()
                record_status(span, response.status)
                return body, response.status, {k.lower(): v for k, v in response.headers.items()}


@asynccontextmanager
async def configured(
    base_url: str, api_key: str, session: aiohttp.ClientSession
) -> AsyncIterator[None]:
    """Point the library at the mail service's Resend API, over ``session``, while inside.

    The library's settings are module globals: on exit the ones from before come back, so a
    second set of provider clients opened and closed in the same process (a test's) leaves the
    first one's session in use, not its own closed one.
    """
    before = (resend.api_url, resend.api_key, resend.default_async_http_client)
    resend.api_url = f"{base_url.rstrip('/')}{RESEND_PREFIX}"
    resend.api_key = api_key
    resend.default_async_http_client = AiohttpClient(session)
    try:
        yield
    finally:
        resend.api_url, resend.api_key, resend.default_async_http_client = before


async def send(params: resend.Emails.SendParams, idempotency_key: str) -> str:
    """Send one email under ``idempotency_key``; return Resend's id for it.

    Raises the classified ``ApplicationError`` for any failure (see the module docstring).
    """
    options: resend.Emails.SendOptions = {"idempotency_key": idempotency_key}
    try:
        sent = await heartbeating(resend.Emails.send_async(params, options))
    except resend.exceptions.ResendError as err:
        error = error_for(err)
        metrics.provider_error(SERVICE, metrics.error_kind(error))
        raise error from err
    if (sent.get("http_headers") or {}).get("idempotent-replayed") == "true":
        metrics.provider_error(SERVICE, ProviderErrorKind.REPLAYED)
    return sent["id"]


def error_for(err: resend.exceptions.ResendError) -> ApplicationError:
    """Classify one of the library's errors as the worker's provider errors are classified."""
    if err.error_type == _TRANSPORT:
        message = f"{SERVICE} unreachable or connection dropped ({err.message})"
        return ApplicationError(message, type=PROVIDER_UNAVAILABLE)
    status = int(err.code) if str(err.code).isdigit() else 500
    headers = {k.lower(): v for k, v in (err.headers or {}).items()}
    message = f"{SERVICE} answered {status} {err.error_type}: {err.message}"
    details = {"code": err.error_type, "message": err.message}
    if status == 429:
        return ApplicationError(
            message, details, type=RATE_LIMITED, next_retry_delay=_retry_after(headers)
        )
    if err.error_type == _KEY_REUSED:
        return ApplicationError(message, details, type=PROVIDER_REJECTED, non_retryable=True)
    answer = ProviderAnswer(
        status=status,
        body=json.dumps({"error": details}).encode(),
        replayed=headers.get("idempotent-replayed") == "true",
    )
    return error_for_response(SERVICE, answer)


def _retry_after(headers: Mapping[str, str]) -> timedelta | None:
    """The 429's ``retry-after`` (seconds), if it has a usable one."""
    try:
        seconds = float(headers.get("retry-after", ""))
    except ValueError:
        return None
    return timedelta(seconds=seconds) if seconds > 0 else None
