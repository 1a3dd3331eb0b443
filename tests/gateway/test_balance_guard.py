"""The balance guard through the gateway's REST API, with the real user,
expense and balance services: a removal or deletion requested right after an
expense is acknowledged counts that expense.

balance_service applies expenses from expense_service's ledger a moment after
they are acknowledged. Here a `DelayedLedgerRelay` between the two delays each
streamed batch for `RELAY_DELAY_SECONDS`, so that moment is long and the same
every run. The tests send the removal at once, so they pass only if
CheckSettled waits for the ledger first.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import pytest

from balance_service import members as balance_members
from balance_service.app import build as build_balances
from expense_service.app import build as build_expenses
from gateway.app import build
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog_runtime import config as config_module
from tests.gateway.support import LoopThread, Stack
from tests.ports import closed_address, free_ports
from user_service.app import build as build_users

TIMEOUT = 10.0
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
#: Times each race is run; every attempt must be rejected.
ATTEMPTS = 5
#: Seconds the relay delays each batch of ledger events before passing it on.
RELAY_DELAY_SECONDS = 0.5


class DelayedLedgerRelay(ledger_grpc.LedgerServiceServicer):
    """A gRPC server that forwards LedgerService calls to expense_service,
    holding each streamed batch for `delay` seconds, as a slow link would.

    GetLedgerPosition is forwarded without delay.
    """

    def __init__(self, target: str, delay: float) -> None:
        self._delay = delay
        self._channel = grpc.insecure_channel(target)
        self._stub = ledger_grpc.LedgerServiceStub(self._channel)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ledger_grpc.add_LedgerServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def stop(self) -> None:
        self._server.stop(0).wait()
        self._channel.close()

    def StreamLedgerEvents(self, request, context):
        upstream = self._stub.StreamLedgerEvents(request)
        context.add_callback(upstream.cancel)
        for response in upstream:
            time.sleep(self._delay)
            yield response

    def GetLedgerPosition(self, request, context):
        return self._stub.GetLedgerPosition(request, timeout=context.time_remaining())


@pytest.fixture(scope="module")
def stack(loop_thread: LoopThread, tmp_path_factory) -> Iterator[Stack]:
    """The three services and a gateway; user_service uses its default guard.

    user_service and balance_service call each other, so balance_service's
    address is chosen before either starts.
    """
    data = tmp_path_factory.mktemp("guard")
    (balances_port,) = free_ports(1)
    balances_address = f"127.0.0.1:{balances_port}"
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": data,
            "workers": 8,
            "grace_seconds": 1.0,
            "deadline_seconds": 5.0,
            "balance_service_addr": balances_address,
        },
    )
    users = build_users(base, "127.0.0.1:0")
    users_address = f"127.0.0.1:{users.port}"
    expenses = build_expenses(
        base.replace(user_service_addr=users_address), "127.0.0.1:0"
    )
    expenses_address = f"127.0.0.1:{expenses.port}"
    relay = DelayedLedgerRelay(expenses_address, RELAY_DELAY_SECONDS)
    balances = build_balances(
        base.replace(
            user_service_addr=users_address,
            expense_service_addr=f"127.0.0.1:{relay.port}",
        ),
        balances_address,
    )
    gateway_config = base.replace(
        user_service_addr=users_address,
        expense_service_addr=expenses_address,
        log_service_addr=closed_address(),
    )
    gateway = loop_thread.run(build(gateway_config, "127.0.0.1:0", "127.0.0.1:0"))
    yield Stack(users, expenses, balances, gateway)
    loop_thread.run(gateway.stop(0))
    balances.stop(0)
    relay.stop()
    expenses.stop(0)
    users.stop(0)


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.gateway.http_port}", timeout=TIMEOUT
    ) as opened:
        yield opened


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _create_user(http: httpx.Client, display_name: str) -> str:
    email = f"{display_name.lower()}-{uuid.uuid4().hex[:10]}@example.com"
    body = _ok(
        http.post("/v1/users", json={"email": email, "displayName": display_name})
    )
    return body["user"]["name"]


def _group_of_two(http: httpx.Client) -> tuple[str, str, str]:
    """Create Ann and Ben and a group of both; return the group, Ann and Ben."""
    ann = _create_user(http, "Ann")
    ben = _create_user(http, "Ben")
    group = _ok(http.post("/v1/groups", json={"displayName": "Trip", "creator": ann}))
    name = group["group"]["name"]
    _ok(http.post(f"/v1/{name}/members", json={"user": ben}))
    return name, ann, ben


def _money(units: int) -> dict:
    return {"currencyCode": "EUR", "units": str(units)}


def _create_expense(http: httpx.Client, group: str, payer: str, units: int, split):
    """Record that `payer` paid `units` EUR, split equally among `split`."""
    expense = {
        "description": "Dinner",
        "expenseDate": {"year": 2024, "month": 5, "day": 1},
        "total": _money(units),
        "payers": [{"user": payer, "amount": _money(units)}],
        "split": {
            "type": "SPLIT_TYPE_EQUAL",
            "participants": [{"user": user} for user in split],
        },
        "creator": payer,
    }
    _ok(http.post(f"/v1/{group}/expenses", json=expense))


def _pay(http: httpx.Client, group: str, payer: str, payee: str, units: int):
    """Record that `payer` paid `units` EUR to `payee`."""
    settlement = {
        "payer": payer,
        "payee": payee,
        "amount": _money(units),
        "settlementDate": {"year": 2024, "month": 5, "day": 2},
        "creator": payer,
    }
    _ok(http.post(f"/v1/{group}/settlements", json=settlement))


def _member(group: str, user: str) -> str:
    return f"{group}/members/{user.removeprefix('users/')}"


def _assert_unsettled(response: httpx.Response, debtor: str, amount: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "FAILED_PRECONDITION"
    reasons = [d["reason"] for d in error["details"] if d["@type"] == ERROR_INFO]
    assert reasons == ["UNSETTLED_BALANCE"]
    assert f"{debtor} owes {amount} EUR" in error["message"]


def test_delete_group_right_after_expense(http):
    for _ in range(ATTEMPTS):
        group, ann, ben = _group_of_two(http)
        _create_expense(http, group, ann, 10, [ann, ben])

        response = http.delete(f"/v1/{group}")

        _assert_unsettled(response, ben, "5.00")
        assert http.get(f"/v1/{group}").status_code == 200


def test_remove_member_right_after_expense(http):
    for _ in range(ATTEMPTS):
        group, ann, ben = _group_of_two(http)
        _create_expense(http, group, ann, 2_000_000, [ann, ben])

        response = http.delete(f"/v1/{_member(group, ben)}")

        _assert_unsettled(response, ben, "1000000.00")
        members = _ok(http.get(f"/v1/{group}/members"))["members"]
        assert _member(group, ben) in [member["name"] for member in members]


def test_settled_group_can_go_at_once(http):
    for _ in range(ATTEMPTS):
        group, ann, ben = _group_of_two(http)
        _create_expense(http, group, ann, 10, [ann, ben])
        _pay(http, group, ben, ann, 5)

        _ok(http.delete(f"/v1/{_member(group, ben)}"))
        _ok(http.delete(f"/v1/{group}"))


def _check_settled(http: httpx.Client, group: str, user: str) -> httpx.Response:
    return http.get(f"/v1/{group}/balance:checkSettled", params={"user": user})


def test_check_settled_former_members_alike(http):
    group, ann, ben = _group_of_two(http)
    carol = _create_user(http, "Carol")
    _ok(http.post(f"/v1/{group}/members", json={"user": carol}))
    _create_expense(http, group, ann, 10, [ann, ben])
    _pay(http, group, ben, ann, 5)
    # Ben's balance came back to zero; no expense or settlement named Carol.
    _ok(http.delete(f"/v1/{_member(group, ben)}"))
    _ok(http.delete(f"/v1/{_member(group, carol)}"))
    # Until its reused member list expires, balance_service takes both for
    # members; wait, so that the check reads what it stored about them.
    time.sleep(balance_members.CACHE_SECONDS)

    settled_ben = _ok(_check_settled(http, group, ben))
    settled_carol = _ok(_check_settled(http, group, carol))

    assert settled_ben == {"settled": True}
    assert settled_carol == settled_ben


def test_check_settled_never_member_rejected(http):
    group, _, _ = _group_of_two(http)
    outsider = _create_user(http, "Dan")

    response = _check_settled(http, group, outsider)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "FAILED_PRECONDITION"
    reasons = [d["reason"] for d in error["details"] if d["@type"] == ERROR_INFO]
    assert reasons == ["NOT_A_GROUP_MEMBER"]
    assert f"user {outsider!r} is not a member of {group!r}" in error["message"]
