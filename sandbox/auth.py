"""API-key check: ``Authorization: Bearer <key>``, or ``?api_key=<key>`` for browsers.

Basic auth with the key as user name works too, as Stripe takes it. Under the path prefixes of
an API whose real counterpart takes the key from the header only (Stripe's ``/v1``), the query
parameter is not taken.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Awaitable, Callable

from fastapi import Request

from sandbox.errors import ApiError


def _offered(request: Request, header_only: tuple[str, ...]) -> str:
    """The key the request offers, or ``""``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(token.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    if request.url.path.startswith(header_only):
        return ""
    return request.query_params.get("api_key", "")


def api_key_dependency(
    api_key: str, header_only: tuple[str, ...] = ()
) -> Callable[[Request], Awaitable[None]]:
    """Return a FastAPI dependency that rejects requests without the right API key (401).

    Under a path prefix in ``header_only`` the ``?api_key=`` query parameter is not taken.
    """

    async def require_api_key(request: Request) -> None:
        offered = _offered(request, header_only)
        # compare_digest: a sandbox, but no reason to leak the key through timing.
        if not secrets.compare_digest(offered.encode(), api_key.encode()):
            message = (
                "Invalid API key provided."
                if offered
                else "No API key provided: send 'Authorization: Bearer <key>' or '?api_key=<key>'."
            )
            raise ApiError(401, "unauthorized", message, "authentication_error")

    return require_api_key
