"""Sandbox warehouse: picklists that reserve stock, and the stock levels themselves.

Like a real warehouse, it de-duplicates picklists on the shop's order reference: an order has at
most one active (not cancelled) picklist, whatever idempotency key asks for another.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from providers.errors import ApiError, not_found
from providers.idempotency import IdempotencyDep, IdempotencyKey, Outcome, resource_lock
from providers.ledger import LedgerDep, Resource
from providers.limits import (
    MAX_PICKLIST_LINES,
    MAX_QUANTITY,
    MAX_STOCK,
    Id,
    PathId,
    QueryId,
    ShortText,
)

SERVICE = "warehouse"
router = APIRouter(prefix="/warehouse", tags=[SERVICE])

PICKLISTS = Resource(
    "picklists",
    "picklist",
    "pl",
    ("order_id", "items", "ship_to", "status", "created"),
    json_fields=frozenset({"items", "ship_to"}),
)


class Item(BaseModel):
    """One line of a picklist."""

    sku: Id
    quantity: int = Field(gt=0, le=MAX_QUANTITY)


class Address(BaseModel):
    """Where the parcel goes."""

    name: ShortText
    line1: ShortText
    line2: ShortText | None = None
    city: ShortText
    postal_code: str = Field(max_length=32)
    country: str = Field(pattern=r"^[A-Za-z]{2}$", description="ISO 3166 alpha-2 code.")


class PicklistIn(BaseModel):
    """Body of ``POST /warehouse/picklists``."""

    order_id: Id
    items: list[Item] = Field(min_length=1, max_length=MAX_PICKLIST_LINES)
    ship_to: Address


class StockIn(BaseModel):
    """Body of ``PUT /warehouse/stock/{sku}``."""

    on_hand: int = Field(ge=0, le=MAX_STOCK)


def _on_hand(db: sqlite3.Connection, sku: str) -> int | None:
    """Return the stock of ``sku``; None means unlimited (no stock row)."""
    row = db.execute("SELECT on_hand FROM stock WHERE sku = ?", (sku,)).fetchone()
    return None if row is None else int(row["on_hand"])


def _create_picklist(body: PicklistIn, db: sqlite3.Connection) -> Outcome:
    active = db.execute(
        "SELECT * FROM picklists WHERE order_id = ? AND status != 'cancelled' ORDER BY rowid",
        (body.order_id,),
    ).fetchone()
    if active is not None:
        return Outcome(200, PICKLISTS.render(active))
    wanted = Counter[str]()
    for item in body.items:
        wanted[item.sku] += item.quantity
    reserved: dict[str, int] = {}
    for sku, quantity in wanted.items():
        on_hand = _on_hand(db, sku)
        if on_hand is None:
            continue
        if on_hand < quantity:
            message = f"Not enough stock for sku '{sku}': {quantity} wanted, {on_hand} on hand."
            raise ApiError(422, "out_of_stock", message, sku=sku)
        reserved[sku] = quantity
    # Check and decrement share this transaction, so of two orders racing for the last
    # unit exactly one gets it.
    for sku, quantity in reserved.items():
        db.execute("UPDATE stock SET on_hand = on_hand - ? WHERE sku = ?", (quantity, sku))
    picklist = PICKLISTS.insert(
        db, reserved=json.dumps(reserved), status="open", **body.model_dump(mode="json")
    )
    return Outcome(200, picklist)


def _cancel(picklist_id: str, db: sqlite3.Connection) -> Outcome:
    row = PICKLISTS.get_row(db, picklist_id)
    if row is None:
        raise not_found("picklist", picklist_id)
    if row["status"] != "cancelled":
        # Give back exactly what was taken; a sku made unlimited since then needs nothing.
        for sku, quantity in json.loads(row["reserved"]).items():
            db.execute("UPDATE stock SET on_hand = on_hand + ? WHERE sku = ?", (quantity, sku))
        db.execute("UPDATE picklists SET status = 'cancelled' WHERE id = ?", (picklist_id,))
        row = PICKLISTS.get_row(db, picklist_id)
        assert row is not None
    return Outcome(200, PICKLISTS.render(row))


@router.post("/picklists")
async def create_picklist(
    body: PicklistIn, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Create a picklist, reserving stock for every sku that has a stock level.

    An order that already has an active picklist gets that one back (200), not a second.
    """
    lock = resource_lock("order", body.order_id)
    return await idem.run(request, SERVICE, partial(_create_picklist, body), lock, key=key)


@router.post("/picklists/{picklist_id}/cancel")
async def cancel_picklist(
    picklist_id: PathId, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Cancel a picklist and put its stock back; cancelling twice changes nothing."""
    return await idem.run(request, SERVICE, partial(_cancel, picklist_id), key=key)


@router.get("/picklists")
async def list_picklists(ledger: LedgerDep, order_id: QueryId = None) -> dict[str, Any]:
    """List picklists, oldest first."""
    return {"data": PICKLISTS.find(ledger.db, order_id=order_id)}


@router.get("/stock")
async def list_stock(ledger: LedgerDep) -> dict[str, Any]:
    """List the skus with a stock level; any other sku is unlimited."""
    rows = ledger.db.execute("SELECT sku, on_hand FROM stock ORDER BY sku")
    return {"data": [dict(row) for row in rows]}


@router.put("/stock/{sku}")
async def set_stock(sku: PathId, body: StockIn, ledger: LedgerDep) -> dict[str, Any]:
    """Set the stock level of ``sku`` (PUT is idempotent, so no idempotency key)."""
    with ledger.transaction() as db:
        db.execute(
            "INSERT INTO stock (sku, on_hand) VALUES (?, ?)"
            " ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand",
            (sku, body.on_hand),
        )
    return {"sku": sku, "on_hand": body.on_hand}


@router.delete("/stock/{sku}")
async def delete_stock(sku: PathId, ledger: LedgerDep) -> dict[str, Any]:
    """Forget the stock level of ``sku``: it becomes unlimited again (``on_hand`` null)."""
    with ledger.transaction() as db:
        db.execute("DELETE FROM stock WHERE sku = ?", (sku,))
    return {"sku": sku, "on_hand": None}
