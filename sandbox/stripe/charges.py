"""Charges (``/v1/charges``): what a confirmed payment intent did to the card.

A confirm that the card approves makes one charge for the intent (never a second, whatever the
keys): with ``capture_method=automatic`` it is captured at once (money moved); with ``manual``
it is an authorization (``captured: false``) until the intent is captured, or released when the
intent is cancelled (``released_at``; no money ever moved). Refunds add to
``amount_refunded``. A confirm the card declines makes a ``failed`` charge, as Stripe does (the
intent's ``latest_charge`` then names it, though no money moved): those are kept apart
(``FAILED_CHARGES``), so an intent has at most one charge that succeeded. Charges are made by
``payment_intents``; this module stores, renders and lists them.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from fastapi import APIRouter, Request

from sandbox.ledger import LedgerDep, Resource, to_unix
from sandbox.stripe.cards import no_billing_details
from sandbox.stripe.errors import resource_missing
from sandbox.stripe.form import Params, read_query
from sandbox.stripe.lists import list_object, read_listing

router = APIRouter(tags=["payments"])

CHARGES = Resource(
    "charges",
    "charge",
    "ch",
    ("payment_intent", "order_id", "amount", "currency", "status", "created"),
)


FAILED_CHARGES = Resource(
    "failed_charges",
    "charge",
    "ch",
    ("payment_intent", "order_id", "amount", "currency", "status", "created"),
)


def amount_refunded(row: sqlite3.Row) -> int:
    """What Stripe shows as refunded: refunds, plus what a capture or a release gave back."""
    if row["released_at"] is not None:
        return int(row["amount"])
    uncaptured = row["amount"] - row["amount_captured"] if row["captured"] else 0
    return int(row["amount_refunded"] + uncaptured)


def refundable(row: sqlite3.Row) -> int:
    """Captured money not refunded yet (0 for an authorization, captured or released)."""
    if not row["captured"] or row["released_at"] is not None:
        return 0
    return int(row["amount_captured"] - row["amount_refunded"])


def render_charge(row: sqlite3.Row) -> dict[str, Any]:
    """The Charge object of a ledger row."""
    refunded = amount_refunded(row)
    return {
        "id": row["id"],
        "object": "charge",
        "amount": row["amount"],
        "amount_captured": row["amount_captured"],
        "amount_refunded": refunded,
        "balance_transaction": None,
        "billing_details": no_billing_details(),
        "captured": bool(row["captured"]),
        "created": to_unix(row["created"]),
        "currency": str(row["currency"]).lower(),
        "description": None,
        "disputed": bool(row["disputed"]),
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": {"order_id": row["order_id"]} if row["order_id"] else {},
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": row["payment_intent"],
        "payment_method": row["payment_method"],
        "payment_method_details": card_details(row["capture_before"]),
        "refunded": refunded >= row["amount"],
        "status": row["status"],
    }


def card_details(capture_before: int | None) -> dict[str, Any]:
    """The charge's ``payment_method_details``: a sandbox test card.

    For an authorization, the time it must be captured by (``capture_before``, unix seconds),
    as Stripe gives it.
    """
    card = {"brand": "visa", "exp_month": 12, "exp_year": 2034, "funding": "credit"}
    return {"card": {**card, "capture_before": capture_before, "last4": "4242"}, "type": "card"}


def render_failed_charge(row: sqlite3.Row) -> dict[str, Any]:
    """The Charge object of a declined attempt: ``failed``, nothing captured or paid."""
    return {
        "id": row["id"],
        "object": "charge",
        "amount": row["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "balance_transaction": None,
        "billing_details": no_billing_details(),
        "captured": False,
        "created": to_unix(row["created"]),
        "currency": str(row["currency"]).lower(),
        "description": None,
        "disputed": False,
        "failure_code": row["failure_code"],
        "failure_message": row["failure_message"],
        "livemode": False,
        "metadata": {"order_id": row["order_id"]} if row["order_id"] else {},
        "outcome": {
            "network_status": "declined_by_network",
            "reason": row["decline_code"],
            "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined",
        },
        "paid": False,
        "payment_intent": row["payment_intent"],
        "payment_method": row["payment_method"],
        "refunded": False,
        "status": "failed",
    }


def get_charge_row(db: sqlite3.Connection, charge_id: str) -> sqlite3.Row | None:
    """The ledger row of a charge that succeeded (captured or not), if there is one."""
    return CHARGES.get_row(db, charge_id)


def render_any(db: sqlite3.Connection, charge_id: str) -> dict[str, Any] | None:
    """The Charge object with this id, succeeded or failed; None if there is none."""
    if (row := CHARGES.get_row(db, charge_id)) is not None:
        return render_charge(row)
    if (failed := FAILED_CHARGES.get_row(db, charge_id)) is not None:
        return render_failed_charge(failed)
    return None


def latest_failed(db: sqlite3.Connection, intent_id: str) -> str | None:
    """The id of the intent's newest failed charge, if a confirm of it was ever declined."""
    row = db.execute(
        "SELECT id FROM failed_charges WHERE payment_intent = ? ORDER BY rowid DESC LIMIT 1",
        (intent_id,),
    ).fetchone()
    return None if row is None else str(row["id"])


