"""Admin API: fault injection at run time, per-order effect counts and idempotency keys."""

from __future__ import annotations

import json
import sqlite3
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from sandbox.faults import FaultConfig, FaultsDep
from sandbox.ledger import LedgerDep
from sandbox.limits import MAX_IDEMPOTENCY_KEY_LENGTH, QueryId
from sandbox.stripe import payment_intents, refunds
from sandbox.stripe.rate_limits import Kind, RateLimiter

router = APIRouter(prefix="/admin", tags=["admin"])

# Ledger summary field -> (aggregate, table, extra condition). Money that moved is what was
# captured (charges, charged_amount) and refunded; an authorization (a charge an approved
# confirm made, captured or not) moves nothing until captured, and a released one never does.
FIELDS = {
    "payment_intents": ("COUNT(*)", "payment_intents", "1"),
    "cancelled_intents": ("COUNT(*)", "payment_intents", "status = 'canceled'"),
    "authorizations": ("COUNT(*)", "charges", "status = 'succeeded'"),
    "authorized_amount": ("SUM(amount)", "charges", "status = 'succeeded'"),
    "charges": ("COUNT(*)", "charges", "captured = 1"),
    "charged_amount": ("SUM(amount_captured)", "charges", "captured = 1"),
    "released": ("COUNT(*)", "charges", "released_at IS NOT NULL"),
    "released_amount": ("SUM(amount)", "charges", "released_at IS NOT NULL"),
    # Every refund made, whatever its status; refunds_by_status says which gave money back.
    "refunds": ("COUNT(*)", "refunds", "1"),
    "refunded_amount": ("SUM(amount)", "refunds", "1"),
    "picklists": ("COUNT(*)", "picklists", "1"),
    "cancelled_picklists": ("COUNT(*)", "picklists", "status = 'cancelled'"),
    # Chargebacks, and the gateway's Stripe events the receiver refused for good.
    "disputes": ("COUNT(*)", "disputes", "1"),
    "failed_events": ("COUNT(*)", "stripe_events", "status = 'failed'"),
}
# Summary field -> table whose row ids it lists, oldest first: what an order can record.
IDS = {
    "payment_intent": "payment_intents",
    "charge": "charges",
    "refund": "refunds",
    "picklist": "picklists",
}
# The tables whose currency an order's money was handled in (refunds' may be unknown: NULL).
CURRENCY_TABLES = ("payment_intents", "charges", "refunds")
UNATTRIBUTED = "order_id = ''"
"""Rows no order explains: a payment intent created without metadata[order_id], and what
followed from it."""


def ledger_summary(db: sqlite3.Connection, order_id: str | None) -> dict[str, dict[str, Any]]:
    """Count (and for money, sum) each order's effects; a filtered order with none shows zeros.

    Rows without an order id are left out here; ``unattributed_summary`` counts them.
    """
    if order_id is not None:
        orders = _summaries(db, "order_id = ?", (order_id,))
        return {order_id: orders.get(order_id, _empty())}
    return _summaries(db, f"NOT ({UNATTRIBUTED})", ())


def unattributed_summary(db: sqlite3.Connection) -> dict[str, Any]:
    """The effects of the rows that carry no order id, summed as one order's (zeros if none)."""
    summary: dict[str, Any] = _summaries(db, UNATTRIBUTED, ()).get("", _empty())
    return summary


def _empty() -> dict[str, Any]:
    return {
        **dict.fromkeys(FIELDS, 0),
        "emails": {},
        "ids": {kind: [] for kind in IDS},
        "refunds_by_status": {},
        "refunded_by_status": {},
        "currencies": [],
    }


def _summaries(db: sqlite3.Connection, where: str, args: tuple[str, ...]) -> dict[str, Any]:
    """Each order's summary over the rows that match ``where`` (SQL on ``order_id``)."""
    orders: dict[str, dict[str, Any]] = {}
    # What the gateway's clock would have done by now is counted as done.
    payment_intents.expire_due(db)
    refunds.settle_due(db)

    def entry(order: str) -> dict[str, Any]:
        return orders.setdefault(order, _empty())

    for name, (aggregate, table, condition) in FIELDS.items():
        sql = f"SELECT order_id, {aggregate} FROM {table} WHERE {where} AND {condition} GROUP BY 1"
        for order, value in db.execute(sql, args):
            entry(order)[name] = value
    sql = f"SELECT order_id, template, COUNT(*) FROM messages WHERE {where} GROUP BY 1, 2"
    for order, template, count in db.execute(sql, args):
        entry(order)["emails"][template] = count
    for kind, table in IDS.items():
        sql = f"SELECT order_id, id FROM {table} WHERE {where} ORDER BY rowid"
        for order, row_id in db.execute(sql, args):
            entry(order)["ids"][kind].append(row_id)
    # Only a refund that succeeded gave money back: the checker reads refunds by status.
    sql = f"SELECT order_id, status, COUNT(*), SUM(amount) FROM refunds WHERE {where} GROUP BY 1, 2"
    for order, status, count, amount in db.execute(sql, args):
        entry(order)["refunds_by_status"][status] = count
        entry(order)["refunded_by_status"][status] = amount
    for table in CURRENCY_TABLES:
        sql = f"SELECT DISTINCT order_id, lower(currency) FROM {table} WHERE {where}"
        for order, currency in db.execute(f"{sql} AND currency IS NOT NULL", args):
            if currency not in entry(order)["currencies"]:
                entry(order)["currencies"].append(currency)
    return orders


