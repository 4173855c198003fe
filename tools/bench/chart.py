"""The throughput benchmark's charts: throughput, latency and CPU per order by concurrency.

When several worker counts ran, a second chart shows throughput against worker processes.

matplotlib is in the ``tools.bench`` dependency group (``scripts/setup`` installs it); a venv set up
without it gets it installed on first use, with a message saying so.
"""

import argparse
import importlib.util
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.stack.processes import ROOT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MATPLOTLIB = "matplotlib==3.11.2"
"""Keep in step with the ``tools.bench`` group in pyproject.toml."""

KINDS = (("real", "real order workflow", "C0", "o"), ("ceiling", "no-op ceiling", "C1", "s"))
"""Each kind: its key in the report, its label, colour and marker."""


class ChartError(Exception):
    """matplotlib is missing and could not be installed."""


def ensure_matplotlib() -> None:
    """Install the ``tools.bench`` dependency group into this venv if matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is not None:
        return
    print(
        f"matplotlib is not installed (the 'bench' dependency group); installing {MATPLOTLIB} "
        f"into {sys.prefix} with: pip install --group bench",
        flush=True,
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--group", "bench"],
        cwd=ROOT,
        check=False,
    )  # fmt: skip
    if done.returncode != 0 or importlib.util.find_spec("matplotlib") is None:
        raise ChartError(
            f"could not install {MATPLOTLIB}; install it by hand: "
            f"{sys.executable} -m pip install --group bench"
        )


def main() -> None:
    """Draw the charts again from a report: ``python -m tools.bench.chart REPORT.json OUT.png``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("report", type=Path, help="a JSON report of bench.throughput")
    parser.add_argument(
        "out", type=Path, help="where to write the PNG (the scale-out one beside it: -scale-out)"
    )
    args = parser.parse_args()
    ensure_matplotlib()
    for path in draw_all(json.loads(args.report.read_text()), args.out).values():
        print(f"Wrote {path}")


def worker_counts(levels: Sequence[Mapping[str, Any]]) -> list[int]:
    """The worker counts the levels ran with, in the order they ran (1 for older reports)."""
    return list(dict.fromkeys(level.get("workers", 1) for level in levels))


def scale_out_path(path: Path) -> Path:
    """Where the scale-out chart goes beside the main chart at ``path``."""
    return path.with_name(f"{path.stem}-scale-out.png")


def draw_all(report: Mapping[str, Any], path: Path) -> dict[str, str]:
    """The main chart at ``path``, and the scale-out chart beside it if several counts ran.

    Returns the report's fields naming them: ``chart`` and ``scale_out_chart``.
    """
    written = {"chart": str(path)}
    draw(report, path)
    if len(worker_counts(report["levels"])) > 1:
        draw_scale_out(report, scale_out_path(path))
        written["scale_out_chart"] = str(scale_out_path(path))
    return written


def _series(levels: Sequence[Mapping[str, Any]], kind: str, *path: str) -> list[float | None]:
    values: list[float | None] = []
    for level in levels:
        value: Any = level[kind]
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        values.append(float(value) if isinstance(value, int | float) else None)
    return values


def _subplots(rows: int, columns: int, size: tuple[float, float]) -> tuple["Figure", Any]:
    """A figure and its axes, drawn without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, figsize=size)


def _finish(fig: "Figure", report: Mapping[str, Any], title: str, path: Path) -> None:
    """Title the figure with the machine and its load, write it as a PNG and close it."""
    import matplotlib.pyplot as plt

    machine = report["machine"]
    load = report.get("load", {})
    fig.suptitle(
        f"{title}\n"
        f"{machine['cpu_model']}, {machine['logical_cpus']} CPUs; {report['started_at'][:10]}; "
        f"other processes used {load.get('other_busy_cores', 0):.1f} cores on average",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(report: Mapping[str, Any], path: Path) -> None:
    """Write the chart of ``report`` (the benchmark's JSON) as a PNG to ``path``.

    With several worker counts, it shows the levels of the first count (the scale-out chart
    has the others).
    """
    counts = worker_counts(report["levels"])
    levels = [level for level in report["levels"] if level.get("workers", 1) == counts[0]]
    x = [level["concurrency"] for level in levels]
    fig, axes = _subplots(2, 2, (12, 8.5))
    panels = (
        (axes[0][0], "orders per second (sustained)", [("throughput_per_s",)], ("",)),
        (
            axes[0][1],
            "start to awaiting shipment (ms)",
            [
                ("latency_ms", "start_to_awaiting_shipment", "median"),
                ("latency_ms", "start_to_awaiting_shipment", "p95"),
            ],
            ("median", "p95"),
        ),
        (
            axes[1][0],
            "shipped signal to completed (ms)",
            [
                ("latency_ms", "shipped_signal_to_completed", "median"),
                ("latency_ms", "shipped_signal_to_completed", "p95"),
            ],
            ("median", "p95"),
        ),
        (
            axes[1][1],
            "CPU ms per order",
            [("cpu_ms_per_order", "temporal"), ("cpu_ms_per_order", "worker")],
            ("Temporal server", "worker"),
        ),
    )
    for axis, title, paths, labels in panels:
        latency = "(ms)" in title and "CPU" not in title
        for kind, kind_label, colour, marker in KINDS:
            for index, (series, label) in enumerate(zip(paths, labels, strict=True)):
                axis.plot(
                    x,
                    _series(levels, kind, *series),
                    linestyle="-" if index == 0 else ":",
                    marker=marker,
                    color=colour,
                    label=f"{kind_label} {label}".strip(),
                )
        axis.set_title(title)
        axis.set_xscale("log")
        axis.set_xticks(x, [str(c) for c in x])
        axis.minorticks_off()
        axis.set_xlabel("orders in flight (concurrency)")
        if latency:  # from a quarter of a second at 1 to tens of seconds at 200
            axis.set_yscale("log")
        else:
            axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    plural = "es" if counts[0] != 1 else ""
    workers = f", {counts[0]} worker process{plural} of each kind" if len(counts) > 1 else ""
    _finish(fig, report, f"Real order workflow against the no-op ceiling, same run{workers}", path)


def draw_scale_out(report: Mapping[str, Any], path: Path) -> None:
    """Write throughput against worker processes as a PNG to ``path``.

    One colour per concurrency level: the real workflow solid, the ceiling dashed.
    """
    levels: Sequence[Mapping[str, Any]] = report["levels"]
    counts = sorted(worker_counts(levels))
    fig, axis = _subplots(1, 1, (8, 5.5))
    concurrencies = dict.fromkeys(level["concurrency"] for level in levels)
    for index, concurrency in enumerate(concurrencies):
        at = sorted(
            (level for level in levels if level["concurrency"] == concurrency),
            key=lambda level: level.get("workers", 1),
        )
        x = [level.get("workers", 1) for level in at]
        for kind, label, _, marker in KINDS:
            axis.plot(
                x,
                _series(at, kind, "throughput_per_s"),
                linestyle="-" if kind == "real" else "--",
                marker=marker,
                color=f"C{index}",
                label=f"{concurrency} in flight, {label}",
            )
    axis.set_xticks(counts, [str(count) for count in counts])
    axis.set_xlabel("worker processes (of each kind, against one Temporal server)")
    axis.set_ylabel("orders per second (sustained)")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    _finish(fig, report, "Scale-out: real order workflow (solid) and no-op ceiling (dashed)", path)


if __name__ == "__main__":
    main()
