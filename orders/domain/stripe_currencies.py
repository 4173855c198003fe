"""Stripe's rules for a charge's amount: the currencies it charges in, its scale, its limits.

The one table of these rules: the placement rule (``charge_refusal``, called before an order
starts), the payment activity (``to_stripe_amount``, the one conversion of an order's amount
into what goes to the gateway) and the sandbox gateway (``stripe_refusal``, what it answers to
``POST /v1/payment_intents``) all read it here.

Sources, Stripe's own documentation (read in December 2026 as stored copies of the pages):

- "Supported currencies", https://docs.stripe.com/currencies (its Markdown export,
  https://docs.stripe.com/currencies.md): the presentment currencies a card can be charged in
  (``SUPPORTED``, as the page lists them for a US account), "Zero-decimal currencies"
  (``ZERO_DECIMAL``), "Special cases" (ISK, HUF, TWD, UGX) and "Minimum and maximum charge
  amounts" (``MINIMUM_CHARGE``, ``MAX_CHARGE``).
- "Three-decimal currencies" (BHD, JOD, KWD, OMR, TND: "these API calls require the
  least-significant (last) digit to be 0 ... 5.124 KWD must be rounded to 5120 or 5130"), on
  the same page as rendered for accounts that can charge them (``?presentment-currency=AE``)
  and in the archived page https://web.archive.org/web/20220618095455/https://stripe.com/en-mt/docs/currencies
  (the Markdown export leaves the section out).
- "Deprecation of fractional ISK charges and refunds",
  https://support.stripe.com/questions/deprecation-of-fractional-isk-charges-and-refunds:
  Stripe's answer to an ISK amount not divisible by 100 (``invalid_charge_amount_no_decimal_
  compatible``, the message in ``stripe_refusal``).
- Stripe's answers as people reported them: ``amount_too_small`` "Amount must be at least
  €0.50 eur" (github.com/EuroPython/epcon/issues/1259); "Invalid currency: zzz. Stripe
  currently supports these currencies: usd, aed, ..." on parameter ``currency``
  (github.com/lukec/stripe-perl/issues/156); 100 UGX sent, 1.00 UGX charged
  (github.com/odoo/odoo/pull/227688). Stripe's code for a three-decimal amount not ending in
  0 is not documented: ``parameter_invalid_integer`` here.

What the table says, and how it is read here:

- Stripe's scale is ISO 4217's (``orders.domain.currencies``) except for three currencies. ISK
  and UGX
  are whole units in ISO (exponent 0), but Stripe takes them as two-decimal amounts whose last
  two digits are ``00`` ("to charge 5 ISK, provide an amount value of 500"). MGA is two-decimal
  in ISO but in Stripe's zero-decimal list: Stripe charges whole ariary. UGX is in Stripe's
  zero-decimal list too, contradicting its special case; the special case is what the API does
  (a UGX amount of 100 is charged as 1.00 UGX), so UGX is read as ISK is.
- HUF and TWD are special cases for payouts only: charges are two-decimal, as in ISO.
- The minimum charge depends on the settlement currency. The table's minimum of a currency is
  applied to charges in that currency (an account that settles in it); a charge in a currency
  without a published minimum converts to the settlement currency at the day's rate, which the
  shop cannot know when an order is placed, so no minimum is applied to it here or in the
  sandbox: Stripe may still refuse such a charge as ``amount_too_small``, at the order's
  payment-intent step, before anything is authorized.
- The maximum is eight digits in Stripe's minor units for every currency: the PaymentIntent API
  reference ("The amount value supports up to eight digits") and the page's rule for all
  payment methods. The page now allows more digits for some card payments; eight fits all.
"""

from dataclasses import dataclass
from enum import StrEnum

from orders.domain.currencies import MINOR_UNIT_EXPONENT, format_money

SUPPORTED: frozenset[str] = frozenset(
    """
    USD AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CVE CZK DJF DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL GIP
    GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR ISK JMD JOD JPY KES KGS KHR KMF KRW KWD KYD KZT
    LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
    NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SEK SGD SHP SLE SOS SRD
    STD SZL THB TJS TND TOP TRY TTD TWD TZS UAH UGX UYU UZS VND VUV WST XAF XCD XOF XPF YER ZAR
    ZMW
    """.split()
)
"""Stripe's presentment currencies for card payments (upper case here, lower case on the wire).
Some are no longer ISO 4217 codes (ANG, STD), so no order can be placed in them anyway."""

ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF".split())
"""Stripe's zero-decimal currencies: the amount is in whole units (UGX: see ``WHOLE_UNITS``)."""
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())
"""Stripe's three-decimal currencies: the amount's last digit must be 0."""
WHOLE_UNITS = frozenset({"ISK", "UGX"})
"""Stripe's special cases charged in whole units written as two-decimal amounts (``500`` is
5 ISK): the amount must be divisible by 100."""

