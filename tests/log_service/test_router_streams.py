"""Writes in the stream form through a real router and real log nodes.

A router with two shards of one node each listens on 127.0.0.1. Each test
writes `LogStream` messages over gRPC and reads the entries back, most often
beside the same entries written as `LogEntry` messages.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from log_service.model import NANOS_PER_SECOND
from splitlog.logs.v1 import logs_service_pb2 as pb
from tests.log_service.router_support import details_of, violated_fields
from tests.log_service.test_router_cluster import Cluster, list_all, ts
from tests.log_service.test_streams import as_entries

SECOND = NANOS_PER_SECOND
HOUR = 3600 * SECOND


def _start(base_config, **settings):
    config = base_config.replace(
        log_shards=2,
        log_replicas=1,
        log_node_port=0,
        log_fsync=False,
        workers=4,
        **settings,
    )
    return Cluster(config)


@pytest.fixture
def cluster(base_config):
    running = _start(base_config)
    yield running
    running.close()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _comparable(entry: pb.LogEntry, set_times: set[int]) -> tuple:
    """Every field of a stored entry but the service and the receive times.

    An entry written without a timestamp takes the receive time, which
    differs between two writes, so only the written timestamps compare.
    """
    stamp = entry.timestamp.ToNanoseconds()
    return (
        stamp if stamp in set_times else "receive time",
        entry.severity,
        entry.host,
        entry.message,
        tuple(sorted(entry.attributes.items())),
        entry.trace_id,
        entry.span_id,
        entry.truncated,
        entry.dropped_attributes_count,
    )


def _write_both_ways(stub, streams_of):
    """Write the same entries as streams and as rows, under two services."""
    in_streams, in_rows = _name("streams"), _name("rows")
    streams = streams_of(in_streams)
    by_rows = [e for s in streams_of(in_rows) for e in as_entries(s)]
    as_streams = stub.WriteLogEntries(pb.WriteLogEntriesRequest(streams=streams))
    as_rows = stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=by_rows))
    set_times = {t for s in streams for t in s.timestamps_unix_nano if t}
    stored = [
        [
            _comparable(entry, set_times)
            for entry in list_all(stub, services=[service], order_by="timestamp")
        ]
        for service in (in_streams, in_rows)
    ]
    return as_streams, as_rows, stored


def test_streams_store_what_entries_store(cluster):
    now = time.time_ns()
    many = {f"k{i:03d}": "v" for i in range(130)}

    def streams_of(service):
        return [
            pb.LogStream(
                service=service,
                host="node-1",
                attributes={"file": "app.log"},
                # Enough entries to stay in columns up to the node.
                messages=["ERROR: disk full", "plain", "level=warn x", "unset"] * 10,
                timestamps_unix_nano=[now - 3 * SECOND, now - 2 * SECOND, now, 0] * 10,
            ),
            pb.LogStream(
                service=service,
                messages=["cut " + "x" * (300 * 1024), "short"],
                severities=[pb.SEVERITY_ERROR, 0],
                severity=pb.SEVERITY_DEBUG,
                timestamps_unix_nano=[now - 5 * SECOND, now - 4 * SECOND],
            ),
            pb.LogStream(
                service=service,
                attributes=many,
                messages=["many attributes"],
                severity=pb.SEVERITY_WARN,
                timestamps_unix_nano=[now - 6 * SECOND],
            ),
            pb.LogStream(
                service=service,
                messages=["old", "new", "future"],
                timestamps_unix_nano=[now - 1000 * HOUR, now - 7 * SECOND, now + HOUR],
                severities=[pb.SEVERITY_INFO, pb.SEVERITY_INFO, 7],
            ),
        ]

    as_streams, as_rows, (stored_streams, stored_rows) = _write_both_ways(
        cluster.stub, streams_of
    )

    # The descriptions name the service and the entry's age, so they differ.
    rejections = [
        [(r.index, r.reason, r.field) for r in response.rejected_entries]
        for response in (as_streams, as_rows)
    ]
    assert as_streams.accepted_count == as_rows.accepted_count == 44
    assert as_streams.rejected_count == as_rows.rejected_count == 2
    assert rejections[0] == [
        (43, pb.REJECTION_REASON_TIMESTAMP_TOO_OLD, "timestamp"),
        (45, pb.REJECTION_REASON_INVALID_FIELD, "severity"),
    ]
    assert rejections[1] == rejections[0]
    assert stored_streams == stored_rows
    assert len(stored_streams) == 44
    severities = [row[1] for row in stored_streams]
    assert severities.count(pb.SEVERITY_ERROR) == 11  # 1 set, 10 guessed
    assert sum(row[7] for row in stored_streams) == 1  # the cut message
    assert max(row[8] for row in stored_streams) == 2  # 130 attributes, 128 kept
    assert stored_streams[-1][0] == "receive time"


def test_entries_then_streams_in_index_order(cluster):
    service = _name("mixed")
    request = pb.WriteLogEntriesRequest(
        entries=[
            pb.LogEntry(service=service, message="e0"),
            pb.LogEntry(service=service, message="e1", span_id="no"),
        ],
        streams=[
            pb.LogStream(service="", messages=["s0", "s1"]),
            pb.LogStream(service=service, messages=["s2", "s3"]),
        ],
    )

    response = cluster.stub.WriteLogEntries(request)
    stored = list_all(cluster.stub, services=[service], order_by="timestamp")

    assert response.accepted_count == 3
    assert [(r.index, r.field) for r in response.rejected_entries] == [
        (1, "span_id"),
        (2, "service"),
        (3, "service"),
    ]
    assert sorted(entry.message for entry in stored) == ["e0", "s2", "s3"]


def test_column_length_mismatch_fails_the_request(cluster):
    service = _name("mismatch")
    request = pb.WriteLogEntriesRequest(
        entries=[pb.LogEntry(service=service, message="not stored")],
        streams=[
            pb.LogStream(service=service, messages=["a"], severities=[9]),
            pb.LogStream(service=service, messages=["a", "b", "c"], severities=[9, 9]),
        ],
    )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.WriteLogEntries(request)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["streams[1].severities"]
    assert "has 2 values for 3 messages" in caught.value.details()
    assert list_all(cluster.stub, services=[service]) == []


def test_empty_stream_fails_the_request(cluster):
    service = _name("empty")
    request = pb.WriteLogEntriesRequest(
        streams=[
            pb.LogStream(service=service, messages=["a"]),
            pb.LogStream(service=service, host="h"),
        ],
    )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.WriteLogEntries(request)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["streams[1].messages"]
    assert "send at least one message per stream" in caught.value.details()
    assert list_all(cluster.stub, services=[service]) == []


def test_streams_count_against_batch_limit(base_config):
    running = _start(base_config, log_max_batch_entries=100)
    service = _name("count")
    empty_streams = pb.WriteLogEntriesRequest(streams=[pb.LogStream()] * 101)
    mixed = pb.WriteLogEntriesRequest(
        entries=[pb.LogEntry(service=service, message="e")] * 60,
        streams=[pb.LogStream(service=service, messages=["s"] * 41)],
    )
    try:
        with pytest.raises(grpc.RpcError) as caught_empty:
            running.stub.WriteLogEntries(empty_streams)
        with pytest.raises(grpc.RpcError) as caught_mixed:
            running.stub.WriteLogEntries(mixed)
        with pytest.raises(grpc.RpcError) as caught_nothing:
            running.stub.WriteLogEntries(pb.WriteLogEntriesRequest())
    finally:
        running.close()

    empty_error = caught_empty.value
    assert empty_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(empty_error) == ["streams"]
    assert "the batch has 101 entries, more than the limit of 100" in (
        empty_error.details()
    )
    assert violated_fields(caught_mixed.value) == ["entries"]
    assert "the batch has 101 entries" in caught_mixed.value.details()
    assert violated_fields(caught_nothing.value) == ["entries"]
    assert _error_info(caught_nothing.value).reason == "EMPTY_BATCH"


def test_stream_call_error_names_message(cluster):
    service = _name("call-mismatch")
    requests = [
        pb.StreamLogEntriesRequest(
            streams=[pb.LogStream(service=service, messages=["a", "b"])]
        ),
        pb.StreamLogEntriesRequest(
            streams=[pb.LogStream(service=service, messages=["c", "d"], severities=[9])]
        ),
    ]

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.StreamLogEntries(iter(requests))

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["streams[0].severities"]
    assert error.details().startswith("request message 1 of the call")
    assert "has 1 values for 2 messages" in error.details()
    assert _error_info(error).metadata["request_message"] == "1"
    assert _error_info(error).reason == "COLUMN_LENGTH_MISMATCH"


def test_stream_batch_retry_stores_once(cluster):
    start = time.time_ns()
    streams = [
        pb.LogStream(
            service=f"retry-{i}", messages=[f"once {i}.{j}" for j in range(20)]
        )
        for i in range(6)
    ]
    request = pb.WriteLogEntriesRequest(streams=streams, request_id=str(uuid.uuid4()))

    first = cluster.stub.WriteLogEntries(request)
    second = cluster.stub.WriteLogEntries(request)
    window = pb.GetLogStatsRequest(
        start_time=ts(start), end_time=ts(time.time_ns() + SECOND)
    )
    counters = cluster.stub.GetLogStats(window).ingest_counters

    assert first.accepted_count == second.accepted_count == 120
    assert len(list_all(cluster.stub, keyword="once")) == 120
    assert counters.accepted_count == 120
    assert counters.duplicate_count == 120


def test_stream_call_counts_stream_entries_across_messages(cluster):
    service = _name("call")

    def requests():
        yield pb.StreamLogEntriesRequest(
            entries=[pb.LogEntry(service=service, message="a")],
            streams=[pb.LogStream(service=service, messages=["b", "c"])],
        )
        yield pb.StreamLogEntriesRequest(
            streams=[
                pb.LogStream(
                    service=service, messages=["d", "e"], timestamps_unix_nano=[0, 1]
                )
            ]
        )

    response = cluster.stub.StreamLogEntries(requests())

    assert response.batch_count == 2
    assert response.accepted_count == 4
    assert [r.index for r in response.rejected_entries] == [4]


def test_stream_near_limit_as_rows_is_stored(base_config):
    # The stream's request is small, and its entries with the copied
    # attributes are near max_message_bytes but within it, so the expanded
    # size bound lets it through.
    running = _start(base_config, max_message_bytes=200_000)
    service = _name("near")
    attributes = {f"key{i:02d}": "v" * 10 for i in range(40)}
    stream = pb.LogStream(
        service=service,
        attributes=attributes,
        messages=[f"line {i}" for i in range(200)],
        severity=pb.SEVERITY_INFO,
    )
    as_entries_request = pb.WriteLogEntriesRequest(entries=as_entries(stream))
    try:
        response = running.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(streams=[stream], request_id=str(uuid.uuid4()))
        )
        stored = list_all(running.stub, services=[service], page_size=1000)
    finally:
        running.close()

    assert stream.ByteSize() < 10_000
    assert 150_000 < as_entries_request.ByteSize() < 200_000
    assert response.accepted_count == 200
    assert sorted(entry.message for entry in stored) == sorted(stream.messages)
    assert all(dict(entry.attributes) == attributes for entry in stored)


def _error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    (info,) = details_of(error, error_details_pb2.ErrorInfo)
    return info


def test_stream_too_large_expanded_is_rejected(base_config):
    running = _start(base_config, max_message_bytes=100_000)
    service = _name("amplified")
    attributes = {f"key{i:02d}": "v" * 500 for i in range(20)}
    small = pb.LogStream(service=service, messages=["fits"])
    stream = pb.LogStream(
        service=service,
        attributes=attributes,
        messages=["x"] * 30,
        severity=pb.SEVERITY_INFO,
    )
    request = pb.WriteLogEntriesRequest(
        entries=[pb.LogEntry(service=service, message="not stored")],
        streams=[small, stream],
    )
    as_rows = pb.WriteLogEntriesRequest(entries=as_entries(stream))
    try:
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.WriteLogEntries(request)
        with pytest.raises(grpc.RpcError) as caught_as_rows:
            running.stub.WriteLogEntries(as_rows)
        stored = list_all(running.stub, services=[service])
    finally:
        running.close()

    error = caught.value
    assert request.ByteSize() < 100_000
    assert as_rows.ByteSize() > 100_000
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught_as_rows.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _error_info(error).reason == "REQUEST_TOO_LARGE"
    assert _error_info(caught_as_rows.value).reason == "REQUEST_TOO_LARGE"
    assert violated_fields(error) == ["streams[1]"]
    expanded = int(_error_info(error).metadata["expanded_bytes"])
    assert as_rows.ByteSize() <= expanded < 2 * as_rows.ByteSize()
    assert f"up to {expanded} bytes" in error.details()
    assert "over max_message_bytes (100000)" in error.details()
    assert "fewer entries per stream" in error.details()
    assert "split the batch" in error.details()
    assert stored == []


def test_stream_call_rejects_expanded_batch(base_config):
    running = _start(base_config, max_message_bytes=100_000)
    service = _name("amplified-call")
    stream = pb.LogStream(
        service=service,
        attributes={f"key{i:02d}": "v" * 500 for i in range(20)},
        messages=["x"] * 30,
    )
    requests = [
        pb.StreamLogEntriesRequest(
            streams=[pb.LogStream(service=service, messages=["a"])]
        ),
        pb.StreamLogEntriesRequest(streams=[stream]),
    ]
    try:
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.StreamLogEntries(iter(requests))
    finally:
        running.close()

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert violated_fields(caught.value) == ["streams[0]"]


def test_otlp_export_too_large_expanded_is_rejected(base_config):
    running = _start(base_config, max_message_bytes=100_000)
    service = _name("otlp-amplified")
    resource = resource_pb2.Resource(
        attributes=[
            common_pb2.KeyValue(
                key="service.name",
                value=common_pb2.AnyValue(string_value=service),
            )
        ]
        + [
            common_pb2.KeyValue(
                key=f"key{i:02d}", value=common_pb2.AnyValue(string_value="v" * 500)
            )
            for i in range(20)
        ]
    )
    records = [
        logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value="x"))
        for _ in range(30)
    ]
    request = otlp_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource,
                scope_logs=[logs_pb2.ScopeLogs(log_records=records)],
            )
        ]
    )
    try:
        with pytest.raises(grpc.RpcError) as caught:
            otlp_grpc.LogsServiceStub(running.channel).Export(request, timeout=10)
        stored = list_all(running.stub, services=[service])
    finally:
        running.close()

    error = caught.value
    assert request.ByteSize() < 100_000
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _error_info(error).reason == "REQUEST_TOO_LARGE"
    assert violated_fields(error) == ["resource_logs[0]"]
    assert "over max_message_bytes (100000)" in error.details()
    assert stored == []


def test_time_sharding_routes_stream_runs(base_config):
    running = _start(base_config, log_sharding="time", log_time_bucket_seconds=1)
    service = _name("time")
    now = time.time_ns()
    # 40 entries a quarter of a second apart span about ten one-second
    # buckets, so the block is cut into runs for both shards.
    times = [now - i * SECOND // 4 for i in range(40)]
    stream = pb.LogStream(
        service=service,
        messages=[f"t{i}" for i in range(40)],
        timestamps_unix_nano=times,
    )
    try:
        response = running.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(streams=[stream])
        )
        stored = list_all(running.stub, services=[service], order_by="timestamp")
        # A range within one bucket queries only that bucket's shard, so an
        # entry stored on another shard would be missing here.
        by_own_range = [
            [
                entry.message
                for entry in list_all(
                    running.stub,
                    services=[service],
                    start_time=ts(t),
                    end_time=ts(t + 1),
                )
            ]
            for t in times
        ]
    finally:
        running.close()

    assert response.accepted_count == 40
    assert [entry.message for entry in stored] == [f"t{i}" for i in range(39, -1, -1)]
    assert by_own_range == [[f"t{i}"] for i in range(40)]
