"""A removal while balance_service's ledger is stalled, through the gateway.

balance_service reads expense_service's ledger through `StalledLedgerRelay`,
which never passes a batch on. CheckSettled then waits for the ledger until
its deadline and fails. The removal must end with user_service's documented
UNAVAILABLE (REST 503, reason BALANCE_SERVICE_UNAVAILABLE) within the
gateway's deadline, not with the gateway's DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import pytest

from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog_runtime import config as config_module
from tests.gateway.support import LoopThread, Stack, running_stack
from user_service import guards as guards_module

#: The gateway's deadline for a REST call without a grpc-timeout header.
DEADLINE_SECONDS = 3.0
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class StalledLedgerRelay(ledger_grpc.LedgerServiceServicer):
    """A LedgerService server that forwards GetLedgerPosition to
    expense_service and keeps every ledger stream open without events."""

    def __init__(self, target: str) -> None:
        self._released = threading.Event()
        self._channel = grpc.insecure_channel(target)
        self._stub = ledger_grpc.LedgerServiceStub(self._channel)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ledger_grpc.add_LedgerServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def stop(self) -> None:
        self._released.set()
        self._server.stop(0).wait()
        self._channel.close()

    def StreamLedgerEvents(self, request, context):
        while context.is_active() and not self._released.wait(0.1):
            pass
        return iter(())

    def GetLedgerPosition(self, request, context):
        return self._stub.GetLedgerPosition(request, timeout=context.time_remaining())


#: The margin that user_service keeps to return the guard's error before the
#: deadline, doubled from the default: on a loaded test machine the answer's
#: way back through the gateway has taken longer than the default 0.5 s.
ANSWER_MARGIN_SECONDS = 1.0


@pytest.fixture(scope="module")
def stack(loop_thread: LoopThread, tmp_path_factory) -> Iterator[Stack]:
    relays: list[StalledLedgerRelay] = []
    patch = pytest.MonkeyPatch()
    patch.setattr(guards_module, "ANSWER_MARGIN_SECONDS", ANSWER_MARGIN_SECONDS)

    def relay_address(expenses_address: str) -> str:
        relays.append(StalledLedgerRelay(expenses_address))
        return f"127.0.0.1:{relays[0].port}"

    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("guard-deadline"),
            "workers": 8,
            "grace_seconds": 1.0,
            "deadline_seconds": DEADLINE_SECONDS,
        },
    )
    try:
        with running_stack(loop_thread, base, relay_address) as running:
            yield running
    finally:
        for relay in relays:
            relay.stop()
        patch.undo()


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.gateway.http_port}", timeout=30
    ) as opened:
        yield opened


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _create_user(http: httpx.Client, display_name: str) -> str:
    email = f"{display_name.lower()}-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "displayName": display_name}
    return _ok(http.post("/v1/users", json=body))["user"]["name"]


def _group_behind(http: httpx.Client) -> tuple[str, str]:
    """Create a group of Ann and Ben with an expense that balance_service
    cannot apply; return the group and Ben's membership."""
    ann = _create_user(http, "Ann")
    ben = _create_user(http, "Ben")
    body = {"displayName": "Trip", "creator": ann}
    group = _ok(http.post("/v1/groups", json=body))["group"]["name"]
    _ok(http.post(f"/v1/{group}/members", json={"user": ben}))
    member = f"{group}/members/{ben.removeprefix('users/')}"
    # An expense that balance_service cannot apply, so the ledger is behind.
    total = {"currencyCode": "EUR", "units": "10"}
    expense = {
        "description": "Dinner",
        "expenseDate": {"year": 2024, "month": 5, "day": 1},
        "total": total,
        "payers": [{"user": ann, "amount": total}],
        "split": {
            "type": "SPLIT_TYPE_EQUAL",
            "participants": [{"user": ann}, {"user": ben}],
        },
        "creator": ann,
    }
    _ok(http.post(f"/v1/{group}/expenses", json=expense))
    return group, member


def _assert_unavailable(response: httpx.Response) -> None:
    # A 503 with this reason, not the gateway's 504, shows that the removal
    # ended before the gateway's deadline. The client's own clock would add
    # the HTTP round trip and flake on a loaded machine.
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["status"] == "UNAVAILABLE"
    reasons = [d["reason"] for d in error["details"] if d["@type"] == ERROR_INFO]
    assert reasons == ["BALANCE_SERVICE_UNAVAILABLE"]
    # balance_service's own LEDGER_NOT_CAUGHT_UP, not a DEADLINE_EXCEEDED of
    # a retry that grpc sent after it.
    assert "failed the check (UNAVAILABLE: " in error["message"]
    assert "has applied expense changes up to ledger sequence" in error["message"]


def test_remove_member_ledger_stalled(http):
    group, member = _group_behind(http)

    response = http.delete(f"/v1/{member}")

    _assert_unavailable(response)
    members = _ok(http.get(f"/v1/{group}/members"))["members"]
    assert member in [entry["name"] for entry in members]


def test_delete_group_ledger_stalled(http):
    group, _ = _group_behind(http)

    response = http.delete(f"/v1/{group}")

    _assert_unavailable(response)
    assert http.get(f"/v1/{group}").status_code == 200
