"""A write-ahead log damaged on disk, with real node and router processes.

A node that finds a complete record failing its checksum at start must not
lead with the shortened log while another replica may have the entries it
lost. A torn final record, which a crash leaves, is cut as before. In each
test but the one that deletes a store, no acknowledged entry is lost.
"""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest

from tests.log_service.cluster_support import SERVING, LogCluster, messages_of

pytestmark = [pytest.mark.system, pytest.mark.timeout(150)]

BATCH_SIZE = 20
BATCHES = 10


@pytest.fixture
def make_cluster(tmp_path):
    created: list[LogCluster] = []

    def make(node_ids: tuple[str, ...], **options) -> LogCluster:
        cluster = LogCluster.create(tmp_path, node_ids, **options)
        created.append(cluster)
        return cluster

    yield make
    for cluster in created:
        cluster.stop_all()


def write_batches(cluster: LogCluster) -> list[str]:
    labels = [f"batch-{index}" for index in range(BATCHES)]
    for label in labels:
        cluster.write_until_acknowledged(label, BATCH_SIZE, label)
    return labels


def expected(labels: list[str]) -> list[str]:
    return sorted(message for label in labels for message in messages_of(label, 20))


def last_segment(cluster: LogCluster, node: str):
    wal = cluster.directory / "data" / "log_nodes" / node / "wal"
    return sorted(wal.glob("*.wal"))[-1]


def last_frame(path) -> tuple[int, int]:
    """Return the offset and size of the last frame of a segment file."""
    data = path.read_bytes()
    offset = 0
    while True:
        length = int.from_bytes(data[offset : offset + 4], "little")
        size = 8 + length
        if offset + size >= len(data):
            return offset, size
        offset += size


def flip_byte(path, from_end: int) -> int:
    data = bytearray(path.read_bytes())
    offset = len(data) - from_end
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    return offset


def wait_all_stored(cluster: LogCluster, node: str, labels: list[str]) -> list:
    """Wait until `node` stores exactly the entries of `labels`, each once."""
    deadline = time.monotonic() + 30
    stored: list = []
    while time.monotonic() < deadline:
        try:
            stored = cluster.node_entries(node)
        except Exception:
            stored = []
        if sorted(message for _, message in stored) == expected(labels):
            return stored
        time.sleep(0.2)
    raise AssertionError(
        f"{node} stores {len(stored)} entries, not the {len(expected(labels))} "
        "acknowledged ones\n" + cluster.all_stderr()
    )


def caught_up(node: str):
    def check(shard) -> bool:
        return any(
            f.node == node
            and f.reachable
            and shard.last_sequence > 0
            and f.last_sequence == shard.last_sequence
            and not f.HasField("log_damage")
            for f in shard.followers
        )

    return check


def test_damaged_leader_log_loses_no_acknowledged_entry(make_cluster):
    # No failover while both nodes are down: a is still the leader when it
    # comes back with its damaged log.
    cluster = make_cluster(("a", "b"), failover_seconds=60)
    cluster.start_all()
    labels = write_batches(cluster)
    cluster.wait_status(caught_up("b"), "b in sync")
    cluster.kill("a", signal.SIGTERM)
    cluster.kill("b", signal.SIGTERM)
    segment = last_segment(cluster, "a")
    flip_byte(segment, 50)

    cluster.start("a")
    # Two poll rounds of the coordinator see a back while b is down.
    time.sleep(1.0)
    alone = cluster.shard_status()
    cluster.start("b")
    settled = cluster.wait_status(
        lambda shard: shard.health == SERVING and caught_up_any(shard),
        "the shard serving with both nodes",
    )

    for node in ("b", "a"):
        wait_all_stored(cluster, node, labels)
    labels.append("after")
    cluster.write_until_acknowledged("after", BATCH_SIZE, "after")
    for node in ("a", "b"):
        stored = wait_all_stored(cluster, node, labels)
        assert [sequence for sequence, _ in sorted(stored)] == list(
            range(1, BATCH_SIZE * len(labels) + 1)
        )
    errors = [
        line
        for line in (cluster.directory / "a.stderr").read_text().splitlines()
        if "ERROR" in line
    ]
    assert any(str(segment) in line and "damaged" in line for line in errors)
    assert "on the leader's request" not in (cluster.directory / "b.stderr").read_text()
    assert alone.leader == ""
    assert settled.leader == "b"
    assert settled.leader_epoch > 1


def wait_solo_leading(cluster: LogCluster):
    return cluster.wait_status(
        lambda shard: shard.health == SERVING and shard.leader == "solo",
        "solo leading again",
    )


def restart_solo(cluster: LogCluster):
    cluster.kill("solo", signal.SIGTERM)
    cluster.start("solo")
    return wait_solo_leading(cluster)


