"""The benchmark's figures: CPU and memory between two samples, latency distributions, ratios.

Pure functions over what the benchmark collected (process samples, order histories, completion
times), so each figure has one definition, shared by the levels and the parking.
"""

import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orders.domain.status import OrderStatus
from tools.bench.procstat import ProcessUsage, machine_cpu, process_usage
from tools.bench.stages import OrderHistory
from tools.harness.checker import Evidence, check, tally

ROLES = ("worker", "ceiling_worker", "temporal", "providers", "driver")
"""The roles accounted for: the real and the ceiling workers, Temporal, the providers, and the
benchmark itself (``driver``: starting, following, signalling and awaiting orders)."""

WORKER_ROLES = {"worker": "worker-", "ceiling_worker": "ceiling-worker-"}
"""The worker roles and how their processes are named: ``worker-1``, ``ceiling-worker-2``, ..."""

STAGES = {
    "start_to_charged": ("started", "charged"),
    "start_to_confirmation_email": ("started", "confirmation_email"),
    "start_to_awaiting_shipment": ("started", "awaiting_shipment"),
    "shipped_signal_to_completed": ("shipped_signal", "completed"),
    # Not the system's: how long the benchmark took to notice and send the signal.
    "awaiting_shipment_to_shipped_signal": ("awaiting_shipment", "shipped_signal"),
}


@dataclass(frozen=True)
class Sample:
    """Every process's accounting and the machine's CPU at one moment."""

    at: float
    usage: Mapping[str, ProcessUsage]
    machine_busy_s: float


def sample(pids: Mapping[str, int]) -> Sample:
    """Read every process's CPU time and memory now."""
    usage: dict[str, ProcessUsage] = {}
    for name, pid in pids.items():
        try:
            # The driver started the stack's processes: count it alone, not its children.
            usage[name] = process_usage(pid, children=name != "driver")
        except OSError:
            continue
    return Sample(time.time(), usage, machine_cpu().busy_s)


def role_of(process: str) -> str:
    """The role a process plays: ``worker-2`` is a ``worker``; ``temporal`` is ``temporal``."""
    for role, prefix in WORKER_ROLES.items():
        if process.startswith(prefix):
            return role
    return process


def by_role(
    values: Iterable[tuple[str, float]], combine: Callable[[Iterable[float]], float] = sum
) -> dict[str, float]:
    """Per-process values (name, value) combined per role: summed, or e.g. their ``max``."""
    groups: dict[str, list[float]] = {}
    for name, value in values:
        groups.setdefault(role_of(name), []).append(value)
    return {role: combine(group) for role, group in groups.items()}


def cpu_seconds(before: Sample, after: Sample) -> dict[str, float]:
    """The CPU seconds each process used between two samples (those read in both)."""
    return {
        name: after.usage[name].cpu_s - before.usage[name].cpu_s
        for name in after.usage
        if name in before.usage
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile, interpolated between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rounds_summary(figures: Sequence[float], unit: str = "ms") -> str:
    """Rounds of one measurement as a line: their median, then each round's figure."""
    shown = ", ".join(f"{figure:.1f}" for figure in figures)
    return f"median {statistics.median(figures):.2f} {unit} ({shown})"


def distribution(seconds: Iterable[float | None]) -> dict[str, float | int | None]:
    """Median, p95, p99 and max in milliseconds, and how many values there were."""
    values = [value * 1000 for value in seconds if value is not None]
    if not values:
        return {"median": None, "p95": None, "p99": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), 1),
        "p95": round(percentile(values, 0.95), 1),
        "p99": round(percentile(values, 0.99), 1),
        "max": round(max(values), 1),
        "n": len(values),
    }


def throughput(
    starts: Sequence[float], dones: Sequence[float], concurrency: int
) -> tuple[float, str]:
    """Orders per second while ``concurrency`` orders were in flight, and how it was measured.

    Each completion starts the next order, so until the completion that started the last
    order, ``concurrency`` orders were always in flight. The first ``concurrency`` completions
    are mostly the orders started together at the beginning (they finish in a burst), so the
    sustained rate is that of the completions from the ``concurrency``-th to the one that
    started the last order: free of the fill at the start and of the drain at the end. A level
    with too few orders for 10 completions in that window is measured over its whole length.
    """
    done = sorted(dones)
    first, last = concurrency - 1, len(done) - concurrency - 1
    if last - first >= 10 and done[last] > done[first]:
        return (last - first) / (done[last] - done[first]), "steady window"
    return len(done) / (done[-1] - min(starts)), "whole level (too few orders for a steady window)"


