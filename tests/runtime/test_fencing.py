"""GroupWrites: the count of writes in flight per group, and the wait for them."""

from __future__ import annotations

import threading
import time

import pytest

from splitlog_runtime.fencing import GroupWrites

GROUP = "groups/g1"
OTHER = "groups/g2"


def _wait_in_thread(writes: GroupWrites, timeout: float):
    result: list[tuple[int, float]] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        began = time.monotonic()
        remaining = writes.wait_for_earlier(GROUP, timeout)
        result.append((remaining, time.monotonic() - began))

    thread = threading.Thread(target=wait)
    thread.start()
    assert started.wait(5)
    return thread, result


def _wait_until_waiting(writes: GroupWrites) -> None:
    """Wait until a thread is inside `wait_for_earlier`, so it has taken its
    snapshot of the writes in flight."""
    deadline = time.monotonic() + 5
    while writes._waiting == 0:
        assert time.monotonic() < deadline, "no thread entered wait_for_earlier"
        time.sleep(0.001)


def test_wait_without_writes_returns_at_once():
    writes = GroupWrites()
    with writes.track(OTHER):
        assert writes.wait_for_earlier(GROUP, 5.0) == 0


def test_wait_ends_when_write_ends():
    writes = GroupWrites()
    tracked = writes.track(GROUP)
    tracked.__enter__()
    thread, result = _wait_in_thread(writes, timeout=10.0)
    time.sleep(0.1)
    assert not result
    tracked.__exit__(None, None, None)
    thread.join(5)
    remaining, waited = result[0]
    assert remaining == 0
    # Woken by the write's end, long before the timeout.
    assert waited < 5.0


def test_wait_times_out_with_count():
    writes = GroupWrites()
    with writes.track(GROUP), writes.track(GROUP):
        assert writes.wait_for_earlier(GROUP, 0.05) == 2


def test_wait_skips_later_writes():
    writes = GroupWrites()
    first = writes.track(GROUP)
    first.__enter__()
    thread, result = _wait_in_thread(writes, timeout=10.0)
    _wait_until_waiting(writes)
    with writes.track(GROUP):
        first.__exit__(None, None, None)
        thread.join(5)
        assert result
    assert result[0][0] == 0


def test_failed_write_leaves_count():
    writes = GroupWrites()
    with pytest.raises(RuntimeError), writes.track(GROUP):
        raise RuntimeError("write failed")
    assert writes.wait_for_earlier(GROUP, 0.05) == 0
