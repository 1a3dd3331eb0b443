"""A log node process killed with SIGKILL keeps every acknowledged entry once."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitlog.logs.v1 import logs_service_pb2, node_service_pb2, node_service_pb2_grpc
from tests.log_service.node_support import SHARD, columns
from tests.ports import free_ports

ENTRIES_PER_BATCH = 40
APPENDERS = 4
REPO = Path(__file__).resolve().parents[2]


def launch(directory: Path, port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "log_service.node",
        "--node",
        "n0",
        "--shard",
        SHARD,
        "--address",
        f"127.0.0.1:{port}",
        "--directory",
        str(directory / "n0"),
        "--data-dir",
        str(directory),
        "--log-self-ship",
        "false",
        # The test calls the node directly, without the router's signature.
        "--auth-required",
        "false",
    ]
    return subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_serving(channel: grpc.Channel, process: subprocess.Popen) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the log node process exited"
        try:
            response = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise AssertionError("the log node did not report SERVING within 30 s")


def append_until_failure(
    stub: node_service_pb2_grpc.LogNodeServiceStub,
    prefix: str,
    acked: list[str],
    attempted: list[str],
) -> None:
    for index in range(100_000):
        batch_id = f"{prefix}-{index}"
        attempted.append(batch_id)
        try:
            stub.AppendEntries(
                node_service_pb2.AppendEntriesRequest(
                    shard=SHARD,
                    leader_epoch=1,
                    batch_id=batch_id,
                    entries=columns(ENTRIES_PER_BATCH, batch_id),
                ),
                timeout=5,
            )
        except grpc.RpcError:
            return
        acked.append(batch_id)


def stored_messages(stub: node_service_pb2_grpc.LogNodeServiceStub) -> list[str]:
    response = stub.QueryEntries(
        node_service_pb2.QueryEntriesRequest(shard=SHARD, limit=1_000_000),
        timeout=30,
    )
    return list(response.entries.messages)


@pytest.mark.system
def test_sigkill_keeps_acknowledged_entries_once(tmp_path):
    (port,) = free_ports(1)
    process = launch(tmp_path, port)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = node_service_pb2_grpc.LogNodeServiceStub(channel)
    try:
        wait_serving(channel, process)
        member = node_service_pb2.ShardMember(node="n0", address=f"127.0.0.1:{port}")
        stub.ConfigureShard(
            node_service_pb2.ConfigureShardRequest(
                shard=SHARD,
                leader_epoch=1,
                role=logs_service_pb2.REPLICA_ROLE_LEADER,
                leader=member,
                config_version=1,
            ),
            timeout=5,
        )
        acked: list[str] = []
        attempted: list[str] = []
        threads = [
            threading.Thread(
                target=append_until_failure, args=(stub, f"t{i}", acked, attempted)
            )
            for i in range(APPENDERS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        for thread in threads:
            thread.join(timeout=10)
        acked_before_kill = list(acked)

        process = launch(tmp_path, port)
        wait_serving(channel, process)
        after_restart = collections.Counter(stored_messages(stub))
        unacked = [batch for batch in attempted if batch not in set(acked)]
        for batch_id in unacked:
            stub.AppendEntries(
                node_service_pb2.AppendEntriesRequest(
                    shard=SHARD,
                    leader_epoch=1,
                    batch_id=batch_id,
                    entries=columns(ENTRIES_PER_BATCH, batch_id),
                ),
                timeout=5,
            )
        after_retries = collections.Counter(stored_messages(stub))
    finally:
        channel.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    assert len(acked_before_kill) >= 1
    expected = {
        f"{batch} {i}" for batch in acked_before_kill for i in range(ENTRIES_PER_BATCH)
    }
    assert expected <= set(after_restart)
    assert max(after_restart.values()) == 1
    assert max(after_retries.values()) == 1
    every_batch = {
        f"{batch} {i}" for batch in attempted for i in range(ENTRIES_PER_BATCH)
    }
    assert set(after_retries) == every_batch
