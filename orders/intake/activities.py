"""The intake breaker's side in the worker: payment health, the trip, and the gateway probe.

The payment activities record how each call ended (``PaymentOutcomes.watch``). Each worker
keeps the last window of outcomes in memory, one entry per order (its latest outcome), and
when too many of those orders fail it pauses intake by signal-with-start of the breaker
workflow, in the background: recording is a few dictionary operations, never a network call,
so it can neither fail nor slow a payment. Order workflows send nothing (their command
sequence, and so the replay of orders in flight, is untouched).
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stripe.params import PaymentIntentSearchParams
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import PAYMENT_DECLINED, PROVIDER_REJECTED, PROVIDER_UNAVAILABLE
from activities.stripe_client import StripeGateway
from orders.intake.contract import (
    STATUS_MEMO,
    TRIP_SIGNAL,
    Evidence,
    IntakeMode,
    IntakePolicy,
    IntakeStatus,
    PaymentOutcome,
    ProbeResult,
    TripReport,
    breaker_id,
    human,
    start_paused,
)

logger = logging.getLogger("orders.intake")

PROBE_ORDER_ID = "intake-probe"
"""The probe searches the gateway's intents of this order id: a read, with no effect."""


def classify(err: BaseException) -> PaymentOutcome | None:
    """The outcome a failed payment call counts as; ``None`` for what says nothing of the gateway.

    A refusal counts when the gateway answered it (it carries the gateway's error body); the
    activities' own refusals (an order id already charged) and cancellations do not count, nor
    does a rate limit: the gateway works and asks for fewer calls per second, which the
    retries' backoff gives it; pausing intake for it would turn away orders it can take.
    """
    if not isinstance(err, ApplicationError):
        return None
    if err.type == PAYMENT_DECLINED:
        return PaymentOutcome.DECLINED
    if err.type == PROVIDER_UNAVAILABLE:
        timed_out = isinstance(err.__cause__, TimeoutError)
        return PaymentOutcome.TIMEOUT if timed_out else PaymentOutcome.UNAVAILABLE
    if err.type == PROVIDER_REJECTED and err.details:
        return PaymentOutcome.REFUSED
    return None


@dataclass
class _Seen:
    at: float
    outcome: PaymentOutcome
    detail: str


class PaymentHealth:
    """One task queue's recent payment outcomes: each order once, with its latest outcome."""

    def __init__(self, policy: IntakePolicy) -> None:
        self._policy = policy
        self._orders: OrderedDict[str, _Seen] = OrderedDict()  # oldest first

    def record(self, order_id: str, outcome: PaymentOutcome, detail: str, at: float) -> None:
        """Remember ``outcome`` as the order's latest."""
        self._orders.pop(order_id, None)
        self._orders[order_id] = _Seen(at, outcome, detail)
        self._prune(at)

    def forget_before(self, at: float) -> None:
        """Drop outcomes older than ``at`` (a resume starts a fresh window)."""
        self._prune(at, horizon=at)

    def evidence(self, now: float) -> Evidence:
        """The window as the breaker reads it."""
        self._prune(now)
        kinds: dict[PaymentOutcome, int] = {}
        last_failure: _Seen | None = None
        for seen in self._orders.values():
            if seen.outcome.is_failure:
                kinds[seen.outcome] = kinds.get(seen.outcome, 0) + 1
                last_failure = seen
        return Evidence(
            at=datetime.fromtimestamp(now, UTC),
            orders=len(self._orders),
            failing=sum(kinds.values()),
            kinds=kinds,
            window=self._policy.window,
            last_failure=last_failure.detail[:300] if last_failure else "",
        )

    def tripped(self, now: float) -> bool:
        """True when the window holds enough orders and enough of them fail."""
        evidence = self.evidence(now)
        return (
            evidence.orders >= self._policy.min_orders
            and evidence.rate >= self._policy.failure_rate
        )

    def _prune(self, now: float, horizon: float | None = None) -> None:
        oldest = horizon if horizon is not None else now - self._policy.window.total_seconds()
        while self._orders and next(iter(self._orders.values())).at < oldest:
            self._orders.popitem(last=False)