def cpu_figures(
    before: Sample, after: Sample, orders: int, worker: str
) -> tuple[dict[str, float], dict[str, float | None]]:
    """CPU seconds per role between two samples, and milliseconds per order.

    A role's processes are summed (every ``worker-N`` is ``worker``); the per-order ``worker``
    is the role ``worker`` names: the workers that ran the batch.
    """
    roles = by_role(cpu_seconds(before, after).items())
    cpu_s = {role: round(roles[role], 3) for role in ROLES if role in roles}
    per_order: dict[str, float | None] = {
        key: round(cpu_s[name] * 1000 / orders, 1) if name in cpu_s else None
        for key, name in (
            ("worker", worker),
            ("temporal", "temporal"),
            ("providers", "providers"),
            ("driver", "driver"),
        )
    }
    parts = [per_order[key] for key in ("worker", "temporal", "providers")]
    per_order["total"] = round(sum(part or 0.0 for part in parts), 1)
    return cpu_s, per_order


def process_figures(before: Sample, after: Sample, orders: int) -> dict[str, dict[str, float]]:
    """Each process's CPU seconds, CPU ms per order, cores used and memory, between two samples.

    Cores used: its CPU seconds over the wall seconds between the samples (1.0: one core busy
    all along, which is all one Python process can use).
    """
    wall = max(after.at - before.at, 1e-6)
    return {
        name: {
            "cpu_s": round(cpu_s, 3),
            "cpu_ms_per_order": round(cpu_s * 1000 / orders, 1),
            "cores": round(cpu_s / wall, 2),
            "rss_mb": round(after.usage[name].rss_mb, 1),
            "peak_mb": round(after.usage[name].peak_rss_mb, 1),
        }
        for name, cpu_s in cpu_seconds(before, after).items()
    }


def busiest(
    processes: Mapping[str, Mapping[str, float]],
    load: Mapping[str, float],
    cpu_count: int | None = None,
) -> dict[str, Any]:
    """The process that used the most cores, and the machine's busy cores of all it has.

    A Python process (a worker, the providers, the driver) saturates at 1.0 core; the Temporal
    server, in Go, can use every core, so it saturates when the machine does. ``processes`` as
    from ``process_figures``, ``load`` from ``load_figures``; ``cpu_count`` is
    ``os.cpu_count()`` unless given.
    """
    name = max(processes, key=lambda process: processes[process]["cores"])
    return {
        "process": name,
        "cores": processes[name]["cores"],
        "machine_cores_used": load["machine_busy_cores"],
        "machine_cores": cpu_count or os.cpu_count(),
    }


def usage_figures(before: Sample, after: Sample, orders: int, worker: str) -> dict[str, Any]:
    """A batch's CPU, processes, busiest process, memory and machine load between two samples.

    CPU per role and per order (``worker``: the role of the workers that ran the batch, as in
    ``cpu_figures``), each process's figures and the busiest of them, the memory of the workers,
    the server and the providers, and the machine's load.
    """
    cpu_s, per_order = cpu_figures(before, after, orders, worker)
    processes = process_figures(before, after, orders)
    load = load_figures(before, after)
    return {
        "cpu_ms_per_order": per_order,
        "cpu_s": cpu_s,
        "processes": processes,
        "busiest": busiest(processes, load),
        "memory_mb": {
            role: figures
            for role, figures in memory_figures(after, worker=worker).items()
            if role in ("worker", "temporal", "providers")
        },
        "load": load,
    }


def memory_figures(at: Sample, worker: str | None = None) -> dict[str, dict[str, float]]:
    """Each role's resident memory now and its peak so far, in MB.

    Of a role with several processes, the largest one's (memory per worker process, not the
    sum). With ``worker``, that role is named ``worker`` (the workers that ran the batch) and the
    other worker role is left out.
    """
    rss = by_role(((name, usage.rss_mb) for name, usage in at.usage.items()), max)
    peak = by_role(((name, usage.peak_rss_mb) for name, usage in at.usage.items()), max)
    return {
        "worker" if role == worker else role: {
            "rss": round(rss[role], 1),
            "peak": round(peak[role], 1),
        }
        for role in rss
        if worker is None or role == worker or role not in WORKER_ROLES
    }


def load_figures(before: Sample, after: Sample) -> dict[str, float]:
    """How busy the machine was, and how much of that was other people's processes."""
    wall = max(after.at - before.at, 1e-6)
    busy = (after.machine_busy_s - before.machine_busy_s) / wall
    ours = sum(cpu_seconds(before, after).values())
    return {
        "machine_busy_cores": round(busy, 2),
        "benchmark_cores": round(ours / wall, 2),
        "other_busy_cores": round(max(busy - ours / wall, 0.0), 2),
    }


