"""Standard input for `splitlog logs ship -`.

A pipe such as `tail -F app.log | splitlog logs ship - --service web` may
pause for any time between lines, while `logs ship` sends a batch only when
it is full. So a reader thread parses the lines, and the shipping loop
receives them from a queue together with `IDLE` markers: one after each
`--flush-seconds` without a new line, on which the loop sends the partly
filled batch.

Standard input has no path to derive request ids from. Without
`--source-name` every batch gets a random id, so a second run stores its
lines again. With it, ids derive from the service, the name, the batch's
first line number and its entries, as they do for a file.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from splitlog.logs.v1 import logs_service_pb2 as logs_pb2

#: The FILE argument that stands for standard input.
STDIN_ARGUMENT = "-"
#: Name of standard input in messages, in place of a path.
STDIN_LABEL = "standard input"
DEFAULT_FLUSH_SECONDS = 1.0
#: The marker of a pause in the input.
IDLE = None
# Parsed entries that may wait in the queue while a batch is being sent.
_MAX_PENDING_ENTRIES = 1000
# Seconds between the reader thread's checks of the stop flag while the
# queue is full.
_STOP_CHECK_SECONDS = 0.1

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
        "unless a pause longer than --flush-seconds splits the input into "
        "other batches."
    )


class IdleMarkedEntries:
    """Entries parsed in a background thread, with `IDLE` after each pause.

    Iterating yields (line number, entry) pairs, or `IDLE` when no entry
    arrived for `flush_seconds`. An exception of the parser, such as an
    unknown zone or a read error, is raised by the iteration.

    Args:
      entries: the parser's (line number, entry) pairs; it may block on
        its input for any time.
      flush_seconds: the pause after which `IDLE` is yielded.
    """

    def __init__(
        self,
        entries: Iterable[tuple[int, logs_pb2.LogEntry]],
        flush_seconds: float,
    ) -> None:
        self._flush_seconds = flush_seconds
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(_MAX_PENDING_ENTRIES)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(entries,), name="logs-ship-stdin", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[tuple[int, logs_pb2.LogEntry] | None]:
        while True:
            try:
                kind, value = self._queue.get(timeout=self._flush_seconds)
            except queue.Empty:
                yield IDLE
                continue
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value

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
                if not self._put((_ENTRY, item)):
                    return
        except Exception as exc:  # raised again by the consuming thread
            self._put((_ERROR, exc))
            return
        self._put((_END, None))

    def _put(self, item: tuple[str, Any]) -> bool:
        """Queue an item unless stopped first; return whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_STOP_CHECK_SECONDS)
            except queue.Full:
                continue
            return True
        return False
