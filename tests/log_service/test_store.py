"""Tests of LogStore against real DuckDB files under tmp_path."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from log_service import store as store_module
from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2 as pb
from splitlog_runtime.errors import InvalidArgument, Unavailable

REPO = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
BASE = 1_714_521_600 * SECOND  # 2024-05-01T00:00:00Z
INFO, WARN, ERROR = 9, 13, 17


def record(
    first: int,
    timestamps: Sequence[int],
    *,
    services: Sequence[str] | None = None,
    severities: Sequence[int] | None = None,
    messages: Sequence[str] | None = None,
    attributes: Sequence[str] | None = None,
) -> pb.LogRecord:
    count = len(timestamps)
    columns = pb.EntryColumns(
        timestamps=timestamps,
        severities=severities or [INFO] * count,
        services=services or ["api"] * count,
        messages=messages or [f"entry {first + i}" for i in range(count)],
        attributes=attributes or [],
    )
    return pb.LogRecord(first_sequence=first, entries=columns)


def query_all(
    store: LogStore, flt: pb.EntryFilter | None = None, *, descending: bool = False
) -> list[tuple[int, int, str]]:
    """Return (sequence, timestamp, message) of every matching entry."""
    columns, sequences = store.query(
        flt or pb.EntryFilter(), after=None, descending=descending, limit=100_000
    )
    return list(zip(sequences, columns.timestamps, columns.messages, strict=True))


def sequences_of(store: LogStore, flt: pb.EntryFilter) -> list[int]:
    return [entry[0] for entry in query_all(store, flt)]


@pytest.fixture
def store(tmp_path: Path):
    opened = LogStore(tmp_path / "store", partition_seconds=DAY // SECOND)
    yield opened
    opened.close()


# Apply, read back, partitions ------------------------------------------------


def test_empty_store_has_last_sequence_zero(store: LogStore) -> None:
    assert store.last_sequence() == 0
    assert query_all(store) == []


def test_apply_keeps_every_column(store: LogStore) -> None:
    columns = pb.EntryColumns(
        timestamps=[BASE + 5, BASE + 6],
        observed_timestamps=[BASE + 7, BASE + 8],
        severities=[WARN, ERROR],
        services=["api", "db"],
        hosts=["node-1", ""],
        messages=["first", "zweite Nachricht ✓"],
        attributes=['{"rpc":"Get","user":"u1"}', ""],
        trace_ids=["0af7651916cd43dd8448eb211c80319c", ""],
        span_ids=["b7ad6b7169203331", ""],
        truncated=[True, False],
        dropped_attributes_counts=[3, 0],
    )
    store.apply([pb.LogRecord(first_sequence=1, entries=columns)])

    read, sequences = store.query(
        pb.EntryFilter(), after=None, descending=False, limit=10
    )

    assert sequences == [1, 2]
    assert read == columns
    assert store.last_sequence() == 2


def test_missing_optional_columns_get_defaults(store: LogStore) -> None:
    store.apply([record(1, [BASE])])

    read, _ = store.query(pb.EntryFilter(), after=None, descending=False, limit=10)

    assert list(read.hosts) == [""]
    assert list(read.attributes) == [""]
    assert list(read.truncated) == [False]
    assert list(read.observed_timestamps) == [0]


def test_apply_mixes_sent_and_omitted_columns(store: LogStore) -> None:
    with_hosts = record(1, [BASE, BASE + 1])
    with_hosts.entries.hosts.extend(["node-1", "node-2"])
    with_hosts.entries.dropped_attributes_counts.extend([4, 0])
    without_hosts = record(3, [BASE + 2, BASE + 3, BASE + 4])
    # Its first entry is stored already, so only the second one is new.
    overlapping = record(5, [BASE + 4, BASE + 5], messages=["again", "last"])
    overlapping.entries.hosts.extend(["node-5", "node-6"])

    store.apply([with_hosts, without_hosts])
    store.apply([overlapping])
    store.apply([record(7, [BASE + 6]), record(7, [BASE + 6])])
    read, sequences = store.query(
        pb.EntryFilter(), after=None, descending=False, limit=10
    )

    assert sequences == [1, 2, 3, 4, 5, 6, 7]
    assert list(read.hosts) == ["node-1", "node-2", "", "", "", "node-6", ""]
    assert list(read.dropped_attributes_counts) == [4, 0, 0, 0, 0, 0, 0]
    assert list(read.messages) == [
        "entry 1",
        "entry 2",
        "entry 3",
        "entry 4",
        "entry 5",
        "last",
        "entry 7",
    ]
    assert list(read.observed_timestamps) == [0] * 7


def test_apply_mixes_columns_of_large_records(tmp_path: Path) -> None:
    size = 1500  # large enough for the store to convert record by record
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    first = record(1, [BASE + i for i in range(size)])
    first.entries.hosts.extend(f"host-{i}" for i in range(size))
    second = record(size + 1, [BASE + HOUR + i for i in range(size)])
    # Repeats the last 500 entries of `second` and adds 1000 after them.
    third = record(2 * size - 499, [BASE + 2 * HOUR + i for i in range(size)])
    third.entries.hosts.extend(f"late-{i}" for i in range(size))
    fourth = record(2 * size + 1001, [BASE + 3 * HOUR + i for i in range(size)])

    store.apply([first, second])
    store.apply([third, fourth])
    read, sequences = store.query(
        pb.EntryFilter(), after=None, descending=False, limit=10 * size
    )
    store.close()

    last = 4 * size - 500
    assert sequences == list(range(1, last + 1))
    assert list(read.messages) == [f"entry {i}" for i in range(1, last + 1)]
    assert list(read.hosts) == (
        [f"host-{i}" for i in range(size)]
        + [""] * size
        + [f"late-{i}" for i in range(500, size)]
        + [""] * size
    )


def test_record_across_partitions_is_split(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE + 10, BASE + HOUR + 1, BASE + 3 * HOUR, BASE + 11])])

    names = sorted(p.name for p in directory.glob("*.duckdb"))
    entries = query_all(store)
    store.close()

    assert names == [
        "20240501T000000Z.duckdb",
        "20240501T010000Z.duckdb",
        "20240501T030000Z.duckdb",
    ]
    assert [e[0] for e in entries] == [1, 4, 2, 3]


def test_unfinished_partition_file_recreated(tmp_path: Path) -> None:
    # What a full disk leaves when it stops DuckDB while writing the header.
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    (directory / "20240501T000000Z.duckdb").write_bytes(b"DUCK" + bytes(500))

    store.apply([record(1, [BASE + 10, BASE + 20])])
    entries = query_all(store)
    store.close()

    assert [e[0] for e in entries] == [1, 2]


def test_query_skips_nothing_across_partitions(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    timestamps = [BASE + i * 20 * 60 * SECOND for i in range(12)]
    store.apply([record(1, timestamps)])
    flt = pb.EntryFilter(start_time=BASE + HOUR, end_time=BASE + 3 * HOUR + 1)

    ascending = query_all(store, flt)
    descending = query_all(store, flt, descending=True)
    store.close()

    assert [e[0] for e in ascending] == [4, 5, 6, 7, 8, 9, 10]
    assert descending == ascending[::-1]


def test_reopen_after_close_keeps_content(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE, BASE + 2 * HOUR]), record(3, [BASE + HOUR])])
    before = query_all(store)
    store.close()

    reopened = LogStore(directory, partition_seconds=3600)
    after = query_all(reopened)
    last = reopened.last_sequence()
    reopened.close()

    assert after == before
    assert last == 3


def test_reopen_removes_abandoned_state_temporary(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE])])
    store.close()
    # What `write_file_atomically` leaves when the node is killed before its
    # rename of the state file.
    stale = directory / ".store.json.o83txpw8.tmp"
    stale.write_bytes(b'{"format": 2, "last_seq')

    reopened = LogStore(directory, partition_seconds=3600)
    last = reopened.last_sequence()
    reopened.close()

    assert not stale.exists()
    assert last == 1


def test_reopen_with_other_width_keeps_old_files(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    hourly = LogStore(directory, partition_seconds=3600)
    hourly.apply([record(1, [BASE + 10, BASE + HOUR + 10])])
    hourly.close()

    daily = LogStore(directory, partition_seconds=86400)
    # These land in a day file that overlaps the two hour files.
    daily.apply([record(3, [BASE + 5, BASE + HOUR + 20, BASE + 2 * HOUR])])
    newest = query_all(daily, descending=True)
    oldest = query_all(daily)
    names = sorted(p.name for p in directory.glob("*.duckdb"))
    daily.close()

    assert [e[0] for e in oldest] == [3, 1, 2, 4, 5]
    assert [e[0] for e in newest] == [5, 4, 2, 1, 3]
    assert names == [
        "20240501T000000Z-2.duckdb",
        "20240501T000000Z.duckdb",
        "20240501T010000Z.duckdb",
    ]


# Replay and crash safety -----------------------------------------------------


def test_replay_stores_each_entry_once(store: LogStore) -> None:
    records = [
        record(1, [BASE, BASE + 1]),
        record(3, [BASE + DAY, BASE + 2]),
        record(5, [BASE + 3]),
    ]
    store.apply(records)
    expected = query_all(store)

    store.apply(records)
    store.apply(records[1:])
    store.apply([records[2]])

    assert query_all(store) == expected
    assert store.last_sequence() == 5


def test_overlapping_replay_adds_new_entries_only(store: LogStore) -> None:
    store.apply([record(1, [BASE, BASE + 1, BASE + 2])])

    store.apply([record(2, [BASE + 1, BASE + 2, BASE + 3, BASE + 4])])

    assert sequences_of(store, pb.EntryFilter()) == [1, 2, 3, 4, 5]
    assert store.last_sequence() == 5


def test_failed_partition_rolls_back_call(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE])])
    # A directory where the next partition file belongs makes its ATTACH
    # fail after the first partition of the record has committed.
    blocker = directory / "20240501T010000Z.duckdb"
    blocker.mkdir()

    with pytest.raises(Exception):  # noqa: B017 - DuckDB's own error type
        store.apply([record(2, [BASE + 1, BASE + HOUR])])
    during = query_all(store)
    blocker.rmdir()
    store.apply([record(2, [BASE + 1, BASE + HOUR])])
    after = query_all(store)
    store.close()

    assert [e[0] for e in during] == [1]
    assert [e[0] for e in after] == [1, 2, 3]


_APPLIER = """
import sys
from pathlib import Path
from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2 as pb

