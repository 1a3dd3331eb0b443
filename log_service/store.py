"""Entry storage of one log node: DuckDB files, one per UTC time partition.

A `LogStore` owns a directory that contains one DuckDB database file per time
partition and `store.json`. The state file lists the live partition files
(each with its UTC start and width) and the highest sequence number applied.
All partition files are attached to one in-memory DuckDB database, so they
share its buffer pool and worker threads.

Partitions come in three sizes when `compact_after_seconds` is set: recent
entries go into partitions of `partition_seconds` (an hour by default), and
entries of a UTC day that ended at least `compact_after_seconds` ago go
into one file for that day. A background compaction (`compact`) merges the
small partitions of such a day into its day file, sorted by time. An old
day without a file of its own shares its UTC month's file instead, until
that file contains `month_file_rows` entries, so that a log file of scattered
dates creates one file per month rather than one per day. The compaction
also sorts a day or month file whose entries arrived out of time order, as
happens when old days are shipped in no particular order.

Crash safety rests on two rules. First, `store.json` is rewritten only after
every partition insert of an `apply()` call has committed. At open, rows
above the recorded sequence are deleted, because a crash may have left them
from a call that did not finish. The node replays its write-ahead log after
`last_sequence()`, so those rows come back exactly once. Second, a partition
file exists for the store only once `store.json` lists it. Rewriting
`store.json` is the one atomic step of a merge. Before it, the merged file
is not listed and is deleted at open. After it, the merge's sources are not
listed and are deleted at open. No entry is lost or counted twice either way.

Readers never see part of an `apply()` call: every query is capped at the
sequence that was complete when it started (`_visible`), which `apply()`
raises only after its last commit. Dropping a partition file, swapping in a
merged file and `delete_after` wait until running reads finish.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from log_service import keyword_index, store_sql
from log_service.keyword_index import TrigramFilter
from splitlog.logs.v1 import node_service_pb2
from splitlog_runtime import private_files
from splitlog_runtime.errors import FieldViolation, InvalidArgument, Unavailable

_LOGGER = logging.getLogger(__name__)

STATE_FILE = "store.json"
# Format 1 had no file list: every partition file in the directory was live
# and all had the width `partition_seconds`. Format 2 lists the files.
STATE_FORMAT = 2
_NS_PER_SECOND = 1_000_000_000
DAY_SECONDS = 86400
_DAY_NS = DAY_SECONDS * _NS_PER_SECOND
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A partition file's name: its UTC start, then its width unless it is the
# store's `partition_seconds`, then a number that keeps the name unique.
_FILE_PATTERN = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+)([dhs]))?(?:-(\d+))?\.duckdb$")
_WAL_PATTERN = re.compile(r"^(.+\.duckdb)\.wal$")
_UNIT_SECONDS = {"d": DAY_SECONDS, "h": 3600, "s": 1}
_NAME_FORMAT = "%Y%m%dT%H%M%SZ"
# How many times more partitions each statement of a page reads than the
# statement before.
QUERY_GROWTH = 2
# How often the background compaction looks for days to merge.
COMPACT_INTERVAL_SECONDS = 60.0
# Size of a DuckDB write-ahead log that starts a checkpoint (DuckDB's default
# is 16 MiB). Fewer checkpoints cost less CPU per inserted row: on 2 cores
# with DuckDB 2.0.1, 10,000-entry inserts took about 6 us of CPU per row at
# 16 MiB and about 4.5 us at 64 MiB, checkpoints included. The price is a
# longer DuckDB log to replay at open, and more rows held in memory until
# they are checkpointed.
CHECKPOINT_THRESHOLD = "64MiB"
# A checkpoint after deletions empties the DuckDB WAL but frees little of
# the file, because free blocks serve only later inserts into the same
# file. With DuckDB 2.0.1, deleting 90% of a 400,000-entry day file and
# checkpointing left it at 6.3 MB with 21 of its 24 blocks free. For
# 200,000 entries the file kept 154,240 stored rows for 20,000 live ones,
# and a copy of the live rows took 0.8 MB. So retention rewrites a
# partition once at least this fraction of its blocks is free or of its
# stored rows is deleted, and that share of the file is at least
# REWRITE_MIN_FREE_BYTES.
REWRITE_FREE_FRACTION = 0.5
REWRITE_MIN_FREE_BYTES = 1 << 20
# An old UTC day that has no partition yet goes into the file of its month
# while that file contains fewer rows than this. So a log file of scattered
# dates creates about one file per month instead of one per day, which
# matters because creating a file costs a few milliseconds of CPU. A month
# that reached it sends its further days to day files, which bounds what
# retention rewrites or keeps of a month file.
MONTH_FILE_MAX_ROWS = 100_000
# Maximum time by which a row of a day or month file may precede the latest
# timestamp already in the file while the file still counts as in time
# order. Lines of a log file that several threads wrote are often seconds
# out of order. That widens the min-max bounds of DuckDB's vectors by as
# much, which changes little for ranges of minutes or more, so such a file
# is not rewritten for it.
ORDER_TOLERANCE_NS = 60 * _NS_PER_SECOND
# Maximum number of rows that retention copies in one rewrite. The copy runs
# under the store's write lock, so new entries wait for it. A rewrite of
# 1,000,000 rows took 10 s with DuckDB 2.0.1 on 2 shared cores at a load
# average of 14, so on such a machine the wait stays around 10 s. The
# timing ran `LogStore._rewrite` on a day partition filled the way `fill_day`
# in tests/log_service/test_store.py fills it. A larger partition keeps its
# size until retention drops it whole.
REWRITE_MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class _RetentionPass:
    """The cutoffs of one retention pass and the highest sequence it covers."""

    default_cutoff: int
    service_cutoffs: dict[str, int]
    # None covers every entry.
    max_sequence: int | None


@dataclass
class _Partition:
    """One partition file and what the store remembers about its rows."""

    start: int  # UTC start, in seconds since the Unix epoch
    seconds: int  # width
    path: Path
    alias: str
    rows: int = 0
    min_ts: int | None = None
    max_ts: int | None = None
    max_seq: int = 0
    # At most the lowest sequence of its rows: deletions may leave it lower.
    # 0 when unknown or empty.
    min_seq: int = 0
    # Services with rows here, possibly more after deletions. The writer
    # replaces the set rather than changing it, so readers need no lock.
    services: frozenset[str] = frozenset()
    # Raised whenever rows are deleted, so a merge that copied the rows
    # before can tell that its copy is out of date.
    deletions: int = 0
    # Trigrams of the messages, possibly more after deletions.
    trigrams: TrigramFilter = field(default_factory=TrigramFilter)
    # Whether a sidecar file of `trigrams` may exist. It is deleted before
    # the rows change, so a sidecar on disk always covers the file's rows.
    trigrams_saved: bool = False
    # True when the rows are in (ts, seq) order in the file, within
    # ORDER_TOLERANCE_NS. Only day and month files track it, because
    # `compact` sorts them once they are out of order (see
    # `sort_quiet_seconds` of `LogStore`).
    in_order: bool = True
    # time.monotonic() at the last insert, or at the store's open when no
    # insert has reached the partition since.
    written_at: float = 0.0

    @property
    def key(self) -> tuple[int, int]:
        return self.start, self.seconds

    def may_match(self, flt: node_service_pb2.EntryFilter) -> bool:
        """Return whether rows of this partition may match the filter."""
        if flt.services and self.services.isdisjoint(flt.services):
            return False
        if not self.overlaps(*_time_range(flt)):
            return False
        return not flt.keyword or self.trigrams.may_contain(flt.keyword)

    def stamp(self) -> dict[str, object]:
        """Return what identifies the rows a saved trigram filter covers."""
        return {
            "rows": self.rows,
            "min_ts": self.min_ts,
            "max_ts": self.max_ts,
            "max_seq": self.max_seq,
        }

    def overlaps(self, start: int | None, end: int | None) -> bool:
        """Return whether rows of this partition may lie in [start, end)."""
        if self.min_ts is None or self.max_ts is None:
            return False
        if start is not None and self.max_ts < start:
            return False
        return end is None or self.min_ts < end


class _SharedLock:
    """A lock with many shared holders or one exclusive holder.

    A thread waiting for the exclusive lock blocks new shared holders, so a
    steady stream of queries cannot starve a partition drop. Not reentrant.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            while self._exclusive or self._waiting:
                self._condition.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._condition:
                self._shared -= 1
                if self._shared == 0:
                    self._condition.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._condition.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


