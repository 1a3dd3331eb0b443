"""The router's node calls for a query follow the caller's deadline."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from log_service.query import node_call_timeout, read_timeout
from splitlog_runtime.channels import ANSWER_MARGIN_SECONDS


class _Recorder(health_pb2_grpc.HealthServicer):
    """A health servicer that records `node_call_timeout` and `read_timeout`."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []
        self.read_timeouts: list[float | None] = []

    def Check(self, request, context):
        self.timeouts.append(node_call_timeout(context))
        self.read_timeouts.append(read_timeout(context))
        return health_pb2.HealthCheckResponse()


@pytest.fixture
def recorder():
    servicer = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield servicer, health_pb2_grpc.HealthStub(channel)
    server.stop(0)


def test_no_deadline_uses_default(recorder):
    servicer, stub = recorder
    stub.Check(health_pb2.HealthCheckRequest())
    assert servicer.timeouts == [None]
    assert servicer.read_timeouts == [None]


@pytest.mark.parametrize("deadline", [0.5, 30.0, 600.0])
def test_caller_deadline_passed_on(recorder, deadline):
    servicer, stub = recorder
    stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline)
    (timeout,) = servicer.timeouts
    assert timeout is not None
    # grpcio rounds the deadline that travels with the call, so the time
    # left seen by the server may exceed the client's timeout a little.
    assert abs(timeout - deadline) < 1.5


@pytest.mark.parametrize("deadline", [5.0, 30.0])
def test_read_timeout_leaves_answer_margin(recorder, deadline):
    servicer, stub = recorder
    stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline)
    (timeout,) = servicer.read_timeouts
    (remaining,) = servicer.timeouts
    assert timeout is not None
    assert remaining is not None
    # The node calls end at least ANSWER_MARGIN_SECONDS before the caller's
    # deadline, so the router's own error reaches the caller in time.
    assert timeout <= remaining - ANSWER_MARGIN_SECONDS
    assert timeout > remaining - 2 * ANSWER_MARGIN_SECONDS - 0.01 * remaining


def test_read_timeout_short_deadline_unchanged(recorder):
    servicer, stub = recorder
    stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
    (timeout,) = servicer.read_timeouts
    (remaining,) = servicer.timeouts
    assert timeout is not None
    assert remaining is not None
    # Too short for a margin, so the node calls get all of it. The two were
    # read one after the other, so they differ by the time in between.
    assert abs(timeout - remaining) < 0.05
