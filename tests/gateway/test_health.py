"""Health at the gateway and at shutdown, against real servers.

The gateway's whole-server status follows every backend. A backend that
stops replying to health checks becomes NOT_SERVING, though its Watch streams
stay open. Open Watch streams end right after they report NOT_SERVING, both
at a sync service and at the gateway, so that they do not hold a stopping
server for its grace.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import build
from gateway.health import BackendHealthWatcher, HealthServicer
from gateway.proxy import BackendPool
from gateway.services import GATEWAY_SERVICE, gateway_services, public_services
from splitlog.users.v1 import users_service_pb2, users_service_pb2_grpc
from splitlog_cli.main import main
from splitlog_runtime.config import Config
from splitlog_runtime.server import ServiceHost, create_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
USERS_SERVICE = "splitlog.users.v1.UsersService"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# A stop with open Watch streams must return well within this long grace.
LONG_GRACE = 10.0
PROMPT_STOP_SECONDS = 2.0
# Seconds between the gateway's health checks of a backend in the probe tests.
PROBE_SECONDS = 0.3
# Handler threads of the backend whose handlers the probe tests block.
BLOCKABLE_WORKERS = 2
BLOCKER_SERVICE = "test.Blocker"


def _start_health_only_backend() -> ServiceHost:
    """Start a server that reports SERVING for every public service name."""
    names = [service.full_name for service in public_services()]
    host = create_server("health_only", [], names, workers=4)
    host.start()
    host.mark_serving()
    return host


class _CheckCounter(grpc.ServerInterceptor):
    """Count the Health/Check calls that a server receives."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method == HEALTH_CHECK:
            with self._lock:
                self.count += 1
        return continuation(handler_call_details)


def _start_blockable_backend(
    release: threading.Event, counter: _CheckCounter
) -> ServiceHost:
    """Start a backend whose `test.Blocker/Block` blocks a thread until `release`.

    Every public service name is SERVING, and the server has
    BLOCKABLE_WORKERS handler threads, so that many Block calls leave no
    thread for a health check.
    """

    def block(request: bytes, context) -> bytes:
        release.wait(60)
        return b""

    def register(server: grpc.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(block)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(BLOCKER_SERVICE, {"Block": handler})]
        )

    names = [service.full_name for service in public_services()]
    host = create_server(
        "blockable",
        [register],
        names,
        workers=BLOCKABLE_WORKERS,
        interceptors=[counter],
    )
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


def _every_backend_at(config: Config, address: str) -> Config:
    return config.replace(
        user_service_addr=address,
        expense_service_addr=address,
        balance_service_addr=address,
        log_service_addr=address,
    )


@pytest.fixture
def all_backends(loop_thread, gateway_config):
    """A gateway whose four backends are one server reporting SERVING."""
    backend = _start_health_only_backend()
    address = f"127.0.0.1:{backend.port}"
    config = _every_backend_at(gateway_config, address)
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield backend, gateway, channel
    loop_thread.run(gateway.stop(0))
    backend.stop(0)


@pytest.fixture
def blockable_backend(loop_thread, gateway_config):
    """A gateway that checks its backends' health every PROBE_SECONDS.

    Its four backends are one server whose handler threads a test can block.
    """
    release = threading.Event()
    counter = _CheckCounter()
    backend = _start_blockable_backend(release, counter)
    address = f"127.0.0.1:{backend.port}"
    config = _every_backend_at(gateway_config, address).replace(
        gateway_health_probe_seconds=PROBE_SECONDS
    )
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            yield backend, release, counter, channel
    finally:
        release.set()
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


def test_blocked_backend_not_serving_until_free(blockable_backend):
    backend, release, _, channel = blockable_backend
    _wait_status(channel, "", SERVING)

    with grpc.insecure_channel(f"127.0.0.1:{backend.port}") as direct:
        block = direct.unary_unary(f"/{BLOCKER_SERVICE}/Block")
        with ThreadPoolExecutor(BLOCKABLE_WORKERS) as pool:
            calls = [
                pool.submit(block, b"", timeout=60) for _ in range(BLOCKABLE_WORKERS)
            ]
            # The backend's Watch streams stay open and keep reporting
            # SERVING, so only the unanswered checks can change this. Each
            # backend has its own probe, so the whole server can turn
            # NOT_SERVING on another backend's misses before this one's.
            _wait_status(channel, "", NOT_SERVING, timeout=20)
            _wait_status(channel, USERS_SERVICE, NOT_SERVING, timeout=20)
            users_blocked = _status(channel, USERS_SERVICE)
            release.set()
            for call in calls:
                call.result(timeout=30)
        _wait_status(channel, "", SERVING, timeout=20)
        users_free = _status(channel, USERS_SERVICE)

    assert users_blocked == NOT_SERVING
    assert users_free == SERVING


