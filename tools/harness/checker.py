"""The exactly-once checker: each order's outcome in Temporal against its effects at the providers.

The crash tests, the benchmark and the demo all judge a run with this one module. It reads the
two records that matter, what each workflow says happened to its order and what the providers'
ledger says was done (charges, refunds, emails, picklists), against what the run itself knows:
the orders as it placed them (their totals and currencies) and what it meant each to end as.
"""

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from temporalio.client import Client

from orders.client.orders import OrderNotFound, order_status
from orders.domain.models import OrderView
from orders.domain.status import EmailTemplate, OrderStatus, RefundStatus, Step, StepState
from sandbox.admin_client import Effects, SandboxAdmin
from tools.harness.drive import Placed, gather_limited

Outcomes = Mapping[str, OrderView | None]
"""Order id -> the order's read model, or ``None`` when Temporal has no such order."""

UNATTRIBUTED = "(no order id)"
"""What a violation about ledger rows that carry no order id names instead of an order."""


@dataclass(frozen=True)
class Violation:
    """One broken promise about one order."""

    order_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.order_id}: {self.problem}"


@dataclass(frozen=True)
class Evidence:
    """Everything the checker judges: the orders' outcomes and the providers' ledger.

    Judged against the orders as the run placed them.
    """

    outcomes: Outcomes
    ledger: Mapping[str, Effects]
    placed: Mapping[str, Placed]
    """Order id -> the order as placed and what it was meant to end as."""
    unattributed: Effects = field(default_factory=Effects)
    """The ledger's rows that carry no order id: effects no order explains."""


async def gather_evidence(
    client: Client, admin: SandboxAdmin, placed: Iterable[Placed]
) -> Evidence:
    """Read every placed order's outcome from Temporal, then the ledger from the providers."""

    async def outcome(order_id: str) -> OrderView | None:
        try:
            return await order_status(client, order_id)
        except OrderNotFound:
            return None

    orders = {entry.order.id: entry for entry in placed}
    views = await gather_limited(outcome(order_id) for order_id in orders)
    # The ledger last: whatever an order records having done is then in the ledger too, so
    # the checker can hold running orders to it without racing them.
    ledger = await asyncio.to_thread(admin.ledger)
    return Evidence(
        dict(zip(orders, views, strict=True)), ledger.orders, orders, ledger.unattributed
    )


def check(evidence: Evidence, require_final: bool = True) -> list[Violation]:
    """Every broken promise in ``evidence``; an empty list means the run kept them all.

    Each order is judged on its own, from its status in Temporal and the order as placed:

    - Always, even mid-flight: nothing happened twice (payment intents, cancelled intents,
      authorizations, releases, charges, refunds that succeeded, picklists, cancelled
      picklists, emails of any one template); every authorization, capture and release was for
      the order's total, in its currency; no more was refunded (by refunds that succeeded)
      than charged; and every intent, charge, refund and picklist the order records is one the
      ledger holds for it.
    - Once final, what its outcome promises: the end the run meant for it (completed, declined,
      out of stock, cancelled); the emails it needs exactly once and none it must not send (a
      confirmation only if the money was taken); a completed order charged once and never
      refunded, a declined one never charged, a cancelled or out-of-stock one refunded in full
      (by refunds that succeeded) if it was charged; no authorization left held (captured or
      released); one payment intent once the order got past payment; one active picklist if
      completed, none otherwise.
    - No order is lost: Temporal knows every order that was started and every order the
      providers acted for; and the ledger holds no row that carries no order id (an effect no
      order explains).
    - With ``require_final``, every order has finished.
    """
    violations = [
        Violation(order_id, f"lost: Temporal has no such order, but the providers hold {held}")
        for order_id, effects in evidence.ledger.items()
        if order_id not in evidence.outcomes and (held := _describe(effects))
    ]
    if held := _describe(evidence.unattributed):
        violations.append(
            Violation(UNATTRIBUTED, f"the providers hold {held} that no order explains")
        )
    for order_id, view in evidence.outcomes.items():
        effects = evidence.ledger.get(order_id, Effects())
        problems = judge(view, effects, evidence.placed.get(order_id))
        if require_final and view is not None and not view.status.is_final:
            problems.append(f"did not finish: still {view.status.value}")
        violations += [Violation(order_id, problem) for problem in problems]
    return sorted(violations, key=lambda violation: violation.order_id)


