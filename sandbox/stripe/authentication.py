"""The customer's 3-D Secure page: where an intent's ``next_action`` sends them.

Stripe's is its bank's challenge page (``hooks.stripe.com``); in test mode it has a "Complete"
and a "Fail" button, and so has this one. It is the customer's page, so the shop's API key is
not asked for: the intent's client secret in the link is what lets them act on that intent
only. The outcome is decided by ``payment_intents.authenticate``; then Stripe sends the customer
to the confirm's ``return_url`` with ``payment_intent``, ``payment_intent_client_secret`` and
``redirect_status`` added to its query. This page shows the outcome and that link instead of
navigating (the sandbox's pages are offline: a shop's page is rarely there to be reached).
"""

from __future__ import annotations

import secrets
from html import escape
from typing import Annotated
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from sandbox.errors import ApiError
from sandbox.faults import FaultsDep
from sandbox.ledger import LedgerDep
from sandbox.stripe.payment_intents import (
    SERVICE,
    authenticate,
    client_secret,
    get_intent_row,
)

router = APIRouter(prefix="/payments/authenticate", include_in_schema=False)

Secret = Annotated[str, Query(max_length=300)]
OUTCOMES = {"complete": True, "fail": False}
REDIRECT_STATUSES = {"requires_capture": "succeeded", "succeeded": "succeeded"}
"""Stripe's ``redirect_status`` for the intent's status once the customer answered; any other
(declined, failed, cancelled) is ``failed``."""


def _check(intent: str, secret: str) -> None:
    """Refuse a link whose client secret is not this intent's (404: reveal nothing)."""
    if not secrets.compare_digest(secret.encode(), client_secret(intent).encode()):
        raise ApiError(404, "resource_missing", "No such authentication.")


@router.get("/{intent}")
async def authentication_page(intent: str, client_secret: Secret, ledger: LedgerDep) -> Response:
    """The challenge: the amount, the shop's order, and the two test-mode buttons."""
    _check(intent, client_secret)
    row = get_intent_row(ledger.db, intent)
    if row is None:
        raise ApiError(404, "resource_missing", "No such authentication.")
    amount = f"{row['amount']} {str(row['currency']).upper()}"
    if row["status"] != "requires_action":
        body = f"<p id='outcome'>This payment is {escape(row['status'])}: nothing to do here.</p>"
    else:
        forms = "".join(
            f'<form method="post" action="{_action(intent, client_secret, outcome)}">'
            f'<button id="{outcome}" type="submit">{outcome.capitalize()} authentication'
            "</button></form>"
            for outcome in OUTCOMES
        )
        body = f"<p>Confirm the payment of {escape(amount)} (order {escape(row['order_id'])}).</p>"
        body += forms
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>3-D Secure</title></head>"
        f"<body><h1>3-D Secure test payment</h1>{body}</body></html>"
    )


def _action(intent: str, secret: str, outcome: str) -> str:
    query = urlencode({"client_secret": secret, "outcome": outcome})
    return escape(f"/payments/authenticate/{intent}?{query}")


@router.post("/{intent}")
async def authentication_outcome(
    intent: str,
    client_secret: Secret,
    outcome: Annotated[str, Query(pattern="^(complete|fail)$")],
    ledger: LedgerDep,
    faults: FaultsDep,
) -> Response:
    """Record the customer's answer, then send them back to the shop (or say it is done)."""
    _check(intent, client_secret)
    with ledger.transaction() as db:
        validity = faults.authorization_validity_s(SERVICE)
        answer = authenticate(db, intent, OUTCOMES[outcome], validity)
    row = get_intent_row(ledger.db, intent)
    back = ""
    if row is not None and row["return_url"]:
        href = escape(return_link(row["return_url"], intent, client_secret, answer["status"]))
        back = f"<p><a id='return' href=\"{href}\">Return to the shop</a></p>"
    done = "completed" if OUTCOMES[outcome] else "failed"
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>3-D Secure</title></head>"
        f"<body><p id='outcome'>Authentication {done}: the payment is "
        f"{escape(answer['status'])}. You can close this page.</p>{back}</body></html>"
    )


def return_link(return_url: str, intent: str, secret: str, status: str) -> str:
    """Where Stripe sends the customer back once they answered.

    ``return_url``, its query extended by the intent, its client secret and
    ``redirect_status`` (``succeeded`` or ``failed``).
    """
    parts = urlsplit(return_url)
    added = urlencode(
        {
            "payment_intent": intent,
            "payment_intent_client_secret": secret,
            "redirect_status": REDIRECT_STATUSES.get(status, "failed"),
        }
    )
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query))
