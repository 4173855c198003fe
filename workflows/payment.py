"""The order's payment, and its undo as the gateway decides it.

Phase one creates (or adopts) a payment intent for manual capture: no money moves, its id
lands in history. Phase two confirms it, which only authorizes the card; ``capture`` moves the
money once the stock is reserved. The undo is registered just before the confirm, because from
then on money may be held (or moved) whatever the workflow hears.
"""

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payment import (
        CancelPaymentRequest,
        CapturePaymentRequest,
        Charge,
        ConfirmPaymentRequest,
        FollowRefundRequest,
        PaymentActivities,
        PaymentIntent,
        PaymentIntentRequest,
        Refund,
        RefundRequest,
    )
    from orders.domain import emails
    from orders.domain.currencies import format_money
    from orders.domain.emails import EmailContent
    from orders.domain.status import RefundStatus, Step
    from workflows.compensation import Compensations
    from workflows.state import OrderState
    from workflows.steps import Steps, Wake, read_until_woken

R = TypeVar("R", ConfirmPaymentRequest, CapturePaymentRequest)
SendEmail = Callable[[Step, EmailContent], Awaitable[None]]


class Payment:
    """Charges one order's card once, and gives the money back only if it was taken."""

    def __init__(
        self, state: OrderState, steps: Steps, compensations: Compensations, wake: Wake
    ) -> None:
        self._state, self._steps, self._compensations = state, steps, compensations
        self._wake = wake
        """Raised by the gateway's events: a pending refund is read again at once."""

    async def authorize(self, escalate: bool = True) -> None:
        """Create or adopt a manual-capture intent, then confirm it: the card is authorized.

        No money moves until ``capture``; a decline stops the order. ``escalate``: as for
        ``Steps.call``.
        """
        state = self._state
        intent = await self._create_intent(escalate, capture_method="manual")
        self._compensations.add(Step.PAYMENT_CONFIRM, self.undo)
        state.intent = await self._steps.call(
            Step.PAYMENT_CONFIRM,
            PaymentActivities.authorize_payment,
            ConfirmPaymentRequest,
            intent_id=intent.id,
            summary=f"authorize {intent.id}",
            describe=lambda intent: (
                f"{'awaits authentication' if intent.awaits_customer else 'authorized'} {intent.id}"
            ),
            escalate=escalate,
        )

    async def renew(self) -> None:
        """Authorize the card again, its authorization having expired; nothing is captured.

        The expired intent is cancelled first, the gateway deciding: if a capture got there
        after all, the order has its money and keeps it. Otherwise a new intent is created
        and confirmed under new keys. Runs beside the story, which waits for an operator
        meanwhile, so a failure is raised rather than parked; a decline stops the order.
        """
        state = self._state
        assert state.intent is not None, "an order renews the authorization it had"
        expired = await self._cancel_intent(state.intent, escalate=False)
        if expired.charged:
            state.charge_id = expired.charge
            return
        state.replaced_intents.append(expired.id)
        for step in (Step.PAYMENT_INTENT, Step.PAYMENT_CONFIRM, Step.PAYMENT_CANCEL):
            state.attempts[step] = state.attempts.get(step, 1) + 1
        state.intent = None
        await self.authorize(escalate=False)

    async def capture(self) -> str:
        """Move the authorized money; returns the charge id."""
        order = self._state.order
        return await self._take_money(
            Step.PAYMENT_CAPTURE,
            PaymentActivities.capture_payment,
            CapturePaymentRequest,
            summary=f"capture {format_money(order.total, order.currency)}",
        )

    async def _create_intent(self, escalate: bool = True, **fields: Any) -> PaymentIntent:
        """Create the order's intent once (its id in history), or return the one it has."""
        state, order = self._state, self._state.order
        if state.intent is None:
            replaces: dict[str, Any] = (
                {"replaces": state.replaced_intents} if state.replaced_intents else {}
            )
            state.intent = await self._steps.call(
                Step.PAYMENT_INTENT,
                PaymentActivities.create_payment_intent,
                PaymentIntentRequest,
                amount=order.total,
                currency=order.currency,
                payment_method=order.payment_method,
                placed_at=order.placed_at,
                summary=f"intent for {format_money(order.total, order.currency)}",
                describe=lambda intent: intent.id,
                escalate=escalate,
                **replaces,
                **fields,
            )
            self._steps.stop_if_cancelled()
        return state.intent

    async def _take_money(
        self,
        step: Step,
        activity: Callable[[Any, R], Awaitable[Charge]],
        request: type[R],
        summary: str,
    ) -> str:
        """Run the step that moves the money for the order's intent; returns the charge id."""
        state = self._state
        assert state.intent is not None, "money moves for an intent the order has"
        charge = await self._steps.call(
            step,
            activity,
            request,
            intent_id=self._intent_id,  # read at each try: a renewal replaces the intent
            summary=summary,
            describe=lambda charge: charge.id,
        )
        state.charge_id = charge.id
        return charge.id

    def _intent_id(self) -> str:
        assert self._state.intent is not None, "money moves for an intent the order has"
        return self._state.intent.id

    async def undo(self) -> None:
        """Give back what was charged, exactly once.

        With the charge unknown, the gateway decides: the order cancels its intent, which
        releases an authorization, is refused while a confirm or capture is still in flight
        (retried) and is answered with the charge if the intent was captured.
        """
        state = self._state
        if state.charge_id is None and state.intent is not None:
            intent = await self._cancel_intent(state.intent)
            state.charge_id = intent.charge if intent.charged else None
        if state.charge_id is not None:
            await self._refund(state.charge_id)

    async def _cancel_intent(self, intent: PaymentIntent, escalate: bool = True) -> PaymentIntent:
        return await self._steps.call(
            Step.PAYMENT_CANCEL,
            PaymentActivities.cancel_payment,
            CancelPaymentRequest,
            intent_id=intent.id,
            summary=f"cancel {intent.id}",
            describe=lambda answer: f"charged {answer.charge}" if answer.charged else answer.status,
            escalate=escalate,
        )

    async def _refund(self, charge_id: str) -> None:
        order = self._state.order
        refund = await self._steps.call(
            Step.REFUND,
            PaymentActivities.refund_payment,
            RefundRequest,
            charge_id=charge_id,
            reason=self._state.failure_reason or "order stopped",
            summary=f"refund {format_money(order.total, order.currency)}",
            describe=lambda refund: f"{refund.id} {refund.status}",
        )
        self._record(refund)

    async def settle_refund(self, send_email: SendEmail) -> None:
        """Follow the order's refund until the money is back with the customer.

        A pending refund is followed to its outcome. A failed one is told to the customer as it
        is (once) and sent to an operator with the bank's reason; the operator's retry refunds
        again under a new key (the failed refund gave the money back to the charge).
        """
        state = self._state
        while state.refund_id is not None and state.refund_status != RefundStatus.SUCCEEDED:
            if state.refund_status == RefundStatus.PENDING:
                self._record(await self._follow(state.refund_id))
                continue
            reason = state.refund_failure or "unknown"
            if state.retries.get(Step.REFUND, 0) == 0:
                await send_email(
                    Step.REFUND_FAILED_EMAIL, emails.refund_failed(state.order, reason)
                )
            await self._steps.ask_operator(
                Step.REFUND, f"refund {state.refund_id} failed: {reason}"
            )
            state.retries[Step.REFUND] = state.retries.get(Step.REFUND, 0) + 1
            state.attempts[Step.REFUND] = state.attempts.get(Step.REFUND, 1) + 1
            assert state.charge_id is not None, "a refund gives back a charge"
            await self._refund(state.charge_id)

    async def _follow(self, refund_id: str) -> Refund:
        def read() -> Coroutine[Any, Any, Refund]:
            return self._steps.call(
                Step.REFUND_OUTCOME,
                PaymentActivities.follow_refund,
                FollowRefundRequest,
                refund_id=refund_id,
                summary=f"outcome of {refund_id}",
                describe=lambda refund: f"{refund.id} {refund.status}",
                wake=self._wake,
            )

        # Stripe's charge.refund.updated: read at once rather than at the next (hourly) retry.
        return await read_until_woken(read, self._wake)

    def _record(self, refund: Refund) -> None:
        state = self._state
        state.refund_id, state.refund_status = refund.id, refund.status
        state.refund_failure = refund.failure_reason
