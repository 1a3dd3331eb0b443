"""LogShipHandler in a process that starts before log_service does.

Each test points the handler at a free port where nothing listens yet, logs,
and only later starts a real log router and log node on that port.
"""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from log_service.app import build_router
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc
from splitlog_cli.components import start_log_nodes
from splitlog_runtime.logship import LogShipHandler
from tests.log_service.test_logship import serve_logs
from tests.ports import closed_address, free_ports

SERVICE = "early_service"
# Seconds to wait for queued records to reach the log router once it listens.
DELIVERY_TIMEOUT = 30.0


class LogSystem:
    """A log router on a chosen port, with one log node on a port of its own.

    Port 0 lets the router pick a free port; `address` names the one it bound.
    """

    def __init__(self, config, port: int) -> None:
        self.nodes = {}
        try:
            router_config = start_log_nodes(config, self.nodes)
            self.router, self.coordinator = build_router(
                router_config, f"127.0.0.1:{port}"
            )
        except BaseException:
            self.close()
            raise
        self.address = f"127.0.0.1:{self.router.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = logs_service_pb2_grpc.LogsServiceStub(self.channel)

    def messages(self, service: str = SERVICE) -> list[str]:
        """Return the stored messages of `service`, oldest first."""
        response = self.stub.ListLogEntries(
            pb.ListLogEntriesRequest(
                services=[service], order_by="timestamp", page_size=1000
            ),
            timeout=10,
        )
        return [entry.message for entry in response.entries]

    def close(self) -> None:
        if hasattr(self, "channel"):
            self.channel.close()
        if hasattr(self, "router"):
            self.router.stop(0)
        for host in self.nodes.values():
            host.stop(0)


@pytest.fixture
def log_config(base_config):
    """Settings of a log system with a single shard of a single node."""
    return base_config.replace(
        log_shards=1, log_replicas=1, log_node_port=0, log_fsync=False
    )


@pytest.fixture
def logger():
    """A logger of its own that only the test's handler listens to."""
    test_logger = logging.getLogger("tests.logship_startup")
    test_logger.setLevel(logging.DEBUG)
    test_logger.propagate = False
    yield test_logger
    test_logger.handlers.clear()
    test_logger.propagate = True


def attach(logger, handler: LogShipHandler) -> LogShipHandler:
    logger.addHandler(handler)
    return handler


def wait_until_in_flight(handler: LogShipHandler) -> None:
    """Wait until the sender has taken every queued record into a closed batch.

    The sender keeps adding records to a batch for `flush_interval` after its
    first one, so the wait lasts two intervals past the empty queue. Records
    logged after it then queue behind the batch instead of joining it.
    """
    deadline = time.monotonic() + 5.0
    while handler._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler._queue.qsize() == 0
    time.sleep(2 * handler.flush_interval)


def test_records_queued_past_retry_period(log_config, logger):
    (port,) = free_ports(1)
    handler = attach(
        logger,
        LogShipHandler(
            f"127.0.0.1:{port}",
            SERVICE,
            call_timeout=0.3,
            max_attempts=1,
            retry_seconds=0.2,
            backoff=0.05,
        ),
    )
    for number in range(3):
        logger.info("early %d", number)
    # Ten retry periods pass before log_service listens.
    time.sleep(2.0)
    dropped_before_start = handler.dropped_count

    system = LogSystem(log_config, port)
    try:
        flushed = handler.flush(DELIVERY_TIMEOUT)
        handler.close()
        stored = system.messages()
    finally:
        system.close()

    assert dropped_before_start == 0
    assert flushed
    assert stored == ["early 0", "early 1", "early 2"]
    assert handler.shipped_count == 3
    assert handler.dropped_count == 0


def test_queued_records_capped_and_counted(log_config, logger, caplog):
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    handler = attach(
        logger,
        LogShipHandler(address, SERVICE, queue_size=20, flush_interval=0.05),
    )
    logger.info("first")
    wait_until_in_flight(handler)
    for number in range(100):
        logger.info("burst %d", number)
    dropped_while_held = handler.dropped_count

    caplog.set_level(logging.WARNING, logger="splitlog_runtime.logship")
    system = LogSystem(log_config, port)
    try:
        assert handler.flush(DELIVERY_TIMEOUT)
        logger.info("after delivery started")
        assert handler.flush(DELIVERY_TIMEOUT)
        handler.close()
        stored = system.messages()
    finally:
        system.close()

    notice = (
        f"dropped 80 log records before log_service at {address} first "
        "accepted a batch, because the queue holds at most 20"
    )
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "splitlog_runtime.logship"
    ]
    assert dropped_while_held == 80
    assert warnings == [notice]
    assert stored == [
        "first",
        *(f"burst {number}" for number in range(80, 100)),
        notice,
        "after delivery started",
    ]
    assert handler.dropped_count == 80


def test_retries_paced_before_first_success(logger):
    server, servicer, port = serve_logs()
    # Every call fails at once, as a log router without shard leaders does.
    servicer.failures = 1000
    handler = attach(
        logger,
        LogShipHandler(
            f"127.0.0.1:{port}",
            SERVICE,
            max_attempts=1,
            retry_seconds=0.1,
            backoff=0.05,
            flush_interval=0.05,
        ),
    )
    try:
        logger.info("waits for the first success")
        time.sleep(3.0)
        calls_while_failing = servicer.calls
        dropped_while_failing = handler.dropped_count
        with servicer.lock:
            servicer.failures = 0
        flushed = handler.flush(DELIVERY_TIMEOUT)
        handler.close()
    finally:
        server.stop(None)

    # The waits between calls double from 0.05 s up to 2 s. The first six
    # waits add up to 3.15 s (0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1.6), so at most
    # 6 calls fall within the 3 s sleep. The check allows 7 for timing slack.
    assert 2 <= calls_while_failing <= 7
    assert dropped_while_failing == 0
    assert flushed
    assert [entry.message for entry in servicer.entries()] == [
        "waits for the first success"
    ]


def test_close_before_first_delivery_is_bounded(logger):
    handler = attach(logger, LogShipHandler(closed_address(), SERVICE))
    logger.info("never delivered")
    wait_until_in_flight(handler)

    started = time.monotonic()
    handler.close(timeout=1.0)
    elapsed = time.monotonic() - started

    # The sender's call waits up to 5 s for a connection, and closing ends it.
    assert elapsed < 1.6
    assert handler.dropped_count == 1
    assert not handler._sender.is_alive()
