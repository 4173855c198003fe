"""The sandbox gateway against the OFFICIAL ``stripe`` library: every call an order makes, and
every error shape the worker must classify, with the money counted in the providers' ledger.

The same calls, with the same test payment methods, run against Stripe's test mode: nothing
here is sandbox-only except the fault injection and the ledger counts. Opt in with a test-mode
secret key, ``STRIPE_TEST_SECRET_KEY=sk_test_... pytest tests/test_stripe_contract.py``: every
test then runs a second time against Stripe itself, but those that read the sandbox's ledger or
inject its faults (they ask for the ``sandbox`` fixture), which are skipped there and say so.
Without a key, the Stripe runs are skipped with the line that says how to opt in.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import stripe

from sandbox.admin_client import SandboxAdmin

STRIPE_KEY_ENV = "STRIPE_TEST_SECRET_KEY"
"""A Stripe test-mode secret key: with it, the contract runs against Stripe too."""


def stripe_test_key(request: pytest.FixtureRequest) -> str:
    """The opted-in test-mode key, or a skip that says how to opt in (never a live key)."""
    key = os.environ.get(STRIPE_KEY_ENV, "").strip()
    if not key:
        pytest.skip(f"against Stripe's test mode only with {STRIPE_KEY_ENV}=sk_test_... set")
    if not key.startswith(("sk_test_", "rk_test_")):
        pytest.fail(f"{STRIPE_KEY_ENV} must be a test-mode key (sk_test_...), never a live one")
    if "sandbox" in request.fixturenames:
        pytest.skip("reads the sandbox's ledger or injects its faults: sandbox only")
    return key


@pytest.fixture(params=["sandbox", "stripe-test-mode"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[stripe.StripeClient]:
    """The official client against the sandbox, and (opted in) against Stripe's test mode."""
    http = stripe.AIOHTTPClient()
    if request.param == "sandbox":
        sandbox: SandboxAdmin = request.getfixturevalue("sandbox")
        target = stripe.StripeClient(
            sandbox.api_key,
            base_addresses={"api": sandbox.base_url},
            http_client=http,
            max_network_retries=0,
        )
    else:
        target = stripe.StripeClient(stripe_test_key(request), http_client=http)
    yield target
    await http.close_async()  # type: ignore[no-untyped-call]


@pytest.fixture
def order_id() -> str:
    return f"stripe-{uuid.uuid4().hex[:10]}"


def key(order_id: str, step: str) -> stripe.RequestOptions:
    return {"idempotency_key": f"{order_id}:{step}"}


def headers(obj: stripe.StripeObject) -> Mapping[str, str]:
    assert obj.last_response is not None
    return obj.last_response.headers


def charge_of(intent: stripe.PaymentIntent) -> str:
    assert isinstance(intent.latest_charge, str)
    return intent.latest_charge


async def create(
    client: stripe.StripeClient,
    order_id: str,
    method: str = "pm_card_visa",
    capture_method: str = "manual",
    amount: int = 5499,
) -> stripe.PaymentIntent:
    params: Any = {
        "amount": amount,
        "currency": "gbp",
        "payment_method": method,
        "capture_method": capture_method,
        "metadata": {"order_id": order_id, "customer_id": "cust-1"},
        "description": f"Order {order_id}",
    }
    return await client.v1.payment_intents.create_async(params, key(order_id, "create"))


async def authorized(client: stripe.StripeClient, order_id: str) -> stripe.PaymentIntent:
    intent = await create(client, order_id)
    return await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))


async def captured(client: stripe.StripeClient, order_id: str) -> stripe.PaymentIntent:
    intent = await authorized(client, order_id)
    return await client.v1.payment_intents.capture_async(intent.id, {}, key(order_id, "capture"))


def ledger(sandbox: SandboxAdmin, order_id: str) -> dict[str, Any]:
    counts: dict[str, Any] = httpx.get(
        f"{sandbox.base_url}/admin/ledger",
        params={"order_id": order_id},
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
    ).json()["orders"][order_id]
    return counts


