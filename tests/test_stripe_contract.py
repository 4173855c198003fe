"""The sandbox gateway and Stripe's test mode, through the OFFICIAL ``stripe`` library: every
call an order makes, every error shape the worker must classify, and the money each moved.

Every test runs against the sandbox gateway and, opted in, against Stripe's test mode, the same
body both times: ``STRIPE_TEST_SECRET_KEY=sk_test_... pytest tests/test_stripe_contract.py``.
Without a key, the Stripe runs are skipped with the line that says how to opt in. The two runs
differ only in the ``target`` (the API's address and key), so the code the Stripe run takes is
the code CI runs against the sandbox.

The money is counted through Stripe's API (``effects``: the order's intents by the list
endpoint, their charges and refunds), never in the sandbox's ledger, so every count means the
same on both. In the sandbox run, after each test, the sandbox's ledger for the order must
agree with what its API showed (``_the_sandbox_books_agree_with_its_api``): its own books and
its API never disagree. What only the sandbox can be made to do (hold a request, lag its
search on command, click its 3-D Secure page) is in ``tests/test_sandbox_gateway_faults.py``,
which also keeps this module from reaching the sandbox any other way.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import pytest
import stripe

from sandbox.admin_client import SandboxAdmin

STRIPE_KEY_ENV = "STRIPE_TEST_SECRET_KEY"
"""A Stripe test-mode secret key: with it, the contract runs against Stripe too."""
SANDBOX, STRIPE_TEST_MODE = "sandbox", "stripe-test-mode"
RETURN_URL = "https://shop.test/back"
"""Where the customer goes after 3-D Secure. Stripe answers a confirm with a ``redirect_to_url``
``next_action`` only when the confirm names one (else ``use_stripe_sdk``, for Stripe.js)."""
CARDS_ONLY = ["card"]
"""``payment_method_types`` of the contract's intents: without it, Stripe (API 2023-08-16 on)
offers the Dashboard's payment methods and refuses a confirm that names no ``return_url``."""
RETURN_URL_REQUIRED = (
    "A `return_url` must be specified because this Payment Intent is configured to "
    "automatically accept the payment methods enabled in the Dashboard, some of which may "
    "require a full page redirect to succeed. If you do not want to accept redirect-based "
    "payment methods, set `automatic_payment_methods[enabled]` to `true` and "
    "`automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and "
    "Payment Intents."
)
"""Stripe's refusal of such a confirm, word for word."""
CLOCK_SKEW_S = 60
"""How far this machine's clock may be ahead of the gateway's: the order's intents are listed
from that long before the test began (``created`` is the gateway's clock)."""
SEARCH_VISIBLE_WITHIN_S = 60.0
"""Stripe's word on search: under normal conditions, data is searchable within a minute."""


@dataclass(frozen=True)
class Target:
    """Where the contract runs: the API's address and a secret key for it."""

    name: str
    api_base: str
    secret_key: str


def stripe_test_key() -> str:
    """The opted-in test-mode key, or a skip that says how to opt in (never a live key)."""
    key = os.environ.get(STRIPE_KEY_ENV, "").strip()
    if not key:
        pytest.skip(f"against Stripe's test mode only with {STRIPE_KEY_ENV}=sk_test_... set")
    if not key.startswith(("sk_test_", "rk_test_")):
        pytest.fail(f"{STRIPE_KEY_ENV} must be a test-mode key (sk_test_...), never a live one")
    return key


@pytest.fixture(params=[SANDBOX, STRIPE_TEST_MODE])
def target(request: pytest.FixtureRequest) -> Target:
    """The sandbox gateway, and (opted in) Stripe's test mode."""
    if request.param == SANDBOX:
        sandbox: SandboxAdmin = request.getfixturevalue("sandbox")
        return Target(SANDBOX, sandbox.base_url, sandbox.api_key)
    return Target(STRIPE_TEST_MODE, stripe.DEFAULT_API_BASE, stripe_test_key())


def client_for(target: Target, secret_key: str, http: stripe.HTTPClient) -> stripe.StripeClient:
    """The official client as the worker builds it: its own retries off (Temporal retries)."""
    return stripe.StripeClient(
        secret_key,
        base_addresses={"api": target.api_base},
        http_client=http,
        max_network_retries=0,
    )


