"""All that one order's workflow knows, in one dataclass; the read model is derived from it."""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from activities.payment import PaymentIntent
from orders.domain.models import Dispute, Order, OrderOptions, OrderView, Shipment, StepRecord
from orders.domain.status import OperatorAction, OrderStatus, Step
from workflows.patches import Patches

UNPAID_SHIPMENT = "the parcel left before the payment was captured"
"""Starts the attention reason of an order whose goods are gone and whose money is not."""


@dataclass
class OrderState:
    """The order's mutable state. Handlers and steps change it; the query reads ``view()``."""

    order: Order
    options: OrderOptions
    patches: Patches = field(default_factory=Patches)
    """The changes the order runs with (``workflows.patches``)."""
    status: OrderStatus = OrderStatus.RECEIVED
    intent: PaymentIntent | None = None
    charge_id: str | None = None
    picklist_id: str | None = None
    picklist_held: bool = False
    """The picklist was made held: it ships only once released (``workflows.picking``)."""
    confirmed: bool = False
    """The order confirmation email was sent."""
    shipment: Shipment | None = None
    refund_id: str | None = None
    refund_status: str | None = None
    refund_failure: str | None = None
    """The gateway's reason for the latest refund's failure, if it failed."""
    replaced_intents: list[str] = field(default_factory=list)
    """Intents whose authorization expired and that a new authorization replaced."""
    renewal_failure: str | None = None
    """Why authorizing the card again failed, for the operator of the parked order."""
    authorization_canceled: bool = False
    """Stripe's event said the held authorization's intent was cancelled before its expiry."""
    authorization_warned: bool = False
    """Operators were warned that the authorization expires soon with nothing captured."""
    cancel_reason: str | None = None
    """Set when a cancel is accepted; the order then stops as soon as it can."""
    winding_down_to: OrderStatus | None = None
    failure_reason: str | None = None
    attention_reason: str | None = None
    attention_step: Step | None = None
    operator_action: OperatorAction | None = None
    """The operator's decision for the step that needs attention, until the step takes it."""
    attempts: dict[Step, int] = field(default_factory=dict)
    """The idempotency key's attempt number per step: 1 until a provider refuses the step and
    an operator retries it (see ``Steps.call``)."""
    retries: dict[Step, int] = field(default_factory=dict)
    """How many times an operator retried each step."""
    timeline: list[StepRecord] = field(default_factory=list)
    dispute: Dispute | None = None
    """A chargeback on the order's payment, told by its dispute's workflow."""
    gateway_events: int = 0
    """How many of the gateway's events the order heard (each once, by its id)."""

    def view(self) -> OrderView:
        """The read model customers and operators see."""
        order = self.order
        return OrderView(
            order_id=order.id,
            customer_id=order.customer.id,
            status=self.status,
            total=order.total,
            currency=order.currency,
            payment_intent_id=self.intent.id if self.intent else None,
            transaction_id=self.charge_id,
            picklist_id=self.picklist_id,
            picklist_held=self.picklist_held,
            shipment=self.shipment,
            refund_id=self.refund_id,
            refund_status=self.refund_status,
            authorization_expires_at=self.authorization_expiry(),
            failure_reason=self.failure_reason,
            attention_reason=self._attention(),
            attention_step=self.attention_step,
            winding_down_to=self.winding_down_to or self._cancel_accepted(),
            timeline=self.timeline,
            dispute=self.dispute,
        )

    def authorization_expiry(self) -> datetime | None:
        """When the card's authorization expires, while it is held and not captured."""
        intent = self.intent
        if intent is None or intent.capture_before is None or self.charge_id is not None:
            return None
        if self.status.is_final:
            return None
        return datetime.fromtimestamp(intent.capture_before, UTC)

    def _attention(self) -> str | None:
        """Why the order needs a person, with what makes it urgent.

        First of all goods that left before the money came, and an authorization about to
        expire with nothing captured.
        """
        reason = self.attention_reason
        if reason and self.shipment is not None and self.charge_id is None:
            reason = f"{UNPAID_SHIPMENT}: {reason}"
        if reason and self.authorization_warned and (expiry := self.authorization_expiry()):
            reason = f"{reason}; the card authorization expires at {expiry:%Y-%m-%d %H:%M:%S} UTC"
        if reason and self.renewal_failure:
            reason = f"{reason}; authorizing the card again failed: {self.renewal_failure}"
        return reason

    def _cancel_accepted(self) -> OrderStatus | None:
        # A cancel is accepted at once; the order shows it before its story has stopped.
        return OrderStatus.CANCELLED if self.cancel_reason is not None else None
