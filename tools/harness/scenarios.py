"""Crash scenarios on real processes: kill, pause or break a part mid-flight, then judge.

Each scenario runs on its own ``LocalStack`` (Temporal on a SQLite file, providers with their
ledger, ``worker.py`` processes) and returns a ``ScenarioResult``: the checker's verdict, the
effects added up, and how long each interrupted order took to recover. The crash tests assert
on it; the benchmark runs it many times and prints the figures.

Kills are timed deterministically by holding a step's request inside the provider
(``hold_next`` with a ``key_suffix`` naming the step): once ``held()`` shows it, the worker is
in the middle of that step, and it is killed there.
"""

import asyncio
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from orders.client.errors import OrderError
from orders.client.orders import (
    OrderRefused,
    cancel_order,
    order_status,
    request_cancel,
    resolve_order,
)
from orders.domain.models import OrderView, ResolveRequest
from orders.domain.status import EmailTemplate, OperatorAction, OrderStatus, Step
from sandbox.admin_client import SERVICES, SandboxAdmin
from tools.harness.checker import Evidence, Tally, Violation, check, gather_evidence, tally
from tools.harness.drive import (
    DECLINED_CARD,
    Placed,
    finish_orders,
    gather_limited,
    local_activity,
    lost_with,
    recovery_seconds,
    retried_attempts,
    ship,
    start_orders,
    wait_for_count,
    wait_until,
)
from tools.stack.local import LocalStack
from tools.stack.processes import free_port

DEADLINE = 120.0
"""Generous bound for any wait, only so that a broken run fails instead of hanging."""


@dataclass
class Run:
    """A scenario's stack and clients, plus the kills it has made."""

    name: str
    stack: LocalStack
    client: Client
    admin: SandboxAdmin
    order_ids: list[str] = field(default_factory=list)
    placed: dict[str, Placed] = field(default_factory=dict)
    """Order id -> the order as placed and the end the scenario means it to reach."""
    killed: dict[str, float] = field(default_factory=dict)
    """Temporal identity (``pid@host``) of each killed worker -> when it was killed."""
    recoveries: dict[str, float] = field(default_factory=dict)
    """Order id -> seconds from a worker's SIGKILL to the order's next step done."""
    labels: dict[str, str] = field(default_factory=dict)
    """Order id -> where it was interrupted, for reports."""
    fired: dict[str, int] = field(default_factory=dict)
    """What the scenario's faults did, counted where they acted (``held captures at the kill``:
    1): its proof that they fired, which the tests check before judging the outcome."""

    def next_id(self, ahead: int = 0) -> str:
        """The id ``start`` gives its next order (``ahead``: that many after it)."""
        return f"{self.name}-{len(self.order_ids) + ahead + 1:03d}"

    async def start(
        self, count: int, declined_every: int = 0, card: str = "pm_card_visa"
    ) -> list[str]:
        """Start ``count`` orders; every ``declined_every``-th one pays with a declined card.

        The others pay with ``card``.
        """
        ids = [self.next_id(i) for i in range(count)]
        declined = {ids[i] for i in range(count) if declined_every and i % declined_every == 0}
        placed = [Placed.sample(oid, DECLINED_CARD if oid in declined else card) for oid in ids]
        await start_orders(self.client, [entry.order for entry in placed])
        self.order_ids += ids
        self.placed.update((entry.order_id, entry) for entry in placed)
        return ids

    def meant_cancelled(self, order_ids: Collection[str]) -> None:
        """Mark orders the scenario cancels: they must end cancelled."""
        for order_id in order_ids:
            self.placed[order_id] = replace(self.placed[order_id], meant=OrderStatus.CANCELLED)

    async def kill_worker(self, name: str = "worker-1", restart: bool = True) -> float:
        """SIGKILL a worker (then start it again); returns when it was killed."""
        identity = f"{self.stack.workers[name].popen.pid}@{socket.gethostname()}"
        killed_at = await asyncio.to_thread(self.stack.kill_worker, name)
        self.killed[identity] = killed_at
        if restart:
            await asyncio.to_thread(self.stack.start_worker, name)
        return killed_at

    async def time_recoveries(self, order_ids: list[str], killed_at: float) -> None:
        """Record how long each order took to complete a step after the kill."""
        for order_id in order_ids:
            seconds = await recovery_seconds(self.client, order_id, killed_at)
            if seconds is not None:
                self.recoveries[order_id] = seconds

    async def finish(self, within: float = DEADLINE, keep: Collection[str] = ()) -> None:
        """Ship every order (but those in ``keep``) when ready; wait until all have finished."""
        shipping = [order_id for order_id in self.order_ids if order_id not in keep]
        await finish_orders(self.client, shipping, within)


