"""A log file that `splitlog logs ship` opens once, and reads only as it was.

The command opens each FILE once and takes everything from that open file:
its device and inode numbers, its size, its modification time, the first
line that identifies it, and the lines that it ships. A rotation may
rename the file and create a new one at the path while the command runs.
The command still reads the file it opened, so the record in the
positions file never pairs the identity of one file with the lines of
another.

The command reads only the lines that start before the size that the file
had when it was opened. Lines appended after that are left to the next
run, so the last batch of a run is the one that the positions file records
as pending. A line that starts before that size is read whole, up to its
line ending, even when the writer finished it later. When the path no
longer names the file at that point, because it was renamed by a rotation,
a rerun cannot resume it, so the command reads on to the file's end.

A rotation by copy and truncate keeps the inode and empties the file under
the reader, and the program then writes new lines from the start. The
reader's next read returns the bytes of the new content from its old
offset, so what it reads after the truncation is no line of either file.
`change` finds such a truncation by a file shorter than the bytes read, or
by a first line that differs from the one read at the open. The command
checks it before it sends each batch.
"""

from __future__ import annotations

import os
from types import TracebackType

from splitlog_cli.client import ship_positions


class OpenedFile:
    """A regular file opened for reading, with what it was at the open."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Closed by __exit__: the object is the context manager.
        self.file = open(path, "rb")  # noqa: SIM115
        try:
            info = os.fstat(self.file.fileno())
            self.device = info.st_dev
            self.inode = info.st_ino
            self.size = info.st_size
            self.mtime_ns = info.st_mtime_ns
            self.head, self.head_bytes = ship_positions.read_head_at(
                self.file.fileno(), self.size
            )
        except BaseException:
            self.file.close()
            raise
        self._reader: ship_positions.LineReader | None = None

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.file.close()

    def read_from_start(self, digest: bool = False) -> ship_positions.LineReader:
        """Return a reader of the file's lines from the first, up to the
        line that starts at the size at the open.

        The reader returned last is the one that `change` checks.
        """
        self.file.seek(0)
        self._reader = ship_positions.LineReader(
            self.file, self.size, digest, past_limit=self.renamed
        )
        return self._reader

    def renamed(self) -> bool:
        """Return whether the path now names another file or none."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != (self.device, self.inode)

    def change(self) -> str | None:
        """Say how the file was truncated or replaced under the reader since
        the open, or return None when it was not.

        NOTE: a file truncated and written again with the same first line
        and at least as many bytes as were read looks unchanged.
        """
        descriptor = self.file.fileno()
        size = os.fstat(descriptor).st_size
        read = 0 if self._reader is None else self._reader.offset
        if size < read:
            return f"it has {size:,} bytes now, fewer than the {read:,} bytes read"
        if not ship_positions.head_matches_at(descriptor, self.head, self.head_bytes):
            return "its first line is not the one it had when it was opened"
        return None
