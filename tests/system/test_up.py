"""`splitlog up` in one process, driven with grpcurl and HTTP like a user would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.ports import free_ports
from tests.system.conftest import (
    PORT_FLAGS,
    SPLITLOG,
    grpcurl,
    grpcurl_json,
    log_nodes_on_free_ports,
    start_splitlog,
    wait_for_log_entries,
)

pytestmark = pytest.mark.system

USERS_SERVICE = "splitlog.users.v1.UsersService"


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    running = start_splitlog(tmp_path_factory.mktemp("up"))
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.kill_everything()


def _create_user(address: str, display_name: str = "Ada") -> dict:
    request = {
        "user": {
            "email": f"{uuid.uuid4().hex[:10]}@example.com",
            "display_name": display_name,
        }
    }
    return grpcurl_json(
        "-d", json.dumps(request), address, f"{USERS_SERVICE}/CreateUser"
    )["user"]


def test_prints_every_address(system):
    rows = system.rows()

    assert rows["gateway (gRPC)"][0] == system.grpc_address
    assert rows["gateway (REST)"][0] == system.http_url
    assert rows["user_service"][0].endswith(f":{system.ports['--user-service-port']}")
    assert rows["log_service"][0].endswith(f":{system.ports['--log-service-port']}")
    assert "data directory" in rows
    for shard in str(system.ports["--log-nodes"]).split(";"):
        for member in shard.split("=")[1].split(","):
            node_id, address = member.split("@")
            assert rows[f"log node {node_id}"][0] == address


def test_grpcurl_lists_services(system):
    result = grpcurl(system.grpc_address, "list")

    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert USERS_SERVICE in services
    assert "grpc.health.v1.Health" in services


def test_grpcurl_describes_users_service(system):
    result = grpcurl(system.grpc_address, "describe", USERS_SERVICE)

    assert result.returncode == 0, result.stderr
    assert "rpc CreateUser" in result.stdout
    assert "rpc CreateGroup" in result.stdout


def test_grpcurl_health_check_serving(system):
    response = grpcurl_json(system.grpc_address, "grpc.health.v1.Health/Check")

    assert response["status"] == "SERVING"


def test_grpcurl_creates_user_and_group(system):
    user = _create_user(system.grpc_address)
    request = {"group": {"display_name": "Lisbon trip", "creator": user["name"]}}

    group = grpcurl_json(
        "-d", json.dumps(request), system.grpc_address, f"{USERS_SERVICE}/CreateGroup"
    )["group"]

    assert user["name"].startswith("users/")
    assert group["name"].startswith("groups/")
    assert group["creator"] == user["name"]
    assert group["member_count"] == 1


def test_grpcurl_invalid_user_is_invalid_argument(system):
    result = grpcurl(
        "-d",
        json.dumps({"user": {"display_name": "No email"}}),
        system.grpc_address,
        f"{USERS_SERVICE}/CreateUser",
    )

    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "email" in result.stderr


def test_grpcurl_prints_error_details(system):
    result = grpcurl(
        "-format-error",
        "-d",
        json.dumps({"name": "users/nobody-here"}),
        system.grpc_address,
        f"{USERS_SERVICE}/GetUser",
    )

    assert result.returncode != 0
    assert "not recognized" not in result.stdout + result.stderr
    assert "USER_NOT_FOUND" in result.stdout + result.stderr


def test_rest_creates_and_reads_user(system):
    body = {"email": f"{uuid.uuid4().hex[:10]}@example.com", "displayName": "Grace"}

    with httpx.Client(base_url=system.http_url, timeout=10) as client:
        created = client.post("/v1/users", json=body)
        assert created.status_code == 200, created.text
        name = created.json()["user"]["name"]
        fetched = client.get(f"/v1/{name}")

    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["user"]["email"] == body["email"]


def test_rest_reads_user_created_over_grpc(system):
    user = _create_user(system.grpc_address, "Hopper")

    response = httpx.get(f"{system.http_url}/v1/{user['name']}", timeout=10)

    assert response.status_code == 200, response.text
    assert response.json()["user"]["displayName"] == "Hopper"


def test_rest_missing_user_is_404(system):
    response = httpx.get(f"{system.http_url}/v1/users/no-such-user", timeout=10)

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_data_directory_owner_only(system):
    # A log write makes the nodes create their store files and DuckDB's
    # write-ahead log beside them while the system runs.
    written = httpx.post(
        f"{system.http_url}/logs",
        json={"service": "modes", "message": "check the file modes"},
        timeout=10,
    )
    data_dir = Path(system.args[system.args.index("--data-dir") + 1])
    # The nodes apply committed entries to their store in the background.
    deadline = time.monotonic() + 20
    while not any(data_dir.rglob("*.duckdb")) and time.monotonic() < deadline:
        time.sleep(0.1)
    loose = {
        str(path.relative_to(data_dir)): oct(stat.S_IMODE(path.stat().st_mode))
        for path in [data_dir, *data_dir.rglob("*")]
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077
    }

    assert written.status_code == 200, written.text
    assert any(data_dir.rglob("*.duckdb")), "no log store file was created"
    assert loose == {}


@pytest.mark.parametrize(
    ("service", "line"),
    [
        ("gateway", "gateway listening: gRPC on port"),
        ("gateway", "gateway forwards user_service to"),
        # The services' servers log through splitlog_runtime, and `up` ships
        # those records as the service that they name.
        ("user_service", "user_service listening on port"),
        ("user_service", "user_service storage:"),
        ("gateway", "Started server process"),
    ],
)
def test_startup_lines_shipped(system, service, line):
    entries = wait_for_log_entries(system.http_url, service, line)

    assert len(entries) == 1
    assert entries[0]["service"] == service
    assert line in entries[0]["message"]


def _run_without_settings(args: list[str]) -> subprocess.CompletedProcess:
    """Run a command for at most 60 s with no SPLITLOG_* variable set."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SPLITLOG_")
    }
    return subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def test_second_up_same_data_dir_exits_1(system):
    data_dir = Path(system.args[system.args.index("--data-dir") + 1])
    args = [str(SPLITLOG), "up", "--data-dir", str(data_dir)]
    for flag, port in zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True):
        args += [flag, str(port)]
    args += ["--log-nodes", log_nodes_on_free_ports()]
    # Should the check fail, the second system starts, and the timeout ends it.
    second = _run_without_settings(args)

    assert second.returncode == 1, second.stderr
    assert second.stderr == (
        f"splitlog: error: the data directory {data_dir.resolve()} is in use by "
        f"another splitlog (pid {system.process.pid}); stop it or use another "
        "--data-dir\n"
    )
    assert system.process.poll() is None


@pytest.mark.parametrize("component", ["log_service", "user_service"])
def test_serve_component_of_running_up_exits_1(system, component):
    data_dir = Path(system.args[system.args.index("--data-dir") + 1])
    port, log_port = free_ports(2)
    port_flag = f"--{component.replace('_', '-')}-port"
    args = [str(SPLITLOG), "serve", component, "--data-dir", str(data_dir)]
    args += [port_flag, str(port), "--log-nodes", log_nodes_on_free_ports()]
    # Its own logs go to a closed port, never to a system on the default one.
    args += ["--log-service-addr", f"127.0.0.1:{log_port}"]
    # Should the check fail, the component starts, and the timeout ends it.
    second = _run_without_settings(args)

    assert second.returncode == 1, second.stderr
    assert second.stderr.endswith(
        f"splitlog: error: the data directory {data_dir.resolve()} is in use by "
        f"another splitlog (pid {system.process.pid}); stop it or use another "
        "--data-dir\n"
    )
    assert system.process.poll() is None
