"""Stripe's rate limits in the sandbox, the worker taking them as back-pressure, and the
search (20 a second per account) off each new order's path.

The gateway refuses requests over the account's rate (reads, writes and searches apart) with
Stripe's 429 ``rate_limit``, through the official library as Stripe's own answer. The worker
retries them under the same key after a backoff with jitter: on a stack of processes with a
low limit, every order completes with each effect once, none is parked, and the intake
breaker (set to trip on two failing orders) never starts.

The suite's gateways have no limits (tests/conftest.py); each test here sets its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.errors import (
    PROVIDER_THROTTLED,
    PROVIDER_UNAVAILABLE,
    ProviderAnswer,
    error_for_response,
    throttled,
)
from activities.payment import REUSE_COVERED_BY_KEY, PaymentActivities, PaymentIntentRequest
from activities.provider_client import open_provider_clients
from orders.client.orders import order_status, ship_order, start_order
from orders.config.settings import TASK_QUEUE, ProviderSettings
from orders.domain.models import Shipment
from orders.domain.status import EmailTemplate, OrderStatus, Step
from orders.intake.activities import classify
from orders.intake.client import intake_status
from orders.intake.contract import IntakeMode, PaymentOutcome, breaker_id
from sandbox.__main__ import parse_args
from sandbox.admin_client import SandboxAdmin
from sandbox.faults import RATE_LIMIT_ENV, SEARCH_RATE_LIMIT_ENV
from tests.support import make_order, stripe_against, wait_for_status
from tools.stack.local import LocalStack

UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")


@pytest.fixture
async def client(sandbox: SandboxAdmin) -> AsyncIterator[stripe.StripeClient]:
    """The official library against the sandbox, with its own retries off (as the worker's)."""
    async with stripe_against(sandbox) as gateway:
        yield gateway


def intent_params(order_id: str) -> Any:
    return {
        "amount": 2500,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "metadata": {"order_id": order_id},
    }


async def outcome_of(call: Any) -> Any:
    """The call's result, or the ``StripeError`` it raised."""
    try:
        return await call
    except stripe.StripeError as err:
        return err


async def test_writes_over_the_rate_get_stripes_429_and_leave_nothing_under_their_keys(
    client: stripe.StripeClient, sandbox: SandboxAdmin
) -> None:
    sandbox.set_faults("payments", rate_limit_per_s=2)
    before = sandbox.rate_limits()
    prefix = f"rl-{uuid.uuid4().hex[:8]}"
    orders = [f"{prefix}-{index}" for index in range(6)]
    answers = await asyncio.gather(
        *(
            outcome_of(
                client.v1.payment_intents.create_async(
                    intent_params(order), {"idempotency_key": f"{order}:intent"}
                )
            )
            for order in orders
        )
    )
    refused = {
        o: a for o, a in zip(orders, answers, strict=True) if isinstance(a, stripe.StripeError)
    }
    assert refused, "six writes at once under a limit of two per second: some are refused"
    for error in refused.values():
        assert isinstance(error, stripe.RateLimitError)
        assert error.http_status == 429
        assert isinstance(error.json_body, dict)
        body = error.json_body["error"]
        assert (body["type"], body["code"]) == ("invalid_request_error", "rate_limit")
        assert "rate limit" in body["message"].lower()
        assert error.headers is not None and error.headers.get("Stripe-Should-Retry") == "true"
    after = sandbox.rate_limits()
    assert after["limits"]["write"] == 2
    assert after["refused"]["write"] - before["refused"]["write"] == len(refused)

    # A refused request did nothing and stored nothing: the same key, later, creates it once.
    for order in refused:
        assert sandbox.keys(f"{order}:") == []
        assert sandbox.effects(order).payment_intents == 0
    sandbox.set_faults("payments", rate_limit_per_s=0)  # no limit
    for order in refused:
        created = await client.v1.payment_intents.create_async(
            intent_params(order), {"idempotency_key": f"{order}:intent"}
        )
        assert created.metadata["order_id"] == order
    assert all(sandbox.effects(order).payment_intents == 1 for order in orders)


async def test_searches_have_a_lower_limit_of_their_own_and_count_as_reads(
    client: stripe.StripeClient, sandbox: SandboxAdmin
) -> None:
    sandbox.set_faults("payments", rate_limit_per_s=100, search_rate_limit_per_s=1)
    before = sandbox.rate_limits()
    query: Any = {"query": "metadata['order_id']:'rl-search'"}
    await client.v1.payment_intents.search_async(query)
    with pytest.raises(stripe.RateLimitError) as refused:
        await client.v1.payment_intents.search_async(query)
    assert isinstance(refused.value.json_body, dict)
    assert refused.value.json_body["error"]["code"] == "rate_limit"
    # Plain reads are under the basic limit still.
    listed = await client.v1.refunds.list_async({"limit": 1})
    assert isinstance(listed.data, list)
    after = sandbox.rate_limits()
    assert after["limits"] == {"read": 100, "write": 100, "search": 1}
    assert after["refused"]["search"] - before["refused"]["search"] == 1
    assert after["admitted"]["search"] - before["admitted"]["search"] == 1
    assert after["admitted"]["read"] - before["admitted"]["read"] == 2  # the search and the list


def test_the_process_defaults_are_stripes_test_mode_limits_unless_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RATE_LIMIT_ENV)
    monkeypatch.delenv(SEARCH_RATE_LIMIT_ENV)
    args = parse_args([])
    assert (args.rate_limit, args.search_rate_limit) == (25, 20)
    monkeypatch.setenv(RATE_LIMIT_ENV, "100")
    monkeypatch.setenv(SEARCH_RATE_LIMIT_ENV, "0")
    args = parse_args([])
    assert (args.rate_limit, args.search_rate_limit) == (100, 0)
    with pytest.raises(SystemExit) as refused:
        parse_args(["--rate-limit", "-1"])
    assert refused.value.code == 2


