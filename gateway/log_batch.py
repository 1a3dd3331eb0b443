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

When a stream fails the whole request anyway, because its columns differ in
length or it has an unknown field, the whole body is sent on with its lone
surrogates replaced by U+FFFD. The client then gets the error that the same
body without them gets, such as COLUMN_LENGTH_MISMATCH or UNKNOWN_FIELD, and
no entry is stored.

NOTE: log_service never receives the entries rejected here, so the ingest
counters of GetLogStats do not count them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway import transcode
from gateway.json_check import JsonNumber, parse_json_int
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2

WRITE_LOG_ENTRIES = "/splitlog.logs.v1.LogsService/WriteLogEntries"
# Maximum rejections listed in a write response, as in log_service.
MAX_LISTED_REJECTIONS = 1000


@dataclass
class SplitBatch:
    """A batch without its entries that contain lone surrogates.

    Attributes:
      body: the JSON body to send on, without the rejected entries.
      kept: the client's index of each entry in `body`, in order.
      rejections: the rejected entries, by the client's index.
    """

    body: bytes
    kept: list[int]
    rejections: list[logs_pb2.LogEntryRejection]

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
        merged = sorted(listed + own, key=lambda rejection: rejection.index)
        return logs_pb2.WriteLogEntriesResponse(
            accepted_count=response.accepted_count,
            rejected_count=response.rejected_count + len(self.rejections),
            rejected_entries=_describe_first(merged[:MAX_LISTED_REJECTIONS]),
        )


def split_batch(body: bytes) -> SplitBatch | None:
    """Take the entries with lone surrogates out of a WriteLogEntries body.

    Returns:
      None when no entry has one, or when the body is not a JSON object with
      an `entries` or `streams` array. The body then goes through the usual
      checks.
    """
    if transcode.SURROGATE_ESCAPE.search(body) is None:
        return None
    try:
        tree = json.loads(
            body.decode("utf-8-sig"), parse_float=JsonNumber, parse_int=parse_json_int
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
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
        found = transcode.find_lone_surrogate(entry)
        if found is None:
            split.kept.append(index)
            kept_entries.append(entry)
        else:
            split.rejections.append(_rejection(index, found.field, found))
    if any(_fails_whole_request(stream) for stream in streams):
        # No entry is stored, so none is taken out, and the streams keep
        # the positions that the error names.
        total = len(entries) + sum(map(_message_count, streams))
        replaced = _json_ready(tree, replace_surrogates=True)
        return SplitBatch(_encode(replaced), list(range(total)), [])
    kept_streams = []
    index = len(entries)
    for stream in streams:
        count = _message_count(stream)
        kept = _split_stream(stream, index, count, split)
        if kept is not None:
            kept_streams.append(kept)
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
    stream: dict, first_index: int, count: int, split: SplitBatch
) -> dict | None:
    """Return the stream without its entries that have lone surrogates.

    Their rejections and the kept entries' indexes go into `split`. Returns
    None when a shared field has one, after rejecting every entry. The
    columns must be empty or `count` long.
    """
    shared = {key: value for key, value in stream.items() if key not in _ENTRY_FIELDS}
    found = transcode.find_lone_surrogate(shared)
    if found is not None:
        split.rejections.extend(
            _rejection(index, found.field, found)
            for index in range(first_index, first_index + count)
        )
        return None
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
    kept = dict(stream)
    for name in _ENTRY_FIELDS:
        column = stream.get(name)
        if column:
            kept[name] = [v for p, v in enumerate(column) if p not in bad]
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
    rejections: list[logs_pb2.LogEntryRejection],
) -> list[logs_pb2.LogEntryRejection]:
    """Return copies in which only the first of each reason and field is described.

    log_service describes only the first rejection of each reason and field,
    which keeps a response with many rejections small, and so does the merge.
    """
    descriptions: dict[tuple[int, str], str] = {}
    for rejection in rejections:
        if rejection.description:
            key = (rejection.reason, rejection.field)
            descriptions.setdefault(key, rejection.description)
    described = set()
    copies = []
    for rejection in rejections:
        key = (rejection.reason, rejection.field)
        copies.append(
            logs_pb2.LogEntryRejection(
                index=rejection.index,
                reason=rejection.reason,
                field=rejection.field,
                description="" if key in described else descriptions.get(key, ""),
            )
        )
        described.add(key)
    return copies
