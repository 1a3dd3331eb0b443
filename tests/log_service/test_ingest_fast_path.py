"""Tests that the faster ingest paths store exactly what the general ones do.

`normalize_batch` stores common entries without calling `BatchBuilder.add`,
and the write-ahead log hands out each record's serialized form so that
replication sends it without serializing again. These tests compare each
shortcut with the general path on the same input.
"""

from __future__ import annotations

import json

import pytest

from log_service import model
from log_service.model import INFO, WARN, Limits, normalize_batch, rows_to_columns
from log_service.node import parse_append_request, parse_replicated_message
from log_service.wal import (
    PendingRecord,
    WriteAheadLog,
    embedded_messages,
    encode_record,
    encode_varint,
    split_field,
)
from splitlog.logs.v1 import (
    logs_service_pb2,
    node_service_pb2,
    replication_service_pb2,
)

LogEntry = logs_service_pb2.LogEntry
NOW_NS = 1_796_403_900_590_180_708
SECOND = 10**9
SMALL = Limits(
    max_message_bytes=40,
    max_attributes=2,
    max_attribute_key_bytes=8,
    max_attribute_value_bytes=12,
    max_future_ns=60 * SECOND,
)


def cutoff(service: str) -> int:
    return NOW_NS - 3600 * SECOND if service == "short" else -(2**63)


def through_add(entries, limits: Limits) -> model.NormalizedBatch:
    """Normalise every entry with `BatchBuilder.add`, the general path."""
    builder = model.BatchBuilder(now_ns=NOW_NS, limits=limits, retention_cutoff=cutoff)
    for index, entry in enumerate(entries):
        builder.add(
            index,
            service=entry.service,
            host=entry.host,
            message=entry.message,
            severity=entry.severity,
            severity_text=entry.severity_text,
            timestamp=entry.timestamp.seconds * SECOND + entry.timestamp.nanos,
            observed_timestamp=(
                entry.observed_timestamp.seconds * SECOND
                + entry.observed_timestamp.nanos
            ),
            attributes=entry.attributes,
            trace_id=entry.trace_id,
            span_id=entry.span_id,
        )
    return builder.build()


def entry(**fields) -> LogEntry:
    fields.setdefault("service", "api")
    fields.setdefault("severity", INFO)
    for name in ("timestamp", "observed_timestamp"):
        if name in fields:
            fields[name] = model.timestamp_from_ns(fields[name])
    return LogEntry(**fields)


# Each entry comes once or twice in a batch: a first copy meets a service
# that the shortcut checks itself, and a second one a service and a host
# that the batch has already checked.
CASES = [
    entry(message="plain"),
    entry(message="with host", host="node-1"),
    entry(message="bad host", host="node\n2"),
    entry(message="attrs", attributes={"b": "2", "a": "1"}),
    entry(message="quotes", attributes={'k"': 'v\\"\n', "é": "ß😀"}),
    entry(message="control", attributes={"t": "\x00\x1f\x7f\u2028"}),
    entry(message="too many", attributes={"a": "1", "b": "2", "c": "3"}),
    entry(message="long key", attributes={"k" * 9: "v"}),
    entry(message="long value", attributes={"k": "v" * 13}),
    entry(message="x" * 41),
    entry(message="é" * 11),
    entry(message="no severity ERROR", severity=0),
    entry(message="text", severity=0, severity_text="weird"),
    entry(message="matching text", severity=WARN, severity_text="Warning"),
    entry(message="other text", severity=WARN, severity_text="notice"),
    entry(message="custom text", severity=INFO, severity_text="AUDIT"),
    entry(message="bad severity", severity=3),
    entry(message="trace", trace_id="4BF92F3577B34DA6A3CE929D0E0E4736"),
    entry(message="span", span_id="00F067AA0BA902B7"),
    entry(message="bad trace", trace_id="xyz"),
    entry(message="old", service="short", timestamp=NOW_NS - 7200 * SECOND),
    entry(message="just new enough", service="short", timestamp=NOW_NS - 3600 * SECOND),
    entry(message="future", timestamp=NOW_NS + 61 * SECOND),
    entry(message="edge of future", timestamp=NOW_NS + 60 * SECOND),
    entry(message="observed only", observed_timestamp=NOW_NS - 5),
    entry(message="both", timestamp=NOW_NS - 9, observed_timestamp=NOW_NS - 5),
    entry(message="no service", service=""),
    entry(message="service with tab", service="a\tb"),
]


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("limits", [Limits(), SMALL], ids=["default", "small"])
def test_shortcut_stores_what_add_stores(limits, copies):
    entries = [case for case in CASES for _ in range(copies)]

    fast = normalize_batch(
        entries, now_ns=NOW_NS, limits=limits, retention_cutoff=cutoff
    )
    general = through_add(entries, limits)

    assert fast.rows == general.rows
    assert fast.indexes == general.indexes
    assert list(fast.rejections) == list(general.rejections)
    assert fast.columns == general.columns


