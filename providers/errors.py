"""The one error shape every endpoint answers with: ``{"error": {type, code, message, ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from providers.limits import IDEMPOTENCY_KEY_HEADER, MAX_IDEMPOTENCY_KEY_LENGTH

_LISTED_PROBLEMS = 10
"""A validation error's message names at most this many problems; ``errors`` lists them all."""


class ApiError(Exception):
    """An error answer; raising it anywhere in a handler sends it to the client."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        error_type: str = "invalid_request",
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "error": {"type": error_type, "code": code, "message": message, **extra}
        }

    def response(self) -> JSONResponse:
        """Return this error as a JSON response."""
        return JSONResponse(self.body, status_code=self.status)


def not_found(kind: str, resource_id: str) -> ApiError:
    """Return the 404 for an unknown resource, worded like Stripe's."""
    return ApiError(404, "resource_missing", f"No such {kind}: '{resource_id}'")


def missing_idempotency_key() -> ApiError:
    """The 400 for a POST without an idempotency key."""
    message = (
        f"POST requests need an '{IDEMPOTENCY_KEY_HEADER}' header (a unique string per effect)."
    )
    return ApiError(400, "idempotency_key_missing", message)


def invalid_idempotency_key(key: str) -> ApiError:
    """The 400 for a key too long or not printable ASCII; the key itself is not echoed."""
    printable = key.isascii() and key.isprintable()
    message = (
        f"The '{IDEMPOTENCY_KEY_HEADER}' header must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} "
        f"printable ASCII characters; this one has {len(key)} characters"
        + ("" if printable else ", not all of them printable ASCII")
        + ". Use a unique string per effect, such as '<order id>:<step>'."
    )
    return ApiError(400, "idempotency_key_invalid", message)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field and what is wrong with it, or 400 for a bad idempotency key.

    The input is never echoed back: it may be large, or a card number sent by mistake.
    """
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(part) for part in err["loc"]], "msg": str(err["msg"]), "type": err["type"]}
        for err in exc.errors()
    ]
    if any(_is_idempotency_key(err["loc"]) for err in errors):
        key = request.headers.get(IDEMPOTENCY_KEY_HEADER, "").strip()
        return (invalid_idempotency_key(key) if key else missing_idempotency_key()).response()
    problems = [f"{'.'.join(err['loc'])}: {err['msg']}" for err in errors]
    if len(problems) > _LISTED_PROBLEMS:
        more = len(problems) - _LISTED_PROBLEMS
        problems = [*problems[:_LISTED_PROBLEMS], f"and {more} more (see 'errors')"]
    message = f"Invalid request: {'; '.join(problems)}"
    return ApiError(422, "validation_error", message, errors=errors).response()


def _is_idempotency_key(loc: list[str]) -> bool:
    return loc[:1] == ["header"] and loc[1:2] == [IDEMPOTENCY_KEY_HEADER]


# Starlette's own HTTP errors, in words a caller can act on.
_HTTP_ERRORS = {
    400: ("invalid_body", "The request body could not be read: send JSON encoded as UTF-8."),
    404: ("not_found", None),
    405: ("method_not_allowed", None),
}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code, message = _HTTP_ERRORS.get(exc.status_code, (f"http_{exc.status_code}", None))
    return ApiError(exc.status_code, code, message or str(exc.detail)).response()


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    return ApiError(500, "internal_error", f"Internal error: {exc!r}", "api_error").response()


def install_error_handlers(app: FastAPI) -> None:
    """Make FastAPI's own errors (validation, 404, crashes) use the shared error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
