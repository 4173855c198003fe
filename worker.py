"""The worker: hosts the order workflow and its activities on the orders task queue.

Connection settings come from Temporal's standard client configuration (see
``orders.client.temporal``);
providers from ``PROVIDERS_URL`` and ``PROVIDERS_API_KEY``. Run more copies to scale out.
``--metrics-port`` (or ``ORDERS_METRICS_PORT``) serves Prometheus metrics; the standard
``OTEL_*`` variables turn on tracing (``orders.telemetry.tracing``). ``ORDERS_WORKER_VERSIONING=on``
runs it as the Worker Deployment Version ``ORDERS_DEPLOYMENT_NAME``.``ORDERS_BUILD_ID``
(``orders.config.settings.WorkerVersioning``); Temporal then sends it tasks once that version is
current.
SIGINT or SIGTERM stops it gracefully: it stops polling and lets running activities finish.
"""

import argparse
import asyncio
import compileall
import logging
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.converter import DataConverter
from temporalio.worker import Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.mail import MailActivities
from activities.payment import DisputeActivities, PaymentActivities
from activities.provider_client import ProviderClients, open_provider_clients
from activities.warehouse import WarehouseActivities
from orders.client.exit import exit_now
from orders.client.temporal import TemporalConnectionError, connect
from orders.config.settings import (
    TASK_QUEUE,
    CapacityError,
    PaymentReturnUrl,
    ProviderSettings,
    ReturnUrlError,
    VersioningError,
    WorkerCapacity,
    WorkerVersioning,
)
from orders.intake.activities import IntakeActivities, PaymentOutcomes
from orders.intake.contract import IntakePolicy, IntakePolicyError
from orders.intake.workflow import IntakeWorkflow
from orders.telemetry import tracing
from orders.telemetry.metrics import (
    METRICS_PORT_ENV,
    MetricsConfigError,
    metrics_port_from_env,
    metrics_runtime,
    metrics_url,
)
from orders.workflow_runner import runner_for
from workflows.dispute import DisputeWorkflow
from workflows.order import OrderWorkflow
from workflows.policy import STICKY_QUEUE_TIMEOUT, VERSIONING_BEHAVIOR

# Deterministic, side-effect-free modules loaded once instead of per workflow run.
_PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "orders",  # models, rules, metrics names: deterministic and side-effect free at import
    "activities",
    "aiohttp",
    "httpx",  # not used by workflows; test modules that define some import it
    "opentelemetry",
    "prometheus_client",  # not used by workflows; test modules that define some import it
)


def cache_bytecode(*workflow_classes: type) -> None:
    """Write the bytecode of the packages that hold these workflows, if it is missing.

    The sandbox imports a workflow's modules afresh for every workflow run. Without cached
    bytecode (``PYTHONDONTWRITEBYTECODE=1``, a fresh checkout) every one of those imports
    compiled the source again: 5% of the worker's CPU at 50 orders in flight (py-spy). Where
    the folder is read-only this does nothing, and imports compile as before.
    """
    for workflow_class in workflow_classes:
        module_file = sys.modules[workflow_class.__module__].__file__
        if module_file is not None:
            compileall.compile_dir(Path(module_file).parent, maxlevels=0, quiet=2)


def sandboxed_runner(
    data_converter: DataConverter, workflow_package: str = "workflows"
) -> SandboxedWorkflowRunner:
    """The workflow sandbox for a worker with ``data_converter``, tuned for speed.

    It passes deterministic modules through, and skips the serialization-context question when
    the converter's codec takes no context (``orders.workflow_runner``).

    ``workflow_package`` holds the workflows; it is passed through too (its modules keep no
    state between runs), so a new order does not run the workflow modules' code again: that
    was 3% of the worker's CPU samples at 50 orders in flight. The replay tests
    (``tests/test_replay.py``) are what catch a non-deterministic change to them.
    """
    modules = (*_PASSTHROUGH, workflow_package)
    return runner_for(
        data_converter, SandboxRestrictions.default.with_passthrough_modules(*modules)
    )


def capacity_options(capacity: WorkerCapacity | None = None) -> dict[str, Any]:
    """The ``Worker`` options that bound how much it takes on (``WorkerCapacity.from_env``)."""
    capacity = capacity or WorkerCapacity.from_env()
    return {
        "max_concurrent_workflow_tasks": capacity.workflow_tasks,
        "max_concurrent_activities": capacity.activities,
        "max_concurrent_local_activities": capacity.local_activities,
        "max_cached_workflows": capacity.cached_workflows,
    }


def deployment_config(versioning: WorkerVersioning | None) -> WorkerDeploymentConfig | None:
    """The SDK's Worker Versioning options for ``versioning``; ``None`` when it is off.

    Every workflow of the worker auto-upgrades (``workflows.policy.VERSIONING_BEHAVIOR``).
    """
    if versioning is None or not versioning.enabled:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(versioning.deployment_name, versioning.build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VERSIONING_BEHAVIOR,
    )


