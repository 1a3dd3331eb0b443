"""Creates whose commit acknowledgement is lost, with the real services on
PostgreSQL behind a proxy that drops the connection right after a COMMIT.

The row is committed, but the service sees its connection drop. Through the
gateway, whose channels retry UNAVAILABLE, a create without a request_id
must still be stored once, because the gateway gives it a request_id before
it forwards it. Called directly, a create without a request_id must not be
answered "retry the call shortly", and expense_service, whose group commit
failed, finds the row stored under the id it generated and returns it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2
from grpc_status import rpc_status

from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog_runtime import config as config_module
from tests.commit_cutter import CommitCutter, cutting_proxy
from tests.gateway.support import LoopThread, Stack, running_stack

pytestmark = pytest.mark.postgres

TIMEOUT = 30.0
SETTLEMENT_INSERT = b"INSERT INTO settlements"
EXPENSE_INSERT = b"INSERT INTO expenses "


@dataclass
class Setup:
    stack: Stack
    cutter: CommitCutter
    http: httpx.Client
    group: str
    ana: str
    ben: str


@pytest.fixture
def setup(loop_thread: LoopThread, tmp_path, postgres_url) -> Iterator[Setup]:
    with cutting_proxy(postgres_url) as (cutter, url):
        base = config_module.load(
            environ={},
            overrides={
                "auth_required": False,
                "data_dir": tmp_path / "data",
                "grace_seconds": 1.0,
                "deadline_seconds": TIMEOUT,
                "expense_service_db_url": url,
                "balance_service_db_url": url,
            },
        )
        with (
            running_stack(loop_thread, base) as stack,
            httpx.Client(
                base_url=f"http://127.0.0.1:{stack.gateway.http_port}",
                timeout=TIMEOUT,
            ) as http,
        ):
            ana, ben = (_create_user(http, who) for who in ("ana", "ben"))
            group = _ok(
                http.post("/v1/groups", json={"displayName": "Trip", "creator": ana})
            )["group"]["name"]
            _ok(http.post(f"/v1/{group}/members", json={"user": ben}))
            # Ben owes Ana 50.00 EUR, so he can settle part of it.
            _ok(http.post(f"/v1/{group}/expenses", json=_expense_json(ana, ben)))
            yield Setup(stack, cutter, http, group, ana, ben)


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _create_user(http: httpx.Client, who: str) -> str:
    body = {"email": f"{who}-{uuid.uuid4().hex[:8]}@example.com", "displayName": who}
    return _ok(http.post("/v1/users", json=body))["user"]["name"]


def _expense_json(payer: str, other: str) -> dict:
    total = {"currencyCode": "EUR", "units": "100"}
    return {
        "description": "Dinner",
        "expenseDate": {"year": 2026, "month": 5, "day": 1},
        "total": total,
        "payers": [{"user": payer, "amount": total}],
        "split": {
            "type": "SPLIT_TYPE_EQUAL",
            "participants": [{"user": payer}, {"user": other}],
        },
        "creator": payer,
    }


def _settlement_request(setup: Setup, note: str, request_id: str = ""):
    return balances_pb.CreateSettlementRequest(
        parent=setup.group,
        settlement=balances_pb.Settlement(
            payer=setup.ben,
            payee=setup.ana,
            amount=money_pb2.Money(currency_code="EUR", units=5),
            settlement_date=date_pb2.Date(year=2026, month=5, day=2),
            note=note,
            creator=setup.ben,
        ),
        request_id=request_id,
    )


def _expense_request(setup: Setup, description: str):
    total = money_pb2.Money(currency_code="EUR", units=30)
    return expenses_pb.CreateExpenseRequest(
        parent=setup.group,
        expense=expenses_pb.Expense(
            description=description,
            expense_date=date_pb2.Date(year=2026, month=5, day=3),
            total=total,
            payers=[expenses_pb.Payer(user=setup.ana, amount=total)],
            split=expenses_pb.Split(
                type=expenses_pb.SPLIT_TYPE_EQUAL,
                participants=[
                    expenses_pb.SplitParticipant(user=setup.ana),
                    expenses_pb.SplitParticipant(user=setup.ben),
                ],
            ),
            creator=setup.ana,
        ),
    )


def _settlements_with_note(setup: Setup, note: str) -> list:
    listed = setup.http.get(f"/v1/{setup.group}/settlements?pageSize=1000")
    return [s for s in _ok(listed).get("settlements", []) if s.get("note") == note]


def _expenses_named(setup: Setup, description: str) -> list:
    listed = setup.http.get(f"/v1/{setup.group}/expenses?pageSize=1000")
    found = _ok(listed).get("expenses", [])
    return [e for e in found if e.get("description") == description]


def _direct_channel(address: str) -> grpc.Channel:
    """A channel straight to a service, on which grpc retries nothing."""
    return grpc.insecure_channel(address, options=[("grpc.enable_retries", 0)])


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()}: {error.details()}"
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return info.reason
    return ""


def test_grpc_settlement_stored_once(setup: Setup):
    with grpc.insecure_channel(f"127.0.0.1:{setup.stack.gateway.grpc_port}") as ch:
        stub = balances_grpc.BalancesServiceStub(ch)
        setup.cutter.arm(SETTLEMENT_INSERT)
        created = stub.CreateSettlement(
            _settlement_request(setup, "lost ack over grpc"), timeout=TIMEOUT
        ).settlement
    assert setup.cutter.cut.is_set()
    stored = _settlements_with_note(setup, "lost ack over grpc")
    assert [s["name"] for s in stored] == [created.name]


def test_rest_settlement_stored_once(setup: Setup):
    body = {
        "payer": setup.ben,
        "payee": setup.ana,
        "amount": {"currencyCode": "EUR", "units": "5"},
        "settlementDate": {"year": 2026, "month": 5, "day": 2},
        "note": "lost ack over rest",
        "creator": setup.ben,
    }
    setup.cutter.arm(SETTLEMENT_INSERT)
    reply = _ok(setup.http.post(f"/v1/{setup.group}/settlements", json=body))
    created = reply["settlement"]
    assert setup.cutter.cut.is_set()
    stored = _settlements_with_note(setup, "lost ack over rest")
    assert [s["name"] for s in stored] == [created["name"]]


def test_grpc_expense_stored_once(setup: Setup):
    with grpc.insecure_channel(f"127.0.0.1:{setup.stack.gateway.grpc_port}") as ch:
        stub = expenses_grpc.ExpensesServiceStub(ch)
        setup.cutter.arm(EXPENSE_INSERT)
        created = stub.CreateExpense(
            _expense_request(setup, "lost ack via gateway"), timeout=TIMEOUT
        ).expense
    assert setup.cutter.cut.is_set()
    stored = _expenses_named(setup, "lost ack via gateway")
    assert [e["name"] for e in stored] == [created.name]


def test_unkeyed_settlement_outcome_unknown(setup: Setup):
    with _direct_channel(f"127.0.0.1:{setup.stack.balances.port}") as channel:
        stub = balances_grpc.BalancesServiceStub(channel)
        setup.cutter.arm(SETTLEMENT_INSERT)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateSettlement(
                _settlement_request(setup, "lost ack direct"), timeout=TIMEOUT
            )
    error = caught.value
    assert error.code() == grpc.StatusCode.UNKNOWN, error.details()
    assert _reason(error) == "COMMIT_OUTCOME_UNKNOWN"
    assert "may or may not be stored" in error.details()
    assert "request_id" in error.details()
    assert "retry the call shortly" not in error.details()
    assert len(_settlements_with_note(setup, "lost ack direct")) == 1


def test_keyed_settlement_retry_replays(setup: Setup):
    request = _settlement_request(setup, "lost ack keyed", str(uuid.uuid4()))
    with _direct_channel(f"127.0.0.1:{setup.stack.balances.port}") as channel:
        stub = balances_grpc.BalancesServiceStub(channel)
        setup.cutter.arm(SETTLEMENT_INSERT)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateSettlement(request, timeout=TIMEOUT)
        error = caught.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert _reason(error) == "COMMIT_OUTCOME_UNKNOWN"
        assert request.request_id in error.details()
        again = stub.CreateSettlement(request, timeout=TIMEOUT).settlement
    stored = _settlements_with_note(setup, "lost ack keyed")
    assert [s["name"] for s in stored] == [again.name]


def test_expense_regroup_finds_own_row(setup: Setup):
    """The group commit fails at the lost acknowledgement. The create, written
    again alone under the id generated for it, finds its own row."""
    request = _expense_request(setup, "lost ack alone")
    with _direct_channel(f"127.0.0.1:{setup.stack.expenses.port}") as channel:
        stub = expenses_grpc.ExpensesServiceStub(channel)
        setup.cutter.arm(EXPENSE_INSERT)
        created = stub.CreateExpense(request, timeout=TIMEOUT).expense
    assert setup.cutter.cut.is_set()
    stored = _expenses_named(setup, "lost ack alone")
    assert [e["name"] for e in stored] == [created.name]
    assert created.description == "lost ack alone"
    assert created.total == request.expense.total
    assert [o.user for o in created.owed_amounts] == [setup.ana, setup.ben]
