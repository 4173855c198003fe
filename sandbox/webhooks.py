"""The warehouse's webhook sender: delivers the outbox's events, at least once, signed.

A background task of the providers app (started with it, so a restart resumes whatever is
still pending) takes the due events from the outbox (``sandbox.outbox``) and POSTs each one's
exact body to the configured URL with a ``Warehouse-Signature`` header
(``orders.webhooks.signature``). The receiver's answer decides what happens next:

- 2xx: ``delivered``;
- 408, 409, 425, 429, any 5xx, or no answer (connection refused, timeout): tried again after
  an exponential backoff (``PROVIDERS_WEBHOOK_RETRY_BASE`` doubling up to
  ``PROVIDERS_WEBHOOK_RETRY_MAX``; a ``Retry-After`` in seconds is honoured within that bound);
- any other 4xx: ``failed`` for good, the receiver's message kept for an operator (the page,
  ``GET /admin/webhooks``), who can send it again (``POST /admin/webhooks/events/{id}/send``);
- still not delivered ``PROVIDERS_WEBHOOK_GIVE_UP_AFTER`` after the event was made: ``failed``.

Run-time controls (``PUT /admin/webhooks``): the URL, ``paused`` (nothing is sent; events wait),
``duplicate_next``/``duplicate_rate`` (an event is sent twice at once, as a flaky network or a
retried send would), and ``auto_ship_after_s`` (ship every open picklist that long after it
could first ship: a held one after its release; ``PROVIDERS_AUTO_SHIP_AFTER`` sets it at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field

from orders.config import webhooks as settings_names
from orders.intake.contract import parse_duration
from orders.webhooks.signature import sign
from sandbox import outbox, warehouse
from sandbox.errors import not_found
from sandbox.ledger import Ledger, LedgerDep
from sandbox.limits import PathId, QueryId

log = logging.getLogger("sandbox.webhooks")

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
"""4xx answers that mean "not now": the event is sent again later. Any 5xx is retried too."""
POLL_INTERVAL_S = 0.2
"""How often the sender looks for due events and picklists to auto-ship."""
MAX_CONCURRENT = 8
"""Deliveries in flight at once."""
MAX_ERROR_LENGTH = 500
"""How much of a refusal's message is kept with the event."""
URL_PATTERN = r"^https?://[^\s]{1,2000}$"


def _seconds(environ: Mapping[str, str], name: str, default: float | None) -> float | None:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if text.lower() in ("off", "none", "0"):
        return None
    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


@dataclass(frozen=True)
class SenderSettings:
    """How the warehouse sends its webhooks; read from the environment at start."""

    url: str | None = None
    secrets: tuple[str, ...] = ()
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    give_up_after_s: float = 72 * 3600.0
    timeout_s: float = 15.0
    auto_ship_after_s: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SenderSettings:
        """Read ``PROVIDERS_WEBHOOK_*``, ``PROVIDERS_AUTO_SHIP_AFTER`` and the shared secret."""
        env = os.environ if environ is None else environ
        default = cls()

        def seconds(name: str, fallback: float) -> float:
            return _seconds(env, name, fallback) or fallback

        return cls(
            url=env.get(settings_names.URL_ENV, "").strip() or None,
            secrets=settings_names.load_secrets(env),
            retry_base_s=seconds(settings_names.RETRY_BASE_ENV, default.retry_base_s),
            retry_max_s=seconds(settings_names.RETRY_MAX_ENV, default.retry_max_s),
            give_up_after_s=seconds(settings_names.GIVE_UP_ENV, default.give_up_after_s),
            timeout_s=seconds(settings_names.TIMEOUT_ENV, default.timeout_s),
            auto_ship_after_s=_seconds(env, settings_names.AUTO_SHIP_ENV, None),
        )


