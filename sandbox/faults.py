"""Run-time fault injection per service: errors, refusals, latency, drops, held and late requests.

Two ways to keep a request waiting, on either side of its idempotency claim:

- *held* (``hold_next``): the request has claimed its key (and the resource it locks) and waits
  to commit. The provider knows it is in flight: a retry under its key, or a request on its
  resource, is answered 409.
- *delayed* (``delay_next``): the request waits before it claims anything, as if still on the
  network, queued in a server, or about to be sent again. The provider has no trace of it: a
  listing does not show it and nothing is refused because of it. It arrives when delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Literal, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandbox.errors import ApiError

SERVICES = ("payments", "mail", "warehouse")
MAX_LATENCY_MS = 600_000
"""Ten minutes: longer than any client waits."""
MAX_COUNT = 1_000_000
"""The most requests a ``*_next`` counter can name."""
DEFAULT_SEARCH_LAG_MS = 1000
"""How long a new or changed payment intent stays invisible to search unless told otherwise:
Stripe documents its search as lagging writes (about a minute at worst), never read-after-write.
"""
SEARCH_LAG_ENV = "PROVIDERS_SEARCH_LAG_MS"
"""Environment variable that sets the default search lag (milliseconds) for a providers process."""
DEFAULT_AUTHORIZATION_VALIDITY_S = 7 * 86400
"""How long a card authorization can be captured: Stripe's ``capture_before`` for online card
payments is 7 days after the authorization (shorter for some networks and merchant-initiated
payments); then Stripe cancels the intent itself and releases the money."""
AUTHORIZATION_VALIDITY_ENV = "PROVIDERS_AUTHORIZATION_VALIDITY_S"
"""Environment variable that sets the default authorization validity (seconds) for a process."""
DEFAULT_RATE_LIMIT_PER_S = 25.0
"""Stripe's basic rate limit in test mode: 25 read and 25 write operations per second per
account (100 each in live mode), https://docs.stripe.com/rate-limits."""
DEFAULT_SEARCH_RATE_LIMIT_PER_S = 20.0
"""Stripe's Search API limit: 20 read operations per second (counted against the basic read
limit too), https://docs.stripe.com/rate-limits."""
RATE_LIMIT_ENV = "PROVIDERS_RATE_LIMIT_PER_S"
"""Environment variable that sets the process's basic limit (reads and writes each; 0: none)."""
SEARCH_RATE_LIMIT_ENV = "PROVIDERS_SEARCH_RATE_LIMIT_PER_S"
"""Environment variable that sets the process's search limit (per second; 0: none)."""
MAX_RATE_LIMIT_PER_S = 1_000_000.0
RefundFailureReason = Literal[
    "charge_for_pending_refund_disputed",
    "declined",
    "expired_or_canceled_card",
    "insufficient_funds",
    "lost_or_stolen_card",
    "merchant_request",
    "unknown",
]
"""Stripe's ``failure_reason`` values for a refund that failed."""
FIRED_KEPT = 10_000
"""How many fired faults each service remembers (the oldest are forgotten first)."""
RESEND_KEY_WINDOW_S = 24 * 3600
"""How long Resend remembers an email's ``Idempotency-Key``: 24 hours (``sandbox.resend``)."""
MAIL_KEY_WINDOW_ENV = "PROVIDERS_MAIL_KEY_WINDOW_S"
"""Environment variable: how long the mail service remembers a key (seconds; default 24 h)."""
MAIL_KEYLESS_ENV = "PROVIDERS_MAIL_KEYLESS"
"""Environment variable: ``1`` makes the mail service keyless, as SES, SendGrid and Postmark."""
MAIL_RATE_LIMIT_ENV = "PROVIDERS_MAIL_RATE_LIMIT"
"""Environment variable: the mail service's requests per second (default 0: no limit)."""

RESEND_RATE_LIMIT_PER_S = 2.0
"""Resend's default rate limit, requests per second per team (``./scripts/run`` sets it)."""


