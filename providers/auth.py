"""API-key check: ``Authorization: Bearer <key>`` or ``?api_key=<key>`` (for browsers)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from fastapi import Request

from providers.errors import ApiError


def api_key_dependency(api_key: str) -> Callable[[Request], Awaitable[None]]:
    """Return a FastAPI dependency that rejects requests without the right API key (401)."""

    async def require_api_key(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        offered = token.strip() if scheme.lower() == "bearer" else ""
        offered = offered or request.query_params.get("api_key", "")
        # compare_digest: a sandbox, but no reason to leak the key through timing.
        if not secrets.compare_digest(offered.encode(), api_key.encode()):
            message = (
                "Invalid API key provided."
                if offered
                else "No API key provided: send 'Authorization: Bearer <key>' or '?api_key=<key>'."
            )
            raise ApiError(401, "unauthorized", message, "authentication_error")

    return require_api_key
