"""LogShipHandler with records and batches too large for log_service.

A record logged before the first successful call must not hold back the
records after it when log_service is up but rejects its batch.
"""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog_runtime.logship import (
    ATTRIBUTE_VALUE_BYTES,
    MIN_MAX_BATCH_BYTES,
    ORIGINAL_MESSAGE_BYTES_ATTRIBUTE,
    LogShipHandler,
)
from tests.log_service.test_logship import peer  # noqa: F401
from tests.log_service.test_logship_startup import LogSystem, wait_until_in_flight

SERVICE = "limits_service"
# Seconds to wait for records that the handler should deliver.
DELIVERY_TIMEOUT = 15.0
MIB = 1024 * 1024


@pytest.fixture
def log_config(base_config):
    """A single-node log system whose messages are at most 1 MiB."""
    return base_config.replace(
        log_shards=1,
        log_replicas=1,
        log_node_port=0,
        log_fsync=False,
        max_message_bytes=MIB,
    )


@pytest.fixture
def logger():
    """A logger of its own that only the test's handler listens to."""
    test_logger = logging.getLogger("tests.logship_limits")
    test_logger.setLevel(logging.DEBUG)
    test_logger.propagate = False
    yield test_logger
    test_logger.handlers.clear()
    test_logger.propagate = True


@pytest.fixture
def system(log_config):
    log_system = LogSystem(log_config, 0)
    yield log_system
    log_system.close()


@pytest.fixture
def default_system(log_config):
    """A single-node log system with the default max_message_bytes (16 MiB)."""
    log_system = LogSystem(log_config.replace(max_message_bytes=16 * MIB), 0)
    yield log_system
    log_system.close()


def stored_entries(system: LogSystem) -> list[pb.LogEntry]:
    response = system.stub.ListLogEntries(
        pb.ListLogEntriesRequest(
            services=[SERVICE], order_by="timestamp", page_size=1000
        ),
        timeout=10,
    )
    return list(response.entries)


def log_large(logger, handler: LogShipHandler, size: int) -> None:
    """Pass a record with a message of `size` bytes to `handler` alone.

    The record skips the logger's other handlers, so pytest's log capture
    never prints the message.
    """
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 0, "x" * size, (), None
    )
    handler.handle(record)


def handler_warnings(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "splitlog_runtime.logship"
    ]


def test_oversized_first_batch_dropped(system, logger, caplog):
    caplog.set_level(logging.WARNING, logger="splitlog_runtime.logship")
    handler = LogShipHandler(
        system.address,
        SERVICE,
        flush_interval=0.05,
        max_attempts=2,
        retry_seconds=0.5,
        backoff=0.05,
    )
    logger.addHandler(handler)
    log_large(logger, handler, 2 * MIB)
    wait_until_in_flight(handler)
    for number in range(3):
        logger.info("small %d", number)

    flushed = handler.flush(DELIVERY_TIMEOUT)
    handler.close()
    stored = system.messages(SERVICE)

    assert flushed
    assert stored == ["small 0", "small 1", "small 2"]
    assert handler.dropped_count == 1
    assert handler.shipped_count == 3
    warnings = handler_warnings(caplog)
    assert len(warnings) == 1
    assert "RESOURCE_EXHAUSTED" in warnings[0]


def test_close_after_rejection_not_unreached(system, logger, caplog):
    caplog.set_level(logging.WARNING, logger="splitlog_runtime.logship")
    handler = LogShipHandler(system.address, SERVICE, flush_interval=0.05)
    logger.addHandler(handler)
    log_large(logger, handler, 2 * MIB)
    wait_until_in_flight(handler)
    # Long enough for the router to reject the batch at least once.
    time.sleep(1.0)

    handler.close(timeout=1.0)

    warnings = handler_warnings(caplog)
    assert handler.dropped_count == 1
    assert warnings
    assert not [text for text in warnings if "never reached" in text]


def test_resource_exhausted_before_first_success_limited(peer, logger):  # noqa: F811
    servicer, address = peer
    servicer.failures = 1000
    servicer.failure_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    handler = LogShipHandler(
        address,
        SERVICE,
        flush_interval=0.05,
        max_attempts=2,
        retry_seconds=0.3,
        backoff=0.05,
    )
    logger.addHandler(handler)
    logger.info("dropped after the retry period")
    wait_until_in_flight(handler)

    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while handler.dropped_count == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    dropped_before_close = handler.dropped_count
    handler.close(timeout=1.0)

    assert dropped_before_close == 1
    assert handler.shipped_count == 0
    assert servicer.calls >= 2


