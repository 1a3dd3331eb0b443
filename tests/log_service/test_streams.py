"""Tests that a `LogStream` is normalised exactly as the same `LogEntry` list.

Each case builds a stream, turns it into the equivalent entries by the rule
in `log_service.streams`, and compares the stored columns and rejections of
both forms. Some cases stay in columns (a `ColumnBlock`); the others take the
entry-by-entry rules, and the tests check which path each one took.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from log_service import model
from log_service import streams as stream_rules
from log_service.model import (
    DEBUG,
    ERROR,
    INFO,
    WARN,
    Limits,
    normalize_batch,
    rows_to_columns,
)
from log_service.streams import (
    ColumnBlock,
    column_length_error,
    expanded_size_error,
    expanded_stream_bytes,
    normalize_write,
    stream_entry_count,
)
from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from splitlog_runtime.errors import InvalidArgument, ResourceExhausted
from tests.log_service.test_ingest_fast_path import NOW_NS, SECOND, SMALL, cutoff

LogEntry = logs_service_pb2.LogEntry
LogStream = logs_service_pb2.LogStream
ROOMY = 1 << 30
DEFAULT = Limits()


def as_entries(stream: LogStream) -> list[LogEntry]:
    """Return the `LogEntry` messages that the stream's entries equal."""
    count = len(stream.messages)
    timestamps = list(stream.timestamps_unix_nano) or [0] * count
    severities = list(stream.severities) or [0] * count
    entries = []
    for message, timestamp, severity in zip(
        stream.messages, timestamps, severities, strict=True
    ):
        entry = LogEntry(
            service=stream.service,
            host=stream.host,
            attributes=stream.attributes,
            message=message,
            severity=severity or stream.severity,
        )
        if timestamp:
            entry.timestamp.CopyFrom(model.timestamp_from_ns(timestamp))
        entries.append(entry)
    return entries


def stored_columns(batch: model.NormalizedBatch) -> node_service_pb2.EntryColumns:
    """Return every valid entry of a batch as columns, in input order."""
    columns = node_service_pb2.EntryColumns()
    start = 0
    for block in batch.blocks:
        rows_to_columns(batch.rows[start : block.row_position], into=columns)
        block.extend(columns)
        start = block.row_position
    rows_to_columns(batch.rows[start:], into=columns)
    return columns


def both_forms(entries, streams, limits=DEFAULT, max_entry_bytes=ROOMY):
    as_streams = normalize_write(
        entries,
        streams,
        now_ns=NOW_NS,
        limits=limits,
        retention_cutoff=cutoff,
        first_index=5,
        max_entry_bytes=max_entry_bytes,
    )
    flat = list(entries) + [e for stream in streams for e in as_entries(stream)]
    as_rows = normalize_batch(
        flat, now_ns=NOW_NS, limits=limits, retention_cutoff=cutoff, first_index=5
    )
    return as_streams, as_rows


def assert_same(as_streams, as_rows):
    assert stored_columns(as_streams) == as_rows.columns
    assert list(as_streams.rejections) == list(as_rows.rejections)
    assert as_streams.accepted_count == as_rows.accepted_count
    assert as_streams.entry_count == as_rows.entry_count


