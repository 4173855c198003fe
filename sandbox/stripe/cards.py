"""Stripe's test payment methods: which tokens decline, which need 3-D Secure, and how.

The same tokens work in Stripe's test mode, so a test order runs unchanged against either.
Any other ``pm_...`` token (``pm_card_visa``, ``pm_card_mastercard``, ...) is approved.
Stripe's 3-D Secure test cards (``AUTHENTICATION_REQUIRED``) are confirmed to
``requires_action``: the customer must authenticate on the page the intent's ``next_action``
names before the card is authorized (or, for 4000 0084 0000 1629, declined).
"""

from __future__ import annotations

from typing import Any, NamedTuple

PAYMENT_METHOD_PATTERN = r"pm_[A-Za-z0-9_]{1,200}"
"""A payment method id as this sandbox takes it (a card number never is one)."""


class Decline(NamedTuple):
    """How a confirm with a declining card fails: Stripe's ``code``, ``decline_code``, message."""

    code: str
    decline_code: str
    message: str


_DECLINED = "Your card was declined."
_INSUFFICIENT = Decline("card_declined", "insufficient_funds", "Your card has insufficient funds.")
_EXPIRED = Decline("expired_card", "expired_card", "Your card has expired.")

DECLINES: dict[str, Decline] = {
    "pm_card_chargeDeclined": Decline("card_declined", "generic_decline", _DECLINED),
    "pm_card_chargeDeclinedInsufficientFunds": _INSUFFICIENT,
    "pm_card_chargeDeclinedExpiredCard": _EXPIRED,
    "pm_card_chargeDeclinedIncorrectCvc": Decline(
        "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."
    ),
    "pm_card_chargeDeclinedFraudulent": Decline("card_declined", "fraudulent", _DECLINED),
    "pm_card_chargeDeclinedProcessingError": Decline(
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    "pm_card_chargeDeclinedLostCard": Decline("card_declined", "lost_card", _DECLINED),
    "pm_card_chargeDeclinedStolenCard": Decline("card_declined", "stolen_card", _DECLINED),
    # The sandbox's own tokens from before it spoke Stripe's API: orders in flight carry them.
    "pm_card_declined": Decline("card_declined", "generic_decline", _DECLINED),
    "pm_card_insufficient_funds": _INSUFFICIENT,
    "pm_card_expired": _EXPIRED,
}


AUTHENTICATION_REQUIRED = frozenset(
    {
        "pm_card_authenticationRequired",  # 4000 0027 6000 3184
        "pm_card_threeDSecure2Required",  # 4000 0000 0000 3220
        "pm_card_threeDSecureRequired",  # 4000 0000 0000 3063
        "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds",  # 4000 0084 0000 1629
    }
)
"""Test payment methods whose every payment needs 3-D Secure, as Stripe's test cards do."""

DECLINES_AFTER_AUTHENTICATION: dict[str, Decline] = {
    "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds": _INSUFFICIENT,
}
"""Cards declined once the customer has authenticated (Stripe: 4000 0084 0000 1629)."""

AUTHENTICATION_REQUIRED_OFF_SESSION = Decline(
    "authentication_required",
    "authentication_required",
    "Your card was declined. This transaction requires authentication.",
)
"""A 3-D Secure card confirmed ``off_session``: the customer is not there to authenticate, so
Stripe declines it instead of asking (``authentication_required``)."""

AUTHENTICATION_FAILURE = "payment_intent_authentication_failure"
"""Stripe's ``last_payment_error.code`` when the customer fails (or abandons) 3-D Secure."""


def decline_for(
    payment_method: str, authenticated: bool = False, off_session: bool = False
) -> Decline | None:
    """The decline a confirm with ``payment_method`` meets; None if the card is approved.

    ``authenticated``: the customer completed 3-D Secure for this payment. ``off_session``:
    the customer is not there, so a card that needs 3-D Secure is declined.
    """
    if authenticated:
        return DECLINES_AFTER_AUTHENTICATION.get(payment_method)
    if off_session and requires_authentication(payment_method):
        return AUTHENTICATION_REQUIRED_OFF_SESSION
    return DECLINES.get(payment_method)


def requires_authentication(payment_method: str) -> bool:
    """Whether a payment with ``payment_method`` waits for the customer's 3-D Secure."""
    return payment_method in AUTHENTICATION_REQUIRED


def no_billing_details() -> dict[str, Any]:
    """Stripe's ``billing_details`` of a card given without any: every field there, null."""
    address = dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state"))
    return {"address": address, "email": None, "name": None, "phone": None}


def payment_method_object(payment_method: str, created: int) -> dict[str, Any]:
    """The PaymentMethod object Stripe embeds in a card error (the fields its schema requires).

    ``created``: when the test token became a payment method (Stripe makes one per use).
    """
    return {
        "id": payment_method,
        "object": "payment_method",
        "billing_details": no_billing_details(),
        "created": created,
        "customer": None,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }
