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
    ledger = await asyncio.to_thread(admin.all_effects)
    return Evidence(dict(zip(ids, views, strict=True)), ledger)


def check(evidence: Evidence, require_final: bool = True) -> list[Violation]:
    """Every broken promise in ``evidence``; an empty list means the run kept them all.

    - No order is lost: Temporal knows every order that was started.
    - No effect happens twice: at most one intent, charge, refund and picklist per order, and at
      most one email of each kind.
    - A completed order was charged once, got one confirmation, one picklist, one shipped email.
    - An order that ended any other way (declined, cancelled, out of stock) holds none of the
      customer's money (never charged, or refunded exactly once) and no open picklist.
    - With ``require_final``, every order has finished.
    """
    violations = [
        Violation(order_id, "has effects at the providers but no order in Temporal")
        for order_id in evidence.ledger.keys() - evidence.outcomes.keys()
    ]
    for order_id, view in evidence.outcomes.items():
        effects = evidence.ledger.get(order_id, Effects())
        if view is None:
            violations.append(Violation(order_id, "lost: Temporal has no such order"))
            continue
        problems = _at_most_once(effects) + _as_promised(view.status, effects)
        if require_final and not view.status.is_final:
            problems.append(f"did not finish: still {view.status.value}")
        violations += [Violation(order_id, problem) for problem in problems]
    return sorted(violations, key=lambda violation: violation.order_id)


def _at_most_once(effects: Effects) -> list[str]:
    counts = {
        "payment intents": effects.payment_intents,
        "charges": effects.charges,
        "refunds": effects.refunds,
        "picklists": effects.picklists,
        **{f"{template} emails": n for template, n in (effects.emails or {}).items()},
    }
    return [f"{count} {what}, expected at most 1" for what, count in counts.items() if count > 1]


def _as_promised(status: OrderStatus, effects: Effects) -> list[str]:
    if status == OrderStatus.COMPLETED:
        expected = {
            "charges": (effects.charges, 1),
            "refunds": (effects.refunds, 0),
            "open picklists": (effects.picklists - effects.cancelled_picklists, 1),
            "confirmation emails": (effects.emails_of(EmailTemplate.ORDER_CONFIRMATION), 1),
            "shipped emails": (effects.emails_of(EmailTemplate.ORDER_SHIPPED), 1),
        }
    elif status.is_final:
        expected = {
            "charges not refunded": (effects.charges - effects.refunds, 0),
            "open picklists": (effects.picklists - effects.cancelled_picklists, 0),
            "shipped emails": (effects.emails_of(EmailTemplate.ORDER_SHIPPED), 0),
        }
        if status == OrderStatus.PAYMENT_DECLINED:
            expected["decline emails"] = (effects.emails_of(EmailTemplate.PAYMENT_DECLINED), 1)
    else:
        return []
    return [
        f"{status.value} with {actual} {what}, expected {want}"
        for what, (actual, want) in expected.items()
        if actual != want
    ]


@dataclass(frozen=True)
class Tally:
    """A run's effects added up over all its orders, for tables and summaries."""

    orders: int
    statuses: Mapping[str, int]
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
        charges=sum(e.charges for e in effects),
        refunds=sum(e.refunds for e in effects),
        confirmation_emails=sum(e.emails_of(EmailTemplate.ORDER_CONFIRMATION) for e in effects),
        picklists=sum(e.picklists for e in effects),
        shipped_emails=sum(e.emails_of(EmailTemplate.ORDER_SHIPPED) for e in effects),
        lost=sum(view is None for view in evidence.outcomes.values()),
    )