@dataclass(frozen=True)
class MailBehaviour:
    """How the mail service treats keys and load: the process default, or run-time settings.

    ``key_window_s``: how long a key is remembered (Resend: 24 h; Brevo 15 min, Nylas 1 h).
    ``keyless``: no key is honoured at all; every request sends an email (SES, SendGrid,
    Postmark). ``rate_limit_per_s``: requests per second before 429s (0: none). The sandbox's
    default is no limit, so suites and benchmarks are not throttled; Resend's default, 2 per
    second, is ``PROVIDERS_MAIL_RATE_LIMIT=2`` (as ``./scripts/run`` and the compose demo set it).
    """

    key_window_s: float = RESEND_KEY_WINDOW_S
    keyless: bool = False
    rate_limit_per_s: float = 0.0


class FaultConfig(BaseModel):
    """One service's faults; also the ``PUT /admin/faults/{service}`` body (unset = unchanged)."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0, le=1, description="Share of requests answered 503.")
    latency_ms: int = Field(
        0, ge=0, le=MAX_LATENCY_MS, description="Delay added before every effect."
    )
    drop_rate: float = Field(0.0, ge=0, le=1, description="Share committed, then dropped.")
    fail_next: int = Field(
        0, ge=0, le=MAX_COUNT, description="The next N requests are answered 503."
    )
    drop_next: int = Field(
        0, ge=0, le=MAX_COUNT, description="The next N requests are committed, then dropped."
    )
    hold_next: int = Field(
        0,
        ge=0,
        le=MAX_COUNT,
        description="The next N requests claim their key, then wait for "
        "POST /admin/faults/{service}/release (the provider knows they are in flight).",
    )
    delay_next: int = Field(
        0,
        ge=0,
        le=MAX_COUNT,
        description="The next N requests wait before they claim their key, until "
        "POST /admin/faults/{service}/deliver: like a request still on its way, the provider "
        "has no trace of them (no key, no lock) until they arrive.",
    )
    reject_next: int = Field(
        0,
        ge=0,
        le=MAX_COUNT,
        description="The next N requests are refused as invalid (422, not stored).",
    )
    refuse_next: int = Field(
        0,
        ge=0,
        le=MAX_COUNT,
        description="The next N requests are refused (422) with no effect, the refusal stored "
        "under their key, so a retry with the same key gets it again.",
    )
    server_error_next: int = Field(
        0,
        ge=0,
        le=MAX_COUNT,
        description="The next N requests take effect, but the answer stored under their key "
        "(and sent) is a 500, replayed to every retry with that key: Stripe stores its 500s "
        "like any answer, so the caller cannot learn the outcome under that key.",
    )
    drop_replays: bool = Field(
        False, description="Drops also hit answers replayed for a key, so a retry can lose its too."
    )
    key_prefix: str = Field(
        "",
        max_length=200,
        description="Only requests whose Idempotency-Key starts with this get faults (empty: "
        "all); keys are '<order id>:<step>', so '<order id>:' targets one order.",
    )
    key_suffix: str = Field(
        "",
        max_length=100,
        description="Only requests whose Idempotency-Key ends with this get faults (empty: all).",
    )
    path_prefix: str = Field(
        "",
        max_length=200,
        description="Only requests whose path starts with this get faults (empty: all), e.g. "
        "'/v1/refunds' for refunds only.",
    )
    search_lag_ms: int | None = Field(
        None,
        ge=0,
        le=MAX_LATENCY_MS,
        description="payments only: how long a write to a payment intent takes to show in "
        "GET /v1/payment_intents/search (null: the process default, "
        f"{SEARCH_LAG_ENV} or {DEFAULT_SEARCH_LAG_MS} ms). Not a request fault: unaffected by "
        "key_prefix, key_suffix and path_prefix.",
    )

    authorization_validity_s: float | None = Field(
        None,
        gt=0,
        le=365 * 86400,
        description="payments only: how long after it is made a card authorization can be "
        "captured (its charge's payment_method_details.card.capture_before); then the intent "
        "is canceled by the gateway (cancellation_reason automatic) and the money released "
        f"(null: the process default, {AUTHORIZATION_VALIDITY_ENV} or "
        f"{DEFAULT_AUTHORIZATION_VALIDITY_S} s). Applies to authorizations made from then on; "
        "not a request fault: unaffected by key_prefix, key_suffix and path_prefix.",
    )
    rate_limit_per_s: float | None = Field(
        None,
        ge=0,
        le=MAX_RATE_LIMIT_PER_S,
        description="payments: the account's limit on /v1 read operations per second, and "
        "separately on write operations; above it Stripe's 429 rate_limit (null: the process "
        f"default, {RATE_LIMIT_ENV} or Stripe's test mode, {DEFAULT_RATE_LIMIT_PER_S:g}). mail: "
        "requests per second before Resend's 429 rate_limit_exceeded (Resend's default is 2; "
        f"null: the process default, {MAIL_RATE_LIMIT_ENV} or none). 0: no limit. Not a request "
        "fault: unaffected by key_prefix, key_suffix and path_prefix.",
    )
    search_rate_limit_per_s: float | None = Field(
        None,
        ge=0,
        le=MAX_RATE_LIMIT_PER_S,
        description="payments: the account's limit on searches per second (each also a read; "
        f"null: the process default, {SEARCH_RATE_LIMIT_ENV} or Stripe's "
        f"{DEFAULT_SEARCH_RATE_LIMIT_PER_S:g}; 0: no limit).",
    )
    key_window_s: float | None = Field(
        None,
        gt=0,
        le=RESEND_KEY_WINDOW_S,
        description="mail only: how long an Idempotency-Key is remembered, in seconds, at most "
        f"24 hours (null: the process default, {MAIL_KEY_WINDOW_ENV} or Resend's 24 hours). A "
        "key older than this is forgotten: a request under it sends a new email.",
    )
    keyless: bool | None = Field(
        None,
        description="mail only: true makes the mail service keyless, as SES, SendGrid and "
        "Postmark: the Idempotency-Key is ignored and every request sends an email (null: the "
        f"process default, {MAIL_KEYLESS_ENV}).",
    )
    refunds_pending_s: float = Field(
        0.0,
        ge=0,
        le=365 * 86400,
        description="payments: a refund made now stays 'pending' this many seconds before it "
        "settles (0: it succeeds at once, as card refunds do in Stripe's test mode).",
    )
    refunds_fail_with: RefundFailureReason | None = Field(
        None,
        description="payments: a refund made now fails when it settles, with this Stripe "
        "failure_reason (the charge's money comes back to the shop); null: it succeeds.",
    )

    def targets(self, key: str, path: str) -> bool:
        """Whether a request with this Idempotency-Key and path is subject to these faults."""
        return (
            key.startswith(self.key_prefix)
            and key.endswith(self.key_suffix)
            and path.startswith(self.path_prefix)
        )


@dataclass(frozen=True)
class RateLimits:
    """The gateway account's rate limits per second (0: none), unless the faults say otherwise."""

    per_s: float = DEFAULT_RATE_LIMIT_PER_S
    """Reads, and separately writes."""
    search_per_s: float = DEFAULT_SEARCH_RATE_LIMIT_PER_S


