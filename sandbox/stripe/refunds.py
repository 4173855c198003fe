"""Refunds (``/v1/refunds``): give back captured money, all of it or part.

As on Stripe, a refund is not always done when it is made: it can stay ``pending`` and later
settle as ``succeeded`` or ``failed`` (with a ``failure_reason``; the money then comes back to
the shop and counts as refunded no more). The sandbox makes refunds pending, and failing, by
fault injection (``refunds_pending_s``, ``refunds_fail_with``); a pending refund settles when
it is due, before any request reads it and from the gateway's clock.

A refund names a ``payment_intent`` or a ``charge``; without ``amount`` it refunds all that
remains captured. Refused, as Stripe refuses: a charge with nothing left (400
``charge_already_refunded``, also for an authorization released by a cancel), more than
remains (400 ``amount_too_large``), an authorization never captured (400
``charge_not_captured``: cancel the intent instead), an intent without a charge (400). A refund
locks its intent while in flight, like a capture or a cancel.
"""

from __future__ import annotations

import json
import sqlite3
import time
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sandbox.faults import FaultsDep, RefundSettlement
from sandbox.idempotency import IdempotencyDep, IdempotencyKey, Outcome
from sandbox.ledger import LedgerDep, Resource, atomically, to_unix
from sandbox.limits import MAX_AMOUNT
from sandbox.stripe import charges, events
from sandbox.stripe.errors import STRIPE_REFUSALS, invalid_request, resource_missing
from sandbox.stripe.form import Params, read_form, read_query
from sandbox.stripe.lists import list_object, read_listing
from sandbox.stripe.payment_intents import get_intent_row, intent_lock

SERVICE = "payments"
router = APIRouter(tags=[SERVICE])

REFUNDS = Resource(
    "refunds", "refund", "re", ("charge", "order_id", "amount", "reason", "status", "created")
)
REASONS = ("duplicate", "fraudulent", "requested_by_customer")
EXPANDABLE = ("charge",)


