"""The throughput benchmark command, run for real with tiny numbers: every field, a passed check.

The run never asserts a time or a rate: only that each figure is there and was measured. The
figures, the scale-out aggregation and the tables are checked exactly on made-up samples.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.chart import draw_all, worker_counts
from bench.figures import (
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
from bench.procstat import ProcessUsage
from bench.report import printout
from bench.stages import OrderHistory
from bench.throughput import (
    CEILING_KIND,
    DEFAULT_LEVELS,
    QUICK_SCALE_LEVELS,
    REAL_KIND,
    SCALE_LEVELS,
    OrderRun,
    kind_figures,
    level_entry,
    parse_args,
)
from domain.models import OrderView
from domain.status import EmailTemplate, OrderStatus
from harness.checker import Evidence
from providers.admin_client import Effects
from stack.processes import ROOT

WARMUP, ORDERS, PARK = 1, 5, 5
LEVELS = (1, 5)
WORKERS = (1, 2)

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
        sys.executable, "-m", "bench.throughput",
        "--concurrency", ",".join(map(str, LEVELS)), "--orders", str(ORDERS),
        "--workers", ",".join(map(str, WORKERS)),
        "--warmup", str(WARMUP), "--park", str(PARK), "--park-concurrency", "5",
        "--stall-timeout", "60", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Exactly-once: OK" in done.stdout
    assert "Scale-out, real / ceiling" in done.stdout
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


def test_the_exactly_once_check_passed_over_every_real_order(report: dict[str, Any]) -> None:
    once = report["exactly_once"]
    orders = WARMUP * sum(WORKERS) + ORDERS * len(LEVELS) * len(WORKERS) + PARK
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
    )
    verdict = judge(Evidence({view.order_id: view}, {view.order_id: charged_twice}))
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
        "exactly_once": judge(Evidence({}, {})),
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
