"""Duplicate and missing emails per 1,000 orders, with a keyed mail provider and a keyless one.

Runs crash scenarios (``tools.harness.scenarios``) with the sandbox mail service honouring the
``Idempotency-Key`` as Resend does (``keyed``), or ignoring it as Amazon SES, SendGrid and
Postmark do (``keyless``, ``PROVIDERS_MAIL_KEYLESS=1``), and counts from the mail ledger:

- copies: emails sent beyond the first of their order and template (what a keyless provider
  cannot prevent after a lost answer);
- visible: those among them with a ``Message-ID`` of their own (the copies a mail client would
  show; the order's emails all carry one per order and template, so the rest collapse);
- missing: emails a finished order needed (``tools.harness.checker.emails_needed``) and never sent.

Run from the repository root (each run brings up its own stack in a temporary folder)::

    .venv/bin/python -m tools.bench.mail_keys                       # load-with-faults, 5 runs each
    .venv/bin/python -m tools.bench.mail_keys --runs 1 --mode keyless --scenario kill-providers

Exits 1 if a keyed run sent a copy or missed an email: that is the promise.
"""

import argparse
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orders.client.exit import run_to_exit
from orders.security.keys import KEYS_ENV, generate_key, keys_configured
from sandbox.faults import MAIL_KEYLESS_ENV
from tools.bench import arguments
from tools.harness.checker import emails_needed
from tools.harness.scenarios import SCENARIOS, ScenarioResult, run_scenario

MODES = ("keyed", "keyless")


@dataclass
class Count:
    """Orders run and emails counted, summed over runs."""

    orders: int = 0
    copies: int = 0
    visible: int = 0
    missing: int = 0

    def add(self, other: "Count") -> None:
        """Add another run's counts."""
        self.orders += other.orders
        self.copies += other.copies
        self.visible += other.visible
        self.missing += other.missing

    def per_thousand(self, value: int) -> str:
        """``value`` per 1,000 orders."""
        return f"{1000 * value / self.orders:.1f}" if self.orders else "-"


def count(result: ScenarioResult) -> Count:
    """What one run sent too often or not at all, from its ledger's messages."""
    by_email: dict[tuple[str, str], list[str]] = {}
    for message in result.messages:
        key = (message["order_id"], message["template"])
        by_email.setdefault(key, []).append(message.get("message_id") or message["id"])
    copies = sum(len(ids) - 1 for ids in by_email.values())
    visible = sum(len(set(ids)) - 1 for ids in by_email.values())
    missing = 0
    for order_id, view in result.evidence.outcomes.items():
        if view is not None and view.status.is_final:
            sent = Counter(template for (oid, template) in by_email if oid == order_id)
            missing += sum(1 for template in emails_needed(view.status) if not sent[template])
    return Count(len(result.evidence.outcomes), copies, visible, missing)


@contextmanager
def mail_mode(mode: str) -> Iterator[None]:
    """Start the runs' providers keyless or keyed (they inherit this process's environment)."""
    before = os.environ.get(MAIL_KEYLESS_ENV)
    os.environ[MAIL_KEYLESS_ENV] = "1" if mode == "keyless" else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MAIL_KEYLESS_ENV, None)
        else:
            os.environ[MAIL_KEYLESS_ENV] = before


async def bench(modes: Sequence[str], names: Sequence[str], runs: int) -> int:
    """Run each scenario ``runs`` times per mode, print the table, return the exit status."""
    if not keys_configured():
        os.environ[KEYS_ENV] = generate_key("bench-mail-keys").encoded()
    print(f"{'mode':8} {'scenario':26} {'orders':>6} {'copies':>7} {'visible':>7} "
          f"{'missing':>7}  (per 1,000 orders)")  # fmt: skip
    broken = False
    for mode in modes:
        total = Count()
        for name in names:
            counted = Count()
            for _ in range(runs):
                counted.add(await _run(mode, name))
            total.add(counted)
            print(_line(mode, name, counted), flush=True)
        print(_line(mode, "all", total), flush=True)
        broken |= mode == "keyed" and (total.copies > 0 or total.missing > 0)
    return 1 if broken else 0


async def _run(mode: str, name: str) -> Count:
    """One run of scenario ``name`` in ``mode``, counted from the ledger it left."""
    with mail_mode(mode), tempfile.TemporaryDirectory(prefix=f"bench-mail-{name}-") as folder:
        result = await run_scenario(name, Path(folder), keep_messages=True)
    return count(result)


def _line(mode: str, name: str, counted: Count) -> str:
    cells = (counted.copies, counted.visible, counted.missing)
    rates = " ".join(f"{counted.per_thousand(value):>7}" for value in cells)
    return f"{mode:8} {name:26} {counted.orders:>6} {rates}"


def main() -> None:
    """Entry point: ``python -m tools.bench.mail_keys [--runs N] [--mode M] [--scenario S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=arguments.count, default=5, help="runs per scenario (default 5)"
    )
    parser.add_argument("--mode", action="append", choices=MODES, help="default: both")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: load-with-faults)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # PITFALLS 2: leaves without the SDK's runtime shutting down
    run_to_exit(bench(args.mode or list(MODES), args.scenario or ["load-with-faults"], args.runs))


if __name__ == "__main__":
    main()
