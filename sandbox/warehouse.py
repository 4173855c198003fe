"""Sandbox warehouse: picklists that reserve stock, the stock levels, and order cancels.

Like a real warehouse, it de-duplicates picklists on the shop's order reference: an order has at
most one active (not cancelled) picklist, whatever idempotency key asks for another.

An order is taken back as a whole (``POST /warehouse/orders/{order_id}/cancel``): that closes it
for good and cancels its active picklist, if any, putting the stock back. From then on a picklist
for the order is refused (422 ``order_closed``), so a picklist request still on its way when the
order was cancelled (delayed on the network, queued in a server, a retry about to go out) picks
nothing when it arrives. Creating a picklist and cancelling its order both lock the order (see
``sandbox.idempotency``): they never overlap, and a cancel meets a picklist being made with
409 until that picklist exists or has failed.

Reserving and shipping are two facts: a picklist made with ``hold: true`` reserves its stock
but may not ship until the shop releases it (``POST /warehouse/picklists/{id}/release``, once
the money is captured), so goods never leave for an order that has not paid. The page, the
API and the auto-ship all refuse a held picklist (422 ``not_released``). A real warehouse can
still ship one by mistake: ``ignore_release`` on the ship request models that, so the shop's
handling of a parcel that left unpaid can be tested. A picklist made without ``hold`` (as
before the shop released picklists) can ship at once.

A picklist is shipped (``POST /warehouse/picklists/{id}/ship``, the page's button, or on its
own ``PROVIDERS_AUTO_SHIP_AFTER`` after it could first ship): in the same transaction the
warehouse writes a ``shipment.shipped`` event to its outbox (``sandbox.outbox``), which
``sandbox.webhooks`` delivers to the shop, at least once. A shipped picklist is never taken
back: an order cancel that meets it answers it shipped, with its shipment, so the shop learns
the parcel left even while its webhook receiver is down.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import RedirectResponse, Response

from sandbox import outbox
from sandbox.errors import ApiError, not_found
from sandbox.idempotency import (
    Idempotency,
    IdempotencyDep,
    IdempotencyKey,
    Outcome,
    resource_lock,
)
from sandbox.ledger import Ledger, LedgerDep, Resource, now_iso
from sandbox.limits import (
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
    ("order_id", "items", "ship_to", "status", "hold", "released", "created"),
    json_fields=frozenset({"items", "ship_to"}),
    bool_fields=frozenset({"hold"}),
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
    hold: bool = Field(
        False,
        description="Reserve the stock but ship only once released "
        "(POST /warehouse/picklists/{id}/release): the shop releases it when it has been paid.",
    )


SHIPMENT_SHIPPED = "shipment.shipped"
DEFAULT_CARRIER = "Sandbox Post"
TRACKING_PATTERN = r"^[A-Za-z0-9-]{4,40}$"
"""The order model's tracking numbers (``orders.domain.models.Shipment``): 4 to 40 letters,
digits, -."""


class ShipIn(BaseModel):
    """Body of ``POST /warehouse/picklists/{id}/ship``; what is left out is made up."""

    carrier: str | None = Field(
        None,
        min_length=1,
        max_length=50,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Default: Sandbox Post.",
    )
    tracking_number: str | None = Field(
        None, pattern=TRACKING_PATTERN, description="Default: a new SBX... number."
    )
    ignore_release: bool = Field(
        False,
        description="Ship a held picklist that was never released: a warehouse's mistake, "
        "which happens (for tests of what the shop does when a parcel leaves unpaid).",
    )


class StockIn(BaseModel):
    """Body of ``PUT /warehouse/stock/{sku}``."""

    on_hand: int = Field(ge=0, le=MAX_STOCK)


def _on_hand(db: sqlite3.Connection, sku: str) -> int | None:
    """Return the stock of ``sku``; None means unlimited (no stock row)."""
    row = db.execute("SELECT on_hand FROM stock WHERE sku = ?", (sku,)).fetchone()
    return None if row is None else int(row["on_hand"])


def _closed(db: sqlite3.Connection, order_id: str) -> str | None:
    """Return when the order was cancelled at the warehouse; None if it never was."""
    row = db.execute("SELECT closed FROM closed_orders WHERE order_id = ?", (order_id,)).fetchone()
    return None if row is None else str(row["closed"])


def closed_orders(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The orders cancelled at the warehouse, newest first: ``order_id`` and ``closed``."""
    rows = db.execute("SELECT order_id, closed FROM closed_orders ORDER BY rowid DESC")
    return [dict(row) for row in rows]


