"""Encode stored columns as `LogEntry` messages in protobuf wire format.

`columns_to_entries` (log_service/model.py) builds one `LogEntry` object per
entry. With its serialization, that took 8 to 35 us per entry of
`bench/log_entries.py` on 2 shared cores (load average 15 to 20), against 1 to
5 us for `encode_entries`. A tail that catches up sends hundreds of thousands
of entries, so `encode_entries` writes
their serialized form directly: each field becomes an Arrow binary column
(tag, length and value), built with NumPy for all entries at once, and Arrow
joins the columns entry by entry. Only attributes need Python, once per
distinct attributes text. Batches of fewer than `VECTOR_MIN_ENTRIES` entries,
such as those of a live tail, go through `columns_to_entries`, because the
vectorized path has a fixed cost of about 0.3 to 1 ms per batch.

The bytes are a run of `LogEntry` fields numbered 1, as in
`TailLogEntriesResponse.entries`. Protobuf parsers merge concatenated
messages, so a run followed by a serialized `TailLogEntriesResponse` with the
other fields parses as one response. A parser reads the same `LogEntry` as
`columns_to_entries` builds: `timestamp` and `observed_timestamp` are always
present, other fields only when they differ from their default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from log_service.model import NANOS_PER_SECOND, columns_to_entries
from log_service.wal import encode_varint
from splitlog.logs.v1 import logs_service_pb2, node_service_pb2

# Measured with bench/log_entries.py entries on 2 shared cores: 1 entry took
# about 10 us through `columns_to_entries` against 800 us vectorized, and 256
# entries took about the same either way.
VECTOR_MIN_ENTRIES = 128

_WIRE_VARINT = 0
_WIRE_BYTES = 2
# A varint carries 7 bits per byte, so 10 bytes fit any 64-bit value.
_MAX_VARINT_BYTES = 10

# Every field that the vectorized encoder writes, with the type and whether
# it is repeated, as the encoder expects them. A tag is written as one byte,
# which fits field numbers 1 to 15 only. The type decides between a varint
# and a length-delimited field (`attributes` is a map, so repeated).
_SINGLE = False
_REPEATED = True
ENCODED_FIELDS: dict[Descriptor, dict[str, tuple[int, bool]]] = {
    logs_service_pb2.LogEntry.DESCRIPTOR: {
        "timestamp": (FieldDescriptor.TYPE_MESSAGE, _SINGLE),
        "observed_timestamp": (FieldDescriptor.TYPE_MESSAGE, _SINGLE),
        "severity": (FieldDescriptor.TYPE_ENUM, _SINGLE),
        "service": (FieldDescriptor.TYPE_STRING, _SINGLE),
        "host": (FieldDescriptor.TYPE_STRING, _SINGLE),
        "message": (FieldDescriptor.TYPE_STRING, _SINGLE),
        "attributes": (FieldDescriptor.TYPE_MESSAGE, _REPEATED),
        "trace_id": (FieldDescriptor.TYPE_STRING, _SINGLE),
        "span_id": (FieldDescriptor.TYPE_STRING, _SINGLE),
        "truncated": (FieldDescriptor.TYPE_BOOL, _SINGLE),
        "dropped_attributes_count": (FieldDescriptor.TYPE_INT32, _SINGLE),
    },
    timestamp_pb2.Timestamp.DESCRIPTOR: {
        "seconds": (FieldDescriptor.TYPE_INT64, _SINGLE),
        "nanos": (FieldDescriptor.TYPE_INT32, _SINGLE),
    },
    logs_service_pb2.TailLogEntriesResponse.DESCRIPTOR: {
        "entries": (FieldDescriptor.TYPE_MESSAGE, _REPEATED),
    },
}
_MAX_ONE_BYTE_FIELD = 15


def check_encoded_fields(
    layout: Mapping[Descriptor, Mapping[str, tuple[int, bool]]],
) -> None:
    """Check each field of `layout` against its message's descriptor.

    Raises:
      RuntimeError: a field is missing, is numbered above 15, or has another
        type or label. The encoder would write bytes that parse as other
        fields, so the module must be updated with the .proto change.
    """
    problems = []
    for descriptor, expected in layout.items():
        for name, (field_type, repeated) in expected.items():
            field = descriptor.fields_by_name.get(name)
            where = f"{descriptor.full_name}.{name}"
            if field is None:
                problems.append(f"{where} is missing")
                continue
            if field.number > _MAX_ONE_BYTE_FIELD:
                problems.append(
                    f"{where} has number {field.number}, above "
                    f"{_MAX_ONE_BYTE_FIELD}, so its tag takes more than one byte"
                )
            if field.type != field_type:
                problems.append(f"{where} has type {field.type}, not {field_type}")
            if field.is_repeated != repeated:
                label = "repeated" if repeated else "singular"
                problems.append(f"{where} is not {label}")
    if problems:
        raise RuntimeError(
            "log_service/entry_wire.py cannot encode LogEntry as the .proto "
            f"defines it: {'; '.join(problems)}. Update the encoder and "
            "ENCODED_FIELDS for the new field layout"
        )


check_encoded_fields(ENCODED_FIELDS)

_ENTRY_FIELDS = logs_service_pb2.LogEntry.DESCRIPTOR.fields_by_name
_TIMESTAMP_FIELDS = logs_service_pb2.LogEntry.DESCRIPTOR.fields_by_name[
    "timestamp"
].message_type.fields_by_name
_NO_SEPARATOR = pa.scalar(b"", pa.large_binary())
_ENTRIES_FIELD = logs_service_pb2.TailLogEntriesResponse.DESCRIPTOR.fields_by_name[
    "entries"
].number


def _tag(number: int, wire_type: int) -> int:
    return number << 3 | wire_type


@dataclass(frozen=True)
class EncodedEntries:
    """Serialized `LogEntry` fields of a batch, and where each entry starts.

    `data[offsets[i]:offsets[j]]` contains entries i to j-1 as fields numbered
    1, ready to concatenate with other fields of a response.
    """

    data: memoryview
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def chunk(self, start: int, stop: int) -> bytes:
        """Return the bytes of entries start..stop-1."""
        return bytes(self.data[self.offsets[start] : self.offsets[stop]])


def _varint_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each value's varint bytes, one row per value, and their count.

    The matrix is as wide as the longest varint. Negative values are encoded
    as their 64-bit two's complement, as protobuf encodes negative int32 and
    int64 values.
    """
    unsigned = values.astype(np.int64).view(np.uint64)
    sizes = np.ones(len(unsigned), np.int64)
    for index in range(1, _MAX_VARINT_BYTES):
        longer = unsigned >= np.uint64(1 << (7 * index))
        if not longer.any():
            break
        sizes += longer
    width = int(sizes.max(initial=1))
    matrix = np.empty((len(unsigned), width), np.uint8)
    for index in range(width):
        low = ((unsigned >> np.uint64(7 * index)) & np.uint64(0x7F)).astype(np.uint8)
        matrix[:, index] = low | ((sizes > index + 1) * np.uint8(0x80))
    return matrix, sizes


