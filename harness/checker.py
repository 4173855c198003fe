"""The exactly-once checker: each order's outcome in Temporal against its effects at the providers.

The crash tests, the benchmark and the demo all judge a run with this one module. It reads the
two records that matter and nothing else: what each workflow says happened to its order, and
what the providers' ledger says was done (charges, refunds, emails, picklists).
"""

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from temporalio.client import Client

from client.orders import OrderNotFound, order_status
from domain.models import OrderView
from domain.status import EmailTemplate, OrderStatus
from harness.drive import gather_limited
from providers.admin_client import Effects, SandboxAdmin

Outcomes = Mapping[str, OrderView | None]
"""Order id -> the order's read model, or ``None`` when Temporal has no such order."""


@dataclass(frozen=True)
class Violation:
    """One broken promise about one order."""

    order_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.order_id}: {self.problem}"


@dataclass(frozen=True)
class Evidence:
    """Everything the checker judges: the orders' outcomes and the providers' ledger."""

    outcomes: Outcomes
    ledger: Mapping[str, Effects]


async def gather_evidence(
    client: Client, admin: SandboxAdmin, order_ids: Iterable[str]
) -> Evidence:
    """Read every order's outcome from Temporal, then the ledger from the providers."""

    async def outcome(order_id: str) -> OrderView | None:
        try:
            return await order_status(client, order_id)
        except OrderNotFound:
            return None

    ids = list(order_ids)
    views = await gather_limited(outcome(order_id) for order_id in ids)
    # The ledger last: whatever an order records having done is then in the ledger too, so
    # the checker can hold running orders to it without racing them.
    ledger = await asyncio.to_thread(admin.all_effects)
    return Evidence(dict(zip(ids, views, strict=True)), ledger)


def check(evidence: Evidence, require_final: bool = True) -> list[Violation]:
    """Every broken promise in ``evidence``; an empty list means the run kept them all.

    Each order is judged on its own, from its status in Temporal:

    - Always, even mid-flight: nothing happened twice (payment intents, cancelled intents,
      authorizations, releases, charges, refunds, picklists, cancelled picklists, emails of
      any one template), no more was refunded than charged, and every intent, charge, refund
      and picklist the order records is in the ledger.
    - Once final, what its outcome promises: the emails it needs exactly once and none it must
      not send (a confirmation only if the money was taken); a completed order charged once and
      never refunded, a declined one never charged, a cancelled or out-of-stock one refunded in
      full if it was charged; no authorization left held (captured or released); one payment
      intent once the order got past payment; one active picklist if completed, none otherwise.
    - No order is lost: Temporal knows every order that was started and every order the
      providers acted for.
    - With ``require_final``, every order has finished.
    """
    violations = [
        Violation(order_id, f"lost: Temporal has no such order, but the providers hold {held}")
        for order_id, effects in evidence.ledger.items()
        if order_id not in evidence.outcomes and (held := _describe(effects))
    ]
    for order_id, view in evidence.outcomes.items():
        effects = evidence.ledger.get(order_id, Effects())
        problems = judge(view, effects)
        if require_final and view is not None and not view.status.is_final:
            problems.append(f"did not finish: still {view.status.value}")
        violations += [Violation(order_id, problem) for problem in problems]
    return sorted(violations, key=lambda violation: violation.order_id)


def judge(view: OrderView | None, effects: Effects) -> list[str]:
    """The broken promises of one order: its read model (``None``: unknown) against its effects.

    An order that has not finished is judged only on what cannot be wrong mid-flight.
    """
    if view is None:
        held = _describe(effects)
        return [f"lost: Temporal has no such order{held and f', but the providers hold {held}'}"]
    counts = _counts(effects)
    # Per counted effect, the bounds it must keep, strictest first: only the first one broken
    # is reported, so one fault reads as one line ("2 charges, expected 1 for a completed
    # order", not also "expected at most 1").
    bounds: dict[str, list[_Bound]] = {what: [] for what in counts}
    problems: list[str] = []
    if view.status.is_final:
        problems += _as_promised(view.status, effects, bounds)
    _as_recorded(view, bounds)
    for what in counts:
        if what not in _DERIVED:  # implied by "at most 1" of what they derive from
            bounds[what].append(_Bound(0, 1))
    if effects.refunded_amount > effects.charged_amount:
        problems.append(
            f"refunded {effects.refunded_amount} of {effects.charged_amount} charged: "
            "more than was charged"
        )
    for what, count in counts.items():
        broken = next((b for b in bounds[what] if not b.holds(count)), None)
        if broken is not None:
            problems.append(f"{_count(count, what)}, expected {broken.want}{broken.why}")
    return problems