SECOND = 1_000_000_000
HOUR = 3600 * SECOND
BASE = 1_714_521_600 * SECOND

def record(first, timestamps):
    return pb.LogRecord(first_sequence=first, entries=pb.EntryColumns(
        timestamps=timestamps, severities=[9] * len(timestamps),
        services=["api"] * len(timestamps),
        messages=[f"entry {first + i}" for i in range(len(timestamps))]))

store = LogStore(Path(sys.argv[1]), partition_seconds=3600)
mode = sys.argv[2]
if mode == "two-partitions":
    store.apply([record(1, [BASE, BASE + 1])])
    print("ready", flush=True)
    sys.stdin.readline()
    store.apply([record(3, [BASE + 2, BASE + HOUR])])
    print("not blocked", flush=True)
else:
    for number in range(10_000):
        first = number * 50 + 1
        stamps = [BASE + (first + i) * SECOND * 7 for i in range(50)]
        store.apply([record(first, stamps)])
        print(first + 49, flush=True)
"""


def start_applier(directory: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _APPLIER, str(directory), mode],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for_reader(fifo: Path, process: subprocess.Popen[str]) -> None:
    """Return once some process has opened `fifo` for reading."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        assert process.poll() is None, "the applier exited before the FIFO"
        time.sleep(0.01)
    raise AssertionError("the applier never opened the second partition")


