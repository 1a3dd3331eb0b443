"""Snapshot transfer to a follower that needs entries its leader has purged.

Each test runs one shard on two `splitlog serve log_node` processes and the
router as a third process. The nodes use small write-ahead log segments and
keep little log for lagging followers, so a follower that is down while the
leader takes writes finds the leader's log purged past its position when
it returns.
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from tests.log_service.cluster_support import (
    RETRYABLE,
    SERVING,
    SHARD,
    LogCluster,
    messages_of,
    retry_delay,
)
from tests.log_service.test_message_sizes import sized_request, stored_messages

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

BATCH_SIZE = 200
LARGE_LIMIT = 64 * 1024
DOWN_BATCHES = 12
NODE_SETTINGS = {
    "SPLITLOG_LOG_WAL_SEGMENT_BYTES": "16384",
    "SPLITLOG_LOG_WAL_KEEP_BYTES": "32768",
}


@pytest.fixture
def make_cluster(tmp_path):
    created: list[LogCluster] = []

    def make(**node_settings: str) -> LogCluster:
        cluster = LogCluster.create(
            tmp_path, ("a", "b"), node_settings={**NODE_SETTINGS, **node_settings}
        )
        created.append(cluster)
        return cluster

    yield make
    for cluster in created:
        cluster.stop_all()


def wal_first_sequence(cluster: LogCluster, node: str) -> int:
    """Return the first sequence of the oldest write-ahead log segment of a node."""
    wal = Path(cluster.settings["SPLITLOG_DATA_DIR"]) / "log_nodes" / node / "wal"
    names = sorted(path.name for path in wal.glob("*.wal"))
    return int(names[0].removesuffix(".wal"))


def fall_behind_purged_log(cluster: LogCluster) -> list[str]:
    """Stop b, write until a has purged what b lacks; return the labels written."""
    cluster.start_all()
    cluster.write_until_acknowledged("before", BATCH_SIZE, "before")
    cluster.kill("b")
    labels = [f"down-{index}" for index in range(DOWN_BATCHES)]
    for label in labels:
        cluster.write_until_acknowledged(label, BATCH_SIZE, label)
    deadline = time.monotonic() + 20
    while wal_first_sequence(cluster, "a") <= BATCH_SIZE + 1:
        assert time.monotonic() < deadline, "a did not purge its write-ahead log"
        time.sleep(0.1)
    return ["before", *labels]


def in_sync(node: str):
    """Return a check that the shard serves with `node` holding its last entry."""

    def check(shard: logs_service_pb2.ShardStatus) -> bool:
        followers = [f for f in shard.followers if f.node == node]
        return (
            shard.health == SERVING
            and len(followers) == 1
            and followers[0].last_sequence == shard.last_sequence
            and not followers[0].HasField("snapshot")
        )

    return check


def stored(cluster: LogCluster, node: str) -> node_service_pb2.QueryEntriesResponse:
    response = cluster.node(node).QueryEntries(
        node_service_pb2.QueryEntriesRequest(shard=SHARD, limit=1_000_000),
        timeout=10,
    )
    response.ClearField("last_sequence")
    return response


def counted(cluster: LogCluster, node: str) -> node_service_pb2.CountEntriesResponse:
    return cluster.node(node).CountEntries(
        node_service_pb2.CountEntriesRequest(shard=SHARD), timeout=10
    )


def assert_same_entries(cluster: LogCluster, labels: list[str]) -> None:
    """Wait until b has applied as many entries as a, then compare them."""
    deadline = time.monotonic() + 20
    while True:
        leader, follower = stored(cluster, "a"), stored(cluster, "b")
        if len(follower.sequences) >= len(leader.sequences):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    expected = sorted(
        message for label in labels for message in messages_of(label, BATCH_SIZE)
    )
    assert sorted(leader.entries.messages) == expected
    assert len(follower.sequences) == len(leader.sequences)
    assert follower == leader
    assert counted(cluster, "b") == counted(cluster, "a")


def test_follower_catches_up_from_snapshot(make_cluster):
    cluster = make_cluster()
    labels = fall_behind_purged_log(cluster)
    first_kept = wal_first_sequence(cluster, "a")

    cluster.start("b")
    cluster.wait_status(in_sync("b"), "b back in sync")
    replica = cluster.node_replica("b")
    cluster.write_until_acknowledged("after", BATCH_SIZE, "after")
    labels.append("after")
    cluster.wait_status(in_sync("b"), "b in sync after one more batch")

    assert replica.installed_snapshot_sequence >= first_kept - 1
    assert replica.installed_snapshot_sequence > BATCH_SIZE
    assert_same_entries(cluster, labels)
    assert "installed a snapshot" in cluster.stderr_tail("b", 20_000)


def test_follower_killed_while_receiving_snapshot_recovers(make_cluster):
    # At 10 kB/s the snapshot (about 160 kB) takes seconds, so b is killed
    # after its first chunk and before the last message.
    cluster = make_cluster(SPLITLOG_LOG_SNAPSHOT_BYTES_PER_SECOND="10000")
    labels = fall_behind_purged_log(cluster)
    data = Path(cluster.settings["SPLITLOG_DATA_DIR"]) / "log_nodes" / "b"

    cluster.start("b")
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "b never began receiving a snapshot"
        replica = cluster.node_replica("b")
        if replica.snapshot.received_entries > 0:
            break
        time.sleep(0.02)
    receiving = cluster.wait_status(
        lambda shard: any(f.snapshot.received_entries for f in shard.followers),
        "the cluster status to show b's snapshot",
        timeout=5,
    )
    cluster.kill("b", signal.SIGKILL)
    left_over = (data / "snapshot.partial").exists()

    cluster.start("b")
    cluster.wait_status(in_sync("b"), "b in sync after its restart", timeout=90)

    assert left_over
    assert not replica.snapshot.installing
    assert replica.installed_snapshot_sequence == 0
    assert receiving.health == logs_service_pb2.HEALTH_DEGRADED
    assert receiving.followers[0].snapshot.last_sequence == len(labels) * BATCH_SIZE
    assert not (data / "snapshot.partial").exists()
    assert not (data / "snapshot.ready").exists()
    assert "deleting the unfinished snapshot" in cluster.stderr_tail("b", 20_000)
    assert_same_entries(cluster, labels)


def test_batch_resent_after_snapshot_is_stored_once(make_cluster):
    cluster = make_cluster()
    labels = fall_behind_purged_log(cluster)
    cluster.start("b")
    cluster.wait_status(in_sync("b"), "b back in sync")

    # b now leads with only the snapshot's copy of the batches written while
    # it was down; their records are gone from every write-ahead log.
    cluster.kill("a")
    cluster.wait_status(
        lambda shard: shard.leader == "b" and shard.leader_epoch == 2,
        "b promoted",
    )
    resent = cluster.write_until_acknowledged("down-3", BATCH_SIZE, "down-3")
    found = cluster.listed_messages()

    assert resent.accepted_count == BATCH_SIZE
    repeated = {m: n for m, n in found.items() if n > 1}
    assert repeated == {}
    assert collections.Counter(found.elements()) == collections.Counter(
        message for label in labels for message in messages_of(label, BATCH_SIZE)
    )


def write_until_acknowledged(
    cluster: LogCluster, request: logs_service_pb2.WriteLogEntriesRequest
) -> logs_service_pb2.WriteLogEntriesResponse:
    """Send one write, resending it on UNAVAILABLE until it is acknowledged."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return cluster.logs.WriteLogEntries(request, timeout=5)
        except grpc.RpcError as error:
            if error.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            time.sleep(retry_delay(error))


