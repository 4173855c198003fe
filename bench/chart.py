"""The throughput benchmark's chart: throughput, latency and CPU per order against concurrency.

matplotlib is in the ``bench`` dependency group (``scripts/setup`` installs it); a venv set up
without it gets it installed on first use, with a message saying so.
"""

import argparse
import importlib.util
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stack.processes import ROOT

MATPLOTLIB = "matplotlib==3.11.2"
"""Keep in step with the ``bench`` group in pyproject.toml."""

KINDS = (("real", "real order workflow", "C0", "o"), ("ceiling", "no-op ceiling", "C1", "s"))
"""Each kind: its key in the report, its label, colour and marker."""


class ChartError(Exception):
    """matplotlib is missing and could not be installed."""


def ensure_matplotlib() -> None:
    """Install the ``bench`` dependency group into this venv if matplotlib is missing."""
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
    """Draw the chart again from a report: ``python -m bench.chart REPORT.json OUT.png``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("report", type=Path, help="a JSON report of bench.throughput")
    parser.add_argument("out", type=Path, help="where to write the PNG")
    args = parser.parse_args()
    ensure_matplotlib()
    draw(json.loads(args.report.read_text()), args.out)
    print(f"Wrote {args.out}")


def _series(levels: Sequence[Mapping[str, Any]], kind: str, *path: str) -> list[float | None]:
    values: list[float | None] = []
    for level in levels:
        value: Any = level[kind]
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        values.append(float(value) if isinstance(value, int | float) else None)
    return values


def draw(report: Mapping[str, Any], path: Path) -> None:
    """Write the chart of ``report`` (the benchmark's JSON) as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels: Sequence[Mapping[str, Any]] = report["levels"]
    x = [level["concurrency"] for level in levels]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
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
    machine = report["machine"]
    load = report.get("load", {})
    fig.suptitle(
        "Real order workflow against the no-op ceiling, same run\n"
        f"{machine['cpu_model']}, {machine['logical_cpus']} CPUs; {report['started_at'][:10]}; "
        f"other processes used {load.get('other_busy_cores', 0):.1f} cores on average",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