@pytest.fixture
async def client(target: Target) -> AsyncIterator[stripe.StripeClient]:
    """The official client against the target."""
    http = stripe.AIOHTTPClient()
    yield client_for(target, target.secret_key, http)
    await http.close_async()  # type: ignore[no-untyped-call]


_STARTED: dict[str, int] = {}
"""Each test's order id -> when the test began (unix seconds), where ``effects`` lists from."""


@pytest.fixture
def order_id() -> str:
    """A fresh order id, and the moment its test began."""
    order = f"stripe-{uuid.uuid4().hex[:10]}"
    _STARTED[order] = int(time.time())
    return order


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
    **more: Any,
) -> stripe.PaymentIntent:
    """A new intent, cards only unless ``more`` says otherwise (``payment_method_types=None``:
    the Dashboard's payment methods, as the worker creates its intents)."""
    params: Any = {
        "amount": amount,
        "currency": "gbp",
        "payment_method": method,
        "capture_method": capture_method,
        "payment_method_types": CARDS_ONLY,
        "metadata": {"order_id": order_id, "customer_id": "cust-1"},
        "description": f"Order {order_id}",
    }
    params.update(more)
    params = {name: value for name, value in params.items() if value is not None}
    return await client.v1.payment_intents.create_async(params, key(order_id, "create"))


async def authorized(client: stripe.StripeClient, order_id: str) -> stripe.PaymentIntent:
    intent = await create(client, order_id)
    return await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))


async def captured(client: stripe.StripeClient, order_id: str) -> stripe.PaymentIntent:
    intent = await authorized(client, order_id)
    return await client.v1.payment_intents.capture_async(intent.id, {}, key(order_id, "capture"))


# -- The money, counted through the API -------------------------------------------------------


@dataclass(frozen=True)
class Payments:
    """What the gateway's API shows of one order's payments; amounts in minor units.

    Each count is read from documented fields of Stripe's objects, so it means the same against
    Stripe and the sandbox (whose ledger counts the same things under the same names).
    """

    payment_intents: int
    cancelled_intents: int
    """Intents whose ``status`` is ``canceled``."""
    authorizations: int
    """Charges whose ``status`` is ``succeeded``: approved confirms, captured or not."""
    authorized_amount: int
    charges: int
    """Charges ``captured``: money moved (``amount_captured`` of it)."""
    charged_amount: int
    released: int
    """Authorizations let go uncaptured (a cancel, or expiry): ``refunded`` but never
    ``captured``; no money moved."""
    released_amount: int
    refunds: int
    """Refunds of captured money, whatever their ``status`` (a release is not one)."""
    refunded_amount: int
    ids: dict[str, list[str]]
    """``payment_intent``, ``charge`` (the authorizations) and ``refund`` ids, sorted."""

    def counts(self) -> dict[str, int]:
        """Every count and amount, without the ids."""
        return {name: value for name, value in asdict(self).items() if name != "ids"}


NOTHING = Payments(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, {}).counts()
"""Every count at zero: ``NOTHING | {"payment_intents": 1}`` is an order with one intent only."""


async def listed(page: stripe.ListObject[Any]) -> list[Any]:
    """Every item of a list, page after page (the official library's auto-paging)."""
    return [item async for item in page.auto_paging_iter()]


