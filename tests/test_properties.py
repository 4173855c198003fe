"""Property-based tests: generated orders, provider requests, CLI arguments and signals.

What must hold whatever the input: the order model refuses with a ``ValidationError`` and
nothing else; the providers never answer 5xx and always in their error shape; ``starter.py``
never exits 0 on refused input, never prints a traceback and starts nothing; a running order
survives any payload sent as its shipped signal; an order that can be placed is never refused
by a provider for its contents; the placement rule and the sandbox gateway agree on what Stripe
refuses to charge, and what is charged is the order's total in Stripe's scale.

Example counts are modest so the file runs in well under a minute. ``HYPOTHESIS_PROFILE=ci``
(the default) is derandomized: the same examples every run, so CI is stable.
``HYPOTHESIS_PROFILE=thorough`` runs ten times as many, with a fresh seed each time. Run with
``--hypothesis-show-statistics`` to see what was generated (the ``event`` lines).
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import string
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

import starter
from activities.errors import provider_error_code
from activities.payment import PaymentActivities, PaymentIntentRequest
from activities.provider_client import open_provider_clients
from orders.client.orders import order_status, start_order
from orders.client.temporal import DATA_CONVERTER
from orders.config.settings import ProviderSettings
from orders.domain.currencies import MINOR_UNIT_EXPONENT
from orders.domain.models import (
    MAX_AMOUNT,
    MAX_CARRIER_LENGTH,
    MAX_EMAIL_LOCAL_PART,
    MAX_ID_LENGTH,
    MAX_LINES,
    MAX_POSTAL_CODE_LENGTH,
    MAX_QUANTITY,
    MAX_TEXT_LENGTH,
    CancelRequest,
    Order,
    Shipment,
    looks_like_card_number,
)
from orders.domain.status import OrderStatus
from orders.domain.stripe_currencies import (
    MAX_CHARGE,
    MINIMUM_CHARGE,
    THREE_DECIMAL,
    WHOLE_UNITS,
    ChargeRule,
    charge_refusal,
    from_stripe_amount,
    stripe_refusal,
    to_stripe_amount,
)
from sandbox.admin_client import SandboxAdmin
from sandbox.app import create_app
from sandbox.errors import ApiError
from sandbox.stripe import payment_intents
from sandbox.stripe.form import Params, decode
from tests.support import until_view, wait_for_status
from workflows.order import OrderWorkflow

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("thorough", settings.get_profile("ci"), derandomize=False)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = 10 if PROFILE == "thorough" else 1


def examples(count: int) -> settings:
    """``count`` examples under the ci profile, ten times as many under thorough."""
    return settings(max_examples=count * SCALE)


# --- Strategies ------------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
identifiers = st.builds(
    "".join,
    st.tuples(st.sampled_from(_ALNUM), st.text(_ALNUM + "._-", max_size=MAX_ID_LENGTH - 1)),
)

# Letters, marks, digits, punctuation and symbols of any script, single spaces inside.
_WORD_CHARS = st.characters(categories=("L", "M", "N", "P", "S"))


def texts(max_size: int = MAX_TEXT_LENGTH, min_size: int = 1) -> st.SearchStrategy[str]:
    """Free text the model must accept: no control characters, no card numbers, no padding."""
    words = st.text(_WORD_CHARS, min_size=1, max_size=max(1, max_size // 4))
    return (
        st.lists(words, min_size=1, max_size=4)
        .map(" ".join)
        .filter(lambda text: min_size <= len(text) <= max_size)
        .filter(lambda text: not looks_like_card_number(text))
    )


@st.composite
def emails(draw: st.DrawFn) -> str:
    local_part = r"[A-Za-z0-9._%+-]{1," + str(MAX_EMAIL_LOCAL_PART) + "}"
    local = draw(st.from_regex(local_part, fullmatch=True))
    labels = draw(st.lists(st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True), max_size=3))
    tld = draw(st.from_regex(r"[A-Za-z]{2,6}", fullmatch=True))
    address = f"{local}@{'.'.join([*labels, 'example'])}.{tld}"
    assume(len(address) <= 254)
    return address


@st.composite
def line_items(draw: st.DrawFn, max_lines: int = MAX_LINES) -> list[dict[str, Any]]:
    """1 to ``max_lines`` lines whose total stays within one card payment."""
    count = draw(st.integers(1, min(5, max_lines)) | st.integers(1, max_lines))
    lines, total = [], 0
    for index in range(count):
        # Leave at least 1 minor unit for each line still to come.
        room = MAX_AMOUNT - total - (count - index - 1)
        quantity = draw(st.integers(1, min(MAX_QUANTITY, room)))
        unit_price = draw(st.integers(1, room // quantity))
        total += quantity * unit_price
        lines.append({"sku": draw(identifiers), "quantity": quantity, "unit_price": unit_price})
    return lines


payment_methods = st.from_regex(r"pm_[A-Za-z0-9_]{1,100}", fullmatch=True).filter(
    lambda token: not looks_like_card_number(token)
)
currencies = st.sampled_from(sorted(MINOR_UNIT_EXPONENT)).flatmap(
    lambda code: st.sampled_from([code, code.lower()])
)


@st.composite
def valid_orders(draw: st.DrawFn, max_lines: int = MAX_LINES) -> dict[str, Any]:
    """An order as JSON that the model must accept."""
    address = {
        "name": draw(texts()),
        "line1": draw(texts()),
        "city": draw(texts()),
        "postal_code": draw(texts(MAX_POSTAL_CODE_LENGTH)),
        "country": draw(st.from_regex(r"[A-Za-z]{2}", fullmatch=True)),
    }
    if draw(st.booleans()):
        address["line2"] = draw(texts())
    return {
        "id": draw(identifiers),
        "customer": {"id": draw(identifiers), "name": draw(texts()), "email": draw(emails())},
        "items": draw(line_items(max_lines)),
        "currency": draw(currencies),
        "payment_method": draw(payment_methods),
        "shipping_address": address,
    }


# Anything JSON can carry, including numbers far past 64 bits and text of any script.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Strings that have broken parsers: long, empty, padding, controls, lookalikes, card numbers.
nasty_strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "", " ", "\t", "\n", "\x00", "\r\n", "\u202e", "\ufeff", "😀", "ß", "İ",
            "4242424242424242", "4111 1111 1111 1111", "'; DROP TABLE charges; --",
            "%00", "../../etc/passwd", "${jndi:x}", "-1", "1e400", "NaN", "null",
        ]
    ),
    st.integers(201, 5000).map(lambda n: "x" * n),
)  # fmt: skip


@st.composite
def mutated_orders(draw: st.DrawFn) -> dict[str, Any]:
    """A valid order with one place replaced, removed or added to."""
    order = draw(valid_orders(max_lines=3))
    paths: list[tuple[Any, Any]] = [(order, key) for key in order]
    for nested in ("customer", "shipping_address"):
        paths += [(order[nested], key) for key in order[nested]]
    paths += [(line, key) for line in order["items"] for key in line]
    target, key = draw(st.sampled_from(paths))
    how = draw(st.sampled_from(["json", "string", "number", "remove", "extra"]))
    event(f"order mutation: {how}")
    if how == "remove":
        del target[key]
    elif how == "extra":
        target[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    elif how == "number":
        target[key] = draw(st.integers(-(2**80), 2**80) | st.floats())
    else:
        target[key] = draw(json_values if how == "json" else nasty_strings)
    return order


# --- (a) the order model ---------------------------------------------------------------------


def _accepted_invariants(order: Order) -> None:
    assert 1 <= len(order.items) <= MAX_LINES
    assert all(1 <= item.quantity <= MAX_QUANTITY for item in order.items)
    assert 1 <= order.total <= MAX_AMOUNT
    assert len(order.id) <= MAX_ID_LENGTH and order.currency in MINOR_UNIT_EXPONENT
    # It crosses into Temporal and back unchanged.
    converter = DATA_CONVERTER.payload_converter
    assert converter.from_payloads(converter.to_payloads([order]), [Order]) == [order]


@examples(120)
@given(data=valid_orders())
def test_every_order_within_the_limits_is_accepted(data: dict[str, Any]) -> None:
    order = Order.model_validate(data)
    event(f"lines: {'1' if len(order.items) == 1 else '2-9' if len(order.items) < 10 else '10+'}")
    event(f"currency exponent: {MINOR_UNIT_EXPONENT[order.currency]}")
    _accepted_invariants(order)


@examples(250)
@given(data=mutated_orders() | st.dictionaries(st.text(max_size=10), json_values) | json_values)
def test_any_other_input_is_a_validation_error_or_a_bounded_order(data: Any) -> None:
    try:
        order = Order.model_validate(data)
    except ValidationError as err:
        event("refused")
        assert all(error["loc"] is not None and error["msg"] for error in err.errors())
        return
    event("accepted")
    _accepted_invariants(order)


# --- (b) the providers -----------------------------------------------------------------------

API_KEY = "sk_test_properties"
ROUTES = [
    ("POST", "/v1/payment_intents"),
    ("POST", "/v1/payment_intents/{id}/confirm"),
    ("POST", "/v1/payment_intents/{id}/capture"),
    ("POST", "/v1/payment_intents/{id}/cancel"),
    ("POST", "/v1/refunds"),
    ("GET", "/v1/payment_intents/{id}"),
    ("GET", "/v1/payment_intents/search"),
    ("GET", "/v1/payment_intents"),
    ("GET", "/v1/charges/{id}"),
    ("GET", "/v1/charges"),
    ("GET", "/v1/refunds"),
    ("GET", "/v1/refunds/{id}"),
    ("GET", "/v1/{id}"),
    ("PATCH", "/v1/payment_intents"),
    ("POST", "/mail/messages"),
    ("POST", "/resend/emails"),
    ("POST", "/resend/emails"),
    ("POST", "/warehouse/picklists"),
    ("POST", "/warehouse/picklists/{id}/cancel"),
    ("POST", "/warehouse/orders/{id}/cancel"),
    ("GET", "/payments/intents"),
    ("GET", "/payments/charges"),
    ("GET", "/payments/refunds"),
    ("GET", "/mail/messages"),
    ("GET", "/warehouse/picklists"),
    ("PUT", "/warehouse/stock/{id}"),
    ("DELETE", "/warehouse/stock/{id}"),
    ("GET", "/admin/ledger"),
    ("PUT", "/admin/faults/{id}"),
    ("POST", "/admin/keys/expire"),
    ("GET", "/admin/keys"),
    ("GET", "/payments/"),
    ("GET", "/"),
    ("PATCH", "/payments/intents"),
]
BODY_FIELDS = {
    "order_id": st.text(max_size=250) | identifiers,
    "amount": st.integers(-10, 2**64) | st.sampled_from([1, MAX_AMOUNT, MAX_AMOUNT + 1, 2**63]),
    "currency": st.sampled_from(["USD", "usd", "JPY", "XXXX"]),
    "payment_method": st.sampled_from(["pm_card_visa", "pm_card_declined", "4242424242424242"]),
    "charge_id": st.text(max_size=20),
    "reason": nasty_strings,
    "to": st.sampled_from(["ada@example.com", "nobody", "a" * 300 + "@example.com"])
    | st.lists(st.sampled_from(["ada@example.com", "x"]), max_size=60)
    | json_values,
    "from": nasty_strings | st.just("Shop <orders@shop.example>"),
    "text": nasty_strings,
    "html": nasty_strings | json_values,
    "headers": json_values | st.dictionaries(nasty_strings, nasty_strings, max_size=3),
    "tags": json_values
    | st.lists(st.fixed_dictionaries({"name": nasty_strings, "value": nasty_strings}), max_size=3),
    "template": nasty_strings,
    "subject": nasty_strings,
    "body": nasty_strings,
    "items": json_values | st.just([{"sku": "S", "quantity": 10**6}]),
    "ship_to": json_values,
    "on_hand": st.integers(-5, 2**64),
    "latency_ms": st.integers(-5, 2**64),
    "error_rate": st.floats(allow_nan=False),
}
# Stripe's form fields (bracket notation), valid and not: the gateway's bodies and queries.
FORM_FIELDS = {
    "amount": st.integers(-10, 2**64).map(str)
    | st.sampled_from(["1", str(MAX_AMOUNT), str(MAX_AMOUNT + 1), "1.5", "1e3", " 5", "+5"]),
    "currency": st.sampled_from(["usd", "USD", "jpy", "xxxx", ""]),
    "payment_method": st.sampled_from(
        ["pm_card_visa", "pm_card_chargeDeclined", "pm_card_declined", "4242424242424242"]
    ),
    "capture_method": st.sampled_from(["manual", "automatic", "later"]),
    "confirm": st.sampled_from(["true", "false", "yes"]),
    "metadata[order_id]": nasty_strings | identifiers,
    "metadata[x" * 3: nasty_strings,
    "metadata": st.sampled_from(["", "x"]),
    "cancellation_reason": st.sampled_from(["abandoned", "duplicate", "bored"]),
    "amount_to_capture": st.integers(-10, 2**64).map(str),
    "payment_intent": st.sampled_from(["pi_nope", ""]) | nasty_strings,
    "charge": st.sampled_from(["ch_nope"]) | nasty_strings,
    "reason": st.sampled_from(["duplicate", "requested_by_customer"]) | nasty_strings,
    "expand[]": st.sampled_from(["latest_charge", "charge", "customer"]),
    "expand[0]": st.sampled_from(["latest_charge", "data.latest_charge"]),
    "query": st.sampled_from(
        ["metadata['order_id']:'o-1'", "status:'succeeded' AND amount>10", "-status:'x'", ""]
    )
    | nasty_strings,
    "limit": st.sampled_from(["1", "100", "101", "0", "x"]),
    "page": st.sampled_from(["page_10", "page_x"]),
    "created": st.integers(-10, 2**64).map(str) | st.just("253402300799"),
    "created[gte]": st.integers(-10, 2**64).map(str) | nasty_strings,
    "created[lte]": st.sampled_from(["0", "253402300799", "253402300800", "x"]),
    "created[soon]": st.just("1"),
    "starting_after": st.sampled_from(["pi_nope", ""]) | nasty_strings,
    "ending_before": st.sampled_from(["pi_nope", ""]),
    "a[b": st.just("1"),
    "[x]": st.just("1"),
    "description": nasty_strings,
}
path_ids = st.one_of(
    identifiers,
    st.text(string.ascii_letters + string.digits + "%._~-", max_size=300),
    st.sampled_from(["payments", "mail", "pi_nope", "%2F", "%ED%A0%80", "%00", "..", "a%20b"]),
)
idempotency_keys = st.one_of(
    st.none(),
    st.uuids().map(str),
    st.text(string.printable.strip(), min_size=250, max_size=260),
    st.integers(256, 3000).map(lambda n: "k" * n),
    st.binary(min_size=1, max_size=40),  # any bytes at all: controls, latin-1, CR LF
    st.just(""),
)


@st.composite
def provider_requests(draw: st.DrawFn) -> dict[str, Any]:
    method, template = draw(st.sampled_from(ROUTES))
    path = template.replace("{id}", draw(path_ids)) if "{id}" in template else template
    headers: dict[bytes, bytes] = {}
    key = draw(idempotency_keys)
    if key is not None:
        headers[b"idempotency-key"] = key if isinstance(key, bytes) else key.encode()
    auth = draw(st.sampled_from(["good"] * 8 + ["wrong", "none"]))
    if auth != "none":
        headers[b"authorization"] = f"Bearer {API_KEY if auth == 'good' else 'nope'}".encode()
    kind = draw(st.sampled_from(["fields", "fields", "form", "form", "json", "bytes", "none"]))
    content: bytes | None = None
    if kind == "form":
        names = draw(st.lists(st.sampled_from(sorted(FORM_FIELDS)), unique=True, max_size=6))
        content = urlencode([(name, draw(FORM_FIELDS[name])) for name in names]).encode()
    elif kind == "fields":
        names = draw(st.lists(st.sampled_from(sorted(BODY_FIELDS)), unique=True, max_size=6))
        content = json.dumps({name: draw(BODY_FIELDS[name]) for name in names}).encode()
    elif kind == "json":
        content = json.dumps(draw(json_values)).encode()
    elif kind == "bytes":
        content = draw(st.binary(max_size=200) | st.just(b"[" * 50_000))
    if content is not None:
        headers[b"content-type"] = draw(
            st.sampled_from(
                [b"application/json", b"text/plain", b"application/x+json", b"",
                 b"application/x-www-form-urlencoded"]
            )
        )  # fmt: skip
    query_names = st.sampled_from(
        ["order_id", "template", "prefix", "query", "limit", "payment_intent", "charge",
         "expand[]", "metadata[a]", "a[b", "created", "created[gt]", "starting_after",
         "ending_before"]
    )  # fmt: skip
    query = draw(st.dictionaries(query_names, nasty_strings))
    event(f"provider route: {method} {template}")
    event(f"provider body: {kind}")
    event(f"provider key: {type(key).__name__ if key else 'missing'}")
    return {"method": method, "url": path, "headers": headers, "content": content, "query": query}


@pytest.fixture(scope="module")
async def providers_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """A providers app of its own, called in-process: every byte of a request is ours to pick."""
    app = create_app(tmp_path_factory.mktemp("fuzzed") / "ledger.sqlite3", API_KEY)
    yield app
    app.state.ledger.close()


def _assert_error_shape(response: httpx.Response) -> None:
    if response.url.path.startswith("/resend"):
        # Resend's shape (providers.resend): the status, a name, a message.
        body = response.json()
        assert body["statusCode"] == response.status_code
        assert isinstance(body["name"], str) and body["name"]
        assert isinstance(body["message"], str) and body["message"]
        return
    error = response.json()["error"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]
    if response.url.path.startswith("/v1"):
        # Stripe's shape: its types; a code where Stripe gives one (not on a 401, an unknown
        # URL or a key reused with other parameters).
        assert error["type"] in (
            "invalid_request_error", "card_error", "idempotency_error", "api_error"
        )  # fmt: skip
        assert isinstance(error.get("code", ""), str)
        assert response.status_code != 422  # Stripe never answers 422
    else:
        assert isinstance(error["code"], str) and error["code"]


@examples(250)
@given(request=provider_requests())
async def test_providers_answer_every_request_without_a_5xx(
    providers_app: Any, request: dict[str, Any]
) -> None:
    transport = httpx.ASGITransport(app=providers_app)  # app errors are raised, not hidden
    async with httpx.AsyncClient(transport=transport, base_url="http://providers") as http:
        response = await http.request(
            request["method"],
            request["url"],
            headers=request["headers"],
            content=request["content"],
            params=request["query"],
        )
    providers_app.state.faults.reset()  # a fuzzed fault setting must not hold the next request
    event(f"provider status: {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        _assert_error_shape(response)


@examples(40)
@given(
    key=st.text(string.printable.strip(), max_size=40)
    | st.text(string.printable.strip() + " ", min_size=230, max_size=400)
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)
)
@example(key="\x7f")  # refused by the HTTP parser itself
@example(key="\xe9t\xe9")  # reaches the app: Stripe's idempotency_key_invalid
def test_odd_idempotency_keys_over_http_are_answered_400_or_accepted(
    sandbox: SandboxAdmin, key: str
) -> None:
    """Through uvicorn: whatever key httpx can send, the answer is 200 or a clear 400."""
    key = key.strip()
    order_id = f"prop-{uuid.uuid4().hex[:12]}"
    body = {"amount": "100", "currency": "eur", "metadata[order_id]": order_id}
    # Unique per example, so a key reused from a shrunk example is still a fresh key.
    headers = {b"Idempotency-Key": f"{key}{order_id}".encode("latin-1")} if key else {}
    response = httpx.post(
        f"{sandbox.base_url}/v1/payment_intents",
        data=body,
        headers={**headers, b"Authorization": f"Bearer {sandbox.api_key}".encode()},
    )
    printable = key.isascii() and key.isprintable()
    fits = len(key) + len(order_id) <= 255
    verdict = "accepted" if printable else "not printable ASCII"
    event(f"key: {'missing' if not key else verdict if fits else 'too long'}")
    if key and printable and fits:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 400, response.text
        if not printable and response.headers["content-type"].startswith("text/plain"):
            # uvicorn's HTTP parser (httptools) refused the header before the app saw it: a
            # field value may hold no DEL or other control character (RFC 9110 5.5).
            assert response.text == "Invalid HTTP request received."
            return
        _assert_error_shape(response)
        assert response.json()["error"]["code"].startswith("idempotency_key_")


# --- (c) the command line --------------------------------------------------------------------

with_control = st.tuples(
    st.text(max_size=5), st.characters(categories=["Cc"]), st.text(max_size=5)
).map(lambda parts: "x" + "".join(parts) + "x")
long_text = st.integers(MAX_TEXT_LENGTH + 1, 3000).map(lambda n: "t" * n)
# Per flag of `start`: values the order model must refuse, whatever the other flags say.
REFUSED_START_FLAGS: dict[str, st.SearchStrategy[str]] = {
    "--order-id": nasty_strings.filter(lambda text: not _is_identifier(text))
    | st.just("o" * (MAX_ID_LENGTH + 1)),
    "--customer-id": st.sampled_from(["", "has space", "c" * (MAX_ID_LENGTH + 1), "ö"]),
    "--name": long_text | with_control | st.sampled_from(["", " ", "4242 4242 4242 4242"]),
    "--email": st.sampled_from(
        ["nobody", "a@b", "@example.com", "a" * 65 + "@example.com",
         "x" * 250 + "@example.com", "ada @example.com", "ada@example.com\x00"]
    ),
    "--item": st.sampled_from(
        ["SKU-1:0:100", "SKU-1:1001:1", "SKU-1:1:100000000", "SKU-1:2:50000000",
         "bad sku:1:1", "SKU:1", "SKU:a:b", "SKU:1:1:1", ":1:1", "S" * 81 + ":1:1",
         "SKU:99999999999999999999999:1", "SKU-1:1:49"]  # the last: below Stripe's 0.50 USD
    ),
    # CLF is ISO 4217, but Stripe does not charge in it.
    "--currency": st.sampled_from(["XYZ", "US", "", "usdx", "€", "CLF"]),
    "--payment-method": st.sampled_from(["visa", "4242424242424242", "pm_", "pm_" + "a" * 101]),
    "--line1": long_text | with_control,
    "--city": long_text | with_control,
    "--postal-code": st.just("1" * (MAX_POSTAL_CODE_LENGTH + 1)) | with_control,
    "--country": st.sampled_from(["DEU", "G", "ß", "12", ""]),
    "--payment-retry-budget": st.sampled_from(["13h", "0s", "99999999999999d", "1y", "1.5h"]),
    "--shipment-attention-after": st.sampled_from(["366d", "1d", "0s", "9" * 30 + "s"]),
}  # fmt: skip
VALID_START_FLAGS = {
    "--customer-id": "c-1",
    "--name": "Ada Lovelace",
    "--email": "ada@example.com",
    "--item": "SKU-1:1:100",
    "--line1": "1 Main St",
    "--city": "London",
    "--postal-code": "SW1Y 4JH",
    "--country": "GB",
}


def _is_identifier(text: str) -> bool:
    try:
        starter._order_id(text)  # the order model's rule
    except argparse.ArgumentTypeError:
        return False
    return True


@st.composite
def refused_start_arguments(draw: st.DrawFn) -> tuple[list[str], str | None]:
    """``start`` arguments with at least one flag the model refuses; and the order id used."""
    broken = draw(st.lists(st.sampled_from(sorted(REFUSED_START_FLAGS)), min_size=1, max_size=3))
    flags: dict[str, list[str]] = {flag: [value] for flag, value in VALID_START_FLAGS.items()}
    fresh_id = f"prop-{uuid.uuid4().hex[:12]}"
    flags["--order-id"] = [fresh_id]
    for flag in broken:
        event(f"start: refused {flag}")
        flags[flag] = [draw(REFUSED_START_FLAGS[flag])]
    order_id = None if "--order-id" in broken else fresh_id
    if draw(st.booleans()) and "--item" not in broken:  # too many lines, each one fine
        flags["--item"] = [f"S{n}:1:1" for n in range(MAX_LINES + 1)]
        event("start: refused 101 lines")
    argv = ["start"]
    for flag, values in flags.items():
        argv += [f"{flag}={value}" for value in values]  # '=' so a value may start with '-'
    return argv, order_id


@st.composite
def order_command_arguments(draw: st.DrawFn) -> tuple[list[str], str | None]:
    """``ship``/``cancel``/``resolve``/``status`` of an order that does not exist, or a bad id."""
    command = draw(st.sampled_from(["ship", "cancel", "resolve", "status"]))
    valid_id = draw(st.booleans())
    order_id = f"prop-{uuid.uuid4().hex[:12]}" if valid_id else draw(nasty_strings)
    event(f"{command}: {'unknown order' if valid_id else 'any id'}")
    text = st.sampled_from(["UPS", "1Z999AA1", "changed my mind"]) | nasty_strings
    argv = [command, "--", order_id] if not valid_id else [command, order_id]
    options: list[str] = []
    if command == "ship":
        options = [f"--carrier={draw(text)}", f"--tracking={draw(text)}"]
    elif command == "cancel":
        options = [f"--reason={draw(text)}"]
    elif command == "resolve":
        action = draw(st.sampled_from(["retry", "retry-payment", "cancel"]) | nasty_strings)
        options = [f"--action={action}", f"--reason={draw(text)}"]
    if command in ("cancel", "resolve"):
        wait = draw(st.sampled_from(["", "--no-wait", "--timeout=30s", "--timeout=9999999999d"]))
        options += [wait] if wait else []
    if command == "status" and draw(st.booleans()):
        options.append("--json")
    # Options before the positional id: after '--' everything is positional.
    argv = [argv[0], *options, *argv[1:]]
    return argv, order_id if valid_id else None


def _run_starter(argv: list[str]) -> tuple[int, str]:
    """Run ``starter.main`` in this thread; return its exit code and what it wrote to stderr.

    Anything it raises other than argparse's ``SystemExit`` is a traceback for a user.
    """
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = starter.main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, err.getvalue()


@pytest.fixture(scope="module")
def starter_env(client: Client) -> Iterator[None]:
    """``starter.main`` in this process talks to the session's Temporal."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)
        patch.setenv("TEMPORAL_NAMESPACE", client.namespace)
        patch.delenv("TEMPORAL_PROFILE", raising=False)
        yield