# (stream fields, whether the stream stays in columns)
CASES = {
    "plain": (dict(messages=["a", "b"], severity=INFO), True),
    "host and attributes": (
        dict(
            host="node-1",
            attributes={"b": "2", "a": 'q"\n'},
            messages=["one", "two"],
            severities=[WARN, ERROR],
        ),
        True,
    ),
    "timestamps with zeros": (
        dict(
            messages=["x", "y", "z"],
            timestamps_unix_nano=[NOW_NS - 7, 0, NOW_NS - 3],
            severity=DEBUG,
        ),
        True,
    ),
    "guessed severities": (
        dict(messages=["ERROR disk", "plain", "", "level=warn x"]),
        True,
    ),
    "column zeros take the stream severity": (
        dict(messages=["a", "b"], severities=[0, ERROR], severity=WARN),
        True,
    ),
    "column zeros guessed": (
        dict(messages=["FATAL: gone", "b"], severities=[0, ERROR]),
        True,
    ),
    "unused invalid stream severity": (
        dict(messages=["a"], severities=[INFO], severity=3),
        True,
    ),
    "long message cut": (dict(messages=["short", "x" * 50], severity=INFO), False),
    "long non-ASCII message cut": (dict(messages=["é" * 30], severity=INFO), False),
    "non-ASCII message at the limit": (
        dict(messages=["é" * 20, "x" * 40], severity=INFO),
        True,
    ),
    "too many attributes": (
        dict(attributes={"a": "1", "b": "2", "c": "3"}, messages=["m"]),
        False,
    ),
    "long attribute value": (dict(attributes={"k": "v" * 13}, messages=["m"]), False),
    "empty attribute key": (dict(attributes={"": "v"}, messages=["m", "n"]), False),
    "invalid severity in column": (
        dict(messages=["a", "b", "c"], severities=[INFO, 3, 0]),
        False,
    ),
    "invalid stream severity used": (
        dict(messages=["a", "b"], severities=[INFO, 0], severity=4),
        False,
    ),
    "invalid stream severity alone": (dict(messages=["a"], severity=30), False),
    "too old": (
        dict(
            service="short",
            severity=INFO,
            messages=["new", "old", "unset"],
            timestamps_unix_nano=[NOW_NS - SECOND, NOW_NS - 7200 * SECOND, 0],
        ),
        False,
    ),
    "in the future": (
        dict(
            messages=["a", "b"],
            timestamps_unix_nano=[NOW_NS, NOW_NS + 61 * SECOND],
            severities=[WARN, ERROR],
        ),
        False,
    ),
    "edges of the range": (
        dict(
            service="short",
            severity=DEBUG,
            messages=["oldest", "newest"],
            timestamps_unix_nano=[NOW_NS - 3600 * SECOND, NOW_NS + 60 * SECOND],
        ),
        True,
    ),
    "negative timestamp": (
        dict(service="short", messages=["a"], timestamps_unix_nano=[-5], severity=INFO),
        False,
    ),
    "no service": (dict(service="", messages=["a", "b"]), False),
    "service with tab": (dict(service="a\tb", messages=["a"]), False),
    "bad host": (dict(host="node\n2", messages=["a"]), False),
    "no messages": (dict(messages=[]), False),
}


COLUMNS = ("messages", "timestamps_unix_nano", "severities")


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("copies", [1, 300], ids=["short", "numpy"])
@pytest.mark.parametrize("blocks", ["always", "long"])
def test_stream_stores_what_entries_store(name, copies, blocks, monkeypatch):
    if blocks == "always":
        # Check even one-entry streams as blocks, to compare them.
        monkeypatch.setattr(stream_rules, "ROW_BLOCK_ENTRIES", 1)
    fields, in_columns = CASES[name]
    fields = {"service": "api", **fields}
    for column in COLUMNS:
        if column in fields:
            fields[column] = fields[column] * copies
    stream = LogStream(**fields)
    long_enough = len(stream.messages) >= stream_rules.ROW_BLOCK_ENTRIES

    as_streams, as_rows = both_forms([], [stream], SMALL)

    assert_same(as_streams, as_rows)
    expected_block = in_columns and long_enough
    assert bool(as_streams.blocks) == expected_block


def test_short_block_becomes_rows():
    stream = LogStream(service="api", host="h", messages=["ERROR: a", "b"])

    as_streams, as_rows = both_forms([], [stream])

    assert_same(as_streams, as_rows)
    assert not as_streams.blocks
    assert as_streams.rows == as_rows.rows


def test_mixed_entries_and_streams_keep_index_order(monkeypatch):
    monkeypatch.setattr(stream_rules, "ROW_BLOCK_ENTRIES", 1)
    entries = [
        LogEntry(service="api", message="first"),
        LogEntry(service="api", message="bad", trace_id="xyz"),
    ]
    streams = [
        LogStream(service="api", messages=["s0", "s1"], severity=INFO),
        LogStream(
            service="short",
            messages=["ok", "old"],
            timestamps_unix_nano=[NOW_NS, NOW_NS - 7200 * SECOND],
        ),
        LogStream(service="web", messages=["w0"], host="h"),
    ]

    as_streams, as_rows = both_forms(entries, streams)

    assert_same(as_streams, as_rows)
    assert [r.index for r in as_streams.rejections] == [6, 10]
    assert [r.field for r in as_streams.rejections] == ["trace_id", "timestamp"]
    assert [block.first_index for block in as_streams.blocks] == [7, 11]
    assert [block.row_position for block in as_streams.blocks] == [1, 2]


