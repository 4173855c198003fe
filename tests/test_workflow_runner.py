"""The worker's sandbox runner: context-free only where no context matters, still a sandbox.

``orders.workflow_runner`` skips the sandbox's serialization-context round trip per payload.
These tests show it is chosen only for a data converter no context can change, that workflow
code still runs under the sandbox's restrictions, and that what the SDK encodes for an
activity is the same encrypted payload either way.
"""

import asyncio
import dataclasses
import datetime
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Self

from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from orders.client.temporal import DATA_CONVERTER
from orders.security.codec import ENCODING_KEY, ENCRYPTED_ENCODING
from orders.workflow_runner import ContextFreeSandboxRunner, context_free
from tests.support import start_time_skipping
from worker import sandboxed_runner


class _ContextAwareCodec(PayloadCodec, WithSerializationContext):
    """A codec that would encode differently per activity: it must get the sandbox's answers."""

    def with_context(self, context: SerializationContext) -> Self:
        return self

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def test_the_project_converter_gets_the_context_free_runner() -> None:
    assert context_free(DATA_CONVERTER)
    assert type(sandboxed_runner(DATA_CONVERTER)) is ContextFreeSandboxRunner


def test_a_context_aware_codec_keeps_the_sandbox_answers() -> None:
    converter = dataclasses.replace(DATA_CONVERTER, payload_codec=_ContextAwareCodec())
    assert not context_free(converter)
    assert type(sandboxed_runner(converter)) is SandboxedWorkflowRunner


@activity.defn
async def echo(text: str) -> str:
    """Returns its input: the test reads how the SDK encoded it."""
    return text


@workflow.defn(sandboxed=True)
class ClockReader:
    """Reads the wall clock, which the sandbox forbids a workflow."""

    @workflow.run
    async def run(self) -> str:
        return datetime.datetime.now().isoformat()


@workflow.defn(sandboxed=True)
class EchoOnce:
    """Sends its input through one activity."""

    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            echo, text, start_to_close_timeout=timedelta(seconds=10)
        )


async def test_workflows_still_run_in_the_sandbox_and_payloads_are_encrypted() -> None:
    env = await start_time_skipping()
    try:
        queue = f"runner-{uuid.uuid4().hex[:8]}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[ClockReader, EchoOnce],
            activities=[echo],
            workflow_runner=sandboxed_runner(env.client.data_converter),
        ):
            # The sandbox still refuses the wall clock: the workflow task fails, every time.
            # By name: the typed form with a run that takes no argument made mypy 2.4.1 infer
            # Never for every later get_workflow_handle_for of the whole check (46 errors).
            clock = await env.client.start_workflow(
                "ClockReader", id=f"clock-{queue}", task_queue=queue
            )
            failure = None
            for _ in range(50):
                async for event in clock.fetch_history_events():
                    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                        failure = event.workflow_task_failed_event_attributes.failure
                if failure:
                    break
                await asyncio.sleep(0.1)
            assert failure is not None
            # The message is encrypted with the rest (encode_common_attributes); the type is not.
            assert failure.application_failure_info.type == "RestrictedWorkflowAccessError"
            await clock.terminate()

            # An activity's input and result cross the codec as before: encrypted in history.
            text = "parcel for Grace"
            echo_run = await env.client.start_workflow(
                EchoOnce.run, text, id=f"echo-{queue}", task_queue=queue
            )
            assert await echo_run.result() == text
            scheduled = [
                event.activity_task_scheduled_event_attributes.input.payloads
                async for event in echo_run.fetch_history_events()
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            ]
            assert len(scheduled) == 1
            (payload,) = scheduled[0]
            assert payload.metadata[ENCODING_KEY] == ENCRYPTED_ENCODING
            assert text.encode() not in payload.data
    finally:
        await env.shutdown()
