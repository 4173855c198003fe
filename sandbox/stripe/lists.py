"""Stripe's collections: list objects (consistent) and search results (lagging)."""

from __future__ import annotations

from typing import Any

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def list_object(url: str, data: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """``{"object": "list", "data", "has_more", "url"}`` of the first ``limit`` objects.

    ``data`` comes newest first, as Stripe lists it.
    """
    return {
        "object": "list",
        "data": data[:limit],
        "has_more": len(data) > limit,
        "url": url,
    }


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
