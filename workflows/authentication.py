"""Waiting for the customer's 3-D Secure: the money is not authorized until they authenticate.

A confirm the bank wants confirmed by the customer answers ``requires_action`` with a link.
The order emails the link, asks the gateway for the outcome until its deadline
(``OrderOptions.authentication_wait``; Stripe's events wake the wait at once), reminds the
customer once halfway, and when the deadline passes stops: the intent is cancelled (the
confirm's undo), nothing was charged, and the cancellation email says so. A failed
authentication, or a card declined once authenticated, is a decline. A cancel meanwhile
interrupts the wait as it interrupts any step.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.payment import FollowAuthenticationRequest, PaymentActivities, PaymentIntent
    from orders.domain import emails
    from orders.domain.emails import EmailContent
    from orders.domain.status import OrderStatus, Step
    from workflows.state import OrderState
    from workflows.steps import OrderStopped, Steps, Wake, read_until_woken

NOT_AUTHENTICATED = "the payment was not confirmed with the bank in time"
"""The cancel reason of an order whose customer never completed 3-D Secure."""
CANCELED_AT_GATEWAY = "the payment was cancelled at the gateway"
BUDGET_SLACK = timedelta(minutes=1)
"""The reads outlive the order's deadline timer by this much: the timer decides, not them."""
SendEmail = Callable[[Step, EmailContent], Awaitable[None]]


class Authentication:
    """The customer's part of the payment, between the confirm and the authorization."""

    def __init__(
        self,
        state: OrderState,
        steps: Steps,
        send_email: SendEmail,
        set_status: Callable[[OrderStatus], None],
        wake: Wake,
    ) -> None:
        self._state, self._steps = state, steps
        self._email, self._set_status = send_email, set_status
        self._wake = wake
        """Raised by the gateway's events: the intent is read again at once."""

    async def complete(self) -> None:
        """Return once the card is authorized; raise ``OrderStopped`` if it never will be.

        Does nothing when the confirm authorized the card at once.
        """
        state = self._state
        intent = state.intent
        if intent is None or not intent.awaits_customer:
            return
        self._set_status(OrderStatus.AWAITING_AUTHENTICATION)
        wait = state.options.authentication_wait
        started = workflow.now()
        deadline, remind_at = started + wait, started + wait / 2
        link, by = intent.authentication_url or "", _when(deadline)
        order = state.order
        await self._email(
            Step.AUTHENTICATION_EMAIL, emails.authentication_required(order, link, by)
        )
        answer = await self._follow(intent.id, remind_at)
        if answer is None:
            reminder = emails.authentication_reminder(order, link, by)
            await self._email(Step.AUTHENTICATION_REMINDER_EMAIL, reminder)
            answer = await self._follow(intent.id, deadline)
        if answer is None:
            raise OrderStopped(
                OrderStatus.CANCELLED, f"cancelled: {NOT_AUTHENTICATED}", NOT_AUTHENTICATED
            )
        if not (answer.authorized or answer.charged):
            raise OrderStopped(
                OrderStatus.CANCELLED, f"cancelled: {CANCELED_AT_GATEWAY}", CANCELED_AT_GATEWAY
            )
        state.intent = answer

    async def _follow(self, intent_id: str, until: datetime) -> PaymentIntent | None:
        """The intent once the customer has answered, or None if ``until`` came first.

        The deadline is a durable timer of the order's, not the activity's timeout: the reads
        go on (retried by the step's policy) until the timer fires, then are cancelled. A
        gateway's event (``wake``) starts the reads over at once. A decline stops the order
        (the step's policy); a cancel too. Any other failure asks an operator, whose retry
        asks again.
        """
        while (left := until - workflow.now()) > timedelta(0):
            try:
                return await read_until_woken(lambda: self._ask(intent_id, left), self._wake, left)
            except TimeoutError:
                return None
            except ActivityError as err:
                await self._steps.ask_operator(
                    Step.AUTHENTICATION, f"3-D Secure check: {err.cause}"
                )
        return None

    async def _ask(self, intent_id: str, left: timedelta) -> PaymentIntent:
        """Read the intent until the customer has answered (retried within ``left`` and more)."""
        return await self._steps.call(
            Step.AUTHENTICATION,
            PaymentActivities.follow_authentication,
            FollowAuthenticationRequest,
            intent_id=intent_id,
            summary=f"3-D Secure of {intent_id}",
            describe=lambda intent: f"{intent.id} {intent.status}",
            escalate=False,
            budget=left + BUDGET_SLACK,
            wake=self._wake,
        )


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"
