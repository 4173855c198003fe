"""Watching the card's authorization until the money is captured: it expires on its own.

A card authorization can be captured only until its ``capture_before`` (Stripe: about 7 days);
then the gateway cancels the intent and the money is gone for the shop. An order whose capture
waits (for an operator, for a warehouse step parked) must never let that pass silently: the
watch warns operators before (a metric, an alert, the deadline in the order's attention
reason) and, when it passes, either authorizes the card again (``OrderOptions.
reauthorize_expired``) or stops the order, which winds down with nothing charged.
"""

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from orders.domain.status import PAYMENT_STEPS, OperatorAction, OrderStatus
    from workflows import metrics
    from workflows.payment import Payment
    from workflows.state import OrderState
    from workflows.steps import OrderStopped, human, wait_until

AUTHORIZATION_EXPIRED = "the card authorization expired before the payment was captured"
"""The cancel reason of an order stopped because its authorization expired."""
AUTHORIZATION_CANCELED = "the card authorization was cancelled at the gateway before the capture"
"""The cancel reason when Stripe's event says the intent was cancelled before its expiry."""


class AuthorizationWatch:
    """Runs beside the order's story from the authorization to the capture."""

    def __init__(
        self,
        state: OrderState,
        payment: Payment,
        cancel: Callable[[str], None],
        stop: Callable[[OrderStopped], None],
    ) -> None:
        self._state, self._payment = state, payment
        self._cancel, self._stop = cancel, stop

    def _moot_or_lost(self) -> bool:
        """Moot, or the gateway said the authorization is gone before its expiry."""
        return self._moot() or self._state.authorization_canceled

    def _lost_because(self) -> str:
        canceled = self._state.authorization_canceled
        return AUTHORIZATION_CANCELED if canceled else AUTHORIZATION_EXPIRED

    def _moot(self) -> bool:
        """The authorization no longer matters: captured, goods gone, or the order stopping."""
        state = self._state
        return (
            state.charge_id is not None
            or state.shipment is not None
            or state.cancel_reason is not None
            or state.winding_down_to is not None
            or state.status.is_final
        )

    async def run(self) -> None:
        """Watch each authorization the order holds until the watch is moot."""
        state = self._state
        while (expires := state.authorization_expiry()) is not None and not self._moot():
            lifetime = expires - workflow.now()
            warning = min(state.options.authorization_warning, lifetime / 2)
            if await wait_until(self._moot_or_lost, lifetime - warning):
                if self._moot():
                    return
            else:
                self._warn(warning)
                lost = await wait_until(self._moot_or_lost, expires - workflow.now())
                if lost and self._moot():
                    return
            metrics.authorization_expired()
            if not state.options.reauthorize_expired:
                self._cancel(self._lost_because())
                return
            if not await self._renew():
                return

    async def _renew(self) -> bool:
        """Authorize the card again once the story holds still; False when that failed.

        The story's next call on the expired intent is refused and parks it for an operator;
        then nothing of the story is in flight, and the new authorization is taken at once.
        """
        state = self._state
        await workflow.wait_condition(lambda: self._moot() or _parked(state))
        if self._moot():
            return False
        try:
            await self._payment.renew()
        except OrderStopped as stop:  # declined this time
            self._stop(stop)
            return False
        except ActivityError as err:
            state.renewal_failure = str(err.cause or err)
            return False
        state.authorization_warned, state.renewal_failure = False, None
        state.authorization_canceled = False
        if state.attention_step in PAYMENT_STEPS:  # refused on the expired intent: go on
            state.operator_action = OperatorAction.RETRY_PAYMENT
        return True

    def _warn(self, left: timedelta) -> None:
        state = self._state
        state.authorization_warned = True
        metrics.authorization_expiring()
        workflow.logger.warning(
            "order %s: its card authorization expires in %s and nothing is captured",
            state.order.id,
            human(left),
        )


def _parked(state: OrderState) -> bool:
    """The story waits for an operator: none of its calls is in flight."""
    return state.status == OrderStatus.NEEDS_ATTENTION and state.winding_down_to is None