async def _never_started(client: Client, order_id: str | None) -> None:
    if order_id is None:
        return  # refused before it could name a workflow
    with pytest.raises(RPCError) as caught:
        await client.get_workflow_handle(order_id).describe()
    assert caught.value.status == RPCStatusCode.NOT_FOUND


@examples(50)
@given(case=refused_start_arguments() | order_command_arguments())
async def test_the_cli_refuses_bad_input_clearly_and_starts_nothing(
    client: Client, starter_env: None, case: tuple[list[str], str | None]
) -> None:
    argv, order_id = case
    # In a thread: main() runs its own event loop, as it does from the command line.
    code, stderr = await asyncio.to_thread(_run_starter, argv)
    event(f"cli exit code: {code}")
    assert code in ((2,) if argv[0] == "start" else (2, 4)), (argv, code, stderr)
    assert "Traceback" not in stderr and "error" in stderr, stderr
    await _never_started(client, order_id)


# --- (d) signals -----------------------------------------------------------------------------


def _is_shipment(payload: Any) -> bool:
    try:
        Shipment.model_validate(payload)
    except ValidationError:
        return False
    return True


signal_payloads = (
    json_values
    | st.fixed_dictionaries(
        {"carrier": json_values | nasty_strings, "tracking_number": json_values | nasty_strings}
    )
    | st.fixed_dictionaries(
        {"carrier": st.just("UPS"), "tracking_number": st.just("1Z999")},
        optional={"extra": json_values},
    )
).filter(lambda payload: not _is_shipment(payload))