@dataclass(frozen=True)
class RefundSettlement:
    """How one new refund settles: when, and whether it fails.

    ``pending_s`` after it is made, failed with ``fails_with`` or succeeded; with ``pending_s``
    0 and no failure it succeeds at once.
    """

    pending_s: float = 0.0
    fails_with: str | None = None


@dataclass(frozen=True)
class FaultPlan:
    """What happens to one request, decided once when it arrives (default: nothing)."""

    fail: bool = False
    hold: bool = False
    latency_s: float = 0.0
    drop: bool = False
    reject: bool = False
    refuse: bool = False
    server_error: bool = False

    def fired(self) -> list[str]:
        """The faults this plan injects, by name (latency is not one: nothing fails)."""
        names = ("fail", "hold", "drop", "reject", "refuse", "server_error")
        return [name for name in names if getattr(self, name)]


@dataclass
class _Waiting:
    """One waiting request: released to go on, or (``fail``, held only) to answer 503."""

    key: str
    released: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False


@dataclass
class _Service:
    config: FaultConfig = field(default_factory=FaultConfig)
    # One entry per held request, so /admin/held drops to 0 the moment they are released.
    held: list[_Waiting] = field(default_factory=list)
    # Requests delayed before their claim: the only trace of them until they are delivered.
    delayed: list[_Waiting] = field(default_factory=list)
    # (fault, idempotency key) of each fault injected, oldest first: a test's proof that its
    # fault fired. Kept across resets, as a log of what happened.
    fired: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=FIRED_KEPT))


