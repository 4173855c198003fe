"""Amounts as Stripe counts them: each rule of ``orders.domain.stripe_currencies`` by example.

At placement (the rule ``starter.py`` and ``start_order`` apply before anything starts), at
the sandbox gateway (what Stripe answers, through the official library) and in the payment
activity (what it sends). The property that the two sides agree for any order is in
``tests/test_properties.py`` (section f).
"""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.payment import (
    CapturePaymentRequest,
    ConfirmPaymentRequest,
    PaymentActivities,
    PaymentIntentRequest,
)
from activities.provider_client import open_provider_clients
from orders.client.orders import OrderNotFound, OrderUnchargeable, order_status, start_order
from orders.config.settings import ProviderSettings
from orders.domain.stripe_currencies import (
    MAX_CHARGE,
    ChargeRule,
    charge_refusal,
    from_stripe_amount,
    stripe_exponent,
    to_stripe_amount,
)
from sandbox.admin_client import SandboxAdmin
from tests.support import make_order, run_starter, stripe_against


def one_line(unit_price: int) -> list[dict[str, Any]]:
    return [{"sku": "SKU-1", "quantity": 1, "unit_price": unit_price}]


# --- the placement rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "total", "rule", "fix"),
    [
        ("USD", 49, ChargeRule.MINIMUM, "Stripe charges at least 0.50 USD"),
        ("JPY", 49, ChargeRule.MINIMUM, "Stripe charges at least 50 JPY"),
        ("HUF", 17499, ChargeRule.MINIMUM, "Stripe charges at least 175.00 HUF"),
        ("KWD", 5124, ChargeRule.THREE_DECIMAL, "round the total to 5.120 KWD or 5.130 KWD"),
        ("CLF", 10000, ChargeRule.UNSUPPORTED_CURRENCY, "a currency Stripe supports"),
        ("MGA", 12345, ChargeRule.WHOLE_UNITS, "make the total a multiple of 1.00 MGA"),
        ("ISK", 1_000_000, ChargeRule.MAXIMUM, "the most one payment can be is 999999 ISK"),
    ],
)
def test_an_amount_stripe_refuses_is_refused_naming_the_rule_and_the_fix(
    currency: str, total: int, rule: ChargeRule, fix: str
) -> None:
    refusal = charge_refusal(total, currency)
    assert refusal is not None
    assert f"({rule})" in refusal and fix in refusal
    assert "\n" not in refusal


@pytest.mark.parametrize(
    ("currency", "total"),
    [("USD", 50), ("JPY", 50), ("HUF", 17500), ("KWD", 5120), ("MGA", 12300), ("ISK", 999_999),
     ("UGX", 5), ("VND", 1), ("EUR", 99_999_999)],
)  # fmt: skip
def test_an_amount_stripe_takes_is_not_refused(currency: str, total: int) -> None:
    assert charge_refusal(total, currency) is None


@pytest.mark.parametrize(
    ("currency", "iso", "stripe_amount"),
    [("ISK", 5, 500), ("UGX", 5, 500), ("MGA", 500, 5), ("JPY", 500, 500), ("KWD", 5120, 5120),
     ("HUF", 1045, 1045), ("TWD", 80045, 80045), ("USD", 1999, 1999)],
)  # fmt: skip
def test_stripe_counts_isk_and_ugx_in_hundredths_and_mga_in_whole_ariary(
    currency: str, iso: int, stripe_amount: int
) -> None:
    assert to_stripe_amount(iso, currency) == stripe_amount
    assert from_stripe_amount(stripe_amount, currency.lower()) == iso


def test_stripe_scales_differ_from_iso_only_where_stripe_says() -> None:
    assert (stripe_exponent("isk"), stripe_exponent("MGA"), stripe_exponent("KWD")) == (2, 0, 3)
    with pytest.raises(ValueError, match="not a multiple of 100"):
        to_stripe_amount(12345, "MGA")  # 123.45 MGA: Stripe charges whole ariary
    with pytest.raises(ValueError, match="not a multiple of 100"):
        from_stripe_amount(150, "ISK")  # 1.50 ISK: Stripe refuses it, so it never comes back


# --- the sandbox gateway, through the official library ---------------------------------------


@pytest.fixture
async def gateway(sandbox: SandboxAdmin) -> AsyncIterator[stripe.StripeClient]:
    async with stripe_against(sandbox) as gateway:
        yield gateway


async def create(
    gateway: stripe.StripeClient, order_id: str, amount: int, currency: str
) -> stripe.PaymentIntent:
    params: Any = {
        "amount": amount,
        "currency": currency,
        "payment_method": "pm_card_visa",
        "capture_method": "manual",
        "metadata": {"order_id": order_id},
    }
    return await gateway.v1.payment_intents.create_async(
        params, {"idempotency_key": f"{order_id}:payment-intent"}
    )