def test_all_streams_in_rows_without_a_limit():
    streams = [LogStream(service="api", messages=["a", "b"], severity=INFO)]

    as_streams, as_rows = both_forms([], streams, max_entry_bytes=None)

    assert_same(as_streams, as_rows)
    assert not as_streams.blocks


def test_entry_over_the_block_limit_goes_to_rows(monkeypatch):
    monkeypatch.setattr(stream_rules, "ROW_BLOCK_ENTRIES", 1)
    streams = [LogStream(service="api", messages=["x" * 300, "y"], severity=INFO)]

    as_streams, as_rows = both_forms([], streams, max_entry_bytes=400)
    fits, _ = both_forms([], streams, max_entry_bytes=2000)

    assert_same(as_streams, as_rows)
    assert not as_streams.blocks
    assert fits.blocks


def test_block_keeps_the_request_columns(monkeypatch):
    monkeypatch.setattr(stream_rules, "ROW_BLOCK_ENTRIES", 1)
    stream = LogStream(
        service="api",
        messages=["a", "b", "c"],
        timestamps_unix_nano=[NOW_NS - 3, NOW_NS - 2, NOW_NS - 1],
        severities=[INFO, WARN, ERROR],
    )

    (block,) = normalize_write(
        [],
        [stream],
        now_ns=NOW_NS,
        limits=Limits(),
        retention_cutoff=cutoff,
        max_entry_bytes=ROOMY,
    ).blocks

    assert block.messages is stream.messages
    assert block.timestamps is stream.timestamps_unix_nano
    assert block.severities is stream.severities
    assert len(block) == 3


def test_block_slices_keep_indexes():
    block = ColumnBlock(
        "api", "h", "", NOW_NS, [1, 2, 3, 4], [INFO] * 4, ["a", "b", "c", "d"], 10, 0
    )

    tail = block.slice(1, 3)
    columns = node_service_pb2.EntryColumns()
    tail.extend(columns)

    assert tail.first_index == 11
    assert list(columns.messages) == ["b", "c"]
    assert list(columns.timestamps) == [2, 3]
    assert list(columns.services) == ["api", "api"]


def test_column_length_mismatch_names_field_and_lengths():
    streams = [
        LogStream(service="api", messages=["a", "b"], timestamps_unix_nano=[1, 2]),
        LogStream(service="api", messages=["a", "b", "c"], severities=[INFO] * 2),
    ]

    error = column_length_error(streams)

    assert isinstance(error, InvalidArgument)
    assert "streams[1].severities" in str(error.to_status())
    assert "has 2 values for 3 messages" in str(error.to_status())
    assert column_length_error(streams[:1]) is None
    assert stream_entry_count(streams) == 5


@pytest.mark.parametrize(
    "timestamp",
    [1, 2**21, 999_999_999, 10**9, 2**35, 1796455091805973111, 2**63 - 1]
    + [-1, -(10**9), -(2**63)],
)
def test_expanded_stream_bytes_bounds_entries(timestamp):
    stream = LogStream(
        service="svc",
        host="h",
        attributes={"k": "v" * 200},
        severity=logs_service_pb2.SEVERITY_WARN,
        messages=["x", "ü" * 300, ""],
        timestamps_unix_nano=[timestamp] * 3,
        severities=[2**31 - 1, -1, 0],
    )
    as_request = logs_service_pb2.WriteLogEntriesRequest(entries=as_entries(stream))

    bound = expanded_stream_bytes(stream)

    assert as_request.ByteSize() <= bound
    assert bound < 1.3 * as_request.ByteSize()


@given(
    service=st.text(max_size=40),
    attributes=st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=4),
    messages=st.lists(st.text(max_size=30), min_size=1, max_size=12),
    stream_count=st.integers(1, 3),
    limit=st.integers(50, 20_000),
)
@settings(max_examples=300, deadline=None)
def test_expanded_size_error_matches_entries(
    service, attributes, messages, stream_count, limit
):
    stream = LogStream(
        service=service,
        host="h",
        attributes=attributes,
        messages=messages,
        timestamps_unix_nano=[-(2**63)] * len(messages),
        severities=[-1] * len(messages),
    )
    streams = [stream] * stream_count
    request = logs_service_pb2.WriteLogEntriesRequest(streams=streams)
    expanded = logs_service_pb2.WriteLogEntriesRequest(
        entries=[entry for s in streams for entry in as_entries(s)]
    )

    error = expanded_size_error(request.ByteSize(), streams, limit)

    if expanded.ByteSize() > limit:
        assert isinstance(error, ResourceExhausted)