@pytest.mark.system
def test_kill_between_partitions_then_replay(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    process = start_applier(directory, "two-partitions")
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        # A FIFO in place of the second partition file blocks its ATTACH, so
        # the process is stopped exactly between the two partitions.
        fifo = directory / "20240501T010000Z.duckdb"
        os.mkfifo(fifo)
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        wait_for_reader(fifo, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    os.unlink(fifo)

    store = LogStore(directory, partition_seconds=3600)
    last = store.last_sequence()
    store.apply([record(1, [BASE, BASE + 1]), record(3, [BASE + 2, BASE + HOUR])])
    entries = query_all(store)
    store.close()

    assert last == 2
    assert [e[0] for e in entries] == [1, 2, 3, 4]
    assert [e[2] for e in entries] == [f"entry {n}" for n in (1, 2, 3, 4)]


@pytest.mark.system
def test_kill_during_applies_then_replay(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    process = start_applier(directory, "loop")
    try:
        assert process.stdout is not None
        for _ in range(20):
            process.stdout.readline()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    store = LogStore(directory, partition_seconds=3600)
    last = store.last_sequence()
    stored = query_all(store)
    first_missing = last + 1
    replay_from = (first_missing - 1) // 50 * 50 + 1
    for first in range(replay_from - 50, replay_from + 200, 50):
        if first < 1:
            continue
        stamps = [BASE + (first + i) * SECOND * 7 for i in range(50)]
        store.apply([record(first, stamps)])
    entries = query_all(store)
    store.close()

    assert last >= 20 * 50
    assert last % 50 == 0
    assert [e[0] for e in stored] == list(range(1, last + 1))
    assert [e[0] for e in entries] == list(range(1, replay_from + 200))
    assert [e[2] for e in entries] == [
        f"entry {n}" for n in range(1, replay_from + 200)
    ]


# delete_after ---------------------------------------------------------------


def test_delete_after_removes_later_entries(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE, BASE + HOUR, BASE + 2, BASE + 2 * HOUR])])

    deleted = store.delete_after(2)
    last = store.last_sequence()
    store.apply([record(3, [BASE + 5], messages=["replacement"])])
    store.close()
    reopened = LogStore(directory, partition_seconds=3600)
    entries = query_all(reopened)
    reopened.close()

    assert deleted == 2
    assert last == 2
    assert entries == [
        (1, BASE, "entry 1"),
        (3, BASE + 5, "replacement"),
        (2, BASE + HOUR, "entry 2"),
    ]


def test_delete_after_last_sequence_deletes_nothing(store: LogStore) -> None:
    store.apply([record(1, [BASE, BASE + 1])])

    assert store.delete_after(2) == 0
    assert store.delete_after(5) == 0
    assert store.last_sequence() == 2


def test_delete_after_negative_is_invalid(store: LogStore) -> None:
    with pytest.raises(InvalidArgument, match="sequence is -1"):
        store.delete_after(-1)


# Time bounds, ties and cursors -------------------------------------------------


