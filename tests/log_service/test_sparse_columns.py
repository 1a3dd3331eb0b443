"""Batches whose default columns are empty, from the router to every reader.

The router leaves a column of `model.SPARSE_FIELDS` empty when every entry
has the default, and sends one shared observed time in
`EntryColumns.observed_timestamp`. Each test stores such a batch and reads it
back, through a real node, follower, write-ahead log, snapshot or router,
and expects exactly the values of the same batch sent with every column full.
"""

from __future__ import annotations

import time

import grpc
import pytest

from log_service import model, router
from log_service.model import NANOS_PER_SECOND, columns_to_entries, fill_columns
from log_service.store import LogStore
from log_service.streams import ColumnBlock
from log_service.wal import WriteAheadLog, slice_columns
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import node_service_pb2
from tests.log_service.node_support import (
    SHARD,
    configure,
    query_sequences,
    start,
    wait_for,
)
from tests.log_service.test_replication import form_pair
from tests.log_service.test_router_cluster import Cluster, list_all, ts

OBSERVED = 1_760_000_000 * NANOS_PER_SECOND


def dense(
    count: int, label: str, first_ts: int = OBSERVED
) -> node_service_pb2.EntryColumns:
    """Return `count` entries with every column full, sparse ones at the default."""
    return node_service_pb2.EntryColumns(
        timestamps=[first_ts + i for i in range(count)],
        observed_timestamps=[OBSERVED] * count,
        severities=[9] * count,
        services=["checkout"] * count,
        hosts=["web-1"] * count,
        messages=[f"{label} {i}" for i in range(count)],
        attributes=['{"k":"v"}'] * count,
        trace_ids=[""] * count,
        span_ids=[""] * count,
        truncated=[False] * count,
        dropped_attributes_counts=[0] * count,
    )


def sparse(columns: node_service_pb2.EntryColumns) -> node_service_pb2.EntryColumns:
    """Return `columns` with each sparse column emptied, as the router sends it."""
    result = node_service_pb2.EntryColumns()
    result.CopyFrom(columns)
    result.observed_timestamp = columns.observed_timestamps[0]
    for name in model.SPARSE_FIELDS:
        result.ClearField(name)
    return result


def append_columns(handle, batch_id: str, columns, epoch: int = 1):
    return handle.stub.AppendEntries(
        node_service_pb2.AppendEntriesRequest(
            shard=SHARD, leader_epoch=epoch, batch_id=batch_id, entries=columns
        ),
        timeout=5,
    )


def stored_columns(handle) -> node_service_pb2.EntryColumns:
    response = handle.stub.QueryEntries(
        node_service_pb2.QueryEntriesRequest(shard=SHARD, limit=1000), timeout=5
    )
    return response.entries


def followed_columns(handle, count: int) -> node_service_pb2.EntryColumns:
    """Read `count` entries of the shard from sequence 1 with FollowEntries."""
    call = handle.stub.FollowEntries(
        node_service_pb2.FollowEntriesRequest(shard=SHARD, after_sequence=0),
        timeout=10,
    )
    columns = node_service_pb2.EntryColumns()
    try:
        for response in call:
            columns.MergeFrom(response.entries)
            if len(columns.timestamps) >= count:
                break
    finally:
        call.cancel()
    return columns


# The router's filling of the columns.


def rows_of(columns: node_service_pb2.EntryColumns) -> list[tuple]:
    values = [getattr(columns, name) for name in model.ROW_FIELDS]
    return list(zip(*values, strict=True))


def block(count: int, observed: int) -> ColumnBlock:
    return ColumnBlock(
        service="checkout",
        host="web-1",
        attributes="",
        observed_timestamp=observed,
        timestamps=[OBSERVED + i for i in range(count)],
        severities=[9] * count,
        messages=[f"block {i}" for i in range(count)],
        first_index=0,
        row_position=0,
    )


def test_fill_leaves_default_columns_empty():
    columns = node_service_pb2.EntryColumns()

    fill_columns([rows_of(dense(4, "row")), block(3, OBSERVED)], columns)

    assert columns.observed_timestamp == OBSERVED
    for name in sorted(model.SPARSE_FIELDS):
        assert len(getattr(columns, name)) == 0, name
    assert len(columns.timestamps) == 7
    assert list(columns.messages[4:]) == ["block 0", "block 1", "block 2"]


def test_fill_keeps_column_with_one_value():
    rows = dense(3, "row")
    rows.trace_ids[1] = "4bf92f3577b34da6a3ce929d0e0e4736"
    rows.dropped_attributes_counts[2] = 5
    columns = node_service_pb2.EntryColumns()

    fill_columns([block(2, OBSERVED), rows_of(rows)], columns)

    assert list(columns.trace_ids) == ["", "", "", rows.trace_ids[1], ""]
    assert list(columns.dropped_attributes_counts) == [0, 0, 0, 0, 5]
    assert len(columns.span_ids) == 0
    assert len(columns.truncated) == 0
    assert len(columns.observed_timestamps) == 0


