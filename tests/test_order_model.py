"""Invalid orders are refused before anything starts, with a message per field (pure logic)."""

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from activities.warehouse import CLOSE_KEY_SUFFIX
from orders.domain import emails
from orders.domain.currencies import format_money
from orders.domain.models import (
    MAX_AMOUNT,
    MAX_CARRIER_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_EMAIL_LOCAL_PART,
    MAX_ID_LENGTH,
    MAX_LINES,
    MAX_QUANTITY,
    MAX_TEXT_LENGTH,
    CancelRequest,
    OrderOptions,
    ResolveRequest,
    Shipment,
    looks_like_card_number,
)
from orders.domain.status import Step, idempotency_key
from sandbox.mail import MessageIn
from sandbox.stripe import payment_intents, refunds
from sandbox.stripe.form import Params, decode
from sandbox.warehouse import PicklistIn
from tests.support import make_order


def _item(quantity: object, unit_price: object) -> list[dict[str, object]]:
    return [{"sku": "A", "quantity": quantity, "unit_price": unit_price}]


def _errors(**overrides: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        make_order(**overrides)
    return {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}


def test_valid_order_totals_in_minor_units() -> None:
    order = make_order(currency="eur")
    assert order.currency == "EUR"
    assert order.total == 2 * 1250 + 2000


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"items": []}, "items", "at least 1 item"),
        ({"items": _item(0, 100)}, "items.0.quantity", "greater than 0"),
        ({"items": _item(1, 0)}, "items.0.unit_price", "greater than 0"),
        ({"items": _item(1, 1.5)}, "items.0.unit_price", "integer"),
        ({"currency": "XYZ"}, "currency", "unknown currency 'XYZ'"),
        ({"payment_method": "4242 4242 4242 4242"}, "payment_method", "raw card number"),
        ({"payment_method": "visa"}, "payment_method", "pattern"),
        ({"id": "has space"}, "id", "pattern"),
    ],
)  # fmt: skip
def test_invalid_field_is_named_with_a_reason(
    overrides: dict[str, object], field: str, message: str
) -> None:
    errors = _errors(**overrides)
    assert field in errors
    assert message in errors[field]


def test_malformed_email_and_card_number_anywhere_are_refused() -> None:
    customer = {"id": "c1", "name": "5555-5555-5555-4444", "email": "grace@"}
    errors = _errors(customer=customer)
    assert "malformed email address" in errors["customer.email"]
    assert "raw card number" in errors["customer.name"]


def test_identifiers_may_hold_long_digit_runs() -> None:
    ean = "4006381333924"  # a valid EAN-13 barcode that also passes the Luhn check
    assert looks_like_card_number(ean)
    order = make_order(items=[{"sku": ean, "quantity": 1, "unit_price": 100}])
    assert order.items[0].sku == ean


def test_every_error_is_reported_at_once() -> None:
    errors = _errors(items=[], currency="ABC", payment_method="4111111111111111")
    assert set(errors) == {"items", "currency", "payment_method"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4242424242424242", True),
        ("4111 1111 1111 1111", True),
        ("order 1234567890123", False),  # 13 digits failing the Luhn check
        ("pm_card_visa", False),
        ("+1 555 0100", False),
    ],
)
def test_card_number_detection(text: str, expected: bool) -> None:
    assert looks_like_card_number(text) is expected


# --- Limits: what no gateway or warehouse would take is refused, one message per field ------

MAX_ID = "I" * MAX_ID_LENGTH


def _lines(count: int, quantity: int, unit_price: int) -> list[dict[str, object]]:
    return [{"sku": f"S{n}", "quantity": quantity, "unit_price": unit_price} for n in range(count)]


def _customer(**fields: object) -> dict[str, object]:
    return {"customer": {"id": "c", "name": "Ada", "email": "a@b.co", **fields}}


