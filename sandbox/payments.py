"""The payment gateway's sandbox-only views: every intent, charge and refund of an order.

The gateway itself speaks Stripe's API under ``/v1`` (``sandbox.stripe``). These listings
are not Stripe's: they let tests, the crash harness and people list what the gateway did for
one order (``?order_id=``, the intents' ``metadata[order_id]``), oldest first, as the same
Stripe-shaped objects, without search's lag.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sandbox.ledger import LedgerDep
from sandbox.limits import QueryId
from sandbox.stripe.charges import CHARGES, render_charge
from sandbox.stripe.payment_intents import INTENTS, render_intent
from sandbox.stripe.refunds import REFUNDS, render_refund

SERVICE = "payments"
router = APIRouter(prefix="/payments", tags=[SERVICE])


@router.get("/intents")
async def list_intents(ledger: LedgerDep, order_id: QueryId = None) -> dict[str, Any]:
    """List payment intents (PaymentIntent objects), oldest first."""
    rows = INTENTS.find_rows(ledger.db, order_id=order_id)
    return {"data": [render_intent(ledger.db, row) for row in rows]}


@router.get("/charges")
async def list_charges(ledger: LedgerDep, order_id: QueryId = None) -> dict[str, Any]:
    """List charges (Charge objects), oldest first: authorizations, captured or not."""
    return {"data": [render_charge(row) for row in CHARGES.find_rows(ledger.db, order_id=order_id)]}


@router.get("/refunds")
async def list_refunds(ledger: LedgerDep, order_id: QueryId = None) -> dict[str, Any]:
    """List refunds (Refund objects), oldest first."""
    rows = REFUNDS.find_rows(ledger.db, order_id=order_id)
    return {"data": [render_refund(ledger.db, row) for row in rows]}
