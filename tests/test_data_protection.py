"""Customer data is encrypted in Temporal and readable only through the codec.

Orders go through every path (completed, declined, cancelled with a refund, a refused step
parked for an operator and retried) on a real dev server; their raw histories, descriptions,
listings, query answers and update refusals, as Temporal holds them, are scanned for the
customer's name, email and address. The codec server decodes them over HTTP and refuses wrong
tokens and foreign origins; encrypted histories replay; keys rotate; a tampered payload fails.
Last, the run command's own stack is started and the real Temporal Web UI, opened in headless
Chromium, shows the decoded email.
"""

import asyncio
import base64
import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads, WorkflowExecution
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import History
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.update.v1 import Input, Meta, WaitPolicy
from temporalio.api.update.v1 import Request as UpdateRequest
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    ListWorkflowExecutionsRequest,
    QueryWorkflowRequest,
    UpdateWorkflowExecutionRequest,
)
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from orders.client.orders import cancel_order, resolve_order, ship_order, start_order
from orders.client.temporal import DATA_CONVERTER
from orders.config.settings import TASK_QUEUE
from orders.domain.models import Order, ResolveRequest, Shipment
from orders.domain.status import OperatorAction, OrderStatus
from orders.security.codec import (
    ENCRYPTED_ENCODING,
    KEY_ID_KEY,
    DecryptionError,
    EncryptionCodec,
    UnknownKeyError,
)
from orders.security.codec_server import TOKEN_ENV
from orders.security.keys import (
    KEY_FILE_ENV,
    KEYS_ENV,
    KeyConfigError,
    KeyRing,
    ensure_key_file,
    generate_key,
    load_key_ring,
    parse_keys,
    read_key_file,
)
from orders.security.keys import main as keys_main
from sandbox.admin_client import SandboxAdmin
from tests import support
from tests.support import make_order, wait_for_status
from tools.stack.processes import ROOT, find_binary, free_port, start_codec_server
from worker import sandboxed_runner
from workflows.order import OrderWorkflow

ARTIFACTS = ROOT / "test-artifacts"
"""Screenshots and pages the browser test saves (not committed)."""
UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")
UI_ORIGIN_PORT = 8233
TOKEN = "codec-test-token"


@dataclass(frozen=True)
class Person:
    """A customer whose every detail is unique to this test run, so a scan cannot miss it."""

    name: str
    email: str
    line1: str
    city: str
    postal_code: str

    @classmethod
    def unique(cls) -> "Person":
        tag = uuid.uuid4().hex[:8]
        return cls(
            name=f"Ada Lovelace {tag}",
            email=f"ada.{tag}@example.com",
            line1=f"{tag} Analytical Engine Row",
            city=f"Marylebone{tag}",
            postal_code=f"NW1 {tag[:3].upper()}",
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.name, self.email, self.line1, self.city, self.postal_code)

    def order(self, **overrides: Any) -> Order:
        return make_order(
            customer={"id": "cust-opaque-7", "name": self.name, "email": self.email},
            shipping_address={
                "name": self.name,
                "line1": self.line1,
                "city": self.city,
                "postal_code": self.postal_code,
                "country": "GB",
            },
            **overrides,
        )


def leaks(blob: bytes | str, person: Person) -> list[str]:
    """Which of the person's details appear in ``blob`` in clear."""
    data = blob.encode() if isinstance(blob, str) else blob
    return [secret for secret in person.secrets if secret.encode() in data]


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload inside a protobuf message, with its field path; search attributes
    (indexed by the server, so never encrypted, and holding no personal data) excepted."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.full_name == "temporal.api.common.v1.SearchAttributes":
            continue
        name = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            items = list(value.values()) if value_field.message_type is not None else []
        elif isinstance(value, Message):
            items = [value]
        else:
            items = list(value)
        for item in items:
            if isinstance(item, Payload):
                yield name, item
            else:
                yield from payloads_in(item, name)