MINIMUM_CHARGE: dict[str, int] = {
    "USD": 50, "AED": 200, "ARS": 50, "AUD": 50, "BRL": 50, "CAD": 50, "CHF": 50, "COP": 50,
    "CZK": 1500, "DKK": 250, "EUR": 50, "GBP": 30, "HKD": 400, "HUF": 17500, "IDR": 50,
    "ILS": 50, "INR": 50, "JPY": 50, "KRW": 50, "MXN": 1000, "MYR": 200, "NOK": 300, "NZD": 50,
    "PHP": 50, "PLN": 200, "RON": 200, "RUB": 50, "SEK": 300, "SGD": 50, "THB": 1000, "ZAR": 50,
}  # fmt: skip
"""Stripe's minimum charge per settlement currency, in Stripe's minor units (0.50 USD, 50 JPY,
175.00 HUF...)."""
MAX_CHARGE = 99_999_999
"""Stripe's largest amount, in its minor units whatever the currency: eight digits."""


class ChargeRule(StrEnum):
    """The rule of Stripe's that an amount breaks; named in every refusal."""

    UNSUPPORTED_CURRENCY = "currency Stripe does not support"
    MINIMUM = "below Stripe's minimum charge"
    MAXIMUM = "above Stripe's maximum charge"
    THREE_DECIMAL = "three-decimal amount whose last digit is not 0"
    WHOLE_UNITS = "fraction of a currency Stripe charges in whole units"


@dataclass(frozen=True)
class StripeRefusal:
    """Stripe's answer to an amount it refuses: the rule, and the error as Stripe words it."""

    rule: ChargeRule
    code: str | None
    param: str
    message: str


def stripe_exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit in Stripe's API (ISK and UGX: 2, MGA: 0)."""
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    return 3 if code in THREE_DECIMAL else 2


def _step(code: str) -> int:
    """What every amount in ``code`` must be a multiple of, in Stripe's minor units."""
    if code in THREE_DECIMAL:
        return 10
    return 100 if code in WHOLE_UNITS else 1


def _scale_shift(code: str) -> int:
    """Stripe's decimal places minus ISO's for ``code`` (0 unless both list it)."""
    iso = MINOR_UNIT_EXPONENT.get(code)
    return 0 if iso is None or code not in SUPPORTED else stripe_exponent(code) - iso


def _shifted(amount: int, shift: int) -> int:
    """``amount`` times ``10**shift``, exactly; ``ValueError`` if that leaves a fraction."""
    factor: int = 10 ** abs(shift)
    if shift >= 0:
        return amount * factor
    whole, fraction = divmod(amount, factor)
    if fraction:
        raise ValueError(f"{amount} is not a multiple of {factor}")
    return whole


def to_stripe_amount(amount: int, currency: str) -> int:
    """An amount in the order's minor units (ISO 4217) in Stripe's: what goes to the gateway.

    Exact: 5 ISK (``5``) is ``500``, 5.00 MGA (``500``) is ``5``, any other currency unchanged.
    Raises ``ValueError`` for an amount Stripe's scale cannot hold (a fraction of an ariary);
    ``charge_refusal`` refuses such an order before it starts.
    """
    return _shifted(amount, _scale_shift(currency.upper()))


def from_stripe_amount(amount: int, currency: str) -> int:
    """An amount in Stripe's minor units in the order's (ISO 4217): the inverse of the above.

    Raises ``ValueError`` for an amount Stripe itself refuses to charge (1.50 ISK).
    """
    return _shifted(amount, -_scale_shift(currency.upper()))


def _stripe_major(amount: int, code: str) -> str:
    """An amount in Stripe's minor units as Stripe writes it in a message: ``0.50``, ``50``."""
    exponent = stripe_exponent(code)
    if exponent == 0:
        return f"{amount:,}"
    units, minor = divmod(amount, 10**exponent)
    return f"{units:,}.{minor:0{exponent}d}"


