"""Waiting for the warehouse's shipped report, for days, with the customer kept informed."""

from collections.abc import Awaitable, Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from orders.domain import emails
    from orders.domain.emails import EmailContent
    from orders.domain.models import Shipment
    from orders.domain.status import OrderStatus, Step
    from workflows.state import OrderState
    from workflows.steps import Steps, human, wait_until

SendEmail = Callable[[Step, EmailContent], Awaitable[None]]


async def wait_for_shipment(
    state: OrderState,
    steps: Steps,
    set_status: Callable[[OrderStatus], None],
    send_email: SendEmail,
) -> Shipment:
    """Wait for the shipped report: one delay email if late, an operator if very late."""

    def arrived() -> bool:
        return state.shipment is not None or state.cancel_reason is not None

    async def shipped() -> Shipment:
        await _wait_with_deadlines(state, arrived, set_status, send_email)
        steps.stop_if_cancelled()
        assert state.shipment is not None
        return state.shipment

    shipment = await steps.record(
        Step.SHIPMENT, shipped, lambda s: f"{s.carrier} {s.tracking_number}"
    )
    state.attention_reason, state.attention_step = None, None
    return shipment


async def _wait_with_deadlines(
    state: OrderState,
    arrived: Callable[[], bool],
    set_status: Callable[[OrderStatus], None],
    send_email: SendEmail,
) -> None:
    options = state.options
    waiting_since = workflow.now()
    if await wait_until(arrived, options.shipment_delayed_after):
        return
    set_status(OrderStatus.SHIPMENT_DELAYED)
    await send_email(Step.DELAY_EMAIL, emails.shipment_delayed(state.order))
    remaining = waiting_since + options.shipment_attention_after - workflow.now()
    if await wait_until(arrived, remaining):
        return
    state.attention_step = Step.SHIPMENT
    state.attention_reason = f"not shipped within {human(options.shipment_attention_after)}"
    set_status(OrderStatus.NEEDS_ATTENTION)
    await workflow.wait_condition(arrived)
