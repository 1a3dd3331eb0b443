"""Tests of one log node as leader without followers, over real gRPC."""

from __future__ import annotations

import re
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitlog.logs.v1 import (
    node_service_pb2,
    replication_service_pb2,
)
from tests.log_service.node_support import (
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
)


@pytest.fixture
def leader(base_config, tmp_path):
    handle = start(base_config, tmp_path, "n0")
    configure(handle, epoch=1, leader=handle)
    yield handle
    handle.stop()


def test_health_serving_after_start(leader):
    health = health_pb2_grpc.HealthStub(leader.channel)

    response = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_append_is_visible_to_next_query(leader):
    first = append(leader, 1, "batch-a", 3)
    second = append(leader, 1, "batch-b", 2)

    messages = query_messages(leader)

    assert (first.first_sequence, first.count, first.duplicate) == (1, 3, False)
    assert (second.first_sequence, second.count) == (4, 2)
    assert sorted(messages) == sorted(
        ["batch-a 0", "batch-a 1", "batch-a 2", "batch-b 0", "batch-b 1"]
    )


def test_duplicate_batch_id_is_stored_once(leader):
    first = append(leader, 1, "batch-a", 3)

    again = append(leader, 1, "batch-a", 3)

    assert again.duplicate
    assert (again.first_sequence, again.count) == (first.first_sequence, 3)
    assert query_sequences(leader) == [1, 2, 3]


def test_concurrent_appends_get_disjoint_sequences(leader):
    results: list[node_service_pb2.AppendEntriesResponse] = []
    lock = threading.Lock()

    def appender(index: int) -> None:
        for round_ in range(5):
            response = append(leader, 1, f"batch-{index}-{round_}", 2)
            with lock:
                results.append(response)

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    covered = sorted(r.first_sequence + i for r in results for i in range(r.count))
    assert covered == list(range(1, 61))
    assert sorted(query_sequences(leader)) == list(range(1, 61))


def test_append_to_unconfigured_node_is_unavailable(base_config, tmp_path):
    handle = start(base_config, tmp_path, "n9")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            append(handle, 1, "batch-a")
    finally:
        handle.stop()

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "NOT_LEADER"
    assert has_retry_info(caught.value)


def test_append_with_other_epoch_is_unavailable(leader):
    with pytest.raises(grpc.RpcError) as caught:
        append(leader, 2, "batch-a")

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "STALE_EPOCH"
    assert has_retry_info(caught.value)
    assert query_sequences(leader) == []


@pytest.mark.parametrize(
    ("batch_id", "entries", "field"),
    [
        ("", columns(2), "batch_id"),
        ("batch-a", node_service_pb2.EntryColumns(), "entries"),
        (
            "batch-a",
            node_service_pb2.EntryColumns(
                timestamps=[1, 2], observed_timestamps=[5], messages=["x"]
            ),
            "entries.observed_timestamps",
        ),
        (
            "batch-a",
            node_service_pb2.EntryColumns(timestamps=[1, 2], messages=["x"]),
            "entries.severities",
        ),
    ],
)
def test_malformed_batch_is_invalid(leader, batch_id, entries, field):
    request = node_service_pb2.AppendEntriesRequest(
        shard=SHARD, leader_epoch=1, batch_id=batch_id, entries=entries
    )

    with pytest.raises(grpc.RpcError) as caught:
        leader.stub.AppendEntries(request, timeout=5)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


def test_other_shard_is_not_found(leader):
    request = node_service_pb2.QueryEntriesRequest(shard="elsewhere", limit=5)

    with pytest.raises(grpc.RpcError) as caught:
        leader.stub.QueryEntries(request, timeout=5)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "elsewhere" in caught.value.details()


def test_configure_with_lower_epoch_is_refused(leader):
    configure(leader, epoch=3, leader=leader)

    with pytest.raises(grpc.RpcError) as caught:
        configure(leader, epoch=2, leader=leader)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "STALE_EPOCH"


