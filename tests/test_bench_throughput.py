"""The throughput benchmark command, run for real with tiny numbers: every field, a passed check.

The run never asserts a time or a rate: only that each figure is there and was measured. The
figures, the scale-out aggregation and the tables are checked exactly on made-up samples.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from orders.client.temporal import DATA_CONVERTER
from orders.domain.models import OrderView
from orders.domain.status import EmailTemplate, OrderStatus
from sandbox.admin_client import Effects
from tools.bench.ceiling import CeilingOrderWorkflow
from tools.bench.ceiling_worker import READY_LINE, ceiling_runner
from tools.bench.chart import draw_all, worker_counts
from tools.bench.figures import (
    STAGES,
    Sample,
    busiest,
    by_role,
    cpu_figures,
    exit_status,
    judge,
    load_figures,
    memory_figures,
    process_figures,
    throughput,
)
from tools.bench.procstat import ProcessUsage
from tools.bench.report import printout
from tools.bench.stages import OrderHistory
from tools.bench.throughput import (
    CALIBRATION_ORDERS,
    CEILING_KIND,
    DEFAULT_LEVELS,
    QUICK_SCALE_LEVELS,
    REAL_KIND,
    SCALE_LEVELS,
    BenchError,
    OrderRun,
    Overload,
    Progress,
    RateLimited,
    Watch,
    ceiling_worker_command,
    kind_figures,
    level_entry,
    on_schedule,
    orders_per_s_at_limit,
    overload_figures,
    parse_args,
    peak_in_flight,
    rate_limited_figures,
    start_offsets,
)
from tools.harness.checker import Evidence
from tools.stack.processes import ROOT, free_port, spawn, wait_for_log
from worker import sandboxed_runner

WARMUP, ORDERS, PARK = 1, 5, 5
LEVELS = (1, 5)
WORKERS = (1, 2)
OVERLOAD_S = 3
LIMITED_S = 3

KIND_FIELDS = {
    "workflow",
    "concurrency",
    "orders",
    "completed",
    "wall_s",
    "throughput_per_s",
    "throughput_method",
    "overall_throughput_per_s",
    "latency_ms",
    "cpu_ms_per_order",
    "cpu_s",
    "processes",
    "busiest",
    "memory_mb",
    "history",
    "load",
}
HISTORY_FIELDS = {
    "events_per_order",
    "workflow_tasks_per_order",
    "workflow_task_run_ms",
    "workflow_task_queue_ms",
    "workflow_task_timeouts",
    "workflow_task_failures",
    "activity_retries",
}
DISTRIBUTION = {"median", "p95", "p99", "max", "n"}
CPU = {"worker", "temporal", "providers", "driver", "total"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "throughput.json"
    command = [
        sys.executable, "-m", "tools.bench.throughput",
        "--concurrency", ",".join(map(str, LEVELS)), "--orders", str(ORDERS),
        "--workers", ",".join(map(str, WORKERS)),
        "--warmup", str(WARMUP), "--park", str(PARK), "--park-concurrency", "5",
        "--overload", "--overload-seconds", str(OVERLOAD_S),
        "--rate-limited", "--account-limit", "3", "--rate-limited-seconds", str(LIMITED_S),
        "--stall-timeout", "60", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=360)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Exactly-once: OK" in done.stdout
    assert "Scale-out, real / ceiling" in done.stdout
    assert "Overload, open loop (2 worker processes)" in done.stdout
    assert "workflow task ran over 1 s" in done.stdout.lower()
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def test_every_level_has_every_figure_for_both_workflows(report: dict[str, Any]) -> None:
    assert [(level["workers"], level["concurrency"]) for level in report["levels"]] == [
        (workers, concurrency) for workers in WORKERS for concurrency in LEVELS
    ]
    for level in report["levels"]:
        assert level["orders"] == ORDERS
        for kind in ("real", "ceiling"):
            figures = level[kind]
            assert set(figures) >= KIND_FIELDS, kind
            assert figures["completed"] == ORDERS
            assert _is_number(figures["throughput_per_s"]) and figures["throughput_per_s"] > 0
            for stage in STAGES:
                latency = figures["latency_ms"][stage]
                assert set(latency) == DISTRIBUTION
                assert latency["n"] == ORDERS, (kind, stage)
                assert all(_is_number(latency[key]) for key in DISTRIBUTION - {"n"})
            assert set(figures["cpu_ms_per_order"]) == CPU
            assert all(_is_number(value) for value in figures["cpu_ms_per_order"].values())
            for process in ("worker", "temporal", "providers"):
                assert figures["memory_mb"][process]["peak"] > 0
            assert set(figures["history"]) >= HISTORY_FIELDS
            assert figures["history"]["workflow_tasks_per_order"] > 0
            assert set(figures["load"]) == {
                "machine_busy_cores",
                "benchmark_cores",
                "other_busy_cores",
            }
        # The real worker's CPU is read from the real worker, the ceiling's from its own.
        assert level["real"]["cpu_s"]["worker"] > 0
        assert level["ceiling"]["cpu_s"]["ceiling_worker"] > 0
        ratio = level["ratio"]
        assert _is_number(ratio["throughput_per_s"])
        assert _is_number(ratio["latency_ms"]["start_to_awaiting_shipment"]["median"])
        assert _is_number(ratio["cpu_ms_per_order"]["worker"])
        assert _is_number(ratio["cpu_ms_per_order"]["temporal"])


def test_each_count_ran_its_own_worker_processes_and_sums_them(report: dict[str, Any]) -> None:
    for level in report["levels"]:
        count = level["workers"]
        for kind, role, prefix in (
            ("real", "worker", "worker-"),
            ("ceiling", "ceiling_worker", "ceiling-worker-"),
        ):
            figures = level[kind]
            processes = figures["processes"]
            workers = sorted(name for name in processes if name.startswith(prefix))
            assert workers == [f"{prefix}{index}" for index in range(1, count + 1)], kind
            assert {"temporal", "providers", "driver"} <= set(processes)
            # The role's CPU is the sum over its processes (each rounded to the millisecond).
            summed = sum(processes[name]["cpu_s"] for name in workers)
            assert figures["cpu_s"][role] == pytest.approx(summed, abs=0.001 * count)
            top = figures["busiest"]
            assert top["cores"] == max(process["cores"] for process in processes.values())
            assert processes[top["process"]]["cores"] == top["cores"]
            assert top["machine_cores"] == os.cpu_count()


def test_machine_memory_chart_and_parking_are_reported(report: dict[str, Any]) -> None:
    machine = report["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1
    processes = {"worker", "ceiling_worker", "temporal", "providers"}
    assert processes <= set(report["peak_memory_mb"])
    assert processes <= set(report["idle_cpu_ms_per_s"])
    assert set(report["load"]) == {"machine_busy_cores", "benchmark_cores", "other_busy_cores"}
    assert Path(report["chart"]).read_bytes().startswith(b"\x89PNG")
    park = report["park"]
    assert park["orders"] == PARK
    assert park["workers"] == WORKERS[-1]
    assert report["settings"]["worker_processes"] == list(WORKERS)
    assert Path(report["scale_out_chart"]).read_bytes().startswith(b"\x89PNG")
    assert park["parking"]["orders_per_s"] > 0
    assert park["while_parked"]["memory_mb"]["worker"]["peak"] > 0
    assert park["while_parked"]["memory_mb"]["temporal"]["peak"] > 0
    assert park["while_parked"]["sqlite_mb"]["total"] > 0
    assert park["shipping"]["orders_per_s"] > 0
    assert _is_number(park["shipping"]["ratio_to_sustained"])


def test_the_overload_ran_open_loop_at_twice_the_best_rate(report: dict[str, Any]) -> None:
    overload = report["overload"]
    best = max(level["real"]["throughput_per_s"] for level in report["levels"][len(LEVELS) :])
    assert overload["workers"] == WORKERS[-1]
    assert (overload["factor"], overload["seconds"]) == (2.0, OVERLOAD_S)
    assert (overload["sustainable_per_s"], overload["sustainable_from"]) == (best, "levels")
    assert overload["orders"] == len(list(start_offsets(2 * best, OVERLOAD_S))) > 0
    assert overload["completed"] == overload["orders"]
    assert 1 <= overload["peak_in_flight"] <= overload["orders"]
    assert _is_number(overload["completed_per_s"]) and overload["completed_per_s"] > 0
    history = overload["history"]
    assert set(history) >= HISTORY_FIELDS
    for figures in ("workflow_task_run_ms", "workflow_task_queue_ms"):
        assert history[figures]["n"] >= overload["orders"]
        assert _is_number(history[figures]["max"])
    assert overload["longest_workflow_task_ms"] == history["workflow_task_run_ms"]["max"]
    assert isinstance(overload["within_1s"], bool)
    assert {f"worker-{index}" for index in (1, 2)} <= set(overload["processes"])
    assert overload["busiest"]["process"] in overload["processes"]
    assert report["settings"]["overload"] == 2.0


def test_the_rate_limited_run_offered_twice_the_limit_and_kept_every_promise(
    report: dict[str, Any],
) -> None:
    limited = report["rate_limited"]
    assert limited["account_limits_per_s"] == {"read": 3, "write": 3, "search": 3}
    calls = limited["gateway_calls_per_order"]
    assert calls["search"] == 0 and calls["write"] >= 3  # create, authorize, capture
    assert limited["orders_per_s_at_limit"] == round(3 / calls["write"], 2)
    assert limited["offered_per_s"] == round(2 * 3 / calls["write"], 2)
    assert limited["completed"] == limited["orders"] > 0
    assert (limited["parked"], limited["breaker_trips"]) == (0, 0)
    assert set(limited["refused_429"]) == {"read", "write", "search"}
    awaiting = limited["latency_ms"]["start_to_awaiting_shipment"]
    assert awaiting["n"] == limited["orders"] and _is_number(awaiting["p99"])
    assert _is_number(limited["completed_vs_limit"])
    for level in report["levels"]:  # no search on a new order's path
        assert level["real"]["gateway_calls_per_order"]["search"] == 0


def test_the_exactly_once_check_passed_over_every_real_order(report: dict[str, Any]) -> None:
    once = report["exactly_once"]
    orders = WARMUP * sum(WORKERS) + ORDERS * len(LEVELS) * len(WORKERS) + PARK
    orders += report["overload"]["orders"]
    orders += CALIBRATION_ORDERS + report["rate_limited"]["orders"]
    assert once["passed"] and once["violations"] == []
    assert once["orders_checked"] == orders
    assert once["tally"]["statuses"] == {"completed": orders}
    assert once["tally"]["charges"] == once["tally"]["shipped_emails"] == orders
    assert exit_status(report) == 0


def test_a_double_charge_fails_the_run_loudly(report: dict[str, Any]) -> None:
    view = OrderView(
        order_id="real-c1-00000",
        customer_id="c-1",
        status=OrderStatus.COMPLETED,
        total=4500,
        currency="USD",
        payment_intent_id="pi_1",
        transaction_id="ch_1",
        picklist_id="pl_1",
    )
    charged_twice = Effects(
        payment_intents=1,
        charges=2,
        charged_amount=9000,
        picklists=1,
        emails={EmailTemplate.ORDER_CONFIRMATION: 1, EmailTemplate.ORDER_SHIPPED: 1},
        ids={"payment_intent": ["pi_1"], "charge": ["ch_1"], "picklist": ["pl_1"]},
    )
    verdict = judge(Evidence({view.order_id: view}, {view.order_id: charged_twice}, {}))
    assert not verdict["passed"]
    assert verdict["violations"] == ["real-c1-00000: 2 charges, expected 1 for a completed order"]
    broken = {**report, "exactly_once": verdict}
    assert exit_status(broken) == 1
    assert "EXACTLY-ONCE VIOLATED: 1 broken promises" in printout(broken)


def test_sustained_throughput_leaves_out_the_fill_and_the_drain() -> None:
    # 2 in flight; the first two finish together at 1.0, then one every 0.5 s.
    dones = [1.0, 1.0, *(1.0 + 0.5 * index for index in range(1, 20))]
    rate, method = throughput([0.0] * len(dones), dones, concurrency=2)
    assert method == "steady window"
    assert rate == pytest.approx(2.0)
    rate, method = throughput([0.0] * 4, [1.0, 1.0, 2.0, 2.0], concurrency=2)
    assert method.startswith("whole level")
    assert rate == pytest.approx(2.0)


# --- the command line ----------------------------------------------------------------------------


def test_workers_are_a_list_of_counts_and_several_change_the_default_levels() -> None:
    assert parse_args([]).workers == [1]
    assert parse_args([]).levels == list(DEFAULT_LEVELS)
    assert parse_args(["--workers", "2"]).levels == list(DEFAULT_LEVELS)
    several = parse_args(["--workers", "1,2,4"])
    assert several.workers == [1, 2, 4]
    assert several.levels == list(SCALE_LEVELS) == [10, 50, 200]
    assert parse_args(["--workers", "1,2", "--quick"]).levels == list(QUICK_SCALE_LEVELS)
    assert parse_args(["--workers", "4,1", "--concurrency", "1,10"]).levels == [1, 10]
    assert parse_args(["--workers", "4,1"]).workers == [4, 1]  # in the order given


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("0", "worker counts are numbers of at least 1"),
        ("1,-2", "worker counts are numbers of at least 1"),
        (",", "worker counts are numbers of at least 1"),
        ("1,two", "not a list of numbers: '1,two'"),
        ("1,2,1", "worker counts must each be given once: '1,2,1'"),
    ],
)
def test_bad_worker_counts_are_refused_clearly(
    text: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--workers", text])
    assert exit_info.value.code == 2
    assert f"argument --workers: {error}" in capsys.readouterr().err


def test_overload_is_off_unless_asked_and_takes_a_factor_seconds_and_a_rate() -> None:
    plain = parse_args([])
    assert (plain.overload, plain.overload_seconds, plain.rate) == (None, 30.0, None)
    assert parse_args(["--overload"]).overload == 2.0
    assert parse_args(["--overload", "3"]).overload == 3.0
    short = parse_args(["--overload", "--overload-seconds", "3"])
    assert (short.overload, short.overload_seconds) == (2.0, 3.0)
    alone = parse_args(["--park", "100", "--overload", "1.5", "--rate", "12.5"])
    assert (alone.levels, alone.overload, alone.rate) == ([], 1.5, 12.5)
    # A rate given with levels is the reference instead of their best.
    assert parse_args(["--concurrency", "10", "--overload", "--rate", "4"]).rate == 4.0


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--overload", "0"], "argument --overload: must be a number above 0: '0'"),
        (["--overload", "-1"], "argument --overload: must be a number above 0: '-1'"),
        (["--overload", "twice"], "argument --overload: not a number: 'twice'"),
        (["--overload", "nan"], "argument --overload: must be a number above 0: 'nan'"),
        (
            ["--overload", "--overload-seconds", "0"],
            "argument --overload-seconds: must be a number above 0: '0'",
        ),
        (["--overload", "--rate", "inf"], "argument --rate: must be a number above 0: 'inf'"),
        (["--rate", "10"], "--rate is the sustainable rate of --overload: give --overload too"),
        (
            ["--park", "100", "--overload"],
            "--overload needs levels (--concurrency) to measure the sustainable rate, "
            "or --rate R (orders/s)",
        ),
    ],
)
def test_bad_overload_options_are_refused_clearly(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert f"error: {error}" in capsys.readouterr().err


# --- the overload run's schedule and figures -----------------------------------------------------


def test_orders_are_offered_on_a_fixed_schedule() -> None:
    assert list(start_offsets(2.0, 3.0)) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert list(start_offsets(4.0, 0.3)) == [0.0, 0.25]  # the last start before the end
    assert list(start_offsets(0.5, 1.0)) == [0.0]
    # 0.1 x 3 is 0.30000000000000004: still 3 orders in 10 s, not a fourth at 9.99... s.
    assert len(list(start_offsets(0.1 * 3, 10.0))) == 3
    plan = Overload(factor=2.0, seconds=2.0, sustainable_per_s=2.0, sustainable_from="levels")
    assert plan.rate == 4.0
    assert plan.offsets() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


async def test_a_start_never_waits_for_the_orders_before_it() -> None:
    async def slow_order(run: OrderRun, progress: Progress) -> None:
        run.started = time.time()
        progress.moved()
        await asyncio.sleep(0.5)
        run.done = time.time()
        progress.moved()

    runs = await on_schedule(
        ["a", "b", "c", "d"], [0.0, 0.05, 0.1, 0.15], slow_order, Watch(10.0, dict)
    )
    assert [run.order_id for run in runs] == ["a", "b", "c", "d"]
    assert all(run.done is not None for run in runs)
    # Closed loop, one at a time, the last would start after 1.5 s; open loop, at 0.15 s.
    assert runs[-1].started - runs[0].started < 0.4
    assert peak_in_flight(runs) == 4


def test_the_peak_in_flight_counts_started_and_not_completed_orders() -> None:
    runs = [
        OrderRun("a", started=0.0, done=3.0),
        OrderRun("b", started=1.0, done=2.0),
        OrderRun("c", started=2.0, done=5.0),  # starts as b completes: 2 in flight, not 3
        OrderRun("d", started=2.5, done=4.0),
    ]
    assert peak_in_flight(runs) == 3  # a, c and d from 2.5 to 3.0
    assert peak_in_flight(runs[:3]) == 2
    assert peak_in_flight([OrderRun("x", started=0.0), OrderRun("y", started=9.0)]) == 2


def _overload(task_run_s: Sequence[float], timeouts: int = 0) -> dict[str, Any]:
    """The figures of an overload run on made-up data: 2 x 2 orders/s for 2 s, one worker.

    The orders start on time but the last (50 ms late) and complete 3 s after they start. The
    first order's tasks ran ``task_run_s`` and queued 2.5 s and 10 ms, ``timeouts`` timed out and
    3 sticky ones; every other order's two tasks ran 10 and 200 ms and queued 1 and 2 ms.
    """
    plan = Overload(factor=2.0, seconds=2.0, sustainable_per_s=2.0, sustainable_from="levels")
    starts = [*plan.offsets()[:-1], 1.8]
    runs = [
        OrderRun(f"o-{index}", started=100.0 + at, done=103.0 + at)
        for index, at in enumerate(starts)
    ]
    histories = [_history(0.2) for _ in runs]
    histories[0] = OrderHistory(
        workflow_task_run_s=list(task_run_s),
        workflow_task_queue_s=[2.5, 0.01],
        workflow_task_timeouts=timeouts,
        sticky_task_timeouts=3,
    )
    _, before, after = _batch(1, "worker", 4.0, 6.0, every_s=0.5)
    return overload_figures(plan, runs, histories, before, after)


def test_the_overload_figures_come_from_the_runs_histories_and_samples() -> None:
    figures = _overload([0.01, 0.377])
    offer = {
        "factor": 2.0,
        "seconds": 2.0,
        "sustainable_per_s": 2.0,
        "sustainable_from": "levels",
        "offered_per_s": 4.0,
        "orders": 8,
        "completed": 8,
        "wall_s": 4.8,  # the first start at 100.0, the last completion at 104.8
        "completed_per_s": 1.67,
        "peak_in_flight": 8,  # the first completes at 103.0, after the last start
    }
    assert {key: figures[key] for key in offer} == offer
    assert figures["start_lag_ms"]["max"] == 50.0
    history = figures["history"]
    assert history["workflow_task_run_ms"]["max"] == 377.0
    assert history["workflow_task_run_ms"]["n"] == 2 + 7 * 2
    assert history["workflow_task_queue_ms"]["max"] == 2500.0  # the overload waits here
    assert (history["workflow_task_timeouts"], history["sticky_task_timeouts"]) == (0, 3)
    assert figures["processes"]["worker-1"]["cores"] == 0.4
    assert figures["cpu_ms_per_order"]["worker"] == 500.0
    assert figures["busiest"]["process"] == "temporal"
    assert (figures["longest_workflow_task_ms"], figures["within_1s"]) == (377.0, True)


def test_a_task_over_1s_or_a_timed_out_one_fails_the_verdict() -> None:
    assert _overload([1.0])["within_1s"] is True  # 1 s is within
    over = _overload([0.01, 1.2])
    assert (over["longest_workflow_task_ms"], over["within_1s"]) == (1200.0, False)
    # A task that timed out has no run time: the verdict fails on the timeout itself.
    timed_out = _overload([0.01], timeouts=1)
    assert (timed_out["longest_workflow_task_ms"], timed_out["within_1s"]) == (200.0, False)


# --- the figures of several worker processes, on made-up samples ---------------------------------


def _sample(at: float, machine_busy_s: float, usage: dict[str, tuple[float, float]]) -> Sample:
    """A sample with each process's CPU seconds and memory (RSS MB; the peak is 10 MB more)."""
    return Sample(
        at,
        {name: ProcessUsage(cpu_s, rss, rss + 10) for name, (cpu_s, rss) in usage.items()},
        machine_busy_s,
    )