@dataclass(frozen=True)
class _Bound:
    """How many of one effect an order may have, and why (appended to the message)."""

    low: int
    high: int | None
    """``None``: no upper bound (for "at least")."""
    why: str = ""

    def holds(self, count: int) -> bool:
        return self.low <= count and (self.high is None or count <= self.high)

    @property
    def want(self) -> str:
        if self.high == 0:
            return "none"
        if self.low == self.high:
            return str(self.low)
        if self.high is None:
            return f"at least {self.low}"
        return f"at most {self.high}" if self.low == 0 else f"{self.low} to {self.high}"


_ACTIVE_PICKLIST = "active picklist"
_HELD_AUTHORIZATION = "held authorization"
"""An authorization neither captured nor released: money the customer cannot spend."""
_DERIVED = (_ACTIVE_PICKLIST, _HELD_AUTHORIZATION)

_EMAILS: Mapping[OrderStatus, tuple[frozenset[str], frozenset[str]]] = {
    # Final status -> (emails it needs exactly once, emails it may have sent once on the way).
    OrderStatus.COMPLETED: (
        frozenset({EmailTemplate.ORDER_CONFIRMATION, EmailTemplate.ORDER_SHIPPED}),
        frozenset({EmailTemplate.SHIPMENT_DELAYED}),
    ),
    OrderStatus.PAYMENT_DECLINED: (frozenset({EmailTemplate.PAYMENT_DECLINED}), frozenset()),
    # Out of stock is found at the picklist: before the capture since authorize-reserve-capture
    # (no confirmation), after the charge and its confirmation in orders started before.
    OrderStatus.OUT_OF_STOCK: (
        frozenset({EmailTemplate.OUT_OF_STOCK}),
        frozenset({EmailTemplate.ORDER_CONFIRMATION}),
    ),
    # Cancelled any time before shipping: before or after the charge, maybe once it was late.
    OrderStatus.CANCELLED: (
        frozenset({EmailTemplate.ORDER_CANCELLED}),
        frozenset({EmailTemplate.ORDER_CONFIRMATION, EmailTemplate.SHIPMENT_DELAYED}),
    ),
}


def emails_needed(status: OrderStatus) -> frozenset[str]:
    """The emails an order that ended ``status`` must have sent (exactly once when keyed)."""
    return _EMAILS[status][0] if status in _EMAILS else frozenset()


def _counts(effects: Effects) -> dict[str, int]:
    """Each counted effect of an order by its name in messages (singular), every template too."""
    emails = effects.emails or {}
    templates = [*EmailTemplate, *sorted(set(emails) - set(EmailTemplate))]
    return {
        "payment intent": effects.payment_intents,
        "cancelled payment intent": effects.cancelled_intents,
        "authorization": effects.authorizations,
        "released authorization": effects.released,
        "charge": effects.charges,
        "refund": effects.refunds,
        "picklist": effects.picklists,
        "cancelled picklist": effects.cancelled_picklists,
        _ACTIVE_PICKLIST: max(effects.picklists - effects.cancelled_picklists, 0),
        _HELD_AUTHORIZATION: max(effects.authorizations - effects.charges - effects.released, 0),
        **{f"{template} email": effects.emails_of(template) for template in templates},
    }


