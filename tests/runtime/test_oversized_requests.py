"""Request messages over `max_message_bytes`, sent to real servers.

A user service, a log router with one node and a gateway in front of both
listen on 127.0.0.1, all with a small `max_message_bytes`. Raw channels send
valid messages padded with an unknown field to an exact size. A message over
the setting must get RESOURCE_EXHAUSTED naming `max_message_bytes`, from the
server it reaches first. A message of exactly the setting must be served.
The servers drop the unknown field when they parse a message, so the calls
from the router to its node stay small. The log node, which only other
components call, accepts `NODE_HEADROOM_BYTES` more than the setting.
"""

from __future__ import annotations

import logging
import uuid

import grpc
import pytest

from log_service.clients import NODE_HEADROOM_BYTES
from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime.limits import RECEIVE_CEILING_FACTOR
from tests.gateway.support import error_details
from tests.runtime.support import running_servers

LIMIT = 64 * 1024
CEILING = RECEIVE_CEILING_FACTOR * LIMIT
TIMEOUT = 10

GET_USER = "/splitlog.users.v1.UsersService/GetUser"
CREATE_USER = "/splitlog.users.v1.UsersService/CreateUser"
WRITE_LOGS = "/splitlog.logs.v1.LogsService/WriteLogEntries"
STREAM_LOGS = "/splitlog.logs.v1.LogsService/StreamLogEntries"
QUERY_NODE = "/splitlog.logs.v1.LogNodeService/QueryEntries"
GROUP_OVERVIEW = "/splitlog.gateway.v1.GatewayService/GetGroupOverview"

# Field 1000 with wire type 2 (length-delimited), as a varint key. No request
# message of splitlog has field 1000, so every one parses it as unknown.
UNKNOWN_FIELD_KEY = b"\xc2\x3e"


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while value >= 0x80:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def _padded(message: bytes, size: int) -> bytes:
    """Append an unknown field to serialized `message` so it is `size` bytes."""
    room = size - len(message) - len(UNKNOWN_FIELD_KEY)
    for prefix_length in range(1, 6):
        payload = room - prefix_length
        prefix = _varint(payload)
        if len(prefix) == prefix_length:
            padded = message + UNKNOWN_FIELD_KEY + prefix + b"x" * payload
            assert len(padded) == size
            return padded
    raise AssertionError(f"cannot pad {len(message)} bytes to {size}")


def _new_user(size: int) -> bytes:
    user_id = f"big-{uuid.uuid4().hex[:12]}"
    request = users_pb.CreateUserRequest(
        user=users_pb.User(email=f"{user_id}@example.com", display_name="Big"),
        user_id=user_id,
    )
    return _padded(request.SerializeToString(), size)


def _log_batch(size: int, kind=logs_pb.WriteLogEntriesRequest) -> bytes:
    request = kind(entries=[logs_pb.LogEntry(service="oversize", message="padded")])
    return _padded(request.SerializeToString(), size)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with running_servers(tmp_path_factory, max_message_bytes=LIMIT) as ports:
        yield ports


@pytest.fixture
def channel_to(servers):
    opened = []

    def open_channel(server: str) -> grpc.Channel:
        channel = grpc.insecure_channel(f"127.0.0.1:{servers[server]}")
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        channel.close()


def _assert_names_the_setting(error: grpc.RpcError, size: int) -> None:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"the request message is {size} bytes" in error.details()
    assert f"over max_message_bytes ({LIMIT})" in error.details()
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "REQUEST_TOO_LARGE"
    assert info.metadata["limit"] == "max_message_bytes"
    assert info.metadata["max_message_bytes"] == str(LIMIT)
    assert info.metadata["message_bytes"] == str(size)


UNARY_CASES = [
    ("user_service", GET_USER),
    ("log_router", WRITE_LOGS),
    ("gateway", GET_USER),
    ("gateway", WRITE_LOGS),
    ("gateway", GROUP_OVERVIEW),
]


