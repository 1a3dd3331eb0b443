"""Every real Splitwise export converts to the balances of its summary row."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from expense_service.money import parse_decimal_amount
from splitlog_cli.splitwise.convert import UNKNOWN_MEMBER, ExpensePlan, convert
from splitlog_cli.splitwise.csvformat import parse_bytes, parse_text
from splitlog_cli.splitwise.export import export_text
from tests.splitwise.conftest import shared_export_params

# Final balances as the data README states them, independently of the file.
STATED_BALANCES = {
    "moneystack_2012-2013_3members_USD.csv": (
        "USD",
        {"Alice": "63.48", "Bob": "-226.29", "Carol": "162.81"},
    ),
    "brazil_trip_2025-2026_10members_BRL.csv": (
        "BRL",
        {
            "Alice": "25500.68",
            "Bob": "-11022.95",
            "Carol": "-11054.28",
            "Dave": "-3320.04",
            "Erin": "12138.27",
            "Frank": "-1892.18",
            "Grace": "-2234.41",
            "Heidi": "-2700.75",
            "Ivan": "-2954.74",
            "Judy": "-2459.60",
        },
    ),
    "household_2025-2026_2members_USD.csv": (
        "USD",
        {"Alice": "839.76", "Bob": "-839.76"},
    ),
}

exports = pytest.mark.parametrize(
    "shared_export", shared_export_params(), indirect=True
)


@exports
def test_converted_rows_match_summary_row(shared_export):
    plan = convert(parse_bytes(shared_export.read_bytes()))

    assert plan.source.summaries, "the export has no summary row"
    assert plan.mismatches() == []


@exports
def test_converted_rows_match_stated_balances(shared_export):
    if shared_export.name not in STATED_BALANCES:
        pytest.skip(f"no stated balances recorded for {shared_export.name}")
    currency, stated = STATED_BALANCES[shared_export.name]
    plan = convert(parse_bytes(shared_export.read_bytes()))

    balances = plan.balances()[currency]

    for member, amount in stated.items():
        assert balances[member] == parse_decimal_amount(amount, currency), member
    assert balances.get(UNKNOWN_MEMBER, 0) == 0


@exports
def test_expenses_add_up(shared_export):
    plan = convert(parse_bytes(shared_export.read_bytes()))

    for entry in plan.entries:
        if isinstance(entry, ExpensePlan):
            assert sum(amount for _, amount in entry.payers) == entry.total
            assert sum(amount for _, amount in entry.owed) == entry.total
            assert entry.total != 0
        else:
            assert entry.amount > 0


@exports
def test_every_row_converted(shared_export):
    plan = convert(parse_bytes(shared_export.read_bytes()))

    lines = {entry.line for entry in plan.entries} | set(plan.skipped)
    assert lines == {row.line for row in plan.source.rows}
    assert plan.skipped == ()


@exports
def test_export_then_import_keeps_balances(shared_export):
    original = parse_bytes(shared_export.read_bytes())
    plan = convert(original)

    text = export_text(plan.members, plan.entries, datetime.date(2026, 3, 20))
    again = convert(parse_text(text))

    assert again.balances() == plan.balances()
    assert again.mismatches() == []
    assert again.source.members == original.members
    assert [s.nets for s in again.source.summaries] == [
        s.nets for s in original.summaries
    ]


@exports
def test_export_restores_every_row(shared_export):
    original = parse_bytes(shared_export.read_bytes())
    plan = convert(original)

    exported = parse_text(
        export_text(plan.members, plan.entries, datetime.date.today())
    )

    def fields(row):
        return (row.date, row.description, row.category, row.cost, row.currency)

    assert [fields(row) for row in exported.rows] == [
        fields(row) for row in original.rows
    ]
    assert [row.nets for row in exported.rows] == [row.nets for row in original.rows]


def test_stated_balances_add_up_to_zero():
    for currency, stated in STATED_BALANCES.values():
        total = sum(Decimal(amount) for amount in stated.values())
        assert total == 0, currency
