"""Sandbox payment gateway: payment intents, charges (on confirm), cancels and refunds.

Confirm and cancel of one intent lock it (see ``providers.idempotency``), so a cancel never
overlaps a confirm in flight: it answers 409 until the confirm has charged or failed.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from providers.errors import ApiError, not_found
from providers.idempotency import IdempotencyDep, IdempotencyKey, Outcome, resource_lock
from providers.ledger import LedgerDep, Resource
from providers.limits import Amount, Id, PathId, QueryId, ShortText

SERVICE = "payments"
router = APIRouter(prefix="/payments", tags=[SERVICE])

INTENTS = Resource(
    "payment_intents",
    "payment_intent",
    "pi",
    ("order_id", "amount", "currency", "payment_method", "status", "charge", "created"),
)
CHARGES = Resource(
    "charges",
    "charge",
    "ch",
    ("payment_intent", "order_id", "amount", "currency", "status", "created"),
)
REFUNDS = Resource(
    "refunds", "refund", "re", ("charge", "order_id", "amount", "reason", "status", "created")
)

# Test tokens, like Stripe's: confirming an intent paid with one of these is declined.
DECLINES = {
    "pm_card_declined": "generic_decline",
    "pm_card_insufficient_funds": "insufficient_funds",
    "pm_card_expired": "expired_card",
}


class IntentIn(BaseModel):
    """Body of ``POST /payments/intents``."""

    order_id: Id
    amount: Amount
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(pattern=r"^pm_[A-Za-z0-9_]+$", max_length=200)


class RefundIn(BaseModel):
    """Body of ``POST /payments/refunds``; ``amount`` null refunds whatever remains."""

    charge_id: Id
    amount: Amount | None = None
    reason: ShortText | None = None


def _intent_lock(intent_id: str) -> str:
    return resource_lock(INTENTS.object, intent_id)


def _create_intent(body: IntentIn, db: sqlite3.Connection) -> Outcome:
    return Outcome(200, INTENTS.insert(db, status="requires_confirmation", **body.model_dump()))


def _confirm(intent_id: str, db: sqlite3.Connection) -> Outcome:
    intent = INTENTS.get_row(db, intent_id)
    if intent is None:
        raise not_found("payment_intent", intent_id)
    # An intent is charged at most once, whatever idempotency key a retry uses.
    if intent["status"] == "succeeded":
        return Outcome(200, CHARGES.find(db, payment_intent=intent_id)[0])
    if intent["status"] == "canceled":
        message = f"The payment intent '{intent_id}' was canceled; it can't be confirmed."
        raise ApiError(400, "payment_intent_unexpected_state", message)
    decline_code = intent["decline_code"] or DECLINES.get(intent["payment_method"])
    if decline_code:
        db.execute(
            "UPDATE payment_intents SET status = 'failed', decline_code = ? WHERE id = ?",
            (decline_code, intent_id),
        )
        message = f"The card was declined ({decline_code})."
        declined = ApiError(402, "card_declined", message, "card_error", decline_code=decline_code)
        # Returned, not raised: the intent's new status must be committed with the answer.
        return Outcome(declined.status, declined.body)
    charge = CHARGES.insert(
        db,
        payment_intent=intent_id,
        status="succeeded",
        **{field: intent[field] for field in ("order_id", "amount", "currency")},
    )
    db.execute(
        "UPDATE payment_intents SET status = 'succeeded', charge = ? WHERE id = ?",
        (charge["id"], intent_id),
    )
    return Outcome(200, charge)


def _cancel(intent_id: str, db: sqlite3.Connection) -> Outcome:
    intent = INTENTS.get_row(db, intent_id)
    if intent is None:
        raise not_found("payment_intent", intent_id)
    # Only an unconfirmed intent changes. A succeeded one stays so, its ``charge`` telling the
    # caller what to refund; a failed (declined) one charged nothing.
    if intent["status"] == "requires_confirmation":
        db.execute("UPDATE payment_intents SET status = 'canceled' WHERE id = ?", (intent_id,))
        intent = INTENTS.get_row(db, intent_id)
        assert intent is not None
    return Outcome(200, INTENTS.render(intent))


def _refund(body: RefundIn, db: sqlite3.Connection) -> Outcome:
    charge = CHARGES.get_row(db, body.charge_id)
    if charge is None:
        raise not_found("charge", body.charge_id)
    refunds = REFUNDS.find(db, charge=body.charge_id)
    remaining = charge["amount"] - sum(refund["amount"] for refund in refunds)
    if body.amount is None and remaining == 0:
        # Asking again for "the full refund" gets the refund that already did it.
        return Outcome(200, refunds[-1])
    amount = remaining if body.amount is None else body.amount
    if amount > remaining:
        message = f"Refund amount {amount} is more than the {remaining} left on '{charge['id']}'."
        raise ApiError(422, "amount_too_large", message)
    refund = REFUNDS.insert(
        db,
        charge=body.charge_id,
        order_id=charge["order_id"],
        amount=amount,
        reason=body.reason,
        status="succeeded",
    )
    if amount == remaining:
        db.execute("UPDATE charges SET status = 'refunded' WHERE id = ?", (body.charge_id,))
    return Outcome(200, refund)


@router.post("/intents")
async def create_intent(
    body: IntentIn, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Create a payment intent; no money moves until it is confirmed."""
    return await idem.run(request, SERVICE, partial(_create_intent, body), key=key)


@router.post("/intents/{intent_id}/confirm")
async def confirm_intent(
    intent_id: PathId, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Confirm an intent: charge it once (200), decline it (402), or refuse if canceled (400)."""
    effect = partial(_confirm, intent_id)
    return await idem.run(request, SERVICE, effect, _intent_lock(intent_id), key=key)


@router.post("/intents/{intent_id}/cancel")
async def cancel_intent(
    intent_id: PathId, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Cancel an unconfirmed intent; any other intent is answered as it is (200).

    An intent that already ``succeeded`` is not canceled: its ``charge`` is the one to refund.
    """
    effect = partial(_cancel, intent_id)
    return await idem.run(request, SERVICE, effect, _intent_lock(intent_id), key=key)


@router.post("/refunds")
async def create_refund(
    body: RefundIn, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Refund part of a charge, or (``amount`` null) all that remains of it.

    The refund that leaves nothing of the charge marks the charge ``refunded``.
    """
    return await idem.run(request, SERVICE, partial(_refund, body), key=key)


@router.get("/intents")
async def list_intents(ledger: LedgerDep, order_id: QueryId = None) -> dict[str, Any]:
    """List payment intents, oldest first, each with its ``status`` and ``charge`` (or null)."""
    return {"data": INTENTS.find(ledger.db, order_id=order_id)}


@router.get("/charges")
async def list_charges(ledger: LedgerDep, order_id: QueryId = None) -> dict[str, Any]:
    """List charges, oldest first."""
    return {"data": CHARGES.find(ledger.db, order_id=order_id)}


@router.get("/refunds")
async def list_refunds(ledger: LedgerDep, order_id: QueryId = None) -> dict[str, Any]:
    """List refunds, oldest first."""
    return {"data": REFUNDS.find(ledger.db, order_id=order_id)}
