"""The gRPC front: forwarding, errors, deadlines, streams, health, reflection."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import build
from gateway.proxy import Backend, backend_deadline_exceeded
from gateway.services import (
    GATEWAY_SERVICE,
    INTERNAL_SERVICES,
    gateway_services,
    public_services,
)
from splitlog.users.v1 import users_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2_grpc as pb_grpc
from tests.gateway.conftest import DEFAULT_DEADLINE_SECONDS
from tests.gateway.support import (
    error_details,
    find_method,
    method_path,
    start_backend,
)

GRPCURL = Path(sys.executable).parent / "grpcurl"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.UsersServiceStub(channel)


def test_unary_call_forwarded(stub):
    response = stub.GetUser(pb.GetUserRequest(name="users/ada1"), timeout=5)

    assert response.user.name == "users/ada1"
    assert response.user.display_name == "Ada"


def test_metadata_forwarded_both_ways(stub):
    _, call = stub.GetUser.with_call(
        pb.GetUserRequest(name="users/ada1"),
        metadata=[("x-request-id", "req-42")],
        timeout=5,
    )

    assert ("x-echo-request-id", "req-42") in call.trailing_metadata()


def test_rich_error_passes_unchanged(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetUser(pb.GetUserRequest(name="users/missing"), timeout=5)

    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "user 'users/missing' does not exist"
    details = error_details(error)
    assert details["ErrorInfo"].reason == "USER_NOT_FOUND"
    assert details["ErrorInfo"].domain == "splitlog.dev"
    assert details["ResourceInfo"].resource_name == "users/missing"


def test_oversized_backend_trailers_internal(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetUser(pb.GetUserRequest(name="users/huge-trailer"), timeout=5)

    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    details = error_details(error)
    assert details["ErrorInfo"].reason == "BACKEND_REPLY_TOO_LARGE"
    assert details["ErrorInfo"].metadata["backend"] == "user_service"


def test_oversized_backend_trailers_rest(gateway):
    url = f"http://127.0.0.1:{gateway.http_port}/v1/users/huge-trailer"

    response = httpx.get(url, timeout=5)

    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["status"] == "INTERNAL"
    assert error["details"][0]["reason"] == "BACKEND_REPLY_TOO_LARGE"


def test_deadline_forwarded(stub, backend_log):
    backend_log.time_remaining.clear()

    stub.GetUser(pb.GetUserRequest(name="users/ada1"), timeout=2.0)

    # The wire format rounds a deadline up slightly, so the bound is 2.5 s,
    # which still separates the client's 2 s from the 3 s default.
    remaining = backend_log.time_remaining[-1]
    assert remaining is not None
    assert 1.0 < remaining < 2.5


def test_default_deadline_when_caller_sets_none(stub, backend_log):
    backend_log.time_remaining.clear()

    stub.GetUser(pb.GetUserRequest(name="users/ada1"))

    remaining = backend_log.time_remaining[-1]
    assert remaining is not None
    assert DEFAULT_DEADLINE_SECONDS - 1 < remaining < DEFAULT_DEADLINE_SECONDS + 0.1


def test_slow_backend_exceeds_client_deadline(stub):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetUser(pb.GetUserRequest(name="users/slow-2000"), timeout=0.3)
    elapsed = time.monotonic() - started

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.0


def test_hung_read_message_says_retry(stub):
    # Without a deadline of its own, the caller gets the gateway's error at
    # the gateway's default deadline.
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetUser(pb.GetUserRequest(name="users/hang"))
    error = caught.value

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.details() == (
        "user_service did not answer within the call's deadline; the call only "
        "reads, so retry it, or retry with a longer deadline"
    )
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "BACKEND_DEADLINE_EXCEEDED"
    assert info.metadata["method"] == "splitlog.users.v1.UsersService.GetUser"


def test_hung_read_over_rest_504_says_retry(gateway):
    url = f"http://127.0.0.1:{gateway.http_port}/v1/users/hang"

    response = httpx.get(url, headers={"grpc-timeout": "500m"}, timeout=10)

    assert response.status_code == 504
    message = response.json()["error"]["message"]
    assert "the call only reads, so retry it" in message
    assert "request id" not in message


def _method(service: str, name: str):
    for public in public_services():
        if public.full_name == service:
            return public.descriptor.methods_by_name[name]
    raise AssertionError(f"{service} is not a public service")


@pytest.mark.parametrize(
    ("service", "method", "advice"),
    [
        ("splitlog.users.v1.UsersService", "GetUser", "the call only reads"),
        ("splitlog.logs.v1.LogsService", "TailLogEntries", "the call only reads"),
        (
            "splitlog.users.v1.UsersService",
            "CreateUser",
            "retry it with the same request id",
        ),
        (
            "splitlog.logs.v1.LogsService",
            "WriteLogEntries",
            "retry it with the same request id",
        ),
        (
            "splitlog.users.v1.UsersService",
            "UpdateUser",
            "read what it changes before you retry it",
        ),
        (
            "splitlog.expenses.v1.ExpensesService",
            "DeleteExpense",
            "read what it changes before you retry it",
        ),
    ],
)
def test_deadline_advice_by_method_kind(service, method, advice):
    backend = Backend("some_service", "127.0.0.1:1", channel=None)

    message = str(backend_deadline_exceeded(backend, _method(service, method)))

    assert advice in message
    if "request id" not in advice:
        assert "request id" not in message


def test_client_cancel_cancels_backend_call(stub, backend_log):
    backend_log.cancelled.clear()
    backend_log.hanging.clear()
    future = stub.GetUser.future(pb.GetUserRequest(name="users/hang"), timeout=10)
    assert backend_log.hanging.wait(5), "the backend never received the call"

    future.cancel()

    assert backend_log.cancelled.wait(5), "the backend call was not cancelled"


def _call_expense_service(channel) -> grpc.RpcError:
    method = next(
        m
        for s in public_services()
        if s.backend == "expense_service"
        for m in s.descriptor.methods
    )
    call = channel.unary_unary(method_path(method))
    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=5)
    return caught.value


def test_unreachable_backend_is_unavailable(channel):
    error = _call_expense_service(channel)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "expense_service" in error.details()
    details = error_details(error)
    assert details["ErrorInfo"].reason == "BACKEND_UNAVAILABLE"
    assert details["ErrorInfo"].metadata["backend"] == "expense_service"
    assert details["RetryInfo"].retry_delay.ToNanoseconds() > 0


def test_unreachable_backend_hides_address(loop_thread, gateway_config, caplog):
    caplog.set_level(logging.WARNING, logger="gateway.proxy")
    address = gateway_config.expense_service_addr
    gateway = loop_thread.run(build(gateway_config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            first = _call_expense_service(channel)
            second = _call_expense_service(channel)
    finally:
        loop_thread.run(gateway.stop(0))

    for error in (first, second):
        assert error.details() == "expense_service is unavailable; retry in 1s"
        assert "127.0.0.1" not in error.details()
        assert dict(error_details(error)["ErrorInfo"].metadata) == {
            "backend": "expense_service"
        }
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "gateway.proxy" and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert f"expense_service at {address} is unreachable" in warnings[0]


def test_stopped_backend_is_unavailable(loop_thread, gateway_config, backend_log):
    other = start_backend(backend_log)
    config = gateway_config.replace(user_service_addr=f"127.0.0.1:{other.port}")
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.UsersServiceStub(channel)
            stub.GetUser(pb.GetUserRequest(name="users/ada1"), timeout=5)
            other.stop(0)

            with pytest.raises(grpc.RpcError) as caught:
                stub.GetUser(pb.GetUserRequest(name="users/ada1"), timeout=5)
    finally:
        other.stop(0)
        loop_thread.run(gateway.stop(0))

    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "user_service" in error.details()
    assert error_details(error)["ErrorInfo"].reason == "BACKEND_UNAVAILABLE"


def _get_user_until_served(stub, seconds: float) -> None:
    """Call GetUser until it succeeds, while the channel reconnects."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            stub.GetUser(pb.GetUserRequest(name="users/ada1"), timeout=5)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_backend_back_logs_recovery(loop_thread, gateway_config, backend_log, caplog):
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    first = start_backend(backend_log)
    address = f"127.0.0.1:{first.port}"
    config = gateway_config.replace(user_service_addr=address)
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.UsersServiceStub(channel)
            stub.GetUser(pb.GetUserRequest(name="users/ada1"), timeout=5)
            first.stop(0)
            with pytest.raises(grpc.RpcError):
                stub.GetUser(pb.GetUserRequest(name="users/ada1"), timeout=5)
            again = start_backend(backend_log, address)
            try:
                _get_user_until_served(stub, 20)
            finally:
                again.stop(0)
    finally:
        loop_thread.run(gateway.stop(0))

    recoveries = [
        record.getMessage()
        for record in caplog.records
        if record.name == "gateway.proxy"
        and record.levelno == logging.INFO
        and "succeed again" in record.getMessage()
    ]
    assert len(recoveries) == 1, caplog.text
    assert recoveries[0].startswith("calls to user_service succeed again after")


