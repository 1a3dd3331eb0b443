"""Tests that the gateway responds to a stalled call before the caller's deadline.

A gRPC client that sets a deadline ends the call itself when the deadline
passes, and then never receives the gateway's error. So when the gateway must
tell the client something about a call that ran out of time, it gives up a
margin before the client does:
- The error for a create that came without a request_id names the key that
  the gateway filled in. A client with a deadline can then send the create
  again with that key.
- The credential check at user_service takes no longer than the caller's
  deadline allows, and then fails with DEADLINE_EXCEEDED (REST 504). For a
  caller with a long deadline, the check may take `deadline_seconds`.
"""

from __future__ import annotations

import time

import grpc
import httpx
import pytest

from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from tests.auth.support import sign_up_user
from tests.system.conftest import stopped, wait_for_health
from tests.system.money_support import (
    Clients,
    create_group,
    list_expenses,
    start_with_deadline,
)
from tests.system.test_deadline_request_id import (
    _error_info,
    _expense,
    _rest_body,
    _rest_error_info,
)

pytestmark = pytest.mark.system

#: The gateway's own deadline, longer than the clients' below.
GATEWAY_DEADLINE = 4.0
#: The deadline that the clients set.
CLIENT_DEADLINE = 2.0


def test_create_names_filled_key_before_client_deadline(splitlog_factory):
    running, backend = start_with_deadline(
        splitlog_factory, GATEWAY_DEADLINE, "expense_service"
    )
    clients = Clients.connect(running.grpc_address)
    try:
        group_id, (payer, _) = create_group(clients, 2)
        parent = f"groups/{group_id}"
        with stopped(backend):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                clients.expenses.CreateExpense(
                    expenses_pb.CreateExpenseRequest(
                        parent=parent, expense=_expense(payer, "client deadline")
                    ),
                    timeout=CLIENT_DEADLINE,
                )
            elapsed = time.monotonic() - started
            # This deadline is too short for a margin, so the backend gets all
            # of it.
            with pytest.raises(grpc.RpcError) as caught_short:
                clients.expenses.CreateExpense(
                    expenses_pb.CreateExpenseRequest(
                        parent=parent, expense=_expense(payer, "short deadline")
                    ),
                    timeout=0.3,
                )
        wait_for_health(running.grpc_address, 30)

        key = _error_info(caught.value).metadata["request_id"]
        again = clients.expenses.CreateExpense(
            expenses_pb.CreateExpenseRequest(
                parent=parent,
                expense=_expense(payer, "client deadline"),
                request_id=key,
            ),
            timeout=10,
        )
        stored = list_expenses(clients, group_id, False)
    finally:
        clients.close()

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"request_id {key!r}" in caught.value.details()
    # The key in the error shows that the gateway's response came before the
    # client gave up; under load the client may see it a little late.
    assert elapsed < GATEWAY_DEADLINE
    assert caught_short.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert again.expense.description == "client deadline"
    descriptions = [expense.description for expense in stored]
    assert descriptions.count("client deadline") == 1


def test_rest_create_names_filled_key_in_time(splitlog_factory):
    running, backend = start_with_deadline(
        splitlog_factory, GATEWAY_DEADLINE, "expense_service"
    )
    clients = Clients.connect(running.grpc_address)
    try:
        group_id, (payer, _) = create_group(clients, 2)
        url = f"{running.http_url}/v1/groups/{group_id}/expenses"
        with stopped(backend):
            started = time.monotonic()
            rest = httpx.post(
                url,
                json=_rest_body(payer, "client deadline"),
                headers={"grpc-timeout": f"{CLIENT_DEADLINE:g}S"},
                timeout=30,
            )
            elapsed = time.monotonic() - started
            # This deadline is too short for a margin, so the backend gets all
            # of it.
            short = httpx.post(
                url,
                json=_rest_body(payer, "short deadline"),
                headers={"grpc-timeout": "300m"},
                timeout=30,
            )
        wait_for_health(running.grpc_address, 30)

        key = _rest_error_info(rest.json())["metadata"]["request_id"]
        again = httpx.post(
            url,
            params={"requestId": key},
            json=_rest_body(payer, "client deadline"),
            timeout=10,
        )
        stored = list_expenses(clients, group_id, False)
    finally:
        clients.close()

    assert rest.status_code == 504, rest.text
    assert f"request_id {key!r}" in rest.json()["error"]["message"]
    # The gateway kept to the client's deadline, not its own longer one.
    assert elapsed < GATEWAY_DEADLINE
    assert short.status_code == 504, short.text
    assert again.status_code == 200, again.text
    descriptions = [expense.description for expense in stored]
    assert descriptions.count("client deadline") == 1


def test_credential_check_keeps_to_caller_deadline(splitlog_factory):
    running, backend = start_with_deadline(
        splitlog_factory, GATEWAY_DEADLINE, "user_service", settings={}
    )
    channel = grpc.insecure_channel(running.grpc_address)
    try:
        signed_up = sign_up_user(channel, "deadline", "a long password 1", 15)
        # SignUp checks no credential, so the gateway has none cached.
        bearer = (("authorization", f"Bearer {signed_up.tokens.access_token}"),)
        request = users_pb.GetUserRequest(name=signed_up.user.name)
        users = users_grpc.UsersServiceStub(channel)
        with stopped(backend):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as long_caught:
                users.GetUser(request, metadata=bearer, timeout=30)
            long_elapsed = time.monotonic() - started

            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                users.GetUser(request, metadata=bearer, timeout=CLIENT_DEADLINE)
            elapsed = time.monotonic() - started

            started = time.monotonic()
            rest = httpx.get(
                f"{running.http_url}/v1/{signed_up.user.name}",
                headers={
                    "authorization": f"Bearer {signed_up.tokens.access_token}",
                    "grpc-timeout": f"{CLIENT_DEADLINE:g}S",
                },
                timeout=30,
            )
            rest_elapsed = time.monotonic() - started
    finally:
        channel.close()

    assert long_caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert GATEWAY_DEADLINE - 0.5 < long_elapsed < GATEWAY_DEADLINE + 2
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value
    assert _error_info(caught.value).reason == "CREDENTIAL_CHECK_DEADLINE_EXCEEDED"
    assert elapsed < GATEWAY_DEADLINE
    assert rest.status_code == 504, rest.text
    assert "CREDENTIAL_CHECK_DEADLINE_EXCEEDED" in rest.text
    assert rest_elapsed < GATEWAY_DEADLINE
