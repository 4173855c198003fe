"""The sandbox mail service as Resend's email API: ``POST /resend/emails``.

Mounted under ``/resend``, so the official ``resend`` library reaches it with its base URL
(``resend.api_url``) set to ``<providers>/resend``; every message lands in the mail ledger
(``sandbox.mail``), its page, faults and metrics. What it copies, from Resend's documentation:

- Send Email (resend.com/docs/api-reference/emails/send-email): a JSON body with ``from``,
  ``to`` (an address or up to 50), ``subject``, ``html`` and/or ``text``, ``headers``, ``tags``
  (name/value pairs); the answer is ``{"id": "<uuid>"}``.
- Idempotency keys (resend.com/docs/dashboard/emails/idempotency-keys): an optional
  ``Idempotency-Key`` header on ``POST /emails``, 1 to 256 characters; a request with a key
  already used "in the last 24 hours" gets the same response and no second email. The window
  is ``key_window_s`` here (``PROVIDERS_MAIL_KEY_WINDOW_S``, or ``PUT /admin/faults/mail``), so
  Brevo's 15 minutes or Nylas's hour can be played, and a test can use seconds.
- Errors (resend.com/docs/api-reference/errors): ``{"statusCode", "name", "message"}``;
  ``invalid_idempotency_key`` 400, ``validation_error``, ``missing_api_key`` 401,
  ``invalid_api_key`` 403, ``rate_limit_exceeded`` 429, ``application_error`` 500 (5xx: "an
  error with Resend servers"; the sandbox's injected outage is a 503), and the two
  409s of a key, ``invalid_idempotent_request`` (the key was used with another payload) and
  ``concurrent_idempotent_requests`` (its first request is still in progress), as the official
  libraries list them too (resend-node's ``RESEND_ERROR_CODES_BY_KEY``, resend-rs's
  ``ErrorKind``).
- Rate limit (resend.com/docs/api-reference/rate-limit; changelog "API Rate Limit"): 2 requests
  per second per team by default, across all its keys; the answers carry ``ratelimit-limit``,
  ``ratelimit-remaining``, ``ratelimit-reset`` (seconds) and, on the 429, ``retry-after``
  (seconds). Here the limit is ``rate_limit_per_s`` (``PROVIDERS_MAIL_RATE_LIMIT``; 0, the
  sandbox's default, is none), counted per whole second of the clock; a 429 stores nothing.

Not Resend: ``keyless`` (``PROVIDERS_MAIL_KEYLESS=1``) makes the service ignore the key, as
Amazon SES, SendGrid and Postmark take none: every request sends an email.
"""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sandbox.errors import ApiError
from sandbox.faults import FaultsDep
from sandbox.idempotency import IdempotencyDep, Outcome, Refusals
from sandbox.limits import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_EMAIL_LENGTH,
    MAX_MAIL_BODY_LENGTH,
    MAX_SUBJECT_LENGTH,
)
from sandbox.mail import MESSAGES, SERVICE

PREFIX = "/resend"
router = APIRouter(prefix=PREFIX, tags=[SERVICE])

MAX_RECIPIENTS = 50
MAX_KEY_LENGTH = 256
"""Resend's limit on an ``Idempotency-Key``."""
ORDER_TAG, TEMPLATE_TAG = "order_id", "template"
"""The tags the mail ledger files a message under (its order, its template)."""
MESSAGE_ID_HEADER = "Message-ID"

_STATUS_NAMES = {
    400: "validation_error",
    401: "missing_api_key",
    403: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    409: "concurrent_idempotent_requests",
    413: "validation_error",
    422: "validation_error",
    429: "rate_limit_exceeded",
}
"""Resend's error name for an error raised by shared code, by status (else application_error)."""
_CODE_NAMES = {"idempotency_key_invalid": "invalid_idempotency_key"}


class ResendApiError(ApiError):
    """An error in Resend's shape: ``{"statusCode", "name", "message"}``."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(status, name, message)
        self.body = {"statusCode": status, "name": name, "message": message}

    @property
    def type(self) -> str:
        """Resend's error ``name``."""
        return str(self.body["name"])

    @property
    def code(self) -> str | None:
        """Resend's error ``name`` (it has no separate code)."""
        return str(self.body["name"])


def restyle(request: Request, error: ApiError) -> ApiError:
    """Word an error raised by shared code as Resend would (requests under ``/resend``)."""
    if isinstance(error, ResendApiError):
        return error
    name = _CODE_NAMES.get(error.code or "") or _STATUS_NAMES.get(error.status)
    if error.status == 401 and request.headers.get("authorization"):
        return ResendApiError(403, "invalid_api_key", "API key is invalid")
    return ResendApiError(error.status, name or "application_error", error.message)


RESEND_REFUSALS = Refusals(
    key_in_use=lambda key: ResendApiError(
        409,
        "concurrent_idempotent_requests",
        "Same idempotency key used while original request is still in progress.",
    ),
    key_reused=lambda key: ResendApiError(
        409,
        "invalid_idempotent_request",
        "Same idempotency key used with a different request payload.",
    ),
    injected_fault=lambda service: ResendApiError(
        503, "service_unavailable", f"Injected fault: {service} is unavailable; retry."
    ),
    injected_rejection=lambda service: ResendApiError(
        422, "validation_error", f"Injected rejection: {service} refused this request."
    ),
    injected_refusal=lambda service: ResendApiError(
        422, "validation_error", f"Injected refusal: {service} refused this request (stored)."
    ),
    injected_server_error=lambda service: ResendApiError(
        500, "application_error", f"Injected server error: {service} failed after sending."
    ),
    invalid_key=lambda key: ResendApiError(
        400,
        "invalid_idempotency_key",
        f"Idempotency keys, if present, must have between 1 and {MAX_KEY_LENGTH} characters.",
    ),
)
"""How the idempotency layer's own answers read in Resend's words."""


