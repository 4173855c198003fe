"""Stripe's error shapes: ``{"error": {"type", "code", "message", "param", ...}}``.

``type`` is one of Stripe's (``invalid_request_error``, ``card_error``, ``idempotency_error``,
``api_error``); the HTTP status is Stripe's too, because the official library picks its
exception class from it: 400 and 404 ``InvalidRequestError`` (or ``IdempotencyError`` for
``idempotency_error``), 401 ``AuthenticationError``, 402 ``CardError``, 429 ``RateLimitError``
(Stripe's object-lock ``lock_timeout`` is a 429), anything else ``APIError``.

``STRIPE_REFUSALS`` words the shared idempotency layer's own answers this way, and
``restyle`` rewrites errors raised by shared code (the API-key guard, FastAPI's validation and
routing) for requests under ``/v1``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from sandbox.errors import ApiError
from sandbox.idempotency import Refusals

INVALID_REQUEST = "invalid_request_error"
DOCS = "https://stripe.com/docs/error-codes"


def stripe_error(
    status: int, error_type: str, code: str | None, message: str, **extra: Any
) -> ApiError:
    """An error in Stripe's shape; a ``code`` gets its ``doc_url`` as Stripe's do."""
    doc = {} if code is None else {"doc_url": f"{DOCS}/{code.replace('_', '-')}"}
    fields = {key: value for key, value in extra.items() if value is not None}
    return ApiError(status, code, message, error_type, **doc, **fields)


def invalid_request(
    message: str, code: str | None = None, param: str | None = None, status: int = 400
) -> ApiError:
    """A 400 ``invalid_request_error`` naming the parameter (bracket notation) at fault."""
    return stripe_error(status, INVALID_REQUEST, code, message, param=param)


def resource_missing(kind: str, resource_id: str, param: str, status: int = 404) -> ApiError:
    """``No such payment_intent: 'pi_x'``: 404 for an id in the path, 400 for one in a param."""
    message = f"No such {kind}: '{resource_id[:200]}'"
    return invalid_request(message, "resource_missing", param, status)


def unexpected_state(message: str, payment_intent: dict[str, Any]) -> ApiError:
    """400 ``payment_intent_unexpected_state``, the intent as it is in ``error.payment_intent``."""
    return stripe_error(
        400, INVALID_REQUEST, "payment_intent_unexpected_state", message,
        payment_intent=payment_intent,
    )  # fmt: skip


def card_error(
    code: str,
    decline_code: str,
    message: str,
    payment_intent: dict[str, Any],
    payment_method: dict[str, Any],
    charge: str,
) -> ApiError:
    """402 ``card_error``: the card was declined; the intent is in ``error.payment_intent``.

    ``charge`` is the failed charge the attempt made (no money moved); ``payment_method`` the
    PaymentMethod object that was declined.
    """
    return stripe_error(
        402, "card_error", code, message,
        charge=charge,
        decline_code=decline_code,
        payment_intent=payment_intent,
        payment_method=payment_method,
    )  # fmt: skip


def _key_in_use(key: str) -> ApiError:
    message = (
        "There is currently another in-progress request using this Idempotent Key (that "
        "probably means you submitted twice, and the other request is still going through): "
        f"{key}. Please try again later."
    )
    return stripe_error(409, "idempotency_error", "idempotency_key_in_use", message)


def _key_reused(key: str) -> ApiError:
    message = (
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request."
    )
    return stripe_error(400, "idempotency_error", None, message)


def _lock_timeout(_resource: str) -> ApiError:
    message = (
        "This object cannot be accessed right now because another API request or Stripe "
        "process is currently accessing it. If you see this error intermittently, retry the "
        "request. If you see this error frequently and are making multiple concurrent requests "
        "to a single object, make your requests serially or at a lower rate. See "
        "https://stripe.com/docs/rate-limits for more details."
    )
    return stripe_error(429, INVALID_REQUEST, "lock_timeout", message)


def _injected_fault(service: str) -> ApiError:
    message = f"Injected fault: {service} is unavailable; retry with the same key."
    return stripe_error(503, "api_error", "injected_fault", message)


def _injected_rejection(service: str) -> ApiError:
    message = f"Injected rejection: {service} refused this request as invalid (not stored)."
    return invalid_request(message, "injected_rejection")


def _injected_refusal(service: str) -> ApiError:
    message = (
        f"Injected refusal: {service} refused this request; the refusal is stored under its key."
    )
    return invalid_request(message, "injected_refusal")


def _missing_key() -> ApiError:
    message = (
        "This sandbox requires an 'Idempotency-Key' header on every POST (a unique string per "
        "effect, such as '<order id>:<step>'); Stripe's own libraries send one."
    )
    return invalid_request(message, "idempotency_key_missing")


def _invalid_key(key: str) -> ApiError:
    message = (
        f"Invalid Idempotency-Key: it must be 1 to 255 printable ASCII characters; this one has "
        f"{len(key)} characters."
    )
    return invalid_request(message, "idempotency_key_invalid")


STRIPE_REFUSALS = Refusals(
    key_in_use=_key_in_use,
    key_reused=_key_reused,
    resource_in_use=_lock_timeout,
    injected_fault=_injected_fault,
    injected_rejection=_injected_rejection,
    injected_refusal=_injected_refusal,
    missing_key=_missing_key,
    invalid_key=_invalid_key,
)
"""The idempotency layer's answers in Stripe's words: 409 ``idempotency_key_in_use``, 400
``idempotency_error`` for a key reused with other parameters, 429 ``lock_timeout`` for an
object another request holds."""

_STRIPE_TYPES = frozenset({INVALID_REQUEST, "card_error", "idempotency_error", "api_error"})


def _masked(key: str) -> str:
    return f"{key[:8]}{'*' * 12}{key[-4:]}" if len(key) > 12 else "*" * len(key)


def restyle(request: Request, error: ApiError) -> ApiError:
    """Word an error raised by shared code as Stripe would (for requests under ``/v1``).

    Errors already in Stripe's vocabulary pass unchanged.
    """
    if error.type in _STRIPE_TYPES and error.code not in ("validation_error", "not_found"):
        return error
    if error.status == 401:
        header = request.headers.get("authorization", "")
        offered = header.partition(" ")[2].strip()
        if header.lower().startswith("basic "):
            offered = "(basic auth)"
        if offered:
            message = f"Invalid API Key provided: {_masked(offered)}"
        else:
            message = (
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details."
            )
        return stripe_error(401, INVALID_REQUEST, None, message)
    if error.status == 404 or error.status == 405:
        message = (
            f"Unrecognized request URL ({request.method}: {request.url.path[:300]}). "
            "Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
        )
        return stripe_error(404, INVALID_REQUEST, None, message)
    if error.code == "validation_error":
        # A path id or header FastAPI refused: name the first as a parameter.
        loc = error.body["error"].get("errors", [{}])[0].get("loc", [])
        param = str(loc[-1]) if loc else None
        return invalid_request(f"Invalid {param or 'request'}.", "parameter_invalid", param)
    if error.status >= 500:
        return stripe_error(error.status, "api_error", error.code, error.message)
    return stripe_error(error.status, INVALID_REQUEST, error.code, error.message)