def stripe_refusal(amount: int, currency: str) -> StripeRefusal | None:
    """Why Stripe refuses a charge of ``amount`` (Stripe's minor units) in ``currency``.

    ``None`` when it takes it. The message and code are Stripe's (``amount_too_small``:
    "Amount must be at least €0.50 eur", without the currency symbol here).
    """
    code = currency.upper()
    if code not in SUPPORTED:
        supported = ", ".join(["usd", *sorted(c.lower() for c in SUPPORTED - {"USD"})])
        message = (
            f"Invalid currency: {currency.lower()[:20]}. Stripe currently supports these "
            f"currencies: {supported}"
        )
        return StripeRefusal(ChargeRule.UNSUPPORTED_CURRENCY, None, "currency", message)
    if amount > MAX_CHARGE:
        message = f"Amount must be no more than {_stripe_major(MAX_CHARGE, code)} {code.lower()}"
        return StripeRefusal(ChargeRule.MAXIMUM, "amount_too_large", "amount", message)
    minimum = MINIMUM_CHARGE.get(code, 1)  # without one of its own: see the module's docstring
    if amount < minimum:
        message = f"Amount must be at least {_stripe_major(minimum, code)} {code.lower()}"
        return StripeRefusal(ChargeRule.MINIMUM, "amount_too_small", "amount", message)
    if amount % _step(code) == 0:
        return None
    if code in WHOLE_UNITS:
        message = (
            f"Invalid amount. Currency {code} has become effectively zero-decimal and charged "
            "amounts must be evenly divisible by 100. See "
            "https://stripe.com/docs/currencies#special-cases for more information."
        )
        return StripeRefusal(
            ChargeRule.WHOLE_UNITS, "invalid_charge_amount_no_decimal_compatible", "amount", message
        )
    message = (
        f"Invalid amount. Currency {code} is a three-decimal currency: the amount's last digit "
        "must be 0 (round to the nearest ten). See https://stripe.com/docs/currencies#three-decimal"
        " for more information."
    )
    return StripeRefusal(ChargeRule.THREE_DECIMAL, "parameter_invalid_integer", "amount", message)


def charge_refusal(amount: int, currency: str) -> str | None:
    """Why Stripe would refuse to charge ``amount`` (the order's minor units) of ``currency``.

    One line naming the rule and how to fix the order; ``None`` when Stripe charges it. Called
    where an order is placed, before anything starts.
    """
    code = currency.upper()
    shown = format_money(amount, code) if code in MINOR_UNIT_EXPONENT else f"{amount} {code}"
    prefix = f"the total {shown} cannot be charged"
    try:
        charged = to_stripe_amount(amount, code)
    except ValueError:
        unit = format_money(10 ** MINOR_UNIT_EXPONENT[code], code)
        return (
            f"{prefix} ({ChargeRule.WHOLE_UNITS}): Stripe charges {code} in whole units; "
            f"make the total a multiple of {unit}"
        )
    refusal = stripe_refusal(charged, code)
    if refusal is None:
        return None
    return f"{prefix} ({refusal.rule}): {_fix(refusal.rule, charged, code)}"


def _fix(rule: ChargeRule, charged: int, code: str) -> str:
    """How to change an order whose amount (``charged``, Stripe's units) breaks ``rule``."""
    if rule == ChargeRule.UNSUPPORTED_CURRENCY:
        return "place the order in a currency Stripe supports, such as USD, EUR or GBP"
    if rule == ChargeRule.MAXIMUM:
        largest = from_stripe_amount(MAX_CHARGE - MAX_CHARGE % _step(code), code)
        return f"the most one payment can be is {format_money(largest, code)}; split the order"
    if rule == ChargeRule.MINIMUM:
        least = from_stripe_amount(MINIMUM_CHARGE.get(code, 1), code)
        return f"Stripe charges at least {format_money(least, code)}; raise the total to that"
    if rule == ChargeRule.THREE_DECIMAL:
        lower = charged - charged % 10
        options = " or ".join(format_money(n, code) for n in (lower, lower + 10))
        return (
            f"Stripe takes {code} amounts in tens of its minor unit; round the total to {options}"
        )
    return f"Stripe charges {code} in whole units; make the total a whole number of {code}"