def test_follower_catches_up_from_snapshot_of_large_entries(make_cluster):
    # Each write is exactly max_message_bytes, so each stored entry is larger
    # than half a message and goes in a snapshot chunk of its own, framed by
    # its sequence number and checksum.
    cluster = make_cluster()
    cluster.settings["SPLITLOG_MAX_MESSAGE_BYTES"] = str(LARGE_LIMIT)
    cluster.start_all()
    requests = [sized_request(LARGE_LIMIT, f"large-{index}") for index in range(7)]
    before = write_until_acknowledged(cluster, requests[0])
    cluster.kill("b")
    down = [write_until_acknowledged(cluster, request) for request in requests[1:]]
    deadline = time.monotonic() + 20
    while wal_first_sequence(cluster, "a") <= 2:
        assert time.monotonic() < deadline, "a did not purge its write-ahead log"
        time.sleep(0.1)

    cluster.start("b")
    cluster.wait_status(in_sync("b"), "b back in sync")
    replica = cluster.node_replica("b")
    expected = sorted(request.entries[0].message for request in requests)

    assert [r.accepted_count for r in [before, *down]] == [1] * len(requests)
    assert replica.installed_snapshot_sequence >= 2
    assert sorted(stored_messages(cluster.node("a"), SHARD)) == expected
    assert sorted(stored_messages(cluster.node("b"), SHARD)) == expected
    assert "installed a snapshot" in cluster.stderr_tail("b", 20_000)