def failures_in(message: Message) -> Iterator[Failure]:
    """Every Failure inside a protobuf message (causes included)."""
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        items = [value] if isinstance(value, Message) else list(value)
        for item in items:
            if isinstance(item, Failure):
                yield item
            yield from failures_in(item)


PATCH_MARKER = ".marker_recorded_event_attributes.details.payloads"
SDK_MARKER_FIELDS = {
    *("id", "deprecated"),  # workflow.patched
    *("seq", "attempt", "activity_id", "activity_type", "complete_time", "backoff"),
    *("original_schedule_time", "activation_index"),  # a local activity (its result is ours)
}
"""The fields of the SDK's own marker data: ids, counters and times, never customer data."""


def sdk_bookkeeping(payload: Payload) -> bool:
    """A marker payload the SDK writes for itself: plain JSON of ``SDK_MARKER_FIELDS`` only."""
    if payload.metadata.get("encoding") != b"json/plain":
        return False
    return set(json.loads(payload.data)) <= SDK_MARKER_FIELDS


def assert_protected(message: Message, person: Person, what: str) -> int:
    """Nothing of the person in clear, every payload encrypted, failures' text encoded."""
    assert not leaks(message.SerializeToString(), person), f"{what} leaks personal data"
    assert not leaks(json_format.MessageToJson(message), person), f"{what} leaks (JSON)"
    payloads = list(payloads_in(message))
    for path, payload in payloads:
        if path.endswith(PATCH_MARKER) and sdk_bookkeeping(payload):
            continue  # the SDK's own bookkeeping of a patch or a local activity, never encoded
        assert payload.metadata.get("encoding") == ENCRYPTED_ENCODING, f"{what}{path} in clear"
        assert payload.metadata.get(KEY_ID_KEY), f"{what}{path} has no key id"
    for failure in failures_in(message):
        if failure.HasField("application_failure_info"):
            assert failure.message == "Encoded failure", f"{what}: failure text in clear"
            assert failure.encoded_attributes.metadata["encoding"] == ENCRYPTED_ENCODING
    return len(payloads)


# --- Keys and the codec, without a server ----------------------------------------------------


def ring(*names: str) -> KeyRing:
    return KeyRing(tuple(generate_key(name) for name in names))


def sample_payload(text: str = "ada@example.com") -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"email": text}).encode())


async def test_a_payload_is_encrypted_whole_with_a_fresh_nonce_and_its_key_id() -> None:
    codec = EncryptionCodec(ring("k1", "k0"))
    plain = sample_payload()
    first, second = await codec.encode([plain, plain])
    assert first.metadata["encoding"] == ENCRYPTED_ENCODING
    assert first.metadata[KEY_ID_KEY] == b"k1"  # the current key, the first listed
    assert b"ada@example.com" not in first.SerializeToString()
    assert b"json/plain" not in first.SerializeToString()  # the inner metadata too
    assert first.data[:12] != second.data[:12] and first.data != second.data  # random nonce
    assert await codec.decode([first, second]) == [plain, plain]


async def test_payloads_not_marked_encrypted_pass_through_decode() -> None:
    codec = EncryptionCodec(ring("k1"))
    plain = sample_payload()
    assert await codec.decode([plain]) == [plain]


async def test_a_payload_from_a_retired_key_decodes_after_rotation(tmp_path: Path) -> None:
    old = ring("k0")
    sealed = (await EncryptionCodec(old).encode([sample_payload()]))[0]

    rotated = old.rotated(generate_key("k1"))
    assert rotated.ids == ("k1", "k0")
    codec = EncryptionCodec(rotated)
    assert await codec.decode([sealed]) == [sample_payload()]
    assert (await codec.encode([sample_payload()]))[0].metadata[KEY_ID_KEY] == b"k1"

    # The same through a key file and the rotate command.
    key_file = tmp_path / "keys.json"
    ensure_key_file(key_file)
    before = read_key_file(key_file)
    sealed = (await EncryptionCodec(before).encode([sample_payload()]))[0]
    assert keys_main(["rotate", "--file", str(key_file), "--key-id", "k-next"]) == 0
    after = read_key_file(key_file)
    assert after.current.key_id == "k-next" and after.ids[1:] == before.ids
    assert await EncryptionCodec(after).decode([sealed]) == [sample_payload()]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_an_unknown_key_id_fails_clearly() -> None:
    sealed = (await EncryptionCodec(ring("k-gone")).encode([sample_payload()]))[0]
    with pytest.raises(UnknownKeyError, match=r"key 'k-gone'.*not among the configured keys"):
        await EncryptionCodec(ring("k1", "k0")).decode([sealed])


