"""Owner-only permissions for the data directory and the files in it.

The data directory contains the auth secret, the password, session and API
key hashes in `user_service.db`, the money databases and the log entries.
Directories are created with mode 0700 and files with 0600. A looser mode
found at start is tightened and logged at INFO, so a data directory from an
older version is fixed in place.

`write_file_atomically` replaces a small file durably with a private one.
The services use it for their state files and the command-line client for
its saved sessions and ship positions.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# Files that SQLite creates beside a database. SQLite gives a new one the
# permissions of the database file, which a test checks.
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def tighten(path: Path, allowed: int, *, quiet: bool = False) -> bool:
    """Remove the permission bits of `path` that `allowed` does not contain.

    Returns whether the mode changed. Each change is logged at INFO unless
    `quiet`. A file that this process may not change (another owner) is
    logged at WARNING and left as it is, and a file that vanished is skipped.
    """
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
    if not current & ~allowed:
        return False
    restricted = current & allowed
    try:
        os.chmod(path, restricted)
    except PermissionError as exc:
        _LOGGER.warning(
            "cannot restrict the permissions of %s from %04o to %04o (%s); "
            "change its owner or mode so that only the service's user can read it",
            path,
            current,
            restricted,
            exc,
        )
        return False
    if not quiet:
        _LOGGER.info(
            "restricted the permissions of %s from %04o to %04o",
            path,
            current,
            restricted,
        )
    return True


def private_directory(path: Path) -> Path:
    """Create a directory with mode 0700, or restrict an existing one to it.

    Missing parents are created with the process's default mode, because
    they may lie outside the data directory.
    """
    path = Path(path)
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    tighten(path, DIRECTORY_MODE)
    return path


def private_opener(path: str, flags: int) -> int:
    """Open like `os.open`, creating a missing file with mode 0600.

    Pass it as `open(path, mode, opener=private_opener)`.
    """
    return os.open(path, flags, FILE_MODE)


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries, so a created, renamed or deleted file stays."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace a file's content so that a crash leaves the old or the new content.

    The data goes to a new temporary file of mode 0600 in the same directory,
    which is flushed to disk and renamed over `path`. Then the directory is
    flushed, so the rename survives a crash too. The file at `path` ends with
    mode 0600, and a symbolic link there is replaced by a regular file.

    Each call uses a temporary file of its own, named `.NAME.XXXXXXXX.tmp`,
    so concurrent writers of one path never mix their data and the last
    rename wins. The temporary file is deleted when the write fails, but a
    crash before the rename leaves it behind.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def private_file(path: Path) -> None:
    """Create an empty file with mode 0600, or restrict an existing one to it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, FILE_MODE)
    os.close(descriptor)
    tighten(path, FILE_MODE)


def private_sqlite_file(path: Path) -> None:
    """Prepare a SQLite database file and its side files with mode 0600.

    The database file is created empty before SQLite opens it, which SQLite
    treats as a new database. Existing side files are restricted too.
    """
    path = Path(path)
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    private_file(path)
    for suffix in SQLITE_SIDE_SUFFIXES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            tighten(side, FILE_MODE)


def private_tree(directory: Path) -> None:
    """Restrict a directory and everything under it to the owner.

    Directories get at most 0700 and files at most 0600, with one INFO line
    for the whole tree. Used at start for the log store, whose files older
    versions created with mode 0644.
    """
    private_directory(directory)
    changed = 0
    for root, folders, files in os.walk(directory):
        for name in folders:
            changed += tighten(Path(root) / name, DIRECTORY_MODE, quiet=True)
        for name in files:
            changed += tighten(Path(root) / name, FILE_MODE, quiet=True)
    if changed:
        _LOGGER.info(
            "restricted the permissions of %d files and directories under %s "
            "to the owner",
            changed,
            directory,
        )


def restrict_new_files() -> None:
    """Make every file and directory this process creates owner-only.

    Sets the process umask to 077. Libraries that create files with their own
    mode, such as DuckDB's write-ahead log beside a store file, then create
    them 0600 as well.
    """
    os.umask(0o077)
