"""Rules for the column form of written entries, `LogStream`.

A stream contains entries that share `service`, `host` and `attributes`, with
one column each for messages, timestamps and severities. The router checks
the shared fields once and each column as a whole (numpy minimum and maximum
of the timestamps, the longest message, the set of severities). A stream
of at least `ROW_BLOCK_ENTRIES` entries that passes every check becomes a
`ColumnBlock`, whose columns extend a node's `EntryColumns` without a
Python step per entry. Any other stream is taken apart into entries, and
each gets the row, or the rejection, that `BatchBuilder.add` gives a
`LogEntry` with the same values, so both forms store and reject exactly the
same entries.

Entry i of a stream is equivalent to a `LogEntry` with the stream's service,
host and attributes and `message = messages[i]`. Its `timestamp` is
`timestamps_unix_nano[i]`, unset when 0 or when the column is empty. Its
`severity` is `severities[i]`, or the stream's `severity` when that value is
unset or the column is empty. It has no `observed_timestamp`, trace or span
id.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from log_service.model import (
    INFO,
    SPARSE_FIELDS,
    VALID_SEVERITIES,
    BatchBuilder,
    Limits,
    NormalizedBatch,
    add_log_entries,
    guess_severity,
    host_is_valid,
    service_is_valid,
    short_attributes_json,
    stream_columns_error,
    utf8_length,
)
from log_service.wal import encode_varint
from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from splitlog_runtime.errors import InvalidArgument, ResourceExhausted
from splitlog_runtime.limits import expanded_too_large

# Severities a stream may carry: the known values and 0 (unset), as a set
# and as a table indexed by value.
_ALLOWED_SEVERITIES = frozenset(VALID_SEVERITIES | {0})
_ALLOWED_TABLE = np.zeros(max(_ALLOWED_SEVERITIES) + 1, dtype=bool)
_ALLOWED_TABLE[list(_ALLOWED_SEVERITIES)] = True
# Columns of at least this many values are checked with numpy. Below it, a
# numpy call costs more than the built-in min, max and set over the values.
NUMPY_ENTRIES = 256
# A stream of fewer entries becomes rows: checking it as a block and
# extending the eleven columns costs more than building its few rows.
ROW_BLOCK_ENTRIES = 16
# Bytes an entry of a block takes in a node's EntryColumns besides its
# strings: five packed numbers of up to 10 bytes, the tag and length of
# six strings, and a share of the columns' own tags and lengths.
ENTRY_OVERHEAD_BYTES = 128


def stream_entry_count(streams: Sequence[logs_service_pb2.LogStream]) -> int:
    """Return the number of entries in `streams`: one per message."""
    return sum(len(stream.messages) for stream in streams)


def column_length_error(
    streams: Sequence[logs_service_pb2.LogStream],
) -> InvalidArgument | None:
    """Return the error for the first stream whose columns do not fit, or None.

    `messages` must not be empty, and `timestamps_unix_nano` and `severities`
    are each empty or as long as `messages`.
    """
    for number, stream in enumerate(streams):
        columns = [
            (name, len(getattr(stream, name)))
            for name in ("timestamps_unix_nano", "severities")
        ]
        error = stream_columns_error(number, len(stream.messages), columns)
        if error is not None:
            return error
    return None


# Bytes that a stream entry may take as a `LogEntry` beyond the shared
# fields and its own bytes in the stream. A Timestamp (tag, length, seconds
# and nanos with their tags) takes at most 9 bytes more than the packed
# varint of its nanoseconds: 14 against 9 for a time after 1970, 19 against
# 10 for one before. A severity from the column adds its tag.
_EXPANDED_TIMESTAMP_BYTES = 9
_EXPANDED_SEVERITY_TAG_BYTES = 1


def expanded_stream_bytes(stream: logs_service_pb2.LogStream) -> int:
    """Return an upper bound on the bytes the stream's entries take as `LogEntry`s.

    The bound is the number of entries times the bytes of one entry with
    only the shared fields (service, host, attributes and default severity),
    a timestamp, a severity tag and the entry's tag and length, plus the
    stream's own bytes. Those contain each message with its tag and length
    and at least one byte per timestamp and severity value. It takes no
    Python step per entry.
    """
    count = len(stream.messages)
    stream_bytes = stream.ByteSize()
    shared = logs_service_pb2.LogEntry(
        service=stream.service,
        host=stream.host,
        attributes=stream.attributes,
        severity=stream.severity,
    ).ByteSize()
    per_entry = shared
    if stream.timestamps_unix_nano:
        per_entry += _EXPANDED_TIMESTAMP_BYTES
    if stream.severities:
        per_entry += _EXPANDED_SEVERITY_TAG_BYTES
    # No entry is larger than all of the stream's bytes plus its shared
    # fields, so this bounds the varint of each entry's length.
    entry_length_bytes = len(encode_varint(per_entry + stream_bytes))
    return count * (per_entry + 1 + entry_length_bytes) + stream_bytes


def expanded_size_error(
    request_bytes: int,
    streams: Sequence[logs_service_pb2.LogStream],
    max_message_bytes: int,
) -> ResourceExhausted | None:
    """Return the error for a request too large with its streams expanded, or None.

    The server copies a stream's shared fields into each of its entries, so
    a small request can make a large batch. A request with the same entries
    as `LogEntry` messages must fit in `max_message_bytes`, and so must the
    request whose streams count as `expanded_stream_bytes`. `request_bytes`
    is the serialized size of the request.
    """
    # A quick pass first, for the small batches that are most requests. The
    # fields a stream shares with its entries have one-byte tags in both
    # messages, so one entry's copy of them takes at most the stream's bytes,
    # and all streams together take at most `request_bytes`. Beside its own
    # values, which the request already holds, an entry adds at most 21
    # bytes: a timestamp's framing, a severity tag, and its own tag and
    # length. So the request as entries takes at most
    # `request_bytes + entries * (request_bytes + 21)`.
    entries = sum(len(stream.messages) for stream in streams)
    if request_bytes + entries * (request_bytes + 21) <= max_message_bytes:
        return None
    total = request_bytes
    largest_number = 0
    largest_bytes = 0
    for number, stream in enumerate(streams):
        expanded = expanded_stream_bytes(stream)
        total += expanded - stream.ByteSize()
        if expanded > largest_bytes:
            largest_number, largest_bytes = number, expanded
    if total <= max_message_bytes:
        return None
    field = f"streams[{largest_number}]"
    return expanded_too_large(
        f"the request is {request_bytes} bytes, but its entries with each "
        f"stream's service, host and attributes copied into every entry are up "
        f"to {total} bytes, over max_message_bytes ({max_message_bytes}); the "
        f"largest is {field}, up to {largest_bytes} bytes as entries. Send fewer "
        "entries per stream, fewer or shorter attributes, or split the batch "
        "into several requests",
        field,
        f"expands to up to {largest_bytes} bytes of entries",
        request_bytes=request_bytes,
        expanded_bytes=total,
        max_message_bytes=max_message_bytes,
    )


@dataclass(eq=False)
class ColumnBlock:
    """Valid entries of one stream, ready to extend a node's `EntryColumns`.

    `timestamps`, `severities` and `messages` have one value per entry and
    may be the request's own repeated fields. `row_position` is the number
    of the batch's rows that come before the block in input order.
    """

    service: str
    host: str
    attributes: str
    observed_timestamp: int
    timestamps: Sequence[int]
    severities: Sequence[int]
    messages: Sequence[str]
    first_index: int
    row_position: int

    def __len__(self) -> int:
        return len(self.messages)

    def slice(self, start: int, stop: int) -> ColumnBlock:
        """Return the block of entries `start` to `stop` (exclusive)."""
        return ColumnBlock(
            self.service,
            self.host,
            self.attributes,
            self.observed_timestamp,
            self.timestamps[start:stop],
            self.severities[start:stop],
            self.messages[start:stop],
            self.first_index + start,
            self.row_position,
        )

    def extend(
        self,
        columns: node_service_pb2.EntryColumns,
        filled: Container[str] = SPARSE_FIELDS,
    ) -> None:
        """Append the block's entries to `columns`.

        Of the columns in `model.SPARSE_FIELDS`, only those in `filled` get
        values. A block has no trace id, span id, cut or dropped attribute,
        and one observed time, so `model.fill_columns` passes only the
        columns that another segment of the batch needs.
        """
        count = len(self.messages)
        columns.timestamps.extend(self.timestamps)
        if "observed_timestamps" in filled:
            columns.observed_timestamps.extend([self.observed_timestamp] * count)
        columns.severities.extend(self.severities)
        columns.services.extend([self.service] * count)
        columns.hosts.extend([self.host] * count)
        columns.messages.extend(self.messages)
        columns.attributes.extend([self.attributes] * count)
        if "trace_ids" in filled:
            columns.trace_ids.extend([""] * count)
        if "span_ids" in filled:
            columns.span_ids.extend([""] * count)
        if "truncated" in filled:
            columns.truncated.extend([False] * count)
        if "dropped_attributes_counts" in filled:
            columns.dropped_attributes_counts.extend([0] * count)


def normalize_write(
    entries: Iterable[logs_service_pb2.LogEntry],
    streams: Sequence[logs_service_pb2.LogStream],
    *,
    now_ns: int,
    limits: Limits,
    retention_cutoff: Callable[[str], int],
    first_index: int = 0,
    max_entry_bytes: int | None = None,
) -> NormalizedBatch:
    """Validate and normalise the entries and streams of one write.

    The entries are numbered from `first_index`, then the streams' entries
    follow, stream by stream. The rules are those of `model.normalize_batch`,
    and `add_streams` explains `max_entry_bytes`.
    """
    builder = BatchBuilder(
        now_ns=now_ns, limits=limits, retention_cutoff=retention_cutoff
    )
    add_log_entries(builder, entries, first_index)
    if streams:
        # Every entry so far is either a row or a rejection.
        index = first_index + len(builder.rows) + len(builder.rejections)
        add_streams(builder, streams, index, max_entry_bytes)
    return builder.build()


def add_streams(
    builder: BatchBuilder,
    streams: Sequence[logs_service_pb2.LogStream],
    first_index: int,
    max_entry_bytes: int | None,
) -> None:
    """Normalise the entries of `streams`, numbered from `first_index`.

    A stream of at least `ROW_BLOCK_ENTRIES` entries that passes every
    check at once becomes a block of `builder.blocks`. The others become
    rows, entry by entry (`_add_entries`).
    `max_entry_bytes` bounds the bytes of one entry of a block in a request
    to a node, so that a block never has to reject an entry as too large.
    None sends every stream entry by entry. The column lengths must already
    be checked (`column_length_error`).
    """
    index = first_index
    for stream in streams:
        count = len(stream.messages)
        block = None
        if max_entry_bytes is not None and count >= ROW_BLOCK_ENTRIES:
            block = _block_of(builder, stream, index, max_entry_bytes)
        if block is None:
            _add_entries(builder, stream, index)
        else:
            builder.blocks.append(block)
        index += count


def _block_of(
    builder: BatchBuilder,
    stream: logs_service_pb2.LogStream,
    first_index: int,
    max_entry_bytes: int,
) -> ColumnBlock | None:
    """Return the stream as a block when no entry rule changes or rejects an entry.

    Returns None when some entry needs the rules one by one: an invalid
    service or host, attributes that a limit cuts or drops, a message cut to
    the size limit, an invalid severity, or a timestamp out of range.
    """
    count = len(stream.messages)
    if not count:
        return None
    limits = builder.limits
    service = stream.service
    host = stream.host
    attributes = _shared_row_fields(builder, service, host, stream.attributes)
    if attributes is None:
        return None
    cutoff = builder.cutoffs[service]
    longest = _longest_message_bytes(stream.messages, limits.max_message_bytes)
    if longest > limits.max_message_bytes:
        return None
    shared = utf8_length(service) + utf8_length(host) + utf8_length(attributes)
    if ENTRY_OVERHEAD_BYTES + shared + longest > max_entry_bytes:
        return None
    timestamps = _stored_timestamps(stream, builder.now_ns, cutoff, builder.latest_ns)
    if timestamps is None:
        return None
    severities = _stored_severities(stream)
    if severities is None:
        return None
    return ColumnBlock(
        service,
        host,
        attributes,
        builder.now_ns,
        timestamps,
        severities,
        stream.messages,
        first_index,
        len(builder.rows),
    )


def _longest_message_bytes(messages: Sequence[str], max_bytes: int) -> int:
    """Return the UTF-8 length of the longest message, or a bound within max_bytes.

    A character takes at most 4 bytes, so when the longest message in
    characters is short enough, its length times 4 is returned unencoded.
    """
    longest = max(map(len, messages))
    if longest * 4 <= max_bytes:
        return longest * 4
    lengths = pc.binary_length(pa.array(messages, type=pa.string()))
    return pc.max(lengths).as_py()


def _stored_timestamps(
    stream: logs_service_pb2.LogStream, now_ns: int, cutoff: int, latest_ns: int
) -> Sequence[int] | None:
    """Return the stored timestamps, or None when one is out of range.

    An unset timestamp (0, or an empty column) takes `now_ns`.
    """
    column = stream.timestamps_unix_nano
    count = len(column)
    if not count:
        if cutoff <= now_ns <= latest_ns:
            return [now_ns] * len(stream.messages)
        return None
    if count < NUMPY_ENTRIES:
        if 0 in column:
            column = [timestamp or now_ns for timestamp in column]
        lowest, highest = min(column), max(column)
    else:
        values = np.asarray(column, dtype=np.int64)
        unset = values == 0
        if unset.any():
            values = np.where(unset, now_ns, values)
            column = values.tolist()
        lowest, highest = int(values.min()), int(values.max())
    if cutoff <= lowest and highest <= latest_ns:
        return column
    return None


def _stored_severities(stream: logs_service_pb2.LogStream) -> Sequence[int] | None:
    """Return the stored severities, or None when one is not a known value.

    An unset value takes the stream's `severity`, and when that is unset too,
    the severity that `guess_severity` finds in the message, or INFO.
    """
    column = stream.severities
    default = stream.severity
    messages = stream.messages
    if not column:
        if default in VALID_SEVERITIES:
            return [default] * len(messages)
        if default:
            return None
        return [(m and guess_severity(m)) or INFO for m in messages]
    if len(column) < NUMPY_ENTRIES:
        if not _ALLOWED_SEVERITIES.issuperset(column):
            return None
        unset = [position for position, value in enumerate(column) if not value]
    else:
        values = np.asarray(column, dtype=np.int64)
        if values.min() < 0 or values.max() >= len(_ALLOWED_TABLE):
            return None
        if not _ALLOWED_TABLE[values].all():
            return None
        unset = np.flatnonzero(values == 0).tolist()
    if not unset:
        return column
    if default and default not in VALID_SEVERITIES:
        return None
    severities = list(column)
    for position in unset:
        message = messages[position]
        severities[position] = default or (message and guess_severity(message)) or INFO
    return severities


def _add_entries(
    builder: BatchBuilder, stream: logs_service_pb2.LogStream, first_index: int
) -> None:
    """Normalise each entry of a stream as the equivalent `LogEntry`, into rows.

    The shared fields are checked once. When they pass, an entry with a set
    severity, a short message and a timestamp in range gets its row here,
    the row that `BatchBuilder.add` would give it, as in
    `model.add_log_entries`. Every other entry goes through `add`.
    """
    count = len(stream.messages)
    service = stream.service
    host = stream.host
    attributes = stream.attributes
    default = stream.severity
    timestamps = stream.timestamps_unix_nano or [0] * count
    severities = stream.severities or [default] * count
    add = builder.add
    attributes_json = _shared_row_fields(builder, service, host, attributes)
    # With shared fields that fail, every entry goes through `add`.
    rows_here = attributes_json is not None
    now_ns = builder.now_ns
    latest_ns = builder.latest_ns
    cutoff = builder.cutoffs[service] if rows_here else 0
    max_message_characters = builder.limits.max_message_bytes // 4
    append_row = builder.rows.append
    append_index = builder.indexes.append
    for index, (message, timestamp, severity) in enumerate(
        zip(stream.messages, timestamps, severities, strict=True), first_index
    ):
        severity = severity or default
        stored_timestamp = timestamp or now_ns
        if (
            rows_here
            and severity in VALID_SEVERITIES
            and len(message) <= max_message_characters
            and cutoff <= stored_timestamp <= latest_ns
        ):
            append_row(
                (
                    stored_timestamp,
                    now_ns,
                    severity,
                    service,
                    host,
                    message,
                    attributes_json,
                    "",
                    "",
                    False,
                    0,
                )
            )
            append_index(index)
            continue
        add(
            index,
            service=service,
            host=host,
            message=message,
            severity=severity,
            severity_text="",
            timestamp=timestamp,
            observed_timestamp=0,
            attributes=attributes,
            trace_id="",
            span_id="",
        )


def _shared_row_fields(
    builder: BatchBuilder, service: str, host: str, attributes: Mapping[str, str]
) -> str | None:
    """Check a stream's shared fields; return its stored attributes, or None.

    None means that some rule may change or reject the stream's entries
    because of these fields, so each entry needs `BatchBuilder.add`. A valid
    service gets its retention cutoff in `builder.cutoffs`, as `add` does.
    """
    limits = builder.limits
    if service not in builder.cutoffs:
        if not service_is_valid(service, limits):
            return None
        builder.cutoffs[service] = builder.retention_cutoff(service)
    if host and host not in builder.valid_hosts:
        if not host_is_valid(host, limits):
            return None
        builder.valid_hosts.add(host)
    if not attributes:
        return ""
    return short_attributes_json(
        attributes,
        limits.max_attributes,
        limits.max_attribute_key_bytes // 4,
        limits.max_attribute_value_bytes // 4,
    )