def test_single_node_damaged_record_keeps_intact_entries(make_cluster):
    cluster = make_cluster(("solo",))
    cluster.start_all()
    labels = write_batches(cluster)
    # A read waits until the store contains every entry.
    assert sorted(cluster.listed_messages()) == expected(labels)
    cluster.kill("solo", signal.SIGTERM)
    segment = last_segment(cluster, "solo")
    # A byte in the middle of the file: the records behind it are intact.
    flip_byte(segment, segment.stat().st_size // 2)

    cluster.start("solo")
    status = wait_solo_leading(cluster)
    found = cluster.listed_messages()
    cluster.write_until_acknowledged("after", 1, "after")
    restarted = restart_solo(cluster)

    assert sorted(found) == expected(labels)
    assert max(found.values()) == 1
    stderr = (cluster.directory / "solo.stderr").read_text()
    errors = [line for line in stderr.splitlines() if "ERROR" in line]
    assert any(str(segment) in line and "at byte" in line for line in errors)
    # The store already contained every entry of the damaged records, so
    # nothing was lost and the node keeps leading.
    assert not any("leads shard" in line for line in errors)
    assert not any("starts as a follower" in line for line in errors)
    assert "no entry was lost" in stderr
    assert not status.HasField("leader_log_damage")
    assert not restarted.HasField("leader_log_damage")
    wal = segment.parent
    assert not (wal / "damage.json").exists()


def test_single_node_lost_entries_keeps_leading(make_cluster):
    cluster = make_cluster(("solo",))
    cluster.start_all()
    write_batches(cluster)
    cluster.kill("solo", signal.SIGTERM)
    segment = last_segment(cluster, "solo")
    flip_byte(segment, segment.stat().st_size // 2)
    # Without its store, the node has no copy of the entries behind the damage.
    shutil.rmtree(cluster.directory / "data" / "log_nodes" / "solo" / "store")

    cluster.start("solo")
    status = wait_solo_leading(cluster)
    cluster.write_until_acknowledged("after", 1, "after")
    restarted = restart_solo(cluster)

    stderr = (cluster.directory / "solo.stderr").read_text()
    errors = [line for line in stderr.splitlines() if "ERROR" in line]
    assert any("no other replica" in line for line in errors), errors
    assert not any("starts as a follower" in line for line in errors)
    assert status.HasField("leader_log_damage")
    assert restarted.HasField("leader_log_damage")


def test_torn_final_record_is_cut_quietly(make_cluster):
    cluster = make_cluster(("a", "b"), failover_seconds=60)
    cluster.start_all()
    labels = write_batches(cluster)
    cluster.wait_status(caught_up("b"), "b in sync")
    cluster.kill("a", signal.SIGTERM)
    cluster.kill("b", signal.SIGTERM)
    segment = last_segment(cluster, "a")
    # The last record, cut in half, as a crash in the middle of its write
    # leaves it. b stores it, so the entries in it must come back to a.
    offset, size = last_frame(segment)
    with open(segment, "r+b") as handle:
        handle.truncate(offset + size // 2)

    cluster.start("a")
    cluster.wait_status(
        lambda shard: shard.leader == "a" and shard.health != SERVING,
        "a leading alone",
    )
    cluster.start("b")
    cluster.wait_status(
        lambda shard: shard.health == SERVING and caught_up_any(shard),
        "the shard serving with both nodes",
    )
    labels.append("after")
    cluster.write_until_acknowledged("after", BATCH_SIZE, "after")

    for node in ("a", "b"):
        wait_all_stored(cluster, node, labels)
    stderr = (cluster.directory / "a.stderr").read_text()
    assert "torn" not in stderr or "never acknowledged" in stderr
    assert "damaged, not torn" not in stderr
    assert "on the leader's request" not in (cluster.directory / "b.stderr").read_text()


def caught_up_any(shard) -> bool:
    return bool(shard.followers) and all(
        f.reachable and f.last_sequence == shard.last_sequence for f in shard.followers
    )


def in_sync_followers(cluster: LogCluster) -> list[str]:
    """Return the in-sync followers of the only shard, from the coordinator's file."""
    path = cluster.directory / "data" / "log_service" / "coordinator.json"
    shards = json.loads(path.read_text())["shards"]
    (shard,) = shards.values()
    return list(shard["in_sync"])


def test_damaged_leader_yields_to_returning_follower(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    labels = write_batches(cluster)
    leader = cluster.shard_status().leader
    follower = "b" if leader == "a" else "a"
    cluster.wait_status(caught_up(follower), f"{follower} in sync")
    cluster.kill(follower, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while follower in in_sync_followers(cluster):
        assert time.monotonic() < deadline, f"{follower} stayed in the in-sync set"
        time.sleep(0.2)
    cluster.kill(leader, signal.SIGTERM)
    segment = last_segment(cluster, leader)
    flip_byte(segment, segment.stat().st_size // 2)
    # Without its store, the leader has no copy of the entries behind the
    # damage, but the follower has all of them.
    shutil.rmtree(cluster.directory / "data" / "log_nodes" / leader / "store")

    cluster.start(leader)
    alone = cluster.wait_status(
        lambda shard: shard.leader == leader and shard.HasField("leader_log_damage"),
        f"{leader} leading with its damage",
    )
    cluster.start(follower)
    settled = cluster.wait_status(
        lambda shard: (
            shard.health == SERVING
            and shard.leader == follower
            and caught_up_any(shard)
        ),
        f"{follower} leading with {leader} caught up",
    )
    for node in (follower, leader):
        wait_all_stored(cluster, node, labels)

    follower_stderr = (cluster.directory / f"{follower}.stderr").read_text()
    leader_stderr = (cluster.directory / f"{leader}.stderr").read_text()
    assert alone.leader_epoch < settled.leader_epoch
    assert "on the leader's request" not in follower_stderr
    assert "this node stops leading" in leader_stderr
