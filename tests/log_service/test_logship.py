"""LogShipHandler against a real gRPC LogsService peer on 127.0.0.1.

The peer is a small servicer that records each WriteLogEntries request and
can fail the first calls, because the handler, not the router, is under test.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog_runtime import logsetup
from splitlog_runtime.config import load
from splitlog_runtime.logship import LogShipHandler, severity_of_level
from tests.log_service.test_streams import as_entries

WAIT = 5.0


class RecordingLogs(logs_grpc.LogsServiceServicer):
    """Stores every WriteLogEntries request and fails the first `failures` calls."""

    def __init__(self) -> None:
        self.requests: list[logs_pb2.WriteLogEntriesRequest] = []
        self.failures = 0
        self.failure_code = grpc.StatusCode.UNAVAILABLE
        self.calls = 0
        self.call_ids: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def WriteLogEntries(self, request, context):
        self.release.wait(WAIT)
        with self.lock:
            self.calls += 1
            self.call_ids.append(request.request_id)
            if self.failures:
                self.failures -= 1
                context.abort(self.failure_code, "planned failure")
            self.requests.append(request)
        return logs_pb2.WriteLogEntriesResponse(
            accepted_count=len(request_entries(request))
        )

    def entries(self) -> list[logs_pb2.LogEntry]:
        with self.lock:
            return [
                entry for request in self.requests for entry in request_entries(request)
            ]


def request_entries(
    request: logs_pb2.WriteLogEntriesRequest,
) -> list[logs_pb2.LogEntry]:
    """Return the entries of a request, each stream entry as its `LogEntry`."""
    entries = list(request.entries)
    for stream in request.streams:
        entries.extend(as_entries(stream))
    return entries


@pytest.fixture
def peer():
    servicer = RecordingLogs()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    servicer.release.set()
    server.stop(None)


@pytest.fixture
def logger():
    """A logger of its own that only the test's handler listens to."""
    test_logger = logging.getLogger("tests.logship")
    test_logger.setLevel(logging.DEBUG)
    test_logger.propagate = False
    yield test_logger
    test_logger.handlers.clear()
    test_logger.propagate = True


def attach(logger, handler: LogShipHandler) -> LogShipHandler:
    logger.addHandler(handler)
    return handler


def test_records_shipped_as_entries(peer, logger):
    servicer, address = peer
    handler = attach(logger, LogShipHandler(address, "expenses", host="box-1"))

    logger.warning("disk %s at %d%%", "/data", 91)
    try:
        raise KeyError("missing")
    except KeyError:
        logger.exception("lookup failed")
    assert handler.flush(WAIT)
    handler.close()

    warning, failure = servicer.entries()
    assert warning.message == "disk /data at 91%"
    assert warning.severity == logs_pb2.SEVERITY_WARN
    assert warning.service == "expenses"
    assert warning.host == "box-1"
    assert warning.attributes["logger"] == "tests.logship"
    assert warning.attributes["thread"] == threading.current_thread().name
    assert warning.timestamp.seconds > 0
    assert "exception" not in warning.attributes
    assert failure.severity == logs_pb2.SEVERITY_ERROR
    assert "KeyError: 'missing'" in failure.attributes["exception"]
    assert handler.shipped_count == 2
    assert handler.dropped_count == 0


def test_batches_carry_request_ids(peer, logger):
    servicer, address = peer
    handler = attach(logger, LogShipHandler(address, "svc", batch_size=3))

    for number in range(7):
        logger.info("record %d", number)
    assert handler.flush(WAIT)
    handler.close()

    sizes = [len(request_entries(request)) for request in servicer.requests]
    ids = [request.request_id for request in servicer.requests]
    messages = [entry.message for entry in servicer.entries()]
    assert max(sizes) <= 3
    assert sum(sizes) == 7
    assert all(ids)
    assert len(set(ids)) == len(ids)
    assert messages == [f"record {number}" for number in range(7)]


