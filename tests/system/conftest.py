"""Start `splitlog` as a user does: a real subprocess on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitlog_cli.signals import SUPERVISOR_PID_ENV
from tests.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SPLITLOG = BIN / "splitlog"
GRPCURL = BIN / "grpcurl"

READY_LINE = "splitlog is ready; press Ctrl-C to stop"
START_TIMEOUT = 60.0
#: Seconds one `splitlog serve` process may take to print its address, and
#: then to serve.
SERVE_START_SECONDS = 30.0
_ROW = re.compile(r"^  (?P<label>\S.*?)  +(?P<value>\S+)(?:  \(pid (?P<pid>\d+)\))?$")

# Most system tests drive the services without credentials. A flag such as
# `--auth-required true` still wins over this variable.
WITHOUT_AUTH = {"SPLITLOG_AUTH_REQUIRED": "false"}

PORT_FLAGS = (
    "--gateway-port",
    "--http-port",
    "--user-service-port",
    "--expense-service-port",
    "--balance-service-port",
    "--log-service-port",
)


def log_nodes_on_free_ports(shards: int = 2, replicas: int = 2) -> str:
    """Return a `--log-nodes` value that puts every log node on a free port."""
    ports = iter(free_ports(shards * replicas))
    return ";".join(
        f"shard-{shard}="
        + ",".join(
            f"shard-{shard}-{'abcdefgh'[replica]}@127.0.0.1:{next(ports)}"
            for replica in range(replicas)
        )
        for shard in range(shards)
    )


@dataclass
class Splitlog:
    """A running `splitlog` command, its output and its ports."""

    args: list[str]
    ports: dict[str, int | str]
    log_path: Path
    process: subprocess.Popen
    stdout_lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.ports['--gateway-port']}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['--http-port']}"

    @property
    def data_dir(self) -> Path:
        """The `--data-dir` of the command, which contains the user database."""
        return Path(self.args[self.args.index("--data-dir") + 1])

    def rows(self) -> dict[str, tuple[str, int | None]]:
        """Return the printed address block: label -> (address, pid or None)."""
        rows = {}
        for line in self.stdout_lines:
            match = _ROW.match(line)
            if match:
                pid = int(match["pid"]) if match["pid"] else None
                rows[match["label"]] = (match["value"], pid)
        return rows

    def component_pids(self) -> dict[str, int]:
        """Return component name -> pid of the children that `--processes` printed."""
        pids = {}
        for label, (_, pid) in self.rows().items():
            if not pid:
                continue
            if label.startswith("log node "):
                pids["log_node_" + label.removeprefix("log node ")] = pid
            else:
                pids[label.split()[0]] = pid
        return pids

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for the ready line and for the gateway to report SERVING."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"splitlog did not become ready (status {self.process.poll()})"
                    f"\n--- log ---\n{self.log()[-4000:]}"
                )
        wait_for_health(self.grpc_address, deadline - time.monotonic())

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill_everything(self) -> None:
        """Kill the command, its process group and any child it printed."""
        pids = list(self.component_pids().values())
        pids += list(supervised_pids(self.process.pid))
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def supervised_pids(supervisor_pid: int) -> dict[int, str]:
    """Return pid -> component of each live child of one `up --processes`.

    Every child gets the supervisor's pid in its environment, so this also
    finds children that outlived the supervisor.
    """
    marker = f"{SUPERVISOR_PID_ENV}={supervisor_pid}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                arguments = cmdline.read().split(b"\0")
        except OSError:
            continue
        if b"serve" in arguments:
            component = arguments[arguments.index(b"serve") + 1].decode()
            found[int(entry)] = component
    return found


def start_splitlog(
    tmp_path: Path,
    *extra: str,
    data_dir: Path | None = None,
    ports: dict[str, int | str] | None = None,
    settings: Mapping[str, str] = WITHOUT_AUTH,
    grace_seconds: float = 5.0,
) -> Splitlog:
    """Run `splitlog up EXTRA... --data-dir D --<x>-port P...` in a new session.

    The process gets `settings` as its only SPLITLOG_* variables. Pass `{}`
    to run on the defaults, which require a credential on every call.
    """
    if ports is None:
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        ports["--log-nodes"] = log_nodes_on_free_ports()
    data_dir = data_dir or tmp_path / "data"
    args = [str(SPLITLOG), "up", *extra, "--data-dir", str(data_dir)]
    args += ["--grace-seconds", f"{grace_seconds:g}", "--workers", "8"]
    for flag, port in ports.items():
        args += [flag, str(port)]
    log_path = tmp_path / f"splitlog-{len(list(tmp_path.glob('splitlog-*')))}.log"
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SPLITLOG_")
    }
    environment.update(settings)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=environment,
            start_new_session=True,
        )
    running = Splitlog(args, ports, log_path, process)
    threading.Thread(target=_read_stdout, args=(running,), daemon=True).start()
    return running


def _read_stdout(running: Splitlog) -> None:
    for line in running.process.stdout:
        running.stdout_lines.append(line.rstrip("\n"))
        if line.strip() == READY_LINE:
            running.ready.set()


def wait_for_health(address: str, timeout: float, service: str = "") -> None:
    """Poll grpc.health.v1.Health/Check until SERVING or the timeout."""
    deadline = time.monotonic() + max(timeout, 0.1)
    last = None
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                response = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = response.status
            except grpc.RpcError as exc:
                last = exc.code()
            time.sleep(0.1)
    raise AssertionError(f"{address} not SERVING after {timeout:.0f}s: {last}")


def serve_component(
    service: str, data_dir: Path, settings: Mapping[str, str]
) -> tuple[subprocess.Popen, str]:
    """Run `splitlog serve SERVICE` of this checkout on a free port; return the
    process and its address once it serves.

    The process runs in a new session and gets only these SPLITLOG_*
    variables: no credential check, no log shipping, 127.0.0.1, port 0,
    `data_dir`, then `settings`. Its stderr goes to `data_dir/SERVICE.stderr`.
    Stop it with `kill_component`.
    """
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SPLITLOG_")
    }
    environment.update(
        {
            "PYTHONPATH": str(REPO),
            "SPLITLOG_AUTH_REQUIRED": "false",
            "SPLITLOG_DATA_DIR": str(data_dir),
            f"SPLITLOG_{service.upper()}_PORT": "0",
            "SPLITLOG_LOG_SELF_SHIP": "false",
            "SPLITLOG_HOST": "127.0.0.1",
            **settings,
        }
    )
    stderr_path = data_dir / f"{service}.stderr"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "splitlog_cli", "serve", service],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=environment,
            text=True,
            start_new_session=True,
        )

    address_line = re.compile(rf"^\s*{service}\s+(\S+:\d+)\s*$", re.MULTILINE)
    printed = ""
    deadline = time.monotonic() + SERVE_START_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        printed += line
        found = address_line.search(printed)
        if found:
            address = found.group(1)
            wait_for_health(address, SERVE_START_SECONDS)
            return process, address

    kill_component(process)
    stderr_text = stderr_path.read_text(errors="replace")
    raise AssertionError(
        f"{service} printed no address:\n{printed}\n{stderr_text[-3000:]}"
    )


def kill_component(process: subprocess.Popen) -> None:
    """Kill a process of `serve_component`, also one stopped with SIGSTOP."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stdout.close()


def wait_for_log_entries(
    http_url: str, service: str, keyword: str, timeout: float = 30.0
) -> list[dict]:
    """Poll GET /logs until entries of `service` contain `keyword`; return them."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(
            f"{http_url}/logs",
            params={"services": service, "keyword": keyword},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        entries = response.json().get("entries", [])
        if entries:
            return entries
        assert time.monotonic() < deadline, (
            f"no {service} entry with {keyword!r} in log_service after {timeout:.0f}s"
        )
        time.sleep(0.5)


def grpcurl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run the grpcurl binary with a bounded time."""
    if not GRPCURL.exists():
        pytest.skip(f"grpcurl not installed at {GRPCURL}")
    return subprocess.run(
        [str(GRPCURL), "-plaintext", "-max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def grpcurl_json(*args: str) -> dict:
    """Run grpcurl, check it succeeded and parse its JSON output."""
    result = grpcurl(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def process_exists(pid: int) -> bool:
    """Return True while `pid` is running (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids, timeout: float) -> list[int]:
    """Wait until none of `pids` runs; return the ones still running at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if process_exists(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """Stop process `pid` with SIGSTOP for the block, and let it go on after."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def splitlog_factory(tmp_path):
    """Start `splitlog up` processes and kill whatever is left in teardown."""
    started: list[Splitlog] = []

    def start(*extra: str, **options) -> Splitlog:
        running = start_splitlog(tmp_path, *extra, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill_everything()