def test_server_stream_forwarded(channel):
    method = find_method(client_streaming=False, server_streaming=True)
    call = channel.unary_stream(method_path(method))

    responses = list(call(b"\x0a\x03abc", timeout=5))

    assert responses == [b"\x0a\x03abc"] * 3


def test_client_stream_forwarded(channel):
    method = find_method(client_streaming=True, server_streaming=False)
    call = channel.stream_unary(method_path(method))

    response = call(iter([b"\x0a\x01a", b"\x0a\x01b", b"\x0a\x01c"]), timeout=5)

    assert response == b"\x0a\x01a\x0a\x01b\x0a\x01c"


def test_unknown_method_is_unimplemented(channel):
    call = channel.unary_unary("/splitlog.users.v1.UsersService/NoSuchMethod")

    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=5)

    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_internal_service_not_exposed(channel):
    call = channel.unary_unary("/splitlog.logs.v1.ReplicationService/GetNodeStatus")

    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=5)

    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_gateway_service_served_by_gateway(channel):
    if not gateway_services():
        pytest.skip("the gateway API has no generated code")
    call = channel.unary_unary(f"/{GATEWAY_SERVICE}/GetGroupOverview")

    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=5)

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(error)["ErrorInfo"].reason == "REQUIRED"


def _check_until(health_stub, service: str, expected, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        status = health_stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        ).status
        if status == expected or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_health_lists_every_public_service(gateway, channel):
    health_stub = health_pb2_grpc.HealthStub(channel)
    names = [service.full_name for service in gateway.services]

    assert "splitlog.users.v1.UsersService" in names
    for name in ["", *names]:
        response = health_stub.Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
        assert response.status in (SERVING, NOT_SERVING), name


