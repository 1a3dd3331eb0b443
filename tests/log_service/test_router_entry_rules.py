"""Stats filters and entry rules, checked through a real router and real nodes.

A router with two shards of one node each listens on 127.0.0.1. The tests
write entries over gRPC and OTLP and read them back with ListLogEntries and
GetLogStats.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from splitlog.logs.v1 import logs_service_pb2 as pb
from tests.log_service.router_support import violated_fields
from tests.log_service.test_router_cluster import Cluster, list_all, ts

SECOND = 10**9
MINUTE = 60 * SECOND
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture
def cluster(base_config):
    config = base_config.replace(
        log_shards=2, log_replicas=1, log_node_port=0, log_fsync=False, workers=4
    )
    running = Cluster(config)
    yield running
    running.close()


def _attributes(entry: pb.LogEntry) -> dict[str, str]:
    return dict(entry.attributes)


# GetLogStats takes the ListLogEntries filters.


def _write_mixed_entries(stub, base: int) -> None:
    """Write entries of two services over 20 minutes that differ in every filter."""
    severities = [pb.SEVERITY_DEBUG, pb.SEVERITY_INFO, pb.SEVERITY_WARN]
    severities += [pb.SEVERITY_ERROR, pb.SEVERITY_FATAL]
    entries = []
    for number in range(200):
        entries.append(
            pb.LogEntry(
                service=("billing", "search")[number % 2],
                severity=severities[number % 5],
                message=("Disk full on /var" if number % 3 else "request served"),
                attributes={"zone": ("eu", "us")[number % 7 == 0], "n": str(number)},
                timestamp=ts(base + number * 6 * SECOND + number),
            )
        )
    response = stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))
    assert response.rejected_count == 0


def test_stats_buckets_add_up_to_the_filtered_list(cluster):
    base = (time.time_ns() - 3600 * SECOND) // MINUTE * MINUTE
    _write_mixed_entries(cluster.stub, base)
    # Neither end lies on a one-minute bucket boundary.
    start, end = base + 95 * SECOND + 7, base + 1000 * SECOND + 3
    filters = {
        "keyword": "DISK",
        "severities": [pb.SEVERITY_WARN, pb.SEVERITY_ERROR],
        "attribute_filters": ["zone=eu"],
        "start_time": ts(start),
        "end_time": ts(end),
    }
    listed = list_all(cluster.stub, page_size=1000, **filters)

    request = pb.GetLogStatsRequest(**filters)
    request.histogram_step.FromSeconds(60)
    stats = cluster.stub.GetLogStats(request)

    assert 0 < len(listed) < 200
    assert stats.total_count == len(listed)
    assert sum(bucket.count for bucket in stats.histogram) == len(listed)
    assert {c.severity: c.count for c in stats.severity_counts} == Counter(
        entry.severity for entry in listed
    )
    assert {c.service: c.count for c in stats.service_counts} == Counter(
        entry.service for entry in listed
    )
    per_bucket = Counter(
        (entry.timestamp.ToNanoseconds() - base) // MINUTE for entry in listed
    )
    first_bucket = (start - base) // MINUTE
    assert [bucket.count for bucket in stats.histogram] == [
        per_bucket[first_bucket + index] for index in range(len(stats.histogram))
    ]
    assert stats.histogram[0].start_time.ToNanoseconds() == start


def test_stats_min_severity_matches_list(cluster):
    base = (time.time_ns() - 3600 * SECOND) // MINUTE * MINUTE
    _write_mixed_entries(cluster.stub, base)
    filters = {
        "min_severity": pb.SEVERITY_ERROR,
        "services": ["billing"],
        "keyword": "served",
        "start_time": ts(base),
    }

    listed = list_all(cluster.stub, page_size=1000, **filters)
    stats = cluster.stub.GetLogStats(pb.GetLogStatsRequest(**filters))

    assert listed
    assert stats.total_count == len(listed)
    assert sum(bucket.count for bucket in stats.histogram) == len(listed)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (
            {"min_severity": pb.SEVERITY_WARN, "severities": [pb.SEVERITY_INFO]},
            "severities",
        ),
        ({"severities": [7]}, "severities[0]"),
        ({"attribute_filters": ["zone"]}, "attribute_filters[0]"),
    ],
)
def test_stats_rejects_bad_filters(cluster, fields, field):
    with pytest.raises(grpc.RpcError) as failure:
        cluster.stub.GetLogStats(pb.GetLogStatsRequest(**fields))

    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violated_fields(failure.value)


# OTLP severity numbers and timestamps.


def _export(
    cluster, *records: logs_pb2.LogRecord
) -> otlp_pb2.ExportLogsServiceResponse:
    request = otlp_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(
                    attributes=[
                        common_pb2.KeyValue(
                            key="service.name",
                            value=common_pb2.AnyValue(string_value="otel-app"),
                        )
                    ]
                ),
                scope_logs=[logs_pb2.ScopeLogs(log_records=list(records))],
            )
        ]
    )
    return otlp_grpc.LogsServiceStub(cluster.channel).Export(request, timeout=10)


def _text(value: str) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(string_value=value)


def test_otlp_keeps_an_out_of_range_severity_number(cluster):
    response = _export(
        cluster,
        logs_pb2.LogRecord(severity_number=99, body=_text("odd number")),
        logs_pb2.LogRecord(
            severity_number=99, severity_text="warning", body=_text("with a word")
        ),
    )
    stored = {
        entry.message: entry for entry in list_all(cluster.stub, services=["otel-app"])
    }

    assert not response.HasField("partial_success")
    assert stored["odd number"].severity == pb.SEVERITY_INFO
    assert _attributes(stored["odd number"])["severity_number"] == "99"
    assert stored["with a word"].severity == pb.SEVERITY_WARN
    assert _attributes(stored["with a word"])["severity_number"] == "99"


def test_otlp_severity_text_kept_beside_number(cluster):
    response = _export(
        cluster,
        logs_pb2.LogRecord(
            severity_number=13, severity_text="notice", body=_text("other word")
        ),
        logs_pb2.LogRecord(
            severity_number=13, severity_text="AUDIT", body=_text("custom level")
        ),
        logs_pb2.LogRecord(
            severity_number=13, severity_text="WARNING", body=_text("same severity")
        ),
        logs_pb2.LogRecord(severity_number=17, body=_text("no text")),
        logs_pb2.LogRecord(
            severity_number=17,
            severity_text="X" * 9000,
            body=_text("long text"),
        ),
    )
    stored = {
        entry.message: entry for entry in list_all(cluster.stub, services=["otel-app"])
    }

    assert not response.HasField("partial_success")
    assert stored["other word"].severity == pb.SEVERITY_WARN
    assert _attributes(stored["other word"]) == {"severity_text": "notice"}
    assert stored["custom level"].severity == pb.SEVERITY_WARN
    assert _attributes(stored["custom level"]) == {"severity_text": "AUDIT"}
    assert stored["same severity"].severity == pb.SEVERITY_WARN
    assert _attributes(stored["same severity"]) == {}
    assert _attributes(stored["no text"]) == {}
    long_text = stored["long text"]
    assert long_text.severity == pb.SEVERITY_ERROR
    assert long_text.attributes["severity_text"] == "X" * 8192
    assert long_text.truncated


def test_entry_severity_text_kept_beside_severity(cluster):
    entries = [
        pb.LogEntry(
            service="rules",
            severity=pb.SEVERITY_WARN,
            severity_text="notice",
            message="other word",
        ),
        pb.LogEntry(
            service="rules",
            severity=pb.SEVERITY_ERROR,
            severity_text="AUDIT",
            message="custom level",
            attributes={"severity_text": "writer's", "zone": "eu"},
        ),
        pb.LogEntry(
            service="rules",
            severity=pb.SEVERITY_WARN,
            severity_text=" Warning ",
            message="same severity",
        ),
        pb.LogEntry(
            service="rules", severity_text="crit", message="text sets severity"
        ),
    ]

    response = cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))
    stored = {
        entry.message: entry for entry in list_all(cluster.stub, services=["rules"])
    }

    assert response.rejected_count == 0
    assert stored["other word"].severity == pb.SEVERITY_WARN
    assert _attributes(stored["other word"]) == {"severity_text": "notice"}
    custom = stored["custom level"]
    assert custom.severity == pb.SEVERITY_ERROR
    assert _attributes(custom) == {"severity_text": "AUDIT", "zone": "eu"}
    assert custom.dropped_attributes_count == 1
    assert _attributes(stored["same severity"]) == {}
    assert stored["text sets severity"].severity == pb.SEVERITY_FATAL
    assert _attributes(stored["text sets severity"]) == {}


def test_otlp_record_with_only_observed_time_takes_it(cluster):
    observed = time.time_ns() - 5 * MINUTE + 123
    _export(
        cluster,
        logs_pb2.LogRecord(observed_time_unix_nano=observed, body=_text("observed")),
    )

    (stored,) = list_all(cluster.stub, services=["otel-app"])

    assert stored.timestamp.ToNanoseconds() == observed
    assert stored.observed_timestamp.ToNanoseconds() == observed


def test_otlp_old_observed_time_rejected(cluster):
    observed = time.time_ns() - 30 * 24 * 3600 * SECOND

    response = _export(
        cluster,
        logs_pb2.LogRecord(observed_time_unix_nano=observed, body=_text("old")),
    )
    message = response.partial_success.error_message

    assert response.partial_success.rejected_log_records == 1
    assert "observed_time_unix_nano (used because time_unix_nano is unset)" in message
    assert RFC3339.search(message)


# Rejection descriptions.


def test_rejections_print_rfc3339_times(cluster):
    now = time.time_ns()
    response = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[
                pb.LogEntry(service="s", timestamp=ts(now - 30 * 24 * 3600 * SECOND)),
                pb.LogEntry(service="s", timestamp=ts(now + 3600 * SECOND)),
            ]
        )
    )
    old, future = response.rejected_entries

    assert old.reason == pb.REJECTION_REASON_TIMESTAMP_TOO_OLD
    assert old.field == "timestamp"
    assert re.search(
        rf"timestamp {RFC3339.pattern} \(\d+ ns\) is 30\.0 days old, before "
        rf"{RFC3339.pattern}, the oldest time",
        old.description,
    ), old.description
    assert future.reason == pb.REJECTION_REASON_TIMESTAMP_IN_FUTURE
    assert re.search(
        rf"timestamp {RFC3339.pattern} \(\d+ ns\) is 3600 s ahead of the server "
        rf"clock \({RFC3339.pattern}\)",
        future.description,
    ), future.description


def test_epoch_timestamp_rejected_not_unset(cluster):
    epoch = pb.LogEntry(service="epoch", message="epoch")
    epoch.timestamp.SetInParent()
    unset = pb.LogEntry(service="epoch", message="unset")

    response = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[epoch, unset])
    )
    stored = list_all(cluster.stub, services=["epoch"])

    assert epoch.HasField("timestamp")
    assert response.accepted_count == 1
    assert [r.index for r in response.rejected_entries] == [0]
    assert response.rejected_entries[0].reason == pb.REJECTION_REASON_TIMESTAMP_TOO_OLD
    assert response.rejected_entries[0].field == "timestamp"
    assert "1970-01-01T00:00:00Z" in response.rejected_entries[0].description
    assert [entry.message for entry in stored] == ["unset"]


def test_observed_time_named_in_rejection(cluster):
    old = ts(time.time_ns() - 30 * 24 * 3600 * SECOND)

    with pytest.raises(grpc.RpcError) as failure:
        cluster.stub.WriteLogEntry(
            pb.WriteLogEntryRequest(
                entry=pb.LogEntry(service="s", observed_timestamp=old)
            )
        )

    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(failure.value) == ["entry.observed_timestamp"]
    assert old.ToJsonString() in failure.value.details()


# Attribute keys.


def test_empty_attribute_key_rejects_only_that_entry(cluster):
    response = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[
                pb.LogEntry(service="keys", message="kept", attributes={"a": "1"}),
                pb.LogEntry(service="keys", message="nameless", attributes={"": "v"}),
                pb.LogEntry(
                    service="keys",
                    message="long nameless",
                    attributes={"": "v", "b": "x" * 10_000},
                ),
            ]
        )
    )
    stored = list_all(cluster.stub, services=["keys"])

    assert response.accepted_count == 1
    assert [(r.index, r.reason, r.field) for r in response.rejected_entries] == [
        (1, pb.REJECTION_REASON_INVALID_FIELD, "attributes"),
        (2, pb.REJECTION_REASON_INVALID_FIELD, "attributes"),
    ]
    assert "empty key" in response.rejected_entries[0].description
    assert [entry.message for entry in stored] == ["kept"]


def test_otlp_empty_attribute_key_rejects_the_record(cluster):
    record = logs_pb2.LogRecord(
        body=_text("nameless"),
        attributes=[common_pb2.KeyValue(key="", value=_text("v"))],
    )

    response = _export(cluster, record, logs_pb2.LogRecord(body=_text("fine")))

    assert response.partial_success.rejected_log_records == 1
    assert "record 0: attributes has an empty key" in (
        response.partial_success.error_message
    )
    assert [e.message for e in list_all(cluster.stub, services=["otel-app"])] == [
        "fine"
    ]


def test_all_zero_trace_context_stored_as_absent(cluster):
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[
                pb.LogEntry(
                    service="zero-ids",
                    message="zeros",
                    trace_id="0" * 32,
                    span_id="0" * 16,
                ),
                pb.LogEntry(
                    service="zero-ids",
                    message="real",
                    trace_id=trace_id.upper(),
                    span_id=span_id,
                ),
            ]
        )
    )
    cluster.stub.WriteLogEntry(
        pb.WriteLogEntryRequest(
            entry=pb.LogEntry(service="zero-ids", message="one zero", trace_id="0" * 32)
        )
    )

    stored = {
        entry.message: entry for entry in list_all(cluster.stub, services=["zero-ids"])
    }

    assert (stored["zeros"].trace_id, stored["zeros"].span_id) == ("", "")
    assert stored["one zero"].trace_id == ""
    assert (stored["real"].trace_id, stored["real"].span_id) == (trace_id, span_id)


def test_otlp_all_zero_trace_context_stored_as_absent(cluster):
    response = _export(
        cluster,
        logs_pb2.LogRecord(
            body=_text("zero ids"), trace_id=bytes(16), span_id=bytes(8)
        ),
        logs_pb2.LogRecord(
            body=_text("zero span"), trace_id=b"\x01" * 16, span_id=bytes(8)
        ),
    )
    stored = {
        entry.message: entry for entry in list_all(cluster.stub, services=["otel-app"])
    }

    assert not response.HasField("partial_success")
    assert (stored["zero ids"].trace_id, stored["zero ids"].span_id) == ("", "")
    assert stored["zero span"].trace_id == "01" * 16
    assert stored["zero span"].span_id == ""
