"""Standard input for `splitlog logs ship -`.

A pipe such as `tail -F app.log | splitlog logs ship - --service web` may
pause for any time between lines, while `logs ship` sends a full batch at
once. So a reader thread parses the lines, and the shipping loop receives
them from a queue together with `FLUSH` markers. A marker comes at most
`--flush-seconds` after the first line of a partly filled batch was read, and
the loop then sends that batch, so a steady slow writer is not held back
until a batch fills.

The reader thread reads the file descriptor with `os.read`, not through
`sys.stdin`. A thread blocked in the buffered reader of `sys.stdin` holds its
lock, and at exit, such as after Ctrl-C, the interpreter then aborts with
"could not acquire lock ... daemon threads".

Standard input has no path to derive request ids from. Without
`--source-name` every batch gets a random id, so a second run stores its
lines again. With it, ids derive from the service, the name, the batch's
first line number and its entries, as they do for a file.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from splitlog.logs.v1 import logs_service_pb2 as logs_pb2

#: The FILE argument that stands for standard input.
STDIN_ARGUMENT = "-"
#: Name of standard input in messages, in place of a path.
STDIN_LABEL = "standard input"
DEFAULT_FLUSH_SECONDS = 1.0
#: The marker that the partly filled batch is due to be sent.
FLUSH = None
# Parsed entries that may wait in the queue while a batch is being sent.
_MAX_PENDING_ENTRIES = 1000
# Seconds between the reader thread's checks of the stop flag while the
# queue is full.
_STOP_CHECK_SECONDS = 0.1
_READ_BYTES = 64 * 1024

_ENTRY, _END, _ERROR = "entry", "end", "error"


def source_key(source_name: str | None) -> str | None:
    """Return the key that request ids of standard input derive from, or None.

    The prefix keeps these ids apart from those of a file, whose key is an
    absolute path.
    """
    if source_name is None:
        return None
    return f"stdin:{source_name}"


def rerun_advice(line: int, source_name: str | None) -> str:
    """Say how to ship the lines of standard input that a failed run did not store."""
    if source_name is None:
        return (
            "Standard input cannot be read again, and its batches had random "
            f"request ids, so send the lines from line {line} on again to ship "
            "the rest."
        )
    return (
        "To ship the rest, send the same input again with the same "
        "--source-name. Batches that are already stored are not stored twice, "
        "unless the input arrived at another pace and so split into other "
        "batches."
    )


def too_large_advice(line: int, source_name: str | None, client_side: bool) -> str:
    """Say how to ship the rest of standard input after line `line` was too
    large to send, over the client's send limit when `client_side` is True
    and over the server's max_message_bytes otherwise."""
    if source_name is None:
        if client_side:
            fix = (
                f"with the parts of line {line} first if you split it into lines "
                "shorter than that limit (the server's max_message_bytes does "
                "not change it)"
            )
        else:
            fix = (
                f"with line {line} first if you raise the server's "
                "max_message_bytes or shorten the line"
            )
        return (
            f"To ship the rest, send the lines after line {line} again, {fix}. "
            "Standard input cannot be read again, and its batches had random "
            f"request ids, so lines before line {line} that are sent again are "
            "stored twice."
        )
    if client_side:
        fix = (
            f"leave out line {line} of the input or split it into lines shorter "
            "than that limit (the server's max_message_bytes does not change it)"
        )
    else:
        fix = (
            "raise the server's max_message_bytes, or leave out or shorten line "
            f"{line} of the input"
        )
    return (
        f"To ship the rest, {fix}, and send the input again with the same "
        "--source-name. Batches that are already stored are not stored twice, "
        "unless the input arrives at another pace and so splits into other "
        "batches."
    )


