"""A log cluster of real processes for the failure tests.

`LogCluster` runs `splitlog serve log_node` once per node and
`splitlog serve log_service` for the router, each as its own process on free
127.0.0.1 ports, all sharing one data directory. A test can SIGKILL, SIGSTOP
and restart any of them on the same data directory, talk to the router with
the public LogsService stub and to each node with LogNodeService.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitlog.logs.v1 import (
    logs_service_pb2,
    logs_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
    replication_service_pb2,
    replication_service_pb2_grpc,
)
from tests.ports import free_ports
from tests.system.conftest import wait_for_health

SHARD = "s0"
SERVICE = "faults"
ROUTER = "router"
START_TIMEOUT = 30.0
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
REPO = Path(__file__).resolve().parents[2]

SERVING = logs_service_pb2.HEALTH_SERVING
UNAVAILABLE = logs_service_pb2.HEALTH_UNAVAILABLE


def entries(label: str, count: int) -> list[logs_service_pb2.LogEntry]:
    """Return `count` entries of SERVICE whose messages are `<label>.<i>`."""
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    return [
        logs_service_pb2.LogEntry(
            timestamp=now,
            service=SERVICE,
            host="fault-host",
            severity=logs_service_pb2.SEVERITY_INFO,
            message=f"{label}.{index}",
        )
        for index in range(count)
    ]


def messages_of(label: str, count: int) -> list[str]:
    return [f"{label}.{index}" for index in range(count)]


def retry_delay(error: grpc.RpcError, default: float = 0.2) -> float:
    """Return the RetryInfo delay of an RPC error in seconds, or `default`."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    return default


