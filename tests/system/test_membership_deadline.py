"""Membership checks against a user_service process stopped with SIGSTOP.

A stopped process keeps its connections open, so a call to it waits for its
whole deadline. balance_service and expense_service give their call to
user_service a deadline that ends a margin before their caller's
(`splitlog_runtime.channels.answer_before`). The caller then receives
UNAVAILABLE naming user_service before its own deadline, rather than
DEADLINE_EXCEEDED from the service that made the check. user_service runs
as a real process (`splitlog serve`), the other two in this process.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_status import rpc_status

from balance_service.app import build as build_balances
from expense_service.app import build as build_expenses
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.errors import status_reason
from splitlog_runtime.server import ServiceHost
from tests.ports import closed_address
from tests.system.conftest import kill_component, serve_component, stopped
from tests.system.test_deadline_request_id import _expense

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

#: The deadline of the calls made while user_service is stopped.
CLIENT_DEADLINE = 3.0


@dataclass
class Running:
    users: subprocess.Popen
    users_channel: grpc.Channel
    balances: ServiceHost
    expenses: ServiceHost


@pytest.fixture
def running(tmp_path) -> Iterator[Running]:
    users_dir = tmp_path / "users"
    users_dir.mkdir()
    users, users_address = serve_component(
        "user_service",
        users_dir,
        {
            "SPLITLOG_BALANCE_SERVICE_ADDR": closed_address(),
            "SPLITLOG_EXPENSE_SERVICE_ADDR": closed_address(),
            "SPLITLOG_LOG_SERVICE_ADDR": closed_address(),
        },
    )
    channel = grpc.insecure_channel(users_address)
    expenses = None
    balances = None
    try:
        base = config_module.load(
            environ={},
            overrides={
                "auth_required": False,
                "data_dir": tmp_path,
                "grace_seconds": 1.0,
                "user_service_addr": users_address,
                "log_service_addr": closed_address(),
            },
        )
        expenses = build_expenses(base, "127.0.0.1:0")
        balances = build_balances(
            base.replace(expense_service_addr=f"127.0.0.1:{expenses.port}"),
            "127.0.0.1:0",
        )
        yield Running(users, channel, balances, expenses)
    finally:
        channel.close()
        kill_component(users)
        if balances is not None:
            balances.stop(0)
        if expenses is not None:
            expenses.stop(0)


def _create_group(channel: grpc.Channel) -> tuple[str, str]:
    """Create a user and a group of theirs, and return both ids."""
    users = users_grpc.UsersServiceStub(channel)
    user_id = f"u{uuid.uuid4().hex[:12]}"
    user = users.CreateUser(
        users_pb.CreateUserRequest(
            user=users_pb.User(email=f"{user_id}@example.com", display_name="Ann"),
            user_id=user_id,
        ),
        timeout=10,
    ).user
    group = users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Trip", creator=user.name)
        ),
        timeout=10,
    ).group
    return group.name.split("/", 1)[1], user_id


def _call_stopped(running: Running, call) -> tuple[grpc.RpcError, float]:
    """Run `call` while user_service is stopped, and return its error and
    duration in seconds."""
    with stopped(running.users.pid):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            call()
        elapsed = time.monotonic() - started
    return caught.value, elapsed


def test_balance_read_names_stopped_user_service(running):
    group_id, _ = _create_group(running.users_channel)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.balances.port}")
    stub = balances_grpc.BalancesServiceStub(channel)
    request = balances_pb.GetGroupBalanceRequest(name=f"groups/{group_id}/balance")
    try:
        error, elapsed = _call_stopped(
            running, lambda: stub.GetGroupBalance(request, timeout=CLIENT_DEADLINE)
        )
    finally:
        channel.close()

    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "user_service did not respond" in error.details()
    assert f"groups/{group_id}" in error.details()
    assert status_reason_of(error) == "USER_SERVICE_UNAVAILABLE"
    assert elapsed < CLIENT_DEADLINE


def test_expense_write_names_stopped_user_service(running):
    group_id, user_id = _create_group(running.users_channel)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.expenses.port}")
    stub = expenses_grpc.ExpensesServiceStub(channel)
    request = expenses_pb.CreateExpenseRequest(
        parent=f"groups/{group_id}",
        expense=_expense(user_id, "stopped user_service"),
    )
    try:
        error, elapsed = _call_stopped(
            running, lambda: stub.CreateExpense(request, timeout=CLIENT_DEADLINE)
        )
    finally:
        channel.close()

    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "user_service did not respond" in error.details()
    assert f"groups/{group_id}" in error.details()
    assert status_reason_of(error) == "USER_SERVICE_UNAVAILABLE"
    assert elapsed < CLIENT_DEADLINE


def status_reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}"
    return status_reason(status)