# Ten seconds of a level with two workers of each kind; the machine was 1.8 cores busy.
BEFORE = _sample(
    100.0,
    1000.0,
    {
        "temporal": (10.0, 400),
        "providers": (2.0, 80),
        "worker-1": (5.0, 150),
        "worker-2": (6.0, 140),
        "ceiling-worker-1": (3.0, 130),
        "ceiling-worker-2": (3.0, 120),
        "driver": (1.0, 90),
    },
)
AFTER = _sample(
    110.0,
    1018.0,
    {
        "temporal": (19.0, 420),  # 0.9 cores
        "providers": (3.0, 80),
        "worker-1": (9.0, 155),  # 0.4
        "worker-2": (10.5, 162),  # 0.45
        "ceiling-worker-1": (3.1, 130),
        "ceiling-worker-2": (3.1, 121),
        "driver": (2.5, 90),
    },
)


def test_a_roles_cpu_is_the_sum_over_its_worker_processes() -> None:
    cpu_s, per_order = cpu_figures(BEFORE, AFTER, orders=100, worker="worker")
    assert cpu_s == {
        "worker": 8.5,
        "ceiling_worker": 0.2,
        "temporal": 9.0,
        "providers": 1.0,
        "driver": 1.5,
    }
    assert per_order == {
        "worker": 85.0,
        "temporal": 90.0,
        "providers": 10.0,
        "driver": 15.0,
        "total": 185.0,
    }
    _, ceiling = cpu_figures(BEFORE, AFTER, orders=100, worker="ceiling_worker")
    assert ceiling["worker"] == 2.0