async def _completed_without_task_failures(client: Client, order_id: str) -> None:
    """Wait until the order completes; fail at once if a workflow task failed on the way."""
    handle = client.get_workflow_handle(order_id)

    async def failures() -> list[str]:
        history = await handle.fetch_history()
        failed = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        return [
            str(event_.workflow_task_failed_event_attributes.failure.message)
            for event_ in history.events
            if event_.event_type == failed
        ]

    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        assert not (broken := await failures()), f"workflow task failed: {broken}"
        if (await order_status(client, order_id)).status == OrderStatus.COMPLETED:
            assert not await failures()
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{order_id} did not complete")


@examples(6)
@given(
    early=st.lists(signal_payloads, max_size=6),
    awaiting=st.lists(signal_payloads, min_size=1, max_size=10),
)
async def test_no_signal_payload_breaks_a_running_order(
    client: Client, task_queue: str, early: list[Any], awaiting: list[Any]
) -> None:
    """Any JSON as the shipped signal, before and while the order awaits shipment."""
    order = await _place(client, task_queue, _order_data())
    handle = client.get_workflow_handle(order.id)
    for payload in early:  # the order is still being paid and picked
        event(f"signal payload before awaiting shipment: {type(payload).__name__}")
        await handle.signal("warehouse_shipped", payload)  # by name: any JSON at all
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    for payload in awaiting:
        event(f"signal payload while awaiting shipment: {type(payload).__name__}")
        await handle.signal("warehouse_shipped", payload)
    shipment = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")
    await handle.signal(OrderWorkflow.warehouse_shipped, shipment)
    await _completed_without_task_failures(client, order.id)
    assert (await order_status(client, order.id)).shipment == shipment


