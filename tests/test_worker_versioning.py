"""Worker Versioning: the settings, and a rollout of a second build while orders are in flight.

The rollout runs on real processes (``LocalStack(versioning=True)``): Temporal's dev server,
the providers and ``worker.py`` processes of two builds of the ``orders`` deployment. Build A
takes orders; some reach the wait for shipment, others are held mid-payment at the gateway.
Build B (this code with one change to the order workflow, behind a new patch, as a real next
build would carry) starts beside A and is made current with ``temporal worker deployment
set-current-version``; A is stopped while its captures are still held; the held captures
commit, the waiting orders are shipped, and every order completes on B with exactly one of each
effect (the checker). New orders run on B; A shows as drained. Then the rollback: A again,
made current again, and a new order runs on A.
"""

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.enums.v1 import VersioningBehavior as VersioningBehaviorProto
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, VersioningBehavior

from orders.client.orders import ship_order
from orders.config.settings import (
    BUILD_ID_ENV,
    BUILD_SOURCES,
    CONTROLLER_BUILD_ID_ENV,
    CONTROLLER_DEPLOYMENT_NAME_ENV,
    DEFAULT_DEPLOYMENT_NAME,
    DEPLOYMENT_NAME_ENV,
    VERSIONING_ENV,
    VersioningError,
    WorkerVersioning,
    source_build_id,
)
from orders.domain.status import OrderStatus, Step
from orders.intake.workflow import IntakeWorkflow
from tests.support import wait_for_status, worker_refusal
from tools.harness.checker import check, gather_evidence
from tools.harness.drive import SHIPMENT, Placed, sample_order, start_orders
from tools.stack.local import LocalStack
from tools.stack.processes import ROOT
from worker import deployment_config
from workflows.order import OrderWorkflow

# -- the settings --


def test_versioning_is_off_unless_switched_on() -> None:
    assert not WorkerVersioning.from_env({}).enabled
    assert deployment_config(WorkerVersioning.from_env({})) is None
    assert deployment_config(None) is None
    for on in ("on", "ON", "true", "1", "yes"):
        assert WorkerVersioning.from_env({VERSIONING_ENV: on}).enabled


def test_deployment_name_and_build_id_come_from_the_environment() -> None:
    versioning = WorkerVersioning.from_env(
        {VERSIONING_ENV: "on", DEPLOYMENT_NAME_ENV: "shop-orders", BUILD_ID_ENV: "2026-12-05.1"}
    )
    assert versioning.version == "shop-orders.2026-12-05.1"
    config = deployment_config(versioning)
    assert config is not None and config.use_worker_versioning
    assert config.version.deployment_name == "shop-orders"
    assert config.version.build_id == "2026-12-05.1"
    assert config.default_versioning_behavior == VersioningBehavior.AUTO_UPGRADE


def test_in_a_worker_controller_pod_its_version_wins() -> None:
    # The Worker Controller appends its variables to the pod; the ConfigMap's names lose.
    env = {
        VERSIONING_ENV: "on",
        DEPLOYMENT_NAME_ENV: "orders",
        BUILD_ID_ENV: "release-1",
        CONTROLLER_DEPLOYMENT_NAME_ENV: "orders/orders-worker",
        CONTROLLER_BUILD_ID_ENV: "v1.4.0-5d8f9c7b6",
    }
    versioning = WorkerVersioning.from_env(env)
    assert versioning.enabled
    assert versioning.version == "orders/orders-worker.v1.4.0-5d8f9c7b6"
    without_ours = {k: v for k, v in env.items() if k not in (DEPLOYMENT_NAME_ENV, BUILD_ID_ENV)}
    assert WorkerVersioning.from_env(without_ours) == versioning
    # A controller's pod that polls unversioned would never be made current: refused.
    with pytest.raises(VersioningError, match=f"set {VERSIONING_ENV}=on"):
        WorkerVersioning.from_env({**env, VERSIONING_ENV: "off"})
    with pytest.raises(VersioningError, match=f"{CONTROLLER_DEPLOYMENT_NAME_ENV}='a.b'"):
        WorkerVersioning.from_env({**env, CONTROLLER_DEPLOYMENT_NAME_ENV: "a.b"})


def test_the_default_build_id_is_a_hash_of_the_worker_sources(tmp_path: Path) -> None:
    defaults = WorkerVersioning.from_env({})
    assert defaults.deployment_name == DEFAULT_DEPLOYMENT_NAME == "orders"
    assert defaults.build_id == source_build_id() == source_build_id()
    assert re.fullmatch(r"src-[0-9a-f]{12}", defaults.build_id)
    (tmp_path / "workflows").mkdir()
    (tmp_path / "worker.py").write_text("print('a')\n")
    (tmp_path / "workflows" / "order.py").write_text("A = 1\n")
    before = source_build_id(tmp_path)
    (tmp_path / "workflows" / "order.py").write_text("A = 2\n")
    assert source_build_id(tmp_path) != before


