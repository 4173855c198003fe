"""Replay recorded histories of the intake breaker, as ``tests/test_replay.py`` does the orders'.

The breaker is long-lived (a pause can last hours), continues as new, and auto-upgrades with
Worker Versioning: a paused intake replays on every new build, so an unpatched change to its
commands would break it in production. Histories under ``tests/histories/intake`` were recorded
from real runs: a trip that probes and closes on its own, an operator's pause and resume, a trip
an operator takes over, and a pause long enough to continue as new (its first run, which ends
continued as new, and the run that carries its status on). To record the current version, run
``RECORD_HISTORIES=1 ./scripts/test -k record_intake``; keep the older versions' files.
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from activities.provider_client import open_provider_clients
from orders.client.orders import start_order
from orders.client.temporal import DATA_CONVERTER
from orders.config.settings import ProviderSettings
from orders.domain import search_attributes
from orders.domain.status import OrderStatus
from orders.intake.client import intake_status, pause_intake, resume_intake
from orders.intake.contract import (
    WORKFLOW_TYPE,
    IntakePolicy,
    IntakeStart,
    IntakeStatus,
    breaker_id,
)
from orders.intake.workflow import IntakeWorkflow
from sandbox.admin_client import SandboxAdmin
from tests.support import eventually, make_order, wait_for_status
from tools.stack.processes import find_binary, free_port
from worker import build_worker, sandboxed_runner

HISTORIES = Path(__file__).parent / "histories" / "intake"

RECORDED = {
    "v1": (
        "trip-probes-auto-close",
        "operator-pause-resume",
        "trip-operator-takes-over",
        "continued-as-new",
        "after-continue-as-new",
    ),
}
"""Histories per version of the breaker: v1 the first recorded. The last is the current one,
which recording writes."""
CURRENT = list(RECORDED)[-1]

POLICY = IntakePolicy(
    failure_rate=0.5,
    window=timedelta(seconds=60),
    min_orders=2,
    auto_close=True,
    probe_interval=timedelta(milliseconds=300),
    healthy_probes=2,
    probe_timeout=timedelta(seconds=2),
)
"""Trips once 2 orders were seen failing; probes every 300 ms; 2 healthy probes close it."""
SUGGEST_CONTINUE_AS_NEW_AT = 30
"""History length at which the recording server suggests continuing as new (default 4096)."""


def recorded_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


async def replay(workflow_class: type, path: Path, package: str = "workflows") -> None:
    """Replay one recorded history through ``workflow_class``, as a new worker would.

    ``package`` holds the workflow class: it passes through the sandbox, as the worker's do.
    """
    runner = sandboxed_runner(DATA_CONVERTER, package)
    replayer = Replayer(
        workflows=[workflow_class], data_converter=DATA_CONVERTER, workflow_runner=runner
    )
    await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))


@pytest.mark.parametrize("path", recorded_histories(), ids=lambda p: p.stem)
async def test_recorded_intake_history_replays_without_nondeterminism(path: Path) -> None:
    await replay(IntakeWorkflow, path)  # raises on any replay failure (the SDK default)


def test_intake_histories_are_committed() -> None:
    names = {path.stem for path in recorded_histories()}
    for version, scenarios in RECORDED.items():
        assert {f"{version}-{scenario}" for scenario in scenarios} <= names


@workflow.defn(name=WORKFLOW_TYPE)
class _SilentIntakeWorkflow(IntakeWorkflow):
    """A change deployed WITHOUT a patch: the breaker no longer publishes its status memo."""

    @workflow.init
    def __init__(self, start: IntakeStart) -> None:
        super().__init__(start)

    @workflow.run
    async def run(self, start: IntakeStart) -> IntakeStatus:
        return await super().run(start)

    def _publish(self) -> None:
        workflow.set_current_details("paused")


async def test_an_unpatched_intake_change_is_caught_by_replay() -> None:
    """The replay can fail: a command left out breaks a paused intake in flight."""
    with pytest.raises(NondeterminismError):
        await replay(
            _SilentIntakeWorkflow, HISTORIES / f"{CURRENT}-operator-pause-resume.json", __name__
        )


# -- recording, from real runs (opt-in) -------------------------------------------------------


@asynccontextmanager
async def breaker_worker(client: Client, sandbox: SandboxAdmin) -> AsyncIterator[str]:
    """A worker in this process on a task queue of its own, judging payments by ``POLICY``."""
    queue = f"intake-record-{uuid.uuid4().hex[:8]}"
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with (
        open_provider_clients(settings) as providers,
        build_worker(client, providers, task_queue=queue, intake_policy=POLICY),
    ):
        yield queue


async def until_intake(
    client: Client, queue: str, condition: Callable[[IntakeStatus], bool], what: str
) -> IntakeStatus:
    """Poll the breaker's status until ``condition`` holds."""

    async def holds() -> bool:
        return condition(await intake_status(client, queue))

    await eventually(holds, f"intake on {queue} is {what}", within=60)
    return await intake_status(client, queue)


