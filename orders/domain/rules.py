"""What an order may do next: the one place that decides "can it ship" and "can it be cancelled".

The client checks these before it asks, the workflow's update validators and its shipped-signal
handler check them again on the order's own state, so a person always gets the same reason.
"""

from enum import StrEnum

from orders.domain.models import OrderView, Shipment
from orders.domain.status import OrderStatus, Step

_AWAITING_SHIPMENT = {OrderStatus.AWAITING_SHIPMENT, OrderStatus.SHIPMENT_DELAYED}


def awaits_shipment(view: OrderView) -> bool:
    """True while the order is paid and picked and only the warehouse's report is missing."""
    if view.shipment is not None:
        return False
    late = view.status == OrderStatus.NEEDS_ATTENTION and view.attention_step == Step.SHIPMENT
    return view.status in _AWAITING_SHIPMENT or late


def cancel_refusal(view: OrderView) -> str | None:
    """Why the order cannot be cancelled now, or ``None`` when it can."""
    order = f"order {view.order_id}"
    if view.status.is_final:
        return f"{order} is already {view.status.value}; it can't be cancelled"
    if view.status == OrderStatus.CANCELLING or view.winding_down_to == OrderStatus.CANCELLED:
        return f"{order} is already being cancelled"
    if view.shipment is not None or view.status == OrderStatus.SHIPPED:
        return f"{order} has shipped; it can't be cancelled"
    if view.winding_down_to is not None:
        return (
            f"{order} is already being wound down as {view.winding_down_to.value}; "
            "retry its failed step"
        )
    return None


def ship_refusal(view: OrderView) -> str | None:
    """Why a shipped report for the order would be refused now, or ``None`` when it is due."""
    order = f"order {view.order_id}"
    if view.shipment is not None:
        shipment = view.shipment
        return f"{order} already shipped with {shipment.carrier} {shipment.tracking_number}"
    if view.status.is_final or view.status == OrderStatus.CANCELLING:
        return f"{order} is {view.status.value}; there is nothing to ship"
    if view.winding_down_to is not None:
        return f"{order} is being wound down as {view.winding_down_to.value}; nothing to ship"
    if not (awaits_shipment(view) or shipped_unreleased(view)):
        return (
            f"{order} is {view.status.value}; it can ship only once it is paid and picked "
            f"(status {OrderStatus.AWAITING_SHIPMENT.value})"
        )
    return None


def shipped_unreleased(view: OrderView) -> bool:
    """True when a report that the parcel left is taken although the order did not release it.

    The warehouse holds the order's picklist until the order has captured the money, but a
    warehouse can ship one anyway (people make mistakes): the goods are gone, so the order
    takes the report at once and settles (captures, confirms, then says "shipped") or asks an
    operator. An order without a held picklist took reports only once it awaited shipment.
    """
    return view.picklist_held and view.picklist_id is not None and view.shipment is None


class ShipVerdict(StrEnum):
    """What a shipped report means to the order now: the receiver's answer follows from it."""

    DUE = "due"
    """The order awaits shipment: it takes the report."""
    ALREADY = "already-shipped"
    """The order shipped with this very shipment: a repeat of a report it took; nothing to do."""
    NOT_YET = "not-yet"
    """The order is still paying or picking, being cancelled (the warehouse's answer to the
    cancel decides), or a step waits for an operator: report later."""
    NEVER = "never"
    """The order can never take it: cancelled, wound down, or shipped with another parcel."""


def ship_verdict(view: OrderView, shipment: Shipment) -> tuple[ShipVerdict, str | None]:
    """Classify a shipped report against the order; the reason is ``ship_refusal``'s."""
    refusal = ship_refusal(view)
    if refusal is None:
        return ShipVerdict.DUE, None
    if view.shipment is not None:
        same = (view.shipment.carrier, view.shipment.tracking_number) == (
            shipment.carrier,
            shipment.tracking_number,
        )
        return (ShipVerdict.ALREADY if same else ShipVerdict.NEVER), refusal
    if view.status.is_final or (
        view.winding_down_to is not None and view.winding_down_to != OrderStatus.CANCELLED
    ):
        return ShipVerdict.NEVER, refusal
    # Still paying or picking, or being cancelled: a cancel that meets the parcel shipped at
    # the warehouse completes the order as shipped after all, so report it again later.
    return ShipVerdict.NOT_YET, refusal
