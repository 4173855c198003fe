"""ASGI middleware that refuses request bodies over ``MAX_BODY_BYTES`` with 413."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.errors import ApiError, styled_response
from sandbox.limits import MAX_BODY_BYTES


class BodySizeLimit:
    """ASGI middleware: answer 413 to a body over ``max_bytes``, declared or streamed.

    The body is read (at most ``max_bytes``) before the app runs, so no handler ever parses
    more than that; the app then receives it as one message.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body read, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before it finished sending
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = (
            f"The request body is larger than {self.max_bytes:,} bytes; "
            "no request to these services needs that much."
        )
        error = ApiError(413, "request_too_large", message)
        # In the words of the API the path belongs to (Stripe's under /v1), once the app is known.
        response = styled_response(Request(scope), error) if "app" in scope else error.response()
        await response(scope, receive, send)