async def effects(client: stripe.StripeClient, order_id: str) -> Payments:
    """The order's payments as Stripe's API shows them, read through consistent lists only.

    The order's intents are those listed since its test began (``created[gte]``, less the clock
    skew) whose ``metadata.order_id`` is the order: Stripe's list has no metadata filter, and
    its search lags writes. Then each intent's charges and refunds, by ``payment_intent``.
    """
    since = _STARTED[order_id] - CLOCK_SKEW_S
    recent = await client.v1.payment_intents.list_async({"created": {"gte": since}, "limit": 100})
    intents = [i for i in await listed(recent) if i.metadata.to_dict().get("order_id") == order_id]
    charges: list[stripe.Charge] = []
    refunds: list[stripe.Refund] = []
    for intent in intents:
        of_intent: Any = {"payment_intent": intent.id, "limit": 100}
        charges += await listed(await client.v1.charges.list_async(of_intent))
        refunds += await listed(await client.v1.refunds.list_async(of_intent))
    approved = [charge for charge in charges if charge.status == "succeeded"]
    taken = [charge for charge in approved if charge.captured]
    let_go = [charge for charge in approved if charge.refunded and not charge.captured]
    captured_ids = {charge.id for charge in taken}
    given_back = [refund for refund in refunds if refund.charge in captured_ids]
    return Payments(
        payment_intents=len(intents),
        cancelled_intents=sum(intent.status == "canceled" for intent in intents),
        authorizations=len(approved),
        authorized_amount=sum(charge.amount for charge in approved),
        charges=len(taken),
        charged_amount=sum(charge.amount_captured for charge in taken),
        released=len(let_go),
        released_amount=sum(charge.amount for charge in let_go),
        refunds=len(given_back),
        refunded_amount=sum(refund.amount for refund in given_back),
        ids={
            "payment_intent": sorted(intent.id for intent in intents),
            "charge": sorted(charge.id for charge in approved),
            "refund": sorted(refund.id for refund in given_back),
        },
    )


@pytest.fixture(autouse=True)
async def _the_sandbox_books_agree_with_its_api(
    request: pytest.FixtureRequest, target: Target, client: stripe.StripeClient, order_id: str
) -> AsyncIterator[None]:
    """In the sandbox run, after each test: its ledger and its API agree on the order's money.

    The tests count through the API; this keeps the sandbox's own books honest against it.
    """
    sandbox: SandboxAdmin | None = (
        request.getfixturevalue("sandbox") if target.name == SANDBOX else None
    )
    yield
    if sandbox is None:
        return
    shown = await effects(client, order_id)
    books = await asyncio.to_thread(sandbox.effects, order_id)
    assert shown.counts() == {name: getattr(books, name) for name in shown.counts()}
    assert shown.ids == {kind: sorted(books.ids_of(kind)) for kind in shown.ids}


