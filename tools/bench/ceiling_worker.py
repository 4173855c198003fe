"""The ceiling's worker process: ``python -m tools.bench.ceiling_worker``, started by the benchmark.

The same connection settings as ``worker.py`` (Temporal's client configuration, the project's
data converter with its encryption), the same runtime (the SDK's metrics served for Prometheus
with ``--metrics-port``, as the stack runs every worker), the same sandbox
(``worker.sandboxed_runner``) and the same worker options, on its own task queue, so the
benchmark can read its CPU time apart from the real worker's. SIGINT or SIGTERM stops it gracefully.
"""

import argparse
import asyncio
import logging
import signal
from datetime import timedelta

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from orders.client.exit import exit_now
from orders.client.temporal import TemporalConnectionError, connect
from orders.config.settings import CapacityError
from orders.telemetry.metrics import MetricsConfigError, metrics_runtime
from tools.bench import ceiling_activities
from tools.bench.ceiling import CeilingOrderWorkflow
from tools.bench.ceiling_activities import CEILING_TASK_QUEUE
from worker import cache_bytecode, capacity_options, sandboxed_runner
from workflows.policy import STICKY_QUEUE_TIMEOUT

READY_LINE = "ceiling worker polling"
"""Logged once the worker polls; the benchmark waits for it."""


def ceiling_runner(data_converter: DataConverter) -> SandboxedWorkflowRunner:
    """``worker.py``'s sandbox, with the ceiling's package passed through as the workflows' is."""
    return sandboxed_runner(data_converter, CeilingOrderWorkflow.__module__.rpartition(".")[0])


def build_ceiling_worker(client: Client, task_queue: str = CEILING_TASK_QUEUE) -> Worker:
    """A worker for the ceiling workflow with the options of ``worker.build_worker``."""
    cache_bytecode(CeilingOrderWorkflow)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[CeilingOrderWorkflow],
        activities=list(ceiling_activities.ALL),
        workflow_runner=ceiling_runner(client.data_converter),
        graceful_shutdown_timeout=timedelta(seconds=5),
        sticky_queue_schedule_to_start_timeout=STICKY_QUEUE_TIMEOUT,
        **capacity_options(),
    )


async def run(task_queue: str, metrics_port: int | None = None) -> None:
    """Run the ceiling worker until SIGINT or SIGTERM, with metrics on ``metrics_port``."""
    client = await connect(runtime=metrics_runtime(metrics_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with build_ceiling_worker(client, task_queue):
        logging.getLogger("bench").info("%s task queue %r", READY_LINE, task_queue)
        await stop.wait()


def main() -> None:
    """Entry point: ``python -m tools.bench.ceiling_worker [--task-queue Q] [--metrics-port N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-queue", default=CEILING_TASK_QUEUE)
    parser.add_argument(
        "--metrics-port", type=int, help="serve the SDK's metrics here, as worker.py does"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("temporalio").setLevel(logging.WARNING)
    status = 0
    try:
        asyncio.run(run(args.task_queue, args.metrics_port))
    except (TemporalConnectionError, CapacityError, MetricsConfigError) as err:
        logging.getLogger("bench").error("%s", err)
        status = 1
    exit_now(status)


if __name__ == "__main__":
    main()
