"""Throughput, latency and CPU per order of the real order workflow against a no-op ceiling.

Run from the repository root (nothing else needs to be running: it brings up its own Temporal
dev server on a SQLite file with WAL, the providers and a worker in a temporary folder)::

    .venv/bin/python -m tools.bench.throughput                     # levels 1, 10, 50, 100, 200
    .venv/bin/python -m tools.bench.throughput --quick             # about a minute: 1, 10, 50
    .venv/bin/python -m tools.bench.throughput --concurrency 1,10,50 --orders 100
    .venv/bin/python -m tools.bench.throughput --park 10000        # park, measure, ship them all
    .venv/bin/python -m tools.bench.throughput --workers 1,2,4     # scale-out: levels 10, 50, 200
    .venv/bin/python -m tools.bench.throughput --concurrency 10,50 --overload  # then 2 x, open loop
    .venv/bin/python -m tools.bench.throughput --rate-limited      # 2 x the gateway account's limit

Each level keeps ``concurrency`` orders in flight: every order is started, signalled shipped as
soon as its history shows it awaiting shipment, and awaited until completed. Each real level is
followed by the same level of the ceiling (``tools.bench.ceiling``: six no-op activities and the
shipped signal, in its own worker processes with the real workers' settings), so drift hits both.
With ``--workers``, every level runs with each count of worker processes in turn (that many of
each kind against the one server), warmed up again whenever the processes changed.
With ``--overload``, after the levels real orders are offered open loop (started on a fixed
schedule, not waiting for earlier ones) at a factor of the best sustained rate, to show that the
overload waits at the server and no workflow task runs over 1 s.
With ``--rate-limited``, real orders are offered open loop at twice what the gateway account's
rate limits allow (Stripe's test mode: 25 reads and 25 writes a second; ``--account-limit``)
for a minute, to show the limit as back-pressure: orders complete at the limit, none parked,
the intake breaker never trips, every effect once. Elsewhere the gateway has no limits: the
levels measure this system, not the account (each level reports its gateway calls per order).
Latencies come from the histories' event times; CPU and memory from each process's ``/proc``.
At the end the exactly-once checker judges every real order against the providers' ledger.

Exit status: 0 all well; 1 the exactly-once check failed; 2 the run could not finish (an order
did not complete, nothing moved for ``--stall-timeout`` seconds, a process died).
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import temporalio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from orders.client.exit import exit_now
from orders.client.orders import start_order
from orders.config.settings import TASK_QUEUE
from orders.domain.models import OrderView
from orders.domain.status import OrderStatus
from orders.intake.contract import TRIP_SIGNAL, breaker_id
from sandbox.admin_client import SandboxAdmin
from sandbox.faults import (
    DEFAULT_RATE_LIMIT_PER_S,
    DEFAULT_SEARCH_RATE_LIMIT_PER_S,
    RATE_LIMIT_ENV,
    SEARCH_RATE_LIMIT_ENV,
)
from tools.bench import chart
from tools.bench.ceiling import CeilingOrderWorkflow
from tools.bench.ceiling_activities import CEILING_TASK_QUEUE
from tools.bench.ceiling_worker import READY_LINE
from tools.bench.figures import (
    Sample,
    by_role,
    cpu_figures,
    cpu_seconds,
    distribution,
    exit_status,
    history_figures,
    judge,
    latency_figures,
    load_figures,
    memory_figures,
    overall_load,
    ratio,
    sample,
    sqlite_sizes,
    throughput,
    usage_figures,
)
from tools.bench.procstat import machine, process_usage
from tools.bench.report import printout
from tools.bench.stages import (
    CEILING,
    REAL,
    SHIPPED_SIGNAL,
    AwaitingShipment,
    OrderHistory,
    Shape,
)
from tools.bench.stages import read_history as read_stages
from tools.harness.checker import gather_evidence
from tools.harness.drive import SHIPMENT, Placed, gather_limited, sample_order
from tools.stack.local import LocalStack
from tools.stack.processes import (
    ROOT,
    ManagedProcess,
    StackError,
    find_binary,
    free_port,
    spawn,
    wait_for_log,
)
from workflows.order import OrderWorkflow

DEFAULT_LEVELS = (1, 10, 50, 100, 200)
QUICK_LEVELS = (1, 10, 50)
SCALE_LEVELS = (10, 50, 200)
"""The levels when several worker counts are measured (1, 2 and 4 within about 15 minutes)."""
QUICK_SCALE_LEVELS = (10, 50)
_CLOSED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


class BenchError(Exception):
    """The run could not finish as it must: every order shipped and completed."""


_BEGAN = time.monotonic()


def say(line: str) -> None:
    """A progress line with the seconds since the command began."""
    print(f"[{time.monotonic() - _BEGAN:6.1f}s] {line}", flush=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the two workflows measured ------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """The real order workflow or the ceiling: how to start one and which worker runs it."""

    name: str
    shape: Shape
    worker: str
    """The role of its worker processes in the figures (``tools.bench.figures.WORKER_ROLES``)."""
    real: bool

    async def start(self, client: Client, order_id: str) -> None:
        """Start one order of this kind (the real one through the project's ``start_order``)."""
        order = sample_order(order_id)
        if self.real:
            await start_order(client, order)
            return
        await client.start_workflow(
            CeilingOrderWorkflow.run,
            order,
            id=order_id,
            task_queue=CEILING_TASK_QUEUE,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )

    async def completed(self, client: Client, order_id: str) -> None:
        """Wait for the order's result; fail loudly unless it completed."""
        if self.real:
            view: OrderView = await client.get_workflow_handle_for(
                OrderWorkflow.run, order_id
            ).result()
            if view.status != OrderStatus.COMPLETED:
                raise BenchError(f"order {order_id} ended {view.status.value}, not completed")
        else:
            result = await client.get_workflow_handle_for(
                CeilingOrderWorkflow.run, order_id
            ).result()
            if result != "completed":
                raise BenchError(f"ceiling order {order_id} returned {result!r}")


REAL_KIND = Kind("real", REAL, "worker", real=True)
CEILING_KIND = Kind("ceiling", CEILING, "ceiling_worker", real=False)


def ceiling_worker_command(task_queue: str, metrics_port: int) -> list[str]:
    """How to start a ceiling worker process on ``task_queue``.

    With the SDK's metrics served on ``metrics_port``, as the stack runs every real worker
    (``tools.stack.local``): both kinds pay for them.
    """
    return [
        sys.executable, "-m", "tools.bench.ceiling_worker",
        "--task-queue", task_queue, "--metrics-port", str(metrics_port),
    ]  # fmt: skip


# --- driving orders --------------------------------------------------------------------------


@dataclass
class OrderRun:
    """One order as the benchmark drove it (wall-clock times of this process)."""

    order_id: str
    started: float = 0.0
    ready: float | None = None
    """When the benchmark saw it awaiting shipment."""
    done: float | None = None
    """When the benchmark had its completed result."""


@dataclass
class Progress:
    """Shared by the orders of one batch, watched for stalls."""

    last: float = field(default_factory=time.monotonic)
    runs: list[OrderRun] = field(default_factory=list)

    def moved(self) -> None:
        """Something happened: an order was started, became ready or completed."""
        self.last = time.monotonic()


async def await_ready(client: Client, kind: Kind, run: OrderRun, progress: Progress) -> None:
    """Follow the order's history (long polls) until it awaits shipment."""
    detector = AwaitingShipment(kind.shape)
    handle = client.get_workflow_handle(run.order_id)
    async for event in handle.fetch_history_events(wait_new_event=True):
        if detector.feed(event):
            run.ready = time.time()
            progress.moved()
            return
        if event.event_type in _CLOSED:
            break
    raise BenchError(f"order {run.order_id} closed before it awaited shipment")


async def drive_order(client: Client, kind: Kind, run: OrderRun, progress: Progress) -> None:
    """Start the order, ship it as soon as it awaits shipment, wait until it completed."""
    run.started = time.time()
    await kind.start(client, run.order_id)
    progress.moved()
    await await_ready(client, kind, run, progress)
    await client.get_workflow_handle(run.order_id).signal(SHIPPED_SIGNAL, SHIPMENT)
    await kind.completed(client, run.order_id)
    run.done = time.time()
    progress.moved()


async def in_slots(
    order_ids: Sequence[str],
    concurrency: int,
    step: Callable[[OrderRun, Progress], Awaitable[None]],
    watch: "Watch",
) -> list[OrderRun]:
    """Run ``step`` for every order, ``concurrency`` at a time; fail if nothing moves for long."""
    pending = deque(order_ids)
    progress = Progress()

    async def slot() -> None:
        while pending:
            run = OrderRun(pending.popleft())
            progress.runs.append(run)
            await step(run, progress)

    async def slots() -> None:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(order_ids))):
                group.create_task(slot())

    await watch.until_done(slots(), progress, lambda: _stalled_orders(progress.runs))
    return progress.runs