def test_health_follows_backend(gateway, channel):
    health_stub = health_pb2_grpc.HealthStub(channel)
    unreachable = next(s for s in gateway.services if s.backend == "expense_service")

    assert (
        _check_until(health_stub, "splitlog.users.v1.UsersService", SERVING) == SERVING
    )
    assert _check_until(health_stub, unreachable.full_name, NOT_SERVING) == NOT_SERVING
    # One unreachable backend makes the whole gateway NOT_SERVING.
    assert _check_until(health_stub, "", NOT_SERVING) == NOT_SERVING


def _listed_services(gateway) -> list[str]:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", f"127.0.0.1:{gateway.grpc_port}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.split()


def test_reflection_lists_services(gateway):
    listed = _listed_services(gateway)

    for service in gateway.services:
        assert service.full_name in listed
    for descriptor in gateway_services():
        assert descriptor.full_name in listed
    assert "grpc.health.v1.Health" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed
    for internal in INTERNAL_SERVICES:
        assert internal not in listed


def _describe(gateway, symbol: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", f"127.0.0.1:{gateway.grpc_port}"]
        + ["describe", symbol],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("internal", sorted(INTERNAL_SERVICES))
def test_reflection_cannot_describe_internal(gateway, internal):
    result = _describe(gateway, internal)

    assert result.returncode != 0
    assert "not found" in result.stderr.lower()


def test_reflection_describes_public_service(gateway):
    result = _describe(gateway, "splitlog.users.v1.UsersService")

    assert result.returncode == 0, result.stderr
    assert "rpc GetUser" in result.stdout


def test_grpcurl_call_through_reflection(gateway):
    result = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            '{"name": "users/grace"}',
            f"127.0.0.1:{gateway.grpc_port}",
            "splitlog.users.v1.UsersService/GetUser",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert '"name": "users/grace"' in result.stdout


def test_build_fails_on_busy_http_port(loop_thread, gateway_config):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"

        with pytest.raises(RuntimeError, match="cannot bind HTTP address"):
            loop_thread.run(build(gateway_config, "127.0.0.1:0", address))


def test_stop_flips_health_and_finishes_calls(loop_thread, gateway_config):
    gateway = loop_thread.run(build(gateway_config, "127.0.0.1:0", "127.0.0.1:0"))
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.UsersServiceStub(channel)
        health_stub = health_pb2_grpc.HealthStub(channel)
        _check_until(health_stub, "splitlog.users.v1.UsersService", SERVING)
        watch = health_stub.Watch(
            health_pb2.HealthCheckRequest(service="splitlog.users.v1.UsersService"),
            timeout=10,
        )
        first_status = next(watch).status
        in_flight = stub.GetUser.future(
            pb.GetUserRequest(name="users/slow-500"), timeout=5
        )
        time.sleep(0.1)

        stop = asyncio.run_coroutine_threadsafe(gateway.stop(1.5), loop_thread.loop)
        second_status = next(watch).status
        response = in_flight.result(5)
        stop.result(10)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetUser(pb.GetUserRequest(name="users/ada1"), timeout=2)

    assert first_status == SERVING
    assert second_status == NOT_SERVING
    assert response.user.name == "users/slow-500"
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
