"""The connection probe that the CLI's clients share, against real sockets."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from splitlog_cli.client.connection import channel_reachable
from tests.ports import closed_address

#: Seconds the probe waits in these tests.
PROBE_SECONDS = 0.5


def test_probe_reaches_running_server():
    server = grpc.server(ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reached = channel_reachable(channel, PROBE_SECONDS * 10)
    finally:
        server.stop(0)

    assert reached


def test_probe_fails_on_closed_port():
    with grpc.insecure_channel(closed_address()) as channel:
        started = time.monotonic()
        reached = channel_reachable(channel, PROBE_SECONDS)
        elapsed = time.monotonic() - started

    assert not reached
    assert elapsed < PROBE_SECONDS + 2.0
