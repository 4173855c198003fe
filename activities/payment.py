"""Two-phase payment at the gateway: create an intent (no money moves), then confirm it.

Undoing a payment is decided by the gateway, never guessed from a listing: the order cancels
its intent, which the gateway refuses while a confirm for it is still in flight and answers with
the charge if the intent was confirmed; that charge is then refunded.
"""

from contextlib import AbstractContextManager, nullcontext

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import PROVIDER_REJECTED
from activities.intake import PaymentOutcomes
from activities.logging import log_step
from activities.provider_client import ProviderClient
from activities.requests import EffectRequest
from domain.status import Step


class PaymentIntentRequest(EffectRequest):
    """Phase 1: ask the gateway to prepare a charge."""

    amount: int
    currency: str
    payment_method: str


class PaymentIntent(BaseModel):
    """A prepared charge; its id lands in history before any money moves."""

    id: str
    amount: int
    currency: str
    status: str = "requires_confirmation"
    charge: str | None = None
    """The charge id once the intent is confirmed."""

    @property
    def charged(self) -> bool:
        """True when the gateway confirmed this intent: money moved."""
        return self.status == "succeeded" and self.charge is not None


class ConfirmPaymentRequest(EffectRequest):
    """Phase 2: move the money for an intent."""

    intent_id: str


class CancelPaymentRequest(EffectRequest):
    """Undo phase 1: the gateway cancels the intent, or says it was already charged."""

    intent_id: str


class Charge(BaseModel):
    """The money taken; confirming the same intent again returns this same charge."""

    id: str
    payment_intent: str
    amount: int
    currency: str


class RefundRequest(EffectRequest):
    """Give back the whole charge."""

    charge_id: str
    reason: str


class Refund(BaseModel):
    """Money given back; refunding a refunded charge in full returns this same refund."""

    id: str
    amount: int


class PaymentActivities:
    """Activities that talk to the payment gateway."""

    def __init__(self, gateway: ProviderClient, outcomes: PaymentOutcomes | None = None) -> None:
        self._gateway = gateway
        self._outcomes = outcomes  # create and confirm report how they ended (intake breaker)

    def _watch(self, order_id: str) -> AbstractContextManager[None]:
        return self._outcomes.watch(order_id) if self._outcomes else nullcontext()

    @activity.defn
    async def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        """Create the order's payment intent, or adopt the unconfirmed one the gateway has.

        The gateway is asked first, whatever the key: an operator's retry after an answer was
        lost adopts the intent the earlier try created. An intent this order id already
        confirmed was charged by an earlier run of the same order id that Temporal no longer
        holds (its retention passed); that is refused, so the id is never charged twice.
        """
        with self._watch(request.order_id):
            existing = await self._existing_intent(request)
            if existing is not None:
                log_step(request.order_id, Step.PAYMENT_INTENT, f"adopted {existing.id}")
                return existing
            body = request.model_dump(include={"order_id", "amount", "currency", "payment_method"})
            key = request.idempotency_key
            answer = await self._gateway.post("/intents", body, idempotency_key=key)
        intent = PaymentIntent.model_validate(answer)
        log_step(request.order_id, Step.PAYMENT_INTENT, f"created {intent.id}")
        return intent

    async def _existing_intent(self, request: PaymentIntentRequest) -> PaymentIntent | None:
        listing = await self._gateway.get("/intents", {"order_id": request.order_id})
        intents = [PaymentIntent.model_validate(intent) for intent in listing["data"]]
        if charged := [intent for intent in intents if intent.charged]:
            raise ApplicationError(
                f"order id {request.order_id} was already charged ({charged[0].charge}) by an "
                "earlier order with this id; nothing was charged again. Cancel this order, "
                "and place new orders under new ids",
                type=PROVIDER_REJECTED,
                non_retryable=True,
            )
        open_intents = [i for i in intents if i.status == "requires_confirmation"]
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
    async def confirm_payment(self, request: ConfirmPaymentRequest) -> Charge:
        """Confirm the intent; a decline raises a non-retryable ``PaymentDeclined`` error."""
        with self._watch(request.order_id):
            answer = await self._gateway.post(
                f"/intents/{request.intent_id}/confirm", {}, idempotency_key=request.idempotency_key
            )
        charge = Charge.model_validate(answer)
        log_step(request.order_id, Step.PAYMENT_CONFIRM, f"charged {charge.id}")
        return charge

    @activity.defn
    async def cancel_payment(self, request: CancelPaymentRequest) -> PaymentIntent:
        """Cancel the intent so it can never be charged; its answer says if it already was.

        While a confirm for the intent is in flight the gateway answers 409, which is retried:
        the cancel waits for that confirm's outcome instead of guessing it.
        """
        answer = await self._gateway.post(
            f"/intents/{request.intent_id}/cancel", {}, idempotency_key=request.idempotency_key
        )
        intent = PaymentIntent.model_validate(answer)
        outcome = f"charged {intent.charge}, to refund" if intent.charged else intent.status
        log_step(request.order_id, Step.PAYMENT_CANCEL, f"{intent.id} {outcome}")
        return intent

    @activity.defn
    async def find_charge(self, order_id: str) -> Charge | None:
        """The order's charge, if the gateway lists one.

        Only orders started before the gateway decided compensation call this (they must
        replay as they ran); a listing cannot see a confirm still in flight.
        """
        charges = (await self._gateway.get("/charges", {"order_id": order_id}))["data"]
        charge = Charge.model_validate(charges[0]) if charges else None
        log_step(order_id, Step.CHARGE_LOOKUP, f"found {charge.id}" if charge else "no charge")
        return charge

    @activity.defn
    async def refund_payment(self, request: RefundRequest) -> Refund:
        """Refund the charge in full, once, whatever the number of retries or keys."""
        body = {"charge_id": request.charge_id, "amount": None, "reason": request.reason}
        answer = await self._gateway.post("/refunds", body, idempotency_key=request.idempotency_key)
        refund = Refund.model_validate(answer)
        log_step(request.order_id, Step.REFUND, f"refunded {refund.id} ({refund.amount})")
        return refund
