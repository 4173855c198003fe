"""The exactly-once checker itself: it must catch every kind of broken promise.

Each final status has evidence of a kept promise that passes; each rule has evidence that
breaks only it, and the test asserts the one line the checker says about it.
"""

from dataclasses import replace

import pytest

from domain.models import OrderView
from domain.status import FINAL_STATUSES, EmailTemplate, OrderStatus
from harness.checker import Evidence, Violation, check, tally
from providers.admin_client import Effects

TOTAL = 4500

CONFIRMATION = EmailTemplate.ORDER_CONFIRMATION
SHIPPED = EmailTemplate.ORDER_SHIPPED
DELAYED = EmailTemplate.SHIPMENT_DELAYED
DECLINE = EmailTemplate.PAYMENT_DECLINED
CANCELLATION = EmailTemplate.ORDER_CANCELLED
OUT_OF_STOCK = EmailTemplate.OUT_OF_STOCK

INTENT = {"payment_intent_id": "pi_1"}
PAID = {**INTENT, "transaction_id": "ch_1"}
PICKED = {**PAID, "picklist_id": "pl_1"}
REFUNDED = {**PAID, "refund_id": "re_1"}

CHARGED = Effects(payment_intents=1, charges=1, charged_amount=TOTAL)

COMPLETED = replace(CHARGED, picklists=1, emails={CONFIRMATION: 1, SHIPPED: 1})
DECLINED = Effects(payment_intents=1, emails={DECLINE: 1})
SOLD_OUT = replace(
    CHARGED, refunds=1, refunded_amount=TOTAL, emails={CONFIRMATION: 1, OUT_OF_STOCK: 1}
)
CANCELLED_PICKED = replace(
    CHARGED,
    refunds=1,
    refunded_amount=TOTAL,
    picklists=1,
    cancelled_picklists=1,
    emails={CONFIRMATION: 1, CANCELLATION: 1},
)


def view(status: OrderStatus, order_id: str = "o-1", **ids: str) -> OrderView:
    return OrderView(
        order_id=order_id, customer_id="c-1", status=status, total=TOTAL, currency="USD", **ids
    )


def problems(outcome: OrderView | None, effects: Effects, require_final: bool = True) -> list[str]:
    evidence = Evidence({"o-1": outcome}, {"o-1": effects})
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
        Effects(payment_intents=1, cancelled_intents=1, emails={CANCELLATION: 1}),
    ),
    "cancelled-after-the-picklist": (
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        CANCELLED_PICKED,
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
        Effects(payment_intents=1),
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
        replace(CHARGED, picklists=1, emails={CONFIRMATION: 2}),
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
        replace(COMPLETED, charges=0, charged_amount=0),
        "0 charges, expected 1 for a completed order",
        id="completed-never-charged",
    ),
    pytest.param(
        view(OrderStatus.COMPLETED, **PICKED),
        replace(COMPLETED, refunds=1, refunded_amount=TOTAL),
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
        replace(CANCELLED_PICKED, refunds=0, refunded_amount=0),
        "refunded 0 of 4500 charged: a cancelled order is refunded in full",
        id="cancelled-not-refunded",
    ),
    pytest.param(
        view(OrderStatus.OUT_OF_STOCK, **REFUNDED),
        replace(SOLD_OUT, refunded_amount=2000),
        "refunded 2000 of 4500 charged: an out-of-stock order is refunded in full",
        id="out-of-stock-refunded-in-part",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **REFUNDED, picklist_id="pl_1"),
        replace(CANCELLED_PICKED, refunds=2, refunded_amount=TOTAL),
        "2 refunds, expected 1 for a charged cancelled order",
        id="cancelled-refunded-twice",
    ),
    pytest.param(
        view(OrderStatus.CANCELLED, **INTENT),
        Effects(payment_intents=1, refunds=1, emails={CANCELLATION: 1}),
        "1 refund, expected none for a cancelled order",
        id="cancelled-refunded-never-charged",
    ),
    pytest.param(
        view(OrderStatus.PAID, **PAID),
        replace(CHARGED, refunds=1, refunded_amount=2 * TOTAL),
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
        Effects(payment_intents=1, cancelled_intents=2, emails={CANCELLATION: 1}),
        "2 cancelled payment intents, expected at most 1",
        id="intent-cancelled-twice",
    ),
    # Picklists: at most one active; none once cancelled or out of stock.
    pytest.param(
        view(OrderStatus.AWAITING_SHIPMENT, **PICKED),
        replace(CHARGED, picklists=2, emails={CONFIRMATION: 1}),
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
    # The order and the ledger agree on what the order records having done.
    pytest.param(
        view(OrderStatus.PAID, **PAID),
        Effects(payment_intents=1),
        "0 charges, expected at least 1: the order records charge ch_1",
        id="recorded-charge-missing",
    ),
    pytest.param(
        view(OrderStatus.CANCELLING, **REFUNDED),
        CHARGED,
        "0 refunds, expected at least 1: the order records refund re_1",
        id="recorded-refund-missing",
    ),
    pytest.param(
        view(OrderStatus.RECEIVED, **INTENT),
        Effects(),
        "0 payment intents, expected at least 1: the order records payment intent pi_1",
        id="recorded-intent-missing",
    ),
    pytest.param(
        view(OrderStatus.AWAITING_SHIPMENT, **PICKED),
        replace(CHARGED, emails={CONFIRMATION: 1}),
        "0 picklists, expected at least 1: the order records picklist pl_1",
        id="recorded-picklist-missing",
    ),
    # Lost: effects at the providers, but Temporal has no such order.
    pytest.param(
        None,
        COMPLETED,
        "lost: Temporal has no such order, but the providers hold 1 payment intent, 1 charge, "
        "1 picklist, 1 order-confirmation email, 1 order-shipped email",
        id="lost-with-effects",
    ),
    pytest.param(None, Effects(), "lost: Temporal has no such order", id="lost-without-effects"),
]


@pytest.mark.parametrize(("outcome", "effects", "problem"), BROKEN)
def test_broken_promises_are_reported(
    outcome: OrderView | None, effects: Effects, problem: str
) -> None:
    assert problems(outcome, effects, require_final=False) == [problem]


def test_a_violation_names_its_order() -> None:
    evidence = Evidence({"o-7": view(OrderStatus.CANCELLED, "o-7")}, {"o-7": Effects()})
    assert [str(v) for v in check(evidence)] == [
        "o-7: 0 order-cancelled emails, expected 1 for a cancelled order"
    ]


def test_running_orders_are_judged_only_on_what_holds_mid_flight() -> None:
    # Out of stock found, refund made, customer not told yet: the order still says paid.
    paid = view(OrderStatus.PAID, **REFUNDED)
    winding_down = replace(CHARGED, refunds=1, refunded_amount=TOTAL, emails={CONFIRMATION: 1})
    assert problems(paid, winding_down, require_final=False) == []
    assert problems(paid, winding_down) == ["did not finish: still paid"]


def test_effects_without_an_order_and_tally() -> None:
    evidence = Evidence(
        {"o-1": view(OrderStatus.COMPLETED, **PICKED), "o-2": None},
        {"o-1": COMPLETED, "stray": CHARGED, "untouched": Effects()},
    )
    assert check(evidence) == [
        Violation("o-2", "lost: Temporal has no such order"),
        Violation(
            "stray",
            "lost: Temporal has no such order, but the providers hold 1 payment intent, 1 charge",
        ),
    ]
    counted = tally(evidence)
    assert (counted.orders, counted.lost, counted.charges, counted.shipped_emails) == (2, 1, 1, 1)
    assert counted.statuses == {"completed": 1}
