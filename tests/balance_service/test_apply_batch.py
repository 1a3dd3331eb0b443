"""Applying ledger events in one batch ends in the same state as one by one.

Each test migrates SQLite files under tmp_path and calls `apply_batch`
directly, so the batches have exactly the sizes the test chooses.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select, text

from balance_service import storage
from balance_service.app import MIGRATIONS_DIR
from balance_service.ledger import (
    ExpenseState,
    InvalidEventError,
    allocation_pairs,
    apply_batch,
    split_by_work,
)
from splitlog_runtime.database import Database, upgrade

_START = datetime(2024, 5, 1, 12, 0)
_TABLES = ("ledger_expenses", "ledger_lines", "balances")


def _database(path) -> Database:
    database = Database(f"sqlite:///{path}")
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    return database


def _state(
    sequence: int,
    expense_id: str,
    revision: int,
    lines: dict[str, tuple[int, int]],
    *,
    group_id: str = "group-a",
    deleted: bool = False,
) -> ExpenseState:
    return ExpenseState(
        sequence=sequence,
        group_id=group_id,
        expense_id=expense_id,
        revision=revision,
        deleted=deleted,
        currency_code="EUR",
        expense_date=date(2024, 5, 1),
        category=1,
        description="Dinner",
        total=sum(paid for paid, _ in lines.values()),
        commit_time=_START + timedelta(seconds=sequence),
        lines=tuple((user, *lines[user]) for user in sorted(lines)),
    )


def _events() -> list[ExpenseState]:
    """Return changes where one expense is created, updated, deleted and restored."""
    return [
        _state(1, "e1", 1, {"ann": (900, 300), "bob": (0, 300), "cy": (0, 300)}),
        _state(2, "e2", 1, {"bob": (400, 200), "cy": (0, 200)}),
        _state(3, "e1", 2, {"bob": (600, 200), "ann": (0, 400)}),
        _state(4, "e3", 1, {"ann": (50, 0), "dee": (0, 50)}, group_id="group-b"),
        _state(5, "e1", 3, {"bob": (600, 200), "ann": (0, 400)}, deleted=True),
        _state(6, "e2", 1, {"bob": (1, 0), "cy": (0, 1)}),  # stale revision
        _state(7, "e1", 4, {"cy": (70, 35), "ann": (0, 35)}),
    ]


def _contents(database: Database) -> dict[str, list[tuple]]:
    with database.transaction() as session:
        tables = {
            table: sorted(session.execute(text(f"SELECT * FROM {table}")).all())
            for table in _TABLES
        }
        # A batch skips pair increments that add up to zero, so it may not
        # create a pair row that single events leave at zero. Reads skip both.
        pairs = session.execute(text("SELECT * FROM pair_balances")).all()
        tables["pair_balances"] = sorted(row for row in pairs if row[-1] != 0)
        tables["group_activity"] = sorted(
            session.execute(
                select(
                    storage.GroupActivityRow.group_id,
                    storage.GroupActivityRow.update_time,
                )
            ).all()
        )
    return tables


def _cursor(database: Database) -> int:
    with database.transaction() as session:
        return storage.read_cursor(session)


def test_one_batch_matches_single_events(tmp_path):
    events = _events()
    single = _database(tmp_path / "single.db")
    batched = _database(tmp_path / "batched.db")

    for event in events:
        apply_batch(single, [event])
    apply_batch(batched, events)

    assert _cursor(batched) == 7
    assert _contents(batched) == _contents(single)


def test_later_batches_replace_stored_lines(tmp_path):
    events = _events()
    single = _database(tmp_path / "single.db")
    split = _database(tmp_path / "split.db")

    for event in events:
        apply_batch(single, [event])
    apply_batch(split, events[:2])
    apply_batch(split, events[2:5])
    apply_batch(split, events[5:])

    assert _cursor(split) == 7
    assert _contents(split) == _contents(single)
    with split.transaction() as session:
        nets = dict(
            (user, net) for _, user, net in storage.group_nets(session, "group-a")
        )
    assert nets == {"ann": -35, "bob": 200, "cy": -165}


def test_repeated_batch_changes_nothing(tmp_path):
    database = _database(tmp_path / "b.db")
    events = _events()
    apply_batch(database, events[:4])
    before = _contents(database)

    position = apply_batch(database, events[:4])

    assert position == 4
    assert _contents(database) == before


def test_gap_inside_batch_applies_nothing(tmp_path):
    database = _database(tmp_path / "b.db")
    events = _events()

    with pytest.raises(InvalidEventError, match="event 4 follows 2"):
        apply_batch(database, [*events[:2], *events[3:]])

    assert _cursor(database) == 0
    assert all(not rows for rows in _contents(database).values())


def test_zero_net_expense_keeps_rows(tmp_path):
    database = _database(tmp_path / "b.db")

    apply_batch(database, [_state(1, "e1", 1, {"ann": (40, 40), "bob": (0, 0)})])

    with database.transaction() as session:
        nets = storage.group_nets(session, "group-a")
    assert sorted(nets) == [("EUR", "ann", 0), ("EUR", "bob", 0)]


@pytest.mark.parametrize(
    "statement",
    [
        storage._SELECT_EXPENSES,
        storage._SELECT_EXPENSES_LOCKED,
        storage._SELECT_LINES,
    ],
)
def test_expense_lookup_searches_primary_key(tmp_path, statement):
    database = _database(tmp_path / "b.db")
    bound = statement.params(group_id="group-a", expense_ids=["e1", "e2"])
    compiled = bound.compile(
        dialect=database.engine.dialect,
        compile_kwargs={"literal_binds": True, "render_postcompile": True},
    )

    with database.engine.connect() as connection:
        plan = [
            row[-1]
            for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
        ]

    assert not [step for step in plan if step.startswith("SCAN")]
    assert [step for step in plan if step.startswith("SEARCH")]


def _wide(sequence: int, payers: int, participants: int) -> ExpenseState:
    """Return a create of `payers` payers who owe nothing and other participants."""
    lines = {f"p{index}": (100, 0) for index in range(payers)}
    share = 100 * payers // participants
    lines.update({f"u{index}": (0, share) for index in range(participants)})
    return _state(sequence, f"w{sequence}", 1, lines)


def test_split_by_work_bounds_pairs():
    states = [
        _wide(1, 1, 4),  # 4 pairs
        _wide(2, 2, 5),  # 10 pairs
        _wide(3, 5, 5),  # 25 pairs, over the limit alone
        _wide(4, 1, 2),  # 2 pairs
        _wide(5, 1, 2),  # 2 pairs
    ]

    parts = split_by_work(states, max_pairs=12)

    assert [[state.sequence for state in part] for part in parts] == [
        [1],
        [2],
        [3],
        [4, 5],
    ]
    assert [allocation_pairs(state) for state in states] == [4, 10, 25, 2, 2]


def test_split_parts_match_one_batch(tmp_path):
    states = [_wide(sequence, 3, 4) for sequence in range(1, 8)]
    whole = _database(tmp_path / "whole.db")
    split = _database(tmp_path / "split.db")

    apply_batch(whole, states)
    parts = split_by_work(states, max_pairs=30)
    for part in parts:
        apply_batch(split, part)

    assert len(parts) == 4
    assert _contents(split) == _contents(whole)
