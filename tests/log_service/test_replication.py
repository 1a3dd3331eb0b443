"""Tests of replication between log nodes, over real gRPC on 127.0.0.1."""

from __future__ import annotations

import shutil

import grpc
import pytest

from splitlog.logs.v1 import (
    node_service_pb2,
    replication_service_pb2,
)
from tests.log_service.node_support import (
    FOLLOWER,
    LEADER,
    SHARD,
    append,
    columns,
    configure,
    error_reason,
    has_retry_info,
    indexed_batch,
    query_messages,
    query_sequences,
    start,
    wait_for,
)


def status_of(handle) -> replication_service_pb2.ShardReplica:
    response = handle.replication.GetNodeStatus(
        replication_service_pb2.GetNodeStatusRequest(), timeout=5
    )
    return response.shards[0]


def append_with_retries(
    handle, epoch: int, batch_id: str, count: int, attempts: int = 10
) -> node_service_pb2.AppendEntriesResponse:
    """Append as a router does: retry UNAVAILABLE with the same batch id."""
    for _ in range(attempts - 1):
        try:
            return append(handle, epoch, batch_id, count)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
    return append(handle, epoch, batch_id, count)


def form_pair(leader, follower, epoch: int = 1, version: int = 1) -> None:
    configure(
        leader,
        epoch=epoch,
        leader=leader,
        in_sync=[follower],
        followers=[follower],
        version=version,
    )
    configure(
        follower,
        epoch=epoch,
        leader=leader,
        in_sync=[follower],
        followers=[follower],
        version=version,
    )