def test_configure_with_lower_version_is_refused(leader):
    configure(leader, epoch=1, leader=leader, version=5)

    with pytest.raises(grpc.RpcError) as caught:
        configure(leader, epoch=1, leader=leader, version=4)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "STALE_CONFIG_VERSION"


def test_restart_keeps_role_entries_and_batch_ids(base_config, tmp_path):
    handle = start(base_config, tmp_path, "n0")
    configure(handle, epoch=4, leader=handle)
    append(handle, 4, "batch-a", 3)
    handle.stop()

    restarted = start(base_config, tmp_path, "n0")
    try:
        status = restarted.replication.GetNodeStatus(
            replication_service_pb2.GetNodeStatusRequest(), timeout=5
        )
        again = append(restarted, 4, "batch-a", 3)
        sequences = query_sequences(restarted)
    finally:
        restarted.stop()

    assert status.shards[0].role == LEADER
    assert status.shards[0].leader_epoch == 4
    assert status.shards[0].last_sequence == 3
    assert status.shards[0].last_record_epoch == 4
    assert again.duplicate
    assert sequences == [1, 2, 3]


def test_status_reports_progress(leader):
    append(leader, 1, "batch-a", 4)

    status = leader.replication.GetNodeStatus(
        replication_service_pb2.GetNodeStatusRequest(), timeout=5
    )

    assert status.node == "n0"
    assert status.address == leader.address
    shard = status.shards[0]
    assert (shard.shard, shard.role, shard.ready) == (SHARD, LEADER, True)
    assert (shard.last_sequence, shard.commit_sequence) == (4, 4)


def test_count_entries(leader):
    append(leader, 1, "batch-a", 4)

    response = leader.stub.CountEntries(
        node_service_pb2.CountEntriesRequest(shard=SHARD), timeout=5
    )

    assert [(c.severity, c.count) for c in response.severity_counts] == [(9, 4)]
    assert [(c.service, c.count) for c in response.service_counts] == [("checkout", 4)]


def test_follow_streams_new_entries(leader):
    append(leader, 1, "old", 2)
    # From the last sequence stored, not -1 ("from now"): the node may see
    # the call only after the append below, and would then skip its entries.
    stream = leader.stub.FollowEntries(
        node_service_pb2.FollowEntriesRequest(shard=SHARD, after_sequence=2),
        timeout=10,
    )
    received: list[str] = []

    def reader() -> None:
        for message in stream:
            received.extend(message.entries.messages)
            if len(received) >= 3:
                return

    thread = threading.Thread(target=reader)
    thread.start()
    append(leader, 1, "new", 3)
    thread.join(timeout=8)
    stream.cancel()

    assert received == ["new 0", "new 1", "new 2"]


def test_follow_from_sequence_replays_committed(leader):
    append(leader, 1, "old", 2)
    append(leader, 1, "newer", 2)
    stream = leader.stub.FollowEntries(
        node_service_pb2.FollowEntriesRequest(shard=SHARD, after_sequence=1),
        timeout=10,
    )

    sequences: list[int] = []
    last_sequence = 0
    for message in stream:
        sequences.extend(message.sequences)
        last_sequence = message.last_sequence
        if last_sequence >= 4:
            break
    stream.cancel()

    assert sequences == [2, 3, 4]
    assert last_sequence == 4


def test_old_entries_go_to_month_files(base_config, tmp_path):
    handle = start(base_config, tmp_path, "n0")
    configure(handle, epoch=1, leader=handle)
    entries = columns(2, "old-and-new")
    day_ns = 86400 * 1_000_000_000
    # Ten days back is a day that ended more than 24 hours ago.
    entries.timestamps[0] -= 10 * day_ns
    try:
        handle.stub.AppendEntries(
            node_service_pb2.AppendEntriesRequest(
                shard=SHARD, leader_epoch=1, batch_id="b1", entries=entries
            ),
            timeout=5,
        )
        stored = query_messages(handle)
    finally:
        handle.stop()
    names = sorted(p.name for p in (handle.directory / "store").glob("*.duckdb"))

    assert sorted(stored) == ["old-and-new 0", "old-and-new 1"]
    assert len(names) == 2
    # The old day has no file of its own, so it shares its month's file.
    assert re.fullmatch(r"\d{6}01T000000Z-(28|29|30|31)d\.duckdb", names[0])
    assert not names[1].endswith("d.duckdb")


