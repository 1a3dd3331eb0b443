"""The positions file of `splitlog logs ship`: how far each file was stored.

A log file that a program appends to is shipped by running the same command
again. Request ids derived from the batches stop a complete batch from being
stored twice. But the last batch of a run is usually partly filled, and the
next run sends those lines in a fuller batch with another id, which the log
service stores as new entries. So the command records, for each service and
file, the last line of the batches that the server acknowledged, and a rerun
skips the lines up to it.

Before it sends the last batch of a file, the command also records that
batch's first and last line as pending. When the response is lost, such as
when the gateway stops, the rerun sends exactly those lines again as its
first batch, under the same request id, so the server stores them once
even though the file has grown since.

The record also names the batches with entries that the server rejected
for a reason that a rerun may change: older than the service's retention,
or too far in the future. A rerun sends those batches again, before the
lines after the recorded line, under the same request ids. So after the
retention is raised, the server stores the rejected entries and counts the
others as already stored, and the batches that it stored whole are not
sent again. A batch stays in the record until a response to it has no
such rejection, so a rerun after a lost response sends it again
unchanged.

Records of earlier versions name no batches to send again. Such a record
stops before the first batch with such a rejection and keeps the lines
where later batches ended early (`cuts`), so a rerun sends those batches
again under their old request ids, and from then on records the batches
to send again.

A record also contains the file's device and inode numbers, a digest of its
first line, a digest of the last acknowledged line, and the number and
digest of the file's bytes up to the end of that line. When one of them
differs, or the file has fewer bytes now, the file at that path is another
file (rotated, replaced, or truncated and written again), and the command
ships it from line 1. Records of earlier versions have no byte count.
A line that had no line ending yet, because its writer was still writing
it, is recorded with its length in bytes, and a rerun accepts a line that
starts with those bytes.

The file is JSON, written to a temporary file, flushed to disk and renamed
over the old one under an exclusive `flock` lock, so that concurrent runs
do not lose each other's records. A record moves back to an earlier line
of the same file only when the run found the file changed, so a slower
concurrent run does not undo a faster one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

from splitlog_runtime.private_files import (
    remove_abandoned_temporary_files,
    write_file_atomically,
)

POSITIONS_FILE = "ship-positions.json"
# Bytes of the first line that the digest of a file's start covers.
_HEAD_BYTES = 4096
_VERSION = 1


def line_digest(text: str) -> str:
    """Return the digest of one line's text, as a record stores it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def bytes_digest(data: bytes) -> str:
    """Return the digest of raw bytes, as a record stores it."""
    return hash_digest(hashlib.sha256(data))


def hash_digest(state: Any) -> str:
    """Return the digest of a SHA-256 hash object, as a record stores it."""
    return state.hexdigest()[:32]


def read_head(path: str) -> tuple[str, int]:
    """Return the digest of a file's first line, at most _HEAD_BYTES of it.

    Also returns the line's length in bytes when it has no line ending yet
    and is shorter than _HEAD_BYTES, or else 0.
    """
    with open(path, "rb") as file:
        return read_head_at(file.fileno(), os.fstat(file.fileno()).st_size)


def read_head_at(descriptor: int, size: int) -> tuple[str, int]:
    """Return what `read_head` does for an open file, reading only its
    first `size` bytes and leaving its offset where it was."""
    head = os.pread(descriptor, min(_HEAD_BYTES, size), 0)
    end = head.find(b"\n")
    if end >= 0:
        head = head[: end + 1]
    unterminated = 0 < len(head) < _HEAD_BYTES and not head.endswith(b"\n")
    return bytes_digest(head), len(head) if unterminated else 0


def head_matches(path: str, record: Position) -> bool:
    """Return whether a file starts as the file of `record` did.

    When the recorded first line had no line ending, the file's first
    `record.head_bytes` bytes must match it, so the line may have grown.
    """
    with open(path, "rb") as file:
        return head_matches_at(file.fileno(), record.head, record.head_bytes)


def head_matches_at(descriptor: int, head: str, head_bytes: int) -> bool:
    """Return what `head_matches` does for an open file and the `head` and
    `head_bytes` of a record."""
    if not head_bytes:
        size = os.fstat(descriptor).st_size
        return read_head_at(descriptor, size)[0] == head
    start = os.pread(descriptor, head_bytes, 0)
    return len(start) == head_bytes and bytes_digest(start) == head