def test_runs_of_one_logger_sent_as_streams(peer, logger):
    servicer, address = peer
    handler = attach(logger, LogShipHandler(address, "svc", host="box-1"))

    for number in range(3):
        logger.info("first %d", number)
    logger.warning("warning")
    for number in range(3):
        logger.error("second %d", number)
    assert handler.flush(WAIT)
    handler.close()

    (request,) = servicer.requests
    entries = servicer.entries()
    assert len(request.entries) == 0
    assert [len(stream.messages) for stream in request.streams] == [7]
    assert [entry.message for entry in entries] == (
        [f"first {n}" for n in range(3)]
        + ["warning"]
        + [f"second {n}" for n in range(3)]
    )
    assert [entry.severity for entry in entries] == (
        [logs_pb2.SEVERITY_INFO] * 3
        + [logs_pb2.SEVERITY_WARN]
        + [logs_pb2.SEVERITY_ERROR] * 3
    )
    assert {entry.host for entry in entries} == {"box-1"}
    assert {entry.attributes["logger"] for entry in entries} == {"tests.logship"}
    assert all(entry.timestamp.seconds > 0 for entry in entries)
    assert handler.shipped_count == 7


def test_alternating_loggers_sent_as_entries(peer, logger):
    servicer, address = peer
    handler = attach(logger, LogShipHandler(address, "svc"))
    other = logging.getLogger("tests.logship_other")
    other.setLevel(logging.DEBUG)
    other.propagate = False
    other.addHandler(handler)
    try:
        for number in range(3):
            logger.info("mine %d", number)
            other.info("other %d", number)
        assert handler.flush(WAIT)
        handler.close()
    finally:
        other.removeHandler(handler)
        other.propagate = True

    (request,) = servicer.requests
    assert len(request.streams) == 0
    assert [entry.attributes["logger"] for entry in request.entries] == [
        "tests.logship",
        "tests.logship_other",
    ] * 3
    assert handler.shipped_count == 6


def test_failed_batch_retried_with_same_id(peer, logger):
    servicer, address = peer
    servicer.failures = 2
    handler = attach(
        logger, LogShipHandler(address, "svc", max_attempts=3, backoff=0.01)
    )

    logger.info("survives two failures")
    assert handler.flush(WAIT)
    handler.close()

    assert servicer.calls == 3
    assert len(set(servicer.call_ids)) == 1
    assert [entry.message for entry in servicer.entries()] == ["survives two failures"]
    assert handler.shipped_count == 1
    assert handler.dropped_count == 0


def test_batch_dropped_after_attempts(peer, logger):
    servicer, address = peer
    handler = attach(
        logger,
        LogShipHandler(address, "svc", max_attempts=2, retry_seconds=0, backoff=0.01),
    )
    # Batches are dropped only once a call has succeeded.
    logger.info("delivered")
    assert handler.flush(WAIT)
    servicer.failures = 10

    logger.info("lost")
    logger.info("lost too")
    assert handler.flush(WAIT)
    handler.close()

    assert servicer.calls == 1 + 2
    assert [entry.message for entry in servicer.entries()] == ["delivered"]
    assert handler.dropped_count == 2
    assert handler.shipped_count == 1


def test_startup_retries_past_attempts(peer, logger):
    servicer, address = peer
    servicer.failures = 5
    handler = attach(
        logger,
        LogShipHandler(
            address,
            "svc",
            max_attempts=2,
            retry_seconds=0,
            backoff=0.01,
        ),
    )

    logger.info("sent once log_service answers")
    assert handler.flush(WAIT)
    # Once a call has succeeded, max_attempts applies again.
    servicer.failures = 10
    logger.info("dropped later")
    assert handler.flush(WAIT)
    handler.close()

    assert servicer.calls == 6 + 2
    assert [entry.message for entry in servicer.entries()] == [
        "sent once log_service answers"
    ]
    assert handler.shipped_count == 1
    assert handler.dropped_count == 1


def serve_logs(port: int = 0) -> tuple[grpc.Server, RecordingLogs, int]:
    servicer = RecordingLogs()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_grpc.add_LogsServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, servicer, bound


