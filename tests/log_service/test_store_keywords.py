"""Tests of the trigram filters that let keyword queries skip partitions."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from log_service import keyword_index
from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2 as pb
from tests.log_service import node_support

SECOND = 1_000_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
BASE = 1_714_521_600 * SECOND  # 2024-05-01T00:00:00Z


def record(
    first: int, timestamps: Sequence[int], messages: Sequence[str]
) -> pb.LogRecord:
    count = len(timestamps)
    columns = pb.EntryColumns(
        timestamps=timestamps,
        severities=[9] * count,
        services=["api"] * count,
        messages=messages,
    )
    return pb.LogRecord(first_sequence=first, entries=columns)


def keyword_sequences(store: LogStore, keyword: str) -> list[int]:
    _, sequences = store.query(
        pb.EntryFilter(keyword=keyword), after=None, descending=False, limit=100_000
    )
    return sorted(sequences)


def scans_of(store: LogStore, keyword: str) -> int:
    """Return how many partition reads one query for `keyword` makes."""
    before = store.partition_scans
    keyword_sequences(store, keyword)
    return store.partition_scans - before


def three_hours(store: LogStore) -> None:
    """Store 3 hour partitions. Only the second contains `needle`."""
    store.apply([record(1, [BASE, BASE + 1], ["disk full", "retry later"])])
    store.apply([record(3, [BASE + HOUR], ["found the Needle here"])])
    store.apply([record(4, [BASE + 2 * HOUR], ["all quiet"])])


def sidecars(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + keyword_index.SIDECAR_SUFFIX))


@pytest.fixture
def hourly(tmp_path: Path):
    opened = LogStore(tmp_path / "store", partition_seconds=3600)
    yield opened
    opened.close()


def test_keyword_reads_only_its_partition(hourly: LogStore) -> None:
    three_hours(hourly)
    assert keyword_sequences(hourly, "needle") == [3]
    assert scans_of(hourly, "needle") == 1
    assert scans_of(hourly, "absent-17") == 0
    assert keyword_sequences(hourly, "absent-17") == []


def test_count_and_since_skip_partitions(hourly: LogStore) -> None:
    three_hours(hourly)
    before = hourly.partition_scans
    by_severity, _, _ = hourly.count(
        pb.EntryFilter(keyword="NEEDLE"), histogram_start=BASE, histogram_step=HOUR
    )
    assert by_severity == {9: 1}
    assert hourly.partition_scans - before == 1
    before = hourly.partition_scans
    _, sequences, _ = hourly.since(0, pb.EntryFilter(keyword="needle"), limit=10)
    assert sequences == [3]
    assert hourly.partition_scans - before == 1


def test_keyword_ignores_case_and_accents(hourly: LogStore) -> None:
    messages = ["Connection TIMEOUT", "ÉCOLE Normale", "Straße gesperrt"]
    hourly.apply([record(1, [BASE, BASE + HOUR, BASE + 2 * HOUR], messages)])
    assert keyword_sequences(hourly, "timeout") == [1]
    assert keyword_sequences(hourly, "TimeOut") == [1]
    assert keyword_sequences(hourly, "école normale") == [2]
    assert keyword_sequences(hourly, "STRASSE") == []  # no full case folding
    assert keyword_sequences(hourly, "STRAẞE") == [3]
    assert scans_of(hourly, "école normale") == 1


def test_characters_lowered_to_ascii(hourly: LogStore) -> None:
    # DuckDB lowers KELVIN SIGN to "k" and U+0130 to "i".
    messages = ["\u212aelvin scale", "\u0130STANBUL office", "plain text"]
    hourly.apply([record(1, [BASE, BASE + HOUR, BASE + 2 * HOUR], messages)])
    assert keyword_sequences(hourly, "kelvin") == [1]
    assert keyword_sequences(hourly, "istanbul") == [2]
    assert keyword_sequences(hourly, "\u212aelvin") == [1]
    # The partition without those characters is still skipped.
    assert scans_of(hourly, "kelvin") == 2


def test_short_and_special_keywords(hourly: LogStore) -> None:
    messages = ["a%b", "x_y\\z", "ab"]
    hourly.apply([record(1, [BASE, BASE + HOUR, BASE + 2 * HOUR], messages)])
    assert keyword_sequences(hourly, "a") == [1, 3]
    assert keyword_sequences(hourly, "%") == [1]
    assert keyword_sequences(hourly, "_y\\") == [2]
    assert keyword_sequences(hourly, "a%b") == [1]
    assert keyword_sequences(hourly, "") == [1, 2, 3]
    assert scans_of(hourly, "ab") == 3  # too short to rule anything out


def test_keyword_at_batch_edges(hourly: LogStore) -> None:
    # Each batch starts and ends with the keyword at a different offset, so
    # every alignment of the sampled trigram positions is met.
    sequence = 1
    expected = []
    for batch in range(6):
        pad = "." * batch
        messages = [f"{pad}marker7", "filler", f"x{pad}MARKER7"]
        hourly.apply([record(sequence, [BASE] * 3, messages)])
        expected += [sequence, sequence + 2]
        sequence += 3
    hourly.apply([record(sequence, [BASE + HOUR], ["other hour"])])
    assert keyword_sequences(hourly, "marker7") == expected
    # Across two messages: the filter may let the scan run, which finds none.
    assert keyword_sequences(hourly, "marker7filler") == []
    assert scans_of(hourly, "marker7") == 1


def test_batch_over_several_partitions(hourly: LogStore) -> None:
    timestamps = [BASE, BASE + HOUR, BASE + 2 * HOUR]
    hourly.apply([record(1, timestamps, ["first one", "needle two", "third"])])
    assert keyword_sequences(hourly, "needle") == [2]
    assert scans_of(hourly, "needle") == 1


def test_filters_survive_restart(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    three_hours(store)
    store.close()
    assert len(sidecars(directory)) == 3
    reopened = LogStore(directory, partition_seconds=3600)
    try:
        assert keyword_sequences(reopened, "needle") == [3]
        assert scans_of(reopened, "needle") == 1
        assert scans_of(reopened, "absent-1") == 0
    finally:
        reopened.close()


def open_mixed(directory: Path) -> LogStore:
    """Open a store that puts BASE's first two days in day files, then hours."""
    return LogStore(
        directory,
        partition_seconds=3600,
        compact_after_seconds=86400,
        month_file_rows=0,
        clock=lambda: BASE + 3 * DAY,
    )


