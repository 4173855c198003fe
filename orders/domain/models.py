"""Pydantic models of an order and its read model.

Invalid orders are refused here, before anything starts, with one message per field.
"""

import re
import unicodedata
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from orders.domain.currencies import MINOR_UNIT_EXPONENT, format_money
from orders.domain.status import (
    IDEMPOTENCY_KEY_LIFETIME,
    MAX_STEP_BUDGET,
    OperatorAction,
    OrderStatus,
    Step,
    StepState,
    budget_within,
)
from orders.domain.stripe_currencies import MAX_CHARGE

# Limits, each what a real card gateway, mail service or warehouse would take at most. The
# providers (sandbox/) accept at least as much, so an order accepted here is never refused
# there for its contents (tests/test_properties.py checks orders at these limits end to end).
# Stripe's own amount rules (minimum charge, supported currencies, its scale) are checked where
# an order is placed (domain.stripe_currencies.charge_refusal), not here: an order recorded in
# a running workflow's history must keep decoding whatever those rules become.
MAX_AMOUNT = MAX_CHARGE
"""The most one card payment can be, in minor units, whatever the currency's exponent:
Stripe's maximum charge (eight digits: 999,999.99 USD, 99,999,999 JPY, 99,999.999 KWD). It caps
every unit price and the order total, so no gateway ledger ever overflows. (In Stripe's scale,
which is 100 times ISO's for ISK and UGX, the placement rule checks it again.)"""
MIN_AMOUNT = 1
"""The least a unit price can be, in minor units. The order's total must also reach Stripe's
minimum charge for its currency, checked at placement (``charge_refusal``), not here."""
MAX_QUANTITY = 1000
"""Units of one sku in one line: more is a wholesale order, not a shop's."""
MAX_LINES = 100
"""Lines in one order; keeps the confirmation email and the picklist a sane size."""
MAX_ID_LENGTH = 80
"""Order ids, customer ids and skus. The order id is also the workflow id and the start of every
idempotency key (``<order id>:<step>:attempt-N``), which must stay within 255 characters."""
MAX_TEXT_LENGTH = 200
"""Names, address lines, city, reasons."""
MAX_EMAIL_LENGTH = 254
"""RFC 5321: a path is at most 256 octets including its angle brackets."""
MAX_EMAIL_LOCAL_PART = 64
"""RFC 5321: the part before the ``@``."""
MAX_POSTAL_CODE_LENGTH = 20
MAX_CARRIER_LENGTH = 50
MAX_SHIPMENT_WAIT = timedelta(days=365)
"""The latest shipment deadline an order may set; a longer durable timer is a typo."""

_CARD_LIKE = re.compile(r"\d(?:[ -]?\d){12,18}")
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[A-Za-z]{2,}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_COUNTRY = re.compile(r"[A-Z]{2}")


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


def _no_control_characters(value: str) -> str:
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError("must not contain control characters (newlines, tabs and the like)")
    return value


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            "may hold only letters, digits, '.', '_' and '-', starting with a letter or digit "
            "(pattern [A-Za-z0-9][A-Za-z0-9._-]*)"
        )
    return value


def _known_currency(value: str) -> str:
    if value not in MINOR_UNIT_EXPONENT:
        shown = f" {value!r}" if len(value) <= 10 else ""
        raise ValueError(f"unknown currency{shown}; use an ISO 4217 code such as USD or EUR")
    return value


def _upper(value: object) -> object:
    # ASCII only: "ß".upper() is "SS", which must not turn into a country code.
    return value.strip().upper() if isinstance(value, str) and value.isascii() else value


def _valid_email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError(f"malformed email address {value!r}; expected name@example.com")
    if len(value.rpartition("@")[0]) > MAX_EMAIL_LOCAL_PART:
        raise ValueError(
            f"the part before the @ may be at most {MAX_EMAIL_LOCAL_PART} characters (RFC 5321)"
        )
    return value


