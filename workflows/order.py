"""The order workflow: charge, confirm, pick, wait for shipment, tell the customer.

Deterministic: it only schedules activities and timers, reacts to signals and updates, and
keeps the read model. Each step's result lands in Temporal's history, so after any crash the
order resumes where it was, and each activity carries an idempotency key from the order id and
the step, so a step re-run after an unknown outcome returns the first result instead of acting
twice.

The unhappy paths end the normal flow with ``_Stop``; ``_wind_down`` then refunds what was
charged, takes back the picklist and sends one email that says why.
"""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.errors import OUT_OF_STOCK, PAYMENT_DECLINED
    from activities.mail import EmailReceipt, EmailRequest, MailActivities
    from activities.payment import (
        Charge,
        ConfirmPaymentRequest,
        PaymentActivities,
        PaymentIntent,
        PaymentIntentRequest,
        RefundRequest,
    )
    from activities.warehouse import (
        CancelPicklistRequest,
        Picklist,
        PicklistItem,
        PicklistRequest,
        WarehouseActivities,
    )
    from domain import emails, search_attributes
    from domain.currencies import format_money
    from domain.emails import EmailContent
    from domain.models import (
        CancelRequest,
        Order,
        OrderOptions,
        OrderView,
        ResolveRequest,
        Shipment,
        StepRecord,
    )
    from domain.status import OperatorAction, OrderStatus, Step, StepState, idempotency_key
    from workflows.policy import (
        PROVIDER_CALL_TIMEOUT,
        PROVIDER_HEARTBEAT_TIMEOUT,
        PROVIDER_RETRY,
    )

T = TypeVar("T")

OPTIONS_MEMO = "options"
"""Memo key of the order's ``OrderOptions``. They travel in the memo, not as a second workflow
argument, so the input stays one ``Order``: orders started before options existed have no memo
and replay with the defaults (a second argument would change how their input decodes)."""

SHIPMENT_DEADLINES_PATCH = "shipment-deadlines"
"""Orders started before shipment deadlines existed keep waiting without timers (see README)."""

_NOT_CANCELLABLE = {OrderStatus.SHIPPED, OrderStatus.CANCELLING}
_OUTCOMES = {PAYMENT_DECLINED, OUT_OF_STOCK}
"""Provider refusals that are business outcomes of the order, not faults to escalate."""


