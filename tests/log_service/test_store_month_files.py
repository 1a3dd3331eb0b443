"""Tests of the month files that hold old days without files of their own.

Each test uses real DuckDB files under tmp_path; the last one runs a leader
and a follower node over real gRPC on 127.0.0.1.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pytest

from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2 as pb
from tests.log_service.node_support import (
    SHARD,
    append_columns,
    columns_at,
    configure,
    start,
    wait_for,
)

SECOND = 1_000_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
JAN = 1_672_531_200 * SECOND  # 2023-01-01T00:00:00Z
FEB = JAN + 31 * DAY
MAR = FEB + 28 * DAY
APR = MAR + 31 * DAY
NOW = JAN + 500 * DAY  # every day of 2023 before May is old


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_store(directory: Path, clock: Clock | None = None, **options) -> LogStore:
    return LogStore(
        directory,
        partition_seconds=3600,
        compact_after_seconds=86400,
        clock=clock or Clock(NOW),
        **options,
    )


def record(
    first: int,
    stamps: Sequence[int],
    services: Sequence[str] | None = None,
    messages: Sequence[str] | None = None,
) -> pb.LogRecord:
    count = len(stamps)
    columns = pb.EntryColumns(
        timestamps=stamps,
        severities=[9] * count,
        services=services or ["api"] * count,
        messages=messages or [f"entry {first + i}" for i in range(count)],
    )
    return pb.LogRecord(first_sequence=first, entries=columns)


def files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.duckdb"))


def query(
    store: LogStore, flt: pb.EntryFilter | None = None, *, descending: bool = False
) -> list[tuple[int, int]]:
    """Return (timestamp, sequence) of every matching entry, in page order."""
    columns, sequences = store.query(
        flt or pb.EntryFilter(), after=None, descending=descending, limit=100_000
    )
    return list(zip(columns.timestamps, sequences, strict=True))


def page_through(
    store: LogStore, flt: pb.EntryFilter, *, descending: bool, limit: int
) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    after = None
    while True:
        columns, sequences = store.query(
            flt, after=after, descending=descending, limit=limit
        )
        if not sequences:
            return seen
        seen.extend(zip(columns.timestamps, sequences, strict=True))
        after = seen[-1]


class Entries:
    """What the test stored: (timestamp, sequence, service, message) per entry."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, str, str]] = []

    def apply(
        self,
        store: LogStore,
        stamps: Sequence[int],
        services: Sequence[str] | None = None,
        messages: Sequence[str] | None = None,
    ) -> None:
        first = len(self.rows) + 1
        services = services or ["api"] * len(stamps)
        messages = messages or [f"entry {first + i}" for i in range(len(stamps))]
        store.apply([record(first, stamps, services, messages)])
        for offset, (ts, service, message) in enumerate(
            zip(stamps, services, messages, strict=True)
        ):
            self.rows.append((ts, first + offset, service, message))

    def expected(
        self,
        start: int | None = None,
        end: int | None = None,
        services: Sequence[str] = (),
        keyword: str = "",
        kept=lambda row: True,
    ) -> list[tuple[int, int]]:
        return sorted(
            (ts, seq)
            for ts, seq, service, message in self.rows
            if (start is None or ts >= start)
            and (end is None or ts < end)
            and (not services or service in services)
            and keyword in message
            and kept((ts, seq, service, message))
        )