@dataclass(frozen=True)
class ScenarioResult:
    """What a scenario left behind, judged."""

    name: str
    evidence: Evidence
    violations: list[Violation]
    tally: Tally
    recoveries: dict[str, float]
    labels: dict[str, str]
    fired: dict[str, int]
    """What the faults did (``Run.fired``): the proof they fired."""
    kills: int
    """Workers SIGKILLed during the run."""
    retries: int
    """Activity attempts that failed and were tried again: the faults the run absorbed."""
    seconds: float
    """Wall-clock time of the whole run, stack start and stop included."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The mail ledger's messages, when asked for (``run_scenario(keep_messages=True)``)."""


Scenario = Callable[[Run], Awaitable[None]]


async def run_scenario(name: str, data_dir: Path, keep_messages: bool = False) -> ScenarioResult:
    """Bring up a fresh stack in ``data_dir``, run scenario ``name``, judge it, stop it all.

    ``keep_messages``: keep the mail ledger's messages in the result (``tools.bench.mail_keys``).
    """
    scenario, workers = SCENARIOS[name]
    began = time.monotonic()
    receiver = free_port() if name in WITH_RECEIVER else None
    with LocalStack(data_dir, webhook_port=receiver) as stack:
        await asyncio.to_thread(stack.start, workers)
        admin = stack.admin()
        try:
            run = Run(name, stack, await stack.connect(), admin)
            await scenario(run)
            admin.reset_faults()
            evidence = await gather_evidence(run.client, admin, run.placed.values())
            retries = await gather_limited(retried_attempts(run.client, o) for o in run.order_ids)
            messages = admin.list("/mail/messages") if keep_messages else []
        finally:
            admin.close()
            await asyncio.to_thread(stack.stop)
    return ScenarioResult(
        name=name,
        evidence=evidence,
        violations=check(evidence),
        tally=tally(evidence),
        recoveries=run.recoveries,
        labels=run.labels,
        fired=run.fired,
        kills=len(run.killed),
        retries=sum(retries),
        seconds=time.monotonic() - began,
        messages=messages,
    )


# -- 1 and 2: a worker killed at each step boundary, or mid-step after the effect happened --


def hold_one_order_per_step(admin: SandboxAdmin) -> None:
    """Hold the next capture (the money moves), confirmation email and picklist."""
    admin.set_faults("payments", hold_next=1, key_suffix=f":{Step.PAYMENT_CAPTURE}")
    admin.set_faults("mail", hold_next=1, key_suffix=f":{Step.CONFIRMATION_EMAIL}")
    admin.set_faults("warehouse", hold_next=1, key_suffix=f":{Step.PICKLIST}")


async def wait_held_at_each_step(admin: SandboxAdmin) -> None:
    """Wait until every service holds its request (see ``hold_one_order_per_step``)."""
    for service in SERVICES:
        await asyncio.to_thread(admin.wait_held, service, 1)


def held_steps(admin: SandboxAdmin) -> dict[str, str]:
    """Order id -> the step whose request a provider holds now, e.g. ``picklist held``."""
    keys = (key for service_keys in admin.held_keys().values() for key in service_keys)
    return {order_id: f"{step} held" for order_id, step in (k.rsplit(":", 1) for k in keys)}


