"""Payment at the gateway, on Stripe's API: create an intent, authorize it, capture it.

Phase one creates the payment intent with ``capture_method=manual`` (no money moves; its id
lands in history): the confirm then only authorizes the card (``requires_capture``) and the
money moves when the order captures it, once the warehouse has reserved the stock.

Every answer that matters for money is read from the intent itself, never from a search:
Stripe's search lags writes. An action the intent's status no longer allows (confirming a
confirmed intent under a new key, cancelling a captured one) is answered by Stripe with
``payment_intent_unexpected_state``; the activity then retrieves the intent (consistent, by
id) and goes by its status. Undoing a payment is decided by the gateway: the order cancels its
intent, which releases an authorization, is refused (429 ``lock_timeout``, retried) while a
confirm or capture is in flight, and is answered with the charge if the intent was captured;
that charge is then refunded once.
"""

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Literal

import stripe
from pydantic import BaseModel
from stripe.params import PaymentIntentConfirmParams, PaymentIntentCreateParams, RefundCreateParams
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import PAYMENT_DECLINED, PROVIDER_REJECTED
from activities.logging import log_step
from activities.requests import EffectRequest
from activities.stripe_client import (
    IDEMPOTENCY_ERROR,
    UNEXPECTED_STATE,
    StripeGateway,
    error_code,
    error_type,
)
from orders.config.settings import PaymentReturnUrl
from orders.domain.status import IDEMPOTENCY_KEY_LIFETIME, RefundStatus, Step
from orders.domain.stripe_currencies import from_stripe_amount, to_stripe_amount
from orders.intake.activities import PaymentOutcomes

CONFIRMABLE = frozenset({"requires_confirmation", "requires_payment_method"})
"""Intent statuses in which no card was charged or authorized yet."""
AUTHORIZED = "requires_capture"
AWAITING_CUSTOMER = frozenset({"requires_action", "processing"})
"""Intent statuses that are not authorized yet: 3-D Secure (or the bank) still has to answer."""
AUTHENTICATION_PENDING = "AuthenticationPending"
"""Error type of ``follow_authentication`` while the customer has not answered: retried."""
CAPTURED = "succeeded"
LATEST_CHARGE = "latest_charge"
"""Expanded on the confirm and on reads: the charge carries the authorization's deadline."""
CANCELED = "canceled"
ALREADY_REFUNDED = "charge_already_refunded"
REFUND_PENDING = "RefundPending"
"""Error type of ``follow_refund`` while the refund is pending: retried, slowly."""
REUSE_COVERED_BY_KEY = IDEMPOTENCY_KEY_LIFETIME / 2
"""An order placed less than this ago is not searched for: any earlier run of it created its
intent after it was placed, so under a day ago, and Stripe keeps the step's key (and replays
the first run's intent) for at least a day. Half a day leaves room for clocks that disagree."""
METADATA_VALUE_LIMIT = 500
"""Stripe's longest metadata value; a refund's free-text reason travels there (its ``reason``
field only takes Stripe's three words)."""


class PaymentIntentRequest(EffectRequest):
    """Phase 1: ask the gateway to prepare a charge."""

    amount: int
    """The order's total in its minor units (ISO 4217); sent in Stripe's (``to_stripe_amount``)."""
    currency: str
    payment_method: str
    replaces: list[str] = []
    """This order's earlier intents, when it authorizes again (its authorization expired):
    theirs, not another order's, so they do not make the order id look used before."""
    capture_method: Literal["automatic", "manual"] = "automatic"
    """``manual`` (what orders send): the confirm only authorizes and ``capture_payment`` moves
    the money; ``automatic``, Stripe's default, captures at the confirm."""
    placed_at: datetime | None = None
    """When the order was placed (``Order.placed_at``); unknown (older orders): searched."""


