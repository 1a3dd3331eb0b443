"""The gateway's views with balance_service stopped by SIGSTOP.

A stopped process keeps its connections open, so a backend call to it waits
for the view's whole deadline. Once the gateway's health checks find
balance_service not responding, the views skip its calls: the sections it
feeds fail at once with UNAVAILABLE and reason BACKEND_UNAVAILABLE, and the
other sections load as usual. balance_service runs as a real process
(`splitlog serve`); user_service, expense_service and the gateway run in
this process.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from expense_service.app import build as build_expenses
from gateway.app import build
from splitlog.gateway.v1 import gateway_service_pb2 as pb
from splitlog.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.errors import status_reason
from tests.gateway.support import LoopThread
from tests.ports import closed_address
from tests.system.conftest import kill_component, serve_component
from user_service.app import build as build_users
from user_service.guards import AllowAllBalanceGuard

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

BALANCES_SERVICE = "splitlog.balances.v1.BalancesService"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROBE_SECONDS = 0.5
# A client deadline far above the time the gateway needs to notice.
CLIENT_TIMEOUT = 10.0
# Seconds within which a view must return. It took the view's whole
# deadline (`deadline_seconds` minus a reserve, about 4.7 s) before.
FAST_ANSWER_SECONDS = 3.0


@dataclass
class Running:
    balances: subprocess.Popen
    gateway_channel: grpc.Channel


@pytest.fixture
def running(tmp_path) -> Iterator[Running]:
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path,
            "grace_seconds": 1.0,
            "deadline_seconds": 5.0,
        },
    )
    users = build_users(base, "127.0.0.1:0", guard=AllowAllBalanceGuard())
    users_address = f"127.0.0.1:{users.port}"
    expenses = build_expenses(
        base.replace(user_service_addr=users_address), "127.0.0.1:0"
    )
    loop = LoopThread()
    balances = None
    gateway = None
    channel = None
    try:
        balances_dir = tmp_path / "balances"
        balances_dir.mkdir()
        balances, balances_address = serve_component(
            "balance_service",
            balances_dir,
            {
                "SPLITLOG_USER_SERVICE_ADDR": users_address,
                "SPLITLOG_EXPENSE_SERVICE_ADDR": f"127.0.0.1:{expenses.port}",
                "SPLITLOG_LOG_SERVICE_ADDR": closed_address(),
            },
        )
        config = config_module.load(
            environ={},
            overrides={
                "auth_required": False,
                "data_dir": str(tmp_path / "gateway"),
                "user_service_addr": users_address,
                "expense_service_addr": f"127.0.0.1:{expenses.port}",
                "balance_service_addr": balances_address,
                "log_service_addr": closed_address(),
                "gateway_health_probe_seconds": PROBE_SECONDS,
                "grace_seconds": 1.0,
                "deadline_seconds": 5.0,
            },
        )
        gateway = loop.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
        channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
        yield Running(balances, channel)
    finally:
        if channel is not None:
            channel.close()
        if balances is not None:
            kill_component(balances)
        if gateway is not None:
            loop.run(gateway.stop(0))
        loop.close()
        expenses.stop(0)
        users.stop(0)


def _wait_not_serving(channel: grpc.Channel, timeout: float = 20.0) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=BALANCES_SERVICE)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = stub.Check(request, timeout=2).status
        if status == NOT_SERVING:
            return
        time.sleep(0.1)
    raise AssertionError(f"{BALANCES_SERVICE} at the gateway is {status}")


def _reasons(response) -> dict[str, set[str]]:
    """Return the ErrorInfo reasons of the section errors, by section."""
    reasons: dict[str, set[str]] = {}
    for error in response.section_errors:
        reasons.setdefault(error.section, set()).add(status_reason(error.status))
    return reasons


def _codes(response) -> dict[str, set[int]]:
    codes: dict[str, set[int]] = {}
    for error in response.section_errors:
        codes.setdefault(error.section, set()).add(error.status.code)
    return codes


def test_views_skip_stopped_balance_service(running):
    channel = running.gateway_channel
    users = users_grpc.UsersServiceStub(channel)
    views = pb_grpc.GatewayServiceStub(channel)
    user_id = f"u{uuid.uuid4().hex[:12]}"
    user = users.CreateUser(
        users_pb.CreateUserRequest(
            user=users_pb.User(email=f"{user_id}@example.com", display_name="Ann"),
            user_id=user_id,
        ),
        timeout=CLIENT_TIMEOUT,
    ).user
    group = users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Trip", creator=user.name)
        ),
        timeout=CLIENT_TIMEOUT,
    ).group
    overview_request = pb.GetGroupOverviewRequest(group=group.name)
    dashboard_request = pb.GetUserDashboardRequest(user=user.name)
    before = views.GetGroupOverview(overview_request, timeout=CLIENT_TIMEOUT)

    running.balances.send_signal(signal.SIGSTOP)
    _wait_not_serving(channel)
    started = time.monotonic()
    overview = views.GetGroupOverview(overview_request, timeout=CLIENT_TIMEOUT)
    overview_seconds = time.monotonic() - started
    started = time.monotonic()
    dashboard = views.GetUserDashboard(dashboard_request, timeout=CLIENT_TIMEOUT)
    dashboard_seconds = time.monotonic() - started
    running.balances.send_signal(signal.SIGCONT)

    unavailable = grpc.StatusCode.UNAVAILABLE.value[0]
    assert list(before.section_errors) == []
    assert _reasons(overview) == {
        "balance": {"BACKEND_UNAVAILABLE"},
        "settlement_plan": {"BACKEND_UNAVAILABLE"},
    }
    assert _codes(overview) == {
        "balance": {unavailable},
        "settlement_plan": {unavailable},
    }
    assert "balance_service is not responding" in (
        overview.section_errors[0].status.message
    )
    assert [member.user for member in overview.members] == [user.name]
    assert overview_seconds < FAST_ANSWER_SECONDS
    assert _reasons(dashboard) == {
        "group_summaries.net_amounts": {"BACKEND_UNAVAILABLE"},
        "total_net_amounts": {"BACKEND_UNAVAILABLE"},
        "recent_activity": {"BACKEND_UNAVAILABLE"},
    }
    assert [summary.group.name for summary in dashboard.group_summaries] == [group.name]
    assert dashboard_seconds < FAST_ANSWER_SECONDS