def judge(view: OrderView | None, effects: Effects, placed: Placed | None = None) -> list[str]:
    """The broken promises of one order: its read model (``None``: unknown) against its effects.

    ``placed`` is the order as the run placed it: its total and currency are the truth the
    amounts are held to (the read model's own when not given), and its meant end the one the
    order must reach. An order that has not finished is judged only on what cannot be wrong
    mid-flight.
    """
    if view is None:
        held = _describe(effects)
        return [f"lost: Temporal has no such order{held and f', but the providers hold {held}'}"]
    problems = _as_meant(view, placed) + _as_recorded(view, effects)
    truth = placed.order if placed is not None else view
    problems += _as_placed(effects, truth.total, truth.currency)
    counts = _counts(effects)
    # Per counted effect, the bounds it must keep, strictest first: only the first one broken
    # is reported, so one fault reads as one line ("2 charges, expected 1 for a completed
    # order", not also "expected at most 1").
    bounds: dict[str, list[_Bound]] = {what: [] for what in counts}
    if view.status.is_final:
        problems += _as_promised(view.status, effects, bounds)
    for what in counts:
        if what not in _UNBOUNDED:  # implied by "at most 1" of what they derive from, or free
            bounds[what].append(_Bound(0, 1))
    if effects.returned_amount > effects.charged_amount:
        problems.append(
            f"refunded {effects.returned_amount} of {effects.charged_amount} charged: "
            "more than was charged"
        )
    problems += refund_failures(effects)
    problems += authenticated_first(view, effects) + events_failed(effects)
    bounds.setdefault(_DISPUTE_EMAIL, []).insert(0, _dispute_emails(view, effects))
    for what, count in counts.items():
        broken = next((b for b in bounds[what] if not b.holds(count)), None)
        if broken is not None:
            problems.append(f"{_count(count, what)}, expected {broken.want}{broken.why}")
    return problems


def authenticated_first(view: OrderView, effects: Effects) -> list[str]:
    """An order whose card needed 3-D Secure reserved stock and took money only after it.

    Known by the authentication email in the ledger; the order's timeline says when the
    customer's authentication completed. Never completed: no picklist, no authorization kept,
    no capture at all.
    """
    if not effects.emails_of(EmailTemplate.AUTHENTICATION_REQUIRED):
        return []
    done = [
        line.finished_at
        for line in view.timeline
        if line.step == Step.AUTHENTICATION and line.state == StepState.COMPLETED
    ]
    if not done or done[0] is None:
        took = [what for what, count in (("picklist", effects.picklists),
                                         ("charge", effects.charges)) if count]  # fmt: skip
        if took:
            return [f"never authenticated by the customer, yet made {_and(took)}"]
        return []
    early = sorted(
        {
            line.step.value
            for line in view.timeline
            if line.step in (Step.PICKLIST, Step.PAYMENT_CAPTURE) and line.started_at < done[0]
        }
    )
    return [f"{_and(early)} before the customer authenticated"] if early else []


def events_failed(effects: Effects) -> list[str]:
    """The gateway's events about the order are delivered, late perhaps, never refused."""
    if effects.failed_events:
        return [f"{_count(effects.failed_events, 'Stripe event')} refused by the receiver"]
    return []


def _dispute_emails(view: OrderView, effects: Effects) -> "_Bound":
    """Operators hear of each chargeback once (its workflow may tell them after the order)."""
    low = effects.disputes if view.status.is_final else 0
    return _Bound(low, effects.disputes, " for its disputes")


def _and(words: list[str]) -> str:
    return " and ".join(words)


def refund_failures(effects: Effects) -> list[str]:
    """A refund-failed email is the truth only when a refund failed: each one told, not more."""
    told = effects.emails_of(EmailTemplate.REFUND_FAILED)
    failed = (effects.refunds_by_status or {}).get(RefundStatus.FAILED, 0)
    if told and not failed:
        return [f"{_count(told, 'refund-failed email')} but no refund failed"]
    return []


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
_UNSUCCESSFUL_REFUND = "pending or failed refund"
"""A refund that gave nothing back (yet): a failed one may be followed by one that succeeds."""
_UNBOUNDED = (*_DERIVED, _UNSUCCESSFUL_REFUND)

_DISPUTE_EMAIL = f"{EmailTemplate.DISPUTE_OPENED} email"
_ON_THE_WAY = frozenset(
    {
        EmailTemplate.AUTHENTICATION_REQUIRED,
        EmailTemplate.AUTHENTICATION_REMINDER,
        EmailTemplate.DISPUTE_OPENED,  # bounded by the order's disputes (``_dispute_emails``)
    }
)
"""Emails any outcome may have sent on the way: 3-D Secure's link and reminder."""

