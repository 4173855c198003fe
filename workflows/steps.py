"""Running one step of an order: its idempotency key, timeouts, timeline line and refusals.

Every provider call of the order goes through ``Steps.call``, so each rule lives here once:
the key is derived from the order, the step and the operator's attempt; retryable faults are
retried for the step's budget (below the key's lifetime); a refusal its policy names ends the
order as a business outcome; anything else parks the order for an operator.
"""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.requests import EffectRequest
    from orders.domain.models import StepRecord
    from orders.domain.status import (
        OperatorAction,
        OrderStatus,
        Step,
        StepState,
        budget_within,
        idempotency_key,
    )
    from workflows import metrics
    from workflows.policy import (
        LOCAL_TRY,
        LOCAL_TRY_TIMEOUT,
        PROVIDER_CALL_TIMEOUT,
        PROVIDER_HEARTBEAT_TIMEOUT,
        PROVIDER_RETRY,
        StepPolicy,
        policy_for,
    )
    from workflows.state import OrderState

T = TypeVar("T")
RESTARTED_BY_NEWS = "the gateway sent news: read again at once"
R = TypeVar("R", bound=EffectRequest)


class OrderStopped(Exception):
    """Ends the order's story early: declined, out of stock or cancelled."""

    def __init__(
        self, status: OrderStatus, reason: str, detail: str, step: Step | None = None
    ) -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail
        self.step = step
        """The step a provider refused, if that is what stopped the order."""


