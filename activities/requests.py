"""What every call with an external effect carries.

The order, its idempotency key, and whether to look for the effect at the provider first.
"""

from pydantic import BaseModel


class EffectRequest(BaseModel):
    """The common part of every effect request; the workflow's step runner fills it in."""

    order_id: str
    idempotency_key: str
    adopt_existing: bool = False
    """Set on an operator's retry: an earlier try may have acted without our hearing the answer,
    under another key or under one that has expired since; adopt that effect if the provider
    has it, instead of acting a second time."""
