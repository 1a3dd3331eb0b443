"""The write-ahead log of one log node, and the history of its leader epochs.

`WriteAheadLog` keeps a shard's `LogRecord`s in append-only segment files
named after the sequence number of their first entry
(`00000000000000000001.wal`). Each record is framed as a 4-byte length, a
4-byte CRC32 of the payload and the serialized record, all little-endian.
Sequence numbers are consecutive from record to record, across segments
too.

Durability uses group commit: `append()` writes a record, then waits until an
`os.fsync` has covered it. The first waiter runs the fsync and every appender
that wrote before it started shares that one fsync. With `fsync=False` the
records only reach the operating system's page cache, so they survive a crash
of the process but a crash of the machine loses the last ones.

At open, the segments are scanned, and the log is cut at the first record
that cannot be read. Two kinds of bad tail differ:

- A torn final record: the file ends inside the last record, or its end is
  zeros. A crash interrupted that write, so the record was never durable and
  never acknowledged. It is cut with a warning.
- Damage: a complete record that fails its checksum or does not continue the
  sequence, or any bad record that intact records follow. Entries that were
  acknowledged may be lost with it. The cut is logged as an error, and before
  the file is cut a `damage.json` file records where and what may be lost
  (`LogDamage`). The cut log reads as intact at later opens, so this file is
  the node's only record, across restarts, that its log is shorter than it
  was. The node removes the file once another replica's log has replaced
  the lost part (see `log_service.node`).

A restart of the log replaces every segment with one empty segment, after
a snapshot or a truncation into purged entries. It first writes the new
first sequence to `restart.json`. An open that finds the file finishes the
restart, so a crash part way leaves no mix of old and new segments.

The last segment is never purged, so its name still gives the last sequence
number when every record has been purged.

`EpochHistory` stores the (epoch, first sequence) pairs of the log in a small
JSON file next to the segments, replaced atomically, so a leader can tell
where any epoch ends in its log.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from google.protobuf.message import DecodeError

from log_service.index_runs import slice_runs
from splitlog.logs.v1 import node_service_pb2
from splitlog_runtime import private_files
from splitlog_runtime.private_files import fsync_directory, write_file_atomically

_LOGGER = logging.getLogger(__name__)

# Payload length, then the CRC32 of the payload.
_HEADER = struct.Struct("<II")
SEGMENT_SUFFIX = ".wal"
EPOCHS_FILE = "epochs.json"
DAMAGE_FILE = "damage.json"
# File that contains the first sequence of a log restart while the restart
# replaces the segments (`WriteAheadLog._restart_at`).
RESTART_FILE = "restart.json"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
# A frame longer than this is treated as corrupt, because no gRPC message can be
# larger.
MAX_RECORD_BYTES = 1024 * 1024 * 1024
# A crash of the machine can leave the end of a write as zeros, in whole
# disk sectors. So zeros that run to the end of the file from such a boundary
# inside the final record make it torn. Zeros from elsewhere count as damage,
# because a record's own last bytes can be zeros (packed columns of zeros).
ZERO_FILL_ALIGNMENT = 512
# The key of LogRecord.first_sequence (field 1, varint), with which every
# serialized record begins.
_FIRST_SEQUENCE_KEY = 0x08

LogRecord = node_service_pb2.LogRecord
EntryColumns = node_service_pb2.EntryColumns


class RecordsPurged(Exception):
    """The requested records were purged from the write-ahead log."""


@dataclass(frozen=True)
class LogDamage:
    """A damaged part of the write-ahead log that was cut off at open.

    Attributes:
      after: the last sequence kept in front of the damage.
      seen_through: the highest sequence that the log contained, as shown
        by intact records behind the damage or by the names of later
        segments. It is `after` when nothing behind the damage could be read.
      segment: name of the segment file with the damage.
      offset: byte offset of the damaged record in that file.
      problem: what was wrong with the record.
      epoch: the node's epoch when the damage was found, or 0 until the node
        sets it (see `WriteAheadLog.update_damage`).
    """

    after: int
    seen_through: int
    segment: str
    offset: int
    problem: str
    epoch: int = 0

    def merged(self, older: LogDamage | None) -> LogDamage:
        """Return this damage joined with one found at an earlier open."""
        if older is None:
            return self
        return LogDamage(
            min(self.after, older.after),
            max(self.seen_through, older.seen_through),
            self.segment,
            self.offset,
            self.problem,
            older.epoch or self.epoch,
        )

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode("utf-8")

    @classmethod
    def load(cls, path: Path) -> LogDamage | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            int(raw["after"]),
            int(raw["seen_through"]),
            str(raw["segment"]),
            int(raw["offset"]),
            str(raw["problem"]),
            int(raw.get("epoch", 0)),
        )


def entry_count(record: LogRecord) -> int:
    """Return the number of entries in a record."""
    return len(record.entries.timestamps)


def slice_columns(columns: EntryColumns, start: int, stop: int) -> EntryColumns:
    """Return entries start..stop-1 of a column batch as a new batch."""
    return EntryColumns(
        timestamps=columns.timestamps[start:stop],
        observed_timestamps=columns.observed_timestamps[start:stop],
        severities=columns.severities[start:stop],
        services=columns.services[start:stop],
        hosts=columns.hosts[start:stop],
        messages=columns.messages[start:stop],
        attributes=columns.attributes[start:stop],
        trace_ids=columns.trace_ids[start:stop],
        span_ids=columns.span_ids[start:stop],
        truncated=columns.truncated[start:stop],
        dropped_attributes_counts=columns.dropped_attributes_counts[start:stop],
        observed_timestamp=columns.observed_timestamp,
    )


def slice_record(record: LogRecord, first: int, last: int) -> LogRecord:
    """Return the part of a record with sequence numbers first..last."""
    start = first - record.first_sequence
    stop = last - record.first_sequence + 1
    return LogRecord(
        first_sequence=first,
        epoch=record.epoch,
        batch_id=record.batch_id,
        receive_time=record.receive_time,
        entries=slice_columns(record.entries, start, stop),
        index_runs=slice_runs(record.index_runs, start, stop),
    )


def encode_varint(value: int) -> bytes:
    """Return a non-negative integer in protobuf's base-128 varint encoding."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _top_level_fields(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield each top-level field of a serialized message.

    Each item is the field number, the wire type, the offset where the field
    begins, the offset where its value begins and the offset where it ends.

    Raises:
      ValueError: `data` contains a group or an unknown wire type.
    """
    position = 0
    end = len(data)
    while position < end:
        start = position
        key, position = _read_varint(data, position)
        wire_type = key & 7
        value = position
        if wire_type == 0:
            _, after = _read_varint(data, position)
        elif wire_type == 1:
            after = position + 8
        elif wire_type == 5:
            after = position + 4
        elif wire_type == 2:
            length, value = _read_varint(data, position)
            after = value + length
        else:
            raise ValueError(f"wire type {wire_type} at byte {position} is not read")
        yield key >> 3, wire_type, start, value, after
        position = after


def embedded_messages(data: bytes, field_number: int) -> list[bytes]:
    """Return the serialized values of one message field of a serialized message.

    Only the top level of `data` is walked, so the cost grows with its number
    of fields, not with their size. Call it on data that parsed.

    Raises:
      ValueError: `data` contains a group or an unknown wire type.
    """
    return [
        data[value:after]
        for number, wire_type, _, value, after in _top_level_fields(data)
        if wire_type == 2 and number == field_number
    ]


# The key of LogRecord.entries: its field number, then wire type 2
# (length-delimited).
_ENTRIES_KEY = encode_varint(
    LogRecord.DESCRIPTOR.fields_by_name["entries"].number << 3 | 2
)


def encode_record(
    first_sequence: int,
    epoch: int,
    batch_id: str,
    receive_time: int,
    entries: EntryColumns,
    index_runs: Sequence[int] = (),
) -> tuple[LogRecord, bytes]:
    """Build a record around `entries` and return it with its serialized form.

    The columns are serialized once and parsed back, which costs less than
    copying them into a new message and serializing that.
    """
    pending = PendingRecord.from_columns(entries.SerializeToString())
    return pending.complete(first_sequence, epoch, batch_id, receive_time, index_runs)


def split_field(data: bytes, field_number: int) -> tuple[bytes, bytes]:
    """Split a serialized message into one length-delimited field and the rest.

    Returns the field's value (its occurrences joined, which protobuf reads
    as one merged message) and the other fields, still serialized. Only the
    top level of `data` is walked. Call it on data that parsed.

    Raises:
      ValueError: `data` contains a group or an unknown wire type.
    """
    found = []
    rest = []
    for number, wire_type, start, value, after in _top_level_fields(data):
        if wire_type == 2 and number == field_number:
            found.append(data[value:after])
        else:
            rest.append(data[start:after])
    if len(found) == 1:
        return found[0], b"".join(rest)
    return b"".join(found), b"".join(rest)


@dataclass
class PendingRecord:
    """A record built from serialized columns, before it has a place in the log.

    `record` contains only the entries until `complete` adds the rest, so
    the columns a writer sent are parsed once and never serialized again.
    """

    record: LogRecord
    entries_part: bytes

    @classmethod
    def from_columns(cls, serialized_columns: bytes) -> PendingRecord:
        """Wrap a serialized `EntryColumns` message."""
        part = (
            _ENTRIES_KEY + encode_varint(len(serialized_columns)) + serialized_columns
        )
        return cls(LogRecord.FromString(part), part)

    def complete(
        self,
        first_sequence: int,
        epoch: int,
        batch_id: str,
        receive_time: int,
        index_runs: Sequence[int] = (),
    ) -> tuple[LogRecord, bytes]:
        """Set the record's header and return the record with its serialized form.

        `index_runs` are the record's `index_runs` (see `log_service.index_runs`).
        """
        header = LogRecord(
            first_sequence=first_sequence,
            epoch=epoch,
            batch_id=batch_id,
            receive_time=receive_time,
            index_runs=index_runs,
        )
        record = self.record
        record.first_sequence = first_sequence
        record.epoch = epoch
        record.batch_id = batch_id
        record.receive_time = receive_time
        record.index_runs[:] = index_runs
        return record, header.SerializeToString() + self.entries_part


def _segment_name(first_sequence: int) -> str:
    return f"{first_sequence:020d}{SEGMENT_SUFFIX}"


@dataclass
class _Segment:
    first: int
    path: Path
    size: int = 0


@dataclass(frozen=True)
class RecordInfo:
    """The position of one record in the log, with the fields the node indexes."""

    first: int
    count: int
    epoch: int
    batch_id: str
    receive_time: int
    index_runs: tuple[int, ...]
    segment: _Segment
    offset: int
    size: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1


@dataclass(frozen=True)
class EpochStart:
    """The first sequence number written under one leader epoch."""

    epoch: int
    first_sequence: int


class EpochHistory:
    """The epochs of a log and where each begins, stored in `epochs.json`.

    Epochs grow along the log. An entry whose epoch has no record yet (a new
    leader that has not appended) is allowed: it marks where that epoch
    begins, and it is replaced when records of another epoch are written there.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._entries: list[EpochStart] = []
        if path.exists():
            raw = json.loads(path.read_text(encoding="utf-8"))
            self._entries = [EpochStart(int(e), int(s)) for e, s in raw["epochs"]]

    @property
    def entries(self) -> list[EpochStart]:
        return list(self._entries)

    def note(self, epoch: int, first_sequence: int) -> None:
        """Record that sequence `first_sequence` onward is written under `epoch`.

        Entries that begin at or after `first_sequence` are dropped first,
        because that part of the log is being rewritten.

        Raises:
          ValueError: an earlier part of the log has a higher epoch.
        """
        entries = self._entries
        last = entries[-1] if entries else None
        if last and last.first_sequence < first_sequence and last.epoch == epoch:
            return
        kept = [e for e in entries if e.first_sequence < first_sequence]
        if kept and kept[-1].epoch > epoch:
            raise ValueError(
                f"epoch {epoch} at sequence {first_sequence} follows epoch "
                f"{kept[-1].epoch}; epochs must not decrease along the log"
            )
        if not kept or kept[-1].epoch != epoch:
            kept.append(EpochStart(epoch, first_sequence))
        if kept != entries:
            self._entries = kept
            self._save()

    def truncate_after(self, sequence: int) -> None:
        """Forget the epochs that begin after `sequence`."""
        kept = [e for e in self._entries if e.first_sequence <= sequence]
        if kept != self._entries:
            self._entries = kept
            self._save()

    def replace(self, entries: list[EpochStart]) -> None:
        """Replace the whole history, as a follower does when it installs a snapshot."""
        if entries != self._entries:
            self._entries = list(entries)
            self._save()

    def epoch_at(self, sequence: int) -> int:
        """Return the epoch of the entry with this sequence number, or 0 if unknown."""
        epoch = 0
        for entry in self._entries:
            if entry.first_sequence > sequence:
                break
            epoch = entry.epoch
        return epoch

    def end_of(self, epoch: int, last_sequence: int) -> int:
        """Return the last sequence number written under `epoch` or an older one.

        Args:
          epoch: an epoch, which may be missing from this history.
          last_sequence: the log's last sequence number, returned when no
            newer epoch has begun.
        """
        for entry in self._entries:
            if entry.epoch > epoch:
                return entry.first_sequence - 1
        return last_sequence

    def _save(self) -> None:
        data = {"epochs": [[e.epoch, e.first_sequence] for e in self._entries]}
        write_file_atomically(self._path, json.dumps(data).encode("utf-8"))


