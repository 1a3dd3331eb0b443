"""ISO 4217 currency codes and the number of decimal digits of their minor unit.

The table is kept by hand. Its data is ISO 4217 List One (current currencies
and funds) with publication date 2026-01-01, as published by SIX Group, the
ISO 4217 maintenance agency, in `list-one.xml`. It contains every entry of that
list whose minor unit is a number. Entries whose minor unit is "N.A." are left
out, because nothing can be spent in them: precious metals (XAU, XAG, XPT,
XPD), bond market units (XBA to XBD), XDR, XSU, XUA, the test code XTS and the
no-currency code XXX. The list of 2026-01-01 no longer holds codes withdrawn
before that date, such as ANG, BGN, CUC, HRK, SLL and ZWL.

When ISO publishes an amendment, edit the table and the date above.
"""

from __future__ import annotations

# fmt: off
_ZERO_DIGITS = (
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
    "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF",
)
_THREE_DIGITS = ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")
_FOUR_DIGITS = ("CLF", "UYW")
_TWO_DIGITS = (
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM",
    "BBD", "BDT", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP",
    "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CNY", "COP", "COU",
    "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB",
    "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD",
    "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES",
    "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL",
    "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR",
    "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD",
    "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS",
    "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP",
    "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "USN", "UYU", "UZS", "VED",
    "VES", "WST", "XAD", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG",
)
# fmt: on

#: Minor-unit exponent of every supported currency: 2 means 1/100 of a unit.
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_ZERO_DIGITS, 0),
    **dict.fromkeys(_TWO_DIGITS, 2),
    **dict.fromkeys(_THREE_DIGITS, 3),
    **dict.fromkeys(_FOUR_DIGITS, 4),
}


class UnknownCurrencyError(ValueError):
    """A currency code that is not in the ISO 4217 table above."""

    reason = "INVALID_CURRENCY_CODE"

    def __init__(self, code: str) -> None:
        if code.upper() in EXPONENTS and code != code.upper():
            hint = f"currency codes are upper case; use {code.upper()!r}"
        else:
            hint = "use an active ISO 4217 code such as 'EUR', 'USD' or 'JPY'"
        super().__init__(f"unknown currency code {code!r}: {hint}")
        self.code = code


def exponent(code: str) -> int:
    """Return the number of decimal digits of the currency's minor unit.

    Raises:
      UnknownCurrencyError: `code` is not an active ISO 4217 code with a
        minor unit. Codes are case-sensitive, like in `google.type.Money`.
    """
    try:
        return EXPONENTS[code]
    except KeyError:
        raise UnknownCurrencyError(code) from None
