"""Balance reads use indexes and never touch per-expense rows (SQLite plans).

Each read runs against a migrated SQLite file while a listener records its
SQL; then `EXPLAIN QUERY PLAN` must show only index searches, on running
totals only. An ExplainBalance page reads the per-expense tables, but along
an index in page order, so that it stops after one page: the member's
lines for expenses, so that other members' expenses cost nothing.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import event, insert

from balance_service import storage
from balance_service.app import MIGRATIONS_DIR
from splitlog_runtime.database import Database, upgrade

_PER_EXPENSE_TABLES = ("ledger_expenses", "ledger_lines")


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    found = Database(f"sqlite:///{tmp_path_factory.mktemp('plans') / 'b.db'}")
    upgrade(found.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    when = datetime(2024, 1, 1)
    with found.transaction() as session:
        expenses, lines = [], []
        for index in range(200):
            expense_id = f"expense-{index:04d}"
            expenses.append(
                {
                    "group_id": "group-a",
                    "expense_id": expense_id,
                    "revision": 1,
                    "deleted": False,
                    "currency_code": "EUR",
                    "expense_date": date(2024, 1, 1),
                    "category": 1,
                    "description": "Dinner",
                    "total": 200,
                    "create_time": when,
                    "update_time": when,
                }
            )
            lines += [
                {
                    "group_id": "group-a",
                    "expense_id": expense_id,
                    "user_id": user_id,
                    "paid": paid,
                    "owed": 100,
                    "currency_code": "EUR",
                    "expense_date": date(2024, 1, 1),
                    "create_time": when,
                }
                for user_id, paid in (("user-ann", 200), ("user-bob", 0))
            ]
        session.execute(insert(storage.ExpenseRow), expenses)
        session.execute(insert(storage.LineRow), lines)
        storage.add_to_balances(
            session,
            {
                ("group-a", "EUR", "user-ann"): 20000,
                ("group-a", "EUR", "user-bob"): -20000,
            },
        )
        storage.add_to_pairs(
            session, {("group-a", "EUR", "user-bob", "user-ann"): 20000}
        )
        storage.touch_group(session, "group-a", when)
    yield found
    found.dispose()


def _plans(database: Database, read) -> list[tuple[str, list[str]]]:
    """Run `read(session)` and return each statement with its query plan."""
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        with database.transaction() as session:
            read(session)
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    plans = []
    with database.engine.connect() as connection:
        for statement, parameters in statements:
            rows = connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters
            ).all()
            plans.append((statement, [row[-1] for row in rows]))
    return plans


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda s: storage.group_snapshot(s, "group-a"), id="group"),
        pytest.param(lambda s: storage.group_nets(s, "group-a"), id="group-nets"),
        pytest.param(lambda s: storage.user_balances(s, "user-ann"), id="user"),
        pytest.param(
            lambda s: storage.user_pair_versions(s, "user-ann"), id="user-pairs"
        ),
        pytest.param(
            lambda s: storage.pair_versions(s, "group-a", None), id="group-versions"
        ),
        pytest.param(
            lambda s: storage.pair_amount(s, "group-a", "EUR", "user-ann", "user-bob"),
            id="pair",
        ),
        pytest.param(
            lambda s: storage.group_pairs(s, "group-a", "EUR"), id="group-pairs"
        ),
        pytest.param(
            lambda s: storage.group_debts(s, "group-a", "EUR"), id="group-debts"
        ),
        pytest.param(
            lambda s: storage.unsettled_balances(s, "group-a", None), id="settled"
        ),
    ],
)
def test_balance_read_searches_indexes_only(database, read):
    plans = _plans(database, read)

    assert plans, "the read ran no SELECT"
    for statement, steps in plans:
        for table in _PER_EXPENSE_TABLES:
            assert table not in statement, f"{statement} reads {table}"
        for step in steps:
            assert not step.startswith("SCAN"), f"{step} in the plan of {statement}"


def test_group_read_is_one_ordered_query(database):
    plans = _plans(database, lambda s: storage.group_snapshot(s, "group-a"))

    assert len(plans) == 1
    statement, steps = plans[0]
    assert not any("TEMP B-TREE" in step for step in steps), steps


def test_group_snapshot_of_group_without_activity(database):
    with database.transaction() as session:
        update_time, nets = storage.group_snapshot(session, "group-none")

    assert update_time is None
    assert nets == []


def test_group_snapshot_returns_time_and_nets(database):
    with database.transaction() as session:
        update_time, nets = storage.group_snapshot(session, "group-a")

    assert update_time == datetime(2024, 1, 1)
    assert nets == [("EUR", "user-ann", 20000), ("EUR", "user-bob", -20000)]


_AFTER = (date(2024, 1, 1), datetime(2024, 1, 1), storage.EXPENSES, "expense-0100")


@pytest.mark.parametrize(
    ("read", "index"),
    [
        pytest.param(
            lambda s: storage.explain_expenses(
                s, "group-a", "user-ann", "EUR", None, None, 51
            ),
            "ix_ledger_lines_user_order",
            id="expenses-first-page",
        ),
        pytest.param(
            lambda s: storage.explain_expenses(
                s, "group-a", "user-ann", "EUR", "user-bob", _AFTER, 51
            ),
            "ix_ledger_lines_user_order",
            id="expenses-later-page",
        ),
        pytest.param(
            lambda s: storage.explain_settlements(
                s, "group-a", "user-ann", "EUR", None, _AFTER, 51
            ),
            "ix_settlements_group_currency_order",
            id="settlements-later-page",
        ),
        pytest.param(
            lambda s: storage.explain_settlements(
                s, "group-a", "user-ann", "EUR", "user-bob", None, 51
            ),
            "ix_settlements_group_currency_order",
            id="settlements-first-page",
        ),
    ],
)
def test_explain_page_reads_index_in_order(database, read, index):
    plans = _plans(database, read)

    assert len(plans) == 1
    statement, steps = plans[0]
    assert index in steps[0], steps
    for step in steps:
        assert not step.startswith("SCAN"), f"{step} in the plan of {statement}"
        assert "TEMP B-TREE" not in step, f"{step} in the plan of {statement}"