class PaymentOutcomes:
    """Records payment outcomes per task queue and trips the breaker when they fail too much.

    A trip first reads the breaker (one describe): a running breaker is already paused; a
    closed one says when intake last opened, and only outcomes after that count. After an
    operator's resume the breaker waits one more window before it trips again, so a person's
    decision is not overturned by the failures that led to it.
    """

    def __init__(
        self,
        client: Client,
        policy: IntakePolicy,
        *,
        recheck: timedelta = timedelta(seconds=5),
        call_timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        self.policy = policy
        self._client = client
        self._recheck = recheck.total_seconds()
        self._call_timeout = call_timeout.total_seconds()
        self._health: dict[str, PaymentHealth] = {}
        self._checked_at: dict[str, float] = {}
        self._quiet_until: dict[str, float] = {}
        self._trips: dict[str, asyncio.Task[None]] = {}

    def health(self, task_queue: str) -> PaymentHealth:
        """The window of one task queue."""
        if task_queue not in self._health:
            self._health[task_queue] = PaymentHealth(self.policy)
        return self._health[task_queue]

    @contextmanager
    def watch(self, order_id: str) -> Iterator[None]:
        """Record how the payment call in this block ends: success or a classified failure."""
        try:
            yield
        except BaseException as err:
            if (outcome := classify(err)) is not None:
                self.record(order_id, outcome, str(err))
            raise
        self.record(order_id, PaymentOutcome.OK)

    def record(self, order_id: str, outcome: PaymentOutcome, detail: str = "") -> None:
        """Count one outcome of this activity's task queue; may start a trip in the background.

        Never raises: a fault here is logged and the payment goes on as if nothing happened.
        """
        if not self.policy.enabled:
            return
        try:
            queue = activity.info().task_queue
            now = time.time()
            self.health(queue).record(order_id, outcome, detail, now)
            if outcome.is_failure:
                self._maybe_trip(queue, now)
        except Exception:
            logger.exception("could not record a payment outcome for the intake breaker")

    def _maybe_trip(self, queue: str, now: float) -> None:
        running = self._trips.get(queue)
        if running is not None and not running.done():
            return
        if now < self._checked_at.get(queue, 0.0) + self._recheck:
            return
        if now < self._quiet_until.get(queue, 0.0) or not self.health(queue).tripped(now):
            return
        self._checked_at[queue] = now
        self._trips[queue] = asyncio.get_running_loop().create_task(self._trip(queue))

    async def _trip(self, queue: str) -> None:
        """Pause intake for ``queue`` unless it is paused already; errors are logged."""
        try:
            async with asyncio.timeout(self._call_timeout):
                if await self._already_paused_or_quiet(queue):
                    return
                now = time.time()
                health = self.health(queue)
                if not health.tripped(now):
                    return
                await self._signal_trip(queue, health.evidence(now))
        except Exception:
            logger.exception("could not pause intake on task queue %r", queue)
        finally:
            self._checked_at[queue] = time.time()

    async def _already_paused_or_quiet(self, queue: str) -> bool:
        handle = self._client.get_workflow_handle(breaker_id(queue))
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        if description.status == WorkflowExecutionStatus.RUNNING:
            return True
        if description.close_time is None:
            return False
        opened = description.close_time.timestamp()
        last: IntakeStatus | None = await description.memo_value(
            STATUS_MEMO, None, type_hint=IntakeStatus
        )
        grace = self.policy.window.total_seconds() if last and last.by == "operator" else 0.0
        self.health(queue).forget_before(opened)
        self._quiet_until[queue] = opened + grace
        return time.time() < opened + grace

    async def _signal_trip(self, queue: str, evidence: Evidence) -> None:
        report = TripReport(evidence=evidence, policy=self.policy, worker=self._client.identity)
        reason = evidence.describe()
        paused = IntakeStatus(
            task_queue=queue,
            mode=IntakeMode.PAUSED_BY_BREAKER,
            since=evidence.at,
            by="breaker",
            reason=reason,
            paused_at=evidence.at,
            evidence=evidence,
            policy=self.policy,
        )
        await start_paused(self._client, paused, TRIP_SIGNAL, report)
        logger.warning("intake paused on task queue %r: %s", queue, reason)


class IntakeActivities:
    """The breaker's activity: whether the payment gateway is healthy again."""

    def __init__(self, gateway: StripeGateway, outcomes: PaymentOutcomes) -> None:
        self._gateway = gateway
        self._outcomes = outcomes

    @activity.defn
    async def probe_payments(self, within: timedelta) -> ProbeResult:
        """Probe the gateway: healthy when it answers and recent payments no longer fail.

        Healthy means the gateway answers a read within ``within`` and this worker's recent
        payments, if it saw enough of them, no longer fail past the policy. Never raises: an
        unhealthy gateway is this activity's answer, not its failure.
        """
        queue = activity.info().task_queue
        now = time.time()
        at = datetime.fromtimestamp(now, UTC)
        try:
            async with asyncio.timeout(within.total_seconds()):
                query: PaymentIntentSearchParams = {
                    "query": f"metadata['order_id']:'{PROBE_ORDER_ID}'"
                }
                await self._gateway.send(
                    "GET /v1/payment_intents/search",
                    lambda options: self._gateway.v1.payment_intents.search_async(query, options),
                )
        except TimeoutError:
            return ProbeResult(
                at=at, healthy=False, detail=f"the gateway did not answer within {human(within)}"
            )
        except ApplicationError as err:
            return ProbeResult(at=at, healthy=False, detail=str(err))
        health = self._outcomes.health(queue)
        evidence = health.evidence(now)
        if self._outcomes.policy.enabled and health.tripped(now):
            return ProbeResult(
                at=at, healthy=False, detail=f"the gateway answers, but {evidence.describe()}"
            )
        seen = f"{evidence.failing} of {evidence.orders} recent orders' payments failing"
        return ProbeResult(at=at, healthy=True, detail=f"the gateway answers; {seen}")