def _stalled_orders(runs: Sequence[OrderRun]) -> str:
    stuck = [run for run in runs if run.done is None]
    waiting = [run.order_id for run in stuck if run.ready is None]
    shipped = [run.order_id for run in stuck if run.ready is not None]
    return (
        f"{len(waiting)} not yet awaiting shipment (e.g. {', '.join(waiting[:3]) or '-'}), "
        f"{len(shipped)} shipped but not completed (e.g. {', '.join(shipped[:3]) or '-'})"
    )


@dataclass
class Watch:
    """Fails a batch when nothing moved for ``stall_s`` or a process of the stack died."""

    stall_s: float
    processes: Callable[[], Mapping[str, ManagedProcess]]

    async def until_done(
        self, work: Awaitable[None], progress: Progress, describe: Callable[[], str]
    ) -> None:
        """Await ``work``, checking every second; a failure inside it is raised as it is."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=1.0)
                self.check_processes()
                idle = time.monotonic() - progress.last
                if not task.done() and idle > self.stall_s:
                    raise BenchError(f"nothing moved for {idle:.0f}s: {describe()}")
            try:
                task.result()
            except BaseExceptionGroup as group:  # from the TaskGroup: the first cause
                raise _first(group) from group
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def check_processes(self) -> None:
        """Fail with the log's tail if a process of the stack has exited."""
        for name, process in self.processes().items():
            if not process.alive:
                raise BenchError(f"{name} exited during the run:\n{process.log_tail(15)}")


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def read_histories(
    client: Client, shape: Shape, order_ids: Sequence[str]
) -> list[OrderHistory]:
    """Every order's stages from its history (after the measurement, so it costs it nothing)."""

    async def one(order_id: str) -> OrderHistory:
        events = [e async for e in client.get_workflow_handle(order_id).fetch_history_events()]
        return read_stages(shape, events)

    return await gather_limited((one(order_id) for order_id in order_ids), concurrency=20)


# --- the overload run: orders offered on a schedule, open loop -----------------------------------

LONGEST_TASK_MS = 1000.0
"""What the overload run checks: no workflow task runs longer, at twice the sustainable rate."""


def start_offsets(rate: float, seconds: float) -> Iterator[float]:
    """When to start each order, in seconds from the first: one every ``1 / rate`` s.

    Every offset before ``seconds`` (``rate x seconds`` of them, rounded up), each computed
    from its index, so no rounding adds up.
    """
    for index in range(math.ceil(round(rate * seconds, 9))):
        yield index / rate


