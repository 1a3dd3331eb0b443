"""`splitlog up --processes`: one real child process per component."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import httpx
import pytest

from splitlog_cli.topology import all_components
from splitlog_runtime import config as config_module
from tests.system.conftest import (
    grpcurl,
    grpcurl_json,
    start_splitlog,
    wait_for_log_entries,
    wait_gone,
)

pytestmark = pytest.mark.system

USERS_SERVICE = "splitlog.users.v1.UsersService"
COMPONENT_NAMES = [
    component.name for component in all_components(config_module.load(environ={}))
]


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().split(") ", 1)[1].split()[1])


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    running = start_splitlog(tmp_path_factory.mktemp("processes"), "--processes")
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.kill_everything()


def test_one_child_per_component(system):
    pids = system.component_pids()

    assert sorted(pids) == sorted(COMPONENT_NAMES)
    assert len(set(pids.values())) == len(COMPONENT_NAMES)
    for name, pid in pids.items():
        assert _parent_pid(pid) == system.process.pid, name


def test_each_child_serves_its_port(system):
    log_nodes = dict(
        member.split("@")
        for shard in str(system.ports["--log-nodes"]).split(";")
        for member in shard.split("=")[1].split(",")
    )
    for name in COMPONENT_NAMES:
        if name == "gateway":
            continue
        if name.startswith("log_node_"):
            address = log_nodes[name.removeprefix("log_node_")]
        else:
            flag = "--" + name.replace("_", "-") + "-port"
            address = f"127.0.0.1:{system.ports[flag]}"

        response = grpcurl_json(address, "grpc.health.v1.Health/Check")

        assert response["status"] == "SERVING", name


def test_gateway_forwards_to_user_service_child(system):
    request = {"user": {"email": f"{uuid.uuid4().hex[:10]}@example.com"}}
    request["user"]["display_name"] = "Lovelace"

    user = grpcurl_json(
        "-d", json.dumps(request), system.grpc_address, f"{USERS_SERVICE}/CreateUser"
    )["user"]
    fetched = httpx.get(f"{system.http_url}/v1/{user['name']}", timeout=10)

    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["user"]["displayName"] == "Lovelace"


def test_grpcurl_lists_services_through_gateway(system):
    result = grpcurl(system.grpc_address, "list")

    assert result.returncode == 0, result.stderr
    assert USERS_SERVICE in result.stdout.split()


@pytest.mark.parametrize(
    ("service", "line"),
    [
        ("gateway", "gateway listening: gRPC on port"),
        ("gateway", "gateway forwards user_service to"),
        ("user_service", "user_service listening on port"),
    ],
)
def test_startup_lines_shipped(system, service, line):
    entries = wait_for_log_entries(system.http_url, service, line)

    assert len(entries) == 1
    assert entries[0]["service"] == service
    assert line in entries[0]["message"]


def _child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def _create_user(address: str, display_name: str) -> dict:
    request = {"user": {"email": f"{uuid.uuid4().hex[:10]}@example.com"}}
    request["user"]["display_name"] = display_name
    return grpcurl_json(
        "-d", json.dumps(request), address, f"{USERS_SERVICE}/CreateUser"
    )["user"]


def _wait_for_user(address: str, name: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        result = grpcurl(
            "-d", json.dumps({"name": name}), address, f"{USERS_SERVICE}/GetUser"
        )
        if result.returncode == 0:
            return json.loads(result.stdout)["user"]
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.2)


def test_crashed_child_restarted(system):
    before = _create_user(system.grpc_address, "Before")
    old_pid = system.component_pids()["user_service"]

    os.kill(old_pid, signal.SIGKILL)
    fetched = _wait_for_user(system.grpc_address, before["name"], timeout=15)
    after = _create_user(system.grpc_address, "After")

    assert system.process.poll() is None
    assert fetched["display_name"] == "Before"
    assert after["display_name"] == "After"
    assert wait_gone([old_pid], timeout=5) == []
    assert len(_child_pids(system.process.pid)) == len(COMPONENT_NAMES)
    assert "user_service" in system.log()
    assert "exited unexpectedly with signal SIGKILL" in system.log()
    # The supervisor ships its own records as service `splitlog`.
    shipped = wait_for_log_entries(system.http_url, "splitlog", "exited unexpectedly")
    assert "user_service" in shipped[0]["message"]


def test_children_stop_when_supervisor_killed(splitlog_factory):
    running = splitlog_factory("--processes")
    running.wait_until_ready()
    pids = running.component_pids()

    running.process.kill()
    running.wait(timeout=10)

    assert wait_gone(pids.values(), timeout=15) == []


def test_slow_start_names_startup_timeout(splitlog_factory):
    """A component slower than startup_timeout_seconds stops `up` with advice."""
    running = splitlog_factory("--processes", "--startup-timeout-seconds", "0.1")

    status = running.wait(timeout=120)
    log = running.log()

    assert status == 1
    assert "did not report SERVING within 0.1s" in log
    assert "raise startup_timeout_seconds" in log
    assert "SPLITLOG_STARTUP_TIMEOUT_SECONDS" in log