def test_end_time_is_exclusive_at_nanoseconds(store: LogStore) -> None:
    moment = BASE + 590_180_708  # ...00.590180708
    store.apply([record(1, [moment])])

    def found(start: int | None, end: int) -> list[int]:
        flt = pb.EntryFilter(end_time=end)
        if start is not None:
            flt.start_time = start
        return sequences_of(store, flt)

    assert found(None, BASE) == []
    assert found(None, moment) == []
    assert found(None, moment + 1) == [1]
    assert found(None, BASE + 600_000_000) == [1]
    assert found(moment, moment + 1) == [1]
    assert found(moment + 1, BASE + SECOND) == []


def test_tied_timestamps_page_without_gaps(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    # Forty entries share each of three timestamps, and the second timestamp
    # lies in the next partition. Sequences interleave across the ties.
    stamps = [BASE + 7, BASE + 7 + HOUR, BASE + 3] * 40
    store.apply([record(1, stamps[:50]), record(51, stamps[50:])])
    expected = sorted(
        ((ts, seq) for seq, ts in enumerate(stamps, start=1)),
    )

    for descending in (False, True):
        pages: list[tuple[int, int]] = []
        after = None
        while True:
            columns, sequences = store.query(
                pb.EntryFilter(), after=after, descending=descending, limit=7
            )
            if not sequences:
                break
            page = list(zip(columns.timestamps, sequences, strict=True))
            pages.extend(page)
            after = page[-1]
        wanted = expected[::-1] if descending else expected
        assert pages == wanted, f"descending={descending}"
    store.close()


def test_cursor_is_exclusive(store: LogStore) -> None:
    store.apply([record(1, [BASE, BASE, BASE + 1])])

    _, ascending = store.query(
        pb.EntryFilter(), after=(BASE, 1), descending=False, limit=10
    )
    _, descending = store.query(
        pb.EntryFilter(), after=(BASE, 2), descending=True, limit=10
    )

    assert ascending == [2, 3]
    assert descending == [1]


def test_limit_below_one_is_invalid(store: LogStore) -> None:
    with pytest.raises(InvalidArgument, match="limit is 0"):
        store.query(pb.EntryFilter(), after=None, descending=False, limit=0)
    with pytest.raises(InvalidArgument, match="limit is -3"):
        store.since(0, pb.EntryFilter(), limit=-3)


def test_mismatched_columns_are_invalid(store: LogStore) -> None:
    bad = record(1, [BASE, BASE + 1])
    bad.entries.services.append("third")

    with pytest.raises(InvalidArgument) as caught:
        store.apply([bad])

    assert "records[0].entries.services has 3 values" in caught.value.message
    assert store.last_sequence() == 0


def test_sequence_below_one_is_invalid(store: LogStore) -> None:
    with pytest.raises(InvalidArgument, match="first_sequence is 0"):
        store.apply([record(0, [BASE])])


# Filters --------------------------------------------------------------------


def test_service_severity_and_sequence_filters(store: LogStore) -> None:
    store.apply(
        [
            record(
                1,
                [BASE + i for i in range(6)],
                services=["api", "db", "api", "web", "db", "api"],
                severities=[INFO, WARN, ERROR, INFO, ERROR, WARN],
            )
        ]
    )

    assert sequences_of(store, pb.EntryFilter(services=["db", "web"])) == [2, 4, 5]
    assert sequences_of(store, pb.EntryFilter(severities=[WARN, ERROR])) == [2, 3, 5, 6]
    assert sequences_of(store, pb.EntryFilter(services=["api"], severities=[WARN])) == [
        6
    ]
    assert sequences_of(store, pb.EntryFilter(max_sequence=3)) == [1, 2, 3]
    assert sequences_of(store, pb.EntryFilter(services=["nope"])) == []


def test_keyword_case_insensitive_unicode(store: LogStore) -> None:
    messages = [
        "Connection TIMEOUT after 30 s",
        "École fermée",
        "Straße gesperrt",
        "STRASSE offen",
        "GROẞE Datei",
        "nothing here",
    ]
    store.apply([record(1, [BASE + i for i in range(6)], messages=messages)])

    def found(keyword: str) -> list[int]:
        return sequences_of(store, pb.EntryFilter(keyword=keyword))

    assert found("timeout") == [1]
    assert found("école") == [2]
    assert found("ÉCOLE") == [2]
    assert found("FERMÉE") == [2]
    assert found("straße") == [3]
    # One-to-one case mapping: ẞ lowers to ß, but ß does not expand to "ss".
    assert found("große") == [5]
    assert found("strasse") == [4]


def test_keyword_special_characters_match_literally(store: LogStore) -> None:
    messages = [
        "disk 100% full",
        "disk 1000 full",
        "user_id missing",
        "userXid missing",
        r"path C:\temp\x",
        "path C:/temp/x",
        "'; DROP TABLE entries; --",
        "plain",
    ]
    store.apply([record(1, [BASE + i for i in range(8)], messages=messages)])

    def found(keyword: str) -> list[int]:
        return sequences_of(store, pb.EntryFilter(keyword=keyword))

    assert found("100%") == [1]
    assert found("%") == [1]
    assert found("user_id") == [3]
    assert found("_") == [3]
    assert found("\\temp\\") == [5]
    assert found("'; DROP TABLE x; --") == []
    assert found("'; drop table entries; --") == [7]
    assert len(query_all(store)) == 8


def test_injection_in_service_and_key_harmless(store: LogStore) -> None:
    hostile = "'; DROP TABLE entries; --"
    store.apply(
        [
            record(
                1,
                [BASE, BASE + 1],
                services=[hostile, "api"],
                attributes=[json.dumps({hostile: "v", "a.b": "x"}), ""],
            )
        ]
    )

    by_service = sequences_of(store, pb.EntryFilter(services=[hostile]))
    by_key = sequences_of(
        store,
        pb.EntryFilter(attributes=[pb.AttributeMatch(key=hostile, value="v")]),
    )
    by_wild_service = sequences_of(store, pb.EntryFilter(services=["%"]))

    assert by_service == [1]
    assert by_key == [1]
    assert by_wild_service == []
    assert len(query_all(store)) == 2


def test_attribute_equality(store: LogStore) -> None:
    attributes = [
        json.dumps({"rpc": "Get", "user": "u1"}, sort_keys=True),
        json.dumps({"rpc": "Put", "user": "u1"}, sort_keys=True),
        json.dumps({"a/b": "slash", "a.b": "dot", "t~x": "tilde"}, sort_keys=True),
        json.dumps({"count": 5, "ok": True}, sort_keys=True),
        "",
    ]
    store.apply([record(1, [BASE + i for i in range(5)], attributes=attributes)])

    def found(*pairs: tuple[str, str]) -> list[int]:
        matches = [pb.AttributeMatch(key=k, value=v) for k, v in pairs]
        return sequences_of(store, pb.EntryFilter(attributes=matches))

    assert found(("user", "u1")) == [1, 2]
    assert found(("user", "u1"), ("rpc", "Put")) == [2]
    assert found(("rpc", "get")) == []
    assert found(("a/b", "slash")) == [3]
    assert found(("a.b", "dot")) == [3]
    assert found(("t~x", "tilde")) == [3]
    assert found(("count", "5")) == [4]
    assert found(("ok", "true")) == [4]
    assert found(("missing", "")) == []


# count ------------------------------------------------------------------------


def test_counts_add_up_to_query_count(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    services = ["api", "db", "web"]
    severities = [INFO, WARN, ERROR, INFO]
    stamps = [BASE + i * 97 * SECOND + 13 for i in range(150)]
    store.apply(
        [
            record(
                1,
                stamps,
                services=[services[i % 3] for i in range(150)],
                severities=[severities[i % 4] for i in range(150)],
            )
        ]
    )
    step = 10 * 60 * SECOND
    # Neither end lies on a bucket or partition boundary.
    flt = pb.EntryFilter(
        start_time=BASE + 17 * 60 * SECOND + 3, end_time=BASE + 3 * HOUR + 41
    )
    matching = query_all(store, flt)

    by_severity, by_service, by_bucket = store.count(
        flt, histogram_start=BASE, histogram_step=step
    )
    store.close()

    assert sum(by_severity.values()) == len(matching)
    assert sum(by_service.values()) == len(matching)
    assert sum(by_bucket.values()) == len(matching)
    expected: dict[tuple[int, int], int] = {}
    for seq, ts, _ in matching:
        key = ((ts - BASE) // step, severities[(seq - 1) % 4])
        expected[key] = expected.get(key, 0) + 1
    assert by_bucket == expected
    assert by_service == {
        s: sum(1 for seq, _, _ in matching if services[(seq - 1) % 3] == s)
        for s in services
    }


def test_count_bucket_before_start_is_negative(store: LogStore) -> None:
    store.apply([record(1, [BASE - 1, BASE, BASE + 25, BASE - 21])])

    _, _, by_bucket = store.count(
        pb.EntryFilter(), histogram_start=BASE, histogram_step=10
    )

    assert by_bucket == {(-1, INFO): 1, (0, INFO): 1, (2, INFO): 1, (-3, INFO): 1}


def test_count_buckets_at_int64_extremes(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    top = 2**63 - 1
    store.apply([record(1, [-top, 0, top - 5])])

    _, _, from_bottom = store.count(
        pb.EntryFilter(), histogram_start=-top, histogram_step=2**62
    )
    _, _, from_top = store.count(
        pb.EntryFilter(), histogram_start=top, histogram_step=2
    )
    store.close()

    assert from_bottom == {(0, INFO): 1, (1, INFO): 1, (3, INFO): 1}
    assert from_top == {(-top, INFO): 1, (-(2**62), INFO): 1, (-3, INFO): 1}


def test_count_without_histogram(store: LogStore) -> None:
    store.apply([record(1, [BASE, BASE + 1], severities=[INFO, ERROR])])

    by_severity, by_service, by_bucket = store.count(
        pb.EntryFilter(keyword="entry"), histogram_start=0, histogram_step=0
    )

    assert by_severity == {INFO: 1, ERROR: 1}
    assert by_service == {"api": 2}
    assert by_bucket == {}


def test_count_negative_step_is_invalid(store: LogStore) -> None:
    with pytest.raises(InvalidArgument, match="histogram_step is -5"):
        store.count(pb.EntryFilter(), histogram_start=0, histogram_step=-5)


# since -------------------------------------------------------------------------


def test_since_follows_sequence_order_across_partitions(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    # Sequence 3 arrives late and belongs to the earlier partition.
    store.apply([record(1, [BASE + HOUR, BASE + HOUR + 1, BASE + 5, BASE + HOUR + 2])])

    first, first_sequences, first_examined = store.since(0, pb.EntryFilter(), limit=3)
    rest, rest_sequences, rest_examined = store.since(
        first_examined, pb.EntryFilter(), limit=3
    )
    _, none, idle_examined = store.since(rest_examined, pb.EntryFilter(), limit=3)
    store.close()

    assert first_sequences == [1, 2, 3]
    assert list(first.timestamps) == [BASE + HOUR, BASE + HOUR + 1, BASE + 5]
    assert first_examined == 3
    assert rest_sequences == [4]
    assert list(rest.messages) == ["entry 4"]
    assert rest_examined == 4
    assert none == []
    assert idle_examined == 4


def test_since_with_filter_reports_examined_sequence(store: LogStore) -> None:
    store.apply(
        [record(1, [BASE + i for i in range(5)], services=["a", "b", "b", "a", "b"])]
    )

    _, sequences, examined = store.since(0, pb.EntryFilter(services=["a"]), limit=10)
    _, later, later_examined = store.since(9, pb.EntryFilter(), limit=10)

    assert sequences == [1, 4]
    assert examined == 5
    assert later == []
    assert later_examined == 9


# follow_page -------------------------------------------------------------------


def follow_all(
    store: LogStore, flt: pb.EntryFilter, *, span: int, limit: int, max_bytes: int
) -> tuple[list[int], list[int]]:
    """Read every page from sequence 0; return the sequences and each page's
    examined sequence."""
    after = 0
    sequences: list[int] = []
    examined: list[int] = []
    while True:
        _, page, after_page = store.follow_page(
            after, flt, span=span, limit=limit, max_bytes=max_bytes
        )
        if after_page == after:
            return sequences, examined
        sequences.extend(page)
        examined.append(after_page)
        after = after_page


def test_follow_page_reads_span_across_partitions(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    # Sequences 3 and 6 arrive late and belong to the earlier partition.
    stamps = [BASE + HOUR, BASE + HOUR + 1, BASE + 5, BASE + HOUR + 2]
    store.apply([record(1, stamps + [BASE + HOUR + 3, BASE + 6, BASE + HOUR + 4])])

    first, first_sequences, first_examined = store.follow_page(
        0, pb.EntryFilter(), span=3, limit=10, max_bytes=1_000_000
    )
    _, rest_sequences, rest_examined = store.follow_page(
        first_examined, pb.EntryFilter(), span=10, limit=10, max_bytes=1_000_000
    )
    _, none, idle_examined = store.follow_page(
        rest_examined, pb.EntryFilter(), span=10, limit=10, max_bytes=1_000_000
    )
    store.close()

    assert first_sequences == [1, 2, 3]
    assert list(first.timestamps) == [BASE + HOUR, BASE + HOUR + 1, BASE + 5]
    assert first_examined == 3
    assert rest_sequences == [4, 5, 6, 7]
    assert rest_examined == 7
    assert none == []
    assert idle_examined == 7


def test_follow_page_limit_ends_at_last_entry(store: LogStore) -> None:
    store.apply([record(1, [BASE + i for i in range(10)])])

    sequences, examined = follow_all(
        store, pb.EntryFilter(), span=100, limit=4, max_bytes=1_000_000
    )

    assert sequences == list(range(1, 11))
    assert examined == [4, 8, 10]


def test_follow_page_byte_bound_keeps_first_entry(store: LogStore) -> None:
    messages = ["x" * 300, "y" * 300, "z" * 300, "w" * 300]
    store.apply([record(1, [BASE + i for i in range(4)], messages=messages)])

    one_each, one_each_examined = follow_all(
        store, pb.EntryFilter(), span=100, limit=100, max_bytes=10
    )
    two_each, two_each_examined = follow_all(
        store, pb.EntryFilter(), span=100, limit=100, max_bytes=1200
    )

    assert one_each == [1, 2, 3, 4]
    assert one_each_examined == [1, 2, 3, 4]
    assert two_each == [1, 2, 3, 4]
    assert two_each_examined == [2, 4]


def test_follow_page_filter_examines_whole_span(store: LogStore) -> None:
    services = ["a", "b", "b", "b", "b", "b", "b", "a"]
    store.apply([record(1, [BASE + i for i in range(8)], services=services)])

    sequences, examined = follow_all(
        store, pb.EntryFilter(services=["a"]), span=3, limit=10, max_bytes=1_000_000
    )
    _, capped, capped_examined = store.follow_page(
        0,
        pb.EntryFilter(services=["a"], max_sequence=5),
        span=100,
        limit=10,
        max_bytes=1_000_000,
    )

    assert sequences == [1, 8]
    assert examined == [3, 6, 8]
    assert capped == [1]
    assert capped_examined == 5


def test_follow_page_after_truncation_and_reopen(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE + HOUR, BASE + 1, BASE + HOUR + 1])])
    store.delete_after(1)
    store.apply([record(2, [BASE + 2, BASE + HOUR + 2, BASE + 2 * HOUR])])
    before, _ = follow_all(
        store, pb.EntryFilter(), span=1, limit=10, max_bytes=1_000_000
    )
    store.close()
    reopened = LogStore(directory, partition_seconds=3600)
    after, _ = follow_all(
        reopened, pb.EntryFilter(), span=2, limit=10, max_bytes=1_000_000
    )
    reopened.close()

    assert before == [1, 2, 3, 4]
    assert after == [1, 2, 3, 4]


def test_follow_page_span_below_one_is_invalid(store: LogStore) -> None:
    with pytest.raises(InvalidArgument, match="span is 0"):
        store.follow_page(0, pb.EntryFilter(), span=0, limit=10, max_bytes=100)


# Retention ---------------------------------------------------------------------


def test_retention_drops_expired_partition_file(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE + i for i in range(50)] + [BASE + 2 * HOUR])])
    old_file = directory / "20240501T000000Z.duckdb"
    size_before = store.disk_bytes()

    deleted, dropped = store.apply_retention(BASE + HOUR, {})

    assert (deleted, dropped) == (50, 1)
    assert not old_file.exists()
    assert store.disk_bytes() < size_before
    assert sequences_of(store, pb.EntryFilter()) == [51]
    store.close()


