"""Open streams end once their credential is revoked or expires, end to end.

A real user_service, a real log cluster and a real gateway with
`auth_required` on listen on 127.0.0.1. The gateway keeps a checked
credential for 0.5 s, so an open call checks its credential again every
0.5 s, and access tokens live 4 s.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import timestamp_pb2

from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from tests.auth.support import operator_admin_key, sign_up_user
from tests.cli.test_logs_cli import LogsGateway, logs_gateway_with_auth

SECRET = "stream-credentials-secret-" + "k" * 40
PASSWORD = "correct horse battery staple"
TIMEOUT = 10.0
# Seconds that a test waits for an open call to end. The gateway checks every
# 0.5 s, and a tail without entries sends a keep-alive message every 10 s.
STREAM_TIMEOUT = 30.0
ACCESS_TOKEN_SECONDS = 4


@pytest.fixture(scope="module")
def live(loop_thread, tmp_path_factory) -> Iterator[LogsGateway]:
    settings = {
        "auth_cache_seconds": 0.5,
        "auth_access_token_seconds": ACCESS_TOKEN_SECONDS,
    }
    with logs_gateway_with_auth(
        loop_thread, tmp_path_factory, SECRET, gateway_settings=settings
    ) as running:
        yield running


@pytest.fixture(scope="module")
def channel(live: LogsGateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(live.address) as opened:
        yield opened


@pytest.fixture(scope="module")
def admin(live: LogsGateway, channel) -> tuple[str, str]:
    """Return an administrator's user name and the secret of its admin key."""
    signed_up = sign_up_user(channel, "root", PASSWORD, TIMEOUT)
    _, secret = operator_admin_key(live.gateway.config.data_dir, signed_up.user.name)
    return signed_up.user.name, secret


def _bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def _create_key(
    channel, admin, scopes: list[str], expire_in: float | None = None
) -> tuple[str, str]:
    """Create an API key of the administrator; return its name and secret."""
    user, admin_secret = admin
    key = auth_pb.ApiKey(display_name=f"k-{uuid.uuid4().hex[:6]}", scopes=scopes)
    if expire_in is not None:
        key.expire_time.CopyFrom(timestamp_pb2.Timestamp(seconds=0))
        key.expire_time.FromNanoseconds(int((time.time() + expire_in) * 1e9))
    created = auth_grpc.AuthServiceStub(channel).CreateApiKey(
        auth_pb.CreateApiKeyRequest(parent=user, api_key=key),
        metadata=_bearer(admin_secret),
        timeout=TIMEOUT,
    )
    return created.api_key.name, created.secret


def _revoke(channel, admin, name: str) -> None:
    auth_grpc.AuthServiceStub(channel).RevokeApiKey(
        auth_pb.RevokeApiKeyRequest(name=name),
        metadata=_bearer(admin[1]),
        timeout=TIMEOUT,
    )


def _entry(service: str, message: str) -> logs_pb.LogEntry:
    entry = logs_pb.LogEntry(
        service=service, severity=logs_pb.SEVERITY_INFO, message=message
    )
    entry.timestamp.GetCurrentTime()
    return entry


def _write(channel, admin, service: str, message: str) -> None:
    logs_grpc.LogsServiceStub(channel).WriteLogEntries(
        logs_pb.WriteLogEntriesRequest(
            entries=[_entry(service, message)], request_id=str(uuid.uuid4())
        ),
        metadata=_bearer(admin[1]),
        timeout=TIMEOUT,
    )


def _open_tail(channel, secret: str, service: str):
    tail = logs_grpc.LogsServiceStub(channel).TailLogEntries(
        logs_pb.TailLogEntriesRequest(services=[service]),
        metadata=_bearer(secret),
        timeout=STREAM_TIMEOUT,
    )
    next(tail)  # the router's first message: the tail is open
    return tail


def _tail_error(tail) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        for _ in tail:
            pass
    return raised.value


def _service() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def test_revoked_key_ends_grpc_tail(channel, admin):
    name, secret = _create_key(channel, admin, ["logs:read"])
    service = _service()
    tail = _open_tail(channel, secret, service)

    _revoke(channel, admin, name)
    _write(channel, admin, service, "after the revocation")
    error = _tail_error(tail)

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in error.details()
    assert "resume_token" in error.details()


def test_expired_key_ends_grpc_tail(channel, admin):
    _, secret = _create_key(channel, admin, ["logs:read"], expire_in=3.0)
    tail = _open_tail(channel, secret, _service())

    error = _tail_error(tail)

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in error.details()