class DescriptorLines:
    """A binary reader of lines from a file descriptor, using `os.read`.

    `readline` returns the next line with its LF, the last line without
    one, or b"" at the end of the input, as a binary file's `readline` does.
    With a `size`, it returns at most that many bytes, and the next call
    continues the same line, so the buffer stays within `size` plus one read.
    """

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self._buffer = bytearray()
        # Start of the next line, and where the search for its LF resumes.
        self._start = 0
        self._scan = 0
        self._ended = False

    def readline(self, size: int = -1) -> bytes:
        while True:
            end = self._buffer.find(b"\n", self._scan)
            if end >= 0:
                stop = end + 1
            elif self._ended:
                stop = len(self._buffer)
            else:
                # The buffer has no LF, so the next search starts at its end.
                self._scan = len(self._buffer)
                stop = None
            available = len(self._buffer) if stop is None else stop
            if size >= 0 and available - self._start >= size:
                stop = self._start + size
            if stop is not None:
                return self._take(stop)
            del self._buffer[: self._start]
            self._start = 0
            self._scan = len(self._buffer)
            chunk = os.read(self._descriptor, _READ_BYTES)
            if chunk:
                self._buffer += chunk
            else:
                self._ended = True

    def _take(self, stop: int) -> bytes:
        """Return the buffered bytes from the line's start to `stop`."""
        line = bytes(self._buffer[self._start : stop])
        if self._ended and stop == len(self._buffer):
            self._buffer.clear()
            stop = 0
        self._start = stop
        # An LF found past `stop` is found again from here.
        self._scan = stop
        return line


class FlushMarkedEntries:
    """Entries parsed in a background thread, with `FLUSH` when a batch is due.

    Iterating yields (line number, entry) pairs, or `FLUSH` once
    `flush_seconds` have passed since the first entry of the partly filled
    batch was read, unless more entries are already waiting. The batch
    starts after each `FLUSH` and `restart_flush_timer` call. An exception
    of the parser, such as an unknown zone or a read error, is raised by the
    iteration.

    Args:
      entries: the parser's (line number, entry) pairs; it may block on
        its input for any time.
      flush_seconds: the maximum time from reading a batch's first line to
        yielding `FLUSH`.
    """

    def __init__(
        self,
        entries: Iterable[tuple[int, logs_pb2.LogEntry]],
        flush_seconds: float,
    ) -> None:
        self._flush_seconds = flush_seconds
        # The monotonic time at which the partly filled batch is due, or None
        # while the batch is empty.
        self._flush_at: float | None = None
        self._last_read_at = 0.0
        self._queue: queue.Queue[tuple[str, Any, float]] = queue.Queue(
            _MAX_PENDING_ENTRIES
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(entries,), name="logs-ship-stdin", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[tuple[int, logs_pb2.LogEntry] | None]:
        while True:
            timeout = None
            if self._flush_at is not None:
                timeout = max(0.0, self._flush_at - time.monotonic())
            try:
                kind, value, read_at = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._flush_at = None
                yield FLUSH
                continue
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            self._last_read_at = read_at
            if self._flush_at is None:
                self._flush_at = read_at + self._flush_seconds
            yield value

    def restart_flush_timer(self, batch_has_entry: bool) -> None:
        """Time the next batch after a full one was sent.

        The timer starts at the read time of the last entry yielded when the
        new batch already contains that entry, and otherwise at the next one.
        """
        if batch_has_entry:
            self._flush_at = self._last_read_at + self._flush_seconds
        else:
            self._flush_at = None

    def drain(self) -> list[tuple[int, logs_pb2.LogEntry]]:
        """Return the entries already read but not yet yielded, without waiting."""
        drained = []
        while True:
            try:
                kind, value, _ = self._queue.get_nowait()
            except queue.Empty:
                return drained
            if kind == _ENTRY:
                drained.append(value)

    def close(self) -> None:
        """Stop the reader thread.

        NOTE: a thread blocked on reading its input ends only at the next
        line or at the end of the input. It is a daemon thread, so it does
        not keep the process alive.
        """
        self._stop.set()

    def _read(self, entries: Iterable[tuple[int, logs_pb2.LogEntry]]) -> None:
        try:
            for item in entries:
                if not self._put((_ENTRY, item, time.monotonic())):
                    return
        except Exception as exc:  # raised again by the consuming thread
            self._put((_ERROR, exc, time.monotonic()))
            return
        self._put((_END, None, time.monotonic()))

    def _put(self, item: tuple[str, Any, float]) -> bool:
        """Queue an item unless stopped first; return whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_STOP_CHECK_SECONDS)
            except queue.Full:
                continue
            return True
        return False