def test_each_process_has_its_cpu_cores_and_memory_and_the_busiest_is_named() -> None:
    processes = process_figures(BEFORE, AFTER, orders=100)
    assert list(processes) == list(AFTER.usage)
    assert processes["worker-2"] == {
        "cpu_s": 4.5,
        "cpu_ms_per_order": 45.0,
        "cores": 0.45,
        "rss_mb": 162.0,
        "peak_mb": 172.0,
    }
    assert processes["temporal"]["cores"] == 0.9
    assert processes["ceiling-worker-1"]["cores"] == 0.01
    top = busiest(processes, load_figures(BEFORE, AFTER), cpu_count=2)
    assert top == {
        "process": "temporal",
        "cores": 0.9,
        "machine_cores_used": 1.8,
        "machine_cores": 2,
    }
    saturated = {"temporal": {"cores": 0.6}, "worker-3": {"cores": 0.97}, "driver": {"cores": 0.1}}
    assert busiest(saturated, {"machine_busy_cores": 1.9}, cpu_count=2)["process"] == "worker-3"


def test_memory_is_per_worker_process_the_largest_not_the_sum() -> None:
    real = memory_figures(AFTER, worker="worker")
    assert real["worker"] == {"rss": 162.0, "peak": 172.0}  # worker-2's, not 155 + 162
    assert "ceiling_worker" not in real
    assert real["temporal"] == {"rss": 420.0, "peak": 430.0}
    assert memory_figures(AFTER, worker="ceiling_worker")["worker"] == {"rss": 130.0, "peak": 140.0}
    everything = memory_figures(AFTER)
    assert set(everything) == {"temporal", "providers", "worker", "ceiling_worker", "driver"}
    # Peaks over a run: a stopped process's too, the largest per role.
    peaks = [("worker-1", 160.0), ("worker-2", 180.0), ("ceiling-worker-1", 150.0)]
    assert by_role([*peaks, ("worker-2", 175.0)], max) == {"worker": 180.0, "ceiling_worker": 150.0}