@router.get("/ledger")
async def get_ledger_summary(ledger: LedgerDep, order_id: QueryId = None) -> dict[str, Any]:
    """Per order: effect counts, money moved (charged, refunded), and emails by template.

    ``charges``/``charged_amount`` count captured money only; ``authorizations`` every charge
    an approved confirm made (captured or not); ``released``/``released_amount`` the
    authorizations a cancel let go (no money moved). ``ids`` lists the order's intents,
    charges, refunds and picklists; ``refunds_by_status``/``refunded_by_status`` count and sum
    its refunds by status; ``currencies`` are those its money was handled in. Unfiltered, the
    answer also sums the rows that carry no order id (``unattributed``).
    """
    summary: dict[str, Any] = {"orders": ledger_summary(ledger.db, order_id)}
    if order_id is None:
        summary["unattributed"] = unattributed_summary(ledger.db)
    return summary


@router.post("/keys/expire")
async def expire_keys(
    ledger: LedgerDep,
    prefix: Annotated[str, Query(max_length=MAX_IDEMPOTENCY_KEY_LENGTH)] = "",
) -> dict[str, int]:
    """Forget the answered idempotency keys that start with ``prefix``, as 24 hours would.

    Lets tests show what happens when a retry comes after its key's lifetime; keys of requests
    still in flight are kept, as the real expiry would keep them.
    """
    with ledger.transaction() as db:
        expired = db.execute(
            "DELETE FROM idempotency_keys WHERE state = 'done' AND substr(key, 1, ?) = ?",
            (len(prefix), prefix),
        ).rowcount
    return {"expired": expired}


@router.get("/keys")
async def list_keys(
    ledger: LedgerDep,
    prefix: Annotated[str, Query(max_length=MAX_IDEMPOTENCY_KEY_LENGTH)] = "",
) -> dict[str, Any]:
    """The idempotency keys that start with ``prefix``, oldest first, and what each holds.

    ``state`` is ``in_flight`` (claimed, its effect not committed yet) or ``done``; a done key
    has the ``status`` and ``body`` it answered (and answers any retry with). A request that
    has not claimed its key (one ``delay_next`` keeps on its way) is not listed.
    """
    rows = ledger.db.execute(
        "SELECT key, state, resource, status_code, body FROM idempotency_keys"
        " WHERE substr(key, 1, ?) = ? ORDER BY created_at, rowid",
        (len(prefix), prefix),
    )
    return {
        "data": [
            {
                "key": row["key"],
                "state": row["state"],
                "resource": row["resource"],
                "status": row["status_code"],
                "body": None if row["body"] is None else json.loads(row["body"]),
            }
            for row in rows
        ]
    }


@router.get("/faults")
async def get_faults(faults: FaultsDep) -> dict[str, FaultConfig]:
    """Every service's fault settings."""
    return faults.configs()


@router.put("/faults/{service}")
async def set_faults(service: str, patch: FaultConfig, faults: FaultsDep) -> FaultConfig:
    """Change some of a service's fault settings (fields left out stay as they are)."""
    return faults.update(service, patch)


@router.delete("/faults")
async def reset_faults(faults: FaultsDep) -> dict[str, FaultConfig]:
    """Clear every fault and release every held request."""
    faults.reset()
    return faults.configs()


@router.get("/rate-limits")
async def get_rate_limits(request: Request, faults: FaultsDep) -> dict[str, dict[str, int | float]]:
    """The gateway account's rate limits per second (0: none), and its requests so far.

    Each by kind (read, write, search): ``limits``, and the requests ``admitted`` and
    ``refused`` with a 429 ``rate_limit`` since the process started.
    """
    limiter: RateLimiter = request.app.state.rate_limiter
    return {
        "limits": {kind: faults.rate_limit(kind) for kind in Kind},
        "admitted": {kind: count for kind, count in limiter.admitted.items()},
        "refused": {kind: count for kind, count in limiter.refused.items()},
    }


@router.post("/faults/{service}/release")
async def release_held(service: str, faults: FaultsDep, fail: bool = False) -> dict[str, int]:
    """Let the service's held requests go on: they commit, or with ``?fail=true`` fail.

    A request released as a failure is answered 503 and nothing is committed, as if the call
    had failed before it reached the ledger.
    """
    return {"released": faults.release(service, fail)}


@router.post("/faults/{service}/deliver")
async def deliver_delayed(service: str, faults: FaultsDep) -> dict[str, int]:
    """Let the service's delayed requests (``delay_next``) arrive.

    Each then claims its key and is handled as if it had just been sent, whatever happened
    meanwhile (the caller may have given up on it long ago).
    """
    return {"delivered": faults.deliver(service)}


@router.get("/faults/fired")
async def get_fired(
    faults: FaultsDep,
    prefix: Annotated[str, Query(max_length=MAX_IDEMPOTENCY_KEY_LENGTH)] = "",
) -> dict[str, list[dict[str, str]]]:
    """Per service, each fault injected so far (oldest first) on a key starting with ``prefix``.

    ``fault`` is ``fail``, ``hold``, ``drop``, ``reject``, ``refuse`` or ``server_error``: a
    test's proof, counted where it acted, that the fault it set fired (a ``key_prefix`` that
    matches nothing, or a fault set too late, leaves this empty).
    """
    return {
        service: [{"fault": fault, "key": key} for fault, key in fired]
        for service, fired in faults.fired(prefix).items()
    }


@router.get("/held")
async def get_held(faults: FaultsDep) -> dict[str, int]:
    """How many requests each service holds right now."""
    return faults.held_counts()


@router.get("/held/keys")
async def get_held_keys(faults: FaultsDep) -> dict[str, list[str]]:
    """The idempotency keys of the requests each service holds right now."""
    return faults.held_keys()


@router.get("/delayed/keys")
async def get_delayed_keys(faults: FaultsDep) -> dict[str, list[str]]:
    """The idempotency keys of the requests each service delays on their way in right now."""
    return faults.delayed_keys()