@pytest.mark.parametrize(("server", "method"), UNARY_CASES)
def test_unary_just_over_limit_names_setting(channel_to, caplog, server, method):
    caplog.set_level(logging.WARNING)
    call = channel_to(server).unary_unary(method)

    with pytest.raises(grpc.RpcError) as failure:
        call(_padded(b"", LIMIT + 1), timeout=TIMEOUT)

    _assert_names_the_setting(failure.value, LIMIT + 1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_log_node_over_headroom_names_setting(channel_to):
    # Only the router and other nodes call a node, with framing on top of
    # what clients sent, so a node accepts NODE_HEADROOM_BYTES more.
    size = LIMIT + NODE_HEADROOM_BYTES + 1
    call = channel_to("log_node").unary_unary(QUERY_NODE)

    with pytest.raises(grpc.RpcError) as failure:
        call(_padded(b"", size), timeout=TIMEOUT)

    error = failure.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"the request message is {size} bytes" in error.details()
    assert f"the max_message_bytes setting ({LIMIT})" in error.details()
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "REQUEST_TOO_LARGE"
    assert info.metadata["max_message_bytes"] == str(LIMIT)
    assert info.metadata["headroom_bytes"] == str(NODE_HEADROOM_BYTES)
    assert info.metadata["message_bytes"] == str(size)


def test_log_node_within_headroom_parses(channel_to):
    # A message over the setting but within the headroom reaches the node,
    # which rejects the empty shard name instead of the size.
    call = channel_to("log_node").unary_unary(QUERY_NODE)

    with pytest.raises(grpc.RpcError) as failure:
        call(_padded(b"", LIMIT + NODE_HEADROOM_BYTES), timeout=TIMEOUT)

    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("server", ["user_service", "gateway"])
def test_unary_at_limit_served(channel_to, server):
    call = channel_to(server).unary_unary(
        CREATE_USER, response_deserializer=users_pb.CreateUserResponse.FromString
    )

    created = call(_new_user(LIMIT), timeout=TIMEOUT)

    assert created.user.display_name == "Big"


@pytest.mark.parametrize("server", ["log_router", "gateway"])
def test_log_write_at_limit_served(channel_to, server):
    call = channel_to(server).unary_unary(
        WRITE_LOGS, response_deserializer=logs_pb.WriteLogEntriesResponse.FromString
    )

    response = call(_log_batch(LIMIT), timeout=TIMEOUT)

    assert response.accepted_count == 1
    assert response.rejected_count == 0


@pytest.mark.parametrize("server", ["user_service", "gateway"])
def test_unary_at_ceiling_names_setting(channel_to, server):
    call = channel_to(server).unary_unary(GET_USER)

    with pytest.raises(grpc.RpcError) as failure:
        call(_padded(b"", CEILING), timeout=TIMEOUT)

    _assert_names_the_setting(failure.value, CEILING)


@pytest.mark.parametrize("server", ["user_service", "gateway"])
def test_unary_over_ceiling_gets_grpc_text(channel_to, server):
    call = channel_to(server).unary_unary(GET_USER)

    with pytest.raises(grpc.RpcError) as failure:
        call(_padded(b"", CEILING + 1), timeout=TIMEOUT)

    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{CEILING + 1} vs. {CEILING}" in failure.value.details()


@pytest.mark.parametrize("server", ["log_router", "gateway"])
def test_stream_message_over_limit_names_setting(channel_to, caplog, server):
    caplog.set_level(logging.WARNING)
    call = channel_to(server).stream_unary(STREAM_LOGS)
    batches = [
        _log_batch(1024, logs_pb.StreamLogEntriesRequest),
        _log_batch(LIMIT + 1, logs_pb.StreamLogEntriesRequest),
        _log_batch(1024, logs_pb.StreamLogEntriesRequest),
    ]

    with pytest.raises(grpc.RpcError) as failure:
        call(iter(batches), timeout=TIMEOUT)

    _assert_names_the_setting(failure.value, LIMIT + 1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("server", ["log_router", "gateway"])
def test_stream_messages_at_limit_served(channel_to, server):
    call = channel_to(server).stream_unary(
        STREAM_LOGS,
        response_deserializer=logs_pb.StreamLogEntriesResponse.FromString,
    )
    batches = [_log_batch(LIMIT, logs_pb.StreamLogEntriesRequest) for _ in range(3)]

    response = call(iter(batches), timeout=TIMEOUT)

    assert response.batch_count == 3
    assert response.accepted_count == 3
    assert response.rejected_count == 0
