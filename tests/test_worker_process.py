"""``worker.py`` as a process: it polls, logs a line per step, and stops cleanly on a signal."""

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from orders.client.orders import start_order
from orders.config.settings import (
    DEFAULT_PAYMENT_RETURN_URL,
    PAYMENT_RETURN_URL_ENV,
    PaymentReturnUrl,
    WorkerCapacity,
)
from orders.domain.models import CancelRequest
from orders.domain.status import EmailTemplate, OrderStatus, Step
from sandbox.admin_client import SandboxAdmin
from tests.support import make_order, worker_refusal
from tools.stack.local import LocalStack
from tools.stack.processes import start_worker, wait_for_log
from worker import capacity_options
from workflows.order import OrderWorkflow


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_worker_logs_each_step_and_shuts_down_gracefully(
    client: Client, sandbox: SandboxAdmin, tmp_path: Path, signum: signal.Signals
) -> None:
    """The signal lands while an activity runs (its card authorization held at the gateway):
    the worker stops polling, lets that activity finish, and exits 0."""
    queue = f"orders-proc-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        client.service_client.config.target_host,
        sandbox.base_url,
        sandbox.api_key,
        tmp_path / "worker.log",
        task_queue=queue,
    )
    order = make_order()
    key = f"{order.id}:{Step.PAYMENT_CONFIRM}"
    try:
        sandbox.set_faults("payments", hold_next=1, key_prefix=key)
        await start_order(client, order, queue)
        await asyncio.to_thread(sandbox.wait_held, "payments", 1)
        assert sandbox.held_keys()["payments"] == [key]  # the activity is running now
        worker.send(signum)
        await asyncio.to_thread(wait_for_log, worker, SHUTTING_DOWN, 15)
        assert sandbox.release("payments") == 1  # its answer comes during the shutdown
        assert await asyncio.to_thread(worker.popen.wait, 15) == 0
    finally:
        sandbox.release("payments")
        worker.stop()

    log = worker.output()
    assert f"{order.id} payment-intent: created pi_" in log, log
    # The running activity finished after the signal, and nothing was started after it.
    finished = log.index(f"{order.id} payment-confirm: authorized pi_")
    assert log.index(SHUTTING_DOWN) < finished, log
    assert f"{order.id} picklist" not in log
    assert "Traceback" not in log
    assert await completed_activity(client, order.id, "authorize_payment")


SHUTTING_DOWN = "shutting down: finishing running activities"


async def test_a_picklist_made_by_a_lost_task_is_taken_back_when_its_rerun_cancels_first(
    client: Client, sandbox: SandboxAdmin, tmp_path: Path
) -> None:
    """The worker dies in the workflow task that took the card's authorization, while that
    task's local picklist call is held at the warehouse; the customer cancels meanwhile; the
    held request then commits. The task's rerun on another worker takes the cancel before the
    story resumes, so it never reaches the picklist step: the picklist the dead worker made
    must still be taken back (``Picking.cover_a_lost_local_picklist``)."""
    queue = f"orders-lost-{uuid.uuid4().hex[:8]}"
    host = client.service_client.config.target_host
    order = make_order()
    key = f"{order.id}:{Step.PICKLIST}"
    first = start_worker(host, sandbox.base_url, sandbox.api_key, tmp_path / "first.log", queue)
    second = None
    try:
        sandbox.set_faults("warehouse", hold_next=1, key_prefix=key, key_suffix=f":{Step.PICKLIST}")
        await start_order(client, order, queue)
        await asyncio.to_thread(sandbox.wait_held, "warehouse", 1)
        first.kill()  # mid-task: the picklist is a local call, nothing of it in history
        handle = client.get_workflow_handle_for(OrderWorkflow.run, order.id)
        cancelling = asyncio.create_task(
            handle.execute_update(OrderWorkflow.cancel, CancelRequest(reason="changed my mind"))
        )
        await asyncio.sleep(1)  # the cancel reaches Temporal; the lost task times out in 4 s
        assert sandbox.release("warehouse") == 1  # the dead worker's picklist is made now
        second = start_worker(
            host, sandbox.base_url, sandbox.api_key, tmp_path / "second.log", queue, "second"
        )
        view = await asyncio.wait_for(cancelling, 60)
    finally:
        sandbox.release("warehouse")
        first.stop()
        if second is not None:
            second.stop()

    assert view.status == OrderStatus.CANCELLED
    assert Step.PICKLIST not in [line.step for line in view.timeline]  # the rerun stopped first
    [picklist] = sandbox.list("/warehouse/picklists", order_id=order.id)
    assert picklist["status"] == "cancelled"
    effects = sandbox.effects(order.id)
    assert (effects.picklists, effects.cancelled_picklists) == (1, 1)
    assert (effects.authorizations, effects.released, effects.charges) == (1, 1, 0)
    assert effects.emails == {EmailTemplate.ORDER_CANCELLED: 1}