def _batch(batch_id: str, count: int, epoch: int = 1):
    return node_service_pb2.AppendEntriesRequest(
        shard=SHARD,
        leader_epoch=epoch,
        batch_id=batch_id,
        entries=columns(count, batch_id),
    )


def test_append_batches_stores_each_batch(leader):
    append(leader, 1, "batch-a", 2)

    response = leader.stub.AppendBatches(
        node_service_pb2.AppendBatchesRequest(
            batches=[_batch("batch-b", 3), _batch("batch-a", 2), _batch("batch-c", 1)]
        ),
        timeout=5,
    )

    results = [(r.first_sequence, r.count, r.duplicate) for r in response.results]
    assert results == [(3, 3, False), (1, 2, True), (6, 1, False)]
    assert query_sequences(leader) == [1, 2, 3, 4, 5, 6]
    assert sorted(query_messages(leader)) == sorted(
        ["batch-a 0", "batch-a 1", "batch-b 0", "batch-b 1", "batch-b 2", "batch-c 0"]
    )


def test_append_batches_retry_stores_once(leader):
    request = node_service_pb2.AppendBatchesRequest(
        batches=[_batch("batch-a", 2), _batch("batch-b", 2)]
    )
    leader.stub.AppendBatches(request, timeout=5)

    again = leader.stub.AppendBatches(request, timeout=5)
    single = append(leader, 1, "batch-b", 2)

    assert [r.duplicate for r in again.results] == [True, True]
    assert (single.first_sequence, single.duplicate) == (3, True)
    assert query_sequences(leader) == [1, 2, 3, 4]


def test_append_batches_with_other_epoch_stores_nothing(leader):
    request = node_service_pb2.AppendBatchesRequest(
        batches=[_batch("batch-a", 2), _batch("batch-b", 2, epoch=2)]
    )

    with pytest.raises(grpc.RpcError) as caught:
        leader.stub.AppendBatches(request, timeout=5)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "STALE_EPOCH"
    assert query_sequences(leader) == []


