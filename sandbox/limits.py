"""What the sandbox providers accept at most, like real ones: every malformed request is a 4xx.

The limits are the providers' own (the outside world's), each at least what the order model
(``orders.domain.models``) lets through, so an order the shop accepts is never refused here for its
contents. Amounts, quantities and stock are bounded far below SQLite's 64-bit integers, so no
sum or update in the ledger can overflow.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field, StringConstraints

from orders.domain.stripe_currencies import MAX_CHARGE

MAX_BODY_BYTES = 1_000_000
"""A request body larger than this is refused with 413 before it is parsed."""
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
"""Stripe's limit on an ``Idempotency-Key``."""
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"
"""Printable ASCII, no leading or trailing space (HTTP trims those anyway)."""
MAX_AMOUNT = MAX_CHARGE
"""The gateway's largest charge or refund, in its minor units (Stripe's: eight digits)."""
MAX_ID_LENGTH = 200
"""Order ids, resource ids, skus, templates."""
MAX_TEXT_LENGTH = 1000
"""Names, address lines, cities, refund reasons."""
MAX_EMAIL_LENGTH = 254
"""RFC 5321."""
MAX_SUBJECT_LENGTH = 998
"""RFC 5322: the longest line a message may have."""
MAX_MAIL_BODY_LENGTH = 100_000
MAX_QUANTITY = 10_000
"""Units of one sku in one picklist line."""
MAX_PICKLIST_LINES = 1000
MAX_STOCK = 1_000_000_000
"""The most a sku's stock level can be set to."""

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"

Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=_PRINTABLE),
]
"""An id sent in a body: 1 to 200 characters, no control characters."""
ShortText = Annotated[str, StringConstraints(max_length=MAX_TEXT_LENGTH)]
Amount = Annotated[int, Field(gt=0, le=MAX_AMOUNT, description="In minor units (cents).")]

PathId = Annotated[
    str, Path(min_length=1, max_length=MAX_ID_LENGTH, description="The resource's id.")
]
QueryId = Annotated[
    str | None,
    Query(max_length=MAX_ID_LENGTH, description="Only the objects of this order."),
]
