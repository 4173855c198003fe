"""The worker's HTTP client to the providers: every outcome becomes the Temporal error that says
whether a retry may help, against the real providers and against a dead or silent address."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import PROVIDER_REJECTED, PROVIDER_UNAVAILABLE, provider_error_code
from activities.provider_client import ProviderClient, ProviderClients, open_provider_clients
from activities.warehouse import (
    ORDER_CLOSED,
    CancelPicklistRequest,
    PicklistItem,
    PicklistRequest,
    WarehouseActivities,
)
from orders.config.settings import ProviderSettings
from orders.domain.status import EmailTemplate
from orders.intake.activities import classify
from orders.intake.contract import PaymentOutcome
from sandbox.admin_client import SandboxAdmin
from tests.support import make_order
from tools.stack.processes import free_port


def _email(order_id: str) -> dict[str, str]:
    return {
        "order_id": order_id,
        "to": "ada@example.com",
        "template": EmailTemplate.ORDER_CONFIRMATION.value,
        "subject": "Your order",
        "body": "Thank you.",
    }


@pytest.fixture
async def providers(sandbox: SandboxAdmin) -> AsyncIterator[ProviderClients]:
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with open_provider_clients(settings) as clients:
        yield clients


@pytest.fixture
def mail(providers: ProviderClients) -> ProviderClient:
    return providers.mail


async def test_a_retried_key_gets_the_first_answer_and_sends_once(
    mail: ProviderClient, sandbox: SandboxAdmin
) -> None:
    order_id = f"client-{uuid.uuid4().hex[:8]}"
    key = f"{order_id}:confirmation-email"
    first = await mail.post("/messages", _email(order_id), idempotency_key=key)
    again = await mail.post("/messages", _email(order_id), idempotency_key=key)
    assert again == first
    template = EmailTemplate.ORDER_CONFIRMATION.value
    listing = await mail.get("/messages", {"order_id": order_id, "template": template})
    assert [message["id"] for message in listing["data"]] == [first["id"]]
    assert sandbox.effects(order_id).emails_of(template) == 1


async def test_a_503_is_retryable_and_a_refusal_is_final(
    mail: ProviderClient, sandbox: SandboxAdmin
) -> None:
    order_id = f"client-{uuid.uuid4().hex[:8]}"
    sandbox.set_faults("mail", fail_next=1, refuse_next=1, key_prefix=f"{order_id}:")
    with pytest.raises(ApplicationError) as down:
        await mail.post("/messages", _email(order_id), idempotency_key=f"{order_id}:a")
    assert down.value.type == PROVIDER_UNAVAILABLE and not down.value.non_retryable
    assert "mail answered 503" in str(down.value)
    with pytest.raises(ApplicationError) as refused:
        await mail.post("/messages", _email(order_id), idempotency_key=f"{order_id}:b")
    assert refused.value.type == PROVIDER_REJECTED and refused.value.non_retryable
    assert "mail answered 422" in str(refused.value)
    assert refused.value.details  # the provider's error body, for the operator
    assert sandbox.fired("mail", f"{order_id}:") == {"fail": 1, "refuse": 1}
    assert sandbox.effects(order_id).emails_of(EmailTemplate.ORDER_CONFIRMATION.value) == 0


@pytest.fixture
def warehouse(providers: ProviderClients) -> WarehouseActivities:
    return WarehouseActivities(providers.warehouse)


async def test_a_picklist_for_an_order_cancelled_at_the_warehouse_is_a_final_refusal(
    warehouse: WarehouseActivities,
) -> None:
    """Only an attempt the order gave up on should meet it; if a live step ever did, the
    operator would read what happened and what to do."""
    order = make_order()
    picklist = PicklistRequest(
        order_id=order.id,
        idempotency_key=f"{order.id}:picklist",
        items=[PicklistItem(sku=item.sku, quantity=item.quantity) for item in order.items],
        ship_to=order.shipping_address,
    )
    take_back = CancelPicklistRequest(order_id=order.id, idempotency_key=f"{order.id}:cancel")
    env = ActivityEnvironment()
    picked = await env.run(warehouse.send_picklist, picklist)
    cancelled = await env.run(warehouse.cancel_picklist, take_back)
    assert cancelled is not None and (cancelled.id, cancelled.status) == (picked.id, "cancelled")
    assert await env.run(warehouse.cancel_picklist, take_back) == cancelled  # changes nothing

    again = picklist.model_copy(update={"idempotency_key": f"{order.id}:picklist:attempt-2"})
    with pytest.raises(ApplicationError) as refused:
        await env.run(warehouse.send_picklist, again)

    assert refused.value.type == PROVIDER_REJECTED and refused.value.non_retryable
    assert provider_error_code(refused.value) == ORDER_CLOSED
    message = refused.value.message
    assert message.startswith("warehouse answered 422 order_closed: Order ")
    assert f"'{order.id}' was cancelled at the warehouse" in message
    assert f"nothing was picked for order {order.id}, and nothing can be: cancel it" in message


async def test_taking_back_an_order_that_was_never_picked_finds_nothing(
    warehouse: WarehouseActivities,
) -> None:
    order_id = f"client-{uuid.uuid4().hex[:8]}"
    take_back = CancelPicklistRequest(order_id=order_id, idempotency_key=f"{order_id}:cancel")
    assert await ActivityEnvironment().run(warehouse.cancel_picklist, take_back) is None


async def test_nobody_listening_is_a_retryable_unavailability() -> None:
    port = free_port()  # nothing listens there, and the kernel hands it to no one
    settings = ProviderSettings(base_url=f"http://127.0.0.1:{port}", api_key="k")
    async with open_provider_clients(settings) as providers:
        with pytest.raises(ApplicationError) as unreachable:
            await _search_intents(providers)
    assert unreachable.value.type == PROVIDER_UNAVAILABLE and not unreachable.value.non_retryable
    assert "payments unreachable or connection dropped" in str(unreachable.value)
    assert classify(unreachable.value) == PaymentOutcome.UNAVAILABLE


async def test_a_silent_provider_times_out_as_a_retryable_timeout() -> None:
    async def accept_and_say_nothing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read()  # read until the client gives up; never answer

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = ProviderSettings(
        base_url=f"http://127.0.0.1:{port}", api_key="k", request_timeout_seconds=0.3
    )
    try:
        async with open_provider_clients(settings) as providers:
            with pytest.raises(ApplicationError) as slow:
                await _search_intents(providers)
    finally:
        server.close()
    assert slow.value.type == PROVIDER_UNAVAILABLE and not slow.value.non_retryable
    assert isinstance(slow.value.__cause__, TimeoutError)
    assert classify(slow.value) == PaymentOutcome.TIMEOUT


async def _search_intents(providers: ProviderClients) -> object:
    """One read at the gateway, through the official Stripe library."""
    gateway = providers.gateway
    return await gateway.send(
        "GET /v1/payment_intents/search",
        lambda options: gateway.v1.payment_intents.search_async(
            {"query": "metadata['order_id']:'o-1'"}, options
        ),
    )