@pytest.mark.parametrize(
    ("batches", "code", "field"),
    [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "batches"),
        (
            [_batch("batch-a", 2), _batch("", 2)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "batches[1].batch_id",
        ),
        (
            [
                node_service_pb2.AppendEntriesRequest(
                    shard=SHARD,
                    leader_epoch=1,
                    batch_id="batch-b",
                    entries=node_service_pb2.EntryColumns(
                        timestamps=[1, 2], observed_timestamps=[5], messages=["x"]
                    ),
                )
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "batches[0].entries.observed_timestamps",
        ),
        (
            [node_service_pb2.AppendEntriesRequest(shard="elsewhere", batch_id="b")],
            grpc.StatusCode.NOT_FOUND,
            "batches[0].shard",
        ),
    ],
)
def test_append_batches_malformed_stores_nothing(leader, batches, code, field):
    with pytest.raises(grpc.RpcError) as caught:
        leader.stub.AppendBatches(
            node_service_pb2.AppendBatchesRequest(batches=batches), timeout=5
        )

    assert caught.value.code() == code
    assert field in caught.value.details()
    assert query_sequences(leader) == []


def test_retry_stores_only_unheld_indexes(leader):
    first = leader.stub.AppendEntries(indexed_batch("r/d/s0", [5, 6, 7]), timeout=5)

    retry = leader.stub.AppendEntries(
        indexed_batch("r/d/s0", list(range(8))), timeout=5
    )
    again = leader.stub.AppendEntries(
        indexed_batch("r/d/s0", list(range(8))), timeout=5
    )

    assert (first.count, first.duplicate_count) == (3, 0)
    assert (retry.first_sequence, retry.count) == (4, 5)
    assert retry.duplicate_count == 3
    assert not retry.duplicate
    assert again.duplicate
    assert again.duplicate_count == 8
    assert (again.first_sequence, again.count) == (1, 8)
    assert sorted(query_messages(leader)) == [f"r/d/s0 {i}" for i in range(8)]


def test_retry_picks_unheld_entries_between_held(leader):
    leader.stub.AppendEntries(indexed_batch("r/d/s0", [1, 3, 4]), timeout=5)

    retry = leader.stub.AppendEntries(
        indexed_batch("r/d/s0", [0, 1, 2, 3, 4, 6]), timeout=5
    )
    records = leader.node.wal.records()

    assert (retry.count, retry.duplicate_count) == (3, 3)
    assert sorted(query_messages(leader)) == [f"r/d/s0 {i}" for i in (0, 1, 2, 3, 4, 6)]
    assert [info.index_runs for info in records] == [(1, 1, 3, 2), (0, 1, 2, 1, 6, 1)]


def test_batch_without_runs_is_held_whole(leader):
    append(leader, 1, "r/d/s0", 2)

    retry = leader.stub.AppendEntries(indexed_batch("r/d/s0", [0, 1, 2]), timeout=5)

    assert retry.duplicate
    assert retry.duplicate_count == 3
    assert query_sequences(leader) == [1, 2]


def test_restart_keeps_held_indexes(base_config, tmp_path):
    handle = start(base_config, tmp_path, "n0")
    configure(handle, epoch=1, leader=handle)
    handle.stub.AppendEntries(indexed_batch("r/d/s0", [0, 2]), timeout=5)
    handle.stop()

    restarted = start(base_config, tmp_path, "n0")
    try:
        retry = restarted.stub.AppendEntries(
            indexed_batch("r/d/s0", [0, 1, 2]), timeout=5
        )
        messages = query_messages(restarted)
    finally:
        restarted.stop()

    assert (retry.count, retry.duplicate_count) == (1, 2)
    assert sorted(messages) == ["r/d/s0 0", "r/d/s0 1", "r/d/s0 2"]


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ([0], "index_runs: contains 1 values"),
        ([0, 1, 1, 0], "index_runs: run 1 has 0 entries"),
        ([2, 1, 0, 1], "index_runs: run 1 begins at index 0, before 3"),
        ([0, 3], "index_runs: covers 3 entries but the batch has 2"),
    ],
)
def test_malformed_index_runs_are_invalid(leader, runs, message):
    request = node_service_pb2.AppendEntriesRequest(
        shard=SHARD, leader_epoch=1, batch_id="r/d/s0", entries=columns(2)
    )
    request.index_runs.extend(runs)

    with pytest.raises(grpc.RpcError) as caught:
        leader.stub.AppendEntries(request, timeout=5)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    assert query_sequences(leader) == []


def test_append_batches_with_pieces_of_one_batch(leader):
    leader.stub.AppendEntries(indexed_batch("r/d/s0", [1]), timeout=5)

    response = leader.stub.AppendBatches(
        node_service_pb2.AppendBatchesRequest(
            batches=[
                indexed_batch("r/d/s0", [0, 1]),
                indexed_batch("r/d/s0", [2, 3]),
                indexed_batch("r/d/s0", [0, 1, 2, 3]),
            ]
        ),
        timeout=5,
    )

    counts = [(r.count, r.duplicate_count, r.duplicate) for r in response.results]
    assert counts == [(1, 1, False), (2, 0, False), (4, 4, True)]
    assert sorted(query_messages(leader)) == [f"r/d/s0 {i}" for i in range(4)]
