"""Per-entry rejection of lone surrogates in a REST `POST /logs/batch`.

A JSON string may contain a `\\ud800`-`\\udfff` escape without its other half,
which no protobuf string can carry, so such an entry cannot reach log_service.
Rather than fail the whole batch, the gateway takes these entries out, sends
the others, and merges its rejections into the response by their index in
the client's batch, as log_service reports the entries that it rejects.

In `streams`, a message with one is taken out of its stream with its values
in the other columns, and is rejected as its entry, with the field
`message`. One in a field that the stream's entries share, such as
`service` or an attribute, takes out the whole stream and rejects each of
its entries.

NOTE: log_service never receives the entries rejected here, so the ingest
counters of GetLogStats do not count them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway import transcode
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
      an `entries` or `streams` array, or a stream's columns cannot be
      matched to its messages. The body then goes through the usual checks.
    """
    if transcode.SURROGATE_ESCAPE.search(body) is None:
        return None
    try:
        tree = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
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
    kept_streams = []
    index = len(entries)
    for stream in streams:
        count = _stream_length(stream)
        if count is None:
            return None
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
    text = json.dumps(tree, ensure_ascii=False, separators=(",", ":"))
    split.body = text.encode()
    return split


# JSON names of a stream's columns besides `messages`, as json_format reads
# them: the proto name and the lowerCamelCase one.
_COLUMNS = ("timestamps_unix_nano", "timestampsUnixNano", "severities")


def _stream_length(stream: object) -> int | None:
    """Return the entries of a JSON stream, or None when its columns do not match.

    Each column must be absent, empty or as long as `messages`, as
    log_service requires.
    """
    if not isinstance(stream, dict):
        return None
    messages = stream.get("messages", [])
    if not isinstance(messages, list):
        return None
    for name in _COLUMNS:
        column = stream.get(name, [])
        if not isinstance(column, list) or len(column) not in (0, len(messages)):
            return None
    return len(messages)


def _split_stream(
    stream: dict, first_index: int, count: int, split: SplitBatch
) -> dict | None:
    """Return the stream without its entries that have lone surrogates.

    Their rejections and the kept entries' indexes go into `split`. Returns
    None when a shared field has one, after rejecting every entry.
    """
    shared = {key: value for key, value in stream.items() if key != "messages"}
    found = transcode.find_lone_surrogate(shared)
    if found is not None:
        split.rejections.extend(
            _rejection(index, found.field, found)
            for index in range(first_index, first_index + count)
        )
        return None
    messages = stream.get("messages", [])
    bad = {}
    for position, message in enumerate(messages):
        found = transcode.find_lone_surrogate(message)
        if found is not None:
            bad[position] = found
    for position in range(count):
        if position in bad:
            rejection = _rejection(first_index + position, "message", bad[position])
            split.rejections.append(rejection)
        else:
            split.kept.append(first_index + position)
    if not bad:
        return stream
    kept = dict(stream)
    for name in ("messages", *_COLUMNS):
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