async def _first_task_failure(client: Client, order_id: str) -> str | None:
    """The message of the order's first workflow task failure, once the signal was handled."""
    handle = client.get_workflow_handle(order_id)
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        history = await handle.fetch_history()
        for event_ in history.events:
            if event_.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                return str(event_.workflow_task_failed_event_attributes.failure.message)
        # Handled: a workflow task completed after the signal (which the server holds back
        # from the history while a workflow task is running).
        types = [event_.event_type for event_ in history.events]
        signalled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        if signalled in types:
            after = types[types.index(signalled) :]
            if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after:
                return None
        await asyncio.sleep(0.05)
    raise AssertionError(f"{order_id}: the signal was neither handled nor failed")


@pytest.mark.parametrize("args", [[None], [], [{"carrier": "UPS", "tracking_number": "1Z99"}, 1]])
async def test_a_malformed_shipped_signal_does_not_break_the_order(
    client: Client, task_queue: str, args: list[Any]
) -> None:
    order = await _place(client, task_queue, _order_data())
    handle = client.get_workflow_handle(order.id)
    await handle.signal("warehouse_shipped", args=args)
    try:
        assert await _first_task_failure(client, order.id) is None
    finally:
        await handle.terminate("test over")  # a broken order would retry its task forever


async def test_a_malformed_shipped_signal_then_a_valid_one_completes_the_order(
    client: Client, task_queue: str
) -> None:
    order = await _place(client, task_queue, _order_data())
    handle = client.get_workflow_handle(order.id)
    await handle.signal("warehouse_shipped", args=[None])
    await handle.signal("warehouse_shipped", args=[])
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    await handle.signal(
        "warehouse_shipped", args=[{"carrier": "UPS", "tracking_number": "1Z99"}, 1]
    )
    shipment = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")
    await handle.signal(OrderWorkflow.warehouse_shipped, shipment)
    await _completed_without_task_failures(client, order.id)
    assert (await order_status(client, order.id)).shipment == shipment