def test_unreachable_backend_stays_unresponsive(blockable_backend, caplog):
    # A hung backend that then becomes unreachable must not count as
    # responding again, because UNAVAILABLE is no response.
    caplog.set_level(logging.INFO, logger="gateway.health")
    backend, release, _, channel = blockable_backend
    _wait_status(channel, "", SERVING)

    with grpc.insecure_channel(f"127.0.0.1:{backend.port}") as direct:
        block = direct.unary_unary(f"/{BLOCKER_SERVICE}/Block")
        with ThreadPoolExecutor(BLOCKABLE_WORKERS) as pool:
            calls = [
                pool.submit(block, b"", timeout=60) for _ in range(BLOCKABLE_WORKERS)
            ]
            _wait_status(channel, USERS_SERVICE, NOT_SERVING, timeout=20)
            _wait_logged(caplog, "did not reply to 2 health checks in a row")
            backend.stop(0)
            release.set()
            for call in calls:
                with pytest.raises(grpc.RpcError):
                    call.result(timeout=30)
    # Several probes of each backend find it unreachable.
    time.sleep(6 * PROBE_SECONDS)

    replies_again = [
        record.getMessage()
        for record in caplog.records
        if "replies to health checks again" in record.getMessage()
    ]
    assert replies_again == []
    assert _status(channel, USERS_SERVICE) == NOT_SERVING


def test_probe_survives_unexpected_error(loop_thread, caplog):
    caplog.set_level(logging.ERROR, logger="gateway.health")
    backend = _start_health_only_backend()
    address = f"127.0.0.1:{backend.port}"

    async def scenario() -> list[str]:
        services = public_services()
        pool = BackendPool(services, lambda name: address, 4 * 1024 * 1024)
        watcher = BackendHealthWatcher(HealthServicer(), pool, services, 0.1)
        watcher.start()
        await asyncio.sleep(0.3)
        # A check on a closed channel raises grpc's UsageError, which is no
        # RPC status.
        await pool.close()
        await asyncio.sleep(0.5)
        alive = [
            task.get_name()
            for task in asyncio.all_tasks()
            if task.get_name().startswith("health-probe ") and not task.done()
        ]
        await watcher.stop()
        return alive

    try:
        alive = loop_thread.run(asyncio.wait_for(scenario(), 10))
    finally:
        backend.stop(0)

    backends = {service.backend for service in public_services()}
    assert sorted(alive) == sorted(f"health-probe {name}" for name in backends)
    failures = [record for record in caplog.records if record.name == "gateway.health"]
    assert len(failures) == len(backends)
    assert all(record.exc_info is not None for record in failures)
    assert "Channel is closed" in caplog.text


def test_watch_survives_unexpected_error(loop_thread, caplog):
    caplog.set_level(logging.ERROR, logger="gateway.health")
    backend = _start_health_only_backend()
    address = f"127.0.0.1:{backend.port}"
    names = [service.full_name for service in public_services()]

    async def scenario() -> tuple[list[str], bool]:
        services = public_services()
        pool = BackendPool(services, lambda name: address, 4 * 1024 * 1024)
        servicer = HealthServicer()
        # No probes, so every error logged comes from a Watch loop.
        watcher = BackendHealthWatcher(servicer, pool, services, 0.0)
        watcher.start()
        tasks = [
            task
            for task in asyncio.all_tasks()
            if task.get_name().startswith("health-watch ")
        ]
        await _wait_servicer(servicer, names, SERVING)
        # The stopping backend ends each stream after NOT_SERVING, so every
        # loop waits its first retry delay of 0.5 s. Closing the channels
        # meanwhile makes the next Watch raise grpc's UsageError, which is no
        # RPC status. A close during a call would cancel the loop instead.
        backend.stop(0)
        await _wait_servicer(servicer, names, NOT_SERVING)
        await pool.close()
        await asyncio.sleep(2.0)
        alive = [task.get_name() for task in tasks if not task.done()]
        await watcher.stop()
        # A loop that stop() cancels ends by cancellation, not by an error.
        ended_cleanly = all(task.cancelled() for task in tasks)
        return alive, ended_cleanly

    try:
        alive, ended_cleanly = loop_thread.run(asyncio.wait_for(scenario(), 15))
    finally:
        backend.stop(0)

    assert sorted(alive) == sorted(f"health-watch {name}" for name in names)
    assert ended_cleanly
    failures = [record for record in caplog.records if record.name == "gateway.health"]
    assert len(failures) == len(names)
    assert all(record.exc_info is not None for record in failures)
    assert "Channel is closed" in caplog.text


async def _wait_servicer(
    servicer: HealthServicer, names: list[str], expected: int
) -> None:
    while any(servicer.status(name) != expected for name in names):
        await asyncio.sleep(0.01)


