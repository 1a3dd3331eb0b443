"""The ports that tests give to servers, and the closed addresses of absent peers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import (
    BLOCK_SIZE,
    CLOSED_SOCKET_COUNT,
    closed_address,
    ephemeral_range,
    free_ports,
    port_pool,
)

REPO = Path(__file__).resolve().parents[1]


def _block_of(port: int) -> range:
    pool = port_pool()
    start = pool.start + (port - pool.start) // BLOCK_SIZE * BLOCK_SIZE
    return range(start, start + BLOCK_SIZE)


def test_ports_outside_ephemeral_range():
    low, high = ephemeral_range()

    ports = free_ports(12)

    assert len(set(ports)) == 12
    assert [port for port in ports if low <= port <= high] == []


def test_listening_port_skipped():
    (port,) = free_ports(1)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()

        handed_out = {free_ports(1)[0] for _ in range(BLOCK_SIZE)}

    assert port not in handed_out


def test_other_process_gets_other_block():
    (port,) = free_ports(1)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from tests.ports import free_ports; "
            "print(json.dumps(free_ports(12)))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert child.returncode == 0, child.stderr
    own_block = _block_of(port)
    assert [p for p in json.loads(child.stdout) if p in own_block] == []


def test_closed_address_refuses_connections():
    host, port = closed_address().rsplit(":", 1)

    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect((host, int(port)))


def test_closed_address_cannot_be_bound():
    host, port = closed_address().rsplit(":", 1)

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError, match="in use"):
            server.bind((host, int(port)))


def test_closed_addresses_in_a_row_distinct():
    addresses = [closed_address() for _ in range(CLOSED_SOCKET_COUNT)]

    assert len(set(addresses)) == CLOSED_SOCKET_COUNT
