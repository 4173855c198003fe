"""The one error shape every endpoint answers with: ``{"error": {type, code, message, ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


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


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors())
    problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in errors)
    message = f"Invalid request: {problems}"
    return ApiError(422, "validation_error", message, errors=errors).response()


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
    return ApiError(exc.status_code, code, str(exc.detail)).response()


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    return ApiError(500, "internal_error", f"Internal error: {exc!r}", "api_error").response()


def install_error_handlers(app: FastAPI) -> None:
    """Make FastAPI's own errors (validation, 404, crashes) use the shared error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