async def test_a_tampered_payload_fails_clearly() -> None:
    keys = ring("k1", "k0")
    codec = EncryptionCodec(keys)
    sealed = (await codec.encode([sample_payload()]))[0]

    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(DecryptionError, match="failed authentication"):
        await codec.decode([flipped])

    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID_KEY] = b"k0"  # another known key: the key id is authenticated
    with pytest.raises(DecryptionError, match="failed authentication"):
        await codec.decode([relabelled])

    truncated = Payload()
    truncated.CopyFrom(sealed)
    truncated.data = sealed.data[:5]
    with pytest.raises(DecryptionError, match="truncated"):
        await codec.decode([truncated])


def test_keys_load_from_the_environment_a_key_file_or_the_local_stack(tmp_path: Path) -> None:
    k1, k0 = generate_key("kid1"), generate_key("kid0")
    inline = f"{k1.encoded()},{k0.encoded()}"
    assert load_key_ring({KEYS_ENV: inline}, tmp_path / "none").ids == ("kid1", "kid0")

    lines = tmp_path / "keys.txt"
    lines.write_text(f"# current first\n{k1.encoded()}\n{k0.encoded()}  # retired\n")
    assert load_key_ring({KEY_FILE_ENV: str(lines)}, tmp_path / "none").ids == ("kid1", "kid0")

    document = {"keys": [{"id": "kid1", "key": k1.encoded().split(":")[1]}]}
    as_json = tmp_path / "keys.json"
    as_json.write_text(json.dumps(document))
    assert load_key_ring({KEY_FILE_ENV: str(as_json)}, tmp_path / "none").current == k1

    # The environment wins over a key file; the local stack's file is only the fallback.
    both = {KEYS_ENV: k0.encoded(), KEY_FILE_ENV: str(as_json)}
    assert load_key_ring(both, tmp_path / "none").current == k0
    local = ensure_key_file(tmp_path / "data" / "codec-keys.json")
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    generated = load_key_ring({}, local)
    assert ensure_key_file(local) == local and load_key_ring({}, local) == generated  # reused
    assert "secret=<hidden>" in repr(generated.current)

    with pytest.raises(KeyConfigError, match=f"{KEYS_ENV}=kid:BASE64KEY.*{KEY_FILE_ENV}"):
        load_key_ring({}, tmp_path / "none")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kid1", "expected kid:BASE64KEY"),
        ("kid1:not base64!", "not valid base64"),
        (f"kid1:{base64.b64encode(b'short').decode()}", "AES-256 needs 32"),
        ("bad id!:" + base64.b64encode(bytes(32)).decode(), "key id 'bad id!' is invalid"),
        (f"{generate_key('dup').encoded()},{generate_key('dup').encoded()}", "listed twice"),
        ("  ", "no keys"),
    ],
)
def test_malformed_keys_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(KeyConfigError, match=message):
        parse_keys(text)


# --- Orders through every path, as Temporal stores them ---------------------------------------


@dataclass
class ProtectedOrders:
    person: Person
    orders: dict[str, Order]
    histories: dict[str, WorkflowHistory]
    query_answer: Payloads
    update_refusal: Failure