def answer(status: int, code: str) -> ProviderAnswer:
    return ProviderAnswer(status, json.dumps({"error": {"code": code, "message": "m"}}).encode())


def test_a_rate_limit_is_back_pressure_with_jitter_and_a_lock_is_not() -> None:
    limited = error_for_response("payments", answer(429, "rate_limit"))
    assert limited.type == PROVIDER_THROTTLED and not limited.non_retryable
    assert limited.next_retry_delay is not None
    assert 0.25 <= limited.next_retry_delay.total_seconds() <= 0.5  # first try: 0.5 s, jittered
    assert classify(limited) is None  # never counted by the intake breaker

    locked = error_for_response("payments", answer(429, "lock_timeout"))
    assert locked.type == PROVIDER_UNAVAILABLE and locked.next_retry_delay is None
    assert classify(locked) == PaymentOutcome.UNAVAILABLE


async def test_the_backoff_doubles_per_attempt_up_to_ten_seconds_and_spreads_retries() -> None:
    env = ActivityEnvironment()

    async def delay_at(attempt: int) -> float:
        env.info = dataclasses.replace(env.info, attempt=attempt)
        error = await env.run(_throttled)
        assert error.next_retry_delay is not None
        return error.next_retry_delay.total_seconds()

    async def _throttled() -> ApplicationError:
        return throttled("payments answered 429 rate_limit")

    third = [await delay_at(3) for _ in range(20)]
    assert all(1.0 <= delay <= 2.0 for delay in third)
    assert len(set(third)) > 1, "retries refused together must not come back together"
    late = [await delay_at(12) for _ in range(5)]
    assert all(5.0 <= delay <= 10.0 for delay in late)


# -- the search, only when the order's key may be gone ---------------------------------------


@pytest.fixture
async def payments(sandbox: SandboxAdmin) -> AsyncIterator[PaymentActivities]:
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with open_provider_clients(settings) as clients:
        yield PaymentActivities(clients.gateway)