async def on_schedule(
    order_ids: Sequence[str],
    offsets: Sequence[float],
    step: Callable[[OrderRun, Progress], Coroutine[Any, Any, None]],
    watch: Watch,
) -> list[OrderRun]:
    """Start ``step`` for each order at its offset, open loop; then wait for them all.

    Each order runs as its own task: the schedule never waits for earlier orders, and a late
    start does not delay the next ones. The watch fails it if nothing moves for long.
    """
    progress = Progress()

    async def schedule() -> None:
        began = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for order_id, offset in zip(order_ids, offsets, strict=True):
                await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
                run = OrderRun(order_id)
                progress.runs.append(run)
                group.create_task(step(run, progress))

    await watch.until_done(schedule(), progress, lambda: _stalled_orders(progress.runs))
    return progress.runs


def peak_in_flight(runs: Sequence[OrderRun]) -> int:
    """The most orders started and not completed at one moment (at a tie, completions first)."""
    changes = sorted(
        [(run.started, 1) for run in runs]
        + [(run.done, -1) for run in runs if run.done is not None]
    )
    peak = in_flight = 0
    for _, change in changes:
        in_flight += change
        peak = max(peak, in_flight)
    return peak


def batch_span(runs: Sequence[OrderRun]) -> tuple[int, float]:
    """How many of a batch's orders completed, and the seconds from first start to last end."""
    completed = sum(run.done is not None for run in runs)
    wall = max(run.done or 0.0 for run in runs) - min(run.started for run in runs)
    return completed, wall


def start_lags(runs: Sequence[OrderRun], offsets: Sequence[float]) -> list[float]:
    """How late each order started against its offset from the first one, in seconds."""
    first = runs[0].started
    return [run.started - first - offset for run, offset in zip(runs, offsets, strict=True)]


@dataclass(frozen=True)
class Overload:
    """What the overload run offers: ``factor`` x the sustainable rate, for ``seconds``."""

    factor: float
    seconds: float
    sustainable_per_s: float
    sustainable_from: str
    """``levels``: the best sustained real rate of this run's levels (same workers); ``--rate``."""

    @property
    def rate(self) -> float:
        """Orders offered per second."""
        return self.factor * self.sustainable_per_s

    def offsets(self) -> list[float]:
        """When each order starts, in seconds from the first."""
        return list(start_offsets(self.rate, self.seconds))


def overload_plan(args: argparse.Namespace, sustained: float | None) -> Overload:
    """The overload run of the command line: ``--rate`` if given, else the levels' best rate."""
    if args.rate is not None:
        return Overload(args.overload, args.overload_seconds, args.rate, "--rate")
    if sustained is None:
        raise BenchError("--overload: no level ran with these workers, and no --rate was given")
    return Overload(args.overload, args.overload_seconds, sustained, "levels")


def task_verdict(history: Mapping[str, Any]) -> dict[str, Any]:
    """The longest workflow task run (ms) and whether every task ran within 1 s.

    ``history`` as from ``history_figures``. A task that timed out has no run time (it ran past
    its timeout, ``WORKFLOW_TASK_TIMEOUT``), so any timeout fails the verdict too.
    """
    longest = history["workflow_task_run_ms"]["max"]
    within = (longest or 0.0) <= LONGEST_TASK_MS and history["workflow_task_timeouts"] == 0
    return {"longest_workflow_task_ms": longest, "within_1s": within}


def overload_figures(
    plan: Overload,
    runs: Sequence[OrderRun],
    histories: Sequence[OrderHistory],
    before: Sample,
    after: Sample,
) -> dict[str, Any]:
    """The overload run's figures: offer, completions, workflow tasks, resources, verdict.

    The workflow tasks from the orders' histories; each process's CPU and cores between the two
    samples (the whole run: starting and draining).
    """
    orders = len(runs)
    completed, wall = batch_span(runs)
    history = history_figures(histories)
    return {
        "factor": plan.factor,
        "seconds": plan.seconds,
        "sustainable_per_s": round(plan.sustainable_per_s, 2),
        "sustainable_from": plan.sustainable_from,
        "offered_per_s": round(plan.rate, 2),
        "orders": orders,
        "completed": completed,
        "wall_s": round(wall, 2),
        "completed_per_s": round(completed / max(wall, 1e-6), 2),
        "peak_in_flight": peak_in_flight(runs),
        "start_lag_ms": distribution(start_lags(runs, plan.offsets())),
        "latency_ms": latency_figures(histories),
        "history": history,
        **usage_figures(before, after, orders, "worker"),
        **task_verdict(history),
    }


# --- the rate-limited run ----------------------------------------------------------------------

CALIBRATION_ORDERS = 10
"""Real orders run without limits first, to count the gateway calls an order makes."""


def per_order(
    before: Mapping[str, float], after: Mapping[str, float], orders: int
) -> dict[str, float]:
    """Each count's growth from ``before`` to ``after``, per order."""
    grown = growth(before, after)
    return {kind: round(count / max(orders, 1), 2) for kind, count in grown.items()}


