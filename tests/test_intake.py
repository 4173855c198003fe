"""The intake breaker: gateway failures pause intake, durably; operators pause and resume it.

Against the real stack: the session's Temporal dev server and providers, and a worker of each
test's own on a task queue of its own (the breaker is per task queue), built with a policy of
short windows and probes. Gateway 503s are injected only for the test's own orders (their ids
share a prefix). One test runs every part as a process and SIGKILLs them all.
"""

import asyncio
import json
import logging
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from activities.errors import error_for_transport
from activities.provider_client import open_provider_clients
from orders.client.orders import OrderNotFound, order_status, start_order
from orders.config.settings import TASK_QUEUE, ProviderSettings
from orders.domain.models import Order
from orders.domain.status import OrderStatus
from orders.intake.activities import PaymentHealth, PaymentOutcomes, classify
from orders.intake.client import IntakePaused, intake_status, pause_intake, resume_intake
from orders.intake.contract import (
    TRIP_SIGNAL,
    Evidence,
    IntakeMode,
    IntakePolicy,
    IntakePolicyError,
    IntakeStatus,
    PaymentOutcome,
    TripReport,
    breaker_id,
)
from orders.intake.workflow import IntakeWorkflow
from sandbox.admin_client import SandboxAdmin
from tests.support import make_order, run_starter, wait_for_status
from tools.stack.local import LocalStack
from worker import build_worker

FAST = IntakePolicy(
    failure_rate=0.5,
    window=timedelta(seconds=60),
    min_orders=3,
    auto_close=False,
    probe_interval=timedelta(milliseconds=500),
    healthy_probes=2,
    probe_timeout=timedelta(seconds=2),
)
"""Trips once 3 orders were seen and half of them fail; an operator resumes."""


@asynccontextmanager
async def breaker_worker(
    client: Client, sandbox: SandboxAdmin, policy: IntakePolicy, queue: str | None = None
) -> AsyncIterator[str]:
    """A worker in this process on a task queue of its own, judging payments by ``policy``."""
    queue = queue or f"intake-test-{uuid.uuid4().hex[:8]}"
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with (
        open_provider_clients(settings) as providers,
        build_worker(client, providers, task_queue=queue, intake_policy=policy),
    ):
        yield queue


async def until_intake(
    client: Client,
    queue: str,
    condition: Callable[[IntakeStatus], bool],
    what: str,
    within: float = 30.0,
) -> IntakeStatus:
    """Poll the breaker's status until ``condition`` holds."""
    deadline = time.monotonic() + within
    status = None
    while time.monotonic() < deadline:
        try:
            status = await intake_status(client, queue)
        except RPCError:  # Temporal restarting: ask again
            await asyncio.sleep(0.2)
            continue
        if condition(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"intake on {queue} did not get {what}; last status: {status}")


def failing_orders(sandbox: SandboxAdmin, prefix: str, count: int) -> list[Order]:
    """``count`` orders whose payment calls the gateway answers with 503 until cleared."""
    sandbox.set_faults("payments", error_rate=1.0, key_prefix=prefix)
    return [make_order(id=f"{prefix}{index}") for index in range(count)]


# -- the policy and the window, as pure logic ----------------------------------------------


def test_policy_reads_every_setting_from_the_environment_and_refuses_bad_ones() -> None:
    assert IntakePolicy.from_env({}) == IntakePolicy()
    policy = IntakePolicy.from_env(
        {
            "INTAKE_BREAKER": "on",
            "INTAKE_FAILURE_RATE": "0.25",
            "INTAKE_WINDOW": "90s",
            "INTAKE_MIN_ORDERS": "5",
            "INTAKE_AUTO_CLOSE": "off",
            "INTAKE_PROBE_INTERVAL": "500ms",
            "INTAKE_HEALTHY_PROBES": "4",
            "INTAKE_PROBE_TIMEOUT": "2s",
        }
    )
    assert policy == IntakePolicy(
        failure_rate=0.25,
        window=timedelta(seconds=90),
        min_orders=5,
        auto_close=False,
        probe_interval=timedelta(milliseconds=500),
        healthy_probes=4,
        probe_timeout=timedelta(seconds=2),
    )
    with pytest.raises(IntakePolicyError, match="INTAKE_WINDOW='soon' is invalid"):
        IntakePolicy.from_env({"INTAKE_WINDOW": "soon"})
    with pytest.raises(IntakePolicyError, match="INTAKE_FAILURE_RATE"):
        IntakePolicy.from_env({"INTAKE_FAILURE_RATE": "1.5"})
    with pytest.raises(IntakePolicyError, match="INTAKE_BREAKER='maybe' is invalid"):
        IntakePolicy.from_env({"INTAKE_BREAKER": "maybe"})


