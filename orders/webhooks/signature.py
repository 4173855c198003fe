"""Signing and verifying webhook bodies, in the style of Stripe's ``Stripe-Signature``.

Header: ``Warehouse-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`` where each ``v1`` is
``HMAC-SHA256(secret, f"{t}.{raw body}")`` in lowercase hex, one per secret the sender signs
with. The receiver accepts the call when any ``v1`` matches any of its secrets (compared in
constant time) and ``t`` is within its tolerance of its own clock, so a captured call cannot be
replayed later and a secret can be rotated without downtime. Unknown schemes (``v0=...``) are
ignored, as Stripe's libraries do.
"""

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

SCHEME = "v1"
MAX_HEADER_LENGTH = 4096
"""A longer header is malformed: no honest sender needs more than a few signatures."""


class SignatureFailure(StrEnum):
    """Why a signature was refused; the receiver's error code and metric label."""

    MISSING = "signature_missing"
    MALFORMED = "signature_malformed"
    STALE = "timestamp_out_of_tolerance"
    MISMATCH = "signature_mismatch"


class SignatureError(Exception):
    """The call is not from the warehouse, or not now; ``reason`` says which check failed."""

    def __init__(self, reason: SignatureFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ParsedHeader:
    """A signature header's timestamp and its ``v1`` signatures."""

    timestamp: int
    signatures: tuple[str, ...]


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[str], body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body``: ``t=...`` then one ``v1=...`` per secret."""
    if not secrets:
        raise ValueError("signing needs at least one secret")
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"{SCHEME}={compute(secret, t, body)}" for secret in secrets)])


def parse(header: str | None) -> ParsedHeader:
    """Split a header into its timestamp and ``v1`` signatures; ``SignatureError`` if unusable."""
    if header is None or not header.strip():
        raise SignatureError(SignatureFailure.MISSING, "no signature header")
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureError(SignatureFailure.MALFORMED, "the signature header is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError(SignatureFailure.MALFORMED, "the signature header is garbled")
        if name == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise SignatureError(
                    SignatureFailure.MALFORMED, "the signature's timestamp is not one number"
                )
            timestamp = int(value)
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError(SignatureFailure.MALFORMED, "the signature header has no timestamp")
    if not signatures:
        raise SignatureError(SignatureFailure.MALFORMED, f"the signature header has no {SCHEME}")
    return ParsedHeader(timestamp, tuple(signatures))


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    tolerance_s: float,
    now: float | None = None,
) -> int:
    """Check ``header`` against ``body``; return its timestamp, or raise ``SignatureError``.

    The signature is checked before the timestamp's age, so a forged call always reads as
    forged; every comparison is constant time (``hmac.compare_digest``) and every candidate is
    compared, so the time taken does not say which secret or signature came close.
    """
    parsed = parse(header)
    expected = [compute(secret, parsed.timestamp, body) for secret in secrets]
    matched = False
    for signature in parsed.signatures:
        for candidate in expected:
            # Compared as bytes: a non-ASCII str would make compare_digest raise.
            matched |= hmac.compare_digest(candidate.encode(), signature.encode())
    if not matched:
        raise SignatureError(SignatureFailure.MISMATCH, "no signature matches the body")
    age = (time.time() if now is None else now) - parsed.timestamp
    if abs(age) > tolerance_s:
        raise SignatureError(
            SignatureFailure.STALE,
            f"the signature's timestamp is {abs(age):.0f}s "
            f"{'old' if age > 0 else 'in the future'}; at most {tolerance_s:.0f}s is accepted",
        )
    return parsed.timestamp
