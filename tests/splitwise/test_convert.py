"""Conversion of Splitwise rows into expenses and settlements."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitlog.expenses.v1 import expenses_service_pb2
from splitlog_cli.splitwise import categories
from splitlog_cli.splitwise.convert import (
    CATEGORY_NOTE,
    COST_NOTE,
    DESCRIPTION_NOTE,
    MAX_DESCRIPTION,
    NO_DESCRIPTION,
    UNKNOWN_MEMBER,
    ExpensePlan,
    SettlementPlan,
    convert,
    unquote_text,
)
from splitlog_cli.splitwise.csvformat import (
    Layout,
    Row,
    SplitwiseFile,
    SplitwiseFormatError,
    parse_bytes,
)
from splitlog_runtime.limits import RequestLimits
from tests.splitwise.conftest import FIXTURE_FILES, FIXTURES

DAY = datetime.date(2023, 9, 1)
MEMBERS = ("A", "B", "C")


def row(cost, nets, description="Dinner", category="Dining out", currency="EUR"):
    return Row(7, DAY, description, category, cost, currency, tuple(nets))


def entries_of(*rows, members=MEMBERS):
    return convert(SplitwiseFile(Layout.CURRENT, members, tuple(rows), ())).entries


def only(*rows, members=MEMBERS):
    (entry,) = entries_of(*rows, members=members)
    return entry


def test_rent_row_keeps_full_cost():
    entry = only(row(168000, [-56000, -56000, 112000], "Rent", "Rent"))

    assert isinstance(entry, ExpensePlan)
    assert entry.total == 168000
    assert entry.payers == (("C", 168000),)
    assert entry.owed == (("A", 56000), ("B", 56000), ("C", 56000))
    assert entry.category == "CATEGORY_RENT"
    assert entry.date == DAY
    assert entry.currency == "EUR"
    assert entry.key == "7"


def test_payer_without_own_share_not_a_participant():
    entry = only(row(5000, [5000, -2000, -3000]))

    assert entry.payers == (("A", 5000),)
    assert entry.owed == (("B", 2000), ("C", 3000))


def test_several_payers_share_the_rest_equally():
    entry = only(row(4501, [1500, -3000, 1500]))

    assert entry.total == 4501
    assert entry.payers == (("A", 2251), ("C", 2250))
    assert entry.owed == (("A", 751), ("B", 3000), ("C", 750))
    assert "2 members paid" in entry.notes
    assert "15.01" in entry.notes


def test_several_payers_without_own_share():
    entry = only(row(2000, [1000, -2000, 1000], "Flavors", "General"))

    assert entry.payers == (("A", 1000), ("C", 1000))
    assert entry.owed == (("B", 2000),)


def test_refund_reverses_signs():
    entry = only(row(-6256, [-4170, 2085, 2085], "Consumables", "Groceries"))

    assert entry.total == -6256
    assert entry.payers == (("A", -6256),)
    assert entry.owed == (("A", -2086), ("B", -2085), ("C", -2085))


def test_imbalanced_row_books_placeholder():
    entry = only(row(6302, [-1574, 0, -1576]))

    assert entry.total == 6302
    assert entry.payers == ((UNKNOWN_MEMBER, 6302),)
    assert entry.owed == (("A", 1574), ("C", 1576), (UNKNOWN_MEMBER, 3152))
    assert "31.50" in entry.notes


def test_imbalanced_row_with_known_payer():
    entry = only(row(3710, [2784, 0, -928]))

    assert entry.payers == (("A", 3710),)
    assert entry.owed == (("A", 926), ("C", 928), (UNKNOWN_MEMBER, 1856))


def test_payment_category_becomes_settlement():
    entry = only(row(20000, [-20000, 20000, 0], "B paid A", "Payment"))

    assert isinstance(entry, SettlementPlan)
    assert (entry.payer, entry.payee, entry.amount) == ("B", "A", 20000)
    assert entry.note.split("\n")[0] == "B paid A"
    assert CATEGORY_NOTE not in entry.note


@pytest.mark.parametrize(
    "description", ["C paid A", "Settle all balances", "Zelle", "Ödeme", " settlement "]
)
def test_general_payment_text_becomes_settlement(description):
    entry = only(row(36393, [-36393, 0, 36393], description, "General"))

    assert isinstance(entry, SettlementPlan)
    assert (entry.payer, entry.payee, entry.amount) == ("C", "A", 36393)
    assert CATEGORY_NOTE + "General" in entry.note


def test_payment_from_missing_person():
    entry = only(row(60000, [-60000, 0, 0], "Dave D. paid A", "General"))

    assert isinstance(entry, SettlementPlan)
    assert (entry.payer, entry.payee, entry.amount) == (UNKNOWN_MEMBER, "A", 60000)


def test_paid_text_in_other_category_stays_expense():
    entry = only(row(3000, [-3000, 3000, 0], "B paid for pizza", "Dining out"))

    assert isinstance(entry, ExpensePlan)


def test_paid_text_with_own_share_stays_expense():
    entry = only(row(3000, [-1000, 2000, -1000], "B paid the taxi", "General"))

    assert isinstance(entry, ExpensePlan)
    assert entry.payers == (("B", 3000),)


def test_settle_all_splits_into_pairs():
    entries = entries_of(
        row(1000, [1000, -400, -600], "Settle all balances", "Payment")
    )

    assert [(e.payer, e.payee, e.amount) for e in entries] == [
        ("A", "B", 400),
        ("A", "C", 600),
    ]
    assert [e.key for e in entries] == ["7-1", "7-2"]


def test_payment_with_other_cost_keeps_cost():
    entry = only(row(999, [-500, 500, 0], "B paid A", "Payment"))

    assert entry.amount == 500
    assert COST_NOTE + "9.99" in entry.note


def test_row_without_known_nets_booked_on_placeholder():
    entry = only(row(90571, [0, 0, 0], "Erin paid Dave", "General"))

    assert isinstance(entry, ExpensePlan)
    assert entry.total == 90571
    assert entry.payers == ((UNKNOWN_MEMBER, 90571),)
    assert entry.owed == ((UNKNOWN_MEMBER, 90571),)


def test_self_paid_note_names_payer():
    entry = only(row(1250, [0, 0, 0], "Own lunch [paid and owed by B]"))

    assert isinstance(entry, ExpensePlan)
    assert entry.description == "Own lunch"
    assert entry.total == 1250
    assert entry.payers == (("B", 1250),)
    assert entry.owed == (("B", 1250),)
    assert DESCRIPTION_NOTE not in entry.notes


def test_self_paid_note_with_several_members():
    entry = only(row(1000, [0, 0, 0], "Taxi [paid and owed by A 6.00; C 4.00]"))

    assert entry.description == "Taxi"
    assert entry.payers == (("A", 600), ("C", 400))
    assert entry.owed == (("A", 600), ("C", 400))


def test_self_paid_refund():
    entry = only(row(-2000, [0, 0, 0], "Returned shoes [paid and owed by C]"))

    assert entry.total == -2000
    assert entry.payers == (("C", -2000),)
    assert entry.owed == (("C", -2000),)


@pytest.mark.parametrize(
    "suffix",
    [
        "[paid and owed by Zoe]",
        "[paid and owed by A 6.00; B 5.00]",
        "[paid and owed by A 6.00; Zoe 4.00]",
        "[paid and owed by A 6.00; A 4.00]",
        "[paid and owed by A six; B 4.00]",
        "[paid and owed by A 10.00; B 0.00]",
        "[paid and owed by A 10.00]",
        "[paid and owed by ]",
        "[paid and owed by A 15.00; B -5.00]",
        "[paid and owed by A -5.00; B 15.00]",
        '[paid and owed by "A]',
        '[paid and owed by "A"6.00; B 4.00]',
        '[paid and owed by "A 6.00; B 4.00]',
        '[paid and owed by "Zoe" 6.00; B 4.00]',
    ],
)
def test_unreadable_self_paid_note_books_placeholder(suffix):
    entry = only(row(1000, [0, 0, 0], f"Taxi {suffix}"))

    assert entry.description == f"Taxi {suffix}"
    assert entry.payers == ((UNKNOWN_MEMBER, 1000),)
    assert entry.owed == ((UNKNOWN_MEMBER, 1000),)


@pytest.mark.parametrize(
    "suffix",
    ["[paid and owed by A -15.00; B 5.00]", "[paid and owed by A 5.00; B -15.00]"],
)
def test_self_paid_refund_mixed_signs_books_placeholder(suffix):
    entry = only(row(-1000, [0, 0, 0], f"Returned {suffix}"))

    assert entry.payers == ((UNKNOWN_MEMBER, -1000),)
    assert entry.owed == ((UNKNOWN_MEMBER, -1000),)


def test_self_paid_note_ignored_when_nets_change():
    entry = only(row(3000, [1500, -1500, 0], "Dinner [paid and owed by A]"))

    assert entry.description == "Dinner [paid and owed by A]"
    assert entry.payers == (("A", 3000),)
    assert entry.owed == (("A", 1500), ("B", 1500))


def test_self_paid_fixture_needs_placeholder_once():
    plan = convert(parse_bytes((FIXTURES / "self_paid.csv").read_bytes()))

    on_placeholder = [
        entry.key for entry in plan.entries if UNKNOWN_MEMBER in entry.nets()
    ]
    assert on_placeholder == ["7", "8"]
    assert plan.mismatches() == []


def test_row_without_any_effect_skipped():
    parsed = SplitwiseFile(Layout.CURRENT, MEMBERS, (row(0, [0, 0, 0]),), ())

    plan = convert(parsed)

    assert plan.entries == ()
    assert plan.skipped == (7,)


def test_zero_cost_books_amount_moved():
    entry = only(row(0, [1000, -1000, 0], "Debt simplification", "General"))

    assert entry.total == 1000
    assert entry.payers == (("A", 1000),)
    assert entry.owed == (("B", 1000),)
    assert COST_NOTE + "0.00" in entry.notes


def test_cost_below_amount_moved_keeps_cost():
    entry = only(row(500, [1000, -1000, 0]))

    assert entry.total == 1000
    assert COST_NOTE + "5.00" in entry.notes


def test_category_without_own_value_kept_in_notes():
    entry = only(row(3000, [2000, -1000, -1000], "Cook", "Services"))

    assert entry.category == "CATEGORY_MAINTENANCE"
    assert CATEGORY_NOTE + "Services" in entry.notes.split("\n")


def test_unknown_category_maps_to_general():
    entry = only(row(3000, [2000, -1000, -1000], "Kite", "Kitesurfing"))

    assert entry.category == "CATEGORY_GENERAL"
    assert CATEGORY_NOTE + "Kitesurfing" in entry.notes.split("\n")


def test_empty_description_replaced():
    entry = only(row(3000, [2000, -1000, -1000], "  "))

    assert entry.description == NO_DESCRIPTION
    assert DESCRIPTION_NOTE + '"  "' in entry.notes.split("\n")


def test_long_description_truncated_and_kept():
    text = "x" * (MAX_DESCRIPTION + 1)

    entry = only(row(3000, [2000, -1000, -1000], text))

    assert entry.description == text[:MAX_DESCRIPTION]
    assert DESCRIPTION_NOTE + f'"{text}"' in entry.notes.split("\n")


def test_description_too_long_for_notes_rejected():
    parsed = SplitwiseFile(
        Layout.CURRENT, MEMBERS, (row(3000, [2000, -1000, -1000], "x" * 2100),), ()
    )

    with pytest.raises(SplitwiseFormatError) as caught:
        convert(parsed)

    assert (caught.value.line, caught.value.column) == (7, "Description")
    assert "shorten it" in caught.value.message


@pytest.mark.parametrize(
    "name", [UNKNOWN_MEMBER, UNKNOWN_MEMBER.lower(), UNKNOWN_MEMBER.upper()]
)
def test_member_named_like_placeholder_rejected(name):
    members = ("A", name)
    parsed = SplitwiseFile(
        Layout.CURRENT, members, (row(3000, [2000, -1000]),), (), header_line=4
    )

    with pytest.raises(SplitwiseFormatError) as caught:
        convert(parsed)

    assert (caught.value.line, caught.value.column) == (4, name)
    assert "name of the placeholder" in caught.value.message
    assert "rename this column" in caught.value.message


def test_quoted_self_paid_names_read():
    members = ("Ana; Ben", "C")
    description = 'Taxi [paid and owed by "Ana; Ben" 6.00; C 4.00]'

    entry = only(row(1000, [0, 0], description), members=members)

    assert entry.description == "Taxi"
    assert entry.payers == (("Ana; Ben", 600), ("C", 400))
    assert entry.owed == (("Ana; Ben", 600), ("C", 400))


def test_header_line_of_parsed_file():
    parsed = parse_bytes(b"\n\nDate,Description,Category,Cost,Currency,A\n")

    assert parsed.header_line == 3


# Taxi: A, B and C paid 10.00 each for people missing from the export, so it
# has 3 payers and 1 participant. Dinner: A paid for A, B and C, so it has 1
# payer and 3 participants.
TAXI = row(3000, [1000, 1000, 1000], "Taxi")
DINNER = row(3000, [2000, -1000, -1000], "Dinner")


@pytest.mark.parametrize(
    ("split_row", "max_payers", "max_participants", "setting", "counted"),
    [
        (TAXI, 2, 3, "expense_max_payers", "3 members paid"),
        (DINNER, 3, 2, "expense_max_participants", "3 members owe a share"),
    ],
)
def test_split_over_limits_rejected(
    split_row, max_payers, max_participants, setting, counted
):
    limits = RequestLimits(
        expense_max_payers=max_payers, expense_max_participants=max_participants
    )
    source = SplitwiseFile(Layout.CURRENT, MEMBERS, (split_row,), ())

    with pytest.raises(SplitwiseFormatError) as caught:
        convert(source, limits)

    assert len(caught.value.problems) == 1
    assert caught.value.line == 7
    assert counted in caught.value.message
    assert f"at most 2 ({setting})" in caught.value.message
    assert f"SPLITLOG_{setting.upper()}" in caught.value.message


def test_split_at_limits_accepted():
    limits = RequestLimits(expense_max_payers=3, expense_max_participants=3)
    source = SplitwiseFile(Layout.CURRENT, MEMBERS, (TAXI, DINNER), ())

    taxi, dinner = convert(source, limits).entries

    assert len(taxi.payers) == 3
    assert len(dinner.owed) == 3


def test_default_limits_reject_51_payers():
    members = tuple(f"M{index}" for index in range(51))
    source = SplitwiseFile(
        Layout.CURRENT, members, (row(5100, [100] * 51, "Party"),), ()
    )

    with pytest.raises(SplitwiseFormatError) as caught:
        convert(source)

    assert "51 members paid" in caught.value.message
    assert "at most 50 (expense_max_payers)" in caught.value.message


def test_trailing_space_kept_in_notes():
    entry = only(row(3000, [2000, -1000, -1000], "Groceries "))

    assert entry.description == "Groceries"
    assert DESCRIPTION_NOTE + '"Groceries "' in entry.notes.split("\n")


def test_plain_description_adds_no_note():
    entry = only(row(3000, [2000, -1000, -1000], "Çay ve simit"))

    assert entry.description == "Çay ve simit"
    assert DESCRIPTION_NOTE not in entry.notes


def test_control_characters_replaced_and_escaped():
    text = "Tea\nand\u2028cake\u202e"

    entry = only(row(3000, [2000, -1000, -1000], text))

    assert entry.description == "Tea and cake"
    line = entry.notes.split("\n")[-1]
    assert line == DESCRIPTION_NOTE + '"Tea\\nand\\u2028cake\\u202e"'
    assert unquote_text(line.removeprefix(DESCRIPTION_NOTE)) == text


def test_settlement_description_cleaned():
    entry = only(row(500, [-500, 500, 0], " B paid A ", "Payment"))

    assert entry.note.split("\n")[0] == "B paid A"
    assert DESCRIPTION_NOTE + '" B paid A "' in entry.note.split("\n")


def test_three_digit_currency():
    entry = only(row(1000, [667, -333, -334], currency="BHD"))

    assert entry.currency == "BHD"
    assert entry.owed == (("A", 333), ("B", 333), ("C", 334))


def test_every_mapped_category_exists_in_proto():
    names = set(expenses_service_pb2.Category.keys())

    assert set(categories.SPLITWISE_NAMES) <= names
    for splitwise_name in ("Dining out", "Heat/gas", "TV/Phone/Internet", "Other"):
        assert categories.to_splitlog(splitwise_name) in names
    for category, splitwise_name in categories.SPLITWISE_NAMES.items():
        assert categories.to_splitlog(splitwise_name) == category


def test_fixture_plans_match_summary_rows():
    for name in FIXTURE_FILES:
        plan = convert(parse_bytes((FIXTURES / name).read_bytes()))

        assert plan.mismatches() == [], name


def test_fixture_placeholder_balance():
    plan = convert(parse_bytes((FIXTURES / "older_imbalanced.csv").read_bytes()))

    assert plan.members[-1] == UNKNOWN_MEMBER
    assert plan.balances()["USD"][UNKNOWN_MEMBER] == 64100


nets_lists = st.lists(st.integers(-(10**7), 10**7), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    nets=nets_lists,
    extra=st.integers(-(10**6), 10**7),
    name=st.sampled_from(["General", "Payment", "Dining out"]),
)
def test_any_row_keeps_every_net(nets, extra, name):
    members = tuple(f"M{index}" for index in range(len(nets)))
    moved = sum(n for n in nets if n > 0) + max(-sum(nets), 0)
    cost = moved + extra if extra >= 0 else -(moved - extra)
    source = Row(3, DAY, "X paid Y", name, cost, "EUR", tuple(nets))

    entries = entries_of(source, members=members)

    totals: dict[str, int] = {}
    for entry in entries:
        for member, net in entry.nets().items():
            totals[member] = totals.get(member, 0) + net
    for member, net in zip(members, nets, strict=True):
        assert totals.get(member, 0) == net
    assert totals.get(UNKNOWN_MEMBER, 0) == -sum(nets)
    for entry in entries:
        if isinstance(entry, SettlementPlan):
            assert entry.amount > 0
            assert entry.payer != entry.payee
            continue
        assert entry.total != 0
        assert sum(amount for _, amount in entry.payers) == entry.total
        assert sum(amount for _, amount in entry.owed) == entry.total
        sign = 1 if entry.total > 0 else -1
        assert all(amount * sign > 0 for _, amount in entry.payers)
        assert all(amount * sign > 0 for _, amount in entry.owed)
        if entry.total == cost:
            continue
        assert COST_NOTE in entry.notes