@pytest.mark.parametrize(
    ("placed_ago", "searched"),
    [
        (timedelta(0), False),
        (REUSE_COVERED_BY_KEY - timedelta(minutes=5), False),
        (REUSE_COVERED_BY_KEY, True),
        (timedelta(days=3), True),
        (None, True),
    ],
    ids=[
        "placed-now",
        "placed-just-under-12h-ago",
        "placed-12h-ago",
        "placed-3-days-ago",
        "unknown",
    ],
)
async def test_an_order_is_searched_for_only_when_its_keys_may_have_been_pruned(
    payments: PaymentActivities,
    sandbox: SandboxAdmin,
    placed_ago: timedelta | None,
    searched: bool,
) -> None:
    order_id = f"placed-{uuid.uuid4().hex[:8]}"
    placed_at = None if placed_ago is None else datetime.now(UTC) - placed_ago
    request = PaymentIntentRequest(
        order_id=order_id,
        idempotency_key=f"{order_id}:payment-intent",
        amount=2500,
        currency="EUR",
        payment_method="pm_card_visa",
        capture_method="manual",
        placed_at=placed_at,
    )
    before = sandbox.rate_limits()["admitted"]["search"]
    intent = await ActivityEnvironment().run(payments.create_payment_intent, request)
    assert intent.status == "requires_confirmation"
    assert sandbox.effects(order_id).payment_intents == 1
    assert sandbox.rate_limits()["admitted"]["search"] - before == (1 if searched else 0)


# -- the worker under a low limit, every part a process --------------------------------------


async def test_orders_past_the_accounts_rate_all_complete_once_with_no_trip_and_none_parked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten orders at once against 4 writes, 4 reads and 2 searches a second."""
    for variable, value in {
        RATE_LIMIT_ENV: "4",  # read by the providers process
        SEARCH_RATE_LIMIT_ENV: "2",
        "INTAKE_MIN_ORDERS": "2",  # the worker's breaker trips on two failing orders
        "INTAKE_WINDOW": "120s",
        "INTAKE_AUTO_CLOSE": "off",
    }.items():
        monkeypatch.setenv(variable, value)
    stack = LocalStack(tmp_path)
    try:
        await asyncio.to_thread(stack.start, 1)
        client = await stack.connect()
        admin = stack.admin()
        before = admin.rate_limits()
        assert before["limits"] == {"read": 4, "write": 4, "search": 2}
        # Half are placed now (no search), half at an unknown time (searched first).
        orders = [
            make_order(**({"placed_at": datetime.now(UTC)} if index % 2 else {}))
            for index in range(10)
        ]
        await asyncio.gather(*(start_order(client, order) for order in orders))
        for order in orders:
            await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=180)
        await asyncio.gather(*(ship_order(client, order.id, UPS) for order in orders))
        for order in orders:
            await wait_for_status(client, order.id, OrderStatus.COMPLETED, within=60)

        after = admin.rate_limits()
        assert after["refused"]["write"] - before["refused"]["write"] > 0, "no write was refused"
        for order in orders:
            effects = admin.effects(order.id)
            assert (effects.payment_intents, effects.authorizations, effects.charges) == (1, 1, 1)
            assert (effects.picklists, effects.refunds) == (1, 0)
            assert effects.emails == {
                EmailTemplate.ORDER_CONFIRMATION: 1,
                EmailTemplate.ORDER_SHIPPED: 1,
            }
            view = await order_status(client, order.id)
            assert not [line for line in view.timeline if line.step == Step.OPERATOR]
        # Searches only for the orders placed at an unknown time.
        assert after["admitted"]["search"] - before["admitted"]["search"] >= 5

        status = await intake_status(client, TASK_QUEUE)
        assert status.mode == IntakeMode.OPEN
        with pytest.raises(RPCError) as never_started:
            await client.get_workflow_handle(breaker_id(TASK_QUEUE)).describe()
        assert never_started.value.status == RPCStatusCode.NOT_FOUND  # not even a trip attempt
        admin.close()
    finally:
        await asyncio.to_thread(stack.stop)