def build_worker(
    client: Client,
    providers: ProviderClients,
    task_queue: str = TASK_QUEUE,
    intake_policy: IntakePolicy | None = None,
    capacity: WorkerCapacity | None = None,
    versioning: WorkerVersioning | None = None,
    return_url: PaymentReturnUrl | None = None,
) -> Worker:
    """A worker for the order workflow, the intake breaker, and every activity they schedule.

    ``intake_policy`` defaults to ``IntakePolicy.from_env()`` (the ``INTAKE_*`` variables),
    ``capacity`` to ``WorkerCapacity.from_env()`` (the ``ORDERS_WORKER_*`` variables),
    ``return_url`` (where 3-D Secure sends the customer back) to
    ``PaymentReturnUrl.from_env()`` (``ORDERS_PAYMENT_RETURN_URL``).
    ``versioning`` (``None``: off) makes it a Worker Deployment Version; ``worker.py`` reads it
    from ``WorkerVersioning.from_env()``.
    """
    outcomes = PaymentOutcomes(client, intake_policy or IntakePolicy.from_env())
    payment = PaymentActivities(
        providers.gateway, outcomes, return_url or PaymentReturnUrl.from_env()
    )
    intake = IntakeActivities(providers.gateway, outcomes)
    mail = MailActivities(providers.mail)
    warehouse = WarehouseActivities(providers.warehouse)
    disputes = DisputeActivities(providers.gateway)
    cache_bytecode(OrderWorkflow, IntakeWorkflow, DisputeWorkflow)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[OrderWorkflow, IntakeWorkflow, DisputeWorkflow],
        activities=[
            payment.create_payment_intent,
            payment.authorize_payment,
            payment.capture_payment,
            payment.cancel_payment,
            payment.refund_payment,
            payment.follow_refund,
            payment.follow_authentication,
            mail.send_email,
            warehouse.send_picklist,
            warehouse.release_picklist,
            warehouse.cancel_picklist,
            intake.probe_payments,
            disputes.order_of_payment,
        ],
        workflow_runner=sandboxed_runner(client.data_converter),
        graceful_shutdown_timeout=timedelta(seconds=5),
        # A killed worker's orders move to a live worker after this, not after 10 s.
        sticky_queue_schedule_to_start_timeout=STICKY_QUEUE_TIMEOUT,
        deployment_config=deployment_config(versioning),
        **capacity_options(capacity),
    )


async def run(
    profile: str | None,
    metrics_port: int | None = None,
    capacity: WorkerCapacity | None = None,
    versioning: WorkerVersioning | None = None,
    return_url: PaymentReturnUrl | None = None,
) -> None:
    """Run a worker until SIGINT or SIGTERM, serving Prometheus metrics on ``metrics_port``."""
    tracing.configure("orders-worker")
    runtime = metrics_runtime(metrics_port)
    client = await connect(profile, runtime=runtime, interceptors=tracing.client_interceptors())
    if metrics_port is not None:
        logging.getLogger("orders").info("metrics at %s", metrics_url(metrics_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with open_provider_clients(ProviderSettings.from_env()) as providers:
        worker = build_worker(
            client, providers, capacity=capacity, versioning=versioning, return_url=return_url
        )
        async with worker:
            logging.getLogger("orders").info(
                "worker polling task queue %r on %s%s",
                TASK_QUEUE,
                client.service_client.config.target_host,
                _versioning_note(versioning),
            )
            await stop.wait()
            logging.getLogger("orders").info("shutting down: finishing running activities")


def _versioning_note(versioning: WorkerVersioning | None) -> str:
    if versioning is None or not versioning.enabled:
        return " (unversioned)"
    return (
        f" as deployment version {versioning.version} (it gets tasks once that version is "
        "current: temporal worker deployment set-current-version)"
    )


def main() -> None:
    """Entry point: ``python worker.py [--profile NAME]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="Temporal client config profile (default: default)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help=f"serve Prometheus metrics on this port (default: {METRICS_PORT_ENV}, else none)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("temporalio").setLevel(logging.WARNING)
    # Stripe's library logs two INFO lines per request; each step logs its own outcome once.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    status = 0
    try:
        port = args.metrics_port if args.metrics_port is not None else metrics_port_from_env()
        capacity = WorkerCapacity.from_env()  # a bad setting stops it before it connects
        versioning = WorkerVersioning.from_env()
        return_url = PaymentReturnUrl.from_env()
        asyncio.run(run(args.profile, port, capacity, versioning, return_url))
    except (
        TemporalConnectionError,
        MetricsConfigError,
        IntakePolicyError,
        CapacityError,
        VersioningError,
        ReturnUrlError,
    ) as err:
        logging.getLogger("orders").error("%s", err)
        status = 1
    finally:
        tracing.shutdown()  # os._exit skips OpenTelemetry's exit hook: send the last spans now
    exit_now(status)


if __name__ == "__main__":
    main()