def test_the_build_sources_hold_every_module_of_ours_the_worker_imports() -> None:
    """A module the worker runs but the build id does not hash would let a changed worker keep
    its old build id (and build B of the rollout test would lack it)."""
    probe = (
        "import sys, worker; print('\\n'.join(m.__file__ for m in list(sys.modules.values())"
        " if getattr(m, '__file__', None)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert loaded.returncode == 0, loaded.stderr
    ours = {
        path.relative_to(ROOT)
        for path in map(Path, loaded.stdout.split())
        if path.is_relative_to(ROOT) and ".venv" not in path.parts and path.name != "__init__.py"
    }
    assert Path("orders/workflow_runner.py") in ours
    uncovered = [
        path
        for path in ours
        if not any(path == Path(top) or path.is_relative_to(top) for top in BUILD_SOURCES)
    ]
    assert uncovered == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (VERSIONING_ENV, "maybe", "give on or off"),
        (DEPLOYMENT_NAME_ENV, "orders.eu", "cannot contain '.'"),
        (BUILD_ID_ENV, "x" * 256, "at most 255 characters"),
    ],
)
def test_a_bad_versioning_setting_is_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(VersioningError, match=re.escape(message)):
        WorkerVersioning.from_env({name: value})


def test_a_bad_versioning_setting_stops_the_worker_with_the_fix() -> None:
    assert f"{VERSIONING_ENV}='maybe': give on or off" in worker_refusal(VERSIONING_ENV, "maybe")


def test_workflows_declare_no_behaviour_of_their_own() -> None:
    # Temporal refuses a behaviour from an unversioned worker: it comes from the worker's config.
    for workflow_class in (OrderWorkflow, IntakeWorkflow):
        defn = getattr(workflow_class, "__temporal_workflow_definition")
        assert defn.versioning_behavior in (None, VersioningBehavior.UNSPECIFIED)


# -- the rollout, on real processes --

BUILD_A = "rollout-a"
BUILD_B = "rollout-b"
DEPLOYMENT = DEFAULT_DEPLOYMENT_NAME

B_PATCH = "rollout-b-received-note"
"""Build B's change, asked as docs/rollouts.md prescribes: a new patch, in the first task."""
B_NOTE = {"rollout": "started on build B"}
"""What build B's change does: a memo on each order it starts (visible in the UI and history)."""
B_CHANGE_AT = """        state, steps = self._state, self._steps
        try:
"""
B_CHANGE = f"""            if workflow.patched({B_PATCH!r}):  # build B's change, new orders only
                workflow.upsert_memo({B_NOTE!r})
"""
CHANGE_VERSION = SearchAttributeKey.for_keyword_list("TemporalChangeVersion")


def build_b_sources(folder: Path) -> Path:
    """Build B: this repository's worker sources (``BUILD_SOURCES``) with one change.

    The change is to the order workflow, behind a new patch asked in its first workflow task,
    as docs/rollouts.md prescribes.
    """
    folder.mkdir(parents=True)
    for top in BUILD_SOURCES:
        source = ROOT / top
        if source.is_file():
            shutil.copy2(source, folder / top)
        else:
            shutil.copytree(source, folder / top, ignore=shutil.ignore_patterns("__pycache__"))
    order = folder / "workflows" / "order.py"
    code = order.read_text()
    assert code.count(B_CHANGE_AT) == 1, "the order workflow changed: move build B's change"
    order.write_text(code.replace(B_CHANGE_AT, B_CHANGE_AT + B_CHANGE))
    return folder


async def took_b_change(client: Client, order_id: str) -> bool:
    """Whether the order asked build B's patch (and so carries its note)."""
    described = await client.get_workflow_handle(order_id).describe()
    asked = B_PATCH in (described.typed_search_attributes.get(CHANGE_VERSION) or [])
    noted = (await described.memo()).get("rollout") == B_NOTE["rollout"]
    assert asked == noted, (order_id, asked, noted)  # the patch and its effect go together
    return asked


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path, versioning=True) as running:
        running.start_temporal()
        running.start_providers()
        yield running


def describe_deployment(stack: LocalStack) -> str:
    return stack.cli("worker", "deployment", "describe", "--name", DEPLOYMENT)


def describe_version(stack: LocalStack, build_id: str) -> str:
    args = ["worker", "deployment", "describe-version", "--deployment-name", DEPLOYMENT]
    return stack.cli(*args, "--build-id", build_id)


def field(output: str, name: str) -> str:
    """The value of ``name`` in the CLI's ``Name  value`` text output."""
    found = re.search(rf"^\s*{re.escape(name)}\s+(\S.*?)\s*$", output, re.MULTILINE)
    assert found, f"no {name!r} in:\n{output}"
    return found.group(1)


