"""Stripe's events, with real processes: the sandbox gateway sends them from its outbox, signed
as Stripe signs, to the receiver's Stripe endpoint, which verifies them with the official
library and hands each to its order once.

The gateway and the receiver are restartable processes on their own ports (the receiver is
killed in one test with events pending); Temporal and a worker run as in the other tests.
"""

import asyncio
import json
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from orders.client.orders import list_orders, order_dispute, ship_order, start_order
from orders.config import stripe_events as stripe_names
from orders.config import webhooks as names
from orders.domain.models import Dispute, Shipment
from orders.domain.status import EmailTemplate, OrderStatus, Step, StepState
from orders.webhooks.signature import sign
from sandbox.admin_client import SandboxAdmin
from tests.support import (
    Rig,
    authenticate,
    eventually,
    make_order,
    order_awaiting_shipment,
    running_rig,
    running_worker,
    until_view,
    wait_for_status,
)
from tools.stack.local import LocalStack
from tools.stack.processes import free_port
from workflows.dispute import DisputeWorkflow

API_KEY = "sk_test_stripe_events"
UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")
SECRET = names.generate_secret()
ENDPOINT_SECRET = names.generate_secret()


def gateway_rig(temporal_address: str, folder: Path) -> Rig:
    """The gateway sends Stripe's events to the receiver, signed with ENDPOINT_SECRET."""
    task_queue = f"orders-test-{uuid.uuid4().hex[:8]}"
    return Rig(
        temporal_address,
        folder,
        API_KEY,
        receiver_env={
            names.SECRET_ENV: SECRET,
            stripe_names.SECRET_ENV: ENDPOINT_SECRET,
            "ORDERS_TASK_QUEUE": task_queue,  # where disputes' workflows run
        },
        providers_env=lambda rig: {
            stripe_names.SECRET_ENV: ENDPOINT_SECRET,
            stripe_names.URL_ENV: f"{rig.receiver_url}{stripe_names.WEBHOOK_PATH}",
            names.RETRY_BASE_ENV: "100ms",
            names.RETRY_MAX_ENV: "400ms",
        },
        task_queue=task_queue,
    )


