"""The shared runtime against real servers: errors, health, reflection, stop."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from splitlog_runtime.channels import insecure_channel
from splitlog_runtime.errors import (
    RETRY_PUSHBACK_KEY,
    NotFound,
    Resource,
    Unavailable,
    invalid_field,
)
from splitlog_runtime.server import create_server

SERVICE = "splitlog.test.Probe"
# Calls that the handler received, by request text.
_ATTEMPTS: dict[str, int] = {}


def _behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
    kind = request.decode()
    if kind == "invalid":
        raise invalid_field("user.email", "'x' is not an email address")
    if kind == "missing":
        raise NotFound(
            "user 'users/u1' not found",
            reason="USER_NOT_FOUND",
            resource=Resource("splitlog.dev/User", "users/u1"),
        )
    if kind == "overloaded":
        raise Unavailable("try later", retry_delay=1.5)
    if kind.startswith("waited"):
        _ATTEMPTS[kind] = _ATTEMPTS.get(kind, 0) + 1
        raise Unavailable(
            "waited the whole deadline", retry_delay=1.0, final_attempt=True
        )
    if kind == "abort":
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    if kind == "crash":
        raise RuntimeError("password=hunter2 leaked from a driver")
    if kind.startswith("huge:"):
        raise invalid_field("name", f"{kind!r} is not a valid name; use users/ID")
    if kind == "slow":
        time.sleep(0.5)
    return b"ok:" + request


def _stream(request: bytes, context: grpc.ServicerContext):
    yield b"first"
    raise invalid_field("page_size", "must be positive")


def _register(server: grpc.Server) -> None:
    handlers = {
        "Call": grpc.unary_unary_rpc_method_handler(_behaviour),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    }
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, handlers)]
    )


@pytest.fixture
def host():
    host = create_server("probe", [_register], [SERVICE])
    host.start()
    host.mark_serving()
    yield host
    host.stop(0)


@pytest.fixture
def channel(host):
    with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
        yield channel


def _call(channel: grpc.Channel, kind: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/Call")(kind.encode(), timeout=5)
    return caught.value


def _detail(status, message_type):
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            value = message_type()
            detail.Unpack(value)
            return value
    return None


def test_domain_error_carries_error_info_and_field_violation(channel):
    error = _call(channel, "invalid")
    status = rpc_status.from_call(error)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _detail(status, error_details_pb2.ErrorInfo).reason == "INVALID_FIELD"
    assert _detail(status, error_details_pb2.ErrorInfo).domain == "splitlog.dev"
    violation = _detail(status, error_details_pb2.BadRequest).field_violations[0]
    assert violation.field == "user.email"


def test_not_found_carries_resource_info(channel):
    error = _call(channel, "missing")
    status = rpc_status.from_call(error)

    assert error.code() == grpc.StatusCode.NOT_FOUND
    info = _detail(status, error_details_pb2.ResourceInfo)
    assert info.resource_name == "users/u1"
    assert _detail(status, error_details_pb2.ErrorInfo).reason == "USER_NOT_FOUND"


def test_retryable_error_carries_retry_info(channel):
    error = _call(channel, "overloaded")
    retry = _detail(rpc_status.from_call(error), error_details_pb2.RetryInfo)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000


def test_final_attempt_not_retried(host):
    # splitlog's channels retry UNAVAILABLE. An error that already took the
    # deadline stops that retry, so the caller gets it and not a timeout.
    with insecure_channel(f"127.0.0.1:{host.port}") as retrying:
        error = _call(retrying, "waited-final")
        plain = _call(retrying, "overloaded")

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "waited the whole deadline"
    assert (RETRY_PUSHBACK_KEY, "-1") in error.trailing_metadata()
    assert _ATTEMPTS["waited-final"] == 1
    assert RETRY_PUSHBACK_KEY not in dict(plain.trailing_metadata())


def test_log_writes_not_retried():
    # The log router may store part of a batch before it returns UNAVAILABLE,
    # so a retry of a batch without a request id would store it twice.
    attempts: dict[str, int] = {}

    def unavailable(method: str) -> grpc.RpcMethodHandler:
        def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
            attempts[method] = attempts.get(method, 0) + 1
            raise Unavailable("a shard has no leader", retry_delay=0.1)

        return grpc.unary_unary_rpc_method_handler(behaviour)

    host = create_server(
        "probe",
        [
            lambda server: server.add_generic_rpc_handlers(
                [
                    grpc.method_handlers_generic_handler(
                        "splitlog.logs.v1.LogsService",
                        {
                            "WriteLogEntries": unavailable("WriteLogEntries"),
                            "ListLogEntries": unavailable("ListLogEntries"),
                        },
                    ),
                    grpc.method_handlers_generic_handler(
                        "opentelemetry.proto.collector.logs.v1.LogsService",
                        {"Export": unavailable("Export")},
                    ),
                ]
            )
        ],
        [],
    )
    host.start()
    try:
        with insecure_channel(f"127.0.0.1:{host.port}") as retrying:
            for path in (
                "/splitlog.logs.v1.LogsService/WriteLogEntries",
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                "/splitlog.logs.v1.LogsService/ListLogEntries",
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    retrying.unary_unary(path)(b"", timeout=10)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        host.stop(0)

    assert attempts["WriteLogEntries"] == 1
    assert attempts["Export"] == 1
    assert attempts["ListLogEntries"] > 1


def test_unexpected_exception_is_internal_without_internals(channel, caplog):
    error = _call(channel, "crash")

    assert error.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in error.details()
    assert "RuntimeError" not in error.details()
    logged = [r for r in caplog.records if r.exc_info]
    assert logged, "the traceback must reach the server log"
    assert "incident" in error.details()


def test_error_echoing_a_huge_value_stays_deliverable(channel):
    error = _call(channel, "huge:" + "a" * 20_000)
    status = rpc_status.from_call(error)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(error.details()) <= 1024
    assert error.details().endswith("use users/ID")
    assert _detail(status, error_details_pb2.ErrorInfo).reason == "INVALID_FIELD"


def test_explicit_abort_passes_through(channel):
    error = _call(channel, "abort")

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "no"


def test_streaming_error_after_first_message(channel):
    responses = channel.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5)
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in responses:
            received.append(response)

    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_follows_lifecycle():
    host = create_server("probe", [_register], [SERVICE])
    host.start()
    with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=SERVICE)
        before = health.Check(request, timeout=5).status
        host.mark_serving()
        during = health.Check(request, timeout=5).status
        host.mark_not_serving()
        after = health.Check(request, timeout=5).status
    host.stop(0)

    assert before == health_pb2.HealthCheckResponse.NOT_SERVING
    assert during == health_pb2.HealthCheckResponse.SERVING
    assert after == health_pb2.HealthCheckResponse.NOT_SERVING


def _listed_services(port: int) -> set[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
    return {s.name for s in response.list_services_response.service}


def test_reflection_lists_services_and_can_be_switched_off():
    on = create_server("probe", [_register], [SERVICE])
    off = create_server("probe", [_register], [SERVICE], reflection_enabled=False)
    on.start()
    off.start()
    try:
        listed = _listed_services(on.port)
        with pytest.raises(grpc.RpcError) as caught:
            _listed_services(off.port)
    finally:
        on.stop(0)
        off.stop(0)

    assert {SERVICE, "grpc.health.v1.Health"} <= listed
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_stop_lets_in_flight_calls_finish_and_runs_closers():
    host = create_server("probe", [_register], [SERVICE])
    host.start()
    host.mark_serving()
    closed = threading.Event()
    host.on_stop(closed.set)
    results = []
    with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/Call")
        worker = threading.Thread(
            target=lambda: results.append(call(b"slow", timeout=5))
        )
        worker.start()
        time.sleep(0.1)
        host.stop(grace=3)
        worker.join(5)

    assert results == [b"ok:slow"]
    assert closed.is_set()


def test_open_watch_streams_hold_no_worker_thread():
    host = create_server("probe", [_register], [SERVICE], workers=2)
    host.start()
    host.mark_serving()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE)
            watches = [health.Watch(request, timeout=10) for _ in range(4)]
            first = [next(watch).status for watch in watches]
            answer = channel.unary_unary(f"/{SERVICE}/Call")(b"ok", timeout=3)
            for watch in watches:
                watch.cancel()
    finally:
        host.stop(0)

    assert first == [health_pb2.HealthCheckResponse.SERVING] * 4
    assert answer == b"ok:ok"


def test_watch_churn_during_changes_keeps_serving():
    """Watch streams that end while statuses change never stall the server.

    Ending a stream runs its close callback on grpcio's polling thread, the
    thread that also completes sends. A close callback that waited for a
    lock held during a send stopped every call of the server.
    """
    host = create_server("probe", [_register], [SERVICE], workers=4)
    host.start()
    host.mark_serving()
    stop_flipping = threading.Event()

    def flip() -> None:
        while not stop_flipping.is_set():
            host.mark_not_serving()
            host.mark_serving()

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE)

            def churn() -> None:
                for _ in range(100):
                    watch = health.Watch(request, timeout=10)
                    next(watch)
                    watch.cancel()

            churners = [threading.Thread(target=churn) for _ in range(4)]
            for churner in churners:
                churner.start()
            for churner in churners:
                churner.join(60)
            answer = channel.unary_unary(f"/{SERVICE}/Call")(b"ok", timeout=5)
    finally:
        stop_flipping.set()
        flipper.join(5)
        stopper = threading.Thread(target=host.stop, args=(0,), daemon=True)
        stopper.start()
        stopper.join(10)

    assert answer == b"ok:ok"
    assert not flipper.is_alive()
    assert not stopper.is_alive()


def test_watch_gets_newest_status_last():
    host = create_server("probe", [_register], [SERVICE])
    host.start()
    host.mark_serving()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
            )
            first = next(watch).status
            host.mark_not_serving()
            second = next(watch).status
            host.stop(0)
            rest = [response.status for response in watch]
    finally:
        host.stop(0)

    assert first == health_pb2.HealthCheckResponse.SERVING
    assert second == health_pb2.HealthCheckResponse.NOT_SERVING
    assert rest in ([], [health_pb2.HealthCheckResponse.NOT_SERVING])
