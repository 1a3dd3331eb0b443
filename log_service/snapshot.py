"""Snapshot transfer: how a follower that lags too far catches up.

A leader purges its write-ahead log once every follower holds the records,
or once the log passes `log_wal_keep_bytes`. A follower that needs purged
records cannot get them from the log any more. The leader then offers a
snapshot on its ReplicateEntries stream, and the follower calls
FetchSnapshot on the leader:

- The leader picks S, the highest sequence its store has applied, and keeps
  its write-ahead log from S + 1 on while the stream is open. It sends a
  header (S, its epoch history up to S), the stored entries up to S in chunks
  of at most `CHUNK_ENTRIES` entries and half of `max_message_bytes`, each
  with a CRC-32, the batch ids it remembers up to S in messages of the same
  size, and a trailer with the totals. An entry larger than half the setting
  goes in a chunk of its own, which the headroom of calls between log
  components (`clients.NODE_HEADROOM_BYTES`) carries.
- The follower writes the entries into a new store in `snapshot.partial/`
  next to its own, checks every chunk's checksum and the totals, and writes
  the batch ids and a manifest there. Renaming the folder to
  `snapshot.ready/` commits the snapshot.
- Installing moves the new store into place, restarts the write-ahead log
  after S with the leader's epoch history, and replaces the saved batch ids.
  Then `snapshot.ready/` is removed. At start, a node deletes a leftover
  `snapshot.partial/` (the leader offers the snapshot again) and finishes
  installing a `snapshot.ready/`, so a crash at any point leaves either the
  old replica or the new one.

Memory stays bounded by one chunk on both sides. Only the batch ids, one
per record with its index runs and at most `RECENT_PURGED_BATCHES` of them,
are held whole. While a snapshot is being received, the follower's disk
holds its old store and the new one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from log_service.node_state import RECENT_PURGED_BATCHES
from log_service.wal import EpochStart, slice_columns
from splitlog.logs.v1 import (
    logs_service_pb2,
    node_service_pb2,
    replication_service_pb2,
    replication_service_pb2_grpc,
)
from splitlog_runtime import private_files
from splitlog_runtime.private_files import fsync_directory

_LOGGER = logging.getLogger(__name__)

PARTIAL_DIR = "snapshot.partial"
READY_DIR = "snapshot.ready"
DISCARD_DIR = "snapshot.discard"
MANIFEST_FILE = "snapshot.json"
BATCHES_FILE = "batches.json"
STORE_DIR = "store"
OLD_STORE_DIR = "old-store"
# Entries read from the store per query, at most; the chunk's bytes bound
# it too.
CHUNK_ENTRIES = 1000
BATCHES_PER_MESSAGE = 5000
# An upper bound on the bytes of one SnapshotBatch besides its batch id and
# index runs: its key and length, the id's key and length, and two varints.
_BATCH_FRAMING_BYTES = 32
# An upper bound on the bytes of the packed index runs besides their values
# (a key and a length), and on the bytes of each value.
_RUNS_FRAMING_BYTES = 11
_VARINT_BYTES = 10

Response = replication_service_pb2.FetchSnapshotResponse


class SnapshotError(Exception):
    """A received snapshot is incomplete or does not match its checksums."""


@dataclass(frozen=True)
class SnapshotSource:
    """The state a leader copies into one snapshot, read at one moment."""

    last_sequence: int
    last_record_epoch: int
    epochs: list[EpochStart]
    # (batch id, first sequence, entry count, index runs) of each record.
    batches: list[tuple[str, int, int, tuple[int, ...]]]


def leader_messages(
    store,
    source: SnapshotSource,
    max_message_bytes: int,
    bytes_per_second: int = 0,
    wait: Callable[[float], bool] | None = None,
) -> Iterator[Response]:
    """Yield the messages of one FetchSnapshot stream.

    Args:
      store: the leader's `LogStore`.
      source: the snapshot's end and the state copied with it.
      max_message_bytes: the setting; a chunk stays under half of it, unless
        it contains a single larger entry.
      bytes_per_second: when positive, the stream waits between messages so
        that it sends no faster on average.
      wait: waits that many seconds between messages and returns True, or
        returns False early when the stream must end, such as when the node
        stops. Defaults to `time.sleep`.
    """
    throttle = _Throttle(bytes_per_second, wait)
    for message in _messages(store, source, max_message_bytes):
        yield message
        if not throttle.sent(message.ByteSize()):
            return


class _Throttle:
    def __init__(
        self, bytes_per_second: int, wait: Callable[[float], bool] | None
    ) -> None:
        self._rate = bytes_per_second
        self._wait = wait
        self._start = time.monotonic()
        self._bytes = 0

    def sent(self, size: int) -> bool:
        """Wait until the stream may send again; return False to end it."""
        if self._rate <= 0:
            return True
        self._bytes += size
        ahead = self._start + self._bytes / self._rate - time.monotonic()
        if ahead <= 0:
            return True
        if self._wait is None:
            time.sleep(ahead)
            return True
        return self._wait(ahead)


def _messages(
    store, source: SnapshotSource, max_message_bytes: int
) -> Iterator[Response]:
    yield Response(
        header=replication_service_pb2.SnapshotHeader(
            last_sequence=source.last_sequence,
            last_record_epoch=source.last_record_epoch,
            epochs=[
                replication_service_pb2.EpochStart(
                    epoch=e.epoch, first_sequence=e.first_sequence
                )
                for e in source.epochs
            ],
        )
    )
    entry_count = 0
    digest = 0
    limit = max(1024, max_message_bytes // 2)
    chunks = store.copy_chunks(source.last_sequence, CHUNK_ENTRIES, limit)
    for columns, sequences in chunks:
        # The store's size estimate is an upper bound, so this split is
        # only a safeguard.
        for part, numbers in _split(columns, sequences, limit):
            data = part.SerializeToString()
            crc = zlib.crc32(data)
            digest = zlib.crc32(struct.pack("<I", crc), digest)
            entry_count += len(numbers)
            yield Response(
                entries=replication_service_pb2.SnapshotEntries(
                    entries=part, sequences=numbers, crc32=crc
                )
            )
    for chunk in _batch_chunks(source.batches, limit):
        yield Response(
            batches=replication_service_pb2.SnapshotBatches(
                batches=[
                    replication_service_pb2.SnapshotBatch(
                        batch_id=batch_id,
                        first_sequence=first,
                        count=count,
                        index_runs=runs,
                    )
                    for batch_id, first, count, runs in chunk
                ]
            )
        )
    yield Response(
        trailer=replication_service_pb2.SnapshotTrailer(
            entry_count=entry_count, batch_count=len(source.batches), crc32=digest
        )
    )


def _batch_chunks(
    batches: list[tuple[str, int, int, tuple[int, ...]]], limit: int
) -> Iterator[list[tuple[str, int, int, tuple[int, ...]]]]:
    """Yield runs of at most BATCHES_PER_MESSAGE batches and about `limit` bytes."""
    chunk: list[tuple[str, int, int, tuple[int, ...]]] = []
    size = 0
    for batch in batches:
        batch_size = (
            len(batch[0].encode("utf-8"))
            + _BATCH_FRAMING_BYTES
            + _RUNS_FRAMING_BYTES
            + _VARINT_BYTES * len(batch[3])
        )
        if chunk and (len(chunk) == BATCHES_PER_MESSAGE or size + batch_size > limit):
            yield chunk
            chunk, size = [], 0
        chunk.append(batch)
        size += batch_size
    if chunk:
        yield chunk


def _split(
    columns: node_service_pb2.EntryColumns, sequences: list[int], limit: int
) -> Iterator[tuple[node_service_pb2.EntryColumns, list[int]]]:
    """Split a chunk in halves until each part serializes within `limit`."""
    if len(sequences) <= 1 or columns.ByteSize() <= limit:
        yield columns, sequences
        return
    middle = len(sequences) // 2
    yield from _split(slice_columns(columns, 0, middle), sequences[:middle], limit)
    yield from _split(
        slice_columns(columns, middle, len(sequences)), sequences[middle:], limit
    )


@dataclass
class Progress:
    """The part of a fetched snapshot that a follower has received so far."""

    last_sequence: int = 0
    received_entries: int = 0
    received_bytes: int = 0
    installing: bool = False
    start_time: float = field(default_factory=time.time)

    def to_proto(self) -> logs_service_pb2.SnapshotProgress:
        progress = logs_service_pb2.SnapshotProgress(
            last_sequence=self.last_sequence,
            received_entries=self.received_entries,
            received_bytes=self.received_bytes,
            installing=self.installing,
        )
        progress.start_time.FromNanoseconds(int(self.start_time * 1e9))
        return progress


@dataclass(frozen=True)
class Manifest:
    """A committed snapshot: where it ends and the epoch history up to there."""

    last_sequence: int
    epochs: list[EpochStart]


def receive(
    directory: Path,
    channel: grpc.Channel,
    request: replication_service_pb2.FetchSnapshotRequest,
    open_store,
    progress: Progress,
    cancelled,
    on_call=None,
    metadata=(),
) -> Manifest:
    """Fetch a snapshot into `<directory>/snapshot.partial` and commit it.

    On success the snapshot lies in `<directory>/snapshot.ready`, ready for
    `install_store`. On failure the partial folder is removed.

    Args:
      directory: the node's folder.
      channel: a channel to the leader.
      request: the FetchSnapshot request.
      open_store: opens a `LogStore` in a given folder.
      progress: updated as messages arrive.
      cancelled: returns True when the node stops; the call is then
        abandoned.
      on_call: called with the call once it starts, so that another thread
        can cancel it.
      metadata: metadata of the call, such as the node's signature.

    Raises:
      SnapshotError: the stream broke off or a check failed.
      grpc.RpcError: the call failed.
    """
    partial = directory / PARTIAL_DIR
    _remove(partial)
    partial.mkdir(mode=private_files.DIRECTORY_MODE)
    stub = replication_service_pb2_grpc.ReplicationServiceStub(channel)
    call = stub.FetchSnapshot(request, metadata=metadata)
    if on_call is not None:
        on_call(call)
    store = open_store(partial / STORE_DIR)
    try:
        manifest = write_snapshot(call, store, partial, progress, cancelled)
    except BaseException:
        call.cancel()
        store.close()
        _remove(partial)
        raise
    store.close()
    ready = directory / READY_DIR
    _remove(ready)
    partial.rename(ready)
    fsync_directory(directory)
    return manifest


def write_snapshot(
    messages, store, partial: Path, progress: Progress, cancelled
) -> Manifest:
    """Write the messages of a FetchSnapshot stream into `partial` and check them.

    Args:
      messages: the stream's `FetchSnapshotResponse`s, in order.
      store: an empty `LogStore` inside `partial`, which receives the entries.
      partial: the folder of the snapshot being received.
      progress: updated as messages arrive.
      cancelled: returns True when the node stops.

    Raises:
      SnapshotError: the messages are out of order, a checksum or a total
        does not match, or the stream ended early.
    """
    header = None
    trailer = None
    entry_count = 0
    digest = 0
    batches: list[list[object]] = []
    for message in messages:
        if cancelled():
            raise SnapshotError("the node is stopping")
        progress.received_bytes += message.ByteSize()
        part = message.WhichOneof("part")
        if part == "header":
            header = message.header
            progress.last_sequence = header.last_sequence
            continue
        if header is None:
            raise SnapshotError(f"the stream began with {part}, not a header")
        if trailer is not None:
            raise SnapshotError(f"the stream sent {part} after its trailer")
        if part == "entries":
            chunk = message.entries
            crc = zlib.crc32(chunk.entries.SerializeToString())
            if crc != chunk.crc32:
                raise SnapshotError(
                    f"entry chunk {entry_count}: checksum {crc:08x} differs from "
                    f"the sent {chunk.crc32:08x}"
                )
            if any(s < 1 or s > header.last_sequence for s in chunk.sequences):
                raise SnapshotError(
                    f"entry chunk {entry_count}: a sequence lies outside 1.."
                    f"{header.last_sequence}"
                )
            digest = zlib.crc32(struct.pack("<I", crc), digest)
            store.insert_copied(chunk.entries, list(chunk.sequences))
            entry_count += len(chunk.sequences)
            progress.received_entries = entry_count
        elif part == "batches":
            batches.extend(
                [b.batch_id, b.first_sequence, b.count, list(b.index_runs)]
                for b in message.batches.batches
                if b.first_sequence + b.count - 1 <= header.last_sequence
            )
        elif part == "trailer":
            trailer = message.trailer
    if header is None or trailer is None:
        raise SnapshotError("the stream ended before its trailer")
    if trailer.entry_count != entry_count or trailer.crc32 != digest:
        raise SnapshotError(
            f"received {entry_count} entries with checksum {digest:08x}; the "
            f"leader sent {trailer.entry_count} with {trailer.crc32:08x}"
        )
    if trailer.batch_count != len(batches):
        raise SnapshotError(
            f"received {len(batches)} batch ids; the leader sent {trailer.batch_count}"
        )
    store.mark_applied_through(header.last_sequence)
    severities, _, _ = store.count(
        node_service_pb2.EntryFilter(), histogram_start=0, histogram_step=0
    )
    stored = sum(severities.values())
    if stored != entry_count:
        raise SnapshotError(
            f"the new store contains {stored} entries, not the {entry_count} received"
        )
    epochs = [
        EpochStart(e.epoch, e.first_sequence)
        for e in header.epochs
        if e.first_sequence <= header.last_sequence + 1
    ]
    _write_durably(
        partial / BATCHES_FILE,
        json.dumps(batches[-RECENT_PURGED_BATCHES:]).encode("utf-8"),
    )
    manifest = {
        "last_sequence": header.last_sequence,
        "epochs": [[e.epoch, e.first_sequence] for e in epochs],
    }
    _write_durably(partial / MANIFEST_FILE, json.dumps(manifest).encode("utf-8"))
    fsync_directory(partial)
    return Manifest(header.last_sequence, epochs)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb", opener=private_files.private_opener) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def discard_unfinished(directory: Path) -> None:
    """Delete a snapshot that was still arriving, or one already installed."""
    for name in (PARTIAL_DIR, DISCARD_DIR):
        path = directory / name
        if path.exists():
            _LOGGER.warning("log node: deleting the unfinished snapshot in %s", path)
            _remove(path)


def ready_manifest(directory: Path) -> Manifest | None:
    """Return the manifest of a committed snapshot not installed yet, if any."""
    path = directory / READY_DIR / MANIFEST_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Manifest(
        int(raw["last_sequence"]),
        [EpochStart(int(e), int(s)) for e, s in raw["epochs"]],
    )


def install_store(directory: Path) -> None:
    """Put a committed snapshot's store in place of the node's store.

    The node's store must be closed. Running it again after a crash
    finishes the move.
    """
    ready = directory / READY_DIR
    new_store = ready / STORE_DIR
    if not new_store.exists():
        return
    current = directory / STORE_DIR
    if current.exists():
        old = ready / OLD_STORE_DIR
        _remove(old)
        current.rename(old)
    new_store.rename(current)
    fsync_directory(ready)
    fsync_directory(directory)


def ready_batches(directory: Path) -> bytes:
    """Return the saved batch ids of a committed snapshot, as file content."""
    return (directory / READY_DIR / BATCHES_FILE).read_bytes()


def finish(directory: Path) -> None:
    """Remove an installed snapshot's folder, old store included."""
    ready = directory / READY_DIR
    if not ready.exists():
        return
    discard = directory / DISCARD_DIR
    _remove(discard)
    ready.rename(discard)
    fsync_directory(directory)
    _remove(discard)


def _remove(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
