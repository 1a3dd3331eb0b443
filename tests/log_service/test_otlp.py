"""Tests of the OTLP log conversion in log_service.otlp."""

from __future__ import annotations

import json
import logging
import time
import warnings

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from log_service import otlp
from log_service.model import DEBUG, ERROR, FATAL, INFO, WARN, Limits
from splitlog.logs.v1 import logs_service_pb2 as splitlog_logs_pb2

NOW_NS = 1_796_403_900_590_180_708  # 2026-12-04T17:05:00.590180708Z
DAY_NS = 24 * 3600 * 10**9
LIMITS = Limits()

AnyValue = common_pb2.AnyValue
KeyValue = common_pb2.KeyValue
LogRecord = logs_pb2.LogRecord


def no_cutoff(service: str) -> int:
    return -(2**63)


def text(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def pairs(**values: AnyValue) -> list[KeyValue]:
    return [KeyValue(key=key.replace("_", "."), value=v) for key, v in values.items()]


def request(
    *records: LogRecord,
    resource: list[KeyValue] | None = None,
    scope_name: str = "",
) -> logs_service_pb2.ExportLogsServiceRequest:
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(
                    attributes=resource
                    if resource is not None
                    else pairs(service_name=text("expenses"))
                ),
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        scope=common_pb2.InstrumentationScope(name=scope_name),
                        log_records=list(records),
                    )
                ],
            )
        ]
    )


def convert(export_request, limits=LIMITS, retention_cutoff=no_cutoff):
    return otlp.export_request_to_batch(
        export_request,
        now_ns=NOW_NS,
        limits=limits,
        retention_cutoff=retention_cutoff,
    )


def stored_attributes(batch, position: int = 0) -> dict[str, str]:
    attributes = batch.columns.attributes[position]
    return json.loads(attributes) if attributes else {}


# Resource and scope.


def test_service_and_host_from_resource():
    batch = convert(
        request(
            LogRecord(body=text("hi")),
            resource=pairs(
                service_name=text("expenses"),
                host_name=text("pod-3"),
                deployment_environment=text("prod"),
            ),
            scope_name="expense_service.servicer",
        )
    )
    assert list(batch.columns.services) == ["expenses"]
    assert list(batch.columns.hosts) == ["pod-3"]
    assert stored_attributes(batch) == {
        "deployment.environment": "prod",
        "scope.name": "expense_service.servicer",
    }


@pytest.mark.parametrize("resource", [[], pairs(service_name=text(""))])
def test_missing_service_name_is_unknown_service(resource):
    batch = convert(request(LogRecord(body=text("hi")), resource=resource))
    assert list(batch.columns.services) == ["unknown_service"]


def test_record_attribute_replaces_resource_attribute():
    batch = convert(
        request(
            LogRecord(attributes=pairs(region=text("eu-west"))),
            resource=pairs(service_name=text("api"), region=text("eu")),
        )
    )
    assert stored_attributes(batch) == {"region": "eu-west"}


def test_event_name_and_dropped_count():
    batch = convert(
        request(
            LogRecord(
                event_name="user.login",
                dropped_attributes_count=4,
                attributes=pairs(user=text("u1")),
            )
        )
    )
    assert stored_attributes(batch) == {"event.name": "user.login", "user": "u1"}
    assert list(batch.columns.dropped_attributes_counts) == [4]


# Body and attribute values.


def test_string_body_as_is():
    batch = convert(request(LogRecord(body=text("grüße\n"))))
    assert list(batch.columns.messages) == ["grüße\n"]


def test_valid_bytes_body_decoded():
    batch = convert(request(LogRecord(body=AnyValue(bytes_value="ok ü".encode()))))
    assert list(batch.columns.messages) == ["ok ü"]
    assert stored_attributes(batch) == {}


def test_invalid_bytes_body_repaired_and_flagged():
    batch = convert(request(LogRecord(body=AnyValue(bytes_value=b"ok \xff end"))))
    assert list(batch.columns.messages) == ["ok \ufffd end"]
    assert stored_attributes(batch) == {"utf8_repaired": "true"}


def test_structured_body_as_compact_json():
    body = AnyValue(
        kvlist_value=common_pb2.KeyValueList(
            values=pairs(
                user=text("ü"),
                count=AnyValue(int_value=3),
                ok=AnyValue(bool_value=True),
                ratio=AnyValue(double_value=0.5),
                tags=AnyValue(
                    array_value=common_pb2.ArrayValue(
                        values=[text("a"), AnyValue(bytes_value=b"\x00\xff")]
                    )
                ),
            )
        )
    )
    batch = convert(request(LogRecord(body=body)))
    assert list(batch.columns.messages) == [
        '{"user":"ü","count":3,"ok":true,"ratio":0.5,"tags":["a","AP8="]}'
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AnyValue(bool_value=False), "false"),
        (AnyValue(int_value=-42), "-42"),
        (AnyValue(double_value=1.25), "1.25"),
        (AnyValue(double_value=float("nan")), '"nan"'),
        (AnyValue(), ""),
        (
            AnyValue(array_value=common_pb2.ArrayValue(values=[text("x")])),
            '["x"]',
        ),
    ],
)
def test_attribute_values_as_strings(value, expected):
    batch = convert(request(LogRecord(attributes=[KeyValue(key="k", value=value)])))
    assert stored_attributes(batch) == {"k": expected}