def drainage(describe: str, build_id: str) -> str:
    """The drainage status of a version in ``describe``'s ``Version Summaries`` table."""
    found = re.search(rf"^\s*{DEPLOYMENT}\s+{re.escape(build_id)}\s+(\w+)", describe, re.MULTILINE)
    assert found, f"no version {build_id} in:\n{describe}"
    return found.group(1)


async def until_drained(stack: LocalStack, build_id: str, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while True:
        printed = await asyncio.to_thread(describe_version, stack, build_id)
        if field(printed, "DrainageStatus") == "drained":
            return printed
        assert time.monotonic() < deadline, f"{build_id} did not drain:\n{printed}"
        await asyncio.sleep(0.5)


async def task_builds(client: Client, order_id: str) -> list[str]:
    """The build id of each of the order's completed workflow tasks, in order."""
    builds = []
    async for event in client.get_workflow_handle(order_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            attributes = event.workflow_task_completed_event_attributes
            builds.append(attributes.deployment_version.build_id)
    return builds


async def ran_on(client: Client, order_id: str) -> tuple[str, int]:
    """The build that completed the order's last workflow task, and its versioning behaviour."""
    described = await client.get_workflow_handle(order_id).describe()
    info = described.raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id, info.behavior


async def authorization_attempt(client: Client, order_id: str) -> tuple[str, int]:
    """Who ran the order's card authorization to completion, and in which attempt."""
    scheduled, started = {}, {}
    async for event in client.get_workflow_handle(order_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activity = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = activity
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attributes = event.activity_task_started_event_attributes
            activity = scheduled[attributes.scheduled_event_id]
            started[activity] = (attributes.identity, attributes.attempt)
    return started["authorize_payment"]


async def complete_new_order(client: Client, order_id: str) -> None:
    await start_orders(client, [sample_order(order_id)])
    await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
    await ship_order(client, order_id, SHIPMENT)
    await wait_for_status(client, order_id, OrderStatus.COMPLETED)


@pytest.mark.processes
async def test_rollout_of_a_second_build_while_orders_wait_and_pay(stack: LocalStack) -> None:
    began = time.monotonic()
    timings: dict[str, float] = {}

    def lap(what: str) -> None:
        timings[what] = round(time.monotonic() - began, 1)

    # Build A is deployed and made current (the stack does it as a deploy step would).
    await asyncio.to_thread(stack.start_worker, "worker-a", {BUILD_ID_ENV: BUILD_A})
    client, admin = await stack.connect(), stack.admin()
    lap("A current")
    try:
        # Two orders wait for shipment on A; two more are held mid-payment at the authorization
        # (a regular activity: the capture is tried locally first, inside a workflow task).
        waiting = ["rollout-wait-1", "rollout-wait-2"]
        await start_orders(client, [sample_order(order_id) for order_id in waiting])
        for order_id in waiting:
            await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
        admin.set_faults("payments", hold_next=2, key_suffix=f":{Step.PAYMENT_CONFIRM}")
        paying = ["rollout-pay-1", "rollout-pay-2"]
        await start_orders(client, [sample_order(order_id) for order_id in paying])
        await asyncio.to_thread(admin.wait_held, "payments", 2)
        assert {key.rsplit(":", 1)[0] for key in admin.held_keys()["payments"]} == set(paying)
        lap("orders in flight on A")

        # Build B starts beside A; A stays current until B is made current.
        b_sources = build_b_sources(stack.data_dir / "build-b")
        await asyncio.to_thread(
            stack.start_worker,
            "worker-b",
            {BUILD_ID_ENV: BUILD_B},
            make_current=False,
            source=b_sources,
        )
        before = await asyncio.to_thread(describe_deployment, stack)
        assert field(before, "CurrentVersionBuildID") == BUILD_A, before
        assert drainage(before, BUILD_A) == drainage(before, BUILD_B) == "unspecified", before
        lap("B polling beside A")

        switched = await asyncio.to_thread(stack.set_current_version, BUILD_B)
        assert "Successfully set the current worker deployment version" in switched
        after = await asyncio.to_thread(describe_deployment, stack)
        assert field(after, "CurrentVersionBuildID") == BUILD_B, after
        assert drainage(after, BUILD_A) in ("draining", "drained"), after
        lap("B current")

        # A goes away while its two authorizations are still held at the gateway.
        await asyncio.to_thread(stack.workers["worker-a"].stop)
        lap("A stopped")
        # The gateway now commits A's authorizations; B's retries under the same keys get them.
        assert admin.release("payments") == 2
        for order_id in paying:
            await wait_for_status(client, order_id, OrderStatus.AWAITING_SHIPMENT)
        for order_id in waiting + paying:
            await ship_order(client, order_id, SHIPMENT)
        for order_id in waiting + paying:
            await wait_for_status(client, order_id, OrderStatus.COMPLETED, within=60)
        lap("A's orders completed on B")
        worker_b = f"{stack.workers['worker-b'].popen.pid}@{socket.gethostname()}"
        for order_id in paying:  # A's attempt was lost with A; B's retry completed it
            assert await authorization_attempt(client, order_id) == (worker_b, 2)

        for order_id in waiting + paying:
            builds = await task_builds(client, order_id)
            assert builds[0] == BUILD_A and builds[-1] == BUILD_B, (order_id, builds)
            assert set(builds) == {BUILD_A, BUILD_B}, (order_id, builds)
            assert await ran_on(client, order_id) == (
                BUILD_B,
                VersioningBehaviorProto.VERSIONING_BEHAVIOR_AUTO_UPGRADE,
            )

        # A's orders replayed on B without its change: no patch asked, no note, completed.
        for order_id in waiting + paying:
            assert not await took_b_change(client, order_id), order_id

        # New orders run the new code from their first task, and take B's change.
        await complete_new_order(client, "rollout-new-on-b")
        assert set(await task_builds(client, "rollout-new-on-b")) == {BUILD_B}
        assert await took_b_change(client, "rollout-new-on-b")
        lap("new order on B")

        drained = await until_drained(stack, BUILD_A)
        assert drainage(await asyncio.to_thread(describe_deployment, stack), BUILD_A) == "drained"
        listed = await asyncio.to_thread(stack.cli, "worker", "deployment", "list")
        assert re.search(rf"^\s*{DEPLOYMENT}\s.*\s{BUILD_B}\s", listed, re.MULTILINE), listed
        lap("A drained")

        # Rollback: A again beside B, made current again; a new order runs on A.
        await asyncio.to_thread(stack.start_worker, "worker-a", make_current=False)
        rolled_back = await asyncio.to_thread(stack.set_current_version, BUILD_A)
        back = await asyncio.to_thread(describe_deployment, stack)
        assert field(back, "CurrentVersionBuildID") == BUILD_A, back
        await complete_new_order(client, "rollout-new-after-rollback")
        assert set(await task_builds(client, "rollout-new-after-rollback")) == {BUILD_A}
        assert not await took_b_change(client, "rollout-new-after-rollback")
        lap("rolled back to A")

        order_ids = [*waiting, *paying, "rollout-new-on-b", "rollout-new-after-rollback"]
        evidence = await gather_evidence(client, admin, map(Placed.sample, order_ids))
        assert check(evidence) == [], check(evidence)
        for order_id in order_ids:
            assert evidence.ledger[order_id].charges == 1
    finally:
        admin.close()
    print(f"\ntimings (s): {timings}")
    print(f"set-current-version B:\n{switched}\ndescribe after:\n{after}")
    print(f"describe-version A:\n{drained}\nlist:\n{listed}\nrollback:\n{rolled_back}\n{back}")


@pytest.mark.processes
async def test_switching_versioning_on_moves_unversioned_orders_to_the_current_version(
    tmp_path: Path,
) -> None:
    with LocalStack(tmp_path) as stack:  # versioning off: as before this change
        stack.start_temporal()
        stack.start_providers()
        await asyncio.to_thread(stack.start_worker, "worker-1")
        client, admin = await stack.connect(), stack.admin()
        try:
            await start_orders(client, [sample_order("unversioned-1")])
            await wait_for_status(client, "unversioned-1", OrderStatus.AWAITING_SHIPMENT)
            await asyncio.to_thread(stack.workers["worker-1"].stop)
            stack.versioning = True  # the same worker, now versioned and made current
            await asyncio.to_thread(stack.start_worker, "worker-1", {BUILD_ID_ENV: BUILD_A})
            await ship_order(client, "unversioned-1", SHIPMENT)
            await wait_for_status(client, "unversioned-1", OrderStatus.COMPLETED)

            builds = await task_builds(client, "unversioned-1")
            assert builds[0] == "" and builds[-1] == BUILD_A, builds
            assert await ran_on(client, "unversioned-1") == (
                BUILD_A,
                VersioningBehaviorProto.VERSIONING_BEHAVIOR_AUTO_UPGRADE,
            )
            printed = await asyncio.to_thread(
                stack.cli, "workflow", "describe", "--workflow-id", "unversioned-1"
            )
            assert re.search(r"Versioning Info:\s+Behavior\s+AutoUpgrade", printed), printed
            assert field(printed, "BuildId") == BUILD_A, printed
            evidence = await gather_evidence(client, admin, [Placed.sample("unversioned-1")])
            assert check(evidence) == []
        finally:
            admin.close()
