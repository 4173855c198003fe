"""The single source of status names, step names and idempotency keys.

The workflow's read model, the search attributes, the command line and the tests all read
these names from here.
"""

from datetime import timedelta
from enum import StrEnum


class OrderStatus(StrEnum):
    """Where an order stands, as customers and operators see it."""

    RECEIVED = "received"
    AWAITING_AUTHENTICATION = "awaiting-authentication"
    AUTHORIZED = "authorized"
    PAID = "paid"
    AWAITING_SHIPMENT = "awaiting-shipment"
    SHIPMENT_DELAYED = "shipment-delayed"
    NEEDS_ATTENTION = "needs-attention"
    SHIPPED = "shipped"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    PAYMENT_DECLINED = "payment-declined"
    OUT_OF_STOCK = "out-of-stock"
    CANCELLED = "cancelled"
    DISPUTED = "disputed"
    """Not an order's own status: a chargeback on its payment waits for the shop's answer.
    Its dispute's workflow (``workflows.dispute``) carries it, so an order that has ended is
    listed too (``starter.py list --status disputed``)."""

    @property
    def is_final(self) -> bool:
        """True when the order will not change any more."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        OrderStatus.COMPLETED,
        OrderStatus.PAYMENT_DECLINED,
        OrderStatus.OUT_OF_STOCK,
        OrderStatus.CANCELLED,
    }
)


class Step(StrEnum):
    """One step of an order with an external effect (or a wait)."""

    PAYMENT_INTENT = "payment-intent"
    PAYMENT_CONFIRM = "payment-confirm"
    """Confirms the intent: authorizes the card."""
    PAYMENT_CAPTURE = "payment-capture"
    AUTHENTICATION = "authentication"
    """Waits for the customer to complete 3-D Secure, as the gateway says."""
    AUTHENTICATION_EMAIL = "authentication-email"
    AUTHENTICATION_REMINDER_EMAIL = "authentication-reminder-email"
    CONFIRMATION_EMAIL = "confirmation-email"
    PICKLIST = "picklist"
    PICKLIST_RELEASE = "picklist-release"
    """Releases the reserved picklist for shipping, once the money is captured."""
    SHIPMENT = "shipment"
    SHIPPED_EMAIL = "shipped-email"
    DECLINE_EMAIL = "decline-email"
    DELAY_EMAIL = "delay-email"
    OPERATOR = "operator"
    PAYMENT_CANCEL = "payment-cancel"
    REFUND = "refund"
    REFUND_OUTCOME = "refund-outcome"
    """Waits for a pending refund to succeed or fail, as the gateway says."""
    REFUND_FAILED_EMAIL = "refund-failed-email"
    PICKLIST_CANCEL = "picklist-cancel"
    CANCELLATION_EMAIL = "cancellation-email"
    OUT_OF_STOCK_EMAIL = "out-of-stock-email"
    DISPUTE_EMAIL = "dispute-email"
    """Tells the operators that a chargeback was opened on the order's payment."""


class RefundStatus(StrEnum):
    """A refund's status at the gateway, as Stripe names them (the ones the order acts on)."""

    PENDING = "pending"
    """Issued, not settled by the bank: it may still fail."""
    SUCCEEDED = "succeeded"
    """The money is back with the customer."""
    FAILED = "failed"
    """The bank refused it: the money came back to the shop."""


class StepState(StrEnum):
    """Progress of one step in an order's timeline."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    RESTARTED = "restarted"
    """A read of the provider stopped to start again at once: its news arrived (an event)."""


class EmailTemplate(StrEnum):
    """The emails an order sends; each goes out at most once per order."""

    ORDER_CONFIRMATION = "order-confirmation"
    ORDER_SHIPPED = "order-shipped"
    PAYMENT_DECLINED = "payment-declined"
    SHIPMENT_DELAYED = "shipment-delayed"
    ORDER_CANCELLED = "order-cancelled"
    OUT_OF_STOCK = "out-of-stock"
    REFUND_FAILED = "refund-failed"
    AUTHENTICATION_REQUIRED = "authentication-required"
    AUTHENTICATION_REMINDER = "authentication-reminder"
    DISPUTE_OPENED = "dispute-opened"
    """To the operators, not the customer."""


class OperatorAction(StrEnum):
    """What an operator can do with an order that needs attention."""

    RETRY_PAYMENT = "retry-payment"
    """Charge again (same idempotency keys) after the gateway failed past its retry budget."""
    RETRY = "retry"
    """Run the step that a provider refused again, once its cause is fixed (any step)."""
    CANCEL = "cancel"
    """Cancel the order: refund what was charged, take back the picklist, tell the customer."""


IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)
"""How long the providers remember an idempotency key (Stripe and Resend: 24 hours). A retry
after that could act a second time, so no step retries longer than ``MAX_STEP_BUDGET``."""


def budget_within(key_window: timedelta) -> timedelta:
    """The longest a step may retry under keys remembered for ``key_window``: half of it.

    The rule for every provider: the other half covers the last try's own time in flight and a
    provider that counts its window from the first request, so every retry lands inside it.
    """
    return key_window / 2


MAX_STEP_BUDGET = budget_within(IDEMPOTENCY_KEY_LIFETIME)
"""The longest any step retries before it asks an operator: half the key lifetime."""

PAYMENT_STEPS = frozenset({Step.PAYMENT_INTENT, Step.PAYMENT_CONFIRM, Step.PAYMENT_CAPTURE})
"""The steps an operator's ``retry-payment`` applies to."""


def idempotency_key(order_id: str, step: Step, attempt: int = 1) -> str:
    """The key for one attempt at one step of one order: the same on every retry, from any worker.

    It is derived from the order id, the step and the operator's attempt number only (never
    from time or randomness), so a step re-run after a crash, before anything was recorded,
    still sends the same key. An operator's retry after a refusal is a new attempt with a new
    key, so the refusal the provider stored under the old key is not replayed to it.
    """
    key = f"{order_id}:{step.value}"
    return key if attempt == 1 else f"{key}:attempt-{attempt}"