class PaymentIntent(BaseModel):
    """A prepared charge; its id lands in history before any money moves."""

    id: str
    amount: int
    """In the order's minor units (ISO 4217), as every amount the order sees."""
    currency: str
    status: str = "requires_confirmation"
    charge: str | None = None
    """The intent's latest charge: an authorization while ``requires_capture``, money taken
    once ``succeeded``."""
    capture_before: int | None = None
    """While authorized: until when (unix seconds) it can be captured, as the gateway says
    (Stripe: about 7 days); after it the gateway cancels the intent and releases the money."""
    authentication_url: str | None = None
    """While ``requires_action``: the page where the customer completes 3-D Secure (the
    intent's ``next_action.redirect_to_url.url``)."""

    @property
    def awaits_customer(self) -> bool:
        """True while the card is not authorized until the customer authenticates."""
        return self.status in AWAITING_CUSTOMER

    @property
    def charged(self) -> bool:
        """True when the money moved (captured): it can only be given back by a refund."""
        return self.status == CAPTURED and self.charge is not None

    @property
    def authorized(self) -> bool:
        """True while the card is authorized and not captured: a cancel releases it."""
        return self.status == AUTHORIZED


class ConfirmPaymentRequest(EffectRequest):
    """Phase 2: confirm the intent, which authorizes the card."""

    intent_id: str


class FollowAuthenticationRequest(EffectRequest):
    """Ask the gateway whether the customer authenticated (a read: the key is not sent)."""

    intent_id: str


class CapturePaymentRequest(EffectRequest):
    """Move the authorized money, once the warehouse has reserved the stock."""

    intent_id: str


class CancelPaymentRequest(EffectRequest):
    """Undo phase 1: the gateway cancels the intent, or says it was already charged."""

    intent_id: str


class Charge(BaseModel):
    """The money taken; capturing (or confirming) the same intent again returns this charge."""

    id: str
    payment_intent: str
    amount: int
    """In the order's minor units (ISO 4217)."""
    currency: str


class RefundRequest(EffectRequest):
    """Give back the whole charge."""

    charge_id: str
    reason: str


class Refund(BaseModel):
    """Money given back; a charge is refunded in full at most once."""

    id: str
    amount: int
    """In the order's minor units (ISO 4217)."""
    status: str = RefundStatus.SUCCEEDED
    """``succeeded`` (the money is back), ``pending`` (it may still fail) or ``failed``."""
    failure_reason: str | None = None
    """Stripe's reason, once it failed (``expired_or_canceled_card``, ``declined``...)."""

    @property
    def settled(self) -> bool:
        """True once the refund succeeded or failed: it will not change any more."""
        return self.status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED)


class FollowRefundRequest(EffectRequest):
    """Ask the gateway how a pending refund ended (a read: the key is not sent)."""

    refund_id: str