def _create_picklist(body: PicklistIn, db: sqlite3.Connection) -> Outcome:
    if (closed := _closed(db, body.order_id)) is not None:
        # A stored refusal, not a 409: the request may have set out before the cancel, and
        # nothing may be picked for the order now, however often it is sent again.
        message = (
            f"Order '{body.order_id}' was cancelled at the warehouse ({closed}); "
            "a cancelled order takes no new picklist."
        )
        raise ApiError(422, "order_closed", message, order_id=body.order_id)
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


def _take_back(db: sqlite3.Connection, row: sqlite3.Row) -> sqlite3.Row:
    """Cancel the picklist in ``row`` unless it is already; return its row as it is now."""
    if row["status"] in ("cancelled", "shipped"):  # a parcel that left is not taken back
        return row
    # Give back exactly what was taken; a sku made unlimited since then needs nothing.
    for sku, quantity in json.loads(row["reserved"]).items():
        db.execute("UPDATE stock SET on_hand = on_hand + ? WHERE sku = ?", (quantity, sku))
    db.execute("UPDATE picklists SET status = 'cancelled' WHERE id = ?", (row["id"],))
    cancelled = PICKLISTS.get_row(db, row["id"])
    assert cancelled is not None
    return cancelled


def _shipment(db: sqlite3.Connection, picklist_id: str) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT carrier, tracking_number, event_id, created FROM shipments WHERE picklist_id = ?",
        (picklist_id,),
    ).fetchone()
    return None if row is None else dict(row)


