"""Small auto-refreshing HTML pages, so a person can watch the effects land."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from sandbox import outbox
from sandbox.ledger import LedgerDep
from sandbox.mail import MESSAGES
from sandbox.stripe.charges import CHARGES, FAILED_CHARGES, render_charge, render_failed_charge
from sandbox.stripe.payment_intents import INTENTS, render_intent
from sandbox.stripe.refunds import REFUNDS, render_refund
from sandbox.warehouse import PICKLISTS, closed_orders
from sandbox.webhooks import SenderDep

router = APIRouter(include_in_schema=False)

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 2rem; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
nav a { margin-right: 1rem; }
.empty { color: #777; }
form { margin: 0; }
"""


class Html(str):
    """A cell's markup, built here from escaped parts: shown as it is."""


def _href(request: Request, path: str) -> str:
    """Link to ``path``, carrying ``?api_key=`` along when the page was opened with it."""
    key = request.query_params.get("api_key")
    return escape(f"{path}?{urlencode({'api_key': key})}" if key else path)


def _cell(value: Any) -> str:
    if isinstance(value, Html):
        return f"<td>{value}</td>"
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    return f"<td>{escape(text)}</td>"


def _table(title: str, rows: Sequence[dict[str, Any]], columns: Iterable[str]) -> str:
    """Render rows in the order given (callers pass them newest first)."""
    columns = list(columns)
    head = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(_cell(row.get(column)) for column in columns) + "</tr>" for row in rows
    )
    content = f"<table><tr>{head}</tr>{body}</table>" if rows else '<p class="empty">None yet.</p>'
    return f"<h2>{escape(title)} ({len(rows)})</h2>{content}"


def _page(request: Request, title: str, *sections: str) -> HTMLResponse:
    links = ("/", "/payments/", "/mail/", "/warehouse/")
    nav = "".join(f'<a href="{_href(request, path)}">{escape(path)}</a>' for path in links)
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<meta http-equiv='refresh' content='3'><style>{STYLE}</style></head>"
        f"<body><nav>{nav}</nav><h1>{escape(title)}</h1>{''.join(sections)}</body></html>"
    )


@router.get("/")
async def index(request: Request) -> HTMLResponse:
    """Index: links to the service pages and the admin JSON."""
    paths = ("/payments/", "/mail/", "/warehouse/", "/admin/ledger", "/admin/faults")
    items = "".join(f'<li><a href="{_href(request, p)}">{escape(p)}</a></li>' for p in paths)
    return _page(request, "Sandbox providers", f"<ul>{items}</ul>")


@router.get("/payments/")
async def payments_page(request: Request, ledger: LedgerDep) -> HTMLResponse:
    """Authorizations, captures, releases, refunds and payment intents, newest first.

    An authorization is a charge a confirm made; it moves money only once captured, and never
    if released (its intent cancelled before capture).
    """
    db = ledger.db
    charges = [
        render_charge(row) | {"order_id": row["order_id"], "released_at": row["released_at"]}
        for row in CHARGES.find_rows(db)[::-1]
    ]
    refunds = [
        render_refund(db, row) | {"order_id": row["order_id"]} for row in REFUNDS.find_rows(db)
    ][::-1]
    intents = [
        render_intent(db, row) | {"order_id": row["order_id"]} for row in INTENTS.find_rows(db)
    ][::-1]
    money = ("created", "id", "order_id", "amount", "currency")
    return _page(
        request,
        "Payments",
        _table(
            "Captures (money moved)",
            [charge for charge in charges if charge["captured"]],
            (*money, "amount_captured", "amount_refunded", "payment_intent"),
        ),
        _table(
            "Authorizations (every approved confirm; no money moves until captured)",
            charges,
            (*money, "captured", "payment_intent", "payment_method"),
        ),
        _table(
            "Releases (authorizations let go by a cancel; no money moved)",
            [charge for charge in charges if charge["released_at"] is not None],
            (*money, "released_at", "payment_intent"),
        ),
        _table("Refunds", refunds, (*money, "charge", "payment_intent", "reason")),
        _table(
            "Declined attempts (failed charges; no money moved)",
            [
                render_failed_charge(row) | {"order_id": row["order_id"]}
                for row in FAILED_CHARGES.find_rows(db)[::-1]
            ],
            (*money, "failure_code", "payment_intent", "payment_method"),
        ),
        _table(
            "Payment intents",
            intents,
            (*money, "capture_method", "status", "payment_method", "latest_charge"),
        ),
    )