async def save(client: Client, scenario: str, queue: str, run_id: str | None = None) -> None:
    """Write one run of the queue's breaker (the latest unless ``run_id``) as a history."""
    handle = client.get_workflow_handle(breaker_id(queue), run_id=run_id)
    history = await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    (HISTORIES / f"{CURRENT}-{scenario}.json").write_text(history.to_json())


async def trip(client: Client, sandbox: SandboxAdmin, queue: str) -> list[str]:
    """Start orders whose payments the gateway fails until the breaker trips; their ids."""
    prefix = f"trip-{uuid.uuid4().hex[:6]}-"
    sandbox.set_faults("payments", error_rate=1.0, key_prefix=prefix)
    orders = [make_order(id=f"{prefix}{index}") for index in range(POLICY.min_orders)]
    for order in orders:
        await start_order(client, order, queue)
    await until_intake(client, queue, lambda s: s.paused, "paused by the breaker")
    assert sandbox.fired("payments", prefix)["fail"] >= POLICY.min_orders  # it did fail them
    return [order.id for order in orders]


async def healed(client: Client, sandbox: SandboxAdmin, order_ids: list[str]) -> None:
    """Let the gateway answer again and the tripping orders get through."""
    sandbox.reset_faults()
    for order_id in order_ids:
        await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT, within=60)


@pytest.mark.skipif(not os.environ.get("RECORD_HISTORIES"), reason="set RECORD_HISTORIES=1")
async def test_record_intake_histories(client: Client, sandbox: SandboxAdmin) -> None:
    """Record the current version's breaker histories from real runs."""
    async with breaker_worker(client, sandbox) as queue:
        orders = await trip(client, sandbox, queue)
        await until_intake(client, queue, lambda s: s.probes >= 2, "probed twice, unhealthy")
        await healed(client, sandbox, orders)
        await until_intake(client, queue, lambda s: not s.paused, "closed on its own")
        await save(client, "trip-probes-auto-close", queue)

    async with breaker_worker(client, sandbox) as queue:
        await pause_intake(client, "warehouse stocktake", queue)
        await until_intake(client, queue, lambda s: s.paused, "paused by an operator")
        await resume_intake(client, "stocktake done", queue)
        await save(client, "operator-pause-resume", queue)

    async with breaker_worker(client, sandbox) as queue:
        orders = await trip(client, sandbox, queue)
        await pause_intake(client, "looking into the gateway", queue)  # takes it over
        await until_intake(client, queue, lambda s: s.by == "operator", "taken over")
        await healed(client, sandbox, orders)
        await resume_intake(client, "gateway fixed", queue)
        await save(client, "trip-operator-takes-over", queue)

    await record_continue_as_new(sandbox)


async def record_continue_as_new(sandbox: SandboxAdmin) -> None:
    """A pause whose history grows past the server's suggestion: the run continues as new.

    On a server of its own that suggests continuing as new after a few events, where the
    default is thousands: each operator pause adds a few, until the run carries its status over
    to a new one, which an operator then resumes.
    """
    suggest = f"limit.historyCount.suggestContinueAsNew={SUGGEST_CONTINUE_AS_NEW_AT}"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        port=free_port(),
        search_attributes=search_attributes.ALL,
        data_converter=DATA_CONVERTER,
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=["--dynamic-config-value", suggest],
    )
    try:
        client = env.client
        async with breaker_worker(client, sandbox) as queue:
            await pause_intake(client, "pause 0", queue)
            first = await client.get_workflow_handle(breaker_id(queue)).describe()
            for count in range(1, 100):
                await pause_intake(client, f"pause {count}", queue)
                await asyncio.sleep(0.2)  # one workflow task per pause
                latest = await client.get_workflow_handle(breaker_id(queue)).describe()
                if latest.run_id != first.run_id:
                    break
            else:
                raise AssertionError("the breaker never continued as new")
            await until_intake(client, queue, lambda s: s.paused, "paused on the new run")
            await resume_intake(client, "done", queue)
            await save(client, "continued-as-new", queue, first.run_id)
            await save(client, "after-continue-as-new", queue)
    finally:
        await env.shutdown()
