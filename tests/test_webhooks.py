"""Warehouse webhooks end to end: a real warehouse (providers process), a real receiver process,
a real Temporal dev server and a worker. The warehouse ships, its outbox delivers the signed
event at least once, and each order ships exactly once, whatever is duplicated, replayed,
forged, refused or restarted along the way. Effects are counted at the providers' ledger.
"""

import json
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.warehouse import CLOSE_KEY_SUFFIX
from orders.client.orders import (
    OrderRefused,
    cancel_order,
    request_cancel,
    resolve_order,
    start_order,
)
from orders.config import webhooks as names
from orders.domain.models import OrderOptions, OrderView, ResolveRequest, Shipment
from orders.domain.rules import ShipVerdict, ship_verdict
from orders.domain.status import EmailTemplate, OperatorAction, OrderStatus, Step
from orders.webhooks import signature
from orders.webhooks.signature import SignatureError, SignatureFailure
from sandbox.admin_client import SandboxAdmin
from tests.support import (
    Rig,
    eventually,
    make_order,
    order_awaiting_shipment,
    running_rig,
    running_worker,
    until_view,
    wait_for_status,
)
from tools.stack.local import LocalStack
from tools.stack.processes import free_port, start_webhook_receiver

API_KEY = "sk_test_webhooks"
SECRET = names.generate_secret()
OLD_SECRET = names.generate_secret()
SHIPPED_EMAIL = EmailTemplate.ORDER_SHIPPED.value
CONFIRMATION_EMAIL = EmailTemplate.ORDER_CONFIRMATION.value


# --- The signature scheme ---------------------------------------------------------------------

# Like tests/test_properties.py's ci profile: the same examples every run, no deadline.
STEADY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

secrets_st = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=16, max_size=80)
bodies = st.binary(max_size=2000)


@STEADY
@given(secret=secrets_st, body=bodies, t=st.integers(0, 2**40))
def test_a_signed_body_verifies_and_any_change_breaks_it(secret: str, body: bytes, t: int) -> None:
    header = signature.sign([secret], body, t)
    assert signature.verify(header, body, [secret], 300, now=t + 299) == t
    for tampered, secrets in (
        (body + b" ", [secret]),  # the body changed
        (body, [secret + "x"]),  # another secret
    ):
        with pytest.raises(SignatureError) as refused:
            signature.verify(header, tampered, secrets, 300, now=t)
        assert refused.value.reason == SignatureFailure.MISMATCH
    # The signature covers the timestamp: moving it breaks the signature, not just the age.
    moved = header.replace(f"t={t},", f"t={t + 1},")
    with pytest.raises(SignatureError, match="no signature matches"):
        signature.verify(moved, body, [secret], 300, now=t)


@STEADY
@given(body=bodies, age=st.floats(300.5, 10**7) | st.floats(-(10**7), -300.5))
def test_a_timestamp_outside_the_tolerance_is_refused(body: bytes, age: float) -> None:
    t = 2_000_000_000
    header = signature.sign([SECRET], body, t)
    with pytest.raises(SignatureError) as refused:
        signature.verify(header, body, [SECRET], 300, now=t + age)
    assert refused.value.reason == SignatureFailure.STALE


def test_secrets_rotate_without_a_gap() -> None:
    body, t = b'{"a":1}', int(time.time())
    # The sender signs with every secret it holds; the receiver accepts any secret it holds.
    both = signature.sign([SECRET, OLD_SECRET], body, t)
    assert both.count("v1=") == 2
    assert signature.verify(both, body, [OLD_SECRET], 300) == t
    assert signature.verify(signature.sign([OLD_SECRET], body, t), body, [SECRET, OLD_SECRET], 300)
    # Unknown schemes are ignored, as Stripe's libraries do.
    assert signature.verify(f"v0=abc,{both}", body, [SECRET], 300) == t


@STEADY
@given(header=st.text(max_size=300) | st.none())
def test_any_header_is_verified_or_refused_never_crashes(header: str | None) -> None:
    with pytest.raises(SignatureError):
        signature.verify(header, b"{}", [SECRET], 300)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, SignatureFailure.MISSING),
        ("", SignatureFailure.MISSING),
        ("garbage", SignatureFailure.MALFORMED),
        ("t=12", SignatureFailure.MALFORMED),
        ("v1=ab", SignatureFailure.MALFORMED),
        ("t=1,t=2,v1=ab", SignatureFailure.MALFORMED),
        ("t=-5,v1=ab", SignatureFailure.MALFORMED),
        ("t=\uff11\uff12,v1=ab", SignatureFailure.MALFORMED),  # non-ASCII digits
        ("t=1,v1=é", SignatureFailure.MISMATCH),
        ("t=1," + "v1=ab," * 1000, SignatureFailure.MALFORMED),
    ],
)
def test_malformed_headers_say_why(header: str | None, reason: SignatureFailure) -> None:
    with pytest.raises(SignatureError) as refused:
        signature.verify(header, b"{}", [SECRET], 300, now=1)
    assert refused.value.reason == reason