def test_each_order_counts_once_with_its_latest_payment_outcome() -> None:
    health = PaymentHealth(FAST)
    now = 1000.0
    health.record("a", PaymentOutcome.UNAVAILABLE, "503", now)
    health.record("a", PaymentOutcome.UNAVAILABLE, "503 again", now + 1)  # a retry
    health.record("b", PaymentOutcome.TIMEOUT, "slow", now + 1)
    assert not health.tripped(now + 2)  # 2 orders: fewer than min_orders, however many retries
    health.record("c", PaymentOutcome.DECLINED, "declined", now + 2)  # a healthy answer
    evidence = health.evidence(now + 2)
    assert (evidence.orders, evidence.failing) == (3, 2)
    assert evidence.kinds == {PaymentOutcome.UNAVAILABLE: 1, PaymentOutcome.TIMEOUT: 1}
    assert health.tripped(now + 2)  # 2 of 3 >= 50%
    health.record("a", PaymentOutcome.OK, "", now + 3)  # its retry went through
    assert not health.tripped(now + 3)  # 1 of 3
    health.record("a", PaymentOutcome.REFUSED, "422", now + 4)
    assert health.tripped(now + 4)
    assert not health.tripped(now + 62)  # only "a" is still inside the 60 s window
    health.forget_before(now + 5)
    assert health.evidence(now + 5).orders == 0


def test_only_the_gateways_own_failures_count() -> None:
    timeout = error_for_transport("payments", TimeoutError("slow"))
    timeout.__cause__ = TimeoutError("slow")
    assert classify(timeout) == PaymentOutcome.TIMEOUT
    dropped = ApplicationError("payments unreachable", type="ProviderUnavailable")
    assert classify(dropped) == PaymentOutcome.UNAVAILABLE
    refused = ApplicationError("422", {"code": "x"}, type="ProviderRejected", non_retryable=True)
    assert classify(refused) == PaymentOutcome.REFUSED
    declined = ApplicationError("402", {"code": "card_declined"}, type="PaymentDeclined")
    assert classify(declined) == PaymentOutcome.DECLINED
    ours = ApplicationError("order id already charged", type="ProviderRejected")
    assert classify(ours) is None  # the activity's own refusal says nothing of the gateway
    assert classify(asyncio.CancelledError()) is None


async def test_reporting_never_fails_or_slows_a_payment(caplog: pytest.LogCaptureFixture) -> None:
    """Temporal hanging or refusing the trip: recording returns at once, the error is logged."""

    class Hanging:
        identity = "test"

        def get_workflow_handle(self, workflow_id: str) -> Any:
            return self

        async def describe(self) -> None:
            await asyncio.sleep(3600)

    outcomes = PaymentOutcomes(
        cast(Client, Hanging()), FAST, call_timeout=timedelta(milliseconds=200)
    )

    async def pay(order_id: str) -> None:
        with outcomes.watch(order_id):
            raise ApplicationError("payments answered 503", type="ProviderUnavailable")

    caplog.set_level(logging.ERROR, logger="orders.intake")
    started = time.monotonic()
    for index in range(5):
        with pytest.raises(ApplicationError):  # the payment's own error, unchanged
            await ActivityEnvironment().run(pay, f"o-{index}")
    assert time.monotonic() - started < 0.5
    for _ in range(100):  # the trip gives up after its 200 ms timeout, in the background
        if "could not pause intake" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "could not pause intake" in caplog.text


# -- against the real stack -----------------------------------------------------------------