def test_close_names_router_error(peer, logger, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="splitlog_runtime.logship")
    servicer, address = peer
    servicer.failures = 1000
    servicer.failure_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    handler = LogShipHandler(address, SERVICE, flush_interval=0.05, backoff=0.05)
    logger.addHandler(handler)
    logger.info("still retried at shutdown")
    wait_until_in_flight(handler)
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while servicer.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

    handler.close(timeout=0.5)

    assert handler.dropped_count == 1
    assert handler_warnings(caplog) == [
        f"dropped 1 log records at shutdown; log_service at {address} accepted "
        "no batch, and its last call failed with RESOURCE_EXHAUSTED"
    ]


def test_oversized_record_cut_to_fit(default_system, logger):
    handler = LogShipHandler(default_system.address, SERVICE, flush_interval=0.05)
    logger.addHandler(handler)
    log_large(logger, handler, 20 * MIB)
    for number in range(3):
        logger.info("small %d", number)

    flushed = handler.flush(DELIVERY_TIMEOUT)
    handler.close()
    large, *small = stored_entries(default_system)

    assert flushed
    assert [entry.message for entry in small] == ["small 0", "small 1", "small 2"]
    # log_service cuts the message further, to log_max_message_bytes.
    assert large.message == "x" * (256 * 1024)
    assert large.truncated
    assert large.attributes[ORIGINAL_MESSAGE_BYTES_ATTRIBUTE] == str(20 * MIB)
    assert handler.dropped_count == 0
    assert handler.shipped_count == 4


def test_batches_capped_by_bytes(peer, logger):  # noqa: F811
    servicer, address = peer
    # Held until every record is queued, so that all would fit one batch by count.
    servicer.release.clear()
    handler = LogShipHandler(address, SERVICE, max_batch_bytes=MIN_MAX_BATCH_BYTES)
    logger.addHandler(handler)
    logger.info("first")
    for number in range(10):
        logger.info("%d %s", number, "y" * (20 * 1024))
    servicer.release.set()

    flushed = handler.flush(DELIVERY_TIMEOUT)
    handler.close()

    assert flushed
    sizes = [request.ByteSize() for request in servicer.requests]
    assert len(sizes) >= 4
    assert max(sizes) <= MIN_MAX_BATCH_BYTES
    messages = [entry.message.split(" ")[0] for entry in servicer.entries()]
    assert messages == ["first", *(str(number) for number in range(10))]
    assert handler.dropped_count == 0


def test_cut_entry_attributes(peer, logger):  # noqa: F811
    servicer, address = peer
    handler = LogShipHandler(address, SERVICE, max_batch_bytes=MIN_MAX_BATCH_BYTES)
    logger.addHandler(handler)
    try:
        raise ValueError("z" * (200 * 1024))
    except ValueError:
        logger.exception("é" * (100 * 1024))

    assert handler.flush(DELIVERY_TIMEOUT)
    handler.close()

    (entry,) = servicer.entries()
    exception = entry.attributes["exception"]
    assert len(exception.encode()) == ATTRIBUTE_VALUE_BYTES
    assert exception.startswith("Traceback")
    assert entry.attributes[ORIGINAL_MESSAGE_BYTES_ATTRIBUTE] == str(200 * 1024)
    assert 0 < len(entry.message) < 100 * 1024
    assert set(entry.message) == {"é"}
    assert entry.ByteSize() <= MIN_MAX_BATCH_BYTES


def test_batch_over_router_limit_split(system, logger):
    handler = LogShipHandler(system.address, SERVICE, flush_interval=0.2)
    logger.addHandler(handler)
    # Three records of 600 KiB in one batch take the request over the
    # router's max_message_bytes of 1 MiB, but each fits on its own.
    for number in range(3):
        log_large(logger, handler, 600 * 1024)
        logger.info("small %d", number)

    flushed = handler.flush(DELIVERY_TIMEOUT)
    handler.close()
    stored = stored_entries(system)

    assert flushed
    assert [entry.message[:5] for entry in stored] == [
        "xxxxx",
        "small",
        "xxxxx",
        "small",
        "xxxxx",
        "small",
    ]
    assert handler.shipped_count == 6
    assert handler.dropped_count == 0