@dataclass(frozen=True)
class _BadTail:
    """The first record of a segment that could not be read, found at open."""

    offset: int
    expected: int
    problem: str
    torn: bool
    size: int = 0
    seen_through: int = 0


def _is_torn(data: bytes, offset: int) -> bool:
    """Return whether the bad record at `offset` is a write that a crash cut.

    That is the case when the file ends inside the record, with no intact
    record behind it, or when zeros fill the file from the record's start,
    or from a sector boundary inside it, to the end. Any other bad record is
    damage.
    """
    tail = data[offset:]
    if not any(tail) or len(tail) < _HEADER.size:
        return True
    zeros_from = len(data.rstrip(b"\0"))
    zero_filled = zeros_from < len(data) and zeros_from % ZERO_FILL_ALIGNMENT == 0
    length, checksum = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if length > MAX_RECORD_BYTES or start + length > len(data):
        if zlib.crc32(data[start:]) == checksum:
            # The whole payload is there; its length field is what changed.
            return False
        if zero_filled:
            return True
        return next(_intact_frames(data, offset + 1), None) is None
    # A complete record: torn only when zeros fill it from a sector boundary
    # inside it to the end of the file.
    return zero_filled and zeros_from < start + length


def _intact_frames(data: bytes, start: int) -> Iterator[tuple[int, LogRecord]]:
    """Yield (offset, record) of each intact frame at or after `start`.

    Past a damaged frame the search goes on byte by byte, trying each
    position whose payload would begin with the key of `first_sequence`.
    """
    position = start
    end = len(data)
    key = bytes([_FIRST_SEQUENCE_KEY])
    while position + _HEADER.size < end:
        length, checksum = _HEADER.unpack_from(data, position)
        payload_start = position + _HEADER.size
        payload_end = payload_start + length
        if (
            0 < length <= end - payload_start
            and data[payload_start] == _FIRST_SEQUENCE_KEY
            and zlib.crc32(data[payload_start:payload_end]) == checksum
        ):
            try:
                record = LogRecord.FromString(data[payload_start:payload_end])
            except DecodeError:
                record = None
            if record is not None and entry_count(record) > 0:
                yield position, record
                position = payload_end
                continue
        following = data.find(key, position + 1 + _HEADER.size)
        if following < 0:
            return
        position = following - _HEADER.size


