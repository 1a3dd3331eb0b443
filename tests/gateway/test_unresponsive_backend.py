"""Calls through the gateway to a log router process stopped with SIGSTOP.

A stopped process keeps its connections open, so a call forwarded to it
waits for its whole deadline. Once the gateway's health checks find
log_service not responding, its services are NOT_SERVING at the gateway,
and calls to it fail at once with UNAVAILABLE, over gRPC and REST, until it
replies again. The router and its node run as real processes, and the
gateway in this process.
"""

from __future__ import annotations

import signal
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import build
from splitlog.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from splitlog_runtime import config as config_module
from tests.gateway.support import LoopThread, error_details
from tests.log_service.cluster_support import ROUTER, SERVICE, LogCluster, entries
from tests.ports import closed_address

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

LOGS_SERVICE = "splitlog.logs.v1.LogsService"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING
PROBE_SECONDS = 0.5
# A client deadline far above the time the gateway needs to notice.
CLIENT_TIMEOUT = 10.0
# Seconds within which a call must fail. It waited for CLIENT_TIMEOUT before.
FAST_ANSWER_SECONDS = 3.0


@pytest.fixture
def stack(tmp_path):
    """A one-node log cluster of processes and a gateway before its router."""
    cluster = LogCluster.create(tmp_path, ("a",))
    loop = LoopThread()
    gateway = None
    try:
        cluster.start_all()
        config = config_module.load(
            environ={},
            overrides={
                "auth_required": False,
                "data_dir": str(tmp_path / "gateway"),
                "log_service_addr": cluster.address(ROUTER),
                "user_service_addr": closed_address(),
                "expense_service_addr": closed_address(),
                "balance_service_addr": closed_address(),
                "gateway_health_probe_seconds": PROBE_SECONDS,
                "grace_seconds": 1.0,
            },
        )
        gateway = loop.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
        yield cluster, gateway
    finally:
        if cluster.processes.get(ROUTER) is not None:
            cluster.resume(ROUTER)
        if gateway is not None:
            loop.run(gateway.stop(0))
        loop.close()
        cluster.stop_all()


def wait_health(channel: grpc.Channel, expected: int, timeout: float = 20.0) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=LOGS_SERVICE)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = stub.Check(request, timeout=2).status
        if status == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{LOGS_SERVICE} at the gateway is {status}, not {expected}")


def write_request(label: str) -> logs_service_pb2.WriteLogEntriesRequest:
    return logs_service_pb2.WriteLogEntriesRequest(
        entries=entries(label, 1), request_id=label
    )


def test_stopped_log_router_fails_fast(stack):
    cluster, gateway = stack
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    stub = logs_service_pb2_grpc.LogsServiceStub(channel)
    wait_health(channel, SERVING)
    stub.WriteLogEntries(write_request("before"), timeout=CLIENT_TIMEOUT)

    cluster.kill(ROUTER, signal.SIGSTOP)
    wait_health(channel, NOT_SERVING)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as write_error:
        stub.WriteLogEntries(write_request("during"), timeout=CLIENT_TIMEOUT)
    write_seconds = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as list_error:
        stub.ListLogEntries(
            logs_service_pb2.ListLogEntriesRequest(services=[SERVICE]),
            timeout=CLIENT_TIMEOUT,
        )
    list_seconds = time.monotonic() - started
    started = time.monotonic()
    reply = httpx.get(
        f"http://127.0.0.1:{gateway.http_port}/logs",
        params={"services": SERVICE},
        timeout=CLIENT_TIMEOUT,
    )
    rest_seconds = time.monotonic() - started

    cluster.resume(ROUTER)
    wait_health(channel, SERVING)
    after = stub.WriteLogEntries(write_request("after"), timeout=CLIENT_TIMEOUT)
    channel.close()

    error = write_error.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "log_service is not responding" in error.details()
    assert "retry" in error.details()
    assert error_details(error)["ErrorInfo"].metadata["backend"] == "log_service"
    assert "RetryInfo" in error_details(error)
    assert write_seconds < FAST_ANSWER_SECONDS
    assert list_error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert list_seconds < FAST_ANSWER_SECONDS
    assert reply.status_code == 503, reply.text
    assert "log_service is not responding" in reply.text
    assert rest_seconds < FAST_ANSWER_SECONDS
    assert after.accepted_count == 1
