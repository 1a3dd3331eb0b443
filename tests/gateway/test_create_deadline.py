"""The backend deadline of a create, over REST and gRPC.

A create that takes a `request_id` reaches its backend with a deadline a
margin before the client's (`splitlog_runtime.channels.answer_before`),
whether the client sent the key or the gateway filled it in. The gateway's
504, whose message names the key for a retry, then
arrives before the client gives up. The backend here is a real gRPC server
that records the deadline of each call and never responds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import httpx
import pytest

from gateway.app import build
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.channels import answer_before
from tests.ports import closed_address

#: The client's deadline in seconds.
CLIENT_DEADLINE = 3.0
#: Maximum seconds that the backend may have left of CLIENT_DEADLINE. grpc
#: rounds the deadline that it sends up by up to 1% (grpcio 1.85), both in
#: the client and in the gateway.
MAX_BACKEND_SECONDS = answer_before(CLIENT_DEADLINE * 1.01) * 1.01
REQUEST_ID = "8e0c4a6e-2f51-4d8b-9c3a-7b1d5e9f0a24"


@dataclass
class FrozenExpenses:
    """A real ExpensesService whose calls wait until cancelled.

    Attributes:
      address: where it listens.
      deadlines: the seconds left of each call's deadline when it arrived.
    """

    address: str = ""
    deadlines: list[float] = field(default_factory=list)


@pytest.fixture
def frozen() -> Iterator[FrozenExpenses]:
    recorded = FrozenExpenses()
    stopping = threading.Event()

    def wait(request: bytes, context: grpc.ServicerContext) -> bytes:
        recorded.deadlines.append(context.time_remaining())
        while context.is_active() and not stopping.wait(0.05):
            pass
        return b""

    service = expenses_pb.DESCRIPTOR.services_by_name["ExpensesService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(wait)
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    }
    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service.full_name, handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    recorded.address = f"127.0.0.1:{port}"
    try:
        yield recorded
    finally:
        stopping.set()
        server.stop(0)


@pytest.fixture
def gateway(loop_thread, frozen, tmp_path):
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path,
            "user_service_addr": closed_address(),
            "expense_service_addr": frozen.address,
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
            "grace_seconds": 1.0,
            "deadline_seconds": 30.0,
        },
    )
    running = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))


def _error_reason(body: dict) -> str:
    for detail in body["error"].get("details", []):
        if detail["@type"].endswith("google.rpc.ErrorInfo"):
            return detail["reason"]
    return ""


@pytest.mark.parametrize("request_id", [REQUEST_ID, ""])
def test_rest_create_ends_before_client(gateway, frozen, request_id):
    params = {"requestId": request_id} if request_id else {}

    response = httpx.post(
        f"http://127.0.0.1:{gateway.http_port}/v1/groups/trip/expenses",
        params=params,
        json={"description": "Dinner"},
        headers={"grpc-timeout": f"{CLIENT_DEADLINE:g}S"},
        timeout=CLIENT_DEADLINE,
    )

    [deadline] = frozen.deadlines
    assert deadline < MAX_BACKEND_SECONDS
    assert response.status_code == 504, response.text
    body = response.json()
    assert _error_reason(body) == "BACKEND_DEADLINE_EXCEEDED"
    if request_id:
        assert "retry it with the same request id" in body["error"]["message"]
    else:
        assert "send it again with that request_id" in body["error"]["message"]


@pytest.mark.parametrize("request_id", [REQUEST_ID, ""])
def test_grpc_create_ends_before_client(gateway, frozen, request_id):
    request = expenses_pb.CreateExpenseRequest(
        parent="groups/trip",
        expense=expenses_pb.Expense(description="Dinner"),
        request_id=request_id,
    )

    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = expenses_grpc.ExpensesServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateExpense(request, timeout=CLIENT_DEADLINE)

    [deadline] = frozen.deadlines
    assert deadline < MAX_BACKEND_SECONDS
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The gateway's error, not the client's own DEADLINE_EXCEEDED.
    assert "did not answer within the call's deadline" in caught.value.details()
