"""Compensation: the undo of each effect, added as the effect becomes possible.

An undo is added before its effect's call is made, not after it succeeds: a call cut short
(by a cancel, a crash, a lost answer) may still have acted at the provider, so its undo must
run whatever the workflow heard. Each undo acts on the resource at the provider, which decides
atomically what there is to undo.
"""

from collections.abc import Awaitable, Callable

from orders.domain.status import Step

Undo = Callable[[], Awaitable[None]]
"""An undo: it acts on the resource at the provider, which decides what there is to undo."""


class Compensations:
    """The undos of one order, keyed by the step whose effect they take back."""

    def __init__(self) -> None:
        self._undos: dict[Step, Undo] = {}

    def add(self, step: Step, undo: Undo) -> None:
        """Register ``undo`` for the effect ``step`` is about to attempt."""
        self._undos[step] = undo

    def holds(self, step: Step) -> bool:
        """Whether the undo of ``step``'s effect is registered (the step may have acted)."""
        return step in self._undos

    def discard(self, step: Step | None) -> None:
        """Forget the undo of a step the provider refused: a refusal acted on nothing."""
        if step is not None:
            self._undos.pop(step, None)

    async def unwind(self) -> None:
        """Run every undo once, newest first."""
        for undo in reversed(list(self._undos.values())):
            await undo()
        self._undos.clear()