def _shipped(db: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    return {**PICKLISTS.render(row), "shipment": _shipment(db, row["id"])}


def ship(
    picklist_id: str, body: ShipIn | None, db: sqlite3.Connection, *, busy_check: bool = False
) -> Outcome:
    """Ship an open picklist and write its ``shipment.shipped`` event, in one transaction.

    Shipping a shipped picklist again changes nothing and answers it (422 ``already_shipped``
    if another carrier or number is asked for). A cancelled picklist or a closed order cannot
    ship (422), nor a held picklist not yet released (422 ``not_released``) unless the request
    says ``ignore_release``. ``busy_check``: refuse with 409 while a request holds the order
    (used where no idempotency claim took the order's lock first: the page and the auto-ship).
    """
    carrier = body.carrier if body else None
    tracking = body.tracking_number if body else None
    row = PICKLISTS.get_row(db, picklist_id)
    if row is None:
        raise not_found("picklist", picklist_id)
    order_id = row["order_id"]
    if row["status"] == "shipped":
        shipped = _shipment(db, picklist_id) or {}
        if (carrier and carrier != shipped.get("carrier")) or (
            tracking and tracking != shipped.get("tracking_number")
        ):
            message = (
                f"Picklist '{picklist_id}' already shipped with {shipped.get('carrier')} "
                f"{shipped.get('tracking_number')}; a parcel ships once."
            )
            raise ApiError(422, "already_shipped", message, picklist_id=picklist_id)
        return Outcome(200, _shipped(db, row))
    if row["status"] == "cancelled":
        message = f"Picklist '{picklist_id}' was cancelled; a cancelled picklist does not ship."
        raise ApiError(422, "picklist_cancelled", message, picklist_id=picklist_id)
    if (closed := _closed(db, order_id)) is not None:
        message = f"Order '{order_id}' was cancelled at the warehouse ({closed}); it does not ship."
        raise ApiError(422, "order_closed", message, order_id=order_id)
    if row["hold"] and row["released"] is None and not (body and body.ignore_release):
        message = (
            f"Picklist '{picklist_id}' is reserved but not released for shipping: order "
            f"'{order_id}' is not paid yet. The shop releases it once it has captured the money."
        )
        raise ApiError(422, "not_released", message, picklist_id=picklist_id)
    if busy_check and Idempotency._in_flight_on(db, resource_lock("order", order_id)):
        message = f"Another request on order '{order_id}' is still in progress; retry later."
        raise ApiError(409, "resource_in_use", message, "idempotency_error")
    carrier = carrier or DEFAULT_CARRIER
    tracking = tracking or f"SBX{secrets.token_hex(8).upper()}"
    db.execute("UPDATE picklists SET status = 'shipped' WHERE id = ?", (picklist_id,))
    data = {
        "order_id": order_id,
        "picklist_id": picklist_id,
        "carrier": carrier,
        "tracking_number": tracking,
    }
    event = outbox.record_event(db, SHIPMENT_SHIPPED, order_id, data)
    db.execute(
        "INSERT INTO shipments (picklist_id, order_id, carrier, tracking_number, event_id, created)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (picklist_id, order_id, carrier, tracking, event["id"], now_iso()),
    )
    shipped_row = PICKLISTS.get_row(db, picklist_id)
    assert shipped_row is not None
    return Outcome(200, _shipped(db, shipped_row))


def ship_now(ledger: Ledger, picklist_id: str, body: ShipIn | None = None) -> dict[str, Any]:
    """Ship a picklist outside any idempotency key (the page, the auto-ship); raises ``ApiError``.

    Safe to repeat: a shipped picklist is answered as it is.
    """
    with ledger.transaction() as db:
        return ship(picklist_id, body, db, busy_check=True).body


def ship_due(ledger: Ledger, after_s: float, limit: int = 50) -> int:
    """Ship the picklists that could ship ``after_s`` seconds ago; return how many shipped.

    A held picklist can ship from its release on, any other from when it was made; a held
    picklist never released is never shipped here.
    """
    cutoff = datetime.fromtimestamp(time.time() - after_s, UTC).isoformat(timespec="milliseconds")
    rows = ledger.db.execute(
        "SELECT id FROM picklists WHERE status = 'open'"
        " AND (CASE WHEN hold THEN released ELSE created END) <= ? ORDER BY rowid LIMIT ?",
        (cutoff, limit),
    ).fetchall()
    shipped = 0
    for row in rows:
        try:
            ship_now(ledger, row["id"])
        except ApiError:
            continue  # the order is busy (a cancel in flight) or closed: not now
        shipped += 1
    return shipped


def _release(picklist_id: str, db: sqlite3.Connection) -> Outcome:
    """Release a picklist for shipping; releasing twice, or a shipped one, changes nothing."""
    row = PICKLISTS.get_row(db, picklist_id)
    if row is None:
        raise not_found("picklist", picklist_id)
    if row["status"] == "cancelled":
        message = f"Picklist '{picklist_id}' was cancelled; a cancelled picklist does not ship."
        raise ApiError(422, "picklist_cancelled", message, picklist_id=picklist_id)
    if row["released"] is None:
        db.execute("UPDATE picklists SET released = ? WHERE id = ?", (now_iso(), picklist_id))
    released = PICKLISTS.get_row(db, picklist_id)
    assert released is not None
    return Outcome(200, _answered(db, released))


def _cancel(picklist_id: str, db: sqlite3.Connection) -> Outcome:
    row = PICKLISTS.get_row(db, picklist_id)
    if row is None:
        raise not_found("picklist", picklist_id)
    return Outcome(200, PICKLISTS.render(_take_back(db, row)))


def _cancel_order(order_id: str, db: sqlite3.Connection) -> Outcome:
    db.execute(
        "INSERT INTO closed_orders (order_id, closed) VALUES (?, ?)"
        " ON CONFLICT (order_id) DO NOTHING",
        (order_id, now_iso()),
    )
    rows = db.execute(
        "SELECT * FROM picklists WHERE order_id = ? ORDER BY rowid", (order_id,)
    ).fetchall()
    # At most one is active, and it is the newest (a picklist is made only when none is
    # active); the newest is the one to answer with, whether cancelled now or before.
    taken = [_take_back(db, row) for row in rows]
    body = {
        "object": "order",
        "order_id": order_id,
        "status": "closed",
        "closed": _closed(db, order_id),
        "picklist": _answered(db, taken[-1]) if taken else None,
    }
    return Outcome(200, body)


def _answered(db: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    """A picklist as an order cancel answers it: a shipped one with its shipment."""
    return _shipped(db, row) if row["status"] == "shipped" else PICKLISTS.render(row)


@router.post("/picklists")
async def create_picklist(
    body: PicklistIn, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Create a picklist, reserving stock for every sku that has a stock level.

    An order that already has an active picklist gets that one back (200), not a second. A sku
    short of stock is refused with 422 ``out_of_stock``, and an order cancelled at the
    warehouse (``POST /warehouse/orders/{order_id}/cancel``) with 422 ``order_closed``; both
    refusals are stored under the key. Refused with 409 while another request on the order is
    in progress: retry.
    """
    lock = resource_lock("order", body.order_id)
    return await idem.run(request, SERVICE, partial(_create_picklist, body), lock, key=key)


@router.post("/picklists/{picklist_id}/cancel")
async def cancel_picklist(
    picklist_id: PathId, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Cancel a picklist and put its stock back; cancelling twice changes nothing.

    The order stays open: a picklist request for it still on its way makes a new picklist when
    it arrives. To take an order back for good, cancel the order
    (``POST /warehouse/orders/{order_id}/cancel``).
    """
    return await idem.run(request, SERVICE, partial(_cancel, picklist_id), key=key)


@router.post("/picklists/{picklist_id}/release")
async def release_picklist(
    picklist_id: PathId,
    request: Request,
    idem: IdempotencyDep,
    key: IdempotencyKey,
    ledger: LedgerDep,
) -> Response:
    """Release a held picklist for shipping: the shop has been paid for it.

    Answers the picklist (``released`` set; a shipped one with its ``shipment``). Releasing
    again changes nothing; a cancelled picklist is refused with 422 ``picklist_cancelled``.
    Refused with 409 while another request on the order is in progress: retry.
    """
    row = PICKLISTS.get_row(ledger.db, picklist_id)
    lock = resource_lock("order", row["order_id"]) if row is not None else None
    return await idem.run(request, SERVICE, partial(_release, picklist_id), lock, key=key)


@router.post("/picklists/{picklist_id}/ship")
async def ship_picklist(
    picklist_id: PathId,
    request: Request,
    idem: IdempotencyDep,
    key: IdempotencyKey,
    ledger: LedgerDep,
    body: ShipIn | None = None,
) -> Response:
    """Ship a picklist: it becomes ``shipped`` and a ``shipment.shipped`` webhook is queued.

    ``carrier`` and ``tracking_number`` are optional (made up when left out). The event is
    written in the same transaction as the shipment and delivered at least once to the
    configured webhook URL (``GET /admin/webhooks`` shows how it goes). A cancelled picklist,
    a closed order, or a held picklist not released (``not_released``) is refused with 422;
    shipping a shipped picklist again answers it and sends nothing new. Refused with 409 while
    another request on the order is in progress: retry.
    """
    row = PICKLISTS.get_row(ledger.db, picklist_id)
    lock = resource_lock("order", row["order_id"]) if row is not None else None
    return await idem.run(request, SERVICE, partial(ship, picklist_id, body), lock, key=key)


@router.post("/picklists/{picklist_id}/ship-now", include_in_schema=False)
async def ship_from_page(picklist_id: PathId, request: Request, ledger: LedgerDep) -> Response:
    """The page's Ship button: ship with a made-up carrier and number, then back to the page.

    A form cannot send an idempotency key; shipping is safe to repeat (a shipped picklist is
    answered as it is), and refused with 409 while another request holds the order.
    """
    ship_now(ledger, picklist_id)
    key = request.query_params.get("api_key")
    page = f"/{SERVICE}/" + (f"?{urlencode({'api_key': key})}" if key else "")
    return RedirectResponse(page, status_code=303)


@router.post("/orders/{order_id}/cancel")
async def cancel_order(
    order_id: PathId, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Cancel an order at the warehouse: take back its picklist and close the order for good.

    The order's active picklist, if any, is cancelled and its stock put back. The answer names
    the order (``status`` ``closed``, and since when) and its picklist, ``null`` if none was
    ever made; a picklist that already shipped stays ``shipped`` and comes with its
    ``shipment`` (carrier, tracking number): the parcel left, nothing was taken back. From then
    on a picklist for the order is refused with 422 ``order_closed``, so a picklist request
    still on its way (sent before the cancel, arriving after it) picks nothing. Refused with 409
    while a picklist for the order is being made: retry, and the cancel takes back what it
    made. Cancelling twice changes nothing.
    """
    lock = resource_lock("order", order_id)
    return await idem.run(request, SERVICE, partial(_cancel_order, order_id), lock, key=key)


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
