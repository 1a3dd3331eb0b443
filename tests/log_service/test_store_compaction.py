"""Tests of LogStore's day files and compaction against real DuckDB files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pytest

from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
BASE = 1_714_521_600 * SECOND  # 2024-05-01T00:00:00Z
DAY_FILE = "20240501T000000Z-1d.duckdb"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def record(first: int, timestamps: Sequence[int], services=None) -> pb.LogRecord:
    count = len(timestamps)
    columns = pb.EntryColumns(
        timestamps=timestamps,
        severities=[9] * count,
        services=services or ["api"] * count,
        messages=[f"entry {first + i}" for i in range(count)],
    )
    return pb.LogRecord(first_sequence=first, entries=columns)


def open_store(directory: Path, clock: Clock, **options: int) -> LogStore:
    return LogStore(
        directory,
        partition_seconds=3600,
        compact_after_seconds=86400,
        clock=clock,
        **options,
    )


def query_all(store: LogStore, *, descending: bool = False) -> list[tuple[int, int]]:
    columns, sequences = store.query(
        pb.EntryFilter(), after=None, descending=descending, limit=1_000_000
    )
    return list(zip(sequences, columns.timestamps, strict=True))


def page_through(store: LogStore, *, descending: bool, limit: int) -> list[int]:
    """Return the sequences of every entry, read `limit` at a time."""
    seen: list[int] = []
    after = None
    while True:
        columns, sequences = store.query(
            pb.EntryFilter(), after=after, descending=descending, limit=limit
        )
        if not sequences:
            return seen
        seen.extend(sequences)
        after = (columns.timestamps[-1], sequences[-1])


def files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.duckdb"))


def test_old_day_entries_go_to_day_file(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    # Without month files, each old day gets a file of its own.
    store = open_store(directory, Clock(BASE + 10 * DAY + 5 * HOUR), month_file_rows=0)
    recent = BASE + 10 * DAY + 4 * HOUR
    # Day 9 ended 5 hours ago: not old yet. Days 0 and 8 are old.
    stamps = [BASE + 7, BASE + HOUR, BASE + 8 * DAY + 1, BASE + 9 * DAY + 1, recent]
    store.apply([record(1, stamps)])
    names = files(directory)
    entries = query_all(store)
    store.close()

    assert names == [
        DAY_FILE,
        "20240509T000000Z-1d.duckdb",
        "20240510T000000Z.duckdb",
        "20240511T040000Z.duckdb",
    ]
    assert [ts for _, ts in entries] == stamps


def test_compact_merges_hours_into_day_file(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(directory, clock)
    stamps = [BASE + (i % 3) * HOUR + i for i in range(30)]
    store.apply([record(1, stamps, services=["api", "db", "web"] * 10)])
    before = query_all(store)
    counts_before = store.count(
        pb.EntryFilter(), histogram_start=BASE, histogram_step=HOUR
    )
    hourly = files(directory)

    assert store.compact() == 0  # the day has not ended a day ago yet
    clock.now = BASE + 2 * DAY
    merged = store.compact()
    names = files(directory)
    after = query_all(store)
    after_desc = query_all(store, descending=True)
    counts_after = store.count(
        pb.EntryFilter(), histogram_start=BASE, histogram_step=HOUR
    )
    api_only = store.query(
        pb.EntryFilter(services=["db"]), after=None, descending=False, limit=100
    )[1]
    store.close()
    reopened = open_store(directory, clock)
    reopened_entries = query_all(reopened)
    state = json.loads((directory / "store.json").read_text())
    reopened.close()

    assert len(hourly) == 3
    assert merged == 1
    assert names == [DAY_FILE]
    assert after == before == sorted(before, key=lambda e: (e[1], e[0]))
    assert after_desc == after[::-1]
    assert counts_after == counts_before
    assert api_only == [s for s, _ in before if (s - 1) % 3 == 1]
    assert reopened_entries == before
    assert [f["name"] for f in state["files"]] == [DAY_FILE]


def test_follow_page_reads_merged_day_in_sequence_order(tmp_path: Path) -> None:
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(tmp_path / "store", clock)
    # The day file sorts rows by time, so sequences lie out of order in it.
    stamps = [BASE + (2 - i % 3) * HOUR + i for i in range(12)]
    store.apply([record(1, stamps)])
    clock.now = BASE + 2 * DAY
    merged = store.compact()
    store.apply([record(13, [BASE + 3 * HOUR, BASE + 7])])
    sequences: list[int] = []
    after = 0
    while True:
        _, page, after_page = store.follow_page(
            after, pb.EntryFilter(), span=5, limit=100, max_bytes=1_000_000
        )
        if after_page == after:
            break
        sequences.extend(page)
        after = after_page
    store.close()

    assert merged == 1
    assert sequences == list(range(1, 15))


def message_compression(path: Path) -> set[str]:
    """Return the compressions DuckDB used for the messages of a closed file."""
    connection = duckdb.connect()
    try:
        connection.execute("ATTACH ? AS part (READ_ONLY)", [str(path)])
        rows = connection.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('part.entries')"
            " WHERE column_name = 'message' AND segment_type = 'VARCHAR'"
        ).fetchall()
    finally:
        connection.close()
    return {compression for (compression,) in rows}


def test_hour_files_store_messages_uncompressed(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(directory, clock)
    # Messages that compress well, so DuckDB compresses them where it may.
    stamps = [BASE + HOUR + i for i in range(5000)]
    store.apply([record(1, stamps)])
    before = query_all(store)
    store.close()
    hour_file = directory / "20240501T010000Z.duckdb"
    in_hour_file = message_compression(hour_file)
    store = open_store(directory, clock)
    clock.now = BASE + 2 * DAY
    merged = store.compact()
    after = query_all(store)
    store.close()

    assert in_hour_file == {"Uncompressed"}
    assert merged == 1
    assert "Uncompressed" not in message_compression(directory / DAY_FILE)
    assert after == before


def test_compact_merges_into_existing_day_file(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(directory, clock)
    store.apply([record(1, [BASE + HOUR, BASE + 2 * HOUR])])
    clock.now = BASE + 3 * DAY
    # A late entry for the now old day goes straight to its day file, which
    # overlaps the hour files until the merge.
    store.apply([record(3, [BASE + HOUR + 5, BASE + 30])])
    overlapping = files(directory)
    newest = page_through(store, descending=True, limit=1)
    oldest = page_through(store, descending=False, limit=3)
    store.compact()
    names = files(directory)
    merged = page_through(store, descending=False, limit=2)
    store.close()

    assert overlapping == [
        DAY_FILE,
        "20240501T010000Z.duckdb",
        "20240501T020000Z.duckdb",
    ]
    assert oldest == [4, 1, 3, 2]
    assert newest == [2, 3, 1, 4]
    assert names == ["20240501T000000Z-1d-2.duckdb"]
    assert merged == oldest


def test_pages_over_overlapping_partitions_with_ties(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(directory, clock)
    tie = BASE + HOUR + 500
    store.apply([record(1, [tie, tie, BASE + HOUR + 7, tie])])
    clock.now = BASE + 3 * DAY
    store.apply([record(5, [tie, BASE + HOUR + 900, tie, BASE + 1])])
    expected = [(tie, s) for s in (1, 2, 4, 5, 7)]
    expected += [(BASE + HOUR + 7, 3), (BASE + HOUR + 900, 6), (BASE + 1, 8)]
    expected.sort()

    for limit in (1, 2, 3, 100):
        assert page_through(store, descending=False, limit=limit) == [
            s for _, s in expected
        ]
        assert page_through(store, descending=True, limit=limit) == [
            s for _, s in reversed(expected)
        ]
    store.close()


def test_retention_drops_merged_day_file(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(directory, clock)
    stamps = [BASE + (i % 4) * HOUR for i in range(400)]
    services = ["api", "audit"] * 200
    store.apply([record(1, stamps, services=services)])
    clock.now = BASE + 3 * DAY
    store.compact()
    size = store.disk_bytes()

    # A shorter retention for one service deletes its rows in the day file.
    deleted, dropped = store.apply_retention(BASE, {"audit": BASE + DAY})
    kept = {s for s, _ in query_all(store)}
    deleted_all, dropped_all = store.apply_retention(BASE + DAY, {})
    names = files(directory)
    remaining = store.disk_bytes()
    store.close()

    assert (deleted, dropped) == (200, 0)
    assert kept == set(range(1, 401, 2))
    assert (deleted_all, dropped_all) == (200, 1)
    assert names == []
    assert size > 0
    assert remaining == 0


def test_delete_after_reaches_day_file(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(directory, clock)
    store.apply([record(1, [BASE + HOUR, BASE + 2 * HOUR, BASE + 3 * HOUR])])
    clock.now = BASE + 3 * DAY
    store.compact()
    deleted = store.delete_after(1)
    store.apply([record(2, [BASE + 5 * HOUR])])
    entries = query_all(store)
    store.close()

    assert deleted == 2
    assert entries == [(1, BASE + HOUR), (2, BASE + 5 * HOUR)]


@pytest.mark.parametrize(("month_file_rows", "created"), [(0, 100), (100_000, 4)])
def test_scattered_old_days_keep_filters_packed(
    tmp_path: Path, month_file_rows: int, created: int
) -> None:
    """One batch over many old days creates day or month files of 32 KiB filters."""
    days = 100
    stamps = [BASE + day * DAY + HOUR for day in range(days)]
    store = open_store(
        tmp_path / "store", Clock(BASE + 400 * DAY), month_file_rows=month_file_rows
    )
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        store.apply([record(1, stamps)])
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        store.close()

    # 100 days from May 1 lie in May, June, July and August.
    assert len(files(tmp_path / "store")) == created
    # A packed filter takes 32 KiB and an unpacked one 256 KiB. The rest of
    # a partition's bookkeeping takes far less than the 64 KiB of slack.
    assert after - before < created * 96 * 1024


@pytest.mark.parametrize(("month_file_rows", "created"), [(0, 50), (100_000, 2)])
def test_scattered_old_days_answer_exactly(
    tmp_path: Path, month_file_rows: int, created: int
) -> None:
    """Files created by one batch record their rows, times and services."""
    directory = tmp_path / "store"
    days = 50
    stamps = [BASE + day * DAY + HOUR for day in range(days)]
    services = ["api" if day % 2 else "db" for day in range(days)]
    one_day = pb.EntryFilter(start_time=BASE + 7 * DAY, end_time=BASE + 8 * DAY)
    options = {"month_file_rows": month_file_rows}
    store = open_store(directory, Clock(BASE + 400 * DAY), **options)
    store.apply([record(1, stamps, services)])
    results = {}
    for name, reopen in (("created", False), ("reopened", True)):
        if reopen:
            store.close()
            store = open_store(directory, Clock(BASE + 400 * DAY), **options)
        scans = store.partition_scans
        columns, sequences = store.query(
            one_day, after=None, descending=False, limit=10
        )
        one_day_scans = store.partition_scans - scans
        scans = store.partition_scans
        api, _ = store.query(
            pb.EntryFilter(services=["api"]), after=None, descending=False, limit=100
        )
        api_scans = store.partition_scans - scans
        scans = store.partition_scans
        absent, _ = store.query(
            pb.EntryFilter(services=["web"]), after=None, descending=False, limit=10
        )
        absent_scans = store.partition_scans - scans
        results[name] = (
            list(columns.timestamps),
            sequences,
            one_day_scans,
            list(api.timestamps),
            api_scans,
            list(absent.timestamps),
            absent_scans,
        )
    entries = query_all(store)
    store.close()

    # Days 0 to 49 from May 1 lie in May and June.
    assert len(files(directory)) == created
    for name, result in results.items():
        timestamps, sequences, one_day_scans, api, api_scans, absent, absent_scans = (
            result
        )
        assert timestamps == [BASE + 7 * DAY + HOUR], name
        assert sequences == [8], name
        assert one_day_scans == 1, name
        assert api == stamps[1::2], name
        assert api_scans == min(created, days // 2), name
        assert absent == [], name
        assert absent_scans == 0, name
    assert [ts for _, ts in entries] == stamps


def test_width_must_divide_a_day(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must divide 86400"):
        LogStore(
            tmp_path / "store", partition_seconds=5 * 3600, compact_after_seconds=0
        )


_MERGER = """
import sys
from pathlib import Path
from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2 as pb

