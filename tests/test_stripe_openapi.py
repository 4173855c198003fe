"""The sandbox's answers judged by Stripe's own OpenAPI description, not by our reading of it.

Each call an order makes (``activities/payment.py``) is made against the sandbox through the
official ``stripe`` library, and the JSON that came back is validated against the schema
Stripe's document gives for that operation and status: ``200`` for an answer, ``default``
(Stripe's ``error`` object) for a refusal. The schemas are an extract of Stripe's document
(``tests/contracts/stripe/``, see its README for the source and how it is made).

Stripe's document is OpenAPI 3.0: ``nullable: true`` is not JSON Schema, so it is read as
"this schema, or null". Everything else is validated as JSON Schema draft 4, which is what
OpenAPI 3.0's schema objects are based on.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import stripe
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT4

from sandbox.admin_client import SandboxAdmin
from tests.support import stripe_against
from tests.test_sandbox_gateway_faults import confirm_held
from tests.test_stripe_contract import authorized, captured, create, key

CONTRACT = Path(__file__).parent / "contracts" / "stripe" / "schemas.json"
DOCUMENT_URI = "urn:stripe-openapi"

CREATE = "POST /v1/payment_intents"
RETRIEVE = "GET /v1/payment_intents/{intent}"
CONFIRM = "POST /v1/payment_intents/{intent}/confirm"
CAPTURE = "POST /v1/payment_intents/{intent}/capture"
CANCEL = "POST /v1/payment_intents/{intent}/cancel"
SEARCH = "GET /v1/payment_intents/search"
REFUND = "POST /v1/refunds"
RETRIEVE_REFUND = "GET /v1/refunds/{refund}"
LIST_REFUNDS = "GET /v1/refunds"
LIST_INTENTS = "GET /v1/payment_intents"
LIST_CHARGES = "GET /v1/charges"


def as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema: the schema, or null."""
    if isinstance(node, list):
        return [as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: as_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@cache
def contract() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CONTRACT.read_text(encoding="utf-8"))
    return loaded


@cache
def validator(operation: str, status: str) -> jsonschema.Draft4Validator:
    """The validator of ``operation``'s answer with ``status`` (``200`` or ``default``)."""
    document = as_json_schema(
        {"components": contract()["components"], "operations": contract()["operations"]}
    )
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, DRAFT4.create_resource(document)
    )
    pointer = f"{DOCUMENT_URI}#/operations/{operation.replace('/', '~1')}/{status}"
    return jsonschema.Draft4Validator({"$ref": pointer}, registry=registry)


def leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The innermost failures under ``error`` (an ``anyOf`` fails through its branches)."""
    if not error.context:
        yield error
    for cause in error.context:
        yield from leaves(cause)


def explained(error: ValidationError) -> list[str]:
    """One line per failure. In an ``anyOf`` (nullable, expandable) the branches of another
    type say nothing ("not of type 'null'"): the others are the ones that tell."""
    found = list(leaves(error))
    telling = [cause for cause in found if cause.validator != "type"] or found
    return [f"{cause.json_path}: {cause.message[:200]}" for cause in telling]


def violations(operation: str, answer: dict[str, Any], status: int = 200) -> list[str]:
    """Where ``answer`` departs from Stripe's schema for ``operation`` (empty: it conforms)."""
    check = validator(operation, "200" if status == 200 else "default")
    return sorted({line for error in check.iter_errors(answer) for line in explained(error)})


def assert_conforms(operation: str, answer: dict[str, Any], status: int = 200) -> None:
    found = violations(operation, answer, status)
    assert not found, f"{operation} ({status}) is not Stripe's shape:\n" + "\n".join(found)


def body(obj: stripe.StripeObject) -> dict[str, Any]:
    """The JSON the sandbox answered with, as it came over the wire."""
    assert obj.last_response is not None
    data = obj.last_response.data
    assert isinstance(data, dict), data
    return data


def refusal(err: stripe.StripeError) -> dict[str, Any]:
    assert isinstance(err.json_body, dict), err
    return err.json_body


