"""Stripe-like idempotency keys: every POST effect happens at most once per key.

A request first claims its key in a short transaction. Its effect and the response it produced
are then committed together in one transaction, so a crash can never leave one without the
other; a claim still ``in_flight`` at startup therefore has no effect and is simply released.

A claim may also lock a resource (a payment intent, an order): while it is in flight, a request
on that resource under any other key is refused (409 in the JSON services, Stripe's 429
``lock_timeout`` under ``/v1``), so two effects on one resource (a confirm and a cancel, two
picklists for one order) never overlap.

How the refusals this layer gives on its own are worded (status, type, code, message) is the
API's, not this layer's: each caller passes its ``Refusals`` (``JSON_REFUSALS`` for the JSON
services, ``sandbox.stripe.errors.STRIPE_REFUSALS`` for the gateway).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, Header, Request
from starlette.responses import Response

from sandbox.errors import ApiError, invalid_idempotency_key, missing_idempotency_key
from sandbox.faults import DroppedResponse, Faults
from sandbox.ledger import Ledger
from sandbox.limits import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY_LENGTH,
)

KEY_TTL_S = 24 * 3600
IdempotencyKey = Annotated[
    str,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="A unique string per effect, at most 255 printable ASCII characters; a "
        "retry with the same key gets the first answer back instead of a second effect. Keys "
        "are kept 24 hours.",
    ),
]
"""The ``Idempotency-Key`` header, declared on every POST with an effect so that the OpenAPI
document describes it (required, at most 255 characters); ``sandbox.errors`` answers a
missing or malformed key with 400."""


class Outcome(NamedTuple):
    """A response to store and send: business errors (402, 404, 422) are outcomes too."""

    status: int
    body: dict[str, Any]


class _Stored(NamedTuple):
    status: int
    body: str  # the exact JSON text, so a replay is byte-for-byte identical


Effect = Callable[[sqlite3.Connection], Outcome]


async def fingerprint(request: Request, params: Mapping[str, Any] | None = None) -> str:
    """Hash method, path and the canonical JSON of the body (sorted keys; empty body = ``{}``).

    ``params``, when given, are the request's decoded parameters (a form body, as Stripe's API
    takes them) and stand for the body: the same parameters in another order are the same
    request.
    """
    if params is not None:
        canonical = json.dumps(params, sort_keys=True)
    else:
        raw = await request.body()  # already read and cached by FastAPI
        try:
            canonical = json.dumps(json.loads(raw) if raw.strip() else {}, sort_keys=True)
        except (ValueError, RecursionError):
            # Not JSON, or nested too deep to parse (an endpoint without a body never
            # validates it): the text itself is the fingerprint, not a 500.
            canonical = raw.decode(errors="replace")
    text = f"{request.method} {request.url.path}\n{canonical}"
    return hashlib.sha256(text.encode()).hexdigest()


def resource_lock(kind: str, resource_id: str) -> str:
    """Name a resource for ``Idempotency.run``, e.g. ``payment_intent:pi_123``.

    The kind keeps ids of different services apart and names the resource in the 409.
    """
    return f"{kind}:{resource_id}"


def _describe(resource: str) -> str:
    kind, _, resource_id = resource.partition(":")
    return f"{kind.replace('_', ' ')} '{resource_id}'"


def _key_in_use(key: str) -> ApiError:
    message = f"A request with idempotency key '{key}' is still in progress; retry later."
    return ApiError(409, "idempotency_key_in_use", message, "idempotency_error")


def _key_reused(key: str) -> ApiError:
    message = (
        f"Idempotency key '{key}' was already used for a different request "
        "(method, path or body differ); use a new key for a new request."
    )
    return ApiError(422, "idempotency_key_reused", message, "idempotency_error")


def _resource_in_use(resource: str) -> ApiError:
    message = f"Another request on {_describe(resource)} is still in progress; retry later."
    return ApiError(409, "resource_in_use", message, "idempotency_error")


def _injected_fault(service: str) -> ApiError:
    message = f"Injected fault: {service} is unavailable; retry with the same key."
    return ApiError(503, "injected_fault", message, "api_error")


def _injected_server_error(service: str) -> ApiError:
    message = (
        f"Injected server error: {service} failed after the request took effect; this answer "
        "is stored under its key and replayed, as Stripe stores its 500s."
    )
    return ApiError(500, "injected_server_error", message, "api_error")


def _injected_rejection(service: str) -> ApiError:
    message = f"Injected rejection: {service} refused this request as invalid."
    return ApiError(422, "injected_rejection", message)


def _injected_refusal(service: str) -> ApiError:
    message = (
        f"Injected refusal: {service} refused this request; the refusal is stored under its key."
    )
    return ApiError(422, "injected_refusal", message)


@dataclass(frozen=True)
class Refusals:
    """How one API words the answers the idempotency layer gives on its own.

    Each builds the error to send: ``key_in_use`` and ``key_reused`` take the key,
    ``resource_in_use`` the locked resource (``kind:id``), the injected ones the service name.
    ``missing_key`` and ``invalid_key`` are for a key the route did not validate itself.
    """

    key_in_use: Callable[[str], ApiError] = _key_in_use
    key_reused: Callable[[str], ApiError] = _key_reused
    resource_in_use: Callable[[str], ApiError] = _resource_in_use
    injected_fault: Callable[[str], ApiError] = _injected_fault
    injected_rejection: Callable[[str], ApiError] = _injected_rejection
    injected_refusal: Callable[[str], ApiError] = _injected_refusal
    injected_server_error: Callable[[str], ApiError] = _injected_server_error
    missing_key: Callable[[], ApiError] = missing_idempotency_key
    invalid_key: Callable[[str], ApiError] = invalid_idempotency_key


JSON_REFUSALS = Refusals()
"""The JSON services' words (mail, warehouse): 409 ``idempotency_key_in_use`` and
``resource_in_use``, 422 ``idempotency_key_reused``."""


def _refuse(refusal: ApiError, _: sqlite3.Connection) -> Outcome:
    """The effect of an injected refusal: none, just the refusal to store under the key."""
    raise refusal


def _fail_after(effect: Effect, failure: ApiError, db: sqlite3.Connection) -> Outcome:
    """The effect happens, but the answer stored under the key is ``failure`` (a 500)."""
    effect(db)
    return Outcome(failure.status, failure.body)


def _json_response(status: int, body: str, **headers: str) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class Idempotency:
    """Runs POST effects under idempotency keys, with the service's faults applied."""

    def __init__(self, ledger: Ledger, faults: Faults) -> None:
        self.ledger = ledger
        self.faults = faults

    def release_stale_claims(self) -> int:
        """Forget claims left ``in_flight`` by a previous process; return how many."""
        with self.ledger.transaction() as db:
            return db.execute("DELETE FROM idempotency_keys WHERE state = 'in_flight'").rowcount

    async def run(
        self,
        request: Request,
        service: str,
        effect: Effect,
        resource: str | None = None,
        *,
        key: str | None = None,
        refusals: Refusals = JSON_REFUSALS,
        params: Mapping[str, Any] | None = None,
        remember: bool = True,
        key_window_s: float = KEY_TTL_S,
    ) -> Response:
        """Answer a POST: replay a stored response, or claim the key and perform ``effect``.

        ``key`` is the route's validated ``IdempotencyKey`` (read from the request if not given).
        ``resource`` (from ``resource_lock``) is locked by the claim until the effect commits or
        fails; a request on it under another key meanwhile is refused
        (``refusals.resource_in_use``) and leaves nothing behind, so it can simply be retried.
        ``params`` are the decoded parameters of a form body (see ``fingerprint``); validate
        them before calling this, as a request that fails validation stores nothing.
        ``remember`` false: an API that honours no key here (a mail service without keys, or a
        request without one): nothing is claimed or stored, so every request acts; faults apply
        as usual. ``key_window_s``: how long this API remembers a key (at most ``KEY_TTL_S``).
        """
        key = (request.headers.get(IDEMPOTENCY_KEY_HEADER, "") if key is None else key).strip()
        if remember and not key:
            raise refusals.missing_key()
        if remember and (
            len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key)
        ):
            raise refusals.invalid_key(key)
        path = request.url.path
        # Before the claim: a delayed request is one the provider cannot see yet.
        await self.faults.delay(service, key, path)
        existing = None
        if remember:
            print_ = await fingerprint(request, params)
            existing = self._claim(key, print_, resource, refusals, key_window_s)
        if existing is not None:
            return DroppedResponse() if self.faults.drop_replay(service, key, path) else existing
        try:
            plan = self.faults.plan(service, key, path)
            if plan.fail:
                raise refusals.injected_fault(service)
            if plan.reject:
                # Like a validation error: refused before any effect and not stored, so the same
                # key goes through once whatever was wrong has been fixed.
                raise refusals.injected_rejection(service)
            if plan.hold:
                await self.faults.hold(service, key)
            if plan.latency_s:
                await asyncio.sleep(plan.latency_s)
            if plan.refuse:
                # A refusal is this request's business outcome: committed with the key, no effect.
                effect = partial(_refuse, refusals.injected_refusal(service))
            elif plan.server_error:
                effect = partial(_fail_after, effect, refusals.injected_server_error(service))
            request_id = getattr(request.state, "request_id", None)
            stored = self._commit(key if remember else None, effect, request_id)
        except BaseException:
            # Nothing was committed (effect and response are one transaction): free the key.
            if remember:
                self._release(key)
            raise
        return DroppedResponse() if plan.drop else _json_response(stored.status, stored.body)

    def _claim(
        self,
        key: str,
        print_: str,
        resource: str | None,
        refusals: Refusals,
        key_window_s: float = KEY_TTL_S,
    ) -> Response | None:
        """Claim ``key`` (and ``resource``); return the answer to send instead if already claimed.

        Checking and claiming share one transaction, so of two requests racing for a resource
        exactly one gets it. A key already claimed is refused while its first request is in
        flight (even for another body), then answers with what it stored, or is refused as
        reused for another request.
        """
        with self.ledger.transaction() as db:
            db.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (time.time() - KEY_TTL_S,)
            )
            row = db.execute(
                "SELECT fingerprint, state, status_code, body, request_id, created_at"
                " FROM idempotency_keys WHERE key = ?",
                (key,),
            ).fetchone()
            if row is not None and _forgotten(row, key_window_s):
                # Past this API's window: the key is new again (Resend's 24 h, or less).
                db.execute("DELETE FROM idempotency_keys WHERE key = ?", (key,))
                row = None
            if row is None:
                if resource is not None and self._in_flight_on(db, resource):
                    # Raised inside the transaction, so nothing at all is stored for this key.
                    raise refusals.resource_in_use(resource)
                db.execute(
                    "INSERT INTO idempotency_keys (key, fingerprint, state, resource, created_at)"
                    " VALUES (?, ?, 'in_flight', ?, ?)",
                    (key, print_, resource, time.time()),
                )
                return None
        # In flight first, whatever the body: a 422 is a final refusal to the caller, which may
        # then move on to a new key while the first request under this one can still commit.
        if row["state"] == "in_flight":
            raise refusals.key_in_use(key)
        if row["fingerprint"] != print_:
            raise refusals.key_reused(key)
        # As Stripe's: a replay says so, and names the request whose answer it is.
        headers = {"Idempotent-Replayed": "true"}
        if row["request_id"]:
            headers["Original-Request"] = row["request_id"]
        return _json_response(row["status_code"], row["body"], **headers)

    @staticmethod
    def _in_flight_on(db: sqlite3.Connection, resource: str) -> bool:
        """Whether a claim still in flight holds ``resource``."""
        sql = "SELECT 1 FROM idempotency_keys WHERE resource = ? AND state = 'in_flight'"
        return db.execute(sql, (resource,)).fetchone() is not None

    def _commit(self, key: str | None, effect: Effect, request_id: str | None = None) -> _Stored:
        """Perform ``effect`` and store its response against ``key`` in one transaction.

        ``request_id`` (the request's ``Request-Id``) is kept with it for replays to name.
        Without a key (nothing remembered) the effect alone is committed.
        """
        with self.ledger.transaction() as db:
            # The savepoint lets an effect reject a request with ApiError without
            # leaving half its writes behind; the rejection is stored like any outcome.
            db.execute("SAVEPOINT effect")
            try:
                outcome = effect(db)
            except ApiError as error:
                db.execute("ROLLBACK TO effect")
                outcome = Outcome(error.status, error.body)
            db.execute("RELEASE effect")
            stored = _Stored(outcome.status, json.dumps(outcome.body, separators=(",", ":")))
            if key is None:
                return stored
            db.execute(
                "UPDATE idempotency_keys SET state = 'done', status_code = ?, body = ?,"
                " request_id = ? WHERE key = ?",
                (stored.status, stored.body, request_id, key),
            )
        return stored

    def _release(self, key: str) -> None:
        with self.ledger.transaction() as db:
            db.execute("DELETE FROM idempotency_keys WHERE key = ? AND state = 'in_flight'", (key,))


def _forgotten(row: sqlite3.Row, key_window_s: float) -> bool:
    """Whether a finished key is older than the API's window (one still in flight never is)."""
    created_at: float = row["created_at"]
    return row["state"] == "done" and created_at < time.time() - key_window_s


async def get_idempotency(request: Request) -> Idempotency:
    """FastAPI dependency: the app's ``Idempotency`` runner."""
    idempotency: Idempotency = request.app.state.idempotency
    return idempotency


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