def test_secrets_are_read_once_from_one_name(tmp_path: Path) -> None:
    assert names.load_secrets({names.SECRET_ENV: f"{SECRET}, {OLD_SECRET}"}) == (SECRET, OLD_SECRET)
    path = tmp_path / "secret"
    path.write_text(f"# a comment\n{SECRET}\n{OLD_SECRET}\n")
    assert names.load_secrets({names.SECRET_FILE_ENV: str(path)}) == (SECRET, OLD_SECRET)
    assert names.load_secrets({}) == ()
    with pytest.raises(names.WebhookSecretError, match="at least 16"):
        names.load_secrets({names.SECRET_ENV: "short"})


def test_the_stack_generates_the_secret_once_readable_by_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(names.SECRET_ENV, raising=False)
    monkeypatch.delenv(names.SECRET_FILE_ENV, raising=False)
    stack = LocalStack(tmp_path, webhook_port=free_port())
    env = stack.webhook_env()
    path = Path(env[names.SECRET_FILE_ENV])
    assert path == stack.webhook_secret_file and stat.S_IMODE(path.stat().st_mode) == 0o600
    [secret] = names.load_secrets(env)
    assert stack.webhook_env() == env and names.load_secrets(env) == (secret,)  # reused
    assert stack.webhook_url == f"http://127.0.0.1:{stack.webhook_port}/webhooks/warehouse"


def test_a_report_is_due_a_repeat_not_yet_or_never() -> None:
    shipment = Shipment(carrier="UPS", tracking_number="1Z99")
    other = Shipment(carrier="UPS", tracking_number="1Z98")

    def view(status: OrderStatus, shipped: Shipment | None = None, **extra: Any) -> OrderView:
        return OrderView(
            order_id="o-1",
            customer_id="c-1",
            total=100,
            currency="USD",
            status=status,
            shipment=shipped,
            **extra,
        )

    assert ship_verdict(view(OrderStatus.AWAITING_SHIPMENT), shipment)[0] == ShipVerdict.DUE
    assert ship_verdict(view(OrderStatus.SHIPMENT_DELAYED), shipment)[0] == ShipVerdict.DUE
    assert ship_verdict(view(OrderStatus.PAID), shipment)[0] == ShipVerdict.NOT_YET
    assert ship_verdict(view(OrderStatus.RECEIVED), shipment)[0] == ShipVerdict.NOT_YET
    done = view(OrderStatus.COMPLETED, shipment)
    assert ship_verdict(done, shipment)[0] == ShipVerdict.ALREADY
    assert ship_verdict(done, other)[0] == ShipVerdict.NEVER
    assert ship_verdict(view(OrderStatus.CANCELLED), shipment)[0] == ShipVerdict.NEVER
    # Being cancelled: the warehouse's answer to the cancel decides, so the report waits.
    cancelling = view(OrderStatus.CANCELLING, winding_down_to=OrderStatus.CANCELLED)
    assert ship_verdict(cancelling, shipment)[0] == ShipVerdict.NOT_YET
    stopping = view(OrderStatus.RECEIVED, winding_down_to=OrderStatus.OUT_OF_STOCK)
    assert ship_verdict(stopping, shipment)[0] == ShipVerdict.NEVER


# --- Against real processes --------------------------------------------------------------------


def warehouse_rig(temporal_address: str, folder: Path) -> Rig:
    """The warehouse sends its webhooks to the receiver, signed with SECRET (OLD_SECRET too)."""
    return Rig(
        temporal_address,
        folder,
        API_KEY,
        receiver_env={names.SECRET_ENV: f"{SECRET},{OLD_SECRET}", names.RETRY_AFTER_ENV: "0s"},
        providers_env=lambda rig: {
            names.SECRET_ENV: SECRET,
            names.URL_ENV: f"{rig.receiver_url}{names.WEBHOOK_PATH}",
            names.RETRY_BASE_ENV: "100ms",
            names.RETRY_MAX_ENV: "400ms",
        },
    )