def _country(value: str) -> str:
    if not _COUNTRY.fullmatch(value):
        raise ValueError("must be an ISO 3166 two-letter country code such as GB or US")
    return value


_FREE_TEXT = (AfterValidator(_no_control_characters), AfterValidator(_no_card_number))
"""Free text: no control characters, no card numbers."""
Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH),
    *_FREE_TEXT,
]
PostalCode = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_POSTAL_CODE_LENGTH),
    *_FREE_TEXT,
]
Carrier = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CARRIER_LENGTH),
    *_FREE_TEXT,
]
# Machine codes (order ids, customer ids, skus) are not screened for card numbers: long digit
# runs are normal there (a 13-digit EAN barcode passes the Luhn check one time in ten).
Identifier = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(_identifier),
]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=MAX_EMAIL_LENGTH),
    AfterValidator(_no_control_characters),
    AfterValidator(_valid_email),
]
Currency = Annotated[str, BeforeValidator(_upper), AfterValidator(_known_currency)]
PaymentMethodToken = Annotated[
    str,
    AfterValidator(_no_card_number),
    StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,100}$"),
]
MinorUnits = Annotated[
    int,
    Field(gt=0, le=MAX_AMOUNT, description="Money in integer minor units (cents)."),
]
Quantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY)]


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
    quantity: Quantity
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
    postal_code: PostalCode
    country: Annotated[str, BeforeValidator(_upper), AfterValidator(_country)]


class Order(_Model):
    """An order as placed: validated in full before any workflow starts."""

    id: Identifier
    customer: Customer
    items: Annotated[list[LineItem], Field(min_length=1, max_length=MAX_LINES)]
    currency: Currency
    payment_method: PaymentMethodToken = Field(
        description="A payment-method token such as pm_card_visa; never a card number."
    )
    shipping_address: Address
    placed_at: AwareDatetime | None = Field(
        None,
        description="When the customer placed the order (with its time zone); placing the "
        "same order again sends the same. A recent one spares the gateway a search per order "
        "(see activities.payment.REUSE_COVERED_BY_KEY); without it the gateway is searched.",
    )

    @field_validator("items")
    @classmethod
    def _total_within_one_payment(cls, items: list[LineItem]) -> list[LineItem]:
        total = sum(item.subtotal for item in items)
        if total > MAX_AMOUNT:
            raise ValueError(
                f"the order total (quantity x unit_price over all lines) is {total:,} minor units;"
                f" one card payment can be at most {MAX_AMOUNT:,} minor units"
                f" ({format_money(MAX_AMOUNT, 'USD')}, {format_money(MAX_AMOUNT, 'JPY')})"
            )
        return items

    @property
    def total(self) -> int:
        """The amount to charge, in minor units."""
        return sum(item.subtotal for item in self.items)


class Shipment(_Model):
    """The warehouse's report that an order has left the building."""

    carrier: Carrier
    tracking_number: Annotated[
        str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9-]{4,40}$")
    ]


class GatewayEvent(_Model):
    """One of the gateway's (Stripe's) events about an order's payment, as the order hears it.

    Only a hint: the order reads the object back by id (the source of truth) when it hears one.
    """

    id: Annotated[str, StringConstraints(max_length=255)]
    type: Annotated[str, StringConstraints(max_length=100)]
    object_id: Annotated[str, StringConstraints(max_length=255)]


class Dispute(_Model):
    """A chargeback on an order's payment, as the gateway reported it."""

    id: Annotated[str, StringConstraints(max_length=255)]
    payment_intent: Annotated[str, StringConstraints(max_length=255)]
    amount: int
    """In Stripe's minor units, as the gateway says."""
    currency: Annotated[str, StringConstraints(max_length=3)]
    reason: Annotated[str, StringConstraints(max_length=100)]
    status: Annotated[str, StringConstraints(max_length=100)]
    """Stripe's: ``needs_response`` (answer with evidence), ``under_review``, ``won``, ``lost``."""
    evidence_due_by: datetime | None = None
    order_id: str | None = None
    """Found by the dispute's workflow through the payment intent's metadata."""