def _address(**fields: object) -> dict[str, object]:
    address = {"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115"}
    return {"shipping_address": {**address, "country": "DE", **fields}}


TOTAL_TOO_LARGE = (
    "the order total (quantity x unit_price over all lines) is 100,000,000 minor units; one card "
    "payment can be at most 99,999,999 minor units (999999.99 USD, 99999999 JPY)"
)
ID_CHARACTERS = "letters, digits, '.', '_' and '-', starting with a letter or digit"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"items": _item(MAX_QUANTITY + 1, 1)}, "items.0.quantity", "less than or equal to 1000"),
        ({"items": _item(1, MAX_AMOUNT + 1)}, "items.0.unit_price", "or equal to 99999999"),
        ({"items": _item(1, 2**64)}, "items.0.unit_price", "or equal to 99999999"),
        ({"items": _item(2, 50_000_000)}, "items", TOTAL_TOO_LARGE),
        ({"items": _lines(MAX_LINES + 1, 1, 1)}, "items", "at most 100 items"),
        ({"id": MAX_ID + "I"}, "id", "at most 80 characters"),
        ({"id": "-leading-dash"}, "id", ID_CHARACTERS),
        ({"id": "ordér-1"}, "id", "pattern"),
        (_customer(id="c" * 81), "customer.id", "at most 80"),
        (_customer(name="A" * 201), "customer.name", "at most 200"),
        (_customer(name="Ada\nLovelace"), "customer.name", "control characters"),
        (_customer(email=f"{'a' * 64}@{'b' * 186}.com"), "customer.email", "at most 254"),
        (_customer(email=f"{'a' * 65}@example.com"), "customer.email", "64 characters (RFC 5321)"),
        (_customer(email="ada\x85@example.com"), "customer.email", "control characters"),
        (_customer(email="ada@example.c0m"), "customer.email", "malformed email address"),
        (_address(line1="x" * 201), "shipping_address.line1", "at most 200"),
        (_address(city="Ber\tlin"), "shipping_address.city", "control characters"),
        (_address(postal_code="1" * 21), "shipping_address.postal_code", "at most 20"),
        (_address(country="DEU"), "shipping_address.country", "ISO 3166 two-letter"),
        (_address(country="ß"), "shipping_address.country", "ISO 3166 two-letter"),
        ({"currency": "X" * 10_000}, "currency", "unknown currency; use an ISO 4217 code"),
        ({"payment_method": "pm_" + "a" * 101}, "payment_method", "pattern"),
    ],
)
def test_limits_are_refused_with_a_message_per_field(
    overrides: dict[str, object], field: str, message: str
) -> None:
    errors = _errors(**overrides)
    assert set(errors) == {field}
    assert message in errors[field]


def test_an_order_at_every_limit_is_accepted() -> None:
    order = make_order(
        id=MAX_ID,
        customer={
            "id": MAX_ID,
            "name": "N" * MAX_TEXT_LENGTH,
            "email": f"{'a' * MAX_EMAIL_LOCAL_PART}@{'b' * 185}.com",
        },
        items=[
            *_lines(MAX_LINES - 2, MAX_QUANTITY, 1),
            {"sku": MAX_ID, "quantity": 1, "unit_price": MAX_AMOUNT - (MAX_LINES - 2) * 1000 - 1},
            {"sku": "LAST", "quantity": 1, "unit_price": 1},
        ],
        currency="KWD",
    )
    assert len(order.customer.email) == MAX_EMAIL_LENGTH
    assert order.total == MAX_AMOUNT and len(order.items) == MAX_LINES
    assert format_money(order.total, order.currency) == "99999.999 KWD"


@pytest.mark.parametrize("amount", [MAX_AMOUNT, 1])
@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_the_cap_is_in_minor_units_whatever_the_exponent(amount: int, currency: str) -> None:
    assert make_order(currency=currency, items=_item(1, amount)).total == amount