def decline(
    db: sqlite3.Connection,
    intent: sqlite3.Row,
    method: str,
    code: str,
    decline_code: str,
    message: str,
) -> str:
    """Record a declined attempt as a ``failed`` charge; its id."""
    charge = FAILED_CHARGES.insert(
        db,
        payment_intent=intent["id"],
        order_id=intent["order_id"],
        amount=intent["amount"],
        currency=intent["currency"],
        payment_method=method,
        failure_code=code,
        decline_code=decline_code,
        failure_message=message,
        status="failed",
    )
    charge_id: str = charge["id"]
    return charge_id


def authorize(
    db: sqlite3.Connection, intent: sqlite3.Row, method: str, capture: bool, validity_s: float
) -> str:
    """Make the intent's one charge, captured at once or held as an authorization; its id.

    An authorization can be captured for ``validity_s`` seconds (its ``capture_before``).
    """
    charge = CHARGES.insert(
        db,
        payment_intent=intent["id"],
        order_id=intent["order_id"],
        amount=intent["amount"],
        currency=intent["currency"],
        status="succeeded",
        payment_method=method,
        captured=int(capture),
        amount_captured=intent["amount"] if capture else 0,
        amount_refunded=0,
        capture_before=None if capture else int(time.time() + validity_s),
    )
    charge_id: str = charge["id"]
    return charge_id


def capture(db: sqlite3.Connection, charge_id: str, amount: int) -> None:
    """Capture ``amount`` of an authorization: the money moves now (the rest is given back)."""
    db.execute(
        "UPDATE charges SET captured = 1, amount_captured = ? WHERE id = ?", (amount, charge_id)
    )


def release(db: sqlite3.Connection, charge_id: str, at: int | None = None) -> None:
    """Release an authorization (now, or ``at`` when it expired): nothing moves."""
    db.execute(
        "UPDATE charges SET released_at = ? WHERE id = ? AND captured = 0",
        (int(time.time()) if at is None else at, charge_id),
    )


def expired_authorizations(db: sqlite3.Connection, now: float) -> list[sqlite3.Row]:
    """The authorizations held past their ``capture_before``: ``id`` and ``capture_before``."""
    return db.execute(
        "SELECT id, capture_before FROM charges WHERE captured = 0 AND released_at IS NULL"
        " AND capture_before <= ?",
        (now,),
    ).fetchall()


def add_refund(db: sqlite3.Connection, charge_id: str, amount: int) -> None:
    """Count a refund of ``amount`` against the charge (a failed one with ``-amount``)."""
    db.execute(
        "UPDATE charges SET amount_refunded = amount_refunded + ? WHERE id = ?",
        (amount, charge_id),
    )


@router.get("/charges/{charge}")
async def retrieve_charge(charge: str, request: Request, ledger: LedgerDep) -> dict[str, Any]:
    """Retrieve a charge (404 ``resource_missing``, ``param: "id"``, when unknown)."""
    params = Params(read_query(request))
    params.strings("expand")
    params.done()
    found = render_any(ledger.db, charge)
    if found is None:
        raise resource_missing("charge", charge, "id")
    return found


@router.get("/charges")
async def list_charges(request: Request, ledger: LedgerDep) -> dict[str, Any]:
    """List charges, newest first (failed ones too), all or those of one ``payment_intent``."""
    params = Params(read_query(request))
    intent = params.string("payment_intent", max_length=300)
    listing = read_listing(params)
    params.strings("expand")
    params.done()
    found = [
        (row["created"], render_charge(row))
        for row in CHARGES.find_rows(ledger.db, payment_intent=intent)
    ] + [
        (row["created"], render_failed_charge(row))
        for row in FAILED_CHARGES.find_rows(ledger.db, payment_intent=intent)
    ]
    found.sort(key=lambda item: str(item[0]), reverse=True)
    return list_object("/v1/charges", "charge", [charge for _, charge in found], listing)
