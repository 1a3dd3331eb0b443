import pytest

from expense_service.currencies import (
    ACTIVE_EXPONENTS,
    EXPONENTS,
    HISTORIC_EXPONENTS,
    UnknownCurrencyError,
    exponent,
)


@pytest.mark.parametrize(
    ("code", "digits"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("ISK", 0),
        ("XOF", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("OMR", 3),
        ("JOD", 3),
        ("TND", 3),
        ("IQD", 3),
        ("LYD", 3),
        ("CLF", 4),
        ("XCG", 2),
        ("ZWG", 2),
    ],
)
def test_exponent_of_known_code(code, digits):
    assert exponent(code) == digits


@pytest.mark.parametrize(
    ("code", "digits"),
    [
        ("HRK", 2),
        ("BGN", 2),
        ("ANG", 2),
        ("DEM", 2),
        ("FRF", 2),
        ("LTL", 2),
        ("ZWL", 2),
        ("ITL", 0),
        ("ESP", 0),
        ("GRD", 0),
        ("BYR", 0),
        ("TRL", 0),
    ],
)
def test_exponent_of_withdrawn_code(code, digits):
    assert exponent(code) == digits


@pytest.mark.parametrize(
    "code", ["XAU", "XXX", "XTS", "XDR", "XFO", "XEU", "AOR", "SUR", "", "US"]
)
def test_exponent_rejects_code_without_minor_unit(code):
    with pytest.raises(UnknownCurrencyError) as caught:
        exponent(code)

    assert repr(code) in str(caught.value)
    assert caught.value.reason == "INVALID_CURRENCY_CODE"


def test_exponent_lower_case_hints_at_upper_case():
    with pytest.raises(UnknownCurrencyError, match="use 'USD'"):
        exponent("usd")


def test_exponent_lower_case_withdrawn_hints_at_upper_case():
    with pytest.raises(UnknownCurrencyError, match="use 'HRK'"):
        exponent("hrk")


def test_unknown_code_message_names_withdrawn_codes():
    with pytest.raises(UnknownCurrencyError) as caught:
        exponent("ABC")

    assert "'ABC'" in str(caught.value)
    assert "withdrawn one such as 'DEM'" in str(caught.value)


def test_active_and_withdrawn_tables_disjoint():
    assert not set(ACTIVE_EXPONENTS) & set(HISTORIC_EXPONENTS)
    assert EXPONENTS == {**ACTIVE_EXPONENTS, **HISTORIC_EXPONENTS}


def test_table_codes_are_three_upper_case_letters():
    for code in EXPONENTS:
        assert len(code) == 3
        assert code.isascii()
        assert code.isupper()