class LogStore:
    """The entries of one shard replica, split into UTC time partitions.

    `apply`, `delete_after`, `apply_retention` and `close` may be called from
    any thread and run one at a time. `query`, `count`, `since` and
    `disk_bytes` may run on many threads at once, alongside a writer and a
    compaction.

    Args:
      directory: where the partition files live; created when missing.
      partition_seconds: width of the partitions that new entries go to. A
        directory may contain partitions of an earlier width too. Each
        file's width is recorded, and queries read partitions that overlap.
      compact_after_seconds: None keeps every entry in partitions of
        `partition_seconds`. Otherwise a UTC day that ended at least this
        long ago is old: its entries go straight into its day file, or into
        its month's file (see `month_file_rows`), and `compact` merges its
        smaller partitions into its day file. `partition_seconds` must then
        divide a day.
      month_file_rows: entries of an old day that has no partition of a day
        or less go to the file of its UTC month while that file contains fewer
        rows than this. With 0, every old day gets a day file.
      sort_quiet_seconds: time in seconds without inserts after which
        `compact` sorts a day or month file whose rows arrived out of time
        order. The wait keeps `compact` from rewriting a file again and again
        while it is still being filled.
      clock: function that returns the current time in nanoseconds since the
        Unix epoch. It decides which days are old.

    Raises:
      ValueError: `partition_seconds` is not positive, does not divide a day
        while `compact_after_seconds` is set, or `compact_after_seconds` or
        `month_file_rows` is negative.
    """

    def __init__(
        self,
        directory: Path,
        *,
        partition_seconds: int = DAY_SECONDS,
        compact_after_seconds: int | None = None,
        month_file_rows: int = MONTH_FILE_MAX_ROWS,
        sort_quiet_seconds: float = COMPACT_INTERVAL_SECONDS,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if partition_seconds <= 0:
            raise ValueError(
                f"partition_seconds is {partition_seconds}; it must be positive"
            )
        if compact_after_seconds is not None:
            if compact_after_seconds < 0:
                raise ValueError(
                    f"compact_after_seconds is {compact_after_seconds}; it must "
                    "be 0 or more"
                )
            if month_file_rows < 0:
                raise ValueError(
                    f"month_file_rows is {month_file_rows}; it must be 0 or more"
                )
            if DAY_SECONDS % partition_seconds:
                raise ValueError(
                    f"partition_seconds is {partition_seconds}; with day files it "
                    "must divide 86400 (1, 2, 3, 4, 6, 8, 12 or 24 hours)"
                )
        self._directory = Path(directory)
        self._partition_seconds = partition_seconds
        self._width_ns = partition_seconds * _NS_PER_SECOND
        self._compact_after_ns = (
            None
            if compact_after_seconds is None
            else compact_after_seconds * _NS_PER_SECOND
        )
        self._month_file_rows = month_file_rows
        self._sort_quiet_seconds = sort_quiet_seconds
        # Day partitions are days already, so only smaller ones are merged.
        self._merges = (
            compact_after_seconds is not None and partition_seconds < DAY_SECONDS
        )
        self._clock = clock
        self._write_lock = threading.Lock()
        self._readers = _SharedLock()
        self._cursor_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._closed = False
        self._needs_repair = False
        self._partitions: dict[tuple[int, int], _Partition] = {}
        # Keys of the partitions a running merge reads. Retention leaves them
        # alone until the merge ends.
        self._merging: frozenset[tuple[int, int]] = frozenset()
        # Retention passes that skipped those partitions; the merge applies
        # them when it ends.
        self._deferred_retention: list[_RetentionPass] = []
        self._merge_files: frozenset[str] = frozenset()
        # Merged files left on disk after their swap failed. No new partition
        # may take their names.
        self._kept_files: frozenset[str] = frozenset()
        # Number of snapshot copies under way (`copy_chunks`). While it is
        # above 0, no merge starts or takes effect.
        self._copies = 0
        self._stop = threading.Event()
        self._compactor: threading.Thread | None = None
        self._scans = 0
        self._scans_lock = threading.Lock()
        # Trigram filters built from rows because no sidecar matched.
        self._filters_rebuilt = 0

        private_files.private_directory(self._directory)
        private_files.remove_abandoned_temporary_files(self._directory / STATE_FILE)
        state, listed, unordered = self._read_state()
        self._root = duckdb.connect(":memory:")
        self._root.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        # A merge sorts a whole day, which may not fit in memory. DuckDB then
        # spills to this folder, not to the process's working directory.
        spill = self._directory / "spill"
        self._root.execute("SET temp_directory = ?", [str(spill)])
        self._writer = self._root.cursor()
        self._merger = self._root.cursor()
        opening = time.perf_counter()
        for start, seconds, path in self._live_files(listed):
            partition = self._attach(start, seconds, path)
            partition.in_order = path.name not in unordered
            self._partitions[partition.key] = partition
        filters_seconds = time.perf_counter() - opening
        if state is None:
            # Partitions without a state file mean that the file was deleted.
            # Their highest sequence is then the best estimate left.
            last = max((p.max_seq for p in self._partitions.values()), default=0)
        else:
            last = state
        self._last = last
        self._visible = last
        # The highest sequence that a retention pass may have deleted. Passes
        # before this open are unknown, so it starts at the last sequence.
        self._retention_bound = last
        self._discard_above(last)
        self._write_state(last)
        _LOGGER.info(
            "Opened log store %s: %d partitions, last sequence %d; rebuilt %d of "
            "%d trigram filters (partitions opened in %.2f s)",
            self._directory,
            len(self._partitions),
            last,
            self._filters_rebuilt,
            len(self._partitions),
            filters_seconds,
        )

    def _live_files(
        self, listed: list[tuple[str, int, int]] | None
    ) -> list[tuple[int, int, Path]]:
        """Delete leftover files and return (start, width, path) of the live ones.

        With a file list, the partition files that it does not name are
        deleted, because a merge or an insert that did not finish left them.
        So are DuckDB WALs and trigram sidecars of unlisted files, and
        temporary sidecars. Without a list (a directory of format 1, or a
        lost state file), every partition file is live and nothing is deleted.
        """
        found: dict[str, tuple[int, int]] = {}
        for path in sorted(self._directory.glob("*.duckdb")):
            parsed = _parse_name(path.name, self._partition_seconds)
            if parsed is None:
                _LOGGER.warning("Ignoring %s: not a partition file name", path)
                continue
            found[path.name] = parsed
        if listed is None:
            return [(start, width, self._directory / name) for name, (start, width)
                    in found.items()]  # fmt: skip
        names = {name for name, _, _ in listed}
        for name in sorted(set(found) - names):
            _LOGGER.warning(
                "log store: deleting %s, which %s does not list (left by a merge "
                "or an insert that did not finish)",
                name,
                STATE_FILE,
            )
            for path in (self._directory / name, _wal_path(self._directory / name)):
                path.unlink(missing_ok=True)
        for path in self._directory.glob("*.duckdb.wal"):
            match = _WAL_PATTERN.match(path.name)
            database = match.group(1) if match else ""
            if database not in names and _parse_name(database, 1) is not None:
                path.unlink(missing_ok=True)
        for path in self._directory.glob(
            "*.duckdb" + keyword_index.SIDECAR_SUFFIX + "*"
        ):
            database = path.name.split(keyword_index.SIDECAR_SUFFIX)[0]
            if database not in names or path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
        return [(start, width, self._directory / name) for name, start, width in listed]

    def start_compaction(self, interval: float = COMPACT_INTERVAL_SECONDS) -> None:
        """Run `compact` every `interval` seconds on a thread until `close`."""
        if not self._merges or self._compactor is not None:
            return
        self._compactor = threading.Thread(
            target=self._compact_loop,
            args=(interval,),
            name=f"log-compaction-{self._directory.parent.name}",
            daemon=True,
        )
        self._compactor.start()

    def _compact_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.compact()
            except Unavailable:
                return
            except Exception:
                _LOGGER.exception(
                    "log store %s: compaction failed; retrying in %.0f s",
                    self._directory,
                    interval,
                )

    # Writes ---------------------------------------------------------------

    def apply(self, records: Sequence[node_service_pb2.LogRecord]) -> None:
        """Store the entries of `records`, skipping those already stored.

        Records must come in increasing sequence order. Entries at or below
        `last_sequence()` are skipped, so replaying records is harmless.
        Entries are inserted with one statement per partition. When a later
        partition fails, the rows this call already committed are deleted
        before the error is raised.

        Raises:
          InvalidArgument: a record is malformed (see
            `store_sql.records_to_table`).
        """
        with self._write_lock:
            self._check_open()
            if self._needs_repair:
                self._discard_above(self._last)
                self._needs_repair = False
            table = store_sql.records_to_table(records, self._last)
            if table is None:
                return
            try:
                self._insert(table)
            except BaseException:
                self._repair_after_failed_apply()
                raise
            last = table.column("seq")[-1].as_py()
            self._write_state(last)
            self._last = last
            self._visible = last

    def _insert(self, table: pa.Table) -> None:
        day_files_below = self._day_files_below()
        placement = self._place(table, day_files_below)
        cursor = self._writer
        if placement.groups is None:
            batch = table
            messages = [table.column("message")]
        else:
            batch = table.append_column("part", pa.array(placement.groups))
            messages = placement.split(table.column("message"))
        cursor.register("batch", batch)
        try:
            for index, key in enumerate(placement.keys):
                partition = self._partition_for(key)
                sql = f"INSERT INTO {partition.alias}.entries SELECT "
                sql += store_sql.INSERT_SELECT + " FROM batch"
                params: list[object] = []
                if placement.groups is not None:
                    sql += " WHERE part = ?"
                    params = [index]
                # The filter grows before the rows exist, so it never misses
                # a row, even when the insert fails part way.
                self._forget_saved_trigrams(partition)
                partition.trigrams.add(messages[index])
                inserted = self._run(sql, params)
                low, high, top, bottom = placement.bounds[index]
                if partition.in_order and partition.seconds >= DAY_SECONDS:
                    partition.in_order = _in_order(
                        placement.stamps(index, table), partition.max_ts
                    )
                partition.written_at = time.monotonic()
                partition.rows += inserted[0][0]
                partition.min_ts = (
                    low if partition.min_ts is None else min(partition.min_ts, low)
                )
                partition.max_ts = (
                    high if partition.max_ts is None else max(partition.max_ts, high)
                )
                # The highest sequence of this partition's rows, not of the
                # batch: a saved trigram filter is stamped with it, and the
                # next open compares the stamp with max(seq) of the file.
                partition.min_seq = (
                    bottom if partition.max_seq == 0 else min(partition.min_seq, bottom)
                )
                partition.max_seq = max(partition.max_seq, top)
                names = placement.services[index]
                if not names <= partition.services:
                    partition.services = partition.services | names
                if self._holds_old_days(partition, day_files_below):
                    # Old days rarely receive more entries, so the filter goes
                    # back from 256 KiB to 32 KiB.
                    partition.trigrams.pack()
        finally:
            cursor.unregister("batch")

    def _holds_old_days(self, partition: _Partition, below: int | None) -> bool:
        """Return whether a partition is a day or month file of old days."""
        if below is None:
            return False
        if partition.seconds > self._partition_seconds:
            return True
        return (partition.start + partition.seconds) * _NS_PER_SECOND <= below

    def _day_files_below(self) -> int | None:
        """Return the time below which entries go to day or month files, or None.

        It is the start of the latest UTC day that ended at least
        `compact_after_seconds` ago, so a day either goes to its day file or
        to small partitions, never partly to both.
        """
        if self._compact_after_ns is None:
            return None
        old = self._clock() - self._compact_after_ns
        return old // _DAY_NS * _DAY_NS

    def _place(self, table: pa.Table, below: int | None) -> _Placement:
        """Decide which partition each row of `table` goes to.

        Rows at or after `below` go to partitions of `partition_seconds`.
        Rows of an older UTC day go to that day's file when the day already
        has a partition of a day or less, or when its month's file contains
        `month_file_rows` rows or more. Otherwise they go to its month's file.
        """
        ts = table.column("ts")
        seq = table.column("seq")
        extremes = pc.min_max(ts)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        width = self._width_ns
        old_days: _OldDays | None = None
        if below is not None and low < below:
            old_days = _OldDays(self._partitions, self._month_file_rows)
        single: tuple[int, int] | None = None
        if below is None or low >= below:
            if low // width == high // width:
                single = (
                    low // width * width // _NS_PER_SECOND,
                    width // _NS_PER_SECOND,
                )
        elif high < below and low // _DAY_NS == high // _DAY_NS:
            assert old_days is not None
            single = old_days.key(low // _DAY_NS)
        if single is not None:
            names = frozenset(pc.unique(table.column("service")).to_pylist())
            # Sequences increase along the table.
            bounds = (low, high, seq[-1].as_py(), seq[0].as_py())
            return _Placement([single], None, [bounds], [names])
        stamps = ts.to_numpy()
        old = stamps < below if old_days is not None else np.zeros(len(stamps), bool)
        # Rows of one old day, or of one recent partition, share a slot: its
        # day or partition number, times 2, plus 1 for an old day. The
        # numbers are far from the int64 bounds, since they are divided.
        slots = np.where(old, stamps // _DAY_NS, stamps // width) * 2 + old
        unique_slots, inverse = np.unique(slots, return_inverse=True)
        slot_keys: list[tuple[int, int]] = []
        for slot in unique_slots.tolist():
            number, is_old = divmod(slot, 2)
            if is_old:
                assert old_days is not None
                slot_keys.append(old_days.key(number))
            else:
                start = number * width // _NS_PER_SECOND
                slot_keys.append((start, width // _NS_PER_SECOND))
        keys = sorted(set(slot_keys))
        position = {key: index for index, key in enumerate(keys)}
        slot_group = np.array([position[key] for key in slot_keys], dtype=np.int32)
        groups = slot_group[inverse.reshape(-1)]
        return _Placement.from_groups(table, keys, groups)

    def _repair_after_failed_apply(self) -> None:
        try:
            self._discard_above(self._last)
        except Exception:
            _LOGGER.exception(
                "Could not delete the rows of a failed apply above sequence %d; "
                "the next apply retries",
                self._last,
            )
            self._needs_repair = True

    def mark_applied_through(self, sequence: int) -> None:
        """Record that every entry up to `sequence` is stored.

        A store filled from a snapshot calls it with the snapshot's last
        sequence, which may be above its highest row when retention deleted
        the last entries on the leader.
        """
        with self._write_lock:
            self._check_open()
            if sequence > self._last:
                self._write_state(sequence)
                self._last = sequence
                self._visible = sequence

    def insert_copied(
        self, columns: node_service_pb2.EntryColumns, sequences: Sequence[int]
    ) -> None:
        """Insert entries copied from another replica, under their sequences.

        Unlike `apply`, chunks may come in any order and sequence numbers
        may skip. The recorded last sequence does not move: the caller calls
        `mark_applied_through` once every chunk is in. A store that is
        reopened before that call loses the copied rows, so only an empty
        store that is thrown away on failure is filled this way.
        """
        if not sequences:
            return
        record = node_service_pb2.LogRecord(first_sequence=1, entries=columns)
        table = store_sql.records_to_table([record], 0)
        assert table is not None
        table = table.set_column(0, "seq", pa.array(sequences, type=pa.int64()))
        table = table.sort_by("seq")
        with self._write_lock:
            self._check_open()
            self._insert(table)

    def delete_after(self, sequence: int) -> int:
        """Delete every entry whose sequence is above `sequence`.

        The node calls it when a new leader never had those entries. Later
        `apply` calls may store other entries under the same sequences.

        Returns:
          The number of entries deleted.
        """
        with self._write_lock:
            self._check_open()
            if sequence < 0:
                raise InvalidArgument(
                    f"sequence is {sequence}; it must be 0 or more",
                    field_violations=[FieldViolation("sequence", "must be >= 0")],
                )
            with self._readers.exclusive():
                # The state goes first: if the process dies halfway, the next
                # open finishes the deletion.
                if sequence < self._last:
                    self._write_state(sequence)
                    self._last = sequence
                self._visible = min(self._visible, sequence)
                return self._discard_above(sequence)

    def _discard_above(self, sequence: int) -> int:
        deleted = 0
        for partition in list(self._partitions.values()):
            if partition.max_seq <= sequence:
                continue
            self._forget_saved_trigrams(partition)
            sql = f"DELETE FROM {partition.alias}.entries WHERE seq > ?"
            deleted += self._run(sql, [sequence])[0][0]
            partition.deletions += 1
            self._refresh(partition)
        return deleted

    def apply_retention(
        self,
        default_cutoff: int,
        service_cutoffs: Mapping[str, int],
        *,
        max_sequence: int | None = None,
    ) -> tuple[int, int]:
        """Delete entries older than their service's cutoff.

        An entry is expired when its timestamp is below the cutoff of its
        service: `service_cutoffs[service]` when present, else
        `default_cutoff`. Only entries at or below `max_sequence` are
        deleted, every entry when it is None. A partition whose entries are
        all expired and covered is removed as a file. In other partitions,
        expired entries are deleted row by row.

        Partitions that a merge is copying are left alone until the merge
        ends, because deleting from them would void the merge. The merge
        then applies the pass to its result, or to its sources when it was
        dropped (see `_merge_day`), and logs what that deleted.

        Returns:
          The number of entries deleted (those in dropped files included)
          and the number of partition files dropped, both without the
          partitions left to a running merge.
        """
        retention = _RetentionPass(default_cutoff, dict(service_cutoffs), max_sequence)
        deleted = 0
        dropped = 0
        with self._write_lock:
            self._check_open()
            deferred = False
            for partition in sorted(self._partitions.values(), key=lambda p: p.key):
                if partition.key in self._merging:
                    deferred = True
                    continue
                partition_deleted, partition_dropped = self._expire(
                    partition, retention
                )
                deleted += partition_deleted
                dropped += partition_dropped
            if deferred:
                self._deferred_retention.append(retention)
            if deleted or dropped or deferred:
                reached = self._last if max_sequence is None else max_sequence
                self._retention_bound = max(self._retention_bound, reached)
        if deleted or dropped:
            _LOGGER.info(
                "Retention deleted %d entries and dropped %d partitions in %s",
                deleted,
                dropped,
                self._directory,
            )
        return deleted, dropped

    def _expire(
        self, partition: _Partition, retention: _RetentionPass
    ) -> tuple[int, int]:
        """Apply one retention pass to one partition. The caller holds the write lock.

        Returns the entries deleted and the partitions dropped (0 or 1).
        """
        if partition.max_ts is None:
            self._drop(partition)
            return 0, 1
        bound = retention.max_sequence
        covered = bound is None or partition.max_seq <= bound
        cutoffs = self._cutoffs(
            partition, retention.default_cutoff, retention.service_cutoffs
        )
        if covered and partition.max_ts < min(cutoffs.values()):
            deleted = partition.rows
            self._drop(partition)
            return deleted, 1
        if partition.min_ts is not None and partition.min_ts >= max(cutoffs.values()):
            return 0, 0
        deleted = self._delete_expired(
            partition,
            cutoffs,
            retention.default_cutoff,
            None if covered else bound,
        )
        if partition.rows == 0:
            self._drop(partition)
            return deleted, 1
        if deleted:
            self._reclaim(partition)
        return deleted, 0

    def _reclaim(self, partition: _Partition) -> None:
        """Give the disk space of deleted rows back. The caller holds the write lock.

        A checkpoint empties the partition's DuckDB WAL. When much of the
        file is then free, a copy of its rows replaces it (see
        REWRITE_FREE_FRACTION). A failure is logged and leaves the space for
        the next pass, because the deletion itself has committed.
        """
        try:
            self._run(f"CHECKPOINT {partition.alias}")
            block_size, total, free = self._run(
                "SELECT block_size, total_blocks, free_blocks"
                " FROM pragma_database_size() WHERE database_name = ?",
                [partition.alias],
            )[0]
            # Rows of the file's row groups, deleted ones included.
            (stored,) = self._run(
                "SELECT coalesce(sum(count), 0) FROM pragma_storage_info(?)"
                " WHERE column_path = '[0]'",
                [f"{partition.alias}.entries"],
            )[0]
        except duckdb.Error:
            _LOGGER.exception(
                "log store: checkpoint of %s after retention failed",
                partition.path.name,
            )
            return
        wasted = max(
            free / total if total else 0.0,
            1 - partition.rows / stored if stored else 0.0,
        )
        if wasted < REWRITE_FREE_FRACTION:
            return
        if wasted * total * block_size < REWRITE_MIN_FREE_BYTES:
            return
        if partition.rows > REWRITE_MAX_ROWS:
            _LOGGER.info(
                "log store: %s keeps its deleted rows' space: its %d rows are "
                "over the %d that a rewrite after retention copies",
                partition.path.name,
                partition.rows,
                REWRITE_MAX_ROWS,
            )
            return
        try:
            self._rewrite(partition)
        except (duckdb.Error, OSError):
            _LOGGER.exception(
                "log store: rewrite of %s after retention failed",
                partition.path.name,
            )

    def _rewrite(self, partition: _Partition) -> None:
        """Replace a partition's file by a copy of its rows.

        The caller holds the write lock. The copy is swapped in the way a
        merge swaps its result: the state file lists either the old file or
        the copy, and the next open deletes the one it does not list.
        """
        # NOTE: `apply()` calls wait for the copy, because it runs under the
        # write lock. A merge copies without the lock, but retention bounds
        # the wait with REWRITE_MAX_ROWS instead.
        path = self._new_path(partition.start, partition.seconds)
        target = self._attach(partition.start, partition.seconds, path)
        try:
            self._run(
                f"INSERT INTO {target.alias}.entries"
                f" SELECT * FROM {partition.alias}.entries ORDER BY ts, seq"
            )
            self._run(f"CHECKPOINT {target.alias}")
            _combine(target, [partition])
            target.trigrams = partition.trigrams
            self._swap_in(target, [partition])
        finally:
            if self._partitions.get(target.key) is not target:
                with suppress(duckdb.Error):
                    self._run(f"DETACH {target.alias}")
                if target.path.name not in self._kept_files:
                    for leftover in _partition_files(target.path):
                        leftover.unlink(missing_ok=True)
        self._save_trigrams(target)
        _LOGGER.info(
            "log store %s: rewrote %s as %s to free the space of deleted entries"
            " (%d entries kept)",
            self._directory,
            partition.path.name,
            target.path.name,
            target.rows,
        )

    def _apply_deferred_retention(self, keys: frozenset[tuple[int, int]]) -> None:
        """Apply the retention passes that a merge held back.

        The caller holds the write lock. `keys` are the partitions the merge
        read, and its result's key.
        """
        passes, self._deferred_retention = self._deferred_retention, []
        if not passes or self._closed:
            return
        deleted = dropped = 0
        for retention in passes:
            for key in sorted(keys):
                partition = self._partitions.get(key)
                if partition is None:
                    continue
                partition_deleted, partition_dropped = self._expire(
                    partition, retention
                )
                deleted += partition_deleted
                dropped += partition_dropped
        _LOGGER.info(
            "Retention deleted %d entries and dropped %d partitions in %s after "
            "a merge that had held %d passes back",
            deleted,
            dropped,
            self._directory,
            len(passes),
        )

    def _cutoffs(
        self,
        partition: _Partition,
        default_cutoff: int,
        service_cutoffs: Mapping[str, int],
    ) -> dict[str, int]:
        sql = f"SELECT DISTINCT service FROM {partition.alias}.entries"
        services = [row[0] for row in self._run(sql)]
        return {s: service_cutoffs.get(s, default_cutoff) for s in services}

    def _delete_expired(
        self,
        partition: _Partition,
        cutoffs: dict[str, int],
        default_cutoff: int,
        max_sequence: int | None,
    ) -> int:
        # One statement, so the deletion of a partition is atomic. Services
        # with their own cutoff get a WHEN branch each.
        special = {s: c for s, c in cutoffs.items() if c != default_cutoff}
        params: list[object] = []
        if special:
            branches = " ".join("WHEN ? THEN ?" for _ in special)
            bound = f"CASE service {branches} ELSE ? END"
            for service, cutoff in special.items():
                params.extend([service, cutoff])
        else:
            bound = "?"
        params.append(default_cutoff)
        sql = f"DELETE FROM {partition.alias}.entries WHERE ts < {bound}"
        if max_sequence is not None:
            sql += " AND seq <= ?"
            params.append(max_sequence)
        self._forget_saved_trigrams(partition)
        deleted = self._run(sql, params)[0][0]
        partition.deletions += 1
        self._refresh(partition)
        return deleted

    def _drop(self, partition: _Partition) -> None:
        with self._readers.exclusive():
            self._run(f"DETACH {partition.alias}")
            partitions = dict(self._partitions)
            del partitions[partition.key]
            self._partitions = partitions
            # Unlisted first: a file listed but missing would come back empty.
            self._write_state(self._last)
            for path in _partition_files(partition.path):
                path.unlink(missing_ok=True)
        _LOGGER.info("Dropped log partition %s", partition.path.name)

    # Compaction ------------------------------------------------------------

    def compact(self) -> int:
        """Merge old days' small partitions into day files and sort unordered files.

        A day is old once it ended at least `compact_after_seconds` ago. The
        merged file contains the rows of the day's small partitions and of its
        previous day file, sorted by time, so a time range reads few row
        groups. It replaces them in one step (see the module docstring), so
        readers see either the old files or the merged one. Then each day or
        month file whose rows arrived out of time order, as when old days are
        shipped in no particular order, is copied sorted in the same way. It
        waits until no insert has reached the file for `sort_quiet_seconds`.

        Returns:
          The number of files written, counting days merged and files sorted.
        """
        below = self._day_files_below()
        if below is None or not self._merges:
            return 0
        written = 0
        with self._compact_lock:
            days = sorted(
                {
                    p.start // DAY_SECONDS * DAY_SECONDS
                    for p in self._partitions.values()
                    if p.seconds < DAY_SECONDS
                    and (p.start + p.seconds) * _NS_PER_SECOND <= below
                }
            )
            for day in days:
                if self._stop.is_set():
                    break
                if self._merge_day(day):
                    written += 1
            unsorted = sorted(
                p.key for p in self._partitions.values() if self._sortable(p)
            )
            for key in unsorted:
                if self._stop.is_set():
                    break
                if self._sort_file(key):
                    written += 1
        return written

    def _sortable(self, partition: _Partition) -> bool:
        """Return whether `compact` should sort this day or month file now."""
        quiet = time.monotonic() - partition.written_at >= self._sort_quiet_seconds
        return (
            partition.seconds >= DAY_SECONDS
            and not partition.in_order
            and partition.rows > 0
            and quiet
        )

    def _merge_day(self, day: int) -> bool:
        return self._merge(
            (day, DAY_SECONDS),
            lambda: self._merge_sources(day),
            lambda sources: any(p.seconds < DAY_SECONDS for p in sources),
        )

    def _sort_file(self, key: tuple[int, int]) -> bool:
        def sources() -> list[_Partition]:
            partition = self._partitions.get(key)
            return [] if partition is None else [partition]

        return self._merge(
            key, sources, lambda found: bool(found) and self._sortable(found[0])
        )

    def _merge(
        self,
        key: tuple[int, int],
        sources_now: Callable[[], list[_Partition]],
        needed: Callable[[list[_Partition]], bool],
    ) -> bool:
        """Copy the rows of `sources_now()`, sorted by time, into a new file.

        The new file gets the partition key `key` and replaces the sources in
        one step. Nothing is written unless `needed(sources)` returns True.
        After the copy, `sources_now()` is called again to add the rows that
        inserts wrote meanwhile. Returns whether the new file took effect.
        """
        start, seconds = key
        with self._write_lock:
            self._check_open()
            sources = sources_now()
            if self._copies or not needed(sources):
                return False
            copied_through = self._last
            deletions = [p.deletions for p in sources]
            path = self._new_path(start, seconds)
            self._merge_files = frozenset({path.name})
            try:
                target = self._attach(start, seconds, path)
            except BaseException:
                self._merge_files = frozenset()
                raise
            self._merging = frozenset(p.key for p in sources)
        try:
            # The bulk of the copy runs without the write lock, so applies and
            # queries go on meanwhile. Rows they add are copied below.
            union = " UNION ALL ".join(
                f"SELECT * FROM {p.alias}.entries WHERE seq <= ?" for p in sources
            )
            self._merger.execute(
                f"INSERT INTO {target.alias}.entries SELECT * FROM ({union})"
                " ORDER BY ts, seq",
                [copied_through] * len(sources),
            ).fetchall()
            self._merger.execute(f"CHECKPOINT {target.alias}").fetchall()
            with self._write_lock:
                self._check_open()
                if self._copies:
                    return False  # merged again once the snapshot copy is done
                if [p.deletions for p in sources] != deletions:
                    _LOGGER.info(
                        "log store %s: entries of %s were deleted during its "
                        "merge; merging it again later",
                        self._directory,
                        target.path.name,
                    )
                    return False
                # An apply may have created the day's file meanwhile, or added
                # rows to a source. All of them came after `copied_through`.
                sources = sources_now()
                union = " UNION ALL ".join(
                    f"SELECT * FROM {p.alias}.entries WHERE seq > ?" for p in sources
                )
                added = self._run(
                    f"INSERT INTO {target.alias}.entries {union}",
                    [copied_through] * len(sources),
                )[0][0]
                self._run(f"CHECKPOINT {target.alias}")
                _combine(target, sources)
                # Rows added during the copy follow the sorted ones, so the
                # file counts as out of order until a later sort.
                target.in_order = not added
                target.trigrams = keyword_index.union(p.trigrams for p in sources)
                self._swap_in(target, sources)  # the merge takes effect here
                self._save_trigrams(target)
                target.trigrams.pack()  # a day file changes rarely
            if [p.key for p in sources] == [target.key]:
                _LOGGER.info(
                    "log store %s: sorted %s by time as %s (%d entries)",
                    self._directory,
                    sources[0].path.name,
                    target.path.name,
                    target.rows,
                )
            else:
                _LOGGER.info(
                    "log store %s: merged %d partitions into %s (%d entries)",
                    self._directory,
                    len(sources),
                    target.path.name,
                    target.rows,
                )
            return True
        finally:
            with self._write_lock:
                # Before the deferred passes, which may rewrite the target.
                swapped = self._partitions.get(target.key) is target
                keys = self._merging | {target.key}
                self._merging = frozenset()
                try:
                    self._apply_deferred_retention(keys)
                except Exception:
                    # The next pass, a minute later, deletes them instead.
                    _LOGGER.exception(
                        "log store %s: retention after the merge of %s failed",
                        self._directory,
                        target.path.name,
                    )
            if not swapped:
                kept = target.path.name in self._kept_files
                self._discard_merge(target, unlink=not kept)
            self._merge_files = frozenset()

    def _swap_in(self, target: _Partition, sources: list[_Partition]) -> None:
        """Replace `sources` by `target` in the state file, in memory and on disk.

        The caller holds the write lock. When writing the state file fails,
        the new list may have reached the disk anyway. So the target's file
        joins `_kept_files` and stays on disk, and the next open keeps
        whichever files the state file lists and deletes the rest.
        """
        with self._readers.exclusive():
            partitions = dict(self._partitions)
            for source in sources:
                del partitions[source.key]
            partitions[target.key] = target
            try:
                self._write_state(self._last, partitions)
            except BaseException:
                self._kept_files |= {target.path.name}
                raise
            self._partitions = partitions
            for source in sources:
                self._run(f"DETACH {source.alias}")
                for path in _partition_files(source.path):
                    path.unlink(missing_ok=True)

    def _merge_sources(self, day: int) -> list[_Partition]:
        """Return the partitions a merge of `day` replaces."""
        return [
            p
            for p in self._partitions.values()
            if p.start // DAY_SECONDS * DAY_SECONDS == day
            and (p.seconds < DAY_SECONDS or p.key == (day, DAY_SECONDS))
        ]

    def _discard_merge(self, target: _Partition, *, unlink: bool = True) -> None:
        try:
            with self._write_lock:
                if not self._closed:
                    self._run(f"DETACH {target.alias}")
        except duckdb.Error:
            _LOGGER.exception("log store: could not detach %s", target.path)
        if unlink:
            for path in _partition_files(target.path):
                path.unlink(missing_ok=True)

    # Reads ----------------------------------------------------------------

    def last_sequence(self) -> int:
        """Return the highest sequence applied to the store, or 0 when none was.

        Retention may have deleted the entry with that sequence since.
        """
        return self._last

    def first_sequence(self) -> int:
        """Return the lowest sequence stored, or `last_sequence() + 1` when empty.

        It reads the partitions' metadata and no rows, so its cost does not
        grow with the store. Every change of a partition's rows updates its
        `min_seq`, but a retention pass that runs at the same time may delete
        entries just after this returns.
        """
        lowest = min(
            (p.min_seq for p in self._partitions.values() if p.rows > 0),
            default=None,
        )
        return self._last + 1 if lowest is None else lowest

    def visible_sequence(self) -> int:
        """Return the sequence that reads starting now are capped at.

        Every entry at or below it that the store contains is visible, because
        `apply` raises it only after its last insert committed. It drops only
        when `delete_after` removes entries.
        """
        return self._visible

    @property
    def filters_rebuilt(self) -> int:
        """Number of trigram filters built from partition rows since the store opened.

        A partition whose saved filter is missing or stale (its rows changed
        after the save, as after a crash) counts once.
        """
        return self._filters_rebuilt

    @property
    def partition_scans(self) -> int:
        """Number of partition reads by `query`, `count` and `since` since opening.

        Each partition that a statement reads counts once, so a test can see
        which partitions a filter skipped.
        """
        return self._scans

    def _count_scans(self, partitions: int) -> None:
        with self._scans_lock:
            self._scans += partitions

    def query(
        self,
        flt: node_service_pb2.EntryFilter,
        *,
        after: tuple[int, int] | None,
        descending: bool,
        limit: int,
    ) -> tuple[node_service_pb2.EntryColumns, list[int]]:
        """Return up to `limit` matching entries in (timestamp, sequence) order.

        Args:
          flt: the conditions.
          after: an exclusive cursor `(timestamp, sequence)`: only entries
            after it in the chosen order are returned.
          descending: newest first when true.
          limit: the maximum number of entries, at least 1.

        Returns:
          The entries and the sequence of each.

        Raises:
          InvalidArgument: `limit` is below 1.
        """
        _check_limit(limit)
        direction = "DESC" if descending else "ASC"
        order = "descending" if descending else "ascending"
        tables: list[pa.Table] = []
        with self._reading() as (cursor, cap, partitions):
            conditions, params = store_sql.filter_conditions(flt, _cap(flt, cap))
            if after is not None:
                after_ts, after_seq = after
                if descending:
                    conditions.append("ts <= ? AND (ts < ? OR seq < ?)")
                else:
                    conditions.append("ts >= ? AND (ts > ? OR seq > ?)")
                params.extend([after_ts, after_ts, after_seq])
            where = " AND ".join(conditions)
            # Partitions may overlap in time (a day file next to the hours
            # that a merge has not reached yet). They are read from the one
            # whose rows come first, and reading stops once the next one
            # cannot contain a row that belongs in the page.
            candidates = [
                p
                for p in partitions
                if p.may_match(flt)
                and (after is None or _reachable(p, after, descending))
            ]
            if descending:
                candidates.sort(key=lambda p: p.max_ts or 0, reverse=True)
            else:
                candidates.sort(key=lambda p: p.min_ts or 0)
            page: pa.Table | None = None
            index = 0
            group = 1
            while index < len(candidates):
                if page is not None and page.num_rows == limit:
                    boundary = page.column("ts")[limit - 1].as_py()
                    first = candidates[index]
                    if descending and (first.max_ts or 0) < boundary:
                        break
                    if not descending and (first.min_ts or 0) > boundary:
                        break
                # Each statement reads twice as many partitions as the one
                # before, so a page of rare matches takes few statements.
                chunk = candidates[index : index + group]
                index += len(chunk)
                group *= QUERY_GROWTH
                self._count_scans(len(chunk))
                selects = [
                    f"SELECT {store_sql.RESULT_SELECT} FROM {p.alias}.entries"
                    f" WHERE {where}"
                    for p in chunk
                ]
                sql = (
                    f"SELECT * FROM ({' UNION ALL '.join(selects)})"
                    f" ORDER BY ts {direction}, seq {direction} LIMIT ?"
                )
                table = cursor.sql(
                    sql, params=[*params * len(chunk), limit]
                ).to_arrow_table()
                if not table.num_rows:
                    continue
                tables.append(table)
                page = _concat(tables)
                if len(tables) > 1 and page is not None:
                    page = page.sort_by([("ts", order), ("seq", order)])
                    page = page.slice(0, limit)
                    tables = [page]
        return _columns(tables)

    def retention_may_have_deleted(self, sequence: int) -> bool:
        """Return whether a retention pass may have deleted the entry at `sequence`.

        False means that no pass since the store opened deleted entries at
        or above it, so the entry is still stored and no read is needed.
        """
        return sequence <= self._retention_bound

    def stored_sequences(self, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
        """Return the sequences the store contains in the given ranges, sorted.

        Each range is (first, last), both inclusive. Only partitions whose
        sequence bounds overlap a range are read, all in one statement.
        """
        selects: list[str] = []
        params: list[object] = []
        with self._reading() as (cursor, visible, partitions):
            for partition in partitions:
                if partition.rows == 0:
                    continue
                overlapping = [
                    (first, min(last, visible))
                    for first, last in ranges
                    if first <= partition.max_seq and last >= partition.min_seq
                ]
                if not overlapping:
                    continue
                condition = " OR ".join("seq BETWEEN ? AND ?" for _ in overlapping)
                selects.append(
                    f"SELECT seq FROM {partition.alias}.entries WHERE {condition}"
                )
                params.extend(bound for pair in overlapping for bound in pair)
            if not selects:
                return np.empty(0, dtype=np.int64)
            self._count_scans(len(selects))
            sql = f"SELECT seq FROM ({' UNION ALL '.join(selects)}) ORDER BY seq"
            found = cursor.execute(sql, params).fetchnumpy()["seq"]
        return np.asarray(found, dtype=np.int64)

    def count(
        self,
        flt: node_service_pb2.EntryFilter,
        *,
        histogram_start: int,
        histogram_step: int,
    ) -> tuple[dict[int, int], dict[str, int], dict[tuple[int, int], int]]:
        """Count matching entries by severity, by service and by time bucket.

        Entry timestamps fall in bucket `(timestamp - histogram_start) //
        histogram_step` (floor division, so an entry before
        `histogram_start` gets a negative index). Only the filter bounds
        which entries count. The caller clips the buckets it shows.

        Returns:
          Counts by severity, by service, and by (bucket, severity). The
          third mapping is empty when `histogram_step` is 0.

        Raises:
          InvalidArgument: `histogram_step` is negative.
        """
        if histogram_step < 0:
            raise InvalidArgument(
                f"histogram_step is {histogram_step}; use 0 for no histogram or "
                "a positive width in nanoseconds",
                field_violations=[
                    FieldViolation("histogram_step", "must be 0 or positive")
                ],
            )
        by_severity: dict[int, int] = {}
        by_service: dict[str, int] = {}
        by_bucket: dict[tuple[int, int], int] = {}
        with self._reading() as (cursor, cap, partitions):
            conditions, params = store_sql.filter_conditions(flt, _cap(flt, cap))
            where = " AND ".join(conditions)
            bucket_params: list[object] = []
            if histogram_step:
                start, step = histogram_start, histogram_step
                bucket_params = [start, start, step, start, step]
                sets = "(severity), (service), (bucket, severity)"
                outer = "GROUPING(bucket) AS no_bucket, bucket"
            else:
                bucket = "NULL"
                sets = "(severity), (service)"
                outer = "1 AS no_bucket, NULL AS bucket"
            # One statement for all partitions, so DuckDB spreads the whole
            # scan over its threads and the cost per statement is paid once.
            selects = []
            select_params: list[object] = []
            for partition in partitions:
                if not partition.may_match(flt):
                    continue
                if histogram_step:
                    bucket = _bucket_sql(partition, histogram_start)
                selects.append(
                    f"SELECT severity, service, {bucket} AS bucket"
                    f" FROM {partition.alias}.entries WHERE {where}"
                )
                select_params += [*bucket_params, *params]
            rows = []
            self._count_scans(len(selects))
            if selects:
                sql = (
                    f"SELECT GROUPING(service) AS no_service, {outer},"
                    f" severity, service, count(*) FROM ({' UNION ALL '.join(selects)})"
                    f" GROUP BY GROUPING SETS ({sets})"
                )
                rows = cursor.execute(sql, select_params).fetchall()
            for not_service, not_bucket, index, severity, service, number in rows:
                if not not_bucket:
                    key = (int(index), severity)
                    by_bucket[key] = by_bucket.get(key, 0) + number
                elif not not_service:
                    by_service[service] = by_service.get(service, 0) + number
                else:
                    by_severity[severity] = by_severity.get(severity, 0) + number
        return by_severity, by_service, by_bucket

    def since(
        self,
        after_sequence: int,
        flt: node_service_pb2.EntryFilter,
        *,
        limit: int,
    ) -> tuple[node_service_pb2.EntryColumns, list[int], int]:
        """Return matching entries with a sequence above `after_sequence`.

        Entries come in sequence order, at most `limit` of them. Every
        condition of `flt` applies, time bounds included, so a caller that
        follows the newest entries clears them first.

        Returns:
          The entries, the sequence of each, and the highest sequence
          examined: a caller that resumes after it misses no entry. It is
          never below `after_sequence`.

        Raises:
          InvalidArgument: `limit` is below 1.
        """
        _check_limit(limit)
        tables: list[pa.Table] = []
        with self._reading() as (cursor, cap, partitions):
            cap = _cap(flt, cap)
            conditions, params = store_sql.filter_conditions(flt, cap)
            conditions.append("seq > ?")
            params.append(after_sequence)
            where = " AND ".join(conditions)
            for partition in partitions:
                if partition.max_seq <= after_sequence:
                    continue
                if not partition.may_match(flt):
                    continue
                self._count_scans(1)
                sql = (
                    f"SELECT {store_sql.RESULT_SELECT} FROM {partition.alias}.entries"
                    f" WHERE {where} ORDER BY seq LIMIT ?"
                )
                tables.append(cursor.sql(sql, params=[*params, limit]).to_arrow_table())
        merged = _concat(tables)
        if merged is not None and merged.num_rows:
            merged = merged.sort_by("seq").slice(0, limit)
            tables = [merged]
        columns, sequences = _columns(tables)
        examined = sequences[-1] if len(sequences) == limit else cap
        return columns, sequences, max(examined, after_sequence)

    def follow_page(
        self,
        after_sequence: int,
        flt: node_service_pb2.EntryFilter,
        *,
        span: int,
        limit: int,
        max_bytes: int,
    ) -> tuple[node_service_pb2.EntryColumns, list[int], int]:
        """Return the matching entries of the next `span` sequence numbers.

        Only sequences in `(after_sequence, after_sequence + span]` are read,
        so each partition scans the row groups of that range alone, however
        many entries follow it. That keeps a follower that is far behind at a
        cost per page that does not grow with the backlog, unlike `since`.
        Entries come in sequence order, at most `limit` of them and at most
        `max_bytes` by the estimate of `store_sql.ENTRY_BYTES_SQL`, but always
        at least one. Every condition of `flt` applies, as in `since`.

        Returns:
          The entries, the sequence of each, and the highest sequence
          examined: a caller that resumes after it misses no entry. It is
          never below `after_sequence`.

        Raises:
          InvalidArgument: `limit` or `span` is below 1.
        """
        _check_limit(limit)
        if span < 1:
            raise InvalidArgument(
                f"span is {span}; read at least 1 sequence number",
                field_violations=[FieldViolation("span", "must be at least 1")],
            )
        with self._reading() as (cursor, cap, partitions):
            through = min(_cap(flt, cap), after_sequence + span)
            if through <= after_sequence:
                return node_service_pb2.EntryColumns(), [], after_sequence
            candidates = [
                p
                for p in partitions
                if p.max_seq > after_sequence
                and p.min_seq <= through
                and p.may_match(flt)
            ]
            if not candidates:
                return node_service_pb2.EntryColumns(), [], through
            self._count_scans(len(candidates))
            conditions, params = store_sql.filter_conditions(flt, through)
            conditions.append("seq > ?")
            params.append(after_sequence)
            where = " AND ".join(conditions)
            aliases = [p.alias for p in candidates]
            sizes = cursor.sql(
                store_sql.follow_sizes_select(aliases, where),
                params=[*params * len(aliases), limit],
            ).fetchnumpy()
            if not len(sizes["seq"]):
                return node_service_pb2.EntryColumns(), [], through
            # The entries whose running total of bytes stays within the
            # bound, and always the first.
            totals = np.cumsum(sizes["size"])
            fitting = max(int(np.searchsorted(totals, max_bytes, "right")), 1)
            last = int(sizes["seq"][fitting - 1])
            table = cursor.sql(
                store_sql.follow_rows_select(aliases, where),
                params=[*params, last] * len(aliases),
            ).to_arrow_table()
        columns, sequences = store_sql.table_to_columns(table)
        cut = fitting < len(sizes["seq"]) or len(sizes["seq"]) == limit
        return columns, sequences, last if cut else through

    def copy_chunks(
        self, through: int, chunk_entries: int, chunk_bytes: int
    ) -> Iterator[tuple[node_service_pb2.EntryColumns, list[int]]]:
        """Yield every stored entry up to sequence `through`, in chunks.

        Partitions are read one after the other, each in sequence order. A
        chunk has at most `chunk_entries` entries and `chunk_bytes` bytes of
        `EntryColumns`, as estimated by `store_sql.ENTRY_BYTES_SQL`. A larger
        entry makes a chunk of its own. No lock is held between chunks, so
        writers and retention continue. Rows that retention deletes meanwhile
        may be missing from the copy. A merge does not take effect until the
        copy ends.
        """
        _check_limit(chunk_entries)
        with self._write_lock:
            self._check_open()
            # No merge swaps partitions while the copy walks them.
            self._copies += 1
            keys = sorted(self._partitions)
        try:
            yield from self._copy_partitions(keys, through, chunk_entries, chunk_bytes)
        finally:
            with self._write_lock:
                self._copies -= 1

    def _copy_partitions(
        self,
        keys: list[tuple[int, int]],
        through: int,
        chunk_entries: int,
        chunk_bytes: int,
    ) -> Iterator[tuple[node_service_pb2.EntryColumns, list[int]]]:
        for key in keys:
            after = 0
            while after < through:
                with self._reading() as (cursor, _, partitions):
                    partition = next((p for p in partitions if p.key == key), None)
                    if partition is None or partition.max_seq <= after:
                        break
                    sql = store_sql.chunk_select(partition.alias)
                    params = [after, through, chunk_entries, chunk_bytes, after]
                    table = cursor.sql(sql, params=params).to_arrow_table()
                if table.num_rows == 0:
                    break
                columns, sequences = store_sql.table_to_columns(table)
                yield columns, sequences
                after = sequences[-1]

    def disk_bytes(self) -> int:
        """Return the bytes the partition files, DuckDB WALs and sidecars use."""
        total = 0
        with self._readers.shared():
            for partition in self._partitions.values():
                for path in _partition_files(partition.path):
                    with suppress(FileNotFoundError):
                        total += path.stat().st_size
        return total

    def close(self) -> None:
        """Close every partition file. Later calls raise Unavailable."""
        self._stop.set()
        with suppress(duckdb.Error):
            self._merger.interrupt()  # a merge under way is abandoned
        if self._compactor is not None and self._compactor is not (
            threading.current_thread()
        ):
            self._compactor.join()
        with self._compact_lock, self._write_lock:
            if self._closed:
                return
            with self._readers.exclusive():
                self._closed = True
                self._save_all_trigrams()
                self._writer.close()
                self._root.close()
        _LOGGER.info("Closed log store %s", self._directory)

    # Helpers ----------------------------------------------------------------

    @contextmanager
    def _reading(
        self,
    ) -> Iterator[tuple[duckdb.DuckDBPyConnection, int, list[_Partition]]]:
        with self._readers.shared():
            self._check_open()
            # The cap is read before the partition list, and apply() updates
            # the list before the cap, so every row at or below the cap lies
            # in a listed partition whose bounds cover it.
            cap = self._visible
            partitions = sorted(self._partitions.values(), key=lambda p: p.start)
            with self._cursor_lock:
                cursor = self._root.cursor()
            try:
                yield cursor, cap, partitions
            finally:
                cursor.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                f"the log store in {self._directory} is closed; the node is "
                "shutting down, retry on another replica"
            )

    def _partition_for(self, key: tuple[int, int]) -> _Partition:
        partition = self._partitions.get(key)
        if partition is None:
            start, seconds = key
            partition = self._attach(start, seconds, self._new_path(start, seconds))
            partitions = dict(self._partitions)
            partitions[key] = partition
            self._partitions = partitions
        return partition

    def _new_path(self, start: int, seconds: int) -> Path:
        """Return an unused file name for a partition."""
        stem = (_EPOCH + timedelta(seconds=start)).strftime(_NAME_FORMAT)
        if seconds != self._partition_seconds:
            stem += "-" + _width_label(seconds)
        # Files on disk that are not listed were deleted at open, except the
        # one a running merge writes.
        used_names = {p.path.name for p in self._partitions.values()}
        used_names |= self._merge_files | self._kept_files
        name = f"{stem}.duckdb"
        number = 1
        while name in used_names:
            number += 1
            name = f"{stem}-{number}.duckdb"
        return self._directory / name

    def _attach(self, start: int, seconds: int, path: Path) -> _Partition:
        alias = "p_" + path.stem.lower().replace("-", "_")
        # A file that ATTACH creates is empty, so its rows, services and
        # trigram sidecar are not read back. That saves two statements per
        # file, which adds up when a batch of scattered old entries creates
        # hundreds of day files.
        created = not path.exists() and not _wal_path(path).exists()
        try:
            self._run(f"ATTACH ? AS {alias}", [str(path)])
        except duckdb.IOException as exc:
            if not _never_finished(path, exc):
                raise
            # Creating the file failed part way (a full disk, a crash), so it
            # contains no committed rows. Start it again. The records it should
            # contain are still in the write-ahead log and are applied again.
            _LOGGER.warning(
                "log store: %s was never finished (%s); creating it again",
                path,
                exc,
            )
            path.unlink()
            with suppress(FileNotFoundError):
                path.with_name(path.name + ".wal").unlink()
            self._run(f"ATTACH ? AS {alias}", [str(path)])
        # DuckDB creates the file with the process's default mode. Its
        # `.wal` side file keeps that mode, but the store's 0700 directory
        # keeps other users out of it.
        private_files.tighten(path, private_files.FILE_MODE, quiet=True)
        merged_later = self._merges and seconds < DAY_SECONDS
        create = (
            store_sql.CREATE_MERGED_LATER_TABLES
            if merged_later
            else store_sql.CREATE_TABLES
        )
        self._run(create.format(db=alias))
        partition = _Partition(
            start=start,
            seconds=seconds,
            path=path,
            alias=alias,
            written_at=time.monotonic(),
        )
        if created:
            sidecar = keyword_index.sidecar_path(partition.path)
            partition.trigrams_saved = sidecar.exists()  # an existing one is stale
            return partition
        self._refresh(partition)
        self._load_trigrams(partition)
        return partition

    # Trigram filters --------------------------------------------------------

    def _load_trigrams(self, partition: _Partition) -> None:
        """Read a partition's saved trigram filter, or rebuild it from its rows.

        A sidecar counts only if its stamp matches the rows just counted. An
        insert deletes the sidecar before it writes, so a crash never leaves
        a sidecar that misses rows. A filter rebuilt from rows replaces the
        sidecar at once, so the next open, even after a crash, reads it.
        """
        sidecar = keyword_index.sidecar_path(partition.path)
        loaded = TrigramFilter.load(sidecar, partition.stamp())
        if loaded is not None:
            partition.trigrams = loaded
            partition.trigrams_saved = True
            return
        partition.trigrams_saved = sidecar.exists()  # an existing one is stale
        if not partition.rows:
            partition.trigrams = TrigramFilter()
            return
        started = time.perf_counter()
        trigrams = TrigramFilter()
        relation = self._writer.sql(f"SELECT message FROM {partition.alias}.entries")
        for batch in relation.to_arrow_reader():
            trigrams.add(batch.column(0))
        trigrams.pack()
        partition.trigrams = trigrams
        self._filters_rebuilt += 1
        _LOGGER.debug(
            "log store: built the trigram filter of %s (%d entries) in %.2f s",
            partition.path.name,
            partition.rows,
            time.perf_counter() - started,
        )
        self._save_trigrams(partition)

    def _forget_saved_trigrams(self, partition: _Partition) -> None:
        """Delete a partition's sidecar before its rows change."""
        if not partition.trigrams_saved:
            return
        keyword_index.sidecar_path(partition.path).unlink(missing_ok=True)
        self._sync_directory()
        partition.trigrams_saved = False

    def _save_trigrams(self, partition: _Partition) -> None:
        try:
            sidecar = keyword_index.sidecar_path(partition.path)
            partition.trigrams.save(sidecar, partition.stamp())
            partition.trigrams_saved = True
        except OSError:
            # The next open rebuilds the filter from the partition's rows.
            _LOGGER.exception(
                "log store: could not save the trigram filter of %s",
                partition.path.name,
            )

    def _save_all_trigrams(self) -> None:
        for partition in self._partitions.values():
            if not partition.trigrams_saved:
                self._save_trigrams(partition)

    def _refresh(self, partition: _Partition) -> None:
        sql = (
            "SELECT count(*), min(ts), max(ts), coalesce(max(seq), 0),"
            f" coalesce(min(seq), 0) FROM {partition.alias}.entries"
        )
        rows, low, high, top, bottom = self._run(sql)[0]
        partition.rows = rows
        partition.min_ts = low
        partition.max_ts = high
        partition.max_seq = top
        partition.min_seq = bottom
        names = self._run(f"SELECT DISTINCT service FROM {partition.alias}.entries")
        partition.services = frozenset(name for (name,) in names)

    def _run(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Run one statement on the writer's connection and fetch every row.

        DuckDB rejects other work on a connection while a result is unread.
        """
        return self._writer.execute(sql, params).fetchall()

    def _read_state(
        self,
    ) -> tuple[int | None, list[tuple[str, int, int]] | None, frozenset[str]]:
        """Return the last sequence, the files and the files out of time order.

        The files are (name, start, width) tuples. The last sequence and
        the files are None when the state file lacks them. A file that the
        state file does not mark as out of order counts as in order.
        """
        path = self._directory / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None, None, frozenset()
        last = int(state["last_sequence"])
        if state.get("format", 1) < 2:
            # Every file had the width the directory was created with.
            width = int(state["partition_seconds"])
            listed = []
            for file in sorted(self._directory.glob("*.duckdb")):
                parsed = _parse_name(file.name, width)
                if parsed is not None:
                    listed.append((file.name, parsed[0], width))
            return last, listed, frozenset()
        files = [
            (str(item["name"]), int(item["start"]), int(item["seconds"]))
            for item in state["files"]
        ]
        unordered = frozenset(
            str(item["name"])
            for item in state["files"]
            if item.get("in_order", True) is False
        )
        return last, files, unordered

    def _write_state(
        self, last: int, partitions: dict[tuple[int, int], _Partition] | None = None
    ) -> None:
        """Replace the state file: `last` and the live partition files.

        The files are those of `partitions`, by default the current ones.
        """
        listed = self._partitions if partitions is None else partitions
        files: list[dict[str, object]] = []
        for partition in sorted(listed.values(), key=lambda p: p.key):
            item: dict[str, object] = {
                "name": partition.path.name,
                "start": partition.start,
                "seconds": partition.seconds,
            }
            if not partition.in_order:
                item["in_order"] = False
            files.append(item)
        state = {
            "format": STATE_FORMAT,
            "partition_seconds": self._partition_seconds,
            "last_sequence": last,
            "files": files,
        }
        path = self._directory / STATE_FILE
        private_files.write_file_atomically(path, json.dumps(state).encode("utf-8"))

    def _sync_directory(self) -> None:
        directory = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _parse_name(name: str, default_seconds: int) -> tuple[int, int] | None:
    """Return the start and width a partition file name shows, or None."""
    match = _FILE_PATTERN.match(name)
    if match is None:
        return None
    start = _parse_start(match.group(1))
    if match.group(2) is None:
        return start, default_seconds
    return start, int(match.group(2)) * _UNIT_SECONDS[match.group(3)]


def _combine(target: _Partition, sources: list[_Partition]) -> None:
    """Set the row count, bounds and services of `target` from its sources."""
    lows = [p.min_ts for p in sources if p.min_ts is not None]
    highs = [p.max_ts for p in sources if p.max_ts is not None]
    target.rows = sum(p.rows for p in sources)
    target.min_ts = min(lows, default=None)
    target.max_ts = max(highs, default=None)
    target.max_seq = max((p.max_seq for p in sources), default=0)
    target.min_seq = min((p.min_seq for p in sources if p.max_seq), default=0)
    target.services = frozenset().union(*(p.services for p in sources))
    target.written_at = max((p.written_at for p in sources), default=0.0)


def _in_order(stamps: np.ndarray, latest: int | None) -> bool:
    """Return whether rows with `stamps` keep a file in time order.

    `latest` is the file's highest timestamp before them, None when it is
    empty. A row out of order lies more than ORDER_TOLERANCE_NS before the
    highest timestamp that arrived before it.
    """
    if not len(stamps):
        return True
    running = np.maximum.accumulate(stamps)
    if latest is not None:
        running = np.maximum(running, latest)
    # Unsigned, because the gap between years 1678 and 2262 overflows int64.
    # Each gap is at least 0, so the wrap-around subtraction gives it exactly.
    gaps = running.astype(np.uint64) - stamps.astype(np.uint64)
    return not bool((gaps > ORDER_TOLERANCE_NS).any())


def _width_label(seconds: int) -> str:
    for unit in ("d", "h", "s"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    raise AssertionError("every width is a whole number of seconds")


def _parse_start(name: str) -> int:
    moment = datetime.strptime(name, _NAME_FORMAT).replace(tzinfo=UTC)
    return int((moment - _EPOCH).total_seconds())


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _partition_files(path: Path) -> tuple[Path, ...]:
    """Return a partition file, its DuckDB WAL and its trigram sidecar."""
    return path, _wal_path(path), keyword_index.sidecar_path(path)


class _OldDays:
    """Chooses the partition of each old UTC day during one insert."""

    def __init__(
        self, partitions: Mapping[tuple[int, int], _Partition], month_max_rows: int
    ) -> None:
        self._partitions = partitions
        self._month_max_rows = month_max_rows
        # Days with a partition of a day or less: hour files not merged yet,
        # or a day file.
        self._days_with_files = {
            p.start // DAY_SECONDS
            for p in partitions.values()
            if p.seconds <= DAY_SECONDS
        }
        self._chosen: dict[int, tuple[int, int]] = {}

    def key(self, day: int) -> tuple[int, int]:
        """Return the key of the partition for day number `day` since 1970."""
        chosen = self._chosen.get(day)
        if chosen is not None:
            return chosen
        chosen = month = month_key(day)
        if day in self._days_with_files:
            chosen = (day * DAY_SECONDS, DAY_SECONDS)
        else:
            existing = self._partitions.get(month)
            rows = 0 if existing is None else existing.rows
            if rows >= self._month_max_rows:
                chosen = (day * DAY_SECONDS, DAY_SECONDS)
        self._chosen[day] = chosen
        return chosen


def month_key(day: int) -> tuple[int, int]:
    """Return (start, width) in seconds of the UTC month of day number `day`."""
    date = (_EPOCH + timedelta(days=day)).date()
    first = date.replace(day=1)
    if first.month == 12:
        following = first.replace(year=first.year + 1, month=1)
    else:
        following = first.replace(month=first.month + 1)
    start = (first - _EPOCH.date()).days * DAY_SECONDS
    return start, (following - first).days * DAY_SECONDS


@dataclass
class _Placement:
    """The partitions that the rows of one insert go to.

    `keys` are sorted. `groups` contains each row's index into `keys`, or is
    None when every row goes to the single key. `bounds[i]` is [lowest ts,
    highest ts, highest seq, lowest seq] of the rows of `keys[i]`, and
    `services[i]` their services.
    """

    keys: list[tuple[int, int]]
    groups: np.ndarray | None
    bounds: list[tuple[int, int, int, int]]
    services: list[frozenset[str]]
    order: np.ndarray | None = None
    counts: list[int] = field(default_factory=list)
    # Timestamps of the rows grouped by key, in table order within each key,
    # and the offset at which each key's rows start.
    grouped_ts: np.ndarray | None = None
    starts: list[int] = field(default_factory=list)

    @classmethod
    def from_groups(
        cls, table: pa.Table, keys: list[tuple[int, int]], groups: np.ndarray
    ) -> _Placement:
        # One stable sort by group, then the extremes of each run of it.
        order = np.argsort(groups, kind="stable")
        counts = np.bincount(groups, minlength=len(keys))
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        ts = table.column("ts").to_numpy()[order]
        seq = table.column("seq").to_numpy()[order]
        lows = np.minimum.reduceat(ts, starts).tolist()
        highs = np.maximum.reduceat(ts, starts).tolist()
        tops = np.maximum.reduceat(seq, starts).tolist()
        bottoms = np.minimum.reduceat(seq, starts).tolist()
        taken = table.column("service").take(pa.array(order))
        services = []
        for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
            names = pc.unique(taken.slice(start, count)).to_pylist()
            services.append(frozenset(names))
        bounds = list(zip(lows, highs, tops, bottoms, strict=True))
        return cls(
            keys,
            groups,
            bounds,
            services,
            order,
            counts.tolist(),
            ts,
            starts.tolist(),
        )

    def stamps(self, index: int, table: pa.Table) -> np.ndarray:
        """Return the timestamps of the rows of `keys[index]`, in table order."""
        if self.grouped_ts is None:
            return table.column("ts").to_numpy()
        start = self.starts[index]
        return self.grouped_ts[start : start + self.counts[index]]

    def split(
        self, column: pa.Array | pa.ChunkedArray
    ) -> list[pa.Array | pa.ChunkedArray]:
        """Return the values of `column` for each key, in the order of `keys`."""
        assert self.order is not None
        ordered = column.take(pa.array(self.order))
        parts = []
        position = 0
        for count in self.counts:
            parts.append(ordered.slice(position, count))
            position += count
        return parts


def _bucket_sql(partition: _Partition, start: int) -> str:
    """Return the SQL of `floor((ts - start) / step)` for one partition.

    DuckDB's // truncates toward zero, so entries before `start` take the
    ELSE branch. The subtraction runs on BIGINT when the partition's
    timestamps keep it in range: a 1M-row GROUP BY took a third of the
    HUGEINT time with DuckDB 2.0.1 on 2 CPUs.
    """
    low = partition.min_ts if partition.min_ts is not None else start
    high = partition.max_ts if partition.max_ts is not None else start
    fits = high - start < 2**63 and start - low < 2**63
    kind = "BIGINT" if fits else "HUGEINT"
    return (
        f"CASE WHEN ts >= ? THEN (ts::{kind} - ?) // ?"
        f" ELSE -(((?::{kind} - ts) - 1) // ?) - 1 END"
    )


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidArgument(
            f"limit is {limit}; ask for at least 1 entry",
            field_violations=[FieldViolation("limit", "must be at least 1")],
        )


# Size of an empty DuckDB file: its file header and two database headers.
# A file this small that DuckDB cannot open contains no committed block.
_EMPTY_DATABASE_BYTES = 3 * 4096


def _never_finished(path: Path, error: duckdb.IOException) -> bool:
    """Return whether a partition file failed while being created."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    return "not a valid DuckDB database file" in str(error) and (
        size <= _EMPTY_DATABASE_BYTES
    )


def _cap(flt: node_service_pb2.EntryFilter, visible: int) -> int:
    if flt.max_sequence > 0:
        return min(flt.max_sequence, visible)
    return visible


def _time_range(flt: node_service_pb2.EntryFilter) -> tuple[int | None, int | None]:
    start = flt.start_time if flt.HasField("start_time") else None
    end = flt.end_time if flt.HasField("end_time") else None
    return start, end


def _reachable(partition: _Partition, after: tuple[int, int], descending: bool) -> bool:
    """Return whether the partition has rows past the cursor's timestamp."""
    after_ts = after[0]
    if descending:
        return partition.min_ts is not None and partition.min_ts <= after_ts
    return partition.max_ts is not None and partition.max_ts >= after_ts


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return None
    return pa.concat_tables(tables)


def _columns(
    tables: list[pa.Table],
) -> tuple[node_service_pb2.EntryColumns, list[int]]:
    merged = _concat(tables)
    if merged is None:
        return node_service_pb2.EntryColumns(), []
    return store_sql.table_to_columns(merged)