@pytest.fixture(scope="module")
def rig(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    address = temporal_env.client.service_client.config.target_host
    with running_rig(gateway_rig(address, tmp_path_factory.mktemp("stripe-events"))) as started:
        yield started


@pytest.fixture(scope="module")
def admin(rig: Rig) -> Iterator[SandboxAdmin]:
    sandbox = SandboxAdmin(rig.providers_url, API_KEY)
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
async def queue(client: Client, rig: Rig, admin: SandboxAdmin) -> AsyncIterator[str]:
    async with running_worker(client, admin, rig.task_queue) as task_queue:
        yield task_queue


def events_of(admin: SandboxAdmin, order_id: str) -> list[dict[str, Any]]:
    """The gateway's Stripe events about the order, oldest first, with their delivery."""
    listed: list[dict[str, Any]] = admin.list("/admin/stripe-events", order_id=order_id)
    return listed[::-1]


async def all_delivered(admin: SandboxAdmin, order_id: str) -> list[dict[str, Any]]:
    async def delivered() -> bool:
        events = events_of(admin, order_id)
        return bool(events) and all(event["status"] == "delivered" for event in events)

    await eventually(delivered, f"every Stripe event of {order_id} delivered", within=30)
    return events_of(admin, order_id)


async def updates_taken(client: Client, order_id: str) -> list[str]:
    """The ids of the gateway events the order accepted, from its history."""
    history = await client.get_workflow_handle(order_id).fetch_history()
    accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    return [
        event.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id
        for event in history.events
        if event.event_type == accepted
    ]


async def test_each_event_is_signed_as_stripe_signs_and_the_official_library_verifies_it(
    rig: Rig, admin: SandboxAdmin
) -> None:
    http_client = stripe.AIOHTTPClient()
    gateway = stripe.StripeClient(
        API_KEY, base_addresses={"api": rig.providers_url}, http_client=http_client
    )
    order_id = f"no-such-order-{time.time_ns()}"
    params: Any = {
        "amount": 1000,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "capture_method": "manual",
        "confirm": True,
        "payment_method_types": ["card"],  # no return_url needed
        "metadata": {"order_id": order_id},
    }
    try:
        intent = await gateway.v1.payment_intents.create_async(params)
    finally:
        await http_client.close_async()  # type: ignore[no-untyped-call]
    [event] = await all_delivered(admin, order_id)  # verified by the receiver, or not delivered
    assert event["last_status"] == "200"
    body = event["event"]
    assert (body["object"], body["type"]) == ("event", "payment_intent.amount_capturable_updated")
    assert body["data"]["object"]["id"] == intent.id and body["api_version"] == stripe.api_version

    raw = json.dumps(body).encode()
    verified = stripe.Webhook.construct_event(raw, sign((ENDPOINT_SECRET,), raw), ENDPOINT_SECRET)
    assert verified.id == body["id"]
    async with httpx.AsyncClient(base_url=rig.receiver_url, timeout=10) as http:
        forged = await http.post(
            stripe_names.WEBHOOK_PATH,
            content=raw,
            headers={"Stripe-Signature": sign(("whsec_not_the_endpoint_secret_",), raw)},
        )
        unsigned = await http.post(stripe_names.WEBHOOK_PATH, content=raw)
        again = await http.post(
            stripe_names.WEBHOOK_PATH,
            content=raw,
            headers={"Stripe-Signature": sign((ENDPOINT_SECRET,), raw)},
        )
    assert forged.status_code == 400 and forged.json()["error"]["code"] == (
        "signature_verification_failed"
    )
    assert unsigned.status_code == 400
    # An order that does not run (here: none) is acknowledged, or Stripe would retry for days.
    assert again.status_code == 200 and again.json()["outcome"] == "not_running"


async def test_the_event_that_the_customer_authenticated_wakes_the_order_at_once(
    client: Client, admin: SandboxAdmin, queue: str
) -> None:
    order = make_order(payment_method="pm_card_authenticationRequired")
    await start_order(client, order, queue)
    await wait_for_status(client, order.id, OrderStatus.AWAITING_AUTHENTICATION)
    await asyncio.sleep(8)  # the order's reads of the intent back off (1, 2, 4, 8 s...)
    clicked = time.monotonic()
    await authenticate(admin, order.id)
    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=60)
    took = time.monotonic() - clicked
    # The timeline tells it as it went: not authorized at the confirm; each read the gateway's
    # news restarted is "restarted", never "failed"; the last read saw it authorized.
    confirm = next(line for line in view.timeline if line.step == Step.PAYMENT_CONFIRM)
    assert confirm.detail is not None and confirm.detail.startswith("awaits authentication")
    reads = [line for line in view.timeline if line.step == Step.AUTHENTICATION]
    assert [line.state for line in reads][-1] == StepState.COMPLETED
    assert {line.state for line in reads[:-1]} <= {StepState.RESTARTED}
    assert StepState.RESTARTED in {line.state for line in reads}  # the click's event woke it

    events = await all_delivered(admin, order.id)
    types = [event["event"]["type"] for event in events]
    assert types[:2] == [
        "payment_intent.requires_action",
        "payment_intent.amount_capturable_updated",
    ]
    taken = await updates_taken(client, order.id)
    assert taken == [f"stripe:{event['id']}" for event in events]  # each once, none lost
    assert took < 5, f"{took:.1f}s from the click to the order going on"


async def test_a_receiver_killed_with_events_pending_loses_nothing(
    client: Client, rig: Rig, admin: SandboxAdmin, queue: str
) -> None:
    assert rig.receiver is not None
    rig.receiver.kill()
    try:
        order = make_order(payment_method="pm_card_authenticationRequired")
        await start_order(client, order, queue)
        await authenticate(admin, order.id)
        # Events lost for now: the order goes on by reading the intent (the source of truth).
        await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=60)

        async def retried() -> bool:
            events = events_of(admin, order.id)
            return len(events) >= 3 and all(
                e["status"] == "pending" and e["attempts"] > 0 for e in events
            )

        await eventually(retried, "the order's events pending, tried and retried", within=30)
        assert all(event["last_status"] == "no-answer" for event in events_of(admin, order.id))
    finally:
        rig.start_receiver()
    events = await all_delivered(admin, order.id)
    taken = await updates_taken(client, order.id)
    assert sorted(taken) == sorted(f"stripe:{event['id']}" for event in events)