@pytest.fixture
async def client(sandbox: SandboxAdmin) -> AsyncIterator[stripe.StripeClient]:
    async with stripe_against(sandbox) as gateway:
        yield gateway


@pytest.fixture
def order_id() -> str:
    return f"openapi-{uuid.uuid4().hex[:10]}"


# -- The check itself can fail -----------------------------------------------------------------


STRIPES_OWN_EXAMPLE: dict[str, Any] = {
    "id": "pi_1",
    "object": "payment_intent",
    "amount": 5499,
    "capture_method": "manual",
    "confirmation_method": "automatic",
    "created": 1_700_000_000,
    "currency": "gbp",
    "livemode": False,
    "payment_method_types": ["card"],
    "status": "requires_capture",
    "latest_charge": "ch_1",
    "canceled_at": None,
}
"""A payment intent with the fields Stripe's document requires, and two nullable ones."""


def test_the_document_is_stripes_and_covers_every_call_the_order_makes() -> None:
    document = contract()
    assert document["source"].startswith("stripe/openapi")
    assert set(document["operations"]) == {
        CREATE, RETRIEVE, CONFIRM, CAPTURE, CANCEL, SEARCH, REFUND, RETRIEVE_REFUND, LIST_REFUNDS,
        LIST_INTENTS, LIST_CHARGES,
    }  # fmt: skip
    for answers in document["operations"].values():
        assert set(answers) == {"200", "default"}
    assert {"payment_intent", "charge", "refund", "error", "api_errors"} <= set(
        document["components"]["schemas"]
    )


def test_the_check_refuses_what_stripe_would_never_send() -> None:
    stripes_own_example = STRIPES_OWN_EXAMPLE
    assert violations(RETRIEVE, stripes_own_example) == []
    for broken, where in (
        ({"status": "paid"}, "$.status"),  # not one of Stripe's statuses
        ({"amount": "5499"}, "$.amount"),  # an amount is an integer, never a string
        ({"latest_charge": 42}, "$.latest_charge"),  # an id or an expanded charge, or null
        ({"canceled_at": "yesterday"}, "$.canceled_at"),  # a unix time, or null
    ):
        found = violations(RETRIEVE, {**stripes_own_example, **broken})
        assert {line.split(":")[0] for line in found} == {where}, found
    missing = {k: v for k, v in stripes_own_example.items() if k != "livemode"}
    assert any("'livemode' is a required property" in line for line in violations(CAPTURE, missing))
    assert violations(CAPTURE, {"error": {"message": "no type"}}, status=400) != []


def test_the_extract_keeps_every_rule_and_every_schema_reached_and_nothing_else() -> None:
    spec_of = importlib.util.spec_from_file_location("extract", CONTRACT.with_name("extract.py"))
    assert spec_of is not None and spec_of.loader is not None
    extract = importlib.util.module_from_spec(spec_of)
    spec_of.loader.exec_module(extract)
    answers = {
        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/a"}}}},
        "default": {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/e"}}}
        },
    }
    paths: dict[str, Any] = {}
    for method, path in extract.OPERATIONS:
        paths.setdefault(path, {})[method] = {"responses": answers}
    described = {"description": "prose", "maxLength": 5000, "type": "string"}
    spec = {
        "openapi": "3.0.0",
        "info": {"version": "2099-01-01.test"},
        "paths": paths,
        "components": {
            "schemas": {
                "a": {
                    "description": "prose",
                    "properties": {
                        "description": described,  # a field named description stays
                        "b": {
                            "anyOf": [{"type": "string"}, {"$ref": "#/components/schemas/b"}],
                            "nullable": True,
                            "x-expansionResources": {"$ref": "#/components/schemas/unused"},
                        },
                    },
                    "required": ["b"],
                    "x-resourceId": "a",
                },
                "b": {"properties": {"id": {"type": "string"}}, "type": "object"},
                "e": {"properties": {"error": {"type": "object"}}, "required": ["error"]},
                "unused": {"type": "object"},
            }
        },
    }
    cut = extract.extract(spec, "a test")
    assert (cut["source"], cut["api_version"]) == ("a test", "2099-01-01.test")
    assert set(cut["components"]["schemas"]) == {"a", "b", "e"}
    assert cut["components"]["schemas"]["a"] == {
        "properties": {
            "description": {"maxLength": 5000, "type": "string"},
            "b": {
                "anyOf": [{"type": "string"}, {"$ref": "#/components/schemas/b"}],
                "nullable": True,
            },
        },
        "required": ["b"],
    }
    assert set(cut["operations"]) == {f"{m.upper()} {p}" for m, p in extract.OPERATIONS}


