"""Replay recorded histories: a workflow change that breaks orders in flight fails here first.

Histories under ``tests/histories`` were recorded from real runs of the workflow. To record new
ones (after a deliberate, patched change), run ``RECORD_HISTORIES=1 ./scripts/test -k record``.
"""

import os
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from client.orders import ship_order, start_order
from domain.models import Shipment
from domain.status import OrderStatus
from stack.sandbox import SandboxAdmin
from tests.support import make_order, wait_for_status
from worker import sandboxed_runner
from workflows.order import OrderWorkflow

HISTORIES = Path(__file__).parent / "histories"


def recorded_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


@pytest.mark.parametrize("path", recorded_histories(), ids=lambda p: p.stem)
async def test_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    replayer = Replayer(
        workflows=[OrderWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_runner(),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_histories_are_committed() -> None:
    names = {path.stem for path in recorded_histories()}
    assert {"v1-completed", "v1-payment-declined", "v1-retried-faults"} <= names


@pytest.mark.skipif(not os.environ.get("RECORD_HISTORIES"), reason="set RECORD_HISTORIES=1")
async def test_record_histories(client: Client, sandbox: SandboxAdmin, task_queue: str) -> None:
    """Record the histories above from real runs against the dev server and providers."""
    HISTORIES.mkdir(exist_ok=True)
    completed = make_order()
    declined = make_order(payment_method="pm_card_declined")
    await start_order(client, completed, task_queue)
    await start_order(client, declined, task_queue)
    await wait_for_status(client, completed.id, OrderStatus.AWAITING_SHIPMENT)
    await ship_order(client, completed.id, Shipment(carrier="UPS", tracking_number="1Z999"))
    sandbox.set_faults("payments", fail_next=2, drop_next=1)
    retried = make_order()
    await start_order(client, retried, task_queue)
    for order_id, name in [
        (completed.id, "v1-completed"),
        (declined.id, "v1-payment-declined"),
        (retried.id, "v1-retried-faults"),
    ]:
        handle = client.get_workflow_handle(order_id)
        if name != "v1-retried-faults":
            await handle.result()
        else:
            await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())
