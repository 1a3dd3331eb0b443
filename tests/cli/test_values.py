"""Parsing of command-line values into API messages, without any server."""

from __future__ import annotations

import pytest
from google.type import money_pb2

from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb2
from splitlog_cli.client import render
from splitlog_cli.client.values import (
    UsageError,
    child_name,
    parse_basis_points,
    parse_category,
    parse_date,
    parse_money,
    parse_participant,
    parse_payers,
    parse_shares,
    resource_name,
)


@pytest.mark.parametrize(
    ("text", "currency", "units", "nanos"),
    [
        ("12.34", "EUR", 12, 340_000_000),
        ("12.3", "EUR", 12, 300_000_000),
        ("-1.75", "USD", -1, -750_000_000),
        ("-0.01", "EUR", 0, -10_000_000),
        ("1500", "JPY", 1500, 0),
        ("1500.00", "JPY", 1500, 0),
        ("1.005", "BHD", 1, 5_000_000),
        ("92233720368547758.07", "EUR", 92233720368547758, 70_000_000),
    ],
)
def test_parse_money_exact(text, currency, units, nanos):
    amount = parse_money(text, currency, "--amount")

    assert amount.currency_code == currency
    assert amount.units == units
    assert amount.nanos == nanos


@pytest.mark.parametrize(
    ("text", "currency", "expected"),
    [
        ("12.345", "EUR", "digits below the minor unit"),
        ("1.5", "JPY", "JPY amounts are whole numbers"),
        ("1,50", "EUR", "plain decimal number"),
        ("1e3", "EUR", "plain decimal number"),
        ("+5", "EUR", "plain decimal number"),
        ("", "EUR", "plain decimal number"),
    ],
)
def test_parse_money_rejects_text(text, currency, expected):
    with pytest.raises(UsageError) as caught:
        parse_money(text, currency, "--amount")

    assert f"invalid value {text!r} for --amount" in str(caught.value)
    assert expected in str(caught.value)


def test_parse_money_names_unknown_currency():
    with pytest.raises(UsageError) as caught:
        parse_money("10", "eur", "--amount")

    assert "invalid value 'eur' for --currency" in str(caught.value)
    assert "'EUR'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "basis_points"),
    [("33.33", 3333), ("25", 2500), ("12.5", 1250), ("100", 10_000), ("0", 0)],
)
def test_parse_basis_points(text, basis_points):
    assert parse_basis_points(text, "--participant") == basis_points


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("33.333", "at most two decimals"),
        ("100.01", "cannot be over 100"),
        ("150", "cannot be over 100"),
        ("-5", "from 0 to 100"),
        ("50%", "without a % sign"),
        ("half", "from 0 to 100"),
    ],
)
def test_parse_basis_points_rejects(text, expected):
    with pytest.raises(UsageError) as caught:
        parse_basis_points(text, "--participant")

    assert f"invalid value {text!r} for --participant" in str(caught.value)
    assert expected in str(caught.value)


def test_parse_shares():
    assert parse_shares("2", "--participant") == 2
    assert parse_shares("0", "--participant") == 0


@pytest.mark.parametrize("text", ["1.5", "-1", "two", "", "2147483648", "²"])
def test_parse_shares_rejects(text):
    with pytest.raises(UsageError) as caught:
        parse_shares(text, "--participant")

    assert f"invalid value {text!r} for --participant" in str(caught.value)
    assert "whole number of shares" in str(caught.value)


def test_participant_equal_has_no_value():
    participant = parse_participant("alice", "equal", "EUR")

    assert participant.user == "users/alice"
    assert participant.WhichOneof("value") is None


def test_participant_exact_amount():
    participant = parse_participant("users/bob=31.67", "exact", "EUR")

    assert participant.user == "users/bob"
    assert participant.exact_amount == money_pb2.Money(
        currency_code="EUR", units=31, nanos=670_000_000
    )


def test_participant_percent_and_remainder():
    given = parse_participant("alice=33.33", "percent", "EUR")
    remainder = parse_participant("bob", "percent", "EUR")

    assert given.basis_points == 3333
    assert remainder.WhichOneof("value") is None


def test_participant_shares_default_one():
    assert parse_participant("alice=3", "shares", "EUR").shares == 3
    assert parse_participant("bob", "shares", "EUR").shares == 1


def test_participant_mixed_prefixes():
    amount = parse_participant("alice=amount:10.00", "mixed", "EUR")
    percent = parse_participant("bob=percent:25", "mixed", "EUR")
    shares = parse_participant("carol=shares:2", "mixed", "EUR")

    assert amount.exact_amount.units == 10
    assert amount.exact_amount.currency_code == "EUR"
    assert percent.basis_points == 2500
    assert shares.shares == 2
    assert shares.HasField("shares")


