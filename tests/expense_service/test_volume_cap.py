"""The cap on a group's expense volume, against real servers and databases.

Each group reaches the cap with one batch of 4,000 expenses of the largest
amount, 1,000,000,000,000.000 BHD (10**15 fils), because the cap is
4 * 10**18 fils. Every test uses a group of its own.
"""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2

from expense_service import storage, volumes
from expense_service.app import MIGRATIONS_DIR
from expense_service.domain import MAX_AMOUNT_MINOR
from expense_service.ledger import LedgerFeed
from expense_service.servicer import ExpensesServicer
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog_runtime.database import Database, normalise_url, upgrade
from splitlog_runtime.errors import FailedPrecondition
from splitlog_runtime.fencing import GroupWrites
from tests.conftest import run_alembic
from tests.expense_service.support import (
    TIMEOUT,
    create_group,
    equal_expense,
    error_details,
    money,
    reason_of,
)

CURRENCY = "BHD"
LARGEST = "1000000000000.000"  # MAX_AMOUNT_MINOR fils
PER_CAP = volumes.MAX_EXPENSE_VOLUME_MINOR // MAX_AMOUNT_MINOR  # 4,000
_VERSION_TABLE = "alembic_version_expense_service"


@pytest.fixture
def group(clients):
    return create_group(clients.users, size=2)


def _expense(group, total: str = LARGEST) -> pb.Expense:
    """One member pays, the other owes all: the most a balance can move."""
    return equal_expense(
        group, total, CURRENCY, participants=[group.members[1]], description="Big"
    )


def _batch(clients, group, count: int, total: str = LARGEST) -> list[pb.Expense]:
    creates = [
        pb.CreateExpenseRequest(expense=_expense(group, total)) for _ in range(count)
    ]
    response = clients.expenses.BatchCreateExpenses(
        pb.BatchCreateExpensesRequest(parent=group.name, requests=creates),
        timeout=120,
    )
    return list(response.expenses)


def _create(clients, group, total: str = LARGEST) -> pb.Expense:
    return clients.expenses.CreateExpense(
        pb.CreateExpenseRequest(parent=group.name, expense=_expense(group, total)),
        timeout=TIMEOUT,
    ).expense


def _count(clients, group) -> int:
    count, token = 0, ""
    while True:
        page = clients.expenses.ListExpenses(
            pb.ListExpensesRequest(parent=group.name, page_size=1000, page_token=token),
            timeout=TIMEOUT,
        )
        count += len(page.expenses)
        token = page.next_page_token
        if not token:
            return count


def _assert_limit(error: grpc.RpcError, group, reached: str) -> None:
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert reason_of(error) == "GROUP_VOLUME_LIMIT"
    message = error.details()
    assert repr(group.name) in message
    assert f"to {reached} {CURRENCY}" in message
    assert f"limit of 4000000000000000.000 {CURRENCY}" in message
    assert "delete or shrink expenses" in message
    violation = error_details(error)["PreconditionFailure"].violations[0]
    assert (violation.type, violation.subject) == ("GROUP_VOLUME_LIMIT", group.name)


def test_batch_past_cap_writes_none(clients, group):
    with pytest.raises(grpc.RpcError) as caught:
        _batch(clients, group, PER_CAP + 1)

    _assert_limit(caught.value, group, "4001000000000000.000")
    assert _count(clients, group) == 0
    # The failed batch left the volume at zero: a full batch still fits.
    assert len(_batch(clients, group, PER_CAP)) == PER_CAP


def test_cap_holds_for_creates_refunds_and_restores(clients, group):
    created = _batch(clients, group, PER_CAP)

    for total in ("0.001", "-0.001"):  # a refund adds volume too
        with pytest.raises(grpc.RpcError) as caught:
            _create(clients, group, total)
        _assert_limit(caught.value, group, "4000000000000000.001")

    # Deleting frees the expense's volume and restoring takes it again.
    deleted = clients.expenses.DeleteExpense(
        pb.DeleteExpenseRequest(name=created[0].name, last_modifier=group.members[0]),
        timeout=TIMEOUT,
    ).expense
    _create(clients, group, "0.001")
    with pytest.raises(grpc.RpcError) as caught:
        clients.expenses.UndeleteExpense(
            pb.UndeleteExpenseRequest(
                name=deleted.name, last_modifier=group.members[0]
            ),
            timeout=TIMEOUT,
        )
    _assert_limit(caught.value, group, "4000000000000000.001")
    assert _count(clients, group) == PER_CAP

    # Other groups keep their own volume.
    other = create_group(clients.users, size=2)
    assert _create(clients, other).total.units == 10**12