async def completed_activity(client: Client, order_id: str, activity: str) -> bool:
    """Whether the order's history holds ``activity`` completed (not timed out)."""
    scheduled: dict[int, str] = {}
    async for event in client.get_workflow_handle(order_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = event.activity_task_completed_event_attributes
            if scheduled[completed.scheduled_event_id] == activity:
                return True
    return False


@pytest.mark.parametrize(
    ("name", "value", "least"),
    [("ORDERS_WORKER_WORKFLOW_TASKS", value, 2) for value in ("lots", "1", "0", "-4", "99999")]
    + [("ORDERS_WORKER_CACHED_WORKFLOWS", value, 0) for value in ("-1", "half")],
)
def test_a_bad_capacity_setting_stops_the_worker_with_the_fix(
    name: str, value: str, least: int
) -> None:
    refusal = worker_refusal(name, value)
    assert f"{name}={value!r}: give a whole number from {least} to 10000" in refusal


def test_capacity_settings_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_WORKER_CACHED_WORKFLOWS", "0")
    monkeypatch.setenv("ORDERS_WORKER_ACTIVITIES", "7")
    options = capacity_options()
    assert options["max_cached_workflows"] == 0
    assert options["max_concurrent_activities"] == 7
    monkeypatch.delenv("ORDERS_WORKER_CACHED_WORKFLOWS")
    assert capacity_options()["max_cached_workflows"] == WorkerCapacity().cached_workflows == 500


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("shop.example/orders/{order_id}", "give an absolute http:// or https:// URL"),
        ("ftp://shop.example/{order_id}", "give an absolute http:// or https:// URL"),
        ("https://shop.example/{order}", "the only placeholder it may hold is {order_id}"),
        ("https://shop.example:port/{order_id}", "not a URL"),
        ("https://shop.example/my orders/{order_id}", "a URL has no spaces"),
    ],
)
def test_a_bad_payment_return_url_stops_the_worker_with_the_fix(value: str, problem: str) -> None:
    refusal = worker_refusal(PAYMENT_RETURN_URL_ENV, value)
    assert f"{PAYMENT_RETURN_URL_ENV}={value!r}: {problem}" in refusal


def test_the_payment_return_url_names_the_order() -> None:
    template = "https://shop.example/orders/{order_id}?from=3ds"
    setting = PaymentReturnUrl.from_env({PAYMENT_RETURN_URL_ENV: template})
    assert setting.for_order("o 1/2") == "https://shop.example/orders/o%201%2F2?from=3ds"
    assert PaymentReturnUrl.from_env({}) == PaymentReturnUrl(DEFAULT_PAYMENT_RETURN_URL)


def test_the_local_stack_returns_the_customer_to_its_own_ui_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PAYMENT_RETURN_URL_ENV, raising=False)
    stack = LocalStack(tmp_path, ui_port=18233)
    url = PaymentReturnUrl.from_env(stack.return_url_env()).for_order("order-1")
    assert url == "http://localhost:18233/namespaces/default/workflows/order-1"
    assert LocalStack(tmp_path).return_url_env() == {}  # no UI: the worker's default
    monkeypatch.setenv(PAYMENT_RETURN_URL_ENV, "https://shop.example/{order_id}")
    assert stack.return_url_env() == {}  # the user's own setting reaches the worker as it is
