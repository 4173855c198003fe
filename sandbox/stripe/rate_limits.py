"""Stripe's rate limiter: requests per second per account, reads, writes and searches apart.

Stripe documents (https://docs.stripe.com/rate-limits, "Rate limiter"): in test mode 25 read
and 25 write operations per second, 100 each in live mode; the Search API has a stricter limit
of 20 read operations per second, and a search counts against the basic read limit as well.
Above a limit Stripe answers 429 and the official libraries raise ``RateLimitError``. The
sandbox has one account (its API key), so the limits are the process's: one token bucket per
kind, refilled at the limit's rate and holding at most one second's worth (a burst of at most
the limit). A refused request does nothing and stores nothing under its idempotency key, so
the caller retries under the same key.

The 429 is worded as Stripe's (``invalid_request_error``, ``code: rate_limit``) and carries
``Stripe-Should-Retry: true``, which the official libraries read to decide whether to retry
on their own. It is distinct from ``lock_timeout``, the 429 for one object another request
holds (``sandbox.stripe.errors``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from fastapi import Request

from sandbox.errors import ApiError
from sandbox.faults import FaultsDep
from sandbox.stripe.errors import INVALID_REQUEST, stripe_error

RATE_LIMITED = "rate_limit"
"""Stripe's error ``code`` of a request refused by the rate limiter."""
SHOULD_RETRY_HEADER = "Stripe-Should-Retry"


class Kind(StrEnum):
    """The limits a request counts against."""

    READ = "read"
    WRITE = "write"
    SEARCH = "search"


def kinds_of(method: str, path: str) -> tuple[Kind, ...]:
    """The limits a ``method`` request on ``path`` counts against (a search: two)."""
    if method in ("GET", "HEAD"):
        return (Kind.SEARCH, Kind.READ) if path.endswith("/search") else (Kind.READ,)
    return (Kind.WRITE,)


@dataclass
class _Bucket:
    """Tokens for one kind: refilled at ``rate`` per second, at most ``rate`` of them."""

    tokens: float = 0.0
    at: float = field(default_factory=time.monotonic)
    rate: float = 0.0

    def refill(self, rate: float, now: float) -> None:
        if rate != self.rate:  # a new limit starts with a full second's worth
            self.rate, self.tokens = rate, rate
        else:
            self.tokens = min(rate, self.tokens + (now - self.at) * rate)
        self.at = now


class RateLimiter:
    """The account's buckets, and how many requests of each kind it admitted and refused.

    ``limit(kind)`` gives the current limit per second (0: none); it is read on every request,
    so a limit changed at run time applies to the next one.
    """

    def __init__(self, limit: Callable[[Kind], float]) -> None:
        self._limit = limit
        self._buckets = {kind: _Bucket() for kind in Kind}
        self.admitted = dict.fromkeys(Kind, 0)
        self.refused = dict.fromkeys(Kind, 0)

    def admit(self, kinds: tuple[Kind, ...]) -> Kind | None:
        """Take a token of each of ``kinds``; or, if one has none left, take none and name it."""
        now = time.monotonic()
        limited = [kind for kind in kinds if self._limit(kind) > 0]
        for kind in limited:
            self._buckets[kind].refill(self._limit(kind), now)
        empty = next((kind for kind in limited if self._buckets[kind].tokens < 1), None)
        if empty is not None:
            self.refused[empty] += 1
            return empty
        for kind in limited:
            self._buckets[kind].tokens -= 1
        for kind in kinds:
            self.admitted[kind] += 1
        return None


def rate_limited(kind: Kind, limit: float) -> ApiError:
    """Stripe's 429 for a request over the account's ``kind`` limit."""
    message = (
        f"Request rate limit exceeded ({kind} operations: {limit:g} per second). You can learn "
        "more about rate limits here https://stripe.com/docs/rate-limits."
    )
    error = stripe_error(429, INVALID_REQUEST, RATE_LIMITED, message)
    error.headers[SHOULD_RETRY_HEADER] = "true"
    return error


async def enforce(request: Request, faults: FaultsDep) -> None:
    """FastAPI dependency of the Stripe API: refuse a request over the account's limits."""
    limiter: RateLimiter = request.app.state.rate_limiter
    refused = limiter.admit(kinds_of(request.method, request.url.path))
    if refused is not None:
        raise rate_limited(refused, faults.rate_limit(refused))
