"""Tests of the log router against real gRPC servers.

The first group runs a router whose nodes never respond: request checks,
the retention policy and writes that fail as a whole. The end-to-end group
runs real log nodes in this process.
"""

from __future__ import annotations

import sqlite3
import time

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from log_service.app import build_router, router_data_dir
from log_service.ingest_counters import FLUSH_INTERVAL_SECONDS, IngestCounters
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc
from tests.log_service.router_support import details_of, violated_fields
from tests.ports import closed_address

HOUR = 3600


@pytest.fixture
def lonely_router(base_config):
    """A router whose two shards point at addresses where nothing listens."""
    nodes = (
        f"shard-0=a@{closed_address()},b@{closed_address()};"
        f"shard-1=c@{closed_address()},d@{closed_address()}"
    )
    config = base_config.replace(log_nodes=nodes, deadline_seconds=2.0)
    host, coordinator = build_router(config, "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{host.port}")
    yield logs_service_pb2_grpc.LogsServiceStub(channel), config
    channel.close()
    host.stop(0)


def entry(service="expenses", message="hello", **kwargs):
    return pb.LogEntry(service=service, message=message, **kwargs)


def test_write_without_nodes_unavailable(lonely_router):
    stub, _ = lonely_router

    with pytest.raises(grpc.RpcError) as caught:
        stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=[entry()]))

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details_of(caught.value, error_details_pb2.RetryInfo)
    assert "request_id" in caught.value.details()


def test_ingest_counters_survive_reopen(tmp_path):
    path = tmp_path / "counters.db"
    minute = 60 * 1_000_000_000
    counters = IngestCounters(path)
    counters.record(
        5 * minute + 1, accepted=3, rejected={pb.REJECTION_REASON_MISSING_FIELD: 2}
    )
    counters.record(6 * minute, accepted=4, duplicates=5, failed_batches=1)
    counters.close()

    reopened = IngestCounters(path)
    both = reopened.read(5 * minute, 7 * minute)
    first = reopened.read(5 * minute, 6 * minute)
    reopened.close()

    assert both.accepted_count == 7
    assert both.rejected_count == 2
    assert both.failed_batch_count == 1
    assert both.duplicate_count == 5
    assert list(both.rejection_counts) == [
        pb.RejectionCount(reason=pb.REJECTION_REASON_MISSING_FIELD, count=2)
    ]
    assert first.accepted_count == 3
    assert first.failed_batch_count == 0
    assert first.duplicate_count == 0


def test_ingest_counters_flushed_without_reads(lonely_router):
    stub, config = lonely_router
    path = router_data_dir(config) / "ingest_counters.db"

    with pytest.raises(grpc.RpcError):
        stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=[entry()]))
    # No further write and no read: only the timer can flush the count.
    time.sleep(FLUSH_INTERVAL_SECONDS * 2.5)

    # A second connection reads what a SIGKILL of the router would leave.
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT SUM(count) FROM ingest_counts WHERE counter = 'failed_batches'"
        ).fetchall()
    assert rows == [(1,)]


def test_empty_batch_is_invalid(lonely_router):
    stub, _ = lonely_router

    with pytest.raises(grpc.RpcError) as caught:
        stub.WriteLogEntries(pb.WriteLogEntriesRequest())

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["entries"]


def test_too_large_batch_is_invalid(lonely_router, base_config):
    stub, config = lonely_router
    entries = [entry()] * (config.log_max_batch_entries + 1)

    with pytest.raises(grpc.RpcError) as caught:
        stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(config.log_max_batch_entries) in caught.value.details()
    assert "(log_max_batch_entries)" in caught.value.details()


def test_write_entry_invalid_names_the_field(lonely_router):
    stub, _ = lonely_router

    with pytest.raises(grpc.RpcError) as caught:
        stub.WriteLogEntry(pb.WriteLogEntryRequest(entry=entry(trace_id="xyz")))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["entry.trace_id"]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"order_by": "service"}, "order_by"),
        ({"min_severity": 9, "severities": [13]}, "severities"),
        ({"severities": [3]}, "severities[0]"),
        ({"attribute_filters": ["novalue"]}, "attribute_filters[0]"),
        ({"attribute_filters": ["=value"]}, "attribute_filters[0]"),
        ({"attribute_filters": ["a\\b=c"]}, "attribute_filters[0]"),
        ({"attribute_filters": ["a\\"]}, "attribute_filters[0]"),
        ({"attribute_filters": ["a\\=b"]}, "attribute_filters[0]"),
        (
            {"attribute_conditions": [pb.AttributeCondition(value="x")]},
            "attribute_conditions[0].key",
        ),
        ({"services": [""]}, "services[0]"),
        ({"page_token": "garbage"}, "page_token"),
        (
            {
                "start_time": timestamp_pb2.Timestamp(seconds=20),
                "end_time": timestamp_pb2.Timestamp(seconds=10),
            },
            "end_time",
        ),
        ({"start_time": timestamp_pb2.Timestamp(seconds=2**63 - 1)}, "start_time"),
        ({"end_time": timestamp_pb2.Timestamp(seconds=-(2**63))}, "end_time"),
        ({"start_time": timestamp_pb2.Timestamp(nanos=-1)}, "start_time"),
        ({"end_time": timestamp_pb2.Timestamp(nanos=10**9)}, "end_time"),
    ],
)
def test_list_rejects_bad_requests(lonely_router, request_fields, field):
    stub, _ = lonely_router

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListLogEntries(pb.ListLogEntriesRequest(**request_fields))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violated_fields(caught.value)


