"""The records that `splitlog up --processes` logs while its children start.

The supervisor ships its own records as service `splitlog` to the log router,
which it starts itself after the log nodes. On a loaded machine the router
can take longer to come up than the retry period of a shipped batch. So the
test stops the router child with SIGSTOP for longer than that period. It
then checks that the startup records still arrive and that no warning about
dropped records is printed.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from splitlog_runtime.config import SETTINGS_BY_NAME
from splitlog_runtime.logship import DEFAULT_RETRY_SECONDS
from tests.system.conftest import stopped, supervised_pids

pytestmark = pytest.mark.system

# Longer than a batch's retry period, so a shipper that gave up a batch after
# that period would have dropped it by the time the router responds.
ROUTER_PAUSE_SECONDS = DEFAULT_RETRY_SECONDS + 5
READY_TIMEOUT = ROUTER_PAUSE_SECONDS + 90
# The supervisor spawns the router once the log nodes report SERVING, which
# it waits for up to startup_timeout_seconds.
SPAWN_TIMEOUT = SETTINGS_BY_NAME["startup_timeout_seconds"].default + 30
QUERY_TIMEOUT = 30.0


def wait_for_child(supervisor_pid: int, component: str) -> int:
    """Return the pid of the supervisor's child that serves `component`."""
    deadline = time.monotonic() + SPAWN_TIMEOUT
    while time.monotonic() < deadline:
        for pid, name in supervised_pids(supervisor_pid).items():
            if name == component:
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no {component} child within {SPAWN_TIMEOUT:.0f}s")


def shipped_messages(http_url: str, expected: set[str]) -> set[str]:
    """Poll GET /logs for the `splitlog` entries until `expected` are stored."""
    deadline = time.monotonic() + QUERY_TIMEOUT
    while True:
        response = httpx.get(
            f"{http_url}/logs",
            params={"services": "splitlog", "pageSize": 1000},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        messages = {entry["message"] for entry in response.json().get("entries", [])}
        if expected <= messages or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def test_startup_records_wait_for_slow_router(splitlog_factory):
    running = splitlog_factory("--processes")
    supervisor = running.process.pid
    router = wait_for_child(supervisor, "log_service")
    with stopped(router):
        time.sleep(ROUTER_PAUSE_SECONDS)
    running.wait_until_ready(timeout=READY_TIMEOUT)

    supervisor_lines = [
        line for line in running.log().splitlines() if f" {supervisor} " in line
    ]
    started = {
        match["message"]
        for line in supervisor_lines
        if (
            match := re.search(
                r"splitlog_cli\.processes: (?P<message>started .*)$", line
            )
        )
    }
    messages = shipped_messages(running.http_url, started)

    assert "started log_service (pid" in " ".join(started)
    assert started <= messages, sorted(started - messages)
    dropped = [line for line in supervisor_lines if "splitlog_runtime.logship" in line]
    assert dropped == []
