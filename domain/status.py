"""The single source of status names, step names and idempotency keys.

The workflow's read model, the search attributes, the command line and the tests all read
these names from here.
"""

from enum import StrEnum


class OrderStatus(StrEnum):
    """Where an order stands, as customers and operators see it."""

    RECEIVED = "received"
    PAID = "paid"
    AWAITING_SHIPMENT = "awaiting-shipment"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    PAYMENT_DECLINED = "payment-declined"

    @property
    def is_final(self) -> bool:
        """True when the order will not change any more."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({OrderStatus.COMPLETED, OrderStatus.PAYMENT_DECLINED})


class Step(StrEnum):
    """One step of an order with an external effect (or a wait)."""

    PAYMENT_INTENT = "payment-intent"
    PAYMENT_CONFIRM = "payment-confirm"
    CONFIRMATION_EMAIL = "confirmation-email"
    PICKLIST = "picklist"
    SHIPMENT = "shipment"
    SHIPPED_EMAIL = "shipped-email"
    DECLINE_EMAIL = "decline-email"


class StepState(StrEnum):
    """Progress of one step in an order's timeline."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"


class EmailTemplate(StrEnum):
    """The emails an order sends; each goes out at most once per order."""

    ORDER_CONFIRMATION = "order-confirmation"
    ORDER_SHIPPED = "order-shipped"
    PAYMENT_DECLINED = "payment-declined"


def idempotency_key(order_id: str, step: Step) -> str:
    """The key for one step of one order: the same on every retry, from any worker.

    It is derived from the order id and the step only (never from time or randomness), so a
    step re-run after a crash, before anything was recorded, still sends the same key.
    """
    return f"{order_id}:{step.value}"
