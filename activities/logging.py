"""One log line per completed step, always with the order id."""

import logging

from temporalio import activity

from orders.domain.status import Step

logger = logging.getLogger("orders")


def log_step(order_id: str, step: Step, outcome: str) -> None:
    """Log a step's outcome as ``order-42 payment-confirm: charged ch_123 (attempt 2)``."""
    logger.info("%s %s: %s (attempt %d)", order_id, step.value, outcome, activity.info().attempt)