# --- the report of a run with two worker counts, on made-up samples ------------------------------


def _history(task_run_s: float) -> OrderHistory:
    return OrderHistory(
        started=0.0,
        charged=0.1,
        confirmation_email=0.2,
        awaiting_shipment=0.3,
        shipped_signal=0.35,
        completed=0.4,
        events=44,
        workflow_task_run_s=[0.01, task_run_s],
        workflow_task_queue_s=[0.001, 0.002],
    )


def _batch(
    workers: int, kind: str, kind_cpu_s: float, temporal_cpu_s: float, every_s: float
) -> Any:
    """The runs and samples of a 20-order batch over 10 s, 2 in flight, one done every
    ``every_s`` after the first two; the kind's workers (``kind``-1, ...) share ``kind_cpu_s``."""
    dones = [1.0, 1.0, *(1.0 + every_s * index for index in range(1, 19))]
    runs = [OrderRun(f"o-{index}", started=0.0, done=done) for index, done in enumerate(dones)]
    workers_of = {
        prefix: [f"{prefix}-{index}" for index in range(1, workers + 1)]
        for prefix in ("worker", "ceiling-worker")
    }
    names = ["temporal", *workers_of["worker"], *workers_of["ceiling-worker"], "driver"]
    before = _sample(0.0, 0.0, {name: (0.0, 100) for name in names})
    spent = dict.fromkeys(names, 0.0)
    spent.update(dict.fromkeys(workers_of[kind], kind_cpu_s / workers))
    spent.update(temporal=temporal_cpu_s, driver=0.1)
    after = _sample(10.0, 15.0, {name: (cpu_s, 100) for name, cpu_s in spent.items()})
    return runs, before, after


