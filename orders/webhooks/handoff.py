"""Hand one shipment event to its order, atomically, and say what the warehouse should hear.

The order takes the report through a Workflow Update (``OrderWorkflow.report_shipment``) whose
validator is the one rule for "can this order ship" (``orders.domain.rules``): the check and the
hand-off happen inside the order, so no report can slip in between them. The update's id is
the event's (``shipment:<event id>``): Temporal answers a redelivered event with the first
outcome instead of running it twice. A refused update records nothing in the order's history.
"""

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from orders.client.errors import OrderError
from orders.client.orders import OrderNotFound, order_status
from orders.domain.models import Shipment
from orders.domain.rules import ShipVerdict, ship_verdict
from workflows.order import OrderWorkflow

DEFAULT_TIMEOUT = timedelta(seconds=10)
"""How long the receiver waits for the order's answer before it answers 503 (retry)."""


class Outcome(StrEnum):
    """What became of one event; the receiver's HTTP answer and metric label follow from it."""

    SHIPPED = "shipped"
    DUPLICATE = "duplicate"
    NOT_YET = "not_yet"
    REFUSED = "refused"
    UNKNOWN_ORDER = "unknown_order"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Handoff:
    """An event's outcome and the reason, in words for the warehouse's operator."""

    outcome: Outcome
    message: str


_BY_VERDICT = {
    ShipVerdict.ALREADY: Outcome.DUPLICATE,
    ShipVerdict.NOT_YET: Outcome.NOT_YET,
    ShipVerdict.NEVER: Outcome.REFUSED,
}


def update_id(event_id: str) -> str:
    """The Workflow Update id of an event: the same for every delivery of it."""
    return f"shipment:{event_id}"


async def hand_over(
    client: Client,
    order_id: str,
    shipment: Shipment,
    event_id: str,
    wait: timedelta = DEFAULT_TIMEOUT,
) -> Handoff:
    """Report ``shipment`` to the order ``order_id``; never raises for Temporal's troubles."""
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    parcel = f"{shipment.carrier} {shipment.tracking_number}"
    try:
        async with asyncio.timeout(wait.total_seconds()):
            await handle.execute_update(
                OrderWorkflow.report_shipment,
                shipment,
                id=update_id(event_id),
                rpc_timeout=wait,
            )
        return Handoff(Outcome.SHIPPED, f"order {order_id} shipped with {parcel}")
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type in set(ShipVerdict):
            return Handoff(_BY_VERDICT[ShipVerdict(cause.type)], cause.message)
        # Not a shipping rule's refusal (say, a worker without the update): try again later.
        return Handoff(Outcome.UNAVAILABLE, f"order {order_id} could not take it: {cause}")
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        return Handoff(
            Outcome.UNAVAILABLE,
            f"order {order_id} did not answer within {wait.total_seconds():g}s "
            "(is a worker running?)",
        )
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            return await _closed_or_unknown(client, order_id, shipment)
        return Handoff(Outcome.UNAVAILABLE, f"Temporal: {err.message}")


async def _closed_or_unknown(client: Client, order_id: str, shipment: Shipment) -> Handoff:
    """The order is not running: it never existed, or it ended (shipped, or cancelled)."""
    try:
        view = await order_status(client, order_id)
    except OrderNotFound as err:
        return Handoff(Outcome.UNKNOWN_ORDER, str(err))
    except OrderError as err:  # ended without a result (failed, terminated)
        return Handoff(Outcome.REFUSED, str(err))
    except RPCError as err:
        return Handoff(Outcome.UNAVAILABLE, f"Temporal: {err.message}")
    verdict, reason = ship_verdict(view, shipment)
    if verdict == ShipVerdict.DUE:  # cannot be for an order that ended; retry to be sure
        return Handoff(Outcome.UNAVAILABLE, f"order {order_id} is {view.status.value}")
    return Handoff(_BY_VERDICT[verdict], reason or "")
