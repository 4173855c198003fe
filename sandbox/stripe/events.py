"""Stripe's events: what happened to intents, charges, refunds and disputes, sent to the shop.

Each effect that Stripe reports by an event writes it to the ``stripe_events`` outbox in the
same transaction (``record``): an ``event`` object as Stripe's (``id`` ``evt_...``, ``type``,
``data.object`` the object after the change, ``api_version``, ``created``, ``livemode``,
``pending_webhooks``, ``request``). ``StripeEventSender`` delivers them as the warehouse's
webhooks are delivered (at least once, retried with backoff, failed for good on a final 4xx),
signed as Stripe signs: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``,
so that the official library's ``stripe.Webhook.construct_event`` verifies them with the
endpoint's secret. Like Stripe, no order between events is promised.

Run-time controls and the events' delivery state: ``GET``/``PUT /admin/stripe-events``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orders.config import stripe_events as names
from orders.webhooks.signature import sign
from sandbox.ledger import new_id, now_iso
from sandbox.webhooks import SenderSettings, WebhookSender, admin_router

TABLE = "stripe_events"


def record(
    db: sqlite3.Connection, event_type: str, obj: dict[str, Any], order_id: str | None = None
) -> dict[str, Any]:
    """Write a pending event about ``obj`` (as it is now), due at once; return the event.

    Call it inside the transaction of the effect it reports. ``order_id``: the ledger's order
    (for the admin listing and the checker) when the object does not carry it in its metadata,
    as a dispute does not.
    """
    # Imported here: the workflow sandbox re-imports test modules that reach this one, and
    # the library's HTTP client is not allowed there. The events speak the library's version.
    from stripe import api_version

    metadata = obj.get("metadata") or {}
    event = {
        "id": new_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    db.execute(
        f"INSERT INTO {TABLE} (id, type, order_id, body, status, next_attempt_at, created)"
        " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        (
            event["id"],
            event_type,
            order_id or str(metadata.get("order_id", "")),
            json.dumps(event, separators=(",", ":")),
            time.time(),
            now_iso(),
        ),
    )
    return event


def settings_from_env(environ: Mapping[str, str] | None = None) -> SenderSettings:
    """The warehouse sender's timing settings, with the Stripe endpoint's URL and secrets."""
    env = os.environ if environ is None else environ
    return SenderSettings(
        **{
            **SenderSettings.from_env(env).__dict__,
            "url": env.get(names.URL_ENV, "").strip() or None,
            "secrets": names.load_secrets(env),
            "auto_ship_after_s": None,
        }
    )


@dataclass
class StripeEventSender(WebhookSender):
    """Delivers the gateway's Stripe events, signed as Stripe signs them."""

    TABLE = TABLE
    METRIC = "providers_stripe_event_deliveries"
    USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"

    def _chores(self) -> None:
        """Nothing besides delivering (the gateway's clock runs elsewhere)."""

    def _signature(self, body: bytes) -> dict[str, str]:
        # The warehouse's scheme is Stripe's own (t=..., one v1=HMAC-SHA256 per secret).
        return {names.SIGNATURE_HEADER: sign(self.settings.secrets, body)}


router = admin_router("/admin/stripe-events", "stripe_events")