def test_unchanged_filters_load_without_rebuild(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = open_mixed(directory)
    # Each batch spans every partition, so a partition's highest sequence is
    # below the batch's last one.
    stamps = [BASE, BASE + DAY, BASE + 2 * DAY, BASE + 2 * DAY + HOUR]
    store.apply([record(1, stamps, ["one", "two", "three", "four"])])
    store.apply([record(5, stamps, ["five", "a needle", "seven", "eight"])])
    store.close()
    assert len(sidecars(directory)) == 4

    reopened = open_mixed(directory)
    try:
        assert reopened.filters_rebuilt == 0
        assert keyword_sequences(reopened, "needle") == [6]
        assert scans_of(reopened, "needle") == 1

        reopened.apply([record(9, [BASE + 2 * DAY + 5], ["late zebra"])])
        # A crash: the files as they are now, without the save at close.
        crashed = tmp_path / "crashed"
        shutil.copytree(directory, crashed)
    finally:
        reopened.close()

    after_crash = open_mixed(crashed)
    try:
        assert after_crash.filters_rebuilt == 1
        assert keyword_sequences(after_crash, "zebra") == [9]
        assert scans_of(after_crash, "needle") == 1
    finally:
        after_crash.close()

    # The rebuilt filter was saved when the store opened.
    again = open_mixed(crashed)
    again.close()
    assert again.filters_rebuilt == 0


def test_missing_sidecar_is_rebuilt(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    three_hours(store)
    store.close()
    for path in sidecars(directory):
        path.unlink()
    reopened = LogStore(directory, partition_seconds=3600)
    try:
        assert keyword_sequences(reopened, "needle") == [3]
        assert scans_of(reopened, "needle") == 1
    finally:
        reopened.close()


def test_stale_sidecar_is_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE], ["before"])])
    store.close()
    (saved,) = sidecars(directory)
    old = saved.read_bytes()
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(2, [BASE + 1], ["after the restart"])])
    # An insert deletes the sidecar before it writes rows.
    assert not saved.exists()
    store.close()
    # A sidecar left from before the insert, as after a crash, is stale.
    saved.write_bytes(old)
    reopened = LogStore(directory, partition_seconds=3600)
    try:
        assert keyword_sequences(reopened, "restart") == [2]
    finally:
        reopened.close()


