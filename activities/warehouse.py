"""Picklists at the warehouse.

The warehouse de-duplicates picklists on the order id, so a picklist sent again under a new key
(an operator's retry after a refusal) returns the order's open picklist instead of picking twice.
"""

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import OUT_OF_STOCK
from activities.logging import log_step
from activities.provider_client import ProviderClient
from activities.requests import EffectRequest
from domain.models import Address
from domain.status import Step


class PicklistItem(BaseModel):
    """What to pick: a sku and how many."""

    sku: str
    quantity: int


class PicklistRequest(EffectRequest):
    """Ask the warehouse to pick and pack an order."""

    items: list[PicklistItem]
    ship_to: Address


class Picklist(BaseModel):
    """The warehouse's id for an accepted picklist."""

    id: str


class CancelPicklistRequest(EffectRequest):
    """Take back a picklist the warehouse has not shipped.

    When the picklist's id never reached the order (its request was cut short by a cancel),
    ``picklist`` is that request: the warehouse keeps one open picklist per order, so sending it
    again (under this request's key plus ``:find``) returns the order's picklist if one was made,
    is refused with 409 while one is in flight, and otherwise makes one, to be cancelled at once.
    """

    picklist_id: str | None = None
    picklist: PicklistRequest | None = None


class WarehouseActivities:
    """Activities that talk to the warehouse."""

    def __init__(self, warehouse: ProviderClient) -> None:
        self._warehouse = warehouse

    @activity.defn
    async def send_picklist(self, request: PicklistRequest) -> Picklist:
        """Send the picklist once; a sku out of stock raises a non-retryable ``OutOfStock``."""
        picklist = await self._post_picklist(request)
        log_step(request.order_id, Step.PICKLIST, f"accepted {picklist.id}")
        return picklist

    async def _post_picklist(self, request: PicklistRequest) -> Picklist:
        body = request.model_dump(mode="json", include={"order_id", "items", "ship_to"})
        answer = await self._warehouse.post(
            "/picklists", body, idempotency_key=request.idempotency_key
        )
        return Picklist.model_validate(answer)

    @activity.defn
    async def cancel_picklist(self, request: CancelPicklistRequest) -> Picklist | None:
        """Cancel the picklist and return its stock; cancelling twice changes nothing.

        Returns ``None`` when the warehouse refused the picklist in the first place.
        """
        picklist_id = request.picklist_id
        if picklist_id is None and request.picklist is not None:
            find_key = f"{request.idempotency_key}:find"
            probe = request.picklist.model_copy(update={"idempotency_key": find_key})
            try:
                picklist_id = (await self._post_picklist(probe)).id
            except ApplicationError as err:
                if err.type != OUT_OF_STOCK:
                    raise
                log_step(request.order_id, Step.PICKLIST_CANCEL, "nothing was picked")
                return None
        answer = await self._warehouse.post(
            f"/picklists/{picklist_id}/cancel", {}, idempotency_key=request.idempotency_key
        )
        picklist = Picklist.model_validate(answer)
        log_step(request.order_id, Step.PICKLIST_CANCEL, f"cancelled {picklist.id}")
        return picklist
