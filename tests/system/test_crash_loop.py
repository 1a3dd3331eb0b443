"""`splitlog up --processes` with a component that keeps crashing.

The tests hold a log follower's lock file, as a second copy of the node
would, so the follower exits with status 1 each time it starts. After the
system was ready, the supervisor must back the follower off while the rest
keeps serving, and the follower must rejoin once the lock is free. Before
the system was ever ready, the same failure must stop everything with
status 1.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.topology import all_components
from splitlog_runtime import config as config_module
from tests.ports import free_ports
from tests.system.conftest import (
    PORT_FLAGS,
    log_nodes_on_free_ports,
    supervised_pids,
    wait_for_log_entries,
    wait_gone,
)

pytestmark = pytest.mark.system

SHARD = "shard-0"
CRASH_LOOP_LINE = "is crash-looping"
#: Seconds for the follower to crash often enough to count as crash-looping:
#: six starts of a log node on a loaded machine, and the restart delays.
CRASH_LOOP_TIMEOUT = 120.0
CALL_TIMEOUT = 10.0


def _ports() -> dict[str, int | str]:
    """Return free ports, with one shard of two replicas.

    With one shard, every log write goes to the crashing follower's shard.
    """
    ports: dict[str, int | str] = dict(
        zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True)
    )
    ports["--log-nodes"] = log_nodes_on_free_ports(shards=1, replicas=2)
    return ports


def _node_ids(log_nodes: str) -> list[str]:
    """Return the node ids of a one-shard `--log-nodes` value, in order."""
    members = log_nodes.split("=", 1)[1].split(",")
    return [member.split("@")[0] for member in members]


def _wait_for(
    condition: Callable[[], bool], what: str, timeout: float, running=None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if running is not None and running.process.poll() is not None:
            raise AssertionError(
                f"splitlog exited with status {running.process.poll()} while "
                f"waiting for {what}\n--- log ---\n{running.log()[-4000:]}"
            )
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(0.3)


def _shard(stub: logs_grpc.LogsServiceStub) -> logs_pb.ShardStatus:
    status = stub.GetClusterStatus(
        logs_pb.GetClusterStatusRequest(), timeout=CALL_TIMEOUT
    )
    (shard,) = [shard for shard in status.shards if shard.shard == SHARD]
    return shard


def _follower_reachable(stub: logs_grpc.LogsServiceStub, node: str) -> bool:
    followers = {follower.node: follower for follower in _shard(stub).followers}
    return followers[node].reachable


def _lines_with(text: str, fragment: str) -> list[str]:
    return [line for line in text.splitlines() if fragment in line]


@contextlib.contextmanager
def _taking_node_lock(data_dir: Path, node: str) -> Iterator[threading.Event]:
    """Take a log node's lock file as soon as it is free, as a second copy would.

    Yields an event set once the lock is held. While it is held, `splitlog
    serve log_node` for that node exits with status 1 as it starts.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_taken = threading.Event()
    with open(data_dir / f"splitlog.log_node.{node}.lock", "w") as lock_file:

        def take() -> None:
            # A blocking flock gets the lock the moment its holder's last
            # thread exits, long before a restarted node requests it.
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            lock_taken.set()

        threading.Thread(target=take, name="node-lock", daemon=True).start()
        yield lock_taken


def test_follower_crash_loop_leaves_rest_serving(splitlog_factory):
    ports = _ports()
    running = splitlog_factory(
        "--processes", "--restart-max-delay-seconds", "2", ports=ports
    )
    running.wait_until_ready()
    channel = grpc.insecure_channel(running.grpc_address)
    logs = logs_grpc.LogsServiceStub(channel)
    users = users_grpc.UsersServiceStub(channel)
    follower = _shard(logs).followers[0].node
    component = f"log_node_{follower}"

    with _taking_node_lock(running.data_dir, follower) as lock_taken:
        os.kill(running.component_pids()[component], signal.SIGKILL)
        assert lock_taken.wait(timeout=10)
        _wait_for(
            lambda: CRASH_LOOP_LINE in running.log(),
            "crash loop",
            CRASH_LOOP_TIMEOUT,
            running,
        )
        _wait_for(
            lambda: not _follower_reachable(logs, follower),
            "unreachable follower",
            30,
        )
        user = users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"{uuid.uuid4().hex[:10]}@example.com",
                    display_name="During the crash loop",
                )
            ),
            timeout=CALL_TIMEOUT,
        )
        service = f"crash-loop-{uuid.uuid4().hex[:8]}"
        logs.WriteLogEntries(
            logs_pb.WriteLogEntriesRequest(
                entries=[logs_pb.LogEntry(service=service, message="still stored")]
            ),
            timeout=CALL_TIMEOUT,
        )
        listed = logs.ListLogEntries(
            logs_pb.ListLogEntriesRequest(services=[service]), timeout=CALL_TIMEOUT
        )
        shipped = wait_for_log_entries(running.http_url, "splitlog", CRASH_LOOP_LINE)
        shard_health = _shard(logs).health
        supervisor_status = running.process.poll()

    assert supervisor_status is None
    assert user.user.display_name == "During the crash loop"
    assert [entry.message for entry in listed.entries] == ["still stored"]
    assert shard_health == logs_pb.HEALTH_DEGRADED
    crash_loop_lines = _lines_with(running.log(), CRASH_LOOP_LINE)
    assert " ERROR " in crash_loop_lines[0]
    assert f"{component} (pid" in crash_loop_lines[0]
    # The first exit is the test's SIGKILL, the others are failed starts.
    assert (
        "last exit statuses: signal SIGKILL, status 1, status 1, status 1, "
        "status 1, status 1)" in crash_loop_lines[0]
    )
    assert "the other components keep running" in crash_loop_lines[0]
    assert "giving up" not in running.log()
    assert component in shipped[0]["message"]
    assert shipped[0]["severity"] == "SEVERITY_ERROR", shipped[0]

    # Once the lock is free again, the next restart takes it and the
    # follower rejoins its shard.
    _wait_for(
        lambda: _shard(logs).health == logs_pb.HEALTH_SERVING,
        "serving shard after the lock was released",
        60,
        running,
    )
    channel.close()
    components = all_components(
        config_module.load(environ={}, overrides={"log_nodes": ports["--log-nodes"]})
    )
    assert len(supervised_pids(running.process.pid)) == len(components)

    running.signal(signal.SIGTERM)

    assert running.wait(timeout=60) == 0


def test_follower_failing_start_exits_1(splitlog_factory, tmp_path):
    ports = _ports()
    node = _node_ids(str(ports["--log-nodes"]))[1]
    data_dir = tmp_path / "data"

    with _taking_node_lock(data_dir, node) as lock_taken:
        assert lock_taken.wait(timeout=10)
        running = splitlog_factory("--processes", ports=ports, data_dir=data_dir)
        status = running.wait(timeout=120)
        log = running.log()
        children = supervised_pids(running.process.pid)

    assert status == 1
    assert f"log_node_{node} (pid" in log
    assert "exited with status 1 while starting" in log
    assert "splitlog: error:" in log
    assert CRASH_LOOP_LINE not in log
    assert wait_gone(list(children), timeout=15) == []