def history_figures(histories: Sequence[OrderHistory]) -> dict[str, Any]:
    """Events and workflow tasks per order, how long tasks queued and ran, timeouts, retries."""
    count = max(len(histories), 1)
    return {
        "events_per_order": round(sum(h.events for h in histories) / count, 1),
        "workflow_tasks_per_order": round(
            sum(len(h.workflow_task_run_s) for h in histories) / count, 2
        ),
        "workflow_task_run_ms": distribution(s for h in histories for s in h.workflow_task_run_s),
        "workflow_task_queue_ms": distribution(
            s for h in histories for s in h.workflow_task_queue_s
        ),
        "workflow_task_timeouts": sum(h.workflow_task_timeouts for h in histories),
        "sticky_task_timeouts": sum(h.sticky_task_timeouts for h in histories),
        "workflow_task_failures": sum(h.workflow_task_failures for h in histories),
        "activity_retries": sum(h.activity_retries for h in histories),
    }


def latency_figures(histories: Sequence[OrderHistory]) -> dict[str, Any]:
    """Each stage's distribution over the orders, in milliseconds."""
    return {
        name: distribution(history.stage(since, until) for history in histories)
        for name, (since, until) in STAGES.items()
    }


_NO_RATIO = frozenset(
    {"n", "orders", "concurrency", "completed", "cpu_s", "load", "providers"}
    | {"processes", "busiest"}
)


def ratio(real: Any, ceiling: Any) -> Any:
    """Every number of ``real`` divided by the same number of ``ceiling`` (where it is not 0)."""
    if isinstance(real, Mapping) and isinstance(ceiling, Mapping):
        ratios = {
            key: ratio(real[key], ceiling[key])
            for key in real
            # Not ratios: the sizes of the batches; the raw CPU seconds, the machine's load and
            # the per-process figures (not per role); the providers (the ceiling calls none).
            if key in ceiling and key not in _NO_RATIO
        }
        return {key: value for key, value in ratios.items() if value is not None}
    numbers = (int, float)
    if (
        isinstance(real, numbers)
        and isinstance(ceiling, numbers)
        and not isinstance(real, bool)
        and ceiling
    ):
        return round(real / ceiling, 3)
    return None


def sqlite_sizes(data_dir: Path) -> dict[str, float]:
    """Temporal's SQLite file, its write-ahead log and shared memory file, in MB."""
    sizes = {}
    for key, suffix in (("db", ""), ("wal", "-wal"), ("shm", "-shm")):
        path = data_dir / f"temporal.sqlite3{suffix}"
        sizes[key] = round(path.stat().st_size / 1e6, 1) if path.exists() else 0.0
    sizes["total"] = round(sum(sizes.values()), 1)
    return sizes


def overall_load(
    levels: Sequence[Mapping[str, Any]],
    park: Mapping[str, Any] | None,
    overload: Mapping[str, Any] | None = None,
) -> Any:
    """Other processes' CPU use averaged over the measured batches (the noise in the figures)."""
    loads = [level[kind]["load"] for level in levels for kind in ("real", "ceiling")]
    if park:
        loads += [park["parking"]["load"], park["shipping"]["load"]]
    if overload:
        loads.append(overload["load"])
    if not loads:
        return {}
    return {
        key: round(statistics.mean(load[key] for load in loads), 2)
        for key in ("machine_busy_cores", "benchmark_cores", "other_busy_cores")
    }


def judge(evidence: Evidence) -> dict[str, Any]:
    """The exactly-once checker's verdict over the run's real orders, as the report's field.

    Every promise of ``tools.harness.checker`` (one charge, one email of each kind, one picklist, no
    order lost, every order finished), and one more of the benchmark's: every order completed.
    """
    violations = [str(violation) for violation in check(evidence)]
    violations += [
        f"{order_id}: ended {view.status.value}, not completed"
        for order_id, view in evidence.outcomes.items()
        if view is not None and view.status.is_final and view.status != OrderStatus.COMPLETED
    ]
    counted = tally(evidence)
    return {
        "passed": not violations,
        "orders_checked": counted.orders,
        "violations": sorted(violations),
        "tally": {
            "statuses": dict(counted.statuses),
            "charges": counted.charges,
            "refunds": counted.refunds,
            "confirmation_emails": counted.confirmation_emails,
            "picklists": counted.picklists,
            "shipped_emails": counted.shipped_emails,
            "lost": counted.lost,
        },
    }


def exit_status(report: Mapping[str, Any]) -> int:
    """1 if the run broke an exactly-once promise, else 0."""
    return 0 if report["exactly_once"]["passed"] else 1
