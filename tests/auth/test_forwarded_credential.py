"""Which credential the gateway checks, and what it forwards to a backend.

A real user_service checks the credentials behind a real gateway with
`auth_required` on. The expense, balance and log services are one recording
server, which returns an empty message for every unary call and records
the metadata of each call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import httpx
import pytest

from gateway.app import Gateway, build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from tests.auth.support import AllowGuard, sign_up_user
from user_service import app as user_app

SECRET = "forwarded-credential-secret-" + "x" * 40
PASSWORD = "correct horse battery staple"
TIMEOUT = 10.0
LIST_EXPENSES = "/splitlog.expenses.v1.ExpensesService/ListExpenses"


@dataclass
class Recorder:
    """The metadata of every call that the recording server received."""

    calls: list[tuple[str, tuple[tuple[str, str | bytes], ...]]] = field(
        default_factory=list
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def metadata_of(self, method: str) -> list[tuple[tuple[str, str | bytes], ...]]:
        with self.lock:
            return [metadata for name, metadata in self.calls if name == method]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


class _RecordingHandler(grpc.GenericRpcHandler):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def service(self, handler_call_details):
        method = handler_call_details.method
        metadata = tuple(handler_call_details.invocation_metadata)

        def answer(request: bytes, context) -> bytes:
            with self._recorder.lock:
                self._recorder.calls.append((method, metadata))
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)


@dataclass
class System:
    users: grpc.Server
    recording: grpc.Server
    gateway: Gateway
    recorder: Recorder


@pytest.fixture(scope="module")
def system(loop_thread, tmp_path_factory) -> Iterator[System]:
    recorder = Recorder()
    recording = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    recording.add_generic_rpc_handlers([_RecordingHandler(recorder)])
    recording_address = f"127.0.0.1:{recording.add_insecure_port('127.0.0.1:0')}"
    recording.start()
    config = config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path_factory.mktemp("data"),
            "auth_required": True,
            "auth_secret": SECRET,
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": recording_address,
            "balance_service_addr": recording_address,
            "log_service_addr": recording_address,
        },
    )
    users = user_app.build(config, "127.0.0.1:0", guard=AllowGuard())
    config = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield System(users, recording, gateway, recorder)
    loop_thread.run(gateway.stop(0))
    users.stop(0)
    recording.stop(0)
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def channel(system: System) -> Iterator[grpc.Channel]:
    address = f"127.0.0.1:{system.gateway.grpc_port}"
    with grpc.insecure_channel(address) as opened:
        yield opened


@pytest.fixture(scope="module")
def http(system: System) -> Iterator[httpx.Client]:
    base_url = f"http://127.0.0.1:{system.gateway.http_port}"
    with httpx.Client(base_url=base_url, timeout=TIMEOUT) as client:
        yield client


def _sign_up(channel: grpc.Channel, label: str) -> auth_pb.SignUpResponse:
    return sign_up_user(channel, label, PASSWORD, TIMEOUT)


def _keys(metadata) -> set[str]:
    return {key for key, _ in metadata}


def _reason(reply: httpx.Response) -> str:
    for detail in reply.json()["error"].get("details", []):
        if detail["@type"].endswith("google.rpc.ErrorInfo"):
            return detail["reason"]
    return ""


@pytest.mark.parametrize(
    "second_header", ["grpc-metadata-authorization", "Grpc-Metadata-Authorization"]
)
def test_rest_header_and_metadata_header_rejected(system, channel, http, second_header):
    ana = _sign_up(channel, "ana")
    bob = _sign_up(channel, "bob")
    system.recorder.clear()

    reply = http.get(
        "/v1/groups/trip/expenses",
        headers=[
            ("authorization", f"Bearer {ana.tokens.access_token}"),
            (second_header, f"Bearer {bob.tokens.access_token}"),
        ],
    )

    assert reply.status_code == 401, reply.text
    assert _reason(reply) == "CREDENTIAL_AMBIGUOUS"
    assert "2 authorization headers" in reply.json()["error"]["message"]
    challenge = 'Bearer realm="splitlog", error="invalid_request"'
    assert reply.headers["www-authenticate"] == challenge
    assert system.recorder.metadata_of(LIST_EXPENSES) == []


def test_rest_two_metadata_headers_rejected(system, channel, http):
    ana = _sign_up(channel, "ana")
    system.recorder.clear()

    reply = http.get(
        "/v1/groups/trip/expenses",
        headers=[
            ("grpc-metadata-authorization", f"Bearer {ana.tokens.access_token}"),
            ("grpc-metadata-authorization", "Bearer other"),
        ],
    )

    assert reply.status_code == 401, reply.text
    assert _reason(reply) == "CREDENTIAL_AMBIGUOUS"
    assert system.recorder.metadata_of(LIST_EXPENSES) == []


def test_rest_metadata_header_alone_authenticates(system, channel, http):
    # The gateway checks the credential that it would forward, so a
    # Grpc-Metadata-Authorization header alone is the call's credential.
    ana = _sign_up(channel, "ana")
    system.recorder.clear()

    reply = http.get(
        "/v1/groups/trip/expenses",
        headers={"grpc-metadata-authorization": f"Bearer {ana.tokens.access_token}"},
    )

    assert reply.status_code == 200, reply.text
    [metadata] = system.recorder.metadata_of(LIST_EXPENSES)
    assert auth.metadata_value(metadata, auth.PRINCIPAL_KEY) == ana.user.name


def test_rest_credential_not_forwarded(system, channel, http):
    ana = _sign_up(channel, "ana")
    system.recorder.clear()

    reply = http.get(
        "/v1/groups/trip/expenses",
        headers={
            "authorization": f"Bearer {ana.tokens.access_token}",
            "x-request-id": "request-1",
        },
    )

    assert reply.status_code == 200, reply.text
    [metadata] = system.recorder.metadata_of(LIST_EXPENSES)
    assert "authorization" not in _keys(metadata)
    assert auth.metadata_value(metadata, auth.PRINCIPAL_KEY) == ana.user.name
    assert auth.metadata_value(metadata, "x-request-id") == "request-1"


def test_grpc_credential_not_forwarded(system, channel):
    ana = _sign_up(channel, "ana")
    system.recorder.clear()
    stub = expenses_grpc.ExpensesServiceStub(channel)

    stub.ListExpenses(
        expenses_pb.ListExpensesRequest(parent="groups/trip"),
        metadata=(
            ("authorization", f"Bearer {ana.tokens.access_token}"),
            ("x-request-id", "request-2"),
        ),
        timeout=TIMEOUT,
    )

    [metadata] = system.recorder.metadata_of(LIST_EXPENSES)
    assert "authorization" not in _keys(metadata)
    assert auth.metadata_value(metadata, auth.PRINCIPAL_KEY) == ana.user.name
    assert auth.metadata_value(metadata, "x-request-id") == "request-2"
