"""The connection probe that the CLI's clients share, against real sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from splitlog_cli.client.connection import channel_reachable
from splitlog_cli.splitwise import commands as splitwise_commands
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


def _threads_after(seconds: float, expected: int) -> int:
    """Return the number of threads once it falls to `expected`, or after
    `seconds`."""
    end = time.monotonic() + seconds
    while threading.active_count() > expected and time.monotonic() < end:
        time.sleep(0.05)
    return threading.active_count()


def _splitwise_probe(channel: grpc.Channel) -> bool:
    return splitwise_commands._connects(channel)


def _shared_probe(channel: grpc.Channel) -> bool:
    return channel_reachable(channel, PROBE_SECONDS)


@pytest.mark.parametrize(
    "probe", [_shared_probe, _splitwise_probe], ids=["shared", "splitwise"]
)
def test_failed_probe_stops_watching(
    probe: Callable[[grpc.Channel], bool], monkeypatch
):
    # grpc watches the state of a channel on a thread of its own while a
    # ready future is pending. A probe that gives up must cancel its future,
    # or the channel keeps reconnecting until it is closed.
    monkeypatch.setattr(splitwise_commands, "CONNECT_TIMEOUT", PROBE_SECONDS)
    baseline = threading.active_count()
    with grpc.insecure_channel(closed_address()) as channel:
        reached = probe(channel)
        remaining = _threads_after(2.0, baseline)

    assert not reached
    assert remaining <= baseline
