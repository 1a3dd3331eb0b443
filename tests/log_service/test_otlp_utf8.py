"""OTLP exports with invalid UTF-8 in string fields, through a real router.

The requests are serialized from valid messages and then patched in place:
a marker string of the same length is replaced by invalid UTF-8. They go
over a real channel with a raw bytes serializer, because the protobuf
runtime refuses to serialize such strings itself.
"""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from splitlog.logs.v1 import logs_service_pb2 as pb
from tests.log_service.test_router_cluster import Cluster, list_all

EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
REPAIRED = "utf8_repaired"


@pytest.fixture
def cluster(base_config):
    config = base_config.replace(
        log_shards=2, log_replicas=1, log_node_port=0, log_fsync=False, workers=4
    )
    running = Cluster(config)
    yield running
    running.close()


def _text(value: str) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(string_value=value)


def _pair(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=_text(value))


def _request(
    records: list[logs_pb2.LogRecord],
    *,
    service: str = "otel-utf8",
    resource_extra: tuple[common_pb2.KeyValue, ...] = (),
    scope_name: str = "",
) -> otlp_pb2.ExportLogsServiceRequest:
    resource = resource_pb2.Resource(
        attributes=[_pair("service.name", service), *resource_extra]
    )
    scope = logs_pb2.ScopeLogs(log_records=records)
    if scope_name:
        scope.scope.name = scope_name
    return otlp_pb2.ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(resource=resource, scope_logs=[scope])]
    )


def _patched(
    request: otlp_pb2.ExportLogsServiceRequest, *patches: tuple[bytes, bytes]
) -> bytes:
    """Serialize `request`, then replace each marker by bytes of equal length."""
    data = request.SerializeToString()
    for marker, replacement in patches:
        assert len(marker) == len(replacement)
        assert data.count(marker) == 1, marker
        data = data.replace(marker, replacement)
    return data


def _export_raw(cluster, data: bytes) -> otlp_pb2.ExportLogsServiceResponse:
    export = cluster.channel.unary_unary(
        EXPORT_METHOD,
        request_serializer=None,
        response_deserializer=otlp_pb2.ExportLogsServiceResponse.FromString,
    )
    return export(data, timeout=10)


def _stored(cluster, service: str) -> dict[str, pb.LogEntry]:
    entries = list_all(cluster.stub, services=[service])
    return {entry.attributes["n"]: entry for entry in entries}


def test_invalid_body_repairs_only_that_record(cluster):
    records = [
        logs_pb2.LogRecord(body=_text("fine first"), attributes=[_pair("n", "0")]),
        logs_pb2.LogRecord(body=_text("bad XX here"), attributes=[_pair("n", "1")]),
        logs_pb2.LogRecord(body=_text("fine last"), attributes=[_pair("n", "2")]),
    ]
    data = _patched(_request(records), (b"XX", b"\xff\xfe"))

    response = _export_raw(cluster, data)

    assert not response.HasField("partial_success")
    stored = _stored(cluster, "otel-utf8")
    assert sorted(stored) == ["0", "1", "2"]
    assert stored["1"].message == "bad \ufffd\ufffd here"
    assert stored["1"].attributes[REPAIRED] == "true"
    assert stored["0"].message == "fine first"
    assert REPAIRED not in stored["0"].attributes
    assert stored["2"].message == "fine last"
    assert REPAIRED not in stored["2"].attributes


def test_invalid_attribute_value_repaired(cluster):
    records = [
        logs_pb2.LogRecord(
            body=_text("attribute case"),
            attributes=[_pair("n", "0"), _pair("path", "/tmp/YY")],
        ),
        logs_pb2.LogRecord(body=_text("clean"), attributes=[_pair("n", "1")]),
    ]
    # 0xc3 starts a two-byte sequence, and "(" cannot continue it.
    data = _patched(_request(records), (b"/tmp/YY", b"/tmp/\xc3\x28"))

    _export_raw(cluster, data)

    stored = _stored(cluster, "otel-utf8")
    assert stored["0"].attributes["path"] == "/tmp/\ufffd("
    assert stored["0"].attributes[REPAIRED] == "true"
    assert stored["0"].message == "attribute case"
    assert REPAIRED not in stored["1"].attributes


def test_keys_repaired_alike_count_as_dropped(cluster):
    records = [
        logs_pb2.LogRecord(
            body=_text("two keys"),
            attributes=[_pair("n", "0"), _pair("kXX", "first"), _pair("kYY", "last")],
        )
    ]
    # Both keys become "k\ufffd\ufffd" after the repair.
    data = _patched(_request(records), (b"kXX", b"k\xff\xfe"), (b"kYY", b"k\xfe\xff"))

    _export_raw(cluster, data)

    stored = _stored(cluster, "otel-utf8")
    assert dict(stored["0"].attributes) == {
        "n": "0",
        "k\ufffd\ufffd": "last",
        REPAIRED: "true",
    }
    assert stored["0"].dropped_attributes_count == 1


def test_invalid_resource_attribute_marks_its_records(cluster):
    records = [
        logs_pb2.LogRecord(body=_text("one"), attributes=[_pair("n", "0")]),
        logs_pb2.LogRecord(body=_text("two"), attributes=[_pair("n", "1")]),
    ]
    request = _request(
        records, resource_extra=(_pair("deployment", "ZZZZ"),), scope_name="lib"
    )
    data = _patched(request, (b"ZZZZ", b"a\xffb\xfe"))

    _export_raw(cluster, data)

    stored = _stored(cluster, "otel-utf8")
    for number in ("0", "1"):
        assert stored[number].attributes["deployment"] == "a\ufffdb\ufffd"
        assert stored[number].attributes[REPAIRED] == "true"


def test_invalid_scope_name_marks_its_records(cluster):
    records = [logs_pb2.LogRecord(body=_text("scoped"), attributes=[_pair("n", "0")])]
    data = _patched(_request(records, scope_name="lib-QQ"), (b"lib-QQ", b"lib-\xc3("))

    _export_raw(cluster, data)

    stored = _stored(cluster, "otel-utf8")
    assert stored["0"].attributes["scope.name"] == "lib-\ufffd("
    assert stored["0"].attributes[REPAIRED] == "true"


def test_valid_export_has_no_repair_mark(cluster):
    records = [logs_pb2.LogRecord(body=_text("grüße"), attributes=[_pair("n", "0")])]

    _export_raw(cluster, _request(records).SerializeToString())

    stored = _stored(cluster, "otel-utf8")
    assert stored["0"].message == "grüße"
    assert REPAIRED not in stored["0"].attributes


def test_non_protobuf_bytes_still_invalid_argument(cluster):
    records = [logs_pb2.LogRecord(body=_text("cut"), attributes=[_pair("n", "0")])]
    # A length prefix that runs past the end is invalid in any message type.
    data = _request(records).SerializeToString()[:-2]

    with pytest.raises(grpc.RpcError) as caught:
        _export_raw(cluster, data)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportLogsServiceRequest" in caught.value.details()
    assert list_all(cluster.stub, services=["otel-utf8"]) == []
