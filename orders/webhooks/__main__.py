"""Run the webhook receiver: ``python -m orders.webhooks --port 8001``.

``python -m orders.webhooks generate-secret`` prints a new secret. Settings (see
docs/webhooks.md): ``ORDERS_WEBHOOK_SECRET`` or ``ORDERS_WEBHOOK_SECRET_FILE`` (required;
several secrets for rotation), ``ORDERS_WEBHOOK_TOLERANCE`` (``300s``),
``ORDERS_WEBHOOK_MAX_BODY_BYTES`` (65536), ``ORDERS_WEBHOOK_RETRY_AFTER`` (``10s``),
``ORDERS_WEBHOOK_HANDOFF_TIMEOUT`` (``10s``), ``ORDERS_STRIPE_WEBHOOK_SECRET`` or
``ORDERS_STRIPE_WEBHOOK_SECRET_FILE`` (the Stripe endpoint's secret: with one, Stripe's events
are received at ``/webhooks/stripe``), and
Temporal's standard client settings (``TEMPORAL_ADDRESS``, ...) with the payload keys
(``ORDERS_CODEC_KEYS`` or ``ORDERS_CODEC_KEY_FILE``).
"""

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

import uvicorn
from temporalio.client import Client

from orders.client.exit import exit_now
from orders.client.temporal import TemporalConnectionError, codec_keys, connect
from orders.config import stripe_events
from orders.config import webhooks as names
from orders.intake.contract import parse_duration
from orders.webhooks.app import RETRY_AFTER_S, create_app
from orders.webhooks.handoff import DEFAULT_TIMEOUT


class LazyClient:
    """Connects to Temporal on first use and keeps the client; tries again after a failure."""

    def __init__(self) -> None:
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> Client:
        """The client, connecting now if need be (``TemporalConnectionError`` if unreachable)."""
        async with self._lock:
            if self._client is None:
                self._client = await connect()
            return self._client


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    return parse_duration(text).total_seconds() if text else default


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; each option falls back to an ``ORDERS_WEBHOOK_*`` variable."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m orders.webhooks", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "generate-secret"], default="serve")
    parser.add_argument("--host", default=env("ORDERS_WEBHOOK_HOST", "127.0.0.1"))
    port = int(env("ORDERS_WEBHOOK_PORT", str(names.DEFAULT_RECEIVER_PORT)))
    parser.add_argument("--port", type=int, default=port)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted; 2 when the settings are unusable."""
    args = parse_args(argv)
    if args.command == "generate-secret":
        print(names.generate_secret())
        return 0
    try:
        secrets = names.require_secrets()
        stripe_secrets = stripe_events.load_secrets()  # none: no Stripe endpoint
        tolerance = _seconds(names.TOLERANCE_ENV, names.DEFAULT_TOLERANCE_S)
        max_body = int(os.environ.get(names.MAX_BODY_ENV, "") or names.DEFAULT_MAX_BODY_BYTES)
        retry_after = round(_seconds(names.RETRY_AFTER_ENV, RETRY_AFTER_S))
        handoff_s = _seconds(names.HANDOFF_TIMEOUT_ENV, DEFAULT_TIMEOUT.total_seconds())
        codec_keys()  # no payload keys: say so now, not at the first event
    except (names.WebhookSecretError, TemporalConnectionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(
        secrets,
        LazyClient(),
        tolerance_s=tolerance,
        max_body_bytes=max_body,
        retry_after_s=retry_after,
        handoff_wait=timedelta(seconds=handoff_s),
        stripe_secrets=stripe_secrets,
    )
    print(f"webhook receiver listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    exit_now(main())  # PITFALLS 2: the SDK's runtime may abort at interpreter exit
