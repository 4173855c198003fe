"""The text of each customer email, rendered deterministically from the order."""

from dataclasses import dataclass

from domain.currencies import format_money
from domain.models import Order, Shipment
from domain.status import EmailTemplate


@dataclass(frozen=True)
class EmailContent:
    """A rendered email: which template, subject and plain-text body."""

    template: EmailTemplate
    subject: str
    body: str


def _lines(order: Order) -> str:
    return "\n".join(
        f"  {item.quantity} x {item.sku} @ {format_money(item.unit_price, order.currency)}"
        for item in order.items
    )


def order_confirmation(order: Order, transaction_id: str) -> EmailContent:
    """Sent once the card is charged."""
    return EmailContent(
        EmailTemplate.ORDER_CONFIRMATION,
        f"Order {order.id} confirmed",
        f"Hi {order.customer.name},\n\nThank you for your order {order.id}.\n{_lines(order)}\n"
        f"Total charged: {format_money(order.total, order.currency)} "
        f"(transaction {transaction_id}).\n\nWe will email you when it ships.",
    )


def order_shipped(order: Order, shipment: Shipment) -> EmailContent:
    """Sent once the warehouse reports the parcel has left."""
    return EmailContent(
        EmailTemplate.ORDER_SHIPPED,
        f"Your order {order.id} has shipped",
        f"Hi {order.customer.name},\n\nYour order {order.id} is on its way with "
        f"{shipment.carrier}, tracking number {shipment.tracking_number}.",
    )


def payment_declined(order: Order, reason: str) -> EmailContent:
    """Sent once when the card is declined; the order is not retried."""
    return EmailContent(
        EmailTemplate.PAYMENT_DECLINED,
        f"We could not charge your card for order {order.id}",
        f"Hi {order.customer.name},\n\nYour payment of {format_money(order.total, order.currency)} "
        f"for order {order.id} was declined ({reason}). Nothing was charged. "
        "Please place the order again with another payment method.",
    )
