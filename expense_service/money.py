"""Exact conversions between `google.type.Money` values and integer minor units.

An amount is held as an int of minor units of its currency (cents for USD,
yen for JPY, fils for BHD), so that sums are exact. This module converts it
from and to the `units` and `nanos` of `google.type.Money`, to a `Decimal`
for messages, and from the decimal text an importer reads. It never uses
float.
"""

from __future__ import annotations

import re
from decimal import Decimal

from expense_service.currencies import exponent

NANOS_PER_UNIT = 1_000_000_000
MAX_NANOS = NANOS_PER_UNIT - 1
# `google.type.Money.units` is an int64.
MIN_UNITS = -(2**63)
MAX_UNITS = 2**63 - 1

# Optional minus, digits, and optionally a point followed by digits. No plus
# sign, spaces, exponent or thousands separators.
_DECIMAL_TEXT = re.compile(r"-?(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?\Z")
# Digits before the decimal point that `google.type.Money.units`, an int64,
# can hold. Checking the count first also keeps longer text away from `int`,
# which raises ValueError past 4300 digits (Python 3.11).
MAX_WHOLE_DIGITS = len(str(MAX_UNITS))
# Text longer than this is cut in the middle when a message shows it.
_MAX_SHOWN_CHARACTERS = 40


class MoneyError(ValueError):
    """An amount that cannot be represented exactly in its currency.

    Attributes:
      reason: UPPER_SNAKE_CASE reason for the ErrorInfo the servicer sends.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def shorten(text: str) -> str:
    """Return `text` for a message, cut in the middle when it is long."""
    if len(text) <= _MAX_SHOWN_CHARACTERS:
        return text
    return f"{text[:20]}...{text[-10:]} ({len(text):,} characters)"


def _describe(units: int, nanos: int) -> str:
    return f"units={units}, nanos={nanos}"


def _too_precise(amount: str, currency_code: str, digits: int) -> MoneyError:
    if digits == 0:
        rule = f"{currency_code} amounts are whole numbers"
    else:
        rule = (
            f"{currency_code} amounts have at most {digits} digits after the "
            "decimal point"
        )
    return MoneyError(
        f"amount {shorten(amount)} {currency_code} has digits below the minor unit of "
        f"{currency_code} (exponent {digits}): {rule}",
        "AMOUNT_TOO_PRECISE",
    )


def to_minor_units(units: int, nanos: int, currency_code: str) -> int:
    """Convert the `units` and `nanos` of a `google.type.Money` to minor units.

    Raises:
      UnknownCurrencyError: `currency_code` is not a known ISO 4217 code.
      MoneyError: `nanos` is out of range, its sign differs from the sign of
        `units`, or the amount has digits below the currency's minor unit
        (such as 1.005 USD).
    """
    digits = exponent(currency_code)
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        raise MoneyError(
            f"invalid amount ({_describe(units, nanos)}): nanos must be between "
            f"-{MAX_NANOS:,} and {MAX_NANOS:,}",
            "INVALID_MONEY",
        )
    if (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        raise MoneyError(
            f"invalid amount ({_describe(units, nanos)}): nanos must have the "
            "same sign as units, so -1.75 is units=-1, nanos=-750000000",
            "INVALID_MONEY",
        )
    nanos_per_minor = 10 ** (9 - digits)
    if nanos % nanos_per_minor:
        amount = Decimal(units) + Decimal(nanos).scaleb(-9)
        raise _too_precise(f"{amount.normalize():f}", currency_code, digits)
    # `int(nanos / n)` would go through float, so divide the absolute value.
    minor_nanos = abs(nanos) // nanos_per_minor
    if nanos < 0:
        minor_nanos = -minor_nanos
    return units * 10**digits + minor_nanos


def from_minor_units(amount_minor: int, currency_code: str) -> tuple[int, int]:
    """Convert minor units to the `(units, nanos)` of a `google.type.Money`.

    The result follows the Money sign rule: -1.75 USD is `(-1, -750000000)`.

    Raises:
      UnknownCurrencyError: `currency_code` is not a known ISO 4217 code.
      MoneyError: the amount does not fit the int64 `units` field.
    """
    digits = exponent(currency_code)
    whole, minor = divmod(abs(amount_minor), 10**digits)
    units = whole if amount_minor >= 0 else -whole
    nanos = minor * 10 ** (9 - digits)
    if amount_minor < 0:
        nanos = -nanos
    if not MIN_UNITS <= units <= MAX_UNITS:
        raise MoneyError(
            f"amount {to_decimal(amount_minor, currency_code)} {currency_code} "
            "is too large for google.type.Money",
            "AMOUNT_OUT_OF_RANGE",
        )
    return units, nanos


def to_decimal(amount_minor: int, currency_code: str) -> Decimal:
    """Return minor units as an exact Decimal with the currency's digits.

    For example 9500 USD is `Decimal("95.00")` and 9500 JPY is
    `Decimal("9500")`.

    Raises:
      UnknownCurrencyError: `currency_code` is not a known ISO 4217 code.
    """
    return Decimal(amount_minor).scaleb(-exponent(currency_code))


def format_amount(amount_minor: int, currency_code: str) -> str:
    """Format minor units as plain decimal text, such as "95.00" or "-0.010"."""
    return f"{to_decimal(amount_minor, currency_code):f}"


def describe_out_of_range(
    amount_minor: int, currency_code: str, low: int, high: int, subject: str
) -> str:
    """Describe an amount outside the range `low` to `high`, in minor units.

    The text names the bound that the amount passes and the whole range of
    `subject`, such as "a settlement amount", both with the currency.
    """
    if amount_minor > high:
        bound = f"larger than the maximum of {format_amount(high, currency_code)}"
    else:
        bound = f"below the minimum of {format_amount(low, currency_code)}"
    return (
        f"amount {format_amount(amount_minor, currency_code)} {currency_code} is "
        f"{bound} {currency_code}; {subject} must be from "
        f"{format_amount(low, currency_code)} to "
        f"{format_amount(high, currency_code)} {currency_code}"
    )


def parse_decimal_amount(text: str, currency_code: str) -> int:
    """Parse decimal text such as "85", "85.0", "85.00" or "-560" to minor units.

    The text is an optional minus sign, digits, and optionally a point and
    more digits. Digits beyond the currency's exponent are accepted only when
    they are zeros: "150.0" is 150 JPY, but "1.5" JPY is rejected.

    Raises:
      UnknownCurrencyError: `currency_code` is not a known ISO 4217 code.
      MoneyError: the text is not a plain decimal number, has more digits
        before the point than `google.type.Money` holds, or has non-zero
        digits below the currency's minor unit.
    """
    digits = exponent(currency_code)
    match = _DECIMAL_TEXT.match(text)
    if match is None:
        raise MoneyError(
            f"invalid amount {shorten(repr(text))}: write a plain decimal number such "
            "as '1234.50' or '-560', without spaces, a plus sign or thousands "
            "separators",
            "INVALID_AMOUNT_TEXT",
        )
    whole = match["whole"].lstrip("0") or "0"
    if len(whole) > MAX_WHOLE_DIGITS:
        raise MoneyError(
            f"amount {shorten(text)} {currency_code} has {len(whole):,} digits "
            f"before the decimal point, and google.type.Money holds at most "
            f"{MAX_WHOLE_DIGITS}; check the amount",
            "AMOUNT_OUT_OF_RANGE",
        )
    fraction = match["fraction"] or ""
    if fraction[digits:].strip("0"):
        raise _too_precise(text, currency_code, digits)
    minor_digits = fraction[:digits].ljust(digits, "0")
    minor = int(whole) * 10**digits + int(minor_digits or "0")
    return -minor if text.startswith("-") else minor
