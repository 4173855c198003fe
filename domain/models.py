"""Pydantic models of an order and its read model.

Invalid orders are refused here, before anything starts, with one message per field.
"""

import re
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from domain.currencies import MINOR_UNIT_EXPONENT
from domain.status import MAX_STEP_BUDGET, OperatorAction, OrderStatus, Step, StepState

_CARD_LIKE = re.compile(r"\d(?:[ -]?\d){12,18}")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


def _passes_luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def looks_like_card_number(text: str) -> bool:
    """True when the text holds 13-19 digits (spaces or dashes allowed) that pass the Luhn check."""
    return any(
        _passes_luhn(re.sub(r"[ -]", "", match.group())) for match in _CARD_LIKE.finditer(text)
    )


def _no_card_number(value: str) -> str:
    if looks_like_card_number(value):
        raise ValueError(
            "looks like a raw card number; card numbers must never enter the system, "
            "pass a payment-method token instead (for example pm_card_visa)"
        )
    return value


def _known_currency(value: str) -> str:
    if value not in MINOR_UNIT_EXPONENT:
        raise ValueError(f"unknown currency {value!r}; use an ISO 4217 code such as USD or EUR")
    return value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _valid_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError(f"malformed email address {value!r}; expected name@example.com")
    return value


Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_no_card_number),
]
# Machine codes (order ids, customer ids, skus) are not screened for card numbers: long digit
# runs are normal there (a 13-digit EAN barcode passes the Luhn check one time in ten).
Identifier = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
]
Email = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_valid_email)]
Currency = Annotated[str, BeforeValidator(_upper), AfterValidator(_known_currency)]
PaymentMethodToken = Annotated[
    str,
    AfterValidator(_no_card_number),
    StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,100}$"),
]
MinorUnits = Annotated[int, Field(gt=0, description="Money in integer minor units (cents).")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Customer(_Model):
    """The person who placed the order."""

    id: Identifier
    name: Text
    email: Email


class LineItem(_Model):
    """One product line: sku, quantity and unit price in minor units."""

    sku: Identifier
    quantity: Annotated[int, Field(gt=0)]
    unit_price: MinorUnits

    @property
    def subtotal(self) -> int:
        """Quantity times unit price, in minor units."""
        return self.quantity * self.unit_price


class Address(_Model):
    """Where the order ships to."""

    name: Text
    line1: Text
    line2: Text | None = None
    city: Text
    postal_code: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)
    ]
    country: Annotated[str, BeforeValidator(_upper), StringConstraints(pattern=r"^[A-Z]{2}$")]


class Order(_Model):
    """An order as placed: validated in full before any workflow starts."""

    id: Identifier
    customer: Customer
    items: Annotated[list[LineItem], Field(min_length=1)]
    currency: Currency
    payment_method: PaymentMethodToken = Field(
        description="A payment-method token such as pm_card_visa; never a card number."
    )
    shipping_address: Address

    @property
    def total(self) -> int:
        """The amount to charge, in minor units."""
        return sum(item.subtotal for item in self.items)


class Shipment(_Model):
    """The warehouse's report that an order has left the building."""

    carrier: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
    tracking_number: Annotated[
        str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9-]{4,40}$")
    ]


class OrderOptions(_Model):
    """How long an order tolerates trouble before it escalates; the defaults suit a real shop."""

    payment_retry_budget: timedelta = Field(
        timedelta(hours=1), description="Retry a failing gateway this long, then ask an operator."
    )
    step_retry_budget: timedelta = Field(
        timedelta(hours=6),
        description="Retry any other failing provider call this long, then ask an operator.",
    )
    shipment_delayed_after: timedelta = Field(
        timedelta(days=3), description="No shipment by then: email the customer once."
    )
    shipment_attention_after: timedelta = Field(
        timedelta(days=14), description="No shipment by then: ask an operator."
    )

    @model_validator(mode="after")
    def _escalation_in_order(self) -> "OrderOptions":
        budgets = (self.payment_retry_budget, self.step_retry_budget)
        if min(*budgets, self.shipment_delayed_after) <= timedelta(0):
            raise ValueError("durations must be positive")
        if max(budgets) > MAX_STEP_BUDGET:
            raise ValueError(
                f"retry budgets may be at most {MAX_STEP_BUDGET.total_seconds() / 3600:g} hours "
                "(half the providers' idempotency key lifetime), so a retry never outlives its key"
            )
        if self.shipment_attention_after <= self.shipment_delayed_after:
            raise ValueError("shipment_attention_after must be later than shipment_delayed_after")
        return self


class CancelRequest(_Model):
    """A request to cancel an order that has not shipped."""

    reason: Text


class ResolveRequest(_Model):
    """An operator's decision for an order that needs attention."""

    action: OperatorAction
    reason: Text | None = None


class StepRecord(BaseModel):
    """One line of an order's timeline."""

    step: Step
    state: StepState
    started_at: datetime
    finished_at: datetime | None = None
    detail: str | None = None


class OrderView(BaseModel):
    """The read model of an order, served by the workflow's query and returned as its result."""

    order_id: str
    customer_id: str
    status: OrderStatus
    total: int
    currency: str
    payment_intent_id: str | None = None
    transaction_id: str | None = None
    picklist_id: str | None = None
    shipment: Shipment | None = None
    refund_id: str | None = None
    failure_reason: str | None = None
    attention_reason: str | None = None
    attention_step: Step | None = None
    """The step an operator is asked about while the order needs attention."""
    winding_down_to: OrderStatus | None = None
    """Once the order has stopped (cancel accepted, declined, out of stock): the final status
    it is being wound down to while its effects are undone."""
    timeline: list[StepRecord] = Field(default_factory=list)
