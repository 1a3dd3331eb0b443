"""Run the `splitlog` client commands as a user does, against `splitlog up`."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from tests.system.conftest import SPLITLOG, Splitlog, start_splitlog

COMMAND_TIMEOUT = 60.0
READY_TIMEOUT = 60.0


@dataclass
class Result:
    """What one `splitlog` command printed, and its exit status."""

    status: int
    stdout: str
    stderr: str


def run_splitlog(
    *args: str,
    gateway: str | None = None,
    config_home: Path | None = None,
    token: str | None = None,
) -> Result:
    """Run `.venv/bin/splitlog ARGS... [--gateway ADDR]` and return its output.

    `config_home` becomes XDG_CONFIG_HOME, the folder of the saved sessions,
    and `token` becomes SPLITLOG_TOKEN.
    """
    argv = [str(SPLITLOG), *args]
    if gateway is not None:
        argv += ["--gateway", gateway]
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SPLITLOG_")
    }
    if config_home is not None:
        environment["XDG_CONFIG_HOME"] = str(config_home)
    if token is not None:
        environment["SPLITLOG_TOKEN"] = token
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=environment,
        stdin=subprocess.DEVNULL,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def wait_until_serving_calls(running: Splitlog, timeout: float = READY_TIMEOUT) -> None:
    """Wait for the ready line, then until a call through the gateway succeeds."""
    deadline = time.monotonic() + timeout
    while not running.ready.wait(0.1):
        if running.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"splitlog did not start (status {running.process.poll()})"
                f"\n--- log ---\n{running.log()[-4000:]}"
            )
    with grpc.insecure_channel(running.grpc_address) as channel:
        stub = users_grpc.UsersServiceStub(channel)
        while True:
            try:
                stub.ListUsers(users_pb2.ListUsersRequest(page_size=1), timeout=2)
                return
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the gateway did not respond: {exc.code()}"
                    ) from None
                time.sleep(0.1)


@pytest.fixture(scope="module")
def splitlog_up(tmp_path_factory):
    """A `splitlog up` subprocess shared by the tests of one module."""
    running = start_splitlog(tmp_path_factory.mktemp("cli"))
    try:
        wait_until_serving_calls(running)
        yield running
    finally:
        running.kill_everything()


@pytest.fixture(scope="module")
def splitlog_up_with_auth(tmp_path_factory):
    """A `splitlog up` on its default settings, so every call needs a credential."""
    running = start_splitlog(tmp_path_factory.mktemp("cli-auth"), settings={})
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.kill_everything()