def _level(workers: int, real_cpu_s: float, ceiling_cpu_s: float, task_s: float) -> dict[str, Any]:
    runs, before, after = _batch(workers, "worker", real_cpu_s, 2.0, every_s=0.5)
    real = kind_figures(REAL_KIND, 2, runs, [_history(task_s)] * len(runs), before, after)
    runs, before, after = _batch(workers, "ceiling-worker", ceiling_cpu_s, 1.0, every_s=0.25)
    ceiling = kind_figures(CEILING_KIND, 2, runs, [_history(0.2)] * len(runs), before, after)
    return level_entry(workers, 2, real, ceiling)


@pytest.fixture
def scaled_report() -> dict[str, Any]:
    return {
        "machine": {
            "cpu_model": "Test CPU",
            "logical_cpus": 2,
            "physical_cores": 2,
            "memory_total_mb": 1024,
        },
        "started_at": "2026-12-05T12:00:00+00:00",
        "load_average_at_start": [0.1, 0.1, 0.1],
        "load": {"machine_busy_cores": 1.5, "benchmark_cores": 1.4, "other_busy_cores": 0.1},
        "idle_cpu_ms_per_s": {"temporal": 15.0, "worker": 1.0},
        "levels": [_level(1, 1.6, 0.4, 0.377), _level(2, 3.0, 0.6, 0.5)],
        "park": None,
        "peak_memory_mb": {"worker": 110.0, "temporal": 110.0},
        "exactly_once": judge(Evidence({}, {}, {})),
    }


