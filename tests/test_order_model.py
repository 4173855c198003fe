"""Invalid orders are refused before anything starts, with a message per field (pure logic)."""

import pytest
from pydantic import ValidationError

from domain.models import looks_like_card_number
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