def test_attribute_filter_error_shows_typed_text(lonely_router):
    stub, _ = lonely_router

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListLogEntries(pb.ListLogEntriesRequest(attribute_filters=["a\\x=1"]))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'a\\x=1' has a backslash before 'x'" in caught.value.details()


def test_stats_rejects_short_step(lonely_router):
    stub, _ = lonely_router
    step = duration_pb2.Duration(nanos=500_000_000)

    with pytest.raises(grpc.RpcError) as caught:
        stub.GetLogStats(pb.GetLogStatsRequest(histogram_step=step))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["histogram_step"]


@pytest.mark.parametrize(
    "request_fields",
    [
        {"histogram_step": duration_pb2.Duration(seconds=315_576_000_000)},
        {"start_time": timestamp_pb2.Timestamp(seconds=253_402_300_800)},
        {"end_time": timestamp_pb2.Timestamp(nanos=-5)},
    ],
)
def test_stats_rejects_out_of_range_times(lonely_router, request_fields):
    stub, _ = lonely_router

    with pytest.raises(grpc.RpcError) as caught:
        stub.GetLogStats(pb.GetLogStatsRequest(**request_fields))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == list(request_fields)


def test_cluster_without_nodes_is_unavailable(lonely_router):
    stub, _ = lonely_router

    status = stub.GetClusterStatus(pb.GetClusterStatusRequest())

    assert status.health == pb.HEALTH_UNAVAILABLE
    assert [shard.shard for shard in status.shards] == ["shard-0", "shard-1"]
    assert status.shards[0].leader == "a"
    assert status.shards[0].leader_epoch == 1
    assert [f.node for f in status.shards[0].followers] == ["b"]


def test_query_end_before_start_names_both(lonely_router):
    stub, _ = lonely_router
    request = pb.ListLogEntriesRequest(
        start_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
        end_time=timestamp_pb2.Timestamp(seconds=1_700_000_000),
    )

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListLogEntries(request, timeout=5)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["end_time"]
    assert "2023-11-14T22:13:20Z is before start_time" in caught.value.details()
    assert "2027-01-15T08:00:00Z" in caught.value.details()


def _stats(stub, request: pb.ListLogEntriesRequest):
    """Call GetLogStats with the range and services of a list request."""
    return stub.GetLogStats(
        pb.GetLogStatsRequest(
            start_time=request.start_time if request.HasField("start_time") else None,
            end_time=request.end_time if request.HasField("end_time") else None,
            services=request.services,
        ),
        timeout=5,
    )


def _tail(stub, request: pb.ListLogEntriesRequest):
    """Open a tail with the services of a list request and read its first reply."""
    tail = stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=request.services), timeout=5
    )
    return next(tail)


@pytest.mark.parametrize("call", ["list", "stats"])
def test_query_empty_range_rejected(lonely_router, call):
    stub, _ = lonely_router
    moment = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    request = pb.ListLogEntriesRequest(start_time=moment, end_time=moment)

    with pytest.raises(grpc.RpcError) as caught:
        if call == "list":
            stub.ListLogEntries(request, timeout=5)
        else:
            _stats(stub, request)
    details = caught.value.details()

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["end_time"]
    assert "2023-11-14T22:13:20Z equals start_time" in details
    assert "the range is empty" in details
    assert "send an end_time after start_time" in details


def test_query_inverted_range_past_clamp_rejected(lonely_router):
    # Both times lie past the last time a query reaches, so they are equal
    # once clamped, but the range the caller sent is still inverted.
    stub, _ = lonely_router
    request = pb.ListLogEntriesRequest(
        start_time=timestamp_pb2.Timestamp(seconds=250_000_000_000),
        end_time=timestamp_pb2.Timestamp(seconds=200_000_000_000),
    )

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListLogEntries(request, timeout=5)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["end_time"]
    assert "is before start_time" in caught.value.details()