@router.get("/mail/")
async def mail_page(request: Request, ledger: LedgerDep) -> HTMLResponse:
    """Sent messages."""
    columns = ("created", "id", "order_id", "to", "template", "subject", "body", "message_id")
    messages = [
        {**message, "body": _linked(message["body"])} for message in MESSAGES.find(ledger.db)
    ]
    return _page(request, "Mail", _table("Messages", messages[::-1], columns))


def _linked(text: str) -> Html:
    """A message's body with its web addresses as links, as a mail client shows them."""
    parts = re.split(r"(https?://\S+)", text)
    return Html(
        "".join(
            f'<a href="{escape(part)}">{escape(part)}</a>' if index % 2 else escape(part)
            for index, part in enumerate(parts)
        )
    )


@router.get("/warehouse/")
async def warehouse_page(request: Request, ledger: LedgerDep, sender: SenderDep) -> HTMLResponse:
    """Picklists (open ones with a Ship button), webhook events, stock, cancelled orders."""
    picklists = [
        {
            **picklist,
            "items": ", ".join(f"{i['quantity']} x {i['sku']}" for i in picklist["items"]),
            "ship_to": "{name}, {city} {country}".format(**picklist["ship_to"]),
        }
        for picklist in PICKLISTS.find(ledger.db)[::-1]
    ]
    for picklist in picklists:
        if picklist["status"] == "open" and picklist["hold"] and not picklist["released"]:
            picklist["ship"] = "held: not paid yet"
        elif picklist["status"] == "open":
            action = _href(request, f"/warehouse/picklists/{picklist['id']}/ship-now")
            picklist["ship"] = Html(
                f'<form method="post" action="{action}"><button>Ship</button></form>'
            )
    stock = [dict(row) for row in ledger.db.execute("SELECT sku, on_hand FROM stock ORDER BY sku")]
    events = [
        {**event, "tracking": "{carrier} {tracking_number}".format(**event["event"]["data"])}
        for event in outbox.list_events(ledger.db)
    ]
    settings = sender.describe()
    sending = (
        f"to {settings['url']}" if settings["url"] else "nowhere (no URL set: events wait)"
    ) + (", paused" if settings["paused"] else "")
    if not settings["signing"]:
        sending += ", but no secret is set (ORDERS_WEBHOOK_SECRET): nothing is sent"
    auto = settings["auto_ship_after_s"]
    auto_text = (
        "off"
        if auto is None
        else (f"open picklists ship {auto:g}s after they may (held ones: after their release)")
    )
    webhook_note = (
        f"<p>Webhooks go {escape(sending)}; auto-ship: {escape(auto_text)}. "
        f'<a href="{_href(request, "/admin/webhooks")}">/admin/webhooks</a></p>'
    )
    columns = ("created", "id", "order_id", "tracking", "status", "attempts", "last_status")
    return _page(
        request,
        "Warehouse",
        _table(
            "Picklists",
            picklists,
            ("created", "id", "order_id", "items", "ship_to", "status", "ship"),
        ),
        _table(
            "Webhook events (failed ones need an operator)",
            events,
            (*columns, "last_error", "delivered", "next_attempt"),
        )
        + webhook_note,
        _table("Stock (other skus are unlimited)", stock, ("sku", "on_hand")),
        _table(
            "Cancelled orders (they take no new picklist)",
            closed_orders(ledger.db),
            ("closed", "order_id"),
        ),
    )