def test_retention_short_lived_service(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    stamps = [BASE + 10, BASE + 20, BASE + 30, BASE + 40]
    store.apply([record(1, stamps, services=["audit", "debug", "audit", "debug"])])

    # Entries of "debug" before BASE + 25 expire. The default expires none.
    deleted, dropped = store.apply_retention(BASE, {"debug": BASE + 25})
    kept = sequences_of(store, pb.EntryFilter())
    # A shorter retention later applies to the entries already stored.
    deleted_later, dropped_later = store.apply_retention(BASE + 35, {})
    kept_later = sequences_of(store, pb.EntryFilter())
    files = list(directory.glob("*.duckdb"))
    store.close()

    assert (deleted, dropped) == (1, 0)
    assert kept == [1, 3, 4]
    assert (deleted_later, dropped_later) == (2, 0)
    assert kept_later == [4]
    assert len(files) == 1


def fill_day(store: LogStore, count: int) -> None:
    """Apply `count` entries spread over the day of BASE, in batches."""
    step = DAY // count
    batch = 50_000
    for first in range(0, count, batch):
        size = min(batch, count - first)
        stamps = [BASE + (first + i) * step for i in range(size)]
        padded = [f"entry {first + i} of a day of padded messages" for i in range(size)]
        store.apply([record(first + 1, stamps, messages=padded)])


def partition_bytes(directory: Path) -> dict[str, int]:
    """Return the size of each DuckDB file and DuckDB WAL in a store."""
    return {p.name: p.stat().st_size for p in sorted(directory.glob("*.duckdb*"))}


def test_retention_checkpoints_partition_wal(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=DAY // SECOND)
    fill_day(store, 100_000)
    store.close()  # checkpoints, so only the deletions below reach the WAL
    store = LogStore(directory, partition_seconds=DAY // SECOND)

    deleted, dropped = store.apply_retention(BASE + DAY // 10, {})
    sizes = partition_bytes(directory)
    store.close()

    assert (deleted, dropped) == (10_000, 0)
    assert sizes.get("20240501T000000Z.duckdb.wal", 0) == 0


def test_retention_rewrites_mostly_expired_partition(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=DAY // SECOND)
    fill_day(store, 200_000)
    store.close()
    before = sum(partition_bytes(directory).values())
    store = LogStore(directory, partition_seconds=DAY // SECOND)

    deleted, dropped = store.apply_retention(BASE + DAY * 9 // 10, {})
    after = sum(partition_bytes(directory).values())
    kept = sequences_of(store, pb.EntryFilter())
    store.close()
    reopened = LogStore(directory, partition_seconds=DAY // SECOND)
    reopened_kept = sequences_of(reopened, pb.EntryFilter())
    last = reopened.last_sequence()
    reopened.close()

    assert (deleted, dropped) == (180_000, 0)
    assert after < before / 3
    assert kept == list(range(180_001, 200_001))
    assert reopened_kept == kept
    assert last == 200_000


def test_retention_skips_rewrite_of_large_partition(tmp_path, monkeypatch) -> None:
    # The rewrite holds the write lock, so a partition with more rows than
    # the cap keeps its file; only the checkpoint runs.
    monkeypatch.setattr(store_module, "REWRITE_MAX_ROWS", 19_999)
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=DAY // SECOND)
    fill_day(store, 200_000)
    store.close()
    before = sum(partition_bytes(directory).values())
    store = LogStore(directory, partition_seconds=DAY // SECOND)

    deleted, dropped = store.apply_retention(BASE + DAY * 9 // 10, {})
    after = sum(partition_bytes(directory).values())
    kept = sequences_of(store, pb.EntryFilter())
    store.close()

    assert (deleted, dropped) == (180_000, 0)
    assert after > before / 3
    assert kept == list(range(180_001, 200_001))


def test_retention_keeps_partition_of_kept_service(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE, BASE + 1], services=["api", "audit"])])

    deleted, dropped = store.apply_retention(BASE + HOUR, {"audit": BASE})
    kept = sequences_of(store, pb.EntryFilter())
    deleted_all, dropped_all = store.apply_retention(BASE + HOUR, {})
    store.close()

    assert (deleted, dropped) == (1, 0)
    assert kept == [2]
    assert (deleted_all, dropped_all) == (1, 1)
    assert list(directory.glob("*.duckdb")) == []


def test_first_sequence_follows_deletions(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    empty = store.first_sequence()
    # Sequences 1-3 in the first hour, 4-5 two hours later, each in its file.
    store.apply([record(1, [BASE, BASE + 1, BASE + 2])])
    store.apply([record(4, [BASE + 2 * HOUR, BASE + 2 * HOUR + 1])])
    stored = store.first_sequence()
    store.apply_retention(BASE, {"api": BASE + 2})
    in_part = store.first_sequence()
    store.apply_retention(BASE + HOUR, {})
    dropped = store.first_sequence()
    scans = store.partition_scans
    store.delete_after(3)
    truncated = store.first_sequence()
    store.close()

    reopened = LogStore(directory, partition_seconds=3600)
    reopened_empty = reopened.first_sequence()
    reopened.apply([record(4, [BASE + 3 * HOUR])])
    after_write = reopened.first_sequence()
    reopened.close()

    assert empty == 1
    assert stored == 1
    assert in_part == 3
    assert dropped == 4
    assert scans == 0
    assert truncated == 4
    assert reopened_empty == 4
    assert after_write == 4


def test_last_sequence_survives_dropped_partitions(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE, BASE + 1])])
    store.apply_retention(BASE + HOUR, {})
    store.close()

    reopened = LogStore(directory, partition_seconds=3600)
    last = reopened.last_sequence()
    reopened.apply([record(1, [BASE, BASE + 1])])
    entries = query_all(reopened)
    reopened.close()

    assert last == 2
    assert entries == []


# Threads and lifecycle -------------------------------------------------------------


def test_apply_atomic_for_readers(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    size = 40
    calls = 30
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                columns, _ = store.query(
                    pb.EntryFilter(), after=None, descending=False, limit=100_000
                )
                seen.append(len(columns.timestamps))
                by_severity, _, _ = store.count(
                    pb.EntryFilter(), histogram_start=0, histogram_step=0
                )
                seen.append(sum(by_severity.values()))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    for call in range(calls):
        first = call * size + 1
        # Each call spans two partitions, committed one after the other.
        stamps = [BASE + (i % 2) * HOUR + first + i for i in range(size)]
        store.apply([record(first, stamps)])
    done.set()
    for reader in readers:
        reader.join()
    store.close()

    assert errors == []
    assert seen
    assert all(count % size == 0 for count in seen), sorted(set(seen))


def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store")
    store.close()
    store.close()

    with pytest.raises(Unavailable, match="closed"):
        store.query(pb.EntryFilter(), after=None, descending=False, limit=1)
    with pytest.raises(Unavailable):
        store.apply([record(1, [BASE])])


def test_disk_bytes_counts_partition_files(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", partition_seconds=3600)
    empty = store.disk_bytes()
    store.apply([record(1, [BASE + i for i in range(1000)])])

    used = store.disk_bytes()
    store.close()

    assert empty == 0
    assert used > 0


def test_copy_chunks_bounded_by_bytes(store: LogStore) -> None:
    sizes = [100, 100, 5000, 100, 100, 100, 100, 3000]
    store.apply(
        [
            record(
                1,
                [BASE + i for i in range(len(sizes))],
                messages=["m" * size for size in sizes],
            )
        ]
    )

    chunks = list(store.copy_chunks(len(sizes), 1000, 2000))

    copied = [sequence for _, sequences in chunks for sequence in sequences]
    assert copied == list(range(1, len(sizes) + 1))
    for columns, sequences in chunks:
        if len(sequences) > 1:
            assert columns.ByteSize() <= 2000
    assert [len(sequences) for _, sequences in chunks] == [2, 1, 4, 1]