def test_update_past_cap_rejected(clients, group):
    created = _batch(clients, group, PER_CAP)

    def update(expense: pb.Expense, total: str) -> pb.Expense:
        changed = _expense(group, total)
        changed.name = expense.name
        changed.last_modifier = group.members[0]
        return clients.expenses.UpdateExpense(
            pb.UpdateExpenseRequest(
                expense=changed,
                update_mask=field_mask_pb2.FieldMask(paths=["total", "payers"]),
            ),
            timeout=TIMEOUT,
        ).expense

    # A change that lowers the volume is accepted at the cap.
    smaller = update(created[0], "500000000000.000")
    _create(clients, group, "0.001")
    with pytest.raises(grpc.RpcError) as caught:
        update(smaller, LARGEST)
    _assert_limit(caught.value, group, "4000000000000000.001")
    stored = clients.expenses.GetExpense(
        pb.GetExpenseRequest(name=smaller.name), timeout=TIMEOUT
    ).expense
    assert stored.etag == smaller.etag
    # Moving an expense to another currency moves its volume there.
    moved = _expense(group, "1.00")
    moved.total.CopyFrom(money("1.00", "EUR"))
    moved.payers[0].amount.CopyFrom(money("1.00", "EUR"))
    moved.name = smaller.name
    moved.last_modifier = group.members[0]
    clients.expenses.UpdateExpense(
        pb.UpdateExpenseRequest(
            expense=moved,
            update_mask=field_mask_pb2.FieldMask(paths=["total", "payers"]),
        ),
        timeout=TIMEOUT,
    )
    assert _create(clients, group, "499999999999.999").total.units == 499999999999


def test_concurrent_creates_past_cap(clients, group):
    """Creates sent at once share group commits; only those that fit are kept."""
    _batch(clients, group, PER_CAP - 4)
    other = create_group(clients.users, size=2)

    def create(index: int):
        target = group if index % 2 else other
        try:
            return _create(clients, target)
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(create, range(32)))

    failed = [item for item in outcomes if isinstance(item, grpc.RpcError)]
    assert len(failed) == 12
    for error in failed:
        _assert_limit(error, group, "4001000000000000.000")
    assert _count(clients, group) == PER_CAP
    assert _count(clients, other) == 16


def test_group_commit_past_cap_writes_none(clients, module_db_url, group):
    """A group commit with one create past the cap fails as a whole."""
    database = Database(module_db_url)
    try:
        # The group commit writes without membership checks; none is needed.
        servicer = ExpensesServicer(database, None, LedgerFeed(), GroupWrites())
        other = create_group(clients.users, size=2)
        _batch(clients, group, PER_CAP)
        creates = [
            ExpensesServicer._check_create(
                pb.CreateExpenseRequest(expense=_expense(target, "1.000")),
                target.name,
                "",
            )
            for target in (other, group, other)
        ]
        with pytest.raises(FailedPrecondition) as caught:
            servicer._write_creates(creates)
    finally:
        database.dispose()

    assert caught.value.reason == "GROUP_VOLUME_LIMIT"
    assert group.name in caught.value.message
    assert _count(clients, other) == 0
    # Nothing of the failed group counts in the other group's volume.
    assert len(_batch(clients, other, PER_CAP)) == PER_CAP


def test_migration_counts_live_expenses(db_url):
    engine = sa.create_engine(normalise_url(db_url))
    try:
        run_alembic(engine, MIGRATIONS_DIR, _VERSION_TABLE, "upgrade", "0002")
        # Revision 0002 has the expenses table of the current model.
        expenses = storage.ExpenseRow.__table__
        now = datetime.datetime(2026, 1, 1)
        rows = [
            ("trip", "EUR", 1250, None),
            ("trip", "EUR", -250, None),  # a refund counts by its size
            ("trip", "EUR", 9000, now),  # deleted
            ("trip", "USD", 700, None),
            ("home", "EUR", MAX_AMOUNT_MINOR, None),
        ]
        with engine.begin() as connection:
            connection.execute(
                sa.insert(expenses),
                [
                    {
                        "name": f"groups/{group_id}/expenses/e{index}",
                        "group_id": group_id,
                        "description": "Dinner",
                        "category": 1,
                        "expense_date": datetime.date(2026, 1, 1),
                        "currency_code": currency,
                        "total_minor": total,
                        "split_type": 1,
                        "notes": "",
                        "creator": "users/ann",
                        "last_modifier": "users/ann",
                        "create_time": now,
                        "update_time": now,
                        "delete_time": deleted,
                        "revision": 1,
                    }
                    for index, (group_id, currency, total, deleted) in enumerate(rows)
                ],
            )

        upgrade(engine, MIGRATIONS_DIR, _VERSION_TABLE)

        with engine.connect() as connection:
            stored = connection.execute(
                sa.text(
                    "SELECT group_id, currency_code, gross_minor FROM expense_volumes "
                    "ORDER BY group_id, currency_code"
                )
            ).all()
        assert [tuple(row) for row in stored] == [
            ("home", "EUR", MAX_AMOUNT_MINOR),
            ("trip", "EUR", 1500),
            ("trip", "USD", 700),
        ]
        run_alembic(engine, MIGRATIONS_DIR, _VERSION_TABLE, "downgrade", "0002")
        assert "expense_volumes" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