@pytest.mark.parametrize("other", ["rows", "block"])
def test_fill_keeps_different_observed_times(other):
    rows = dense(3, "row")
    segments: list = [rows_of(rows)]
    if other == "rows":
        rows.observed_timestamps[2] = OBSERVED - 7
        segments = [rows_of(rows)]
    else:
        segments.append(block(2, OBSERVED + 1))
    columns = node_service_pb2.EntryColumns()

    fill_columns(segments, columns)

    expected = list(rows.observed_timestamps)
    if other == "block":
        expected += [OBSERVED + 1] * 2
    assert list(columns.observed_timestamps) == expected
    assert columns.observed_timestamp == 0


def test_router_request_omits_default_columns():
    payload = router._serialized_request(
        SHARD, "batch-a", [rows_of(dense(2, "row")), block(20, OBSERVED)], [0, 22]
    )

    request = node_service_pb2.AppendEntriesRequest.FromString(payload)
    assert request.entries.observed_timestamp == OBSERVED
    assert len(request.entries.messages) == 22
    for name in sorted(model.SPARSE_FIELDS):
        assert len(getattr(request.entries, name)) == 0, name


def test_entries_of_sparse_columns_equal_dense():
    full = dense(5, "entry")
    full.trace_ids[:] = ["ab" * 16] * 5

    sparse_columns = sparse(full)
    sparse_columns.trace_ids[:] = full.trace_ids

    assert columns_to_entries(sparse_columns) == columns_to_entries(full)
    assert columns_to_entries(sparse_columns, [4, 0]) == columns_to_entries(
        full, [4, 0]
    )


def test_slice_keeps_shared_observed_time():
    sliced = slice_columns(sparse(dense(5, "entry")), 1, 3)

    assert sliced.observed_timestamp == OBSERVED
    assert list(sliced.messages) == ["entry 1", "entry 2"]
    assert len(sliced.observed_timestamps) == 0


# Nodes: store, follower, write-ahead log, snapshot.