def growth(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Each count's growth from ``before`` to ``after``."""
    return {kind: after[kind] - before.get(kind, 0) for kind in after}


def orders_per_s_at_limit(limits: Mapping[str, float], calls: Mapping[str, float]) -> float:
    """The most orders a second the account's ``limits`` let through (0: no limit on a kind).

    ``calls`` are the gateway calls an order makes of each kind; the kind that runs out first
    sets the pace.
    """
    paces = [limits[kind] / calls[kind] for kind in limits if limits[kind] > 0 and calls.get(kind)]
    if not paces:
        raise BenchError("--rate-limited: the orders made no call that the limits count")
    return min(paces)


@dataclass(frozen=True)
class RateLimited:
    """The rate-limited run: ``factor`` x the orders a second the limits allow, for ``seconds``."""

    limits: Mapping[str, float]
    """Per second, by kind (``read``, ``write``, ``search``), as the gateway takes them."""
    calls_per_order: Mapping[str, float]
    factor: float
    seconds: float

    @property
    def at_limit_per_s(self) -> float:
        """Orders a second at the account's limit."""
        return orders_per_s_at_limit(self.limits, self.calls_per_order)

    @property
    def rate(self) -> float:
        """Orders offered per second."""
        return self.factor * self.at_limit_per_s

    def offsets(self) -> list[float]:
        """When each order starts, in seconds from the first."""
        return list(start_offsets(self.rate, self.seconds))


def rate_limited_figures(
    plan: RateLimited,
    runs: Sequence[OrderRun],
    histories: Sequence[OrderHistory],
    refused: Mapping[str, float],
    breaker_trips: int,
) -> dict[str, Any]:
    """The rate-limited run's figures: the offer, completions against the limit, the promises.

    ``refused``: the gateway's 429s by kind during the run; ``breaker_trips``: the intake
    breaker's trips during it.
    """
    completed, wall = batch_span(runs)
    completed_per_s = completed / max(wall, 1e-6)
    return {
        "account_limits_per_s": dict(plan.limits),
        "gateway_calls_per_order": dict(plan.calls_per_order),
        "orders_per_s_at_limit": round(plan.at_limit_per_s, 2),
        "factor": plan.factor,
        "seconds": plan.seconds,
        "offered_per_s": round(plan.rate, 2),
        "orders": len(runs),
        "completed": completed,
        "wall_s": round(wall, 2),
        "completed_per_s": round(completed_per_s, 2),
        "completed_vs_limit": round(completed_per_s / plan.at_limit_per_s, 2),
        "refused_429": dict(refused),
        "parked": sum(history.parked for history in histories),
        "breaker_trips": breaker_trips,
        "latency_ms": latency_figures(histories),
        "history": history_figures(histories),
    }


# --- the figures of a level --------------------------------------------------------------------


def kind_figures(
    kind: Kind,
    concurrency: int,
    runs: Sequence[OrderRun],
    histories: Sequence[OrderHistory],
    before: Sample,
    after: Sample,
) -> dict[str, Any]:
    """The figures of one batch of one kind, from its runs, histories and two process samples."""
    orders = len(runs)
    rate, method = throughput(
        [run.started for run in runs], [run.done for run in runs if run.done], concurrency
    )
    completed, wall = batch_span(runs)
    return {
        "workflow": kind.shape.workflow_type,
        "concurrency": concurrency,
        "orders": orders,
        "completed": completed,
        "wall_s": round(wall, 2),
        "throughput_per_s": round(rate, 2),
        "throughput_method": method,
        "overall_throughput_per_s": round(orders / wall, 2),
        "latency_ms": latency_figures(histories),
        **usage_figures(before, after, orders, kind.worker),
        "history": history_figures(histories),
    }


def level_entry(
    workers: int, concurrency: int, real: dict[str, Any], ceiling: dict[str, Any]
) -> dict[str, Any]:
    """One level of the report: the real batch, the ceiling's and their ratio."""
    ratios = ratio(real, ceiling)
    # One server runs both: its memory after each is not the workflow's to compare.
    ratios.get("memory_mb", {}).pop("temporal", None)
    return {
        "workers": workers,
        "concurrency": concurrency,
        "orders": real["orders"],
        "real": real,
        "ceiling": ceiling,
        "ratio": ratios,
    }


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One benchmark run on one stack."""

    stack: LocalStack
    client: Client
    args: argparse.Namespace
    gateway: SandboxAdmin
    """The gateway's admin API: its limits, and the calls it admitted and refused."""
    ceiling_workers: dict[str, ManagedProcess] = field(default_factory=dict)
    """The ceiling's worker processes running now, by name (``ceiling-worker-1``, ...)."""
    stopped_peaks_mb: list[tuple[str, float]] = field(default_factory=list)
    """Each stopped worker process's peak memory, read just before it stopped."""
    idle_cpu_ms_per_s: dict[str, float] | None = None
    """CPU milliseconds per second each role used while no order was in flight."""
    real_ids: list[str] = field(default_factory=list)

    @property
    def worker_count(self) -> int:
        """How many real worker processes run now."""
        return len(self.stack.workers)

    def processes(self) -> dict[str, ManagedProcess]:
        """The stack's processes the benchmark needs alive, by their names in the figures."""
        found = {"temporal": self.stack.temporal, "providers": self.stack.providers}
        server = {name: process for name, process in found.items() if process is not None}
        return {**server, **self.stack.workers, **self.ceiling_workers}

    def pids(self) -> dict[str, int]:
        """The pids to account for, this process (``driver``) included."""
        pids = {name: process.popen.pid for name, process in self.processes().items()}
        return {**pids, "driver": os.getpid()}

    def watch(self) -> Watch:
        """A stall and crash watch over the processes."""
        return Watch(self.args.stall_timeout, self.processes)

    def start_ceiling_worker(self, name: str) -> None:
        """One of the ceiling's worker processes (``tools.bench.ceiling_worker``), as ``name``."""
        say(f"Starting {name} ...")
        # Everything else (encryption keys included) comes from this process's environment,
        # as the stack's workers get it.
        env = {"TEMPORAL_ADDRESS": self.stack.temporal_address, "PYTHONUNBUFFERED": "1"}
        process = spawn(
            name,
            ceiling_worker_command(CEILING_TASK_QUEUE, free_port()),
            self.stack.log_dir / f"{name}.log",
            env,
        )
        self.ceiling_workers[name] = process
        wait_for_log(process, READY_LINE, timeout=30.0)

    def stop_worker(self, name: str) -> None:
        """Stop one worker process of either kind gracefully, its peak memory read first."""
        with contextlib.suppress(OSError):
            peak = process_usage(self.processes()[name].popen.pid).peak_rss_mb
            self.stopped_peaks_mb.append((name, peak))
        if name in self.ceiling_workers:
            say(f"Stopping {name} ...")
            self.ceiling_workers.pop(name).stop()
        else:
            self.stack.stop_worker(name)

    def stop_ceiling_workers(self) -> None:
        """Stop the ceiling's workers once its levels are done."""
        for name in list(self.ceiling_workers):
            self.stop_worker(name)

    def scale_to(self, count: int) -> None:
        """Run exactly ``count`` real and ``count`` ceiling worker processes."""
        self._scale(self.stack.workers, "worker", count, self.stack.start_worker)
        self._scale(self.ceiling_workers, "ceiling-worker", count, self.start_ceiling_worker)

    def _scale(
        self,
        running: Mapping[str, ManagedProcess],
        prefix: str,
        count: int,
        start: Callable[[str], object],
    ) -> None:
        """Stop the processes beyond ``prefix-count``, start the missing ones up to it."""
        wanted = [f"{prefix}-{index}" for index in range(1, count + 1)]
        for name in [name for name in running if name not in wanted]:
            self.stop_worker(name)
        for name in wanted:
            if name not in running:
                start(name)

    def drive(self, kind: Kind) -> Callable[[OrderRun, Progress], Coroutine[Any, Any, None]]:
        """``drive_order`` for orders of ``kind`` on this stack."""
        return partial(drive_order, self.client, kind)

    def order_ids(self, kind: Kind, label: str, count: int) -> list[str]:
        """Fresh order ids for one batch; real ones are remembered for the final check."""
        prefix = f"{kind.name}-w{self.worker_count}-{label}"
        ids = [f"{prefix}-{index:05d}" for index in range(count)]
        if kind.real:
            self.real_ids += ids
        return ids

    async def level(self, kind: Kind, concurrency: int, orders: int) -> dict[str, Any]:
        """Run one level of one kind and return its figures."""
        ids = self.order_ids(kind, f"c{concurrency}", orders)
        calls = self.gateway.rate_limits()["admitted"]
        before = sample(self.pids())
        runs = await in_slots(ids, concurrency, self.drive(kind), self.watch())
        after = sample(self.pids())
        histories = await read_histories(self.client, kind.shape, ids)
        figures = kind_figures(kind, concurrency, runs, histories, before, after)
        if kind.real:  # the ceiling calls no gateway
            admitted = self.gateway.rate_limits()["admitted"]
            figures["gateway_calls_per_order"] = per_order(calls, admitted, orders)
        top = figures["busiest"]
        say(
            f"{kind.name:7} w={self.worker_count} c={concurrency:<4} {orders} orders  "
            f"{figures['throughput_per_s']:6.2f}/s  worker {figures['cpu_ms_per_order']['worker']} "
            f"ms, server {figures['cpu_ms_per_order']['temporal']} ms per order; busiest "
            f"{top['process']} {top['cores']} cores"
        )
        return figures

    async def warm_up(self, kind: Kind, orders: int) -> None:
        """A few orders first, not measured: imports, caches and the database warm up."""
        if orders <= 0:
            return
        ids = self.order_ids(kind, "warmup", orders)
        await in_slots(ids, min(orders, 5 * self.worker_count), self.drive(kind), self.watch())

    async def levels(
        self, counts: Sequence[int], concurrencies: Sequence[int]
    ) -> list[dict[str, Any]]:
        """For each worker count, every level: the real workflow then the ceiling, same level."""
        results = []
        for count in counts:
            await self.prepare(count)
            for concurrency in concurrencies:
                orders = self.args.orders or orders_for(concurrency, self.args.quick)
                real = await self.level(REAL_KIND, concurrency, orders)
                ceiling = await self.level(CEILING_KIND, concurrency, orders)
                results.append(level_entry(count, concurrency, real, ceiling))
        self.stop_ceiling_workers()
        return results

    async def prepare(self, count: int) -> None:
        """Scale to ``count`` workers of each kind, warm them up; the first time, measure idle."""
        self.scale_to(count)
        orders = self.args.warmup * count
        say(f"Warming up {count} worker process(es) of each kind ({orders} orders each) ...")
        await self.warm_up(REAL_KIND, orders)
        await self.warm_up(CEILING_KIND, orders)
        if self.idle_cpu_ms_per_s is None:
            await self.measure_idle(2.0 if self.args.quick else 4.0)

    async def measure_idle(self, seconds: float) -> None:
        """Each role's CPU use with no order in flight: the floor under every figure."""
        before = sample(self.pids())
        await asyncio.sleep(seconds)
        after = sample(self.pids())
        wall = after.at - before.at
        self.idle_cpu_ms_per_s = {
            role: round(cpu_s * 1000 / wall, 1)
            for role, cpu_s in by_role(cpu_seconds(before, after).items()).items()
        }

    async def overload(self, plan: Overload) -> dict[str, Any]:
        """Offer real orders open loop at ``plan.rate`` for ``plan.seconds``; figures of all.

        Each order is driven as in the levels (``drive_order``) and awaited until completed.
        """
        offsets = plan.offsets()
        ids = self.order_ids(REAL_KIND, "overload", len(offsets))
        say(
            f"Overload: {len(ids)} orders at {plan.rate:.2f}/s ({plan.factor:g} x "
            f"{plan.sustainable_per_s:.2f}/s from {plan.sustainable_from}) for "
            f"{plan.seconds:g}s, open loop ..."
        )
        before = sample(self.pids())
        runs = await on_schedule(ids, offsets, self.drive(REAL_KIND), self.watch())
        after = sample(self.pids())
        histories = await read_histories(self.client, REAL, ids)
        figures = overload_figures(plan, runs, histories, before, after)
        say(
            f"Overload: {figures['completed']} completed at {figures['completed_per_s']}/s, at "
            f"most {figures['peak_in_flight']} in flight; longest workflow task "
            f"{figures['longest_workflow_task_ms']} ms"
        )
        return {"workers": self.worker_count, **figures}

    async def rate_limited(self, factor: float) -> dict[str, Any]:
        """Offer real orders open loop at ``factor`` x what the account's limits allow.

        First ``CALIBRATION_ORDERS`` orders without limits count the gateway calls an order
        makes; then the gateway takes the account's limits (``--account-limit``) for the run,
        and has none again after it.
        """
        ids = self.order_ids(REAL_KIND, "calibrate", CALIBRATION_ORDERS)
        before = self.gateway.rate_limits()["admitted"]
        await in_slots(ids, 5, self.drive(REAL_KIND), self.watch())
        calls = per_order(before, self.gateway.rate_limits()["admitted"], len(ids))
        limit = self.args.account_limit
        search_limit = min(limit, DEFAULT_SEARCH_RATE_LIMIT_PER_S)
        self.gateway.set_faults(
            "payments", rate_limit_per_s=limit, search_rate_limit_per_s=search_limit
        )
        try:
            limits = self.gateway.rate_limits()
            plan = RateLimited(limits["limits"], calls, factor, self.args.rate_limited_seconds)
            offsets = plan.offsets()
            ids = self.order_ids(REAL_KIND, "limited", len(offsets))
            say(
                f"Rate-limited: {len(ids)} orders at {plan.rate:.2f}/s ({factor:g} x "
                f"{plan.at_limit_per_s:.2f}/s at {limit:g} reads and writes a second, "
                f"{calls} calls per order) for {plan.seconds:g}s, open loop ..."
            )
            trips = await self.breaker_trips()
            runs = await on_schedule(ids, offsets, self.drive(REAL_KIND), self.watch())
            refused = growth(limits["refused"], self.gateway.rate_limits()["refused"])
            trips = await self.breaker_trips() - trips
        finally:
            self.gateway.set_faults("payments", rate_limit_per_s=0, search_rate_limit_per_s=0)
        histories = await read_histories(self.client, REAL, ids)
        figures = rate_limited_figures(plan, runs, histories, refused, trips)
        latency = figures["latency_ms"]["start_to_awaiting_shipment"]
        say(
            f"Rate-limited: {figures['completed']} completed at {figures['completed_per_s']}/s "
            f"({figures['completed_vs_limit']} x the limit), {figures['parked']} parked, "
            f"{trips} breaker trips, 429s {refused}; start to awaiting shipment median "
            f"{latency['median']} ms, p99 {latency['p99']} ms"
        )
        return {"workers": self.worker_count, **figures}

    async def breaker_trips(self) -> int:
        """How many times the intake breaker of the orders' task queue has tripped so far."""
        handle = self.client.get_workflow_handle(breaker_id(TASK_QUEUE))
        trips = 0
        try:
            async for event in handle.fetch_history_events():
                signaled = event.workflow_execution_signaled_event_attributes
                trips += signaled.signal_name == TRIP_SIGNAL
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        return trips

    async def park(self, count: int, sustained: float | None) -> dict[str, Any]:
        """Park ``count`` orders awaiting shipment, measure, then ship them all."""
        concurrency = self.args.park_concurrency
        say(f"Parking {count} orders (started {concurrency} at a time) ...")
        ids = self.order_ids(REAL_KIND, "park", count)
        before = sample(self.pids())

        async def park_one(run: OrderRun, progress: Progress) -> None:
            run.started = time.time()
            await REAL_KIND.start(self.client, run.order_id)
            progress.moved()
            await await_ready(self.client, REAL_KIND, run, progress)

        runs = await in_slots(ids, concurrency, park_one, self.watch())
        parked = sample(self.pids())
        park_wall = max(run.ready or 0.0 for run in runs) - min(run.started for run in runs)
        sqlite = sqlite_sizes(self.stack.data_dir)
        say(
            f"Parked {count} in {park_wall:.0f}s ({count / park_wall:.2f}/s); "
            f"SQLite {sqlite['total']} MB; shipping them all ..."
        )
        signalled = time.time()

        async def ship(order_id: str) -> None:
            await self.client.get_workflow_handle(order_id).signal(SHIPPED_SIGNAL, SHIPMENT)

        shipping = asyncio.ensure_future(
            gather_limited((ship(order_id) for order_id in ids), concurrency)
        )
        await self.until_all_closed(shipping, count)
        shipped = sample(self.pids())
        finished = await self.last_close_time(set(ids))
        ship_wall = max(finished - signalled, 1e-6)
        ship_rate = count / ship_wall
        step = max(1, count // 300)
        histories = await read_histories(self.client, REAL, ids[::step])
        _, park_cpu = cpu_figures(before, parked, count, "worker")
        _, ship_cpu = cpu_figures(parked, shipped, count, "worker")
        say(f"Shipped {count} in {ship_wall:.0f}s ({ship_rate:.2f}/s)")
        return {
            "orders": count,
            "start_concurrency": concurrency,
            "workers": self.worker_count,
            "parking": {
                "wall_s": round(park_wall, 1),
                "orders_per_s": round(count / park_wall, 2),
                "cpu_ms_per_order": park_cpu,
                "load": load_figures(before, parked),
            },
            "while_parked": {
                "memory_mb": memory_figures(parked),
                "sqlite_mb": sqlite,
            },
            "shipping": {
                "wall_s": round(ship_wall, 1),
                "orders_per_s": round(ship_rate, 2),
                "sustained_reference_per_s": sustained,
                "ratio_to_sustained": round(ship_rate / sustained, 3) if sustained else None,
                "cpu_ms_per_order": ship_cpu,
                "latency_ms_sample": {
                    stage: figures
                    for stage, figures in latency_figures(histories).items()
                    if stage != "awaiting_shipment_to_shipped_signal"  # parked on purpose
                },
                "history_sample": history_figures(histories),
                "load": load_figures(parked, shipped),
            },
            "memory_mb_after": memory_figures(shipped),
        }

    async def until_all_closed(self, shipping: "asyncio.Future[Any]", count: int) -> None:
        """Wait until no real order is running (the signals going out meanwhile)."""
        query = f"WorkflowType = '{REAL.workflow_type}' AND ExecutionStatus = 'Running'"
        progress = Progress()
        remaining = count

        async def closed() -> None:
            nonlocal remaining
            while True:
                running = (await self.client.count_workflows(query)).count
                if running < remaining:
                    remaining = running
                    progress.moved()
                if shipping.done():
                    shipping.result()  # raises if a signal could not be sent
                    if running == 0:
                        return
                await asyncio.sleep(0.5)

        await self.watch().until_done(
            closed(), progress, lambda: f"{remaining} parked orders still running"
        )

    async def last_close_time(self, order_ids: set[str]) -> float:
        """When the last of these orders closed, from the visibility store."""
        latest = 0.0
        query = f"WorkflowType = '{REAL.workflow_type}'"
        async for execution in self.client.list_workflows(query):
            if execution.id in order_ids and execution.close_time is not None:
                latest = max(latest, execution.close_time.timestamp())
        return latest

    def peak_memory_mb(self) -> dict[str, float]:
        """Each role's peak memory over the run: of its largest process (stopped ones too)."""
        running = [(name, usage.peak_rss_mb) for name, usage in sample(self.pids()).usage.items()]
        peaks = by_role([*running, *self.stopped_peaks_mb], max)
        return {role: round(mb, 1) for role, mb in peaks.items()}

    async def exactly_once(self) -> dict[str, Any]:
        """The checker over every real order of the run, against the providers' ledger."""
        say(f"Checking exactly-once over {len(self.real_ids)} orders ...")
        admin = self.stack.admin()
        try:
            # Every real order is the sample order, meant to complete.
            placed = (Placed.sample(order_id) for order_id in self.real_ids)
            evidence = await gather_evidence(self.client, admin, placed)
        finally:
            admin.close()
        return judge(evidence)


def best_rate(levels: Sequence[Mapping[str, Any]], workers: int) -> float | None:
    """The best sustained real rate with ``workers`` worker processes (the park's reference)."""
    rates = [level["real"]["throughput_per_s"] for level in levels if level["workers"] == workers]
    return max(rates, default=None)


def orders_for(concurrency: int, quick: bool) -> int:
    """Orders per level by default: 3 x the concurrency, at least 150 (40 one at a time).

    That leaves ``concurrency`` completions in the steady window (``figures.throughput``), and
    makes each level last 10 s or more: at 40 orders, 10 in flight took 4 s and its CPU per order
    read up to a fifth higher than in a longer run. Quick: twice the concurrency plus 10 (at
    least 12), the least with a steady window.
    """
    if quick:
        return max(12, 2 * concurrency + 10)
    return max(40 if concurrency == 1 else 150, 3 * concurrency)


def _git() -> dict[str, object]:
    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "commit": run("git", "rev-parse", "HEAD") or None,
        "uncommitted_changes": bool(run("git", "status", "--porcelain")),
    }


def _versions() -> dict[str, str]:
    done = subprocess.run(
        [find_binary("temporal"), "--version"], capture_output=True, text=True, check=False
    )
    return {"temporalio": temporalio.__version__, "temporal_cli": done.stdout.strip()}


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Bring up the stack, run the levels, the overload and/or the parking, check, report."""
    report: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "tools.bench.throughput", *sys.argv[1:]]),
        "started_at": _now(),
        "machine": machine(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "git": _git(),
        "versions": _versions(),
        "settings": {
            "concurrency": args.levels,
            "orders_per_level": {
                str(c): args.orders or orders_for(c, args.quick) for c in args.levels
            },
            "warmup_orders": args.warmup,
            "quick": args.quick,
            "park": args.park,
            "park_concurrency": args.park_concurrency,
            "worker_processes": args.workers,
            "overload": args.overload,
            "overload_seconds": args.overload_seconds if args.overload else None,
            "rate": args.rate,
            "rate_limited": args.rate_limited,
            "account_limit_per_s": args.account_limit if args.rate_limited else None,
            "gateway_limits": "none, except in the rate-limited run",
            "temporal": "dev server on SQLite, journal_mode=wal, synchronous=normal",
        },
    }
    began = time.monotonic()
    # The gateway process starts without limits: the levels measure this system, not the
    # account's; the rate-limited run sets them at run time.
    os.environ[RATE_LIMIT_ENV] = os.environ[SEARCH_RATE_LIMIT_ENV] = "0"
    with LocalStack(data_dir, announce=say) as stack:
        stack.start(workers=args.workers[0])
        bench = Bench(stack, await stack.connect(), args, stack.admin())
        try:
            levels = await bench.levels(args.workers, args.levels) if args.levels else []
        finally:
            bench.stop_ceiling_workers()
        sustained = best_rate(levels, bench.worker_count)
        plan = overload_plan(args, sustained) if args.overload else None
        overload = await bench.overload(plan) if plan else None
        limited = await bench.rate_limited(args.rate_limited) if args.rate_limited else None
        park = await bench.park(args.park, sustained) if args.park else None
        peaks = bench.peak_memory_mb()
        report["exactly_once"] = await bench.exactly_once()
        bench.gateway.close()
    report.update(
        {
            "finished_at": _now(),
            "duration_s": round(time.monotonic() - began, 1),
            "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
            "load": overall_load(levels, park, overload),
            "idle_cpu_ms_per_s": bench.idle_cpu_ms_per_s,
            "levels": levels,
            "overload": overload,
            "rate_limited": limited,
            "park": park,
            "peak_memory_mb": peaks,
            "exactly_once": report.pop("exactly_once"),
        }
    )
    return report


# --- the command line --------------------------------------------------------------------------


def number_list(what: str) -> Callable[[str], list[int]]:
    """An argparse type: a comma-separated list of different numbers of at least 1.

    ``what`` names them in the error (``concurrency levels``, ``worker counts``).
    """

    def parse(text: str) -> list[int]:
        try:
            numbers = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
        if not numbers or min(numbers) < 1:
            raise argparse.ArgumentTypeError(f"{what} are numbers of at least 1")
        if len(set(numbers)) < len(numbers):
            raise argparse.ArgumentTypeError(f"{what} must each be given once: {text!r}")
        return numbers

    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0: {text!r}")
    return value


def default_levels(
    quick: bool, park: int, worker_counts: Sequence[int], rate_limited: bool = False
) -> list[int]:
    """The levels when ``--concurrency`` is not given.

    Several worker counts: 10, 50, 200 (quick: 10, 50), so that 1, 2 and 4 stay within about
    15 minutes.
    One: 1, 10, 50, 100, 200 (quick: 1, 10, 50), none with ``--park`` or ``--rate-limited``.
    """
    if len(worker_counts) > 1:
        return list(QUICK_SCALE_LEVELS if quick else SCALE_LEVELS)
    if quick:
        return list(QUICK_LEVELS)
    return [] if park or rate_limited else list(DEFAULT_LEVELS)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--park`` alone measures only the parking (``--overload``: ``--rate``)."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.throughput",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--concurrency",
        type=number_list("concurrency levels"),
        help="orders in flight per level, e.g. 1,10,50 (default 1,10,50,100,200; "
        "with --quick 1,10,50; with --park alone, none; with several --workers 10,50,200, "
        "quick 10,50)",
    )
    parser.add_argument(
        "--workers",
        type=number_list("worker counts"),
        default=[1],
        help="worker processes of each kind, one count after the other, e.g. 1,2,4 (default 1)",
    )
    parser.add_argument(
        "--orders",
        type=int,
        help="orders per level (default: 3 x concurrency, at least 150, 40 at 1; quick: 2 x + 10)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument(
        "--park",
        type=int,
        nargs="?",
        const=10000,
        default=0,
        metavar="N",
        help="park N orders awaiting shipment (10000 if no N), measure, then ship them all",
    )
    parser.add_argument(
        "--park-concurrency",
        type=int,
        default=50,
        help="orders started at a time when parking (default 50)",
    )
    parser.add_argument(
        "--overload",
        type=positive_number,
        nargs="?",
        const=2.0,
        metavar="FACTOR",
        help="after the levels, offer orders open loop at FACTOR x the best sustained rate "
        "(2 if no FACTOR) for --overload-seconds, with the last worker count",
    )
    parser.add_argument(
        "--overload-seconds",
        type=positive_number,
        default=30.0,
        metavar="S",
        help="how long the overload run starts orders (default 30)",
    )
    parser.add_argument(
        "--rate",
        type=positive_number,
        metavar="R",
        help="the sustainable rate (orders/s) --overload multiplies: needed when no levels run; "
        "with levels, used instead of their best",
    )
    parser.add_argument(
        "--rate-limited",
        type=positive_number,
        nargs="?",
        const=2.0,
        metavar="FACTOR",
        help="then offer orders open loop at FACTOR x what the gateway account's rate limits "
        "allow (2 if no FACTOR) for --rate-limited-seconds",
    )
    parser.add_argument(
        "--account-limit",
        type=positive_number,
        default=DEFAULT_RATE_LIMIT_PER_S,
        metavar="R",
        help="the account's reads, and writes, a second in the rate-limited run (default "
        f"{DEFAULT_RATE_LIMIT_PER_S:g}, Stripe's test mode; searches: "
        f"{DEFAULT_SEARCH_RATE_LIMIT_PER_S:g}, or R if lower)",
    )
    parser.add_argument(
        "--rate-limited-seconds",
        type=positive_number,
        default=60.0,
        metavar="S",
        help="how long the rate-limited run starts orders (default 60)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help="unmeasured orders of each kind per worker process, whenever the workers "
        "change (5; 3 quick)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the JSON report (default tools/bench/results/throughput-<date>.json)",
    )
    parser.add_argument("--chart", type=Path, help="the PNG chart (default: --out with .png)")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        help="fail when no order moved for this many seconds (default 120)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder and logs")
    args = parser.parse_args(argv)
    args.levels = args.concurrency or default_levels(
        args.quick, args.park, args.workers, args.rate_limited is not None
    )
    if args.warmup is None:
        args.warmup = 3 if args.quick else 5
    if args.orders is not None and args.orders < 1:
        parser.error("--orders must be at least 1")
    if args.park < 0 or args.park_concurrency < 1:
        parser.error("--park and --park-concurrency must be positive")
    if args.rate is not None and args.overload is None:
        parser.error("--rate is the sustainable rate of --overload: give --overload too")
    if args.overload is not None and not args.levels and args.rate is None:
        parser.error(
            "--overload needs levels (--concurrency) to measure the sustainable rate, "
            "or --rate R (orders/s)"
        )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out = args.out or ROOT / "tools" / "bench" / "results" / f"throughput-{stamp}.json"
    args.chart = args.chart or args.out.with_suffix(".png")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m tools.bench.throughput [--quick] [--concurrency 1,10]``."""
    args = parse_args(argv)
    status = 0
    try:
        chart.ensure_matplotlib()
        folder = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
        try:
            report = asyncio.run(run(args, folder))
        finally:
            if args.keep:
                print(f"The stack's folder (logs, SQLite files) is kept: {folder}", flush=True)
            else:
                shutil.rmtree(folder, ignore_errors=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        charts = chart.draw_all(report, args.chart) if report["levels"] else {}
        report.update(charts)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(printout(report))
        print(f"\nWrote {args.out}" + "".join(f" and {path}" for path in charts.values()))
        status = exit_status(report)
        if status:
            print("FAILED: the exactly-once check found broken promises (above).", file=sys.stderr)
    except KeyboardInterrupt:
        status = 130
    except (BenchError, StackError, chart.ChartError) as err:
        print(f"FAILED: {err}", file=sys.stderr)
        status = 2
    except Exception as err:  # anything else that stopped the run: say what, leave non-zero
        print(f"FAILED: {err!r}", file=sys.stderr)
        status = 2
    exit_now(status)  # PITFALLS 2: leave without the SDK's runtime shutting down


if __name__ == "__main__":
    main()
