"""Two-phase payment at the gateway: create an intent (no money moves), then confirm it."""

from pydantic import BaseModel
from temporalio import activity

from activities.logging import log_step
from activities.provider_client import ProviderClient
from domain.status import Step


class PaymentIntentRequest(BaseModel):
    """Phase 1: ask the gateway to prepare a charge."""

    order_id: str
    amount: int
    currency: str
    payment_method: str
    idempotency_key: str


class PaymentIntent(BaseModel):
    """A prepared charge; its id lands in history before any money moves."""

    id: str
    amount: int
    currency: str


class ConfirmPaymentRequest(BaseModel):
    """Phase 2: move the money for an intent."""

    order_id: str
    intent_id: str
    idempotency_key: str


class Charge(BaseModel):
    """The money taken; confirming the same intent again returns this same charge."""

    id: str
    payment_intent: str
    amount: int
    currency: str


class RefundRequest(BaseModel):
    """Give back the whole charge."""

    order_id: str
    charge_id: str
    reason: str
    idempotency_key: str


class Refund(BaseModel):
    """Money given back; refunding a refunded charge in full returns this same refund."""

    id: str
    amount: int


class PaymentActivities:
    """Activities that talk to the payment gateway."""

    def __init__(self, gateway: ProviderClient) -> None:
        self._gateway = gateway

    @activity.defn
    async def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        """Create (or, on a retry, get back) the order's payment intent."""
        body = request.model_dump(exclude={"idempotency_key"})
        answer = await self._gateway.post("/intents", body, idempotency_key=request.idempotency_key)
        intent = PaymentIntent.model_validate(answer)
        log_step(request.order_id, Step.PAYMENT_INTENT, f"created {intent.id}")
        return intent

    @activity.defn
    async def confirm_payment(self, request: ConfirmPaymentRequest) -> Charge:
        """Confirm the intent; a decline raises a non-retryable ``PaymentDeclined`` error."""
        answer = await self._gateway.post(
            f"/intents/{request.intent_id}/confirm", {}, idempotency_key=request.idempotency_key
        )
        charge = Charge.model_validate(answer)
        log_step(request.order_id, Step.PAYMENT_CONFIRM, f"charged {charge.id}")
        return charge

    @activity.defn
    async def find_charge(self, order_id: str) -> Charge | None:
        """The order's charge, if one exists: settles an unknown payment outcome before a refund."""
        charges = (await self._gateway.get("/charges", {"order_id": order_id}))["data"]
        charge = Charge.model_validate(charges[0]) if charges else None
        log_step(order_id, Step.CHARGE_LOOKUP, f"found {charge.id}" if charge else "no charge")
        return charge

    @activity.defn
    async def refund_payment(self, request: RefundRequest) -> Refund:
        """Refund the charge in full, once, whatever the number of retries."""
        body = {"charge_id": request.charge_id, "amount": None, "reason": request.reason}
        answer = await self._gateway.post("/refunds", body, idempotency_key=request.idempotency_key)
        refund = Refund.model_validate(answer)
        log_step(request.order_id, Step.REFUND, f"refunded {refund.id} ({refund.amount})")
        return refund
