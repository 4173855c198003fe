"""Disputes (chargebacks): a cardholder's bank takes a captured payment back.

Stripe opens one when the cardholder disputes a charge; in test mode its dispute test card
(``pm_card_createDispute``, 4000 0000 0000 0259) has one opened as soon as the payment is
captured. The sandbox does the same, and an operator can open one on any captured payment
(``POST /admin/disputes``) or close one (``POST /admin/disputes/{id}/close``: ``won`` or
``lost``). Each is reported by Stripe's event (``charge.dispute.created``,
``charge.dispute.closed``) through the gateway's outbox (``events``). The charge shows
``disputed: true``. Like Stripe's, a dispute object has no ``metadata.order_id``: the shop
finds its order through the dispute's ``payment_intent``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from sandbox.errors import ApiError, not_found
from sandbox.ledger import LedgerDep, Resource, to_unix
from sandbox.limits import PathId
from sandbox.stripe import charges, events

DISPUTE_TEST_CARD = "pm_card_createDispute"
EVIDENCE_WINDOW_S = 7 * 86400
"""How long the shop has to answer with evidence (Stripe: days to weeks, by network)."""
REASONS = ("fraudulent", "product_not_received", "unrecognized", "duplicate", "general")

DISPUTES = Resource(
    "disputes",
    "dispute",
    "dp",
    ("charge", "payment_intent", "order_id", "amount", "currency", "reason", "status", "created"),
)


def render_dispute(row: sqlite3.Row) -> dict[str, Any]:
    """The Dispute object of a ledger row."""
    created = to_unix(row["created"])
    return {
        "id": row["id"],
        "object": "dispute",
        "amount": row["amount"],
        "balance_transactions": [],
        "charge": row["charge"],
        "created": created,
        "currency": row["currency"],
        "evidence": {"product_description": None, "uncategorized_text": None},
        "evidence_details": {
            "due_by": created + EVIDENCE_WINDOW_S,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": row["payment_intent"],
        "reason": row["reason"],
        "status": row["status"],
    }


def open_dispute(db: sqlite3.Connection, charge_id: str, reason: str) -> dict[str, Any]:
    """Open a dispute on a captured charge (in the caller's transaction); the dispute."""
    charge = charges.get_charge_row(db, charge_id)
    if charge is None or not charge["captured"] or charge["released_at"] is not None:
        raise ApiError(400, "charge_not_captured", f"charge {charge_id} took no money to dispute")
    if DISPUTES.find_rows(db, charge=charge_id):
        raise ApiError(400, "charge_disputed", f"charge {charge_id} is already disputed")
    DISPUTES.insert(
        db,
        charge=charge_id,
        payment_intent=charge["payment_intent"],
        order_id=charge["order_id"],
        amount=charge["amount_captured"],
        currency=str(charge["currency"]).lower(),
        reason=reason,
        status="needs_response",
    )
    db.execute("UPDATE charges SET disputed = 1 WHERE id = ?", (charge_id,))
    [row] = DISPUTES.find_rows(db, charge=charge_id)
    dispute = render_dispute(row)
    events.record(db, "charge.dispute.created", dispute, str(charge["order_id"]))
    return dispute


def open_if_test_card(db: sqlite3.Connection, charge_id: str) -> None:
    """A payment captured with Stripe's dispute test card is disputed at once."""
    charge = charges.get_charge_row(db, charge_id)
    if charge is not None and charge["payment_method"] == DISPUTE_TEST_CARD:
        open_dispute(db, charge_id, "fraudulent")


class OpenDispute(BaseModel):
    """``POST /admin/disputes``: the payment the cardholder disputes."""

    model_config = ConfigDict(extra="forbid")

    payment_intent: str = Field(max_length=255)
    reason: Literal["fraudulent", "product_not_received", "unrecognized", "duplicate", "general"]


class CloseDispute(BaseModel):
    """``POST /admin/disputes/{id}/close``: how the bank decided."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["won", "lost"]


router = APIRouter(prefix="/admin/disputes", tags=["admin"])


@router.post("")
async def create_dispute(body: OpenDispute, ledger: LedgerDep) -> dict[str, Any]:
    """Open a dispute on the payment intent's captured charge (``charge.dispute.created``)."""
    with ledger.transaction() as db:
        intent = db.execute(
            "SELECT charge FROM payment_intents WHERE id = ?", (body.payment_intent,)
        ).fetchone()
        if intent is None or not intent["charge"]:
            raise not_found("payment intent with a charge", body.payment_intent)
        return open_dispute(db, str(intent["charge"]), body.reason)


@router.post("/{dispute}/close")
async def close_dispute(dispute: PathId, body: CloseDispute, ledger: LedgerDep) -> dict[str, Any]:
    """Close a dispute as the bank decided (``charge.dispute.closed``)."""
    with ledger.transaction() as db:
        row = DISPUTES.get_row(db, dispute)
        if row is None:
            raise not_found("dispute", dispute)
        db.execute(
            "UPDATE disputes SET status = ?, closed_at = ? WHERE id = ?",
            (body.status, int(time.time()), dispute),
        )
        closed = DISPUTES.get_row(db, dispute)
        assert closed is not None
        rendered = render_dispute(closed)
        events.record(db, "charge.dispute.closed", rendered, str(closed["order_id"]))
        return rendered


@router.get("")
async def list_disputes(ledger: LedgerDep) -> dict[str, Any]:
    """Every dispute, oldest first."""
    return {"data": [render_dispute(row) for row in DISPUTES.find_rows(ledger.db)]}
