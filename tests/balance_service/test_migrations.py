"""The balance service's migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from balance_service.app import MIGRATIONS_DIR
from balance_service.storage import Base
from splitlog_runtime.database import normalise_url, upgrade
from tests.conftest import run_alembic

_VERSION_TABLE = "alembic_version_balance_service"
_KEY = "0b1c2d3e-4f50-4617-8899-aabbccddeeff"


def _migrate(engine, command_name: str, revision: str) -> None:
    run_alembic(engine, MIGRATIONS_DIR, _VERSION_TABLE, command_name, revision)


def _key_rows(engine) -> list[dict]:
    """Return the stored keys, without create_time (SQLite returns it as text)."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM balance_service_request_ids"))
        return [
            {name: value for name, value in row.items() if name != "create_time"}
            for row in rows.mappings()
        ]


@pytest.fixture
def engine(db_url):
    created = sa.create_engine(normalise_url(db_url))
    yield created
    created.dispose()


def test_request_hash_column_added_and_keys_kept(engine):
    _migrate(engine, "upgrade", "0002")
    keys = sa.table(
        "balance_service_request_ids",
        *(
            sa.column(name)
            for name in ("method", "request_id", "resource_name", "create_time")
        ),
    )
    old_key = {
        "method": "CreateSettlement",
        "request_id": _KEY,
        "resource_name": "groups/trip/settlements/paid",
        "create_time": datetime(2026, 1, 1),
    }
    with engine.begin() as connection:
        connection.execute(sa.insert(keys), [old_key])

    upgrade(engine, MIGRATIONS_DIR, _VERSION_TABLE)

    kept = {name: value for name, value in old_key.items() if name != "create_time"}
    assert _key_rows(engine) == [{**kept, "request_hash": None}]
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection), Base.metadata
        )
    # Alembic's own version table is not part of the models.
    assert [d for d in differences if "alembic_version" not in str(d)] == []

    _migrate(engine, "downgrade", "0002")

    assert _key_rows(engine) == [kept]


def _index_names(engine, table: str) -> set[str]:
    return {index["name"] for index in sa.inspect(engine).get_indexes(table)}


def test_explain_order_indexes_replace_date_index(engine):
    upgrade(engine, MIGRATIONS_DIR, _VERSION_TABLE)

    expense_indexes = _index_names(engine, "ledger_expenses")
    assert "ix_ledger_expenses_group_currency_order" in expense_indexes
    assert "ix_ledger_expenses_group_currency_date" not in expense_indexes
    assert "ix_settlements_group_currency_order" in _index_names(engine, "settlements")

    _migrate(engine, "downgrade", "0004")

    expense_indexes = _index_names(engine, "ledger_expenses")
    assert "ix_ledger_expenses_group_currency_date" in expense_indexes
    assert "ix_ledger_expenses_group_currency_order" not in expense_indexes
    assert "ix_settlements_group_currency_order" not in _index_names(
        engine, "settlements"
    )


def test_pair_versions_start_for_stored_pairs(engine):
    _migrate(engine, "upgrade", "0006")
    pairs = sa.table(
        "pair_balances",
        *(
            sa.column(name)
            for name in (
                "group_id",
                "currency_code",
                "first_user_id",
                "second_user_id",
                "amount",
            )
        ),
    )
    with engine.begin() as connection:
        connection.execute(
            sa.insert(pairs),
            [
                {
                    "group_id": group_id,
                    "currency_code": currency,
                    "first_user_id": first,
                    "second_user_id": "zoe",
                    "amount": 100,
                }
                for group_id, currency, first in (
                    ("trip", "EUR", "ann"),
                    ("trip", "EUR", "ben"),
                    ("trip", "USD", "ann"),
                    ("flat", "EUR", "ann"),
                )
            ],
        )

    upgrade(engine, MIGRATIONS_DIR, _VERSION_TABLE)

    with engine.connect() as connection:
        versions = connection.execute(
            sa.text("SELECT group_id, currency_code, version FROM pair_versions")
        ).all()
    assert sorted(tuple(row) for row in versions) == [
        ("flat", "EUR", 1),
        ("trip", "EUR", 1),
        ("trip", "USD", 1),
    ]

    _migrate(engine, "downgrade", "0006")

    assert "pair_versions" not in sa.inspect(engine).get_table_names()


def test_lines_get_currency_date_and_time_of_expense(engine):
    _migrate(engine, "upgrade", "0007")
    expenses = sa.table(
        "ledger_expenses",
        *(
            sa.column(name)
            for name in (
                "group_id",
                "expense_id",
                "revision",
                "deleted",
                "currency_code",
                "expense_date",
                "category",
                "description",
                "total",
                "create_time",
                "update_time",
            )
        ),
    )
    lines = sa.table(
        "ledger_lines",
        *(
            sa.column(name)
            for name in ("group_id", "expense_id", "user_id", "paid", "owed")
        ),
    )
    created = datetime(2026, 1, 2, 3, 4, 5)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(expenses),
            [
                {
                    "group_id": "trip",
                    "expense_id": expense_id,
                    "revision": 1,
                    "deleted": False,
                    "currency_code": currency,
                    "expense_date": day,
                    "category": 1,
                    "description": "Dinner",
                    "total": 300,
                    "create_time": created,
                    "update_time": created,
                }
                for expense_id, currency, day in (
                    ("dinner", "EUR", date(2026, 1, 1)),
                    ("taxi", "USD", date(2026, 2, 1)),
                )
            ],
        )
        connection.execute(
            sa.insert(lines),
            [
                {
                    "group_id": "trip",
                    "expense_id": expense_id,
                    "user_id": user_id,
                    "paid": paid,
                    "owed": 150,
                }
                for expense_id in ("dinner", "taxi")
                for user_id, paid in (("ann", 300), ("ben", 0))
            ],
        )

    upgrade(engine, MIGRATIONS_DIR, _VERSION_TABLE)

    with engine.connect() as connection:
        copied = connection.execute(
            sa.text(
                "SELECT expense_id, user_id, currency_code, expense_date, "
                "create_time FROM ledger_lines ORDER BY expense_id, user_id"
            )
        ).all()
    assert [(row[0], row[1], row[2]) for row in copied] == [
        ("dinner", "ann", "EUR"),
        ("dinner", "ben", "EUR"),
        ("taxi", "ann", "USD"),
        ("taxi", "ben", "USD"),
    ]
    # SQLite returns dates and times as text.
    assert [str(row[3]) for row in copied] == [
        "2026-01-01",
        "2026-01-01",
        "2026-02-01",
        "2026-02-01",
    ]
    assert {str(row[4]).replace("T", " ") for row in copied} == {str(created)}
    line_indexes = _index_names(engine, "ledger_lines")
    assert "ix_ledger_lines_user_order" in line_indexes
    assert "ix_ledger_lines_group_user" not in line_indexes

    _migrate(engine, "downgrade", "0007")

    columns = {
        column["name"] for column in sa.inspect(engine).get_columns("ledger_lines")
    }
    assert columns == {"group_id", "expense_id", "user_id", "paid", "owed"}
    line_indexes = _index_names(engine, "ledger_lines")
    assert "ix_ledger_lines_group_user" in line_indexes
    assert "ix_ledger_lines_user_order" not in line_indexes