class Tag(BaseModel):
    """A custom name/value pair on an email."""

    name: str = Field(max_length=256, pattern=r"^[A-Za-z0-9_-]+$")
    value: str = Field(max_length=256, pattern=r"^[A-Za-z0-9_-]*$")


Address = Annotated[str, Field(max_length=MAX_EMAIL_LENGTH + 200)]


class SendEmail(BaseModel):
    """The body of ``POST /emails``, as Resend's Send Email takes it."""

    model_config = ConfigDict(populate_by_name=True)

    sender: Address = Field(alias="from", description='"Name <address>" or an address.')
    to: Address | list[Address] = Field(description="One address, or up to 50.")
    subject: str = Field(max_length=MAX_SUBJECT_LENGTH)
    html: str | None = Field(None, max_length=MAX_MAIL_BODY_LENGTH)
    text: str | None = Field(None, max_length=MAX_MAIL_BODY_LENGTH)
    headers: dict[str, Annotated[str, Field(max_length=998)]] | None = None
    tags: list[Tag] | None = None
    cc: Address | list[Address] | None = None
    bcc: Address | list[Address] | None = None
    reply_to: Address | list[Address] | None = None

    def recipients(self) -> list[str]:
        """The ``to`` addresses as a list."""
        return [self.to] if isinstance(self.to, str) else list(self.to)

    def tag(self, name: str) -> str:
        """The value of one tag, or ``""``."""
        return next((tag.value for tag in self.tags or () if tag.name == name), "")

    def refusal(self) -> ResendApiError | None:
        """What Resend would refuse in this body that its schema alone does not say."""
        if not 1 <= len(self.recipients()) <= MAX_RECIPIENTS:
            return ResendApiError(422, "validation_error", "`to` takes 1 to 50 addresses.")
        if self.html is None and self.text is None:
            return ResendApiError(422, "missing_required_field", "Missing `html` or `text` field.")
        return None


@dataclass
class RateLimiter:
    """Resend's per-team limit: ``limit`` requests in each second of the clock."""

    second: int = 0
    used: int = 0

    def take(self, limit: float) -> dict[str, str]:
        """Count one request; return the ``ratelimit-*`` headers, or raise the 429."""
        if limit <= 0:
            return {}
        now = time.time()
        if int(now) != self.second:
            self.second, self.used = int(now), 0
        allowed = max(1, math.floor(limit))
        reset = str(max(1, math.ceil(self.second + 1 - now)))
        headers = {"ratelimit-limit": str(allowed), "ratelimit-reset": reset}
        if self.used >= allowed:
            message = (
                f"Too many requests. You can only make {allowed} requests per second. See rate "
                "limit response headers for more information."
            )
            raise RateLimited(message, headers | {"ratelimit-remaining": "0", "retry-after": reset})
        self.used += 1
        return headers | {"ratelimit-remaining": str(allowed - self.used)}


class RateLimited(ResendApiError):
    """The 429 ``rate_limit_exceeded``, with its headers."""

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(429, "rate_limit_exceeded", message)
        self.headers = headers

    def response(self) -> Any:
        """The 429 with Resend's ``ratelimit-*`` and ``retry-after`` headers."""
        answer = super().response()
        answer.headers.update(self.headers)
        return answer


OptionalKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Optional. A retry with the same key within the key window (Resend: 24 "
        "hours) gets the first answer back instead of a second email.",
    ),
]


def _send(email: SendEmail, db: sqlite3.Connection) -> Outcome:
    """Record the email as sent, filed under its order and template tags."""
    headers = email.headers or {}
    message_id = next((v for k, v in headers.items() if k.lower() == "message-id"), None)
    sent = MESSAGES.insert(
        db,
        id=str(uuid.uuid4()),  # Resend's ids are UUIDs
        order_id=email.tag(ORDER_TAG),
        to=email.recipients()[0],
        template=email.tag(TEMPLATE_TAG),
        subject=email.subject,
        body=email.text if email.text is not None else email.html or "",
        status="sent",
        message_id=message_id,
    )
    return Outcome(200, {"id": sent["id"]})


@router.post("/emails")
async def send_email(
    body: SendEmail,
    request: Request,
    idem: IdempotencyDep,
    faults: FaultsDep,
    key: OptionalKey = None,
) -> Response:
    """Send (record) one email, as Resend's ``POST /emails``."""
    behaviour = faults.mail_behaviour()
    limiter: RateLimiter = request.app.state.mail_rate_limiter
    limits = limiter.take(behaviour.rate_limit_per_s)
    if refusal := body.refusal():
        raise refusal
    answer = await idem.run(
        request,
        SERVICE,
        partial(_send, body),
        key=key or "",
        refusals=RESEND_REFUSALS,
        remember=bool(key) and not behaviour.keyless,
        key_window_s=behaviour.key_window_s,
    )
    answer.headers.update(limits)
    return answer