def test_each_count_gets_its_own_ratio_sums_and_busiest_process(
    scaled_report: dict[str, Any],
) -> None:
    one, two = scaled_report["levels"]
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["real"]["throughput_per_s"] == 2.0 and one["ceiling"]["throughput_per_s"] == 4.0
    assert one["ratio"]["throughput_per_s"] == 0.5
    # 3.0 CPU s over two real workers: summed per order, 150 ms; each did 1.5 s, 0.15 cores.
    assert two["real"]["cpu_ms_per_order"]["worker"] == 150.0
    assert two["real"]["processes"]["worker-2"]["cores"] == 0.15
    assert two["ratio"]["cpu_ms_per_order"]["worker"] == 5.0  # 150 / 30
    assert one["real"]["busiest"]["process"] == "temporal"  # 0.2 cores against 0.16
    assert two["real"]["busiest"]["process"] == "temporal"
    assert one["real"]["history"]["workflow_task_run_ms"]["max"] == 377.0
    assert two["real"]["history"]["workflow_task_run_ms"]["max"] == 500.0


def test_the_scale_out_table_has_a_row_per_count_and_level(scaled_report: dict[str, Any]) -> None:
    lines = printout(scaled_report).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Scale-out, real / ceiling"))
    assert lines[start + 1].split()[:5] == ["workers", "conc.", "real/s", "ceil./s", "ratio"]
    cores = f"1.5/1.5 of {os.cpu_count()}".split()
    assert lines[start + 2].split() == [
        "1", "2", "2", "4", "0.5", "80", "/", "20", "100", "/", "50", "377", "/", "200",
        "temporal", "0.20", "temporal", "0.10", *cores,
    ]  # fmt: skip
    assert lines[start + 3].split() == [
        "2", "2", "2", "4", "0.5", "150", "/", "30", "100", "/", "50", "500", "/", "200",
        "temporal", "0.20", "temporal", "0.10", *cores,
    ]  # fmt: skip
    # The per-level table names the count on each level's first row.
    assert any(line.split()[:3] == ["2", "2", "real"] for line in lines)


