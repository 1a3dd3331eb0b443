"""Settlement volume cap and totals past 64 bits, on SQLite and PostgreSQL.

Reaching the cap takes 4,000 settlements of the largest amount, so the
settlement tests store a volume near the cap in the table first, as an
earlier history of settlements would have left it. The totals past 64 bits
cannot come from expense_service, which caps each group's volume, so those
tests store such totals directly or apply events past the caps.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import grpc
import pytest
import sqlalchemy as sa

from balance_service import storage
from balance_service.app import MIGRATIONS_DIR
from balance_service.ledger import ExpenseState, InvalidEventError, apply_batch
from expense_service import volumes
from expense_service.domain import MAX_AMOUNT_MINOR
from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog_runtime.database import Database, normalise_url, upgrade
from tests.balance_service.support import (
    LedgerPeer,
    create_group,
    error_details,
    group_nets,
    reason_of,
    settle,
    start_balances,
    wait_until,
)
from tests.conftest import run_alembic

CAP = volumes.MAX_SETTLEMENT_VOLUME_MINOR
INT64_MAX = 2**63 - 1
_VERSION_TABLE = "alembic_version_balance_service"


def _store_volume(database: Database, group_id: str, currency: str, gross: int):
    with database.transaction() as session:
        session.execute(
            sa.insert(storage.SettlementVolumeRow.__table__),
            {"group_id": group_id, "currency_code": currency, "gross_minor": gross},
        )


def _assert_limit(error: grpc.RpcError, group_id: str, reached: str) -> None:
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert reason_of(error) == "GROUP_VOLUME_LIMIT"
    message = error.details()
    assert f"'groups/{group_id}'" in message
    assert f"to {reached} BHD" in message
    assert "limit of 4000000000000000.000 BHD" in message
    assert "delete settlements" in message
    violation = error_details(error)["PreconditionFailure"].violations[0]
    assert violation.subject == f"groups/{group_id}"


def test_settlement_past_cap_rejected(services):
    group_id, (ann, bob) = create_group(services.users, 2)
    _store_volume(services.database, group_id, "BHD", CAP - MAX_AMOUNT_MINOR)
    first = settle(services.balances, group_id, ann, bob, MAX_AMOUNT_MINOR, "BHD")

    with pytest.raises(grpc.RpcError) as caught:
        settle(services.balances, group_id, ann, bob, 1, "BHD")

    _assert_limit(caught.value, group_id, "4000000000000000.001")
    nets = group_nets(services.balances, group_id)["BHD"]
    assert nets == {ann: MAX_AMOUNT_MINOR, bob: -MAX_AMOUNT_MINOR}
    listed = services.balances.ListSettlements(
        pb.ListSettlementsRequest(parent=f"groups/{group_id}"), timeout=10
    ).settlements
    assert [item.name for item in listed] == [first.name]


def test_settlement_delete_and_restore_count(services):
    group_id, (ann, bob) = create_group(services.users, 2)
    _store_volume(services.database, group_id, "BHD", CAP - MAX_AMOUNT_MINOR)
    first = settle(services.balances, group_id, ann, bob, MAX_AMOUNT_MINOR, "BHD")

    services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=first.name), timeout=10
    )
    settle(services.balances, group_id, bob, ann, 1, "BHD")
    with pytest.raises(grpc.RpcError) as caught:
        services.balances.UndeleteSettlement(
            pb.UndeleteSettlementRequest(name=first.name), timeout=10
        )

    _assert_limit(caught.value, group_id, "4000000000000000.001")
    assert group_nets(services.balances, group_id)["BHD"] == {ann: -1, bob: 1}
    # Other currencies and groups have volumes of their own.
    settle(services.balances, group_id, ann, bob, MAX_AMOUNT_MINOR, "KWD")


def test_user_total_past_int64_rejected(services):
    """Group totals fit, but a user's total across groups in JPY may not."""
    first_group, (ann, bob) = create_group(services.users, 2)
    each = 4 * 10**18
    with services.database.transaction() as session:
        for index in range(3):
            group_id = f"{first_group}-{index}"
            storage.add_to_balances(
                session,
                {(group_id, "JPY", ann): each, (group_id, "JPY", bob): -each},
            )
            storage.add_to_pairs(session, {(group_id, "JPY", bob, ann): each})

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.GetUserBalance(
            pb.GetUserBalanceRequest(name=f"users/{ann}/balance"), timeout=10
        )

    error = caught.value
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE, error.details()
    assert reason_of(error) == "TOTAL_OUT_OF_RANGE"
    assert "12000000000000000000 JPY" in error.details()
    assert "GetGroupBalance" in error.details()


# Applying events past the caps


