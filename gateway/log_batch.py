"""Per-entry rejection of lone surrogates in a REST `POST /logs/batch`.

A JSON string may contain a `\\ud800`-`\\udfff` escape without its other half,
which no protobuf string can carry, so such an entry cannot reach log_service.
Rather than fail the whole batch, the gateway takes these entries out, sends
the others, and merges its rejections into the response by their index in
the client's batch, as log_service reports the entries that it rejects.

In `streams`, a value with one in a per-entry column (`messages`,
`severities`, `timestampsUnixNano`) takes that entry out of its stream with
its values in the other columns, and rejects it as its entry, with the field
`message`, `severity` or `timestamp`. One in a field that the stream's
entries share, such as `service` or an attribute, takes out the whole stream
and rejects each of its entries.

An entry is taken out in two steps, so that every error names the client's
own positions. The JSON body keeps the entry with empty values in its place
(`{}`, an empty message, severity and timestamp 0) while the gateway checks
and converts it, and `SplitBatch.strip` then removes it from the request.

Before all of that, `check_request_shape` runs the checks that log_service
runs first on a write (the length of the request id, the batch size, then
the column lengths of each stream) on the decoded body, so that a body of
millions of entries or empty streams fails before the slow conversion to
protobuf. A column length mismatch fails the whole request before any value
of the stream is checked, lone surrogates included.

When a stream fails the whole request anyway, because it has an unknown
field or a column that is no list, the whole body is sent on with its lone
surrogates replaced by U+FFFD. The client then gets the error that the same
body without them gets, such as UNKNOWN_FIELD, and no entry is stored.

NOTE: log_service never receives the entries rejected here, so the ingest
counters of GetLogStats do not count them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway import transcode
from gateway.json_check import JsonNumber, decode_json
from log_service.model import Limits, stream_columns_error, write_size_error
from log_service.request_ids import request_id_error
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2

WRITE_LOG_ENTRIES = "/splitlog.logs.v1.LogsService/WriteLogEntries"
# Maximum rejections listed in a write response, as in log_service.
MAX_LISTED_REJECTIONS = 1000


@dataclass
class SplitBatch:
    """A batch without its entries that contain lone surrogates.

    Attributes:
      body: the JSON body to send on, with empty values in place of the
        rejected entries.
      kept: the client's index of each entry that `strip` leaves, in order.
      rejections: the rejected entries, by the client's index.
      removed_entries: positions in `entries` of the rejected entries.
      removed_positions: for each stream by its position in `streams`, the
        positions in its columns of its rejected entries.
      removed_streams: positions in `streams` of the streams rejected whole.
    """

    body: bytes
    kept: list[int]
    rejections: list[logs_pb2.LogEntryRejection]
    removed_entries: list[int] = field(default_factory=list)
    removed_positions: dict[int, set[int]] = field(default_factory=dict)
    removed_streams: list[int] = field(default_factory=list)

    def strip(self, request: logs_pb2.WriteLogEntriesRequest) -> None:
        """Take the entries rejected here out of the request parsed from `body`.

        NOTE: after a stream is taken out whole, the REQUEST_TOO_LARGE error
        of log_service for expanded streams names a later stream by its
        position in the request sent on, one lower per stream taken out.
        """
        for position in reversed(self.removed_entries):
            del request.entries[position]
        for number, positions in self.removed_positions.items():
            stream = request.streams[number]
            columns = (stream.messages, stream.timestamps_unix_nano, stream.severities)
            for column in columns:
                if column:
                    kept = [v for p, v in enumerate(column) if p not in positions]
                    del column[:]
                    column.extend(kept)
        for number in reversed(self.removed_streams):
            del request.streams[number]

    def empty_response(self) -> logs_pb2.WriteLogEntriesResponse:
        """Return the response when every entry was rejected here."""
        return self.merge(logs_pb2.WriteLogEntriesResponse())

    def merge(
        self, response: logs_pb2.WriteLogEntriesResponse
    ) -> logs_pb2.WriteLogEntriesResponse:
        """Renumber log_service's rejections and add this batch's, by index."""
        listed = [
            logs_pb2.LogEntryRejection(
                index=self.kept[rejection.index],
                reason=rejection.reason,
                field=rejection.field,
                description=rejection.description,
            )
            for rejection in response.rejected_entries
        ]
        own = self.rejections
        if len(listed) < response.rejected_count:
            # log_service left some out. Listing this batch's rejections
            # past its last listed one would leave gaps that look complete.
            last = listed[-1].index if listed else -1
            own = [rejection for rejection in own if rejection.index < last]
        return logs_pb2.WriteLogEntriesResponse(
            accepted_count=response.accepted_count,
            rejected_count=response.rejected_count + len(self.rejections),
            rejected_entries=_describe_first(listed, own),
            duplicate_count=response.duplicate_count,
        )


# The fields of a WriteLogEntriesRequest in JSON, by JSON and by proto name.
_REQUEST_KEYS = frozenset(("entries", "streams", "requestId", "request_id"))


def check_request_shape(tree: Any, limits: Limits) -> None:
    """Raise the error that log_service gives first for a write of this shape.

    These are the checks that log_service runs before it reads any entry:
    the length of the request id, the batch size, then the column lengths
    of each stream in order. They take one step per stream on the decoded
    JSON body, while its conversion to protobuf takes seconds per million
    entries. Values of the wrong JSON type are left to the usual checks.
    The request id is checked here too because a batch whose entries the
    gateway rejects all never reaches log_service.

    Raises:
      InvalidArgument: the request id is too long, the batch is too large,
        or a stream has no messages or a column whose length differs from
        that of `messages`.
    """
    if not isinstance(tree, dict) or not _REQUEST_KEYS.issuperset(tree):
        # An unknown field is the first error of the usual checks.
        return
    # JSON names a field in lowerCamelCase or by its proto name.
    for key in ("requestId", "request_id"):
        error = request_id_error(tree.get(key))
        if error is not None:
            raise error
    entries = tree.get("entries") or []
    streams = tree.get("streams") or []
    if not isinstance(entries, list) or not isinstance(streams, list):
        return
    count = len(entries) + sum(map(_message_count, streams))
    error = write_size_error(count, len(streams), bool(entries), limits)
    if error is not None:
        raise error
    for number, stream in enumerate(streams):
        if not isinstance(stream, dict):
            continue
        messages = _column(stream, "messages")
        if not isinstance(messages, list):
            continue
        columns = [
            (name, len(column))
            for name in _ENTRY_FIELDS
            if name != "messages" and isinstance(column := _column(stream, name), list)
        ]
        error = stream_columns_error(number, len(messages), columns)
        if error is not None:
            raise error


def split_batch(
    body: bytes, check_body: Callable[[Any], None] | None = None
) -> SplitBatch | None:
    """Take the entries with lone surrogates out of a WriteLogEntries body.

    `check_body` is called with the decoded body first, as `build_request`
    calls it, and may raise.

    Returns:
      None when no entry has one, or when the body is not a JSON object with
      an `entries` or `streams` array. The body then goes through the usual
      checks.
    """
    if transcode.SURROGATE_ESCAPE.search(body) is None:
        return None
    try:
        tree = decode_json(
            body.decode("utf-8-sig"),
            descriptor=logs_pb2.WriteLogEntriesRequest.DESCRIPTOR,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if check_body is not None:
        check_body(tree)
    try:
        return _split_tree(tree)
    except RecursionError:
        # The usual checks reject a body nested this deeply.
        return None


def _split_tree(tree: Any) -> SplitBatch | None:
    """Split a decoded WriteLogEntries body, as `split_batch` describes."""
    if not isinstance(tree, dict) or not ("entries" in tree or "streams" in tree):
        return None
    entries = tree.get("entries", [])
    streams = tree.get("streams", [])
    if not isinstance(entries, list) or not isinstance(streams, list):
        return None
    split = SplitBatch(b"", [], [])
    kept_entries = []
    for index, entry in enumerate(entries):
        found = transcode.find_lone_surrogate(
            entry, descriptor=logs_pb2.LogEntry.DESCRIPTOR
        )
        if found is None:
            split.kept.append(index)
            kept_entries.append(entry)
        else:
            split.rejections.append(_rejection(index, found.field, found))
            split.removed_entries.append(index)
            kept_entries.append({})
    if any(_fails_whole_request(stream) for stream in streams):
        # No entry is stored, so none is taken out, and the streams keep
        # the positions that the error names.
        total = len(entries) + sum(map(_message_count, streams))
        replaced = _json_ready(tree, replace_surrogates=True)
        return SplitBatch(_encode(replaced), list(range(total)), [])
    kept_streams = []
    index = len(entries)
    for number, stream in enumerate(streams):
        count = _message_count(stream)
        kept_streams.append(_split_stream(stream, number, index, count, split))
        index += count
    if not split.rejections:
        return None
    if "entries" in tree:
        tree["entries"] = kept_entries
    if "streams" in tree:
        tree["streams"] = kept_streams
    split.body = _encode(_json_ready(tree, replace_surrogates=False))
    return split


def _encode(tree: Any) -> bytes:
    return json.dumps(tree, ensure_ascii=False, separators=(",", ":")).encode()


# JSON names of a stream's per-entry columns, as json_format reads them (the
# proto name and the lowerCamelCase one), and the `LogEntry` field of each.
_ENTRY_FIELDS = {
    "messages": "message",
    "timestamps_unix_nano": "timestamp",
    "timestampsUnixNano": "timestamp",
    "severities": "severity",
}
# Every JSON name of a `LogStream` field.
_STREAM_KEYS = frozenset(
    name
    for field in logs_pb2.LogStream.DESCRIPTOR.fields
    for name in (field.name, field.json_name)
)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _column(stream: dict, name: str) -> object:
    """Return a column of a JSON stream, with JSON null read as empty."""
    column = stream.get(name)
    return [] if column is None else column


def _message_count(stream: object) -> int:
    """Return the number of messages of a JSON stream, or 0 if they are no list."""
    if not isinstance(stream, dict):
        return 0
    messages = _column(stream, "messages")
    return len(messages) if isinstance(messages, list) else 0


def _fails_whole_request(stream: object) -> bool:
    """Return whether log_service or the gateway rejects the request for a stream.

    That is the case for a stream that is not an object, an unknown field,
    or a column that is not a list or neither empty nor as long as
    `messages`.
    """
    if not isinstance(stream, dict) or not _STREAM_KEYS.issuperset(stream):
        return True
    messages = _column(stream, "messages")
    if not isinstance(messages, list):
        return True
    for name in _ENTRY_FIELDS:
        column = _column(stream, name)
        if not isinstance(column, list) or len(column) not in (0, len(messages)):
            return True
    return False


def _json_ready(value: Any, replace_surrogates: bool) -> Any:
    """Return a copy of a decoded JSON value that `json.dumps` writes faithfully.

    `json.dumps` would write a `JsonNumber` as its float, which rounds an
    integer above 2**53. An integral one becomes its exact int. A fraction
    that the float would turn into an integer becomes its text as a string,
    so a check of an integer field still rejects it. With
    `replace_surrogates`, each lone surrogate becomes U+FFFD.
    """
    if isinstance(value, str):
        if replace_surrogates:
            return _LONE_SURROGATE.sub("\ufffd", value)
        return value
    if isinstance(value, JsonNumber):
        exact = Decimal(value.text)
        if exact.adjusted() < 40 and exact == exact.to_integral_value():
            return int(exact)
        return value.text if value.is_integer() else value
    if isinstance(value, list):
        return [_json_ready(item, replace_surrogates) for item in value]
    if isinstance(value, dict):
        return {
            _json_ready(key, replace_surrogates): _json_ready(item, replace_surrogates)
            for key, item in value.items()
        }
    return value


def _split_stream(
    stream: dict, number: int, first_index: int, count: int, split: SplitBatch
) -> dict:
    """Return stream `number` with empty values for its entries with lone surrogates.

    Their rejections, their positions and the kept entries' indexes go into
    `split`. When a shared field has one, every entry is rejected and the
    stream becomes one of `count` empty messages. The columns must be empty
    or `count` long.
    """
    shared = {key: value for key, value in stream.items() if key not in _ENTRY_FIELDS}
    found = transcode.find_lone_surrogate(
        shared, descriptor=logs_pb2.LogStream.DESCRIPTOR
    )
    if found is not None:
        split.rejections.extend(
            _rejection(index, found.field, found)
            for index in range(first_index, first_index + count)
        )
        split.removed_streams.append(number)
        return {"messages": [""] * count}
    bad: dict[int, tuple[str, transcode.LoneSurrogate]] = {}
    for name, entry_field in _ENTRY_FIELDS.items():
        for position, value in enumerate(_column(stream, name)):
            if position in bad:
                continue
            found = transcode.find_lone_surrogate(value)
            if found is not None:
                bad[position] = (entry_field, found)
    for position in range(count):
        index = first_index + position
        if position in bad:
            entry_field, found = bad[position]
            split.rejections.append(_rejection(index, entry_field, found))
        else:
            split.kept.append(index)
    if not bad:
        return stream
    split.removed_positions[number] = set(bad)
    kept = dict(stream)
    for name, entry_field in _ENTRY_FIELDS.items():
        column = stream.get(name)
        if column:
            empty = "" if entry_field == "message" else 0
            kept[name] = [empty if p in bad else v for p, v in enumerate(column)]
    return kept


def _rejection(
    index: int, field: str, found: transcode.LoneSurrogate
) -> logs_pb2.LogEntryRejection:
    return logs_pb2.LogEntryRejection(
        index=index,
        reason=logs_pb2.REJECTION_REASON_INVALID_FIELD,
        field=field,
        description=found.description(),
    )


def _describe_first(
    listed: list[logs_pb2.LogEntryRejection],
    own: list[logs_pb2.LogEntryRejection],
) -> list[logs_pb2.LogEntryRejection]:
    """Merge log_service's listed rejections and this batch's, by index.

    log_service describes only the first rejection of each reason and field,
    which keeps a response with many rejections small, and so does the
    merge. But this batch's rejections have a cause of their own, a lone
    surrogate, so a rejection whose first rejection of the same reason and
    field comes from the other source keeps its own description. Each
    rejection's description thus applies to every later one without one.
    """
    from_service: dict[tuple[int, str], str] = {}
    for rejection in listed:
        if rejection.description:
            key = (rejection.reason, rejection.field)
            from_service.setdefault(key, rejection.description)
    merged = sorted(
        [(rejection, False) for rejection in listed]
        + [(rejection, True) for rejection in own],
        key=lambda pair: pair[0].index,
    )
    # Whether the first listed rejection of each reason and field is own.
    first_is_own: dict[tuple[int, str], bool] = {}
    copies = []
    for rejection, is_own in merged[:MAX_LISTED_REJECTIONS]:
        key = (rejection.reason, rejection.field)
        if key not in first_is_own:
            first_is_own[key] = is_own
            described = True
        else:
            described = first_is_own[key] != is_own
        description = ""
        if described:
            description = rejection.description
            if not is_own:
                description = description or from_service.get(key, "")
        copies.append(
            logs_pb2.LogEntryRejection(
                index=rejection.index,
                reason=rejection.reason,
                field=rejection.field,
                description=description,
            )
        )
    return copies
