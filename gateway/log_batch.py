"""Per-entry rejection of lone surrogates in a REST `POST /logs/batch`.

A JSON string may contain a `\\ud800`-`\\udfff` escape without its other half,
which no protobuf string can carry, so such an entry cannot reach log_service.
Rather than fail the whole batch, the gateway takes these entries out, sends
the others, and merges its rejections into the response by their index in
the client's batch, as log_service reports the entries that it rejects.

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
      an `entries` array. The body then goes through the usual checks.
    """
    if transcode.SURROGATE_ESCAPE.search(body) is None:
        return None
    try:
        tree = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    entries = tree.get("entries") if isinstance(tree, dict) else None
    if not isinstance(entries, list):
        return None
    kept, kept_entries, rejections = [], [], []
    for index, entry in enumerate(entries):
        found = transcode.find_lone_surrogate(entry)
        if found is None:
            kept.append(index)
            kept_entries.append(entry)
            continue
        rejections.append(
            logs_pb2.LogEntryRejection(
                index=index,
                reason=logs_pb2.REJECTION_REASON_INVALID_FIELD,
                field=found.field,
                description=found.description(),
            )
        )
    if not rejections:
        return None
    tree["entries"] = kept_entries
    text = json.dumps(tree, ensure_ascii=False, separators=(",", ":"))
    return SplitBatch(text.encode(), kept, rejections)


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
