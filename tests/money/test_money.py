from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expense_service.currencies import UnknownCurrencyError
from expense_service.money import (
    MAX_UNITS,
    MoneyError,
    format_amount,
    from_minor_units,
    parse_decimal_amount,
    to_decimal,
    to_minor_units,
)

CURRENCIES = ["JPY", "USD", "BHD", "CLF"]


@pytest.mark.parametrize(
    ("units", "nanos", "code", "minor"),
    [
        (1, 750_000_000, "USD", 175),
        (-1, -750_000_000, "USD", -175),
        (0, -10_000_000, "USD", -1),
        (85, 0, "JPY", 85),
        (-560, 0, "JPY", -560),
        (1, 5_000_000, "BHD", 1005),
        (0, -1_000_000, "BHD", -1),
        (0, 0, "EUR", 0),
    ],
)
def test_to_minor_units_converts_money(units, nanos, code, minor):
    assert to_minor_units(units, nanos, code) == minor


@pytest.mark.parametrize(
    ("units", "nanos", "code"),
    [(1, 5_000_000, "USD"), (0, 500_000_000, "JPY"), (0, 1, "BHD")],
)
def test_to_minor_units_rejects_digits_below_minor_unit(units, nanos, code):
    with pytest.raises(MoneyError) as caught:
        to_minor_units(units, nanos, code)

    assert caught.value.reason == "AMOUNT_TOO_PRECISE"
    assert code in str(caught.value)
    assert "exponent" in str(caught.value)


def test_to_minor_units_message_names_value():
    with pytest.raises(MoneyError, match=r"1\.005 USD.*exponent 2"):
        to_minor_units(1, 5_000_000, "USD")


@pytest.mark.parametrize(
    ("units", "nanos"),
    [(1, -1), (-1, 1), (0, 1_000_000_000), (0, -1_000_000_000)],
)
def test_to_minor_units_rejects_invalid_nanos(units, nanos):
    with pytest.raises(MoneyError) as caught:
        to_minor_units(units, nanos, "USD")

    assert caught.value.reason == "INVALID_MONEY"
    assert f"nanos={nanos}" in str(caught.value)


def test_to_minor_units_rejects_unknown_currency():
    with pytest.raises(UnknownCurrencyError):
        to_minor_units(1, 0, "ABC")


@given(st.sampled_from(CURRENCIES), st.integers(-(10**15), 10**15))
def test_from_minor_units_round_trips(code, minor):
    units, nanos = from_minor_units(minor, code)

    assert to_minor_units(units, nanos, code) == minor
    assert -999_999_999 <= nanos <= 999_999_999
    assert units * nanos >= 0


def test_from_minor_units_follows_sign_rule():
    assert from_minor_units(-175, "USD") == (-1, -750_000_000)
    assert from_minor_units(-5, "BHD") == (0, -5_000_000)
    assert from_minor_units(9500, "JPY") == (9500, 0)


def test_from_minor_units_rejects_int64_overflow():
    with pytest.raises(MoneyError) as caught:
        from_minor_units((MAX_UNITS + 1) * 100, "USD")

    assert caught.value.reason == "AMOUNT_OUT_OF_RANGE"


def test_to_decimal_keeps_currency_digits():
    assert to_decimal(9500, "USD") == Decimal("95.00")
    assert str(to_decimal(9500, "USD")) == "95.00"
    assert str(to_decimal(-1, "BHD")) == "-0.001"
    assert format_amount(9500, "JPY") == "9500"
    assert format_amount(-1, "USD") == "-0.01"


@pytest.mark.parametrize(
    ("text", "code", "minor"),
    [
        ("85", "USD", 8500),
        ("85.0", "USD", 8500),
        ("85.00", "USD", 8500),
        ("85.000", "USD", 8500),
        ("-560", "USD", -56000),
        ("0.01", "USD", 1),
        ("-0.5", "USD", -50),
        ("85.0", "JPY", 85),
        ("1.005", "BHD", 1005),
        ("0", "EUR", 0),
    ],
)
def test_parse_decimal_amount_accepts_plain_decimals(text, code, minor):
    assert parse_decimal_amount(text, code) == minor


@pytest.mark.parametrize(
    ("text", "code"), [("1.005", "USD"), ("1.5", "JPY"), ("0.0001", "BHD")]
)
def test_parse_decimal_amount_rejects_extra_digits(text, code):
    with pytest.raises(MoneyError) as caught:
        parse_decimal_amount(text, code)

    assert caught.value.reason == "AMOUNT_TOO_PRECISE"
    assert text in str(caught.value)


@pytest.mark.parametrize(
    "text", ["", "1,234.50", "+5", " 5", "5 ", "1e3", ".5", "5.", "--5", "NaN", "١٢"]
)
def test_parse_decimal_amount_rejects_other_text(text):
    with pytest.raises(MoneyError) as caught:
        parse_decimal_amount(text, "USD")

    assert caught.value.reason == "INVALID_AMOUNT_TEXT"


@pytest.mark.parametrize("sign", ["", "-"])
def test_parse_decimal_amount_rejects_thousands_of_digits(sign):
    text = sign + "9" * 5000 + ".00"

    with pytest.raises(MoneyError) as caught:
        parse_decimal_amount(text, "EUR")

    assert caught.value.reason == "AMOUNT_OUT_OF_RANGE"
    assert "5,000 digits before the decimal point" in str(caught.value)
    assert f"({len(text):,} characters)" in str(caught.value)
    assert len(str(caught.value)) < 300


def test_parse_decimal_amount_at_most_int64_digits():
    assert parse_decimal_amount("9" * 19, "JPY") == int("9" * 19)
    with pytest.raises(MoneyError) as caught:
        parse_decimal_amount("1" + "0" * 19, "JPY")
    assert caught.value.reason == "AMOUNT_OUT_OF_RANGE"


def test_parse_decimal_amount_ignores_leading_and_trailing_zeros():
    text = "0" * 5000 + "12.5" + "0" * 5000

    assert parse_decimal_amount(text, "EUR") == 1250


def test_parse_decimal_amount_shortens_long_text_in_message():
    text = "1." + "0" * 5000 + "1"

    with pytest.raises(MoneyError) as caught:
        parse_decimal_amount(text, "EUR")

    assert caught.value.reason == "AMOUNT_TOO_PRECISE"
    assert "(5,003 characters)" in str(caught.value)
    assert len(str(caught.value)) < 300


def test_parse_decimal_amount_shortens_invalid_text():
    text = "x" * 5000

    with pytest.raises(MoneyError) as caught:
        parse_decimal_amount(text, "EUR")

    assert caught.value.reason == "INVALID_AMOUNT_TEXT"
    assert "(5,002 characters)" in str(caught.value)
    assert len(str(caught.value)) < 300


@given(st.sampled_from(CURRENCIES), st.integers(-(10**12), 10**12))
def test_parse_decimal_amount_reads_formatted_amount(code, minor):
    assert parse_decimal_amount(format_amount(minor, code), code) == minor