_EMAILS: Mapping[OrderStatus, tuple[frozenset[str], frozenset[str]]] = {
    # Final status -> (emails it needs exactly once, emails it may have sent once on the way).
    OrderStatus.COMPLETED: (
        frozenset({EmailTemplate.ORDER_CONFIRMATION, EmailTemplate.ORDER_SHIPPED}),
        frozenset({EmailTemplate.SHIPMENT_DELAYED}),
    ),
    OrderStatus.PAYMENT_DECLINED: (frozenset({EmailTemplate.PAYMENT_DECLINED}), frozenset()),
    # Out of stock is found at the picklist: before the capture since authorize-reserve-capture
    # (no confirmation), after the charge and its confirmation in orders started before.
    # A refund the bank refused is told to the customer once (``refund_failures`` checks it).
    OrderStatus.OUT_OF_STOCK: (
        frozenset({EmailTemplate.OUT_OF_STOCK}),
        frozenset({EmailTemplate.ORDER_CONFIRMATION, EmailTemplate.REFUND_FAILED}),
    ),
    # Cancelled any time before shipping: before or after the charge, maybe once it was late.
    OrderStatus.CANCELLED: (
        frozenset({EmailTemplate.ORDER_CANCELLED}),
        frozenset(
            {
                EmailTemplate.ORDER_CONFIRMATION,
                EmailTemplate.SHIPMENT_DELAYED,
                EmailTemplate.REFUND_FAILED,
            }
        ),
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
        "refund": effects.returned,
        _UNSUCCESSFUL_REFUND: effects.refunds - effects.returned,
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
    allowed = allowed | _ON_THE_WAY
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
    if status in (OrderStatus.COMPLETED, OrderStatus.PAYMENT_DECLINED):
        # Nothing to give back: not even a refund that is still pending or failed.
        bounds[_UNSUCCESSFUL_REFUND].append(_Bound(0, 0, outcome))
    if status == OrderStatus.COMPLETED:
        bounds["charge"].append(_Bound(1, 1, outcome))
        bounds["refund"].append(_Bound(0, 0, outcome))
    elif status == OrderStatus.PAYMENT_DECLINED:
        bounds["authorization"].append(_Bound(0, 0, outcome))
        bounds["charge"].append(_Bound(0, 0, outcome))
        bounds["refund"].append(_Bound(0, 0, outcome))
    elif not charged:
        bounds["refund"].append(_Bound(0, 0, outcome))
    elif effects.returned_amount < effects.charged_amount:
        # Only a refund that succeeded gave the money back; a pending or failed one did not.
        problems.append(
            f"refunded {effects.returned_amount} of {effects.charged_amount} charged: "
            f"{_an(status.value)} order is refunded in full"
        )
    else:
        # The amounts agree, but only a refund in the ledger gives the money back.
        bounds["refund"].append(_Bound(1, 1, f" for a charged {status.value} order"))
    return problems


def _as_meant(view: OrderView, placed: Placed | None) -> list[str]:
    """Whether a finished order ended as the run meant it to (its own status is no truth)."""
    if placed is None or not view.status.is_final or view.status == placed.meant:
        return []
    return [f"ended {view.status.value}, but the run meant it to end {placed.meant.value}"]


def _as_recorded(view: OrderView, effects: Effects) -> list[str]:
    """Each id the order records (intent, charge, refund, picklist) that the ledger lacks.

    These hold mid-flight too: ``gather_evidence`` reads the ledger after the orders, and an
    order records an id only once the provider has answered with it.
    """
    recorded = {
        "payment intent": (view.payment_intent_id, effects.ids_of("payment_intent")),
        "charge": (view.transaction_id, effects.ids_of("charge")),
        "refund": (view.refund_id, effects.ids_of("refund")),
        "picklist": (view.picklist_id, effects.ids_of("picklist")),
    }
    return [
        f"the order records {what} {record_id}, but the ledger holds "
        f"{', '.join(held) if held else 'none'} for it"
        for what, (record_id, held) in recorded.items()
        if record_id is not None and record_id not in held
    ]


def _as_placed(effects: Effects, total: int, currency: str) -> list[str]:
    """Money handled for other than the order's total, or in another currency than its own.

    Each authorization, capture and release is of the whole total (an order never pays in
    parts); a wrong amount can hide behind the right counts, so amounts are compared too.
    """
    problems = [
        f"{verb} {amount} in {_count(count, what)}, expected {count * total}: "
        f"the order's total is {total}"
        for verb, what, count, amount in (
            ("authorized", "authorization", effects.authorizations, effects.authorized_amount),
            ("captured", "charge", effects.charges, effects.charged_amount),
            ("released", "released authorization", effects.released, effects.released_amount),
        )
        if amount != count * total
    ]
    others = sorted(set(effects.currencies or ()) - {currency.lower()})
    if others:
        problems.append(f"money handled in {', '.join(others)}, expected {currency.lower()}")
    return problems


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
    """Refunds that succeeded (gave money back); pending and failed ones are not counted."""
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
        refunds=sum(e.returned for e in effects),  # money given back: succeeded ones
        confirmation_emails=sum(e.emails_of(EmailTemplate.ORDER_CONFIRMATION) for e in effects),
        picklists=sum(e.picklists for e in effects),
        shipped_emails=sum(e.emails_of(EmailTemplate.ORDER_SHIPPED) for e in effects),
        lost=sum(view is None for view in evidence.outcomes.values()),
    )
