"""The group commit of `expense_service.grouping`, with real threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from expense_service.grouping import GroupWriter

WAIT = 10.0


class _Recorder:
    """A group writer's write function that records groups and can hold one."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.failing: set[int] = set()

    def write(self, items):
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.first_started.set()
            assert self.release_first.wait(WAIT)
        if self.failing & set(items):
            raise ValueError(f"invalid item in group {items}")
        return [item * 10 for item in items]


def _queue_behind_first(writer: GroupWriter, recorder: _Recorder, items, pool):
    """Start item 0, which blocks in the first group, then queue the other items."""
    first = pool.submit(writer.write, 0)
    assert recorder.first_started.wait(WAIT)
    later = [pool.submit(writer.write, item) for item in items]
    return first, later


def _wait_queued(writer: GroupWriter, count: int) -> None:
    for _ in range(1000):
        if writer.queued() >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} items never queued")


def test_lone_write_is_written_at_once():
    recorder = _Recorder()
    recorder.release_first.set()
    writer = GroupWriter(recorder.write, max_items=8)

    assert writer.write(4) == (True, 40)
    assert recorder.groups == [[4]]


def test_queued_writes_form_next_group():
    recorder = _Recorder()
    writer = GroupWriter(recorder.write, max_items=8)

    with ThreadPoolExecutor(max_workers=6) as pool:
        first, later = _queue_behind_first(writer, recorder, range(1, 6), pool)
        _wait_queued(writer, 5)
        recorder.release_first.set()
        results = [future.result(WAIT) for future in later]

    assert first.result(WAIT) == (True, 0)
    assert results == [(True, item * 10) for item in range(1, 6)]
    assert recorder.groups[0] == [0]
    assert sorted(recorder.groups[1]) == [1, 2, 3, 4, 5]
    assert len(recorder.groups) == 2


def test_groups_hold_at_most_max_items():
    recorder = _Recorder()
    writer = GroupWriter(recorder.write, max_items=2)

    with ThreadPoolExecutor(max_workers=6) as pool:
        _, later = _queue_behind_first(writer, recorder, range(1, 6), pool)
        _wait_queued(writer, 5)
        recorder.release_first.set()
        results = [future.result(WAIT) for future in later]

    assert results == [(True, item * 10) for item in range(1, 6)]
    assert [len(group) for group in recorder.groups] == [1, 2, 2, 1]


def test_failed_group_writes_each_alone():
    recorder = _Recorder()
    recorder.failing = {3}
    writer = GroupWriter(recorder.write, max_items=8)

    with ThreadPoolExecutor(max_workers=6) as pool:
        first, later = _queue_behind_first(writer, recorder, range(1, 6), pool)
        _wait_queued(writer, 5)
        recorder.release_first.set()
        results = [future.result(WAIT) for future in later]

    assert first.result(WAIT) == (True, 0)
    assert results == [(False, None)] * 5
    # The writer's role passed on: a later write forms a group again.
    recorder.failing = set()
    assert writer.write(7) == (True, 70)


def test_same_key_written_once_per_group():
    recorder = _Recorder()
    # Items 1 and 11 share key 1, items 2 and 12 key 2; 0 and 5 have no key.
    writer = GroupWriter(
        recorder.write, max_items=8, key=lambda item: item % 10 or None
    )

    with ThreadPoolExecutor(max_workers=6) as pool:
        first, later = _queue_behind_first(writer, recorder, [1, 11, 5, 2, 12], pool)
        _wait_queued(writer, 5)
        recorder.release_first.set()
        outcomes = [future.result(WAIT) for future in later]
        results = dict(zip([1, 11, 5, 2, 12], outcomes, strict=True))

    assert first.result(WAIT) == (True, 0)
    written = [item for item, (done, _) in results.items() if done]
    assert sorted(recorder.groups[1]) == sorted(written)
    assert len(written) == 3
    assert results[5] == (True, 50)
    assert sum(results[item][0] for item in (1, 11)) == 1
    assert sum(results[item][0] for item in (2, 12)) == 1
    assert writer.failed_groups == 0


def test_item_without_result_is_not_written():
    writer = GroupWriter(
        lambda items: [None if item == 3 else item for item in items], max_items=8
    )

    assert writer.write(3) == (False, None)
    assert writer.write(4) == (True, 4)
    assert writer.failed_groups == 0


def test_max_items_must_be_positive():
    with pytest.raises(ValueError, match="max_items must be at least 1"):
        GroupWriter(lambda items: items, max_items=0)