@pytest.mark.parametrize("call", ["list", "stats", "tail"])
@pytest.mark.parametrize(
    ("service", "shown", "problem"),
    [
        ("a\nb", "'a\\nb'", "contains a control character"),
        ("a\tb", "'a\\tb'", "contains a control character"),
        ("x" * 257, "'xxx", "is 257 bytes long in UTF-8"),
    ],
)
def test_query_invalid_service_rejected(lonely_router, call, service, shown, problem):
    stub, _ = lonely_router
    request = pb.ListLogEntriesRequest(services=["web", service])

    with pytest.raises(grpc.RpcError) as caught:
        if call == "list":
            stub.ListLogEntries(request, timeout=5)
        elif call == "stats":
            _stats(stub, request)
        else:
            _tail(stub, request)
    details = caught.value.details()

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["services[1]"]
    assert shown in details
    assert problem in details
    assert "ingest rejects" in details


def test_retention_defaults_to_setting(lonely_router):
    stub, config = lonely_router

    policy = stub.GetRetentionPolicy(
        pb.GetRetentionPolicyRequest(name="retentionPolicy")
    ).retention_policy

    assert policy.name == "retentionPolicy"
    assert policy.default_retention.seconds == config.log_retention_hours * HOUR
    assert policy.etag


def test_retention_unknown_name_is_not_found(lonely_router):
    stub, _ = lonely_router

    with pytest.raises(grpc.RpcError) as caught:
        stub.GetRetentionPolicy(pb.GetRetentionPolicyRequest(name="other"))

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_retention_update_with_mask_and_etag(lonely_router):
    stub, _ = lonely_router
    current = stub.GetRetentionPolicy(
        pb.GetRetentionPolicyRequest(name="retentionPolicy")
    ).retention_policy
    update = pb.RetentionPolicy(name="retentionPolicy", etag=current.etag)
    update.service_retentions["debugger"].seconds = 2 * HOUR

    updated = stub.UpdateRetentionPolicy(
        pb.UpdateRetentionPolicyRequest(
            retention_policy=update,
            update_mask=field_mask_pb2.FieldMask(paths=["service_retentions"]),
        )
    ).retention_policy

    assert updated.default_retention == current.default_retention
    assert updated.service_retentions["debugger"].seconds == 2 * HOUR
    assert updated.etag != current.etag
    assert updated.update_time.seconds > 0
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(retention_policy=update)
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED


def test_retention_update_rejects_short_retention(lonely_router):
    stub, _ = lonely_router
    update = pb.RetentionPolicy(
        name="retentionPolicy", default_retention=duration_pb2.Duration(seconds=60)
    )

    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(retention_policy=update)
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["retention_policy.default_retention"]


@pytest.mark.parametrize(
    ("seconds", "nanos", "problem"),
    [
        (-3600, 0, "-3600s is negative; a retention is a positive duration"),
        (0, -1, "-0.000000001s is negative"),
        (0, 0, "0s is zero"),
        (60, 0, "60s is shorter than the minimum of 1 hour"),
        (3600, -1, "seconds 3600 with nanos -1 is not a valid Duration"),
        (3600, 1_000_000_000, "with nanos 1000000000 is not a valid Duration"),
    ],
)
def test_retention_update_invalid_duration_names_fix(
    lonely_router, seconds, nanos, problem
):
    stub, _ = lonely_router
    retention = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    update = pb.RetentionPolicy(name="retentionPolicy", default_retention=retention)

    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(retention_policy=update)
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in caught.value.details()
    assert "3600s or more" in caught.value.details()
    assert violated_fields(caught.value) == ["retention_policy.default_retention"]


def test_retention_update_rejects_thousand_years(lonely_router):
    # Entries as old as such a retention admits, such as year 1, do not fit
    # the nanosecond timestamps of the store.
    stub, _ = lonely_router
    update = pb.RetentionPolicy(name="retentionPolicy")
    update.service_retentions["archive"].seconds = 1000 * 8766 * HOUR

    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(
                retention_policy=update,
                update_mask=field_mask_pb2.FieldMask(paths=["service_retentions"]),
            )
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum of 100 years" in caught.value.details()
    assert violated_fields(caught.value) == [
        "retention_policy.service_retentions['archive']"
    ]


@pytest.mark.parametrize("service", ["a\nb", "s" * 257])
def test_retention_update_rejects_service_ingest_refuses(lonely_router, service):
    stub, _ = lonely_router
    update = pb.RetentionPolicy(name="retentionPolicy")
    update.service_retentions[service].seconds = 2 * HOUR

    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(
                retention_policy=update,
                update_mask=field_mask_pb2.FieldMask(paths=["service_retentions"]),
            )
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a service name that ingest accepts" in caught.value.details()
    # Error texts shorten a long name, so only the start of the path is known.
    (field,) = violated_fields(caught.value)
    assert field.startswith(
        f"retention_policy.service_retentions[{service[:40]!r}"[:-1]
    )


