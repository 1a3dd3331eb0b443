"""Request bytes that are not a valid protobuf message, sent to real servers.

A user service, a log router with one node and a gateway in front of both
listen on 127.0.0.1. Raw channels send bytes that do not parse as the
method's request message. Every server must return INVALID_ARGUMENT naming the
message type, without an error or traceback in its log, and the first string
field that is not valid UTF-8 when that is why the bytes do not parse.
"""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from tests.runtime.support import running_servers

# Field 1, length-delimited, with a length varint that never ends.
GARBAGE = b"\x0a\xff\xff\xff\xff\xff"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with running_servers(tmp_path_factory) as ports:
        yield ports


CASES = [
    ("user_service", "splitlog.users.v1.UsersService/GetUser", "GetUserRequest"),
    ("log_node", "splitlog.logs.v1.LogNodeService/QueryEntries", "QueryEntriesRequest"),
    (
        "log_router",
        "splitlog.logs.v1.LogsService/WriteLogEntries",
        "WriteLogEntriesRequest",
    ),
    ("gateway", "splitlog.users.v1.UsersService/GetUser", "GetUserRequest"),
    (
        "gateway",
        "splitlog.gateway.v1.GatewayService/GetGroupOverview",
        "GetGroupOverviewRequest",
    ),
    (
        "gateway",
        "splitlog.logs.v1.LogsService/ListLogEntries",
        "ListLogEntriesRequest",
    ),
]


@pytest.mark.parametrize(("server", "method", "message"), CASES)
def test_garbage_unary_request_is_invalid_argument(
    servers, caplog, server, method, message
):
    caplog.set_level(logging.WARNING)
    with grpc.insecure_channel(f"127.0.0.1:{servers[server]}") as channel:
        call = channel.unary_unary(f"/{method}")
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as failure:
                call(GARBAGE, timeout=10)

            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "request body is not a valid" in failure.value.details()
            assert message in failure.value.details()

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not any(r.exc_info for r in caplog.records)
    warnings = [r for r in caplog.records if "not a valid" in r.getMessage()]
    assert len(warnings) <= 1


def test_garbage_in_a_request_stream_is_invalid_argument(servers, caplog):
    caplog.set_level(logging.WARNING)
    with grpc.insecure_channel(f"127.0.0.1:{servers['log_router']}") as channel:
        call = channel.stream_unary("/splitlog.logs.v1.LogsService/StreamLogEntries")
        with pytest.raises(grpc.RpcError) as failure:
            call(iter([GARBAGE]), timeout=10)

    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "StreamLogEntriesRequest" in failure.value.details()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_valid_request_still_served(servers):
    with grpc.insecure_channel(f"127.0.0.1:{servers['gateway']}") as channel:
        call = channel.unary_unary("/splitlog.logs.v1.LogsService/ListLogEntries")
        assert call(b"", timeout=10) == b""


def _with_invalid_utf8(request, marker: bytes = b"XX") -> bytes:
    """Serialize `request` with each `marker` replaced by two invalid bytes."""
    return request.SerializeToString().replace(marker, b"\xff\xfe")


def _entry(message: str, **fields) -> logs_pb2.LogEntry:
    return logs_pb2.LogEntry(service="utf8-check", message=message, **fields)


UTF8_CASES = [
    (
        "WriteLogEntries",
        logs_pb2.WriteLogEntriesRequest(
            entries=[_entry("fine"), _entry("bad XX"), _entry("also XX")]
        ),
        "entries[1].message",
        "byte 4 (0xff)",
    ),
    (
        "WriteLogEntry",
        logs_pb2.WriteLogEntryRequest(entry=_entry("ok", attributes={"k": "vXX"})),
        "entry.attributes['k']",
        "byte 1 (0xff)",
    ),
    (
        "WriteLogEntry",
        logs_pb2.WriteLogEntryRequest(entry=_entry("ok", attributes={"XX": "v"})),
        "entry.attributes (a key)",
        "byte 0 (0xff)",
    ),
    (
        "WriteLogEntries",
        logs_pb2.WriteLogEntriesRequest(
            streams=[logs_pb2.LogStream(service="s", messages=["a", "XX"])]
        ),
        "streams[0].messages[1]",
        "byte 0 (0xff)",
    ),
    (
        "ListLogEntries",
        logs_pb2.ListLogEntriesRequest(keyword="XX"),
        "keyword",
        "byte 0 (0xff)",
    ),
    (
        "ListLogEntries",
        logs_pb2.ListLogEntriesRequest(page_token="tokenXX"),
        "page_token",
        "byte 5 (0xff)",
    ),
]


@pytest.mark.parametrize("server", ["log_router", "gateway"])
@pytest.mark.parametrize(("method", "message", "path", "where"), UTF8_CASES)
def test_invalid_utf8_names_the_field(servers, server, method, message, path, where):
    with grpc.insecure_channel(f"127.0.0.1:{servers[server]}") as channel:
        call = channel.unary_unary(f"/splitlog.logs.v1.LogsService/{method}")
        with pytest.raises(grpc.RpcError) as failure:
            call(_with_invalid_utf8(message), timeout=10)
    error = failure.value
    status = rpc_status.from_call(error)
    violations = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(violations.DESCRIPTOR):
            detail.Unpack(violations)
        elif detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{path} is not valid UTF-8: {where}" in error.details()
    assert "encode the text as UTF-8" in error.details()
    assert info.reason == "MALFORMED_REQUEST"
    assert info.metadata["field"] == path
    assert [v.field for v in violations.field_violations] == [path]
    assert violations.field_violations[0].reason == "INVALID_UTF8"


def test_invalid_utf8_counts_other_fields(servers):
    request = logs_pb2.WriteLogEntriesRequest(
        entries=[_entry("XX"), _entry("XX", host="XX")]
    )
    with grpc.insecure_channel(f"127.0.0.1:{servers['log_router']}") as channel:
        call = channel.unary_unary("/splitlog.logs.v1.LogsService/WriteLogEntries")
        with pytest.raises(grpc.RpcError) as failure:
            call(_with_invalid_utf8(request), timeout=10)

    assert "entries[0].message is not valid UTF-8" in failure.value.details()
    assert "and 2 more string fields are not valid UTF-8" in failure.value.details()
    assert "the whole request message was rejected" in failure.value.details()


def test_stream_utf8_error_names_message(servers):
    requests = [
        logs_pb2.StreamLogEntriesRequest(entries=[_entry(f"fine {n}")])
        for n in range(4)
    ]
    requests[2] = logs_pb2.StreamLogEntriesRequest(entries=[_entry("bad XX")])
    with grpc.insecure_channel(f"127.0.0.1:{servers['log_router']}") as channel:
        call = channel.stream_unary("/splitlog.logs.v1.LogsService/StreamLogEntries")
        with pytest.raises(grpc.RpcError) as failure:
            call(iter([_with_invalid_utf8(r) for r in requests]), timeout=10)
    error = failure.value
    info = error_details_pb2.ErrorInfo()
    for detail in rpc_status.from_call(error).details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("request message 2 of the call")
    assert "entries[0].message is not valid UTF-8" in error.details()
    assert info.metadata["request_message"] == "2"
    assert info.metadata["field"] == "entries[0].message"
