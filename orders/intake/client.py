"""Operations on the intake breaker: read it, check it before a start, pause and resume it.

Intake is paused exactly while the breaker workflow of the task queue runs
(``orders.intake.workflow``), so reading it is one describe: no worker needed, and a pause holds
even
while every worker is down.
"""

import asyncio
from datetime import UTC, datetime

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from orders.client.errors import OrderError
from orders.client.temporal import ACCEPT_TIMEOUT
from orders.config.settings import TASK_QUEUE
from orders.intake.contract import (
    PAUSE_SIGNAL,
    RESUME_UPDATE,
    STATUS_MEMO,
    IntakeMode,
    IntakeStatus,
    PauseRequest,
    ResumeRequest,
    breaker_id,
    start_paused,
)


class IntakePaused(OrderError):
    """New orders are refused while intake is paused; nothing was started."""

    exit_code = 7

    def __init__(self, status: IntakeStatus) -> None:
        self.status = status
        super().__init__(
            f"{status.headline()}. No order was started; orders already placed carry on. "
            "See: starter.py intake status"
            + ("; it reopens on its own once payments are healthy" if status.closes_on_its_own
               else "") + ". An operator reopens it with: starter.py intake resume"
        )  # fmt: skip


async def intake_status(client: Client, task_queue: str = TASK_QUEUE) -> IntakeStatus:
    """Whether intake on ``task_queue`` is open or paused, since when, by whom and why."""
    handle = client.get_workflow_handle(breaker_id(task_queue))
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return IntakeStatus(task_queue=task_queue)
        raise
    status: IntakeStatus | None = await description.memo_value(
        STATUS_MEMO, None, type_hint=IntakeStatus
    )
    if description.status == WorkflowExecutionStatus.RUNNING:
        if status is None:  # started without a status: nothing but this project starts it
            return IntakeStatus(
                task_queue=task_queue,
                mode=IntakeMode.PAUSED_BY_OPERATOR,
                since=description.start_time,
                reason="paused (no details recorded)",
            )
        return status  # paused, or open and the run ending in this moment
    if status is None or status.paused:  # ended some other way (terminated, say)
        ended = description.status.name.lower() if description.status else "ended"
        return IntakeStatus(
            task_queue=task_queue,
            since=description.close_time,
            reason=f"the breaker's last run was {ended}",
        )
    return status


async def check_intake(client: Client, task_queue: str = TASK_QUEUE) -> None:
    """Raise ``IntakePaused`` if new orders on ``task_queue`` are refused right now."""
    status = await intake_status(client, task_queue)
    if status.paused:
        raise IntakePaused(status)


async def pause_intake(client: Client, reason: str, task_queue: str = TASK_QUEUE) -> IntakeStatus:
    """Pause intake now, by an operator; it stays paused until ``resume_intake``.

    Signal-with-start: in effect as soon as Temporal has it, whether or not a worker runs.
    """
    request = PauseRequest(reason=reason)
    now = datetime.now(UTC)
    paused = IntakeStatus(
        task_queue=task_queue,
        mode=IntakeMode.PAUSED_BY_OPERATOR,
        since=now,
        by="operator",
        reason=request.reason,
        paused_at=now,
    )
    await start_paused(client, paused, PAUSE_SIGNAL, request)
    return paused


async def resume_intake(
    client: Client, reason: str = "", task_queue: str = TASK_QUEUE
) -> IntakeStatus:
    """Open intake again; returns the status it opened with (or the open one it already was).

    Needs a worker to run the breaker: without one, ``OrderError`` says so within seconds.
    """
    current = await intake_status(client, task_queue)
    if not current.paused:
        return current
    handle = client.get_workflow_handle(breaker_id(task_queue))
    try:
        async with asyncio.timeout(ACCEPT_TIMEOUT.total_seconds()):
            opened: IntakeStatus = await handle.execute_update(
                RESUME_UPDATE,
                ResumeRequest(reason=reason),
                result_type=IntakeStatus,
                rpc_timeout=ACCEPT_TIMEOUT,
            )
            return opened
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
        raise OrderError(
            f"no worker answered within {ACCEPT_TIMEOUT.total_seconds():.0f}s; is a worker "
            f"running on task queue {task_queue}? The resume was not confirmed and may still "
            "take effect once a worker runs; check with: starter.py intake status"
        ) from err
    except WorkflowUpdateFailedError:  # refused: it opened meanwhile
        return await intake_status(client, task_queue)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it ended meanwhile
            return await intake_status(client, task_queue)
        raise
