"""Writing expenses and settlements back as a Splitwise export."""

from __future__ import annotations

import datetime

import pytest

from splitlog_cli.splitwise.convert import (
    UNKNOWN_MEMBER,
    ExpensePlan,
    SettlementPlan,
    convert,
)
from splitlog_cli.splitwise.csvformat import parse_bytes, parse_text
from splitlog_cli.splitwise.export import export_text
from splitlog_cli.splitwise.exporter import name_order
from tests.splitwise.conftest import FIXTURE_FILES, FIXTURES

DAY = datetime.date(2024, 5, 1)
EXPORT_DAY = datetime.date(2024, 6, 1)


def expense(key, payers, owed, total, category="CATEGORY_DINING_OUT", notes=""):
    return ExpensePlan(
        key, 0, "Lunch", category, DAY, "EUR", total, payers, owed, notes
    )


def settlement(key, payer, payee, amount, note=""):
    return SettlementPlan(key, 0, DAY, "EUR", payer, payee, amount, note)


def test_native_entries_written_in_current_layout():
    entries = [
        expense("e1", (("Ana", 3000),), (("Ana", 1500), ("Ben", 1500)), 3000),
        settlement("s1", "Ben", "Ana", 1500),
    ]

    text = export_text(["Ana", "Ben"], entries, EXPORT_DAY)

    assert text == (
        "Date,Description,Category,Cost,Currency,Ana,Ben\n"
        "\n"
        "2024-05-01,Lunch,Dining out,30.00,EUR,15.00,-15.00\n"
        "2024-05-01,Ben paid Ana,Payment,15.00,EUR,-15.00,15.00\n"
        "\n"
        "2024-06-01,Total balance, , ,EUR,0.00,0.00\n"
    )


def test_placeholder_column_left_out():
    entries = [
        expense(
            "e1",
            ((UNKNOWN_MEMBER, 3000),),
            (("Ana", 1000), (UNKNOWN_MEMBER, 2000)),
            3000,
        )
    ]

    parsed = parse_text(export_text(["Ana", UNKNOWN_MEMBER], entries, EXPORT_DAY))

    assert parsed.members == ("Ana",)
    assert parsed.rows[0].nets == (-1000,)
    assert parsed.summaries[0].nets == (-1000,)


def test_notes_values_written_back():
    notes = "Imported.\nSplitwise category: Services\nSplitwise cost: 0.00"
    entries = [
        expense("e1", (("Ana", 1000),), (("Ben", 1000),), 1000, notes=notes),
        settlement("s1", "Ben", "Ana", 500, "Zelle\nSplitwise category: General"),
    ]

    parsed = parse_text(export_text(["Ana", "Ben"], entries, EXPORT_DAY))

    assert parsed.rows[0].category == "Services"
    assert parsed.rows[0].cost == 0
    assert parsed.rows[1].description == "Zelle"
    assert parsed.rows[1].category == "General"


def test_hand_edited_cost_note_ignored():
    notes = "Splitwise cost: about ten"
    entries = [expense("e1", (("Ana", 1000),), (("Ben", 1000),), 1000, notes=notes)]

    parsed = parse_text(export_text(["Ana", "Ben"], entries, EXPORT_DAY))

    assert parsed.rows[0].cost == 1000


def test_one_summary_row_per_currency():
    entries = [
        expense("e1", (("Ana", 1000),), (("Ben", 1000),), 1000),
        SettlementPlan("s1", 0, DAY, "JPY", "Ben", "Ana", 700, ""),
    ]

    parsed = parse_text(export_text(["Ana", "Ben"], entries, EXPORT_DAY))

    assert [(s.currency, s.nets) for s in parsed.summaries] == [
        ("EUR", (1000, -1000)),
        ("JPY", (-700, 700)),
    ]
    assert all(s.date == EXPORT_DAY for s in parsed.summaries)


def test_self_paid_expense_names_payer():
    entries = [expense("e1", (("Ana", 1250),), (("Ana", 1250),), 1250)]

    text = export_text(["Ana", "Ben"], entries, EXPORT_DAY)

    row = "2024-05-01,Lunch [paid and owed by Ana],Dining out,12.50,EUR,0.00,0.00\n"
    assert row in text


def test_several_self_paid_members_with_amounts():
    shares = (("Ana", 600), ("Ben", 400))
    entries = [expense("e1", shares, shares, 1000)]

    text = export_text(["Ana", "Ben"], entries, EXPORT_DAY)

    assert ",Lunch [paid and owed by Ana 6.00; Ben 4.00],Dining out,10.00," in text