def test_rejections_keep_input_order():
    entries = [
        entry(message="first"),
        entry(message="bad", trace_id="no"),
        entry(message="second"),
        entry(message="future", timestamp=NOW_NS + 3600 * SECOND),
    ]

    batch = normalize_batch(
        entries, now_ns=NOW_NS, limits=Limits(), retention_cutoff=cutoff
    )

    assert batch.indexes == [0, 2]
    assert [r.index for r in batch.rejections] == [1, 3]
    assert list(batch.columns.messages) == ["first", "second"]


def test_short_attributes_json_matches_store():
    attributes = {"z": "\\", "a": '"', "m": "\n\t\x01", "é": "😀", "b": ""}

    text = model.short_attributes_json(attributes, 10, 64, 64)

    assert text == model._encode_json(dict(sorted(attributes.items())))
    assert json.loads(text) == attributes


def test_short_attributes_json_leaves_empty_key_to_add():
    # `BatchBuilder.add` rejects the entry, so the shortcut must not store it.
    assert model.short_attributes_json({"": "v", "a": "b"}, 10, 64, 64) is None


def test_rows_to_columns_in_place():
    batch = normalize_batch(
        [entry(message="one"), entry(message="two", severity=WARN)],
        now_ns=NOW_NS,
        limits=Limits(),
        retention_cutoff=cutoff,
    )
    request = node_service_pb2.AppendEntriesRequest(shard="s", batch_id="b")

    rows_to_columns(batch.rows, into=request.entries)

    assert request.entries == batch.columns
    assert list(request.entries.severities) == [INFO, WARN]
    assert rows_to_columns([]) == node_service_pb2.EntryColumns()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**21, 2**40])
def test_encode_varint_matches_protobuf(value):
    message = node_service_pb2.LogRecord(first_sequence=value)
    # Field 1, varint: the key byte 0x08 and then the value.
    expected = message.SerializeToString()[1:] if value else b"\x00"

    assert encode_varint(value) == expected


def test_encoded_record_equals_the_built_record():
    batch = normalize_batch(
        [entry(message=f"m{i}", attributes={"i": str(i)}) for i in range(300)],
        now_ns=NOW_NS,
        limits=Limits(),
        retention_cutoff=cutoff,
    )
    expected = node_service_pb2.LogRecord(
        first_sequence=7,
        epoch=3,
        batch_id="req/shard-0",
        receive_time=NOW_NS,
        entries=batch.columns,
    )

    record, payload = encode_record(7, 3, "req/shard-0", NOW_NS, batch.columns)

    assert record == expected
    assert node_service_pb2.LogRecord.FromString(payload) == expected


