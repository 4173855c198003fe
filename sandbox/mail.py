"""Sandbox mail service: every accepted message is recorded as sent, in one ledger table.

The order's emails come through Resend's API (``sandbox.resend``, ``POST /resend/emails``).
``POST /mail/messages`` is the sandbox's first protocol of its own, kept for its tests; both
write to ``messages``, which ``GET /mail/messages``, the mail page and the ledger summary read.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from sandbox.idempotency import IdempotencyDep, IdempotencyKey, Outcome
from sandbox.ledger import LedgerDep, Resource
from sandbox.limits import (
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_MAIL_BODY_LENGTH,
    MAX_SUBJECT_LENGTH,
    Id,
    QueryId,
)

SERVICE = "mail"
router = APIRouter(prefix="/mail", tags=[SERVICE])

MESSAGES = Resource(
    "messages",
    "message",
    "msg",
    ("order_id", "to", "template", "subject", "body", "status", "created", "message_id"),
)


class MessageIn(BaseModel):
    """Body of ``POST /mail/messages``."""

    order_id: Id
    to: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        max_length=MAX_EMAIL_LENGTH,
        description="Recipient address.",
    )
    template: Id = Field(examples=["order-confirmation"])
    subject: str = Field(max_length=MAX_SUBJECT_LENGTH)
    body: str = Field(max_length=MAX_MAIL_BODY_LENGTH)


def _send(message: MessageIn, db: sqlite3.Connection) -> Outcome:
    return Outcome(200, MESSAGES.insert(db, status="sent", **message.model_dump()))


@router.post("/messages")
async def send_message(
    body: MessageIn, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Send (record) one email."""
    return await idem.run(request, SERVICE, partial(_send, body), key=key)


@router.get("/messages")
async def list_messages(
    ledger: LedgerDep,
    order_id: QueryId = None,
    template: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
) -> dict[str, Any]:
    """List sent messages, oldest first."""
    return {"data": MESSAGES.find(ledger.db, order_id=order_id, template=template)}