# Member names that the suffix reader would split or misread if written bare.
AWKWARD_NAMES = (
    "Ana; Ben",
    'Li "the boss"',
    "Mo [flat 2]",
    '"quoted"',
    "Jo;",
    "Kim] [paid and owed by Ana",
)


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_self_paid_awkward_name_round_trip(name):
    members = ["Ana", name]
    shares = (("Ana", 600), (name, 400))
    entries = [
        expense("e1", shares, shares, 1000),
        expense("e2", ((name, 1250),), ((name, 1250),), 1250),
    ]

    text = export_text(members, entries, EXPORT_DAY)
    again = convert(parse_text(text))

    assert again.members == tuple(members)
    several, alone = again.entries
    assert several.description == "Lunch"
    assert several.payers == shares
    assert several.owed == shares
    assert alone.description == "Lunch"
    assert alone.payers == ((name, 1250),)
    assert alone.owed == ((name, 1250),)


def test_plain_names_written_bare():
    shares = (("Ana Lopez", 600), ("Ben-2", 400))
    entries = [expense("e1", shares, shares, 1000)]

    text = export_text(["Ana Lopez", "Ben-2"], entries, EXPORT_DAY)

    assert ",Lunch [paid and owed by Ana Lopez 6.00; Ben-2 4.00]," in text


def test_name_with_separator_quoted():
    shares = (("Ana; Ben", 600), ("Chloé", 400))
    entries = [expense("e1", shares, shares, 1000)]

    text = export_text(["Ana; Ben", "Chloé"], entries, EXPORT_DAY)

    assert 'Lunch [paid and owed by ""Ana; Ben"" 6.00; Chloé 4.00]' in text


def test_placeholder_expense_not_named():
    share = ((UNKNOWN_MEMBER, 300),)
    entries = [expense("e1", share, share, 300)]

    text = export_text(["Ana", UNKNOWN_MEMBER], entries, EXPORT_DAY)

    assert "2024-05-01,Lunch,Dining out,3.00,EUR,0.00\n" in text


def test_self_paid_fixture_written_back_unchanged():
    data = (FIXTURES / "self_paid.csv").read_bytes()
    plan = convert(parse_bytes(data))

    text = export_text(plan.members, plan.entries, datetime.date(2024, 5, 10))

    assert text.encode() == data


def test_member_not_exported_rejected():
    entries = [settlement("s1", "Ben", "Zoe", 500)]

    with pytest.raises(ValueError, match="'s1' names Zoe"):
        export_text(["Ana", "Ben"], entries, EXPORT_DAY)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_round_trip(name):
    original = parse_bytes((FIXTURES / name).read_bytes())
    plan = convert(original)

    again = convert(parse_text(export_text(plan.members, plan.entries, EXPORT_DAY)))

    assert again.balances() == plan.balances()
    assert again.mismatches() == []
    assert [row.nets for row in again.source.rows] == [
        row.nets for row in original.rows
    ]
    assert [row.category for row in again.source.rows] == [
        row.category for row in original.rows
    ]


def test_rows_of_one_date_keep_line_order():
    names = [
        "groups/g/expenses/row-10",
        "groups/g/expenses/row-6",
        "groups/g/expenses/row-12-2",
        "groups/g/expenses/row-12-1",
        "groups/g/expenses/0193b3c4d5e6f7a8",
    ]

    ordered = sorted(names, key=name_order)

    assert ordered == [
        "groups/g/expenses/0193b3c4d5e6f7a8",
        "groups/g/expenses/row-6",
        "groups/g/expenses/row-10",
        "groups/g/expenses/row-12-1",
        "groups/g/expenses/row-12-2",
    ]


@pytest.mark.parametrize("description", ["Ben paid Ana", "Zelle"])
def test_expense_like_payment_stays_expense(description):
    lookalike = ExpensePlan(
        "e1",
        0,
        description,
        "CATEGORY_GENERAL",
        DAY,
        "EUR",
        1000,
        (("Ben", 1000),),
        (("Ana", 1000),),
        "",
    )
    entries = [lookalike, settlement("s1", "Ana", "Ben", 400)]

    text = export_text(["Ana", "Ben"], entries, EXPORT_DAY)
    again = convert(parse_text(text))

    assert f"2024-05-01,{description},Other,10.00,EUR,-10.00,10.00\n" in text
    assert [type(entry) for entry in again.entries] == [ExpensePlan, SettlementPlan]
    assert again.entries[0].description == description
    assert again.entries[0].category == "CATEGORY_GENERAL"
    assert again.balances() == {"EUR": {"Ana": -600, "Ben": 600}}
    assert again.mismatches() == []
