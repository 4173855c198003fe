"""The payment activities on Stripe's semantics, through the official library, against the sandbox.

Each test runs the real activity (``ActivityEnvironment``) against the real sandbox gateway and
asserts the ledger: a lost answer retried under its key, an earlier effect adopted under a new
key, a captured intent that a cancel cannot take back, a second refund that never happens.
"""

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import stripe
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import PAYMENT_DECLINED, PROVIDER_REJECTED, PROVIDER_UNAVAILABLE
from activities.payment import (
    CancelPaymentRequest,
    CapturePaymentRequest,
    ConfirmPaymentRequest,
    PaymentActivities,
    PaymentIntent,
    PaymentIntentRequest,
    RefundRequest,
)
from activities.provider_client import open_provider_clients
from orders.config.settings import PaymentReturnUrl, ProviderSettings
from sandbox.admin_client import SandboxAdmin
from tests.support import stripe_against
from tests.test_stripe_contract import RETURN_URL_REQUIRED

RUN = ActivityEnvironment().run
RETURN_URL = PaymentReturnUrl("https://shop.example/orders/{order_id}/paid")


@pytest.fixture
async def payments(sandbox: SandboxAdmin) -> AsyncIterator[PaymentActivities]:
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with open_provider_clients(settings) as clients:
        yield PaymentActivities(clients.gateway, return_url=RETURN_URL)


@pytest.fixture
async def client(sandbox: SandboxAdmin) -> AsyncIterator[stripe.StripeClient]:
    """The official client against the sandbox: what an earlier build, or anyone, sends."""
    async with stripe_against(sandbox) as gateway:
        yield gateway


def intent_request(
    order_id: str, method: str = "pm_card_visa", key_of: str | None = None
) -> PaymentIntentRequest:
    """A manual-capture intent of 25.00 EUR for ``order_id`` (under ``key_of``'s key)."""
    return PaymentIntentRequest(
        order_id=order_id,
        idempotency_key=f"{key_of or order_id}:payment-intent",
        amount=2500,
        currency="EUR",
        payment_method=method,
        capture_method="manual",
    )


def confirm_request(order_id: str, intent_id: str) -> ConfirmPaymentRequest:
    key = f"{order_id}:payment-confirm"
    return ConfirmPaymentRequest(order_id=order_id, idempotency_key=key, intent_id=intent_id)


def cancel_request(order_id: str, intent_id: str) -> CancelPaymentRequest:
    key = f"{order_id}:payment-cancel"
    return CancelPaymentRequest(order_id=order_id, idempotency_key=key, intent_id=intent_id)


async def authorized(payments: PaymentActivities, order_id: str) -> PaymentIntent:
    """A manual-capture intent of ``order_id``, authorized."""
    intent = await RUN(payments.create_payment_intent, intent_request(order_id))
    assert (intent.status, intent.currency) == ("requires_confirmation", "EUR")
    answer = await RUN(payments.authorize_payment, confirm_request(order_id, intent.id))
    assert answer.authorized and not answer.charged
    return answer


def capture(order_id: str, intent_id: str, attempt: str = "") -> CapturePaymentRequest:
    key = f"{order_id}:payment-capture{attempt}"
    return CapturePaymentRequest(order_id=order_id, idempotency_key=key, intent_id=intent_id)