class WebhookControls(BaseModel):
    """The sender's run-time controls; also the ``PUT /admin/webhooks`` body (unset: unchanged)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None, pattern=URL_PATTERN, description="Where events are POSTed; null: nowhere (they wait)."
    )
    paused: bool = Field(False, description="Send nothing; pending events wait.")
    duplicate_next: int = Field(
        0, ge=0, le=1_000_000, description="The next N deliveries send their event twice at once."
    )
    duplicate_rate: float = Field(0.0, ge=0, le=1, description="Share of deliveries sent twice.")
    auto_ship_after_s: float | None = Field(
        None,
        ge=0,
        le=365 * 86400,
        description="Ship each open picklist this many seconds after it could first ship (a held "
        "one: after its release, never before); null: never.",
    )


@dataclass
class _Answer:
    status: int | None
    error: str | None
    retry_after_s: float | None = None

    @property
    def label(self) -> str:
        return "no-answer" if self.status is None else str(self.status)


def _describe_refusal(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        text = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        text = response.text
    return (text or response.reason_phrase)[:MAX_ERROR_LENGTH]


def _retry_after(response: httpx.Response) -> float | None:
    text = response.headers.get("retry-after", "").strip()
    return float(text) if text.isdigit() else None


@dataclass
class WebhookSender:
    """Delivers the outbox's due events; one per providers app, run by its lifespan.

    The gateway's Stripe events go the same way (``sandbox.stripe.events``, a subclass):
    its own outbox ``TABLE``, signature header and counter.
    """

    TABLE = outbox.WAREHOUSE
    METRIC = "providers_webhook_deliveries"
    USER_AGENT = "sandbox-warehouse-webhooks/1"

    ledger: Ledger
    settings: SenderSettings
    registry: CollectorRegistry | None = None
    controls: WebhookControls = field(init=False)
    _in_flight: set[str] = field(default_factory=set, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _wake: asyncio.Event | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.controls = WebhookControls(
            url=self.settings.url, auto_ship_after_s=self.settings.auto_ship_after_s
        )
        self.deliveries = Counter(
            self.METRIC,
            f"webhook POSTs made from {self.TABLE}, by outcome (delivered, retry, failed)",
            ["outcome"],
            registry=self.registry,
        )

    def update(self, patch: WebhookControls) -> WebhookControls:
        """Change the controls given in ``patch``; wake the sender."""
        self.controls = self.controls.model_copy(update=patch.model_dump(exclude_unset=True))
        self.wake()
        return self.controls

    def describe(self) -> dict[str, Any]:
        """The controls, and whether a secret is configured (never the secret itself)."""
        return {**self.controls.model_dump(), "signing": bool(self.settings.secrets)}

    def wake(self) -> None:
        """Look for due events now rather than at the next poll."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Deliver due events until cancelled; errors are logged, never fatal."""
        self._wake = asyncio.Event()
        async with httpx.AsyncClient(timeout=self.settings.timeout_s) as http:
            try:
                while True:
                    try:
                        self._tick(http)
                    except Exception:
                        log.exception("webhook sender: a round failed; trying again")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL_S)
                    self._wake.clear()
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _chores(self) -> None:
        """What the sender does each round besides delivering: the warehouse's auto-ship."""
        if (after := self.controls.auto_ship_after_s) is not None:
            warehouse.ship_due(self.ledger, after)

    def _signature(self, body: bytes) -> dict[str, str]:
        """The signature header of one delivery."""
        return {settings_names.SIGNATURE_HEADER: sign(self.settings.secrets, body)}

    def _tick(self, http: httpx.AsyncClient) -> None:
        self._chores()
        controls = self.controls
        if controls.paused or controls.url is None or not self.settings.secrets:
            return
        free = MAX_CONCURRENT - len(self._in_flight)
        if free <= 0:
            return
        for row in outbox.due_events(self.ledger.db, free, self._in_flight, self.TABLE):
            self._in_flight.add(row["id"])
            task = asyncio.create_task(self._deliver(http, controls.url, row))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _copies(self) -> int:
        controls = self.controls
        duplicate = controls.duplicate_next > 0 or random.random() < controls.duplicate_rate
        controls.duplicate_next = max(0, controls.duplicate_next - 1)
        return 2 if duplicate else 1

    async def _deliver(self, http: httpx.AsyncClient, url: str, row: sqlite3.Row) -> None:
        event_id = row["id"]
        try:
            body = row["body"].encode()
            copies = self._copies()
            answers = await asyncio.gather(*(self._post(http, url, body) for _ in range(copies)))
            # A success of any copy delivers the event; otherwise the first copy's answer counts.
            answer = next((a for a in answers if a.status and 200 <= a.status < 300), answers[0])
            self._record(row, copies, answer)
        except Exception:
            log.exception("webhook sender: delivering %s failed", event_id)
        finally:
            self._in_flight.discard(event_id)

    async def _post(self, http: httpx.AsyncClient, url: str, body: bytes) -> _Answer:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.USER_AGENT,
            **self._signature(body),
        }
        try:
            response = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError as err:
            return _Answer(None, f"{type(err).__name__}: {err}"[:MAX_ERROR_LENGTH])
        if 200 <= response.status_code < 300:
            return _Answer(response.status_code, None)
        return _Answer(response.status_code, _describe_refusal(response), _retry_after(response))

    def _record(self, row: sqlite3.Row, copies: int, answer: _Answer) -> None:
        status = answer.status
        settings = self.settings
        if status is not None and 200 <= status < 300:
            outcome, next_at = "delivered", None
        elif status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUSES:
            outcome, next_at = "failed", None
        else:
            attempts = row["attempts"] + copies
            delay = min(settings.retry_max_s, settings.retry_base_s * 2 ** (attempts - 1))
            if answer.retry_after_s is not None:
                delay = min(settings.retry_max_s, max(delay, answer.retry_after_s))
            outcome, next_at = "pending", time.time() + delay
            made = json.loads(row["body"])["created"]
            if time.time() - made > settings.give_up_after_s:
                outcome = "failed"
                answer.error = f"gave up after {attempts} attempts: {answer.error}"
        self.deliveries.labels("retry" if outcome == "pending" else outcome).inc(copies)
        with self.ledger.transaction() as db:
            outbox.record_attempts(
                db, row["id"], copies, outcome, answer.label, answer.error, next_at, self.TABLE
            )