@pytest.mark.parametrize(
    ("amount", "currency", "code", "param", "message"),
    [
        (49, "usd", "amount_too_small", "amount", "Amount must be at least 0.50 usd"),
        (49, "jpy", "amount_too_small", "amount", "Amount must be at least 50 jpy"),
        (MAX_CHARGE + 1, "usd", "amount_too_large", "amount",
         "Amount must be no more than 999,999.99 usd"),
        (MAX_CHARGE + 1, "jpy", "amount_too_large", "amount",
         "Amount must be no more than 99,999,999 jpy"),
        (100, "clf", None, "currency",
         "Invalid currency: clf. Stripe currently supports these currencies: usd, aed, afn,"),
        (550, "isk", "invalid_charge_amount_no_decimal_compatible", "amount",
         "Currency ISK has become effectively zero-decimal and charged amounts must be evenly "
         "divisible by 100"),
        (5124, "kwd", "parameter_invalid_integer", "amount", "amount's last digit must be 0"),
    ],
)  # fmt: skip
async def test_the_sandbox_refuses_what_stripe_refuses_and_stores_nothing(
    gateway: stripe.StripeClient,
    sandbox: SandboxAdmin,
    amount: int,
    currency: str,
    code: str | None,
    param: str,
    message: str,
) -> None:
    order_id = f"amounts-{uuid.uuid4().hex[:10]}"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await create(gateway, order_id, amount, currency)
    error = refused.value
    assert (error.http_status, error.code, error.param) == (400, code, param)
    assert message in str(error.user_message)
    assert error.error is not None and error.error.type == "invalid_request_error"
    assert sandbox.effects(order_id).payment_intents == 0
    # Nothing was stored under the key: the same key creates a chargeable intent.
    intent = await create(gateway, order_id, 5000, "usd")
    assert intent.amount == 5000 and sandbox.effects(order_id).payment_intents == 1


@pytest.mark.parametrize(
    ("amount", "currency"), [(50, "usd"), (50, "jpy"), (500, "isk"), (5120, "kwd"), (1, "vnd")]
)
async def test_the_sandbox_takes_what_stripe_takes(
    gateway: stripe.StripeClient, amount: int, currency: str
) -> None:
    intent = await create(gateway, f"amounts-{uuid.uuid4().hex[:10]}", amount, currency)
    assert (intent.amount, intent.currency, intent.status) == (
        amount,
        currency,
        "requires_confirmation",
    )


# --- the payment activity --------------------------------------------------------------------


async def test_an_isk_order_is_charged_its_total_in_stripes_scale(sandbox: SandboxAdmin) -> None:
    order = make_order(currency="ISK", items=one_line(4990))  # 4990 ISK, whole krónur
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    run = ActivityEnvironment().run
    async with open_provider_clients(settings) as clients:
        payments = PaymentActivities(clients.gateway)
        request = PaymentIntentRequest(
            order_id=order.id,
            idempotency_key=f"{order.id}:payment-intent",
            amount=order.total,
            currency=order.currency,
            payment_method=order.payment_method,
            capture_method="manual",
        )
        intent = await run(payments.create_payment_intent, request)
        confirm = ConfirmPaymentRequest(
            order_id=order.id, idempotency_key=f"{order.id}:payment-confirm", intent_id=intent.id
        )
        await run(payments.authorize_payment, confirm)
        capture = CapturePaymentRequest(
            order_id=order.id, idempotency_key=f"{order.id}:payment-capture", intent_id=intent.id
        )
        charge = await run(payments.capture_payment, capture)
    assert (intent.amount, charge.amount, charge.currency) == (4990, 4990, "ISK")
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.charged_amount) == (1, 499_000)  # 4990.00 ISK at Stripe


# --- placing an order ------------------------------------------------------------------------


async def test_start_order_refuses_an_order_stripe_would_refuse(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order(currency="JPY", items=one_line(49))
    with pytest.raises(OrderUnchargeable) as refused:
        await start_order(client, order, task_queue)
    assert refused.value.exit_code == 2
    assert str(refused.value) == (
        f"order {order.id} refused: the total 49 JPY cannot be charged (below Stripe's minimum "
        "charge): Stripe charges at least 50 JPY; raise the total to that"
    )
    with pytest.raises(OrderNotFound):
        await order_status(client, order.id)
    assert sandbox.effects(order.id).payment_intents == 0


@pytest.mark.parametrize(
    ("currency", "unit_price", "rule"),
    [("USD", 30, ChargeRule.MINIMUM), ("KWD", 5124, ChargeRule.THREE_DECIMAL),
     ("CLF", 10000, ChargeRule.UNSUPPORTED_CURRENCY)],
)  # fmt: skip
async def test_starter_refuses_an_order_stripe_would_refuse_and_starts_nothing(
    client: Client,
    sandbox: SandboxAdmin,
    task_queue: str,
    tmp_path: Path,
    currency: str,
    unit_price: int,
    rule: ChargeRule,
) -> None:
    order = make_order(currency=currency, items=one_line(unit_price))
    path = tmp_path / "order.json"
    path.write_text(order.model_dump_json())
    address = client.service_client.config.target_host
    result = await run_starter("start", "--file", str(path), address=address, task_queue=task_queue)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: order {order.id} refused: the total ")
    assert f"({rule})" in result.stderr
    with pytest.raises(OrderNotFound):
        await order_status(client, order.id)
    assert sandbox.effects(order.id).payment_intents == 0
