"""The intake breaker: a workflow that runs exactly while new orders are refused.

A worker whose payments fail past its ``IntakePolicy`` starts it with the ``trip`` signal; an
operator starts it (or takes it over) with the ``pause`` signal. While it runs, intake is paused:
``orders.intake.client`` reads that with one describe, no worker needed, so pausing holds even while
every worker is down. It ends, and intake opens again, when an operator sends ``resume`` or,
paused by the breaker with auto-close on, after enough healthy probes of the gateway in a row.
Each pause is one run of workflow id ``intake-breaker-<task queue>``: the Temporal UI lists
them, the running one with its current details (mode, reason, probes) and its ``intake`` memo.

Orders are never touched: those already placed carry on (or keep retrying) as before.
"""

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from orders.intake.activities import IntakeActivities
    from orders.intake.contract import (
        PAUSE_SIGNAL,
        RESUME_UPDATE,
        STATUS_MEMO,
        TRIP_SIGNAL,
        WORKFLOW_TYPE,
        IntakeMode,
        IntakeStart,
        IntakeStatus,
        PauseRequest,
        ProbeResult,
        ResumeRequest,
        TripReport,
        human,
    )

START_GRACE = timedelta(minutes=1)
"""A run started without the signal that pauses (not done by this project) waits this long."""
HISTORY_LIMIT = 2000
"""Continue as new past this many events (each probe adds about ten)."""
PROBE_MARGIN = timedelta(seconds=5)
"""The probe's start-to-close timeout is its own timeout plus this."""


@workflow.defn(name=WORKFLOW_TYPE)
class IntakeWorkflow:
    """Intake paused for one task queue; the run ends when intake opens again.

    Auto-upgrade with Worker Versioning on, like the orders (``workflows.policy``): a pause can
    last hours, and pinned it would keep the old build running for the operator's resume and
    the probes until intake opens again.
    """

    @workflow.init
    def __init__(self, start: IntakeStart) -> None:
        self._status = start.carried or IntakeStatus(task_queue=workflow.info().task_queue)
        self._changes = 0

    @workflow.run
    async def run(self, start: IntakeStart) -> IntakeStatus:
        """Keep intake paused until it is resumed; returns the status intake opened with."""
        if not self._status.paused and self._changes == 0:
            # Wait for the start's own signal, not for "paused": in a first task that also holds
            # an operator's resume (no worker ran the breaker in between), intake is paused and
            # opened again before this line runs, and the run must then end.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._changes > 0, timeout=START_GRACE)
        self._publish()
        while self._status.paused:
            if self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(IntakeStart(carried=self._status))
            policy = self._status.policy
            if self._status.closes_on_its_own and policy is not None:
                if not await self._changed_within(policy.probe_interval):
                    await self._probe()
            else:
                await self._changed_within(None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    @workflow.signal(name=TRIP_SIGNAL)
    def trip(self, report: TripReport) -> None:
        """A worker's payments fail past its policy: pause, unless an operator already did."""
        status, now = self._status, workflow.now()
        status.evidence, status.policy = report.evidence, report.policy
        if status.mode == IntakeMode.OPEN:
            status.mode, status.since, status.paused_at = IntakeMode.PAUSED_BY_BREAKER, now, now
            status.by = "breaker"
        if status.mode == IntakeMode.PAUSED_BY_BREAKER:
            status.reason = report.evidence.describe()
            status.healthy_streak = 0
        self._changed()

    @workflow.signal(name=PAUSE_SIGNAL)
    def pause(self, request: PauseRequest) -> None:
        """An operator pauses intake; only an operator's resume opens it again."""
        status, now = self._status, workflow.now()
        if not status.paused:
            status.paused_at = now
        status.mode, status.since, status.by = IntakeMode.PAUSED_BY_OPERATOR, now, "operator"
        status.reason, status.healthy_streak = request.reason, 0
        self._changed()

    @workflow.update(name=RESUME_UPDATE)
    def resume(self, request: ResumeRequest) -> IntakeStatus:
        """An operator opens intake again; this run then ends."""
        status = self._status
        status.mode, status.since, status.by = IntakeMode.OPEN, workflow.now(), "operator"
        status.reason = request.reason or "resumed by an operator"
        status.healthy_streak = 0
        self._changed()
        return status

    @resume.validator
    def _resume_allowed(self, request: ResumeRequest) -> None:
        if not self._status.paused:
            raise ValueError("intake is already open")

    @workflow.query
    def status(self) -> IntakeStatus:
        """Whether intake is paused, since when, by whom and why, and the latest probe."""
        return self._status

    async def _probe(self) -> None:
        """Probe the gateway once; open intake after enough healthy probes in a row."""
        status = self._status
        assert status.policy is not None
        policy = status.policy
        try:
            result = await workflow.execute_activity_method(
                IntakeActivities.probe_payments,
                policy.probe_timeout,
                start_to_close_timeout=policy.probe_timeout + PROBE_MARGIN,
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary="probe the payment gateway",
            )
        except ActivityError as err:
            detail = f"the probe failed: {err.cause or err}"
            result = ProbeResult(at=workflow.now(), healthy=False, detail=detail)
        status.probes += 1
        status.last_probe = result
        if status.mode == IntakeMode.PAUSED_BY_BREAKER:  # an operator may have taken over
            status.healthy_streak = status.healthy_streak + 1 if result.healthy else 0
            if status.healthy_streak >= policy.healthy_probes:
                status.mode, status.since, status.by = IntakeMode.OPEN, workflow.now(), "breaker"
                status.reason = (
                    f"payments healthy again: {status.healthy_streak} healthy probes in a row "
                    f"({result.detail})"
                )
        self._publish()

    async def _changed_within(self, limit: timedelta | None) -> bool:
        """Wait until a signal or update changes the status (True) or ``limit`` passes."""
        seen = self._changes
        if limit is None:
            await workflow.wait_condition(lambda: self._changes != seen)
            return True
        try:
            await workflow.wait_condition(
                lambda: self._changes != seen,
                timeout=limit,
                timeout_summary="next probe of the payment gateway",
            )
        except TimeoutError:
            return False
        return True

    def _changed(self) -> None:
        self._changes += 1
        self._publish()

    def _publish(self) -> None:
        """Show the status in the memo (read by ``starter.py intake status``) and in the UI."""
        workflow.upsert_memo({STATUS_MEMO: self._status})
        workflow.set_current_details(_details(self._status))

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > (
            HISTORY_LIMIT
        )


def _details(status: IntakeStatus) -> str:
    """The breaker's current details in the Temporal UI (markdown)."""
    lines = [f"**{status.headline()}**"]
    if status.mode == IntakeMode.PAUSED_BY_BREAKER and status.policy is not None:
        policy = status.policy
        if policy.auto_close:
            lines.append(
                f"Closes on its own after {policy.healthy_probes} healthy probes in a row, "
                f"one every {human(policy.probe_interval)}: {status.healthy_streak} so far."
            )
        else:
            lines.append("Auto-close is off: an operator resumes intake.")
    if status.last_probe is not None:
        probe = status.last_probe
        health = "healthy" if probe.healthy else "unhealthy"
        lines.append(f"Last probe {probe.at:%H:%M:%S}: {health}, {probe.detail}")
    if status.paused:
        lines.append("Resume with `starter.py intake resume`.")
    return "\n\n".join(lines)
