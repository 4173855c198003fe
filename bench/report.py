"""The benchmark's report as tables for people (the JSON holds every figure)."""

from collections.abc import Mapping
from typing import Any


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return text.rjust(width)


def _stage(figures: Mapping[str, Any]) -> str:
    return "/".join(
        "-" if figures[k] is None else f"{figures[k]:.0f}" for k in ("median", "p95", "p99")
    )


def _ratios(figures: Mapping[str, Any]) -> str:
    return "/".join(
        "-" if figures.get(k) is None else f"{figures[k]:.2f}" for k in ("median", "p95", "p99")
    )


def printout(report: Mapping[str, Any]) -> str:
    """The report as tables for people."""
    m = report["machine"]
    lines = [
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} CPUs ({m['physical_cores']} cores), "
        f"{m['memory_total_mb']} MB; load average at start {report['load_average_at_start']}",
    ]
    load = report["load"]
    if load:
        lines.append(
            f"While measuring, the machine was {load['machine_busy_cores']} cores busy on "
            f"average: the benchmark's processes {load['benchmark_cores']}, other processes "
            f"{load['other_busy_cores']}."
        )
    idle = report.get("idle_cpu_ms_per_s")
    if idle:
        lines.append(
            "With no order in flight, CPU ms per second: "
            + ", ".join(f"{name} {ms:g}" for name, ms in idle.items())
            + " (inside every per-order figure below, most at low concurrency)."
        )
    if report["levels"]:
        head = (
            f"{'conc.':>5} {'workflow':>8} {'orders':>6} {'orders/s':>8} {'worker':>7} "
            f"{'server':>7} {'provid.':>7} {'driver':>7} {'wf tasks':>8} {'events':>6} "
            f"{'task p99':>8} {'task max':>8} {'timeouts':>8} {'sticky':>6}"
        )
        lines += [
            "",
            "Throughput, CPU ms per order by process, workflow tasks and events per order, "
            "workflow task run ms, task timeouts (ratio: real / ceiling)",
            head,
        ]
        for level in report["levels"]:
            for kind in ("real", "ceiling", "ratio"):
                f = level[kind]
                cpu, hist = f.get("cpu_ms_per_order", {}), f.get("history", {})
                lines.append(
                    " ".join(
                        (
                            _cell(level["concurrency"] if kind == "real" else "", 5),
                            _cell(kind, 8),
                            _cell(level["orders"] if kind != "ratio" else "", 6),
                            _cell(f.get("throughput_per_s"), 8),
                            *(
                                _cell(cpu.get(k), 7)
                                for k in ("worker", "temporal", "providers", "driver")
                            ),
                            _cell(hist.get("workflow_tasks_per_order"), 8),
                            _cell(hist.get("events_per_order"), 6),
                            _cell(hist.get("workflow_task_run_ms", {}).get("p99"), 8),
                            _cell(hist.get("workflow_task_run_ms", {}).get("max"), 8),
                            _cell(hist.get("workflow_task_timeouts"), 8),
                            _cell(hist.get("sticky_task_timeouts"), 6),
                        )
                    )
                )
        lines += [
            "",
            "Latency ms, median/p95/p99 (from the histories' event times)",
            f"{'conc.':>5} {'workflow':>8} {'start->charged':>18} {'start->confirmation':>20} "
            f"{'start->awaiting':>18} {'shipped->completed':>19}",
        ]
        for level in report["levels"]:
            for kind in ("real", "ceiling", "ratio"):
                lat = level[kind].get("latency_ms", {})
                show = _stage if kind != "ratio" else _ratios
                lines.append(
                    f"{_cell(level['concurrency'] if kind == 'real' else '', 5)} {kind:>8} "
                    f"{show(lat.get('start_to_charged', {})):>18} "
                    f"{show(lat.get('start_to_confirmation_email', {})):>20} "
                    f"{show(lat.get('start_to_awaiting_shipment', {})):>18} "
                    f"{show(lat.get('shipped_signal_to_completed', {})):>19}"
                )
    park = report["park"]
    if park:
        parked, shipping = park["while_parked"], park["shipping"]
        memory = parked["memory_mb"]
        ratio_text = (
            f", {shipping['ratio_to_sustained']} of the best sustained rate "
            f"({shipping['sustained_reference_per_s']}/s)"
            if shipping["ratio_to_sustained"] is not None
            else ""
        )
        lines += [
            "",
            f"Parked {park['orders']} orders at {park['parking']['orders_per_s']}/s "
            f"(started {park['start_concurrency']} at a time); while parked: worker "
            f"{memory['worker']['rss']} MB (peak {memory['worker']['peak']}), Temporal "
            f"{memory['temporal']['rss']} MB (peak {memory['temporal']['peak']}), SQLite "
            f"{parked['sqlite_mb']['total']} MB.",
            f"Shipped them all at {shipping['orders_per_s']}/s{ratio_text}; CPU ms per order: "
            f"worker {shipping['cpu_ms_per_order']['worker']}, server "
            f"{shipping['cpu_ms_per_order']['temporal']}.",
        ]
    peaks = ", ".join(f"{name} {mb:.0f}" for name, mb in report["peak_memory_mb"].items())
    lines += ["", f"Peak memory MB: {peaks}"]
    once = report["exactly_once"]
    t = once["tally"]
    if once["passed"]:
        lines.append(
            f"Exactly-once: OK. {once['orders_checked']} orders, all completed; {t['charges']} "
            f"charges, {t['confirmation_emails']} confirmation emails, {t['picklists']} "
            f"picklists, {t['shipped_emails']} shipped emails, {t['refunds']} refunds."
        )
    else:
        lines.append(f"EXACTLY-ONCE VIOLATED: {len(once['violations'])} broken promises:")
        lines += [f"  {violation}" for violation in once["violations"][:50]]
    return "\n".join(lines)