class Steps:
    """Runs the steps of one order against its state."""

    def __init__(
        self,
        state: OrderState,
        set_status: Callable[[OrderStatus], None],
        publish_status: Callable[[], None],
    ) -> None:
        self._state = state
        self._set_status = set_status
        self._publish_status = publish_status
        """Brings visibility up to a status not yet published (``PASSING_STATUSES``)."""

    async def call(
        self,
        step: Step,
        activity: Callable[[Any, R], Awaitable[T]],
        request: type[R],
        /,
        *,
        summary: str,
        describe: Callable[[T], str],
        escalate: bool = True,
        budget: timedelta | None = None,
        wake: "Wake | None" = None,
        **fields: Any,
    ) -> T:
        """Call a provider as ``step`` until it answers, the order stops, or an operator decides.

        ``escalate=False``: a failure the step's policy does not turn into the order's stop is
        raised (``ActivityError``) instead of asking an operator, for a caller running beside
        the story, which may itself be waiting for an operator. ``budget``: how long to retry,
        instead of the step's policy (a wait with its own deadline). ``wake``: the call runs
        under ``read_until_woken``, whose restart cancels it: that cancel is raised as it is.

        ``request`` is built here from ``fields`` with the step's idempotency key, afresh for
        each try: a field given as a function is read then (what an operator's wait may have
        changed, such as the intent a renewed authorization replaced). An operator's
        retry first adopts an effect an earlier try made without our hearing the answer. After a
        refusal it uses a new key, so the refusal the provider stored is not replayed to it.
        After faults it sends the same key again: a request of the earlier try may still be in
        flight at the provider, which a listing cannot see but the key can (the provider makes
        the retry wait for it, then answers with its result), so the effect happens once.
        """
        state, policy = self._state, policy_for(step)
        budget = budget or policy.budget(state.options)
        while True:
            attempt, retried = state.attempts.get(step, 1), state.retries.get(step, 0)
            arg = request(
                order_id=state.order.id,
                idempotency_key=idempotency_key(state.order.id, step, attempt),
                adopt_existing=retried > 0,
                **{name: value() if callable(value) else value for name, value in fields.items()},
            )
            # Never local after an operator's update: see StepPolicy.local_first.
            local_first = policy.runs_local_first(state.patches) and retried == 0
            try:
                return await self.run_activity(
                    step,
                    activity,
                    arg,
                    summary,
                    describe,
                    budget,
                    local_first=local_first,
                    retry_policy=policy.retry_policy,
                    wake=wake,
                )
            except ActivityError as err:
                self._stop_if_outcome(step, policy, err)
                if not escalate or (wake is not None and wake.raised and _cancelled(err)):
                    raise
                reason = _attention_reason(policy, budget, err, state.options.mail_key_window)
                await self.ask_operator(step, reason)
                state.retries[step] = retried + 1
                if _refused(err):
                    state.attempts[step] = attempt + 1

    async def run_activity(
        self,
        step: Step,
        activity: Callable[[Any, Any], Awaitable[T]],
        arg: Any,
        summary: str,
        describe: Callable[[T], str],
        budget: timedelta,
        *,
        local_first: bool = False,
        retry_policy: RetryPolicy = PROVIDER_RETRY,
        wake: "Wake | None" = None,
    ) -> T:
        """Run one activity with the shared timeouts and retry policy, as a line of the timeline.

        ``local_first``: try it once as a local activity first (see ``StepPolicy.local_first``).
        ``wake``: the call is a read that news restarts (``read_until_woken``).
        """

        async def call() -> T:
            if local_first:
                try:
                    return await workflow.execute_local_activity_method(
                        activity,
                        arg,
                        start_to_close_timeout=LOCAL_TRY_TIMEOUT,
                        retry_policy=LOCAL_TRY,
                        summary=summary,
                    )
                except FailureError as err:
                    failure = _as_activity_error(err, step)
                    if not _worth_retrying(failure):
                        raise failure  # noqa: B904 (its cause is the local failure)
            self._publish_status()  # the order now waits on Temporal: show where it is
            return await workflow.execute_activity_method(
                activity,
                arg,
                start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
                heartbeat_timeout=PROVIDER_HEARTBEAT_TIMEOUT,
                schedule_to_close_timeout=budget,
                retry_policy=retry_policy,
                summary=summary,
            )

        return await self.record(step, call, describe, wake)

    async def record(
        self,
        step: Step,
        call: Callable[[], Awaitable[T]],
        describe: Callable[[T], str],
        wake: "Wake | None" = None,
    ) -> T:
        """Run ``call`` as ``step`` and keep its line of the timeline up to date.

        A read that ``wake`` stopped to start again is ``restarted``, not failed.
        """
        line = StepRecord(step=step, state=StepState.STARTED, started_at=workflow.now())
        self._state.timeline.append(line)
        try:
            result = await call()
        except (ActivityError, OrderStopped, asyncio.CancelledError) as err:
            detail = err.cause if isinstance(err, ActivityError) else err
            cancelled = isinstance(detail, CancelledError | asyncio.CancelledError)
            if cancelled and wake is not None and wake.raised:
                line.state, line.detail = StepState.RESTARTED, RESTARTED_BY_NEWS
            else:
                line.state = StepState.FAILED
                line.detail = "cancelled" if cancelled else str(detail or err)
            line.finished_at = workflow.now()
            metrics.step_finished(line, None, self._state.order.currency)
            raise
        line.state, line.detail = StepState.COMPLETED, describe(result)
        line.finished_at = workflow.now()
        metrics.step_finished(line, result, self._state.order.currency)
        return result

    async def ask_operator(self, step: Step, reason: str) -> None:
        """Park the order until an operator retries ``step`` (returns) or cancels it (raises).

        While the order is being wound down it can only be retried: it is stopping already.
        """
        state = self._state
        previous = state.status
        state.attention_reason, state.attention_step = reason, step
        state.operator_action = None
        self._set_status(OrderStatus.NEEDS_ATTENTION)

        def decided() -> bool:
            cancelled = state.cancel_reason is not None and state.winding_down_to is None
            return state.operator_action is not None or cancelled

        async def decision() -> OperatorAction:
            await workflow.wait_condition(decided)
            if state.operator_action is None:
                self.stop_if_cancelled()
            assert state.operator_action is not None
            return state.operator_action

        await self.record(Step.OPERATOR, decision, lambda action: f"operator chose {action}")
        state.attention_reason, state.attention_step = None, None
        self._set_status(previous)

    def stop_if_cancelled(self) -> None:
        """Stop the story here if a cancel was accepted and the order is not yet stopping."""
        state = self._state
        if state.cancel_reason is not None and state.winding_down_to is None:
            raise self.cancelled()

    def cancelled(self) -> OrderStopped:
        """The stop of an order whose cancel was accepted."""
        reason = self._state.cancel_reason or "cancelled"
        return OrderStopped(OrderStatus.CANCELLED, f"cancelled: {reason}", reason)

    def _stop_if_outcome(self, step: Step, policy: StepPolicy, err: ActivityError) -> None:
        """Raise the order's stop when ``err`` ends it: a cancel, or a refusal named in policy."""
        cause = err.cause
        if isinstance(cause, CancelledError):
            self.stop_if_cancelled()
        if isinstance(cause, ApplicationError) and (
            outcome := policy.outcomes.get(cause.type or "")
        ):
            details = cause.details[0] if cause.details else {}
            detail = str(details.get(outcome.detail_key) or outcome.label)
            reason = f"{outcome.label}: {detail}"
            raise OrderStopped(outcome.status, reason, detail, step) from err


