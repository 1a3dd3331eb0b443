"""Request ids of recent log writes, with a digest of each write's request.

A write with a request id that was already used is stored once, because
the nodes find its batch ids and store only the entries that they do not
hold under them yet. That is right for a retry, but a client that reuses
an id for other entries must not get a success response while nothing new
is stored. The router therefore keeps
a blake2b digest of each request under its id and rejects a request whose
digest differs, before any of its entries reach a shard.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator

from google.protobuf.message import Message

from log_service.logfiles import TIME_INFERRED
from splitlog.logs.v1.logs_service_pb2 import LogStream
from splitlog_runtime.errors import InvalidArgument, invalid_field

# Request ids whose digests the router keeps, least recently used dropped
# first. It matches the number of purged batches a node still recognises
# (`node_state.RECENT_PURGED_BATCHES`). Each id costs about 200 bytes plus
# its length, so at most about 35 MB with ids of MAX_REQUEST_ID_BYTES.
REMEMBERED_REQUEST_IDS = 50_000
DIGEST_BYTES = 16
# Maximum length of a request id, in bytes of UTF-8. The id is copied into
# the batch id of every part of a write, and so into the router's ledger,
# the nodes' write-ahead log records and their batch indexes. `splitlog logs
# ship` and the other clients of this project send 36-byte UUIDs, so the
# limit leaves room for ids built from a service name and a file path.
MAX_REQUEST_ID_BYTES = 512


def request_id_error(
    request_id: object, field: str = "request_id"
) -> InvalidArgument | None:
    """Return the error for a request id over MAX_REQUEST_ID_BYTES, or None.

    `request_id` may be any decoded JSON value. Only a string is checked,
    because the usual request checks reject the other types.
    """
    # A character takes at most 4 bytes, so most ids skip the encoding.
    if not isinstance(request_id, str) or len(request_id) * 4 <= MAX_REQUEST_ID_BYTES:
        return None
    size = len(request_id.encode("utf-8", "surrogatepass"))
    if size <= MAX_REQUEST_ID_BYTES:
        return None
    return invalid_field(
        field,
        f"is {size} bytes long in UTF-8, over the limit of "
        f"{MAX_REQUEST_ID_BYTES} bytes; send a shorter id, such as a UUID "
        "(36 bytes)",
        reason="REQUEST_ID_TOO_LONG",
    )


def request_digest(request: Message) -> bytes:
    """Return the blake2b digest of a write request's deterministic encoding.

    The encoding sorts map keys (the entries' attributes), so the same
    request sent as JSON through the gateway or as protobuf has one digest.
    The timestamps of entries and streams with the attribute
    `time_inferred=true` are left out. A shipper invents those times, such as
    the time it read a line without one, so a rerun over the same lines sends
    other times, and the digest must match for the rerun to be stored once.
    """
    encoded = request.SerializeToString(deterministic=True)
    # The byte search skips the per-entry check for almost every request.
    if TIME_INFERRED.encode() in encoded and _has_inferred_times(request):
        request = _without_inferred_times(request)
        encoded = request.SerializeToString(deterministic=True)
    return hashlib.blake2b(encoded, digest_size=DIGEST_BYTES).digest()


def _has_inferred_times(request: Message) -> bool:
    return any(_time_inferred(item) for item in _entries_and_streams(request))


def _without_inferred_times(request: Message) -> Message:
    """Return a copy of `request` without the timestamps that a shipper invented."""
    copy = type(request)()
    copy.CopyFrom(request)
    for item in _entries_and_streams(copy):
        if not _time_inferred(item):
            continue
        if isinstance(item, LogStream):
            del item.timestamps_unix_nano[:]
        else:
            item.ClearField("timestamp")
    return copy


def _entries_and_streams(request: Message) -> Iterator[Message]:
    """Yield the `LogEntry` and `LogStream` messages of any log write request."""
    fields = request.DESCRIPTOR.fields_by_name
    if "entry" in fields and request.HasField("entry"):
        yield request.entry
    if "entries" in fields:
        yield from request.entries
    if "streams" in fields:
        yield from request.streams


def _time_inferred(item: Message) -> bool:
    return item.attributes.get(TIME_INFERRED) == "true"


class RequestLedger:
    """Digests and first receive times of recent write requests, by request id.

    A retry is normalised with the first request's receive time, so entries
    without a timestamp or observed timestamp get the times that the first
    request stored, and the response shows them.

    NOTE: the ledger lives in the router's memory. After a router restart,
    or once an id has been dropped as least recently used, a reused id with
    other entries is not rejected. Its entries are then stored as a new
    write, because the router puts the digest in the nodes' batch ids. A
    retry is then still stored once, but its response carries the retry's
    receive time where the entry had no time of its own.
    """

    def __init__(self, limit: int = REMEMBERED_REQUEST_IDS) -> None:
        self._limit = limit
        self._requests: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, request_id: str, digest: bytes, receive_ns: int) -> int:
        """Record a request under its id, or check it against the first one.

        Returns the receive time, in Unix nanoseconds, of the first request
        with `request_id`: `receive_ns` for a new or empty id.

        Raises:
          InvalidArgument: with reason REQUEST_ID_REUSED when the id was
            used for a request with another digest.
        """
        if not request_id:
            return receive_ns
        with self._lock:
            known = self._requests.get(request_id)
            if known is None:
                self._requests[request_id] = (digest, receive_ns)
                if len(self._requests) > self._limit:
                    self._requests.popitem(last=False)
                return receive_ns
            self._requests.move_to_end(request_id)
        known_digest, first_receive_ns = known
        if known_digest != digest:
            raise _request_id_reused(request_id)
        return first_receive_ns


def _request_id_reused(request_id: str) -> InvalidArgument:
    return invalid_field(
        "request_id",
        f"{request_id!r} was already used for another write with other "
        "entries, so these entries were not stored. Send a new UUID as "
        "request_id for new entries; resend a request unchanged only to "
        "retry it",
        reason="REQUEST_ID_REUSED",
    )
