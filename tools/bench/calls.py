"""What an order's provider calls cost both ends: ``python -m tools.bench.calls``.

An order calls its providers six or seven times on the way to its shipped email (the payment
intent, the authorization, the picklist, the capture, the confirmation, the release, the shipped
email). This runs exactly those calls through the worker's own activities and clients
(``activities``, ``open_provider_clients``: the official Stripe and Resend libraries on aiohttp),
each in an activity context (``temporalio.testing.ActivityEnvironment``), against the sandbox
providers started as the stack starts them, with no Temporal at all. It reads this process's CPU
(the caller's side, what a worker pays) and the providers' from ``/proc`` around each round of
``--orders`` orders, ``--in-flight`` at a time, and prints the medians per order.

    .venv/bin/python -m tools.bench.calls                 # 5 rounds of 100 orders, 10 at a time
    .venv/bin/python -m tools.bench.calls --rounds 9 --orders 200
"""

import argparse
import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.mail import EmailRequest, MailActivities
from activities.payment import (
    CapturePaymentRequest,
    ConfirmPaymentRequest,
    PaymentActivities,
    PaymentIntentRequest,
)
from activities.provider_client import open_provider_clients
from activities.warehouse import (
    PicklistItem,
    PicklistRequest,
    ReleasePicklistRequest,
    WarehouseActivities,
)
from orders.client.exit import exit_now
from orders.config.settings import ProviderSettings
from orders.domain.models import Order
from orders.domain.status import EmailTemplate, Step, idempotency_key
from sandbox.faults import RATE_LIMIT_ENV, SEARCH_RATE_LIMIT_ENV
from tools.bench.arguments import rounds_parser
from tools.bench.figures import rounds_summary
from tools.bench.procstat import process_usage
from tools.harness.drive import gather_limited, sample_order
from tools.stack.processes import free_port, start_providers

API_KEY = "sk_test_bench"


@dataclass(frozen=True)
class Activities:
    """The worker's activities that an order calls on its way, on one set of clients."""

    payment: PaymentActivities
    mail: MailActivities
    warehouse: WarehouseActivities


@asynccontextmanager
async def open_activities(settings: ProviderSettings) -> AsyncIterator[Activities]:
    """The activities on the worker's clients for ``settings``, closed on exit."""
    async with open_provider_clients(settings) as clients:
        yield Activities(
            PaymentActivities(clients.gateway),
            MailActivities(clients.mail),
            WarehouseActivities(clients.warehouse),
        )


async def one_order(activities: Activities, environment: ActivityEnvironment, order: Order) -> None:
    """The calls of one order that completes, in its order, each as its activity makes it."""
    run, pay, mail = environment.run, activities.payment, activities.mail

    def key(step: Step) -> str:
        return idempotency_key(order.id, step)

    intent = await run(
        pay.create_payment_intent,
        PaymentIntentRequest(
            order_id=order.id,
            idempotency_key=key(Step.PAYMENT_INTENT),
            amount=order.total,
            currency=order.currency,
            payment_method=order.payment_method,
            capture_method="manual",
            placed_at=order.placed_at,
        ),
    )
    confirm = ConfirmPaymentRequest(
        order_id=order.id, idempotency_key=key(Step.PAYMENT_CONFIRM), intent_id=intent.id
    )
    await run(pay.authorize_payment, confirm)
    items = [PicklistItem(sku=item.sku, quantity=item.quantity) for item in order.items]
    picklist = await run(
        activities.warehouse.send_picklist,
        PicklistRequest(
            order_id=order.id,
            idempotency_key=key(Step.PICKLIST),
            items=items,
            ship_to=order.shipping_address,
            hold=True,
        ),
    )
    capture = CapturePaymentRequest(
        order_id=order.id, idempotency_key=key(Step.PAYMENT_CAPTURE), intent_id=intent.id
    )
    await run(pay.capture_payment, capture)

    async def email(step: Step, template: EmailTemplate) -> None:
        request = EmailRequest(
            order_id=order.id,
            idempotency_key=key(step),
            step=step,
            to=order.customer.email,
            template=template,
            subject=template.value,
            body="bench",
        )
        await run(mail.send_email, request)

    await email(Step.CONFIRMATION_EMAIL, EmailTemplate.ORDER_CONFIRMATION)
    release = ReleasePicklistRequest(
        order_id=order.id, idempotency_key=key(Step.PICKLIST_RELEASE), picklist_id=picklist.id
    )
    await run(activities.warehouse.release_picklist, release)
    await email(Step.SHIPPED_EMAIL, EmailTemplate.ORDER_SHIPPED)


async def cpu_ms_per_order(
    activities: Activities, providers_pid: int, orders: int, in_flight: int
) -> tuple[float, float]:
    """One round: the caller's and the providers' CPU ms per order."""
    environment = ActivityEnvironment()
    caller, providers = time.process_time(), process_usage(providers_pid).cpu_s
    await gather_limited(
        (
            one_order(activities, environment, sample_order(f"calls-{uuid.uuid4().hex[:12]}"))
            for _ in range(orders)
        ),
        in_flight,
    )
    caller_ms = (time.process_time() - caller) * 1000 / orders
    return caller_ms, (process_usage(providers_pid).cpu_s - providers) * 1000 / orders


async def measure(args: argparse.Namespace) -> list[tuple[float, float]]:
    """Start the providers, warm up, then run the rounds; each round's two figures."""
    # Stripe's test-mode rate limits are the account's, not what this measures.
    unlimited = {RATE_LIMIT_ENV: "0", SEARCH_RATE_LIMIT_ENV: "0"}
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as folder:
        port = free_port()
        database = Path(folder) / "providers.sqlite3"
        providers = start_providers(database, port, API_KEY, env=unlimited)
        try:
            # The sandbox always (never Stripe, whatever the environment says).
            settings = ProviderSettings(base_url=f"http://127.0.0.1:{port}", api_key=API_KEY)
            async with open_activities(settings) as activities:
                await cpu_ms_per_order(activities, providers.popen.pid, 20, args.in_flight)
                return [
                    await cpu_ms_per_order(
                        activities, providers.popen.pid, args.orders, args.in_flight
                    )
                    for _ in range(args.rounds)
                ]
        finally:
            providers.stop()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: rounds, orders per round, orders in flight."""
    parser = rounds_parser(__doc__.splitlines()[0], ("orders", 100), in_flight=10)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: measure and print the medians per order, each round's too."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # as the worker's: no line per call
    rounds = asyncio.run(measure(args))
    for side, index in (("caller", 0), ("providers", 1)):
        print(f"{side}: {rounds_summary([round_[index] for round_ in rounds], 'ms per order')}")
    exit_now(0)


if __name__ == "__main__":
    main()