# -- Every answer the order reads --------------------------------------------------------------


async def test_create_confirm_capture_and_retrieve_answer_in_stripes_shape(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id)
    assert intent.status == "requires_confirmation"
    assert_conforms(CREATE, body(intent))
    confirmed = await client.v1.payment_intents.confirm_async(
        intent.id, {}, key(order_id, "confirm")
    )
    assert confirmed.status == "requires_capture"
    assert_conforms(CONFIRM, body(confirmed))
    done = await client.v1.payment_intents.capture_async(intent.id, {}, key(order_id, "capture"))
    assert done.status == "succeeded"
    assert_conforms(CAPTURE, body(done))
    found = await client.v1.payment_intents.retrieve_async(intent.id)
    assert_conforms(RETRIEVE, body(found))
    expanded = await client.v1.payment_intents.retrieve_async(
        intent.id, {"expand": ["latest_charge"]}
    )
    assert isinstance(expanded.latest_charge, stripe.Charge)  # the charge's schema is judged too
    assert_conforms(RETRIEVE, body(expanded))


async def test_cancel_of_an_authorization_answers_in_stripes_shape(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await authorized(client, order_id)
    cancelled = await client.v1.payment_intents.cancel_async(
        intent.id, {"cancellation_reason": "abandoned"}, key(order_id, "cancel")
    )
    assert (cancelled.status, cancelled.cancellation_reason) == ("canceled", "abandoned")
    assert_conforms(CANCEL, body(cancelled))


async def test_search_answers_in_stripes_shape(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    sandbox.set_faults("payments", search_lag_ms=0)
    intent = await authorized(client, order_id)
    found = await client.v1.payment_intents.search_async(
        {"query": f"metadata['order_id']:'{order_id}'"}
    )
    assert [item.id for item in found.data] == [intent.id]
    assert_conforms(SEARCH, body(found))


async def test_refund_create_retrieve_and_list_answer_in_stripes_shape(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await captured(client, order_id)
    refund = await client.v1.refunds.create_async(
        {"payment_intent": intent.id, "amount": 499, "reason": "requested_by_customer"},
        key(order_id, "refund"),
    )
    assert (refund.amount, refund.status) == (499, "succeeded")
    assert_conforms(REFUND, body(refund))
    assert_conforms(RETRIEVE_REFUND, body(await client.v1.refunds.retrieve_async(refund.id)))
    expanded = await client.v1.refunds.retrieve_async(refund.id, {"expand": ["charge"]})
    assert isinstance(expanded.charge, stripe.Charge)
    assert_conforms(RETRIEVE_REFUND, body(expanded))
    listed = await client.v1.refunds.list_async({"charge": str(intent.latest_charge)})
    assert [item.id for item in listed.data] == [refund.id]
    assert_conforms(LIST_REFUNDS, body(listed))


async def test_the_lists_the_contract_counts_with_answer_in_stripes_shape_page_by_page(
    client: stripe.StripeClient, order_id: str
) -> None:
    since = int(time.time()) - 1
    first = await captured(client, order_id)
    second = await authorized(client, f"{order_id}-b")
    page = await client.v1.payment_intents.list_async({"created": {"gte": since}, "limit": 1})
    assert [item.id for item in page.data] == [second.id] and page.has_more is True
    assert_conforms(LIST_INTENTS, body(page))
    after = await client.v1.payment_intents.list_async(
        {"created": {"gte": since}, "limit": 1, "starting_after": second.id}
    )
    assert [item.id for item in after.data] == [first.id]
    assert_conforms(LIST_INTENTS, body(after))
    charges = await client.v1.charges.list_async({"payment_intent": first.id})
    assert [item.id for item in charges.data] == [first.latest_charge]
    assert_conforms(LIST_CHARGES, body(charges))


# -- Every refusal the order classifies --------------------------------------------------------


async def test_a_decline_answers_in_stripes_shape_with_its_decline_code(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id, "pm_card_chargeDeclinedInsufficientFunds")
    with pytest.raises(stripe.CardError) as declined:
        await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    error = refusal(declined.value)["error"]
    assert (error["code"], error["decline_code"]) == ("card_declined", "insufficient_funds")
    assert_conforms(CONFIRM, refusal(declined.value), 402)
    # The declined intent carries the decline in last_payment_error: Stripe's shape there too.
    after = await client.v1.payment_intents.retrieve_async(intent.id)
    assert after.last_payment_error is not None
    assert_conforms(RETRIEVE, body(after))
    # ... and its latest charge is the failed one, a Charge in Stripe's shape.
    failed = await client.v1.payment_intents.retrieve_async(
        intent.id, {"expand": ["latest_charge"]}
    )
    assert isinstance(failed.latest_charge, stripe.Charge)
    assert failed.latest_charge.status == "failed"
    assert_conforms(RETRIEVE, body(failed))


@pytest.mark.parametrize("status", ["succeeded", "canceled"])
async def test_unexpected_state_answers_in_stripes_shape_with_the_intent(
    client: stripe.StripeClient, order_id: str, status: str
) -> None:
    intent = await captured(client, order_id)
    if status == "canceled":
        intent = await create(client, f"{order_id}-b")
        await client.v1.payment_intents.cancel_async(intent.id, {}, key(order_id, "cancel-1"))
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.payment_intents.cancel_async(intent.id, {}, key(order_id, "cancel"))
    error = refusal(refused.value)["error"]
    assert error["code"] == "payment_intent_unexpected_state"
    assert error["payment_intent"]["status"] == status  # the caller goes by this status
    assert_conforms(CANCEL, refusal(refused.value), 400)


async def test_a_key_reused_with_other_parameters_answers_in_stripes_shape(
    client: stripe.StripeClient, order_id: str
) -> None:
    await create(client, order_id)
    with pytest.raises(stripe.IdempotencyError) as reused:
        await create(client, order_id, amount=100)
    assert refusal(reused.value)["error"]["type"] == "idempotency_error"
    assert_conforms(CREATE, refusal(reused.value), 400)


CallWhileHeld = Callable[[stripe.StripeClient, str, str], Any]


@pytest.mark.parametrize(
    ("operation", "call", "status", "code"),
    [
        (
            CONFIRM,
            lambda client, intent, order: client.v1.payment_intents.confirm_async(
                intent, {}, key(order, "confirm")
            ),
            409,
            "idempotency_key_in_use",
        ),
        (
            CANCEL,
            lambda client, intent, order: client.v1.payment_intents.cancel_async(
                intent, {}, key(order, "cancel")
            ),
            429,
            "lock_timeout",
        ),
    ],
    ids=["key-in-flight", "lock-timeout"],
)
async def test_a_request_meeting_one_in_flight_answers_in_stripes_shape(
    client: stripe.StripeClient,
    sandbox: SandboxAdmin,
    order_id: str,
    operation: str,
    call: CallWhileHeld,
    status: int,
    code: str,
) -> None:
    async with confirm_held(client, sandbox, order_id) as intent:
        with pytest.raises(stripe.StripeError) as busy:
            await call(client, intent.id, order_id)
    assert (busy.value.http_status, refusal(busy.value)["error"]["code"]) == (status, code)
    assert_conforms(operation, refusal(busy.value), status)


async def test_an_unknown_intent_or_refund_is_resource_missing_in_stripes_shape(
    client: stripe.StripeClient, order_id: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as no_intent:
        await client.v1.payment_intents.retrieve_async("pi_unknown")
    assert (no_intent.value.http_status, no_intent.value.code) == (404, "resource_missing")
    assert_conforms(RETRIEVE, refusal(no_intent.value), 404)
    with pytest.raises(stripe.InvalidRequestError) as no_refund:
        await client.v1.refunds.retrieve_async("re_unknown")
    assert no_refund.value.code == "resource_missing"
    assert_conforms(RETRIEVE_REFUND, refusal(no_refund.value), 404)
    with pytest.raises(stripe.InvalidRequestError) as refund_of_nothing:
        await client.v1.refunds.create_async({"payment_intent": "pi_unknown"}, key(order_id, "rf"))
    assert (refund_of_nothing.value.http_status, refund_of_nothing.value.code) == (
        400,
        "resource_missing",
    )
    assert_conforms(REFUND, refusal(refund_of_nothing.value), 400)


# -- 3-D Secure, disputes, and the objects Stripe's events carry ------------------------------


@cache
def component_validator(name: str) -> jsonschema.Draft4Validator:
    """The validator of one of Stripe's objects (``dispute``, ``payment_intent``...)."""
    document = as_json_schema({"components": contract()["components"]})
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, DRAFT4.create_resource(document)
    )
    pointer = f"{DOCUMENT_URI}#/components/schemas/{name}"
    return jsonschema.Draft4Validator({"$ref": pointer}, registry=registry)


def assert_is_stripes(name: str, obj: dict[str, Any]) -> None:
    found = sorted(
        {line for error in component_validator(name).iter_errors(obj) for line in explained(error)}
    )
    assert not found, f"not Stripe's {name}:\n" + "\n".join(found)


async def test_a_3d_secure_confirm_and_a_failed_authentication_answer_in_stripes_shape(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await create(client, order_id, "pm_card_threeDSecure2Required")
    waiting = await client.v1.payment_intents.confirm_async(
        intent.id, {"return_url": "https://shop.test/back"}, key(order_id, "confirm")
    )
    assert waiting.status == "requires_action"
    assert_conforms(CONFIRM, body(waiting))  # next_action.redirect_to_url judged by its schema
    assert waiting.next_action is not None and waiting.next_action.redirect_to_url is not None
    url = str(waiting.next_action.redirect_to_url.url)
    failed = await asyncio.to_thread(httpx.post, f"{url}&outcome=fail")
    assert failed.status_code == 200 and "https://shop.test/back?" in failed.text  # the way back
    assert_conforms(RETRIEVE, body(await client.v1.payment_intents.retrieve_async(intent.id)))


async def test_a_3d_secure_confirm_without_a_return_url_answers_use_stripe_sdk_in_stripes_shape(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id, "pm_card_authenticationRequired")
    waiting = await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    assert waiting.next_action is not None and waiting.next_action.type == "use_stripe_sdk"
    assert_conforms(CONFIRM, body(waiting))


async def test_a_confirm_refused_for_want_of_a_return_url_answers_in_stripes_shape(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id, payment_method_types=None)
    assert_conforms(CREATE, body(intent))  # automatic_payment_methods judged by its schema
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    assert refusal(refused.value)["error"]["type"] == "invalid_request_error"
    assert_conforms(CONFIRM, refusal(refused.value), 400)


async def test_a_dispute_and_the_objects_of_stripes_events_are_in_stripes_shape(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    intent = await captured(client, order_id)
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    opened = await asyncio.to_thread(
        httpx.post,
        f"{sandbox.base_url}/admin/disputes",
        json={"payment_intent": intent.id, "reason": "product_not_received"},
        headers=headers,
    )
    assert opened.status_code == 200, opened.text
    assert_is_stripes("dispute", opened.json())
    listed = await asyncio.to_thread(
        httpx.get,
        f"{sandbox.base_url}/admin/stripe-events",
        params={"order_id": order_id},
        headers=headers,
    )
    events = [row["event"] for row in listed.json()["data"]]
    assert {event["type"] for event in events} == {
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
        "charge.dispute.created",
    }
    for event in events:
        obj = event["data"]["object"]
        assert_is_stripes(obj["object"], obj)