@pytest.fixture(scope="module")
def rig(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    address = temporal_env.client.service_client.config.target_host
    with running_rig(warehouse_rig(address, tmp_path_factory.mktemp("webhooks"))) as started:
        yield started


@pytest.fixture(scope="module")
def admin(rig: Rig) -> Iterator[SandboxAdmin]:
    sandbox = SandboxAdmin(rig.providers_url, API_KEY)
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
async def queue(client: Client, admin: SandboxAdmin) -> AsyncIterator[str]:
    async with running_worker(client, admin) as task_queue:
        yield task_queue


@pytest.fixture
async def http(rig: Rig, admin: SandboxAdmin) -> AsyncIterator[httpx.AsyncClient]:
    """Async, so that no call blocks the in-process worker that the receiver waits on."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=rig.providers_url, headers=headers, timeout=30) as h:
        yield h
        await h.put("/admin/webhooks", json={"paused": False, "duplicate_next": 0})
        admin.reset_faults()


async def ship(
    http: httpx.AsyncClient, order_id: str, key: str = "ship", **body: str | bool
) -> dict[str, Any]:
    """Ship the order's picklist at the warehouse; return the shipped picklist."""
    picklist = await picklist_of(http, order_id)
    response = await http.post(
        f"/warehouse/picklists/{picklist['id']}/ship",
        json=body or None,
        headers={"Idempotency-Key": f"{order_id}:{key}"},
    )
    assert response.status_code == 200, response.text
    shipped: dict[str, Any] = response.json()
    return shipped


async def picklist_of(http: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    [picklist] = (await http.get("/warehouse/picklists", params={"order_id": order_id})).json()[
        "data"
    ]
    return dict(picklist)


async def event_of(http: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    """The order's one webhook event, with how its delivery went."""
    response = await http.get("/admin/webhooks", params={"order_id": order_id})
    [event] = response.json()["data"]
    return dict(event)


async def until_event(
    http: httpx.AsyncClient, order_id: str, what: str, **expected: Any
) -> dict[str, Any]:
    async def matches() -> bool:
        event = await event_of(http, order_id)
        return all(
            (value(event[key]) if callable(value) else event[key] == value)
            for key, value in expected.items()
        )

    await eventually(matches, f"{order_id}'s event is {what}", within=20)
    return await event_of(http, order_id)


def event_body(
    order_id: str, tracking: str = "SBX-TEST-1", carrier: str = "UPS", **changes: Any
) -> dict[str, Any]:
    data = {
        "order_id": order_id,
        "picklist_id": "pl_test",
        "carrier": carrier,
        "tracking_number": tracking,
    }
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "shipment.shipped",
        "created": 1,
        "data": data,
    }
    event.update(changes)
    return event


async def post_event(
    rig: Rig,
    body: bytes | dict[str, Any],
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    header: str | None = "sign",
    url: str | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if header == "sign":
        headers[names.SIGNATURE_HEADER] = signature.sign([secret], raw, timestamp)
    elif header is not None:
        headers[names.SIGNATURE_HEADER] = header
    async with httpx.AsyncClient(base_url=url or rig.receiver_url, timeout=30) as receiver:
        return await receiver.post(names.WEBHOOK_PATH, content=raw, headers=headers)


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def receiver_metrics(rig: Rig) -> str:
    async with httpx.AsyncClient(base_url=rig.receiver_url) as receiver:
        return (await receiver.get("/metrics")).text


async def test_a_webhook_delivered_by_the_warehouse_ships_the_order(
    client: Client, queue: str, http: httpx.AsyncClient, admin: SandboxAdmin, rig: Rig
) -> None:
    order = await order_awaiting_shipment(client, queue)
    shipped = await ship(http, order.id, carrier="DHL", tracking_number="JD0146-0000-1")
    assert shipped["status"] == "shipped" and shipped["shipment"]["carrier"] == "DHL"
    view = await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    assert view.shipment == Shipment(carrier="DHL", tracking_number="JD0146-0000-1")
    event = await until_event(http, order.id, "delivered", status="delivered")
    assert event["attempts"] == 1 and event["last_status"] == "200" and event["delivered"]
    assert event["event"]["data"]["picklist_id"] == shipped["id"]
    assert admin.effects(order.id).emails_of(SHIPPED_EMAIL) == 1
    # Shipping the picklist again answers it as it is and sends nothing new.
    again = await ship(http, order.id, key="ship-again")
    assert again["shipment"]["event_id"] == event["id"]
    assert (
        len((await http.get("/admin/webhooks", params={"order_id": order.id})).json()["data"]) == 1
    )
    assert 'webhooks_events_total{outcome="shipped"}' in await receiver_metrics(rig_of(http))


async def test_a_cancel_that_meets_the_parcel_shipped_completes_the_order_as_shipped(
    client: Client, queue: str, http: httpx.AsyncClient, admin: SandboxAdmin
) -> None:
    """The warehouse shipped while its webhook could not reach the shop; the customer cancels.

    The undo asks the warehouse, which answers that the parcel left (nothing can be taken
    back): the order completes as shipped, its payment kept, one shipped email and no
    cancellation email. The webhook delivered later is a repeat of what the order knows.
    """
    await http.put("/admin/webhooks", json={"paused": True})
    order = await order_awaiting_shipment(client, queue)
    shipped = await ship(http, order.id, carrier="DHL", tracking_number="JD0146-0000-2")

    view = await cancel_order(client, order.id, "changed my mind")

    assert view.status == OrderStatus.COMPLETED
    assert view.shipment == Shipment(carrier="DHL", tracking_number="JD0146-0000-2")
    assert (view.refund_id, view.failure_reason, view.winding_down_to) == (None, None, None)
    line = next(line for line in view.timeline if line.step == Step.PICKLIST_CANCEL)
    assert line.detail == f"{shipped['id']} had shipped (DHL JD0146-0000-2)"
    effects = admin.effects(order.id)
    assert (effects.charges, effects.refunds, effects.cancelled_picklists) == (1, 0, 0)
    assert effects.emails == {CONFIRMATION_EMAIL: 1, SHIPPED_EMAIL: 1}
    await http.put("/admin/webhooks", json={"paused": False})
    event = await until_event(http, order.id, "delivered", status="delivered")
    assert event["last_status"] == "200"  # the order already shipped with this very parcel
    assert admin.effects(order.id).emails_of(SHIPPED_EMAIL) == 1


def rig_of(http: httpx.AsyncClient) -> Rig:
    return _RIG[0]


_RIG: list[Rig] = []


@pytest.fixture(autouse=True, scope="module")
def _remember(rig: Rig) -> None:
    _RIG[:] = [rig]


async def test_a_duplicated_and_a_replayed_event_ship_once(
    client: Client, queue: str, http: httpx.AsyncClient, admin: SandboxAdmin, rig: Rig
) -> None:
    order = await order_awaiting_shipment(client, queue)
    await http.put("/admin/webhooks", json={"duplicate_next": 1})
    await ship(http, order.id)
    await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    event = await until_event(http, order.id, "delivered twice", status="delivered", attempts=2)
    # The warehouse sends the same event again (an operator's resend: a replay of it).
    resent = await http.post(f"/admin/webhooks/events/{event['id']}/send")
    assert resent.status_code == 200
    event = await until_event(http, order.id, "sent again", status="delivered", attempts=3)
    assert event["last_status"] == "200"
    # A replay of its exact body, freshly signed: Temporal answers the update (its id is the
    # event's) with its first outcome, and runs nothing again.
    replay = await post_event(rig, json.dumps(event["event"], separators=(",", ":")).encode())
    assert replay.status_code == 200 and replay.json()["outcome"] == "shipped"
    # Another event for the same parcel is a duplicate.
    data = event["event"]["data"]
    same = event_body(order.id, tracking=data["tracking_number"], carrier=data["carrier"])
    duplicate = await post_event(rig, same)
    assert duplicate.status_code == 200, duplicate.text
    assert duplicate.json()["outcome"] == "duplicate"
    # Another parcel for the shipped order is refused for good.
    other = await post_event(rig, event_body(order.id, tracking="ANOTHER-1"))
    assert other.status_code == 422 and error_code(other) == "order_cannot_ship"
    assert admin.effects(order.id).emails_of(SHIPPED_EMAIL) == 1
    view = await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    assert view.shipment is not None
    assert view.shipment.tracking_number == event["event"]["data"]["tracking_number"]


async def test_forged_stale_malformed_and_oversized_calls_change_nothing(
    client: Client, queue: str, admin: SandboxAdmin, rig: Rig
) -> None:
    order = await order_awaiting_shipment(client, queue)
    good = event_body(order.id)
    raw = json.dumps(good).encode()
    now = int(time.time())
    refused = {
        "forged": await post_event(rig, good, secret=names.generate_secret()),
        "unsigned": await post_event(rig, good, header=None),
        "garbled": await post_event(rig, good, header="t=now,v1=trust-me"),
        "stale": await post_event(rig, good, timestamp=now - 301),  # older by the time it arrives
        "future": await post_event(rig, good, timestamp=now + 600),
        "tampered": await post_event(
            rig,
            raw.replace(b"SBX-TEST-1", b"SBX-TEST-2"),
            header=signature.sign([SECRET], raw),
        ),
        "not json": await post_event(rig, b"shipped!"),
        "not the shape": await post_event(rig, {**good, "data": {"order_id": order.id}}),
        "another type": await post_event(rig, {**good, "type": "shipment.lost"}),
        "bad tracking": await post_event(rig, event_body(order.id, tracking="no!")),
        "oversized": await post_event(rig, {**good, "pad": "x" * 70_000}),
    }
    codes = {name: (r.status_code, error_code(r)) for name, r in refused.items()}
    assert codes == {
        "forged": (400, "signature_mismatch"),
        "unsigned": (400, "signature_missing"),
        "garbled": (400, "signature_malformed"),
        "stale": (400, "timestamp_out_of_tolerance"),
        "future": (400, "timestamp_out_of_tolerance"),
        "tampered": (400, "signature_mismatch"),
        "not json": (400, "invalid_event"),
        "not the shape": (400, "invalid_event"),
        "another type": (400, "invalid_event"),
        "bad tracking": (422, "invalid_shipment"),
        "oversized": (413, "request_too_large"),
    }

    # Streamed without a Content-Length: refused once it passes the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1000

    async with httpx.AsyncClient(base_url=rig.receiver_url) as receiver:
        streamed = await receiver.post(names.WEBHOOK_PATH, content=chunks())
    assert streamed.status_code == 413

    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    assert view.shipment is None
    assert admin.effects(order.id).emails_of(SHIPPED_EMAIL) == 0
    metrics = await receiver_metrics(rig)
    assert 'webhooks_signature_failures_total{reason="signature_mismatch"} ' in metrics
    assert 'webhooks_events_total{outcome="too_large"} 2.0' in metrics
    # The same event, signed, is taken: the checks above refused the call, not the event.
    taken = await post_event(rig, good)
    assert taken.status_code == 200 and taken.json()["outcome"] == "shipped"
    await wait_for_status(client, order.id, OrderStatus.COMPLETED)


async def test_an_order_not_ready_yet_is_answered_retry_later(
    client: Client, queue: str, admin: SandboxAdmin, rig: Rig, http: httpx.AsyncClient
) -> None:
    order = make_order()
    # The picklist request waits at the warehouse: the order is paid but not picked yet.
    admin.set_faults(
        "warehouse", hold_next=1, key_prefix=f"{order.id}:", path_prefix="/warehouse/picklists"
    )
    await start_order(client, order, queue)
    await eventually(
        lambda: _async(bool(admin.held_keys()["warehouse"])), "the picklist request is held"
    )
    early = await post_event(rig, event_body(order.id))
    assert early.status_code == 409 and error_code(early) == "order_not_ready"
    assert early.headers["Retry-After"] == "0"
    admin.release("warehouse")
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    late = await post_event(rig, event_body(order.id))
    assert late.status_code == 200
    await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    assert admin.effects(order.id).emails_of(SHIPPED_EMAIL) == 1


async def _async(value: bool) -> bool:
    return value


async def test_an_order_that_can_never_ship_is_shown_failed_to_an_operator(
    client: Client, queue: str, admin: SandboxAdmin, rig: Rig, http: httpx.AsyncClient
) -> None:
    # A picklist for an order the shop never had: the warehouse ships it, the shop refuses.
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    made = await http.post(
        "/warehouse/picklists",
        headers={"Idempotency-Key": f"{ghost}:picklist"},
        json={
            "order_id": ghost,
            "items": [{"sku": "SKU-1", "quantity": 1}],
            "ship_to": {
                "name": "N",
                "line1": "L",
                "city": "C",
                "postal_code": "1",
                "country": "US",
            },
        },
    )
    assert made.status_code == 200
    await ship(http, ghost)
    event = await until_event(http, ghost, "failed", status="failed")
    assert event["attempts"] == 1 and event["last_status"] == "404"
    assert "order_not_found" in event["last_error"]
    page = (await http.get("/warehouse/")).text
    assert event["id"] in page and "order_not_found" in page

    # A cancelled order: its picklist was taken back, so the warehouse cannot ship it; a report
    # for it anyway is refused for good.
    order = await order_awaiting_shipment(client, queue)
    await cancel_order(client, order.id, "changed my mind")
    picklist = await picklist_of(http, order.id)
    refused = await http.post(
        f"/warehouse/picklists/{picklist['id']}/ship", headers={"Idempotency-Key": f"{order.id}:s"}
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "picklist_cancelled"
    never = await post_event(rig, event_body(order.id))
    assert never.status_code == 422 and error_code(never) == "order_cannot_ship"
    unknown = await post_event(rig, event_body(ghost))
    assert unknown.status_code == 404 and error_code(unknown) == "order_not_found"
    # A parcel that left is not taken back: cancelling its order at the warehouse keeps it.
    closed = await http.post(
        f"/warehouse/orders/{ghost}/cancel", headers={"Idempotency-Key": f"{ghost}:cancel"}
    )
    assert closed.status_code == 200 and closed.json()["picklist"]["status"] == "shipped"


async def test_a_receiver_that_cannot_reach_temporal_answers_retry_later(
    rig: Rig, tmp_path: Path
) -> None:
    port, nowhere = free_port(), f"127.0.0.1:{free_port()}"
    env = {names.SECRET_ENV: SECRET}
    receiver = start_webhook_receiver(port, nowhere, tmp_path / "receiver.log", env)
    try:
        answer = await post_event(rig, event_body("order-1"), url=f"http://127.0.0.1:{port}")
    finally:
        receiver.stop()
    assert answer.status_code == 503 and error_code(answer) == "unavailable"
    assert "Temporal is unreachable" in answer.json()["error"]["message"]
    assert "Retry-After" in answer.headers


async def test_the_page_and_the_auto_ship_report_shipments_too(
    client: Client, queue: str, admin: SandboxAdmin, http: httpx.AsyncClient
) -> None:
    order = await order_awaiting_shipment(client, queue)
    picklist = await picklist_of(http, order.id)
    page = (await http.get("/warehouse/", params={"api_key": API_KEY})).text
    assert f"/warehouse/picklists/{picklist['id']}/ship-now" in page
    button = await http.post(
        f"/warehouse/picklists/{picklist['id']}/ship-now", params={"api_key": API_KEY}
    )
    assert (
        button.status_code == 303 and button.headers["location"] == f"/warehouse/?api_key={API_KEY}"
    )
    await wait_for_status(client, order.id, OrderStatus.COMPLETED)

    await http.put("/admin/webhooks", json={"auto_ship_after_s": 0})
    try:
        # Shipped at once: the order can pass awaiting-shipment in milliseconds (PITFALLS 13),
        # so the test waits for the state it is about, never for that passing one.
        order = make_order()
        await start_order(client, order, queue)
        view = await wait_for_status(client, order.id, OrderStatus.COMPLETED)
        assert view.shipment is not None and view.shipment.carrier == "Sandbox Post"
    finally:
        await http.put("/admin/webhooks", json={"auto_ship_after_s": None})
    assert admin.effects(order.id).emails_of(SHIPPED_EMAIL) == 1


async def test_deliveries_wait_for_a_receiver_that_is_down(
    client: Client, queue: str, admin: SandboxAdmin, rig: Rig, http: httpx.AsyncClient
) -> None:
    assert rig.receiver is not None
    rig.receiver.kill()
    try:
        order = await order_awaiting_shipment(client, queue)
        await ship(http, order.id)
        event = await until_event(
            http, order.id, "retried", attempts=lambda n: n >= 2, last_status="no-answer"
        )
        assert event["status"] == "pending"
    finally:
        rig.start_receiver()
    await until_event(http, order.id, "delivered", status="delivered")
    await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    assert admin.effects(order.id).emails_of(SHIPPED_EMAIL) == 1


async def test_pending_deliveries_survive_a_warehouse_restart(
    client: Client, queue: str, admin: SandboxAdmin, rig: Rig, http: httpx.AsyncClient
) -> None:
    order = await order_awaiting_shipment(client, queue)
    await http.put("/admin/webhooks", json={"paused": True})
    await ship(http, order.id)
    event = await event_of(http, order.id)
    assert event["status"] == "pending" and event["attempts"] == 0
    assert rig.providers is not None
    rig.providers.kill()  # SIGKILL, the event still pending in the ledger
    rig.start_providers()  # paused was a run-time control: the new process sends at once
    await until_event(http, order.id, "delivered", status="delivered", attempts=1)
    await until_view(client, order.id, lambda v: v.status == OrderStatus.COMPLETED, "completed")
    assert admin.effects(order.id).emails_of(SHIPPED_EMAIL) == 1


async def test_an_order_no_worker_answers_for_is_answered_retry_later(
    client: Client, rig: Rig, tmp_path: Path
) -> None:
    # An order on a task queue nobody polls: Temporal holds the update, no worker takes it.
    order = make_order()
    await start_order(client, order, f"nobody-{uuid.uuid4().hex[:8]}")
    port = free_port()
    env = {names.SECRET_ENV: SECRET, names.HANDOFF_TIMEOUT_ENV: "1s"}
    receiver = start_webhook_receiver(port, rig.temporal_address, tmp_path / "r.log", env)
    try:
        started = time.monotonic()
        answer = await post_event(rig, event_body(order.id), url=f"http://127.0.0.1:{port}")
        waited = time.monotonic() - started
    finally:
        receiver.stop()
        await client.get_workflow_handle(order.id).terminate("test done")
    assert answer.status_code == 503 and error_code(answer) == "unavailable", answer.text
    assert "did not answer within 1s" in answer.json()["error"]["message"]
    assert 1 <= waited < 10


def test_the_receiver_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tools.stack.processes import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERS_WEBHOOK_SECRET")}
    done = subprocess.run(
        [sys.executable, "-m", "orders.webhooks", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and names.SECRET_ENV in done.stderr


# --- Any request at all: a clear 4xx, never a 500 -----------------------------------------------


async def _no_temporal() -> Client:
    raise ConnectionError("no Temporal in this test")


@pytest.fixture(scope="module")
def receiver_app() -> Any:
    from orders.webhooks.app import create_app

    return create_app([SECRET], _no_temporal, max_body_bytes=4096)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["evt_abc", "evt_", "x"]) | st.text(max_size=10),
        "type": st.sampled_from(["shipment.shipped", "shipment.lost"]) | json_values,
        "created": st.integers(-5, 2**70) | json_values,
        "data": st.fixed_dictionaries(
            {},
            optional={
                "order_id": st.text(max_size=300),
                "picklist_id": st.text(max_size=30),
                "carrier": st.text(max_size=60),
                "tracking_number": st.text(max_size=50),
            },
        )
        | json_values,
    },
)


@STEADY
@given(
    body=st.binary(max_size=5000) | event_like.map(lambda e: json.dumps(e).encode()),
    how=st.sampled_from(["signed", "signed", "unsigned", "garbage", "other-secret", "old"]),
)
async def test_the_receiver_answers_any_call_with_a_clear_refusal(
    receiver_app: Any, body: bytes, how: str
) -> None:
    headers: dict[str, bytes | None] = {
        "signed": signature.sign([SECRET], body).encode(),
        "unsigned": None,
        "garbage": bytes(b for b in body[:100] if b not in b"\x00\r\n") or b"x",
        "other-secret": signature.sign([OLD_SECRET], body).encode(),
        "old": signature.sign([SECRET], body, int(time.time()) - 3600).encode(),
    }
    header = headers[how]
    transport = httpx.ASGITransport(app=receiver_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as receiver:
        response = await receiver.post(
            names.WEBHOOK_PATH,
            content=body,
            headers={} if header is None else {names.SIGNATURE_HEADER.encode(): header},
        )
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if how != "signed" or len(body) > 4096:
        assert 400 <= response.status_code < 500, response.text
    else:  # a genuine event that reached the hand-off: Temporal is down here, so 503 (retry)
        assert response.status_code in (400, 413, 422, 503), response.text
        if response.status_code == 503:
            assert json.loads(body)["type"] == "shipment.shipped"


@pytest.fixture(scope="module")
def providers_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sandbox.app import create_app
    from sandbox.webhooks import SenderSettings

    app = create_app(
        tmp_path_factory.mktemp("fuzzed-webhooks") / "ledger.sqlite3",
        API_KEY,
        webhook_settings=SenderSettings(secrets=(SECRET,)),
    )
    yield app
    app.state.ledger.close()


WEBHOOK_ROUTES = [
    ("POST", "/warehouse/picklists/{id}/ship"),
    ("POST", "/warehouse/picklists/{id}/ship-now"),
    ("GET", "/admin/webhooks"),
    ("PUT", "/admin/webhooks"),
    ("POST", "/admin/webhooks/events/{id}/send"),
    ("GET", "/warehouse/"),
]
control_fields = st.fixed_dictionaries(
    {},
    optional={
        "url": st.sampled_from(["http://127.0.0.1:9/x", "ftp://x", ""]) | st.text(max_size=20),
        "paused": json_values,
        "duplicate_next": st.integers(-5, 2**70) | json_values,
        "duplicate_rate": st.floats() | json_values,
        "auto_ship_after_s": st.floats() | st.integers(-5, 2**70) | st.none(),
        "carrier": st.text(max_size=60) | json_values,
        "tracking_number": st.text(max_size=50) | json_values,
    },
)


@STEADY
@given(
    route=st.sampled_from(WEBHOOK_ROUTES),
    path_id=st.sampled_from(["pl_nope", "evt_nope", "%00", "a" * 300]) | st.text(max_size=20),
    body=control_fields.map(json.dumps) | st.text(max_size=50) | st.none(),
    key=st.sampled_from([None, "k-1", "k" * 300]),
    query=st.dictionaries(st.sampled_from(["status", "order_id"]), st.text(max_size=300)),
)
async def test_the_warehouse_webhook_routes_answer_without_a_5xx(
    providers_app: Any,
    route: tuple[str, str],
    path_id: str,
    body: str | None,
    key: str | None,
    query: dict[str, str],
) -> None:
    method, template = route
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    path = template.replace("{id}", quote(path_id, safe=""))
    transport = httpx.ASGITransport(app=providers_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://providers") as h:
        response = await h.request(method, path, content=body, headers=headers, params=query)
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and response.status_code != 404:
        assert response.json()["error"]["code"]


def event_row(ledger: Any, event_id: str) -> Any:
    return ledger.db.execute("SELECT * FROM webhook_events WHERE id = ?", (event_id,)).fetchone()


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (422, "failed"),
        (408, "pending"),
        (409, "pending"),
        (425, "pending"),
        (429, "pending"),
        (500, "pending"),
        (503, "pending"),
        (None, "pending"),
    ],
)
def test_the_sender_retries_not_now_and_gives_up_on_never(
    tmp_path: Path, status: int | None, outcome: str
) -> None:
    from sandbox import outbox
    from sandbox.ledger import Ledger
    from sandbox.webhooks import SenderSettings, WebhookSender, _Answer

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    settings = SenderSettings(secrets=(SECRET,), retry_base_s=1, retry_max_s=5)
    sender = WebhookSender(ledger, settings)
    with ledger.transaction() as db:
        event = outbox.record_event(db, "shipment.shipped", "o-1", {"order_id": "o-1"})

    delays = []
    for _ in range(5):
        current = event_row(ledger, event["id"])
        if current["status"] != "pending":
            break
        before = time.time()
        sender._record(current, 1, _Answer(status, None if status == 200 else "why"))
        after = event_row(ledger, event["id"])
        delays.append(round(after["next_attempt_at"] - before))
    final = event_row(ledger, event["id"])
    assert final["status"] == outcome
    if outcome == "pending":
        assert delays == [1, 2, 4, 5, 5]  # doubling, bounded by the retry maximum
        assert final["attempts"] == 5
    else:
        assert final["attempts"] == 1 and (final["delivered"] is not None) == (
            outcome == "delivered"
        )
    # A retryable answer after the give-up time fails the event for good.
    late = WebhookSender(ledger, SenderSettings(secrets=(SECRET,), give_up_after_s=0))
    with ledger.transaction() as db:
        old = outbox.record_event(db, "shipment.shipped", "o-2", {"order_id": "o-2"})
        db.execute(
            "UPDATE webhook_events SET body = ? WHERE id = ?",
            (json.dumps({**old, "created": int(time.time()) - 10}), old["id"]),
        )
    stale = event_row(ledger, old["id"])
    late._record(stale, 1, _Answer(503, "busy"))
    gave_up = event_row(ledger, old["id"])
    assert gave_up["status"] == "failed" and "gave up after 1 attempts" in gave_up["last_error"]
    ledger.close()


# --- Goods never leave unpaid --------------------------------------------------------------------

CAPTURE_KEY_SUFFIX = f":{Step.PAYMENT_CAPTURE.value}"


async def parked_at_the_capture(
    client: Client, queue: str, admin: SandboxAdmin, options: OrderOptions | None = None
) -> OrderView:
    """Start an order whose capture the gateway fails (faults set by the caller) until it parks."""
    order = make_order()
    await start_order(client, order, queue, options)
    parked = await until_view(
        client, order.id, lambda v: v.status == OrderStatus.NEEDS_ATTENTION, "parked"
    )
    assert parked.attention_step == Step.PAYMENT_CAPTURE  # the fault fired: it parked there
    assert admin.effects(order.id).charges == 0
    return parked


async def ship_anyway(http: httpx.AsyncClient, client: Client, order_id: str) -> OrderView:
    """The warehouse ships the held picklist by mistake; its webhook reaches the order."""
    picklist = await ship(http, order_id, key="ship-anyway", ignore_release=True)
    assert picklist["status"] == "shipped" and picklist["released"] is None
    return await until_view(client, order_id, lambda v: v.shipment is not None, "told it left")


async def settled(client: Client, admin: SandboxAdmin, order_id: str, total: int) -> None:
    """The order completed paid in full, confirmed once then shipped once, nothing given back."""
    view = await wait_for_status(client, order_id, OrderStatus.COMPLETED)
    effects = admin.effects(order_id)
    assert (effects.charges, effects.charged_amount) == (1, total)
    assert (effects.refunds, effects.released, effects.cancelled_picklists) == (0, 0, 0)
    assert effects.emails == {CONFIRMATION_EMAIL: 1, SHIPPED_EMAIL: 1}
    assert view.transaction_id is not None and view.refund_id is None


async def test_a_picklist_of_an_unpaid_order_ships_from_no_page_api_or_auto_ship(
    client: Client, queue: str, admin: SandboxAdmin, http: httpx.AsyncClient
) -> None:
    admin.set_faults("payments", refuse_next=1, key_suffix=CAPTURE_KEY_SUFFIX)
    unpaid = await parked_at_the_capture(client, queue, admin)
    picklist = await picklist_of(http, unpaid.order_id)
    assert (picklist["status"], picklist["hold"], picklist["released"]) == ("open", True, None)

    api = await http.post(
        f"/warehouse/picklists/{picklist['id']}/ship",
        headers={"Idempotency-Key": f"{unpaid.order_id}:ship-api"},
    )
    assert api.status_code == 422 and api.json()["error"]["code"] == "not_released"
    assert "not paid yet" in api.json()["error"]["message"]
    page = (await http.get("/warehouse/", params={"api_key": API_KEY})).text
    assert f"/warehouse/picklists/{picklist['id']}/ship-now" not in page
    button = await http.post(
        f"/warehouse/picklists/{picklist['id']}/ship-now", params={"api_key": API_KEY}
    )
    assert button.status_code == 422
    # The auto-ship runs (a paid order's released picklist ships) and leaves the held one.
    await http.put("/admin/webhooks", json={"auto_ship_after_s": 0})
    try:
        paid = make_order()
        await start_order(client, paid, queue)
        await wait_for_status(client, paid.id, OrderStatus.COMPLETED)
    finally:
        await http.put("/admin/webhooks", json={"auto_ship_after_s": None})
    assert (await picklist_of(http, paid.id))["released"] is not None
    assert (await picklist_of(http, unpaid.order_id))["status"] == "open"
    assert admin.effects(unpaid.order_id).emails == {}  # neither confirmed nor shipped


async def test_a_parcel_shipped_unpaid_is_paid_for_and_the_cancel_refused(
    client: Client, queue: str, admin: SandboxAdmin, http: httpx.AsyncClient
) -> None:
    """The issue's story: capture refused, the warehouse ships anyway, the customer cancels."""
    admin.set_faults("payments", refuse_next=1, key_suffix=CAPTURE_KEY_SUFFIX)
    parked = await parked_at_the_capture(client, queue, admin)
    order_id = parked.order_id

    told = await ship_anyway(http, client, order_id)
    assert told.status == OrderStatus.NEEDS_ATTENTION
    assert told.attention_reason is not None
    assert told.attention_reason.startswith("the parcel left before the payment was captured")
    with pytest.raises(OrderRefused, match="has shipped; it can't be cancelled"):
        await cancel_order(client, order_id, "customer changed their mind")
    assert admin.effects(order_id).emails == {}  # no "shipped" before it is paid and confirmed

    await resolve_order(client, order_id, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))
    await settled(client, admin, order_id, parked.total)


async def test_a_capture_failing_for_its_whole_budget_and_a_parcel_gone_goes_to_an_operator(
    client: Client, queue: str, admin: SandboxAdmin, http: httpx.AsyncClient
) -> None:
    admin.set_faults("payments", error_rate=1.0, key_suffix=CAPTURE_KEY_SUFFIX)
    budget = OrderOptions(payment_retry_budget=timedelta(seconds=3))
    parked = await parked_at_the_capture(client, queue, admin, budget)
    assert parked.attention_reason is not None and "failing for over 3 seconds" in (
        parked.attention_reason
    )
    told = await ship_anyway(http, client, parked.order_id)
    assert told.attention_reason is not None
    assert told.attention_reason.startswith("the parcel left before the payment was captured")
    with pytest.raises(OrderRefused, match="has shipped"):
        await cancel_order(client, parked.order_id, "customer changed their mind")

    admin.reset_faults()  # the gateway is back
    await resolve_order(
        client, parked.order_id, ResolveRequest(action=OperatorAction.RETRY_PAYMENT)
    )
    await settled(client, admin, parked.order_id, parked.total)


async def test_a_cancel_during_a_held_capture_meets_the_parcel_gone_and_takes_the_money(
    client: Client, queue: str, admin: SandboxAdmin, http: httpx.AsyncClient
) -> None:
    order = make_order()
    admin.set_faults("payments", hold_next=1, key_suffix=CAPTURE_KEY_SUFFIX)
    admin.set_faults("warehouse", delay_next=1, key_suffix=CLOSE_KEY_SUFFIX)
    await start_order(client, order, queue)
    capture_key = f"{order.id}{CAPTURE_KEY_SUFFIX}"

    async def capture_held() -> bool:
        return capture_key in admin.held_keys()["payments"]

    await eventually(capture_held, "the gateway holds the capture")
    await request_cancel(client, order.id, "customer changed their mind")

    async def take_back_on_its_way() -> bool:
        return any(key.startswith(order.id) for key in admin.delayed_keys()["warehouse"])

    await eventually(take_back_on_its_way, "the order's cancel is on its way to the warehouse")
    await ship(http, order.id, key="ship-anyway", ignore_release=True)
    assert admin.deliver("warehouse") == 1  # the cancel arrives: the parcel has left
    assert admin.release("payments") == 1  # the held capture commits

    await settled(client, admin, order.id, order.total)
    view = await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    assert view.shipment is not None and view.failure_reason is None
