"""Replay recorded histories: a workflow change that breaks orders in flight fails here first.

Histories under ``tests/histories`` were recorded from real runs of the workflow. To record new
ones for the current version, run ``RECORD_HISTORIES=1 ./scripts/test -k record``; keep the older
versions' files: they are the orders still in flight when a new version is deployed.
"""

import os
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from client.orders import cancel_order, resolve_order, ship_order, start_order
from client.temporal import DATA_CONVERTER
from domain.emails import order_confirmation
from domain.models import Order, OrderOptions, OrderView, ResolveRequest, Shipment
from domain.status import OperatorAction, OrderStatus, Step
from providers.admin_client import SandboxAdmin
from tests.support import make_order, wait_for_status
from worker import sandboxed_runner
from workflows.order import OrderWorkflow

HISTORIES = Path(__file__).parent / "histories"


def recorded_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


async def replay(workflow_class: type, path: Path) -> None:
    """Replay one recorded history through ``workflow_class``, as a new worker would."""
    replayer = Replayer(
        workflows=[workflow_class],
        data_converter=DATA_CONVERTER,
        workflow_runner=sandboxed_runner(),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer.replay_workflow(history)


@pytest.mark.parametrize("path", recorded_histories(), ids=lambda p: p.stem)
async def test_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    await replay(OrderWorkflow, path)  # raises on any replay failure (the SDK default)


RECORDED = {
    "v1": ("completed", "payment-declined", "retried-faults"),
    "v2": ("completed", "payment-declined", "cancelled", "out-of-stock", "operator-retry"),
    "v3": (
        "completed",
        "payment-declined",
        "cancelled",
        "out-of-stock",
        "operator-retry",
        "refused-step-retry",
    ),
}
"""Histories per workflow version: v1 the first, v2 with cancel/deadlines/operator, v3 with
refused steps parked for an operator. The last is the current one, which recording writes."""
CURRENT = list(RECORDED)[-1]


def test_histories_are_committed() -> None:
    names = {path.stem for path in recorded_histories()}
    for version, scenarios in RECORDED.items():
        assert {f"{version}-{scenario}" for scenario in scenarios} <= names


@pytest.mark.skipif(not os.environ.get("RECORD_HISTORIES"), reason="set RECORD_HISTORIES=1")
async def test_record_histories(client: Client, sandbox: SandboxAdmin, task_queue: str) -> None:
    """Record the current version's histories from real runs; older ones stay as they were."""
    orders = {scenario: make_order() for scenario in RECORDED[CURRENT]}
    orders["payment-declined"] = make_order(payment_method="pm_card_declined")
    sku = f"SKU-GONE-{orders['out-of-stock'].id}"
    sandbox.set_stock(sku, 0)
    orders["out-of-stock"] = make_order(items=[{"sku": sku, "quantity": 1, "unit_price": 100}])

    for scenario in ("completed", "payment-declined", "cancelled", "out-of-stock"):
        await start_order(client, orders[scenario], task_queue)
    await wait_for_status(client, orders["completed"].id, OrderStatus.AWAITING_SHIPMENT)
    await ship_order(
        client, orders["completed"].id, Shipment(carrier="UPS", tracking_number="1Z99")
    )
    await wait_for_status(client, orders["cancelled"].id, OrderStatus.AWAITING_SHIPMENT)
    await cancel_order(client, orders["cancelled"].id, "customer changed their mind")

    sandbox.set_faults("payments", error_rate=1.0)
    retried = orders["operator-retry"].id
    budget = OrderOptions(payment_retry_budget=timedelta(seconds=2))
    await start_order(client, orders["operator-retry"], task_queue, budget)
    await wait_for_status(client, retried, OrderStatus.NEEDS_ATTENTION)
    sandbox.reset_faults()
    await resolve_order(client, retried, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))
    await wait_for_status(client, retried, OrderStatus.AWAITING_SHIPMENT)

    sandbox.set_faults("warehouse", reject_next=1)
    refused = orders["refused-step-retry"].id
    await start_order(client, orders["refused-step-retry"], task_queue)
    await wait_for_status(client, refused, OrderStatus.NEEDS_ATTENTION)
    await resolve_order(client, refused, ResolveRequest(action=OperatorAction.RETRY))
    await wait_for_status(client, refused, OrderStatus.AWAITING_SHIPMENT)

    for scenario, order in orders.items():
        handle = client.get_workflow_handle(order.id)
        if scenario not in ("operator-retry", "refused-step-retry"):
            await handle.result()
        history = await handle.fetch_history()
        (HISTORIES / f"{CURRENT}-{scenario}.json").write_text(history.to_json())


@workflow.defn(name="OrderWorkflow")
class _PicklistFirstWorkflow(OrderWorkflow):
    """A change to the steps deployed WITHOUT a patch: picklist before the confirmation email."""

    @workflow.run
    async def run(self, order: Order) -> OrderView:
        return await super().run(order)

    async def _fulfil(self) -> None:
        charge_id = await self._payment.charge()
        await self._send_picklist()
        order = self._state.order
        await self._email(Step.CONFIRMATION_EMAIL, order_confirmation(order, charge_id))


async def test_an_unpatched_step_change_is_caught_by_replay() -> None:
    """The replay test can fail: reordering steps without a patch breaks orders in flight."""
    with pytest.raises(NondeterminismError):
        await replay(_PicklistFirstWorkflow, HISTORIES / "v1-completed.json")
