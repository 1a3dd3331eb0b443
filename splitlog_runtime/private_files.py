"""Owner-only permissions for the data directory and the files in it.

The data directory contains the auth secret, the password, session and API
key hashes in `user_service.db`, the money databases and the log entries.
Directories are created with mode 0700 and files with 0600. A looser mode
found at start is tightened and logged at INFO, so a data directory from an
older version is fixed in place.

`write_file_atomically` replaces a small file durably with a private one.
The services use it for their state files and the command-line client for
its saved sessions and ship positions. `remove_abandoned_temporary_files`
deletes the temporary files of such writes that a crash left behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import stat
import tempfile
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# Files that SQLite creates beside a database. SQLite gives a new one the
# permissions of the database file, which a test checks.
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
# The random part of a name from `tempfile.mkstemp` (Python 3.11): 8
# characters of lower-case letters, digits and underscores.
_TEMPORARY_RANDOM = r"[a-z0-9_]{8}"


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
    crash before the rename leaves it behind, for
    `remove_abandoned_temporary_files` to delete at the next open. The
    writer keeps an exclusive `flock` on the temporary file until after the
    rename, so that function skips a file that is still being written.
    """
    path = Path(path)
    descriptor, temporary = _locked_temporary_file(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            # Renamed while the lock is held, so that no cleaner deletes it.
            os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _locked_temporary_file(path: Path) -> tuple[int, str]:
    """Create the temporary file of a write to `path` and lock it.

    A cleaner may delete the file between its creation and the lock, because
    it is not locked yet. The cleaner deletes a file only while it holds the
    lock, so a file that still has a link once locked is this writer's own.
    """
    while True:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if os.fstat(descriptor).st_nlink:
                return descriptor, temporary
        except BaseException:
            os.close(descriptor)
            Path(temporary).unlink(missing_ok=True)
            raise
        os.close(descriptor)


def remove_abandoned_temporary_files(path: Path) -> list[Path]:
    """Delete the temporary files that crashed writes to `path` left behind.

    `write_file_atomically` leaves its `.NAME.XXXXXXXX.tmp` file when its
    process dies before the rename. A file that another writer, in this
    process or another, still has locked is left alone. A file that a writer
    has created but not locked yet may be deleted, and that writer then
    starts over with a new one. Call it where a component opens a file that
    it writes this way. Deletions are logged at INFO, and a file that cannot
    be deleted at WARNING.

    Returns the deleted files.
    """
    path = Path(path)
    pattern = re.compile(
        re.escape(f".{path.name}.") + _TEMPORARY_RANDOM + re.escape(".tmp")
    )
    try:
        names = [entry.name for entry in os.scandir(path.parent)]
    except FileNotFoundError:
        return []
    return _remove_abandoned(path.parent, names, pattern, f"writes to {path}")


def remove_abandoned_temporary_files_in(directory: Path) -> list[Path]:
    """Delete the temporary files of every crashed write under a directory.

    Like `remove_abandoned_temporary_files`, for all the files that a
    component writes under a directory of its own, such as a log node's,
    subdirectories included. Do not use it on a directory that other
    programs write to, such as one that a user named, because it deletes
    every unlocked `.NAME.XXXXXXXX.tmp` file there.

    Returns the deleted files.
    """
    pattern = re.compile(r"\..+\." + _TEMPORARY_RANDOM + r"\.tmp")
    removed = []
    for root, _, names in os.walk(directory):
        removed += _remove_abandoned(Path(root), names, pattern, f"writes in {root}")
    return removed


def _remove_abandoned(
    directory: Path, names: list[str], pattern: re.Pattern[str], writes: str
) -> list[Path]:
    removed = []
    for name in sorted(names):
        if pattern.fullmatch(name) is None:
            continue
        temporary = directory / name
        try:
            deleted = _remove_if_unlocked(temporary)
        except OSError as error:
            _LOGGER.warning(
                "cannot delete %s, a temporary file that an interrupted write "
                "left; delete it by hand: %s",
                temporary,
                error,
            )
            continue
        if deleted:
            removed.append(temporary)
    if removed:
        _LOGGER.info(
            "deleted %d temporary files that interrupted %s left: %s",
            len(removed),
            writes,
            ", ".join(each.name for each in removed),
        )
    return removed


def _remove_if_unlocked(temporary: Path) -> bool:
    """Delete a temporary file unless a writer holds its lock."""
    try:
        descriptor = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # A writer may have renamed it in place of its target since it was
        # opened, so the name must still be this locked file.
        try:
            current = os.stat(temporary, follow_symlinks=False)
        except FileNotFoundError:
            return False
        opened = os.fstat(descriptor)
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            return False
        temporary.unlink()
        return True
    finally:
        os.close(descriptor)


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
