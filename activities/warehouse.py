"""Picklists at the warehouse, and taking an order's picklist back.

The warehouse de-duplicates picklists on the order id, so a picklist sent again under a new key
(an operator's retry after a refusal) returns the order's open picklist instead of picking twice.

Taking it back cancels the whole order at the warehouse (``POST /warehouse/orders/{id}/cancel``),
never a picklist found by asking: the warehouse cancels the picklist it has for the order,
whether or not its id ever reached the workflow, and closes the order, so a picklist request
still on its way (delayed on the network, queued, a retry about to go out) is refused when it
arrives instead of picking for a cancelled order. A request in flight at the warehouse makes
the cancel wait (409, retried) until it has an outcome.
"""

from urllib.parse import quote

from pydantic import BaseModel, field_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import PROVIDER_REJECTED, provider_error_code
from activities.logging import log_step
from activities.provider_client import ProviderClient
from activities.requests import EffectRequest
from orders.domain.models import Address, Shipment
from orders.domain.status import Step

ORDER_CLOSED = "order_closed"
"""The warehouse's error code for a picklist of an order it has cancelled (and closed)."""

CLOSE_KEY_SUFFIX = ":close"
"""Added to the cancel step's key for the order cancel. Not the step's key itself: an attempt
that ran before the order cancel existed may have used that key on the picklist's own cancel,
and a key sent again to another path is refused as reused."""


class PicklistItem(BaseModel):
    """What to pick: a sku and how many."""

    sku: str
    quantity: int


class PicklistRequest(EffectRequest):
    """Ask the warehouse to pick and pack an order."""

    items: list[PicklistItem]
    ship_to: Address
    hold: bool = False
    """Reserve the stock, but ship only once released (``release_picklist``) after the capture;
    ``False``, the warehouse's default, ships at once."""


class ReleasePicklistRequest(EffectRequest):
    """Release the order's held picklist for shipping: the money is captured."""

    picklist_id: str


class Picklist(BaseModel):
    """The warehouse's id for an accepted picklist."""

    id: str
    status: str | None = None
    """As the warehouse last answered (``open``, ``cancelled``, ``shipped``)."""
    shipment: Shipment | None = None
    """Set when an order cancel met the picklist already shipped: the parcel had left."""

    @field_validator("shipment", mode="before")
    @classmethod
    def _parcel_only(cls, value: object) -> object:
        """Keep the parcel (carrier, tracking number) of the warehouse's shipment record."""
        if isinstance(value, dict):
            return {key: value.get(key) for key in ("carrier", "tracking_number")}
        return value


class ClosedOrder(BaseModel):
    """The warehouse's answer to an order cancel: the order's picklist, if one was ever made."""

    order_id: str
    picklist: Picklist | None


class CancelPicklistRequest(EffectRequest):
    """Take back the order's picklist, if the warehouse has one, and close the order there.

    The warehouse cancels the order as a whole and finds its picklist itself, so neither field
    decides anything.
    """

    picklist_id: str | None = None
    """The picklist's id if it reached the order: shown with the step's input, not sent."""
    picklist: PicklistRequest | None = None
    """Ignored. Orders no longer send it; orders already running may, from before the order
    cancel, when the picklist request was sent again to find the order's picklist."""


class WarehouseActivities:
    """Activities that talk to the warehouse."""

    def __init__(self, warehouse: ProviderClient) -> None:
        self._warehouse = warehouse

    @activity.defn
    async def send_picklist(self, request: PicklistRequest) -> Picklist:
        """Send the picklist once; a sku out of stock raises a non-retryable ``OutOfStock``.

        An order the warehouse has closed (a cancel took its picklist back) raises a
        non-retryable ``ProviderRejected`` that says so.
        """
        # ``hold`` only when set: a request sent before it existed and retried now must send
        # the same body under its key.
        fields = {"order_id", "items", "ship_to", *(("hold",) if request.hold else ())}
        body = request.model_dump(mode="json", include=fields)
        try:
            answer = await self._warehouse.post(
                "/picklists", body, idempotency_key=request.idempotency_key
            )
        except ApplicationError as err:
            if provider_error_code(err) != ORDER_CLOSED:
                raise
            # Only a request the order gave up on when it was cancelled should meet this. If a
            # live step ever does (an order id used again, a cancel made at the warehouse by
            # hand), the operator reads why nothing can be picked, and what to do.
            raise ApplicationError(
                f"{err.message} (nothing was picked for order {request.order_id}, and nothing "
                "can be: cancel it; if its id was used before, place it again under a new id)",
                *err.details,
                type=PROVIDER_REJECTED,
                non_retryable=True,
            ) from err
        picklist = Picklist.model_validate(answer)
        log_step(request.order_id, Step.PICKLIST, f"accepted {picklist.id}")
        return picklist

    @activity.defn
    async def release_picklist(self, request: ReleasePicklistRequest) -> Picklist:
        """Release the held picklist for shipping; returns it (with its shipment if it left).

        Releasing twice changes nothing. A picklist cancelled meanwhile is a refusal.
        """
        answer = await self._warehouse.post(
            f"/picklists/{quote(request.picklist_id, safe='')}/release",
            {},
            idempotency_key=request.idempotency_key,
        )
        picklist = Picklist.model_validate(answer)
        log_step(request.order_id, Step.PICKLIST_RELEASE, f"released {picklist.id}")
        return picklist

    @activity.defn
    async def cancel_picklist(self, request: CancelPicklistRequest) -> Picklist | None:
        """Cancel the order at the warehouse: its picklist is cancelled and its stock returned.

        Returns the cancelled picklist, or ``None`` when none was ever made for the order, or
        the picklist with its ``shipment`` when the parcel had already left (nothing taken
        back). Cancelling twice changes nothing, and a picklist request still on its way is
        refused when it arrives.
        """
        answer = await self._warehouse.post(
            f"/orders/{quote(request.order_id, safe='')}/cancel",
            {},
            idempotency_key=f"{request.idempotency_key}{CLOSE_KEY_SUFFIX}",
        )
        picklist = ClosedOrder.model_validate(answer).picklist
        outcome = describe_take_back(picklist)
        log_step(request.order_id, Step.PICKLIST_CANCEL, outcome)
        return picklist


def describe_take_back(picklist: Picklist | None) -> str:
    """What taking the order back at the warehouse did, in a line of the order's timeline."""
    if picklist is None:
        return "nothing was picked"
    if picklist.shipment is not None:
        shipment = picklist.shipment
        return f"{picklist.id} had shipped ({shipment.carrier} {shipment.tracking_number})"
    return f"cancelled {picklist.id}"
