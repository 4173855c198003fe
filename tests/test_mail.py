"""Email as Resend sends it: its API at the sandbox, its key window, no keys at all, its rate limit.

The provider tests speak Resend's documented HTTP API (``POST /resend/emails``); the order tests
run the real worker, whose mail activity sends through the official ``resend`` library, and
count the emails in the mail ledger.
"""

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client

from orders.client.orders import resolve_order, ship_order, start_order
from orders.domain.models import OrderOptions, ResolveRequest, Shipment
from orders.domain.status import EmailTemplate, OperatorAction, OrderStatus, Step, StepState
from orders.intake.client import intake_status
from sandbox.admin_client import SandboxAdmin
from tests.support import make_order, wait_for_status

CONFIRMATION = f":{Step.CONFIRMATION_EMAIL.value}"
UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")


def email(order_id: str, subject: str = "Your order") -> dict[str, Any]:
    """A Send Email body as Resend documents it, filed under ``order_id``."""
    return {
        "from": "Shop <orders@shop.example>",
        "to": ["grace@example.com"],
        "subject": subject,
        "text": "Thank you.",
        "headers": {"Message-ID": f"<{order_id}.order-confirmation@orders.shop.example>"},
        "tags": [
            {"name": "order_id", "value": order_id},
            {"name": "template", "value": "order-confirmation"},
        ],
    }


def send(sandbox: SandboxAdmin, body: dict[str, Any], key: str | None) -> httpx.Response:
    """``POST /resend/emails`` with the sandbox's API key, under ``key`` if given."""
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{sandbox.base_url}/resend/emails", json=body, headers=headers)


def sent(sandbox: SandboxAdmin, order_id: str) -> list[dict[str, Any]]:
    """The order's messages in the mail ledger."""
    return sandbox.list("/mail/messages", order_id=order_id)


def test_a_key_sends_once_and_says_so_in_resends_words(sandbox: SandboxAdmin) -> None:
    """Same key, same body: the first answer again; another body: Resend's 409."""
    order_id, key = f"mail-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4().hex}"
    first = send(sandbox, email(order_id), key)
    again = send(sandbox, email(order_id), key)
    other = send(sandbox, email(order_id, "Another subject"), key)

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and uuid.UUID(first.json()["id"])
    assert other.status_code == 409
    assert other.json() == {
        "statusCode": 409,
        "name": "invalid_idempotent_request",
        "message": "Same idempotency key used with a different request payload.",
    }
    [message] = sent(sandbox, order_id)
    assert message["id"] == first.json()["id"]
    assert message["message_id"] == f"<{order_id}.order-confirmation@orders.shop.example>"


async def test_a_key_still_in_flight_is_refused_as_resend_does(sandbox: SandboxAdmin) -> None:
    """A retry while the first request is held: 409 concurrent_idempotent_requests."""
    order_id = f"mail-{uuid.uuid4().hex[:8]}"
    key = f"{order_id}:confirmation-email"
    sandbox.set_faults("mail", hold_next=1, key_prefix=key)
    first = asyncio.create_task(asyncio.to_thread(send, sandbox, email(order_id), key))
    await asyncio.to_thread(sandbox.wait_held, "mail", 1)

    retry = await asyncio.to_thread(send, sandbox, email(order_id), key)
    assert retry.status_code == 409
    assert retry.json()["name"] == "concurrent_idempotent_requests"
    sandbox.release("mail")
    assert (await first).status_code == 200
    assert len(sent(sandbox, order_id)) == 1


def test_a_key_older_than_the_window_sends_again(sandbox: SandboxAdmin) -> None:
    """Past the provider's key window (1 s here, 24 h at Resend) the same key is new again."""
    sandbox.set_faults("mail", key_window_s=1)
    order_id, key = f"mail-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4().hex}"
    first = send(sandbox, email(order_id), key).json()
    assert send(sandbox, email(order_id), key).json() == first  # inside the window
    time.sleep(1.2)
    later = send(sandbox, email(order_id), key).json()

    assert later != first
    assert [m["id"] for m in sent(sandbox, order_id)] == [first["id"], later["id"]]


def test_a_keyless_provider_sends_every_request(sandbox: SandboxAdmin) -> None:
    """As SES, SendGrid and Postmark: the key is ignored, two requests are two emails."""
    sandbox.set_faults("mail", keyless=True)
    order_id, key = f"mail-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4().hex}"
    answers = [send(sandbox, email(order_id), key).json() for _ in range(2)]

    assert answers[0] != answers[1]
    assert len(sent(sandbox, order_id)) == 2


