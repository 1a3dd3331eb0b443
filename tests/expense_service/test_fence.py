"""GetLedgerPosition with a group: it drops the cached member list and waits
for the group's writes in flight.

expense_service runs for real; user_service is a small gRPC server here,
so that a test can hold a membership check open or change the response.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest

from expense_service.app import build as build_expenses
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as pb_grpc
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from tests.expense_service.support import day, money, reason_of

TIMEOUT = 10.0
GROUP = "groups/trip"
ALICE = "users/alice"
XAVIER = "users/xavier"


class Members(users_grpc.UsersServiceServicer):
    """ListGroupMembers of one group, which a test can hold open or change."""

    def __init__(self) -> None:
        self.leaving: set[str] = set()
        self.called = threading.Event()
        self.open = threading.Event()
        self.open.set()

    def ListGroupMembers(self, request, context):
        # The response is built before the wait, like a slow reply to an old read.
        response = users_pb.ListGroupMembersResponse(
            members=[
                users_pb.Member(
                    name=f"{GROUP}/members/{user.removeprefix('users/')}",
                    user=user,
                    user_state=users_pb.User.STATE_ACTIVE,
                    leaving=user in self.leaving,
                )
                for user in (ALICE, XAVIER)
            ]
        )
        self.called.set()
        assert self.open.wait(TIMEOUT)
        return response


@dataclass
class Service:
    members: Members
    expenses: pb_grpc.ExpensesServiceStub
    ledger: ledger_grpc.LedgerServiceStub


@pytest.fixture
def service(tmp_path) -> Iterator[Service]:
    members = Members()
    users = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    users_grpc.add_UsersServiceServicer_to_server(members, users)
    users_port = users.add_insecure_port("127.0.0.1:0")
    users.start()
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path,
            "expense_service_db_url": f"sqlite:///{tmp_path / 'expenses.db'}",
            "user_service_addr": f"127.0.0.1:{users_port}",
            "workers": 8,
            "grace_seconds": 1.0,
        },
    )
    expenses = build_expenses(config, "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{expenses.port}")
    yield Service(
        members,
        pb_grpc.ExpensesServiceStub(channel),
        ledger_grpc.LedgerServiceStub(channel),
    )
    members.open.set()
    channel.close()
    expenses.stop(0)
    users.stop(0)


def _create(service: Service, participants: list[str]) -> pb.Expense:
    expense = pb.Expense(
        description="Taxi",
        expense_date=day(),
        total=money("10.00", "EUR"),
        payers=[pb.Payer(user=ALICE, amount=money("10.00", "EUR"))],
        split=pb.Split(
            type=pb.SPLIT_TYPE_EQUAL,
            participants=[pb.SplitParticipant(user=user) for user in participants],
        ),
        creator=ALICE,
    )
    request = pb.CreateExpenseRequest(parent=GROUP, expense=expense)
    return service.expenses.CreateExpense(request, timeout=TIMEOUT).expense


def _position(service: Service, group: str = "", timeout: float = TIMEOUT) -> int:
    request = ledger_pb.GetLedgerPositionRequest(group=group)
    return service.ledger.GetLedgerPosition(request, timeout=timeout).last_sequence


def _start(call) -> futures.Future:
    executor = futures.ThreadPoolExecutor(max_workers=1)
    future = executor.submit(call)
    executor.shutdown(wait=False)
    return future


def test_fence_waits_for_write_in_flight(service):
    service.members.open.clear()
    write = _start(lambda: _create(service, [ALICE, XAVIER]))
    assert service.members.called.wait(TIMEOUT)

    fenced = _start(lambda: _position(service, GROUP))
    time.sleep(0.3)
    waited = not fenced.done()
    service.members.open.set()
    write.result(TIMEOUT)

    assert waited
    assert fenced.result(TIMEOUT) == _position(service) == 1


def test_fence_times_out_with_write_in_flight(service):
    service.members.open.clear()
    write = _start(lambda: _create(service, [ALICE, XAVIER]))
    assert service.members.called.wait(TIMEOUT)

    with pytest.raises(grpc.RpcError) as caught:
        _position(service, GROUP, timeout=0.5)
    unfenced = _position(service)
    other_group = _position(service, "groups/other", timeout=0.5)
    service.members.open.set()
    write.result(TIMEOUT)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(caught.value) == "WRITES_IN_FLIGHT"
    assert GROUP in caught.value.details()
    assert unfenced == other_group == 0


def test_fence_drops_cached_members(service):
    _create(service, [ALICE])
    service.members.leaving.add(XAVIER)
    # The list cached by the first create still shows Xavier as a member.
    _create(service, [ALICE, XAVIER])

    _position(service, GROUP)

    with pytest.raises(grpc.RpcError) as caught:
        _create(service, [ALICE, XAVIER])
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "MEMBER_LEAVING"
    assert "expense.split.participants[1].user" in caught.value.details()


def test_fence_discards_list_fetched_before_it(service):
    service.members.open.clear()
    write = _start(lambda: _create(service, [ALICE]))
    assert service.members.called.wait(TIMEOUT)
    fenced = _start(lambda: _position(service, GROUP))
    time.sleep(0.2)
    service.members.leaving.add(XAVIER)
    service.members.open.set()
    write.result(TIMEOUT)
    fenced.result(TIMEOUT)

    # The list of the write above shows Xavier as a member, but it was
    # fetched before the fence and must not be reused after it.
    with pytest.raises(grpc.RpcError) as caught:
        _create(service, [ALICE, XAVIER])

    assert reason_of(caught.value) == "MEMBER_LEAVING"


def test_fence_rejects_invalid_group(service):
    with pytest.raises(grpc.RpcError) as caught:
        _position(service, "trip")

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_fence_waits_for_delete_in_flight(service, tmp_path):
    """A delete checks no membership, but it moves balances, so the fence
    waits for it too. The test holds SQLite's write lock to keep it open."""
    created = _create(service, [ALICE, XAVIER])
    lock = sqlite3.connect(tmp_path / "expenses.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        delete = _start(
            lambda: service.expenses.DeleteExpense(
                pb.DeleteExpenseRequest(name=created.name, last_modifier=ALICE),
                timeout=TIMEOUT,
            )
        )
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as caught:
            _position(service, GROUP, timeout=0.5)
        still_running = not delete.done()
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    assert still_running
    assert delete.result(TIMEOUT).expense.HasField("delete_time")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(caught.value) == "WRITES_IN_FLIGHT"
    assert _position(service, GROUP) == 2