@pytest.fixture(scope="module")
async def protected(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> AsyncIterator[ProtectedOrders]:
    """One customer's orders through every path; their raw query answer and update refusal."""
    person = Person.unique()
    orders = {
        "completed": person.order(),
        "payment-declined": person.order(payment_method="pm_card_chargeDeclined"),
        "cancelled-refunded": person.order(),
        "refused-step-retried": person.order(),
    }
    refused = orders["refused-step-retried"].id
    sandbox.set_faults("warehouse", refuse_next=1, key_prefix=f"{refused}:")
    for order in orders.values():
        await start_order(client, order, task_queue)

    async def completed() -> tuple[Payloads, Failure]:
        order_id = orders["completed"].id
        await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
        answer, refusal = (
            await raw_query(client, order_id),
            await raw_refused_update(client, order_id),
        )
        await ship_order(client, order_id, UPS)
        return answer, refusal

    async def cancelled() -> None:
        order_id = orders["cancelled-refunded"].id
        await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
        view = await cancel_order(client, order_id, f"{person.name} changed her mind")
        assert view.status == OrderStatus.CANCELLED and view.refund_id

    async def retried() -> None:
        await wait_for_status(client, refused, OrderStatus.NEEDS_ATTENTION)
        await resolve_order(client, refused, ResolveRequest(action=OperatorAction.RETRY))
        await wait_for_status(client, refused, OrderStatus.AWAITING_SHIPMENT)
        await ship_order(client, refused, UPS)

    (answer, refusal), *_ = await asyncio.gather(completed(), cancelled(), retried())
    histories = {}
    for path, order in orders.items():
        handle = client.get_workflow_handle(order.id)
        await handle.result()
        histories[path] = await handle.fetch_history()
    declined = await client.get_workflow_handle_for(
        OrderWorkflow.run, orders["payment-declined"].id
    ).result()
    assert declined.status == OrderStatus.PAYMENT_DECLINED
    yield ProtectedOrders(person, orders, histories, answer, refusal)


async def raw_query(client: Client, order_id: str) -> Payloads:
    """The status query's answer exactly as it crosses Temporal."""
    response = await client.workflow_service.query_workflow(
        QueryWorkflowRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=order_id),
            query=WorkflowQuery(query_type="status"),
        )
    )
    return response.query_result


async def raw_refused_update(client: Client, order_id: str) -> Failure:
    """An operator's retry of an order that needs none: the refusal as Temporal carries it."""
    args = await DATA_CONVERTER.encode([ResolveRequest(action=OperatorAction.RETRY)])
    response = await client.workflow_service.update_workflow_execution(
        UpdateWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=order_id),
            request=UpdateRequest(
                meta=Meta(update_id=str(uuid.uuid4())),
                input=Input(name="resolve", args=Payloads(payloads=args)),
            ),
            wait_policy=WaitPolicy(
                lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED
            ),
        )
    )
    assert response.outcome.HasField("failure"), "the validator should refuse the retry"
    return response.outcome.failure


async def test_raw_histories_of_every_path_hold_no_personal_data(
    protected: ProtectedOrders,
) -> None:
    kinds: set[str] = set()
    for path, history in protected.histories.items():
        raw = History(events=history.events)
        count = assert_protected(raw, protected.person, f"history of the {path} order")
        assert count > 10, f"{path}: too few payloads found to prove anything"
        kinds |= {name for name, _ in payloads_in(raw)}
    # The kinds of payload the histories carry, each one encrypted:
    for kind in (
        "workflow_execution_started_event_attributes.input",  # the order
        "workflow_execution_started_event_attributes.memo",  # per-order options
        "user_metadata.summary",  # activity summaries and the workflow's static summary
        "activity_task_scheduled_event_attributes.input",  # activity inputs (the email's to)
        "activity_task_completed_event_attributes.result",  # activity results
        "activity_task_failed_event_attributes.failure",  # a decline, a refusal
        "workflow_execution_signaled_event_attributes.input",  # the shipped report
        "workflow_execution_update_accepted_event_attributes",  # cancel and resolve requests
        "workflow_execution_update_completed_event_attributes.outcome",  # their results
        "workflow_execution_completed_event_attributes.result",  # the final order view
    ):
        assert any(kind in name for name in kinds), f"no {kind} payload seen"

    assert protected.query_answer.payloads
    assert_protected(protected.query_answer, protected.person, "the status query's answer")
    refusal = protected.update_refusal
    assert_protected(refusal, protected.person, "an update's refusal")
    decoded = await DATA_CONVERTER.decode_failure(refusal)  # what the client shows
    assert "not needs-attention; there is nothing to resolve" in str(decoded)