def _state(sequence: int, expense_id: str, amount: int) -> ExpenseState:
    return ExpenseState(
        sequence=sequence,
        group_id="group-a",
        expense_id=expense_id,
        revision=1,
        deleted=False,
        currency_code="EUR",
        expense_date=date(2024, 5, 1),
        category=1,
        description="Huge",
        total=amount,
        commit_time=datetime(2024, 5, 1) + timedelta(seconds=sequence),
        lines=(("ann", amount, 0), ("bob", 0, amount)),
    )


@pytest.fixture
def database(db_url):
    opened = Database(db_url)
    upgrade(opened.engine, MIGRATIONS_DIR, _VERSION_TABLE)
    yield opened
    opened.dispose()


def _net(database: Database, user_id: str) -> int:
    with database.transaction(read_only=True) as session:
        return session.scalar(
            sa.select(storage.BalanceRow.net).where(
                storage.BalanceRow.user_id == user_id
            )
        )


def test_apply_rejects_change_past_int64(database):
    batch = [_state(sequence, f"e{sequence}", 2**62) for sequence in (1, 2, 3)]

    with pytest.raises(InvalidEventError) as caught:
        apply_batch(database, batch)

    message = str(caught.value)
    assert "1 (groups/group-a/expenses/e1)" in message
    assert "3 (groups/group-a/expenses/e3)" in message
    assert "groups/group-a in EUR" in message
    with database.transaction(read_only=True) as session:
        assert storage.read_cursor(session) == 0
    assert _net(database, "ann") is None


def test_apply_rejects_total_past_int64(database):
    assert apply_batch(database, [_state(1, "e1", 2**62 + 2**61)]) == 1

    with pytest.raises(InvalidEventError) as caught:
        apply_batch(database, [_state(2, "e2", 2**62)])

    message = str(caught.value)
    assert "ledger events 2 (groups/group-a/expenses/e2)" in message
    assert "groups/group-a" in message
    assert "stays after sequence 1" in message
    with database.transaction(read_only=True) as session:
        assert storage.read_cursor(session) == 1
    net = _net(database, "ann")
    assert type(net) is int
    assert net == 2**62 + 2**61


def test_stuck_consumer_reported_by_check(db_url, users_host, tmp_path):
    """A check that waits behind an event that cannot be applied names it."""
    peer = LedgerPeer()
    running = start_balances(db_url, users_host.port, peer, tmp_path)
    try:
        group_id, (ann, bob) = create_group(running.users, 2)
        with running.database.transaction() as session:
            storage.add_to_balances(
                session,
                {
                    (group_id, "EUR", ann): INT64_MAX - 10,
                    (group_id, "EUR", bob): -(INT64_MAX - 10),
                },
            )
        peer.publish(group_id, "e1", {ann: (100, 0), bob: (0, 100)})
        # A second stream means that the first attempt to apply the event failed.
        wait_until(lambda: len(peer.requests) >= 2)

        with pytest.raises(grpc.RpcError) as caught:
            running.balances.CheckSettled(
                pb.CheckSettledRequest(name=f"groups/{group_id}/balance"), timeout=3
            )

        error = caught.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert reason_of(error) == "LEDGER_NOT_CAUGHT_UP"
        assert f"ledger events 1 (groups/{group_id}/expenses/expense-e1)" in (
            error.details()
        )
        assert running.cursor() == 0
    finally:
        running.close()
        peer.stop()


def test_migration_counts_live_settlements(db_url):
    engine = sa.create_engine(normalise_url(db_url))
    try:
        run_alembic(engine, MIGRATIONS_DIR, _VERSION_TABLE, "upgrade", "0004")
        now = datetime(2026, 1, 1)
        rows = [
            ("trip", "EUR", 1250, None),
            ("trip", "EUR", 250, None),
            ("trip", "EUR", 9000, now),  # deleted
            ("trip", "USD", 700, None),
        ]
        with engine.begin() as connection:
            connection.execute(
                sa.insert(storage.SettlementRow.__table__),
                [
                    {
                        "group_id": group_id,
                        "id": f"s{index}",
                        "payer_id": "ann",
                        "payee_id": "bob",
                        "currency_code": currency,
                        "amount": amount,
                        "settlement_date": date(2026, 1, 1),
                        "note": "",
                        "creator_id": "ann",
                        "create_time": now,
                        "update_time": now,
                        "delete_time": deleted,
                        "version": 1,
                    }
                    for index, (group_id, currency, amount, deleted) in enumerate(rows)
                ],
            )

        upgrade(engine, MIGRATIONS_DIR, _VERSION_TABLE)

        with engine.connect() as connection:
            stored = connection.execute(
                sa.text(
                    "SELECT group_id, currency_code, gross_minor FROM "
                    "settlement_volumes ORDER BY group_id, currency_code"
                )
            ).all()
        assert [tuple(row) for row in stored] == [
            ("trip", "EUR", 1500),
            ("trip", "USD", 700),
        ]
        run_alembic(engine, MIGRATIONS_DIR, _VERSION_TABLE, "downgrade", "0004")
        assert "settlement_volumes" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
