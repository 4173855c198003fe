"""The payment activities on Stripe's semantics, through the official library, against the sandbox.

Each test runs the real activity (``ActivityEnvironment``) against the real sandbox gateway and
asserts the ledger: a lost answer retried under its key, an earlier effect adopted under a new
key, a captured intent that a cancel cannot take back, a second refund that never happens.
"""

import uuid
from collections.abc import AsyncIterator

import pytest
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
from orders.config.settings import ProviderSettings
from sandbox.admin_client import SandboxAdmin

RUN = ActivityEnvironment().run


@pytest.fixture
async def payments(sandbox: SandboxAdmin) -> AsyncIterator[PaymentActivities]:
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with open_provider_clients(settings) as clients:
        yield PaymentActivities(clients.gateway)


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
