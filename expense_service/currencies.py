"""ISO 4217 currency codes and the number of decimal digits of their minor unit.

The tables are kept by hand. The active table is ISO 4217 List One (current
currencies and funds) with publication date 2026-01-01, as published by SIX
Group, the ISO 4217 maintenance agency, in `list-one.xml`. It contains every
entry of that list whose minor unit is a number. Entries whose minor unit is
"N.A." are left out, because nothing can be spent in them: precious metals
(XAU, XAG, XPT, XPD), bond market units (XBA to XBD), XDR, XSU, XUA, the test
code XTS and the no-currency code XXX.

The historic table keeps withdrawn codes, such as DEM, HRK and BGN, so that
expenses recorded in them, for example in an old Splitwise export, can still
be stored. Its codes are those of ISO 4217 List Three (historic
denominations) of 2026-01-01 that OpenJDK's currency data also lists with a
minor unit (`make/data/currency/CurrencyData.properties`, data version 176:
the `minor0` codes have 0 digits, the others 2). List Three itself gives no
minor units.

When ISO publishes an amendment, edit the tables and the date above. A code
that ISO withdraws moves from the active table to the historic one.
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
# Withdrawn codes. NOTE: these minor units come from OpenJDK's currency data
# alone, because ISO publishes none for withdrawn codes. Codes that OpenJDK
# leaves out are rejected: nearly all withdrawn before 1999, and a few later
# ones such as AOR, ECS, TJR and ZRN.
_HISTORIC_ZERO_DIGITS = (
    "ADP", "BEF", "BYB", "BYR", "ESP", "GRD", "ITL", "LUF", "MGF", "PTE",
    "ROL", "TPE", "TRL",
)
_HISTORIC_TWO_DIGITS = (
    "AFA", "ANG", "ATS", "AYM", "AZM", "BGL", "BGN", "CSD", "CUC", "CYP",
    "DEM", "EEK", "FIM", "FRF", "GHC", "GWP", "HRK", "IEP", "LTL", "LVL",
    "MRO", "MTL", "MZM", "NLG", "RUR", "SDD", "SIT", "SKK", "SLL", "SRG",
    "STD", "TMM", "USS", "VEB", "VEF", "YUM", "ZMK", "ZWD", "ZWL", "ZWN",
    "ZWR",
)
# fmt: on

#: Minor-unit exponent of every active currency: 2 means 1/100 of a unit.
ACTIVE_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_ZERO_DIGITS, 0),
    **dict.fromkeys(_TWO_DIGITS, 2),
    **dict.fromkeys(_THREE_DIGITS, 3),
    **dict.fromkeys(_FOUR_DIGITS, 4),
}
#: Minor-unit exponent of every withdrawn currency that amounts may still use.
HISTORIC_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_HISTORIC_ZERO_DIGITS, 0),
    **dict.fromkeys(_HISTORIC_TWO_DIGITS, 2),
}
#: Minor-unit exponent of every currency that amounts may use.
EXPONENTS: dict[str, int] = {**ACTIVE_EXPONENTS, **HISTORIC_EXPONENTS}


class UnknownCurrencyError(ValueError):
    """A currency code that is in neither ISO 4217 table above."""

    reason = "INVALID_CURRENCY_CODE"

    def __init__(self, code: str) -> None:
        if code.upper() in EXPONENTS and code != code.upper():
            hint = f"currency codes are upper case; use {code.upper()!r}"
        else:
            hint = (
                "use an ISO 4217 code with a minor unit, such as 'EUR', 'USD' "
                "or 'JPY', or a withdrawn one such as 'DEM' or 'HRK'"
            )
        super().__init__(f"unknown currency code {code!r}: {hint}")
        self.code = code


def exponent(code: str) -> int:
    """Return the number of decimal digits of the currency's minor unit.

    Raises:
      UnknownCurrencyError: `code` is in neither table: not an active ISO
        4217 code with a minor unit, and not one of the withdrawn codes kept.
        Codes are case-sensitive, like in `google.type.Money`.
    """
    try:
        return EXPONENTS[code]
    except KeyError:
        raise UnknownCurrencyError(code) from None