class PaymentActivities:
    """Activities that talk to the payment gateway."""

    def __init__(
        self,
        gateway: StripeGateway,
        outcomes: PaymentOutcomes | None = None,
        return_url: PaymentReturnUrl | None = None,
    ) -> None:
        self._gateway = gateway
        self._intents = gateway.v1.payment_intents
        self._outcomes = outcomes  # create and confirm report how they ended (intake breaker)
        self._return_url = return_url or PaymentReturnUrl()

    def _watch(self, order_id: str) -> AbstractContextManager[None]:
        return self._outcomes.watch(order_id) if self._outcomes else nullcontext()

    @activity.defn
    async def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        """Create the order's payment intent, or adopt the unconfirmed one the gateway has.

        An order id used again, after Temporal forgot its first run, is refused, so it is never
        charged twice: within 24 hours the step's key brings back the first run's intent, whose
        status shows it was confirmed; after that, Stripe's search (which lags writes by
        seconds, not days) finds it. The search is made only when the key may be gone: for an
        order placed ``REUSE_COVERED_BY_KEY`` ago or more, or at an unknown time. An operator's
        retry adopts an open intent of the order.
        """
        with self._watch(request.order_id):
            existing = None
            if request.adopt_existing or _keys_may_be_pruned(request.placed_at):
                existing = await self._existing_intent(request)
            if existing is not None:
                log_step(request.order_id, Step.PAYMENT_INTENT, f"adopted {existing.id}")
                return existing
            params: PaymentIntentCreateParams = {
                # The one place an amount goes to the gateway: in Stripe's scale (ISK x 100).
                "amount": to_stripe_amount(request.amount, request.currency),
                "currency": request.currency.lower(),
                "payment_method": request.payment_method,
                "capture_method": request.capture_method,
                "metadata": {"order_id": request.order_id},
            }
            created = await self._gateway.send(
                "POST /v1/payment_intents",
                lambda options: self._intents.create_async(params, options),
                idempotency_key=request.idempotency_key,
            )
            if _replayed(created):  # the first answer under this key: the intent may be past it
                created = await self._retrieve(created.id)
        intent = _intent(created)
        if intent.status not in CONFIRMABLE:
            raise _used_before(request.order_id, intent)
        log_step(request.order_id, Step.PAYMENT_INTENT, f"created {intent.id}")
        return intent

    async def _existing_intent(self, request: PaymentIntentRequest) -> PaymentIntent | None:
        """Refuse an order id another run confirmed; on an operator's retry, adopt its intent."""
        intents = [
            intent
            for intent in await self._search(request.order_id)
            if intent.id not in request.replaces
        ]
        if used := [intent for intent in intents if intent.status not in (*CONFIRMABLE, CANCELED)]:
            raise _used_before(request.order_id, used[0])
        if not request.adopt_existing:
            return None
        open_intents = [intent for intent in intents if intent.status in CONFIRMABLE]
        for intent in open_intents:
            if (intent.amount, intent.currency) != (request.amount, request.currency):
                raise ApplicationError(
                    f"order id {request.order_id} already has payment intent {intent.id} for "
                    f"{intent.amount} {intent.currency}; an order id can be used once",
                    type=PROVIDER_REJECTED,
                    non_retryable=True,
                )
        return open_intents[-1] if open_intents else None

    @activity.defn
    async def authorize_payment(self, request: ConfirmPaymentRequest) -> PaymentIntent:
        """Confirm a manual-capture intent: the card is authorized, no money moves yet.

        A decline raises a non-retryable ``PaymentDeclined`` error. An intent an earlier try
        already authorized (its answer lost, the operator retrying under a new key) is adopted.
        A card that needs 3-D Secure answers ``requires_action``: returned as it is (with the
        page where the customer authenticates), never as authorized.

        The confirm names the order's ``return_url`` (``PaymentReturnUrl``): Stripe refuses one
        without it for an intent with automatic payment methods, and sends the customer there
        after 3-D Secure. A confirm an earlier build sent under the same key without it is
        answered ``idempotency_error``: that confirm ran, so the intent is read and adopted
        (``_adopt_earlier_confirm``).
        """
        params: PaymentIntentConfirmParams = {
            "return_url": self._return_url.for_order(request.order_id),
            "expand": [LATEST_CHARGE],  # its capture_before, without a second request
        }
        with self._watch(request.order_id):
            try:
                intent = await self._act_on_intent(
                    request,
                    "confirm",
                    lambda options: self._intents.confirm_async(request.intent_id, params, options),
                    accept={AUTHORIZED, CAPTURED},
                )
            except ApplicationError as err:
                if error_type(err) != IDEMPOTENCY_ERROR:
                    raise
                intent = await self._adopt_earlier_confirm(request.intent_id, err)
        done = "awaits authentication" if intent.awaits_customer else "authorized"
        log_step(request.order_id, Step.PAYMENT_CONFIRM, f"{done} {intent.id}")
        return intent

    async def _adopt_earlier_confirm(
        self, intent_id: str, refusal: ApplicationError
    ) -> PaymentIntent:
        """The intent as an earlier confirm under this step's key left it.

        Stripe keeps a key only for a request that ran, so the intent shows that confirm's
        outcome, adopted as ``_act_on_intent`` adopts one after
        ``payment_intent_unexpected_state``: authorized, captured or waiting for the customer
        is returned; declined is the decline. An intent that shows no outcome (that confirm was
        refused) leaves the refusal standing: an operator's retry sends a new key.
        """
        found = await self._retrieve(intent_id)
        intent = _intent(found)
        if intent.authorized or intent.status == CAPTURED or intent.awaits_customer:
            return intent
        code = _last_error(found)
        if intent.status in CONFIRMABLE and code is not None:
            raise _declined(intent, code)
        raise refusal

    @activity.defn
    async def follow_authentication(self, request: FollowAuthenticationRequest) -> PaymentIntent:
        """The intent once the customer has answered 3-D Secure; retried while they have not.

        Authorized: returned with its ``capture_before``. Failed (or declined after it): a
        non-retryable ``PaymentDeclined`` with Stripe's code. Cancelled meanwhile: returned as
        it is. Still ``requires_action`` or ``processing``: a retryable
        ``AuthenticationPending``, so the step's retry policy asks again with no history event.
        """
        found = await self._retrieve(request.intent_id)
        intent = _intent(found)
        if intent.awaits_customer:
            raise ApplicationError(
                f"{intent.id} is still {intent.status}", type=AUTHENTICATION_PENDING
            )
        if intent.status in CONFIRMABLE:
            raise _declined(intent, _last_error(found) or "authentication_failed")
        log_step(request.order_id, Step.AUTHENTICATION, f"{intent.id} {intent.status}")
        return intent

    @activity.defn
    async def capture_payment(self, request: CapturePaymentRequest) -> Charge:
        """Capture the authorized money; capturing a captured intent returns its charge.

        An intent that can no longer be captured (its authorization released or expired) is a
        refusal: the order asks an operator.
        """
        return await self._take_money(
            request,
            "capture",
            lambda options: self._intents.capture_async(request.intent_id, options=options),
            Step.PAYMENT_CAPTURE,
            "captured",
        )

    async def _take_money(
        self,
        request: ConfirmPaymentRequest | CapturePaymentRequest,
        action: str,
        call: Callable[[stripe.RequestOptions], Awaitable[stripe.PaymentIntent]],
        step: Step,
        done: str,
    ) -> Charge:
        """POST the ``action`` that moves the intent's money; its (or an earlier try's) charge."""
        charge = _charge(await self._act_on_intent(request, action, call, accept={CAPTURED}))
        log_step(request.order_id, step, f"{done} {charge.id}")
        return charge

    @activity.defn
    async def cancel_payment(self, request: CancelPaymentRequest) -> PaymentIntent:
        """Cancel the intent so it can never be charged; its answer says if it already was.

        Cancelling an authorized intent releases the authorization. A captured intent stays
        captured and is answered as it is, its ``charge`` to be refunded. While a confirm or
        capture of the intent is in flight the gateway refuses (``lock_timeout``), which is
        retried: the cancel waits for that call's outcome instead of guessing it.
        """
        intent = await self._act_on_intent(
            request,
            "cancel",
            lambda options: self._intents.cancel_async(request.intent_id, options=options),
            accept={CAPTURED, CANCELED},
        )
        outcome = f"captured {intent.charge}, to refund" if intent.charged else intent.status
        log_step(request.order_id, Step.PAYMENT_CANCEL, f"{intent.id} {outcome}")
        return intent

    async def _act_on_intent(
        self,
        request: ConfirmPaymentRequest | CapturePaymentRequest | CancelPaymentRequest,
        action: str,
        call: Callable[[stripe.RequestOptions], Awaitable[stripe.PaymentIntent]],
        accept: set[str],
    ) -> PaymentIntent:
        """POST ``action`` on the intent, or adopt the intent if an earlier try got there.

        When Stripe answers that the intent's status no longer allows ``action``, the intent is
        retrieved and returned as it is if its status is in ``accept``.
        """
        try:
            answer = await self._gateway.send(
                f"POST /v1/payment_intents/{{intent}}/{action}",
                call,
                idempotency_key=request.idempotency_key,
            )
        except ApplicationError as err:
            if error_code(err) != UNEXPECTED_STATE:
                raise
            current = _intent(await self._retrieve(request.intent_id))
            if current.status not in accept:
                raise
            return current
        return _intent(answer)

    async def _search(self, order_id: str) -> list[PaymentIntent]:
        """The order's intents as Stripe's search shows them: seconds behind the writes."""
        found = await self._gateway.send(
            "GET /v1/payment_intents/search",
            lambda options: self._intents.search_async(
                {"query": f"metadata['order_id']:'{order_id}'"}, options
            ),
        )
        return [_intent(intent) for intent in found.data]

    async def _retrieve(self, intent_id: str) -> stripe.PaymentIntent:
        """The intent by id, its charge expanded (``_intent`` reads ``capture_before`` there)."""
        return await self._gateway.send(
            "GET /v1/payment_intents/{intent}",
            lambda options: self._intents.retrieve_async(
                intent_id, {"expand": [LATEST_CHARGE]}, options
            ),
        )

    @activity.defn
    async def refund_payment(self, request: RefundRequest) -> Refund:
        """Refund the charge in full, once, whatever the number of retries or keys.

        A charge already refunded in full (by an earlier try under another key) is answered by
        Stripe with ``charge_already_refunded``; its refund is then looked up and returned.
        """
        reason = request.reason[:METADATA_VALUE_LIMIT]
        params: RefundCreateParams = {
            "charge": request.charge_id,
            "metadata": {"order_id": request.order_id, "reason": reason},
        }
        try:
            created = await self._gateway.send(
                "POST /v1/refunds",
                lambda options: self._gateway.v1.refunds.create_async(params, options),
                idempotency_key=request.idempotency_key,
            )
            refund = _refund(created)
        except ApplicationError as err:
            if error_code(err) != ALREADY_REFUNDED:
                raise
            refund = await self._earlier_refund(request.charge_id, err)
        log_step(request.order_id, Step.REFUND, f"refund {refund.id} {refund.status}")
        return refund

    @activity.defn
    async def follow_refund(self, request: FollowRefundRequest) -> Refund:
        """The refund once it has succeeded or failed; retried (slowly) while it is pending.

        A pending refund raises a retryable ``RefundPending``: the step's retry policy asks
        again later, with no event in the order's history per ask.
        """
        found = await self._gateway.send(
            "GET /v1/refunds/{refund}",
            lambda options: self._gateway.v1.refunds.retrieve_async(
                request.refund_id, options=options
            ),
        )
        refund = _refund(found)
        if not refund.settled:
            raise ApplicationError(
                f"refund {refund.id} is still {refund.status}", type=REFUND_PENDING
            )
        log_step(request.order_id, Step.REFUND_OUTCOME, f"refund {refund.id} {refund.status}")
        return refund

    async def _earlier_refund(self, charge_id: str, refusal: ApplicationError) -> Refund:
        """The refund that already gave the charge back (a list is consistent, unlike search).

        A pending refund counts (it holds the money until it settles); a failed one does not.
        """
        listed = await self._gateway.send(
            "GET /v1/refunds",
            lambda options: self._gateway.v1.refunds.list_async({"charge": charge_id}, options),
        )
        holding = [refund for refund in listed.data if refund.status != RefundStatus.FAILED]
        if not holding:
            raise refusal
        return _refund(holding[0])


