"""Stripe's collections: list objects (consistent) and search results (lagging).

A list is read newest first, a page at a time: ``limit`` (1 to 100, 10 by default) objects,
``has_more`` when there are others after them, and a cursor to go on from, the id of an object
on the page: ``starting_after`` (the next page, as the official library's auto-paging does) or
``ending_before`` (the page before). The list of payment intents also takes ``created``, a unix
time or a range (``gt``, ``gte``, ``lt``, ``lte``), as all of Stripe's lists do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sandbox.stripe.errors import invalid_request, resource_missing
from sandbox.stripe.form import MAX_UNIX_TIME, Params

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
CURSORS = ("starting_after", "ending_before")


class Listing(NamedTuple):
    """Which page of a list was asked for."""

    limit: int = DEFAULT_LIMIT
    starting_after: str | None = None
    ending_before: str | None = None


def read_listing(params: Params) -> Listing:
    """Read ``limit`` and the cursors; both cursors at once is a 400, as on Stripe."""
    limit = params.integer("limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    after, before = (params.string(name, max_length=300) for name in CURSORS)
    if after is not None and before is not None:
        message = f"You may only specify one of these parameters: {', '.join(CURSORS)}."
        raise invalid_request(message, "parameter_invalid", CURSORS[1])
    return Listing(limit, after, before)


def list_object(
    url: str, kind: str, data: list[dict[str, Any]], listing: Listing
) -> dict[str, Any]:
    """``{"object": "list", "data", "has_more", "url"}``: the page of ``data`` ``listing`` asks.

    ``data`` is every ``kind`` object the list holds, newest first, as Stripe lists them. A
    cursor that names none of them is a 400 ``resource_missing``.
    """
    cursor = listing.starting_after or listing.ending_before
    at = next((i for i, item in enumerate(data) if item["id"] == cursor), None)
    if cursor is not None and at is None:
        param = "starting_after" if listing.starting_after else "ending_before"
        raise resource_missing(kind, cursor, param, status=400)
    if listing.ending_before is not None:
        assert at is not None
        before = data[:at]
        page, more = before[-listing.limit :], len(before) > listing.limit
    else:
        after = data if at is None else data[at + 1 :]
        page, more = after[: listing.limit], len(after) > listing.limit
    return {"object": "list", "data": page, "has_more": more, "url": url}


def created_range(params: Params) -> tuple[str, tuple[str, ...]]:
    """Stripe's ``created`` filter as SQL on a table's ``created`` (``ledger.now_iso`` text).

    ``created=T`` is the second T; ``created[gte]=T`` and the like bound it. Stripe's
    ``created`` is whole unix seconds, so a row made at T.5 s is ``created`` T.
    """
    bounds = params.integer_range("created", ("gt", "gte", "lt", "lte"))
    # A row's unix second is >= T exactly when its ISO text is >= T's (same format and zone):
    # each bound is the first second in (lower) or out (upper) of the range.
    firsts = {"gt": 1, "gte": 0, "lt": 0, "lte": 1}
    conditions: list[str] = []
    args: list[str] = []
    for op, seconds in bounds.items():
        first = seconds + firsts[op]
        if first > MAX_UNIX_TIME:  # past any time a row can have
            conditions.append("0" if op.startswith("g") else "1")
            continue
        conditions.append("created >= ?" if op.startswith("g") else "created < ?")
        args.append(datetime.fromtimestamp(first, UTC).isoformat(timespec="milliseconds"))
    return " AND ".join(conditions) or "1", tuple(args)


def search_result(url: str, data: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    """``{"object": "search_result", "data", "has_more", "next_page", "url"}`` of one page.

    ``next_page`` is the opaque token to pass as ``page`` for the next one (null on the last).
    """
    page = data[offset : offset + limit]
    more = len(data) > offset + limit
    return {
        "object": "search_result",
        "data": page,
        "has_more": more,
        "next_page": f"page_{offset + limit}" if more else None,
        "url": url,
    }