@pytest.fixture
def pair(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    follower = start(base_config, tmp_path, "n1")
    form_pair(leader, follower)
    yield leader, follower
    follower.stop()
    leader.stop()


def test_leader_and_follower_store_defaults(pair):
    leader, follower = pair
    expected = dense(4, "a")
    expected.MergeFrom(dense(3, "b", first_ts=OBSERVED + 10))

    append_columns(leader, "batch-a", sparse(dense(4, "a")))
    append_columns(leader, "batch-b", dense(3, "b", first_ts=OBSERVED + 10))

    assert wait_for(lambda: len(query_sequences(follower)) == 7)
    assert stored_columns(leader) == expected
    assert stored_columns(follower) == expected
    assert followed_columns(leader, 7) == expected
    assert followed_columns(follower, 7) == expected


def test_node_rejects_short_column(pair):
    leader, _ = pair
    columns = sparse(dense(3, "a"))
    columns.trace_ids[:] = ["", ""]

    with pytest.raises(grpc.RpcError) as caught:
        append_columns(leader, "batch-short", columns)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entries.trace_ids" in caught.value.details()
    assert "or none when every entry has the default" in caught.value.details()


def test_node_rejects_both_observed_forms(pair):
    leader, _ = pair
    columns = dense(3, "a")
    columns.observed_timestamp = OBSERVED

    with pytest.raises(grpc.RpcError) as caught:
        append_columns(leader, "batch-both", columns)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entries.observed_timestamp" in caught.value.details()


def test_replay_of_logged_record_stores_defaults(tmp_path):
    # The node writes a record's entries to the log as the router sent them,
    # and applies the records after its store's last sequence at start.
    record = node_service_pb2.LogRecord(
        first_sequence=1,
        epoch=1,
        batch_id="batch-a",
        receive_time=OBSERVED + 99,
        entries=sparse(dense(6, "a")),
    )
    wal = WriteAheadLog(tmp_path / "wal", fsync=False)
    wal.write(record)
    wal.sync(6)
    wal.close()

    reopened = WriteAheadLog(tmp_path / "wal", fsync=False)
    replayed = list(reopened.replay())
    reopened.close()
    store = LogStore(tmp_path / "store")
    try:
        store.apply(replayed)
        columns, sequences, _ = store.since(
            0, node_service_pb2.EntryFilter(), limit=100
        )
    finally:
        store.close()

    assert sequences == [1, 2, 3, 4, 5, 6]
    assert columns == dense(6, "a")


def test_records_of_mixed_forms_store_defaults(tmp_path):
    forms = [sparse(dense(3, "a")), dense(2, "b"), sparse(dense(1, "c"))]
    forms[2].observed_timestamp = OBSERVED + 5
    records = []
    first = 1
    for number, columns in enumerate(forms):
        records.append(
            node_service_pb2.LogRecord(
                first_sequence=first, epoch=1, batch_id=f"b{number}", entries=columns
            )
        )
        first += len(columns.timestamps)
    store = LogStore(tmp_path / "store")
    try:
        store.apply(records)
        columns, _, _ = store.since(0, node_service_pb2.EntryFilter(), limit=100)
    finally:
        store.close()

    assert list(columns.observed_timestamps) == [OBSERVED] * 5 + [OBSERVED + 5]
    assert list(columns.trace_ids) == [""] * 6
    assert list(columns.truncated) == [False] * 6
    assert list(columns.dropped_attributes_counts) == [0] * 6


def test_new_follower_gets_defaults_from_snapshot(base_config, tmp_path):
    # A leader without followers purges its log once its store has the
    # records, so a follower added later starts from a snapshot.
    config = base_config.replace(log_wal_segment_bytes=4096, log_fsync=False)
    leader = start(config, tmp_path, "n0")
    follower = None
    try:
        configure(leader, epoch=1, leader=leader)
        expected = node_service_pb2.EntryColumns()
        for index in range(10):
            columns = dense(20, f"batch-{index}", first_ts=OBSERVED + index * 100)
            expected.MergeFrom(columns)
            append_columns(leader, f"batch-{index}", sparse(columns))
        assert wait_for(lambda: leader.node.wal.first_sequence > 1)

        follower = start(config, tmp_path, "n1")
        form_pair(leader, follower)
        caught_up = wait_for(
            lambda: (
                follower.node.wal.last_sequence == 200
                and not follower.node.status().shards[0].HasField("snapshot")
            ),
            timeout=20,
        )
        assert caught_up
        assert wait_for(lambda: len(query_sequences(follower)) == 200)
        installed = follower.node.status().shards[0].installed_snapshot_sequence

        assert installed > 0
        assert stored_columns(follower) == expected
    finally:
        if follower is not None:
            follower.stop()
        leader.stop()


# Router: rows and streams, read by ListLogEntries and TailLogEntries.


@pytest.fixture
def cluster(base_config):
    config = base_config.replace(
        log_shards=1, log_replicas=2, log_node_port=0, log_fsync=False, workers=8
    )
    running = Cluster(config)
    yield running
    running.close()


def tail_while(cluster, write, count: int) -> list[pb.LogEntry]:
    """Open a tail, call `write` once the tail has started, read `count` entries."""
    call = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["sparse"]), timeout=20
    )
    entries: list[pb.LogEntry] = []
    try:
        # The first response comes once the tail follows every shard.
        entries.extend(next(call).entries)
        write()
        for response in call:
            entries.extend(response.entries)
            if len(entries) >= count:
                break
    finally:
        call.cancel()
    return entries


def test_router_stores_rows_and_streams_exactly(cluster):
    now = time.time_ns()
    traced = pb.LogEntry(
        service="sparse",
        message="traced",
        timestamp=ts(now - 3),
        observed_timestamp=ts(now - 2),
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
    )
    plain = [
        pb.LogEntry(service="sparse", message=f"plain {i}", timestamp=ts(now + i))
        for i in range(3)
    ]
    stream = pb.LogStream(
        service="sparse",
        host="web-1",
        messages=[f"stream {i}" for i in range(20)],
        timestamps_unix_nano=[now + 10 + i for i in range(20)],
    )

    times = []

    def write() -> None:
        times.append(time.time_ns())
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(entries=plain, streams=[stream]), timeout=10
        )
        times.append(time.time_ns())
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(entries=[traced]), timeout=10
        )

    followed = tail_while(cluster, write, 24)
    listed = list_all(cluster.stub, services=["sparse"])
    before, after = times

    by_message = {e.message: e for e in listed}
    assert len(listed) == 24
    assert by_message["traced"].trace_id == traced.trace_id
    assert by_message["traced"].span_id == traced.span_id
    assert by_message["traced"].observed_timestamp == traced.observed_timestamp
    shared = by_message["plain 0"].observed_timestamp.ToNanoseconds()
    assert before <= shared <= after
    for entry in listed:
        if entry.message == "traced":
            continue
        assert entry.observed_timestamp.ToNanoseconds() == shared, entry.message
        assert entry.trace_id == "", entry.message
        assert entry.span_id == "", entry.message
        assert not entry.truncated, entry.message
        assert entry.dropped_attributes_count == 0, entry.message
    assert sorted(followed, key=lambda e: e.message) == sorted(
        listed, key=lambda e: e.message
    )