def test_several_counts_draw_a_scale_out_chart_too(
    scaled_report: dict[str, Any], tmp_path: Path
) -> None:
    assert worker_counts(scaled_report["levels"]) == [1, 2]
    written = draw_all(scaled_report, tmp_path / "run.png")
    assert written == {
        "chart": str(tmp_path / "run.png"),
        "scale_out_chart": str(tmp_path / "run-scale-out.png"),
    }
    for path in written.values():
        assert Path(path).read_bytes().startswith(b"\x89PNG")
    one = {**scaled_report, "levels": scaled_report["levels"][:1]}
    assert draw_all(one, tmp_path / "one.png") == {"chart": str(tmp_path / "one.png")}


def test_the_overload_is_printed_with_a_plain_verdict(scaled_report: dict[str, Any]) -> None:
    run = {**scaled_report, "overload": {"workers": 2, **_overload([0.01, 0.377])}}
    lines = printout(run).splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Overload, open loop")))
    # 16 task runs: eight of 10 ms, seven of 200 ms, one of 377 ms; the queue's tail is 2.5 s.
    assert lines[start : start + 4] == [
        "Overload, open loop (2 worker processes): offered 4.0 orders/s (2 x 2.0/s, the best "
        "sustained rate of the levels) for 2 s: 8 orders, 8 completed at 1.67/s over 4.8 s; at "
        "most 8 in flight; starts late by at most 50 ms.",
        "Workflow tasks, ms median/p99/max: run 105/350/377; queue at the server (schedule to "
        "start) 2/2126/2500; 0 timed out, 3 sticky-queue timeouts.",
        "Cores used: temporal 0.60, worker-1 0.40, ceiling-worker-1 0.00, driver 0.01; busiest "
        f"temporal; the machine 1.5 of {os.cpu_count()} cores busy.",
        "No workflow task ran over 1 s: the longest ran 377 ms, none timed out.",
    ]
    over = {**scaled_report, "overload": {"workers": 1, **_overload([1.2], timeouts=2)}}
    text = printout(over)
    assert "Overload, open loop (1 worker process):" in text
    assert "A WORKFLOW TASK RAN OVER 1 s: the longest ran 1200 ms; 2 timed out" in text
    assert exit_status(over) == 0  # a measurement, not a failure of the run
    assert "Overload" not in printout(scaled_report)


# --- the rate-limited run ---------------------------------------------------------------------


def test_the_rate_limited_run_is_off_unless_asked_and_takes_a_factor_limit_and_seconds() -> None:
    plain = parse_args([])
    assert (plain.rate_limited, plain.account_limit, plain.rate_limited_seconds) == (
        None, 25.0, 60.0,
    )  # fmt: skip
    alone = parse_args(["--rate-limited"])
    assert (alone.rate_limited, alone.levels) == (2.0, [])  # no levels unless asked
    told = parse_args(
        ["--concurrency", "10", "--rate-limited", "3", "--account-limit", "9",
         "--rate-limited-seconds", "5"]
    )  # fmt: skip
    assert (told.levels, told.rate_limited, told.account_limit, told.rate_limited_seconds) == (
        [10], 3.0, 9.0, 5.0,
    )  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        parse_args(["--rate-limited", "--account-limit", "0"])
    assert refused.value.code == 2


