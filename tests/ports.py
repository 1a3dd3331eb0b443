"""Loopback ports for servers that a test names before they start.

A port read from a socket bound to port 0 and then closed can be taken
before the server binds it. The kernel picks such ports from its ephemeral
range (/proc/sys/net/ipv4/ip_local_port_range), and it picks from the same
range for every other port-0 bind and for the local end of every outgoing
connection. `free_ports` takes its ports from below that range instead,
where the kernel assigns none by itself. Each test process locks one block
of that pool, so test processes running side by side never hand out the
same port.

`closed_address` gives an address where connections are refused, for tests
of unreachable peers.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Linux's default ephemeral range, used when the file above cannot be read.
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)
#: The lowest port of the pool. Lower ports include many well-known services,
#: such as PostgreSQL on 5432.
POOL_START = 20000
#: Ports in each process's block. A process reuses a port of its block only
#: after handing out all the others.
BLOCK_SIZE = 256
#: One lock file per block, held with flock by the process using it. The
#: kernel drops the lock when that process exits, however it exits. Each user
#: has a folder of their own, so only the bind check in `free_ports` keeps
#: the test processes of different users apart.
LOCK_DIR = Path(tempfile.gettempdir()) / f"splitlog-test-ports-{os.getuid()}"

#: Distinct addresses that `closed_address` hands out before it reuses them.
CLOSED_SOCKET_COUNT = 8

_lock = threading.Lock()
_block_ports: Iterator[int] | None = None
# Bound sockets that never listen, held until the process exits.
_closed_sockets: list[socket.socket] = []
_closed_turns = itertools.count()
# The block's lock file, open for the process's lifetime so that it stays locked.
_block_lock_file: IO[str] | None = None


def ephemeral_range() -> tuple[int, int]:
    """Return the first and last port of the kernel's ephemeral range."""
    try:
        low, high = map(int, EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def port_pool() -> range:
    """Return the ports outside the ephemeral range that blocks come from.

    Raises:
      RuntimeError: the ephemeral range leaves no room for one block.
    """
    low, high = ephemeral_range()
    if low - POOL_START >= BLOCK_SIZE:
        return range(POOL_START, low)
    if 65535 - high >= BLOCK_SIZE:
        return range(high + 1, 65536)
    raise RuntimeError(
        f"the ephemeral port range {low}-{high} in {EPHEMERAL_RANGE_FILE} leaves "
        f"no {BLOCK_SIZE} ports between {POOL_START} and 65535 for test servers; "
        f"narrow it, for example to 32768-60999"
    )


def free_ports(count: int) -> list[int]:
    """Return `count` distinct loopback ports that are free now.

    No other test process hands out these ports, and the kernel does not
    assign them to port-0 binds or outgoing connections. A program that binds
    a fixed port can still take one, so each port is checked with a bind.

    Raises:
      RuntimeError: the pool has no block left, or this process's block has
        fewer than `count` free ports.
    """
    with _lock:
        ports = _own_block()
        found: list[int] = []
        for _ in range(BLOCK_SIZE):
            port = next(ports)
            if _is_bindable(port):
                found.append(port)
                if len(found) == count:
                    return found
    raise RuntimeError(
        f"found only {len(found)} of {count} free ports in this process's block "
        f"of {BLOCK_SIZE}; stop the servers that earlier tests left running"
    )


def _own_block() -> Iterator[int]:
    """Return this process's endless cycle over its block, locking one first."""
    global _block_ports, _block_lock_file
    if _block_ports is not None:
        return _block_ports
    pool = port_pool()
    LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    for start in range(pool.start, pool.stop - BLOCK_SIZE + 1, BLOCK_SIZE):
        lock_file = open(LOCK_DIR / f"ports-{start}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            continue
        _block_lock_file = lock_file
        _block_ports = itertools.cycle(range(start, start + BLOCK_SIZE))
        return _block_ports
    raise RuntimeError(
        f"other processes hold every block of test ports in {pool.start}-"
        f"{pool.stop - 1}; their lock files are in {LOCK_DIR}"
    )


def _is_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # gRPC, asyncio and PostgreSQL servers set SO_REUSEADDR as well, so a
        # port whose old connections linger in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def closed_address() -> str:
    """Return a 127.0.0.1 address where connections are refused.

    A socket of this process binds the port without listening and stays
    open until the process exits, so no server can take the port in the
    meantime. Later calls cycle through CLOSED_SOCKET_COUNT such ports, so
    any CLOSED_SOCKET_COUNT calls in a row return distinct addresses.
    """
    with _lock:
        if len(_closed_sockets) < CLOSED_SOCKET_COUNT:
            holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holder.bind(("127.0.0.1", 0))
            if not _closed_sockets:
                atexit.register(_close_holders)
            _closed_sockets.append(holder)
        else:
            holder = _closed_sockets[next(_closed_turns) % CLOSED_SOCKET_COUNT]
        port = holder.getsockname()[1]
    return f"127.0.0.1:{port}"


def _close_holders() -> None:
    for holder in _closed_sockets:
        holder.close()
