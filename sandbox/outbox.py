"""Webhook outboxes: events written in the transaction of the effect they report.

The warehouse's events are in ``webhook_events``; the gateway's Stripe events
(``sandbox.stripe.events``) in a table of the same shape, ``stripe_events``: every function
here takes the outbox's ``table``.

An event row holds the exact JSON body to send (every delivery of it sends the same bytes, so
the receiver sees the same event id and content each time) and how its delivery goes:
``pending`` until the receiver answers 2xx (``delivered``) or refuses it for good
(``failed``: a final 4xx, or no success within the give-up time). ``sandbox.webhooks``
delivers the pending ones; because they are rows in the ledger, a restart of the providers
resumes them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from sandbox.ledger import new_id, now_iso

WAREHOUSE = "webhook_events"
"""The warehouse's outbox."""
OUTBOXES = (WAREHOUSE, "stripe_events")
"""Every outbox table (names from code, never from requests: safe to format into SQL)."""

EVENT_COLUMNS = (
    "id",
    "type",
    "order_id",
    "status",
    "attempts",
    "last_status",
    "last_error",
    "last_attempt",
    "delivered",
    "created",
)


def record_event(
    db: sqlite3.Connection, event_type: str, order_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    """Write a pending event, due now, inside the caller's transaction; return its body."""
    event = {"id": new_id("evt"), "type": event_type, "created": int(time.time()), "data": data}
    db.execute(
        "INSERT INTO webhook_events (id, type, order_id, body, status, next_attempt_at, created)"
        " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        (
            event["id"],
            event_type,
            order_id,
            json.dumps(event, separators=(",", ":")),
            time.time(),
            now_iso(),
        ),
    )
    return event


def render(row: sqlite3.Row) -> dict[str, Any]:
    """An event as the admin API and the page show it: delivery state and the event itself."""
    shown = {column: row[column] for column in EVENT_COLUMNS}
    due = row["next_attempt_at"]
    shown["next_attempt"] = (
        None if row["status"] != "pending" else max(0.0, round(due - time.time(), 3))
    )
    shown["event"] = json.loads(row["body"])
    return shown


def list_events(
    db: sqlite3.Connection,
    status: str | None = None,
    order_id: str | None = None,
    table: str = WAREHOUSE,
) -> list[dict[str, Any]]:
    """Events, newest first, optionally only one status or one order's."""
    where, args = ["1"], []
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if order_id is not None:
        where.append("order_id = ?")
        args.append(order_id)
    assert table in OUTBOXES
    sql = f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY rowid DESC"
    return [render(row) for row in db.execute(sql, args)]


def due_events(
    db: sqlite3.Connection, limit: int, skip: set[str], table: str = WAREHOUSE
) -> list[sqlite3.Row]:
    """Pending events whose next attempt is due, oldest first, except those in ``skip``."""
    assert table in OUTBOXES
    rows = db.execute(
        f"SELECT * FROM {table} WHERE status = 'pending' AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, rowid LIMIT ?",
        (time.time(), limit + len(skip)),
    ).fetchall()
    return [row for row in rows if row["id"] not in skip][:limit]


def record_attempts(
    db: sqlite3.Connection,
    event_id: str,
    attempts: int,
    status: str,
    last_status: str,
    last_error: str | None,
    next_attempt_at: float | None = None,
    table: str = WAREHOUSE,
) -> None:
    """Note ``attempts`` more deliveries of one event and where it stands now."""
    assert table in OUTBOXES
    db.execute(
        f"UPDATE {table} SET attempts = attempts + ?, status = ?, last_status = ?,"
        " last_error = ?, last_attempt = ?, next_attempt_at = COALESCE(?, next_attempt_at),"
        " delivered = CASE WHEN ? = 'delivered' THEN ? ELSE delivered END"
        " WHERE id = ? AND status = 'pending'",
        (
            attempts,
            status,
            last_status,
            last_error,
            now_iso(),
            next_attempt_at,
            status,
            now_iso(),
            event_id,
        ),
    )


def send_again(db: sqlite3.Connection, event_id: str, table: str = WAREHOUSE) -> sqlite3.Row | None:
    """Make an event due now (an operator's resend, even of a delivered one); return its row."""
    assert table in OUTBOXES
    db.execute(
        f"UPDATE {table} SET status = 'pending', next_attempt_at = ? WHERE id = ?",
        (time.time(), event_id),
    )
    row: sqlite3.Row | None = db.execute(
        f"SELECT * FROM {table} WHERE id = ?", (event_id,)
    ).fetchone()
    return row
