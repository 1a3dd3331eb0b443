"""Tests of encode_entries: its bytes parse as the entries columns_to_entries builds."""

from __future__ import annotations

import json

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from log_service.entry_wire import (
    ENCODED_FIELDS,
    VECTOR_MIN_ENTRIES,
    check_encoded_fields,
    encode_entries,
)
from log_service.model import NANOS_PER_SECOND, columns_to_entries
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import node_service_pb2

# Entries whose fields take every encoding case: defaults left out, lengths
# of one to three varint bytes, non-ASCII text, negative and zero times.
_VARIED = [
    {
        "timestamp": 1_714_521_600 * NANOS_PER_SECOND + 123,
        "observed": 1_714_521_601 * NANOS_PER_SECOND,
        "severity": 9,
        "service": "api",
        "host": "web-1",
        "message": "hello",
        "attributes": {"thread": "worker-3", "user.id": "42"},
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "truncated": True,
        "dropped": 3,
    },
    {
        "timestamp": 0,
        "observed": 0,
        "severity": 0,
        "service": "",
        "host": "",
        "message": "",
        "attributes": {},
        "trace_id": "",
        "span_id": "",
        "truncated": False,
        "dropped": 0,
    },
    {
        "timestamp": -NANOS_PER_SECOND - 1,
        "observed": 5,
        "severity": 21,
        "service": "billing",
        "host": "h" * 130,
        "message": "m" * 20_000,
        "attributes": {"": "", "é": 'ß " \\ \n', "k" * 200: "v" * 300},
        "trace_id": "",
        "span_id": "",
        "truncated": False,
        "dropped": 2_147_483_647,
    },
    {
        "timestamp": 2**62,
        "observed": 1,
        "severity": 17,
        "service": "日本語",
        "host": "ホスト",
        "message": "Ünïcödé 🎉 message",
        "attributes": {"emoji": "🎉"},
        "trace_id": "",
        "span_id": "",
        "truncated": True,
        "dropped": 0,
    },
]


def columns_of(entries: list[dict], *, sparse: bool) -> node_service_pb2.EntryColumns:
    """Build columns of `entries`; with `sparse`, leave default columns empty."""
    columns = node_service_pb2.EntryColumns(
        timestamps=[e["timestamp"] for e in entries],
        severities=[e["severity"] for e in entries],
        services=[e["service"] for e in entries],
        hosts=[e["host"] for e in entries],
        messages=[e["message"] for e in entries],
        attributes=[
            json.dumps(e["attributes"]) if e["attributes"] else "" for e in entries
        ],
    )
    if sparse:
        columns.observed_timestamp = 1_714_521_700 * NANOS_PER_SECOND
        return columns
    columns.observed_timestamps.extend(e["observed"] for e in entries)
    columns.trace_ids.extend(e["trace_id"] for e in entries)
    columns.span_ids.extend(e["span_id"] for e in entries)
    columns.truncated.extend(e["truncated"] for e in entries)
    columns.dropped_attributes_counts.extend(e["dropped"] for e in entries)
    return columns


def expected(columns: node_service_pb2.EntryColumns) -> list[pb.LogEntry]:
    return columns_to_entries(columns)


def parsed(data: bytes) -> list[pb.LogEntry]:
    return list(pb.TailLogEntriesResponse.FromString(data).entries)


@pytest.mark.parametrize("count", [len(_VARIED), VECTOR_MIN_ENTRIES + 3])
@pytest.mark.parametrize("sparse", [False, True])
def test_encoded_entries_parse_as_built(count, sparse):
    entries = [_VARIED[i % len(_VARIED)] for i in range(count)]
    columns = columns_of(entries, sparse=sparse)

    encoded = encode_entries(columns)

    assert len(encoded) == count
    assert parsed(encoded.chunk(0, count)) == expected(columns)


@pytest.mark.parametrize("count", [len(_VARIED), VECTOR_MIN_ENTRIES + 3])
def test_encoded_chunks_hold_their_entries(count):
    entries = [_VARIED[i % len(_VARIED)] for i in range(count)]
    columns = columns_of(entries, sparse=False)
    built = expected(columns)

    encoded = encode_entries(columns)

    for start, stop in [(0, 1), (1, 3), (count - 2, count)]:
        assert parsed(encoded.chunk(start, stop)) == built[start:stop]


def test_encoded_entries_keep_timestamp_fields_at_zero():
    columns = columns_of([_VARIED[1]] * (VECTOR_MIN_ENTRIES + 1), sparse=False)

    entry = parsed(encode_entries(columns).chunk(0, 1))[0]

    assert entry.HasField("timestamp")
    assert entry.HasField("observed_timestamp")
    assert entry.timestamp.seconds == 0


def test_encoded_entries_merge_with_response_fields():
    columns = columns_of(_VARIED * 40, sparse=False)
    closing = pb.TailLogEntriesResponse(resume_token="token", skipped_count=7)

    encoded = encode_entries(columns)
    response = pb.TailLogEntriesResponse.FromString(
        encoded.chunk(0, len(encoded)) + closing.SerializeToString()
    )

    assert list(response.entries) == expected(columns)
    assert response.resume_token == "token"
    assert response.skipped_count == 7


def test_no_entries_encode_to_nothing():
    encoded = encode_entries(node_service_pb2.EntryColumns())

    assert len(encoded) == 0
    assert encoded.chunk(0, 0) == b""


def _message_descriptor(**fields: tuple[int, int]):
    """Build the descriptor of a message `LogEntry` with fields name=(number,
    type), in a pool of its own."""
    file = descriptor_pb2.FileDescriptorProto(
        name="entry_wire_layout.proto", package="layout", syntax="proto3"
    )
    message = file.message_type.add(name="LogEntry")
    for name, (number, field_type) in fields.items():
        message.field.add(
            name=name,
            number=number,
            type=field_type,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool.FindMessageTypeByName("layout.LogEntry")


def test_layout_of_generated_code_passes():
    check_encoded_fields(ENCODED_FIELDS)

    entry = ENCODED_FIELDS[pb.LogEntry.DESCRIPTOR]
    assert sorted(entry) == sorted(
        name
        for name in pb.LogEntry.DESCRIPTOR.fields_by_name
        if name != "severity_text"
    )


@pytest.mark.parametrize(
    ("number", "field_type", "problem"),
    [
        (16, FieldDescriptor.TYPE_STRING, "has number 16, above 15"),
        (6, FieldDescriptor.TYPE_BYTES, f"has type {FieldDescriptor.TYPE_BYTES}"),
    ],
)
def test_layout_with_changed_field_raises(number, field_type, problem):
    descriptor = _message_descriptor(message=(number, field_type))

    with pytest.raises(RuntimeError) as caught:
        check_encoded_fields(
            {descriptor: {"message": (FieldDescriptor.TYPE_STRING, False)}}
        )

    assert f"layout.LogEntry.message {problem}" in str(caught.value)
    assert "Update the encoder and ENCODED_FIELDS" in str(caught.value)


def test_layout_with_missing_field_raises():
    descriptor = _message_descriptor(message=(6, FieldDescriptor.TYPE_STRING))

    with pytest.raises(RuntimeError) as caught:
        check_encoded_fields(
            {descriptor: {"host": (FieldDescriptor.TYPE_STRING, False)}}
        )

    assert "layout.LogEntry.host is missing" in str(caught.value)