def test_invalid_bytes_attribute_repaired_and_flagged():
    batch = convert(
        request(
            LogRecord(
                attributes=[KeyValue(key="k", value=AnyValue(bytes_value=b"\xc3"))]
            )
        )
    )
    assert stored_attributes(batch) == {"k": "\ufffd", "utf8_repaired": "true"}


# Severity.


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1, DEBUG),
        (8, DEBUG),
        (9, INFO),
        (12, INFO),
        (13, WARN),
        (16, WARN),
        (17, ERROR),
        (20, ERROR),
        (21, FATAL),
        (24, FATAL),
    ],
)
def test_severity_number_ranges(number, expected):
    batch = convert(request(LogRecord(severity_number=number, severity_text="info")))
    assert list(batch.columns.severities) == [expected]


@pytest.mark.parametrize("number", [25, 99, -3])
def test_out_of_range_severity_number_kept(number):
    batch = convert(request(LogRecord(severity_number=number, body=text("ERROR x"))))

    assert list(batch.columns.severities) == [ERROR]
    assert stored_attributes(batch) == {"severity_number": str(number)}


@pytest.mark.parametrize(
    ("number", "severity_text", "kept"),
    [
        (13, "notice", {"severity_text": "notice"}),
        (13, "AUDIT", {"severity_text": "AUDIT"}),
        (9, "INFO2", {"severity_text": "INFO2"}),
        (13, "WARNING", {}),
        (13, " warn ", {}),
        (21, "CRITICAL", {}),
        (13, "", {}),
    ],
)
def test_severity_text_beside_number(number, severity_text, kept):
    batch = convert(
        request(LogRecord(severity_number=number, severity_text=severity_text))
    )

    assert stored_attributes(batch) == kept


def test_severity_text_beside_number_replaces_attribute():
    record = LogRecord(
        severity_number=17,
        severity_text="AUDIT",
        attributes=[KeyValue(key="severity_text", value=text("writer's"))],
    )

    batch = convert(request(record))

    assert list(batch.columns.severities) == [ERROR]
    assert stored_attributes(batch) == {"severity_text": "AUDIT"}
    assert list(batch.columns.dropped_attributes_counts) == [1]


def test_in_range_severity_number_not_kept():
    batch = convert(request(LogRecord(severity_number=13)))

    assert stored_attributes(batch) == {}


def test_severity_text_used_without_number():
    batch = convert(request(LogRecord(severity_text="crit")))
    assert list(batch.columns.severities) == [FATAL]


def test_unknown_severity_text_kept_as_attribute():
    batch = convert(request(LogRecord(severity_text="loud")))
    assert list(batch.columns.severities) == [INFO]
    assert stored_attributes(batch) == {"severity_text": "loud"}


def test_repeated_attribute_keys_counted_as_dropped():
    resource = [
        KeyValue(key="service.name", value=text("expenses")),
        KeyValue(key="zone", value=text("a")),
        KeyValue(key="zone", value=text("b")),
    ]
    record = LogRecord(
        attributes=[
            KeyValue(key="k", value=text("1")),
            KeyValue(key="k", value=text("2")),
        ],
        dropped_attributes_count=3,
    )
    batch = convert(request(record, resource=resource))
    assert stored_attributes(batch) == {"k": "2", "zone": "b"}
    assert list(batch.columns.dropped_attributes_counts) == [5]


def test_event_name_replacing_attribute_counted():
    records = [
        LogRecord(event_name="login", attributes=pairs(event_name=text("other"))),
        LogRecord(event_name="login", attributes=pairs(event_name=text("login"))),
    ]
    batch = convert(request(*records))
    assert [json.loads(a) for a in batch.columns.attributes] == [
        {"event.name": "login"},
        {"event.name": "login"},
    ]
    assert list(batch.columns.dropped_attributes_counts) == [1, 0]


def test_severity_number_replacing_attribute_counted():
    record = LogRecord(
        severity_number=99,
        attributes=[KeyValue(key="severity_number", value=text("custom"))],
    )
    batch = convert(request(record))
    assert stored_attributes(batch) == {"severity_number": "99"}
    assert list(batch.columns.dropped_attributes_counts) == [1]


def test_severity_guessed_from_body_without_number_or_text():
    batch = convert(request(LogRecord(body=text("WARNING low disk"))))
    assert list(batch.columns.severities) == [WARN]


# Times and trace context.


def test_times_kept_exactly():
    batch = convert(
        request(
            LogRecord(time_unix_nano=NOW_NS - 7, observed_time_unix_nano=NOW_NS - 3)
        )
    )
    assert list(batch.columns.timestamps) == [NOW_NS - 7]
    assert list(batch.columns.observed_timestamps) == [NOW_NS - 3]


def test_zero_time_takes_observed_then_now():
    batch = convert(request(LogRecord(observed_time_unix_nano=NOW_NS - 3), LogRecord()))
    assert list(batch.columns.timestamps) == [NOW_NS - 3, NOW_NS]
    assert list(batch.columns.observed_timestamps) == [NOW_NS - 3, NOW_NS]