async def _kill_at_boundaries(run: Run, commit_held: bool) -> None:
    """Four orders, each stopped at another boundary; one SIGKILL interrupts them all.

    One held request per service, targeted by key: the first order to send its picklist is
    held at the warehouse, the first of the others to capture its payment at the gateway, the
    first of the rest to send its confirmation at the mail service, and the last one reaches
    the wait for shipment.
    """
    hold_one_order_per_step(run.admin)
    ids = await run.start(4)
    await wait_held_at_each_step(run.admin)
    await wait_for_count(run.client, OrderStatus.AWAITING_SHIPMENT, 1, DEADLINE)
    run.labels = {order_id: "awaiting shipment" for order_id in ids} | held_steps(run.admin)
    run.fired["requests held at the kill"] = sum(run.admin.held().values())
    killed_at = await run.kill_worker(restart=False)
    # The dead worker's requests now commit (scenario 2) or fail uncommitted (scenario 1).
    for service in SERVICES:
        run.admin.release(service, fail=not commit_held)
    waiting = [oid for oid, where in run.labels.items() if where == "awaiting shipment"]
    await asyncio.gather(*(ship(run.client, oid) for oid in waiting))  # while no worker runs
    await asyncio.to_thread(run.stack.start_worker, "worker-1")
    await run.finish()
    await run.time_recoveries(ids, killed_at)


async def kill_at_step_boundaries(run: Run) -> None:
    """Scenario 1: SIGKILL between steps; the held next step never reached the ledger."""
    await _kill_at_boundaries(run, commit_held=False)


async def kill_after_effect_committed(run: Run) -> None:
    """Scenario 2: SIGKILL mid-step; the provider commits the step after the worker died."""
    await _kill_at_boundaries(run, commit_held=True)


# -- 3: the gateway commits, then the connection drops, again and again ---------------------


async def gateway_drops_after_commit(run: Run) -> None:
    """Scenario 3: each capture commits and its answer is lost, and so are the retries'.

    The gateway drops its next 30 answers to a capture, replayed answers included: with 10
    orders each charge's outcome is unknown to the worker about three times in a row.
    """
    suffix = f":{Step.PAYMENT_CAPTURE}"
    run.admin.set_faults("payments", drop_next=30, drop_replays=True, key_suffix=suffix)
    await run.start(10)
    await run.finish()
    run.fired["capture answers dropped"] = run.admin.fired("payments")["drop"]


# -- 4: a storm of 5xx and slow answers; a paused worker whose late call lands -------------


async def provider_storm(run: Run) -> None:
    """Scenario 4a: every provider fails 30% of calls and answers slowly, for a while.

    First a second of latency on every answer, then answers slower than the workers' HTTP
    timeout (the provider commits after the caller gave up, so the retry finds the key in
    flight, then replays the stored answer). Two workers share the work.
    """
    run.admin.set_faults_everywhere(error_rate=0.3, latency_ms=1000)
    await run.start(20, declined_every=5)
    await asyncio.sleep(6)
    run.admin.set_faults_everywhere(error_rate=0.3, latency_ms=4500)
    await asyncio.sleep(6)
    run.admin.reset_faults()
    run.fired["requests answered 503"] = _fired_everywhere(run.admin, "fail")
    await run.finish()


async def paused_worker_late_call(run: Run) -> None:
    """Scenario 4b: SIGSTOP a worker mid-capture for longer than the activity timeout.

    The capture is held at the gateway; the worker is paused; a second worker starts and takes
    over the timed-out activity, and the gateway refuses its retry (409: the key is in flight).
    Then the paused worker's call commits, late; the second worker's next retry gets that same
    charge back; SIGCONT lets the first worker finish its stale attempt, which Temporal
    ignores.
    """
    run.admin.set_faults("payments", hold_next=1, key_suffix=f":{Step.PAYMENT_CAPTURE}")
    [order_id] = await run.start(1)
    await asyncio.to_thread(run.admin.wait_held, "payments", 1)
    run.fired["captures held at the pause"] = run.admin.held()["payments"]
    paused = run.stack.workers["worker-1"]
    paused.send(signal.SIGSTOP)
    try:
        await asyncio.to_thread(run.stack.start_worker, "worker-2")
        await wait_until(
            lambda: _refused_as_in_flight(run.client, order_id),
            "the second worker's retry of the charge is refused: its key is in flight",
            DEADLINE,
        )
        run.admin.release("payments")  # the paused worker's call commits now, late
        await wait_until(
            lambda: _steps_completed(run.client, order_id, len(_UP_TO_CAPTURE)),
            "the second worker's retry gets the charge back (the capture and all before it)",
            DEADLINE,
        )
    finally:
        paused.send(signal.SIGCONT)
    await run.start(4)  # both workers, the resumed one included, take new orders
    await run.finish()


