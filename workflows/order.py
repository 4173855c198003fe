"""The order workflow: authorize, reserve, capture, confirm, wait for shipment, tell the customer.

Deterministic: it only schedules activities and timers, reacts to signals and updates, and
keeps the order's state. Each step's result lands in Temporal's history, so after any crash the
order resumes where it was; each call carries an idempotency key (``workflows.steps``), so a
call re-run after an unknown outcome returns the first result instead of acting twice.

An order stops early when the card is declined, a sku is out of stock, or a cancel is accepted
(at once, even in the middle of a failing step). It then unwinds its compensations, newest first,
each decided by the provider that holds the effect, and sends the customer one email that says
what actually happened.
"""

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.mail import EmailRequest, MailActivities
    from orders.domain import emails, rules, search_attributes
    from orders.domain.emails import EmailContent
    from orders.domain.models import (
        CancelRequest,
        Dispute,
        GatewayEvent,
        Order,
        OrderOptions,
        OrderView,
        ResolveRequest,
        Shipment,
    )
    from orders.domain.status import PAYMENT_STEPS, OperatorAction, OrderStatus, Step
    from workflows import metrics, patches
    from workflows.authentication import Authentication
    from workflows.authorization import AuthorizationWatch
    from workflows.compensation import Compensations
    from workflows.patches import Patches
    from workflows.payment import Payment
    from workflows.picking import Picking, ShippedBeforeCancel
    from workflows.shipment import wait_for_shipment
    from workflows.state import OrderState
    from workflows.steps import OrderStopped, Steps, Wake

OPTIONS_MEMO = "options"
"""Memo key of the order's ``OrderOptions``. They travel in the memo, not as a second workflow
argument, so the input stays one ``Order``: orders started before options existed have no memo
and replay with the defaults (a second argument would change how their input decodes)."""

PASSING_STATUSES = frozenset({OrderStatus.PAID, OrderStatus.SHIPPED})
"""Statuses an order passes within one workflow task: only local steps (the confirmation, the
release, the shipped email) lie between each and the next status, so Temporal records both
upserts at once and its visibility would write the first for nothing. From patch level
``COALESCED_STATUS_UPSERTS`` on they reach visibility only when the order waits on Temporal
before its next status (``Steps`` publishes before a regular activity: a local step that did
not answer; before patch level 2, the capture); the order's own status (its query, its result)
has them at once."""

TEMPORAL_CANCEL_REASON = "cancel requested through Temporal"
INTENT_CANCELED = "payment_intent.canceled"


