"""A create that times out in the gateway names the request_id it was sent with.

The gateway fills a request_id into each create that comes without one.
When the backend then misses the deadline, a client that sent no key has
none to repeat, so the error gives the key that the gateway used, over gRPC
and REST alike. Sending the create again with that key stores one copy.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_status import rpc_status

from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from tests.system.conftest import stopped, wait_for_health
from tests.system.money_support import (
    Clients,
    create_group,
    list_expenses,
    money_of,
    start_with_deadline,
)

pytestmark = pytest.mark.system

#: The gateway's own deadline, which applies to calls that carry none.
GATEWAY_DEADLINE = 1.0


def _expense(payer: str, description: str) -> expenses_pb.Expense:
    amount = money_of(1250, "EUR")
    return expenses_pb.Expense(
        description=description,
        expense_date=date_pb2.Date(year=2024, month=5, day=1),
        total=amount,
        payers=[expenses_pb.Payer(user=f"users/{payer}", amount=amount)],
        split=expenses_pb.Split(
            type=expenses_pb.SPLIT_TYPE_EQUAL,
            participants=[expenses_pb.SplitParticipant(user=f"users/{payer}")],
        ),
        creator=f"users/{payer}",
    )


def _rest_body(payer: str, description: str) -> dict:
    return {
        "description": description,
        "expenseDate": {"year": 2024, "month": 5, "day": 1},
        "total": {"currencyCode": "EUR", "units": "12", "nanos": 500000000},
        "payers": [
            {
                "user": f"users/{payer}",
                "amount": {"currencyCode": "EUR", "units": "12", "nanos": 500000000},
            }
        ],
        "split": {
            "type": "SPLIT_TYPE_EQUAL",
            "participants": [{"user": f"users/{payer}"}],
        },
        "creator": f"users/{payer}",
    }


def _error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status: {error.details()}"
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {error.details()}")


def _rest_error_info(body: dict) -> dict:
    for detail in body["error"].get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail
    raise AssertionError(f"no ErrorInfo in {body}")


def test_timed_out_create_names_filled_request_id(splitlog_factory):
    running, backend = start_with_deadline(
        splitlog_factory, GATEWAY_DEADLINE, "expense_service"
    )
    clients = Clients.connect(running.grpc_address)
    try:
        group_id, (payer, _) = create_group(clients, 2)
        parent = f"groups/{group_id}"
        with stopped(backend):
            with pytest.raises(grpc.RpcError) as caught:
                clients.expenses.CreateExpense(
                    expenses_pb.CreateExpenseRequest(
                        parent=parent, expense=_expense(payer, "sent over gRPC")
                    )
                )
            rest = httpx.post(
                f"{running.http_url}/v1/{parent}/expenses",
                json=_rest_body(payer, "sent over REST"),
                timeout=30,
            )
            with pytest.raises(grpc.RpcError) as caught_own:
                clients.expenses.CreateExpense(
                    expenses_pb.CreateExpenseRequest(
                        parent=parent,
                        expense=_expense(payer, "sent with a key"),
                        request_id="3f1c1b9e-8d44-4c1e-9c55-0a4a7d2b6e10",
                    )
                )
        wait_for_health(running.grpc_address, 30)

        grpc_key = _error_info(caught.value).metadata["request_id"]
        rest_key = _rest_error_info(rest.json())["metadata"]["request_id"]
        again = clients.expenses.CreateExpense(
            expenses_pb.CreateExpenseRequest(
                parent=parent,
                expense=_expense(payer, "sent over gRPC"),
                request_id=grpc_key,
            ),
            timeout=10,
        )
        rest_again = httpx.post(
            f"{running.http_url}/v1/{parent}/expenses",
            params={"requestId": rest_key},
            json=_rest_body(payer, "sent over REST"),
            timeout=10,
        )
        stored = list_expenses(clients, group_id, False)
    finally:
        clients.close()

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"request_id {grpc_key!r}" in caught.value.details()
    assert "send it again with that request_id" in caught.value.details()
    assert rest.status_code == 504
    assert f"request_id {rest_key!r}" in rest.json()["error"]["message"]
    assert rest_key != grpc_key
    assert caught_own.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "retry it with the same request id" in caught_own.value.details()
    assert "request_id" not in _error_info(caught_own.value).metadata
    assert again.expense.description == "sent over gRPC"
    assert rest_again.status_code == 200, rest_again.text
    descriptions = [expense.description for expense in stored]
    assert descriptions.count("sent over gRPC") == 1
    assert descriptions.count("sent over REST") == 1


#: Seconds the in-process test holds the expense database locked: longer than
#: the gateway's deadline, shorter than the service's wait for the lock.
LOCK_SECONDS = 3.0


def _hold_expense_database(path, seconds: float) -> threading.Thread:
    """Lock the expense database for `seconds`, in a thread that then commits."""
    connection = sqlite3.connect(
        path, timeout=10, isolation_level=None, check_same_thread=False
    )
    connection.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_timed_out_create_in_process_names_request_id(splitlog_factory):
    running = splitlog_factory("--deadline-seconds", str(GATEWAY_DEADLINE))
    running.wait_until_ready()
    clients = Clients.connect(running.grpc_address)
    try:
        group_id, (payer, _) = create_group(clients, 2)
        parent = f"groups/{group_id}"
        holder = _hold_expense_database(
            running.data_dir / "expense_service.db", LOCK_SECONDS
        )
        try:
            with pytest.raises(grpc.RpcError) as caught:
                clients.expenses.CreateExpense(
                    expenses_pb.CreateExpenseRequest(
                        parent=parent, expense=_expense(payer, "sent in process")
                    )
                )
        finally:
            holder.join()
        info = _error_info(caught.value)
        assert "request_id" in info.metadata, caught.value.details()
        key = info.metadata["request_id"]
        again = clients.expenses.CreateExpense(
            expenses_pb.CreateExpenseRequest(
                parent=parent,
                expense=_expense(payer, "sent in process"),
                request_id=key,
            ),
            timeout=10,
        )
        own_request = expenses_pb.CreateExpenseRequest(
            parent=parent,
            expense=_expense(payer, "sent in process with a key"),
            request_id="0b6f3c2a-5d1e-4f7a-8c9b-2e4d6f8a1c3e",
        )
        holder = _hold_expense_database(
            running.data_dir / "expense_service.db", LOCK_SECONDS
        )
        try:
            with pytest.raises(grpc.RpcError) as caught_own:
                clients.expenses.CreateExpense(own_request)
        finally:
            holder.join()
        own_again = clients.expenses.CreateExpense(own_request, timeout=10)
        stored = list_expenses(clients, group_id, False)
    finally:
        clients.close()

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"request_id {key!r}" in caught.value.details()
    assert "send it again with that request_id" in caught.value.details()
    assert again.expense.description == "sent in process"
    assert caught_own.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "retry it with the same request id" in caught_own.value.details()
    assert "request_id" not in _error_info(caught_own.value).metadata
    assert own_again.expense.description == "sent in process with a key"
    descriptions = [expense.description for expense in stored]
    assert descriptions.count("sent in process") == 1
    assert descriptions.count("sent in process with a key") == 1