async def test_create_with_manual_capture_and_metadata(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await create(client, order_id)
    assert intent.id.startswith("pi_") and intent.object == "payment_intent"
    assert (intent.amount, intent.currency, intent.capture_method, intent.status) == (
        5499,
        "gbp",
        "manual",
        "requires_confirmation",
    )
    assert intent.metadata.to_dict() == {"order_id": order_id, "customer_id": "cust-1"}
    assert (intent.amount_capturable, intent.amount_received, intent.latest_charge) == (0, 0, None)
    assert intent.payment_method == "pm_card_visa" and intent.livemode is False
    assert isinstance(intent.created, int) and intent.canceled_at is None
    assert headers(intent)["Request-Id"].startswith("req_")
    assert ledger(sandbox, order_id)["payment_intents"] == 1


async def test_confirm_authorizes_and_capture_moves_the_money(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await authorized(client, order_id)
    assert (intent.status, intent.amount_capturable, intent.amount_received) == (
        "requires_capture",
        5499,
        0,
    )
    charge = await client.v1.charges.retrieve_async(charge_of(intent))
    assert (charge.captured, charge.amount_captured, charge.paid) == (False, 0, True)
    counts = ledger(sandbox, order_id)
    assert (counts["authorizations"], counts["charges"], counts["charged_amount"]) == (1, 0, 0)

    done = await client.v1.payment_intents.capture_async(intent.id, {}, key(order_id, "capture"))

    assert (done.status, done.amount_received, done.amount_capturable) == ("succeeded", 5499, 0)
    assert done.latest_charge == intent.latest_charge
    charge = await client.v1.charges.retrieve_async(charge_of(done))
    assert (charge.captured, charge.amount_captured, charge.payment_intent) == (
        True,
        5499,
        intent.id,
    )
    counts = ledger(sandbox, order_id)
    assert (counts["authorizations"], counts["charges"], counts["charged_amount"]) == (1, 1, 5499)
    listed = await client.v1.charges.list_async({"payment_intent": intent.id})
    assert [item.id for item in listed.data] == [charge.id]


async def test_automatic_capture_succeeds_at_confirm(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await create(client, order_id, capture_method="automatic")
    done = await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    assert (done.status, done.amount_received) == ("succeeded", 5499)
    assert ledger(sandbox, order_id)["charged_amount"] == 5499


@pytest.mark.parametrize(
    ("method", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
        ("pm_card_chargeDeclinedFraudulent", "card_declined", "fraudulent"),
        ("pm_card_chargeDeclinedProcessingError", "processing_error", "processing_error"),
        ("pm_card_declined", "card_declined", "generic_decline"),
        ("pm_card_insufficient_funds", "card_declined", "insufficient_funds"),
        ("pm_card_expired", "expired_card", "expired_card"),
    ],
)
async def test_declining_cards_raise_card_error_and_the_decline_is_replayed(
    client: stripe.StripeClient,
    sandbox: SandboxAdmin,
    order_id: str,
    method: str,
    code: str,
    decline_code: str,
) -> None:
    intent = await create(client, order_id, method)
    with pytest.raises(stripe.CardError) as declined:
        await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    error = declined.value
    assert (error.http_status, error.code) == (402, code)
    assert error.error is not None and error.error.decline_code == decline_code
    assert error.error.type == "card_error" and error.user_message
    assert error.error.payment_intent is not None
    assert error.error.payment_intent.status == "requires_payment_method"
    assert (error.headers or {}).get("Idempotent-Replayed") is None
    with pytest.raises(stripe.CardError) as replayed:
        await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    assert replayed.value.http_body == error.http_body
    assert (replayed.value.headers or {})["Idempotent-Replayed"] == "true"
    now = await client.v1.payment_intents.retrieve_async(intent.id)
    assert now.status == "requires_payment_method" and now.payment_method is None
    assert now.last_payment_error is not None and now.last_payment_error.code == code
    # As in Stripe, the attempt made a failed charge, and it is the latest: a latest_charge
    # is no sign that money moved.
    assert error.error.charge is not None and now.latest_charge == error.error.charge
    failed = await client.v1.charges.retrieve_async(charge_of(now))
    assert (failed.status, failed.paid, failed.captured, failed.failure_code) == (
        "failed",
        False,
        False,
        code,
    )
    # A new key finds no payment method to try again with: nothing is charged.
    with pytest.raises(stripe.InvalidRequestError) as again:
        await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm-2"))
    assert again.value.code == "payment_intent_unexpected_state"
    counts = ledger(sandbox, order_id)
    assert (counts["authorizations"], counts["charges"]) == (0, 0)


async def test_a_declined_intent_confirmed_again_with_another_card_authorizes_once(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await create(client, order_id, "pm_card_chargeDeclined")
    with pytest.raises(stripe.CardError):
        await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    retried = await client.v1.payment_intents.confirm_async(
        intent.id, {"payment_method": "pm_card_visa"}, key(order_id, "confirm-visa")
    )
    assert (retried.status, retried.payment_method, retried.last_payment_error) == (
        "requires_capture",
        "pm_card_visa",
        None,
    )
    listed = await client.v1.charges.list_async({"payment_intent": intent.id})
    assert sorted(charge.status for charge in listed.data) == ["failed", "succeeded"]
    assert listed.data[0].id == retried.latest_charge  # newest first
    counts = ledger(sandbox, order_id)
    assert (counts["authorizations"], counts["charges"]) == (1, 0)


async def test_a_3d_secure_card_requires_action_until_the_customer_authenticates(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await create(client, order_id, "pm_card_authenticationRequired")
    waiting = await client.v1.payment_intents.confirm_async(
        intent.id, {"return_url": "https://shop.test/back"}, key(order_id, "confirm")
    )
    assert (waiting.status, waiting.latest_charge) == ("requires_action", None)
    assert waiting.next_action is not None and waiting.next_action.type == "redirect_to_url"
    redirect = waiting.next_action.redirect_to_url
    assert redirect is not None and redirect.return_url == "https://shop.test/back"
    assert redirect.url is not None and str(waiting.client_secret) in redirect.url
    assert ledger(sandbox, order_id)["authorizations"] == 0  # nothing authorized yet

    async with httpx.AsyncClient(timeout=10) as http:
        wrong = await http.get(redirect.url.replace("_secret_", "_secret_x"))
        page = await http.get(redirect.url)
        done = await http.post(f"{redirect.url}&outcome=complete")
    assert wrong.status_code == 404 and 'id="complete"' in page.text
    assert done.status_code == 303 and done.headers["location"] == "https://shop.test/back"
    authorized = await client.v1.payment_intents.retrieve_async(intent.id)
    assert (authorized.status, authorized.next_action) == ("requires_capture", None)
    assert ledger(sandbox, order_id)["authorizations"] == 1


async def test_a_failed_authentication_leaves_the_intent_waiting_for_another_card(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    del sandbox  # the sandbox's authentication page is clicked: Stripe's is a browser's
    intent = await create(client, order_id, "pm_card_threeDSecure2Required")
    waiting = await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "c"))
    assert waiting.next_action is not None and waiting.next_action.redirect_to_url is not None
    url = waiting.next_action.redirect_to_url.url
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(f"{url}&outcome=fail")).status_code == 200
    failed = await client.v1.payment_intents.retrieve_async(intent.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "payment_intent_authentication_failure"


async def test_cancel_of_an_authorization_releases_it(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await authorized(client, order_id)
    cancelled = await client.v1.payment_intents.cancel_async(
        intent.id, {"cancellation_reason": "requested_by_customer"}, key(order_id, "cancel")
    )
    assert (cancelled.status, cancelled.cancellation_reason) == (
        "canceled",
        "requested_by_customer",
    )
    assert isinstance(cancelled.canceled_at, int) and cancelled.amount_capturable == 0
    charge = await client.v1.charges.retrieve_async(charge_of(intent))
    assert (charge.captured, charge.amount_captured, charge.refunded) == (False, 0, True)
    counts = ledger(sandbox, order_id)
    assert counts | {"emails": {}} == counts | {
        "payment_intents": 1,
        "cancelled_intents": 1,
        "authorizations": 1,
        "charges": 0,
        "charged_amount": 0,
        "released": 1,
        "released_amount": 5499,
        "refunds": 0,
        "refunded_amount": 0,
    }
    # Nothing to refund, and nothing to capture any more.
    with pytest.raises(stripe.InvalidRequestError) as refund:
        await client.v1.refunds.create_async({"payment_intent": intent.id}, key(order_id, "rf"))
    assert refund.value.code == "charge_already_refunded"
    with pytest.raises(stripe.InvalidRequestError) as capture:
        await client.v1.payment_intents.capture_async(intent.id, {}, key(order_id, "capture"))
    assert capture.value.code == "payment_intent_unexpected_state"


@pytest.mark.parametrize("status", ["succeeded", "canceled"])
async def test_cancel_of_a_succeeded_or_canceled_intent_is_unexpected_state(
    client: stripe.StripeClient, order_id: str, status: str
) -> None:
    if status == "succeeded":
        intent = await captured(client, order_id)
    else:
        intent = await create(client, order_id)
        await client.v1.payment_intents.cancel_async(intent.id, {}, key(order_id, "cancel-1"))
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.payment_intents.cancel_async(intent.id, {}, key(order_id, "cancel"))
    error = refused.value
    assert (error.http_status, error.code) == (400, "payment_intent_unexpected_state")
    assert error.error is not None and error.error.payment_intent is not None
    assert error.error.payment_intent.status == status
    assert error.error.type == "invalid_request_error"


@pytest.mark.parametrize("verb", ["confirm", "capture"])
async def test_confirm_or_capture_of_a_succeeded_intent_is_unexpected_state(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str, verb: str
) -> None:
    intent = await captured(client, order_id)
    call = getattr(client.v1.payment_intents, f"{verb}_async")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await call(intent.id, {}, key(order_id, f"{verb}-again"))
    assert refused.value.code == "payment_intent_unexpected_state"
    assert refused.value.error is not None and refused.value.error.payment_intent is not None
    assert refused.value.error.payment_intent.id == intent.id
    counts = ledger(sandbox, order_id)
    assert (counts["authorizations"], counts["charges"], counts["charged_amount"]) == (1, 1, 5499)


async def test_retrieve_is_read_after_write_and_unknown_is_404(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await authorized(client, order_id)
    found = await client.v1.payment_intents.retrieve_async(intent.id)
    assert (found.status, found.latest_charge) == ("requires_capture", intent.latest_charge)
    expanded = await client.v1.payment_intents.retrieve_async(
        intent.id, {"expand": ["latest_charge"]}
    )
    assert isinstance(expanded.latest_charge, stripe.Charge)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.payment_intents.retrieve_async("pi_nope")
    assert (missing.value.http_status, missing.value.code, missing.value.param) == (
        404,
        "resource_missing",
        "intent",
    )


async def test_search_lags_writes(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    sandbox.set_faults("payments", search_lag_ms=60_000)
    intent = await create(client, order_id)
    query = f"metadata['order_id']:'{order_id}'"
    result = await client.v1.payment_intents.search_async({"query": query})
    assert result["object"] == "search_result" and result.data == []
    assert (await client.v1.payment_intents.retrieve_async(intent.id)).id == intent.id
    sandbox.set_faults("payments", search_lag_ms=300)
    await asyncio.sleep(0.4)
    found = await client.v1.payment_intents.search_async({"query": query})
    assert [item.id for item in found.data] == [intent.id]
    assert found.has_more is False and found["next_page"] is None
    assert found["url"] == "/v1/payment_intents/search"
    # A change lags too: search still sees the intent as it was before the confirm.
    await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    stale = await client.v1.payment_intents.search_async({"query": query})
    assert [item.status for item in stale.data] == ["requires_confirmation"]
    sandbox.set_faults("payments", search_lag_ms=0)
    both = f"{query} AND status:'requires_capture'"
    assert [i.id for i in (await client.v1.payment_intents.search_async({"query": both})).data] == [
        intent.id
    ]
    with pytest.raises(stripe.InvalidRequestError) as bad:
        await client.v1.payment_intents.search_async({"query": "order_id = 1"})
    assert bad.value.param == "query"


async def test_the_default_search_lag_hides_a_new_intent(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id)
    query = f"metadata['order_id']:'{order_id}'"
    assert (await client.v1.payment_intents.search_async({"query": query})).data == []
    await asyncio.sleep(1.1)  # the default lag is 1000 ms
    found = await client.v1.payment_intents.search_async({"query": query})
    assert [item.id for item in found.data] == [intent.id]


async def test_refund_by_payment_intent_once_and_listed(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await captured(client, order_id)
    refund = await client.v1.refunds.create_async(
        {"payment_intent": intent.id, "reason": "requested_by_customer", "metadata": {"a": "b"}},
        key(order_id, "refund"),
    )
    assert refund.id.startswith("re_") and refund.object == "refund"
    assert (refund.amount, refund.status, refund.currency, refund.reason) == (
        5499,
        "succeeded",
        "gbp",
        "requested_by_customer",
    )
    assert (refund.charge, refund.payment_intent) == (intent.latest_charge, intent.id)
    with pytest.raises(stripe.InvalidRequestError) as again:
        await client.v1.refunds.create_async({"payment_intent": intent.id}, key(order_id, "rf-2"))
    assert (again.value.http_status, again.value.code) == (400, "charge_already_refunded")
    listed = await client.v1.refunds.list_async({"payment_intent": intent.id})
    assert listed.to_dict()["object"] == "list"
    assert [item.id for item in listed.data] == [refund.id]
    by_charge = await client.v1.refunds.list_async({"charge": charge_of(intent)})
    assert [item.id for item in by_charge.data] == [refund.id]
    assert (await client.v1.refunds.retrieve_async(refund.id)).amount == 5499
    charge = await client.v1.charges.retrieve_async(charge_of(intent))
    assert (charge.refunded, charge.amount_refunded) == (True, 5499)
    counts = ledger(sandbox, order_id)
    assert (counts["charged_amount"], counts["refunds"], counts["refunded_amount"]) == (
        5499,
        1,
        5499,
    )


async def test_partial_refunds_and_amount_too_large(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await captured(client, order_id)
    await client.v1.refunds.create_async(
        {"charge": charge_of(intent), "amount": 5000}, key(order_id, "rf-1")
    )
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        await client.v1.refunds.create_async(
            {"payment_intent": intent.id, "amount": 500}, key(order_id, "rf-2")
        )
    assert (too_much.value.code, too_much.value.param) == ("amount_too_large", "amount")
    rest = await client.v1.refunds.create_async({"payment_intent": intent.id}, key(order_id, "rf3"))
    assert rest.amount == 499


async def test_an_authorization_is_not_refunded(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await authorized(client, order_id)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.refunds.create_async({"payment_intent": intent.id}, key(order_id, "rf"))
    assert refused.value.code == "charge_not_captured"
    fresh = await create(client, f"{order_id}-b")
    with pytest.raises(stripe.InvalidRequestError) as nothing:
        await client.v1.refunds.create_async({"payment_intent": fresh.id}, key(order_id, "rf-b"))
    assert nothing.value.param == "payment_intent"
    assert ledger(sandbox, order_id)["refunds"] == 0


async def test_a_replayed_key_answers_the_same_object(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    first = await create(client, order_id)
    again = await create(client, order_id)
    assert again.id == first.id
    assert headers(first).get("Idempotent-Replayed") is None
    assert headers(again)["Idempotent-Replayed"] == "true"
    assert headers(again)["Original-Request"] == headers(first)["Request-Id"]
    assert headers(again)["Request-Id"] != headers(first)["Request-Id"]
    assert ledger(sandbox, order_id)["payment_intents"] == 1


async def test_a_key_reused_with_other_parameters_is_an_idempotency_error(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    await create(client, order_id)
    with pytest.raises(stripe.IdempotencyError) as reused:
        await create(client, order_id, amount=100)
    assert reused.value.http_status == 400
    assert "can only be used with the same parameters" in reused.value.user_message
    assert ledger(sandbox, order_id)["payment_intents"] == 1


async def test_a_validation_error_is_not_stored_under_its_key(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    params: Any = {"amount": 100, "currency": "usd", "shipping_speed": "fast"}
    bad: Any
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await client.v1.payment_intents.create_async(params, key(order_id, "create"))
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "shipping_speed")
    for bad, code, param in (
        ({"currency": "usd"}, "parameter_missing", "amount"),
        ({"amount": "ten", "currency": "usd"}, "parameter_invalid_integer", "amount"),
        ({"amount": 100_000_000, "currency": "usd"}, "amount_too_large", "amount"),
        ({"amount": 1, "currency": "usd", "metadata": {"k" * 41: "v"}}, "parameter_invalid", None),
    ):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            await client.v1.payment_intents.create_async(bad, key(order_id, "create"))
        assert refused.value.code == code
        if param is not None:
            assert refused.value.param == param
        else:
            assert str(refused.value.param).startswith("metadata[")
    # Nothing was stored: the same key now creates the intent.
    intent = await create(client, order_id)
    assert headers(intent).get("Idempotent-Replayed") is None


@asynccontextmanager
async def confirm_held(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> AsyncIterator[stripe.PaymentIntent]:
    """A new intent whose confirm the gateway holds in flight for the block; released after it,
    the confirm must have authorized the card."""
    intent = await create(client, order_id)
    sandbox.set_faults("payments", hold_next=1, key_prefix=f"{order_id}:confirm")
    held = asyncio.create_task(
        client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    )
    try:
        await asyncio.to_thread(sandbox.wait_held, "payments", 1)
        yield intent
    finally:
        await asyncio.to_thread(sandbox.release, "payments")
    assert (await held).status == "requires_capture"


async def test_a_key_in_flight_is_409_idempotency_key_in_use(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    async with confirm_held(client, sandbox, order_id) as intent:
        with pytest.raises(stripe.APIError) as busy:
            await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
        # The library builds a 409's APIError without a code; the error object has it.
        assert busy.value.http_status == 409 and busy.value.error is not None
        assert (busy.value.error.type, busy.value.error.code) == (
            "idempotency_error",
            "idempotency_key_in_use",
        )
    assert ledger(sandbox, order_id)["authorizations"] == 1


async def test_an_intent_locked_by_a_held_confirm_refuses_cancel_with_lock_timeout(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    async with confirm_held(client, sandbox, order_id) as intent:
        with pytest.raises(stripe.RateLimitError) as locked:
            await client.v1.payment_intents.cancel_async(intent.id, {}, key(order_id, "cancel"))
        assert locked.value.http_status == 429 and locked.value.error is not None
        assert (locked.value.error.type, locked.value.error.code) == (
            "invalid_request_error",
            "lock_timeout",
        )
    # The lock_timeout was not stored: the same cancel key now releases the authorization.
    cancelled = await client.v1.payment_intents.cancel_async(intent.id, {}, key(order_id, "cancel"))
    assert cancelled.status == "canceled"
    assert headers(cancelled).get("Idempotent-Replayed") is None
    counts = ledger(sandbox, order_id)
    assert (counts["authorizations"], counts["charges"], counts["released"]) == (1, 0, 1)


async def test_a_wrong_or_missing_key_is_an_authentication_error(sandbox: SandboxAdmin) -> None:
    http = stripe.AIOHTTPClient()
    wrong = stripe.StripeClient(
        "sk_test_wrong_key_1234",
        base_addresses={"api": sandbox.base_url},
        http_client=http,
        max_network_retries=0,
    )
    try:
        with pytest.raises(stripe.AuthenticationError) as refused:
            await wrong.v1.payment_intents.retrieve_async("pi_any")
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    assert refused.value.http_status == 401
    assert "1234" in refused.value.user_message and "wrong" not in refused.value.user_message
    missing = await asyncio.to_thread(httpx.get, f"{sandbox.base_url}/v1/payment_intents/pi_any")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"


async def test_confirm_true_at_create_and_unknown_expand(
    client: stripe.StripeClient, order_id: str
) -> None:
    params: Any = {
        "amount": 50,  # Stripe's minimum charge in USD
        "currency": "usd",
        "payment_method": "pm_card_mastercard",
        "confirm": True,
        "metadata": {"order_id": order_id},
    }
    intent = await client.v1.payment_intents.create_async(params, key(order_id, "create"))
    assert (intent.status, intent.amount_received) == ("succeeded", 50)
    with pytest.raises(stripe.InvalidRequestError) as bad:
        await client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["customer"]})
    assert bad.value.param == "expand[0]"
