"""The exactly-once checker itself: it must catch every kind of broken promise.

Each final status has evidence of a kept promise that passes; each rule has evidence that
breaks only it, and the test asserts the one line the checker says about it.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orders.domain.models import OrderView, StepRecord
from orders.domain.status import (
    FINAL_STATUSES,
    EmailTemplate,
    OrderStatus,
    RefundStatus,
    Step,
    StepState,
)
from sandbox.admin_client import Effects
from tools.harness.checker import UNATTRIBUTED, Evidence, Violation, check, tally
from tools.harness.drive import Placed

TOTAL = 4500

CONFIRMATION = EmailTemplate.ORDER_CONFIRMATION
SHIPPED = EmailTemplate.ORDER_SHIPPED
DELAYED = EmailTemplate.SHIPMENT_DELAYED
DECLINE = EmailTemplate.PAYMENT_DECLINED
CANCELLATION = EmailTemplate.ORDER_CANCELLED
OUT_OF_STOCK = EmailTemplate.OUT_OF_STOCK
REFUND_FAILED = EmailTemplate.REFUND_FAILED
ASKED = EmailTemplate.AUTHENTICATION_REQUIRED
REMINDED = EmailTemplate.AUTHENTICATION_REMINDER
DISPUTE = EmailTemplate.DISPUTE_OPENED
T0 = datetime(2026, 12, 7, tzinfo=UTC)

INTENT = {"payment_intent_id": "pi_1"}
PAID = {**INTENT, "transaction_id": "ch_1"}
PICKED = {**PAID, "picklist_id": "pl_1"}
REFUNDED = {**PAID, "refund_id": "re_1"}


def with_ids(effects: Effects, kind: str, *ids: str) -> Effects:
    """``effects`` whose ledger also holds rows ``ids`` of ``kind`` for the order."""
    return replace(effects, ids={**(effects.ids or {}), kind: [*effects.ids_of(kind), *ids]})


def refunded(
    effects: Effects,
    amount: int = TOTAL,
    status: str = RefundStatus.SUCCEEDED,
    refund_id: str = "re_1",
) -> Effects:
    """``effects`` plus one refund of ``amount`` whose status is ``status``."""
    counts, amounts = dict(effects.refunds_by_status or {}), dict(effects.refunded_by_status or {})
    counts[status] = counts.get(status, 0) + 1
    amounts[status] = amounts.get(status, 0) + amount
    more = replace(
        effects,
        refunds=effects.refunds + 1,
        refunded_amount=effects.refunded_amount + amount,
        refunds_by_status=counts,
        refunded_by_status=amounts,
    )
    return with_ids(more, "refund", refund_id)


INTENDED = Effects(payment_intents=1, ids={"payment_intent": ["pi_1"]})
AUTHORIZED = with_ids(
    replace(INTENDED, authorizations=1, authorized_amount=TOTAL), "charge", "ch_1"
)
CHARGED = replace(AUTHORIZED, charges=1, charged_amount=TOTAL)

COMPLETED = with_ids(
    replace(CHARGED, picklists=1, emails={CONFIRMATION: 1, SHIPPED: 1}), "picklist", "pl_1"
)
DECLINED = replace(INTENDED, emails={DECLINE: 1})
SOLD_OUT = refunded(replace(CHARGED, emails={CONFIRMATION: 1, OUT_OF_STOCK: 1}))
PICKED_THEN_CANCELLED = with_ids(
    replace(CHARGED, picklists=1, cancelled_picklists=1, emails={CONFIRMATION: 1, CANCELLATION: 1}),
    "picklist",
    "pl_1",
)
"""A charged order cancelled after its picklist, before its refund."""
CANCELLED_PICKED = refunded(PICKED_THEN_CANCELLED)


def view(status: OrderStatus, order_id: str = "o-1", **ids: str) -> OrderView:
    return OrderView(
        order_id=order_id, customer_id="c-1", status=status, total=TOTAL, currency="USD", **ids
    )


def line(step: Step, started_s: int, finished_s: int | None = None) -> StepRecord:
    """A timeline line ``started_s`` seconds into the order, completed if ``finished_s``."""
    return StepRecord(
        step=step,
        state=StepState.COMPLETED if finished_s is not None else StepState.STARTED,
        started_at=T0 + timedelta(seconds=started_s),
        finished_at=None if finished_s is None else T0 + timedelta(seconds=finished_s),
    )


AUTHENTICATED_THEN_PICKED = [
    line(Step.AUTHENTICATION, 1, 30),
    line(Step.PICKLIST, 31, 32),
    line(Step.PAYMENT_CAPTURE, 33, 34),
]


def problems(outcome: OrderView | None, effects: Effects, require_final: bool = True) -> list[str]:
    evidence = Evidence({"o-1": outcome}, {"o-1": effects}, {})
    return [v.problem for v in check(evidence, require_final=require_final)]


# -- kept promises: one or more ways each final status is reached, all without a violation --

KEPT = {
    "completed": (view(OrderStatus.COMPLETED, **PICKED), COMPLETED),
    "completed-late": (
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, emails={CONFIRMATION: 1, DELAYED: 1, SHIPPED: 1}),
    ),
    "declined": (view(OrderStatus.PAYMENT_DECLINED, **INTENT), DECLINED),
    "out-of-stock": (view(OrderStatus.OUT_OF_STOCK, **REFUNDED), SOLD_OUT),
    "cancelled-at-once": (view(OrderStatus.CANCELLED), Effects(emails={CANCELLATION: 1})),
    "cancelled-before-the-charge": (
        view(OrderStatus.CANCELLED, **INTENT),
        replace(INTENDED, cancelled_intents=1, emails={CANCELLATION: 1}),
    ),
    "cancelled-authorization-released": (
        view(OrderStatus.CANCELLED, **INTENT),
        replace(
            AUTHORIZED,
            cancelled_intents=1,
            released=1,
            released_amount=TOTAL,
            emails={CANCELLATION: 1},
        ),
    ),
    "cancelled-after-a-failed-refund": (
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        refunded(
            refunded(
                replace(
                    PICKED_THEN_CANCELLED,
                    emails={CONFIRMATION: 1, CANCELLATION: 1, REFUND_FAILED: 1},
                ),
                status="failed",
                refund_id="re_0",
            )
        ),
    ),
    "cancelled-after-the-picklist": (
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        CANCELLED_PICKED,
    ),
    "completed-after-3d-secure": (
        view(OrderStatus.COMPLETED, **PICKED).model_copy(
            update={"timeline": AUTHENTICATED_THEN_PICKED}
        ),
        replace(COMPLETED, emails={ASKED: 1, REMINDED: 1, CONFIRMATION: 1, SHIPPED: 1}),
    ),
    "cancelled-never-authenticated": (
        view(OrderStatus.CANCELLED, **INTENT),
        replace(INTENDED, cancelled_intents=1, emails={ASKED: 1, REMINDED: 1, CANCELLATION: 1}),
    ),
    "completed-then-disputed": (
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, disputes=1, emails={CONFIRMATION: 1, SHIPPED: 1, DISPUTE: 1}),
    ),
    "cancelled-when-late": (
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        replace(CANCELLED_PICKED, emails={CONFIRMATION: 1, DELAYED: 1, CANCELLATION: 1}),
    ),
}


@pytest.mark.parametrize(("outcome", "effects"), KEPT.values(), ids=KEPT.keys())
def test_kept_promises_pass(outcome: OrderView, effects: Effects) -> None:
    assert problems(outcome, effects) == []


def test_every_final_status_has_a_kept_promise() -> None:
    assert {outcome.status for outcome, _ in KEPT.values()} == FINAL_STATUSES


# -- broken promises: evidence that breaks one rule, and the one line that says so --

BROKEN = [
    # Emails: each one the outcome needs exactly once, none it must not have.
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, emails={CONFIRMATION: 2, SHIPPED: 1}),
        "2 order-confirmation emails, expected 1 for a completed order",
        id="completed-confirmed-twice",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, emails={CONFIRMATION: 1}),
        "0 order-shipped emails, expected 1 for a completed order",
        id="completed-without-shipped-email",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, emails={CONFIRMATION: 1, DELAYED: 2, SHIPPED: 1}),
        "2 shipment-delayed emails, expected at most 1",
        id="completed-delayed-twice",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, emails={CONFIRMATION: 1, SHIPPED: 1, CANCELLATION: 1}),
        "1 order-cancelled email, expected none for a completed order",
        id="completed-with-cancellation-email",
    ),
    pytest.param(
        view(OrderStatus.PAYMENT_DECLINED, **INTENT),
        INTENDED,
        "0 payment-declined emails, expected 1 for a payment-declined order",
        id="declined-without-decline-email",
    ),
    pytest.param(
        view(OrderStatus.PAYMENT_DECLINED, **INTENT),
        replace(DECLINED, emails={DECLINE: 1, CONFIRMATION: 1}),
        "1 order-confirmation email, expected none for a payment-declined order",
        id="declined-but-confirmed",
    ),
    pytest.param(
        view(OrderStatus.OUT_OF_STOCK, **REFUNDED),
        replace(SOLD_OUT, emails={CONFIRMATION: 1}),
        "0 out-of-stock emails, expected 1 for an out-of-stock order",
        id="out-of-stock-without-email",
    ),
    pytest.param(
        view(OrderStatus.OUT_OF_STOCK, **REFUNDED),
        replace(SOLD_OUT, emails={CONFIRMATION: 2, OUT_OF_STOCK: 1}),
        "2 order-confirmation emails, expected at most 1",
        id="out-of-stock-confirmed-twice",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED),
        Effects(emails={CANCELLATION: 2}),
        "2 order-cancelled emails, expected 1 for a cancelled order",
        id="cancelled-told-twice",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        replace(CANCELLED_PICKED, emails={CONFIRMATION: 1, SHIPPED: 1, CANCELLATION: 1}),
        "1 order-shipped email, expected none for a cancelled order",
        id="cancelled-but-shipped-email",
    ),
    pytest.param(
        view(OrderStatus.AWAITING_SHIPMENT, **PICKED),
        replace(COMPLETED, emails={CONFIRMATION: 2}),
        "2 order-confirmation emails, expected at most 1",
        id="running-confirmed-twice",
    ),
    # Money: one charge at most; kept if completed, none if declined, refunded in full if not.
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, charges=2, charged_amount=2 * TOTAL),
        "2 charges, expected 1 for a completed order",
        id="completed-charged-twice",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **INTENT, picklist_id="pl_1"),
        replace(COMPLETED, authorizations=0, authorized_amount=0, charges=0, charged_amount=0),
        "0 charges, expected 1 for a completed order",
        id="completed-never-charged",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        refunded(COMPLETED),
        "1 refund, expected none for a completed order",
        id="completed-but-refunded",
    ),
    pytest.param(
        view(OrderStatus.PAYMENT_DECLINED, **INTENT),
        replace(DECLINED, charges=1, charged_amount=TOTAL),
        "1 charge, expected none for a payment-declined order",
        id="declined-but-charged",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **PAID, picklist_id="pl_1"),
        PICKED_THEN_CANCELLED,
        "refunded 0 of 4500 charged: a cancelled order is refunded in full",
        id="cancelled-not-refunded",
    ),
    pytest.param(
        view(OrderStatus.OUT_OF_STOCK, **REFUNDED),
        refunded(replace(CHARGED, emails={CONFIRMATION: 1, OUT_OF_STOCK: 1}), 2000),
        "refunded 2000 of 4500 charged: an out-of-stock order is refunded in full",
        id="out-of-stock-refunded-in-part",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        refunded(refunded(PICKED_THEN_CANCELLED, 2000), 2500, refund_id="re_2"),
        "2 refunds, expected 1 for a charged cancelled order",
        id="cancelled-refunded-twice",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **INTENT),
        refunded(replace(INTENDED, emails={CANCELLATION: 1}), 0),
        "1 refund, expected none for a cancelled order",
        id="cancelled-refunded-never-charged",
    ),
    pytest.param(
        view(OrderStatus.PAID, **PAID),
        refunded(CHARGED, 2 * TOTAL),
        "refunded 9000 of 4500 charged: more than was charged",
        id="running-refunded-more-than-charged",
    ),
    pytest.param(
        view(OrderStatus.PAID, **PAID),
        replace(CHARGED, charges=2, charged_amount=2 * TOTAL),
        "2 charges, expected at most 1",
        id="running-charged-twice",
    ),
    # Payment intents: at most one; exactly one once the order got past payment.
    pytest.param(
        view(OrderStatus.RECEIVED),
        Effects(payment_intents=2),
        "2 payment intents, expected at most 1",
        id="running-two-intents",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, payment_intents=2),
        "2 payment intents, expected 1 for a completed order",
        id="completed-two-intents",
    ),
    pytest.param(
        view(OrderStatus.PAYMENT_DECLINED),
        replace(DECLINED, payment_intents=0),
        "0 payment intents, expected 1 for a payment-declined order",
        id="declined-without-intent",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **INTENT),
        replace(INTENDED, cancelled_intents=2, emails={CANCELLATION: 1}),
        "2 cancelled payment intents, expected at most 1",
        id="intent-cancelled-twice",
    ),
    # Picklists: at most one active; none once cancelled or out of stock.
    pytest.param(
        view(OrderStatus.AWAITING_SHIPMENT, **PICKED),
        with_ids(replace(COMPLETED, picklists=2, emails={CONFIRMATION: 1}), "picklist", "pl_2"),
        "2 picklists, expected at most 1",
        id="running-two-picklists",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        replace(CANCELLED_PICKED, cancelled_picklists=0),
        "1 active picklist, expected none for a cancelled order",
        id="cancelled-picklist-still-active",
    ),
    pytest.param(
        view(OrderStatus.OUT_OF_STOCK, **REFUNDED),
        replace(SOLD_OUT, picklists=1),
        "1 active picklist, expected none for an out-of-stock order",
        id="out-of-stock-picklist-active",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, cancelled_picklists=1),
        "0 active picklists, expected 1 for a completed order",
        id="completed-picklist-cancelled",
    ),
    # The order and the ledger agree on what the order records having done: the same ids.
    pytest.param(
        view(OrderStatus.PAID, **PAID),
        INTENDED,
        "the order records charge ch_1, but the ledger holds none for it",
        id="recorded-charge-missing",
    ),
    pytest.param(
        view(OrderStatus.PAID, **PAID),
        replace(CHARGED, ids={"payment_intent": ["pi_1"], "charge": ["ch_2"]}),
        "the order records charge ch_1, but the ledger holds ch_2 for it",
        id="recorded-charge-not-the-ledgers",
    ),
    pytest.param(
        view(OrderStatus.CANCELLING, **REFUNDED),
        CHARGED,
        "the order records refund re_1, but the ledger holds none for it",
        id="recorded-refund-missing",
    ),
    pytest.param(
        view(OrderStatus.CANCELLING, **REFUNDED),
        refunded(CHARGED, refund_id="re_9"),
        "the order records refund re_1, but the ledger holds re_9 for it",
        id="recorded-refund-not-the-ledgers",
    ),
    pytest.param(
        view(OrderStatus.RECEIVED, **INTENT),
        Effects(),
        "the order records payment intent pi_1, but the ledger holds none for it",
        id="recorded-intent-missing",
    ),
    pytest.param(
        view(OrderStatus.RECEIVED, **INTENT),
        replace(INTENDED, ids={"payment_intent": ["pi_2"]}),
        "the order records payment intent pi_1, but the ledger holds pi_2 for it",
        id="recorded-intent-not-the-ledgers",
    ),
    pytest.param(
        view(OrderStatus.AWAITING_SHIPMENT, **PICKED),
        replace(CHARGED, emails={CONFIRMATION: 1}),
        "the order records picklist pl_1, but the ledger holds none for it",
        id="recorded-picklist-missing",
    ),
    pytest.param(
        view(OrderStatus.AWAITING_SHIPMENT, **PICKED),
        with_ids(replace(CHARGED, picklists=1, emails={CONFIRMATION: 1}), "picklist", "pl_2"),
        "the order records picklist pl_1, but the ledger holds pl_2 for it",
        id="recorded-picklist-not-the-ledgers",
    ),
    # Amounts: every authorization, capture and release is of the order's total, in its
    # currency; only a refund that succeeded gives money back.
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, authorized_amount=5000),
        "authorized 5000 in 1 authorization, expected 4500: the order's total is 4500",
        id="completed-authorized-the-wrong-amount",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, charged_amount=5000),
        "captured 5000 in 1 charge, expected 4500: the order's total is 4500",
        id="completed-captured-the-wrong-amount",
    ),
    pytest.param(
        # Refunded exactly what was (wrongly) captured: the refund agrees, the capture does not.
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        refunded(replace(PICKED_THEN_CANCELLED, charged_amount=5000), 5000),
        "captured 5000 in 1 charge, expected 4500: the order's total is 4500",
        id="cancelled-refunded-what-was-wrongly-captured",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **INTENT),
        replace(
            AUTHORIZED,
            cancelled_intents=1,
            released=1,
            released_amount=2000,
            emails={CANCELLATION: 1},
        ),
        "released 2000 in 1 released authorization, expected 4500: the order's total is 4500",
        id="cancelled-released-in-part",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, currencies=["usd", "eur"]),
        "money handled in eur, expected usd",
        id="completed-in-another-currency",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        refunded(PICKED_THEN_CANCELLED, status="pending"),
        "refunded 0 of 4500 charged: a cancelled order is refunded in full",
        id="cancelled-refund-still-pending",
    ),
    pytest.param(
        view(OrderStatus.OUT_OF_STOCK, **REFUNDED),
        refunded(replace(CHARGED, emails={CONFIRMATION: 1, OUT_OF_STOCK: 1}), status="failed"),
        "refunded 0 of 4500 charged: an out-of-stock order is refunded in full",
        id="out-of-stock-refund-failed",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        refunded(COMPLETED, status="pending"),
        "1 pending or failed refund, expected none for a completed order",
        id="completed-with-a-pending-refund",
    ),
    # Lost: effects at the providers, but Temporal has no such order.
    pytest.param(
        None,
        COMPLETED,
        "lost: Temporal has no such order, but the providers hold 1 payment intent, "
        "1 authorization, 1 charge, 1 picklist, 1 order-confirmation email, 1 order-shipped email",
        id="lost-with-effects",
    ),
    pytest.param(None, Effects(), "lost: Temporal has no such order", id="lost-without-effects"),
    # 3-D Secure: nothing reserved or captured before the customer authenticated.
    pytest.param(
        view(OrderStatus.PAID, **PAID).model_copy(
            update={"timeline": [line(Step.PICKLIST, 1, 2), line(Step.AUTHENTICATION, 1, 30)]}
        ),
        replace(CHARGED, emails={ASKED: 1}),
        "picklist before the customer authenticated",
        id="picked-before-authentication",
    ),
    pytest.param(
        view(OrderStatus.AWAITING_AUTHENTICATION, **INTENT),
        with_ids(replace(INTENDED, picklists=1, emails={ASKED: 1}), "picklist", "pl_1"),
        "never authenticated by the customer, yet made picklist",
        id="picked-never-authenticated",
    ),
    # Disputes: operators told of each once; Stripe's events never refused.
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, disputes=1),
        "0 dispute-opened emails, expected 1 for its disputes",
        id="dispute-never-told",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, failed_events=2),
        "2 Stripe events refused by the receiver",
        id="stripe-events-refused",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        replace(CANCELLED_PICKED, emails={CONFIRMATION: 1, CANCELLATION: 1, REFUND_FAILED: 1}),
        "1 refund-failed email but no refund failed",
        id="refund-failed-email-without-a-failed-refund",
    ),
]


@pytest.mark.parametrize(("outcome", "effects", "problem"), BROKEN)
def test_broken_promises_are_reported(
    outcome: OrderView | None, effects: Effects, problem: str
) -> None:
    assert problems(outcome, effects, require_final=False) == [problem]


def test_a_violation_names_its_order() -> None:
    evidence = Evidence({"o-7": view(OrderStatus.CANCELLED, "o-7")}, {"o-7": Effects()}, {})
    assert [str(v) for v in check(evidence)] == [
        "o-7: 0 order-cancelled emails, expected 1 for a cancelled order"
    ]


def test_running_orders_are_judged_only_on_what_holds_mid_flight() -> None:
    # Out of stock found, refund made, customer not told yet: the order still says paid.
    paid = view(OrderStatus.PAID, **REFUNDED)
    winding_down = refunded(replace(CHARGED, emails={CONFIRMATION: 1}))
    assert problems(paid, winding_down, require_final=False) == []
    assert problems(paid, winding_down) == ["did not finish: still paid"]


def test_effects_without_an_order_and_tally() -> None:
    evidence = Evidence(
        {"o-1": view(OrderStatus.COMPLETED, **PICKED), "o-2": None},
        {"o-1": COMPLETED, "stray": CHARGED, "untouched": Effects()},
        {},
    )
    assert check(evidence) == [
        Violation("o-2", "lost: Temporal has no such order"),
        Violation(
            "stray",
            "lost: Temporal has no such order, but the providers hold 1 payment intent, "
            "1 authorization, 1 charge",
        ),
    ]
    counted = tally(evidence)
    assert (counted.orders, counted.lost, counted.charges, counted.shipped_emails) == (2, 1, 1, 1)
    assert counted.statuses == {"completed": 1}


def test_rows_without_an_order_id_are_effects_no_order_explains() -> None:
    # A retry that forgot metadata[order_id] made a second intent, and confirmed it.
    stray = Effects(payment_intents=1, authorizations=1, authorized_amount=TOTAL)
    evidence = Evidence(
        {"o-1": view(OrderStatus.COMPLETED, **PICKED)}, {"o-1": COMPLETED}, {}, stray
    )
    assert check(evidence) == [
        Violation(
            UNATTRIBUTED,
            "the providers hold 1 payment intent, 1 authorization that no order explains",
        )
    ]
    assert check(replace(evidence, unattributed=Effects())) == []


# -- the orders as the run placed them: the truth the outcome and the money are held to --

PLACED = Placed.sample("o-1")
"""The README's sample order: 5499 in GBP, meant to complete."""