# --- (e) an order placed is never refused by a provider for its contents --------------------


def _order_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": f"prop-{uuid.uuid4().hex[:12]}",
        "customer": {"id": "c-1", "name": "Ada Lovelace", "email": "ada@example.com"},
        "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": 100}],
        "currency": "USD",
        "payment_method": "pm_card_visa",
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "1 Main St",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "country": "GB",
        },
    }
    return data | overrides


async def _place(client: Client, task_queue: str, data: dict[str, Any]) -> Order:
    order = Order.model_validate(data)
    await start_order(client, order, task_queue)
    return order


def _exactly(size: int) -> st.SearchStrategy[str]:
    """Text of exactly ``size`` characters of any script (no spaces, no card numbers)."""
    return st.text(_WORD_CHARS, min_size=size, max_size=size).filter(
        lambda text: not looks_like_card_number(text)
    )


CHARGEABLE_TOTALS = {
    "USD": (MINIMUM_CHARGE["USD"], MAX_AMOUNT, 1),
    "JPY": (MINIMUM_CHARGE["JPY"], MAX_AMOUNT, 1),
    "KWD": (10, MAX_AMOUNT, 10),
    "ISK": (1, from_stripe_amount(MAX_CHARGE - MAX_CHARGE % 100, "ISK"), 1),
}
"""The least and most total Stripe charges in each currency (``charge_refusal``), and what a
unit price must be a multiple of so the total keeps Stripe's last digit."""


