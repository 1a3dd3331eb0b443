"""Snapshot transfer between log nodes served in this process over real gRPC.

The tests with node processes are in test_snapshot.py. These check what a
crash or a bad stream reaches: the install at start, the stream's checks,
and the errors of FetchSnapshot.
"""

from __future__ import annotations

import json

import grpc
import pytest

from log_service import snapshot as snapshots
from log_service.node import _open_store
from splitlog.logs.v1 import node_service_pb2, replication_service_pb2
from splitlog_runtime import auth
from tests.log_service.node_support import (
    FOLLOWER,
    LEADER,
    SHARD,
    append,
    columns,
    configure,
    error_reason,
    indexed_batch,
    query_messages,
    query_sequences,
    start,
    wait_for,
)


def configure_request(leader, *, epoch, followers, to=None):
    return node_service_pb2.ConfigureShardRequest(
        shard=SHARD,
        leader_epoch=epoch,
        role=LEADER if to is None or to is leader else FOLLOWER,
        leader=leader.member,
        in_sync=[f.member for f in followers],
        followers=[f.member for f in followers],
        config_version=1,
    )


def append_request(epoch, batch_id, count):
    return node_service_pb2.AppendEntriesRequest(
        shard=SHARD, leader_epoch=epoch, batch_id=batch_id, entries=columns(count)
    )


def fetch_request(node: str = "n1", epoch: int = 1):
    return replication_service_pb2.FetchSnapshotRequest(
        shard=SHARD, node=node, leader_epoch=epoch
    )


@pytest.fixture
def leader(base_config, tmp_path):
    handle = start(base_config, tmp_path, "n0")
    configure(handle, epoch=1, leader=handle)
    for index in range(4):
        append(handle, 1, f"batch-{index}", count=50)
    assert wait_for(lambda: len(query_sequences(handle)) == 200)
    yield handle
    handle.stop()


@pytest.fixture
def signed_config(base_config):
    yield base_config.replace(
        auth_required=True,
        auth_secret="snapshot-auth-secret-" + "s" * 40,
        log_wal_segment_bytes=4096,
        log_fsync=False,
    )
    auth.install_process_signer(None)


def test_new_follower_catches_up_from_signed_snapshot(signed_config, tmp_path):
    # A leader without followers purges its log once its store has the
    # records, so a follower added later can only start from a snapshot.
    leader = start(signed_config, tmp_path, "n0")
    follower = None
    try:
        metadata = auth.outgoing_metadata()
        leader.stub.ConfigureShard(
            configure_request(leader, epoch=1, followers=[]), metadata=metadata
        )
        for index in range(20):
            leader.stub.AppendEntries(
                append_request(1, f"batch-{index}", 20), metadata=metadata, timeout=5
            )
        assert wait_for(lambda: leader.node.wal.first_sequence > 1)

        follower = start(signed_config, tmp_path, "n1")
        for handle in (leader, follower):
            handle.stub.ConfigureShard(
                configure_request(leader, epoch=1, followers=[follower], to=handle),
                metadata=metadata,
            )
        caught_up = wait_for(
            lambda: (
                follower.node.wal.last_sequence == 400
                and not follower.node.status().shards[0].HasField("snapshot")
            ),
            timeout=20,
        )
        leader.stub.AppendEntries(
            append_request(1, "batch-after", 5), metadata=metadata, timeout=5
        )
        assert wait_for(lambda: follower.node.wal.last_sequence == 405)
        installed = follower.node.status().shards[0].installed_snapshot_sequence
        assert caught_up
        assert installed >= leader.node.wal.first_sequence - 1
        assert installed > 0
    finally:
        if follower is not None:
            follower.stop()
        leader.stop()


def test_node_finishes_interrupted_install_at_start(base_config, tmp_path, leader):
    directory = tmp_path / "n1"
    directory.mkdir()
    manifest = snapshots.receive(
        directory,
        leader.channel,
        fetch_request(),
        lambda path: _open_store(path, base_config, compact=False),
        snapshots.Progress(),
        lambda: False,
    )
    # A crash right after the new store moved into place: the log and the
    # batch ids are still those of before.
    snapshots.install_store(directory)
    follower = start(base_config, tmp_path, "n1")
    try:
        before = follower.replication.GetNodeStatus(
            replication_service_pb2.GetNodeStatusRequest(), timeout=5
        ).shards[0]
        configure(leader, epoch=2, leader=leader, followers=[follower], version=1)
        configure(follower, epoch=2, leader=leader, followers=[follower], version=1)
        append(leader, 2, "batch-after", count=5)
        assert wait_for(lambda: len(query_sequences(follower)) == 205)

        assert manifest.last_sequence == 200
        assert before.last_sequence == 200
        assert before.installed_snapshot_sequence == 200
        assert query_messages(follower) == query_messages(leader)
        assert query_sequences(follower) == query_sequences(leader)
        assert not (directory / snapshots.READY_DIR).exists()
        saved = json.loads((directory / "batches.json").read_text())
        assert [item[0] for item in saved] == [f"batch-{i}" for i in range(4)]

        # Promoted, the follower recognises a batch it only has from the
        # snapshot and stores it once.
        configure(follower, epoch=3, leader=follower, version=1)
        again = append(follower, 3, "batch-2", count=50)
        assert again.duplicate
        assert again.first_sequence == 101
        assert len(query_sequences(follower)) == 205
    finally:
        follower.stop()