def assert_reads_exactly(store: LogStore, entries: Entries, **kept) -> None:
    """Check pages, ranges, keywords and counts against what was stored."""
    everything = entries.expected(**kept)
    assert query(store) == everything
    assert query(store, descending=True) == everything[::-1]
    for limit in (7, 64):
        for descending in (False, True):
            paged = page_through(
                store, pb.EntryFilter(), descending=descending, limit=limit
            )
            assert paged == (everything[::-1] if descending else everything)
    stamps = sorted({ts for ts, _ in everything})
    # Ranges whose bounds are entry timestamps (start inclusive, end
    # exclusive), month starts, and one nanosecond off each.
    bounds = [FEB, MAR, FEB - 1, MAR + 1]
    if stamps:
        bounds += [stamps[0], stamps[len(stamps) // 3], stamps[-1], stamps[-1] + 1]
    for low in bounds:
        for high in bounds:
            if low >= high:
                continue
            flt = pb.EntryFilter(start_time=low, end_time=high)
            assert query(store, flt) == entries.expected(low, high, **kept)
    for service in ("api", "db"):
        flt = pb.EntryFilter(services=[service])
        assert query(store, flt) == entries.expected(services=[service], **kept)
    flt = pb.EntryFilter(keyword="needle")
    assert query(store, flt) == entries.expected(keyword="needle", **kept)
    assert query(store, pb.EntryFilter(keyword="absent-zebra")) == []
    by_severity, by_service, by_bucket = store.count(
        pb.EntryFilter(), histogram_start=JAN, histogram_step=DAY
    )
    assert sum(by_severity.values()) == len(everything)
    assert sum(by_service.values()) == len(everything)
    assert sum(by_bucket.values()) == len(everything)
    for (index, _), number in by_bucket.items():
        low, high = JAN + index * DAY, JAN + (index + 1) * DAY
        assert number == len(entries.expected(low, high, **kept))


def scattered(days: int, seed: int) -> tuple[list[int], list[str], list[str]]:
    """Return two entries on each of `days` days from JAN, in shuffled order.

    One lies exactly at the day's start, the other somewhere in the day to
    the nanosecond; every 37th message contains the keyword `needle`.
    """
    stamps = []
    for day in range(days):
        stamps.append(JAN + day * DAY)
        stamps.append(JAN + day * DAY + (day * 7919 % 86400) * SECOND + day)
    random.Random(seed).shuffle(stamps)
    services = ["api" if i % 3 else "db" for i in range(len(stamps))]
    messages = [
        f"line {i} with a needle" if i % 37 == 0 else f"line {i}"
        for i in range(len(stamps))
    ]
    return stamps, services, messages


def test_scattered_old_days_share_month_files(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_store(directory)
    entries = Entries()
    stamps, services, messages = scattered(300, seed=1)
    # Three records in one apply and one more apply, as a node receives them.
    for begin in range(0, len(stamps), 200):
        chunk = slice(begin, begin + 200)
        entries.apply(store, stamps[chunk], services[chunk], messages[chunk])
    created = files(directory)
    try:
        assert_reads_exactly(store, entries)
    finally:
        store.close()

    # 300 days from January 1 reach October 27: ten month files, not 300
    # day files.
    assert created == [
        "20230101T000000Z-31d.duckdb",
        "20230201T000000Z-28d.duckdb",
        "20230301T000000Z-31d.duckdb",
        "20230401T000000Z-30d.duckdb",
        "20230501T000000Z-31d.duckdb",
        "20230601T000000Z-30d.duckdb",
        "20230701T000000Z-31d.duckdb",
        "20230801T000000Z-31d.duckdb",
        "20230901T000000Z-30d.duckdb",
        "20231001T000000Z-31d.duckdb",
    ]
    reopened = open_store(directory)
    try:
        assert reopened.filters_rebuilt == 0
        assert files(directory) == created
        assert reopened.last_sequence() == 600
        assert_reads_exactly(reopened, entries)
        scans = reopened.partition_scans
        february = pb.EntryFilter(start_time=FEB + HOUR, end_time=FEB + 2 * DAY)
        assert query(reopened, february) == entries.expected(FEB + HOUR, FEB + 2 * DAY)
        assert reopened.partition_scans - scans == 1
    finally:
        reopened.close()


def test_full_month_file_overflows_to_day_files(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_store(directory, month_file_rows=4)
    entries = Entries()
    jan2, jan5, jan9 = JAN + DAY, JAN + 4 * DAY, JAN + 8 * DAY
    entries.apply(store, [jan2 + 5, jan5 + 1, jan2 + 1, jan2 + 3, jan5 + 2])
    # The month file contains 5 rows now: further days get day files, the
    # days already in the month file too.
    entries.apply(store, [jan9 + 4, jan5 + 2, jan2 + 2], ["db", "api", "db"])
    entries.apply(store, [FEB + 2 * DAY + 7])
    created = files(directory)
    try:
        assert_reads_exactly(store, entries)
    finally:
        store.close()

    assert created == [
        "20230101T000000Z-31d.duckdb",
        "20230102T000000Z-1d.duckdb",
        "20230105T000000Z-1d.duckdb",
        "20230109T000000Z-1d.duckdb",
        "20230201T000000Z-28d.duckdb",
    ]
    reopened = open_store(directory, month_file_rows=4)
    try:
        assert_reads_exactly(reopened, entries)
    finally:
        reopened.close()


def test_day_with_hour_files_keeps_day_file(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    feb9 = FEB + 8 * DAY
    clock = Clock(FEB + 9 * DAY + 2 * HOUR)
    store = open_store(directory, clock)
    entries = Entries()
    # February 9 ended 2 hours ago: its entries go to hour files.
    entries.apply(store, [feb9 + 3 * HOUR, feb9 + 4 * HOUR + 1])
    assert files(directory) == [
        "20230209T030000Z.duckdb",
        "20230209T040000Z.duckdb",
    ]
    clock.now += DAY
    # Now February 9 is old. It has hour files, so its late entry goes to
    # its day file; February 3 has none and goes to the month file.
    entries.apply(store, [feb9 + 5 * HOUR, FEB + 2 * DAY + 1], ["db", "db"])
    before_merge = files(directory)
    merged = store.compact()
    after_merge = files(directory)
    try:
        assert_reads_exactly(store, entries)
    finally:
        store.close()

    assert before_merge == [
        "20230201T000000Z-28d.duckdb",
        "20230209T000000Z-1d.duckdb",
        "20230209T030000Z.duckdb",
        "20230209T040000Z.duckdb",
    ]
    assert merged == 1
    assert after_merge == [
        "20230201T000000Z-28d.duckdb",
        "20230209T000000Z-1d-2.duckdb",
    ]


def test_retention_expires_entries_of_month_files(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_store(directory)
    entries = Entries()
    # One entry of each service at noon of every day of January to March.
    stamps = [JAN + day * DAY + 12 * HOUR + service for day in range(90)
              for service in (0, 1)]  # fmt: skip
    services = ["api", "db"] * 90
    entries.apply(store, stamps, services)
    created = files(directory)
    try:
        # api keeps entries from February 10, db from January 20.
        feb10, jan20 = FEB + 9 * DAY, JAN + 19 * DAY
        deleted, dropped = store.apply_retention(feb10, {"db": jan20})
        cutoffs = {"api": feb10, "db": jan20}

        def kept(row):
            return row[0] >= cutoffs[row[2]]

        assert (deleted, dropped) == (40 + 19, 0)
        assert_reads_exactly(store, entries, kept=kept)
        after_first = files(directory)

        # A shorter retention for db applies to the entries already stored:
        # every entry of January has expired, so its file is deleted.
        cutoffs["db"] = feb10
        deleted, dropped = store.apply_retention(feb10, {})
        assert (deleted, dropped) == (12 + 9, 1)
        assert_reads_exactly(store, entries, kept=kept)
        after_second = files(directory)

        # A pass bounded at a sequence keeps the later entries, even expired.
        entries.apply(store, [FEB + 20 * DAY, MAR + 5 * DAY], ["api", "api"])
        cutoffs["api"] = cutoffs["db"] = MAR + 10 * DAY
        bounded = store.apply_retention(MAR + 10 * DAY, {}, max_sequence=180)
        # February 10 to 28, and March 1 to 10; both files keep a later entry.
        assert bounded == (19 * 2 + 10 * 2, 0)
        assert_reads_exactly(store, entries, kept=lambda row: kept(row) or row[1] > 180)

        deleted, dropped = store.apply_retention(APR, {})
        assert (deleted, dropped) == (21 * 2 + 2, 2)
        assert query(store) == []
        assert store.disk_bytes() == 0
    finally:
        store.close()

    assert created == [
        "20230101T000000Z-31d.duckdb",
        "20230201T000000Z-28d.duckdb",
        "20230301T000000Z-31d.duckdb",
    ]
    assert after_first == created
    assert after_second == created[1:]
    assert files(directory) == []


def test_truncation_and_copy_of_month_files(tmp_path: Path) -> None:
    source = open_store(tmp_path / "source")
    entries = Entries()
    stamps, services, messages = scattered(120, seed=2)
    entries.apply(source, stamps[:100], services[:100], messages[:100])
    entries.apply(source, stamps[100:], services[100:], messages[100:])
    # A new leader never had the entries after 150: they go, and other
    # entries take their sequences.
    assert source.delete_after(150) == 90
    del entries.rows[150:]
    entries.apply(source, [JAN + 3 * DAY + 9, APR + 1], ["db", "db"])
    target = open_store(tmp_path / "target")
    try:
        assert_reads_exactly(source, entries)
        # A snapshot fills an empty follower with the leader's entries.
        for chunk, sequences in source.copy_chunks(source.last_sequence(), 40, 1 << 20):
            target.insert_copied(chunk, sequences)
        target.mark_applied_through(source.last_sequence())
        assert_reads_exactly(target, entries)
    finally:
        source.close()
        target.close()

    # 120 days from January 1 reach April 30.
    assert len(files(tmp_path / "source")) == 4
    assert len(files(tmp_path / "target")) == 4
    reopened = open_store(tmp_path / "target")
    try:
        assert reopened.last_sequence() == 152
        assert_reads_exactly(reopened, entries)
    finally:
        reopened.close()


@pytest.fixture
def pair(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    follower = start(base_config, tmp_path, "n1")
    for handle in (leader, follower):
        configure(
            handle, epoch=1, leader=leader, in_sync=[follower], followers=[follower]
        )
    yield leader, follower
    for handle in (leader, follower):
        handle.stop()


def stored(handle) -> list[tuple[int, int, str]]:
    response = handle.stub.QueryEntries(
        pb.QueryEntriesRequest(shard=SHARD, limit=10_000), timeout=10
    )
    return sorted(
        zip(
            response.entries.timestamps,
            response.sequences,
            response.entries.messages,
            strict=True,
        )
    )


def test_replicas_store_scattered_days_in_month_files(pair, tmp_path):
    leader, follower = pair
    stamps, _, _ = scattered(200, seed=3)
    for number, begin in enumerate(range(0, len(stamps), 100)):
        batch = columns_at(f"batch-{number}", stamps[begin : begin + 100])
        append_columns(leader, 1, f"batch-{number}", batch)

    assert wait_for(lambda: len(stored(follower)) == 400, timeout=30)
    assert stored(leader) == stored(follower)
    # 200 days from January 1 reach July 19.
    for handle in (leader, follower):
        assert len(files(handle.directory / "store")) == 7

    cutoff = MAR + 7 * DAY
    response = leader.stub.ApplyRetention(
        pb.ApplyRetentionRequest(default_cutoff=cutoff), timeout=10
    )
    follower.stub.ApplyRetention(
        pb.ApplyRetentionRequest(
            default_cutoff=cutoff, max_sequence=response.max_sequence
        ),
        timeout=10,
    )
    kept = stored(leader)
    assert kept == stored(follower)
    assert [ts for ts, _, _ in kept] == sorted(ts for ts in stamps if ts >= cutoff)
    for handle in (leader, follower):
        assert len(files(handle.directory / "store")) == 5


def stored_order(directory: Path) -> dict[str, list[tuple[int, int]]]:
    """Return (timestamp, sequence) of each file's rows in their stored order."""
    stored = {}
    for name in files(directory):
        with duckdb.connect(str(directory / name), read_only=True) as connection:
            rows = connection.execute(
                "SELECT ts, seq FROM entries ORDER BY rowid"
            ).fetchall()
        stored[name] = rows
    return stored


def listed_out_of_order(directory: Path) -> list[str]:
    state = json.loads((directory / "store.json").read_text())
    return [item["name"] for item in state["files"] if item.get("in_order") is False]


def test_compact_sorts_shuffled_month_files(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_store(directory, sort_quiet_seconds=0)
    entries = Entries()
    stamps, services, messages = scattered(50, seed=3)
    for begin in range(0, len(stamps), 30):
        chunk = slice(begin, begin + 30)
        entries.apply(store, stamps[chunk], services[chunk], messages[chunk])
    listed_before = listed_out_of_order(directory)
    written = store.compact()
    listed_after = listed_out_of_order(directory)
    again = store.compact()
    try:
        assert_reads_exactly(store, entries)
    finally:
        store.close()
    stored = stored_order(directory)

    assert listed_before == [
        "20230101T000000Z-31d.duckdb",
        "20230201T000000Z-28d.duckdb",
    ]
    assert written == 2
    assert listed_after == []
    assert again == 0
    assert list(stored) == [
        "20230101T000000Z-31d-2.duckdb",
        "20230201T000000Z-28d-2.duckdb",
    ]
    for rows in stored.values():
        assert rows == sorted(rows)
    assert sum(len(rows) for rows in stored.values()) == 100


def test_out_of_order_mark_survives_reopen(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_store(directory)
    entries = Entries()
    stamps, services, messages = scattered(20, seed=4)
    entries.apply(store, stamps, services, messages)
    # The default sort_quiet_seconds of a minute has not passed, so the file
    # stays unsorted.
    written_at_once = store.compact()
    store.close()

    reopened = open_store(directory, sort_quiet_seconds=0)
    try:
        written = reopened.compact()
        assert_reads_exactly(reopened, entries)
    finally:
        reopened.close()
    stored = stored_order(directory)

    assert written_at_once == 0
    assert written == 1
    assert list(stored) == ["20230101T000000Z-31d-2.duckdb"]
    assert stored["20230101T000000Z-31d-2.duckdb"] == sorted(
        stored["20230101T000000Z-31d-2.duckdb"]
    )


def test_compact_keeps_nearly_ordered_files(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_store(directory, sort_quiet_seconds=0, month_file_rows=40)
    entries = Entries()
    # Pairs of entries 12 hours apart, each pair's second entry 30 s before
    # its first. The month file fills up, and the later days get day files.
    stamps = [
        JAN + i // 2 * 12 * HOUR + (30 * SECOND if i % 2 == 0 else 0) for i in range(60)
    ]
    for begin in range(0, len(stamps), 8):
        entries.apply(store, stamps[begin : begin + 8])
    created = files(directory)
    written = store.compact()
    try:
        assert_reads_exactly(store, entries)
    finally:
        store.close()

    assert written == 0
    assert files(directory) == created
    assert len(created) > 1
    assert listed_out_of_order(directory) == []


def test_late_row_marks_day_file_out_of_order(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_store(directory, sort_quiet_seconds=0, month_file_rows=0)
    entries = Entries()
    jan2 = JAN + DAY
    entries.apply(store, [jan2 + HOUR, jan2 + 2 * HOUR])
    in_order = listed_out_of_order(directory)
    # One row 61 s before the latest row of the day file, beyond the 60 s
    # that still count as in order.
    entries.apply(store, [jan2 + 2 * HOUR - 61 * SECOND])
    written = store.compact()
    try:
        assert_reads_exactly(store, entries)
    finally:
        store.close()
    stored = stored_order(directory)

    assert in_order == []
    assert written == 1
    assert list(stored) == ["20230102T000000Z-1d-2.duckdb"]
    assert [seq for _, seq in stored["20230102T000000Z-1d-2.duckdb"]] == [1, 3, 2]


def test_sort_keeps_entries_added_during_copy(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_store(directory, sort_quiet_seconds=0, month_file_rows=1_000_000)
    entries = Entries()
    rand = random.Random(5)
    for _ in range(10):
        entries.apply(store, [JAN + rand.randrange(31 * DAY) for _ in range(5_000)])
    sort = threading.Thread(target=store.compact)
    sort.start()
    # Apply more rows out of order while the copy runs, or right after it.
    deadline = time.monotonic() + 60
    while not (directory / "20230101T000000Z-31d-2.duckdb").exists():
        assert time.monotonic() < deadline, "the sort never began"
        time.sleep(0.001)
    entries.apply(store, [JAN + rand.randrange(31 * DAY) for _ in range(100)])
    sort.join(timeout=120)
    after_first = listed_out_of_order(directory)
    second = store.compact()
    try:
        everything = query(store)
        by_severity, _, _ = store.count(
            pb.EntryFilter(), histogram_start=0, histogram_step=0
        )
    finally:
        store.close()
    stored = stored_order(directory)

    assert not sort.is_alive()
    assert everything == entries.expected()
    assert sum(by_severity.values()) == 50_100
    assert len(after_first) == 1
    assert second == 1
    assert len(stored) == 1
    (rows,) = stored.values()
    assert len(rows) == 50_100
    assert rows == sorted(rows)