@st.composite
def orders_at_the_limits(draw: st.DrawFn) -> dict[str, Any]:
    """An order with every field at its minimum or its maximum, in any script, in currencies
    Stripe counts differently (JPY zero-decimal, KWD three-decimal, ISK in hundredths), with
    the least and the most total Stripe charges."""
    at = st.sampled_from([1, MAX_TEXT_LENGTH]).flatmap(_exactly)
    lines = draw(st.sampled_from([1, MAX_LINES]))
    quantity = draw(st.sampled_from([1, MAX_QUANTITY]))
    currency = draw(st.sampled_from(sorted(CHARGEABLE_TOTALS)))
    least, most, step = CHARGEABLE_TOTALS[currency]
    units = lines * quantity
    low, high = -(-least // units), most // units
    # Three decimals: a unit price in tens keeps the total's last digit 0.
    unit_price = draw(st.sampled_from([low + -low % step, high - high % step]))
    sku_size = draw(st.sampled_from([1, MAX_ID_LENGTH]))
    items = [
        {"sku": f"{n:0{sku_size}d}"[-sku_size:] if sku_size > 1 else "S", "quantity": quantity,
         "unit_price": unit_price}
        for n in range(lines)
    ]  # fmt: skip
    domain = "d" * (254 - MAX_EMAIL_LOCAL_PART - 1 - 4)
    email = draw(st.sampled_from(["a@b.co", f"{'a' * MAX_EMAIL_LOCAL_PART}@{domain}.com"]))
    event(f"limits: {lines} lines x {quantity}, total {lines * quantity * unit_price:,}")
    event(f"limits: currency {currency}")
    return _order_data(
        id=f"p{uuid.uuid4().hex}".ljust(draw(st.sampled_from([33, MAX_ID_LENGTH])), "x"),
        customer={"id": "c" * sku_size, "name": draw(at), "email": email},
        items=items,
        currency=currency,
        payment_method="pm_" + "v" * draw(st.sampled_from([1, 100])),
        shipping_address={
            "name": draw(at),
            "line1": draw(at),
            "line2": draw(st.none() | at),
            "city": draw(at),
            "postal_code": draw(st.sampled_from([1, MAX_POSTAL_CODE_LENGTH]).flatmap(_exactly)),
            "country": "GB",
        },
    )


@examples(6)
@given(data=orders_at_the_limits(), end=st.sampled_from(["ship", "cancel"]))
async def test_an_order_at_the_limits_is_taken_by_every_provider(
    client: Client, task_queue: str, data: dict[str, Any], end: str
) -> None:
    order = await _place(client, task_queue, data)
    assert charge_refusal(order.total, order.currency) is None  # else start_order refused it
    view = await until_view(
        client,
        order.id,
        lambda v: v.status not in (OrderStatus.RECEIVED, OrderStatus.AUTHORIZED, OrderStatus.PAID),
        "a status past payment",
    )
    assert view.status == OrderStatus.AWAITING_SHIPMENT, view.attention_reason
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order.id)
    if end == "ship":
        shipment = Shipment(carrier="C" * MAX_CARRIER_LENGTH, tracking_number="T" * 40)
        await handle.signal(OrderWorkflow.warehouse_shipped, shipment)
        final = await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    else:
        request = CancelRequest(reason=data["shipping_address"]["name"])
        final = await handle.execute_update(OrderWorkflow.cancel, request)
    event(f"limits: ended {final.status.value}")
    assert final.status in (OrderStatus.COMPLETED, OrderStatus.CANCELLED), final
    assert final.attention_reason is None and final.total == order.total


