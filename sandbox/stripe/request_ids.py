"""Every answer carries a ``Request-Id: req_...`` header, as Stripe's do.

The id is also put in the request's state (``request.state.request_id``), so the idempotency
layer can keep it with the answer it stores and name it in a replay's ``Original-Request``.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def new_request_id() -> str:
    """A fresh request id such as ``req_3f2a9c01d4e5b6``."""
    return f"req_{secrets.token_hex(7)}"


class RequestIds:
    """ASGI middleware: add a fresh ``Request-Id`` to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the call on, adding the header to the start of its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id().encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"request-id", request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)
