"""The money services ride out a restart of their PostgreSQL server.

The test starts a PostgreSQL instance of its own (initdb into a fresh folder,
pg_ctl on a free loopback port), runs user_service, expense_service and
balance_service as `splitlog serve` processes on it, stops the server and
starts it again. While it is down each service reports NOT_SERVING; once it
is back each one reports SERVING and serves calls, in the same process.
The shared server on port 5432 is never touched.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from tests.ports import free_ports
from tests.system.conftest import SPLITLOG, process_exists

pytestmark = pytest.mark.system

SERVICES = ("user_service", "expense_service", "balance_service")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: Seconds a service gets to notice that its database went away or came back.
HEALTH_TIMEOUT = 20.0


def _postgres_bindir() -> Path | None:
    candidates = []
    if shutil.which("pg_config"):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(Path(found.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


@dataclass
class Postgres:
    """A PostgreSQL instance of the test's own, run as an unprivileged user."""

    bindir: Path
    data_dir: Path
    port: int
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bindir / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return command

    def run(self, tool: str, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            self.command(tool, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{tool} failed:\n{result.stderr}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.data_dir} -c fsync=off"
        )
        log = str(self.data_dir / "server.log")
        self.run("pg_ctl", "start", "-D", self.cluster, "-w", "-o", options, "-l", log)

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "stop", "-D", self.cluster, "-w", "-m", mode)

    @property
    def cluster(self) -> str:
        return str(self.data_dir / "db")


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: "
            "install the postgresql package to run this test"
        )
    user = None
    if os.geteuid() == 0:
        # initdb refuses to run as root; run the instance as `postgres`.
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no `postgres` user to run initdb as")
        if not shutil.which("runuser"):
            pytest.skip("running as root and no `runuser` to run initdb as postgres")
        user = "postgres"
    # pytest's tmp_path sits under a folder only its owner may enter, so the
    # instance gets a folder of its own that the server's user owns.
    data_dir = Path(tempfile.mkdtemp(prefix="splitlog-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    instance = Postgres(bindir, data_dir, free_ports(1)[0], user)
    try:
        instance.run(
            "initdb", "-D", instance.cluster, "-U", "postgres", "-A", "trust", "-N"
        )
        instance.start()
        yield instance
    finally:
        subprocess.run(
            instance.command("pg_ctl", "stop", "-D", instance.cluster, "-m", "i"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Services:
    """The money services as `splitlog serve` processes, one per component."""

    ports: dict[str, int]
    processes: dict[str, subprocess.Popen]
    log_dir: Path

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:]
            for path in sorted(self.log_dir.glob("*.log"))
        )


@pytest.fixture
def services(postgres, tmp_path) -> Iterator[Services]:
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    common = ["--data-dir", str(tmp_path / "data"), "--grace-seconds", "1"]
    for service, port in ports.items():
        flag = "--" + service.replace("_", "-")
        common += [f"{flag}-port", str(port), f"{flag}-db-url", postgres.url]
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SPLITLOG_")
    }
    environment["SPLITLOG_LOG_SELF_SHIP"] = "false"
    environment["SPLITLOG_AUTH_REQUIRED"] = "false"
    processes = {}
    try:
        for service in SERVICES:
            with open(tmp_path / f"{service}.log", "wb") as log:
                processes[service] = subprocess.Popen(
                    [str(SPLITLOG), "serve", service, *common],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    start_new_session=True,
                )
        running = Services(ports, processes, tmp_path)
        for service in SERVICES:
            _wait_for_status(running, service, SERVING)
        yield running
    finally:
        for process in processes.values():
            process.kill()
            process.wait(timeout=10)


def _status(address: str) -> object:
    with grpc.insecure_channel(address) as channel:
        try:
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), timeout=2)
                .status
            )
        except grpc.RpcError as exc:
            return exc.code()


def _wait_for_status(services: Services, service: str, expected: int) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    status = None
    while time.monotonic() < deadline:
        status = _status(services.address(service))
        if status == expected:
            return
        assert services.processes[service].poll() is None, (
            f"{service} exited\n{services.log()}"
        )
        time.sleep(0.1)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(expected)
    raise AssertionError(
        f"{service} still reports {status}, not {name}, after "
        f"{HEALTH_TIMEOUT:.0f}s\n{services.log()}"
    )


def _create_user(services: Services, user_id: str) -> users_pb.User:
    with grpc.insecure_channel(services.address("user_service")) as channel:
        return (
            users_grpc.UsersServiceStub(channel)
            .CreateUser(
                users_pb.CreateUserRequest(
                    user=users_pb.User(
                        email=f"{user_id}@example.com", display_name=user_id
                    ),
                    user_id=user_id,
                ),
                timeout=10,
            )
            .user
        )


@pytest.mark.timeout(120)
def test_postgres_restart_health_and_recovery(postgres, services):
    before = _create_user(services, "before-restart")
    pids = {service: process.pid for service, process in services.processes.items()}

    postgres.stop()
    for service in SERVICES:
        _wait_for_status(services, service, NOT_SERVING)
    with pytest.raises(grpc.RpcError) as refused:
        _create_user(services, "while-down")
    postgres.start()
    for service in SERVICES:
        _wait_for_status(services, service, SERVING)
    after = _create_user(services, "after-restart")

    assert before.name == "users/before-restart"
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert after.name == "users/after-restart"
    for service, process in services.processes.items():
        assert process.poll() is None, f"{service} exited"
        assert process.pid == pids[service]
        assert process_exists(process.pid)
