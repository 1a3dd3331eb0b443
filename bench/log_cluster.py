"""Start a log cluster for the benchmarks: a router and its nodes, one process each.

`start_cluster(data_dir, shards=2, replicas=2, quorum="all")` picks free
loopback ports, writes the topology into `log_nodes`, and starts every node
and then the router as a subprocess of this module (`--role node` or
`--role router`), each calling `log_service.node.build_node` or
`log_service.app.build`. Settings reach the children as `SPLITLOG_*`
environment variables, so a child resolves them as `splitlog serve` would.
Each child's stderr goes to `<data_dir>/<name>.log`.

`Cluster.node_counts()` calls CountEntries on every node directly, so a
benchmark can compare each replica with what the router acknowledged.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc as pb_grpc
from splitlog.logs.v1 import node_service_pb2 as node_pb
from splitlog.logs.v1 import node_service_pb2_grpc as node_pb_grpc

# Long enough for DuckDB to open and the write-ahead log to replay on a
# loaded machine.
_READY_SECONDS = 60.0

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class NodeSpec:
    """One log node of the topology."""

    node_id: str
    shard: str
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """A running router and its nodes, each in its own process."""

    router_address: str
    nodes: list[NodeSpec]
    data_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def node_counts(self) -> dict[str, int]:
        """Count the entries each node holds, keyed by node id, via CountEntries."""
        counts = {}
        for node in self.nodes:
            with grpc.insecure_channel(node.address) as channel:
                stub = node_pb_grpc.LogNodeServiceStub(channel)
                response = stub.CountEntries(
                    node_pb.CountEntriesRequest(
                        shard=node.shard, filter=node_pb.EntryFilter()
                    ),
                    timeout=600,
                )
            counts[node.node_id] = sum(c.count for c in response.severity_counts)
        return counts

    def router_total(self) -> int:
        """Return GetLogStats' total_count over every stored entry."""
        with grpc.insecure_channel(self.router_address, CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.LogsServiceStub(channel)
            response = stub.GetLogStats(pb.GetLogStatsRequest(), timeout=600)
        return response.total_count

    def stop(self) -> None:
        """Stop the router, then the nodes: SIGTERM, and SIGKILL after 15 s."""
        order = ["router", *(node.node_id for node in self.nodes)]
        for name in order:
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name in order:
            process = self.processes.get(name)
            if process is None:
                continue
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def free_ports(count: int) -> list[int]:
    """Return `count` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _topology(shards: int, replicas: int, ports: list[int]) -> list[NodeSpec]:
    nodes = []
    for shard_index in range(shards):
        for replica in range(replicas):
            node_id = f"shard-{shard_index}-{'abcdefgh'[replica]}"
            port = ports[shard_index * replicas + replica]
            nodes.append(NodeSpec(node_id, f"shard-{shard_index}", port))
    return nodes


def log_nodes_setting(nodes: list[NodeSpec]) -> str:
    """Render the topology in the `log_nodes` setting's format."""
    shards: dict[str, list[str]] = {}
    for node in nodes:
        shards.setdefault(node.shard, []).append(f"{node.node_id}@{node.address}")
    return ";".join(f"{shard}={','.join(members)}" for shard, members in shards.items())


def _wait_serving(name: str, address: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + _READY_SECONDS
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {process.returncode} during start"
                )
            try:
                status = stub.Check(request, timeout=1).status
            except grpc.RpcError:
                status = None
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.1)
    raise RuntimeError(f"{name} at {address} not SERVING after {_READY_SECONDS} s")


def _wait_cluster_serving(address: str) -> None:
    deadline = time.monotonic() + _READY_SECONDS
    last = "no answer"
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.LogsServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=2)
            except grpc.RpcError as error:
                last = f"{error.code().name}: {error.details()}"
            else:
                if status.health == pb.HEALTH_SERVING:
                    return
                last = pb.Health.Name(status.health)
            time.sleep(0.2)
    raise RuntimeError(
        f"cluster at {address} not SERVING after {_READY_SECONDS} s: {last}"
    )


def start_cluster(
    data_dir: Path,
    *,
    shards: int = 2,
    replicas: int = 2,
    quorum: str = "all",
    extra_env: dict[str, str] | None = None,
) -> Cluster:
    """Start the nodes and the router; return once the cluster reports SERVING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(shards * replicas + 1)
    nodes = _topology(shards, replicas, ports[:-1])
    router_port = ports[-1]
    env = dict(os.environ)
    env.update(
        {
            "SPLITLOG_DATA_DIR": str(data_dir),
            "SPLITLOG_HOST": "127.0.0.1",
            "SPLITLOG_LOG_SHARDS": str(shards),
            "SPLITLOG_LOG_REPLICAS": str(replicas),
            "SPLITLOG_LOG_NODES": log_nodes_setting(nodes),
            "SPLITLOG_LOG_WRITE_QUORUM": quorum,
            "SPLITLOG_LOG_SERVICE_PORT": str(router_port),
            "SPLITLOG_LOG_SERVICE_ADDR": f"127.0.0.1:{router_port}",
            "SPLITLOG_LOG_SELF_SHIP": "false",
            "SPLITLOG_AUTH_REQUIRED": "false",
            "SPLITLOG_REFLECTION": "false",
        }
    )
    env.update(extra_env or {})
    cluster = Cluster(f"127.0.0.1:{router_port}", nodes, data_dir)
    try:
        for node in nodes:
            cluster.processes[node.node_id] = _spawn(
                data_dir,
                node.node_id,
                env,
                "--role",
                "node",
                "--node-id",
                node.node_id,
                "--shard",
                node.shard,
                "--address",
                node.address,
            )
        for node in nodes:
            _wait_serving(node.node_id, node.address, cluster.processes[node.node_id])
        cluster.processes["router"] = _spawn(
            data_dir, "router", env, "--role", "router", "--address",
            cluster.router_address,
        )  # fmt: skip
        _wait_serving("router", cluster.router_address, cluster.processes["router"])
        _wait_cluster_serving(cluster.router_address)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _spawn(data_dir: Path, name: str, env: dict[str, str], *args: str):
    log = open(data_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.log_cluster", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    finally:
        log.close()


def _serve(role: str, node_id: str, shard: str, address: str) -> None:
    import logging

    from splitlog_runtime import config as config_module

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    config = config_module.load(environ=os.environ)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if role == "node":
        from log_service.node import build_node

        host = build_node(config, node_id, shard, address=address)
    else:
        from log_service.app import build

        host = build(config, address=address)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        host.stop(5.0, "benchmark finished")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["node", "router"], required=True)
    parser.add_argument("--node-id", default="")
    parser.add_argument("--shard", default="")
    parser.add_argument("--address", required=True)
    args = parser.parse_args()
    _serve(args.role, args.node_id, args.shard, args.address)


if __name__ == "__main__":
    main()