_UP_TO_CAPTURE = (Step.PAYMENT_INTENT, Step.PAYMENT_CONFIRM, Step.PICKLIST, Step.PAYMENT_CAPTURE)
"""The order's activities up to and including the capture."""


async def _steps_completed(client: Client, order_id: str, at_least: int) -> bool:
    """Whether at least ``at_least`` of the order's activities (local ones too) have completed."""
    completed = 0
    async for event in client.get_workflow_handle(order_id).fetch_history_events():
        completed += event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        completed += local_activity(event) is not None
    return completed >= at_least


async def _refused_as_in_flight(client: Client, order_id: str) -> bool:
    """Whether the order's running activity last failed with 409: its key was in flight.

    Failure messages are encrypted in Temporal, so they are decoded with the client's converter.
    """
    description = await client.get_workflow_handle(order_id).describe()
    for activity in description.raw_description.pending_activities:
        if activity.HasField("last_failure"):
            failure = await client.data_converter.decode_failure(activity.last_failure)
            if "409" in str(failure):
                return True
    return False


# -- 5 and 6: Temporal or the providers killed mid-flight and started on the same files ----


async def _mid_flight(run: Run, orders: int) -> None:
    """Start orders slowed down by provider latency; return once some await shipment."""
    run.admin.set_faults_everywhere(latency_ms=300)
    await run.start(orders)
    await wait_for_count(run.client, OrderStatus.AWAITING_SHIPMENT, orders // 4, DEADLINE)


async def kill_temporal(run: Run) -> None:
    """Scenario 5: SIGKILL the Temporal server mid-flight, restart it on the same SQLite file.

    One picklist is held at the warehouse across the kill, so at least one activity is surely
    in flight when Temporal dies; it is let go once Temporal is back.
    """
    run.admin.set_faults("warehouse", hold_next=1, key_suffix=f":{Step.PICKLIST}")
    await _mid_flight(run, 20)
    await asyncio.to_thread(run.admin.wait_held, "warehouse", 1)
    run.fired["activities held at the kill"] = run.admin.held()["warehouse"]
    await asyncio.to_thread(run.stack.kill_temporal)
    await asyncio.sleep(1)
    await asyncio.to_thread(run.stack.start_temporal)
    run.admin.reset_faults()
    await run.finish()


async def kill_providers(run: Run) -> None:
    """Scenario 6: SIGKILL the providers mid-flight, restart them on the same ledger.

    When they die, two confirmation emails are held inside the mail service (their keys
    claimed, nothing committed) and two picklists were committed but their answers dropped.
    """
    run.admin.set_faults("mail", hold_next=2, key_suffix=f":{Step.CONFIRMATION_EMAIL}")
    run.admin.set_faults("warehouse", drop_next=2)
    await _mid_flight(run, 20)
    await asyncio.to_thread(run.admin.wait_held, "mail", 2)
    # Read before the kill: the providers forget their faults when they die.
    run.fired["emails held at the kill"] = run.admin.held()["mail"]
    run.fired["picklist answers dropped"] = run.admin.fired("warehouse")["drop"]
    await asyncio.to_thread(run.stack.kill_providers)
    await asyncio.sleep(2)  # the workers' calls fail meanwhile and are retried with backoff
    await asyncio.to_thread(run.stack.start_providers)
    await run.finish()


# -- 7: load with faults and worker kills --------------------------------------------------


async def load_with_faults(run: Run, orders: int = 200) -> None:
    """Scenario 7: ``orders`` orders at once, 20% of provider calls faulted, two worker kills.

    Half the faults are 503s, half commit and drop the answer; one order in ten is declined and
    one in twenty is cancelled by the customer while the kills and faults go on, so refunds and
    picklist cancellations face the same crashes as charges.
    Orders are shipped as soon as they are ready, so they keep flowing through both kills:
    worker-1 is killed once 20 orders have completed, worker-2 once half have. Each is started
    again at once; the other worker carries on meanwhile.
    """
    run.admin.set_faults_everywhere(error_rate=0.1, drop_rate=0.1)
    await run.start(orders, declined_every=10)
    # The warehouse never ships these, so every cancel is accepted whenever it lands.
    to_cancel = run.order_ids[5::20]
    run.meant_cancelled(to_cancel)
    cancelling = asyncio.create_task(cancel_orders(run.client, to_cancel))
    finishing = asyncio.create_task(run.finish(within=3 * DEADLINE, keep=set(to_cancel)))
    try:
        for worker, completed in (("worker-1", 20), ("worker-2", orders // 2)):
            await wait_for_count(run.client, OrderStatus.COMPLETED, completed, DEADLINE, False)
            await run.kill_worker(worker)
        await asyncio.gather(cancelling, finishing)
    finally:
        cancelling.cancel()
        finishing.cancel()
    run.admin.reset_faults()
    run.fired["requests answered 503"] = _fired_everywhere(run.admin, "fail")
    run.fired["answers dropped"] = _fired_everywhere(run.admin, "drop")
    for order_id in run.order_ids:
        killed_at = await lost_with(run.client, order_id, run.killed)
        if killed_at is not None:
            kill = f"kill {sorted(run.killed.values()).index(killed_at) + 1}"
            run.labels[order_id] = kill
            run.fired[f"orders interrupted by {kill}"] = (
                run.fired.get(f"orders interrupted by {kill}", 0) + 1
            )
            await run.time_recoveries([order_id], killed_at)


def _fired_everywhere(admin: SandboxAdmin, fault: str) -> int:
    """How often ``fault`` fired at all the providers, counted there."""
    return sum(admin.fired(service)[fault] for service in SERVICES)


async def cancel_orders(client: Client, order_ids: list[str]) -> None:
    """Cancel orders as customers do, a moment after placing them."""
    await asyncio.sleep(0.5)
    await asyncio.gather(*(cancel_until_accepted(client, order_id) for order_id in order_ids))


async def cancel_until_accepted(client: Client, order_id: str, within: float = DEADLINE) -> None:
    """Cancel one order, trying again (as a customer would) while no worker can answer it.

    With its worker just SIGKILLed, an order answers nothing until another worker takes it
    over; a refusal, by contrast, is the order's final word.
    """
    deadline = time.monotonic() + within
    tried = False
    while True:
        try:
            await cancel_order(client, order_id, "customer changed their mind")
            return
        except OrderRefused:
            # An earlier try that lost its answer (its worker killed) may have been accepted.
            if tried and await _cancel_taken(client, order_id):
                return
            raise
        except OrderError:
            if time.monotonic() > deadline:
                raise
            tried = True
            await asyncio.sleep(0.5)


async def _cancel_taken(client: Client, order_id: str) -> bool:
    """Whether the order took a cancel: it is cancelled, or winding down to cancelled."""
    view = await order_status(client, order_id)
    return OrderStatus.CANCELLED in (view.status, view.winding_down_to)


# -- 9: money as the real world handles it, the worker killed while each order waits -------


async def real_world_money(run: Run) -> None:
    """Scenario 9: an authorization expires, a refund fails, a parcel leaves unpaid.

    Each with the worker SIGKILLed while the order waits on it: an order whose picklist waits
    for an operator until its authorization expires (it winds down, nothing charged); a
    cancelled order whose refund stays pending, then fails (told, parked, refunded again by an
    operator); an order whose capture is refused while the warehouse ships it anyway (paid for,
    confirmed, then shipped). Three ordinary orders run beside them.
    """
    admin = run.admin
    await run.start(3)
    # Captured before any fault is set: the faults below are the three orders' alone.
    await wait_for_count(run.client, OrderStatus.AWAITING_SHIPMENT, 3, DEADLINE)
    admin.set_faults("payments", authorization_validity_s=8)
    admin.set_faults(
        "warehouse", refuse_next=1, key_prefix=f"{run.next_id()}:", key_suffix=f":{Step.PICKLIST}"
    )
    [expiring] = await run.start(1)
    await _until_parked(run, expiring, Step.PICKLIST)
    await run.kill_worker()
    await _until_status(run, expiring, OrderStatus.CANCELLED)
    run.meant_cancelled([expiring])
    run.fired["authorizations expired"] = admin.effects(expiring).released
    admin.reset_faults()

    [refunded] = await run.start(1)
    await _until_status(run, refunded, OrderStatus.AWAITING_SHIPMENT)
    admin.set_faults(
        "payments", refunds_pending_s=3, refunds_fail_with="declined", key_suffix=f":{Step.REFUND}"
    )
    await request_cancel(run.client, refunded, "customer changed their mind")
    run.meant_cancelled([refunded])
    await wait_until(
        lambda: _refunds(admin, refunded, "pending"), "the refund is pending", DEADLINE
    )
    await run.kill_worker()  # while the order follows its refund
    await _until_parked(run, refunded, Step.REFUND)
    run.fired["refunds failed"] = (admin.effects(refunded).refunds_by_status or {})["failed"]
    admin.reset_faults()
    await resolve_order(run.client, refunded, ResolveRequest(action=OperatorAction.RETRY))

    capture = f":{Step.PAYMENT_CAPTURE}"
    admin.set_faults("payments", refuse_next=1, key_prefix=f"{run.next_id()}:", key_suffix=capture)
    [unpaid] = await run.start(1)
    await _until_parked(run, unpaid, Step.PAYMENT_CAPTURE)
    admin.ship_anyway(unpaid)
    run.fired["parcels shipped unpaid"] = 1
    await ship(run.client, unpaid)  # the warehouse's report: the order takes it at once
    await run.kill_worker()
    await _until_shipped(run, unpaid)
    await resolve_order(run.client, unpaid, ResolveRequest(action=OperatorAction.RETRY_PAYMENT))
    await run.finish()


async def _until_view(
    run: Run, order_id: str, holds: Callable[[OrderView], bool], what: str
) -> None:
    """Wait until the order's read model ``holds``; ``what`` names it if it never does."""

    async def reached() -> bool:
        return holds(await order_status(run.client, order_id))

    await wait_until(reached, f"{order_id} {what}", DEADLINE)


async def _until_parked(run: Run, order_id: str, step: Step) -> None:
    def parked(view: OrderView) -> bool:
        return view.status == OrderStatus.NEEDS_ATTENTION and view.attention_step == step

    await _until_view(run, order_id, parked, f"waits for an operator at {step}")


async def _until_status(run: Run, order_id: str, status: OrderStatus) -> None:
    await _until_view(run, order_id, lambda view: view.status == status, f"is {status.value}")


async def _until_shipped(run: Run, order_id: str) -> None:
    def taken(view: OrderView) -> bool:
        return view.shipment is not None

    await _until_view(run, order_id, taken, "took its shipped report")


async def _refunds(admin: SandboxAdmin, order_id: str, status: str) -> bool:
    return bool((admin.effects(order_id).refunds_by_status or {}).get(status))


# -- 10: the receiver of Stripe's events killed with events pending -------------------------

THREE_D_SECURE = "pm_card_authenticationRequired"
AUTHENTICATION_LINK = re.compile(r"http://\S+/payments/authenticate/\S+")


async def kill_stripe_receiver(run: Run) -> None:
    """Scenario 10: the receiver of Stripe's events dies while they are being sent.

    The receiver is SIGKILLed, then four orders whose cards need 3-D Secure start and wait
    for their customers, who authenticate. The orders go on by reading the intents (events
    speed things up; the read is the truth) while the gateway retries every event (killed
    first, so no event can reach it before: each of the twelve is sent while it is down). Once
    the receiver is back, every event is delivered and each taken by its order once.
    """
    await asyncio.to_thread(run.stack.kill_webhook_receiver)
    ids = await run.start(4, card=THREE_D_SECURE)
    for order_id in ids:
        await _until_status(run, order_id, OrderStatus.AWAITING_AUTHENTICATION)
    await asyncio.gather(*(_authenticate(run.admin, order_id) for order_id in ids))
    for order_id in ids:
        await _until_status(run, order_id, OrderStatus.AWAITING_SHIPMENT)
    await wait_until(
        lambda: _events_tried(run.admin, ids, "pending"), "events retried while down", DEADLINE
    )
    run.fired["events pending while the receiver was down"] = len(_events(run.admin, ids))
    await asyncio.to_thread(run.stack.start_webhook_receiver)
    await wait_until(
        lambda: _events_tried(run.admin, ids, "delivered"), "every event delivered", DEADLINE
    )
    run.fired["events delivered after the restart"] = len(_events(run.admin, ids))
    taken = await gather_limited(_events_taken(run.client, order_id) for order_id in ids)
    run.fired["events taken by their orders"] = sum(taken)
    await run.finish()


async def _authenticate(admin: SandboxAdmin, order_id: str) -> None:
    """The customer opens the emailed 3-D Secure link and completes authentication."""

    async def emailed() -> bool:
        return bool(admin.list("/mail/messages", order_id=order_id, template=_ASKED))

    await wait_until(emailed, f"{order_id}'s authentication email", DEADLINE)
    [message] = admin.list("/mail/messages", order_id=order_id, template=_ASKED)
    link = AUTHENTICATION_LINK.search(message["body"])
    assert link is not None, message["body"]
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.post(f"{link.group(0)}&outcome=complete")).raise_for_status()


_ASKED = EmailTemplate.AUTHENTICATION_REQUIRED.value


def _events(admin: SandboxAdmin, order_ids: Collection[str]) -> list[dict[str, Any]]:
    return [e for e in admin.list("/admin/stripe-events") if e["order_id"] in order_ids]


async def _events_tried(admin: SandboxAdmin, order_ids: Collection[str], status: str) -> bool:
    """Every event of the orders is in ``status``, each tried at least once."""
    events = _events(admin, order_ids)
    return bool(events) and all(e["status"] == status and e["attempts"] > 0 for e in events)


async def _events_taken(client: Client, order_id: str) -> int:
    """How many distinct gateway events the order accepted (updates deduplicated by id)."""
    history = await client.get_workflow_handle(order_id).fetch_history()
    accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ids = {
        event.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id
        for event in history.events
        if event.event_type == accepted
    }
    return len({update for update in ids if update.startswith("stripe:")})


SCENARIOS: dict[str, tuple[Scenario, int]] = {
    "kill-at-step-boundaries": (kill_at_step_boundaries, 1),
    "kill-after-effect-committed": (kill_after_effect_committed, 1),
    "gateway-drops-after-commit": (gateway_drops_after_commit, 1),
    "provider-storm": (provider_storm, 2),
    "paused-worker-late-call": (paused_worker_late_call, 1),
    "kill-temporal": (kill_temporal, 1),
    "kill-providers": (kill_providers, 1),
    "load-with-faults": (load_with_faults, 2),
    "real-world-money": (real_world_money, 1),
    "kill-stripe-receiver": (kill_stripe_receiver, 1),
}
"""Every scenario by name, with how many workers it starts with."""
WITH_RECEIVER = frozenset({"kill-stripe-receiver"})
"""The scenarios whose stack runs the webhook receiver (the gateway then sends its events)."""
