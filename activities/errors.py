"""How provider answers become Temporal errors: business outcomes stop, transient faults retry."""

import json
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

PAYMENT_DECLINED = "PaymentDeclined"
OUT_OF_STOCK = "OutOfStock"
PROVIDER_REJECTED = "ProviderRejected"
PROVIDER_UNAVAILABLE = "ProviderUnavailable"
PROVIDER_THROTTLED = "ProviderThrottled"
"""The provider refused the call for the account's request rate: back-pressure, retried."""

_BUSINESS_ERROR_TYPES = {"card_declined": PAYMENT_DECLINED, "out_of_stock": OUT_OF_STOCK}
# 401/403 mean our configuration is wrong, not the order: wait for an operator to fix it.
_RETRYABLE_STATUSES = {401, 403, 408, 409, 425, 429}
_CARD_ERROR_STATUS = 402
_SERVER_ERROR = 500
_TOO_MANY_REQUESTS = 429
OBJECT_LOCKED = "lock_timeout"
"""Stripe's 429 for one object another request holds; every other 429 is the rate limiter."""
THROTTLED_FIRST_DELAY = timedelta(milliseconds=500)
THROTTLED_MAX_DELAY = timedelta(seconds=10)
"""A throttled call waits about twice as long after each refusal (Stripe's advice: exponential
backoff), between these bounds."""


@dataclass(frozen=True)
class ProviderAnswer:
    """A provider's HTTP answer, read whole."""

    status: int
    body: bytes
    replayed: bool = False
    """The provider answered from its idempotency store: an earlier try got through."""

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body)


def error_for_response(service: str, response: ProviderAnswer) -> ApplicationError:
    """Classify a failed provider response.

    5xx, 409 (same key still in flight) and throttling are retryable: the retry sends the same
    idempotency key, except a 5xx the provider replays from its idempotency store, which that
    key can never get past. Declines and other 4xx answers are final business outcomes.
    """
    error = _error_body(response)
    code = str(error.get("code", "unknown"))
    message = f"{service} answered {response.status} {code}: {error.get('message', '')}"
    if response.status >= _SERVER_ERROR and response.replayed:
        # Stripe stores a 500 under its key like any answer: every retry with that key gets
        # it again, so only a new key can learn the outcome. A refusal parks the step; the
        # operator's retry sends a new key and adopts whatever the provider already did.
        message += (
            " (stored under this idempotency key and replayed: the outcome is unknown and this "
            "key can never get another answer; retry the step, which sends a new key)"
        )
        return ApplicationError(message, error, type=PROVIDER_REJECTED, non_retryable=True)
    if response.status == _TOO_MANY_REQUESTS and code != OBJECT_LOCKED:
        return throttled(message)
    if response.status >= _SERVER_ERROR or response.status in _RETRYABLE_STATUSES:
        return ApplicationError(message, type=PROVIDER_UNAVAILABLE)
    # 402 is Stripe's card error: a decline, whatever its code (card_declined, expired_card...).
    declined = response.status == _CARD_ERROR_STATUS
    error_type = (
        PAYMENT_DECLINED if declined else _BUSINESS_ERROR_TYPES.get(code, PROVIDER_REJECTED)
    )
    return ApplicationError(message, error, type=error_type, non_retryable=True)


def throttled(message: str) -> ApplicationError:
    """Back-pressure: retried under the same key after a backoff with jitter.

    Temporal's retry policy has no jitter, so calls refused together would come back together
    and be refused again; ``next_retry_delay`` (which replaces the policy's interval for this
    retry) spreads them: a random delay between half and all of 0.5 s doubled per attempt, at
    most 10 s, as Stripe's own libraries wait. The step's budget still bounds the retries.
    """
    attempt = activity.info().attempt if activity.in_activity() else 1
    ceiling = min(THROTTLED_FIRST_DELAY * 2 ** (attempt - 1), THROTTLED_MAX_DELAY)
    delay = ceiling * random.uniform(0.5, 1.0)  # jitter, not a secret
    return ApplicationError(
        f"{message} (throttled: retried in {delay.total_seconds():.1f} s)",
        type=PROVIDER_THROTTLED,
        next_retry_delay=delay,
    )


def provider_error_code(err: ApplicationError) -> str | None:
    """The provider's error code (``out_of_stock``, ``order_closed``...) of a refusal.

    Read from the error body that ``error_for_response`` attaches; None for any other error.
    """
    details = err.details[0] if err.details else None
    code = details.get("code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else None


def error_for_transport(service: str, err: Exception) -> ApplicationError:
    """A timeout or dropped connection: the outcome is unknown, so retry with the same key."""
    return ApplicationError(
        f"{service} unreachable or connection dropped ({type(err).__name__}: {err})",
        type=PROVIDER_UNAVAILABLE,
    )


def _error_body(response: ProviderAnswer) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {"message": response.body[:200].decode(errors="replace")}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {"message": str(body)[:200]}