def test_unfinished_snapshot_is_deleted_at_start(base_config, tmp_path, leader):
    directory = tmp_path / "n1"
    partial = directory / snapshots.PARTIAL_DIR / "store"
    partial.mkdir(parents=True)
    (partial / "store.json").write_text("{}")

    follower = start(base_config, tmp_path, "n1")
    try:
        assert not (directory / snapshots.PARTIAL_DIR).exists()
        assert query_sequences(follower) == []
    finally:
        follower.stop()


def test_corrupt_chunk_is_refused(base_config, tmp_path, leader):
    messages = list(leader.replication.FetchSnapshot(fetch_request(), timeout=10))
    chunks = [m for m in messages if m.WhichOneof("part") == "entries"]
    chunks[0].entries.crc32 ^= 1
    partial = tmp_path / "partial"
    store = _open_store(partial / "store", base_config, compact=False)
    try:
        with pytest.raises(snapshots.SnapshotError, match="checksum"):
            snapshots.write_snapshot(
                messages, store, partial, snapshots.Progress(), lambda: False
            )
    finally:
        store.close()


def test_stream_without_trailer_is_refused(base_config, tmp_path, leader):
    messages = list(leader.replication.FetchSnapshot(fetch_request(), timeout=10))
    assert messages[0].WhichOneof("part") == "header"
    assert messages[-1].WhichOneof("part") == "trailer"
    assert messages[-1].trailer.entry_count == 200
    partial = tmp_path / "partial"
    store = _open_store(partial / "store", base_config, compact=False)
    try:
        with pytest.raises(snapshots.SnapshotError, match="before its trailer"):
            snapshots.write_snapshot(
                messages[:-1], store, partial, snapshots.Progress(), lambda: False
            )
    finally:
        store.close()


def test_fetch_from_non_leader_fails(leader):
    with pytest.raises(grpc.RpcError) as wrong_epoch:
        list(leader.replication.FetchSnapshot(fetch_request(epoch=7), timeout=5))
    with pytest.raises(grpc.RpcError) as no_node:
        list(leader.replication.FetchSnapshot(fetch_request(node=""), timeout=5))

    assert wrong_epoch.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(wrong_epoch.value) == "NOT_LEADER"
    assert "leader_epoch 7" in wrong_epoch.value.details()
    assert no_node.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node" in no_node.value.details()


def test_snapshot_carries_held_indexes(base_config, tmp_path):
    config = base_config.replace(log_wal_segment_bytes=4096, log_fsync=False)
    leader = start(config, tmp_path, "n0")
    follower = None
    try:
        configure(leader, epoch=1, leader=leader)
        leader.stub.AppendEntries(indexed_batch("r/d/s0", [1, 3]), timeout=5)
        leader.stub.AppendEntries(indexed_batch("r/d/s0", [0, 1, 3, 5]), timeout=5)
        for index in range(20):
            append(leader, 1, f"batch-{index}", count=20)
        # Without followers, the leader purges its log once its store has
        # the records, so a follower added now starts from a snapshot.
        assert wait_for(lambda: leader.node.wal.first_sequence > 5)

        follower = start(config, tmp_path, "n1")
        configure(leader, epoch=1, leader=leader, followers=[follower], version=2)
        configure(follower, epoch=1, leader=leader, followers=[follower], version=2)
        assert wait_for(
            lambda: follower.node.status().shards[0].installed_snapshot_sequence > 0,
            timeout=20,
        )
        leader.stop()
        configure(follower, epoch=2, leader=follower, version=1)
        retry = follower.stub.AppendEntries(
            indexed_batch("r/d/s0", list(range(6)), epoch=2), timeout=5
        )
        stored = [m for m in query_messages(follower) if m.startswith("r/d/s0 ")]
    finally:
        if follower is not None:
            follower.stop()
        if not leader.host.stopped:
            leader.stop()

    assert (retry.count, retry.duplicate_count) == (2, 4)
    assert sorted(stored) == [f"r/d/s0 {i}" for i in range(6)]


RATE_BYTES_PER_SECOND = 4


@pytest.fixture
def throttled_leader(base_config, tmp_path):
    config = base_config.replace(log_snapshot_bytes_per_second=RATE_BYTES_PER_SECOND)
    handle = start(config, tmp_path, "n0")
    configure(handle, epoch=1, leader=handle)
    append(handle, 1, "batch", count=50)
    assert wait_for(lambda: len(query_sequences(handle)) == 50)
    yield handle
    if not handle.host.stopped:
        handle.stop()


def streams_ended(node) -> bool:
    """Return whether every FetchSnapshot stream of `node` has ended."""
    with node.lock:
        holds = list(node._snapshot_holds.values())
    return bool(holds) and all(until is not None for _, until in holds)


@pytest.mark.parametrize("end", ["cancel", "stop"])
def test_throttled_stream_ends_with_call(throttled_leader, end):
    call = throttled_leader.replication.FetchSnapshot(fetch_request(), timeout=600)
    # The header is small, so the chunk after it comes within seconds. The
    # stream would then wait for the chunk's bytes at 4 bytes per second.
    header = next(call)
    chunk = next(call)
    if end == "cancel":
        call.cancel()
    else:
        throttled_leader.stop()

    ended = wait_for(lambda: streams_ended(throttled_leader.node), timeout=30)

    assert header.WhichOneof("part") == "header"
    assert chunk.WhichOneof("part") == "entries"
    assert chunk.ByteSize() > 60 * RATE_BYTES_PER_SECOND
    assert ended
