"""Heartbeat while a provider call runs, so Temporal notices a dead worker within seconds."""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")


async def heartbeating(call: Awaitable[T]) -> T:
    """Await ``call``, heartbeating four times per heartbeat timeout until it is done.

    A fast call (the usual case) ends before the first beat and costs no extra RPC. A slow one
    keeps proving the worker alive; if the worker dies, the beats stop and Temporal retries the
    activity elsewhere after the heartbeat timeout instead of the longer start-to-close timeout.
    """
    timeout = activity.info().heartbeat_timeout if activity.in_activity() else None
    if not timeout:
        return await call
    task = asyncio.ensure_future(call)
    try:
        while not (await asyncio.wait({task}, timeout=timeout.total_seconds() / 4))[0]:
            activity.heartbeat()
        return task.result()
    finally:
        task.cancel()  # only matters when the activity itself is cancelled
