"""Keep two `splitlog up` from sharing one data directory.

Two systems on the same data directory would write the same SQLite files,
log write-ahead logs and DuckDB partitions, and the second one would fail
late, deep inside DuckDB's own file lock. `splitlog up` therefore takes an
exclusive `flock` on `splitlog.lock` in the data directory before anything
starts, and writes its pid there for the message of the next one. The kernel
releases the lock when the process exits in any way, so a lock file left
behind by a crash blocks nothing.

The children of `up --processes`, and containers that share a volume, run
side by side in one data directory on purpose. So each component also has
a lock of its own. `splitlog serve COMPONENT` takes the lock of the
component it runs, and `splitlog up` in one process takes every component's
lock. A component has one only when it keeps files in the data directory:
the log router and each log node always, a service when its database is the
default SQLite file there, the gateway never.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from splitlog_cli.errors import StartupError
from splitlog_cli.topology import (
    COMPONENTS,
    COMPONENTS_BY_NAME,
    LOG_NODE,
    log_node_components,
)
from splitlog_runtime.config import Config

LOCK_FILE = "splitlog.lock"


def component_lock_file(name: str, config: Config) -> str | None:
    """Return the lock file of component `name`, or None if it needs none.

    `name` is a component of `splitlog serve`; a log node's lock is that of
    the node `config.log_node_id` names.
    """
    if name == LOG_NODE:
        return f"splitlog.{LOG_NODE}.{config.log_node_id}.lock"
    if name == "log_service":
        return f"splitlog.{name}.lock"
    component = COMPONENTS_BY_NAME.get(name)
    in_data_dir = component is not None and component.has_database
    if in_data_dir and not getattr(config, f"{name}_db_url"):
        return f"splitlog.{name}.lock"
    return None


@contextlib.contextmanager
def every_component_lock(config: Config) -> Iterator[None]:
    """Hold the lock of every component that `splitlog up` runs in one process.

    Raises:
      StartupError: another process has taken one of them.
    """
    files = [component_lock_file(c.name, config) for c in COMPONENTS]
    files += [
        component_lock_file(LOG_NODE, config.replace(log_node_id=node.node_id))
        for node in log_node_components(config)
    ]
    with contextlib.ExitStack() as stack:
        for file_name in files:
            if file_name is not None:
                stack.enter_context(data_dir_lock(config.data_dir, file_name))
        yield


@contextlib.contextmanager
def data_dir_lock(data_dir: str | Path, file_name: str = LOCK_FILE) -> Iterator[None]:
    """Hold a lock file of the data directory while the block runs.

    Raises:
      StartupError: another process holds the lock; the message names the
        directory and that process's pid.
    """
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / file_name, os.O_RDWR | os.O_CREAT, 0o600)
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