@dataclass
class LogCluster:
    """One shard `s0` on real node processes, and a router process.

    Attributes:
      directory: the test's folder; the shared data directory and each
        process's stderr file live under it.
      node_ports: node id to port, in the order of the shard's members, so
        the first node is the initial leader.
      router_port: port of the router's LogsService.
      settings: extra SPLITLOG_* variables for every process.
      node_settings: extra SPLITLOG_* variables for the node processes only.
    """

    directory: Path
    node_ports: dict[str, int]
    router_port: int
    settings: dict[str, str] = field(default_factory=dict)
    node_settings: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)
    # Each request id's entries, so that a resend sends the same entries,
    # timestamps included, as a client retry does.
    _batches: dict[str, list[logs_service_pb2.LogEntry]] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        directory: Path,
        node_ids: tuple[str, ...],
        *,
        failover_seconds: float = 1.0,
        node_settings: dict[str, str] | None = None,
    ) -> LogCluster:
        ports = free_ports(len(node_ids) + 1)
        settings = {
            "SPLITLOG_DATA_DIR": str(directory / "data"),
            "SPLITLOG_HOST": "127.0.0.1",
            "SPLITLOG_LOG_FAILOVER_SECONDS": str(failover_seconds),
            "SPLITLOG_LOG_SELF_SHIP": "false",
            "SPLITLOG_AUTH_REQUIRED": "false",
            "SPLITLOG_GRACE_SECONDS": "1",
            "SPLITLOG_REFLECTION": "false",
        }
        cluster = cls(
            directory,
            dict(zip(node_ids, ports[:-1], strict=True)),
            ports[-1],
            settings,
            dict(node_settings or {}),
        )
        cluster.settings["SPLITLOG_LOG_NODES"] = cluster.log_nodes
        cluster.settings["SPLITLOG_LOG_SERVICE_PORT"] = str(cluster.router_port)
        return cluster

    @property
    def log_nodes(self) -> str:
        members = ",".join(
            f"{node}@127.0.0.1:{port}" for node, port in self.node_ports.items()
        )
        return f"{SHARD}={members}"

    def address(self, name: str) -> str:
        port = self.router_port if name == ROUTER else self.node_ports[name]
        return f"127.0.0.1:{port}"

    # Processes.

    def _environment(self, name: str) -> dict[str, str]:
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("SPLITLOG_")
        }
        environment.update(self.settings)
        environment["PYTHONPATH"] = str(REPO)
        if name != ROUTER:
            environment.update(self.node_settings)
            environment["SPLITLOG_LOG_NODE_ID"] = name
        return environment

    def launch(self, name: str) -> None:
        """Start one node, or the router with ROUTER, without waiting."""
        running = self.processes.get(name)
        assert running is None or running.poll() is not None, f"{name} still runs"
        component = "log_service" if name == ROUTER else "log_node"
        stderr_path = self.directory / f"{name}.stderr"
        with open(stderr_path, "ab") as stderr:
            stderr.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            stderr.flush()
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "splitlog_cli", "serve", component],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self._environment(name),
                start_new_session=True,
            )

    def wait_serving(self, name: str) -> None:
        """Wait until a launched process reports SERVING on its health service."""
        process = self.processes[name]
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"{name} exited with status {process.returncode}\n"
                    + self.stderr_tail(name)
                )
            try:
                wait_for_health(self.address(name), 1.0)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{name} not SERVING within {START_TIMEOUT:.0f} s\n"
                        + self.stderr_tail(name)
                    ) from None

    def start(self, name: str) -> None:
        """Start one node, or the router with ROUTER, and wait for its health."""
        self.launch(name)
        self.wait_serving(name)

    def start_all(self) -> None:
        """Start every node and the router, and wait until the shard serves."""
        names = [*self.node_ports, ROUTER]
        for name in names:
            self.launch(name)
        for name in names:
            self.wait_serving(name)
        self.wait_status(lambda shard: shard.health == SERVING, "the shard serving")

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send `signum` to a process and wait for it to end, unless it is SIGSTOP."""
        process = self.processes[name]
        process.send_signal(signum)
        if signum != signal.SIGSTOP:
            process.wait(timeout=10)

    def resume(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGCONT)

    def stop_all(self) -> None:
        """Close the channels and SIGKILL every process that still runs."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)

    def stderr_tail(self, name: str, size: int = 4000) -> str:
        path = self.directory / f"{name}.stderr"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"--- {name} stderr ---\n{text[-size:]}"

    def all_stderr(self) -> str:
        names = [*self.node_ports, ROUTER]
        return "\n".join(self.stderr_tail(name, 2500) for name in names)

    # Stubs.

    def _channel(self, name: str) -> grpc.Channel:
        if name not in self._channels:
            self._channels[name] = grpc.insecure_channel(self.address(name))
        return self._channels[name]

    @property
    def logs(self) -> logs_service_pb2_grpc.LogsServiceStub:
        return logs_service_pb2_grpc.LogsServiceStub(self._channel(ROUTER))

    def node(self, name: str) -> node_service_pb2_grpc.LogNodeServiceStub:
        return node_service_pb2_grpc.LogNodeServiceStub(self._channel(name))

    def replication(
        self, name: str
    ) -> replication_service_pb2_grpc.ReplicationServiceStub:
        return replication_service_pb2_grpc.ReplicationServiceStub(self._channel(name))

    # Calls.

    def shard_status(self) -> logs_service_pb2.ShardStatus:
        response = self.logs.GetClusterStatus(
            logs_service_pb2.GetClusterStatusRequest(), timeout=5
        )
        (shard,) = [item for item in response.shards if item.shard == SHARD]
        return shard

    def wait_status(
        self,
        condition: Callable[[logs_service_pb2.ShardStatus], bool],
        description: str,
        timeout: float = 30.0,
    ) -> logs_service_pb2.ShardStatus:
        """Poll GetClusterStatus until `condition` is true for the shard."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            try:
                status = self.shard_status()
            except grpc.RpcError:
                status = None
            if status is not None and condition(status):
                return status
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {description}; "
            f"last status:\n{status}\n" + self.all_stderr()
        )

    def node_replica(self, name: str) -> replication_service_pb2.ShardReplica:
        response = self.replication(name).GetNodeStatus(
            replication_service_pb2.GetNodeStatusRequest(), timeout=5
        )
        (replica,) = [item for item in response.shards if item.shard == SHARD]
        return replica

    def write(
        self, label: str, count: int, request_id: str, timeout: float = 10.0
    ) -> logs_service_pb2.WriteLogEntriesResponse:
        return self.logs.WriteLogEntries(
            logs_service_pb2.WriteLogEntriesRequest(
                entries=self._batch(label, count, request_id),
                request_id=request_id,
            ),
            timeout=timeout,
        )

    def _batch(
        self, label: str, count: int, request_id: str
    ) -> list[logs_service_pb2.LogEntry]:
        batch = self._batches.get(request_id)
        if batch is None:
            batch = self._batches[request_id] = entries(label, count)
        return batch

    def write_until_acknowledged(
        self, label: str, count: int, request_id: str, timeout: float = 30.0
    ) -> logs_service_pb2.WriteLogEntriesResponse:
        """Write one batch, resending it under the same request id until it
        is acknowledged, waiting the RetryInfo delay between attempts."""
        deadline = time.monotonic() + timeout
        batch = self._batch(label, count, request_id)
        while True:
            try:
                return self.logs.WriteLogEntries(
                    logs_service_pb2.WriteLogEntriesRequest(
                        entries=batch, request_id=request_id
                    ),
                    timeout=5,
                )
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise
                time.sleep(retry_delay(error))

    def listed_messages(self) -> collections.Counter:
        """Return how often each message of SERVICE is listed by the router."""
        found: collections.Counter = collections.Counter()
        token = ""
        while True:
            response = self.logs.ListLogEntries(
                logs_service_pb2.ListLogEntriesRequest(
                    services=[SERVICE], page_size=1000, page_token=token
                ),
                timeout=10,
            )
            found.update(entry.message for entry in response.entries)
            token = response.next_page_token
            if not token:
                return found

    def node_entries(self, name: str) -> list[tuple[int, str]]:
        """Return (sequence, message) of every entry that one node stores."""
        response = self.node(name).QueryEntries(
            node_service_pb2.QueryEntriesRequest(shard=SHARD, limit=1_000_000),
            timeout=10,
        )
        return list(zip(response.sequences, response.entries.messages, strict=True))


class BatchWriter(threading.Thread):
    """Writes numbered batches through the router until `finish` is called.

    Each batch has its own request id and is resent under that id on
    UNAVAILABLE or DEADLINE_EXCEEDED, after the RetryInfo delay, until it is
    acknowledged. The next batch starts only after that.
    """

    def __init__(self, cluster: LogCluster, batch_size: int, give_up_after: float):
        super().__init__(name="batch-writer", daemon=True)
        self._cluster = cluster
        self._batch_size = batch_size
        self._give_up_after = give_up_after
        self.stop_requested = threading.Event()
        self.acknowledged: list[str] = []
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        stub = self._cluster.logs
        index = 0
        try:
            while not self.stop_requested.is_set():
                label = f"batch-{index}"
                request = logs_service_pb2.WriteLogEntriesRequest(
                    entries=entries(label, self._batch_size),
                    request_id=f"request-{index}",
                )
                self._send_until_acknowledged(stub, request)
                self.acknowledged.append(label)
                index += 1
        except BaseException as exc:  # the test asserts that error is None
            self.error = exc

    def _send_until_acknowledged(self, stub, request) -> None:
        deadline = time.monotonic() + self._give_up_after
        while True:
            try:
                stub.WriteLogEntries(request, timeout=3)
                return
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise
                self.retries += 1
                time.sleep(retry_delay(error))

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert self.error is None, f"writer failed: {self.error!r}"
            assert time.monotonic() < deadline, (
                f"only {len(self.acknowledged)} of {count} batches acknowledged"
            )
            time.sleep(0.02)

    def finish(self, timeout: float) -> None:
        self.stop_requested.set()
        self.join(timeout)
        assert not self.is_alive(), "the writer did not finish"