async def test_gateway_failures_pause_intake_and_placed_orders_carry_on(
    client: Client, sandbox: SandboxAdmin
) -> None:
    async with breaker_worker(client, sandbox, FAST) as queue:
        assert not (await intake_status(client, queue)).paused
        placed = failing_orders(sandbox, f"brk-{uuid.uuid4().hex[:6]}-", 3)
        for order in placed:
            await start_order(client, order, queue)

        status = await until_intake(client, queue, lambda s: s.paused, "paused by the breaker")
        assert status.mode == IntakeMode.PAUSED_BY_BREAKER and status.by == "breaker"
        assert status.evidence is not None and status.evidence.failing >= 3
        assert status.evidence.kinds.keys() == {PaymentOutcome.UNAVAILABLE}
        assert "payments failing for" in status.reason
        assert "503" in status.evidence.last_failure

        late = make_order()
        with pytest.raises(IntakePaused) as refused:
            await start_order(client, late, queue)
        assert refused.value.exit_code == 7
        assert "intake paused by the breaker" in str(refused.value)
        assert "No order was started" in str(refused.value)
        with pytest.raises(OrderNotFound):
            await order_status(client, late.id)  # nothing was started

        # Visible in the Temporal UI: the breaker runs, with its status in memo and details.
        handle = client.get_workflow_handle(breaker_id(queue))
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "intake paused by the breaker" in metadata.current_details

        # The orders placed before keep retrying; once the gateway heals they go through.
        for order in placed:
            assert (await order_status(client, order.id)).status == OrderStatus.RECEIVED
        sandbox.set_faults("payments", error_rate=0.0)
        for order in placed:
            await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=60)
            assert sandbox.effects(order.id).charges == 1
        assert (await intake_status(client, queue)).paused  # auto-close is off

        opened = await resume_intake(client, "gateway fixed", queue)
        assert (opened.mode, opened.by, opened.reason) == (
            IntakeMode.OPEN,
            "operator",
            "gateway fixed",
        )
        status = await intake_status(client, queue)
        assert not status.paused and status.reason == "gateway fixed"
        await start_order(client, late, queue)
        await wait_for_status(client, late.id, OrderStatus.AWAITING_SHIPMENT)


async def test_the_breaker_closes_on_its_own_once_payments_are_healthy(
    client: Client, sandbox: SandboxAdmin
) -> None:
    policy = FAST.model_copy(update={"auto_close": True, "min_orders": 2})
    async with breaker_worker(client, sandbox, policy) as queue:
        placed = failing_orders(sandbox, f"auto-{uuid.uuid4().hex[:6]}-", 2)
        for order in placed:
            await start_order(client, order, queue)
        await until_intake(client, queue, lambda s: s.paused, "paused by the breaker")

        # The gateway answers the probe's read, but the orders' payments still fail: paused.
        status = await until_intake(client, queue, lambda s: s.probes >= 3, "three probes")
        assert status.mode == IntakeMode.PAUSED_BY_BREAKER
        assert status.last_probe is not None and not status.last_probe.healthy
        assert "the gateway answers, but payments failing" in status.last_probe.detail
        assert status.healthy_streak == 0

        sandbox.set_faults("payments", error_rate=0.0)
        status = await until_intake(client, queue, lambda s: not s.paused, "open", within=60)
        assert status.by == "breaker"
        assert status.reason.startswith("payments healthy again: 2 healthy probes in a row")
        for order in placed:
            await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=60)
            assert sandbox.effects(order.id).charges == 1
        await start_order(client, make_order(), queue)


async def test_operators_pause_and_resume_intake_from_the_command_line(
    client: Client, sandbox: SandboxAdmin, tmp_path: Path
) -> None:
    address = client.service_client.config.target_host
    order = make_order()
    path = tmp_path / "order.json"
    path.write_text(order.model_dump_json())
    async with breaker_worker(client, sandbox, FAST) as queue:

        async def starter(*args: str) -> subprocess.CompletedProcess[str]:
            done = await run_starter(*args, address=address, task_queue=queue)
            assert "Traceback" not in done.stderr, done.stderr
            return done

        status = await starter("intake", "status")
        assert status.returncode == 0 and status.stdout.startswith("intake open")

        paused = await starter("intake", "pause", "--reason", "gateway maintenance")
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith("intake paused by an operator: gateway maintenance")

        refused = await starter("start", "--file", str(path))
        assert refused.returncode == 7, refused.stderr
        assert "intake paused by an operator" in refused.stderr
        assert "gateway maintenance" in refused.stderr
        assert "No order was started" in refused.stderr
        assert "starter.py intake resume" in refused.stderr
        with pytest.raises(OrderNotFound):
            await order_status(client, order.id)

        status = await starter("intake", "status")
        assert status.returncode == 0
        assert status.stdout.startswith("intake paused by an operator since ")
        assert "gateway maintenance" in status.stdout
        assert "resume with: starter.py intake resume" in status.stdout
        as_json = await starter("intake", "status", "--json")
        parsed = json.loads(as_json.stdout)
        assert parsed["mode"] == IntakeMode.PAUSED_BY_OPERATOR.value
        assert parsed["reason"] == "gateway maintenance"

        resumed = await starter("intake", "resume", "--reason", "maintenance over")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.startswith("intake open")
        again = await starter("intake", "resume")
        assert again.returncode == 0 and again.stdout.startswith("intake was already open")
        status = await starter("intake", "status")
        assert status.stdout.startswith("intake open") and "maintenance over" in status.stdout

        started = await starter("start", "--file", str(path))
        assert started.returncode == 0, started.stderr
        await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)

        no_reason = await starter("intake", "pause")
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr


async def test_an_operators_pause_needs_no_worker_and_the_breaker_leaves_it_alone(
    client: Client, sandbox: SandboxAdmin
) -> None:
    queue = f"intake-test-{uuid.uuid4().hex[:8]}"
    await pause_intake(client, "stock count", queue)  # no worker polls this queue yet
    status = await intake_status(client, queue)
    assert status.mode == IntakeMode.PAUSED_BY_OPERATOR and status.reason == "stock count"
    with pytest.raises(IntakePaused):
        await start_order(client, make_order(), queue)

    policy = FAST.model_copy(update={"auto_close": True, "min_orders": 1})
    async with breaker_worker(client, sandbox, policy, queue):
        handle = client.get_workflow_handle_for(IntakeWorkflow.run, breaker_id(queue))
        evidence = Evidence.model_validate(
            {"at": "2030-01-01T00:00:00Z", "orders": 4, "failing": 4, "window": 60}
        )
        await handle.signal(TRIP_SIGNAL, TripReport(evidence=evidence, policy=policy))
        status = await until_intake(client, queue, lambda s: s.evidence is not None, "evidence")
        assert status.mode == IntakeMode.PAUSED_BY_OPERATOR  # the operator decides, not probes
        assert status.reason == "stock count"
        assert (await handle.query(IntakeWorkflow.status)).probes == 0

        await resume_intake(client, "", queue)
        status = await intake_status(client, queue)
        assert not status.paused and status.reason == "resumed by an operator"


async def test_a_resume_sent_before_any_worker_ran_the_breaker_opens_intake(
    client: Client, sandbox: SandboxAdmin
) -> None:
    """The breaker's first task then holds the pause and the resume: the run must end."""
    queue = f"intake-test-{uuid.uuid4().hex[:8]}"
    await pause_intake(client, "stock count", queue)
    resuming = asyncio.create_task(resume_intake(client, "counted", queue))
    await asyncio.sleep(0.5)  # the update reaches Temporal before a worker takes the task
    async with breaker_worker(client, sandbox, FAST, queue):
        opened = await resuming
        assert not opened.paused and opened.reason == "counted"
        description = await client.get_workflow_handle(breaker_id(queue)).describe()
        assert description.status == WorkflowExecutionStatus.COMPLETED
        await start_order(client, make_order(), queue)


@pytest.mark.processes
async def test_a_paused_intake_survives_a_restart_of_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trip the breaker on a stack of processes, SIGKILL all of them, start them again."""
    for variable, value in {
        "INTAKE_MIN_ORDERS": "2",
        "INTAKE_WINDOW": "60s",
        "INTAKE_AUTO_CLOSE": "off",
    }.items():
        monkeypatch.setenv(variable, value)  # read by the worker processes
    stack = LocalStack(tmp_path)
    try:
        await asyncio.to_thread(stack.start, 1)
        client = await stack.connect()
        admin = stack.admin()
        placed = failing_orders(admin, "durable-", 2)
        for order in placed:
            await start_order(client, order)
        await until_intake(client, TASK_QUEUE, lambda s: s.paused, "paused")
        breaker = client.get_workflow_handle_for(IntakeWorkflow.run, breaker_id(TASK_QUEUE))
        before = await breaker.query(IntakeWorkflow.status)  # as the breaker recorded it

        for kill in (lambda: stack.kill_worker("worker-1"), stack.kill_providers):
            await asyncio.to_thread(kill)
        await asyncio.to_thread(stack.kill_temporal)
        await asyncio.to_thread(stack.start_temporal)
        await asyncio.to_thread(stack.start_providers)  # with no faults: the gateway is healthy
        await asyncio.to_thread(stack.start_worker, "worker-1")

        after = await until_intake(client, TASK_QUEUE, lambda s: True, "readable", within=60)
        assert after.mode == IntakeMode.PAUSED_BY_BREAKER
        assert (after.since, after.reason) == (before.since, before.reason)
        with pytest.raises(IntakePaused):
            await start_order(client, make_order())
        for order in placed:  # nothing lost: the orders placed before go through
            await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=60)
            assert admin.effects(order.id).charges == 1
        assert (await intake_status(client, TASK_QUEUE)).paused

        resumed = await run_starter(
            "intake", "resume", "--reason", "checked", address=stack.temporal_address,
            task_queue=TASK_QUEUE,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        await start_order(client, make_order())
        admin.close()
    finally:
        await asyncio.to_thread(stack.stop)
