"""Ingest counters of the router, per minute of receive time, in SQLite.

Writers add to in-memory counters. A background thread writes them to one
SQLite file in the router's data folder once a second while any are
pending, and `close` writes the rest. So a busy write path pays a
dictionary update per batch instead of a disk write. A crash of the router
loses at most the last second of counts. A read flushes first, so it
returns every counted batch.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from splitlog.logs.v1 import logs_service_pb2
from splitlog_runtime import private_files

_LOGGER = logging.getLogger(__name__)

NANOS_PER_MINUTE = 60 * 1_000_000_000
FLUSH_INTERVAL_SECONDS = 1.0

_ACCEPTED = "accepted"
_DUPLICATES = "duplicates"
_FAILED = "failed_batches"
_REJECTED_PREFIX = "rejected:"


class IngestCounters:
    """Counts accepted, duplicate and rejected entries and failed batches.

    Counts are kept per minute of receive time.

    Args:
      path: the SQLite file; created with its table when missing.
    """

    def __init__(self, path: Path) -> None:
        private_files.private_sqlite_file(path)
        self._path = path
        self._connection = sqlite3.connect(path, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS ingest_counts ("
            " minute INTEGER NOT NULL, counter TEXT NOT NULL,"
            " count INTEGER NOT NULL, PRIMARY KEY (minute, counter))"
        )
        self._connection.commit()
        self._lock = threading.Lock()
        self._pending: Counter[tuple[int, str]] = Counter()
        self._closed = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="ingest-counters", daemon=True
        )
        self._flusher.start()

    def record(
        self,
        receive_ns: int,
        *,
        accepted: int = 0,
        duplicates: int = 0,
        rejected: Mapping[int, int] | None = None,
        failed_batches: int = 0,
    ) -> None:
        """Add one batch's outcome to the minute of its receive time.

        Args:
          receive_ns: when the router received the batch, in Unix nanoseconds.
          accepted: entries newly stored.
          duplicates: entries of a retried batch that a shard already held,
            so they were not stored again.
          rejected: rejected entries per `RejectionReason` value.
          failed_batches: batches that failed as a whole.
        """
        minute = receive_ns // NANOS_PER_MINUTE
        with self._lock:
            if accepted:
                self._pending[(minute, _ACCEPTED)] += accepted
            if duplicates:
                self._pending[(minute, _DUPLICATES)] += duplicates
            for reason, count in (rejected or {}).items():
                self._pending[(minute, f"{_REJECTED_PREFIX}{reason}")] += count
            if failed_batches:
                self._pending[(minute, _FAILED)] += failed_batches

    def flush(self) -> None:
        """Write the in-memory counts to SQLite.

        Raises:
          sqlite3.Error: the write failed. The counts stay in memory for the
            next flush.
        """
        with self._lock:
            if not self._pending:
                return
            rows = [
                (minute, name, count) for (minute, name), count in self._pending.items()
            ]
            try:
                self._connection.executemany(
                    "INSERT INTO ingest_counts (minute, counter, count)"
                    " VALUES (?, ?, ?) ON CONFLICT (minute, counter) DO UPDATE"
                    " SET count = count + excluded.count",
                    rows,
                )
                self._connection.commit()
            except sqlite3.Error:
                self._connection.rollback()
                raise
            self._pending.clear()

    def _flush_periodically(self) -> None:
        failures = 0
        while not self._closed.wait(FLUSH_INTERVAL_SECONDS):
            try:
                self.flush()
            except sqlite3.Error as error:
                failures += 1
                # Log the first failure and then one in every 60, about one
                # a minute while the disk stays full or unwritable.
                if failures % 60 == 1:
                    _LOGGER.warning(
                        "writing ingest counters to %s failed (%d times so"
                        " far); keeping them in memory: %s",
                        self._path,
                        failures,
                        error,
                    )
            else:
                failures = 0

    def read(
        self, start_ns: int | None, end_ns: int
    ) -> logs_service_pb2.IngestCounters:
        """Sum the counters of the minutes that overlap [start_ns, end_ns).

        Counts are kept per whole minute, so a range that starts or ends inside
        a minute includes that whole minute.
        """
        self.flush()
        first = -(2**62) if start_ns is None else start_ns // NANOS_PER_MINUTE
        last = -(-end_ns // NANOS_PER_MINUTE)
        with self._lock:
            rows = self._connection.execute(
                "SELECT counter, SUM(count) FROM ingest_counts"
                " WHERE minute >= ? AND minute < ? GROUP BY counter",
                (first, last),
            ).fetchall()
        counters = logs_service_pb2.IngestCounters()
        for name, count in rows:
            if name == _ACCEPTED:
                counters.accepted_count = count
            elif name == _DUPLICATES:
                counters.duplicate_count = count
            elif name == _FAILED:
                counters.failed_batch_count = count
            elif name.startswith(_REJECTED_PREFIX):
                counters.rejected_count += count
                counters.rejection_counts.append(
                    logs_service_pb2.RejectionCount(
                        reason=int(name[len(_REJECTED_PREFIX) :]), count=count
                    )
                )
        counters.rejection_counts.sort(key=lambda item: item.reason)
        return counters

    def close(self) -> None:
        """Stop the flush thread, write the remaining counts and close the file."""
        self._closed.set()
        self._flusher.join()
        try:
            self.flush()
        except sqlite3.Error:
            # Shutdown goes on; only the counts since the last flush are lost.
            _LOGGER.exception("writing the last ingest counts at shutdown failed")
        finally:
            with self._lock:
                self._connection.close()
