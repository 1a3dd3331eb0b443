"""A log node whose disk fills up, on a size-limited tmpfs.

The node's data directory is a tmpfs of a few MiB, and the test fills most of
it with a filler file. Ingest then fails with a status that a client may retry
(UNAVAILABLE or RESOURCE_EXHAUSTED), and the node process keeps running. Every
batch acknowledged before stays stored. Once the filler is deleted, the failed
batch, resent under its request id, is stored exactly once.
Mounting needs root or CAP_SYS_ADMIN; elsewhere the test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2
from tests.log_service.cluster_support import (
    ROUTER,
    SERVICE,
    LogCluster,
    messages_of,
)

pytestmark = pytest.mark.system

NODE = "solo"
TMPFS_SIZE = "8m"
#: Bytes left free beside the filler, so a few batches fit before the disk fills.
HEADROOM = 512 * 1024
BATCH_SIZE = 20
MESSAGE_BYTES = 4096
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _mount_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        pytest.skip("no `mount` command: cannot put the node on a small tmpfs")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            f"mounting a tmpfs at {path} is not permitted here "
            f"({result.stderr.strip()}); run as root to test a full disk"
        )


def _unmount(path: Path) -> None:
    for _ in range(20):
        result = subprocess.run(
            ["umount", str(path)], capture_output=True, timeout=30, check=False
        )
        if result.returncode == 0 or not os.path.ismount(path):
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def full_disk_cluster(tmp_path) -> Iterator[tuple[LogCluster, Path]]:
    cluster = LogCluster.create(tmp_path, (NODE,))
    node_dir = Path(cluster.settings["SPLITLOG_DATA_DIR"]) / "log_nodes" / NODE
    _mount_tmpfs(node_dir)
    try:
        cluster.start_all()
        yield cluster, node_dir
    finally:
        cluster.stop_all()
        _unmount(node_dir)


def _request(label: str) -> logs_service_pb2.WriteLogEntriesRequest:
    padding = "x" * MESSAGE_BYTES
    request = logs_service_pb2.WriteLogEntriesRequest(request_id=label)
    for index, message in enumerate(messages_of(label, BATCH_SIZE)):
        request.entries.add(
            service=SERVICE,
            host="disk-host",
            severity=logs_service_pb2.SEVERITY_INFO,
            message=message,
            attributes={"padding": padding, "index": str(index)},
        )
    return request


def _fill(node_dir: Path) -> Path:
    """Write a filler file that leaves about HEADROOM bytes free, and return it."""
    filler = node_dir / "filler.bin"
    free = shutil.disk_usage(node_dir).free
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        out.write(b"\0" * max(0, free - HEADROOM))
    return filler


@pytest.mark.timeout(120)
def test_full_disk_retryable_then_recovers(full_disk_cluster):
    cluster, node_dir = full_disk_cluster
    acknowledged = []
    for index in range(3):
        label = f"before-{index}"
        cluster.logs.WriteLogEntries(_request(label), timeout=10)
        acknowledged.append(label)
    filler = _fill(node_dir)

    failure = None
    for index in range(200):
        label = f"filling-{index}"
        try:
            cluster.logs.WriteLogEntries(_request(label), timeout=10)
        except grpc.RpcError as error:
            failure = (label, error)
            break
        acknowledged.append(label)
    assert failure is not None, "the disk never filled up"
    failed_label, error = failure
    node_alive_when_full = cluster.processes[NODE].poll() is None
    router_alive = cluster.processes[ROUTER].poll() is None

    filler.unlink()
    deadline = time.monotonic() + 30
    resent = None
    while resent is None:
        try:
            resent = cluster.logs.WriteLogEntries(_request(failed_label), timeout=10)
        except grpc.RpcError as retry_error:
            assert retry_error.code() in RETRYABLE, retry_error.details()
            assert time.monotonic() < deadline, retry_error.details()
            time.sleep(0.5)
    acknowledged.append(failed_label)
    after = cluster.write_until_acknowledged("after", BATCH_SIZE, "after")
    acknowledged.append("after")
    found = cluster.listed_messages()

    assert error.code() in RETRYABLE, (error.code(), error.details())
    assert node_alive_when_full, cluster.stderr_tail(NODE)
    assert router_alive, cluster.stderr_tail(ROUTER)
    assert cluster.processes[NODE].poll() is None, cluster.stderr_tail(NODE)
    assert resent.accepted_count == BATCH_SIZE
    assert after.accepted_count == BATCH_SIZE
    assert {message: count for message, count in found.items() if count > 1} == {}
    expected = {
        message for label in acknowledged for message in messages_of(label, BATCH_SIZE)
    }
    assert set(found) == expected
