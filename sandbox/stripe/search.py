"""Searching payment intents, with Stripe's query language and Stripe's lag.

Stripe documents search as eventually consistent: a new or changed object shows up in search
results only after a while (under a minute, usually), so search must not be used for
read-after-write. The sandbox does the same: every write to an intent stores a snapshot of it,
and search sees, of each intent, the newest snapshot older than the search lag (the ``payments``
service's ``search_lag_ms`` fault setting, else the process default). A new intent is
therefore missing, and a changed one shows its old status, until the lag has passed.

Query language (the subset supported): clauses joined by ``AND``, each ``field:'value'`` for
``status``, ``currency``, ``amount`` (or ``amount>100``, ``<``, ``>=``, ``<=``) and
``metadata['key']:'value'``; a leading ``-`` negates a clause.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from sandbox.stripe.errors import invalid_request

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?(?P<field>metadata\[(?P<q1>['"])(?P<key>[^'"\]]+)(?P=q1)\]|[a-z_]+)"""
    r"""\s*(?P<op>:|>=|<=|>|<)\s*"""
    r"""(?:(?P<q2>['"])(?P<quoted>[^'"]*)(?P=q2)|(?P<bare>-?[0-9]+))\s*"""
)
_FIELDS = ("status", "currency", "amount")

Match = Callable[[dict[str, Any]], bool]


def snapshot(db: sqlite3.Connection, intent: dict[str, Any]) -> None:
    """Record what search will see of ``intent`` once the lag has passed."""
    db.execute(
        "INSERT INTO payment_intent_search (intent, body, written_at) VALUES (?, ?, ?)",
        (intent["id"], json.dumps(intent), time.time()),
    )


def _invalid(query: str, why: str) -> Exception:
    return invalid_request(
        f"Invalid search query: {why} (query: {query[:200]!r}). Clauses look like "
        "metadata['order_id']:'order-1' or status:'succeeded', joined by AND.",
        "parameter_invalid_string",
        "query",
    )


def _clause(query: str, text: str) -> Match:
    match = _CLAUSE.fullmatch(text)
    if match is None:
        raise _invalid(query, f"cannot read {text.strip()[:100]!r}")
    field, op, key = match["field"], match["op"], match["key"]
    value = match["quoted"] if match["quoted"] is not None else match["bare"]
    negate = match["neg"] is not None
    if key is None and field not in _FIELDS:
        raise _invalid(query, f"unsupported field {field!r}")
    if op != ":" and field != "amount":
        raise _invalid(query, f"{op} only compares amounts")
    if field == "amount":
        if not re.fullmatch(r"-?[0-9]{1,20}", value):
            raise _invalid(query, "amount must be an integer")
        number = int(value)
        compare: dict[str, Callable[[int], bool]] = {
            ":": lambda amount: amount == number,
            ">": lambda amount: amount > number,
            "<": lambda amount: amount < number,
            ">=": lambda amount: amount >= number,
            "<=": lambda amount: amount <= number,
        }

        def test(intent: dict[str, Any]) -> bool:
            return compare[op](int(intent["amount"]))

    elif key is not None:

        def test(intent: dict[str, Any]) -> bool:
            return bool(intent["metadata"].get(key) == value)

    else:

        def test(intent: dict[str, Any]) -> bool:
            return bool(str(intent[field]).lower() == value.lower())

    return (lambda intent: not test(intent)) if negate else test


def parse(query: str) -> tuple[list[Match], str | None]:
    """Parse a query into its clauses' tests, and the ``order_id`` it pins, if any.

    A malformed or unsupported query is a 400 naming ``query``.
    """
    if not query.strip():
        raise _invalid(query, "empty")
    if re.search(r"\sOR\s", query):
        raise _invalid(query, "OR is not supported by this sandbox")
    parts = re.split(r"\s+AND\s+", query.strip())
    tests = [_clause(query, part) for part in parts]
    order_id = None
    for part in parts:
        match = _CLAUSE.fullmatch(part)
        if match and match["key"] == "order_id" and match["op"] == ":" and not match["neg"]:
            order_id = match["quoted"] if match["quoted"] is not None else match["bare"]
    return tests, order_id


def search(
    db: sqlite3.Connection, query: str, lag_s: float, live: Callable[[str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The intents matching ``query`` as search sees them ``lag_s`` late, newest first.

    ``live`` renders an intent written before snapshots were kept (it has none), which is long
    past any lag.
    """
    tests, order_id = parse(query)
    horizon = time.time() - lag_s
    where, args = ("order_id = ?", (order_id,)) if order_id is not None else ("1", ())
    sql = f"SELECT rowid, id FROM payment_intents WHERE {where} ORDER BY rowid DESC"
    found: list[dict[str, Any]] = []
    for _, intent_id in db.execute(sql, args).fetchall():
        latest = db.execute(
            "SELECT body FROM payment_intent_search WHERE intent = ? AND written_at <= ?"
            " ORDER BY rowid DESC LIMIT 1",
            (intent_id, horizon),
        ).fetchone()
        if latest is not None:
            seen: dict[str, Any] = json.loads(latest["body"])
        elif db.execute(
            "SELECT 1 FROM payment_intent_search WHERE intent = ? LIMIT 1", (intent_id,)
        ).fetchone():
            continue  # written too recently: not searchable yet
        else:
            seen = live(intent_id)
        if all(test(seen) for test in tests):
            found.append(seen)
    return found
