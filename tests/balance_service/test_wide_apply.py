"""Applying wide expenses, each shared by every member of a large group.

Each test migrates a fresh database, a SQLite file and then a PostgreSQL
database, and calls `apply_batch` directly. The lines and pair amounts that
a batch writes in bulk must be the ones that the allocation rule and the
stored expenses give.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import event, text

from balance_service import allocation, storage
from balance_service.app import MIGRATIONS_DIR
from balance_service.ledger import ExpenseState, apply_batch, split_by_work
from splitlog_runtime.database import Database, upgrade

GROUP = "wide-group"
_START = datetime(2024, 5, 1, 12, 0, 0, 250_000)


@pytest.fixture
def database(db_url):
    opened = Database(db_url)
    upgrade(opened.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    yield opened
    opened.dispose()


def _members(count: int) -> list[str]:
    return [f"member-{index:03d}" for index in range(count)]


def _wide(
    sequence: int,
    members: list[str],
    *,
    expense_id: str | None = None,
    revision: int = 1,
    total: int | None = None,
    deleted: bool = False,
) -> ExpenseState:
    """Return an expense paid by one member in turn and split among all."""
    if total is None:
        total = 10_000 + sequence * 37
    payer = members[sequence % len(members)]
    share, remainder = divmod(abs(total), len(members))
    sign = 1 if total > 0 else -1
    lines = tuple(
        (
            user,
            total if user == payer else 0,
            sign * (share + (1 if index < remainder else 0)),
        )
        for index, user in enumerate(members)
    )
    return ExpenseState(
        sequence=sequence,
        group_id=GROUP,
        expense_id=expense_id or f"wide-{sequence:04d}",
        revision=revision,
        deleted=deleted,
        currency_code="EUR",
        expense_date=date(2024, 1, 1) + timedelta(days=sequence % 28),
        category=1,
        description="Wide",
        total=total,
        commit_time=_START + timedelta(seconds=sequence),
        lines=lines,
    )


def _history(members: list[str]) -> list[ExpenseState]:
    """Return creates, a refund, an update and a delete of wide expenses."""
    states = [_wide(sequence, members) for sequence in range(1, 21)]
    states.append(_wide(21, members, total=-4_321))
    states.append(_wide(22, members, expense_id="wide-0003", revision=2, total=999))
    states.append(_wide(23, members, expense_id="wide-0005", revision=2, deleted=True))
    return states


def _expected(states: list[ExpenseState]) -> tuple[Counter, Counter]:
    """Return the net amounts and the pair amounts of the live expenses.

    Pair amounts are keyed by (first, second) in id order, positive when the
    first owes the second, as `pair_balances` stores them.
    """
    latest: dict[str, ExpenseState] = {}
    for state in states:
        latest[state.expense_id] = state
    nets: Counter = Counter()
    pairs: Counter = Counter()
    for state in latest.values():
        if state.deleted:
            continue
        for user, paid, owed in state.lines:
            nets[user] += paid - owed
        parts = allocation.allocate(
            {user: paid for user, paid, _ in state.lines},
            {user: owed for user, _, owed in state.lines},
        )
        for (debtor, creditor), amount in parts.items():
            if debtor < creditor:
                pairs[debtor, creditor] += amount
            elif creditor < debtor:
                pairs[creditor, debtor] -= amount
    return nets, pairs


def _stored(database: Database) -> tuple[Counter, Counter]:
    with database.transaction(read_only=True) as session:
        nets = Counter(
            {user: net for _, user, net in storage.group_nets(session, GROUP)}
        )
        pairs = Counter(
            {
                (first, second): amount
                for _, _, first, second, amount in storage.group_pairs(
                    session, GROUP, "EUR"
                )
            }
        )
    return nets, pairs


def test_wide_batch_totals_exact(database):
    members = _members(40)
    states = _history(members)

    for part in split_by_work(states, max_pairs=200):
        apply_batch(database, part)

    nets, pairs = _stored(database)
    expected_nets, expected_pairs = _expected(states)
    assert nets == expected_nets
    assert pairs == expected_pairs
    assert sum(nets.values()) == 0
    assert all(type(amount) is int for amount in [*nets.values(), *pairs.values()])


def test_wide_lines_copy_their_expense(database):
    members = _members(40)
    states = _history(members)

    apply_batch(database, states)

    with database.transaction(read_only=True) as session:
        lines = session.execute(text("SELECT count(*) FROM ledger_lines")).scalar()
        # The copies must equal the expense's columns exactly, as stored:
        # the same text on SQLite, so that page order and tokens agree.
        differing = session.execute(
            text(
                "SELECT count(*) FROM ledger_lines AS line "
                "JOIN ledger_expenses AS expense "
                "ON expense.group_id = line.group_id "
                "AND expense.expense_id = line.expense_id "
                "WHERE line.currency_code != expense.currency_code "
                "OR line.expense_date != expense.expense_date "
                "OR line.create_time != expense.create_time"
            )
        ).scalar()
        updated = session.execute(
            text(
                "SELECT sum(owed), min(expense_date) FROM ledger_lines "
                "WHERE group_id = :group AND expense_id = 'wide-0003'"
            ),
            {"group": GROUP},
        ).one()
    assert lines == 21 * len(members)
    assert differing == 0
    assert updated[0] == 999
    assert str(updated[1]) == str(date(2024, 1, 1) + timedelta(days=22))


def test_wide_apply_repeated_changes_nothing(database):
    members = _members(30)
    states = _history(members)
    apply_batch(database, states)
    before = _stored(database)

    position = apply_batch(database, states)

    assert position == states[-1].sequence
    assert _stored(database) == before


def _statements_sent(database: Database, states: list[ExpenseState]) -> int:
    """Apply `states`; return the statements that reached the database server.

    psycopg's executemany sends one statement per parameter set, so each
    set counts as one.
    """
    sent = 0

    def count(connection, cursor, statement, parameters, context, executemany):
        nonlocal sent
        sent += len(parameters) if executemany else 1

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        apply_batch(database, states)
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    return sent


@pytest.mark.postgres
def test_wide_apply_statements_fixed(postgres_url):
    """On PostgreSQL the statements of a batch do not grow with its lines."""
    database = Database(postgres_url)
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    narrow = [_wide(sequence, _members(10)) for sequence in range(1, 11)]
    wide = [
        replace(_wide(sequence, _members(60)), group_id="wider-group")
        for sequence in range(11, 21)
    ]

    counts = [_statements_sent(database, states) for states in (narrow, wide)]
    database.dispose()

    assert counts[0] == counts[1]
