"""The throughput benchmark command, run for real with tiny numbers: every field, a passed check.

Never asserts a time or a rate: only that each figure is there and was measured.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.figures import STAGES, exit_status, judge, throughput
from bench.report import printout
from domain.models import OrderView
from domain.status import EmailTemplate, OrderStatus
from harness.checker import Evidence
from providers.admin_client import Effects
from stack.processes import ROOT

WARMUP, ORDERS, PARK = 1, 5, 5
LEVELS = (1, 5)

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
        "--warmup", str(WARMUP), "--park", str(PARK), "--park-concurrency", "5",
        "--stall-timeout", "60", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Exactly-once: OK" in done.stdout
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def test_every_level_has_every_figure_for_both_workflows(report: dict[str, Any]) -> None:
    assert [level["concurrency"] for level in report["levels"]] == list(LEVELS)
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
    assert park["parking"]["orders_per_s"] > 0
    assert park["while_parked"]["memory_mb"]["worker"]["peak"] > 0
    assert park["while_parked"]["memory_mb"]["temporal"]["peak"] > 0
    assert park["while_parked"]["sqlite_mb"]["total"] > 0
    assert park["shipping"]["orders_per_s"] > 0
    assert _is_number(park["shipping"]["ratio_to_sustained"])


def test_the_exactly_once_check_passed_over_every_real_order(report: dict[str, Any]) -> None:
    once = report["exactly_once"]
    orders = WARMUP + ORDERS * len(LEVELS) + PARK
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