DAY = 86400 * 1_000_000_000
BASE = 1_714_521_600 * 1_000_000_000
store = LogStore(Path(sys.argv[1]), partition_seconds=3600,
                 compact_after_seconds=86400, clock=lambda: BASE + 3 * DAY)
print("merging", flush=True)
store.compact()
print("merged", flush=True)
sys.stdin.readline()  # stays alive, so it is killed whenever the test looks
store.close()
"""

ENTRIES = 200_000
BATCH = 10_000


def load_hours(directory: Path) -> None:
    """Store ENTRIES entries spread over the 24 hours of BASE's day."""
    store = open_store(directory, Clock(BASE + 20 * HOUR))
    step = DAY // ENTRIES
    for first in range(1, ENTRIES + 1, BATCH):
        # Each batch covers the whole day, so every hour file gets rows of
        # every batch, as under a steady load.
        stamps = [BASE + ((first + i) * 7919 % ENTRIES) * step for i in range(BATCH)]
        store.apply([record(first, stamps)])
    store.close()


def kill_when(directory: Path, ready) -> int:
    """Run a merge in another process, SIGKILL it once `ready()`; return its code."""
    process = subprocess.Popen(
        [sys.executable, "-c", _MERGER, str(directory)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "merging\n"
        deadline = time.monotonic() + 60
        while not ready() and process.poll() is None:
            assert time.monotonic() < deadline, "the merge never reached the point"
            time.sleep(0.001)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return process.returncode


def merged_file_listed(directory: Path) -> bool:
    try:
        return "-1d" in (directory / "store.json").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.system
@pytest.mark.parametrize("moment", ["copying", "listed"])
def test_kill_during_merge_loses_and_repeats_nothing(
    tmp_path: Path, moment: str
) -> None:
    directory = tmp_path / "store"
    load_hours(directory)
    if moment == "copying":
        code = kill_when(directory, lambda: (directory / DAY_FILE).exists())
        # Killed before the swap: the hour files are still listed.
        assert not merged_file_listed(directory)
        assert len(files(directory)) == 25
    else:
        code = kill_when(directory, lambda: merged_file_listed(directory))
    assert code == -signal.SIGKILL

    clock = Clock(BASE + 3 * DAY)
    store = open_store(directory, clock)
    after_kill = store.count(pb.EntryFilter(), histogram_start=0, histogram_step=0)
    sequences = [s for s, _ in query_all(store)]
    store.compact()
    names = files(directory)
    merged = [s for s, _ in query_all(store)]
    last = store.last_sequence()
    store.close()

    assert sum(after_kill[0].values()) == ENTRIES
    assert sorted(sequences) == list(range(1, ENTRIES + 1))
    assert sorted(merged) == list(range(1, ENTRIES + 1))
    assert len(names) == 1
    assert names[0].startswith("20240501T000000Z-1d")
    assert last == ENTRIES


def stamp_of(sequence: int) -> int:
    """Return the timestamp that `load_hours` gave to an entry."""
    return BASE + (sequence * 7919 % ENTRIES) * (DAY // ENTRIES)


@pytest.mark.parametrize("truncate", [False, True])
def test_retention_during_merge_reaches_its_rows(
    tmp_path: Path, truncate: bool
) -> None:
    directory = tmp_path / "store"
    load_hours(directory)
    store = open_store(directory, Clock(BASE + 3 * DAY))
    merge = threading.Thread(target=store.compact)
    merge.start()
    deadline = time.monotonic() + 60
    # The merged file exists once the merge has begun to copy the hours.
    while not (directory / DAY_FILE).exists() and merge.is_alive():
        assert time.monotonic() < deadline, "the merge never began"
        time.sleep(0.001)
    last = ENTRIES
    if truncate:
        # Entries of the day deleted during the merge make it drop its copy,
        # so the retention pass goes to the hour files it left in place.
        last = ENTRIES - 10
        store.delete_after(last)
    store.apply_retention(BASE + 12 * HOUR, {})
    merge.join(timeout=120)
    kept = [sequence for sequence, _ in query_all(store)]
    store.close()

    assert not merge.is_alive()
    assert sorted(kept) == [
        sequence
        for sequence in range(1, last + 1)
        if stamp_of(sequence) >= BASE + 12 * HOUR
    ]


def test_directory_of_format_one_opens(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    daily = LogStore(directory, partition_seconds=86400)
    daily.apply([record(1, [BASE + 5, BASE + DAY + 5])])
    daily.close()
    # The state file as the store wrote it before it listed its files.
    state_path = directory / "store.json"
    state_path.write_text(
        json.dumps({"format": 1, "partition_seconds": 86400, "last_sequence": 2})
    )

    clock = Clock(BASE + DAY + 2 * HOUR)
    store = open_store(directory, clock)
    store.apply([record(3, [BASE + DAY + HOUR])])
    entries = query_all(store)
    listed = json.loads(state_path.read_text())["files"]
    store.close()

    assert [s for s, _ in entries] == [1, 2, 3]
    assert listed == [
        {"name": "20240501T000000Z.duckdb", "start": BASE // SECOND, "seconds": 86400},
        {"name": "20240502T000000Z.duckdb", "start": BASE // SECOND + 86400,
         "seconds": 86400},
        {"name": "20240502T010000Z.duckdb", "start": BASE // SECOND + 90000,
         "seconds": 3600},
    ]  # fmt: skip


def test_snapshot_copy_holds_off_merges(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(directory, clock)
    store.apply([record(1, [BASE + HOUR, BASE + 2 * HOUR, BASE + 3 * HOUR])])
    clock.now = BASE + 3 * DAY
    store.apply([record(4, [BASE + 30, BASE + 2 * DAY])])

    chunks = store.copy_chunks(5, 2, 1 << 20)
    first = next(chunks)
    merged_during_copy = store.compact()
    copied = list(first[1]) + [s for _, sequences in chunks for s in sequences]
    merged_after_copy = store.compact()
    store.close()

    assert merged_during_copy == 0
    assert sorted(copied) == [1, 2, 3, 4, 5]
    assert merged_after_copy == 1


def test_failed_swap_keeps_each_entry_once(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 20 * HOUR)
    store = open_store(directory, clock)
    store.apply([record(1, [BASE + HOUR, BASE + 2 * HOUR, BASE + 3 * HOUR])])
    clock.now = BASE + 3 * DAY
    # A folder in place of the state file makes the swap's rename fail.
    state = directory / "store.json"
    saved_state = state.read_bytes()
    state.unlink()
    state.mkdir()

    with pytest.raises(IsADirectoryError):
        store.compact()
    during = query_all(store)
    state.rmdir()
    state.write_bytes(saved_state)
    merged = store.compact()
    names = files(directory)
    after = query_all(store)
    store.close()
    reopened = open_store(directory, clock)
    reopened_entries = query_all(reopened)
    reopened_names = files(directory)
    reopened.close()

    assert [s for s, _ in during] == [1, 2, 3]
    assert merged == 1
    # The first merged file stays on disk, unlisted, until the next open.
    assert names == ["20240501T000000Z-1d-2.duckdb", DAY_FILE]
    assert after == during
    assert reopened_entries == during
    assert reopened_names == ["20240501T000000Z-1d-2.duckdb"]