class Faults:
    """Fault state for every service, shared by the admin API and the idempotent POST flow."""

    def __init__(
        self,
        default_search_lag_ms: int = DEFAULT_SEARCH_LAG_MS,
        default_authorization_validity_s: float = DEFAULT_AUTHORIZATION_VALIDITY_S,
        default_rate_limits: RateLimits | None = None,
        default_mail: MailBehaviour | None = None,
    ) -> None:
        self._services = {name: _Service() for name in SERVICES}
        self.default_search_lag_ms = default_search_lag_ms
        self.default_authorization_validity_s = default_authorization_validity_s
        self.default_rate_limits = default_rate_limits or RateLimits()
        self.default_mail = default_mail or MailBehaviour()

    def rate_limit(self, kind: str) -> float:
        """The gateway account's limit per second on ``kind`` (read, write, search); 0: none."""
        config = self._get("payments").config
        if kind == "search":
            limit = config.search_rate_limit_per_s
            return self.default_rate_limits.search_per_s if limit is None else limit
        limit = config.rate_limit_per_s
        return self.default_rate_limits.per_s if limit is None else limit

    def mail_behaviour(self) -> MailBehaviour:
        """How the mail service treats keys and load now: its settings over the default."""
        config, default = self._get("mail").config, self.default_mail
        return MailBehaviour(
            key_window_s=_or(config.key_window_s, default.key_window_s),
            keyless=_or(config.keyless, default.keyless),
            rate_limit_per_s=_or(config.rate_limit_per_s, default.rate_limit_per_s),
        )

    def search_lag_s(self, service: str) -> float:
        """How many seconds a write takes to become visible to the service's search."""
        lag = self._get(service).config.search_lag_ms
        return (self.default_search_lag_ms if lag is None else lag) / 1000

    def authorization_validity_s(self, service: str) -> float:
        """How many seconds an authorization made now can be captured."""
        validity = self._get(service).config.authorization_validity_s
        return self.default_authorization_validity_s if validity is None else validity

    def refund_settlement(self, service: str, key: str, path: str) -> RefundSettlement:
        """How a refund asked for now settles: at once, or pending for a while; then how."""
        config = self._get(service).config
        if not config.targets(key, path):
            return RefundSettlement()
        return RefundSettlement(config.refunds_pending_s, config.refunds_fail_with)

    def _get(self, service: str) -> _Service:
        if service not in self._services:
            expected = ", ".join(SERVICES)
            message = f"No such service: '{service}' (expected one of {expected})"
            raise ApiError(404, "resource_missing", message)
        return self._services[service]

    def configs(self) -> dict[str, FaultConfig]:
        """Return every service's fault settings."""
        return {name: state.config for name, state in self._services.items()}

    def update(self, service: str, patch: FaultConfig) -> FaultConfig:
        """Apply the fields set in ``patch``, keep the others, and return the result."""
        state = self._get(service)
        state.config = state.config.model_copy(update=patch.model_dump(exclude_unset=True))
        return state.config

    def plan(self, service: str, key: str, path: str) -> FaultPlan:
        """Decide the faults for one new request, consuming the ``*_next`` counters."""
        plan = self._plan(service, key, path)
        self._get(service).fired.extend((fault, key) for fault in plan.fired())
        return plan

    def _plan(self, service: str, key: str, path: str) -> FaultPlan:
        config = self._get(service).config
        if not config.targets(key, path):
            return FaultPlan()
        if config.fail_next or random.random() < config.error_rate:
            config.fail_next = max(0, config.fail_next - 1)
            return FaultPlan(fail=True)
        if config.reject_next:
            config.reject_next -= 1
            return FaultPlan(reject=True)
        if config.refuse_next:
            config.refuse_next -= 1
            return FaultPlan(refuse=True)
        if config.server_error_next:
            config.server_error_next -= 1
            return FaultPlan(server_error=True)
        hold = config.hold_next > 0
        config.hold_next = max(0, config.hold_next - 1)
        drop = config.drop_next > 0 or random.random() < config.drop_rate
        config.drop_next = max(0, config.drop_next - 1)
        return FaultPlan(hold=hold, latency_s=config.latency_ms / 1000, drop=drop)

    def drop_replay(self, service: str, key: str, path: str) -> bool:
        """Whether to drop a stored answer replayed for ``key`` (only with ``drop_replays``)."""
        config = self._get(service).config
        if not (config.drop_replays and config.targets(key, path)):
            return False
        drop = config.drop_next > 0 or random.random() < config.drop_rate
        config.drop_next = max(0, config.drop_next - 1)
        if drop:
            self._get(service).fired.append(("drop", key))
        return drop

    async def hold(self, service: str, key: str) -> None:
        """Wait until ``release`` is called for this service.

        Raises the 503 ``ApiError`` if released as a failure, so nothing is committed: the
        request then looks like one that failed before reaching the provider's ledger.
        """
        held = _Waiting(key)
        await _wait(self._get(service).held, held)
        if held.fail:
            message = f"Injected fault: held {service} request released as a failure; retry."
            raise ApiError(503, "injected_fault", message, "api_error")

    async def delay(self, service: str, key: str, path: str) -> None:
        """Keep a request that has not claimed its key yet waiting, if ``delay_next`` says so.

        Called before the claim, so the provider has no trace of the request (no key, no lock)
        until ``deliver`` lets it go on; then it is handled as if it had just arrived.
        """
        state = self._get(service)
        config = state.config
        if config.delay_next and config.targets(key, path):
            config.delay_next -= 1
            await _wait(state.delayed, _Waiting(key))

    def deliver(self, service: str) -> int:
        """Let every delayed request of ``service`` arrive; return how many there were."""
        state = self._get(service)
        delivered, state.delayed = state.delayed, []
        for delayed in delivered:
            delayed.released.set()
        return len(delivered)

    def release(self, service: str, fail: bool = False) -> int:
        """Let every held request of ``service`` go on (or fail); return how many there were."""
        state = self._get(service)
        released, state.held = state.held, []
        for held in released:
            held.fail = fail
            held.released.set()
        return len(released)

    def fired(self, prefix: str = "") -> dict[str, list[tuple[str, str]]]:
        """Each service's injected faults (fault, key) whose key starts with ``prefix``."""
        return {
            name: [(fault, key) for fault, key in state.fired if key.startswith(prefix)]
            for name, state in self._services.items()
        }

    def held_counts(self) -> dict[str, int]:
        """Return how many requests each service is holding right now."""
        return {name: len(state.held) for name, state in self._services.items()}

    def held_keys(self) -> dict[str, list[str]]:
        """Return the idempotency keys of the requests each service is holding right now."""
        return {name: [held.key for held in state.held] for name, state in self._services.items()}

    def delayed_keys(self) -> dict[str, list[str]]:
        """Return the idempotency keys of the requests each service is delaying right now."""
        return {
            name: [delayed.key for delayed in state.delayed]
            for name, state in self._services.items()
        }

    def reset(self) -> None:
        """Clear every fault, release every held request and deliver every delayed one."""
        for name, state in self._services.items():
            state.config = FaultConfig()
            self.release(name)
            self.deliver(name)