def test_expired_access_token_ends_grpc_tail(channel, admin, live):
    # The administrator's access token carries the log scopes.
    user = admin[0]
    signed_in = auth_grpc.AuthServiceStub(channel).SignIn(
        auth_pb.SignInRequest(
            email=f"{user.removeprefix('users/')}@example.com", password=PASSWORD
        ),
        timeout=TIMEOUT,
    )
    opened = time.monotonic()
    tail = _open_tail(channel, signed_in.tokens.access_token, _service())

    error = _tail_error(tail)

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in error.details()
    assert time.monotonic() - opened < STREAM_TIMEOUT - 5


def test_valid_key_keeps_grpc_tail(channel, admin):
    _, secret = _create_key(channel, admin, ["logs:read"])
    service = _service()
    tail = _open_tail(channel, secret, service)

    # Several checks of the credential pass while the tail waits.
    time.sleep(2.0)
    _write(channel, admin, service, "still streaming")
    messages = []
    for response in tail:
        messages.extend(entry.message for entry in response.entries)
        if messages:
            break
    tail.cancel()

    assert messages == ["still streaming"]


def _rest_tail_lines(live, secret: str, service: str, opened: threading.Event):
    """Return the NDJSON lines of a REST tail until it ends."""
    lines = []
    url = f"http://127.0.0.1:{live.gateway.http_port}/v1/logs:tail"
    with (
        httpx.Client(timeout=STREAM_TIMEOUT) as client,
        client.stream(
            "POST",
            url,
            json={"services": [service]},
            headers={
                "authorization": f"Bearer {secret}",
                "grpc-timeout": f"{int(STREAM_TIMEOUT) - 5}S",
            },
        ) as response,
    ):
        for line in response.iter_lines():
            lines.append(json.loads(line))
            opened.set()
    return lines


def test_revoked_key_ends_rest_tail(channel, admin, live):
    name, secret = _create_key(channel, admin, ["logs:read"])
    service = _service()
    opened = threading.Event()
    result: dict[str, list] = {}
    reader = threading.Thread(
        target=lambda: result.update(
            lines=_rest_tail_lines(live, secret, service, opened)
        )
    )
    reader.start()
    assert opened.wait(TIMEOUT)

    _revoke(channel, admin, name)
    reader.join(STREAM_TIMEOUT)

    assert not reader.is_alive()
    last = result["lines"][-1]
    assert last["error"]["status"] == "UNAUTHENTICATED"
    assert "revoked" in last["error"]["message"]
    assert "resumeToken" in last["error"]["message"]


def test_rest_tail_deadline_line_with_auth(channel, admin, live):
    _, secret = _create_key(channel, admin, ["logs:read"])
    url = f"http://127.0.0.1:{live.gateway.http_port}/v1/logs:tail"

    # The call ends at its deadline, which also stops the credential checks.
    # The reply still ends with the error line, and the body is complete.
    with httpx.stream(
        "POST",
        url,
        json={"services": [_service()]},
        headers={"authorization": f"Bearer {secret}", "grpc-timeout": "2S"},
        timeout=STREAM_TIMEOUT,
    ) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]

    assert response.status_code == 200
    assert "result" in lines[0]
    error = lines[-1]["error"]
    assert error["status"] == "DEADLINE_EXCEEDED"
    assert error["details"][0]["reason"] == "STREAM_DEADLINE_REACHED"


def test_write_stream_without_deadline_outlives_default_deadline(live, channel, admin):
    # The gateway's default deadline applies to unary calls. A write stream
    # without a deadline stays open, like a tail.
    _, secret = _create_key(channel, admin, ["logs:write"])
    service = _service()
    pause = live.gateway.config.deadline_seconds + 1.5

    def stream_requests():
        for text in ("before the pause", "after the pause"):
            yield logs_pb.StreamLogEntriesRequest(
                entries=[_entry(service, text)], request_id=str(uuid.uuid4())
            )
            if text == "before the pause":
                time.sleep(pause)

    response = logs_grpc.LogsServiceStub(channel).StreamLogEntries(
        stream_requests(), metadata=_bearer(secret)
    )

    assert (response.batch_count, response.accepted_count) == (2, 2)


def test_revoked_key_ends_write_stream(channel, admin):
    name, secret = _create_key(channel, admin, ["logs:write"])
    service = _service()
    requests: queue.Queue = queue.Queue()
    done = threading.Event()

    def stream_requests():
        while not done.is_set():
            try:
                yield requests.get(timeout=0.1)
            except queue.Empty:
                continue

    requests.put(
        logs_pb.StreamLogEntriesRequest(
            entries=[_entry(service, "first")], request_id=str(uuid.uuid4())
        )
    )
    call = logs_grpc.LogsServiceStub(channel).StreamLogEntries.future(
        stream_requests(), metadata=_bearer(secret), timeout=STREAM_TIMEOUT
    )
    try:
        time.sleep(1.0)
        _revoke(channel, admin, name)
        error = call.exception(timeout=STREAM_TIMEOUT)
    finally:
        done.set()

    assert error is not None
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in error.details()
