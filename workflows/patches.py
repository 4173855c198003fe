"""Every change to the commands an order issues (``workflow.patched``), in the order they came.

Orders wait days for the warehouse, so an order started by older code replays on newer code:
each change that alters its commands is taken only by orders that asked its patch. Each patch
an order asks costs it two history events (a marker and Temporal's ``TemporalChangeVersion``
search attribute upsert) and a visibility write. An order started since ``BASELINE`` asks that
one patch at its start and takes every patch before it without asking: an order that took
the baseline was started by code that had all of them.

A new change gets a new patch here, asked in the order's first workflow task (``Patches.ask``
for the baseline, ``OrderWorkflow._fulfil`` for the rest): a patch first asked after a local
activity in the same task failed to replay (TMPRL1100, "patch marker encountered").
"""

from dataclasses import dataclass

from temporalio import workflow

PROVIDER_DECIDES = "compensation-decided-by-provider"
"""Compensation runs newest first and each provider decides what to undo."""
PROMPT_CANCEL = "prompt-cancel"
"""An accepted cancel interrupts the running step instead of waiting for it."""
SHIP_RULE = "ship-only-when-awaiting"
"""A shipped report before the order awaits shipment is refused."""
SHIPMENT_DEADLINES = "shipment-deadlines"
"""The wait for the warehouse has deadlines: a delay email, then an operator."""
LOCAL_FIRST = "local-first"
"""The steps whose policy says ``local_first`` try a local activity first."""
RETRY_SAME_KEY = "retry-same-key"
"""An operator's retry after faults sends the step's key again (see ``Steps.call``)."""
TEMPORAL_CANCEL = "temporal-cancel-winds-down"
"""A workflow cancel requested through Temporal winds the order down."""
AUTHORIZE_RESERVE_CAPTURE = "authorize-reserve-capture"
"""The card is authorized, the stock reserved, and only then the money captured."""

BEFORE_AUTHORIZE_RESERVE_CAPTURE = (
    PROMPT_CANCEL,
    PROVIDER_DECIDES,
    SHIP_RULE,
    TEMPORAL_CANCEL,
    SHIPMENT_DEADLINES,
    LOCAL_FIRST,
    RETRY_SAME_KEY,
)
"""The patches an order from authorize-reserve-capture to the baseline asked at its start, in
this order (its recorded history holds their markers there)."""

BASELINE = "baseline-2026-12"
"""Every patch above, in one marker: asked first thing, by every order started since."""


@dataclass(frozen=True)
class Patches:
    """Which changes one order runs with; one per order, made when it starts or replays."""

    baseline: bool = False
    """The order took ``BASELINE``: every patch before it is taken without a marker each."""

    @classmethod
    def ask(cls) -> "Patches":
        """Ask for the baseline; call it first thing in the order's first workflow task."""
        return cls(baseline=workflow.patched(BASELINE))

    def taken(self, patch: str) -> bool:
        """Whether the order runs the change ``patch`` names (``workflow.patched`` before it)."""
        return self.baseline or workflow.patched(patch)
