"""OTLP/HTTP log export at `POST /v1/logs`: a real gateway and log cluster.

Exports go in as binary protobuf and as OTLP's JSON, plain and gzipped, and
are read back from the router. Bad bodies, unsupported media types and
encodings, gzip bombs, large exports, an unreachable router and the rate
limit get the OTLP error replies. The last test exports through the
OpenTelemetry SDK's own HTTP exporter.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid

import httpx
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_pb
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2 as otlp_logs_pb
from opentelemetry.proto.resource.v1 import resource_pb2

from gateway.app import build
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog_runtime import config as config_module
from tests.cli.test_logs_cli import LogsGateway
from tests.log_service.test_router_cluster import list_all
from tests.ports import closed_address

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# A small message limit keeps the bodies of the size tests small.
MAX_MESSAGE_BYTES = 1024 * 1024
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
DAY_NS = 24 * 3600 * 10**9


@pytest.fixture(scope="module")
def live(loop_thread, tmp_path_factory):
    base = config_module.load(
        environ={},
        overrides={"auth_required": False, "data_dir": tmp_path_factory.mktemp("logs")},
    )
    running = LogsGateway(
        base,
        tmp_path_factory.mktemp("gateway"),
        loop_thread,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
    yield running
    running.close()


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(
        base_url=f"http://127.0.0.1:{live.gateway.http_port}", timeout=10
    ) as client:
        yield client


@pytest.fixture(scope="module")
def no_router(loop_thread, tmp_path_factory):
    """A gateway whose log router does not listen, allowing one call per hour."""
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("no-router"),
            "log_service_addr": closed_address(),
            "user_service_addr": closed_address(),
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "gateway_rate_limit_per_second": 1 / 3600,
            "gateway_rate_limit_burst": 1,
            "grace_seconds": 1.0,
        },
    )
    running = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))


def _service() -> str:
    return f"otlp-http-{uuid.uuid4().hex[:8]}"


def _record(message: str, **fields) -> otlp_logs_pb.LogRecord:
    return otlp_logs_pb.LogRecord(
        time_unix_nano=fields.pop("time_unix_nano", time.time_ns()),
        body=common_pb2.AnyValue(string_value=message),
        **fields,
    )


def _export(
    service: str, *records: otlp_logs_pb.LogRecord, **resource: str
) -> otlp_pb.ExportLogsServiceRequest:
    attributes = [
        common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))
        for key, value in {"service.name": service, **resource}.items()
    ]
    return otlp_pb.ExportLogsServiceRequest(
        resource_logs=[
            otlp_logs_pb.ResourceLogs(
                resource=resource_pb2.Resource(attributes=attributes),
                scope_logs=[otlp_logs_pb.ScopeLogs(log_records=list(records))],
            )
        ]
    )


def _json_export(service: str, record: dict) -> dict:
    return {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": service}}
                    ]
                },
                "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [record]}],
            }
        ]
    }


def _post(http, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    """POST a body; each keyword is a header, with `_` for `-` in its name."""
    sent = {"content-type": content_type}
    sent.update((key.replace("_", "-"), value) for key, value in headers.items())
    return http.post("/v1/logs", content=body, headers=sent)


def _post_json(http, tree: dict, **headers: str) -> httpx.Response:
    return _post(http, json.dumps(tree).encode(), JSON, **headers)


def _status(response: httpx.Response) -> status_pb2.Status:
    """Read the google.rpc.Status of an error reply, in either encoding."""
    media_type = response.headers["content-type"].split(";")[0]
    if media_type == PROTOBUF:
        return status_pb2.Status.FromString(response.content)
    assert media_type == JSON, response.headers
    tree = response.json()
    assert set(tree) <= {"code", "message", "details"}, tree
    status = status_pb2.Status(code=tree["code"], message=tree["message"])
    for detail in tree.get("details", []):
        if detail["@type"].endswith("ErrorInfo"):
            info = error_details_pb2.ErrorInfo(reason=detail["reason"])
            status.details.add().Pack(info)
    return status


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


# Exports that are stored


def test_protobuf_export_stored(live, http):
    service = _service()
    record = _record(
        "paid the rent",
        severity_number=otlp_logs_pb.SEVERITY_NUMBER_WARN,
        trace_id=bytes.fromhex(TRACE_ID),
        span_id=bytes.fromhex(SPAN_ID),
        attributes=[
            common_pb2.KeyValue(key="group", value=common_pb2.AnyValue(int_value=7))
        ],
    )

    response = _post(http, _export(service, record).SerializeToString(), PROTOBUF)

    assert response.status_code == 200, response.content
    assert response.headers["content-type"] == PROTOBUF
    reply = otlp_pb.ExportLogsServiceResponse.FromString(response.content)
    assert not reply.HasField("partial_success")
    [stored] = list_all(live.stub, services=[service])
    assert stored.message == "paid the rent"
    assert stored.severity == pb.SEVERITY_WARN
    assert stored.attributes["group"] == "7"
    assert stored.trace_id == TRACE_ID
    assert stored.span_id == SPAN_ID


def test_json_export_stored(live, http):
    service = _service()
    record = {
        "timeUnixNano": str(time.time_ns()),
        "observed_time_unix_nano": time.time_ns(),
        "severityNumber": 17,
        "severityText": "Error",
        "body": {"stringValue": "card declined"},
        "attributes": [
            {"key": "amount", "value": {"intValue": "1250"}},
            {"key": "retry", "value": {"boolValue": True}},
        ],
        "traceId": TRACE_ID.upper(),
        "span_id": SPAN_ID,
        "flags": 1,
        "someFieldFromANewerOtlp": {"ignored": [1, 2]},
    }

    response = _post_json(http, _json_export(service, record))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    assert response.json() == {}
    [stored] = list_all(live.stub, services=[service])
    assert stored.message == "card declined"
    assert stored.severity == pb.SEVERITY_ERROR
    assert dict(stored.attributes) == {
        "amount": "1250",
        "retry": "true",
        "scope.name": "app",
    }
    assert stored.trace_id == TRACE_ID
    assert stored.span_id == SPAN_ID


def test_severity_text_beside_number_stored(live, http):
    service = _service()
    binary = _export(
        service,
        _record("binary custom level", severity_number=13, severity_text="AUDIT"),
        _record("binary same severity", severity_number=13, severity_text="WARNING"),
    )
    tree = _json_export(
        service,
        {
            "severityNumber": 13,
            "severityText": "notice",
            "body": {"stringValue": "json other word"},
        },
    )

    first = _post(http, binary.SerializeToString(), PROTOBUF)
    second = _post_json(http, tree)

    assert first.status_code == 200, first.content
    assert second.status_code == 200, second.text
    stored = {e.message: e for e in list_all(live.stub, services=[service])}
    assert stored["binary custom level"].severity == pb.SEVERITY_WARN
    assert dict(stored["binary custom level"].attributes) == {"severity_text": "AUDIT"}
    assert dict(stored["binary same severity"].attributes) == {}
    assert stored["json other word"].severity == pb.SEVERITY_WARN
    assert dict(stored["json other word"].attributes) == {
        "scope.name": "app",
        "severity_text": "notice",
    }


def test_gzip_bodies_stored(live, http):
    service = _service()
    binary = _export(service, _record("binary, gzipped")).SerializeToString()
    tree = _json_export(service, {"body": {"stringValue": "json, gzipped"}})

    first = _post(http, gzip.compress(binary), PROTOBUF, content_encoding="gzip")
    second = _post(
        http,
        gzip.compress(json.dumps(tree).encode()),
        f"{JSON}; charset=utf-8",
        content_encoding="GZIP",
    )

    assert first.status_code == 200
    assert second.status_code == 200
    stored = list_all(live.stub, services=[service])
    assert sorted(e.message for e in stored) == ["binary, gzipped", "json, gzipped"]


def test_gzip_members_concatenated(live, http):
    service = _service()
    body = json.dumps(_json_export(service, {"body": {"stringValue": "two parts"}}))
    half = len(body) // 2
    parts = gzip.compress(body[:half].encode()) + gzip.compress(body[half:].encode())

    response = _post(http, parts, JSON, content_encoding="gzip")

    assert response.status_code == 200, response.text
    assert [e.message for e in list_all(live.stub, services=[service])] == ["two parts"]


def test_empty_export_succeeds(http):
    binary = _post(http, b"", PROTOBUF)
    empty_json = _post_json(http, {})

    assert binary.status_code == 200
    assert binary.content == b""
    assert empty_json.status_code == 200
    assert empty_json.json() == {}


def test_lone_surrogate_replaced(live, http):
    service = _service()
    body = json.dumps(_json_export(service, {"body": {"stringValue": "x"}}))
    body = body.replace('"x"', '"half \\ud800 pair"')

    response = _post(http, body.encode(), JSON)

    assert response.status_code == 200, response.text
    [stored] = list_all(live.stub, services=[service])
    assert stored.message == "half \ufffd pair"


# Partial success


def test_partial_success_in_protobuf(live, http):
    service = _service()
    too_old = time.time_ns() - 30 * DAY_NS
    export = _export(
        service, _record("ancient", time_unix_nano=too_old), _record("recent")
    )

    response = _post(http, export.SerializeToString(), PROTOBUF)

    assert response.status_code == 200
    reply = otlp_pb.ExportLogsServiceResponse.FromString(response.content)
    assert reply.partial_success.rejected_log_records == 1
    assert "rejected 1 of 2 log records: record 0:" in (
        reply.partial_success.error_message
    )
    assert [e.message for e in list_all(live.stub, services=[service])] == ["recent"]


def test_partial_success_in_json(http):
    too_old = time.time_ns() - 30 * DAY_NS
    record = {"timeUnixNano": too_old, "body": {"stringValue": "ancient"}}

    response = _post_json(http, _json_export(_service(), record))

    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "1"
    assert "record 0:" in partial["errorMessage"]
    assert "retention" in partial["errorMessage"]


# Bad bodies


def test_invalid_json(http):
    response = _post(http, b'{"resourceLogs": [}', JSON)

    assert response.status_code == 400
    status = _status(response)
    assert status.code == 3
    assert "not valid JSON" in status.message
    assert "line 1 column 19 (char 18)" in status.message
    assert _reason(status) == "MALFORMED_JSON"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"entries": [{"service": "svc", "message": "hi"}]}, "entries"),
        ({"service": "svc", "message": "hi"}, "message, service"),
        ({"service": "svc", "severityText": "WARN"}, "service, severityText"),
    ],
    ids=["batch", "entry", "json-names"],
)
def test_splitlog_body_rejected(live, http, body, fields):
    service = _service()
    tree = json.loads(json.dumps(body).replace('"svc"', json.dumps(service)))

    response = _post_json(http, tree)

    assert response.status_code == 400
    status = _status(response)
    assert status.code == 3  # INVALID_ARGUMENT
    assert _reason(status) == "NOT_OTLP_REQUEST"
    assert "POST /v1/logs takes OTLP JSON" in status.message
    assert f"has the fields {fields} of a splitlog log entry" in status.message
    assert "send splitlog entries to POST /logs (one entry) or" in status.message
    assert "POST /logs/batch" in status.message
    assert list_all(live.stub, services=[service]) == []


def test_unknown_fields_beside_resource_logs_ignored(live, http):
    service = _service()
    tree = _json_export(service, {"body": {"stringValue": "kept"}})
    tree["message"] = "not an OTLP field"

    response = _post_json(http, tree)

    assert response.status_code == 200, response.text
    assert [e.message for e in list_all(live.stub, services=[service])] == ["kept"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("traceId", "5b8efff798038103d269b633813fc60z", "character 31 ('z')"),
        ("traceId", "W47/95gDgQPSabYzgT/GDA==", "looks like base64"),
        ("traceId", TRACE_ID[:-1], "which has 31 digits, an odd number"),
        ("spanId", SPAN_ID + "0", "which has 17 digits, an odd number"),
        ("spanId", 12, "in a JSON string, got the number 12"),
    ],
)
def test_invalid_hex_ids(http, field, value, expected):
    record = {"body": {"stringValue": "x"}, field: value}

    response = _post_json(http, _json_export(_service(), record))

    assert response.status_code == 400
    status = _status(response)
    name = {"traceId": "trace_id", "spanId": "span_id"}[field]
    path = f"resource_logs[0].scope_logs[0].log_records[0].{name}"
    assert status.message.startswith(path), status.message
    digits = 32 if field == "traceId" else 16
    assert f"expected {digits} hexadecimal digits" in status.message
    assert expected in status.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("traceId", "0102"), ("spanId", SPAN_ID + "00"), ("traceId", TRACE_ID * 2)],
)
def test_wrong_length_id_rejects_only_record(live, http, field, value):
    service = _service()
    bad = {"body": {"stringValue": "bad id"}, field: value}
    good = {"body": {"stringValue": "good"}, "traceId": TRACE_ID}
    tree = _json_export(service, bad)
    tree["resourceLogs"][0]["scopeLogs"][0]["logRecords"].append(good)

    response = _post_json(http, tree)

    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "1"
    name = {"traceId": "trace_id", "spanId": "span_id"}[field]
    assert "record 0:" in partial["errorMessage"]
    assert name in partial["errorMessage"]
    stored = list_all(live.stub, services=[service])
    assert [e.message for e in stored] == ["good"]
    assert stored[0].trace_id == TRACE_ID


@pytest.mark.parametrize(
    ("record", "path", "expected"),
    [
        (
            {"timeUnixNano": "yesterday"},
            "resource_logs[0].scope_logs[0].log_records[0].time_unix_nano",
            '"yesterday"',
        ),
        (
            {"body": {"bytesValue": "a"}},
            "resource_logs[0].scope_logs[0].log_records[0].body.bytes_value",
            "expected base64",
        ),
        (
            {"body": {"bytesValue": "aGVs$bG8="}},
            "resource_logs[0].scope_logs[0].log_records[0].body.bytes_value",
            'the string "aGVs$bG8="',
        ),
        (
            {"body": {"bytesValue": "!!!"}},
            "resource_logs[0].scope_logs[0].log_records[0].body.bytes_value",
            "expected base64",
        ),
        (
            {"body": {"stringValue": "a", "intValue": "1"}},
            "resource_logs[0].scope_logs[0].log_records[0].body",
            "sets both string_value and int_value",
        ),
    ],
)
def test_invalid_value_names_path(http, record, path, expected):
    response = _post_json(http, _json_export(_service(), record))

    assert response.status_code == 400
    message = _status(response).message
    assert path in message
    assert expected in message


def test_corrupt_protobuf(http):
    response = _post(http, b"\x0a\xff\xff", PROTOBUF)

    assert response.status_code == 400
    assert response.headers["content-type"] == PROTOBUF
    status = _status(response)
    assert _reason(status) == "MALFORMED_PROTOBUF"
    assert "wire format is corrupt" in status.message


def test_json_sent_as_protobuf_hinted(http):
    response = _post(http, b'{"resourceLogs": []}', PROTOBUF)

    assert response.status_code == 400
    assert "needs Content-Type application/json" in _status(response).message


# Media types and encodings


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/grpc"])
def test_unsupported_content_type(http, content_type):
    headers = {"content-type": content_type} if content_type else {}

    response = http.post("/v1/logs", content=b"{}", headers=headers)

    assert response.status_code == 415
    status = _status(response)
    assert _reason(status) == "UNSUPPORTED_MEDIA_TYPE"
    assert "application/x-protobuf" in status.message


def test_unsupported_content_encoding(http):
    response = _post(http, b"{}", JSON, content_encoding="br")

    assert response.status_code == 415
    assert response.headers["accept-encoding"] == "gzip"
    status = _status(response)
    assert _reason(status) == "UNSUPPORTED_CONTENT_ENCODING"
    assert "Content-Encoding 'br'" in status.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not gzip at all", "inflating it failed"),
        (gzip.compress(b'{"resourceLogs": []}')[:-9], "it ends early"),
    ],
)
def test_invalid_gzip(http, body, expected):
    response = _post(http, body, JSON, content_encoding="gzip")

    assert response.status_code == 400
    status = _status(response)
    assert _reason(status) == "INVALID_GZIP"
    assert expected in status.message


def test_gzip_bomb_refused(http):
    # 64 MiB of zeros gzip to about 64 KiB.
    bomb = gzip.compress(b"\0" * (64 * MAX_MESSAGE_BYTES), compresslevel=9)
    assert len(bomb) < MAX_MESSAGE_BYTES

    response = _post(http, bomb, PROTOBUF, content_encoding="gzip")

    assert response.status_code == 413
    status = _status(response)
    assert _reason(status) == "REQUEST_TOO_LARGE"
    assert f"inflates to more than {MAX_MESSAGE_BYTES} bytes" in status.message


def test_body_over_limit(http):
    response = _post(http, b"\0" * (MAX_MESSAGE_BYTES + 1), PROTOBUF)

    assert response.status_code == 413
    assert f"more than {MAX_MESSAGE_BYTES} bytes" in _status(response).message


def test_expanded_export_too_large_not_retried(http):
    # Each record gets a copy of the 40 KB resource attribute: 1.6 MB in all.
    records = [_record(f"record {i}") for i in range(40)]
    export = _export(_service(), *records, filler="f" * 40_000)

    response = _post(http, export.SerializeToString(), PROTOBUF)

    assert response.status_code == 413
    status = _status(response)
    assert status.code == 8
    assert "max_message_bytes" in status.message
    assert "retry-after" not in response.headers


def test_get_not_allowed(http):
    response = http.get("/v1/logs")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "OTLP exporters send POST" in _status(response).message
    assert "To query stored log entries, use GET /logs" in _status(response).message
    # The code of every 405 of the REST front.
    assert _status(response).code == 3  # INVALID_ARGUMENT


# Retryable conditions


def test_unreachable_router_then_rate_limit(no_router):
    url = f"http://127.0.0.1:{no_router.http_port}/v1/logs"
    body = _export(_service(), _record("lost")).SerializeToString()
    headers = {"content-type": PROTOBUF}

    unavailable = httpx.post(url, content=body, headers=headers, timeout=10)
    limited = httpx.post(url, content=body, headers=headers, timeout=10)

    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "1"
    assert _reason(_status(unavailable)) == "BACKEND_UNAVAILABLE"
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 1000
    assert _status(limited).code == 8


# The OpenTelemetry SDK's HTTP exporter


def test_sdk_http_exporter(live):
    from opentelemetry import trace
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    service = _service()
    exporter = OTLPLogExporter(
        endpoint=f"http://127.0.0.1:{live.gateway.http_port}/v1/logs",
        compression=Compression.Gzip,
        timeout=10,
    )
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger("tests.otlp_http")
    tracer = TracerProvider().get_tracer("tests.otlp_http")
    try:
        with tracer.start_as_current_span("settle") as span:
            context = span.get_span_context()
            logger.emit(
                body="settlement failed",
                severity_number=SeverityNumber.ERROR,
                attributes={"group": "g-1", "attempt": 3},
            )
        logger.emit(body="outside any span", severity_number=SeverityNumber.INFO)
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    stored = {e.message: e for e in list_all(live.stub, services=[service])}
    assert set(stored) == {"settlement failed", "outside any span"}
    failed = stored["settlement failed"]
    assert failed.severity == pb.SEVERITY_ERROR
    assert failed.attributes["group"] == "g-1"
    assert failed.attributes["attempt"] == "3"
    assert failed.attributes["scope.name"] == "tests.otlp_http"
    assert failed.trace_id == trace.format_trace_id(context.trace_id)
    assert failed.span_id == trace.format_span_id(context.span_id)
    outside = stored["outside any span"]
    assert outside.severity == pb.SEVERITY_INFO
    assert outside.trace_id == ""
    assert outside.span_id == ""


def test_json_nan_literal_malformed(http):
    body = json.dumps(_json_export(_service(), {"body": {"stringValue": "x"}}))
    body = body.replace('"stringValue": "x"', '"doubleValue": NaN')

    response = _post(http, body.encode(), JSON)

    assert response.status_code == 400
    status = _status(response)
    assert "not valid JSON" in status.message
    assert "NaN at resource_logs[0]" in status.message
    assert "got the number" not in status.message
    assert _reason(status) == "MALFORMED_JSON"


def test_timeout_expired_before_call_504(http):
    body = _export(_service(), _record("late")).SerializeToString()

    response = _post(http, body, PROTOBUF, grpc_timeout="1n")

    assert response.status_code == 504
    status = _status(response)
    assert "grpc-timeout 1n expired before the gateway called" in status.message
    assert _reason(status) == "DEADLINE_EXPIRED_BEFORE_CALL"


def test_repeated_timeout_header_400(http):
    body = _export(_service(), _record("twice")).SerializeToString()

    response = http.post(
        "/v1/logs",
        content=body,
        headers=[
            ("content-type", PROTOBUF),
            ("grpc-timeout", "10S"),
            ("grpc-timeout", "1S"),
        ],
    )

    assert response.status_code == 400
    status = _status(response)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "grpc-timeout header is sent 2 times ('10S', '1S')" in status.message
    assert _reason(status) == "INVALID_TIMEOUT"