def test_batch_survives_target_restart(logger):
    first_server, first, port = serve_logs()
    handler = attach(logger, LogShipHandler(f"127.0.0.1:{port}", "svc"))
    logger.info("before the restart")
    assert handler.flush(WAIT)
    first_server.stop(None)

    logger.warning("log_service unreachable")
    # Longer than a restart of the log router under `splitlog up --processes`.
    time.sleep(3.0)
    second_server, second, _ = serve_logs(port)
    try:
        flushed = handler.flush(WAIT * 2)
        handler.close()
    finally:
        second_server.stop(None)

    assert flushed
    assert [entry.message for entry in first.entries()] == ["before the restart"]
    assert [entry.message for entry in second.entries()] == ["log_service unreachable"]
    assert handler.dropped_count == 0


def test_full_queue_drops_oldest(peer, logger):
    servicer, address = peer
    servicer.release.clear()
    handler = attach(logger, LogShipHandler(address, "svc", batch_size=1, queue_size=2))

    logger.info("burst 0")
    # Wait until the sender has taken "burst 0" into its blocked call.
    deadline = time.monotonic() + WAIT
    while handler._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    for number in range(1, 50):
        logger.info("burst %d", number)
    servicer.release.set()
    assert handler.flush(WAIT)
    handler.close()

    messages = [entry.message for entry in servicer.entries()]
    # The drops came before the first call succeeded, so the handler reports
    # them in an entry of its own once it has.
    assert messages == [
        "burst 0",
        f"dropped 47 log records before log_service at {address} first accepted "
        "a batch, because the queue holds at most 2",
        "burst 48",
        "burst 49",
    ]
    assert handler.dropped_count == 47


def test_invalid_batch_not_retried(peer, logger):
    servicer, address = peer
    servicer.failures = 1
    servicer.failure_code = grpc.StatusCode.INVALID_ARGUMENT
    handler = attach(
        logger, LogShipHandler(address, "svc", max_attempts=5, backoff=0.01)
    )

    logger.info("rejected batch")
    assert handler.flush(WAIT)
    handler.close()

    assert servicer.calls == 1
    assert handler.dropped_count == 1


def test_full_queue_drops_without_blocking(peer, logger):
    servicer, address = peer
    servicer.release.clear()
    handler = attach(logger, LogShipHandler(address, "svc", batch_size=1, queue_size=2))

    for number in range(50):
        logger.info("burst %d", number)
    dropped_while_blocked = handler.dropped_count
    servicer.release.set()
    assert handler.flush(WAIT)
    handler.close()

    # One record is in the blocked call and two wait in the queue. The
    # report of the drops is shipped as one more entry.
    assert dropped_while_blocked >= 47
    assert handler.shipped_count + handler.dropped_count == 50 + 1


def test_own_and_grpc_records_not_shipped(peer):
    servicer, address = peer
    handler = LogShipHandler(address, "svc")
    records = [
        logging.LogRecord(name, logging.ERROR, __file__, 1, "text", None, None)
        for name in ("grpc", "grpc._channel", "splitlog_runtime.logship", "app")
    ]

    shipped = [record.name for record in records if handler.filter(record)]
    handler.close()

    assert shipped == ["app"]


def test_sender_thread_records_not_shipped(peer):
    servicer, address = peer
    handler = LogShipHandler(address, "svc")
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "x", None, None)
    record.thread = handler._sender.ident

    accepted = handler.filter(record)
    handler.close()

    assert not accepted


def test_unreachable_target_close_is_bounded(logger):
    handler = attach(
        logger,
        LogShipHandler(
            "127.0.0.1:9", "svc", call_timeout=0.2, max_attempts=50, backoff=0.05
        ),
    )

    logger.info("nobody listens")
    handler.close(timeout=1.0)

    assert handler.dropped_count == 1
    assert handler.shipped_count == 0


def test_held_records_sent_after_start(peer, logger):
    servicer, address = peer
    handler = attach(
        logger, LogShipHandler(address, "svc", flush_interval=0.05, send=False)
    )

    logger.info("before the router")
    held_flush = handler.flush(0.2)
    time.sleep(0.2)
    calls_while_held = servicer.calls
    handler.start_sending()
    assert handler.flush(WAIT)
    handler.close()

    assert held_flush is False
    assert calls_while_held == 0
    assert [entry.message for entry in servicer.entries()] == ["before the router"]
    assert handler.shipped_count == 1


