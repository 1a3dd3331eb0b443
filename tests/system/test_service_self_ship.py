"""Tests that `splitlog serve` ships its startup records to a late log_service.

On a loaded machine the log router can take a minute to report SERVING,
while the other components are up and logging. The test runs
`splitlog serve user_service` with its log records shipped to a free port,
waits longer than the shipper's retry period of a batch, and only then
starts a log router and a log node on that port in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc
from splitlog_runtime.logship import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_RETRY_SECONDS,
    MAX_BACKOFF,
)
from tests.log_service.test_logship_startup import LogSystem
from tests.ports import free_ports
from tests.system.conftest import SPLITLOG, START_TIMEOUT, WITHOUT_AUTH, wait_for_health

pytestmark = pytest.mark.system

# Delay before the log router starts. It outlasts the shipper's retry period
# for a batch, so a shipper that drops a batch after that period has dropped
# the startup batch by then. The period counts from the first call, which
# comes within seconds of the start. The last call comes at most MAX_BACKOFF
# after the period and waits at most DEFAULT_CALL_TIMEOUT for a connection.
LOG_SERVICE_DELAY = DEFAULT_RETRY_SECONDS + DEFAULT_CALL_TIMEOUT + MAX_BACKOFF + 10
QUERY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def start_service(tmp_path, port: int, log_port: int) -> subprocess.Popen:
    """Start `splitlog serve user_service`, writing its stderr to service.log."""
    args = [str(SPLITLOG), "serve", "user_service"]
    args += ["--data-dir", str(tmp_path / "service"), "--grace-seconds", "1"]
    args += ["--user-service-port", str(port)]
    args += ["--log-service-addr", f"127.0.0.1:{log_port}"]
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SPLITLOG_")
    }
    environment.update(WITHOUT_AUTH)
    with open(tmp_path / "service.log", "wb") as log_file:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=environment,
            start_new_session=True,
        )


def wait_for_messages(address: str, keyword: str) -> list[str]:
    """Poll the router for user_service entries with `keyword`.

    Return their messages, or an empty list after QUERY_TIMEOUT.
    """
    deadline = time.monotonic() + QUERY_TIMEOUT
    with grpc.insecure_channel(address) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        while True:
            response = stub.ListLogEntries(
                pb.ListLogEntriesRequest(services=["user_service"], keyword=keyword),
                timeout=10,
            )
            messages = [entry.message for entry in response.entries]
            if messages or time.monotonic() > deadline:
                return messages
            time.sleep(0.5)


def test_startup_records_reach_late_log_service(tmp_path, base_config):
    port, log_port = free_ports(2)
    service = start_service(tmp_path, port, log_port)
    started = time.monotonic()
    system = None
    try:
        wait_for_health(f"127.0.0.1:{port}", START_TIMEOUT)
        time.sleep(max(0.0, started + LOG_SERVICE_DELAY - time.monotonic()))
        system = LogSystem(
            base_config.replace(
                log_shards=1, log_replicas=1, log_node_port=0, log_fsync=False
            ),
            log_port,
        )
        messages = wait_for_messages(f"127.0.0.1:{log_port}", "listening on port")
        service.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        status = service.wait(timeout=STOP_TIMEOUT)
        stop_seconds = time.monotonic() - stop_started
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(timeout=10)
        if system is not None:
            system.close()

    stderr = (tmp_path / "service.log").read_text(errors="replace")
    assert messages == [f"user_service listening on port {port}"], stderr[-4000:]
    assert "splitlog_runtime.logship" not in stderr
    assert status == 0
    assert stop_seconds < 5.0


def test_service_without_log_service_stops_quickly(tmp_path):
    port, log_port = free_ports(2)
    service = start_service(tmp_path, port, log_port)
    try:
        wait_for_health(f"127.0.0.1:{port}", START_TIMEOUT)
        service.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        status = service.wait(timeout=STOP_TIMEOUT)
        stop_seconds = time.monotonic() - stop_started
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(timeout=10)

    # The grace period is 1 s, and the shipper gets SHIP_FLUSH_SECONDS.
    assert status == 0
    assert stop_seconds < 3.0