def render_refund(
    db: sqlite3.Connection, row: sqlite3.Row, expand: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The Refund object of a ledger row (``expand``: ``charge`` as an object)."""
    charge: Any = row["charge"]
    if "charge" in expand and (charge_row := charges.get_charge_row(db, row["charge"])):
        charge = charges.render_charge(charge_row)
    # As Stripe's: ``failure_reason`` is there only once the refund has failed.
    failure = {"failure_reason": row["failure_reason"]} if row["status"] == "failed" else {}
    return {
        "id": row["id"],
        "object": "refund",
        "amount": row["amount"],
        "balance_transaction": None,
        "charge": charge,
        "created": to_unix(row["created"]),
        "currency": str(row["currency"] or "").lower() or None,
        "metadata": json.loads(row["metadata"]),
        **failure,
        "payment_intent": row["payment_intent"],
        "reason": row["reason"],
        "status": row["status"],
    }


def settle_due(db: sqlite3.Connection, now: float | None = None) -> int:
    """Settle the pending refunds that are due; how many there were.

    A failed refund gives the money back to the charge: it is refundable again.
    """
    due = db.execute(
        "SELECT * FROM refunds WHERE status = 'pending' AND settles_at <= ?",
        (time.time() if now is None else now,),
    ).fetchall()
    if not due:
        return 0
    with atomically(db):
        for row in due:
            failed = row["settles_to"] == "failed"
            db.execute("UPDATE refunds SET status = ? WHERE id = ?", (row["settles_to"], row["id"]))
            if failed:
                charges.add_refund(db, row["charge"], -int(row["amount"]))
            settled = REFUNDS.get_row(db, row["id"])
            assert settled is not None
            events.record(db, "charge.refund.updated", render_refund(db, settled))
    return len(due)


def _charge_of(db: sqlite3.Connection, intent_id: str | None, charge_id: str | None) -> str:
    """The id of the charge to refund, or the 400 that says why there is none."""
    if charge_id is not None:
        if charges.get_charge_row(db, charge_id) is None:
            raise resource_missing("charge", charge_id, "charge", status=400)
        return charge_id
    assert intent_id is not None
    intent = get_intent_row(db, intent_id)
    if intent is None:
        raise resource_missing("payment_intent", intent_id, "payment_intent", status=400)
    if not intent["charge"]:
        message = (
            f"This PaymentIntent ({intent_id}) does not have a successful charge to refund; "
            f"its status is {intent['status']}."
        )
        raise invalid_request(message, "charge_not_captured", "payment_intent")
    charge_id = str(intent["charge"])
    return charge_id


def _refund(
    intent_id: str | None,
    charge_id: str | None,
    amount: int | None,
    values: dict[str, Any],
    expand: tuple[str, ...],
    settlement: RefundSettlement,
    db: sqlite3.Connection,
) -> Outcome:
    charge_id = _charge_of(db, intent_id, charge_id)
    charge = charges.get_charge_row(db, charge_id)
    assert charge is not None
    param = "charge" if intent_id is None else "payment_intent"
    if not charge["captured"] and charge["released_at"] is None:
        message = (
            f"Charge {charge_id} has not been captured: there is no money to refund. Cancel the "
            "PaymentIntent to release the authorization."
        )
        raise invalid_request(message, "charge_not_captured", param)
    remaining = charges.refundable(charge)
    if remaining == 0:
        message = f"Charge {charge_id} has already been refunded."
        raise invalid_request(message, "charge_already_refunded", param)
    amount = remaining if amount is None else amount
    if amount > remaining:
        message = (
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})."
        )
        raise invalid_request(message, "amount_too_large", "amount")
    settles_to = "failed" if settlement.fails_with else "succeeded"
    pending = settlement.pending_s > 0 or settlement.fails_with is not None
    refund = REFUNDS.insert(
        db,
        charge=charge_id,
        payment_intent=charge["payment_intent"],
        order_id=charge["order_id"],
        currency=str(charge["currency"]).lower(),
        amount=amount,
        status="pending" if pending else "succeeded",
        settles_at=time.time() + settlement.pending_s if pending else None,
        settles_to=settles_to,
        failure_reason=settlement.fails_with,  # shown once the refund has failed
        **values,
    )
    charges.add_refund(db, charge_id, amount)
    row = REFUNDS.get_row(db, refund["id"])
    assert row is not None
    return Outcome(200, render_refund(db, row, expand))


def create_params(
    params: Params,
) -> tuple[str | None, str | None, int | None, dict[str, Any], tuple[str, ...]]:
    """Validate ``POST /v1/refunds``'s parameters: intent, charge, amount, values, expand.

    Raises the 400 naming the first parameter at fault (nothing is stored for it).
    """
    intent_id = params.string("payment_intent", max_length=300)
    charge_id = params.string("charge", max_length=300)
    amount = params.integer("amount", minimum=1, maximum=MAX_AMOUNT)
    reason = params.enum("reason", REASONS)
    metadata = params.metadata()
    expand = params.expand(EXPANDABLE)
    params.done()
    if (intent_id is None) == (charge_id is None):
        message = (
            "One of the following params should be provided for this request: payment_intent "
            "or charge."
        )
        raise invalid_request(message, "parameter_missing", "payment_intent")
    values = {"reason": reason, "metadata": json.dumps(metadata)}
    return intent_id, charge_id, amount, values, expand


@router.post("/refunds")
async def create_refund(
    request: Request,
    idem: IdempotencyDep,
    key: IdempotencyKey,
    ledger: LedgerDep,
    faults: FaultsDep,
) -> Response:
    """Refund a ``payment_intent`` or a ``charge``: ``amount`` (default: all that remains)."""
    params = Params(await read_form(request))
    intent_id, charge_id, amount, values, expand = create_params(params)
    # The lock is the intent's, so a refund never overlaps a capture or cancel of it.
    target = intent_id
    if charge_id is not None and (row := charges.get_charge_row(ledger.db, charge_id)):
        target = str(row["payment_intent"])
    settlement = faults.refund_settlement(SERVICE, key, request.url.path)
    effect = partial(_refund, intent_id, charge_id, amount, values, expand, settlement)
    return await idem.run(
        request,
        SERVICE,
        effect,
        intent_lock(target) if target else None,
        key=key,
        refusals=STRIPE_REFUSALS,
        params=params.raw,
    )


@router.get("/refunds/{refund}")
async def retrieve_refund(refund: str, request: Request, ledger: LedgerDep) -> dict[str, Any]:
    """Retrieve a refund (404 ``resource_missing`` when unknown)."""
    params = Params(read_query(request))
    expand = params.expand(EXPANDABLE)
    params.done()
    settle_due(ledger.db)
    row = REFUNDS.get_row(ledger.db, refund)
    if row is None:
        raise resource_missing("refund", refund, "id")
    return render_refund(ledger.db, row, expand)


@router.get("/refunds")
async def list_refunds(request: Request, ledger: LedgerDep) -> dict[str, Any]:
    """List refunds, newest first: all, or those of one ``payment_intent`` or ``charge``.

    Lists are consistent (unlike search): a refund shows as soon as it was made.
    """
    params = Params(read_query(request))
    intent_id = params.string("payment_intent", max_length=300)
    charge_id = params.string("charge", max_length=300)
    listing = read_listing(params)
    params.strings("expand")  # accepted (data.charge and the like), not applied to list items
    params.done()
    settle_due(ledger.db)
    rows = REFUNDS.find_rows(ledger.db, payment_intent=intent_id, charge=charge_id)[::-1]
    data = [render_refund(ledger.db, row) for row in rows]
    return list_object("/v1/refunds", "refund", data, listing)
