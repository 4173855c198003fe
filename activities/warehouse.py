"""Picklists at the warehouse."""

from pydantic import BaseModel
from temporalio import activity

from activities.logging import log_step
from activities.provider_client import ProviderClient
from domain.models import Address
from domain.status import Step


class PicklistItem(BaseModel):
    """What to pick: a sku and how many."""

    sku: str
    quantity: int


class PicklistRequest(BaseModel):
    """Ask the warehouse to pick and pack an order."""

    order_id: str
    items: list[PicklistItem]
    ship_to: Address
    idempotency_key: str


class Picklist(BaseModel):
    """The warehouse's id for an accepted picklist."""

    id: str


class CancelPicklistRequest(BaseModel):
    """Take back a picklist the warehouse has not shipped."""

    order_id: str
    picklist_id: str
    idempotency_key: str


class WarehouseActivities:
    """Activities that talk to the warehouse."""

    def __init__(self, warehouse: ProviderClient) -> None:
        self._warehouse = warehouse

    @activity.defn
    async def send_picklist(self, request: PicklistRequest) -> Picklist:
        """Send the picklist once; a sku out of stock raises a non-retryable ``OutOfStock``."""
        body = request.model_dump(mode="json", exclude={"idempotency_key"})
        answer = await self._warehouse.post(
            "/picklists", body, idempotency_key=request.idempotency_key
        )
        picklist = Picklist.model_validate(answer)
        log_step(request.order_id, Step.PICKLIST, f"accepted {picklist.id}")
        return picklist

    @activity.defn
    async def cancel_picklist(self, request: CancelPicklistRequest) -> Picklist:
        """Cancel the picklist and return its stock; cancelling twice changes nothing."""
        answer = await self._warehouse.post(
            f"/picklists/{request.picklist_id}/cancel", {}, idempotency_key=request.idempotency_key
        )
        picklist = Picklist.model_validate(answer)
        log_step(request.order_id, Step.PICKLIST_CANCEL, f"cancelled {picklist.id}")
        return picklist
