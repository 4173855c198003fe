"""Stripe's events to the shop: the names the gateway (sandbox) and the receiver both read.

Stripe signs each event it sends to an endpoint with the endpoint's signing secret
(``whsec_...``, shown by the Dashboard or by ``stripe listen``) in ``Stripe-Signature``; the
receiver verifies it with the official library (``stripe.Webhook.construct_event``). The
sandbox gateway signs its events the same way with the same secret:

- ``ORDERS_STRIPE_WEBHOOK_SECRET``: the endpoint secret(s), comma separated (the first is
  the current one; the receiver accepts each while a secret rolls);
- ``ORDERS_STRIPE_WEBHOOK_SECRET_FILE``: a file of them, one per line; ``./scripts/run``
  generates ``data/stripe-webhook-secret`` (mode 0600) on its first run.
"""

import os
from collections.abc import Mapping

from orders.config import webhooks

SECRET_ENV = "ORDERS_STRIPE_WEBHOOK_SECRET"
SECRET_FILE_ENV = "ORDERS_STRIPE_WEBHOOK_SECRET_FILE"
LOCAL_SECRET_FILE_NAME = "stripe-webhook-secret"
SIGNATURE_HEADER = "Stripe-Signature"
WEBHOOK_PATH = "/webhooks/stripe"
"""The receiver's Stripe endpoint, beside the warehouse's ``/webhooks/warehouse``."""
URL_ENV = "PROVIDERS_STRIPE_WEBHOOK_URL"
"""Where the sandbox gateway POSTs its events; unset: they wait in its outbox."""

EVENT_TYPES = (
    "payment_intent.requires_action",
    "payment_intent.amount_capturable_updated",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refund.updated",
    "charge.dispute.created",
    "charge.dispute.closed",
)
"""The events the shop's endpoint must be enabled for (docs/customer.md says what each is for)."""


OPERATIONS_EMAIL_ENV = "ORDERS_OPERATIONS_EMAIL"
"""Who hears of a chargeback (the receiver starts the dispute's workflow with it)."""
DEFAULT_OPERATIONS_EMAIL = "operations@shop.example"


def operations_email(environ: Mapping[str, str] | None = None) -> str:
    """The operators' address for disputes."""
    env = os.environ if environ is None else environ
    return env.get(OPERATIONS_EMAIL_ENV, "").strip() or DEFAULT_OPERATIONS_EMAIL


def load_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The endpoint secrets, current first; empty when none is configured."""
    env = os.environ if environ is None else environ
    names = {webhooks.SECRET_ENV: SECRET_ENV, webhooks.SECRET_FILE_ENV: SECRET_FILE_ENV}
    return webhooks.load_secrets({ours: env.get(theirs, "") for ours, theirs in names.items()})
