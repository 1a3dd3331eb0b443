"""A service's health and status codes follow whether its database responds.

The unreachable database is a PostgreSQL URL on a loopback port that nothing
listens on, so each connection attempt is refused at once. The restart of a
real PostgreSQL server is in tests/system/test_database_restart.py.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import text

from splitlog_runtime.database import Database
from splitlog_runtime.server import create_server
from splitlog_runtime.service import DatabaseWatch
from tests.ports import free_ports

SERVICE = "splitlog.test.Stored"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def unreachable() -> Database:
    database = Database(f"postgresql://postgres@127.0.0.1:{free_ports(1)[0]}/none")
    yield database
    database.dispose()


@pytest.fixture
def reachable(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'probe.db'}")
    yield database
    database.dispose()


def _host(database: Database):
    def read(request: bytes, context: grpc.ServicerContext) -> bytes:
        with database.transaction() as session:
            return str(session.execute(text("SELECT 1")).scalar()).encode()

    def register(server: grpc.Server) -> None:
        handlers = {"Read": grpc.unary_unary_rpc_method_handler(read)}
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers)]
        )

    host = create_server("stored", [register], [SERVICE])
    host.start()
    host.mark_serving()
    return host


def _health(host, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            .status
        )


def test_ping_detects_unreachable_database(reachable, unreachable):
    assert reachable.ping() is True
    assert unreachable.ping() is False


def test_watch_unreachable_database_not_serving(unreachable):
    host = _host(unreachable)
    watch = DatabaseWatch(host, unreachable, interval=0.05)
    try:
        assert _health(host) == SERVING
        assert watch.check() is False
        assert _health(host) == NOT_SERVING
        assert _health(host, SERVICE) == NOT_SERVING
    finally:
        host.stop(0)


def test_watch_reachable_database_serving(reachable):
    host = _host(reachable)
    watch = DatabaseWatch(host, reachable, interval=0.05)
    watch.start()
    try:
        assert watch.check() is True
        assert _health(host) == SERVING
    finally:
        watch.stop()
        host.stop(0)


def test_watch_ignores_stopped_host(unreachable):
    host = _host(unreachable)
    watch = DatabaseWatch(host, unreachable, interval=0.05)
    host.stop(0)

    assert watch.check() is False
    assert watch.reachable is True


def test_unreachable_database_call_unavailable(unreachable):
    host = _host(unreachable)
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            channel.unary_unary(f"/{SERVICE}/Read")(b"", timeout=10)
    finally:
        host.stop(0)

    status = rpc_status.from_call(caught.value)
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "database" in caught.value.details()
    assert "127.0.0.1" not in caught.value.details()
    assert info.reason == "DATABASE_UNAVAILABLE"