async def test_describe_and_list_hold_no_personal_data(
    client: Client, protected: ProtectedOrders
) -> None:
    for order in protected.orders.values():
        description = await client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=client.namespace, execution=WorkflowExecution(workflow_id=order.id)
            )
        )
        assert_protected(description, protected.person, f"describe of {order.id}")
        summary = description.execution_config.user_metadata.summary
        assert summary.metadata["encoding"] == ENCRYPTED_ENCODING  # the static summary
    listing = await client.workflow_service.list_workflow_executions(
        ListWorkflowExecutionsRequest(
            namespace=client.namespace,
            query=" OR ".join(f"WorkflowId = '{o.id}'" for o in protected.orders.values()),
        )
    )
    assert len(listing.executions) == len(protected.orders)
    assert_protected(listing, protected.person, "the workflow listing")


async def test_the_project_converter_decodes_what_temporal_stores(
    client: Client, protected: ProtectedOrders
) -> None:
    order = protected.orders["completed"]
    description = await client.get_workflow_handle(order.id).describe()
    assert await description.static_summary() == f"{order.customer.name}: 45.00 USD"
    started = protected.histories["completed"].events[0]
    [decoded] = await DATA_CONVERTER.decode(
        started.workflow_execution_started_event_attributes.input.payloads, [Order]
    )
    assert decoded == order


async def test_encrypted_histories_replay(protected: ProtectedOrders) -> None:
    replayer = Replayer(
        workflows=[OrderWorkflow],
        data_converter=DATA_CONVERTER,
        workflow_runner=sandboxed_runner(DATA_CONVERTER),
    )
    for path, history in protected.histories.items():
        recorded = WorkflowHistory.from_json(history.workflow_id, history.to_json())
        result = await replayer.replay_workflow(recorded, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            kept = ARTIFACTS / f"unreplayable-{path}-{history.workflow_id}.json"
            kept.parent.mkdir(exist_ok=True)
            kept.write_text(history.to_json())  # encrypted under the run's key, printed below
            raise AssertionError(f"{path} did not replay (history in {kept})") from (
                result.replay_failure
            )


async def test_history_payloads_decode_after_a_key_rotation(protected: ProtectedOrders) -> None:
    """Orders written under the key in use now stay readable once it is retired."""
    written_under = os.environ[KEYS_ENV]
    retired = parse_keys(written_under)
    rotated = EncryptionCodec(retired.rotated())
    history = protected.histories["completed"]
    sealed = [
        payload
        for _, payload in payloads_in(History(events=history.events))
        if payload.metadata["encoding"] == ENCRYPTED_ENCODING
    ]
    assert {p.metadata[KEY_ID_KEY].decode() for p in sealed} == {retired.current.key_id}
    opened = await rotated.decode(sealed)
    assert any(protected.person.email.encode() in payload.data for payload in opened)
    with pytest.raises(UnknownKeyError):
        await EncryptionCodec(ring("only-new")).decode(sealed)


# --- The codec server over HTTP ---------------------------------------------------------------


@pytest.fixture(scope="module")
def codec_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The codec server as a real process with a bearer token and the UI's origins."""
    port = free_port()
    origins = [f"http://localhost:{UI_ORIGIN_PORT}", f"http://127.0.0.1:{UI_ORIGIN_PORT}"]
    log = tmp_path_factory.mktemp("codec") / "codec-server.log"
    process = start_codec_server(port, origins, log, {TOKEN_ENV: TOKEN})
    yield f"http://127.0.0.1:{port}"
    process.stop()


def as_json(payloads: list[Payload]) -> dict[str, Any]:
    return {"payloads": [json_format.MessageToDict(payload) for payload in payloads]}


def from_json(body: dict[str, Any]) -> list[Payload]:
    return list(json_format.ParseDict(body, Payloads()).payloads)


AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}