async def test_create_with_manual_capture_and_metadata(
    client: stripe.StripeClient, order_id: str
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
    # Stripe makes a PaymentMethod of its test card token: an id of its own, pm_...
    assert str(intent.payment_method).startswith("pm_") and intent.livemode is False
    assert isinstance(intent.created, int) and intent.canceled_at is None
    assert headers(intent)["Request-Id"].startswith("req_")
    assert (await effects(client, order_id)).counts() == NOTHING | {"payment_intents": 1}


async def test_confirm_authorizes_and_capture_moves_the_money(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await authorized(client, order_id)
    assert (intent.status, intent.amount_capturable, intent.amount_received) == (
        "requires_capture",
        5499,
        0,
    )
    charge = await client.v1.charges.retrieve_async(charge_of(intent))
    assert (charge.captured, charge.amount_captured, charge.paid) == (False, 0, True)
    seen = await effects(client, order_id)
    assert (seen.authorizations, seen.authorized_amount, seen.charges, seen.charged_amount) == (
        1,
        5499,
        0,
        0,
    )

    done = await client.v1.payment_intents.capture_async(intent.id, {}, key(order_id, "capture"))

    assert (done.status, done.amount_received, done.amount_capturable) == ("succeeded", 5499, 0)
    assert done.latest_charge == intent.latest_charge
    charge = await client.v1.charges.retrieve_async(charge_of(done))
    assert (charge.captured, charge.amount_captured, charge.payment_intent) == (
        True,
        5499,
        intent.id,
    )
    seen = await effects(client, order_id)
    assert (seen.authorizations, seen.charges, seen.charged_amount) == (1, 1, 5499)
    listing = await client.v1.charges.list_async({"payment_intent": intent.id})
    assert [item.id for item in listing.data] == [charge.id]


async def test_automatic_capture_succeeds_at_confirm(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id, capture_method="automatic")
    done = await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    assert (done.status, done.amount_received) == ("succeeded", 5499)
    seen = await effects(client, order_id)
    assert (seen.authorizations, seen.charges, seen.charged_amount) == (1, 1, 5499)


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
    seen = await effects(client, order_id)
    assert (seen.payment_intents, seen.authorizations, seen.charges) == (1, 0, 0)


async def test_a_declined_intent_confirmed_again_with_another_card_authorizes_once(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id, "pm_card_chargeDeclined")
    with pytest.raises(stripe.CardError):
        await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    retried = await client.v1.payment_intents.confirm_async(
        intent.id, {"payment_method": "pm_card_visa"}, key(order_id, "confirm-visa")
    )
    assert (retried.status, retried.last_payment_error) == ("requires_capture", None)
    assert str(retried.payment_method).startswith("pm_")
    listing = await client.v1.charges.list_async({"payment_intent": intent.id})
    assert sorted(charge.status for charge in listing.data) == ["failed", "succeeded"]
    assert listing.data[0].id == retried.latest_charge  # newest first
    seen = await effects(client, order_id)
    assert (seen.authorizations, seen.charges) == (1, 0)


@pytest.mark.parametrize(
    "method", ["pm_card_authenticationRequired", "pm_card_threeDSecure2Required"]
)
async def test_a_3d_secure_card_waits_for_the_customer_and_nothing_is_authorized_until_then(
    client: stripe.StripeClient, order_id: str, method: str
) -> None:
    intent = await create(client, order_id, method)
    waiting = await client.v1.payment_intents.confirm_async(
        intent.id, {"return_url": RETURN_URL}, key(order_id, "confirm")
    )
    assert (waiting.status, waiting.latest_charge, waiting.amount_capturable) == (
        "requires_action",
        None,
        0,
    )
    assert waiting.next_action is not None and waiting.next_action.type == "redirect_to_url"
    redirect = waiting.next_action.redirect_to_url
    assert redirect is not None and redirect.return_url == RETURN_URL
    assert str(redirect.url).startswith(("https://", "http://"))  # the customer's page
    assert (await effects(client, order_id)).counts() == NOTHING | {"payment_intents": 1}
    # The customer never authenticates: the shop cancels, and nothing was ever held.
    cancelled = await client.v1.payment_intents.cancel_async(
        intent.id, {"cancellation_reason": "abandoned"}, key(order_id, "cancel")
    )
    assert (cancelled.status, cancelled.next_action, cancelled.amount_capturable) == (
        "canceled",
        None,
        0,
    )
    assert (await effects(client, order_id)).counts() == NOTHING | {
        "payment_intents": 1,
        "cancelled_intents": 1,
    }


async def test_cancel_of_an_authorization_releases_it(
    client: stripe.StripeClient, order_id: str
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
    assert (await effects(client, order_id)).counts() == NOTHING | {
        "payment_intents": 1,
        "cancelled_intents": 1,
        "authorizations": 1,
        "authorized_amount": 5499,
        "released": 1,
        "released_amount": 5499,
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


async def test_a_3d_secure_card_confirmed_without_a_return_url_gets_stripe_js_s_next_action(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id, "pm_card_authenticationRequired")
    waiting = await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    assert waiting.status == "requires_action"
    assert waiting.next_action is not None and waiting.next_action.type == "use_stripe_sdk"
    assert getattr(waiting.next_action, "redirect_to_url", None) is None  # no link to email
    assert (await effects(client, order_id)).counts() == NOTHING | {"payment_intents": 1}


async def test_an_intent_with_the_dashboards_payment_methods_is_confirmed_only_with_a_return_url(
    client: stripe.StripeClient, order_id: str
) -> None:
    """The worker creates its intents so (no ``payment_method_types``), and confirms them with
    a ``return_url``; the same intent confirmed without one is refused, nothing authorized."""
    intent = await create(client, order_id, payment_method_types=None)
    methods = intent.automatic_payment_methods
    assert methods is not None and methods.enabled is True
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    error = refused.value
    assert (error.http_status, error.error and error.error.type) == (400, "invalid_request_error")
    assert error.error is not None and error.error.message == RETURN_URL_REQUIRED
    assert (await client.v1.payment_intents.retrieve_async(intent.id)).status == (
        "requires_confirmation"
    )
    confirmed = await client.v1.payment_intents.confirm_async(
        intent.id, {"return_url": RETURN_URL}, key(order_id, "confirm-with-return-url")
    )
    assert confirmed.status == "requires_capture"
    assert (await effects(client, order_id)).counts()["authorizations"] == 1


async def test_a_create_and_confirm_needs_a_return_url_unless_redirects_are_never_allowed(
    client: stripe.StripeClient, order_id: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await create(client, order_id, payment_method_types=None, confirm=True)
    assert refused.value.error is not None
    assert refused.value.error.message == RETURN_URL_REQUIRED
    assert (await effects(client, order_id)).counts() == NOTHING  # nothing created
    params: Any = {
        "amount": 5499,
        "currency": "gbp",
        "payment_method": "pm_card_visa",
        "capture_method": "manual",
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "confirm": True,
        "metadata": {"order_id": order_id},
    }
    authorized = await client.v1.payment_intents.create_async(
        params, key(order_id, "create-no-redirects")
    )
    assert authorized.status == "requires_capture"
    assert authorized.automatic_payment_methods is not None
    assert authorized.automatic_payment_methods.allow_redirects == "never"


@pytest.mark.parametrize("verb", ["confirm", "capture"])
async def test_confirm_or_capture_of_a_succeeded_intent_is_unexpected_state(
    client: stripe.StripeClient, order_id: str, verb: str
) -> None:
    intent = await captured(client, order_id)
    call = getattr(client.v1.payment_intents, f"{verb}_async")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await call(intent.id, {}, key(order_id, f"{verb}-again"))
    assert refused.value.code == "payment_intent_unexpected_state"
    assert refused.value.error is not None and refused.value.error.payment_intent is not None
    assert refused.value.error.payment_intent.id == intent.id
    seen = await effects(client, order_id)
    assert (seen.authorizations, seen.charges, seen.charged_amount) == (1, 1, 5499)


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


async def test_retrieve_and_list_see_a_new_intent_at_once_and_search_in_time(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id)
    assert (await client.v1.payment_intents.retrieve_async(intent.id)).id == intent.id
    assert (await effects(client, order_id)).ids["payment_intent"] == [intent.id]
    # Search lags writes (never read-after-write), but finds the intent within its bound.
    query = f"metadata['order_id']:'{order_id}'"
    deadline = time.monotonic() + SEARCH_VISIBLE_WITHIN_S
    while not (found := await client.v1.payment_intents.search_async({"query": query})).data:
        assert time.monotonic() < deadline, f"search never found {intent.id}"
        await asyncio.sleep(0.5)
    assert [item.id for item in found.data] == [intent.id]
    assert found["object"] == "search_result" and found.has_more is False
    assert found["next_page"] is None and found["url"] == "/v1/payment_intents/search"
    with pytest.raises(stripe.InvalidRequestError) as bad:
        await client.v1.payment_intents.search_async({"query": "order_id = 1"})
    assert bad.value.param == "query"


async def test_intents_are_listed_newest_first_by_created_a_page_at_a_time(
    client: stripe.StripeClient, order_id: str
) -> None:
    since = int(time.time()) - CLOCK_SKEW_S
    older = await create(client, order_id)
    newer = await create(client, f"{order_id}-b")
    window: Any = {"created": {"gte": since}, "limit": 1}
    first = await client.v1.payment_intents.list_async(window)
    assert [item.id for item in first.data] == [newer.id] and first.has_more is True
    assert first["url"] == "/v1/payment_intents"
    next_page: Any = {**window, "starting_after": newer.id}
    after = await client.v1.payment_intents.list_async(next_page)
    assert [item.id for item in after.data] == [older.id]
    page_before: Any = {**window, "ending_before": older.id}
    before = await client.v1.payment_intents.list_async(page_before)
    assert [item.id for item in before.data] == [newer.id]
    future: Any = {"created": {"gt": int(time.time()) + CLOCK_SKEW_S}}
    assert (await client.v1.payment_intents.list_async(future)).data == []


async def test_refund_by_payment_intent_once_and_listed(
    client: stripe.StripeClient, order_id: str
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
    seen = await effects(client, order_id)
    assert (seen.charged_amount, seen.refunds, seen.refunded_amount) == (5499, 1, 5499)


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
    seen = await effects(client, order_id)
    assert (seen.charged_amount, seen.refunds, seen.refunded_amount) == (5499, 2, 5499)


async def test_an_authorization_is_not_refunded(client: stripe.StripeClient, order_id: str) -> None:
    intent = await authorized(client, order_id)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.refunds.create_async({"payment_intent": intent.id}, key(order_id, "rf"))
    assert refused.value.code == "charge_not_captured"
    fresh = await create(client, f"{order_id}-b")
    with pytest.raises(stripe.InvalidRequestError) as nothing:
        await client.v1.refunds.create_async({"payment_intent": fresh.id}, key(order_id, "rf-b"))
    assert nothing.value.param == "payment_intent"
    seen = await effects(client, order_id)
    assert (seen.payment_intents, seen.authorizations, seen.refunds) == (1, 1, 0)


async def test_a_replayed_key_answers_the_same_object(
    client: stripe.StripeClient, order_id: str
) -> None:
    first = await create(client, order_id)
    again = await create(client, order_id)
    assert again.id == first.id
    assert headers(first).get("Idempotent-Replayed") is None
    assert headers(again)["Idempotent-Replayed"] == "true"
    assert headers(again)["Original-Request"] == headers(first)["Request-Id"]
    assert headers(again)["Request-Id"] != headers(first)["Request-Id"]
    assert (await effects(client, order_id)).ids["payment_intent"] == [first.id]


async def test_a_key_reused_with_other_parameters_is_an_idempotency_error(
    client: stripe.StripeClient, order_id: str
) -> None:
    await create(client, order_id)
    with pytest.raises(stripe.IdempotencyError) as reused:
        await create(client, order_id, amount=100)
    assert reused.value.http_status == 400
    assert "can only be used with the same parameters" in reused.value.user_message
    assert (await effects(client, order_id)).counts() == NOTHING | {"payment_intents": 1}


async def test_a_validation_error_is_not_stored_under_its_key(
    client: stripe.StripeClient, order_id: str
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


async def test_payment_method_types_and_automatic_ones_are_refused_together(
    client: stripe.StripeClient, order_id: str
) -> None:
    params: Any = {
        "amount": 100,
        "currency": "usd",
        "payment_method_types": CARDS_ONLY,
        "automatic_payment_methods": {"enabled": True},
    }
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.payment_intents.create_async(params, key(order_id, "create"))
    assert refused.value.http_status == 400
    assert "payment_method_types" in refused.value.user_message
    assert "automatic_payment_methods" in refused.value.user_message
    assert (await effects(client, order_id)).counts() == NOTHING


async def test_a_wrong_or_missing_key_is_an_authentication_error(target: Target) -> None:
    http = stripe.AIOHTTPClient()
    wrong = client_for(target, "sk_test_wrong_key_1234", http)
    try:
        with pytest.raises(stripe.AuthenticationError) as refused:
            await wrong.v1.payment_intents.retrieve_async("pi_any")
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    assert refused.value.http_status == 401
    assert "1234" in refused.value.user_message and "wrong" not in refused.value.user_message
    missing = await asyncio.to_thread(httpx.get, f"{target.api_base}/v1/payment_intents/pi_any")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"


async def test_confirm_true_at_create_and_unknown_expand(
    client: stripe.StripeClient, order_id: str
) -> None:
    params: Any = {
        "amount": 50,  # Stripe's minimum charge in USD
        "currency": "usd",
        "payment_method": "pm_card_mastercard",
        "payment_method_types": CARDS_ONLY,
        "confirm": True,
        "metadata": {"order_id": order_id},
    }
    intent = await client.v1.payment_intents.create_async(params, key(order_id, "create"))
    assert (intent.status, intent.amount_received) == ("succeeded", 50)
    with pytest.raises(stripe.InvalidRequestError) as bad:
        await client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["amount"]})
    assert bad.value.param == "expand[0]"
