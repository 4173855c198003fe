"""The workflow sandbox, without asking it a payload's serialization context it cannot use.

For every payload sequence of an activation and of its completion (three passes each way), the
SDK asks the workflow instance which serialization context applies, so that a codec can encrypt
an activity's input under the activity's context, say. temporalio 1.35.0's sandbox answers by
compiling and running a code string inside the sandbox each time: 16% of the worker's CPU
samples at 50 orders in flight (py-spy), the largest single cost of the worker.

The answer only picks the payload codec and the external storage the SDK uses outside the
sandbox (payload conversion happens inside it, with the workflow's own converter). When the
codec takes no context (it is not ``WithSerializationContext``) and no external storage is
configured, every answer gives the same codec and the same bytes, so the question need not be
asked: ``ContextFreeSandboxRunner`` answers "no context" at once. The workflow code still runs
in the sandbox exactly as before; only this question is skipped. ``runner_for`` picks it only
for such a data converter, so a context-aware codec added later gets the sandbox's answers.
"""

from dataclasses import dataclass

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import (
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    WithSerializationContext,
)
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.workflow import Info


def context_free(data_converter: DataConverter) -> bool:
    """Whether no serialization context can change what ``data_converter`` does.

    Outside the sandbox it only encodes with its codec, which takes none, and stores no payload
    externally.
    """
    return data_converter.external_storage is None and not isinstance(
        data_converter.payload_codec, WithSerializationContext
    )


@dataclass(frozen=True)
class ContextFreeSandboxRunner(SandboxedWorkflowRunner):
    """The sandboxed runner for a data converter no serialization context changes.

    Its instances answer the SDK's question for each payload sequence (``context_free``)
    without running code in the sandbox.
    """

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """A sandboxed instance that skips the serialization-context round trip."""
        return _ContextFreeInstance(super().create_instance(det))


class _ContextFreeInstance(WorkflowInstance):
    """Runs activations in the sandboxed instance; no context for any payload."""

    def __init__(self, sandboxed: WorkflowInstance) -> None:
        self._sandboxed = sandboxed

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        """Run the activation in the sandbox."""
        return self._sandboxed.activate(act)

    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> SerializationContext | None:
        """None: the worker's own codec, which takes no context anyway."""
        return None

    def get_external_store_context(
        self, command_info: CommandInfo | None
    ) -> StorageDriverStoreContext:
        """No target: nothing is stored externally."""
        return StorageDriverStoreContext(target=None)

    def get_info(self) -> Info:
        """The workflow's info, kept outside the sandbox."""
        return self._sandboxed.get_info()

    def get_thread_id(self) -> int | None:
        """The thread running the activation, for the SDK's deadlock report."""
        return self._sandboxed.get_thread_id()


def runner_for(
    data_converter: DataConverter, restrictions: SandboxRestrictions
) -> SandboxedWorkflowRunner:
    """The sandboxed runner for a worker with ``data_converter``: context-free when it can be."""
    runner = ContextFreeSandboxRunner if context_free(data_converter) else SandboxedWorkflowRunner
    return runner(restrictions=restrictions)