def _wait_logged(caplog, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, f"nothing logged {text!r}"
        time.sleep(0.05)


def test_probe_one_check_per_backend_per_interval(blockable_backend):
    _, _, counter, channel = blockable_backend
    _wait_status(channel, "", SERVING)
    backends = len({service.backend for service in public_services()})

    before = counter.count
    started = time.monotonic()
    time.sleep(10 * PROBE_SECONDS)
    checks = counter.count - before
    elapsed = time.monotonic() - started

    # A slow machine only lowers the count, so this bound cannot flake.
    assert checks <= backends * (elapsed / PROBE_SECONDS + 2)
    assert checks >= 1


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
    assert "expense_service (splitlog.expenses.v1.ExpensesService)" in error[1]


def _healthz(gateway, method: str = "GET", **headers: str) -> httpx.Response:
    url = f"http://127.0.0.1:{gateway.http_port}/healthz"
    return httpx.request(method, url, headers=headers, timeout=10)


def test_healthz_follows_overall_health(all_backends):
    backend, gateway, channel = all_backends
    _wait_status(channel, "", SERVING)

    serving = _healthz(gateway)
    head = _healthz(gateway, "HEAD")
    backend.health.set(USERS_SERVICE, NOT_SERVING)
    _wait_status(channel, "", NOT_SERVING)
    not_serving = _healthz(gateway)

    assert serving.status_code == 200
    assert serving.json() == {"status": "SERVING"}
    assert head.status_code == 200
    assert not_serving.status_code == 503
    assert not_serving.json() == {"status": "NOT_SERVING"}


def test_healthz_503_with_backends_down(gateway, channel):
    _wait_status(channel, "splitlog.expenses.v1.ExpensesService", NOT_SERVING)

    response = _healthz(gateway)

    assert response.status_code == 503
    assert response.json() == {"status": "NOT_SERVING"}


def test_healthz_other_method_405(gateway):
    response = _healthz(gateway, "POST")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("open_health", "expected"), [(True, 503), (False, 401)])
def test_healthz_auth_follows_open_health(
    loop_thread, gateway_config, open_health, expected
):
    config = gateway_config.replace(
        auth_required=True,
        auth_secret="healthz-secret-" + "h" * 40,
        auth_open_health=open_health,
    )
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        response = _healthz(gateway)
    finally:
        loop_thread.run(gateway.stop(0))

    # Two backends are unreachable, so an admitted probe gets 503.
    assert response.status_code == expected, response.text


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


# The busy-backend test: each call occupies one of the backend's BUSY_WORKERS
# handler threads for SLOW_CALL_SECONDS, and BUSY_CLIENTS callers keep
# calling. Health checks then wait in the queue behind calls for longer than
# PROBE_SECONDS, while calls still complete every fraction of a second.
BUSY_WORKERS = 2
BUSY_CLIENTS = 6
SLOW_CALL_SECONDS = 0.4
# How long the callers go on after the gateway reports the backend NOT_SERVING.
BUSY_LOAD_SECONDS = 2.0


def _start_slow_users_backend() -> ServiceHost:
    """Start a users backend whose GetUser takes SLOW_CALL_SECONDS."""

    def slow_get_user(request: bytes, context) -> bytes:
        time.sleep(SLOW_CALL_SECONDS)
        return users_service_pb2.GetUserResponse().SerializeToString()

    def register(server: grpc.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(slow_get_user)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(USERS_SERVICE, {"GetUser": handler})]
        )

    host = create_server(
        "slow_users", [register], [USERS_SERVICE], workers=BUSY_WORKERS
    )
    host.start()
    host.mark_serving()
    return host


def test_busy_backend_still_gets_calls(loop_thread, gateway_config):
    # Checks that time out behind slow calls mark the backend NOT_SERVING,
    # but the backend completes calls, so the gateway goes on forwarding.
    backend = _start_slow_users_backend()
    config = gateway_config.replace(
        user_service_addr=f"127.0.0.1:{backend.port}",
        gateway_health_probe_seconds=PROBE_SECONDS,
    )
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    stop = threading.Event()
    codes: list[grpc.StatusCode] = []
    failures: list[str] = []
    lock = threading.Lock()

    def call_until_stopped(stub: users_service_pb2_grpc.UsersServiceStub) -> None:
        request = users_service_pb2.GetUserRequest(name="users/busy")
        while not stop.is_set():
            try:
                stub.GetUser(request, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
                with lock:
                    failures.append(f"{code.name}: {error.details()}")
            with lock:
                codes.append(code)

    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            _wait_status(channel, USERS_SERVICE, SERVING)
            stub = users_service_pb2_grpc.UsersServiceStub(channel)
            with ThreadPoolExecutor(BUSY_CLIENTS) as pool:
                callers = [
                    pool.submit(call_until_stopped, stub) for _ in range(BUSY_CLIENTS)
                ]
                try:
                    _wait_status(channel, USERS_SERVICE, NOT_SERVING, timeout=20)
                    time.sleep(BUSY_LOAD_SECONDS)
                finally:
                    stop.set()
                for caller in callers:
                    caller.result(timeout=60)
    finally:
        loop_thread.run(gateway.stop(0))
        backend.stop(0)

    assert failures == []
    assert len(codes) >= BUSY_WORKERS * BUSY_LOAD_SECONDS / SLOW_CALL_SECONDS