@pytest.mark.parametrize(
    ("text", "split", "expected"),
    [
        ("alice=10", "equal", "an equal split takes no value"),
        ("alice", "exact", "an exact split needs USER=AMOUNT"),
        ("alice=10.001", "exact", "digits below the minor unit"),
        ("alice=", "percent", "the value after '=' is empty"),
        ("=10", "exact", "expected USER or USER=VALUE"),
        ("alice", "mixed", "a mixed split needs"),
        ("alice=10", "mixed", "a mixed split needs"),
        ("alice=weight:2", "mixed", "a mixed split needs"),
        ("alice=shares:1.5", "mixed", "whole number of shares"),
        ("groups/trip", "equal", "expected an id such as 'alice'"),
    ],
)
def test_participant_rejects(text, split, expected):
    with pytest.raises(UsageError) as caught:
        parse_participant(text, split, "EUR")

    assert "--participant" in str(caught.value)
    assert text in str(caught.value)
    assert expected in str(caught.value)


def test_single_payer_pays_total():
    (payer,) = parse_payers(["alice"], 1234, "EUR")

    assert payer.user == "users/alice"
    assert payer.amount == money_pb2.Money(
        currency_code="EUR", units=12, nanos=340_000_000
    )


def test_open_payer_pays_rest():
    payers = parse_payers(["bob=50.00", "alice"], 8000, "EUR")

    assert [payer.user for payer in payers] == ["users/bob", "users/alice"]
    assert [payer.amount.units for payer in payers] == [50, 30]


def test_refund_payer_is_negative():
    (payer,) = parse_payers(["alice"], -550, "EUR")

    assert payer.amount.units == -5
    assert payer.amount.nanos == -500_000_000


def test_two_open_payers_rejected():
    with pytest.raises(UsageError) as caught:
        parse_payers(["alice", "bob"], 1000, "EUR")

    assert "--paid-by" in str(caught.value)
    assert "users/alice, users/bob have no amount" in str(caught.value)


def test_parse_date():
    date = parse_date("2024-02-29", "--date")

    assert (date.year, date.month, date.day) == (2024, 2, 29)


@pytest.mark.parametrize("text", ["2023-02-29", "20240101", "2024-W01-1", "31/12/2024"])
def test_parse_date_rejects(text):
    with pytest.raises(UsageError) as caught:
        parse_date(text, "--date")

    assert f"invalid value {text!r} for --date" in str(caught.value)
    assert "2024-05-31" in str(caught.value)


def test_parse_date_names_missing_day():
    with pytest.raises(UsageError) as caught:
        parse_date("2026-02-30", "--date")

    assert "no such day in the calendar" in str(caught.value)


@pytest.mark.parametrize(
    "text", ["dining-out", "Dining out", "DINING_OUT", "CATEGORY_DINING_OUT"]
)
def test_parse_category_spellings(text):
    assert parse_category(text) == expenses_pb2.CATEGORY_DINING_OUT


def test_parse_category_lists_choices():
    with pytest.raises(UsageError) as caught:
        parse_category("food")

    assert "invalid value 'food' for --category" in str(caught.value)
    assert "food-and-drink" in str(caught.value)
    assert "dining-out" in str(caught.value)


def test_resource_name_forms():
    assert resource_name("alice", "users", "USER") == "users/alice"
    assert resource_name("users/alice", "users", "USER") == "users/alice"


@pytest.mark.parametrize("text", ["", "users/", "a/b"])
def test_resource_name_rejects(text):
    with pytest.raises(UsageError) as caught:
        resource_name(text, "users", "USER")

    assert "for USER" in str(caught.value)


def test_child_name():
    name = "groups/trip/expenses/dinner"

    assert child_name(name, "expenses", "NAME") == name
    with pytest.raises(UsageError, match="groups/GROUP/expenses/ID"):
        child_name("dinner", "expenses", "NAME")
    with pytest.raises(UsageError, match="groups/GROUP/expenses/ID"):
        child_name("groups/trip/settlements/s1", "expenses", "NAME")


@pytest.mark.parametrize(
    ("units", "nanos", "currency", "text"),
    [
        (12, 500_000_000, "EUR", "12.50 EUR"),
        (-1, -750_000_000, "USD", "-1.75 USD"),
        (0, -10_000_000, "EUR", "-0.01 EUR"),
        (900, 0, "JPY", "900 JPY"),
        (1, 5_000_000, "BHD", "1.005 BHD"),
        (0, 0, "EUR", "0.00 EUR"),
    ],
)
def test_render_amount(units, nanos, currency, text):
    money = money_pb2.Money(currency_code=currency, units=units, nanos=nanos)

    assert render.amount(money) == text


def test_render_table_aligns_columns():
    text = render.table(("NAME", "AMOUNT"), [("alice", "1.00 EUR"), ("bo", "10.00")])

    assert text.splitlines() == [
        "NAME   AMOUNT",
        "alice  1.00 EUR",
        "bo     10.00",
    ]


def test_render_empty_table():
    assert render.table(("NAME",), []).splitlines() == ["NAME", "(none)"]


def test_table_escapes_control_characters():
    printed = render.table(("NOTE",), [("a\x1b[2Jb",), ("one\ntwo",), ("\u202eabc",)])

    assert printed.splitlines() == ["NOTE", "a\\e[2Jb", "one\\ntwo", "\\u202eabc"]


def test_fields_escape_control_characters():
    printed = render.fields([("note", "a\rb\x07")])

    assert printed == "note: a\\rb\\x07"
