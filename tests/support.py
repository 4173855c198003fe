"""Helpers shared by the tests: sample orders, waiting on an order's status, a worker."""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.provider_client import open_provider_clients
from orders.client.orders import order_status, start_order
from orders.client.temporal import DATA_CONVERTER, register_search_attributes
from orders.config.settings import ProviderSettings
from orders.domain.models import Order, OrderView
from orders.domain.search_attributes import ORDER_STATUS
from orders.domain.status import OrderStatus
from sandbox.admin_client import SandboxAdmin
from worker import build_worker

if TYPE_CHECKING:
    import stripe


async def start_time_skipping() -> WorkflowEnvironment:
    """Temporal's time-skipping test server with the project's data converter and attributes.

    It gets 30 s to come up instead of the SDK's 5: in a full run on a busy 2-core machine it
    once took longer.
    """
    # Imported here: test modules that define workflows import this one inside the sandbox,
    # where stack.processes may not resolve paths at import time.
    from tools.stack.processes import find_binary, free_port

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        port=free_port(),  # not the SDK's bind(0): see free_port
        data_converter=DATA_CONVERTER,
        test_server_startup_timeout=timedelta(seconds=30),
    )
    await register_search_attributes(env.client)
    return env


def make_order(**overrides: Any) -> Order:
    """A valid order with a unique id; keyword arguments replace top-level fields."""
    data: dict[str, Any] = {
        "id": f"test-{uuid.uuid4().hex[:12]}",
        "customer": {"id": "cust-1", "name": "Grace Hopper", "email": "grace@example.com"},
        "items": [
            {"sku": "SKU-MUG", "quantity": 2, "unit_price": 1250},
            {"sku": "SKU-TEE", "quantity": 1, "unit_price": 2000},
        ],
        "currency": "USD",
        "payment_method": "pm_card_visa",
        "shipping_address": {
            "name": "Grace Hopper",
            "line1": "1 Navy Way",
            "city": "Arlington",
            "postal_code": "22202",
            "country": "US",
        },
    }
    data.update(overrides)
    return Order.model_validate(data)


async def until_view(
    client: Client,
    order_id: str,
    condition: Callable[[OrderView], bool],
    what: str,
    within: float = 30.0,
) -> OrderView:
    """Poll the order's status query until ``condition`` holds for its read model."""
    deadline = time.monotonic() + within
    view = None
    while time.monotonic() < deadline:
        view = await order_status(client, order_id)
        if condition(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"{order_id} did not reach {what}; last view: {view}")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 30.0) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


async def until_cancel_request_handled(handle: WorkflowHandle[Any, Any]) -> None:
    """Wait until a workflow task completed after the workflow's cancel request."""

    async def handled() -> bool:
        kinds = [event.event_type async for event in handle.fetch_history_events()]
        requested = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
        after = kinds[kinds.index(requested) :] if requested in kinds else []
        return EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after

    await eventually(handled, "the worker handled the cancel request")


async def until_listed(client: Client, order_id: str, status: OrderStatus) -> None:
    """Wait until Temporal's visibility store lists the order under ``status``.

    Listings read visibility, which the order's search attributes reach a moment after its
    query already answers with the new status: a listing made right then can miss it.
    """
    query = f"WorkflowId = '{order_id}' AND {ORDER_STATUS.name} = '{status.value}'"

    async def listed() -> bool:
        return (await client.count_workflows(query)).count == 1

    await eventually(listed, f"{order_id} is listed as {status.value}")


async def wait_for_status(
    client: Client, order_id: str, status: OrderStatus, within: float = 30.0
) -> OrderView:
    """Poll the order's query until it reaches ``status``."""
    return await until_view(client, order_id, lambda v: v.status == status, status.value, within)


async def order_awaiting_shipment(client: Client, task_queue: str, **overrides: Any) -> Order:
    """Place a valid order and wait until it is paid, confirmed, picked and waiting to ship."""
    order = make_order(**overrides)
    await start_order(client, order, task_queue)
    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT)
    return order


@asynccontextmanager
async def running_worker(
    client: Client, sandbox: SandboxAdmin, queue: str | None = None
) -> AsyncIterator[str]:
    """A worker in this process on a task queue of its own, calling the sandbox providers."""
    queue = queue or f"orders-test-{uuid.uuid4().hex[:8]}"
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with (
        open_provider_clients(settings) as providers,
        build_worker(client, providers, task_queue=queue),
    ):
        yield queue


async def run_starter(
    *args: str, address: str, task_queue: str = "unused"
) -> subprocess.CompletedProcess[str]:
    """Run starter.py in a thread: a worker of this process shares this event loop."""
    # Imported here: test modules that define workflows import this module inside the sandbox,
    # which forbids the path resolution stack.processes does at import.
    from tools.stack.processes import ROOT

    env = {**os.environ, "TEMPORAL_ADDRESS": address, "ORDERS_TASK_QUEUE": task_queue}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "starter.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def worker_refusal(setting: str, value: str) -> str:
    """Start ``worker.py`` with ``setting=value``: it must stop at once with exit 1 and a clear
    line, no traceback; returns what it printed on stderr."""
    from tools.stack.processes import ROOT  # see run_starter

    done = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env={**os.environ, setting: value},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@contextmanager
