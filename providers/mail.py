"""Sandbox mail service: every accepted message is recorded as sent."""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from providers.idempotency import IdempotencyDep, Outcome
from providers.ledger import LedgerDep, Resource

SERVICE = "mail"
router = APIRouter(prefix="/mail", tags=[SERVICE])

MESSAGES = Resource(
    "messages",
    "message",
    "msg",
    ("order_id", "to", "template", "subject", "body", "status", "created"),
)


class MessageIn(BaseModel):
    """Body of ``POST /mail/messages``."""

    order_id: str = Field(min_length=1)
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="Recipient address.")
    template: str = Field(min_length=1, examples=["order-confirmation"])
    subject: str
    body: str


def _send(message: MessageIn, db: sqlite3.Connection) -> Outcome:
    return Outcome(200, MESSAGES.insert(db, status="sent", **message.model_dump()))


@router.post("/messages")
async def send_message(body: MessageIn, request: Request, idem: IdempotencyDep) -> Response:
    """Send (record) one email."""
    return await idem.run(request, SERVICE, partial(_send, body))


@router.get("/messages")
async def list_messages(
    ledger: LedgerDep, order_id: str | None = None, template: str | None = None
) -> dict[str, Any]:
    """List sent messages, oldest first."""
    return {"data": MESSAGES.find(ledger.db, order_id=order_id, template=template)}
