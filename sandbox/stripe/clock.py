"""The gateway's clock: what Stripe does on its own as time passes, without a request.

Authorizations expire at their ``capture_before`` (``payment_intents.expire_due``) and pending
refunds settle when due (``refunds.settle_due``). Both also run before any request reads the
objects, so an answer is never stale; this loop makes the ledger catch up when nobody asks.
"""

import asyncio
import logging

from sandbox.ledger import Ledger
from sandbox.stripe import payment_intents, refunds

TICK_S = 0.25
"""How often the clock looks for what is due: well under the shortest window a test sets."""

log = logging.getLogger(__name__)


def tick(ledger: Ledger) -> None:
    """Expire the authorizations and settle the refunds that are due now."""
    payment_intents.expire_due(ledger.db)
    refunds.settle_due(ledger.db)


async def run(ledger: Ledger) -> None:
    """Tick until cancelled; a failed tick is logged and tried again at the next."""
    while True:
        try:
            tick(ledger)
        except Exception:
            log.exception("gateway clock: a tick failed; trying again")
        await asyncio.sleep(TICK_S)
