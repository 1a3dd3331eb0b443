"""A backend that hangs: the gateway keeps its deadlines and leaks nothing.

`splitlog up --processes` runs one process per component. The test stops
user_service with SIGSTOP, so its port accepts connections but nothing
responds. Calls through the gateway to it end with DEADLINE_EXCEEDED at the
caller's deadline, or at the gateway's own deadline when the caller set
none, until the gateway's health checks find the backend not responding.
From then on they fail at once with UNAVAILABLE. Calls to other services go
through, and `splitlog health` on the gateway reports NOT_SERVING. After
SIGCONT, the gateway is SERVING again and its process has no more threads or
open file descriptors than before, give or take a small margin for pools
that grow on demand.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from tests.system.conftest import SPLITLOG, stopped, wait_for_health
from tests.system.money_support import Clients, component_pid, create_group

pytestmark = pytest.mark.system

#: Seconds each call through the gateway may take while the backend hangs.
CALL_DEADLINE = 0.5
#: Slack beyond the deadline for the client to see the failure.
SLACK = 2.0
HUNG_CALLS = 120
#: The gateway's own deadline for calls that carry none.
GATEWAY_DEADLINE = 1.0
#: Seconds the test waits for the call that carries no deadline of its own.
LONG_WAIT = 20.0
#: Seconds for the gateway's health to turn NOT_SERVING once the backend hangs:
#: its health checks of each backend run every 2 s by default and two must go
#: unanswered, far below this.
HEALTH_WAIT = 30.0
#: Threads and descriptors the gateway may gain, for pools that grow on demand.
THREAD_MARGIN = 4
FD_MARGIN = 8


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled_counts(pid: int, seconds: float = 3.0) -> tuple[int, int]:
    """Return the lowest thread and descriptor counts seen over `seconds`."""
    threads, descriptors = _threads(pid), _descriptors(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        threads = min(threads, _threads(pid))
        descriptors = min(descriptors, _descriptors(pid))
        time.sleep(0.1)
    return threads, descriptors


def _wait_cli_not_serving(address: str, timeout: float) -> tuple[int, str]:
    """Run `splitlog health` until it exits non-zero; return its status and stderr."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            [str(SPLITLOG), "health", address, "--timeout", "3"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0 or time.monotonic() > deadline:
            return result.returncode, result.stderr
        time.sleep(0.5)


def _get_user(
    clients: Clients, name: str, deadline: float | None = CALL_DEADLINE
) -> tuple[grpc.StatusCode, float]:
    started = time.monotonic()
    try:
        clients.users.GetUser(users_pb.GetUserRequest(name=name), timeout=deadline)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
    return code, time.monotonic() - started


@pytest.mark.timeout(180)
def test_hung_backend_deadline_and_no_leak(splitlog_factory):
    running = splitlog_factory(
        "--processes", "--deadline-seconds", str(GATEWAY_DEADLINE)
    )
    running.wait_until_ready()
    supervisor = running.process.pid
    gateway = component_pid(supervisor, "gateway")
    backend = component_pid(supervisor, "user_service")
    assert gateway and backend
    clients = Clients.connect(running.grpc_address)
    try:
        group_id, members = create_group(clients, 2)
        user = f"users/{members[0]}"
        # Warm up every pool and channel the calls below use.
        for _ in range(20):
            assert _get_user(clients, user)[0] == grpc.StatusCode.OK
        threads_before, descriptors_before = _settled_counts(gateway)

        with stopped(backend):
            with ThreadPoolExecutor(8) as pool:
                outcomes = list(
                    pool.map(lambda _: _get_user(clients, user), range(HUNG_CALLS))
                )
                # A call without a deadline gets the gateway's own one.
                no_deadline = pool.submit(_get_user, clients, user, None)
                gateway_ended = no_deadline.result(timeout=LONG_WAIT)
            health_status, health_error = _wait_cli_not_serving(
                running.grpc_address, HEALTH_WAIT
            )
            other = clients.expenses.ListExpenses(
                expenses_pb.ListExpensesRequest(parent=f"groups/{group_id}"),
                timeout=10,
            )

        wait_for_health(running.grpc_address, 30)
        recovered = _get_user(clients, user)
        threads_after, descriptors_after = _settled_counts(gateway)
    finally:
        clients.close()

    codes = [code for code, _ in outcomes]
    slowest = max(seconds for _, seconds in outcomes)
    # The first calls wait for their deadline. Once two health checks went
    # unanswered, the gateway fails the rest at once.
    assert codes[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert set(codes) <= {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
    }
    assert slowest < CALL_DEADLINE + SLACK
    assert gateway_ended[0] in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
    )
    assert health_status == 1
    assert health_error.splitlines()[0] == "NOT_SERVING"
    assert list(other.expenses) == []
    assert recovered[0] == grpc.StatusCode.OK
    assert component_pid(supervisor, "gateway") == gateway
    assert threads_after <= threads_before + THREAD_MARGIN
    assert descriptors_after <= descriptors_before + FD_MARGIN
