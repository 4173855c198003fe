"""The order against a gateway as unkind as Stripe: authorizations expire, refunds fail.

Real processes: the sandbox gateway (its clock expires authorizations at their
``capture_before`` and settles pending refunds), a Temporal server and a worker. Windows of
seconds stand in for Stripe's days; the ledger, not the order's word, says what happened.
"""

import pytest
from temporalio.client import Client

from orders.client.orders import request_cancel, resolve_order, start_order
from orders.domain.models import OrderView, ResolveRequest
from orders.domain.status import EmailTemplate, OperatorAction, OrderStatus, Step
from sandbox.admin_client import SandboxAdmin
from tests.support import make_order, order_awaiting_shipment, until_view, wait_for_status
from workflows.authorization import AUTHORIZATION_EXPIRED

CONFIRMATION = EmailTemplate.ORDER_CONFIRMATION.value
CANCELLED = EmailTemplate.ORDER_CANCELLED.value
REFUND_FAILED = EmailTemplate.REFUND_FAILED.value


async def parked(client: Client, order_id: str, step: Step) -> OrderView:
    """Wait until the order asks an operator about ``step``."""
    return await until_view(
        client,
        order_id,
        lambda v: v.status == OrderStatus.NEEDS_ATTENTION and v.attention_step == step,
        f"needs-attention at {step}",
    )


async def test_an_authorization_expiring_while_the_picklist_is_parked_charges_nothing(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order()
    sandbox.set_faults("payments", authorization_validity_s=6)
    sandbox.set_faults("warehouse", refuse_next=1, key_suffix=f":{Step.PICKLIST.value}")
    await start_order(client, order, task_queue)
    waiting = await parked(client, order.id, Step.PICKLIST)  # the refusal fired
    assert waiting.authorization_expires_at is not None
    assert sandbox.effects(order.id).authorizations == 1

    warned = await until_view(
        client,
        order.id,
        lambda v: "authorization expires at" in (v.attention_reason or ""),
        "operators warned of the expiry",
    )
    assert warned.status == OrderStatus.NEEDS_ATTENTION

    view = await wait_for_status(client, order.id, OrderStatus.CANCELLED, within=30)
    assert view.failure_reason == f"cancelled: {AUTHORIZATION_EXPIRED}"
    effects = sandbox.effects(order.id)
    assert (effects.authorizations, effects.released, effects.charges) == (1, 1, 0)
    assert (effects.refunds, effects.picklists) == (0, 0)
    assert effects.emails == {CANCELLED: 1}
    [intent] = sandbox.list("/payments/intents", order_id=order.id)
    assert intent["status"] == "canceled"


@pytest.mark.parametrize("fails", [False, True], ids=["pending-then-succeeded", "then-failed"])
async def test_a_pending_refund_is_followed_to_its_outcome(
    client: Client, sandbox: SandboxAdmin, task_queue: str, fails: bool
) -> None:
    order = await order_awaiting_shipment(client, task_queue)
    refund_faults: dict[str, float | str] = {"refunds_pending_s": 1.5}
    if fails:
        refund_faults["refunds_fail_with"] = "expired_or_canceled_card"
    # Only the first refund's key: an operator's retry (":attempt-2") goes through.
    sandbox.set_faults("payments", key_suffix=f":{Step.REFUND.value}", **refund_faults)
    await request_cancel(client, order.id, "customer changed their mind")

    if not fails:
        view = await wait_for_status(client, order.id, OrderStatus.CANCELLED)
        assert (view.refund_status, sandbox.effects(order.id).returned) == ("succeeded", 1)
        assert sandbox.effects(order.id).emails == {CONFIRMATION: 1, CANCELLED: 1}
        return

    failed = await parked(client, order.id, Step.REFUND)
    assert failed.attention_reason == (
        f"refund {failed.refund_id} failed: expired_or_canceled_card"
    )
    effects = sandbox.effects(order.id)
    assert (effects.refunds_by_status, effects.returned_amount) == ({"failed": 1}, 0)
    assert effects.emails == {CONFIRMATION: 1, CANCELLED: 1, REFUND_FAILED: 1}

    await resolve_order(client, order.id, ResolveRequest(action=OperatorAction.RETRY))
    view = await wait_for_status(client, order.id, OrderStatus.CANCELLED)
    effects = sandbox.effects(order.id)
    assert effects.refunds_by_status == {"failed": 1, "succeeded": 1}
    assert effects.returned_amount == effects.charged_amount == order.total
    assert view.refund_status == "succeeded" and view.refund_id != failed.refund_id
    assert effects.emails == {CONFIRMATION: 1, CANCELLED: 1, REFUND_FAILED: 1}
