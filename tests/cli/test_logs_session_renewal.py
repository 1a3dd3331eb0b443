"""`splitlog logs tail` and `logs ship -` keep running across token expiries.

A real user_service, a real log cluster and a real gateway with
`auth_required` listen on 127.0.0.1. Access tokens live 3 s and the gateway
checks the credential of an open call again every 0.5 s, so a command that
runs for 10 s outlives three access tokens. The commands use a saved
session, as after `splitlog auth signin`, whose refresh token lasts long.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog_cli.client.credentials import (
    TOKEN_ENV,
    Credential,
    Session,
    SessionStore,
)
from splitlog_cli.main import main
from tests.auth.support import operator_admin_key, sign_up_user
from tests.cli.test_logs_cli import LogsGateway, logs_gateway_with_auth
from tests.system.conftest import SPLITLOG

SECRET = "session-renewal-secret-" + "r" * 40
PASSWORD = "correct horse battery staple"
TIMEOUT = 10.0
ACCESS_TOKEN_SECONDS = 3
# Long enough for three access tokens to expire.
RUN_SECONDS = 10


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
def admin_logs(live: LogsGateway) -> Iterator[tuple[logs_grpc.LogsServiceStub, tuple]]:
    """A LogsService stub on the gateway and the metadata of an admin key."""
    with grpc.insecure_channel(live.address) as channel:
        root = sign_up_user(channel, "root", PASSWORD, TIMEOUT)
        _, secret = operator_admin_key(live.gateway.config.data_dir, root.user.name)
        yield (
            logs_grpc.LogsServiceStub(channel),
            (("authorization", f"Bearer {secret}"),),
        )


def _write(admin_logs, service: str, message: str) -> None:
    stub, metadata = admin_logs
    entry = logs_pb.LogEntry(service=service, message=message)
    entry.timestamp.GetCurrentTime()
    stub.WriteLogEntries(
        logs_pb.WriteLogEntriesRequest(entries=[entry]),
        metadata=metadata,
        timeout=TIMEOUT,
    )


def _messages(admin_logs, service: str) -> list[str]:
    stub, metadata = admin_logs
    messages, token = [], ""
    while True:
        page = stub.ListLogEntries(
            logs_pb.ListLogEntriesRequest(services=[service], page_token=token),
            metadata=metadata,
            timeout=TIMEOUT,
        )
        messages.extend(entry.message for entry in page.entries)
        token = page.next_page_token
        if not token:
            return messages


@pytest.fixture
def config_home(live: LogsGateway, tmp_path, monkeypatch):
    """Save a session of an administrator, as `splitlog auth signin` does.

    Returns the XDG_CONFIG_HOME that contains it, also set for this process.
    """
    with grpc.insecure_channel(live.address) as channel:
        signed_up = sign_up_user(channel, "renew", PASSWORD, TIMEOUT)
        operator_admin_key(live.gateway.config.data_dir, signed_up.user.name)
        # Signed in after the admin key, so the tokens are an administrator's.
        signed_in = auth_grpc.AuthServiceStub(channel).SignIn(
            auth_pb.SignInRequest(email=signed_up.user.email, password=PASSWORD),
            timeout=TIMEOUT,
        )
    home = tmp_path / "config"
    store = SessionStore(home / "splitlog")
    store.save(live.address, Session.from_tokens(signed_in.user, signed_in.tokens))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return home


def _environment(config_home) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SPLITLOG_")
    }
    environment["XDG_CONFIG_HOME"] = str(config_home)
    return environment


def test_tail_continues_across_expiries(live, admin_logs, config_home, capsys):
    service = "renew-tail"
    written: list[str] = []
    write_times: list[float] = []
    stop = threading.Event()

    def write() -> None:
        # Starts once the tail has surely opened, and stops before it ends.
        time.sleep(1.5)
        ends_at = time.monotonic() + RUN_SECONDS - 3
        number = 0
        while time.monotonic() < ends_at and not stop.is_set():
            message = f"entry {number}"
            _write(admin_logs, service, message)
            written.append(message)
            write_times.append(time.monotonic())
            number += 1
            time.sleep(0.1)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        status = main(
            ["logs", "tail", "--service", service, "--format", "json"]
            + ["--duration", f"{RUN_SECONDS}s", "--gateway", live.address]
        )
    finally:
        stop.set()
        writer.join()
    captured = capsys.readouterr()
    printed = [json.loads(line)["message"] for line in captured.out.splitlines()]

    assert status == 0, captured.err
    assert "UNAUTHENTICATED" not in captured.err
    # Every entry written while the tail ran, once each and in order.
    assert printed == written, captured.err
    # The writes spanned at least one token expiry. A count of entries would
    # depend on how busy the machine is.
    assert len(written) >= 2
    assert write_times[-1] - write_times[0] > ACCESS_TOKEN_SECONDS


def test_ship_stdin_continues_across_expiries(live, admin_logs, config_home):
    service = "renew-ship"
    command = [str(SPLITLOG), "logs", "ship", "-", "--service", service]
    command += ["--flush-seconds", "0.2", "--gateway", live.address]
    shipper = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(config_home),
    )
    lines = 0
    try:
        ends_at = time.monotonic() + RUN_SECONDS
        while time.monotonic() < ends_at and shipper.poll() is None:
            shipper.stdin.write(f"shipped line {lines}\n".encode())
            shipper.stdin.flush()
            lines += 1
            time.sleep(0.25)
        out, err = shipper.communicate(timeout=60)
    finally:
        if shipper.poll() is None:
            shipper.kill()
            shipper.wait()
    stored = _messages(admin_logs, service)

    assert shipper.returncode == 0, err.decode()
    assert sorted(stored) == sorted(f"shipped line {n}" for n in range(lines))


def test_revoked_session_is_not_renewed_again(live, config_home):
    """A refresh token that the server rejected is not sent again."""
    store = SessionStore(config_home / "splitlog")
    saved = store.load(live.address)
    with grpc.insecure_channel(live.address) as channel:
        auth_grpc.AuthServiceStub(channel).SignOut(
            auth_pb.SignOutRequest(refresh_token=saved.refresh_token),
            metadata=(("authorization", f"Bearer {saved.access_token}"),),
            timeout=TIMEOUT,
        )
    credential = Credential(live.address, None, store)
    calls: list[str] = []

    def refresh(token: str) -> auth_pb.RefreshTokenResponse:
        calls.append(token)
        with grpc.insecure_channel(live.address) as channel:
            return auth_grpc.AuthServiceStub(channel).RefreshToken(
                auth_pb.RefreshTokenRequest(refresh_token=token), timeout=TIMEOUT
            )

    credential.refresh = refresh
    rejected = credential.bearer()

    assert not credential.renew(rejected)
    assert not credential.renew(rejected)
    assert len(calls) == 1
    assert credential.refresh_error is not None
