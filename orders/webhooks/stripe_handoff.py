"""Stripe's events to their orders: verified by the official library, handed over once each.

``verify`` is ``stripe.Webhook.construct_event`` (no signature code of our own): the raw body,
the ``Stripe-Signature`` header and the endpoint secret; each configured secret is tried while
one rolls. ``hand_over`` gives the event to its order (``metadata.order_id`` of the object) as a
Workflow Update whose id is the event's (``stripe:<event id>``), so a redelivered event is
answered by Temporal with the first outcome. Stripe sends no order between events, and events
for objects the shop does not know: both are acknowledged (2xx), or Stripe would retry them
for days. Only an order that cannot answer now (Temporal unreachable, no worker) gets a 503,
which Stripe retries.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import stripe
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from orders.domain.models import GatewayEvent
from workflows.dispute import DisputeNotice, DisputeWorkflow
from workflows.order import OrderWorkflow


class StripeOutcome(StrEnum):
    """What became of one Stripe event; the answer and the metric label follow from it."""

    TAKEN = "taken"
    NO_ORDER = "no_order"
    """The object names no order of ours (another integration's payment): acknowledged."""
    NOT_RUNNING = "not_running"
    """The order has ended (or never was): nothing waits for the news; acknowledged."""
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class StripeHandoff:
    """An event's outcome, and the reason in words."""

    outcome: StripeOutcome
    message: str


class VerificationFailed(Exception):
    """The event is not Stripe's for this endpoint: bad signature, stale, or not JSON."""


def verify(
    body: bytes, header: str | None, secrets: Sequence[str], tolerance_s: float
) -> stripe.Event:
    """The event, as the official library verifies it with one of the endpoint's secrets."""
    if not header:
        raise VerificationFailed("no Stripe-Signature header")
    failure: Exception | None = None
    for secret in secrets:
        try:
            event: stripe.Event = stripe.Webhook.construct_event(
                body, header, secret, int(tolerance_s)
            )
            return event
        except (stripe.SignatureVerificationError, ValueError) as err:
            failure = err
    raise VerificationFailed(str(failure))


def order_of(event: stripe.Event) -> str | None:
    """The order an event is about: its object's ``metadata.order_id``, if it has one."""
    metadata = _object(event).get("metadata") or {}
    order_id = metadata.get("order_id") if isinstance(metadata, dict) else None
    return str(order_id) if order_id else None


def _object(event: stripe.Event) -> dict[str, Any]:
    """The event's ``data.object`` as plain data (the library's objects are not dicts)."""
    obj: dict[str, Any] = event.to_dict()["data"]["object"]
    return obj


DISPUTE_EVENTS = ("charge.dispute.created", "charge.dispute.closed")


def dispute_workflow_id(dispute_id: str) -> str:
    """The workflow of one dispute: the same for every delivery of its events."""
    return f"dispute-{dispute_id}"


async def hand_dispute(
    client: Client, event: stripe.Event, task_queue: str, notify: str
) -> StripeHandoff:
    """Start the dispute's workflow (created), or tell it the bank's decision (closed).

    A dispute's workflow, not the order's: the order may have ended long ago.
    """
    dispute = _object(event)
    workflow_id = dispute_workflow_id(str(dispute["id"]))
    try:
        if event.type == "charge.dispute.closed":
            await client.get_workflow_handle(workflow_id).signal(
                DisputeWorkflow.closed, str(dispute["status"])
            )
            return StripeHandoff(StripeOutcome.TAKEN, f"{workflow_id} {dispute['status']}")
        due = (dispute.get("evidence_details") or {}).get("due_by")
        notice = DisputeNotice(
            id=dispute["id"],
            payment_intent=dispute["payment_intent"],
            amount=dispute["amount"],
            currency=dispute["currency"],
            reason=dispute["reason"],
            status=dispute["status"],
            evidence_due_by=datetime.fromtimestamp(due, UTC) if due else None,
            notify=notify,
        )
        await client.start_workflow(
            DisputeWorkflow.run,
            notice,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        return StripeHandoff(StripeOutcome.TAKEN, f"{workflow_id} started")
    except WorkflowAlreadyStartedError:
        return StripeHandoff(StripeOutcome.TAKEN, f"{workflow_id} was started before")
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return StripeHandoff(StripeOutcome.NOT_RUNNING, f"{workflow_id} is not running")
        return StripeHandoff(StripeOutcome.UNAVAILABLE, f"Temporal: {err.message}")


def update_id(event_id: str) -> str:
    """The Workflow Update id of a Stripe event: the same for every delivery of it."""
    return f"stripe:{event_id}"


async def hand_over(
    client: Client, order_id: str, event: stripe.Event, wait: timedelta
) -> StripeHandoff:
    """Give the event to the order ``order_id``; never raises for Temporal's troubles."""
    object_id = str(_object(event).get("id"))
    news = GatewayEvent(id=event.id, type=event.type, object_id=object_id)
    handle = client.get_workflow_handle_for(OrderWorkflow.run, order_id)
    try:
        async with asyncio.timeout(wait.total_seconds()):
            said = await handle.execute_update(
                OrderWorkflow.gateway_event, news, id=update_id(event.id), rpc_timeout=wait
            )
        return StripeHandoff(StripeOutcome.TAKEN, said)
    except WorkflowUpdateFailedError as err:  # a worker without the update, say: later
        return StripeHandoff(StripeOutcome.UNAVAILABLE, f"order {order_id}: {err.cause}")
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        return StripeHandoff(
            StripeOutcome.UNAVAILABLE, f"order {order_id} did not answer within {wait}"
        )
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            message = f"order {order_id} is not running: {err.message}"
            return StripeHandoff(StripeOutcome.NOT_RUNNING, message)
        return StripeHandoff(StripeOutcome.UNAVAILABLE, f"Temporal: {err.message}")