def test_trace_context_as_lower_hex():
    trace_id = bytes.fromhex("4BF92F3577B34DA6A3CE929D0E0E4736")
    span_id = bytes.fromhex("00F067AA0BA902B7")
    batch = convert(request(LogRecord(trace_id=trace_id, span_id=span_id)))
    assert list(batch.columns.trace_ids) == ["4bf92f3577b34da6a3ce929d0e0e4736"]
    assert list(batch.columns.span_ids) == ["00f067aa0ba902b7"]


def test_all_zero_trace_context_is_empty():
    batch = convert(request(LogRecord(trace_id=bytes(16), span_id=bytes(8))))
    assert list(batch.columns.trace_ids) == [""]
    assert list(batch.columns.span_ids) == [""]


def test_wrong_length_trace_id_rejected():
    batch = convert(request(LogRecord(trace_id=b"\x01\x02")))
    rejection = batch.rejections[0]
    assert rejection.reason == splitlog_logs_pb2.REJECTION_REASON_INVALID_FIELD
    assert rejection.field == "trace_id"
    assert "'0102'" in rejection.description


# Indexes and the response.


def two_resources_request(bad_time: int) -> logs_service_pb2.ExportLogsServiceRequest:
    """Build 5 records in 2 resources and 3 scopes; records 1 and 4 are too old."""
    good = LogRecord(time_unix_nano=NOW_NS - 1, body=text("ok"))
    old = LogRecord(time_unix_nano=bad_time, body=text("old"))
    export_request = request(good, old, resource=pairs(service_name=text("a")))
    export_request.resource_logs[0].scope_logs.append(
        logs_pb2.ScopeLogs(log_records=[good])
    )
    export_request.resource_logs.append(
        logs_pb2.ResourceLogs(
            resource=resource_pb2.Resource(attributes=pairs(service_name=text("b"))),
            scope_logs=[logs_pb2.ScopeLogs(log_records=[good, old])],
        )
    )
    return export_request


def test_indexes_count_across_resources_and_scopes():
    export_request = two_resources_request(bad_time=NOW_NS - 30 * DAY_NS)
    assert otlp.count_log_records(export_request) == 5
    batch = convert(export_request, retention_cutoff=lambda service: NOW_NS - DAY_NS)
    assert batch.indexes == [0, 2, 3]
    assert list(batch.columns.services) == ["a", "a", "b"]
    assert [r.index for r in batch.rejections] == [1, 4]
    for rejection in batch.rejections:
        assert rejection.field == "time_unix_nano"
        assert rejection.reason == splitlog_logs_pb2.REJECTION_REASON_TIMESTAMP_TOO_OLD


def test_response_without_rejections_has_no_partial_success():
    batch = convert(request(LogRecord(body=text("ok"))))
    response = otlp.export_response(batch)
    assert not response.HasField("partial_success")


def test_response_counts_and_describes_rejections():
    export_request = two_resources_request(bad_time=NOW_NS + DAY_NS)
    batch = convert(export_request)
    response = otlp.export_response(batch)
    partial = response.partial_success
    assert partial.rejected_log_records == 2
    assert partial.error_message.startswith("rejected 2 of 5 log records: record 1:")
    assert "record 4:" in partial.error_message
    assert "time_unix_nano" in partial.error_message


def test_response_lists_only_first_rejections():
    records = [LogRecord(trace_id=b"\x01")] * 5
    response = otlp.export_response(convert(request(*records)))
    message = response.partial_success.error_message
    assert response.partial_success.rejected_log_records == 5
    assert "record 2:" in message
    assert "record 3:" not in message
    assert message.endswith("; and 2 more")


# A request built by the OpenTelemetry SDK from Python logging.


def test_sdk_request_from_python_logging():
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        SimpleLogRecordProcessor,
    )
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(
        resource=Resource.create({"service.name": "expenses", "host.name": "pod-1"})
    )
    exporter = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("splitlog.test_otlp")
    logger.propagate = False
    with warnings.catch_warnings():
        # Some SDK versions warn that LoggingHandler moved; the test does not
        # depend on where it lives.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        logger.warning("disk %s", "full", extra={"user": "u1"})
    finally:
        logger.removeHandler(handler)
        provider.shutdown()

    export_request = encode_logs(exporter.get_finished_logs())
    batch = otlp.export_request_to_batch(
        export_request,
        now_ns=time.time_ns(),
        limits=LIMITS,
        retention_cutoff=no_cutoff,
    )
    assert list(batch.rejections) == []
    assert list(batch.columns.services) == ["expenses"]
    assert list(batch.columns.hosts) == ["pod-1"]
    assert list(batch.columns.messages) == ["disk full"]
    assert list(batch.columns.severities) == [WARN]
    attributes = stored_attributes(batch)
    assert attributes["user"] == "u1"
    assert attributes["scope.name"] == "splitlog.test_otlp"
    assert attributes["telemetry.sdk.language"] == "python"
    assert "service.name" not in attributes