def test_corrupt_sidecar_is_rebuilt(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    three_hours(store)
    store.close()
    for path in sidecars(directory):
        path.write_bytes(path.read_bytes()[:40])
    reopened = LogStore(directory, partition_seconds=3600)
    try:
        assert keyword_sequences(reopened, "needle") == [3]
    finally:
        reopened.close()


def test_delete_after_then_new_rows(hourly: LogStore) -> None:
    hourly.apply([record(1, [BASE, BASE + 1], ["kept row", "truncated zebra"])])
    hourly.delete_after(1)
    assert keyword_sequences(hourly, "zebra") == []
    hourly.apply([record(2, [BASE + 1], ["replaced giraffe"])])
    assert keyword_sequences(hourly, "giraffe") == [2]


def test_delete_after_removes_sidecar(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LogStore(directory, partition_seconds=3600)
    store.apply([record(1, [BASE, BASE + 1], ["kept row", "truncated zebra"])])
    store.close()
    store = LogStore(directory, partition_seconds=3600)
    try:
        assert len(sidecars(directory)) == 1
        store.delete_after(1)
        # Same row count and bounds as before, other text: a sidecar left
        # from before the deletion would hide it after a crash.
        assert sidecars(directory) == []
        store.apply([record(2, [BASE + 1], ["replaced giraffe"])])
        assert keyword_sequences(store, "giraffe") == [2]
    finally:
        store.close()


def test_retention_keeps_filters_sound(hourly: LogStore) -> None:
    three_hours(hourly)
    hourly.apply([record(5, [BASE + HOUR + 5], ["late needle"])])
    deleted, dropped = hourly.apply_retention(BASE + HOUR + 1, {})
    assert (deleted, dropped) == (3, 1)
    assert keyword_sequences(hourly, "needle") == [5]
    assert scans_of(hourly, "absent-3") == 0


def test_copied_entries_are_indexed(tmp_path: Path, hourly: LogStore) -> None:
    three_hours(hourly)
    copy = LogStore(tmp_path / "copy", partition_seconds=3600)
    try:
        for columns, sequences in hourly.copy_chunks(4, 2, 1 << 20):
            copy.insert_copied(columns, sequences)
        copy.mark_applied_through(4)
        assert keyword_sequences(copy, "needle") == [3]
        assert scans_of(copy, "needle") == 1
    finally:
        copy.close()


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_merged_day_has_union_of_filters(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    clock = Clock(BASE + 3 * DAY)
    options = {"partition_seconds": 3600, "compact_after_seconds": 86400}
    store = LogStore(directory, clock=clock, **options)
    clock.now = BASE + HOUR  # the entries go to hour files
    three_hours(store)
    store.apply([record(5, [BASE + DAY], ["next day"])])
    clock.now = BASE + 3 * DAY
    assert store.compact() == 2
    try:
        assert keyword_sequences(store, "needle") == [3]
        assert keyword_sequences(store, "retry") == [2]
        assert scans_of(store, "needle") == 1
        assert scans_of(store, "absent-9") == 0
    finally:
        store.close()
    assert len(sidecars(directory)) == 2
    reopened = LogStore(directory, clock=clock, **options)
    try:
        assert keyword_sequences(reopened, "quiet") == [4]
        assert scans_of(reopened, "quiet") == 1
    finally:
        reopened.close()


def test_packed_filter_gives_same_answers() -> None:
    messages = pa.array(["Disk FULL on node-7", "retry in 5 s"], pa.large_string())
    keywords = ["disk full", "node-7", "retry in", "absent-2", "node-8", "ab"]
    unpacked = keyword_index.TrigramFilter()
    unpacked.add(messages)
    packed = keyword_index.TrigramFilter()
    packed.add(messages)
    packed.pack()
    for keyword in keywords:
        assert packed.may_contain(keyword) == unpacked.may_contain(keyword)
    assert not packed.may_contain("absent-2")
    merged = keyword_index.union([packed, keyword_index.TrigramFilter()])
    assert merged.may_contain("node-7")
    assert not merged.may_contain("absent-2")


def test_filter_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="expected a string column"):
        keyword_index.TrigramFilter().add(pa.array([1, 2]))


# Indexed queries against a full scan -------------------------------------------

# Mostly ASCII, so that keywords often have runs long enough to look up.
_ALPHABET = "abcdefABCDEF -_%\\" + "éÉßẞ\u212a\u0130ıŉ"
_TEXT = st.text(alphabet=_ALPHABET, max_size=16)


def _full_scan(messages: list[str], keyword: str) -> list[int]:
    table = pa.table(
        {
            "seq": pa.array(range(1, len(messages) + 1), pa.int64()),
            "message": pa.array(messages, pa.large_string()),
        }
    )
    connection = duckdb.connect()
    connection.register("t", table)
    rows = connection.execute(
        "SELECT seq FROM t WHERE contains(lower(message), lower(?)) ORDER BY seq",
        [keyword],
    ).fetchall()
    connection.close()
    return [seq for (seq,) in rows]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 3), _TEXT), min_size=1, max_size=6),
        min_size=1,
        max_size=4,
    ),
    keywords=st.lists(_TEXT, max_size=4),
    pick=st.lists(
        st.tuples(st.integers(0, 100), st.integers(0, 12)), min_size=1, max_size=4
    ),
)
def test_indexed_query_equals_full_scan(batches, keywords, pick) -> None:
    messages = [text for batch in batches for _, text in batch]
    # Keywords taken from the messages, with the case swapped, often match.
    for index, length in pick:
        source = messages[index % len(messages)]
        start = index % (len(source) + 1)
        keywords.append(source[start : start + length].swapcase())
    directory = Path(tempfile.mkdtemp(prefix="keywords-"))
    store = LogStore(directory / "store", partition_seconds=3600)
    try:
        sequence = 1
        for batch in batches:
            timestamps = [BASE + hour * HOUR for hour, _ in batch]
            texts = [text for _, text in batch]
            store.apply([record(sequence, timestamps, texts)])
            sequence += len(batch)
        for keyword in keywords:
            assert keyword_sequences(store, keyword) == _full_scan(messages, keyword)
    finally:
        store.close()
        shutil.rmtree(directory)