@dataclass
class Position:
    """How far one file was stored for one service."""

    device: int
    inode: int
    head: str
    # The last line of the acknowledged batches, 0 before the first, and
    # the digest of that line's text.
    line: int = 0
    line_digest: str = ""
    # The first and last line of the batch in flight at the end of the
    # file, or 0 and 0.
    pending_first: int = 0
    pending_last: int = 0
    # The length in bytes of the first line, or of the recorded line, when
    # it had no line ending yet, else 0. `head` or `line_digest` is then
    # the digest of those bytes as read, not of the whole line.
    head_bytes: int = 0
    line_bytes: int = 0
    # Lines after `line` where a batch of an earlier run ended before it was
    # full (at the end of the file, or at such a line of a run before it).
    # A rerun cuts its batches there too, so they get the same request ids.
    # Only records of earlier versions have them: they kept them while
    # `line` stayed before a batch whose entries the server rejected for a
    # reason that a rerun may change.
    cuts: list[int] = field(default_factory=list)
    # The first and last line of each batch up to `line` to send again,
    # because the server rejected entries of it for a reason that a rerun
    # may change, in file order.
    retry: list[list[int]] = field(default_factory=list)
    # The bytes of the file up to the end of `line` (up to `line_bytes` of
    # it when it had no line ending), and the digest of those bytes. A file
    # with fewer bytes, or other ones, is another file. Records of earlier
    # versions have 0 and "".
    offset: int = 0
    prefix: str = ""


def _valid_record(record: dict[str, Any]) -> bool:
    """Return whether a record's fields have the types that Position needs."""
    for member in fields(Position):
        if member.name not in record:
            continue
        value = record[member.name]
        if member.type == "int":
            if not _is_line_number(value):
                return False
        elif member.type == "list[int]":
            if not isinstance(value, list) or not all(map(_is_line_number, value)):
                return False
        elif member.type == "list[list[int]]":
            if not _valid_batches(value, record.get("line", 0)):
                return False
        elif not isinstance(value, str):
            return False
    return True


def _is_line_number(value: object) -> bool:
    return type(value) is int and value >= 0


def _valid_batches(batches: object, line: object) -> bool:
    """Return whether `batches` are ascending [first, last] pairs of lines
    from 1 to `line` that do not overlap."""
    if not isinstance(batches, list) or not _is_line_number(line):
        return False
    previous = 0
    for batch in batches:
        if not isinstance(batch, list) or len(batch) != 2:
            return False
        first, last = batch
        if not (_is_line_number(first) and _is_line_number(last)):
            return False
        if not previous < first <= last:
            return False
        previous = last
    return previous <= line


class RetryLines:
    """The lines of the batches to send again, looked up in ascending order."""

    def __init__(self, batches: list[list[int]]) -> None:
        self._batches = [(first, last) for first, last in batches]
        self._next = 0

    def contains(self, line: int) -> bool:
        """Return whether a batch to send again contains `line`, which must
        come after the lines looked up before."""
        while self._next < len(self._batches) and self._batches[self._next][1] < line:
            self._next += 1
        return self._next < len(self._batches) and self._batches[self._next][0] <= line