def _as_promised(
    status: OrderStatus, effects: Effects, bounds: dict[str, list[_Bound]]
) -> list[str]:
    """Add the bounds a final ``status`` promises to ``bounds``; return the refund problems."""
    outcome = f" for {_an(status.value)} order"
    needed, allowed = _EMAILS[status]
    charged = effects.charges > 0 or effects.charged_amount > 0
    if not charged:  # the confirmation follows the capture: no money taken, no confirmation
        allowed = allowed - {EmailTemplate.ORDER_CONFIRMATION}
    for what in bounds:
        template = what.removesuffix(" email")
        if what.endswith(" email") and template not in allowed:
            bounds[what].append(
                _Bound(1, 1, outcome) if template in needed else _Bound(0, 0, outcome)
            )
    # The decline is the gateway's answer to confirming the intent, so it exists then too.
    paying = charged or effects.authorizations > 0
    if paying or status in (OrderStatus.COMPLETED, OrderStatus.PAYMENT_DECLINED):
        bounds["payment intent"].append(_Bound(1, 1, outcome))
    bounds[_HELD_AUTHORIZATION].append(_Bound(0, 0, outcome))
    # Only a completed order keeps its picklist; any other end takes it back (or never made it).
    picked = int(status == OrderStatus.COMPLETED)
    bounds[_ACTIVE_PICKLIST].append(_Bound(picked, picked, outcome))
    problems = []
    if status == OrderStatus.COMPLETED:
        bounds["charge"].append(_Bound(1, 1, outcome))
        bounds["refund"].append(_Bound(0, 0, outcome))
    elif status == OrderStatus.PAYMENT_DECLINED:
        bounds["authorization"].append(_Bound(0, 0, outcome))
        bounds["charge"].append(_Bound(0, 0, outcome))
        bounds["refund"].append(_Bound(0, 0, outcome))
    elif not charged:
        bounds["refund"].append(_Bound(0, 0, outcome))
    elif effects.refunded_amount < effects.charged_amount:
        problems.append(
            f"refunded {effects.refunded_amount} of {effects.charged_amount} charged: "
            f"{_an(status.value)} order is refunded in full"
        )
    else:
        # The amounts agree, but only a refund in the ledger gives the money back.
        bounds["refund"].append(_Bound(1, 1, f" for a charged {status.value} order"))
    return problems


def _as_recorded(view: OrderView, bounds: dict[str, list[_Bound]]) -> None:
    """Add a bound of at least one for each effect the order records having made.

    These hold mid-flight too: ``gather_evidence`` reads the ledger after the orders, and an
    order records an id only once the provider has answered with it.
    """
    recorded = {
        "payment intent": view.payment_intent_id,
        "charge": view.transaction_id,
        "refund": view.refund_id,
        "picklist": view.picklist_id,
    }
    for what, record_id in recorded.items():
        if record_id is not None:
            bounds[what].append(_Bound(1, None, f": the order records {what} {record_id}"))


def _an(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _count(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _describe(effects: Effects) -> str:
    """The effects that happened, in words ("1 charge, 1 order-confirmation email"), or ""."""
    counts = _counts(effects)
    for derived in _DERIVED:
        del counts[derived]
    return ", ".join(_count(n, what) for what, n in counts.items() if n)


@dataclass(frozen=True)
class Tally:
    """A run's effects added up over all its orders, for tables and summaries."""

    orders: int
    statuses: Mapping[str, int]
    authorizations: int
    released: int
    charges: int
    refunds: int
    confirmation_emails: int
    picklists: int
    shipped_emails: int
    lost: int


def tally(evidence: Evidence) -> Tally:
    """Add up the orders' statuses and the effects recorded for them."""
    effects = [evidence.ledger.get(order_id, Effects()) for order_id in evidence.outcomes]
    statuses = Counter(view.status.value for view in evidence.outcomes.values() if view)
    return Tally(
        orders=len(evidence.outcomes),
        statuses=dict(statuses),
        authorizations=sum(e.authorizations for e in effects),
        released=sum(e.released for e in effects),
        charges=sum(e.charges for e in effects),
        refunds=sum(e.refunds for e in effects),
        confirmation_emails=sum(e.emails_of(EmailTemplate.ORDER_CONFIRMATION) for e in effects),
        picklists=sum(e.picklists for e in effects),
        shipped_emails=sum(e.emails_of(EmailTemplate.ORDER_SHIPPED) for e in effects),
        lost=sum(view is None for view in evidence.outcomes.values()),
    )