# --- Disputes ------------------------------------------------------------------------------------

OPERATIONS = stripe_names.DEFAULT_OPERATIONS_EMAIL
DISPUTE_EMAIL = EmailTemplate.DISPUTE_OPENED.value


async def disputed(client: Client, order_id: str) -> Dispute:
    """The order's dispute, once its workflow has found the order (visibility lags)."""
    found: list[Dispute] = []

    async def listed() -> bool:
        dispute = await order_dispute(client, order_id)
        found[:] = [dispute] if dispute and dispute.order_id else []
        return bool(found)

    await eventually(listed, f"a dispute on {order_id}", within=30)
    return found[0]


async def test_a_dispute_on_a_completed_order_reaches_the_operators_and_the_queue(
    client: Client, admin: SandboxAdmin, queue: str
) -> None:
    order = await order_awaiting_shipment(client, queue)
    await ship_order(client, order.id, UPS)
    await wait_for_status(client, order.id, OrderStatus.COMPLETED)
    [intent] = admin.list("/payments/intents", order_id=order.id)
    async with httpx.AsyncClient(base_url=admin.base_url, timeout=10) as http:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        opened = await http.post(
            "/admin/disputes",
            json={"payment_intent": intent["id"], "reason": "fraudulent"},
            headers=headers,
        )
        assert opened.status_code == 200, opened.text

        dispute = await disputed(client, order.id)  # the order's workflow had closed
        assert (dispute.id, dispute.reason, dispute.status) == (
            opened.json()["id"],
            "fraudulent",
            "needs_response",
        )
        queue_now = [
            summary.order_id async for summary in list_orders(client, OrderStatus.DISPUTED)
        ]
        assert order.id in queue_now

        async def emailed() -> bool:
            return admin.effects(order.id).emails.get(DISPUTE_EMAIL) == 1  # type: ignore[union-attr]

        await eventually(emailed, "the operators' dispute email")
        [message] = admin.list("/mail/messages", order_id=order.id, template=DISPUTE_EMAIL)
        assert message["to"] == OPERATIONS and dispute.id in message["body"]

        closed = await http.post(
            f"/admin/disputes/{dispute.id}/close", json={"status": "won"}, headers=headers
        )
        assert closed.status_code == 200
    handle = client.get_workflow_handle_for(DisputeWorkflow.run, f"dispute-{dispute.id}")
    assert (await handle.result()).status == "won"
    queue_after = [summary.order_id async for summary in list_orders(client, OrderStatus.DISPUTED)]
    assert order.id not in queue_after


async def test_a_dispute_on_a_running_order_is_recorded_on_the_order(
    client: Client, admin: SandboxAdmin, queue: str
) -> None:
    # Stripe's dispute test card: disputed as soon as the payment is captured.
    order = make_order(payment_method="pm_card_createDispute")
    await start_order(client, order, queue)
    view = await until_view(client, order.id, lambda v: v.dispute is not None, "the dispute shown")
    assert view.dispute is not None and view.dispute.reason == "fraudulent"
    assert view.status == OrderStatus.AWAITING_SHIPMENT  # it goes on: the bank decides
    await disputed(client, order.id)


def test_the_stack_generates_the_stripe_endpoint_secret_once_for_both_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(stripe_names.SECRET_ENV, raising=False)
    monkeypatch.delenv(stripe_names.SECRET_FILE_ENV, raising=False)
    stack = LocalStack(tmp_path, webhook_port=free_port())
    env = stack.stripe_webhook_env()
    path = Path(env[stripe_names.SECRET_FILE_ENV])
    assert path.parent == tmp_path.resolve() and stat.S_IMODE(path.stat().st_mode) == 0o600
    [secret] = stripe_names.load_secrets(env)
    assert secret.startswith("whsec_") and secret not in (SECRET, ENDPOINT_SECRET)
    assert stack.stripe_webhook_env() == env  # reused on the next start
    assert stack.stripe_webhook_url == f"http://127.0.0.1:{stack.webhook_port}/webhooks/stripe"