# --- (f) amounts as Stripe counts them: the placement rule and the gateway agree ----------


@st.composite
def orders_near_stripes_rules(draw: st.DrawFn) -> dict[str, Any]:
    """A one-line order whose total is near one of Stripe's limits, in a currency with a rule.

    Totals around the minimum charges, around the eight-digit maximum in Stripe's scale (ISK's
    is 999,999) and at the model's maximum; currencies with a minimum, three decimals, Stripe's
    own scale (ISK, UGX, MGA), or none at Stripe (CLF, BOV).
    """
    currency = draw(st.sampled_from(STRIPE_RULE_CURRENCIES))
    total = draw(
        st.integers(1, 20_000)
        | st.integers(MAX_AMOUNT // 100 - 200, MAX_AMOUNT // 100 + 200)
        | st.integers(MAX_AMOUNT - 200, MAX_AMOUNT)
    )
    return _order_data(currency=currency, items=[{"sku": "S", "quantity": 1, "unit_price": total}])


STRIPE_RULE_CURRENCIES = sorted(
    {*MINIMUM_CHARGE, *THREE_DECIMAL, *WHOLE_UNITS, "MGA", "CLF", "BOV"} & set(MINOR_UNIT_EXPONENT)
)
orders_for_stripe = valid_orders(max_lines=3) | orders_near_stripes_rules()


def _stripe_verdict(order: Order) -> tuple[str | None, int | None]:
    """The placement rule's refusal of ``order`` and what the payment activity would send.

    Whatever the order: either the rule refuses it naming one of Stripe's rules, or it is
    refused by nobody and the amount sent is its total in Stripe's scale, exactly.
    """
    refusal = charge_refusal(order.total, order.currency)
    try:
        sent = to_stripe_amount(order.total, order.currency)
    except ValueError:  # not representable in Stripe's scale: never sent
        assert refusal is not None and f"({ChargeRule.WHOLE_UNITS})" in refusal, refusal
        event("stripe: refused at placement only (fraction of a whole-unit currency)")
        return refusal, None
    assert from_stripe_amount(sent, order.currency) == order.total  # exact both ways
    if refusal is not None:
        assert any(f"({rule})" in refusal for rule in ChargeRule), refusal
    return refusal, sent


@examples(300)
@given(data=orders_for_stripe)
@example(data=_order_data(currency="ISK", items=[{"sku": "S", "quantity": 2, "unit_price": 2495}]))
@example(data=_order_data(currency="MGA", items=[{"sku": "S", "quantity": 1, "unit_price": 12345}]))
def test_the_gateway_refuses_exactly_what_the_placement_rule_refuses(data: dict[str, Any]) -> None:
    """For any order, the gateway's validation of the intent the activity would create and the
    placement rule agree: both refuse it (for the same rule) or both take it, at the total in
    Stripe's scale."""
    order = Order.model_validate(data)
    refusal, sent = _stripe_verdict(order)
    if sent is None:
        return
    fields = {
        "amount": str(sent),
        "currency": order.currency.lower(),
        "payment_method": order.payment_method,
        "capture_method": "manual",
        "metadata[order_id]": order.id,
    }
    try:
        values = payment_intents.create_params(Params(decode(fields.items()))).values
    except ApiError as err:
        expected = stripe_refusal(sent, order.currency)
        assert refusal is not None and expected is not None, (order.total, order.currency)
        assert f"({expected.rule})" in refusal
        assert (err.status, err.code, err.body["error"]["param"]) == (
            400,
            expected.code,
            expected.param,
        )
        event(f"stripe: both refuse ({expected.rule})")
        return
    assert refusal is None, refusal
    assert (values["amount"], values["order_id"]) == (sent, order.id)
    event("stripe: both take it")


@examples(40)
@given(data=orders_for_stripe)
@example(data=_order_data(currency="ISK", items=[{"sku": "S", "quantity": 2, "unit_price": 2495}]))
@example(data=_order_data(currency="UGX", items=[{"sku": "S", "quantity": 1, "unit_price": 5000}]))
@example(data=_order_data(currency="MGA", items=[{"sku": "S", "quantity": 3, "unit_price": 10000}]))
async def test_the_sandbox_charges_an_orders_total_in_stripes_scale_or_refuses_it_as_placement_does(
    sandbox: SandboxAdmin, data: dict[str, Any]
) -> None:
    """The real payment activity against the sandbox gateway: an order the placement rule
    takes gets its intent, for its total in Stripe's scale; one it refuses (for a rule the
    gateway sees) is refused by the gateway with Stripe's code, and no intent exists."""
    order = Order.model_validate(data | {"id": f"prop-{uuid.uuid4().hex[:12]}"})
    refusal, sent = _stripe_verdict(order)
    if sent is None:
        return  # placement refuses it; the activity is never asked to send it
    request = PaymentIntentRequest(
        order_id=order.id,
        idempotency_key=f"{order.id}:payment-intent",
        amount=order.total,
        currency=order.currency,
        payment_method=order.payment_method,
        capture_method="manual",
    )
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with open_provider_clients(settings) as clients:
        create = PaymentActivities(clients.gateway).create_payment_intent
        try:
            intent = await ActivityEnvironment().run(create, request)
        except ApplicationError as err:
            expected = stripe_refusal(sent, order.currency)
            assert refusal is not None and expected is not None, (order.total, order.currency)
            assert err.non_retryable and provider_error_code(err) == expected.code
            assert sandbox.effects(order.id).payment_intents == 0
            event(f"sandbox: refused ({expected.rule})")
            return
        stored = await clients.gateway.v1.payment_intents.retrieve_async(intent.id)
    assert refusal is None, refusal
    assert (intent.amount, intent.currency) == (order.total, order.currency)
    assert (stored.amount, stored.currency) == (sent, order.currency.lower())
    event(f"sandbox: intent created{' in a scale other than ISO' if sent != order.total else ''}")
