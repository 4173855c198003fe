"""The exactly-once checker itself: it must catch every kind of broken promise."""

from dataclasses import replace

import pytest

from domain.models import OrderView
from domain.status import EmailTemplate, OrderStatus
from harness.checker import Evidence, Violation, check, tally
from providers.admin_client import Effects

COMPLETED = Effects(
    payment_intents=1,
    charges=1,
    picklists=1,
    emails={EmailTemplate.ORDER_CONFIRMATION: 1, EmailTemplate.ORDER_SHIPPED: 1},
)
DECLINED = Effects(payment_intents=1, emails={EmailTemplate.PAYMENT_DECLINED: 1})


def view(status: OrderStatus, order_id: str = "o-1") -> OrderView:
    return OrderView(order_id=order_id, customer_id="c-1", status=status, total=100, currency="USD")


def problems(status: OrderStatus | None, effects: Effects, **kwargs: bool) -> list[str]:
    outcome = None if status is None else view(status)
    return [v.problem for v in check(Evidence({"o-1": outcome}, {"o-1": effects}), **kwargs)]


def test_kept_promises_pass() -> None:
    assert problems(OrderStatus.COMPLETED, COMPLETED) == []
    assert problems(OrderStatus.PAYMENT_DECLINED, DECLINED) == []


@pytest.mark.parametrize(
    ("status", "effects", "problem"),
    [
        (OrderStatus.COMPLETED, replace(COMPLETED, charges=2), "2 charges"),
        (
            OrderStatus.COMPLETED,
            replace(COMPLETED, emails={EmailTemplate.ORDER_CONFIRMATION: 1}),
            "completed with 0 shipped emails, expected 1",
        ),
        (
            OrderStatus.COMPLETED,
            replace(COMPLETED, emails={EmailTemplate.ORDER_CONFIRMATION: 2}),
            "2 order-confirmation emails, expected at most 1",
        ),
        (OrderStatus.COMPLETED, Effects(), "completed with 0 charges, expected 1"),
        (
            OrderStatus.PAYMENT_DECLINED,
            replace(DECLINED, charges=1),
            "payment-declined with 1 charges not refunded, expected 0",
        ),
        (
            OrderStatus.PAYMENT_DECLINED,
            Effects(payment_intents=1),
            "payment-declined with 0 decline emails, expected 1",
        ),
        (OrderStatus.AWAITING_SHIPMENT, Effects(picklists=2), "2 picklists, expected at most 1"),
        (None, COMPLETED, "lost: Temporal has no such order"),
    ],
)
def test_broken_promises_are_reported(
    status: OrderStatus | None, effects: Effects, problem: str
) -> None:
    assert any(problem in found for found in problems(status, effects))


def test_unfinished_orders_fail_only_when_required() -> None:
    waiting = Effects(charges=1, picklists=1, emails={EmailTemplate.ORDER_CONFIRMATION: 1})
    assert problems(OrderStatus.AWAITING_SHIPMENT, waiting, require_final=False) == []
    assert problems(OrderStatus.AWAITING_SHIPMENT, waiting) == [
        "did not finish: still awaiting-shipment"
    ]


def test_an_order_ended_otherwise_must_hold_no_money() -> None:
    # Cancelled or out of stock: either never charged, or refunded exactly once.
    others = [s for s in OrderStatus if s.is_final and s not in _KNOWN_FINAL]
    if not others:
        pytest.skip("no final statuses besides completed and declined yet")
    refunded = Effects(payment_intents=1, charges=1, refunds=1, picklists=1, cancelled_picklists=1)
    for status in others:
        assert problems(status, refunded) == []
        assert problems(status, Effects(charges=1)) == [
            f"{status.value} with 1 charges not refunded, expected 0"
        ]


_KNOWN_FINAL = {OrderStatus.COMPLETED, OrderStatus.PAYMENT_DECLINED}


def test_effects_without_an_order_and_tally() -> None:
    evidence = Evidence(
        {"o-1": view(OrderStatus.COMPLETED), "o-2": None},
        {"o-1": COMPLETED, "stray": Effects(charges=1)},
    )
    assert check(evidence) == [
        Violation("o-2", "lost: Temporal has no such order"),
        Violation("stray", "has effects at the providers but no order in Temporal"),
    ]
    counted = tally(evidence)
    assert (counted.orders, counted.lost, counted.charges, counted.shipped_emails) == (2, 1, 1, 1)
    assert counted.statuses == {"completed": 1}