def _pack(parts: list[tuple[np.ndarray, np.ndarray]]) -> pa.Array:
    """Join byte matrices row by row into one binary array.

    Each part is a matrix with one row per entry and the count of the leading
    bytes of each row to keep.
    """
    matrix = np.concatenate([part for part, _ in parts], axis=1)
    keep = np.concatenate(
        [np.arange(part.shape[1]) < sizes[:, None] for part, sizes in parts], axis=1
    )
    lengths = sum(sizes for _, sizes in parts)
    offsets = np.zeros(len(matrix) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.large_binary(),
        len(matrix),
        [None, pa.py_buffer(offsets), pa.py_buffer(matrix[keep])],
    )


def _tag_part(tag: int, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.full((len(present), 1), tag, np.uint8), present.astype(np.int64)


def _varint_part(
    values: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    matrix, sizes = _varint_matrix(values)
    return matrix, np.where(present, sizes, 0)


def _scalar_parts(
    number: int, values: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the parts of an integer field: tag and value, unless 0."""
    present = values != 0
    return [
        _tag_part(_tag(number, _WIRE_VARINT), present),
        _varint_part(values, present),
    ]


def _timestamp_parts(number: int, nanos: np.ndarray) -> list:
    """Return the parts of a `google.protobuf.Timestamp` field, always present."""
    seconds, fraction = np.divmod(nanos, NANOS_PER_SECOND)
    seconds_parts = _scalar_parts(_TIMESTAMP_FIELDS["seconds"].number, seconds)
    nanos_parts = _scalar_parts(_TIMESTAMP_FIELDS["nanos"].number, fraction)
    body = seconds_parts + nanos_parts
    length = sum(sizes for _, sizes in body)
    always = np.ones(len(nanos), bool)
    return [
        _tag_part(_tag(number, _WIRE_BYTES), always),
        _varint_part(length, always),
        *body,
    ]


def _string_field(number: int, values: pa.Array) -> list[pa.Array]:
    """Return the header and value columns of a string field, left out when ''."""
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False)
    present = lengths > 0
    header = _pack(
        [
            _tag_part(_tag(number, _WIRE_BYTES), present),
            _varint_part(lengths, present),
        ]
    )
    return [header, values]


def _length_prefixed(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + encode_varint(len(payload)) + payload


def _attributes_bytes(attributes_json: str) -> bytes:
    """Return the `attributes` map fields of one entry's stored JSON text."""
    if not attributes_json:
        return b""
    entry_tag = _tag(_ENTRY_FIELDS["attributes"].number, _WIRE_BYTES)
    key_tag = _tag(1, _WIRE_BYTES)
    value_tag = _tag(2, _WIRE_BYTES)
    fields = []
    for key, value in json.loads(attributes_json).items():
        pair = _length_prefixed(key_tag, key.encode()) + _length_prefixed(
            value_tag, value.encode()
        )
        fields.append(_length_prefixed(entry_tag, pair))
    return b"".join(fields)


def _attributes_field(values: pa.Array) -> pa.Array:
    """Encode each distinct attributes text once and spread the results."""
    encoded = values.dictionary_encode()
    distinct = [_attributes_bytes(text) for text in encoded.dictionary.to_pylist()]
    return pa.array(distinct, pa.large_binary()).take(encoded.indices)


def _strings(column, count: int) -> pa.Array:
    """Return a repeated string column as Arrow, '' for each entry when empty."""
    if not column:
        return pa.array([""] * count, pa.large_string()).cast(pa.large_binary())
    return pa.array(column, pa.large_string()).cast(pa.large_binary())


def _numbers(column, count: int, default: int = 0) -> np.ndarray:
    if not column:
        return np.full(count, default, np.int64)
    return np.array(column, np.int64)


def encode_entries(columns: node_service_pb2.EntryColumns) -> EncodedEntries:
    """Serialize the entries of `columns` as `TailLogEntriesResponse.entries`."""
    count = len(columns.timestamps)
    if count < VECTOR_MIN_ENTRIES:
        return _encode_each(columns)

    # Fields in number order: timestamps and severity, the strings and
    # attributes, then `truncated` and the dropped attributes count.
    parts = [_leading_numbers(columns, count)]
    for name, column in (
        ("service", columns.services),
        ("host", columns.hosts),
        ("message", columns.messages),
    ):
        parts.extend(_string_field(_ENTRY_FIELDS[name].number, _strings(column, count)))
    parts.append(_attributes_field(_strings(columns.attributes, count)))
    for name, column in (
        ("trace_id", columns.trace_ids),
        ("span_id", columns.span_ids),
    ):
        parts.extend(_string_field(_ENTRY_FIELDS[name].number, _strings(column, count)))
    parts.append(_trailing_numbers(columns, count))
    body = pc.binary_join_element_wise(*parts, _NO_SEPARATOR)

    always = np.ones(count, bool)
    body_lengths = pc.binary_length(body).to_numpy(zero_copy_only=False)
    prefix = _pack(
        [
            _tag_part(_tag(_ENTRIES_FIELD, _WIRE_BYTES), always),
            _varint_part(body_lengths, always),
        ]
    )
    entries = pc.binary_join_element_wise(prefix, body, _NO_SEPARATOR)
    _, offsets_buffer, data_buffer = entries.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, count + 1, entries.offset * 8)
    return EncodedEntries(memoryview(data_buffer), offsets)


def _leading_numbers(columns: node_service_pb2.EntryColumns, count: int) -> pa.Array:
    observed = _numbers(columns.observed_timestamps, count, columns.observed_timestamp)
    return _pack(
        _timestamp_parts(
            _ENTRY_FIELDS["timestamp"].number, np.array(columns.timestamps, np.int64)
        )
        + _timestamp_parts(_ENTRY_FIELDS["observed_timestamp"].number, observed)
        + _scalar_parts(
            _ENTRY_FIELDS["severity"].number, _numbers(columns.severities, count)
        )
    )


def _trailing_numbers(columns: node_service_pb2.EntryColumns, count: int) -> pa.Array:
    return _pack(
        _scalar_parts(
            _ENTRY_FIELDS["truncated"].number, _numbers(columns.truncated, count)
        )
        + _scalar_parts(
            _ENTRY_FIELDS["dropped_attributes_count"].number,
            _numbers(columns.dropped_attributes_counts, count),
        )
    )


def _encode_each(columns: node_service_pb2.EntryColumns) -> EncodedEntries:
    """Serialize the entries one `LogEntry` object at a time."""
    tag = bytes([_tag(_ENTRIES_FIELD, _WIRE_BYTES)])
    fields = []
    offsets = [0]
    for entry in columns_to_entries(columns):
        body = entry.SerializeToString()
        fields.append(tag + encode_varint(len(body)) + body)
        offsets.append(offsets[-1] + len(fields[-1]))
    return EncodedEntries(memoryview(b"".join(fields)), np.array(offsets, np.int64))