@pytest.fixture
def pair(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    follower = start(base_config, tmp_path, "n1")
    form_pair(leader, follower)
    handles = {"leader": leader, "follower": follower}
    yield handles
    for handle in handles.values():
        handle.stop()


def test_acknowledged_entries_are_on_the_follower(pair):
    leader, follower = pair["leader"], pair["follower"]

    response = append(leader, 1, "batch-a", 3)

    assert response.count == 3
    assert follower.node.wal.last_sequence == 3
    assert wait_for(lambda: query_sequences(follower) == [1, 2, 3])
    assert sorted(query_messages(follower)) == ["batch-a 0", "batch-a 1", "batch-a 2"]


def test_leader_reports_follower_progress(pair):
    leader = pair["leader"]
    append(leader, 1, "batch-a", 5)

    assert wait_for(lambda: status_of(leader).followers[0].last_sequence == 5)
    replica = status_of(leader)
    follower_status = replica.followers[0]
    assert follower_status.node == "n1"
    assert follower_status.reachable
    assert follower_status.lag_entries == 0
    assert follower_status.last_contact_time.seconds > 0
    assert replica.commit_sequence == 5
    assert wait_for(lambda: status_of(pair["follower"]).commit_sequence == 5)


def test_follower_down_times_out_then_catches_up(base_config, tmp_path, pair):
    leader, follower = pair["leader"], pair["follower"]
    append(leader, 1, "batch-a", 2)
    port = follower.host.port
    follower.stop()

    with pytest.raises(grpc.RpcError) as caught:
        append(leader, 1, "batch-b", 3)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "REPLICATION_TIMEOUT"
    assert has_retry_info(caught.value)

    restarted = start(base_config, tmp_path, "n1", port=port)
    pair["follower"] = restarted
    retried = append_with_retries(leader, 1, "batch-b", 3)

    assert retried.duplicate
    assert (retried.first_sequence, retried.count) == (3, 3)
    assert restarted.node.wal.last_sequence == 5
    assert wait_for(lambda: query_sequences(restarted) == [1, 2, 3, 4, 5])
    assert sorted(query_sequences(leader)) == [1, 2, 3, 4, 5]


def test_leader_only_ack_does_not_wait(pair):
    leader, follower = pair["leader"], pair["follower"]
    configure(
        leader,
        epoch=1,
        leader=leader,
        in_sync=[follower],
        followers=[follower],
        version=2,
        leader_only_ack=True,
    )
    follower.stop()

    response = append(leader, 1, "batch-a", 2)

    assert response.count == 2


def test_lower_epoch_replication_is_refused(pair):
    follower = pair["follower"]
    configure(follower, epoch=3, leader=pair["leader"], version=1)
    before = follower.node.wal.last_sequence
    stale = replication_service_pb2.ReplicateEntriesRequest(
        shard=SHARD,
        leader="n7",
        leader_epoch=2,
        records=[
            node_service_pb2.LogRecord(
                first_sequence=before + 1,
                epoch=2,
                batch_id="stale",
                entries=columns(2),
            )
        ],
    )

    replies = list(follower.replication.ReplicateEntries(iter([stale]), timeout=5))

    assert [r.leader_epoch for r in replies] == [3]
    assert replies[0].last_sequence == before
    assert follower.node.wal.last_sequence == before


def test_stale_leader_steps_down_on_higher_epoch(pair):
    leader, follower = pair["leader"], pair["follower"]
    configure(follower, epoch=2, leader=follower, version=1)

    assert wait_for(lambda: status_of(leader).role == FOLLOWER)
    assert status_of(leader).leader_epoch == 2
    with pytest.raises(grpc.RpcError) as caught:
        append(leader, 1, "batch-a")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "NOT_LEADER"


def test_divergent_tail_is_truncated_on_join(base_config, tmp_path):
    old = start(base_config, tmp_path, "n0")
    new = start(base_config, tmp_path, "n1")
    handles = [old, new]
    try:
        form_pair(old, new)
        append(old, 1, "shared", 3)
        # The old leader alone takes two more entries that never reach n1.
        new_port = new.host.port
        new.stop()
        configure(old, epoch=1, leader=old, followers=[new], version=2)
        append(old, 1, "lost", 2)
        old_port = old.host.port
        old.stop()

        new = start(base_config, tmp_path, "n1", port=new_port)
        handles.append(new)
        configure(new, epoch=2, leader=new, followers=[old], version=1)
        append(new, 2, "kept", 3)
        old = start(base_config, tmp_path, "n0", port=old_port)
        handles.append(old)
        configure(old, epoch=2, leader=new, followers=[old], version=1)
        configure(new, epoch=2, leader=new, in_sync=[old], followers=[old], version=2)
        append(new, 2, "after", 1)

        assert wait_for(lambda: old.node.wal.last_sequence == 7)
        assert wait_for(lambda: len(query_sequences(old)) == 7)
        messages = sorted(query_messages(old))
        assert messages == sorted(
            ["shared 0", "shared 1", "shared 2", "kept 0", "kept 1", "kept 2"]
            + ["after 0"]
        )
        assert [e.epoch for e in old.node.wal.history.entries] == [1, 2]
        assert status_of(old).last_record_epoch == 2
    finally:
        for handle in handles:
            if not handle.host.stopped:
                handle.stop()


def flip_byte_of(path, marker: bytes) -> None:
    """Change the first byte of `marker` in a file, so its record fails its CRC."""
    data = bytearray(path.read_bytes())
    data[data.index(marker)] ^= 0x5A
    path.write_bytes(bytes(data))


def test_damaged_leader_truncates_older_epoch_tail(base_config, tmp_path):
    old = start(base_config, tmp_path, "n0")
    new = start(base_config, tmp_path, "n1")
    handles = [old, new]
    try:
        form_pair(old, new)
        append(old, 1, "shared", 3)
        # The old leader alone takes entries 4..8 that never reach n1.
        new_port = new.host.port
        new.stop()
        configure(old, epoch=1, leader=old, followers=[new], version=2)
        append(old, 1, "lost", 5)
        old_port = old.host.port
        old.stop()

        # n1 leads epoch 2 and writes entries 4..9 in three records.
        new = start(base_config, tmp_path, "n1", port=new_port)
        handles.append(new)
        configure(new, epoch=2, leader=new, followers=[old], version=1)
        for label in ("kept-a", "kept-b", "kept-c"):
            append(new, 2, label, 2)
        new.stop()
        # The damaged record of kept-b cuts n1's log after entry 5. Without
        # its store, n1 has no other copy of entries 6..9.
        flip_byte_of(new.directory / "wal" / "00000000000000000001.wal", b"kept-b")
        shutil.rmtree(new.directory / "store")
        new = start(base_config, tmp_path, "n1", port=new_port)
        handles.append(new)
        damage_before = new.node.wal.damage

        # n1 leads again. n0, outside the in-sync set, returns with entries
        # 4..8 of epoch 1, which epoch 2 replaced from entry 4 on.
        configure(new, epoch=3, leader=new, followers=[old], version=1)
        old = start(base_config, tmp_path, "n0", port=old_port)
        handles.append(old)
        configure(old, epoch=3, leader=new, followers=[old], version=1)
        truncated = wait_for(lambda: old.node.wal.last_sequence == 5)
        append(new, 3, "after", 1)
        caught_up = wait_for(lambda: old.node.wal.last_sequence == 6)

        assert damage_before is not None
        assert damage_before.after == 5
        assert truncated
        assert caught_up
        assert status_of(new).role == LEADER
        assert new.node.wal.damage == damage_before
        assert wait_for(lambda: len(query_messages(old)) == 6)
        assert sorted(query_messages(old)) == [
            "after 0",
            "kept-a 0",
            "kept-a 1",
            "shared 0",
            "shared 1",
            "shared 2",
        ]
    finally:
        for handle in handles:
            if not handle.host.stopped:
                handle.stop()


def test_follower_without_leader_config_adopts_sender(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    follower = start(base_config, tmp_path, "n1")
    try:
        configure(
            leader, epoch=5, leader=leader, in_sync=[follower], followers=[follower]
        )

        append(leader, 5, "batch-a", 2)

        replica = status_of(follower)
        assert (replica.role, replica.leader_epoch) == (FOLLOWER, 5)
        assert replica.last_sequence == 2
    finally:
        leader.stop()
        follower.stop()


def replicated_record(
    first: int, batch_id: str, count: int, label: str
) -> node_service_pb2.LogRecord:
    return node_service_pb2.LogRecord(
        first_sequence=first, epoch=1, batch_id=batch_id, entries=columns(count, label)
    )


def test_overlapping_record_indexes_whole_batch(base_config, tmp_path):
    node = start(base_config, tmp_path, "n1")
    handles = [node]
    try:
        # The follower first stores the batch's first 4 entries, as after a
        # truncation that cut the record short, then receives the whole record.
        requests = [
            replication_service_pb2.ReplicateEntriesRequest(
                shard=SHARD,
                leader="n0",
                leader_epoch=1,
                records=[replicated_record(1, "batch-a", 4, "a")],
            ),
            replication_service_pb2.ReplicateEntriesRequest(
                shard=SHARD,
                leader="n0",
                leader_epoch=1,
                records=[replicated_record(1, "batch-a", 10, "a")],
            ),
        ]
        replies = list(node.replication.ReplicateEntries(iter(requests), timeout=5))
        assert [r.last_sequence for r in replies] == [4, 10]

        configure(node, epoch=2, leader=node, version=1)
        retry = append(node, 2, "batch-a", 10, label="a")
        assert retry.duplicate
        assert (retry.first_sequence, retry.count) == (1, 10)

        # The index is rebuilt from the write-ahead log's two pieces at restart.
        port = node.host.port
        node.stop()
        node = start(base_config, tmp_path, "n1", port=port)
        handles.append(node)
        retry = append(node, 2, "batch-a", 10, label="a")
        assert retry.duplicate
        assert (retry.first_sequence, retry.count) == (1, 10)
        assert sorted(query_sequences(node)) == list(range(1, 11))
    finally:
        for handle in handles:
            if not handle.host.stopped:
                handle.stop()


def test_partial_retry_agrees_on_follower_and_after_failover(pair):
    leader, follower = pair["leader"], pair["follower"]
    leader.stub.AppendEntries(indexed_batch("r/d/s0", [5, 6, 7]), timeout=5)
    retry = leader.stub.AppendEntries(
        indexed_batch("r/d/s0", [2, 3, 5, 6, 7]), timeout=5
    )
    assert (retry.count, retry.duplicate_count) == (2, 3)
    assert wait_for(lambda: follower.node.wal.last_sequence == 5)
    leader_runs = [info.index_runs for info in leader.node.wal.records()]
    follower_runs = [info.index_runs for info in follower.node.wal.records()]

    leader.stop()
    configure(follower, epoch=2, leader=follower, version=1)
    after_failover = follower.stub.AppendEntries(
        indexed_batch("r/d/s0", list(range(8)), epoch=2), timeout=5
    )
    again = follower.stub.AppendEntries(
        indexed_batch("r/d/s0", list(range(8)), epoch=2), timeout=5
    )

    assert leader_runs == [(5, 3), (2, 2)]
    assert follower_runs == leader_runs
    assert (after_failover.count, after_failover.duplicate_count) == (3, 5)
    assert again.duplicate
    assert again.duplicate_count == 8
    assert sorted(query_messages(follower)) == [f"r/d/s0 {i}" for i in range(8)]


def test_truncated_record_keeps_indexes_of_its_head(base_config, tmp_path):
    node = start(base_config, tmp_path, "n1")
    try:
        record = replicated_record(1, "r/d/s0", 10, "a")
        record.index_runs.extend([0, 10])
        requests = [
            replication_service_pb2.ReplicateEntriesRequest(
                shard=SHARD, leader="n0", leader_epoch=1, records=[record]
            ),
            # The next leader's log ends after the record's fourth entry.
            replication_service_pb2.ReplicateEntriesRequest(
                shard=SHARD, leader="n2", leader_epoch=2, truncate_after=4
            ),
        ]
        replies = list(node.replication.ReplicateEntries(iter(requests), timeout=5))
        configure(node, epoch=3, leader=node, version=1)

        retry = node.stub.AppendEntries(
            indexed_batch("r/d/s0", list(range(10)), epoch=3), timeout=5
        )

        assert [r.last_sequence for r in replies] == [10, 4]
        assert (retry.first_sequence, retry.count) == (5, 6)
        assert retry.duplicate_count == 4
        assert [info.index_runs for info in node.node.wal.records()] == [
            (0, 4),
            (4, 6),
        ]
    finally:
        node.stop()
