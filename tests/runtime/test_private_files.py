"""Owner-only modes of the data directory, the databases and the log store.

Each test starts real services or a real log node on 127.0.0.1 with their
data in a temporary directory, and reads the modes of the files they wrote.
The tests of `write_file_atomically` write real files in a temporary
directory.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from balance_service import app as balance_app
from expense_service import app as expense_app
from log_service.ingest_counters import IngestCounters
from splitlog_runtime import private_files
from splitlog_runtime.database import Database
from tests.log_service.node_support import append, configure, start
from user_service import app as user_app

BUILDERS = {
    "user_service": user_app.build,
    "expense_service": expense_app.build,
    "balance_service": balance_app.build,
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _sqlite_files(data_dir: Path, service: str) -> list[Path]:
    database = data_dir / f"{service}.db"
    sides = [database.with_name(database.name + s) for s in ("-wal", "-shm")]
    return [database] + [side for side in sides if side.exists()]


@pytest.mark.parametrize("service", sorted(BUILDERS))
def test_service_creates_private_files(base_config, service):
    data_dir = Path(base_config.data_dir)
    host = BUILDERS[service](base_config, "127.0.0.1:0")
    try:
        files = _sqlite_files(data_dir, service)
        modes = {path.name: _mode(path) for path in files}
    finally:
        host.stop(0)

    assert _mode(data_dir) == 0o700
    # The migrations wrote in WAL mode, so SQLite made its side files.
    assert f"{service}.db-wal" in modes
    for name, mode in modes.items():
        assert mode == 0o600, f"{name} has mode {mode:04o}"


def test_service_tightens_loose_files(base_config, caplog):
    data_dir = Path(base_config.data_dir)
    user_app.build(base_config, "127.0.0.1:0").stop(0)
    database = data_dir / "user_service.db"
    wal = data_dir / "user_service.db-wal"
    wal.touch()
    os.chmod(data_dir, 0o755)
    os.chmod(database, 0o644)
    os.chmod(wal, 0o644)

    caplog.set_level(logging.INFO, logger="splitlog_runtime.private_files")
    host = user_app.build(base_config, "127.0.0.1:0")
    try:
        modes = {path: _mode(path) for path in (data_dir, database, wal)}
    finally:
        host.stop(0)

    assert modes[data_dir] == 0o700
    assert modes[database] == 0o600
    assert modes[wal] == 0o600
    messages = [record.getMessage() for record in caplog.records]
    for path, old in ((data_dir, "0755"), (database, "0644"), (wal, "0644")):
        assert any(
            str(path) in message and f"from {old} to" in message for message in messages
        ), messages


def test_database_keeps_other_folders(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    database = Database(f"sqlite:///{folder / 'custom.db'}")
    try:
        with database.transaction() as session:
            session.connection().exec_driver_sql("CREATE TABLE t (x INTEGER)")
    finally:
        database.dispose()

    assert _mode(folder / "custom.db") == 0o600
    # Only the configured data directory is restricted, not any folder
    # that an operator points a database URL at.
    assert _mode(folder) == 0o755


def test_ingest_counters_file_private(tmp_path):
    path = tmp_path / "router" / "ingest_counters.db"
    counters = IngestCounters(path)
    try:
        assert _mode(path.parent) == 0o700
        assert _mode(path) == 0o600
        assert _mode(path.with_name(path.name + "-wal")) == 0o600
    finally:
        counters.close()


def _loose_modes(directory: Path) -> dict[str, int]:
    loose = {}
    for root, folders, files in os.walk(directory):
        for name in folders + files:
            path = Path(root) / name
            # DuckDB creates its `.wal` files with the default mode; the
            # store's 0700 directory protects them.
            if name.endswith(".duckdb.wal"):
                continue
            if _mode(path) & 0o077:
                loose[str(path.relative_to(directory))] = _mode(path)
    return loose


def test_log_node_files_private(base_config, tmp_path, caplog):
    handle = start(base_config, tmp_path, "n0")
    try:
        configure(handle, epoch=1, leader=handle)
        append(handle, 1, "batch-a", 5)
    finally:
        handle.stop()
    directory = handle.directory
    assert _mode(directory) == 0o700
    assert any(directory.rglob("*")), "the node wrote no files"
    assert _loose_modes(directory) == {}

    for path in [directory, *directory.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    caplog.set_level(logging.INFO, logger="splitlog_runtime.private_files")
    start(base_config, tmp_path, "n0").stop()

    assert _mode(directory) == 0o700
    assert _loose_modes(directory) == {}
    assert any(f"under {directory}" in record.getMessage() for record in caplog.records)


def _temporaries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.suffix == ".tmp")


def test_atomic_write_creates_private_file(tmp_path):
    target = tmp_path / "state.json"
    previous = os.umask(0)
    try:
        private_files.write_file_atomically(target, b'{"epoch": 1}\n')
    finally:
        os.umask(previous)

    assert target.read_bytes() == b'{"epoch": 1}\n'
    assert _mode(target) == 0o600
    assert _temporaries(tmp_path) == []


def test_atomic_write_replaces_existing_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"an older and much longer content\n")
    os.chmod(target, 0o644)
    old_inode = os.stat(target).st_ino

    private_files.write_file_atomically(target, b"new")

    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600
    # A rename, not a rewrite in place: a reader that opened the old file
    # keeps reading the old content.
    assert os.stat(target).st_ino != old_inode
    assert _temporaries(tmp_path) == []


def test_failed_atomic_write_removes_temporary(tmp_path):
    # A directory at the target path makes the rename fail.
    target = tmp_path / "state.json"
    target.mkdir()

    with pytest.raises(IsADirectoryError):
        private_files.write_file_atomically(target, b"lost")

    assert target.is_dir()
    assert _temporaries(tmp_path) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["state.json"]


def test_concurrent_atomic_writes_never_mix(tmp_path):
    target = tmp_path / "state.json"
    payloads = [bytes([ord("a") + n]) * 200_000 for n in range(8)]

    def write_many(payload: bytes) -> None:
        for _ in range(20):
            private_files.write_file_atomically(target, payload)

    threads = [threading.Thread(target=write_many, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert target.read_bytes() in payloads
    assert _temporaries(tmp_path) == []
