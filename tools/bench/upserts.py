"""What a search-attribute upsert costs the Temporal server: ``python -m tools.bench.upserts``.

An upsert is an event and a write to the visibility store (on the dev server, a row in a SQLite
table with an index per search attribute, all rewritten). The order workflow upserts its status
as it moves, so this is the price of each status that reaches the Web UI's list. It starts its
own dev server as the stack does (``tools.stack.processes.start_temporal``: SQLite with WAL) and
an in-process worker, then runs rounds of the same workflow (three no-op activities in sequence)
with no upsert and with ``--upserts`` of them, alternating, and reads the server's CPU from
``/proc`` around each round. It prints the median server CPU per workflow of each kind and the
difference per upsert. Nothing else should run meanwhile: the figure is the server's own CPU,
but a busy machine inflates it.

    .venv/bin/python -m tools.bench.upserts                  # 5 rounds of 60 workflows each kind
    .venv/bin/python -m tools.bench.upserts --rounds 9 --upserts 3
"""

import argparse
import asyncio
import statistics
import tempfile
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # the measuring side's, never the workflow's
    from orders.client.exit import exit_now
    from orders.domain.search_attributes import ORDER_STATUS
    from tools.bench.arguments import count, rounds_parser
    from tools.bench.figures import rounds_summary
    from tools.bench.procstat import process_usage
    from tools.harness.drive import gather_limited
    from tools.stack.processes import free_port, start_temporal

TASK_QUEUE = "bench-upserts"
STEPS = 3


@activity.defn
async def step(name: str) -> str:
    """A no-op step: the workflow's shape, not its work, is measured."""
    return name


@workflow.defn
class UpsertingWorkflow:
    """Three no-op activities in sequence, upserting a status after the first ``upserts``."""

    @workflow.run
    async def run(self, upserts: int) -> None:
        """Run the steps; the extra upserts (beyond one per step) come after the last."""
        for index in range(max(STEPS, upserts)):
            if index < STEPS:
                await workflow.execute_activity(
                    step, f"step-{index}", start_to_close_timeout=timedelta(seconds=30)
                )
            if index < upserts:
                workflow.upsert_search_attributes([ORDER_STATUS.value_set(f"status-{index}")])


async def server_ms_per_workflow(
    client: Client, server_pid: int, upserts: int, workflows: int, in_flight: int
) -> float:
    """Run ``workflows`` of the kind, ``in_flight`` at a time; the server's CPU ms per one."""
    before = process_usage(server_pid).cpu_s
    await gather_limited(
        (
            client.execute_workflow(
                UpsertingWorkflow.run, upserts, id=f"upserts-{uuid.uuid4()}", task_queue=TASK_QUEUE
            )
            for _ in range(workflows)
        ),
        in_flight,
    )
    return (process_usage(server_pid).cpu_s - before) * 1000 / workflows


async def measure(args: argparse.Namespace) -> dict[int, list[float]]:
    """Alternate rounds of each kind against one dev server; server CPU ms per workflow."""
    with tempfile.TemporaryDirectory(prefix="bench-upserts-") as folder:
        port = free_port()
        server = start_temporal(Path(folder), port)
        try:
            client = await Client.connect(f"127.0.0.1:{port}")
            async with Worker(
                client, task_queue=TASK_QUEUE, workflows=[UpsertingWorkflow], activities=[step]
            ):
                kinds = (0, args.upserts)
                for upserts in kinds:  # warm up both kinds
                    await server_ms_per_workflow(client, server.popen.pid, upserts, 10, 10)
                rounds: dict[int, list[float]] = {kind: [] for kind in kinds}
                for _ in range(args.rounds):
                    for upserts in kinds:
                        rounds[upserts].append(
                            await server_ms_per_workflow(
                                client, server.popen.pid, upserts, args.workflows, args.in_flight
                            )
                        )
                return rounds
        finally:
            server.stop()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: rounds, workflows per round, workflows in flight, upserts."""
    parser = rounds_parser(
        __doc__.splitlines()[0], ("workflows", 60), in_flight=20, rounds_help="rounds of each kind"
    )
    parser.add_argument("--upserts", type=count, default=5, help="upserts of the other kind (5)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: measure, print each kind's median and the cost of one upsert."""
    args = parse_args(argv)
    rounds = asyncio.run(measure(args))
    plain, upserting = (statistics.median(rounds[kind]) for kind in (0, args.upserts))
    for kind, figures in rounds.items():
        print(f"{kind} upserts: {rounds_summary(figures)}")
    print(f"one upsert: {(upserting - plain) / args.upserts:.2f} ms of server CPU")
    exit_now(0)


if __name__ == "__main__":
    main()