def test_held_records_dropped_at_close(peer, logger):
    servicer, _ = peer
    handler = attach(logger, LogShipHandler("127.0.0.1:9", "svc", send=False))

    logger.info("never sent")
    started = time.monotonic()
    handler.close(timeout=1.0)

    assert time.monotonic() - started < 0.5
    assert handler.dropped_count == 1
    assert servicer.calls == 0


def test_emit_after_close_counts_drop(peer, logger):
    servicer, address = peer
    handler = attach(logger, LogShipHandler(address, "svc"))
    handler.close()

    logger.info("too late")

    assert handler.dropped_count == 1
    assert servicer.entries() == []


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (logging.DEBUG, logs_pb2.SEVERITY_DEBUG),
        (logging.INFO, logs_pb2.SEVERITY_INFO),
        (logging.WARNING, logs_pb2.SEVERITY_WARN),
        (logging.ERROR, logs_pb2.SEVERITY_ERROR),
        (logging.CRITICAL, logs_pb2.SEVERITY_FATAL),
        (5, logs_pb2.SEVERITY_DEBUG),
    ],
)
def test_level_mapping(level, severity):
    assert severity_of_level(level) == severity


def test_self_ship_setting_off():
    config = load(environ={}, overrides={"log_self_ship": False})

    assert logsetup.start_self_ship(config, "svc") is None


def test_self_ship_address():
    wildcard = load(environ={}, overrides={"host": "0.0.0.0", "log_service_port": 7})
    explicit = load(environ={}, overrides={"log_service_addr": "logs:50064"})

    assert logsetup.self_ship_address(wildcard) == "127.0.0.1:7"
    assert logsetup.self_ship_address(explicit) == "logs:50064"


def test_self_ship_root_logger(peer):
    servicer, address = peer
    config = load(environ={}, overrides={"log_service_addr": address})
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)

    handler = logsetup.start_self_ship(config, "user_service")
    logging.getLogger("user_service.app").info("started on port %d", 50061)
    logging.getLogger("log_service.router").warning("not shipped")
    logsetup.stop_self_ship(handler)
    root.setLevel(level)

    messages = [entry.message for entry in servicer.entries()]
    assert handler not in root.handlers
    assert messages == ["started on port 50061"]
    assert servicer.entries()[0].service == "user_service"


def test_self_ship_batches_within_batch_limit(peer):
    servicer, address = peer
    config = load(
        environ={},
        overrides={"log_service_addr": address, "log_max_batch_entries": 2},
    )
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)

    handler = logsetup.start_self_ship(config, "user_service", send=False)
    for number in range(5):
        logging.getLogger("user_service.app").info("record %d", number)
    handler.start_sending()
    logsetup.stop_self_ship(handler)
    root.setLevel(level)

    assert max(len(request_entries(r)) for r in servicer.requests) == 2
    assert [entry.message for entry in servicer.entries()] == [
        f"record {number}" for number in range(5)
    ]


def test_shared_process_records_by_component(peer):
    servicer, address = peer
    config = load(environ={}, overrides={"log_service_addr": address})
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)

    handler = logsetup.start_self_ship(config, "splitlog", by_logger=True)
    runtime = logging.getLogger("splitlog_runtime.server")
    runtime.info("user_service listening", extra={"component": "user_service"})
    runtime.info("log_node n0 listening", extra={"component": "log_node n0"})
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("splitlog_cli.signals").warning("received SIGTERM")
    for thread_name, message in [
        ("expense_service_3", "expense handler record"),
        ("log_service_0", "router handler record"),
        ("log_node n1_2", "node handler record"),
    ]:
        worker = threading.Thread(
            target=runtime.warning, args=(message,), name=thread_name
        )
        worker.start()
        worker.join()
    logsetup.stop_self_ship(handler)
    root.setLevel(level)

    services = {entry.message: entry.service for entry in servicer.entries()}
    assert services == {
        "user_service listening": "user_service",
        "Started server process": "gateway",
        "received SIGTERM": "splitlog",
        "expense handler record": "expense_service",
    }