@workflow.defn
class OrderWorkflow:
    """One order, from payment to the shipped email. Workflow id = order id.

    Auto-upgrade with Worker Versioning on (``workflows.policy.VERSIONING_BEHAVIOR``): each
    workflow task goes to the deployment's current build, so a rollout moves orders waiting
    days for the warehouse onto the new code and the old build can be retired at once. The
    price is that every change to the commands an order issues stays behind a
    ``workflow.patched`` (see docs/rollouts.md).
    """

    @workflow.init
    def __init__(self, order: Order) -> None:
        # The patch levels first: before any handler or step could ask one (workflows.patches).
        patches_taken = Patches.ask()
        options = workflow.memo_value(OPTIONS_MEMO, OrderOptions(), type_hint=OrderOptions)
        self._state = OrderState(order, options, patches_taken)
        self._steps = Steps(self._state, self._set_status, self._publish_status)
        self._compensations = Compensations()
        self._wake = Wake()
        """Raised by each of the gateway's events: a read of the gateway in progress reads again."""
        self._payment = Payment(self._state, self._steps, self._compensations, self._wake)
        self._picking = Picking(self._state, self._steps, self._compensations)
        self._authorization = AuthorizationWatch(
            self._state, self._payment, self._accept_cancel, self._stop_fulfilment
        )
        self._authentication = Authentication(
            self._state, self._steps, self._email, self._set_status, self._wake
        )
        self._fulfilment: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopped_by: OrderStopped | None = None
        """A stop that came from beside the story (a re-authorization declined)."""

    @workflow.run
    async def run(self, order: Order) -> OrderView:
        """Process the order to a final status and return its read model.

        A cancel requested through Temporal (the Web UI's or the CLI's workflow cancel) is
        taken as the customer's cancel: refused once the order has shipped, else the order is
        wound down like any cancelled order. It never ends the run with money or goods kept.
        """
        processing = asyncio.create_task(self._process())
        while True:
            try:
                return await asyncio.shield(processing)
            except asyncio.CancelledError:
                self._take_temporal_cancel()

    async def _process(self) -> OrderView:
        """The whole order: its fulfilment, its wind-down if it stops, its last handlers."""
        self._set_status(OrderStatus.RECEIVED)
        metrics.order_started()
        self._fulfilment = asyncio.create_task(self._fulfil())
        try:
            await self._fulfilment
        except OrderStopped as stop:
            await self._wind_down(stop)
        if self._watch is not None:
            await self._watch  # moot by now: it ends at once
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state.view()

    async def _fulfil(self) -> None:
        """The story of an order that goes well."""
        state, steps = self._state, self._steps
        try:
            await self._authorize_reserve_capture()
            self._set_status(OrderStatus.AWAITING_SHIPMENT)
            shipment = await wait_for_shipment(state, steps, self._set_status, self._email)
            await self._deliver(shipment)
        except asyncio.CancelledError:
            if self._stopped_by is not None:
                raise self._stopped_by from None
            if state.cancel_reason is None:
                raise
            raise steps.cancelled() from None

    async def _authorize_reserve_capture(self) -> None:
        """Authorize the card, reserve the stock, then take the money and confirm the order.

        An order the warehouse cannot fill stops before any money moves: its authorization is
        released and the customer never hears "confirmed".
        """
        steps = self._steps
        await self._payment.authorize()
        await self._authentication.complete()  # 3-D Secure: the customer answers first
        self._set_status(OrderStatus.AUTHORIZED)
        self._watch = asyncio.create_task(self._authorization.run())
        steps.stop_if_cancelled()
        await self._picking.send()
        steps.stop_if_cancelled()
        await self._payment.capture()
        self._set_status(OrderStatus.PAID)
        await self._confirm()
        steps.stop_if_cancelled()
        await self._picking.release()

    async def _confirm(self) -> None:
        """Email the order confirmation: the money is taken."""
        state = self._state
        assert state.charge_id is not None, "an order is confirmed once it is paid"
        content = emails.order_confirmation(state.order, state.charge_id)
        await self._email(Step.CONFIRMATION_EMAIL, content)
        state.confirmed = True

    async def _wind_down(self, stop: OrderStopped) -> None:
        """Undo what the order did, newest first, and tell the customer once."""
        state = self._state
        state.winding_down_to, state.failure_reason = stop.status, stop.reason
        state.attention_reason = state.attention_step = None  # the question is moot now
        if stop.status == OrderStatus.CANCELLED:
            self._set_status(OrderStatus.CANCELLING)
            self._picking.cover_a_lost_local_picklist()
        self._compensations.discard(stop.step)
        try:
            await self._compensations.unwind()
        except ShippedBeforeCancel as shipped:
            # Undone newest first, the picklist before the payment: nothing was refunded yet.
            workflow.logger.warning(
                "order %s: %s; it completes as shipped", state.order.id, shipped
            )
            state.cancel_reason = state.winding_down_to = state.failure_reason = None
            await self._deliver(shipped.shipment)
            return
        await self._email(*self._farewell(stop))
        await self._payment.settle_refund(self._email)
        self._set_status(stop.status)

    async def _deliver(self, shipment: Shipment) -> None:
        """The parcel has left: make sure it is paid for, tell the customer, and it is done."""
        state = self._state
        state.shipment = shipment
        self._set_status(OrderStatus.SHIPPED)
        await self._settle()
        await self._email(Step.SHIPPED_EMAIL, emails.order_shipped(state.order, shipment))
        self._set_status(OrderStatus.COMPLETED)

    async def _settle(self) -> None:
        """Goods that left are paid for and confirmed before the customer hears "shipped".

        Only a parcel that left before its picklist was released (a warehouse's mistake, met
        by a cancel or an early report) finds anything to do here: the capture (an operator
        is asked if it cannot succeed; the order can no longer be cancelled), then the
        confirmation.
        """
        state = self._state
        if state.charge_id is None:
            await self._payment.capture()
        if not state.confirmed:
            await self._confirm()

    async def _email(self, step: Step, content: EmailContent) -> None:
        customer = self._state.order.customer
        await self._steps.call(
            step,
            MailActivities.send_email,
            EmailRequest,
            step=step,
            to=customer.email,
            template=content.template,
            subject=content.subject,
            body=content.body,
            summary=f"{content.template.value} to {customer.email}",
            describe=lambda receipt: receipt.id,
        )

    def _farewell(self, stop: OrderStopped) -> tuple[Step, EmailContent]:
        order, refunded = self._state.order, self._state.refund_status
        if stop.status == OrderStatus.PAYMENT_DECLINED:
            return Step.DECLINE_EMAIL, emails.payment_declined(order, stop.detail)
        if stop.status == OrderStatus.OUT_OF_STOCK:
            return Step.OUT_OF_STOCK_EMAIL, emails.out_of_stock(order, stop.detail, refunded)
        return Step.CANCELLATION_EMAIL, emails.order_cancelled(order, stop.detail, refunded)

    @workflow.signal
    def warehouse_shipped(self, *report: Any) -> None:
        """The warehouse reports the parcel has left; refused unless the order awaits it.

        The report arrives raw and is validated here: a malformed signal (none, two, or not a
        shipment) is logged and ignored; it can never fail the order's workflow task.
        """
        shipment, state = _shipment_from(report), self._state
        if shipment is None:
            workflow.logger.warning("ignored shipped signal: it is not one shipment report")
            return
        if refusal := rules.ship_refusal(state.view()):
            workflow.logger.warning("ignored shipped signal: %s", refusal)
            return
        state.shipment = shipment

    @workflow.update
    def report_shipment(self, shipment: Shipment) -> OrderView:
        """The warehouse's shipped report as an update: taken, or refused with the reason why.

        The warehouse's webhook receiver (``orders.webhooks``) sends it under the event's id,
        so a redelivered event is answered by Temporal with the first outcome. A refusal's
        ``type`` is a ``rules.ShipVerdict`` (``already-shipped``, ``not-yet``, ``never``): the
        receiver answers the warehouse by it. The ``warehouse_shipped`` signal stays for
        ``starter.py ship``.
        """
        # Checked again: a validator can run before an earlier update's handler in the same
        # workflow task, so two reports could both pass it.
        _refuse_shipment(self._state.view(), shipment)
        self._state.shipment = shipment
        return self._state.view()

    @report_shipment.validator
    def _validate_report_shipment(self, shipment: Shipment) -> None:
        _refuse_shipment(self._state.view(), shipment)

    @workflow.update
    def gateway_event(self, event: GatewayEvent) -> str:
        """One of the gateway's (Stripe's) events about this order's payment.

        The receiver of Stripe's webhooks (``orders/webhooks/``) sends it under the event's id, so a
        redelivered event is answered by Temporal with the first outcome. An event is news,
        not truth: a wait that reads the gateway (3-D Secure, a pending refund) reads it again
        at once, and the object read by id decides. Events arrive in any order, or not at all:
        the reads go on.
        """
        state = self._state
        state.gateway_events += 1
        if state.status != OrderStatus.NEEDS_ATTENTION:  # parked: the operator decides
            self._wake.wake()
        intent = state.intent
        if (
            event.type == INTENT_CANCELED
            and intent is not None
            and event.object_id == intent.id
            and state.authorization_expiry() is not None  # held, not captured
        ):
            # A cancelled intent stays cancelled: the watch acts now, not at the expiry.
            state.authorization_canceled = True
        return f"order {self._state.order.id} took {event.type} {event.id}"

    @workflow.signal
    def dispute_opened(self, dispute: Dispute) -> None:
        """A chargeback on the order's payment (from its dispute's workflow): shown by status.

        It changes nothing the order does: the money is the bank's to decide; operators were
        told by the dispute's workflow, which holds the dispute whether the order runs or not.
        """
        self._state.dispute = dispute

    @workflow.query
    def status(self) -> OrderView:
        """The order's read model: status, timeline, transaction id and tracking."""
        return self._state.view()

    @workflow.update
    async def cancel(self, request: CancelRequest) -> OrderView:
        """Cancel an order that has not shipped; returns the order once it is wound down."""
        return await self._cancel(request.reason)

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        _refuse(rules.cancel_refusal(self._state.view()))

    @workflow.update
    async def resolve(self, request: ResolveRequest) -> OrderView:
        """An operator's decision for an order that needs attention."""
        if request.action == OperatorAction.CANCEL:
            return await self._cancel(request.reason or "cancelled by operator")
        self._state.operator_action = request.action
        await workflow.wait_condition(lambda: self._state.status != OrderStatus.NEEDS_ATTENTION)
        return self._state.view()

    @resolve.validator
    def _validate_resolve(self, request: ResolveRequest) -> None:
        view, order = self._state.view(), f"order {self._state.order.id}"
        if view.status != OrderStatus.NEEDS_ATTENTION:
            _refuse(
                f"{order} is {view.status.value}, not needs-attention; there is nothing to resolve"
            )
        if request.action == OperatorAction.CANCEL:
            _refuse(rules.cancel_refusal(view))
        elif view.attention_step in (None, Step.SHIPMENT):
            _refuse(f"{order} is paid and waits for shipment; ship it or cancel it")
        elif (
            request.action == OperatorAction.RETRY_PAYMENT
            and view.attention_step not in PAYMENT_STEPS
        ):
            step = view.attention_step
            _refuse(f"{order}: not its payment but its {step} step failed: use --action retry")

    async def _cancel(self, reason: str) -> OrderView:
        """Accept a cancel and return the order once it is wound down."""
        self._accept_cancel(reason)
        await workflow.wait_condition(lambda: self._state.status.is_final)
        return self._state.view()

    def _accept_cancel(self, reason: str) -> None:
        """The story stops at once, whatever step it is in."""
        self._state.cancel_reason = reason
        if self._fulfilment is not None:
            self._fulfilment.cancel()

    def _stop_fulfilment(self, stop: OrderStopped) -> None:
        """Stop the story at once with ``stop`` (decided beside it), unless it is stopping."""
        if self._fulfilment is None or self._state.winding_down_to is not None:
            return
        self._stopped_by = stop
        self._fulfilment.cancel()

    def _take_temporal_cancel(self) -> None:
        """Apply the cancel rule to a cancel requested through Temporal; a refusal is logged."""
        refusal = rules.cancel_refusal(self._state.view())
        if refusal is not None:
            workflow.logger.warning("ignored a workflow cancel request: %s", refusal)
            return
        self._accept_cancel(TEMPORAL_CANCEL_REASON)

    def _set_status(self, status: OrderStatus) -> None:
        state = self._state
        metrics.status_changed(state.status, status, state.attention_step)
        state.status = status
        if status in PASSING_STATUSES and state.patches.taken(patches.COALESCED_STATUS_UPSERTS):
            return  # published before the order next waits on Temporal, or superseded
        self._publish_status()

    def _publish_status(self) -> None:
        """Bring the order's search attributes up to its status; nothing if they are."""
        wanted = search_attributes.of_order(self._state.status, self._state.order.customer.id)
        # Only what changed: the start gives the first status and the customer (client.orders).
        known = workflow.info().typed_search_attributes
        if updates := search_attributes.changes(known, wanted):
            workflow.upsert_search_attributes(updates)


def _shipment_from(report: tuple[Any, ...]) -> Shipment | None:
    """The one shipment a shipped signal carries, or ``None`` when it carries anything else."""
    if len(report) != 1:
        return None
    try:
        return Shipment.model_validate(report[0])
    except ValidationError:
        return None


def _refuse(reason: str | None) -> None:
    """Refuse an update with ``reason``, if there is one; the caller sees the reason."""
    if reason is not None:
        raise ApplicationError(reason)


def _refuse_shipment(view: OrderView, shipment: Shipment) -> None:
    """Refuse a shipped report the order can't take now, typed by its ``rules.ShipVerdict``."""
    verdict, reason = rules.ship_verdict(view, shipment)
    if verdict != rules.ShipVerdict.DUE:
        raise ApplicationError(reason or verdict.value, type=verdict.value, non_retryable=True)
