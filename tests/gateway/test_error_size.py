"""Errors about hundreds of users through the gateway, with the real user,
expense and balance services.

Such an error names every user in its details. Each status must stay small
enough for gRPC's 8 KiB metadata limit of the gateway's channel and of the
client's channel, so the client gets the service's own error on REST and on
gRPC, not RESOURCE_EXHAUSTED from the transport.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.errors import MAX_LISTED_VIOLATIONS, OMITTED_VIOLATIONS_KEY
from tests.gateway.support import LoopThread, Stack, running_stack

TIMEOUT = 30.0
USERS = 500
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
PRECONDITION_FAILURE = "type.googleapis.com/google.rpc.PreconditionFailure"


@pytest.fixture(scope="module")
def stack(loop_thread: LoopThread, tmp_path_factory) -> Iterator[Stack]:
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("error-size"),
            "workers": 16,
            "grace_seconds": 1.0,
            "deadline_seconds": TIMEOUT,
        },
    )
    with running_stack(loop_thread, base) as running:
        yield running


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.gateway.http_port}", timeout=TIMEOUT
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    """A client channel to the gateway with grpcio's default metadata limit."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}") as opened:
        yield opened


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _create_users(http: httpx.Client, count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]

    def create(index: int) -> str:
        user = {"email": f"u{index}-{prefix}@example.com", "displayName": "Bulk"}
        return _ok(http.post("/v1/users", json=user))["user"]["name"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, range(count)))


def _create_group(http: httpx.Client, creator: str, members: list[str]) -> str:
    body = {"displayName": "Big trip", "creator": creator}
    group = _ok(http.post("/v1/groups", json=body))["group"]["name"]

    def add(user: str) -> None:
        _ok(http.post(f"/v1/{group}/members", json={"user": user}))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, members))
    return group


def _expense(payer: str, participants: list[str]) -> dict:
    """Return an expense of 1 EUR per participant, paid by `payer`."""
    total = {"currencyCode": "EUR", "units": str(len(participants))}
    return {
        "description": "Tickets",
        "expenseDate": {"year": 2024, "month": 5, "day": 1},
        "total": total,
        "payers": [{"user": payer, "amount": total}],
        "split": {
            "type": "SPLIT_TYPE_EQUAL",
            "participants": [{"user": user} for user in participants],
        },
        "creator": payer,
    }


def _detail(error: dict, type_url: str) -> dict:
    found = [detail for detail in error["details"] if detail["@type"] == type_url]
    assert len(found) == 1, error["details"]
    return found[0]


def _grpc_details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list]:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()}: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    violations = []
    for packed in status.details:
        failure = error_details_pb2.PreconditionFailure()
        if packed.Unpack(failure):
            violations.extend(failure.violations)
        else:
            assert packed.Unpack(info)
    return info, list(violations)


@pytest.fixture(scope="module")
def outsiders(http) -> list[str]:
    """USERS users who belong to no group."""
    return _create_users(http, USERS)


@pytest.fixture(scope="module")
def small_group(http) -> tuple[str, str]:
    """A group of one member; return the group and the member."""
    creator = _create_users(http, 1)[0]
    return _create_group(http, creator, []), creator


def test_expense_500_non_members_rest(http, small_group, outsiders):
    group, creator = small_group

    response = http.post(f"/v1/{group}/expenses", json=_expense(creator, outsiders))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "FAILED_PRECONDITION"
    info = _detail(error, ERROR_INFO)
    assert info["reason"] == "NOT_A_GROUP_MEMBER"
    listed = _detail(error, PRECONDITION_FAILURE)["violations"]
    assert 0 < len(listed) <= MAX_LISTED_VIOLATIONS
    assert int(info["metadata"][OMITTED_VIOLATIONS_KEY]) == USERS - len(listed)
    assert f"and {USERS - 5} more are not members of {group!r}" in error["message"]


def test_expense_500_non_members_grpc(channel, small_group, outsiders):
    group, creator = small_group
    stub = expenses_grpc.ExpensesServiceStub(channel)
    expense = expenses_pb.Expense()
    json_format.ParseDict(_expense(creator, outsiders), expense)

    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateExpense(
            expenses_pb.CreateExpenseRequest(parent=group, expense=expense),
            timeout=TIMEOUT,
        )

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, violations = _grpc_details(caught.value)
    assert info.reason == "NOT_A_GROUP_MEMBER"
    assert 0 < len(violations) <= MAX_LISTED_VIOLATIONS
    assert int(info.metadata[OMITTED_VIOLATIONS_KEY]) == USERS - len(violations)


@pytest.fixture(scope="module")
def unsettled_group(http, outsiders) -> str:
    """A group of USERS members in which everyone but its creator owes 1 EUR."""
    creator, *others = outsiders
    group = _create_group(http, creator, others)
    _ok(http.post(f"/v1/{group}/expenses", json=_expense(creator, outsiders)))
    return group


def test_delete_group_500_unsettled_rest(http, unsettled_group):
    response = http.delete(f"/v1/{unsettled_group}")

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "FAILED_PRECONDITION"
    assert _detail(error, ERROR_INFO)["reason"] == "UNSETTLED_BALANCE"
    # The creator is owed, and every other member owes: USERS balances. The
    # message lists whole balances, as many as fit, and counts the rest.
    message = error["message"]
    counted = re.search(r" and (\d+) more balances; record settlements", message)
    assert counted is not None, message
    listed = message.count(" owes ") + message.count(" is owed ")
    assert listed == 5
    assert listed + int(counted.group(1)) == USERS
    [violation] = _detail(error, PRECONDITION_FAILURE)["violations"]
    assert "omitted" not in violation["description"]
    assert " more balances; record settlements" in violation["description"]
    assert http.get(f"/v1/{unsettled_group}").status_code == 200


def test_delete_group_500_unsettled_grpc(channel, unsettled_group):
    stub = users_grpc.UsersServiceStub(channel)

    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteGroup(
            users_pb.DeleteGroupRequest(name=unsettled_group), timeout=TIMEOUT
        )

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, violations = _grpc_details(caught.value)
    assert info.reason == "UNSETTLED_BALANCE"
    assert [v.subject for v in violations] == [unsettled_group]
