"""Health at the gateway and at shutdown, against real servers.

The gateway's whole-server status follows every backend, and open Watch
streams end right after they report NOT_SERVING, both at a sync service and
at the gateway, so that they do not hold a stopping server for its grace.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import build
from gateway.health import HealthServicer
from gateway.services import GATEWAY_SERVICE, gateway_services, public_services
from splitlog_cli.main import main
from splitlog_runtime.server import ServiceHost, create_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
USERS_SERVICE = "splitlog.users.v1.UsersService"
# A stop with open Watch streams must return well within this long grace.
LONG_GRACE = 10.0
PROMPT_STOP_SECONDS = 2.0


def _start_health_only_backend() -> ServiceHost:
    """Start a server that reports SERVING for every public service name."""
    names = [service.full_name for service in public_services()]
    host = create_server("health_only", [], names, workers=4)
    host.start()
    host.mark_serving()
    return host


def _status(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    return stub.Check(request, timeout=5).status


def _wait_status(channel, service: str, expected: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while (status := _status(channel, service)) != expected:
        assert time.monotonic() < deadline, f"{service!r} stayed {status}"
        time.sleep(0.05)


def _watch(channel: grpc.Channel, service: str):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)


@pytest.fixture
def all_backends(loop_thread, gateway_config):
    """A gateway whose four backends are one server reporting SERVING."""
    backend = _start_health_only_backend()
    address = f"127.0.0.1:{backend.port}"
    config = gateway_config.replace(
        user_service_addr=address,
        expense_service_addr=address,
        balance_service_addr=address,
        log_service_addr=address,
    )
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield backend, gateway, channel
    loop_thread.run(gateway.stop(0))
    backend.stop(0)


def test_overall_serving_when_every_backend_serves(all_backends):
    _, _, channel = all_backends

    _wait_status(channel, "", SERVING)

    for service in public_services():
        assert _status(channel, service.full_name) == SERVING, service.full_name


def test_overall_not_serving_when_one_backend_not(all_backends):
    backend, _, channel = all_backends
    _wait_status(channel, "", SERVING)

    backend.health.set(USERS_SERVICE, NOT_SERVING)

    _wait_status(channel, "", NOT_SERVING)
    assert _status(channel, USERS_SERVICE) == NOT_SERVING
    if gateway_services():
        assert _status(channel, GATEWAY_SERVICE) == SERVING


def test_overall_not_serving_with_backends_down(gateway, channel):
    # The module's gateway cannot reach the expenses and balances backends.
    _wait_status(channel, "splitlog.expenses.v1.ExpensesService", NOT_SERVING)

    overall = _status(channel, "")

    assert overall == NOT_SERVING
    if gateway_services():
        assert _status(channel, GATEWAY_SERVICE) == SERVING


def test_cli_health_fails_with_backend_down(gateway, channel, capsys):
    _wait_status(channel, "splitlog.expenses.v1.ExpensesService", NOT_SERVING)

    status = main(["health", f"127.0.0.1:{gateway.grpc_port}"])

    assert status == 1
    error = capsys.readouterr().err.splitlines()
    assert error[0] == "NOT_SERVING"
    assert "not ready" in error[1]


def test_service_stop_ends_open_watch():
    host = _start_health_only_backend()
    with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
        watch = _watch(channel, "")
        first = next(watch).status

        started = time.monotonic()
        host.stop(LONG_GRACE)
        stop_seconds = time.monotonic() - started
        rest = [response.status for response in watch]

    assert first == SERVING
    assert stop_seconds < PROMPT_STOP_SECONDS
    assert rest == [NOT_SERVING]
    assert watch.code() == grpc.StatusCode.OK


def test_watch_after_service_stop_began_ends():
    host = _start_health_only_backend()
    host.health.enter_graceful_shutdown()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            statuses = [response.status for response in _watch(channel, "")]
    finally:
        host.stop(0)

    assert statuses == [NOT_SERVING]


def test_gateway_stop_ends_open_watch(loop_thread, all_backends):
    backend, gateway, channel = all_backends
    _wait_status(channel, USERS_SERVICE, SERVING)
    watch = _watch(channel, USERS_SERVICE)
    first = next(watch).status

    started = time.monotonic()
    loop_thread.run(gateway.stop(LONG_GRACE))
    stop_seconds = time.monotonic() - started
    rest = [response.status for response in watch]

    assert first == SERVING
    assert stop_seconds < PROMPT_STOP_SECONDS
    assert rest == [NOT_SERVING]
    assert watch.code() == grpc.StatusCode.OK


def test_backend_stop_not_held_by_gateway_watchers(all_backends):
    backend, _, channel = all_backends
    # The gateway keeps one Watch stream per public service open at the backend.
    _wait_status(channel, "", SERVING)

    started = time.monotonic()
    backend.stop(LONG_GRACE)
    stop_seconds = time.monotonic() - started

    assert stop_seconds < PROMPT_STOP_SECONDS
    _wait_status(channel, "", NOT_SERVING)


def test_gateway_health_servicer_ends_watch_at_shutdown(loop_thread):
    async def scenario() -> tuple[list[int], grpc.StatusCode]:
        servicer = HealthServicer()
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await servicer.set("", SERVING)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
            statuses = [(await call.read()).status]
            await servicer.enter_graceful_shutdown()
            while (response := await call.read()) is not grpc.aio.EOF:
                statuses.append(response.status)
            code = await call.code()
        await server.stop(0)
        return statuses, code

    statuses, code = loop_thread.run(asyncio.wait_for(scenario(), 10))

    assert statuses == [SERVING, NOT_SERVING]
    assert code == grpc.StatusCode.OK
