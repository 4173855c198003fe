"""ISO 4217 currencies and their minor units."""

# Active ISO 4217 codes with two decimal places (the common case).
_TWO_DECIMALS = """
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR
LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD
PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC
SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
""".split()

_OTHER_EXPONENTS = {
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}

MINOR_UNIT_EXPONENT: dict[str, int] = {**dict.fromkeys(_TWO_DECIMALS, 2), **_OTHER_EXPONENTS}
"""Currency code -> number of decimal places of its minor unit."""


def format_money(amount_minor: int, currency: str) -> str:
    """Render an integer amount in minor units for people, e.g. ``1999, "USD"`` -> ``19.99 USD``."""
    exponent = MINOR_UNIT_EXPONENT[currency]
    if exponent == 0:
        return f"{amount_minor} {currency}"
    units, minor = divmod(amount_minor, 10**exponent)
    return f"{units}.{minor:0{exponent}d} {currency}"
