"""The order's picklist at the warehouse, and taking it back."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.warehouse import (
        CancelPicklistRequest,
        PicklistItem,
        PicklistRequest,
        ReleasePicklistRequest,
        WarehouseActivities,
        describe_take_back,
    )
    from orders.domain.models import Shipment
    from orders.domain.status import Step
    from workflows.compensation import Compensations
    from workflows.patches import LOCAL_PICKLIST_AND_CAPTURE
    from workflows.state import OrderState
    from workflows.steps import Steps


class ShippedBeforeCancel(Exception):
    """The warehouse had shipped the order when its cancel arrived: nothing can be taken back."""

    def __init__(self, shipment: Shipment) -> None:
        super().__init__(
            f"the parcel left with {shipment.carrier} {shipment.tracking_number} before the "
            "cancel reached the warehouse"
        )
        self.shipment = shipment


class Picking:
    """Sends the order's one picklist, releases it once paid, and cancels it if the order stops.

    The picklist reserves the stock but is held: the warehouse ships it only once ``release``
    says the money is captured.
    """

    def __init__(self, state: OrderState, steps: Steps, compensations: Compensations) -> None:
        self._state, self._steps, self._compensations = state, steps, compensations

    async def send(self) -> None:
        """Ask the warehouse to pick the order; a sku out of stock stops the order.

        The undo is registered before the request goes out: a request cut short may still
        have made the picklist.
        """
        state = self._state
        self.register_undo()
        picklist = await self._steps.call(
            Step.PICKLIST,
            WarehouseActivities.send_picklist,
            PicklistRequest,
            items=self._items(),
            ship_to=state.order.shipping_address,
            hold=True,
            summary=f"picklist of {len(state.order.items)} line(s)",
            describe=lambda picklist: picklist.id,
        )
        state.picklist_id, state.picklist_held = picklist.id, True

    def register_undo(self) -> None:
        """From now on, a stopping order takes back whatever picklist it may have made."""
        self._compensations.add(Step.PICKLIST, self.take_back)

    def cover_a_lost_local_picklist(self) -> None:
        """A cancelled order takes back a picklist a lost workflow task may have made.

        From ``LOCAL_PICKLIST_AND_CAPTURE`` on, the picklist is sent by a local activity in the
        workflow task that takes the card's authorization. A task lost with its worker leaves
        no trace of that call, and its rerun may take a cancel first (an update lands in
        history only with the task that took it), stopping the story before it registered the
        picklist's undo. So a cancel that finds the authorization under way (its undo
        registered) takes the picklist back: the warehouse cancels the order whatever it holds,
        and refuses a picklist that arrives later. A declined card needs nothing: the decline
        is in history, so no run of the task went on to the picklist.
        """
        payment_under_way = self._compensations.holds(Step.PAYMENT_CONFIRM)
        if payment_under_way and self._state.patches.taken(LOCAL_PICKLIST_AND_CAPTURE):
            self.register_undo()

    async def release(self) -> None:
        """Let the warehouse ship the picklist: the money is captured.

        Nothing to do for orders whose picklist was never held.
        """
        state = self._state
        if not state.picklist_held:
            return
        assert state.picklist_id is not None, "a held picklist's id came with it"
        await self._steps.call(
            Step.PICKLIST_RELEASE,
            WarehouseActivities.release_picklist,
            ReleasePicklistRequest,
            picklist_id=state.picklist_id,
            summary=f"release {state.picklist_id} for shipping",
            describe=lambda picklist: f"released {picklist.id}",
        )

    async def take_back(self) -> None:
        """Cancel the order at the warehouse, which takes back its picklist, id known or not.

        The warehouse also closes the order, so a picklist request still on its way (cut short
        here, but not yet arrived there) is refused when it arrives. A picklist the warehouse
        had already shipped raises ``ShippedBeforeCancel``: the warehouse's word that the
        parcel left (its webhook may not have reached the order yet) ends the undo.
        """
        state = self._state
        picklist = await self._steps.call(
            Step.PICKLIST_CANCEL,
            WarehouseActivities.cancel_picklist,
            CancelPicklistRequest,
            picklist_id=state.picklist_id,
            summary=f"cancel {state.picklist_id or 'the order picklist'}",
            describe=describe_take_back,
        )
        if picklist is not None and picklist.shipment is not None:
            raise ShippedBeforeCancel(picklist.shipment)

    def _items(self) -> list[PicklistItem]:
        return [PicklistItem(sku=i.sku, quantity=i.quantity) for i in self._state.order.items]