def test_the_rate_limit_answers_429_with_resends_headers_and_stores_nothing(
    sandbox: SandboxAdmin,
) -> None:
    """Two requests per second, as Resend's default: the third in a second is refused."""
    sandbox.set_faults("mail", rate_limit_per_s=2)
    order_id = f"mail-{uuid.uuid4().hex[:8]}"
    keys = [f"{order_id}:{n}" for n in range(3)]
    time.sleep(1.05 - time.time() % 1)  # all three inside one second of the clock
    answers = [send(sandbox, email(order_id, f"Email {n}"), k) for n, k in enumerate(keys)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["ratelimit-limit"] == "2"
    assert answers[1].headers["ratelimit-remaining"] == "0"
    refused = answers[2]
    assert refused.json()["name"] == "rate_limit_exceeded"
    assert refused.json()["statusCode"] == 429
    assert refused.headers["retry-after"] == "1"
    assert len(sent(sandbox, order_id)) == 2
    time.sleep(1.05)
    retried = send(sandbox, email(order_id, "Email 2"), keys[2])
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert len(sent(sandbox, order_id)) == 3


WINDOW = timedelta(seconds=8)
"""A key window of seconds: the email steps retry for half of it (4 s)."""


async def test_answers_lost_inside_the_window_send_the_email_once(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """The confirmation is sent, its answer and the first retry's are lost; the next retry,
    inside the window, gets the first answer back."""
    order = make_order()
    sandbox.set_faults("mail", key_window_s=WINDOW.total_seconds())
    sandbox.set_faults("mail", drop_next=2, drop_replays=True, key_prefix=order.id + CONFIRMATION)
    await start_order(client, order, task_queue, OrderOptions(mail_key_window=WINDOW))
    view = await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)

    assert sandbox.effects(order.id).emails == {EmailTemplate.ORDER_CONFIRMATION: 1}
    assert [m["template"] for m in sent(sandbox, order.id)] == ["order-confirmation"]
    line = next(line for line in view.timeline if line.step == Step.CONFIRMATION_EMAIL)
    assert line.state == StepState.COMPLETED


async def test_an_email_past_the_window_goes_to_an_operator_not_out_again(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """Every answer is lost until the step's budget (half the window) is spent: the order asks
    an operator, naming the window. Retried once the key is forgotten, the email is found at
    the provider and adopted: sent once, where the forgotten key would have sent it again."""
    order = make_order()
    sandbox.set_faults("mail", key_window_s=WINDOW.total_seconds())
    sandbox.set_faults("mail", drop_rate=1.0, drop_replays=True, key_prefix=order.id + CONFIRMATION)
    await start_order(client, order, task_queue, OrderOptions(mail_key_window=WINDOW))
    view = await wait_for_status(client, order.id, OrderStatus.NEEDS_ATTENTION)

    assert view.attention_step == Step.CONFIRMATION_EMAIL
    assert view.attention_reason is not None
    assert "failing for over 4 seconds" in view.attention_reason
    assert "remembers its key for 8 seconds" in view.attention_reason
    assert len(sent(sandbox, order.id)) == 1

    sandbox.set_faults("mail", drop_rate=0.0, drop_replays=False)
    [message] = sent(sandbox, order.id)
    await asyncio.sleep(WINDOW.total_seconds())  # the provider has forgotten the key now
    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY))
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    assert [m["id"] for m in sent(sandbox, order.id)] == [message["id"]]


async def test_a_keyless_provider_sends_copies_a_mail_client_shows_once(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """No key honoured and the confirmation's answer lost: the retry sends a second copy, with
    the same Message-ID as the first (at least once, duplicates harmless)."""
    order = make_order()
    sandbox.set_faults("mail", keyless=True, drop_next=1, key_prefix=order.id + CONFIRMATION)
    await start_order(client, order, task_queue)
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)

    copies = sent(sandbox, order.id)
    assert [m["template"] for m in copies] == ["order-confirmation"] * 2
    assert {m["message_id"] for m in copies} == {
        f"<{order.id}.order-confirmation@orders.shop.example>"
    }


async def test_a_rate_limit_slows_emails_and_parks_no_order(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    """One request per second at the mail service, answers lost now and then: every order
    completes with each email once, none asks an operator, intake stays open."""
    sandbox.set_faults("mail", rate_limit_per_s=1, drop_next=2)
    orders = 4
    batch = [make_order() for _ in range(orders)]
    began = time.monotonic()
    await asyncio.gather(*(start_order(client, order, task_queue) for order in batch))
    for order in batch:
        await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=60)
        await ship_order(client, order.id, UPS)
    views = [await wait_for_status(client, o.id, OrderStatus.COMPLETED, 60) for o in batch]

    assert time.monotonic() - began >= 2 * orders - 1  # at most one email a second went out
    assert _refused_as_rate_limited(sandbox) > 0
    for order, view in zip(batch, views, strict=True):
        assert sandbox.effects(order.id).emails == {
            EmailTemplate.ORDER_CONFIRMATION: 1,
            EmailTemplate.ORDER_SHIPPED: 1,
        }
        assert Step.OPERATOR not in {line.step for line in view.timeline}
    assert not (await intake_status(client, task_queue)).paused


def _refused_as_rate_limited(sandbox: SandboxAdmin) -> float:
    """How many 429s the mail service has answered, from its Prometheus counters."""
    text = httpx.get(f"{sandbox.base_url}/metrics").text
    prefix = 'providers_errors_total{service="mail",status="429"} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return sum(float(line.removeprefix(prefix)) for line in lines)
