"""The error shape every endpoint answers with: ``{"error": {type, code, message, ...}}``.

The JSON services use it as is. An API with an error vocabulary of its own (Stripe's, under
``/v1``) registers a *restyle* for its path prefix with ``install_error_handlers``: FastAPI's own
errors (validation, unknown routes, crashes) and errors raised by shared code (the API-key
guard) are then rewritten into its words before they are sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sandbox.limits import IDEMPOTENCY_KEY_HEADER, MAX_IDEMPOTENCY_KEY_LENGTH

_LISTED_PROBLEMS = 10
"""A validation error's message names at most this many problems; ``errors`` lists them all."""


class ApiError(Exception):
    """An error answer; raising it anywhere in a handler sends it to the client."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        error_type: str = "invalid_request",
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        head = {"type": error_type} | ({} if code is None else {"code": code})
        self.body: dict[str, Any] = {"error": {**head, "message": message, **extra}}
        self.headers: dict[str, str] = {}
        """Headers sent with the answer (Stripe's ``Stripe-Should-Retry``, for one)."""

    @property
    def type(self) -> str:
        """The error's ``type`` (``invalid_request``, ``api_error``, ...)."""
        error_type: str = self.body["error"]["type"]
        return error_type

    @property
    def code(self) -> str | None:
        """The error's ``code``, if it has one."""
        code: str | None = self.body["error"].get("code")
        return code

    def response(self) -> JSONResponse:
        """Return this error as a JSON response."""
        return JSONResponse(self.body, status_code=self.status, headers=self.headers or None)


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


Restyle = Callable[[Request, ApiError], ApiError]
"""Rewrites an error in the shared shape into one API's own words (see the module docstring)."""


def styled_response(request: Request, error: ApiError) -> JSONResponse:
    """``error`` as a response, restyled by the API whose path prefix the request is under.

    For code outside the exception handlers (middleware) that answers errors itself.
    """
    return _respond(request, error)


def _respond(request: Request, error: ApiError) -> JSONResponse:
    """Send ``error``, restyled by the API whose path prefix the request is under, if any."""
    restyles: Mapping[str, Restyle] = getattr(request.app.state, "error_restyles", {})
    for prefix, restyle in restyles.items():
        if request.url.path.startswith(prefix):
            return restyle(request, error).response()
    return error.response()


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _respond(request, exc)


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
        return _respond(request, invalid_idempotency_key(key) if key else missing_idempotency_key())
    problems = [f"{'.'.join(err['loc'])}: {err['msg']}" for err in errors]
    if len(problems) > _LISTED_PROBLEMS:
        more = len(problems) - _LISTED_PROBLEMS
        problems = [*problems[:_LISTED_PROBLEMS], f"and {more} more (see 'errors')"]
    message = f"Invalid request: {'; '.join(problems)}"
    return _respond(request, ApiError(422, "validation_error", message, errors=errors))


def _is_idempotency_key(loc: list[str]) -> bool:
    return loc[:1] == ["header"] and loc[1:2] == [IDEMPOTENCY_KEY_HEADER]


# Starlette's own HTTP errors, in words a caller can act on.
_HTTP_ERRORS = {
    400: ("invalid_body", "The request body could not be read: send JSON encoded as UTF-8."),
    404: ("not_found", None),
    405: ("method_not_allowed", None),
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code, message = _HTTP_ERRORS.get(exc.status_code, (f"http_{exc.status_code}", None))
    return _respond(request, ApiError(exc.status_code, code, message or str(exc.detail)))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    error = ApiError(500, "internal_error", f"Internal error: {exc!r}", "api_error")
    return _respond(request, error)


def install_error_handlers(app: FastAPI, restyles: Mapping[str, Restyle] | None = None) -> None:
    """Make FastAPI's own errors (validation, 404, crashes) use the shared error shape.

    ``restyles`` maps a path prefix (``/v1``) to the function that words errors under it.
    """
    app.state.error_restyles = dict(restyles or {})
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
