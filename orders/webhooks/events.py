"""The events the warehouse sends: today one type, ``shipment.shipped``.

``{"id": "evt_...", "type": "shipment.shipped", "created": <unix seconds>, "data": {"order_id",
"picklist_id", "carrier", "tracking_number"}}``. The id is the event's: a redelivery of the
same event carries the same id (and the same body), so the receiver can tell it from a new one.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from orders.domain.models import Shipment

SHIPMENT_SHIPPED = "shipment.shipped"

EventId = Annotated[str, StringConstraints(pattern=r"^evt_[A-Za-z0-9]{1,64}$")]


class _Model(BaseModel):
    # Fields a newer warehouse may add are ignored, as a Stripe client ignores them.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ShipmentData(_Model):
    """What the warehouse shipped: the order, its picklist, and the parcel's carrier and number."""

    order_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    picklist_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    carrier: str
    tracking_number: str

    def shipment(self) -> Shipment:
        """The order model's shipment (``ValidationError`` when carrier or number don't fit)."""
        return Shipment(carrier=self.carrier, tracking_number=self.tracking_number)


class ShipmentShipped(_Model):
    """The ``shipment.shipped`` event."""

    id: EventId
    type: Literal["shipment.shipped"]
    created: int = Field(ge=0)
    data: ShipmentData