# Through a real node over gRPC -----------------------------------------------


def test_node_keyword_query_skips_partitions(base_config, tmp_path: Path) -> None:
    handle = node_support.start(base_config, tmp_path, "n0")
    try:
        node_support.configure(handle, epoch=1, leader=handle)
        entries = node_support.columns(3)
        now = entries.timestamps[0]
        entries.timestamps[:] = [now - 2 * HOUR, now - HOUR, now]
        entries.messages[:] = ["early entry", "Payment DECLINED", "latest entry"]
        handle.stub.AppendEntries(
            pb.AppendEntriesRequest(
                shard=node_support.SHARD, leader_epoch=1, batch_id="b1", entries=entries
            ),
            timeout=5,
        )
        store = handle.node._store
        before = store.partition_scans
        response = handle.stub.QueryEntries(
            pb.QueryEntriesRequest(
                shard=node_support.SHARD,
                filter=pb.EntryFilter(keyword="declined"),
                limit=10,
            ),
            timeout=5,
        )
        assert list(response.entries.messages) == ["Payment DECLINED"]
        assert store.partition_scans - before == 1
        before = store.partition_scans
        counted = handle.stub.CountEntries(
            pb.CountEntriesRequest(
                shard=node_support.SHARD, filter=pb.EntryFilter(keyword="absent-5")
            ),
            timeout=5,
        )
        assert list(counted.severity_counts) == []
        assert store.partition_scans - before == 0
        # Without a keyword, every hour is read.
        before = store.partition_scans
        handle.stub.CountEntries(
            pb.CountEntriesRequest(shard=node_support.SHARD), timeout=5
        )
        assert store.partition_scans - before == 3
    finally:
        handle.stop()