def placed_view(
    status: OrderStatus, ids: dict[str, str], total: int = PLACED.order.total
) -> OrderView:
    return view(status, **ids).model_copy(
        update={"total": total, "currency": PLACED.order.currency}
    )


def placed_effects(effects: Effects, total: int = PLACED.order.total) -> Effects:
    """``effects`` with each amount of the sample order's ``total``, in its currency."""
    return replace(
        effects,
        authorized_amount=effects.authorizations * total,
        charged_amount=effects.charges * total,
        currencies=[PLACED.order.currency.lower()],
    )


def judged(outcome: OrderView, effects: Effects, placed: Placed = PLACED) -> list[str]:
    return [v.problem for v in check(Evidence({"o-1": outcome}, {"o-1": effects}, {"o-1": placed}))]


def test_a_placed_order_kept_as_meant_passes() -> None:
    assert judged(placed_view(OrderStatus.COMPLETED, PICKED), placed_effects(COMPLETED)) == []


def test_an_order_that_ended_otherwise_than_the_run_meant_is_reported() -> None:
    # The order looks fine on its own: declined, never charged, told so.
    outcome = placed_view(OrderStatus.PAYMENT_DECLINED, INTENT)
    assert judged(outcome, DECLINED) == [
        "ended payment-declined, but the run meant it to end completed"
    ]
    assert judged(outcome, DECLINED, replace(PLACED, meant=OrderStatus.PAYMENT_DECLINED)) == []
    # One the run cancelled must end cancelled, even if it completed without a fault.
    cancelled = replace(PLACED, meant=OrderStatus.CANCELLED)
    assert judged(
        placed_view(OrderStatus.COMPLETED, PICKED), placed_effects(COMPLETED), cancelled
    ) == ["ended completed, but the run meant it to end cancelled"]


def test_amounts_are_held_to_the_order_as_placed_not_as_it_says() -> None:
    # The order's read model and the ledger agree on 4500; the order was placed for 5499.
    outcome = placed_view(OrderStatus.COMPLETED, PICKED, TOTAL)
    assert judged(outcome, placed_effects(COMPLETED, TOTAL)) == [
        "authorized 4500 in 1 authorization, expected 5499: the order's total is 5499",
        "captured 4500 in 1 charge, expected 5499: the order's total is 5499",
    ]


def test_the_tally_counts_only_refunds_that_gave_money_back() -> None:
    pending = refunded(PICKED_THEN_CANCELLED, status="pending")
    evidence = Evidence(
        {"o-1": view(OrderStatus.CANCELLED), "o-2": view(OrderStatus.CANCELLED)},
        {"o-1": CANCELLED_PICKED, "o-2": pending},
        {},
    )
    assert tally(evidence).refunds == 1
