"""SQLite storage for every effect the sandbox providers perform.

One connection serves the whole app. Every handler is ``async def`` and runs on the event-loop
thread, and transactions are synchronous context managers, so no ``await`` can ever happen inside
one: transactions are naturally serialized without any extra locking.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

SCHEMA = """
-- Columns added since ledgers were first kept on disk are in ADDED_COLUMNS, not here. A table
-- added since needs nothing more: IF NOT EXISTS creates it in an older ledger when it opens.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status_code INTEGER, body TEXT, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
CREATE TABLE IF NOT EXISTS payment_intents (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
    payment_method TEXT NOT NULL, status TEXT NOT NULL, decline_code TEXT, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY, payment_intent TEXT NOT NULL UNIQUE REFERENCES payment_intents (id),
    order_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
    status TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY, charge TEXT NOT NULL REFERENCES charges (id), order_id TEXT NOT NULL,
    amount INTEGER NOT NULL, reason TEXT, status TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL, "to" TEXT NOT NULL, template TEXT NOT NULL,
    subject TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL
);
-- reserved: {sku: quantity} actually taken from stock, so a cancel gives back exactly that.
CREATE TABLE IF NOT EXISTS picklists (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL, items TEXT NOT NULL, ship_to TEXT NOT NULL,
    reserved TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL
);
-- Listings, the charge lookup and the ledger summary all filter by order.
CREATE INDEX IF NOT EXISTS payment_intents_order ON payment_intents (order_id);
CREATE INDEX IF NOT EXISTS charges_order ON charges (order_id);
CREATE INDEX IF NOT EXISTS refunds_order ON refunds (order_id);
CREATE INDEX IF NOT EXISTS messages_order ON messages (order_id);
CREATE INDEX IF NOT EXISTS picklists_order ON picklists (order_id);
-- Charges a declined confirm made, as Stripe makes them ('failed', nothing authorized): kept
-- apart from charges, whose one row per intent is the one approved confirm.
CREATE TABLE IF NOT EXISTS failed_charges (
    id TEXT PRIMARY KEY, payment_intent TEXT NOT NULL REFERENCES payment_intents (id),
    order_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
    payment_method TEXT NOT NULL, failure_code TEXT NOT NULL, decline_code TEXT NOT NULL,
    failure_message TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_charges_intent ON failed_charges (payment_intent);
-- What the gateway's search sees of each payment intent: a snapshot per write, visible to
-- search only once it is older than the search lag (Stripe's search lags its writes).
CREATE TABLE IF NOT EXISTS payment_intent_search (
    intent TEXT NOT NULL, body TEXT NOT NULL, written_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS payment_intent_search_intent ON payment_intent_search (intent);
-- A sku without a row here has unlimited stock.
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL CHECK (on_hand >= 0)
);
-- Orders cancelled at the warehouse (POST /warehouse/orders/{id}/cancel): closed for good, so
-- a picklist request still on its way when the order was cancelled is refused when it arrives.
CREATE TABLE IF NOT EXISTS closed_orders (
    order_id TEXT PRIMARY KEY, closed TEXT NOT NULL
);
-- A picklist the warehouse shipped, and the event that reports it (providers.outbox): both
-- written in the transaction that marks the picklist shipped.
CREATE TABLE IF NOT EXISTS shipments (
    picklist_id TEXT PRIMARY KEY REFERENCES picklists (id), order_id TEXT NOT NULL,
    carrier TEXT NOT NULL, tracking_number TEXT NOT NULL, event_id TEXT NOT NULL,
    created TEXT NOT NULL
);
-- The webhook outbox: each event's exact body, and how its delivery goes (providers.webhooks).
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, order_id TEXT NOT NULL, body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_status TEXT,
    last_error TEXT, last_attempt TEXT, delivered TEXT, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_events_order ON webhook_events (order_id);
-- Chargebacks on captured charges (providers.stripe.disputes).
CREATE TABLE IF NOT EXISTS disputes (
    id TEXT PRIMARY KEY, charge TEXT NOT NULL REFERENCES charges (id), payment_intent TEXT,
    order_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
    reason TEXT NOT NULL, status TEXT NOT NULL, closed_at INTEGER, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS disputes_charge ON disputes (charge);
-- The gateway's Stripe events (providers.stripe.events): the same shape as webhook_events.
CREATE TABLE IF NOT EXISTS stripe_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, order_id TEXT NOT NULL, body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_status TEXT,
    last_error TEXT, last_attempt TEXT, delivered TEXT, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stripe_events_due ON stripe_events (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS stripe_events_order ON stripe_events (order_id);
"""


@dataclass(frozen=True)
class AddedColumn:
    """A column added after ledgers were already on disk, so it is added to old ones on open.

    ``backfill`` fills it in for the rows written before it existed: one SQL statement, or
    several run in order.
    """

    table: str
    column: str
    definition: str
    backfill: str | tuple[str, ...] = ""

    def backfills(self) -> tuple[str, ...]:
        """The backfill statements, in order."""
        return (self.backfill,) if isinstance(self.backfill, str) else self.backfill


# The only place these columns are declared: new and old ledgers get them the same way.
ADDED_COLUMNS = (
    # The email's Message-ID header, as sent through Resend's API (providers.resend): copies of
    # one email share it, so a mail client shows them as one.
    AddedColumn("messages", "message_id", "TEXT"),
    # The resource an in-flight claim locks (an intent, an order): see providers.idempotency.
    AddedColumn("idempotency_keys", "resource", "TEXT"),
    # The Request-Id of the request whose answer is stored: a replay names it (Original-Request).
    AddedColumn("idempotency_keys", "request_id", "TEXT"),
    AddedColumn(
        "payment_intents",
        "charge",
        "TEXT REFERENCES charges (id)",
        "UPDATE payment_intents SET charge ="
        " (SELECT id FROM charges WHERE charges.payment_intent = payment_intents.id)",
    ),
    # Since the gateway speaks Stripe's API (providers.stripe). Intents from before were all
    # captured at once; a declined one ('failed', which Stripe has not) waits for a new
    # payment method, the decline in its last_payment_error.
    AddedColumn("payment_intents", "capture_method", "TEXT NOT NULL DEFAULT 'automatic'"),
    AddedColumn(
        "payment_intents",
        "metadata",
        "TEXT NOT NULL DEFAULT '{}'",
        "UPDATE payment_intents SET metadata = json_object('order_id', order_id)",
    ),
    AddedColumn("payment_intents", "description", "TEXT"),
    AddedColumn("payment_intents", "canceled_at", "INTEGER"),
    AddedColumn("payment_intents", "cancellation_reason", "TEXT"),
    AddedColumn(
        "payment_intents",
        "last_payment_error",
        "TEXT",
        "UPDATE payment_intents SET status = 'requires_payment_method', last_payment_error ="
        " json_object('type', 'card_error', 'code', CASE decline_code WHEN 'expired_card'"
        " THEN 'expired_card' ELSE 'card_declined' END, 'decline_code', decline_code,"
        " 'message', 'Your card was declined.', 'payment_method', payment_method)"
        " WHERE status = 'failed'",
    ),
    # Charges from before were captured at once (1) for their whole amount; a full refund
    # marked them 'refunded', which Stripe shows as refunded = true on a 'succeeded' charge.
    AddedColumn("charges", "captured", "INTEGER NOT NULL DEFAULT 1"),
    AddedColumn(
        "charges",
        "amount_captured",
        "INTEGER NOT NULL DEFAULT 0",
        "UPDATE charges SET amount_captured = amount",
    ),
    AddedColumn(
        "charges",
        "amount_refunded",
        "INTEGER NOT NULL DEFAULT 0",
        (
            "UPDATE charges SET amount_refunded ="
            " (SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE refunds.charge = charges.id)",
            "UPDATE charges SET status = 'succeeded' WHERE status = 'refunded'",
        ),
    ),
    # When an authorization (a charge not captured) was released by cancelling its intent.
    AddedColumn("charges", "released_at", "INTEGER"),
    AddedColumn(
        "charges",
        "payment_method",
        "TEXT",
        "UPDATE charges SET payment_method ="
        " (SELECT payment_method FROM payment_intents WHERE payment_intents.id = payment_intent)",
    ),
    AddedColumn(
        "refunds",
        "payment_intent",
        "TEXT",
        "UPDATE refunds SET payment_intent ="
        " (SELECT payment_intent FROM charges WHERE charges.id = refunds.charge)",
    ),
    AddedColumn(
        "refunds",
        "currency",
        "TEXT",
        "UPDATE refunds SET currency ="
        " (SELECT currency FROM charges WHERE charges.id = refunds.charge)",
    ),
    AddedColumn("refunds", "metadata", "TEXT NOT NULL DEFAULT '{}'"),
    # Picklists held until the shop releases them for shipping (it has captured the money);
    # those from before were shippable at once, as a picklist made without ``hold`` still is.
    AddedColumn("picklists", "hold", "INTEGER NOT NULL DEFAULT 0"),
    AddedColumn("picklists", "released", "TEXT"),
    # Until when an authorization can be captured (unix seconds; Stripe's capture_before):
    # those from before got the 7 days every authorization had.
    AddedColumn(
        "charges",
        "capture_before",
        "INTEGER",
        "UPDATE charges SET capture_before = CAST(strftime('%s', created) AS INTEGER) + 604800",
    ),
    # A refund can be pending, then succeed or fail (failure_reason) when it settles.
    AddedColumn("refunds", "failure_reason", "TEXT"),
    AddedColumn("refunds", "settles_at", "REAL"),
    AddedColumn("refunds", "settles_to", "TEXT"),
    # A 3-D Secure card's intent waits in requires_action for the customer to authenticate on
    # this page (its next_action), then goes back where Stripe would send them (return_url).
    AddedColumn("payment_intents", "next_action_url", "TEXT"),
    AddedColumn("payment_intents", "return_url", "TEXT"),
    # Stripe's automatic_payment_methods of an intent (JSON), which then needs a return_url to
    # be confirmed; those from before were cards only, as the sandbox then made every intent.
    AddedColumn("payment_intents", "automatic_payment_methods", "TEXT"),
    # A chargeback was opened on the charge (providers.stripe.disputes).
    AddedColumn("charges", "disputed", "INTEGER NOT NULL DEFAULT 0"),
)
# Indexes on added columns, created once the columns exist. Only in-flight claims lock a
# resource, so only they are indexed.
ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS idempotency_keys_resource ON idempotency_keys (resource)"
    " WHERE state = 'in_flight'",
    # What the gateway's clock looks for: authorizations still held, refunds still pending.
    "CREATE INDEX IF NOT EXISTS charges_held ON charges (capture_before)"
    " WHERE captured = 0 AND released_at IS NULL",
    "CREATE INDEX IF NOT EXISTS refunds_pending ON refunds (settles_at) WHERE status = 'pending'",
)


class Ledger:
    """The single SQLite connection plus explicit, synchronous transactions."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: sqlite3 must not open transactions behind our back.
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL survives a process kill; only an OS crash may lose the last commits.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._add_columns()

    def _add_columns(self) -> None:
        """Give a ledger written by an older version the columns it lacks, in one transaction."""
        with self.transaction() as db:
            for added in ADDED_COLUMNS:
                present = {row["name"] for row in db.execute(f"PRAGMA table_info({added.table})")}
                if added.column not in present:
                    db.execute(
                        f'ALTER TABLE {added.table} ADD COLUMN "{added.column}" {added.definition}'
                    )
                    for statement in added.backfills():
                        if statement:
                            db.execute(statement)
            for index in ADDED_INDEXES:
                db.execute(index)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one ``BEGIN IMMEDIATE`` transaction; roll back if it raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self.db.close()


@dataclass(frozen=True)
class Resource:
    """One kind of API object (charge, refund, ...) and the table that stores it.

    Table and column names come from code, never from requests, so formatting them into SQL is
    safe; column names are quoted because some (``to``) are SQL keywords.
    """

    table: str
    object: str
    id_prefix: str
    fields: tuple[str, ...]
    json_fields: frozenset[str] = frozenset()
    bool_fields: frozenset[str] = frozenset()
    """Stored as SQLite's 0 and 1, rendered as ``false`` and ``true``."""

    def render(self, row: sqlite3.Row) -> dict[str, Any]:
        """Return the API object for a row: ``id``, ``object``, then ``fields``."""
        body = {field: row[field] for field in self.fields}
        body.update({field: json.loads(body[field]) for field in self.json_fields})
        body.update({field: bool(body[field]) for field in self.bool_fields})
        return {"id": row["id"], "object": self.object, **body}

    def get_row(self, db: sqlite3.Connection, row_id: str) -> sqlite3.Row | None:
        """Return the raw row with this ``id``, if any."""
        sql = f"SELECT * FROM {self.table} WHERE id = ?"
        row: sqlite3.Row | None = db.execute(sql, (row_id,)).fetchone()
        return row

    def find(self, db: sqlite3.Connection, **filters: str | None) -> list[dict[str, Any]]:
        """Return the objects, oldest first, equal to every filter that is not None."""
        return [self.render(row) for row in self.find_rows(db, **filters)]

    def find_rows(self, db: sqlite3.Connection, **filters: str | None) -> list[sqlite3.Row]:
        """Return the raw rows, oldest first, equal to every filter that is not None."""
        used = {column: value for column, value in filters.items() if value is not None}
        where = " AND ".join(f'"{column}" = ?' for column in used) or "1"
        sql = f"SELECT * FROM {self.table} WHERE {where} ORDER BY rowid"
        return list(db.execute(sql, tuple(used.values())))

    def insert(self, db: sqlite3.Connection, **values: Any) -> dict[str, Any]:
        """Insert a new row (fresh ``id``, ``created`` now) and return its API object."""
        values = {"id": new_id(self.id_prefix), "created": now_iso(), **values}
        values.update({field: json.dumps(values[field]) for field in self.json_fields})
        columns = ", ".join(f'"{column}"' for column in values)
        marks = ", ".join("?" for _ in values)
        db.execute(f"INSERT INTO {self.table} ({columns}) VALUES ({marks})", tuple(values.values()))
        row = self.get_row(db, values["id"])
        assert row is not None
        return self.render(row)


@contextmanager
def atomically(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in the transaction ``db`` is in, or in one of its own."""
    if db.in_transaction:
        yield db
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def new_id(prefix: str) -> str:
    """Return a fresh Stripe-style identifier such as ``pi_3f2a...``."""
    return f"{prefix}_{secrets.token_hex(12)}"


def now_iso() -> str:
    """Return the current UTC time as an ISO 8601 string."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


async def get_ledger(request: Request) -> Ledger:
    """FastAPI dependency: the app's ``Ledger``."""
    ledger: Ledger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


def to_unix(iso: str) -> int:
    """Return the unix time (whole seconds) of a ``now_iso`` timestamp, as Stripe's ``created``."""
    return int(datetime.fromisoformat(iso).timestamp())