def test_the_codec_server_decodes_history_payloads(
    codec_server: str, protected: ProtectedOrders
) -> None:
    history = protected.histories["cancelled-refunded"]
    sealed = [payload for _, payload in payloads_in(History(events=history.events))]
    for path in ("/decode", "/default/decode"):
        response = httpx.post(f"{codec_server}{path}", json=as_json(sealed), headers=AUTH)
        assert response.status_code == 200, response.text
        opened = from_json(response.json())
        assert len(opened) == len(sealed)
        assert all(p.metadata["encoding"] != ENCRYPTED_ENCODING for p in opened)
        text = b"".join(payload.data for payload in opened)
        assert all(secret.encode() in text for secret in protected.person.secrets)


def test_the_codec_server_encodes_and_passes_clear_payloads_through(codec_server: str) -> None:
    plain = [sample_payload()]
    encoded = httpx.post(f"{codec_server}/encode", json=as_json(plain), headers=AUTH)
    assert encoded.status_code == 200
    [sealed] = from_json(encoded.json())
    assert sealed.metadata["encoding"] == ENCRYPTED_ENCODING
    assert b"ada@example.com" not in sealed.data
    decoded = httpx.post(f"{codec_server}/decode", json=encoded.json(), headers=AUTH)
    assert from_json(decoded.json()) == plain
    passed = httpx.post(f"{codec_server}/decode", json=as_json(plain), headers=AUTH)
    assert from_json(passed.json()) == plain