def test_retention_update_rejects_too_many_services(lonely_router):
    stub, _ = lonely_router
    update = pb.RetentionPolicy(name="retentionPolicy")
    for number in range(10_001):
        update.service_retentions[f"svc-{number}"].seconds = 2 * HOUR

    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(
                retention_policy=update,
                update_mask=field_mask_pb2.FieldMask(paths=["service_retentions"]),
            )
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has 10001 services" in caught.value.details()


def test_retention_update_rejects_unknown_mask_path(lonely_router):
    stub, _ = lonely_router
    update = pb.RetentionPolicy(name="retentionPolicy")

    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(
                retention_policy=update,
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            )
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["update_mask.paths[0]"]


def get_policy(stub) -> pb.RetentionPolicy:
    return stub.GetRetentionPolicy(
        pb.GetRetentionPolicyRequest(name="retentionPolicy")
    ).retention_policy


@pytest.mark.parametrize("mask", [[], ["default_retention"], ["*"]])
def test_retention_noop_update_keeps_policy(lonely_router, mask):
    stub, config = lonely_router
    current = get_policy(stub)
    update = pb.RetentionPolicy(
        name="retentionPolicy",
        default_retention=current.default_retention,
        etag=current.etag,
    )

    returned = stub.UpdateRetentionPolicy(
        pb.UpdateRetentionPolicyRequest(
            retention_policy=update,
            update_mask=field_mask_pb2.FieldMask(paths=mask),
        )
    ).retention_policy

    assert returned == current
    assert get_policy(stub) == current
    # The router writes the file at the first change of the policy.
    assert not (router_data_dir(config) / "retention.json").exists()


def test_retention_noop_service_update_keeps_file(lonely_router):
    stub, config = lonely_router
    update = pb.RetentionPolicy(name="retentionPolicy")
    update.service_retentions["billing"].seconds = 90 * 24 * HOUR
    mask = field_mask_pb2.FieldMask(paths=["service_retentions"])
    changed = stub.UpdateRetentionPolicy(
        pb.UpdateRetentionPolicyRequest(retention_policy=update, update_mask=mask)
    ).retention_policy
    path = router_data_dir(config) / "retention.json"
    before = path.stat()
    saved = path.read_bytes()

    returned = stub.UpdateRetentionPolicy(
        pb.UpdateRetentionPolicyRequest(retention_policy=update, update_mask=mask)
    ).retention_policy

    assert returned == changed
    assert returned.update_time == changed.update_time
    assert returned.etag == changed.etag
    assert path.read_bytes() == saved
    assert path.stat().st_mtime_ns == before.st_mtime_ns


def test_retention_noop_update_checks_etag(lonely_router):
    stub, _ = lonely_router
    current = get_policy(stub)
    update = pb.RetentionPolicy(
        name="retentionPolicy",
        default_retention=current.default_retention,
        etag='"0000000000000000"',
    )

    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(retention_policy=update)
        )

    assert caught.value.code() == grpc.StatusCode.ABORTED


def test_retention_unknown_mask_path_names_valid_paths(lonely_router):
    stub, _ = lonely_router
    current = get_policy(stub)
    update = pb.RetentionPolicy(
        name="retentionPolicy", default_retention=current.default_retention
    )
    mask = field_mask_pb2.FieldMask(paths=["default_retention", "retention_days"])

    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(retention_policy=update, update_mask=mask)
        )

    details = caught.value.details()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["update_mask.paths[1]"]
    assert "'retention_days' cannot be updated" in details
    assert "default_retention, service_retentions or *" in details


def test_retention_etag_quoted_bare_accepted(lonely_router):
    stub, _ = lonely_router
    current = stub.GetRetentionPolicy(
        pb.GetRetentionPolicyRequest(name="retentionPolicy")
    ).retention_policy
    # The bare form is the etag as versions before the quotes sent it.
    update = pb.RetentionPolicy(name="retentionPolicy", etag=current.etag.strip('"'))
    update.service_retentions["bare-etag"].seconds = 3 * HOUR

    updated = stub.UpdateRetentionPolicy(
        pb.UpdateRetentionPolicyRequest(
            retention_policy=update,
            update_mask=field_mask_pb2.FieldMask(paths=["service_retentions"]),
        )
    ).retention_policy

    assert current.etag.startswith('"')
    assert current.etag.endswith('"')
    assert updated.service_retentions["bare-etag"].seconds == 3 * HOUR