class DisputedPayment(BaseModel):
    """Whose payment a dispute takes back: the payment intent's order (its metadata)."""

    payment_intent: str
    order_id: str | None = None


class DisputeActivities:
    """What a dispute's workflow asks the gateway."""

    def __init__(self, gateway: StripeGateway) -> None:
        self._gateway = gateway

    @activity.defn
    async def order_of_payment(self, payment_intent: str) -> DisputedPayment:
        """The order whose payment intent this is (``metadata.order_id``), if it is ours.

        Stripe's dispute object has no order: its payment intent, retrieved by id, has.
        """
        intents = self._gateway.v1.payment_intents
        found = await self._gateway.send(
            "GET /v1/payment_intents/{intent}",
            lambda options: intents.retrieve_async(payment_intent, options=options),
        )
        metadata: dict[str, str] = found.metadata.to_dict() if found.metadata else {}
        order_id = metadata.get("order_id")
        return DisputedPayment(payment_intent=payment_intent, order_id=order_id or None)


def _intent(intent: stripe.PaymentIntent) -> PaymentIntent:
    """The order's view of a Stripe intent: currency in upper case, amount in ISO's scale."""
    latest = intent.latest_charge
    return PaymentIntent(
        id=intent.id,
        amount=_order_amount(intent.amount, intent.currency),
        currency=intent.currency.upper(),
        status=intent.status,
        charge=latest if isinstance(latest, str) or latest is None else latest.id,
        authentication_url=_redirect(intent),
        capture_before=(
            _capture_before(latest)
            if intent.status == AUTHORIZED and isinstance(latest, stripe.Charge)
            else None
        ),
    )


