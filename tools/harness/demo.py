"""See the promise live: a worker is SIGKILLed mid-flight, and every order is still charged once.

    ./scripts/demo [--orders 10] [--keep]

Brings up its own Temporal dev server, providers and worker in a temporary folder on free
ports. Starts the orders (one pays with a card that is declined), holds three of them in the
middle of a step at the providers (a capture, a confirmation email, a picklist), SIGKILLs the
worker, lets the providers complete those three requests although the worker that sent them
is dead, restarts the worker, ships every order, and prints the ledger next to the orders.
Exits 1 if the checker finds a broken promise.
"""

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from orders.client.exit import exit_now
from orders.domain.status import EmailTemplate
from sandbox.admin_client import SERVICES, Effects
from tools.harness.checker import Evidence, check, gather_evidence
from tools.harness.scenarios import (
    Run,
    held_steps,
    hold_one_order_per_step,
    wait_held_at_each_step,
)
from tools.stack.local import LocalStack

HEADERS = (
    "order",
    "status",
    "charges",
    "refunds",
    "confirmation emails",
    "picklists",
    "shipped emails",
)
_started = time.monotonic()


def say(line: str) -> None:
    """Print one line of the story with the seconds since the demo began."""
    print(f"[{time.monotonic() - _started:5.1f}s] {line}", flush=True)


def table(evidence: Evidence) -> str:
    """The orders and their effects at the providers, side by side."""
    rows = [HEADERS]
    for order_id, view in evidence.outcomes.items():
        effects = evidence.ledger.get(order_id, Effects())
        rows.append(
            (
                order_id,
                view.status.value if view else "LOST",
                str(effects.charges),
                str(effects.refunds),
                str(effects.emails_of(EmailTemplate.ORDER_CONFIRMATION)),
                str(effects.picklists),
                str(effects.emails_of(EmailTemplate.ORDER_SHIPPED)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join([lines[0], "-" * max(map(len, lines)), *lines[1:]])


async def demo(run: Run, orders: int) -> int:
    """Tell the story on a running stack; return the exit status."""
    hold_one_order_per_step(run.admin)
    ids = await run.start(orders - 1)
    ids += await run.start(1, declined_every=1)
    say(f"started {len(ids)} orders; {ids[-1]} pays with a card the gateway will decline")
    await wait_held_at_each_step(run.admin)
    held = held_steps(run.admin)
    for order_id, where in held.items():
        say(f"  {order_id}: {where} at the provider, mid-step")
    worker = run.stack.workers["worker-1"]
    say(f"SIGKILL worker-1 (pid {worker.popen.pid}): no goodbye, no cleanup")
    killed_at = await run.kill_worker(restart=False)
    for service in SERVICES:
        run.admin.release(service)
    say("the providers now complete the 3 held requests: the effects happen, but the worker")
    say("  that asked is dead and never hears. Without idempotency keys a retry would repeat them.")
    say("restarting worker-1; Temporal hands it every order from its history")
    await asyncio.to_thread(run.stack.start_worker, "worker-1")
    say("shipping each order as it gets to awaiting-shipment ...")
    await run.finish()
    await run.time_recoveries(list(held), killed_at)
    for order_id, seconds in run.recoveries.items():
        say(f"  {order_id} moved on {seconds:.1f}s after the kill")
    evidence = await gather_evidence(run.client, run.admin, run.placed.values())
    print()
    print(table(evidence))
    print()
    violations = check(evidence)
    for violation in violations:
        print(f"VIOLATION {violation}")
    if violations:
        print(f"VERDICT: {len(violations)} broken promise(s); see above")
        return 1
    paid = sum(1 for view in evidence.outcomes.values() if view and view.transaction_id)
    print(
        f"VERDICT: OK. {len(ids)} orders, none lost; {paid} paid orders, each charged once with "
        "one confirmation,\n  one picklist and one shipped email; the declined order was never "
        "charged."
    )
    return 0


async def main(orders: int, data_dir: Path) -> int:
    """Bring up the stack, run the demo, stop everything."""
    say(f"bringing up Temporal, the providers and worker-1 in {data_dir}")
    with LocalStack(data_dir) as stack:
        await asyncio.to_thread(stack.start, 1)
        admin = stack.admin()
        try:
            return await demo(Run("demo", stack, await stack.connect(), admin), orders)
        finally:
            admin.close()
            say("stopping everything")


def cli() -> None:
    """Entry point: ``python -m tools.harness.demo [--orders N] [--keep]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10, help="how many orders (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="orders-demo-"))
    try:
        status = asyncio.run(main(max(args.orders, 4), folder))
    except KeyboardInterrupt:
        status = 130
    except Exception as err:  # a part would not start or an order never finished
        print(f"error: {err!r}; logs are in {folder / 'logs'}", file=sys.stderr)
        args.keep, status = True, 2
    if args.keep:
        print(f"data and logs kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    exit_now(status)  # PITFALLS 2: leave without the SDK's runtime shutting down


if __name__ == "__main__":
    cli()