T = TypeVar("T")


def _or(setting: T | None, default: T) -> T:
    """A run-time setting, or the process default where it is unset."""
    return default if setting is None else setting


async def _wait(waiting: list[_Waiting], request: _Waiting) -> None:
    """Wait in ``waiting`` until ``request`` is let go; leave the list if cancelled before."""
    waiting.append(request)
    try:
        await request.released.wait()
    finally:
        if request in waiting:  # cancelled before it was let go
            waiting.remove(request)


class ConnectionDropped(Exception):
    """Raised mid-response on purpose so the server aborts the connection."""


class DroppedResponse(Response):
    """Start a 200 response, then abort: the client sees a transport error, not a status.

    The effect is already committed, so this is the "the provider did it, but the caller never
    heard back" case. Uvicorn closes the socket when the app raises after the response started.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the status line and headers promising a body, then raise."""
        headers = [(b"content-type", b"application/json"), (b"content-length", b"64")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise ConnectionDropped("fault injection: connection dropped after commit")


class QuietDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for every deliberately dropped connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Reject records whose exception is a ``ConnectionDropped``."""
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


async def get_faults(request: Request) -> Faults:
    """FastAPI dependency: the app's ``Faults``."""
    faults: Faults = request.app.state.faults
    return faults


FaultsDep = Annotated[Faults, Depends(get_faults)]