def _capture_before(charge: stripe.Charge) -> int | None:
    """Until when the authorization ``charge`` can be captured (its card's ``capture_before``)."""
    details = charge.payment_method_details
    card = getattr(details, "card", None) if details is not None else None
    capture_before = getattr(card, "capture_before", None) if card is not None else None
    return int(capture_before) if capture_before is not None else None


def _redirect(intent: stripe.PaymentIntent) -> str | None:
    """Where the customer authenticates an intent in ``requires_action``, if Stripe says."""
    action = intent.next_action
    redirect = getattr(action, "redirect_to_url", None) if action is not None else None
    url = getattr(redirect, "url", None) if redirect is not None else None
    return url if isinstance(url, str) else None


def _last_error(intent: stripe.PaymentIntent) -> str | None:
    """Why the intent's last attempt failed: the decline code, or Stripe's error code."""
    error = intent.last_payment_error
    if error is None:
        return None
    code = getattr(error, "decline_code", None) or getattr(error, "code", None)
    return code if isinstance(code, str) else None


def _declined(intent: PaymentIntent, code: str) -> ApplicationError:
    """The decline of an intent the gateway left unauthorized (``code``: why)."""
    return ApplicationError(
        f"{intent.id} was not authorized: {code}",
        {"decline_code": code},
        type=PAYMENT_DECLINED,
        non_retryable=True,
    )


