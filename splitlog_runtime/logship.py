"""Ship a process's own log records into log_service.

`LogShipHandler` is a `logging.Handler`. Its `emit` converts the record to a
`LogEntry` and puts it on a bounded queue without blocking. When the queue is
full the oldest queued record is dropped and counted. A background thread
sends the queued entries in `WriteLogEntries` batches, each with its own
request id, so a retried batch is stored once. A batch whose consecutive
entries mostly share service, host and attributes goes out as `LogStream`s,
which the log router checks and stores with less work per entry, and any
other batch as `LogEntry` messages. Both forms store the same entries. A
batch is retried with backoff for `retry_seconds` (30 s by default, longer
than a restart of the log router) and then dropped and counted. A batch that
fails with a code that a retry cannot fix, such as INVALID_ARGUMENT, is
dropped at once.

A batch contains at most `batch_size` entries and `max_batch_bytes` bytes. A
record too large for a batch of its own is cut to fit: its attribute values
first, to `ATTRIBUTE_VALUE_BYTES` each, then its message. The entry then
carries the message's original length in UTF-8 bytes as the attribute
`original_message_bytes`. log_service cuts messages and attribute values
further to its own limits (`log_max_message_bytes` and 8 KiB) and flags the
entry `truncated`. A batch that the log router still rejects as over its
`max_message_bytes` is sent again in halves, and a single entry that it
rejects is dropped and counted.

Until the first call succeeds, a batch whose call fails with UNAVAILABLE or
DEADLINE_EXCEEDED is retried without a time limit. Services start before
log_service is listening, and on a loaded machine the log router can take
more than a minute to come up. Any other retryable code comes from a log
router that is up, so it has the usual limits, and a batch that the router
rejects as over its `max_message_bytes` (reason REQUEST_TOO_LARGE) is split
or dropped at once, because the same request fails again. While a batch is
retried, the records that follow wait in the queue, so a process that never
reaches log_service keeps at most `queue_size` records and the batch in
flight. Records dropped from the full queue meanwhile are counted.
Once the first call succeeds, their number is logged once, both to the
process's other handlers and as a shipped entry. A handler created with
`send=False` only queues records until `start_sending` is called, for a
process that starts the log router itself.

The handler never ships records of the gRPC library (loggers under `grpc`),
of this module, or of its own sending thread, because sending them would log
again and feed itself.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_status import rpc_status

from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog_runtime import auth
from splitlog_runtime.errors import status_reason
from splitlog_runtime.failure_log import Throttle
from splitlog_runtime.limits import REQUEST_TOO_LARGE
from splitlog_runtime.validation import cut_utf8

_LOGGER = logging.getLogger(__name__)

# Logger names whose records are never shipped, with their children.
ALWAYS_EXCLUDED = ("grpc", __name__)
# Codes after which the same batch may succeed. Other failures drop it at once.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
# Codes of a log router that is not listening yet or does not respond. Before
# the first successful call, a batch is retried on these without a limit.
NOT_REACHED_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)
DEFAULT_CALL_TIMEOUT = 5.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF = 0.2
# Seconds a failing batch is retried after its first call before it is dropped.
DEFAULT_RETRY_SECONDS = 30.0
# Maximum wait between two retries of one batch, in seconds.
MAX_BACKOFF = 2.0
DEFAULT_CLOSE_TIMEOUT = 5.0
# Seconds `close` waits for the sender once it has cancelled the sender's call.
_CANCEL_JOIN_SECONDS = 1.0
# Reconnect backoff of the channel to the log router, first and maximum, in ms.
RECONNECT_BACKOFF_MS = 100
MAX_RECONNECT_BACKOFF_MS = 1000
# Default maximum bytes of one WriteLogEntries request, as in `logs ship
# --batch-bytes`. It is a quarter of the default max_message_bytes (16 MiB),
# so the requests fit a log router with a lower setting too.
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
# Minimum of `max_batch_bytes`, so that a cut entry keeps room for its message.
MIN_MAX_BATCH_BYTES = 64 * 1024
# Bytes of a request besides its entries: the request id and the framing.
REQUEST_FRAMING_BYTES = 1024
# Bytes that an entry adds to a request besides its own: its tag, its length,
# and what the stream form may take more, with margin.
ENTRY_FRAMING_BYTES = 32
# Maximum UTF-8 bytes of each attribute value of an entry that has to be cut.
# log_service stores at most 8 KiB of a value and flags the entry truncated,
# so a cut at twice that keeps all it stores and its flag.
ATTRIBUTE_VALUE_BYTES = 16 * 1024
# Attribute of a cut entry: the message's length in UTF-8 bytes before the cut.
ORIGINAL_MESSAGE_BYTES_ATTRIBUTE = "original_message_bytes"
# Minimum seconds between two warnings about dropped records.
_WARNING_INTERVAL = 60.0
NANOS_PER_SECOND = 1_000_000_000


def severity_of_level(levelno: int) -> int:
    """Return the `Severity` of a `logging` level number."""
    if levelno >= logging.CRITICAL:
        return logs_pb2.SEVERITY_FATAL
    if levelno >= logging.ERROR:
        return logs_pb2.SEVERITY_ERROR
    if levelno >= logging.WARNING:
        return logs_pb2.SEVERITY_WARN
    if levelno >= logging.INFO:
        return logs_pb2.SEVERITY_INFO
    return logs_pb2.SEVERITY_DEBUG


def same_stream(first: logs_pb2.LogEntry, second: logs_pb2.LogEntry) -> bool:
    """Return whether two entries share service, host and attributes."""
    return (
        first.service == second.service
        and first.host == second.host
        and first.attributes == second.attributes
    )


def stream_request(
    entries: Sequence[logs_pb2.LogEntry], request_id: str
) -> logs_pb2.WriteLogEntriesRequest:
    """Return a request of `entries` in streams, one per run of shared fields.

    Consecutive entries with the same service, host and attributes share a
    `LogStream`, so the server numbers the entries in their order, as
    `entries` would. A stream carries only the message, timestamp and
    severity of each entry, so the entries must have a severity and no
    `observed_timestamp`, `trace_id` or `span_id` for the streams to store
    what the entries would.
    """
    request = logs_pb2.WriteLogEntriesRequest(request_id=request_id)
    stream = None
    previous = None
    for entry in entries:
        if previous is None or not same_stream(previous, entry):
            stream = request.streams.add(
                service=entry.service, host=entry.host, attributes=entry.attributes
            )
        stream.messages.append(entry.message)
        stream.timestamps_unix_nano.append(entry.timestamp.ToNanoseconds())
        stream.severities.append(entry.severity)
        previous = entry
    return request


def batch_request(
    batch: Sequence[logs_pb2.LogEntry], request_id: str
) -> logs_pb2.WriteLogEntriesRequest:
    """Return the request of a batch of shipped records, in the cheaper form.

    The batch goes as streams when its runs of shared fields (`same_stream`)
    hold at least two entries on average, and as entries otherwise, because
    a stream of a single entry only adds the stream's own framing.
    """
    runs = 1 + sum(not same_stream(a, b) for a, b in pairwise(batch))
    if runs * 2 <= len(batch):
        return stream_request(batch, request_id)
    return logs_pb2.WriteLogEntriesRequest(entries=batch, request_id=request_id)


class _Flush:
    """A marker on the queue: the sender sets `done` once it sent what came before."""

    def __init__(self) -> None:
        self.done = threading.Event()


class LogShipHandler(logging.Handler):
    """Send log records to a `LogsService` in batches from a background thread.

    Args:
      target_address: host:port of the log router or the gateway.
      service: the `service` of every entry, such as `expense_service`.
      batch_size: maximum entries per `WriteLogEntries` call.
      max_batch_bytes: maximum bytes of a `WriteLogEntries` request, at
        least MIN_MAX_BATCH_BYTES. A larger record is cut to fit.
      flush_interval: seconds the sender waits to fill a batch before it
        sends what it has.
      queue_size: maximum number of records waiting to be sent, also before
        log_service is first reached. A new record on a full queue drops the
        oldest waiting one.
      host: the `host` of every entry; the machine's host name when None.
      excluded_loggers: more logger names whose records, with those of their
        children, are never shipped.
      call_timeout: deadline of each call, in seconds.
      max_attempts: minimum number of calls for a batch before it is
        dropped. Before the first call succeeds, a batch is never dropped
        for a code in NOT_REACHED_CODES.
      retry_seconds: seconds after a batch's first call during which it is
        retried; it is dropped once both this and `max_attempts` are used up.
      backoff: seconds before the first retry, doubled for each further retry
        up to MAX_BACKOFF.
      send: whether the sender starts sending at once; when False, records
        wait in the queue until `start_sending`.
    """

    def __init__(
        self,
        target_address: str,
        service: str,
        *,
        batch_size: int = 500,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        flush_interval: float = 0.5,
        queue_size: int = 10000,
        host: str | None = None,
        excluded_loggers: Iterable[str] = (),
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        backoff: float = DEFAULT_BACKOFF,
        send: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if max_batch_bytes < MIN_MAX_BATCH_BYTES:
            raise ValueError(
                f"max_batch_bytes must be at least {MIN_MAX_BATCH_BYTES}, not "
                f"{max_batch_bytes}"
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")

        self.target_address = target_address
        self.service = service
        self.service_of: Callable[[logging.LogRecord], str] | None = None
        self.host = socket.gethostname() if host is None else host
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        # Bytes that the entries of one batch may take, with their framing.
        self._max_entries_bytes = max_batch_bytes - REQUEST_FRAMING_BYTES
        # An entry that did not fit in the last batch, the first of the next
        # one. Only the sending thread uses it.
        self._held_entry: logs_pb2.LogEntry | None = None
        self.flush_interval = flush_interval
        self.call_timeout = call_timeout
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.backoff = backoff
        self._sending = threading.Event()
        # Set by the sender after its first successful call. Until then, calls
        # wait for a connection and failing batches are kept.
        self._reached = False
        # The status code of the last call that reached the log router and
        # failed, for the warning at shutdown when no call has succeeded yet.
        self._router_error_code: grpc.StatusCode | None = None

        self._excluded = tuple(ALWAYS_EXCLUDED) + tuple(excluded_loggers)
        self._queue: queue.Queue[logs_pb2.LogEntry | _Flush] = queue.Queue(queue_size)
        self._counter_lock = threading.Lock()
        self._dropped = 0
        # Records dropped from the full queue before the first successful call.
        self._dropped_unreached = 0
        self._unreached_drops_reported = False
        self._shipped = 0
        self._rejected = 0
        self._drop_warnings = Throttle(_WARNING_INTERVAL)

        self._stopping = threading.Event()
        # The channel does not retry by itself, so that `max_attempts` counts
        # every call and the backoff between them is this handler's. Until a
        # call succeeds, calls wait for the channel to connect. Its reconnect
        # backoff is kept short (gRPC's default is longer), so records queued
        # at startup go out soon after the log router listens.
        self._channel = grpc.insecure_channel(
            target_address,
            options=[
                ("grpc.enable_retries", 0),
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            ],
        )
        self._stub = logs_grpc.LogsServiceStub(auth.signing_channel(self._channel))
        self._sender = threading.Thread(
            target=self._run, name=f"log-ship-{service}", daemon=True
        )
        self._sender.start()
        if send:
            self._sending.set()

    @property
    def dropped_count(self) -> int:
        """Records dropped because the queue was full or their batch failed."""
        with self._counter_lock:
            return self._dropped

    @property
    def shipped_count(self) -> int:
        """Records that the server accepted."""
        with self._counter_lock:
            return self._shipped

    @property
    def rejected_count(self) -> int:
        """Records that reached the server but that it rejected."""
        with self._counter_lock:
            return self._rejected

    def filter(self, record: logging.LogRecord) -> bool:
        """Skip excluded loggers and records from the sending thread itself."""
        if record.thread == self._sender.ident:
            return False
        name = record.name
        for prefix in self._excluded:
            if name == prefix or name.startswith(prefix + "."):
                return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record without blocking, dropping the oldest when full."""
        if self._stopping.is_set():
            self._count_dropped(1)
            return
        try:
            entry = self._to_entry(record)
        except Exception:
            self.handleError(record)
            return
        if entry is None:
            self._count_dropped(1)
            self._warn_too_large(record)
            return
        self._put_dropping_oldest(entry)

    def _put_dropping_oldest(self, entry: logs_pb2.LogEntry) -> None:
        # A few rounds, because other threads emit into the same queue. The
        # newest record is dropped instead when they keep it full.
        for _ in range(3):
            try:
                self._queue.put_nowait(entry)
                return
            except queue.Full:
                pass
            try:
                oldest = self._queue.get_nowait()
            except queue.Empty:
                continue
            if isinstance(oldest, _Flush):
                # Back at the end, so the flush waits for more, never less.
                try:
                    self._queue.put_nowait(oldest)
                except queue.Full:
                    oldest.done.set()
            else:
                self._count_queue_drop()
        self._count_queue_drop()

    def _count_queue_drop(self) -> None:
        with self._counter_lock:
            self._dropped += 1
            if not self._reached:
                self._dropped_unreached += 1

    def start_sending(self) -> None:
        """Let the sender send the queued records and those that follow."""
        self._sending.set()

    def flush(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> bool:
        """Wait until the records queued so far are sent or dropped.

        Returns:
          True when they were, False when `timeout` seconds passed first or
          when sending has not started.
        """
        if not self._sending.is_set():
            return False
        if not self._sender.is_alive():
            return self._queue.empty()
        marker = _Flush()
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Send what is queued, within `timeout` seconds, then stop the sender.

        Then the sender's call in flight is cancelled, and `close` waits at
        most `_CANCEL_JOIN_SECONDS` more for the sender to end. Records not
        sent by then, such as all of them when log_service was never reached,
        are counted as dropped, and their number is logged.
        """
        if not self._stopping.is_set():
            deadline = time.monotonic() + timeout
            dropped_before = self.dropped_count
            self.flush(timeout)
            self._stopping.set()
            # Wake the sender, which may be waiting to start or for a record.
            self._sending.set()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_Flush())
            self._sender.join(max(0.0, deadline - time.monotonic()))
            # Closing the channel cancels a call still waiting for log_service,
            # and the sender then drops its batch and ends.
            self._channel.close()
            self._sender.join(_CANCEL_JOIN_SECONDS)
            self._count_dropped(self._discard_queue())
            if not self._sender.is_alive() and self._held_entry is not None:
                self._held_entry = None
                self._count_dropped(1)
            self._warn_dropped_at_close(self.dropped_count - dropped_before)
        super().close()

    def _to_entry(self, record: logging.LogRecord) -> logs_pb2.LogEntry | None:
        """Convert a record, cut to fit `max_batch_bytes`.

        Returns None when the entry does not fit even with an empty message.
        """
        seconds, nanos = divmod(
            int(record.created * NANOS_PER_SECOND), NANOS_PER_SECOND
        )
        entry = logs_pb2.LogEntry(
            timestamp=Timestamp(seconds=seconds, nanos=nanos),
            severity=severity_of_level(record.levelno),
            service=self.service_of(record) if self.service_of else self.service,
            host=self.host,
            message=record.getMessage(),
        )
        entry.attributes["logger"] = record.name
        entry.attributes["thread"] = record.threadName or str(record.thread)
        entry.attributes["process"] = str(record.process)
        if record.exc_info:
            entry.attributes["exception"] = _formatter.formatException(record.exc_info)
        elif record.exc_text:
            entry.attributes["exception"] = record.exc_text
        if record.stack_info:
            entry.attributes["stack"] = record.stack_info
        if _entry_bytes(entry) > self._max_entries_bytes and not self._cut_to_fit(
            entry
        ):
            return None
        return entry

    def _cut_to_fit(self, entry: logs_pb2.LogEntry) -> bool:
        """Cut the attribute values and then the message until the entry fits.

        Returns False when the entry does not fit even with an empty message,
        because its service or host is too long.
        """
        for key, value in list(entry.attributes.items()):
            cut, was_cut = cut_utf8(value, ATTRIBUTE_VALUE_BYTES)
            if was_cut:
                entry.attributes[key] = cut
        message = entry.message
        message_bytes = len(message.encode("utf-8"))
        entry.attributes[ORIGINAL_MESSAGE_BYTES_ATTRIBUTE] = str(message_bytes)
        entry.message = ""
        room = self._max_entries_bytes - _entry_bytes(entry)
        if room < 0:
            return False
        cut, was_cut = cut_utf8(message, room)
        entry.message = cut
        if not was_cut:
            del entry.attributes[ORIGINAL_MESSAGE_BYTES_ATTRIBUTE]
        return True

    def _run(self) -> None:
        self._sending.wait()
        while not self._stopping.is_set():
            batch, markers = self._next_batch()
            if batch:
                self._send(batch)
                self._report_unreached_drops()
            for marker in markers:
                marker.done.set()

    def _next_batch(self) -> tuple[list[logs_pb2.LogEntry], list[_Flush]]:
        """Collect up to `batch_size` entries, or what comes within the interval.

        A flush marker ends the batch early, so that `flush` does not wait for
        the interval. An entry that would take the batch over
        `max_batch_bytes` ends it too and starts the next one.
        """
        batch: list[logs_pb2.LogEntry] = []
        markers: list[_Flush] = []
        deadline: float | None = None
        batch_bytes = 0
        if self._held_entry is not None:
            batch.append(self._held_entry)
            batch_bytes = _entry_bytes(self._held_entry)
            self._held_entry = None
            deadline = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_size and not markers:
            wait = self.flush_interval
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                break
            if isinstance(item, _Flush):
                markers.append(item)
                continue
            item_bytes = _entry_bytes(item)
            if batch and batch_bytes + item_bytes > self._max_entries_bytes:
                self._held_entry = item
                break
            batch.append(item)
            batch_bytes += item_bytes
            if deadline is None:
                deadline = time.monotonic() + self.flush_interval
        return batch, markers

    def _send(self, batch: list[logs_pb2.LogEntry]) -> None:
        request = batch_request(batch, str(uuid.uuid4()))
        delay = self.backoff
        attempt = 0
        retry_end = time.monotonic() + self.retry_seconds
        while True:
            attempt += 1
            try:
                response = self._stub.WriteLogEntries(
                    request,
                    timeout=self.call_timeout,
                    wait_for_ready=not self._reached,
                )
            except ValueError:
                # The stub raises ValueError when `close` closed the channel
                # between two calls.
                if not self._stopping.is_set():
                    raise
                self._count_dropped(len(batch))
                return
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in NOT_REACHED_CODES and code != grpc.StatusCode.CANCELLED:
                    self._router_error_code = code
                if len(batch) > 1 and _is_request_too_large(exc):
                    # The router's max_message_bytes is below max_batch_bytes.
                    # The halves get request ids of their own, because the
                    # router stored none of the batch.
                    middle = len(batch) // 2
                    self._send(batch[:middle])
                    self._send(batch[middle:])
                    return
                # Closing ends the retries early, so that `close` keeps its bound.
                if self._should_drop(exc, attempt, retry_end) or self._stopping.wait(
                    delay
                ):
                    self._count_dropped(len(batch))
                    if not self._stopping.is_set():
                        self._warn_dropped(len(batch), attempt, exc)
                    return
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            with self._counter_lock:
                self._reached = True
                self._shipped += response.accepted_count
                self._rejected += response.rejected_count
            return

    def _should_drop(
        self, error: grpc.RpcError, attempt: int, retry_end: float
    ) -> bool:
        """Return whether to drop a batch whose call failed with `error`.

        Before the first call succeeds, log_service may still be starting,
        so a code of NOT_REACHED_CODES never drops the batch then.
        """
        code = error.code()
        if code not in RETRYABLE_CODES or _is_request_too_large(error):
            return True
        if not self._reached and code in NOT_REACHED_CODES:
            return False
        return attempt >= self.max_attempts and time.monotonic() >= retry_end

    def _report_unreached_drops(self) -> None:
        """Log once how many records were dropped before the first success.

        The warning goes to the process's other handlers and, as an entry of
        its own, to log_service, so a query there shows the gap.
        """
        with self._counter_lock:
            if not self._reached or self._unreached_drops_reported:
                return
            self._unreached_drops_reported = True
            count = self._dropped_unreached
        if not count:
            return
        record = _LOGGER.makeRecord(
            _LOGGER.name,
            logging.WARNING,
            __file__,
            0,
            "dropped %d log records before log_service at %s first accepted a "
            "batch, because the queue holds at most %d",
            (count, self.target_address, self._queue.maxsize),
            None,
        )
        if _LOGGER.isEnabledFor(logging.WARNING):
            _LOGGER.handle(record)
        entry = self._to_entry(record)
        if entry is not None:
            self._send([entry])

    def _count_dropped(self, count: int) -> None:
        if count:
            with self._counter_lock:
                self._dropped += count

    def _warn_dropped_at_close(self, count: int) -> None:
        if not count:
            return
        if self._reached:
            _LOGGER.warning(
                "dropped %d log records at shutdown that log_service at %s did "
                "not accept in time",
                count,
                self.target_address,
            )
        elif self._router_error_code is not None:
            _LOGGER.warning(
                "dropped %d log records at shutdown; log_service at %s accepted "
                "no batch, and its last call failed with %s",
                count,
                self.target_address,
                self._router_error_code.name,
            )
        else:
            _LOGGER.warning(
                "dropped %d log records at shutdown, because log_service at %s "
                "was never reached",
                count,
                self.target_address,
            )

    def _warn_too_large(self, record: logging.LogRecord) -> None:
        if self._drop_warnings.allow() is None:
            return
        _LOGGER.warning(
            "dropped a log record of logger %s, because its service and host "
            "alone take more than max_batch_bytes (%d); shorten them or raise "
            "max_batch_bytes (%d dropped so far; further drops are counted "
            "without a warning for %.0f s)",
            record.name,
            self.max_batch_bytes,
            self.dropped_count,
            _WARNING_INTERVAL,
        )

    def _warn_dropped(self, count: int, attempts: int, error: grpc.RpcError) -> None:
        if self._drop_warnings.allow() is None:
            return
        _LOGGER.warning(
            "dropped %d log records after %d failed calls to %s: %s (%d dropped "
            "so far; further drops are counted without a warning for %.0f s)",
            count,
            attempts,
            self.target_address,
            error.code().name,
            self.dropped_count,
            _WARNING_INTERVAL,
        )

    def _discard_queue(self) -> int:
        discarded = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return discarded
            if isinstance(item, _Flush):
                item.done.set()
            else:
                discarded += 1


def _entry_bytes(entry: logs_pb2.LogEntry) -> int:
    """Return the bytes that `entry` takes in a request, with its framing."""
    return entry.ByteSize() + ENTRY_FRAMING_BYTES


def _is_request_too_large(error: grpc.RpcError) -> bool:
    """Return whether the server rejected the request as over max_message_bytes."""
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    status = rpc_status.from_call(error)
    if status is None:
        return False
    return status_reason(status) == REQUEST_TOO_LARGE


_formatter = logging.Formatter()