def test_the_codec_server_refuses_a_missing_or_wrong_token(codec_server: str) -> None:
    body = as_json([sample_payload()])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.post(f"{codec_server}/decode", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_codec_server_answers_only_the_ui_origin(codec_server: str) -> None:
    ui = f"http://localhost:{UI_ORIGIN_PORT}"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    allowed = httpx.options(f"{codec_server}/decode", headers={"Origin": ui, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ui
    assert "x-namespace" in allowed.headers["access-control-allow-headers"]
    answered = httpx.post(
        f"{codec_server}/decode", json=as_json([sample_payload()]), headers={"Origin": ui, **AUTH}
    )
    assert answered.status_code == 200
    assert answered.headers["access-control-allow-origin"] == ui

    for foreign in ("http://evil.example", "http://localhost:9999", "null"):
        refused = httpx.options(f"{codec_server}/decode", headers={"Origin": foreign, **preflight})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        refused = httpx.post(
            f"{codec_server}/decode",
            json=as_json([sample_payload()]),
            headers={"Origin": foreign, **AUTH},
        )
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


def test_the_codec_server_refuses_a_tampered_payload_or_bad_json(codec_server: str) -> None:
    sealed = EncryptionCodec(parse_keys(os.environ[KEYS_ENV])).encrypt(sample_payload())
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    response = httpx.post(f"{codec_server}/decode", json=as_json([sealed]), headers=AUTH)
    assert response.status_code == 400 and "failed authentication" in response.json()["detail"]
    response = httpx.post(f"{codec_server}/decode", content=b"{not json", headers=AUTH)
    assert response.status_code == 400


# --- The run command's stack: UI and CLI decode through the codec server ----------------------


def chromium() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )


def render(url: str, *, screenshot: Path | None = None, attempts: int = 2) -> str:
    """The page's DOM after its scripts ran, by headless Chromium (PITFALLS 11).

    With ``screenshot``, a PNG of the page is written there too. A fresh profile each run;
    one retry when Chromium writes nothing (it sometimes does not on a busy machine).
    """
    browser = chromium()
    assert browser
    base = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,1600",
        "--virtual-time-budget=15000",
    ]
    dom = ""
    for _ in range(attempts):
        with tempfile.TemporaryDirectory() as profile:
            done = subprocess.run(
                [*base, f"--user-data-dir={profile}", "--dump-dom", url],
                capture_output=True,
                text=True,
                timeout=120,
            )
            dom = done.stdout
        if dom.strip():
            break
    if screenshot is not None:
        screenshot.unlink(missing_ok=True)
        for _ in range(attempts):
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run(
                    [*base, f"--user-data-dir={profile}", f"--screenshot={screenshot}", url],
                    capture_output=True,
                    timeout=120,
                )
            if screenshot.exists() and screenshot.stat().st_size > 0:
                break
    return dom


@pytest.fixture
def run_command(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``python -m tools.stack.up`` (what ``./scripts/run`` runs) with no key configured."""
    ports = {name: free_port() for name in ("temporal", "ui", "providers", "codec")}
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in (KEYS_ENV, KEY_FILE_ENV, TOKEN_ENV)}
    env.pop("ORDERS_TASK_QUEUE", None)
    args = [
        "--data-dir", str(data),
        "--temporal-port", str(ports["temporal"]), "--ui-port", str(ports["ui"]),
        "--providers-port", str(ports["providers"]), "--codec-port", str(ports["codec"]),
    ]  # fmt: skip
    ready = "Durable orders is running."
    with support.run_command(args, env, tmp_path / "run.log", ready, 90) as banner:
        yield {"ports": ports, "data": data, "env": env, "banner": banner}


async def test_the_run_command_wires_the_codec_server_into_the_ui_and_cli(
    run_command: dict[str, Any],
) -> None:
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/setup-test-tools installs it (as root)")
        pytest.skip("chromium is missing: run scripts/setup-test-tools as root")
    ports, data = run_command["ports"], run_command["data"]
    codec_url = f"http://127.0.0.1:{ports['codec']}"
    key_file = data / "codec-keys.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # generated on the first run
    assert f"Codec server      {codec_url}" in run_command["banner"]
    assert str(key_file) in run_command["banner"]

    # A client holding the stack's generated key, as starter.py in another terminal would.
    stack_keys = read_key_file(key_file)
    converter = dataclasses.replace(DATA_CONVERTER, payload_codec=EncryptionCodec(stack_keys))
    client = await Client.connect(f"127.0.0.1:{ports['temporal']}", data_converter=converter)
    person = Person.unique()
    order = person.order()
    await start_order(client, order, TASK_QUEUE)
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=60)
    await ship_order(client, order.id, UPS)
    await client.get_workflow_handle(order.id).result()

    cli_env = {**run_command["env"], KEY_FILE_ENV: str(key_file)}
    cli_env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{ports['temporal']}"
    status = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "starter.py", "status", order.id],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0 and "completed" in status.stdout, status.stderr

    show = [find_binary("temporal"), "workflow", "show", "--address",
            f"127.0.0.1:{ports['temporal']}", "--workflow-id", order.id, "--detailed"]  # fmt: skip
    raw = await asyncio.to_thread(subprocess.run, show, capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0 and not leaks(raw.stdout, person), raw.stderr
    decoded = await asyncio.to_thread(
        subprocess.run, [*show, "--codec-endpoint", codec_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr
    assert person.email in decoded.stdout and person.name in decoded.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    page = f"http://localhost:{ports['ui']}/namespaces/default/workflows/{order.id}"
    shot = ARTIFACTS / "decoded-order.png"
    dom = await asyncio.to_thread(render, page, screenshot=shot)
    (ARTIFACTS / "decoded-order.html").write_text(dom)
    assert person.email in dom, f"the UI page does not show the decoded email (see {ARTIFACTS})"
    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot"