class OrderOptions(_Model):
    """How long an order tolerates trouble before it escalates; the defaults suit a real shop."""

    payment_retry_budget: timedelta = Field(
        timedelta(hours=1), description="Retry a failing gateway this long, then ask an operator."
    )
    step_retry_budget: timedelta = Field(
        timedelta(hours=6),
        description="Retry any other failing provider call this long, then ask an operator.",
    )
    mail_key_window: timedelta = Field(
        IDEMPOTENCY_KEY_LIFETIME,
        description="How long the shop's mail provider remembers an idempotency key (Resend: "
        "24 hours; Brevo 15 minutes, Nylas 1 hour). An email step retries at most half of it "
        "(see mail_retry_budget), then asks an operator instead of sending under a forgotten key.",
    )
    shipment_delayed_after: timedelta = Field(
        timedelta(days=3), description="No shipment by then: email the customer once."
    )
    shipment_attention_after: timedelta = Field(
        timedelta(days=14), description="No shipment by then: ask an operator."
    )
    authorization_warning: timedelta = Field(
        timedelta(hours=24),
        description="Warn operators this long before an authorization nobody captured expires "
        "(at most half its life).",
    )
    reauthorize_expired: bool = Field(
        False,
        description="When the authorization expires before the capture: authorize the card "
        "again (true), or wind the order down, nothing charged (false).",
    )
    authentication_wait: timedelta = Field(
        timedelta(hours=24),
        description="Wait this long for the customer to complete 3-D Secure (reminded once, "
        "halfway), then cancel the payment, nothing charged.",
    )
    refund_follow_limit: timedelta = Field(
        timedelta(days=30),
        description="Follow a pending refund this long for its outcome, then ask an operator.",
    )

    @model_validator(mode="after")
    def _escalation_in_order(self) -> "OrderOptions":
        budgets = (self.payment_retry_budget, self.step_retry_budget)
        waits = (
            self.shipment_delayed_after,
            self.authorization_warning,
            self.refund_follow_limit,
            self.mail_key_window,
            self.authentication_wait,
        )
        if min(*budgets, *waits) <= timedelta(0):
            raise ValueError("durations must be positive")
        if max(budgets) > MAX_STEP_BUDGET:
            raise ValueError(
                f"retry budgets may be at most {MAX_STEP_BUDGET.total_seconds() / 3600:g} hours "
                "(half the providers' idempotency key lifetime), so a retry never outlives its key"
            )
        if self.shipment_attention_after <= self.shipment_delayed_after:
            raise ValueError("shipment_attention_after must be later than shipment_delayed_after")
        if self.shipment_attention_after > MAX_SHIPMENT_WAIT:
            raise ValueError(
                f"shipment deadlines may be at most {MAX_SHIPMENT_WAIT.days} days after the order"
            )
        return self

    @property
    def mail_retry_budget(self) -> timedelta:
        """How long an email step retries: the step budget, within the mail key window."""
        return min(self.step_retry_budget, budget_within(self.mail_key_window))


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
    picklist_held: bool = False
    """The warehouse holds the picklist until the order releases it (once paid): a report
    that it shipped anyway is taken at any time, and the order then settles its payment."""
    shipment: Shipment | None = None
    refund_id: str | None = None
    refund_status: str | None = None
    """``pending`` until the refund settles, then ``succeeded`` (money back) or ``failed``."""
    authorization_expires_at: datetime | None = None
    """While the card is authorized and not captured: when the authorization expires."""
    failure_reason: str | None = None
    attention_reason: str | None = None
    attention_step: Step | None = None
    """The step an operator is asked about while the order needs attention."""
    winding_down_to: OrderStatus | None = None
    """Once the order has stopped (cancel accepted, declined, out of stock): the final status
    it is being wound down to while its effects are undone."""
    timeline: list[StepRecord] = Field(default_factory=list)
    dispute: Dispute | None = None
    """A chargeback opened while the order ran (one on an ended order: its dispute's workflow)."""
