"""Streaming calls through the gateway's wrappers, with authentication on.

Health/Watch is a coroutine that sends with `await context.write()`, while
forwarded streams yield their responses, so every wrapper (credential check,
limits, error mapping) must keep the shape of the handler that it wraps.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.app import build
from gateway.auth import CREDENTIAL_MISSING
from gateway.services import GATEWAY_SERVICE
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from splitlog_runtime.interceptor import AsyncErrorInterceptor
from tests.gateway.support import error_details
from tests.ports import closed_address

TIMEOUT = 5.0
TEST_SERVICE = "test.Writer"
WRITE_THEN_FAIL = f"/{TEST_SERVICE}/WriteThenFail"


@pytest.fixture(scope="module")
def gateway(loop_thread, tmp_path_factory):
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": True,
            "auth_secret": "streams-secret-" + "s" * 40,
            "data_dir": tmp_path_factory.mktemp("data"),
            "user_service_addr": closed_address(),
            "log_service_addr": closed_address(),
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "gateway_rate_limit_per_second": 1000.0,
            "grace_seconds": 0.5,
        },
    )
    running = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as opened:
        yield opened


def test_health_watch_open_with_auth(channel):
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT
    )
    first = next(stream)
    stream.cancel()
    assert first.status in (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )


def test_health_check_open_with_auth(channel):
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT
    )
    assert reply.status in (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )


def test_reflection_open_with_auth(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT))
    names = {service.name for service in replies[0].list_services_response.service}
    assert "grpc.health.v1.Health" in names
    assert GATEWAY_SERVICE in names


def test_reflection_v1_open_with_auth(channel):
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(call(iter([request]), timeout=TIMEOUT))
    names = {service.name for service in replies[0].list_services_response.service}
    assert "grpc.reflection.v1.ServerReflection" in names
    assert GATEWAY_SERVICE in names


def test_stream_without_credential_rejected(channel):
    tail = channel.unary_stream("/splitlog.logs.v1.LogsService/TailLogEntries")
    with pytest.raises(grpc.RpcError) as raised:
        list(tail(b"", timeout=TIMEOUT))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_details(raised.value)["ErrorInfo"]
    assert info.reason == CREDENTIAL_MISSING


class _Writer:
    async def write_then_fail(self, request: bytes, context) -> None:
        await context.write(b"first")
        raise RuntimeError("a detail that must stay on the server")


@pytest.fixture(scope="module")
def writer_server(loop_thread):
    async def start():
        server = grpc.aio.server(interceptors=[AsyncErrorInterceptor(1 << 20)])
        handler = grpc.unary_stream_rpc_method_handler(_Writer().write_then_fail)
        server.add_registered_method_handlers(TEST_SERVICE, {"WriteThenFail": handler})
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop_thread.run(start())
    yield port
    loop_thread.run(server.stop(0))


def test_writing_stream_error_is_internal(writer_server):
    with grpc.insecure_channel(f"127.0.0.1:{writer_server}") as channel:
        stream = channel.unary_stream(WRITE_THEN_FAIL)(b"", timeout=TIMEOUT)
        received = []
        with pytest.raises(grpc.RpcError) as raised:
            for response in stream:
                received.append(response)
    error = raised.value
    assert received == [b"first"]
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "incident" in error.details()
    assert "RuntimeError" not in error.details()
    assert "must stay on the server" not in error.details()