def _highest_sequence(path: Path) -> int:
    """Return the last sequence of the intact records of a segment file, or 0."""
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    highest = 0
    for _, record in _intact_frames(data, 0):
        highest = max(highest, record.first_sequence + entry_count(record) - 1)
    return highest


class WriteAheadLog:
    """Segment files of framed `LogRecord`s with group commit and replay.

    Thread-safe. Records must be appended in sequence order: each one begins
    right after the last sequence number of the log.

    Args:
      directory: folder of the segments and of `epochs.json`; created if
        missing.
      fsync: whether `append()` waits for an fsync that covers its record.
      segment_bytes: size after which the next record starts a new segment.
      cache_bytes: serialized size of the most recent records that
        `read_from()` serves from memory instead of reading the segments.
    """

    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self._directory = private_files.private_directory(Path(directory))
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._sync_condition = threading.Condition()
        self._syncing = False
        self._synced = 0
        self._generation = 0
        self._segments: list[_Segment] = []
        self._records: list[RecordInfo] = []
        self._firsts: list[int] = []
        self._cache: OrderedDict[int, tuple[LogRecord, int, bytes]] = OrderedDict()
        self._cached_bytes = 0
        self._last = 0
        self._fd: int | None = None
        self.history = EpochHistory(self._directory / EPOCHS_FILE)
        self._damage_path = self._directory / DAMAGE_FILE
        self._restart_path = self._directory / RESTART_FILE
        # Damage found at this open or at an earlier one and not yet
        # replaced by another replica's log.
        self.damage = LogDamage.load(self._damage_path)
        # The damage recorded at an earlier open, which `damage` may extend.
        self.earlier_damage = self.damage
        self._scan()
        if fsync:
            # Records written before a crash of the process may still be in
            # the page cache, and replicas only receive durable records.
            self._flush_path(self._segments[-1].path)
        self._synced = self._last
        self._open_active()

    # Opening and scanning.

    def _scan(self) -> None:
        self._finish_restart()
        named: list[tuple[int, Path]] = []
        for path in sorted(self._directory.glob(f"*{SEGMENT_SUFFIX}")):
            try:
                named.append((int(path.name.removesuffix(SEGMENT_SUFFIX)), path))
            except ValueError:
                _LOGGER.warning("write-ahead log: ignoring the file %s", path)
        expected: int | None = None
        for position, (first, path) in enumerate(named):
            later = [item for _, item in named[position + 1 :]]
            if expected is not None and first != expected:
                bad = _BadTail(
                    0,
                    expected,
                    f"segment {path.name} instead of one that begins at "
                    f"sequence {expected}",
                    torn=False,
                )
                self._cut_bad_tail(bad, None, [path, *later])
                break
            segment = _Segment(first, path)
            self._segments.append(segment)
            bad = self._scan_segment(segment, last_segment=not later)
            expected = self._records[-1].last + 1 if self._records else first
            if bad is not None:
                self._cut_bad_tail(bad, segment, later)
                break
        if not self._segments:
            self._create_segment(1)
        last_segment = self._segments[-1]
        self._last = self._records[-1].last if self._records else last_segment.first - 1
        self.history.truncate_after(self._last + 1)

    def _scan_segment(
        self, segment: _Segment, *, last_segment: bool
    ) -> _BadTail | None:
        """Index one segment's records up to the first bad one, if any.

        Returns the bad record, or None when every record is intact.
        """
        data = segment.path.read_bytes()
        offset = 0
        next_first = self._records[-1].last + 1 if self._records else segment.first
        problem = ""
        while offset < len(data):
            if offset + _HEADER.size > len(data):
                problem = "a torn frame header"
                break
            length, checksum = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            if length > MAX_RECORD_BYTES or start + length > len(data):
                problem = "a record that runs past the end of the file"
                break
            payload = data[start : start + length]
            if zlib.crc32(payload) != checksum:
                problem = "a checksum mismatch"
                break
            try:
                record = LogRecord.FromString(payload)
            except DecodeError:
                problem = "a record that does not parse"
                break
            count = entry_count(record)
            if record.first_sequence != next_first or count == 0:
                problem = f"a record at sequence {record.first_sequence}"
                break
            self._index(record, segment, offset, _HEADER.size + length)
            next_first += count
            offset = start + length
        segment.size = offset
        if not problem:
            return None
        torn = last_segment and _is_torn(data, offset)
        seen = 0
        if not torn:
            for _, record in _intact_frames(data, offset + 1):
                seen = max(seen, record.first_sequence + entry_count(record) - 1)
        return _BadTail(
            offset, next_first, problem, torn=torn, size=len(data), seen_through=seen
        )

    def _cut_bad_tail(
        self, bad: _BadTail, segment: _Segment | None, later: list[Path]
    ) -> None:
        """Cut the log at a bad record: in its segment and every later segment.

        Damage is saved to `damage.json` before any byte is removed.
        """
        name = segment.path.name if segment is not None else later[0].name
        cut_bytes = bad.size - bad.offset
        if bad.torn:
            _LOGGER.warning(
                "write-ahead log: %s in %s at byte %d, where sequence %d was "
                "expected; cutting %d bytes from there on. A crash interrupted "
                "that write, so the record was never acknowledged",
                bad.problem,
                name,
                bad.offset,
                bad.expected,
                cut_bytes,
            )
        else:
            after = bad.expected - 1
            seen = max([after, bad.seen_through, *map(_highest_sequence, later)])
            damage = LogDamage(after, seen, name, bad.offset, bad.problem)
            damage = damage.merged(self.damage)
            write_file_atomically(self._damage_path, damage.to_json())
            self.damage = damage
            known = (
                f"entries {after + 1}..{seen} that it held are lost from this "
                "node's log"
                if seen > after
                else "no intact record behind the damage shows how many "
                "entries followed"
            )
            _LOGGER.error(
                "write-ahead log: %s in %s at byte %d, where sequence %d was "
                "expected: the file is damaged, not torn by a crash. Cutting the "
                "log after sequence %d (%d bytes of this file and %d later "
                "segments); %s, and some of them may have been acknowledged",
                bad.problem,
                self._directory / name,
                bad.offset,
                bad.expected,
                after,
                cut_bytes,
                len(later),
                known,
            )
        if segment is not None:
            os.truncate(segment.path, bad.offset)
            self._flush_path(segment.path)
        self._delete_files(later)

    def record_damage(self, damage: LogDamage) -> LogDamage:
        """Save damage found after open, joined with any recorded before."""
        with self._lock:
            merged = damage.merged(self.damage)
            write_file_atomically(self._damage_path, merged.to_json())
            self.damage = merged
            return merged

    def update_damage(self, **changes: object) -> LogDamage | None:
        """Change fields of the damage record, if there is one, and save it."""
        with self._lock:
            damage = self.damage
            if damage is None:
                return None
            changed = replace(damage, **changes)
            if changed != damage:
                write_file_atomically(self._damage_path, changed.to_json())
                self.damage = changed
            return changed

    def clear_damage(self) -> None:
        """Delete the damage record from memory and disk.

        The node calls it once another replica's log has replaced the lost part.
        """
        with self._lock:
            self.damage = None
            self._damage_path.unlink(missing_ok=True)
            fsync_directory(self._directory)

    def _delete_files(self, paths: list[Path]) -> None:
        # Newest first, so a crash part way leaves a log without holes.
        for path in reversed(paths):
            _LOGGER.warning("write-ahead log: deleting segment %s", path.name)
            path.unlink(missing_ok=True)
        if paths:
            fsync_directory(self._directory)

    def _flush_path(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _create_segment(self, first: int) -> _Segment:
        segment = _Segment(first, self._directory / _segment_name(first))
        segment.path.touch(mode=private_files.FILE_MODE)
        fsync_directory(self._directory)
        self._segments.append(segment)
        return segment

    def _open_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self._segments[-1].path
        self._fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, private_files.FILE_MODE
        )

    def _index(
        self, record: LogRecord, segment: _Segment, offset: int, size: int
    ) -> RecordInfo:
        info = RecordInfo(
            first=record.first_sequence,
            count=entry_count(record),
            epoch=record.epoch,
            batch_id=record.batch_id,
            receive_time=record.receive_time,
            index_runs=tuple(record.index_runs),
            segment=segment,
            offset=offset,
            size=size,
        )
        self._records.append(info)
        self._firsts.append(info.first)
        return info

    # Reading.

    @property
    def last_sequence(self) -> int:
        """Return the sequence number of the log's last entry, 0 when none."""
        return self._last

    @property
    def first_sequence(self) -> int:
        """Return the first retained sequence number, or last + 1 when none is."""
        with self._lock:
            return self._records[0].first if self._records else self._last + 1

    @property
    def durable_sequence(self) -> int:
        """Return the last sequence number covered by an fsync (or written)."""
        with self._sync_condition:
            return min(self._synced, self._last)

    def last_record_epoch(self) -> int:
        """Return the epoch of the record that contains the last entry, 0 if none."""
        with self._lock:
            if self._records:
                return self._records[-1].epoch
            return self.history.epoch_at(self._last)

    def records(self) -> list[RecordInfo]:
        """Return the index of every retained record, oldest first."""
        with self._lock:
            return list(self._records)

    def record_at(self, sequence: int) -> RecordInfo | None:
        """Return the retained record that contains a sequence number, if any."""
        with self._lock:
            return self._find(sequence)

    def _find(self, sequence: int) -> RecordInfo | None:
        index = bisect.bisect_right(self._firsts, sequence) - 1
        if index < 0:
            return None
        info = self._records[index]
        return info if info.last >= sequence else None

    def replay(self, after: int = 0) -> Iterator[LogRecord]:
        """Yield every retained record with an entry above `after`, in order."""
        sequence = max(after + 1, self.first_sequence)
        while sequence <= self._last:
            batch = self.read_from(sequence, 32 * 1024 * 1024)
            if not batch:
                return
            yield from batch
            sequence = batch[-1].first_sequence + entry_count(batch[-1])

    def read_from(
        self, sequence: int, max_bytes: int, *, through: int | None = None
    ) -> list[LogRecord]:
        """Return the records from the one that contains `sequence`, in order.

        At least one record is returned when the log contains `sequence`. More
        follow while their serialized size stays within `max_bytes`.

        Args:
          sequence: the first sequence number requested.
          max_bytes: bound on the total serialized size.
          through: the last sequence number requested. Records that begin
            after it are left out.

        Raises:
          RecordsPurged: `sequence` lies before the first retained record.
        """
        return [
            record
            for record, _ in self.read_payloads_from(
                sequence, max_bytes, through=through
            )
        ]

    def read_payloads_from(
        self, sequence: int, max_bytes: int, *, through: int | None = None
    ) -> list[tuple[LogRecord, bytes]]:
        """Like `read_from`, with each record's serialized form next to it."""
        with self._lock:
            if sequence > self._last:
                return []
            index = bisect.bisect_right(self._firsts, sequence) - 1
            if index < 0 or self._records[index].last < sequence:
                raise RecordsPurged(
                    f"sequence {sequence} was purged from the write-ahead log; "
                    f"it begins at {self._firsts[0] if self._firsts else None}"
                )
            selected: list[RecordInfo] = []
            total = 0
            for info in self._records[index:]:
                if through is not None and info.first > through:
                    break
                if selected and total + info.size > max_bytes:
                    break
                selected.append(info)
                total += info.size
            cached = [self._cache.get(info.first) for info in selected]
        return [
            (hit[0], hit[2]) if hit is not None else self._read_record(info)
            for info, hit in zip(selected, cached, strict=True)
        ]

    def _read_record(self, info: RecordInfo) -> tuple[LogRecord, bytes]:
        with open(info.segment.path, "rb") as handle:
            handle.seek(info.offset + _HEADER.size)
            payload = handle.read(info.size - _HEADER.size)
        return LogRecord.FromString(payload), payload

    # Writing.

    def write(self, record: LogRecord, payload: bytes | None = None) -> int:
        """Write a record without waiting for the disk and return its last sequence.

        `payload` is the record's serialized form when the caller has it
        (see `encode_record`). It must match the record.

        Raises:
          ValueError: the record is empty or does not begin right after the
            log's last entry.
        """
        if payload is None:
            payload = record.SerializeToString()
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            return self._write_locked(record, frame, payload)

    def _write_locked(self, record: LogRecord, frame: bytes, payload: bytes) -> int:
        count = entry_count(record)
        if count == 0:
            raise ValueError("a write-ahead log record needs at least one entry")
        if record.first_sequence != self._last + 1:
            raise ValueError(
                f"record begins at sequence {record.first_sequence}, but the "
                f"write-ahead log ends at {self._last}"
            )

        self.history.note(record.epoch, record.first_sequence)
        segment = self._segments[-1]
        if segment.size > 0 and segment.size + len(frame) > self._segment_bytes:
            if self._fsync and self._fd is not None:
                os.fsync(self._fd)
            segment = self._create_segment(record.first_sequence)
            self._open_active()

        assert self._fd is not None
        view = memoryview(frame)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # A full disk can stop a frame part way. Cut the part off, or the
            # next record would follow it and replay would stop at the torn
            # frame, losing every record after it.
            os.ftruncate(self._fd, segment.size)
            raise

        info = self._index(record, segment, segment.size, len(frame))
        segment.size += len(frame)
        self._last = info.last
        self._remember(record, len(frame), payload)
        return self._last

    def _remember(self, record: LogRecord, size: int, payload: bytes) -> None:
        self._cache[record.first_sequence] = (record, size, payload)
        self._cached_bytes += size
        while self._cached_bytes > self._cache_bytes and len(self._cache) > 1:
            _, (_, dropped, _) = self._cache.popitem(last=False)
            self._cached_bytes -= dropped

    def sync(self, through: int) -> None:
        """Return once the entries through `through` are on disk.

        The first caller that finds no fsync running runs one for everything
        written so far. Callers that arrive meanwhile wait for it, and then
        share the next one. Without fsync the call returns at once.
        """
        if not self._fsync:
            with self._sync_condition:
                self._synced = max(self._synced, self._last)
            return
        with self._sync_condition:
            while self._synced < through:
                if not self._syncing:
                    self._syncing = True
                    break
                self._sync_condition.wait()
            else:
                return
        generation = -1
        target = 0
        try:
            with self._lock:
                target = self._last
                generation = self._generation
                fd = os.dup(self._fd) if self._fd is not None else None
            if fd is not None:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            with self._sync_condition:
                self._syncing = False
                if generation == self._generation:
                    self._synced = max(self._synced, target)
                self._sync_condition.notify_all()

    def append(self, record: LogRecord, payload: bytes | None = None) -> int:
        """Write a record, wait until it is durable and return its last sequence."""
        last = self.write(record, payload)
        self.sync(last)
        return last

    # Removing records.

    def truncate_after(self, sequence: int) -> int:
        """Remove every entry above `sequence` and return how many were removed.

        A record that contains `sequence` and later entries is cut down to the
        entries up to `sequence`. The change is flushed to disk before the
        call returns, and the epoch history drops the epochs that begin
        after `sequence`.
        """
        with self._lock:
            if sequence >= self._last:
                return 0
            removed = self._last - sequence
            self._generation += 1
            cut = bisect.bisect_right(self._firsts, sequence)
            straddler: LogRecord | None = None
            if sequence + 1 < self._segments[0].first:
                # Purged entries are cut too: the log starts over after them.
                cut = 0
                self._restart_at(sequence + 1)
            else:
                if cut > 0 and self._records[cut - 1].last > sequence:
                    cut -= 1
                    info = self._records[cut]
                    straddler = slice_record(
                        self._cached_or_read(info), info.first, sequence
                    )
                self._cut_segments_at(self._records[cut])
            for info in self._records[cut:]:
                entry = self._cache.pop(info.first, None)
                if entry is not None:
                    self._cached_bytes -= entry[1]
            del self._records[cut:]
            del self._firsts[cut:]
            self._last = sequence if straddler is None else straddler.first_sequence - 1
            self.history.truncate_after(sequence)
            if straddler is not None:
                payload = straddler.SerializeToString()
                frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
                self._write_locked(straddler, frame, payload)
            assert self._fd is not None
            os.fsync(self._fd)
        with self._sync_condition:
            # Everything left was flushed above.
            self._synced = sequence
            self._sync_condition.notify_all()
        _LOGGER.info(
            "write-ahead log: removed %d entries after sequence %d", removed, sequence
        )
        return removed

    def _cached_or_read(self, info: RecordInfo) -> LogRecord:
        hit = self._cache.get(info.first)
        return hit[0] if hit is not None else self._read_record(info)[0]

    def _cut_segments_at(self, info: RecordInfo) -> None:
        position = self._segments.index(info.segment)
        later = self._segments[position + 1 :]
        self._delete_files([segment.path for segment in later])
        del self._segments[position + 1 :]
        segment = self._segments[-1]
        os.truncate(segment.path, info.offset)
        segment.size = info.offset
        self._open_active()

    def _restart_at(self, first: int) -> None:
        """Replace every segment with one empty segment that begins at `first`.

        `restart.json` contains `first` until the old segments are gone. If a
        crash interrupts the restart, the next open finishes it from that
        file, because a mix of old segments and the new one would read as
        damage.
        """
        write_file_atomically(
            self._restart_path, json.dumps({"first": first}).encode("utf-8")
        )
        old = [segment.path for segment in self._segments]
        path = self._empty_segment_file(first)
        self._segments = [_Segment(first, path)]
        self._delete_files([old_path for old_path in old if old_path != path])
        self._restart_path.unlink()
        fsync_directory(self._directory)
        self._open_active()

    def _empty_segment_file(self, first: int) -> Path:
        """Create the segment file that begins at `first`, or empty it if it exists."""
        path = self._directory / _segment_name(first)
        path.touch(mode=private_files.FILE_MODE)
        os.truncate(path, 0)
        self._flush_path(path)
        fsync_directory(self._directory)
        return path

    def _finish_restart(self) -> None:
        """Finish a restart of the log that a crash interrupted, if there was one."""
        if not self._restart_path.exists():
            return
        first = int(json.loads(self._restart_path.read_bytes())["first"])
        _LOGGER.warning(
            "write-ahead log: finishing the restart at sequence %d in %s, which "
            "a crash interrupted",
            first,
            self._directory,
        )
        old = sorted(self._directory.glob(f"*{SEGMENT_SUFFIX}"))
        path = self._empty_segment_file(first)
        self._delete_files([old_path for old_path in old if old_path != path])
        self._restart_path.unlink()
        fsync_directory(self._directory)

    def purge_point(self, sequence: int) -> int:
        """Return the last sequence that `purge_through(sequence)` would delete.

        Zero means that it would delete nothing.
        """
        with self._lock:
            point = 0
            for following in self._segments[1:]:
                if following.first - 1 > sequence:
                    break
                point = following.first - 1
            return point

    def purge_through(self, sequence: int) -> int:
        """Delete whole segments whose entries are all at or below `sequence`.

        The last segment is always kept. Returns the number of entries purged.
        """
        with self._lock:
            doomed: list[_Segment] = []
            for segment, following in zip(
                self._segments, self._segments[1:], strict=False
            ):
                if following.first - 1 > sequence:
                    break
                doomed.append(segment)
            if not doomed:
                return 0
            for segment in doomed:
                segment.path.unlink(missing_ok=True)
            fsync_directory(self._directory)
            del self._segments[: len(doomed)]
            keep_from = bisect.bisect_left(self._firsts, self._segments[0].first)
            purged = self._records[:keep_from]
            for info in purged:
                entry = self._cache.pop(info.first, None)
                if entry is not None:
                    self._cached_bytes -= entry[1]
            del self._records[:keep_from]
            del self._firsts[:keep_from]
            return sum(info.count for info in purged)

    def purge_point_keeping(self, max_bytes: int) -> int:
        """Return the last sequence to purge so that at most `max_bytes` remain.

        Only whole segments count, and the last segment always stays. Zero
        means that nothing needs purging.
        """
        with self._lock:
            kept = 0
            last = len(self._segments) - 1
            for position in range(last, 0, -1):
                kept += self._segments[position].size
                if kept > max_bytes:
                    # Keep the segments after this one, or the last one alone
                    # when it is larger than `max_bytes` by itself.
                    return self._segments[min(position + 1, last)].first - 1
            return 0

    def restart_after(self, sequence: int, epochs: list[EpochStart]) -> None:
        """Drop every record and continue the log after `sequence`.

        A follower calls it when it installs a snapshot that ends at
        `sequence`. Its store then contains the entries, and the next record
        it writes begins at `sequence + 1`. `epochs` becomes the epoch history.
        Running it again after a crash gives the same result.
        """
        with self._lock:
            self._generation += 1
            self._restart_at(sequence + 1)
            self._records.clear()
            self._firsts.clear()
            self._cache.clear()
            self._cached_bytes = 0
            self._last = sequence
            self.history.replace(
                [e for e in epochs if e.first_sequence <= sequence + 1]
            )
        with self._sync_condition:
            self._synced = sequence
            self._sync_condition.notify_all()

    def close(self) -> None:
        """Flush and close the active segment."""
        with self._lock:
            if self._fd is not None:
                if self._fsync:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
