"""``worker.py`` as a process: it polls, logs a line per step, and stops cleanly on a signal."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from client.orders import start_order
from config.settings import WorkerCapacity
from domain.status import OrderStatus
from providers.admin_client import SandboxAdmin
from stack.processes import ROOT, start_worker
from tests.support import make_order, wait_for_status
from worker import capacity_options


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_worker_logs_each_step_and_shuts_down_gracefully(
    client: Client, sandbox: SandboxAdmin, tmp_path: Path, signum: signal.Signals
) -> None:
    queue = f"orders-proc-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        client.service_client.config.target_host,
        sandbox.base_url,
        sandbox.api_key,
        tmp_path / "worker.log",
        task_queue=queue,
    )
    try:
        order = make_order()
        await start_order(client, order, queue)
        await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
        worker.send(signum)
        assert worker.popen.wait(15) == 0
    finally:
        worker.stop()

    log = worker.output()
    for step in (
        "payment-intent: created pi_",
        "payment-confirm: authorized pi_",
        "picklist: accepted pl_",
        "payment-capture: captured ch_",
        "confirmation-email: sent order-confirmation",
    ):
        assert f"{order.id} {step}" in log, log
    assert "shutting down: finishing running activities" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("name", "value", "least"),
    [("ORDERS_WORKER_WORKFLOW_TASKS", value, 2) for value in ("lots", "1", "0", "-4", "99999")]
    + [("ORDERS_WORKER_CACHED_WORKFLOWS", value, 0) for value in ("-1", "half")],
)
def test_a_bad_capacity_setting_stops_the_worker_with_the_fix(
    name: str, value: str, least: int
) -> None:
    env = {**os.environ, name: value}
    done = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"{name}={value!r}: give a whole number from {least} to 10000" in done.stderr
    assert "Traceback" not in done.stderr


def test_capacity_settings_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_WORKER_CACHED_WORKFLOWS", "0")
    monkeypatch.setenv("ORDERS_WORKER_ACTIVITIES", "7")
    options = capacity_options()
    assert options["max_cached_workflows"] == 0
    assert options["max_concurrent_activities"] == 7
    monkeypatch.delenv("ORDERS_WORKER_CACHED_WORKFLOWS")
    assert capacity_options()["max_cached_workflows"] == WorkerCapacity().cached_workflows == 500