def _refund(refund: stripe.Refund) -> Refund:
    """The order's view of a Stripe refund: amount in ISO's scale, status, failure reason."""
    return Refund(
        id=refund.id,
        amount=_order_amount(refund.amount, refund.currency),
        status=refund.status or RefundStatus.SUCCEEDED,
        failure_reason=getattr(refund, "failure_reason", None),
    )


def _order_amount(amount: int, currency: str | None) -> int:
    """An amount the gateway answered (Stripe's minor units) in the order's (ISO 4217)."""
    return from_stripe_amount(amount, currency or "")


def _charge(intent: PaymentIntent) -> Charge:
    """The captured charge of ``intent``."""
    assert intent.charge is not None, f"{intent.id} is {intent.status} without a charge"
    return Charge(
        id=intent.charge, payment_intent=intent.id, amount=intent.amount, currency=intent.currency
    )


def _replayed(obj: stripe.StripeObject) -> bool:
    """Whether the gateway answered from its idempotency store (an earlier try got through)."""
    response = obj.last_response
    return response is not None and response.headers.get("Idempotent-Replayed") == "true"


def _keys_may_be_pruned(placed_at: datetime | None) -> bool:
    """Whether an earlier run of an order placed at ``placed_at`` may have lost its key."""
    if placed_at is None:
        return True
    return abs(datetime.now(UTC) - placed_at) >= REUSE_COVERED_BY_KEY


def _used_before(order_id: str, intent: PaymentIntent) -> ApplicationError:
    """The refusal for an order id whose payment an earlier run of the same id confirmed."""
    return ApplicationError(
        f"order id {order_id} was already used: its payment intent {intent.id} is "
        f"{intent.status} from an earlier order with this id; nothing was charged again. "
        "Cancel this order, and place new orders under new ids",
        type=PROVIDER_REJECTED,
        non_retryable=True,
    )