def _as_activity_error(err: FailureError, step: Step) -> ActivityError:
    """A local try's failure in the shape of a regular activity's, for the step's rules.

    The SDK raises a failed local activity's own error (``ApplicationError``, ``TimeoutError``)
    where a regular activity's arrives as the cause of an ``ActivityError``.
    """
    if isinstance(err, ActivityError):
        return err
    wrapped = ActivityError(
        f"local try of the {step} step failed",
        scheduled_event_id=0,
        started_event_id=0,
        identity="",
        activity_type=step.value,
        activity_id="",
        retry_state=None,
    )
    wrapped.__cause__ = err
    return wrapped


def _refused(err: ActivityError) -> bool:
    """Whether the step failed on a refusal (a final answer), not on faults that ran out."""
    return isinstance(err.cause, ApplicationError) and err.cause.non_retryable


def _worth_retrying(err: ActivityError) -> bool:
    """Whether a failed local try goes on as a regular activity: not after a refusal or cancel."""
    return not (isinstance(err.cause, CancelledError) or _refused(err))


def _attention_reason(
    policy: StepPolicy, budget: timedelta, err: ActivityError, mail_key_window: timedelta
) -> str:
    """Why the step asks an operator; an email's says its key window is what stopped it."""
    cause = err.cause
    if _refused(err):
        return f"{policy.label} refused: {cause}"
    last = cause.__cause__ if cause is not None and cause.__cause__ is not None else cause
    window = (
        f" (the mail provider remembers its key for {human(mail_key_window)}: not sent again "
        "blindly; a retry first looks for the email at the provider)"
        if policy.mail and budget >= budget_within(mail_key_window)
        else ""
    )
    return f"{policy.label} failing for over {human(budget)}{window}: {last or err}"


class Wake:
    """Raised when news arrives (a gateway's event): a wait reading the provider reads again."""

    def __init__(self) -> None:
        self.raised = False

    def wake(self) -> None:
        """Make the wait read again now."""
        self.raised = True


async def read_until_woken(
    read: Callable[[], Coroutine[Any, Any, T]], wake: Wake, limit: timedelta | None = None
) -> T:
    """Run ``read``; when ``wake`` is raised before it answers, cancel it and start it again.

    ``read`` is a call whose retries wait for a provider's progress (backoff up to minutes):
    news that the progress happened starts it over at once, its first try immediate. Raises
    ``TimeoutError`` when ``limit`` passes first (a durable timer of the order).
    """
    deadline = None if limit is None else workflow.now() + limit
    while True:
        wake.raised = False
        reading = asyncio.create_task(read())
        left = None if deadline is None else deadline - workflow.now()
        if left is not None and left <= timedelta(0):
            reading.cancel()
            await asyncio.wait([reading])
            raise TimeoutError("no answer in time")
        try:
            await workflow.wait_condition(partial(_answered_or_woken, reading, wake), timeout=left)
        finally:
            if not reading.done():
                reading.cancel()
                await asyncio.wait([reading])
        if reading.cancelled() or (wake.raised and _cancelled(reading.exception())):
            continue
        answer: T = reading.result()
        return answer


def _answered_or_woken(reading: "asyncio.Task[Any]", wake: Wake) -> bool:
    return reading.done() or wake.raised


def _cancelled(err: BaseException | None) -> bool:
    """Whether a call ended because it was cancelled (here: to start it over)."""
    return isinstance(err, asyncio.CancelledError) or (
        isinstance(err, ActivityError) and isinstance(err.cause, CancelledError)
    )


async def wait_until(condition: Callable[[], bool], limit: timedelta) -> bool:
    """Wait for ``condition`` at most ``limit`` (a durable timer); False if time ran out."""
    try:
        await workflow.wait_condition(condition, timeout=max(limit, timedelta(seconds=1)))
    except TimeoutError:
        return False
    return True


def human(duration: timedelta) -> str:
    """``3 seconds``, ``1 hour``, ``14 days``: a duration as people write it."""
    seconds = int(duration.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
