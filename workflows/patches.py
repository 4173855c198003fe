"""Every change to the commands an order issues (``workflow.patched``), in the order they came.

Orders wait days for the warehouse, so an order started by older code replays on newer code:
each change that alters its commands is taken only by orders that asked its patch. Each patch
an order asks costs it two history events (a marker and Temporal's ``TemporalChangeVersion``
search attribute upsert) and a visibility write. An order started since ``BASELINE`` asks that
one patch at its start and takes every patch before it without asking: an order that took
the baseline was started by code that had all of them.

A change since the baseline gets a new patch at the end of ``LEVELS``: the patch names the
level, and the level holds every change before it. A new order asks the newest level first
(one marker), an order replaying asks down to the level it took, so each order still asks
exactly one. Levels are asked in the order's first workflow task (``Patches.ask``): a patch
first asked after a local activity in the same task failed to replay (TMPRL1100, "patch
marker encountered").
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

REAL_WORLD_MONEY = "real-world-money"
"""Money as the real gateway and warehouse handle it. Goods never leave unpaid: the picklist is
held until the capture, then released, and a parcel that left before the capture is still paid
for (captured, confirmed, then "shipped"). An authorization is watched until it expires: an
operator is warned before, and the order winds down (or re-authorizes) when it does. A pending
refund is followed to its outcome, and a failed one goes to an operator."""

CUSTOMER_IN_THE_LOOP = "customer-in-the-loop"
"""The customer in the loop: a confirm answered ``requires_action`` is not an authorization.
The order emails the customer the 3-D Secure link, waits (reminding once) for the outcome the
gateway gives, and cancels the intent, nothing charged, if the deadline passes; a failed
authentication is a decline."""

LEVELS = (BASELINE, REAL_WORLD_MONEY, CUSTOMER_IN_THE_LOOP)
"""The baseline and each change since, oldest first; an order that took one took all before."""


@dataclass(frozen=True)
class Patches:
    """Which changes one order runs with; one per order, made when it starts or replays."""

    level: int = 0
    """How many of ``LEVELS`` the order took (0: it started before the baseline)."""

    @classmethod
    def ask(cls) -> "Patches":
        """Ask for the newest level the order took; call it first thing in its first task."""
        for level in range(len(LEVELS), 0, -1):
            if workflow.patched(LEVELS[level - 1]):
                return cls(level=level)
        return cls()

    @property
    def baseline(self) -> bool:
        """The order took ``BASELINE``: every patch before it is taken without a marker each."""
        return self.level > 0

    def taken(self, patch: str) -> bool:
        """Whether the order runs the change ``patch`` names (``workflow.patched`` before it)."""
        if patch in LEVELS:
            return self.level > LEVELS.index(patch)
        return self.baseline or workflow.patched(patch)
