"""Keep two `splitlog up` from sharing one data directory.

Two systems on the same data directory would write the same SQLite files,
log write-ahead logs and DuckDB partitions, and the second one would fail
late, deep inside DuckDB's own file lock. `splitlog up` therefore takes an
exclusive `flock` on `splitlog.lock` in the data directory before anything
starts, and writes its pid there for the message of the next one. The kernel
releases the lock when the process exits in any way, so a lock file left
behind by a crash blocks nothing. `splitlog serve` takes no lock, because
the children of `up --processes` and containers that share a volume run
side by side on purpose.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from splitlog_cli.errors import StartupError

LOCK_FILE = "splitlog.lock"


@contextlib.contextmanager
def data_dir_lock(data_dir: str | Path) -> Iterator[None]:
    """Hold the data directory's lock while the block runs.

    Raises:
      StartupError: another process holds the lock; the message names the
        directory and that process's pid.
    """
    directory = Path(data_dir).resolve()
    descriptor = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartupError(_in_use_message(directory, descriptor)) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)


def _in_use_message(directory: Path, descriptor: int) -> str:
    text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
    # The holder writes its pid right after it takes the lock, so the file
    # may still be empty.
    holder = f"another splitlog (pid {text})" if text.isdigit() else "another splitlog"
    return (
        f"the data directory {directory} is in use by {holder}; stop it or use "
        "another --data-dir"
    )