def run_command(
    args: list[str], env: Mapping[str, str], log_path: Path, ready: str, within: float
) -> Iterator[str]:
    """``python -m tools.stack.up ARGS`` (what ``./scripts/run`` runs): yields its output once it
    printed ``ready``; Ctrl-C at the end, as a person would (SIGKILL if it does not stop)."""
    from tools.stack.processes import ROOT, ManagedProcess  # see run_starter

    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tools.stack.up", *args], cwd=ROOT, env=dict(env), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    process = ManagedProcess("run", popen, log_path, log_path.open("ab"))
    try:
        deadline = time.monotonic() + within
        while ready not in process.output():
            assert process.alive, f"the run command exited:\n{process.log_tail()}"
            assert time.monotonic() < deadline, f"no banner:\n{process.log_tail()}"
            time.sleep(0.2)
        yield process.output()
    finally:
        process.send(signal.SIGINT)
        try:
            popen.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


@asynccontextmanager
async def stripe_against(sandbox: SandboxAdmin) -> AsyncIterator["stripe.StripeClient"]:
    """Stripe's official library against the sandbox gateway, its own retries off (as the
    worker's: every retry is Temporal's, under the step's key)."""
    # Imported here: test modules that define workflows import this module inside the sandbox,
    # where the library's HTTP stack may not load.
    import stripe

    http = stripe.AIOHTTPClient()
    try:
        yield stripe.StripeClient(
            sandbox.api_key,
            base_addresses={"api": sandbox.base_url},
            http_client=http,
            max_network_retries=0,
        )
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


AUTHENTICATION_LINK = r"http://\S+/payments/authenticate/\S+"
"""The 3-D Secure link in the customer's email
(``orders.domain.emails.authentication_required``)."""


async def authentication_link(sandbox: SandboxAdmin, order_id: str) -> str:
    """The 3-D Secure link the order emailed its customer, once the email is sent."""
    import re

    def sent() -> list[dict[str, Any]]:
        template = "authentication-required"
        return sandbox.list("/mail/messages", order_id=order_id, template=template)

    async def emailed() -> bool:
        return bool(sent())

    await eventually(emailed, f"the authentication email of {order_id}")
    found = re.search(AUTHENTICATION_LINK, sent()[0]["body"])
    assert found, sent()[0]["body"]
    return found.group(0)


async def authenticate(sandbox: SandboxAdmin, order_id: str, outcome: str = "complete") -> None:
    """The customer answers 3-D Secure on the sandbox's page (``complete`` or ``fail``)."""
    import httpx

    link = await authentication_link(sandbox, order_id)
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{link}&outcome={outcome}")
    assert answer.status_code == 200, answer.text


def _free_port() -> int:
    # Imported here, as in start_time_skipping: tools.stack may not load inside the sandbox.
    from tools.stack.processes import free_port

    return free_port()


@dataclass
class Rig:
    """Providers and a webhook receiver as real processes, each restartable on its port.

    ``receiver_env`` is what the receiver starts with, ``providers_env`` what the providers
    start with given the rig (its receiver's address): the warehouse's webhooks, or Stripe's
    events, each test module with its own secrets and retry pace.
    """

    temporal_address: str
    folder: Path
    api_key: str
    receiver_env: Mapping[str, str]
    providers_env: Callable[["Rig"], Mapping[str, str]]
    task_queue: str = field(default_factory=lambda: f"orders-test-{uuid.uuid4().hex[:8]}")
    receiver_port: int = field(default_factory=_free_port)
    providers_port: int = field(default_factory=_free_port)
    receiver: Any = None
    """The receiver's ``ManagedProcess`` while it runs."""
    providers: Any = None
    """The providers' ``ManagedProcess`` while they run."""

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    @property
    def providers_url(self) -> str:
        return f"http://127.0.0.1:{self.providers_port}"

    def start_receiver(self) -> None:
        from tools.stack.processes import start_webhook_receiver

        log = self.folder / "receiver.log"
        self.receiver = start_webhook_receiver(
            self.receiver_port, self.temporal_address, log, dict(self.receiver_env)
        )

    def start_providers(self) -> None:
        from tools.stack.processes import start_providers

        ledger, env = self.folder / "ledger.sqlite3", dict(self.providers_env(self))
        port, key = self.providers_port, self.api_key
        self.providers = start_providers(ledger, port, key, self.folder, env)

    def stop(self) -> None:
        for process in (self.providers, self.receiver):
            if process is not None and process.alive:
                process.stop()


@contextmanager
def running_rig(rig: Rig) -> Iterator[Rig]:
    """Start the rig's receiver, then its providers; stop both after."""
    try:
        rig.start_receiver()
        rig.start_providers()
        yield rig
    finally:
        rig.stop()