def test_the_longest_idempotency_key_fits_the_providers_255_characters() -> None:
    longest_step = max(Step, key=len)
    key = idempotency_key(MAX_ID, longest_step, attempt=10**9) + CLOSE_KEY_SUFFIX
    assert len(key) <= 255


def test_shipment_deadlines_are_at_most_a_year() -> None:
    with pytest.raises(ValidationError, match="at most 365 days"):
        OrderOptions(shipment_attention_after=timedelta(days=366))
    with pytest.raises(ValidationError):  # would overflow a Temporal timer
        OrderOptions(shipment_attention_after=timedelta.max)
    assert OrderOptions(shipment_attention_after=timedelta(days=365))


@pytest.mark.parametrize(
    ("model", "data", "field", "message"),
    [
        (Shipment, {"carrier": "U" * 51, "tracking_number": "1Z99"}, "carrier", "at most 50"),
        (
            Shipment,
            {"carrier": "UPS\r\n", "tracking_number": "1Z" * 21},
            "tracking_number",
            "pattern",
        ),
        (Shipment, {"carrier": "U\x1bPS", "tracking_number": "1Z99"}, "carrier", "control char"),
        (CancelRequest, {"reason": "r" * 201}, "reason", "at most 200"),
        (CancelRequest, {"reason": ""}, "reason", "at least 1"),
        (ResolveRequest, {"action": "retry", "reason": "4111 1111 1111 1111"}, "reason", "card"),
    ],
)
def test_shipments_and_reasons_are_bounded(
    model: type[BaseModel], data: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    [error] = caught.value.errors()
    assert error["loc"] == (field,) and message in error["msg"]


def test_an_order_at_every_limit_fits_every_provider_request() -> None:
    """The providers accept what the model accepts: the largest order's requests validate."""
    name = "N" * MAX_TEXT_LENGTH
    order = make_order(
        id=MAX_ID,
        customer={"id": MAX_ID, "name": name, "email": f"{'a' * 64}@{'b' * 185}.com"},
        items=[{"sku": f"{n:0{MAX_ID_LENGTH}d}", "quantity": MAX_QUANTITY, "unit_price": 999}
               for n in range(MAX_LINES)],
        shipping_address={"name": name, "line1": name, "line2": name, "city": name,
                          "postal_code": "P" * 20, "country": "GB"},
    )  # fmt: skip
    shipment = Shipment(carrier="C" * MAX_CARRIER_LENGTH, tracking_number="T" * 40)
    reason = "R" * MAX_TEXT_LENGTH
    contents = [
        emails.order_confirmation(order, "ch_" + "x" * 24),
        emails.order_shipped(order, shipment),
        emails.payment_declined(order, "generic_decline"),
        emails.shipment_delayed(order),
        emails.order_cancelled(order, reason, refund="succeeded"),
        emails.out_of_stock(order, MAX_ID, refund="succeeded"),
    ]
    for content in contents:
        MessageIn(order_id=order.id, to=order.customer.email, template=content.template.value,
                  subject=content.subject, body=content.body)  # fmt: skip
    # The gateway speaks Stripe's API: its form parameters, as the official library sends them.
    intent = {
        "amount": str(order.total),
        "currency": order.currency.lower(),
        "payment_method": order.payment_method,
        "capture_method": "manual",
        "metadata[order_id]": order.id,
        "metadata[customer_id]": order.customer.id,
    }
    payment_intents.create_params(Params(decode(intent.items())))  # fmt: skip
    PicklistIn.model_validate(
        {"order_id": order.id, "items": [item.model_dump() for item in order.items],
         "ship_to": order.shipping_address.model_dump()}
    )  # fmt: skip
    refund = {
        "payment_intent": "pi_" + "x" * 24,
        "reason": "requested_by_customer",
        "metadata[order_id]": order.id,
        "metadata[reason]": reason[:500],
    }
    refunds.create_params(Params(decode(refund.items())))  # fmt: skip
