"""Balances fed by the real expense_service: writes reach the balances once,
also when balance_service restarts in the middle of a stream of writes."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import date_pb2, money_pb2

from expense_service.app import build as build_expenses
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog_runtime import config as config_module
from tests.balance_service.support import (
    create_group,
    group_nets,
    minor,
    settle,
    start_balances,
    wait_until,
)


class _ExpenseServicePeer:
    """The real expense_service seen through the `LedgerPeer` interface."""

    def __init__(self, host) -> None:
        self.host = host
        self.address = f"127.0.0.1:{host.port}"
        self.last_sequence = 0


@pytest.fixture
def expenses(users_host, tmp_path):
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path / "expenses",
            "user_service_addr": f"127.0.0.1:{users_host.port}",
            "workers": 8,
        },
    )
    host = build_expenses(config, "127.0.0.1:0")
    yield _ExpenseServicePeer(host)
    host.stop(0)


def _expense(group_id: str, members: list[str], payer: str, cents: int):
    amount = money_pb2.Money(
        currency_code="EUR", units=cents // 100, nanos=(cents % 100) * 10_000_000
    )
    return expenses_pb.Expense(
        description="Dinner",
        expense_date=date_pb2.Date(year=2024, month=5, day=1),
        total=amount,
        payers=[expenses_pb.Payer(user=f"users/{payer}", amount=amount)],
        split=expenses_pb.Split(
            type=expenses_pb.SPLIT_TYPE_EQUAL,
            participants=[
                expenses_pb.SplitParticipant(user=f"users/{user}") for user in members
            ],
        ),
        creator=f"users/{payer}",
    )


def _expected_nets(stub, group_id: str, members: list[str]) -> dict[str, int]:
    """Recompute the nets from the expense history that expense_service holds."""
    nets: dict[str, int] = defaultdict(int, dict.fromkeys(members, 0))
    token = ""
    while True:
        response = stub.ListExpenses(
            expenses_pb.ListExpensesRequest(
                parent=f"groups/{group_id}", page_token=token, page_size=1000
            ),
            timeout=10,
        )
        for expense in response.expenses:
            for payer in expense.payers:
                nets[payer.user[6:]] += minor(payer.amount)
            for share in expense.owed_amounts:
                nets[share.user[6:]] -= minor(share.amount)
        token = response.next_page_token
        if not token:
            return dict(nets)


def test_writes_reach_balances_once_across_a_restart(
    expenses, users_host, db_url, tmp_path
):
    first = start_balances(db_url, users_host.port, expenses, tmp_path / "data")
    group_id, members = create_group(first.users, 3)
    channel = grpc.insecure_channel(expenses.address)
    stub = expenses_grpc.ExpensesServiceStub(channel)
    created = [
        stub.CreateExpense(
            expenses_pb.CreateExpenseRequest(
                parent=f"groups/{group_id}",
                expense=_expense(group_id, members, members[i % 3], 1000 + i),
            ),
            timeout=10,
        ).expense
        for i in range(6)
    ]
    stub.DeleteExpense(
        expenses_pb.DeleteExpenseRequest(
            name=created[0].name, last_modifier=f"users/{members[0]}"
        ),
        timeout=10,
    )
    changed = _expense(group_id, members[:2], members[2], 777)
    changed.name = created[1].name
    changed.last_modifier = f"users/{members[2]}"
    stub.UpdateExpense(
        expenses_pb.UpdateExpenseRequest(
            expense=changed, update_mask=field_mask_pb2.FieldMask(paths=["*"])
        ),
        timeout=10,
    )

    def write_more() -> None:
        for i in range(12):
            stub.CreateExpense(
                expenses_pb.CreateExpenseRequest(
                    parent=f"groups/{group_id}",
                    expense=_expense(group_id, members, members[i % 3], 333 + i),
                ),
                timeout=10,
            )

    writer = threading.Thread(target=write_more)
    writer.start()
    first.close()
    writer.join()
    second = start_balances(db_url, users_host.port, expenses, tmp_path / "data")
    try:
        expected = _expected_nets(stub, group_id, members)
        wait_until(lambda: group_nets(second.balances, group_id).get("EUR") == expected)
        events_applied = second.cursor()
    finally:
        second.close()
        channel.close()

    assert sum(expected.values()) == 0
    assert events_applied == 6 + 1 + 1 + 12


def test_group_at_volume_cap_reads_exactly(expenses, users_host, db_url, tmp_path):
    """A group filled to the expense volume cap keeps every read exact."""
    services = start_balances(db_url, users_host.port, expenses, tmp_path / "data")
    channel = grpc.insecure_channel(expenses.address)
    stub = expenses_grpc.ExpensesServiceStub(channel)
    try:
        group_id, (ann, bob) = create_group(services.users, 2)
        largest = money_pb2.Money(currency_code="BHD", units=10**12)
        expense = _expense(group_id, [bob], ann, 100)
        expense.total.CopyFrom(largest)
        expense.payers[0].amount.CopyFrom(largest)
        parent = f"groups/{group_id}"
        stub.BatchCreateExpenses(
            expenses_pb.BatchCreateExpensesRequest(
                parent=parent,
                requests=[
                    expenses_pb.CreateExpenseRequest(expense=expense)
                    for _ in range(4000)
                ],
            ),
            timeout=120,
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateExpense(
                expenses_pb.CreateExpenseRequest(parent=parent, expense=expense),
                timeout=10,
            )
        settle(services.balances, group_id, bob, ann, 10**15, "BHD")
        owed = 4 * 10**18 - 10**15
        wait_until(
            lambda: (
                group_nets(services.balances, group_id).get("BHD")
                == {ann: owed, bob: -owed}
            ),
            timeout=60,
        )

        report = services.balances.GetGroupReport(
            balances_pb.GetGroupReportRequest(
                name=f"groups/{group_id}/report", currency_code="BHD"
            ),
            timeout=10,
        ).report
        pairs = services.balances.ListPairwiseBalances(
            balances_pb.ListPairwiseBalancesRequest(parent=parent), timeout=10
        ).pairwise_balances
        plan = services.balances.ComputeSettlementPlan(
            balances_pb.ComputeSettlementPlanRequest(name=f"groups/{group_id}/balance"),
            timeout=10,
        ).transfers
        check = services.balances.CheckSettled(
            balances_pb.CheckSettledRequest(name=f"groups/{group_id}/balance"),
            timeout=10,
        )
        user = services.balances.GetUserBalance(
            balances_pb.GetUserBalanceRequest(name=f"users/{ann}/balance"), timeout=10
        ).balance
    finally:
        services.close()
        channel.close()

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert minor(report.total_spent) == 4 * 10**18
    assert report.expense_count == 4000
    assert [minor(total.amount) for total in report.month_totals] == [4 * 10**18]
    paid = {member.user: minor(member.paid_amount) for member in report.member_totals}
    assert paid == {f"users/{ann}": 4 * 10**18, f"users/{bob}": 0}
    assert [minor(pair.amount) for pair in pairs] == [owed]
    assert [(t.payer, t.payee, minor(t.amount)) for t in plan] == [
        (f"users/{bob}", f"users/{ann}", owed)
    ]
    assert not check.settled
    assert [minor(amount) for amount in user.total_net_amounts] == [owed]


def test_two_balance_services_share_one_database(
    expenses, users_host, db_url, tmp_path, caplog
):
    """Two consumers of one ledger on one database race without an ERROR.

    Both apply each new event at about the same time. The loser of a race
    rolls back and logs it without SQL or the expense's data.
    """
    caplog.set_level(logging.INFO)
    first = start_balances(db_url, users_host.port, expenses, tmp_path / "first")
    second = start_balances(db_url, users_host.port, expenses, tmp_path / "second")
    channel = grpc.insecure_channel(expenses.address)
    stub = expenses_grpc.ExpensesServiceStub(channel)
    try:
        group_id, members = create_group(first.users, 3)
        for i in range(40):
            expense = _expense(group_id, members, members[i % 3], 1000 + i)
            expense.description = "private dinner note"
            stub.CreateExpense(
                expenses_pb.CreateExpenseRequest(
                    parent=f"groups/{group_id}", expense=expense
                ),
                timeout=10,
            )
        expected = _expected_nets(stub, group_id, members)
        for services in (first, second):
            wait_until(
                lambda services=services: (
                    group_nets(services.balances, group_id).get("EUR") == expected
                )
            )
    finally:
        first.close()
        second.close()
        channel.close()

    ledger_records = [
        record for record in caplog.records if record.name.startswith("balance_service")
    ]
    errors = [r.getMessage() for r in ledger_records if r.levelno >= logging.ERROR]
    assert errors == []
    for record in ledger_records:
        message = record.getMessage()
        assert "private dinner note" not in message
        assert "parameters" not in message
        assert "INSERT" not in message
