"""Changes to the commands an order issues (``workflow.patched``), one level each.

Orders wait days for the warehouse, so an order started by older code replays on newer code:
a change that alters the commands an order issues is taken only by the orders that asked its
patch. The baseline is what orders ran before the first level: they asked no patch, and they
replay with every level off (their recorded histories are ``tests/histories/v12-*``).

Each change appends a level to ``LEVELS``: its patch names it, and a level holds every
change before it. A new order asks the newest level first (one ``MarkerRecorded`` event and
Temporal's ``TemporalChangeVersion`` search attribute), an order replaying asks down to the
level it took, so each order asks exactly one. The levels are asked in the order's first
workflow task (``Patches.ask``): a patch first asked after a local activity in the same task
failed to replay (TMPRL1100, "patch marker encountered"). The change then branches on it::

    NEXT_CHANGE = "next-change"
    LEVELS = (COALESCED_STATUS_UPSERTS, LOCAL_PICKLIST_AND_CAPTURE, NEXT_CHANGE)

    if state.patches.taken(patches.NEXT_CHANGE):
        ...  # the new commands
    else:
        ...  # exactly what orders before it did

Record the new level's histories (``tests/test_replay.py``), keep today's until no order of
today's build runs. The rollout test's build B (``tests/test_worker_versioning.py``) makes such
a change and shows orders in flight finishing on the new build unchanged.
"""

from dataclasses import dataclass

from temporalio import workflow

COALESCED_STATUS_UPSERTS = "coalesced-status-upserts"
"""Level 1: a status the order passes within one workflow task (paid, shipped) reaches
Temporal's visibility only if the order waits on Temporal before its next status
(``workflows.order.PASSING_STATUSES``): two fewer visibility writes per order."""

LOCAL_PICKLIST_AND_CAPTURE = "local-picklist-and-capture"
"""Level 2: the picklist and the capture are tried as local activities first, like the intent
and the emails (``workflows.policy.StepPolicy.local_since``), and a cancel that finds the
authorization under way takes back a picklist a lost workflow task may have made
(``workflows.picking.Picking.cover_a_lost_local_picklist``). An order goes from its
authorization to awaiting-shipment in one workflow task: two fewer workflow tasks and activity
round trips."""

LEVELS: tuple[str, ...] = (COALESCED_STATUS_UPSERTS, LOCAL_PICKLIST_AND_CAPTURE)
"""Each change since the baseline, oldest first; an order that took one took all before."""


@dataclass(frozen=True)
class Patches:
    """Which changes one order runs with; one per order, made when it starts or replays."""

    level: int = 0
    """How many of ``LEVELS`` the order took (0: none, the baseline)."""

    @classmethod
    def ask(cls) -> "Patches":
        """Ask for the newest level the order took; call it first thing in its first task."""
        for level in range(len(LEVELS), 0, -1):
            if workflow.patched(LEVELS[level - 1]):
                return cls(level=level)
        return cls()

    def taken(self, patch: str) -> bool:
        """Whether the order runs the change ``patch`` names (one of ``LEVELS``)."""
        return self.level > LEVELS.index(patch)