def test_payloads_match_cache_and_disk(tmp_path):
    columns = rows_to_columns(
        normalize_batch(
            [entry(message=f"m{i}") for i in range(5)],
            now_ns=NOW_NS,
            limits=Limits(),
            retention_cutoff=cutoff,
        ).rows
    )
    wal = WriteAheadLog(tmp_path, fsync=False)
    for first in (1, 6, 11):
        wal.append(*encode_record(first, 1, f"b{first}", NOW_NS, columns))
    cached = wal.read_payloads_from(1, 1 << 20)
    wal.close()
    reopened = WriteAheadLog(tmp_path, fsync=False)
    from_disk = reopened.read_payloads_from(6, 1 << 20)
    reopened.close()

    assert [record.first_sequence for record, _ in cached] == [1, 6, 11]
    assert cached[1:] == from_disk
    for record, payload in cached + from_disk:
        assert node_service_pb2.LogRecord.FromString(payload) == record


def test_embedded_messages_return_records():
    records = [
        node_service_pb2.LogRecord(first_sequence=1, epoch=2, batch_id="a"),
        node_service_pb2.LogRecord(
            first_sequence=300,
            epoch=2,
            batch_id="b" * 200,
            entries=rows_to_columns(
                normalize_batch(
                    [entry(message="m" * 500)],
                    now_ns=NOW_NS,
                    limits=Limits(),
                    retention_cutoff=cutoff,
                ).rows
            ),
        ),
    ]
    request = replication_service_pb2.ReplicateEntriesRequest(
        shard="s0",
        leader="n1",
        leader_epoch=2**40,
        records=records,
        commit_sequence=299,
        truncate_after=0,
    )
    data = request.SerializeToString()

    message = parse_replicated_message(data)

    assert message.request == request
    assert message.payloads == [record.SerializeToString() for record in records]
    assert embedded_messages(data, 1) == [b"s0"]
    assert embedded_messages(b"", 4) == []


def test_pending_record_keeps_the_sent_columns():
    columns = rows_to_columns(
        normalize_batch(
            [entry(message=f"m{i}", host="h") for i in range(50)],
            now_ns=NOW_NS,
            limits=Limits(),
            retention_cutoff=cutoff,
        ).rows
    )
    expected = node_service_pb2.LogRecord(
        first_sequence=2**33, epoch=4, batch_id="r/s", receive_time=NOW_NS
    )
    expected.entries.CopyFrom(columns)
    pending = PendingRecord.from_columns(columns.SerializeToString())

    assert pending.record.entries == columns
    record, payload = pending.complete(2**33, 4, "r/s", NOW_NS)

    assert record == expected
    assert node_service_pb2.LogRecord.FromString(payload) == expected


def test_append_request_parsed_without_its_entries():
    columns = rows_to_columns(
        normalize_batch(
            [entry(message="m" * 300), entry(message="é", severity=WARN)],
            now_ns=NOW_NS,
            limits=Limits(),
            retention_cutoff=cutoff,
        ).rows
    )
    request = node_service_pb2.AppendEntriesRequest(
        shard="shard-1", leader_epoch=2**35, batch_id="req/shard-1", entries=columns
    )

    received = parse_append_request(request.SerializeToString())

    assert received.entries == columns.SerializeToString()
    assert received.request == node_service_pb2.AppendEntriesRequest(
        shard="shard-1", leader_epoch=2**35, batch_id="req/shard-1"
    )


def test_split_field_joins_repeated_occurrences():
    # Protobuf merges a message field that occurs twice, so the two halves of
    # the columns read back as one batch.
    first = node_service_pb2.AppendEntriesRequest(
        shard="s", entries=node_service_pb2.EntryColumns(messages=["a"])
    )
    second = node_service_pb2.AppendEntriesRequest(
        batch_id="b", entries=node_service_pb2.EntryColumns(messages=["b"])
    )
    data = first.SerializeToString() + second.SerializeToString()

    entries, rest = split_field(data, 4)

    assert list(node_service_pb2.EntryColumns.FromString(entries).messages) == [
        "a",
        "b",
    ]
    assert node_service_pb2.AppendEntriesRequest.FromString(rest) == (
        node_service_pb2.AppendEntriesRequest(shard="s", batch_id="b")
    )
    assert split_field(b"", 4) == (b"", b"")
    with pytest.raises(ValueError, match="wire type 3"):
        split_field(b"\x0b", 1)