class PositionsFile:
    """The records of a positions file, keyed by service and real path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False
        self._cleaned = False

    @staticmethod
    def key(service: str, real_path: str) -> str:
        return f"{service}\n{real_path}"

    def load(self, service: str, real_path: str) -> Position | None:
        """Return the record of a file, or None when it has none."""
        with self._locked():
            record = self._read().get(self.key(service, real_path))
        if not isinstance(record, dict):
            return None
        try:
            if _valid_record(record):
                return Position(**record)
        except TypeError:
            pass
        self._warn("a record is not one that `splitlog logs ship` writes")
        return None

    def save(
        self,
        service: str,
        real_path: str,
        position: Position,
        allow_backwards: bool = False,
    ) -> None:
        """Write the record of a file, keeping the records of other files.

        A stored record of the same file (same device, inode and head
        digest) with a later `line` is kept, because a concurrent run
        stored more of the file. `allow_backwards` replaces it anyway.
        """
        key = self.key(service, real_path)
        with self._locked():
            records = self._read()
            stored = records.get(key)
            if not allow_backwards and _is_ahead(stored, position):
                return
            records[key] = asdict(position)
            self._write(records)

    def _real_path(self) -> Path:
        """Return the path that a symbolic link `path` points to, or `path`."""
        return Path(os.path.realpath(self.path))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        path = self._real_path()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = path.with_name(path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not self._cleaned:
                    # Once per run, for the temporary files that runs killed
                    # while they replaced the file left.
                    remove_abandoned_temporary_files(path)
                    self._cleaned = True
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self._warn(f"cannot read it: {exc}")
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            self._warn("it is not a file that `splitlog logs ship` writes")
            return {}
        return files

    def _write(self, records: dict[str, Any]) -> None:
        """Replace the file, writing through a symbolic link to its target.

        A crash leaves the old or the new file, never an empty one.
        """
        text = json.dumps({"version": _VERSION, "files": records}, indent=1) + "\n"
        write_file_atomically(self._real_path(), text.encode("utf-8"))

    def _warn(self, problem: str) -> None:
        if self._warned:
            return
        self._warned = True
        print(
            f"splitlog logs ship: ignoring the positions file {self.path}: "
            f"{problem}. Files are shipped from line 1, and the file is "
            "written again",
            file=sys.stderr,
        )


def _is_ahead(stored: object, position: Position) -> bool:
    """Return whether `stored` is a record of the same file past `position`."""
    if not isinstance(stored, dict) or not _valid_record(stored):
        return False
    same_file = (
        stored.get("device"),
        stored.get("inode"),
        stored.get("head"),
    ) == (position.device, position.inode, position.head)
    return same_file and stored.get("line", 0) > position.line


class LineReader:
    """A binary file read by lines that keeps the bytes of the last line read.

    A line without a line ending can only be read at the end of the file.
    The reader ends there, even when the file has grown since, so that the
    line is the last one read and a line completed meanwhile does not come
    out as two lines.

    With a `limit`, the reader ends before a line that starts at or after
    byte `limit`, such as the size of the file when it was opened. A line
    that starts before it is read whole, up to its line ending. When
    `past_limit` is given and returns True at the limit, the reader goes on
    to the end of the file instead.

    With `digest`, the reader keeps a SHA-256 digest of the bytes read, so
    that `prefix_digest` can name the bytes up to a line.
    """

    def __init__(
        self,
        file: BinaryIO,
        limit: int | None = None,
        digest: bool = False,
        past_limit: Callable[[], bool] | None = None,
    ) -> None:
        self._file = file
        self._limit = limit
        self._past_limit = past_limit
        self._line_done = True
        self._at_end = False
        # The bytes of the last line read, line ending included, and whether
        # it had one. The bytes of a line longer than a bounded read are the
        # first read's only.
        self.line = b""
        self.terminated = True
        # The bytes read from the start of the file, and where the last line
        # read starts.
        self.offset = 0
        self.line_start = 0
        self._hash = hashlib.sha256() if digest else None
        self._hash_before_line = hashlib.sha256() if digest else None

    def readline(self, size: int = -1) -> bytes:
        if self._at_end:
            return b""
        if self._line_done and self._limit is not None and self.offset >= self._limit:
            if self._past_limit is None or not self._past_limit():
                self._at_end = True
                return b""
            self._limit = None
        data = self._file.readline(size)
        if not data:
            self._at_end = True
            return data
        if self._line_done:
            self.line = data
            self.line_start = self.offset
            if self._hash is not None:
                self._hash_before_line = self._hash.copy()
        self.offset += len(data)
        if self._hash is not None:
            self._hash.update(data)
        self.terminated = data.endswith(b"\n")
        self._line_done = self.terminated
        if not self.terminated and (size < 0 or len(data) < size):
            self._at_end = True
        return data

    def prefix_digest(self, line_bytes: int = 0) -> str:
        """Return the digest of the bytes read, as a record stores it.

        With `line_bytes`, the digest covers the bytes before the last line
        read and the first `line_bytes` bytes of that line. Needs `digest`.
        """
        if self._hash is None:
            raise ValueError("the reader keeps no digest")
        if not line_bytes:
            return hash_digest(self._hash)
        partial = self._hash_before_line.copy()
        partial.update(self.line[:line_bytes])
        return hash_digest(partial)

    def prefix_hash(self) -> Any:
        """Return a copy of the SHA-256 hash object of the bytes read, whose
        `hash_digest` is `prefix_digest()`. Needs `digest`."""
        if self._hash is None:
            raise ValueError("the reader keeps no digest")
        return self._hash.copy()
