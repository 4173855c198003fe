"""The ceiling's six activities: the order's steps with nothing behind them.

See ``tools.bench.ceiling``.

Each returns at once, so what the ceiling costs is Temporal's own work per order: the workflow
tasks, activity tasks, events and round trips of the naive order shape.
"""

from temporalio import activity

CEILING_TASK_QUEUE = "bench-ceiling"
"""The ceiling worker's own task queue, so its work never mixes with the real worker's."""


@activity.defn(name="ceiling_create_payment_intent")
async def create_payment_intent(order_id: str) -> str:
    """Stands in for creating the payment intent."""
    return f"pi_{order_id}"


@activity.defn(name="ceiling_authorize_payment")
async def authorize_payment(order_id: str) -> str:
    """Stands in for authorizing the card."""
    return f"pi_{order_id}"


@activity.defn(name="ceiling_capture_payment")
async def capture_payment(order_id: str) -> str:
    """Stands in for capturing the payment (the money moves)."""
    return f"ch_{order_id}"


@activity.defn(name="ceiling_send_confirmation_email")
async def send_confirmation_email(order_id: str) -> str:
    """Stands in for the order confirmation email."""
    return f"em_confirmation_{order_id}"


@activity.defn(name="ceiling_send_picklist")
async def send_picklist(order_id: str) -> str:
    """Stands in for sending the picklist to the warehouse."""
    return f"pl_{order_id}"


@activity.defn(name="ceiling_send_shipped_email")
async def send_shipped_email(order_id: str) -> str:
    """Stands in for the shipped email."""
    return f"em_shipped_{order_id}"


ALL = (
    create_payment_intent,
    authorize_payment,
    send_picklist,
    capture_payment,
    send_confirmation_email,
    send_shipped_email,
)
"""In the order's story: everything up to the confirmation email, then the shipped email."""
