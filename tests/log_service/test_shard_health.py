"""The router's per-shard health entries, on real node and router processes.

The router reports `splitlog.logs.v1.LogsService/<shard>` SERVING while the
shard has a leader that responds and NOT_SERVING otherwise. The whole-server
status and the LogsService entry stay SERVING meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.log_service.cluster_support import (
    REPO,
    ROUTER,
    SERVING,
    SHARD,
    UNAVAILABLE,
    LogCluster,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

LOGS_SERVICE = "splitlog.logs.v1.LogsService"
SHARD_ENTRY = f"{LOGS_SERVICE}/{SHARD}"
HEALTH_SERVING = health_pb2.HealthCheckResponse.SERVING
HEALTH_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def make_cluster(tmp_path):
    """Create log clusters under tmp_path and kill their processes afterwards."""
    created: list[LogCluster] = []

    def make(node_ids: tuple[str, ...], **options) -> LogCluster:
        cluster = LogCluster.create(tmp_path, node_ids, **options)
        created.append(cluster)
        return cluster

    yield make
    for cluster in created:
        cluster.stop_all()


def _check(cluster: LogCluster, service: str) -> int:
    with grpc.insecure_channel(cluster.address(ROUTER)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return stub.Check(request, timeout=5).status


def _wait_check(cluster: LogCluster, service: str, status: int) -> None:
    deadline = time.monotonic() + 30
    last = None
    while time.monotonic() < deadline:
        last = _check(cluster, service)
        if last == status:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"{service} stayed {last}, expected {status}\n" + cluster.all_stderr()
    )


def _splitlog_health(cluster: LogCluster, service: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "splitlog_cli",
            "health",
            cluster.address(ROUTER),
            service,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


class _Watch:
    """The statuses that one Health/Watch stream of the router receives."""

    def __init__(self, cluster: LogCluster, service: str) -> None:
        self.statuses: list[int] = []
        self._channel = grpc.insecure_channel(cluster.address(ROUTER))
        stub = health_pb2_grpc.HealthStub(self._channel)
        self._call = stub.Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=60
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self.statuses.append(response.status)
        except grpc.RpcError:
            pass

    def wait_for(self, statuses: list[int], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _contains_in_order(self.statuses, statuses):
                return
            time.sleep(0.05)
        raise AssertionError(f"watch received {self.statuses}, expected {statuses}")

    def close(self) -> None:
        self._call.cancel()
        self._channel.close()
        self._thread.join(5)


def _contains_in_order(seen: list[int], wanted: list[int]) -> bool:
    position = 0
    for status in seen:
        if position < len(wanted) and status == wanted[position]:
            position += 1
    return position == len(wanted)


def test_shard_entry_serving_with_leader(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()

    _wait_check(cluster, SHARD_ENTRY, HEALTH_SERVING)
    result = _splitlog_health(cluster, SHARD_ENTRY)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SERVING"


def test_shard_entry_follows_failover(make_cluster):
    cluster = make_cluster(("a", "b"), failover_seconds=1.0)
    cluster.start_all()
    _wait_check(cluster, SHARD_ENTRY, HEALTH_SERVING)
    watch = _Watch(cluster, SHARD_ENTRY)
    try:
        watch.wait_for([HEALTH_SERVING])

        cluster.kill("a")
        watch.wait_for([HEALTH_SERVING, HEALTH_NOT_SERVING, HEALTH_SERVING])
        promoted = cluster.wait_status(
            lambda shard: shard.leader == "b" and shard.health != UNAVAILABLE,
            "b promoted",
        )
    finally:
        watch.close()

    assert promoted.leader == "b"
    assert _check(cluster, SHARD_ENTRY) == HEALTH_SERVING


def test_shard_entry_down_until_restart(make_cluster):
    cluster = make_cluster(("solo",))
    cluster.start_all()
    _wait_check(cluster, SHARD_ENTRY, HEALTH_SERVING)

    cluster.kill("solo")
    _wait_check(cluster, SHARD_ENTRY, HEALTH_NOT_SERVING)
    down = _splitlog_health(cluster, SHARD_ENTRY)
    overall = _check(cluster, "")
    logs_entry = _check(cluster, LOGS_SERVICE)
    cluster.start("solo")
    _wait_check(cluster, SHARD_ENTRY, HEALTH_SERVING)
    cluster.wait_status(lambda shard: shard.health == SERVING, "the shard serving")
    up = _splitlog_health(cluster, SHARD_ENTRY)

    assert down.returncode == 1
    assert down.stderr.splitlines()[0] == "NOT_SERVING"
    assert f"log shard '{SHARD}'" in down.stderr
    assert overall == HEALTH_SERVING
    assert logs_entry == HEALTH_SERVING
    assert up.returncode == 0, up.stderr