async def test_a_capture_whose_answer_was_lost_is_retried_under_its_key_once(
    payments: PaymentActivities, sandbox: SandboxAdmin
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    intent = await authorized(payments, order_id)
    sandbox.set_faults("payments", drop_next=1, key_prefix=f"{order_id}:payment-capture")

    with pytest.raises(ApplicationError) as lost:
        await RUN(payments.capture_payment, capture(order_id, intent.id))
    assert lost.value.type == PROVIDER_UNAVAILABLE and not lost.value.non_retryable
    assert sandbox.fired("payments", f"{order_id}:") == {"drop": 1}  # committed, answer lost
    charge = await RUN(payments.capture_payment, capture(order_id, intent.id))

    effects = sandbox.effects(order_id)
    assert (effects.authorizations, effects.charges, effects.charged_amount) == (1, 1, 2500)
    assert charge.payment_intent == intent.id and charge.id == intent.charge


async def test_a_capture_under_a_new_key_adopts_the_charge_an_earlier_try_made(
    payments: PaymentActivities, sandbox: SandboxAdmin
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    intent = await authorized(payments, order_id)
    first = await RUN(payments.capture_payment, capture(order_id, intent.id))
    # Stripe answers payment_intent_unexpected_state; the activity retrieves the intent.
    again = await RUN(payments.capture_payment, capture(order_id, intent.id, ":attempt-2"))
    assert again == first
    assert sandbox.effects(order_id).charges == 1


async def test_cancelling_a_captured_intent_answers_its_charge_and_it_is_refunded_once(
    payments: PaymentActivities, sandbox: SandboxAdmin
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    intent = await authorized(payments, order_id)
    charge = await RUN(payments.capture_payment, capture(order_id, intent.id))
    cancel = cancel_request(order_id, intent.id)
    answer = await RUN(payments.cancel_payment, cancel)
    assert answer.charged and answer.charge == charge.id

    refunds = [
        await RUN(
            payments.refund_payment,
            RefundRequest(
                order_id=order_id, idempotency_key=key, charge_id=charge.id, reason="cancelled"
            ),
        )
        for key in (f"{order_id}:refund", f"{order_id}:refund:attempt-2")
    ]
    # The second key finds the first refund: charge_already_refunded.
    assert refunds[0] == refunds[1]
    effects = sandbox.effects(order_id)
    assert (effects.refunds, effects.refunded_amount, effects.released) == (1, 2500, 0)


async def test_cancelling_an_authorized_intent_releases_it(
    payments: PaymentActivities, sandbox: SandboxAdmin
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    intent = await authorized(payments, order_id)
    cancel = cancel_request(order_id, intent.id)
    answer = await RUN(payments.cancel_payment, cancel)
    assert answer.status == "canceled" and not answer.charged
    stale = await RUN(payments.cancel_payment, cancel.model_copy(update={"idempotency_key": "x"}))
    assert stale.status == "canceled"  # a cancel under another key meets it canceled: as it is
    effects = sandbox.effects(order_id)
    assert (effects.authorizations, effects.released, effects.charges) == (1, 1, 0)


async def test_a_decline_at_authorization_is_a_business_outcome(
    payments: PaymentActivities, sandbox: SandboxAdmin
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    request = intent_request(order_id, "pm_card_chargeDeclinedInsufficientFunds")
    intent = await RUN(payments.create_payment_intent, request)
    with pytest.raises(ApplicationError) as declined:
        await RUN(payments.authorize_payment, confirm_request(order_id, intent.id))
    assert declined.value.type == PAYMENT_DECLINED and declined.value.non_retryable
    assert declined.value.details[0]["decline_code"] == "insufficient_funds"
    assert sandbox.effects(order_id).authorizations == 0


async def test_a_key_reused_with_other_parameters_is_refused_for_an_operator(
    payments: PaymentActivities,
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    first = await authorized(payments, order_id)
    other = intent_request(f"{order_id}-other", key_of=order_id)  # same key, other parameters
    with pytest.raises(ApplicationError) as refused:
        await RUN(payments.create_payment_intent, other)
    assert refused.value.type == PROVIDER_REJECTED and refused.value.non_retryable
    assert "payments answered 400" in str(refused.value) and first.id


async def test_the_confirm_names_the_orders_return_url_without_which_the_gateway_refuses(
    payments: PaymentActivities, sandbox: SandboxAdmin, client: stripe.StripeClient
) -> None:
    order_id = f"pay {uuid.uuid4().hex[:8]}"  # a space: the URL carries it encoded
    request = intent_request(order_id, "pm_card_authenticationRequired")
    intent = await RUN(payments.create_payment_intent, request)  # the Dashboard's methods
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.payment_intents.confirm_async(
            intent.id, {}, {"idempotency_key": f"{order_id}:bare-confirm"}
        )
    assert refused.value.http_status == 400
    assert refused.value.error is not None and refused.value.error.message == RETURN_URL_REQUIRED

    waiting = await RUN(payments.authorize_payment, confirm_request(order_id, intent.id))
    assert waiting.status == "requires_action" and waiting.authentication_url  # a link to email
    found = await client.v1.payment_intents.retrieve_async(intent.id)
    assert found.next_action is not None and found.next_action.redirect_to_url is not None
    back = f"https://shop.example/orders/{quote(order_id, safe='')}/paid"
    assert found.next_action.redirect_to_url.return_url == back
    assert sandbox.effects(order_id).authorizations == 0


async def confirmed_by_an_earlier_build(
    client: stripe.StripeClient, order_id: str, method: str
) -> str:
    """An intent confirmed under the step's key as a build without ``return_url`` did (on a
    cards-only intent, where that confirm runs); its id, once the key is shown to refuse the
    new build's confirm (which names a ``return_url``) as a key reused."""
    params: Any = {
        "amount": 2500,
        "currency": "eur",
        "payment_method": method,
        "capture_method": "manual",
        "payment_method_types": ["card"],
        "metadata": {"order_id": order_id},
    }
    created = await client.v1.payment_intents.create_async(
        params, {"idempotency_key": f"{order_id}:payment-intent"}
    )
    step_key: stripe.RequestOptions = {"idempotency_key": f"{order_id}:payment-confirm"}
    # Declined or refused, the answer is kept under the key: what the new build must find.
    with contextlib.suppress(stripe.CardError, stripe.InvalidRequestError):
        await client.v1.payment_intents.confirm_async(created.id, {}, step_key)
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.payment_intents.confirm_async(
            created.id, {"return_url": RETURN_URL.for_order(order_id)}, step_key
        )
    return created.id


@pytest.mark.parametrize(
    ("method", "status"),
    [("pm_card_visa", "requires_capture"), ("pm_card_authenticationRequired", "requires_action")],
)
async def test_a_confirm_an_earlier_build_sent_without_return_url_is_adopted_under_its_key(
    payments: PaymentActivities,
    sandbox: SandboxAdmin,
    client: stripe.StripeClient,
    method: str,
    status: str,
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    intent_id = await confirmed_by_an_earlier_build(client, order_id, method)
    adopted = await RUN(payments.authorize_payment, confirm_request(order_id, intent_id))
    assert (adopted.id, adopted.status) == (intent_id, status)
    effects = sandbox.effects(order_id)
    if status == "requires_capture":
        assert adopted.capture_before is not None  # read from its charge, as after any confirm
        assert (effects.authorizations, effects.authorized_amount) == (1, 2500)
    else:
        assert adopted.awaits_customer and effects.authorizations == 0


async def test_a_decline_an_earlier_build_met_without_return_url_is_the_decline(
    payments: PaymentActivities, sandbox: SandboxAdmin, client: stripe.StripeClient
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    intent_id = await confirmed_by_an_earlier_build(client, order_id, "pm_card_chargeDeclined")
    with pytest.raises(ApplicationError) as declined:
        await RUN(payments.authorize_payment, confirm_request(order_id, intent_id))
    assert declined.value.type == PAYMENT_DECLINED and declined.value.non_retryable
    assert declined.value.details[0]["decline_code"] == "generic_decline"
    assert sandbox.effects(order_id).authorizations == 0


async def test_an_earlier_confirm_that_did_nothing_under_the_key_is_left_to_an_operator(
    payments: PaymentActivities, sandbox: SandboxAdmin, client: stripe.StripeClient
) -> None:
    """The gateway kept a refusal under the key: no outcome to adopt, and the key can never
    confirm; the operator's retry sends a new one."""
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    sandbox.set_faults("payments", refuse_next=1, key_prefix=f"{order_id}:payment-confirm")
    intent_id = await confirmed_by_an_earlier_build(client, order_id, "pm_card_visa")
    with pytest.raises(ApplicationError) as refused:
        await RUN(payments.authorize_payment, confirm_request(order_id, intent_id))
    assert refused.value.type == PROVIDER_REJECTED and refused.value.non_retryable
    assert refused.value.details[0]["type"] == "idempotency_error"
    assert sandbox.effects(order_id).authorizations == 0


async def test_the_authorizations_deadline_comes_with_the_confirm_in_one_request(
    payments: PaymentActivities, sandbox: SandboxAdmin, client: stripe.StripeClient
) -> None:
    order_id = f"pay-{uuid.uuid4().hex[:8]}"
    intent = await RUN(payments.create_payment_intent, intent_request(order_id))
    before = sandbox.rate_limits()["admitted"]

    answer = await RUN(payments.authorize_payment, confirm_request(order_id, intent.id))

    after = sandbox.rate_limits()["admitted"]
    # The confirm alone: its charge expanded, no read of the charge after it.
    assert (after["write"] - before["write"], after["read"] - before["read"]) == (1, 0)
    assert answer.charge is not None
    charge = await client.v1.charges.retrieve_async(answer.charge)
    expected = charge.payment_method_details.card.capture_before  # type: ignore[union-attr]
    assert answer.capture_before == expected and expected is not None
