"""The order workflow: charge, confirm, pick, wait for shipment, tell the customer.

Deterministic: it only schedules activities, waits on signals and keeps the read model. Each
step's result lands in Temporal's history, so after any crash the order resumes where it was,
and each activity carries an idempotency key from the order id and the step, so a step re-run
after an unknown outcome returns the first result instead of acting twice.
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.errors import PAYMENT_DECLINED
    from activities.mail import EmailReceipt, EmailRequest, MailActivities
    from activities.payment import (
        Charge,
        ConfirmPaymentRequest,
        PaymentActivities,
        PaymentIntentRequest,
    )
    from activities.warehouse import Picklist, PicklistItem, PicklistRequest, WarehouseActivities
    from domain import emails, search_attributes
    from domain.currencies import format_money
    from domain.emails import EmailContent
    from domain.models import Order, OrderView, Shipment, StepRecord
    from domain.status import OrderStatus, Step, StepState, idempotency_key
    from workflows.policy import PROVIDER_CALL_TIMEOUT, PROVIDER_RETRY

T = TypeVar("T")


class PaymentDeclined(Exception):
    """The gateway declined the card: a business outcome, not a fault."""


@workflow.defn
class OrderWorkflow:
    """One order, from payment to the shipped email. Workflow id = order id."""

    @workflow.init
    def __init__(self, order: Order) -> None:
        self._order = order
        self._shipment: Shipment | None = None
        self._view = OrderView(
            order_id=order.id,
            customer_id=order.customer.id,
            status=OrderStatus.RECEIVED,
            total=order.total,
            currency=order.currency,
        )

    @workflow.run
    async def run(self, order: Order) -> OrderView:
        """Process the order to completion and return its final read model."""
        self._set_status(OrderStatus.RECEIVED)
        try:
            charge = await self._charge()
        except PaymentDeclined as declined:
            await self._send_email(
                Step.DECLINE_EMAIL, emails.payment_declined(order, str(declined))
            )
            self._view.failure_reason = f"payment declined: {declined}"
            self._set_status(OrderStatus.PAYMENT_DECLINED)
            return self._view
        self._set_status(OrderStatus.PAID)
        await self._send_email(Step.CONFIRMATION_EMAIL, emails.order_confirmation(order, charge.id))
        await self._send_picklist()
        self._set_status(OrderStatus.AWAITING_SHIPMENT)
        shipment = await self._wait_for_shipment()
        self._set_status(OrderStatus.SHIPPED)
        await self._send_email(Step.SHIPPED_EMAIL, emails.order_shipped(order, shipment))
        self._set_status(OrderStatus.COMPLETED)
        return self._view

    @workflow.signal
    def warehouse_shipped(self, shipment: Shipment) -> None:
        """The warehouse reports the parcel has left; repeats and late reports are ignored."""
        if self._shipment is not None or self._view.status.is_final:
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

    async def _charge(self) -> Charge:
        order = self._order
        intent = await self._step(
            Step.PAYMENT_INTENT,
            lambda: workflow.execute_activity_method(
                PaymentActivities.create_payment_intent,
                PaymentIntentRequest(
                    order_id=order.id,
                    amount=order.total,
                    currency=order.currency,
                    payment_method=order.payment_method,
                    idempotency_key=idempotency_key(order.id, Step.PAYMENT_INTENT),
                ),
                start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
                retry_policy=PROVIDER_RETRY,
                summary=f"intent for {format_money(order.total, order.currency)}",
            ),
            lambda intent: intent.id,
        )
        self._view.payment_intent_id = intent.id
        try:
            charge = await self._step(
                Step.PAYMENT_CONFIRM,
                lambda: workflow.execute_activity_method(
                    PaymentActivities.confirm_payment,
                    ConfirmPaymentRequest(
                        order_id=order.id,
                        intent_id=intent.id,
                        idempotency_key=idempotency_key(order.id, Step.PAYMENT_CONFIRM),
                    ),
                    start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
                    retry_policy=PROVIDER_RETRY,
                    summary=f"confirm {intent.id}",
                ),
                lambda charge: charge.id,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == PAYMENT_DECLINED:
                raise PaymentDeclined(_decline_code(cause)) from err
            raise
        self._view.transaction_id = charge.id
        return charge

    async def _send_email(self, step: Step, content: EmailContent) -> EmailReceipt:
        order = self._order
        return await self._step(
            step,
            lambda: workflow.execute_activity_method(
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
                start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
                retry_policy=PROVIDER_RETRY,
                summary=f"{content.template.value} to {order.customer.email}",
            ),
            lambda receipt: receipt.id,
        )

    async def _send_picklist(self) -> Picklist:
        order = self._order
        picklist = await self._step(
            Step.PICKLIST,
            lambda: workflow.execute_activity_method(
                WarehouseActivities.send_picklist,
                PicklistRequest(
                    order_id=order.id,
                    items=[PicklistItem(sku=i.sku, quantity=i.quantity) for i in order.items],
                    ship_to=order.shipping_address,
                    idempotency_key=idempotency_key(order.id, Step.PICKLIST),
                ),
                start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
                retry_policy=PROVIDER_RETRY,
                summary=f"picklist of {len(order.items)} line(s)",
            ),
            lambda picklist: picklist.id,
        )
        self._view.picklist_id = picklist.id
        return picklist

    async def _wait_for_shipment(self) -> Shipment:
        async def shipped() -> Shipment:
            await workflow.wait_condition(lambda: self._shipment is not None)
            assert self._shipment is not None
            return self._shipment

        shipment = await self._step(
            Step.SHIPMENT, shipped, lambda s: f"{s.carrier} {s.tracking_number}"
        )
        self._view.shipment = shipment
        return shipment

    async def _step(
        self, step: Step, call: Callable[[], Awaitable[T]], describe: Callable[[T], str]
    ) -> T:
        """Run one step and keep its line of the timeline up to date."""
        record = StepRecord(step=step, state=StepState.STARTED, started_at=workflow.now())
        self._view.timeline.append(record)
        try:
            result = await call()
        except ActivityError as err:
            record.state, record.detail = StepState.FAILED, str(err.cause or err)
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


def _decline_code(error: ApplicationError) -> str:
    details = error.details[0] if error.details else {}
    if isinstance(details, dict):
        return str(details.get("decline_code") or details.get("code") or "declined")
    return "declined"
