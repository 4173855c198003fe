"""Recovery time and effect counts for every crash scenario, run N times.

Run from the repository root (nothing else needs to be running; each run brings up its own
Temporal, providers and workers in a temporary folder on free ports)::

    .venv/bin/python -m tools.bench.recovery                 # every scenario, 3 runs each
    .venv/bin/python -m tools.bench.recovery --runs 5 --scenario kill-at-step-boundaries

Recovery time is measured from a worker's SIGKILL to the interrupted order's next step
completing (the activity done and recorded by the workflow) on the restarted or surviving
worker, read from the orders' histories. Effects are the providers' ledger, summed over runs.
Exits 1 if the checker found a violation in any run.
"""

import argparse
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from orders.client.exit import run_to_exit
from orders.domain.status import OrderStatus
from orders.security.keys import KEYS_ENV, generate_key, keys_configured
from tools.bench import arguments
from tools.harness.scenarios import SCENARIOS, ScenarioResult, run_scenario

COLUMNS = (
    ("scenario", 28),
    ("runs", 4),
    ("kills", 5),
    ("interrupted", 11),
    ("median s", 8),
    ("worst s", 7),
    ("orders", 6),
    ("completed", 9),
    ("declined", 8),
    ("cancelled", 9),
    ("charges", 7),
    ("conf.", 5),
    ("picklists", 9),
    ("shipped", 7),
    ("refunds", 7),
    ("retries", 7),
    ("violations", 10),
    ("run s", 5),
)


def _row(cells: Sequence[object]) -> str:
    return "  ".join(
        str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
        for index, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def _seconds(values: Sequence[float], pick: str) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) if pick == 'median' else max(values):.2f}"


def summarize(name: str, results: Sequence[ScenarioResult]) -> str:
    """One table row for a scenario's runs: recoveries over all runs, effects summed."""
    recoveries = [seconds for result in results for seconds in result.recoveries.values()]
    tallies = [result.tally for result in results]
    return _row(
        (
            name,
            len(results),
            sum(result.kills for result in results),
            len(recoveries),
            _seconds(recoveries, "median"),
            _seconds(recoveries, "worst"),
            sum(t.orders for t in tallies),
            *(
                sum(t.statuses.get(status.value, 0) for t in tallies)
                for status in (
                    OrderStatus.COMPLETED,
                    OrderStatus.PAYMENT_DECLINED,
                    OrderStatus.CANCELLED,
                )
            ),
            sum(t.charges for t in tallies),
            sum(t.confirmation_emails for t in tallies),
            sum(t.picklists for t in tallies),
            sum(t.shipped_emails for t in tallies),
            sum(t.refunds for t in tallies),
            sum(result.retries for result in results),
            sum(len(result.violations) for result in results),
            f"{statistics.mean(result.seconds for result in results):.0f}",
        )
    )


async def bench(names: Sequence[str], runs: int) -> int:
    """Run each scenario ``runs`` times, print the table, return the exit status."""
    if not keys_configured():
        # One key for every run: a stack's own key file goes with its temporary folder.
        os.environ[KEYS_ENV] = generate_key("bench-recovery").encoded()
    print(_row([title for title, _ in COLUMNS]))
    every: list[ScenarioResult] = []
    for name in names:
        results = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
                results.append(await run_scenario(name, Path(folder)))
        every += results
        print(summarize(name, results), flush=True)
        for violation in (v for result in results for v in result.violations):
            print(f"  VIOLATION {violation}", flush=True)
    print(summarize("all worker kills", [r for r in every if r.recoveries]))
    return 1 if any(result.violations for result in every) else 0


def main() -> None:
    """Entry point: ``python -m tools.bench.recovery [--runs N] [--scenario NAME ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=arguments.count, default=3, help="runs per scenario (default 3)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    args = parser.parse_args()
    # PITFALLS 2: leaves without the SDK's runtime shutting down
    run_to_exit(bench(args.scenario or list(SCENARIOS), args.runs))


if __name__ == "__main__":
    main()