class _Stop(Exception):
    """Ends the normal flow early: declined, out of stock or cancelled."""

    def __init__(self, status: OrderStatus, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


@workflow.defn
class OrderWorkflow:
    """One order, from payment to the shipped email. Workflow id = order id."""

    @workflow.init
    def __init__(self, order: Order) -> None:
        self._order = order
        self._options = workflow.memo_value(OPTIONS_MEMO, OrderOptions(), type_hint=OrderOptions)
        self._shipment: Shipment | None = None
        self._cancel_reason: str | None = None
        self._operator_action: OperatorAction | None = None
        self._attention_step: Step | None = None
        self._winding_down = False
        self._intent: PaymentIntent | None = None
        self._charge_outcome_unknown = False
        self._view = OrderView(
            order_id=order.id,
            customer_id=order.customer.id,
            status=OrderStatus.RECEIVED,
            total=order.total,
            currency=order.currency,
        )

    @workflow.run
    async def run(self, order: Order) -> OrderView:
        """Process the order to a final status and return its read model."""
        self._set_status(OrderStatus.RECEIVED)
        try:
            await self._fulfil()
        except _Stop as stop:
            await self._wind_down(stop)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

    @workflow.signal
    def warehouse_shipped(self, shipment: Shipment) -> None:
        """The warehouse reports the parcel has left; repeats and late reports are ignored."""
        if self._shipment is not None or self._cancel_reason or self._view.status.is_final:
            workflow.logger.warning(
                "%s: ignored shipped signal %s (order is %s)",
                self._order.id,
                shipment.tracking_number,
                self._view.status.value,
            )
            return
        self._shipment = shipment

    @workflow.query
    def status(self) -> OrderView:
        """The order's read model: status, timeline, transaction id and tracking."""
        return self._view

    @workflow.update
    async def cancel(self, request: CancelRequest) -> OrderView:
        """Cancel an order that has not shipped; returns the order once it is wound down."""
        return await self._cancel_and_wait(request.reason)

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        self._refuse_cancel_if_too_late()

    def _refuse_cancel_if_too_late(self) -> None:
        status = self._view.status
        if self._cancel_reason is not None:
            raise ApplicationError(f"order {self._order.id} is already being cancelled")
        if self._winding_down and not status.is_final:
            raise ApplicationError(
                f"order {self._order.id} is already being wound down; retry its failed step"
            )
        if self._shipment is not None or status in _NOT_CANCELLABLE:
            raise ApplicationError(f"order {self._order.id} has shipped; it can't be cancelled")
        if status.is_final:
            raise ApplicationError(f"order {self._order.id} is already {status.value}")

    @workflow.update
    async def resolve(self, request: ResolveRequest) -> OrderView:
        """An operator's decision for an order that needs attention."""
        if request.action == OperatorAction.CANCEL:
            return await self._cancel_and_wait(request.reason or "cancelled by operator")
        self._operator_action = request.action
        await workflow.wait_condition(lambda: self._view.status != OrderStatus.NEEDS_ATTENTION)
        return self._view

    @resolve.validator
    def _validate_resolve(self, request: ResolveRequest) -> None:
        if self._view.status != OrderStatus.NEEDS_ATTENTION:
            raise ApplicationError(
                f"order {self._order.id} is {self._view.status.value}, not needs-attention; "
                "there is nothing to resolve"
            )
        if request.action == OperatorAction.CANCEL:
            self._refuse_cancel_if_too_late()
        elif self._attention_step is None:
            raise ApplicationError(
                f"order {self._order.id} is paid and waits for shipment; ship it or cancel it"
            )
        elif request.action == OperatorAction.RETRY_PAYMENT and self._attention_step not in (
            Step.PAYMENT_INTENT,
            Step.PAYMENT_CONFIRM,
        ):
            raise ApplicationError(
                f"order {self._order.id} is paid; its {self._attention_step.value} step failed: "
                "use --action retry"
            )

    async def _cancel_and_wait(self, reason: str) -> OrderView:
        self._cancel_reason = reason
        await workflow.wait_condition(lambda: self._view.status.is_final)
        return self._view

    async def _fulfil(self) -> None:
        order = self._order
        charge = await self._charge_or_escalate()
        self._set_status(OrderStatus.PAID)
        await self._send_email(Step.CONFIRMATION_EMAIL, emails.order_confirmation(order, charge.id))
        self._stop_if_cancelled()
        await self._send_picklist()
        self._stop_if_cancelled()
        self._set_status(OrderStatus.AWAITING_SHIPMENT)
        shipment = await self._wait_for_shipment()
        self._set_status(OrderStatus.SHIPPED)
        await self._send_email(Step.SHIPPED_EMAIL, emails.order_shipped(order, shipment))
        self._set_status(OrderStatus.COMPLETED)

    async def _charge_or_escalate(self) -> Charge:
        """Charge the card; a gateway failing past the retry budget goes to an operator."""
        while True:
            try:
                return await self._charge()
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.type == PAYMENT_DECLINED:
                    code = _error_detail(cause, "decline_code", "declined")
                    raise _Stop(
                        OrderStatus.PAYMENT_DECLINED, f"payment declined: {code}", code
                    ) from err
                self._charge_outcome_unknown = self._intent is not None
                step = Step.PAYMENT_INTENT if self._intent is None else Step.PAYMENT_CONFIRM
                budget = _human(self._options.payment_retry_budget)
                await self._ask_operator(step, f"payment failing for over {budget}: {cause or err}")

    async def _charge(self) -> Charge:
        order = self._order
        self._stop_if_cancelled()
        if self._intent is None:
            self._intent = await self._activity(
                Step.PAYMENT_INTENT,
                PaymentActivities.create_payment_intent,
                PaymentIntentRequest(
                    order_id=order.id,
                    amount=order.total,
                    currency=order.currency,
                    payment_method=order.payment_method,
                    idempotency_key=idempotency_key(order.id, Step.PAYMENT_INTENT),
                ),
                summary=f"intent for {format_money(order.total, order.currency)}",
                describe=lambda intent: intent.id,
                schedule_to_close=self._options.payment_retry_budget,
            )
            self._view.payment_intent_id = self._intent.id
            self._stop_if_cancelled()
        charge = await self._activity(
            Step.PAYMENT_CONFIRM,
            PaymentActivities.confirm_payment,
            ConfirmPaymentRequest(
                order_id=order.id,
                intent_id=self._intent.id,
                idempotency_key=idempotency_key(order.id, Step.PAYMENT_CONFIRM),
            ),
            summary=f"confirm {self._intent.id}",
            describe=lambda charge: charge.id,
            schedule_to_close=self._options.payment_retry_budget,
        )
        self._view.transaction_id = charge.id
        return charge

    async def _send_email(self, step: Step, content: EmailContent) -> EmailReceipt:
        order = self._order
        return await self._activity(
            step,
            MailActivities.send_email,
            EmailRequest(
                order_id=order.id,
                step=step,
                to=order.customer.email,
                template=content.template,
                subject=content.subject,
                body=content.body,
                idempotency_key=idempotency_key(order.id, step),
            ),
            summary=f"{content.template.value} to {order.customer.email}",
            describe=lambda receipt: receipt.id,
        )

    async def _send_picklist(self) -> Picklist:
        order = self._order
        try:
            picklist = await self._activity(
                Step.PICKLIST,
                WarehouseActivities.send_picklist,
                PicklistRequest(
                    order_id=order.id,
                    items=[PicklistItem(sku=i.sku, quantity=i.quantity) for i in order.items],
                    ship_to=order.shipping_address,
                    idempotency_key=idempotency_key(order.id, Step.PICKLIST),
                ),
                summary=f"picklist of {len(order.items)} line(s)",
                describe=lambda picklist: picklist.id,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == OUT_OF_STOCK:
                sku = _error_detail(cause, "sku", "an item")
                raise _Stop(OrderStatus.OUT_OF_STOCK, f"out of stock: {sku}", sku) from err
            raise
        self._view.picklist_id = picklist.id
        return picklist

    async def _wait_for_shipment(self) -> Shipment:
        async def shipped() -> Shipment:
            if workflow.patched(SHIPMENT_DEADLINES_PATCH):
                await self._wait_with_deadlines()
            else:
                await workflow.wait_condition(self._shipped_or_cancelled)
            self._stop_if_cancelled()
            assert self._shipment is not None
            return self._shipment

        shipment = await self._step(
            Step.SHIPMENT, shipped, lambda s: f"{s.carrier} {s.tracking_number}"
        )
        self._view.shipment = shipment
        self._view.attention_reason = None
        return shipment

    async def _wait_with_deadlines(self) -> None:
        """Email the customer once if shipment is late; ask an operator if it is very late."""
        options = self._options
        waiting_since = workflow.now()
        if await _wait_until(self._shipped_or_cancelled, options.shipment_delayed_after):
            return
        self._set_status(OrderStatus.SHIPMENT_DELAYED)
        await self._send_email(Step.DELAY_EMAIL, emails.shipment_delayed(self._order))
        remaining = waiting_since + options.shipment_attention_after - workflow.now()
        if await _wait_until(self._shipped_or_cancelled, remaining):
            return
        self._view.attention_reason = (
            f"not shipped within {_human(options.shipment_attention_after)}"
        )
        self._set_status(OrderStatus.NEEDS_ATTENTION)
        await workflow.wait_condition(self._shipped_or_cancelled)

    async def _ask_operator(self, step: Step, reason: str) -> None:
        """Park the order until an operator retries ``step`` (returns) or cancels it (raises).

        While the order is being wound down it can only be retried: it is cancelling already.
        """
        previous = self._view.status
        self._view.attention_reason, self._attention_step = reason, step
        self._operator_action = None
        self._set_status(OrderStatus.NEEDS_ATTENTION)

        def decided() -> bool:
            cancelled = self._cancel_reason is not None and not self._winding_down
            return self._operator_action is not None or cancelled

        async def decision() -> str:
            await workflow.wait_condition(decided)
            if self._operator_action is None:
                self._stop_if_cancelled()
            return str(self._operator_action)

        await self._step(Step.OPERATOR, decision, lambda action: f"operator chose {action}")
        self._view.attention_reason, self._attention_step = None, None
        self._set_status(previous)

    async def _wind_down(self, stop: _Stop) -> None:
        """Undo what the order did, in reverse, and tell the customer once."""
        self._winding_down = True
        if stop.status == OrderStatus.CANCELLED:
            self._set_status(OrderStatus.CANCELLING)
        refunded = await self._refund_if_charged(stop.reason)
        if self._view.picklist_id is not None:
            await self._activity(
                Step.PICKLIST_CANCEL,
                WarehouseActivities.cancel_picklist,
                CancelPicklistRequest(
                    order_id=self._order.id,
                    picklist_id=self._view.picklist_id,
                    idempotency_key=idempotency_key(self._order.id, Step.PICKLIST_CANCEL),
                ),
                summary=f"cancel {self._view.picklist_id}",
                describe=lambda picklist: picklist.id,
            )
        await self._send_email(*self._farewell(stop, refunded))
        self._view.failure_reason = stop.reason
        self._set_status(stop.status)

    async def _refund_if_charged(self, reason: str) -> bool:
        order = self._order
        if self._view.transaction_id is None and self._charge_outcome_unknown:
            # The gateway may have charged without our hearing it: ask before refunding.
            charge = await self._activity(
                Step.CHARGE_LOOKUP,
                PaymentActivities.find_charge,
                order.id,
                summary="find the charge, if any",
                describe=lambda charge: charge.id if charge else "no charge",
            )
            self._view.transaction_id = charge.id if charge else None
        if self._view.transaction_id is None:
            return False
        refund = await self._activity(
            Step.REFUND,
            PaymentActivities.refund_payment,
            RefundRequest(
                order_id=order.id,
                charge_id=self._view.transaction_id,
                reason=reason,
                idempotency_key=idempotency_key(order.id, Step.REFUND),
            ),
            summary=f"refund {format_money(order.total, order.currency)}",
            describe=lambda refund: refund.id,
        )
        self._view.refund_id = refund.id
        return True

    def _farewell(self, stop: _Stop, refunded: bool) -> tuple[Step, EmailContent]:
        order = self._order
        if stop.status == OrderStatus.PAYMENT_DECLINED:
            return Step.DECLINE_EMAIL, emails.payment_declined(order, stop.detail)
        if stop.status == OrderStatus.OUT_OF_STOCK:
            return Step.OUT_OF_STOCK_EMAIL, emails.out_of_stock(order, stop.detail, refunded)
        return Step.CANCELLATION_EMAIL, emails.order_cancelled(order, stop.detail, refunded)

    def _shipped_or_cancelled(self) -> bool:
        return self._shipment is not None or self._cancel_reason is not None

    def _stop_if_cancelled(self) -> None:
        if self._cancel_reason is not None:
            reason = self._cancel_reason
            raise _Stop(OrderStatus.CANCELLED, f"cancelled: {reason}", reason)

    async def _activity(
        self,
        step: Step,
        activity: Callable[[Any, Any], Awaitable[T]],
        request: Any,
        *,
        summary: str,
        describe: Callable[[T], str],
        schedule_to_close: timedelta | None = None,
    ) -> T:
        """Run one provider call as a step, with the shared timeouts and retry policy.

        Transient faults are retried with backoff. A refusal that is not a business outcome
        (a bug or a provider's stricter rule, seen only after retries cannot help) parks the
        order for an operator instead of failing it, unless ``schedule_to_close`` is set: the
        payment steps have their own budget and escalation.
        """
        while True:
            try:
                return await self._step(
                    step,
                    lambda: workflow.execute_activity_method(
                        activity,
                        request,
                        start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
                        heartbeat_timeout=PROVIDER_HEARTBEAT_TIMEOUT,
                        schedule_to_close_timeout=schedule_to_close,
                        retry_policy=PROVIDER_RETRY,
                        summary=summary,
                    ),
                    describe,
                )
            except ActivityError as err:
                cause = err.cause
                business = isinstance(cause, ApplicationError) and cause.type in _OUTCOMES
                if business or schedule_to_close is not None:
                    raise
                await self._ask_operator(step, f"{step.value} refused: {cause or err}")

    async def _step(
        self, step: Step, call: Callable[[], Awaitable[T]], describe: Callable[[T], str]
    ) -> T:
        """Run one step and keep its line of the timeline up to date."""
        record = StepRecord(step=step, state=StepState.STARTED, started_at=workflow.now())
        self._view.timeline.append(record)
        try:
            result = await call()
        except (ActivityError, _Stop) as err:
            detail = err.cause if isinstance(err, ActivityError) else err
            record.state, record.detail = StepState.FAILED, str(detail or err)
            record.finished_at = workflow.now()
            raise
        record.state, record.detail = StepState.COMPLETED, describe(result)
        record.finished_at = workflow.now()
        return result

    def _set_status(self, status: OrderStatus) -> None:
        self._view.status = status
        workflow.upsert_search_attributes(
            [
                search_attributes.ORDER_STATUS.value_set(status.value),
                search_attributes.CUSTOMER_ID.value_set(self._order.customer.id),
            ]
        )


async def _wait_until(condition: Callable[[], bool], limit: timedelta) -> bool:
    """Wait for ``condition`` at most ``limit`` (a durable timer); False if time ran out."""
    try:
        await workflow.wait_condition(condition, timeout=max(limit, timedelta(seconds=1)))
    except TimeoutError:
        return False
    return True


def _error_detail(error: ApplicationError, key: str, default: str) -> str:
    details = error.details[0] if error.details else {}
    return str(details.get(key) or default) if isinstance(details, dict) else default


def _human(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
