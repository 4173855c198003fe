"""The benchmark's report as tables for people (the JSON holds every figure)."""

from collections.abc import Mapping, Sequence
from typing import Any

KINDS = ("real", "ceiling", "ratio")
_TOP = ("median", "p99", "max")
"""The figures of a distribution the overload run prints: where the long tail shows."""


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return text.rjust(width)


def _stage(figures: Mapping[str, Any], keys: Sequence[str] = ("median", "p95", "p99")) -> str:
    return "/".join("-" if figures[k] is None else f"{figures[k]:.0f}" for k in keys)


def _ratios(figures: Mapping[str, Any]) -> str:
    return "/".join(
        "-" if figures.get(k) is None else f"{figures[k]:.2f}" for k in ("median", "p95", "p99")
    )


def _where(level: Mapping[str, Any], kind: str) -> str:
    """The worker count and concurrency cells, on the first row of a level only."""
    first = kind == "real"
    workers = _cell(level.get("workers", 1) if first else "", 7)
    return f"{workers} {_cell(level['concurrency'] if first else '', 5)}"


def _machine(report: Mapping[str, Any]) -> list[str]:
    """The machine, its load while measuring and each role's CPU use with nothing in flight."""
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
    return lines


def _levels(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    """Throughput, CPU per order, workflow tasks and events of every level and kind."""
    lines = [
        "",
        "Throughput, CPU ms per order by process (worker: summed over the kind's worker "
        "processes), workflow tasks and events per order, workflow task run ms, task timeouts "
        "(ratio: real / ceiling)",
        f"{'workers':>7} {'conc.':>5} {'workflow':>8} {'orders':>6} {'orders/s':>8} "
        f"{'worker':>7} {'server':>7} {'provid.':>7} {'driver':>7} {'wf tasks':>8} "
        f"{'events':>6} {'task p99':>8} {'task max':>8} {'timeouts':>8} {'sticky':>6}",
    ]
    for level in levels:
        for kind in KINDS:
            f = level[kind]
            cpu, hist = f.get("cpu_ms_per_order", {}), f.get("history", {})
            cells = (
                _where(level, kind),
                _cell(kind, 8),
                _cell(level["orders"] if kind != "ratio" else "", 6),
                _cell(f.get("throughput_per_s"), 8),
                *(_cell(cpu.get(k), 7) for k in ("worker", "temporal", "providers", "driver")),
                _cell(hist.get("workflow_tasks_per_order"), 8),
                _cell(hist.get("events_per_order"), 6),
                _cell(hist.get("workflow_task_run_ms", {}).get("p99"), 8),
                _cell(hist.get("workflow_task_run_ms", {}).get("max"), 8),
                _cell(hist.get("workflow_task_timeouts"), 8),
                _cell(hist.get("sticky_task_timeouts"), 6),
            )
            lines.append(" ".join(cells))
    return lines + _gateway_calls(levels)


def _gateway_calls(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    """The gateway calls a real order made at each level, by kind (no search since issue 26)."""
    rows = [
        f"{_where(level, 'real')} "
        + ", ".join(f"{kind} {count:g}" for kind, count in calls.items())
        for level in levels
        if (calls := level["real"].get("gateway_calls_per_order"))
    ]
    return ["", "Gateway calls per real order (read, write, search)", *rows] if rows else []


def _latencies(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each stage's latency of every level and kind."""
    lines = [
        "",
        "Latency ms, median/p95/p99 (from the histories' event times)",
        f"{'workers':>7} {'conc.':>5} {'workflow':>8} {'start->charged':>18} "
        f"{'start->confirmation':>20} {'start->awaiting':>18} {'shipped->completed':>19}",
    ]
    for level in levels:
        for kind in KINDS:
            lat = level[kind].get("latency_ms", {})
            show = _stage if kind != "ratio" else _ratios
            lines.append(
                f"{_where(level, kind)} {kind:>8} "
                f"{show(lat.get('start_to_charged', {})):>18} "
                f"{show(lat.get('start_to_confirmation_email', {})):>20} "
                f"{show(lat.get('start_to_awaiting_shipment', {})):>18} "
                f"{show(lat.get('shipped_signal_to_completed', {})):>19}"
            )
    return lines


def _pair(level: Mapping[str, Any], *path: str) -> str:
    """The real and the ceiling figure at ``path`` as ``real / ceiling``, whole numbers."""
    values = []
    for kind in ("real", "ceiling"):
        value: Any = level[kind]
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        values.append("-" if value is None else f"{value:.0f}")
    return " / ".join(values)


def _busiest(figures: Mapping[str, Any]) -> str:
    """The busiest process of a batch and the cores it used, e.g. ``temporal 0.93``."""
    top = figures.get("busiest")
    return f"{top['process']} {top['cores']:.2f}" if top else "-"


def _machine_cores(level: Mapping[str, Any]) -> str:
    """The machine's busy cores during the real and the ceiling batch, of how many it has."""
    real, ceiling = level["real"].get("busiest"), level["ceiling"].get("busiest")
    if not real or not ceiling:
        return "-"
    return (
        f"{real['machine_cores_used']:.1f}/{ceiling['machine_cores_used']:.1f} "
        f"of {real['machine_cores']}"
    )


def _scale_out(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per worker count and level: both throughputs, their ratio, CPU, longest task, busiest."""
    lines = [
        "",
        "Scale-out, real / ceiling: orders/s and their ratio; CPU ms per order of the workers "
        "(summed over the kind's processes) and of the server; the longest workflow task (ms); "
        "the busiest process with the cores it used (its CPU s / the level's wall s); the "
        "machine's busy cores (every process) of all it has",
        f"{'workers':>7} {'conc.':>5} {'real/s':>7} {'ceil./s':>7} {'ratio':>5} "
        f"{'worker ms':>11} {'server ms':>11} {'task max ms':>13} {'busiest: real':>22} "
        f"{'busiest: ceiling':>22} {'machine cores':>14}",
    ]
    for level in levels:
        cells = (
            _where(level, "real"),
            _cell(level["real"].get("throughput_per_s"), 7),
            _cell(level["ceiling"].get("throughput_per_s"), 7),
            _cell(level["ratio"].get("throughput_per_s"), 5),
            _pair(level, "cpu_ms_per_order", "worker").rjust(11),
            _pair(level, "cpu_ms_per_order", "temporal").rjust(11),
            _pair(level, "history", "workflow_task_run_ms", "max").rjust(13),
            _busiest(level["real"]).rjust(22),
            _busiest(level["ceiling"]).rjust(22),
            _machine_cores(level).rjust(14),
        )
        lines.append(" ".join(cells))
    return lines


def _park(park: Mapping[str, Any]) -> list[str]:
    """Parking: the rate, memory and SQLite size while parked, then the rate of shipping."""
    parked, shipping = park["while_parked"], park["shipping"]
    memory = parked["memory_mb"]
    workers = park.get("workers", 1)
    ratio_text = (
        f", {shipping['ratio_to_sustained']} of the best sustained rate "
        f"({shipping['sustained_reference_per_s']}/s)"
        if shipping["ratio_to_sustained"] is not None
        else ""
    )
    return [
        "",
        f"Parked {park['orders']} orders at {park['parking']['orders_per_s']}/s "
        f"(started {park['start_concurrency']} at a time, {workers} worker "
        f"process{'es' if workers != 1 else ''}); while parked: worker "
        f"{memory['worker']['rss']} MB (peak {memory['worker']['peak']}), Temporal "
        f"{memory['temporal']['rss']} MB (peak {memory['temporal']['peak']}), SQLite "
        f"{parked['sqlite_mb']['total']} MB.",
        f"Shipped them all at {shipping['orders_per_s']}/s{ratio_text}; CPU ms per order: "
        f"worker {shipping['cpu_ms_per_order']['worker']}, server "
        f"{shipping['cpu_ms_per_order']['temporal']}.",
    ]


def _overload(o: Mapping[str, Any]) -> list[str]:
    """The overload run: the offer, what completed, the workflow tasks, the cores, the verdict."""
    history = o["history"]
    workers = o["workers"]
    reference = (
        "the best sustained rate of the levels"
        if o["sustainable_from"] == "levels"
        else o["sustainable_from"]
    )
    cores = ", ".join(f"{name} {p['cores']:.2f}" for name, p in o["processes"].items())
    top = o["busiest"]
    return [
        "",
        f"Overload, open loop ({workers} worker process{'es' if workers != 1 else ''}): offered "
        f"{o['offered_per_s']} orders/s ({o['factor']:g} x {o['sustainable_per_s']}/s, "
        f"{reference}) for {o['seconds']:g} s: {o['orders']} orders, {o['completed']} "
        f"completed at {o['completed_per_s']}/s over {o['wall_s']:.1f} s; at most "
        f"{o['peak_in_flight']} in flight; starts late by at most "
        f"{_stage(o['start_lag_ms'], ('max',))} ms.",
        f"Workflow tasks, ms median/p99/max: run {_stage(history['workflow_task_run_ms'], _TOP)}; "
        f"queue at the server (schedule to start) "
        f"{_stage(history['workflow_task_queue_ms'], _TOP)}; "
        f"{history['workflow_task_timeouts']} timed out, {history['sticky_task_timeouts']} "
        "sticky-queue timeouts.",
        f"Cores used: {cores}; busiest {top['process']}; the machine "
        f"{top['machine_cores_used']} of {top['machine_cores']} cores busy.",
        _task_verdict(o),
    ]


def _rate_limited(r: Mapping[str, Any]) -> list[str]:
    """The rate-limited run: the offer, completions against the limit, what must stay zero."""
    limits = r["account_limits_per_s"]
    calls = ", ".join(f"{kind} {count:g}" for kind, count in r["gateway_calls_per_order"].items())
    refused = ", ".join(f"{kind} {count:g}" for kind, count in r["refused_429"].items())
    latency = r["latency_ms"]["start_to_awaiting_shipment"]
    return [
        "",
        f"Rate-limited gateway ({limits['read']:g} reads and {limits['write']:g} writes a "
        f"second, {limits['search']:g} searches; an order makes {calls}): "
        f"{r['orders_per_s_at_limit']} orders/s at the limit; offered {r['offered_per_s']}/s "
        f"({r['factor']:g} x) for {r['seconds']:g} s: {r['orders']} orders, {r['completed']} "
        f"completed at {r['completed_per_s']}/s over {r['wall_s']:.1f} s "
        f"({r['completed_vs_limit']} x the limit).",
        f"429s answered: {refused}; activity retries {r['history']['activity_retries']}; "
        f"parked {r['parked']}; breaker trips {r['breaker_trips']}; start to awaiting shipment "
        f"median {_stage(latency, ('median',))} ms, p99 {_stage(latency, ('p99',))} ms.",
    ]


def _task_verdict(overload: Mapping[str, Any]) -> str:
    """Plainly whether any workflow task of the overload run ran over 1 s or timed out."""
    longest = overload["longest_workflow_task_ms"]
    timeouts = overload["history"]["workflow_task_timeouts"]
    ran = "-" if longest is None else f"{longest:.0f}"
    if overload["within_1s"]:
        return f"No workflow task ran over 1 s: the longest ran {ran} ms, none timed out."
    return (
        f"A WORKFLOW TASK RAN OVER 1 s: the longest ran {ran} ms; {timeouts} timed out "
        "(a measurement: the exit status does not change)."
    )


def _exactly_once(once: Mapping[str, Any]) -> list[str]:
    """The checker's verdict: the tally, or every broken promise (the first 50)."""
    t = once["tally"]
    if once["passed"]:
        return [
            f"Exactly-once: OK. {once['orders_checked']} orders, all completed; {t['charges']} "
            f"charges, {t['confirmation_emails']} confirmation emails, {t['picklists']} "
            f"picklists, {t['shipped_emails']} shipped emails, {t['refunds']} refunds."
        ]
    return [
        f"EXACTLY-ONCE VIOLATED: {len(once['violations'])} broken promises:",
        *(f"  {violation}" for violation in once["violations"][:50]),
    ]


def printout(report: Mapping[str, Any]) -> str:
    """The report as tables for people."""
    lines = _machine(report)
    levels = report["levels"]
    if levels:
        lines += _levels(levels) + _latencies(levels) + _scale_out(levels)
    if report.get("overload"):
        lines += _overload(report["overload"])
    if report.get("rate_limited"):
        lines += _rate_limited(report["rate_limited"])
    if report["park"]:
        lines += _park(report["park"])
    peaks = ", ".join(f"{name} {mb:.0f}" for name, mb in report["peak_memory_mb"].items())
    lines += ["", f"Peak memory MB: {peaks}", *_exactly_once(report["exactly_once"])]
    return "\n".join(lines)
