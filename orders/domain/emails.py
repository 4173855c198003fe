"""The text of each customer email, rendered deterministically from the order."""

from dataclasses import dataclass

from orders.domain.currencies import format_money
from orders.domain.models import Dispute, Order, Shipment
from orders.domain.status import EmailTemplate, RefundStatus


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


def shipment_delayed(order: Order) -> EmailContent:
    """Sent once when the warehouse has not shipped within the promised time."""
    return EmailContent(
        EmailTemplate.SHIPMENT_DELAYED,
        f"Your order {order.id} is delayed",
        f"Hi {order.customer.name},\n\nYour order {order.id} is taking longer than usual to "
        "leave our warehouse. We are on it and will email you as soon as it ships.",
    )


def _money_back(order: Order, refund: str | None, refunded: str) -> str:
    """What became of the customer's money, in the words the email uses.

    Nothing charged, a refund issued (pending: it may still fail, so never "refunded"), or
    ``refunded``.
    """
    if refund is None:
        return "Nothing was charged."
    if refund == RefundStatus.PENDING:
        return (
            f"A refund of {format_money(order.total, order.currency)} has been issued; it can "
            "take 5 to 10 days to reach your account."
        )
    return refunded


def order_cancelled(order: Order, reason: str, refund: str | None) -> EmailContent:
    """Sent once when an order is cancelled before it shipped.

    ``refund``: the refund's status (``None``: nothing was charged).
    """
    total = format_money(order.total, order.currency)
    money = _money_back(order, refund, f"Your payment of {total} has been refunded.")
    return EmailContent(
        EmailTemplate.ORDER_CANCELLED,
        f"Order {order.id} cancelled",
        f"Hi {order.customer.name},\n\nYour order {order.id} has been cancelled ({reason}). "
        f"{money}",
    )


def out_of_stock(order: Order, sku: str, refund: str | None) -> EmailContent:
    """Sent once, with an apology, when the warehouse cannot fill the order.

    ``refund``: as for ``order_cancelled``.
    """
    money = _money_back(order, refund, "Your payment has been refunded in full.")
    return EmailContent(
        EmailTemplate.OUT_OF_STOCK,
        f"Sorry: we cannot fill order {order.id}",
        f"Hi {order.customer.name},\n\nWe are sorry: {sku} is out of stock, so we cannot send "
        f"order {order.id}. {money}",
    )


def refund_failed(order: Order, reason: str) -> EmailContent:
    """Sent once when the bank refused a refund the customer was told had been issued."""
    return EmailContent(
        EmailTemplate.REFUND_FAILED,
        f"Your refund for order {order.id} did not go through",
        f"Hi {order.customer.name},\n\nThe refund of "
        f"{format_money(order.total, order.currency)} for order {order.id} was refused by "
        f"your bank ({reason}), so the money has not reached you. We are on it and will "
        "contact you to return it another way.",
    )


def _where(link: str) -> str:
    """Where the customer confirms: the bank's page, or (no link given) the shop's checkout."""
    return (
        f"Open this link to confirm it:\n\n{link}\n\n"
        if link
        else "Confirm it on our checkout page. "
    )


def authentication_required(order: Order, link: str, deadline: str) -> EmailContent:
    """Sent once when the bank asks the customer to confirm the payment (3-D Secure).

    ``link``: the bank's page (``next_action.redirect_to_url``); empty when Stripe gave none
    (``use_stripe_sdk``: the shop's checkout handles it).
    """
    return EmailContent(
        EmailTemplate.AUTHENTICATION_REQUIRED,
        f"Please confirm your payment for order {order.id}",
        f"Hi {order.customer.name},\n\nYour bank asks you to confirm the payment of "
        f"{format_money(order.total, order.currency)} for order {order.id}. {_where(link)}"
        f"Nothing is charged until you do. If it is not confirmed by {deadline}, the order is "
        "cancelled.",
    )


def authentication_reminder(order: Order, link: str, deadline: str) -> EmailContent:
    """Sent once, halfway through the wait, when the customer has not confirmed yet."""
    return EmailContent(
        EmailTemplate.AUTHENTICATION_REMINDER,
        f"Reminder: confirm your payment for order {order.id}",
        f"Hi {order.customer.name},\n\nYour order {order.id} is waiting for you to confirm the "
        f"payment of {format_money(order.total, order.currency)} with your bank. {_where(link)}"
        f"If it is not confirmed by {deadline}, the order is cancelled and nothing is charged.",
    )


def dispute_opened(order_id: str, dispute: Dispute) -> EmailContent:
    """Sent once to the operators when a cardholder disputes an order's payment."""
    due = f"{dispute.evidence_due_by:%Y-%m-%d %H:%M} UTC" if dispute.evidence_due_by else "soon"
    money = f"{dispute.amount} {dispute.currency.upper()} (Stripe's minor units)"
    return EmailContent(
        EmailTemplate.DISPUTE_OPENED,
        f"Chargeback on order {order_id}: {dispute.reason}",
        f"The cardholder's bank disputes the payment of order {order_id}: {money}, reason "
        f"{dispute.reason} (dispute {dispute.id}, payment {dispute.payment_intent}). The money "
        f"is held until it is decided. Answer with evidence by {due} in the Stripe Dashboard.",
    )