def sender_at(state_name: str) -> Callable[[Request], WebhookSender]:
    """FastAPI dependency: the app's sender kept as ``app.state.<state_name>``."""

    def get_sender(request: Request) -> WebhookSender:
        sender: WebhookSender = getattr(request.app.state, state_name)
        return sender

    return get_sender


SenderDep = Annotated[WebhookSender, Depends(sender_at("webhooks"))]
"""The warehouse's webhook sender (its page shows the deliveries)."""


def admin_router(prefix: str, state_name: str) -> APIRouter:
    """The admin routes of the sender kept as ``app.state.<state_name>``, under ``prefix``.

    One set for each outbox (the warehouse's webhooks, the gateway's Stripe events): the
    sender's settings and events, its controls, and an operator's resend.
    """
    # A default, not an ``Annotated`` alias: annotations here are strings (``from __future__
    # import annotations``), which FastAPI resolves in the module's globals, not this scope.
    sender_dep = Depends(sender_at(state_name))
    router = APIRouter(prefix=prefix, tags=["admin"])

    @router.get("")
    async def get_events(
        ledger: LedgerDep,
        status: str | None = None,
        order_id: QueryId = None,
        sender: WebhookSender = sender_dep,
    ) -> dict[str, Any]:
        """The sender's settings and the events, newest first, with how each delivery went.

        Each event: ``status`` (``pending``, ``delivered``, ``failed``), ``attempts``,
        ``last_status`` (the receiver's HTTP status, or ``no-answer``), ``last_error``,
        ``delivered`` (when), ``next_attempt`` (seconds from now, if pending), and the ``event``.
        """
        return {
            "settings": sender.describe(),
            "data": outbox.list_events(ledger.db, status, order_id, sender.TABLE),
        }

    @router.put("")
    async def set_controls(
        patch: WebhookControls, sender: WebhookSender = sender_dep
    ) -> dict[str, Any]:
        """Change some controls (fields left out stay as they are)."""
        sender.update(patch)
        return sender.describe()

    @router.post("/events/{event_id}/send")
    async def send_again(
        event_id: PathId, ledger: LedgerDep, sender: WebhookSender = sender_dep
    ) -> dict[str, Any]:
        """Send an event again now (an operator's resend, after a failure or to replay it)."""
        with ledger.transaction() as db:
            row = outbox.send_again(db, event_id, sender.TABLE)
        if row is None:
            raise not_found("event", event_id)
        sender.wake()
        return outbox.render(row)

    return router


router = admin_router("/admin/webhooks", "webhooks")
