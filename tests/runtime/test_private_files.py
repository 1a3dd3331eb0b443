"""Owner-only modes of the data directory, the databases and the log store.

Each test starts real services or a real log node on 127.0.0.1 with their
data in a temporary directory, and reads the modes of the files they wrote.
The tests of `write_file_atomically` write real files in a temporary
directory. The cleanup of the temporary files that crashed writes leave runs
against a writer in another process, which is killed with SIGKILL, and at
the open of a real log node and router.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from balance_service import app as balance_app
from expense_service import app as expense_app
from log_service.app import build_router, router_data_dir
from log_service.ingest_counters import IngestCounters
from splitlog_runtime import private_files
from splitlog_runtime.database import Database
from tests.log_service.node_support import append, configure, start
from tests.ports import closed_address
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


# A writer that creates and locks its temporary file, writes part of the
# data and then waits, as `write_file_atomically` does before its rename.
_WAITING_WRITER = """
import os, sys, time
from pathlib import Path
from splitlog_runtime import private_files

descriptor, temporary = private_files._locked_temporary_file(Path(sys.argv[1]))
os.write(descriptor, b"half of the")
print(temporary, flush=True)
time.sleep(60)
"""


def _start_waiting_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WAITING_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    temporary = Path(writer.stdout.readline().strip())
    assert temporary.exists(), "the writer printed no temporary file"
    return writer, temporary


def test_killed_writer_temporary_removed(tmp_path, caplog):
    target = tmp_path / "store.json"
    target.write_bytes(b"old")
    writer, temporary = _start_waiting_writer(target)
    try:
        alive = private_files.remove_abandoned_temporary_files(target)
        kept_while_alive = temporary.exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        writer.stdout.close()
    caplog.set_level(logging.INFO, logger="splitlog_runtime.private_files")

    removed = private_files.remove_abandoned_temporary_files(target)

    assert alive == []
    assert kept_while_alive
    assert removed == [temporary]
    assert not temporary.exists()
    assert target.read_bytes() == b"old"
    assert any(temporary.name in record.getMessage() for record in caplog.records)


def test_writer_in_this_process_kept(tmp_path):
    target = tmp_path / "state.json"
    descriptor, temporary = private_files._locked_temporary_file(target)
    try:
        removed = private_files.remove_abandoned_temporary_files_in(tmp_path)
        kept = Path(temporary).exists()
    finally:
        os.close(descriptor)
        Path(temporary).unlink()

    assert removed == []
    assert kept


def test_only_matching_temporaries_removed(tmp_path):
    target = tmp_path / "state.json"
    stale = tmp_path / ".state.json.o83txp_8.tmp"
    others = [
        tmp_path / ".other.json.o83txpw8.tmp",
        tmp_path / ".state.json.short.tmp",
        tmp_path / "state.json.o83txpw8.tmp",
        tmp_path / ".state.json.o83txpw8.tmp.keep",
    ]
    for path in [stale, *others]:
        path.write_bytes(b"x")

    removed = private_files.remove_abandoned_temporary_files(target)

    assert removed == [stale]
    assert not stale.exists()
    assert all(path.exists() for path in others)


def test_directory_cleanup_walks_subdirectories(tmp_path):
    nested = tmp_path / "store"
    nested.mkdir()
    stale = [tmp_path / ".state.json.abcd1234.tmp", nested / ".store.json.o83txpw8.tmp"]
    kept = tmp_path / "notes.tmp"
    for path in [*stale, kept]:
        path.write_bytes(b"x")

    removed = private_files.remove_abandoned_temporary_files_in(tmp_path)

    assert sorted(removed) == sorted(stale)
    assert not any(path.exists() for path in stale)
    assert kept.exists()


def test_atomic_writes_survive_concurrent_cleanup(tmp_path):
    target = tmp_path / "state.json"
    stop = threading.Event()

    def clean() -> None:
        while not stop.is_set():
            private_files.remove_abandoned_temporary_files(target)

    cleaner = threading.Thread(target=clean)
    cleaner.start()
    try:
        # A cleaner may delete a temporary file before its writer locks it,
        # and the writer then starts over with a new one, so every write
        # lands and none raises.
        for n in range(300):
            private_files.write_file_atomically(target, str(n).encode())
            assert target.read_bytes() == str(n).encode()
    finally:
        stop.set()
        cleaner.join()

    assert _temporaries(tmp_path) == []


def test_log_node_removes_abandoned_temporaries(base_config, tmp_path):
    start(base_config, tmp_path, "n0").stop()
    directory = tmp_path / "n0"
    stale = [
        directory / ".state.json.abcd1234.tmp",
        directory / "store" / ".store.json.o83txpw8.tmp",
        directory / "wal" / ".epochs.json.zz99zz99.tmp",
    ]
    for path in stale:
        assert path.parent.is_dir(), f"the node has no folder {path.parent}"
        path.write_bytes(b"half of the")

    start(base_config, tmp_path, "n0").stop()

    assert [path for path in stale if path.exists()] == []


def test_router_removes_abandoned_temporaries(base_config):
    data_dir = router_data_dir(base_config)
    data_dir.mkdir(parents=True, exist_ok=True)
    stale = data_dir / ".sharding.json.abcd1234.tmp"
    stale.write_bytes(b"{")
    config = base_config.replace(log_nodes=f"shard-0=a@{closed_address()}")

    host, _ = build_router(config, "127.0.0.1:0")
    host.stop(0)

    assert not stale.exists()
    assert (data_dir / "sharding.json").exists()