def test_the_limit_in_orders_a_second_is_set_by_the_kind_that_runs_out_first() -> None:
    stripe_test_mode = {"read": 25.0, "write": 25.0, "search": 20.0}
    assert orders_per_s_at_limit(stripe_test_mode, {"read": 2, "write": 3, "search": 0}) == 25 / 3
    # An order that searched once per order and read little: still the writes.
    assert orders_per_s_at_limit(stripe_test_mode, {"read": 1, "write": 3, "search": 1}) == 25 / 3
    assert orders_per_s_at_limit({"read": 25.0, "write": 0, "search": 2.0}, {
        "read": 2, "write": 3, "search": 1,
    }) == 2.0  # fmt: skip
    with pytest.raises(BenchError):
        orders_per_s_at_limit({"read": 0, "write": 0, "search": 0}, {"write": 3})


def test_the_rate_limited_figures_show_the_limit_the_429s_and_what_must_stay_zero(
    scaled_report: dict[str, Any],
) -> None:
    plan = RateLimited(
        limits={"read": 9.0, "write": 9.0, "search": 9.0},
        calls_per_order={"read": 1.0, "write": 3.0, "search": 0.0},
        factor=2.0,
        seconds=2.0,
    )
    assert (plan.at_limit_per_s, plan.rate, len(plan.offsets())) == (3.0, 6.0, 12)
    runs = [OrderRun(f"o-{index}", started=index / 6, done=1.0 + index / 3) for index in range(12)]
    histories = [_history(0.01) for _ in runs]
    histories[3] = OrderHistory(**{**histories[3].__dict__, "parked": True})
    figures = rate_limited_figures(plan, runs, histories, {"read": 0, "write": 7, "search": 0}, 0)
    assert figures["completed"] == figures["orders"] == 12
    assert (figures["wall_s"], figures["completed_per_s"], figures["completed_vs_limit"]) == (
        4.67, 2.57, 0.86,
    )  # fmt: skip
    assert (figures["parked"], figures["breaker_trips"]) == (1, 0)
    assert figures["refused_429"]["write"] == 7
    assert figures["latency_ms"]["start_to_awaiting_shipment"]["median"] == 300.0
    text = printout({**scaled_report, "rate_limited": {"workers": 1, **figures}})
    assert (
        "Rate-limited gateway (9 reads and 9 writes a second, 9 searches; an order makes read 1, "
        "write 3, search 0): 3.0 orders/s at the limit; offered 6.0/s (2 x) for 2 s: 12 orders, "
        "12 completed at 2.57/s over 4.7 s (0.86 x the limit)." in text
    )
    assert "429s answered: read 0, write 7, search 0; activity retries 0; parked 1; " in text


def test_the_ceiling_workflow_passes_through_the_sandbox_like_the_real_ones() -> None:
    """The ceiling gets the real workflows' speed-ups, so it is not slower than it should be.

    Its module was once named ``bench`` instead of ``tools.bench``: the sandbox imported it
    afresh for every ceiling order (12% of the ceiling worker's CPU), which flattered the real
    order's ratio.
    """

    def passed_through(runner: SandboxedWorkflowRunner, module: str) -> bool:
        parts = module.split(".")
        prefixes = {".".join(parts[:end]) for end in range(1, len(parts) + 1)}
        return bool(prefixes & runner.restrictions.passthrough_modules)

    ceiling = ceiling_runner(DATA_CONVERTER)
    assert passed_through(ceiling, CeilingOrderWorkflow.__module__)
    assert passed_through(sandboxed_runner(DATA_CONVERTER), "workflows.order")
    assert type(ceiling) is type(sandboxed_runner(DATA_CONVERTER))


async def test_the_ceiling_worker_serves_the_sdk_metrics_as_the_real_worker_does(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Both kinds of worker pay for the SDK's metrics, so the ratio compares workflows only.

    The stack starts every real worker with a metrics port (``tools.stack.local``); the ceiling
    worker once ran with none, so only the real one paid for recording them.
    """
    port = free_port()
    address = temporal_env.client.service_client.config.target_host
    process = spawn(
        "ceiling-worker",
        ceiling_worker_command("ceiling-metrics-test", port),
        tmp_path / "ceiling-worker.log",
        {"TEMPORAL_ADDRESS": address},
    )
    try:
        wait_for_log(process, READY_LINE, timeout=30.0)
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        process.stop()
    assert answer.status_code == 200
    assert 'task_queue="ceiling-metrics-test"' in answer.text
    assert "temporal_worker_start" in answer.text
