"""Storage behaviour that RPCs cannot trigger on demand: lost update races."""

from __future__ import annotations

import pytest

from splitlog_runtime.database import Database, upgrade
from splitlog_runtime.errors import Aborted
from user_service import storage
from user_service.app import MIGRATIONS_DIR
from user_service.servicer import transaction


@pytest.fixture
def database(db_url):
    database = Database(db_url)
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_user_service")
    yield database
    database.dispose()


def _insert_user(database: Database, user_id: str) -> None:
    now = storage.utc_now()
    row = storage.UserRow(
        id=user_id,
        currency_code="USD",
        state="ACTIVE",
        create_time=now,
        update_time=now,
    )
    row.set_email(f"{user_id}@example.com")
    row.set_display_name("Before")
    with database.transaction() as session:
        storage.add_user(session, row)


def test_concurrent_update_raises_aborted(database):
    if database.dialect == "sqlite":
        pytest.skip(
            "SQLite write transactions take the database lock when they begin, "
            "so a second writer waits instead of racing"
        )
    _insert_user(database, "racer")

    with pytest.raises(Aborted) as caught:  # noqa: SIM117 - the nesting is the race
        with transaction(database) as session:
            row = storage.require_user(session, "racer")
            with transaction(database) as other:
                storage.require_user(other, "racer").set_display_name("Winner")
            row.set_display_name("Loser")

    assert caught.value.reason == "CONCURRENT_MODIFICATION"
    with database.transaction() as session:
        stored = storage.require_user(session, "racer")
        assert stored.display_name == "Winner"
        assert stored.version == 2


def test_version_increments_on_each_update(database):
    _insert_user(database, "counter")

    for name in ("One", "Two"):
        with transaction(database) as session:
            storage.require_user(session, "counter").set_display_name(name)

    with database.transaction() as session:
        assert storage.require_user(session, "counter").version == 3
