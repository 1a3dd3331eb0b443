"""Tests of the write-ahead log and its epoch history, on real files."""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import resource
import signal
import threading

import pytest

from log_service.wal import (
    DAMAGE_FILE,
    SEGMENT_SUFFIX,
    ZERO_FILL_ALIGNMENT,
    EpochHistory,
    EpochStart,
    RecordsPurged,
    WriteAheadLog,
    entry_count,
)
from splitlog.logs.v1 import node_service_pb2


def make_record(first: int, count: int, epoch: int = 1, batch: str = "") -> object:
    return node_service_pb2.LogRecord(
        first_sequence=first,
        epoch=epoch,
        batch_id=batch or f"batch-{first}",
        receive_time=1_000 + first,
        entries=node_service_pb2.EntryColumns(
            timestamps=[first + i for i in range(count)],
            observed_timestamps=[first + i for i in range(count)],
            severities=[9] * count,
            services=["svc"] * count,
            hosts=[""] * count,
            messages=[f"message {first + i}" for i in range(count)],
            attributes=[""] * count,
            trace_ids=[""] * count,
            span_ids=[""] * count,
            truncated=[False] * count,
            dropped_attributes_counts=[0] * count,
        ),
    )


def sequences(records) -> list[int]:
    return [r.first_sequence + i for r in records for i in range(entry_count(r))]


def messages(records) -> list[str]:
    return [m for r in records for m in r.entries.messages]


def test_append_then_replay_after_reopen(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 3))
    wal.append(make_record(4, 2))
    wal.close()

    reopened = WriteAheadLog(tmp_path)
    replayed = list(reopened.replay())

    assert sequences(replayed) == [1, 2, 3, 4, 5]
    assert [r.batch_id for r in replayed] == ["batch-1", "batch-4"]
    assert reopened.last_sequence == 5
    assert list(reopened.replay(after=3))[0].first_sequence == 4


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Make writes past `limit` bytes fail with EFBIG, as a full disk would."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_disk_full_frame_removed(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 2))
    segment = next(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    big = make_record(3, 400)

    with file_size_limit(segment.stat().st_size + 100), pytest.raises(OSError):
        wal.append(big)
    wal.append(make_record(3, 1))
    wal.close()
    replayed = list(WriteAheadLog(tmp_path).replay())

    assert sequences(replayed) == [1, 2, 3]


def test_append_out_of_order_is_rejected(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 2))

    with pytest.raises(ValueError, match="ends at 2"):
        wal.append(make_record(5, 1))


def test_torn_tail_is_cut_on_open(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 2))
    wal.append(make_record(3, 2))
    wal.close()
    segment = next(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    size = segment.stat().st_size
    with open(segment, "r+b") as handle:
        handle.truncate(size - 5)

    reopened = WriteAheadLog(tmp_path)

    assert sequences(reopened.replay()) == [1, 2]
    assert segment.stat().st_size < size - 5
    reopened.append(make_record(3, 1))
    assert sequences(WriteAheadLog(tmp_path).replay()) == [1, 2, 3]


def test_corrupt_byte_cuts_from_that_record(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 2))
    wal.append(make_record(3, 2))
    wal.append(make_record(5, 2))
    wal.close()
    segment = next(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    data = bytearray(segment.read_bytes())
    second = wal.records()[1]
    data[second.offset + 20] ^= 0xFF
    segment.write_bytes(bytes(data))

    reopened = WriteAheadLog(tmp_path)

    assert sequences(reopened.replay()) == [1, 2]
    assert reopened.last_sequence == 2


def write_three_records(directory, segment_bytes=None):
    options = {} if segment_bytes is None else {"segment_bytes": segment_bytes}
    wal = WriteAheadLog(directory, **options)
    for first in (1, 3, 5):
        wal.append(make_record(first, 2))
    wal.close()
    return wal


def test_torn_final_record_is_no_damage(tmp_path, caplog):
    wal = write_three_records(tmp_path)
    segment = next(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    last = wal.records()[-1]
    with open(segment, "r+b") as handle:
        handle.truncate(last.offset + last.size // 2)

    reopened = WriteAheadLog(tmp_path)

    assert sequences(reopened.replay()) == [1, 2, 3, 4]
    assert reopened.damage is None
    assert not (tmp_path / DAMAGE_FILE).exists()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_zeroed_sectors_of_final_record_are_no_damage(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 2))
    wal.append(make_record(3, 200))
    wal.close()
    segment = next(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    last = wal.records()[-1]
    data = bytearray(segment.read_bytes())
    boundary = (last.offset // ZERO_FILL_ALIGNMENT + 1) * ZERO_FILL_ALIGNMENT
    assert boundary < last.offset + last.size
    data[boundary:] = bytes(len(data) - boundary + ZERO_FILL_ALIGNMENT)
    segment.write_bytes(bytes(data))

    reopened = WriteAheadLog(tmp_path)

    assert sequences(reopened.replay()) == [1, 2]
    assert reopened.damage is None


def test_flipped_byte_before_zeros_is_damage(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 2))
    wal.append(make_record(3, 200))
    wal.close()
    segment = next(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    last = wal.records()[-1]
    data = bytearray(segment.read_bytes())
    # The record's last column is 200 zeros; a flipped byte before them.
    assert data[-100:] == bytes(100)
    data[last.offset + 40] ^= 0x01
    segment.write_bytes(bytes(data))

    assert WriteAheadLog(tmp_path).damage is not None


@pytest.mark.parametrize("record", [1, 2])
def test_flipped_byte_in_complete_record_is_damage(tmp_path, caplog, record):
    wal = write_three_records(tmp_path)
    segment = next(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    info = wal.records()[record]
    data = bytearray(segment.read_bytes())
    data[info.offset + info.size - 3] ^= 0x01
    segment.write_bytes(bytes(data))

    reopened = WriteAheadLog(tmp_path)

    assert reopened.last_sequence == info.first - 1
    damage = reopened.damage
    assert damage is not None
    assert (damage.after, damage.seen_through) == (
        info.first - 1,
        6 if record == 1 else 4,
    )
    assert damage.offset == info.offset
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert f"at byte {info.offset}" in errors[0]
    assert str(segment) in errors[0]
    # The record survives a restart, and goes once cleared.
    again = WriteAheadLog(tmp_path)
    assert again.damage == damage
    again.clear_damage()
    assert WriteAheadLog(tmp_path).damage is None


def test_damaged_length_of_final_record_is_damage(tmp_path):
    wal = write_three_records(tmp_path)
    segment = next(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    last = wal.records()[-1]
    data = bytearray(segment.read_bytes())
    data[last.offset] ^= 0x40
    segment.write_bytes(bytes(data))

    reopened = WriteAheadLog(tmp_path)

    assert reopened.last_sequence == 4
    assert reopened.damage is not None


def test_damage_reports_later_segments(tmp_path):
    wal = write_three_records(tmp_path, segment_bytes=100)
    paths = sorted(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    assert len(paths) == 3
    data = bytearray(paths[0].read_bytes())
    data[20] ^= 0x01
    paths[0].write_bytes(bytes(data))

    reopened = WriteAheadLog(tmp_path)

    assert reopened.last_sequence == 0
    assert (reopened.damage.after, reopened.damage.seen_through) == (0, 6)
    assert wal.last_sequence == 6


def test_truncate_after_cuts_straddling_record(tmp_path):
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for first in (1, 4, 7, 10):
        wal.append(make_record(first, 3))

    removed = wal.truncate_after(5)

    assert removed == 7
    assert wal.last_sequence == 5
    assert sequences(wal.replay()) == [1, 2, 3, 4, 5]
    wal.append(make_record(6, 1, batch="new"))
    wal.close()
    reopened = list(WriteAheadLog(tmp_path).replay())
    assert sequences(reopened) == [1, 2, 3, 4, 5, 6]
    assert messages(reopened)[-2:] == ["message 5", "message 6"]
    assert reopened[-1].batch_id == "new"


def test_truncate_after_at_record_boundary(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 3))
    wal.append(make_record(4, 3))

    wal.truncate_after(3)

    assert sequences(WriteAheadLog(tmp_path).replay()) == [1, 2, 3]


def test_purge_keeps_last_segment_and_sequence(tmp_path):
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for first in range(1, 31, 3):
        wal.append(make_record(first, 3))
    segments_before = len(list(tmp_path.glob(f"*{SEGMENT_SUFFIX}")))

    purged = wal.purge_through(30)

    assert segments_before > 2
    assert purged > 0
    assert len(list(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))) == 1
    assert wal.last_sequence == 30
    with pytest.raises(RecordsPurged):
        wal.read_from(1, 1_000)
    wal.close()
    reopened = WriteAheadLog(tmp_path)
    assert reopened.last_sequence == 30
    assert reopened.first_sequence == wal.first_sequence


def test_purge_point_keeping_fewer_bytes_than_last_segment(tmp_path):
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for first in range(1, 31, 3):
        wal.append(make_record(first, 3))
    last_first = wal.record_at(30).first

    point = wal.purge_point_keeping(10)

    assert point == last_first - 1
    assert wal.purge_point_keeping(1_000_000) == 0


def test_purge_leaves_segments_with_newer_records(tmp_path):
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for first in range(1, 31, 3):
        wal.append(make_record(first, 3))

    wal.purge_through(10)

    assert wal.first_sequence <= 11
    assert sequences(wal.replay())[-1] == 30
    assert sequences(wal.read_from(11, 10_000))[:1] == [wal.record_at(11).first]


def test_truncate_into_purged_range_starts_over(tmp_path):
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for first in range(1, 31, 3):
        wal.append(make_record(first, 3))
    wal.purge_through(30)

    wal.truncate_after(20)
    wal.append(make_record(21, 2))
    wal.close()

    reopened = WriteAheadLog(tmp_path)
    assert reopened.last_sequence == 22
    assert sequences(reopened.replay()) == [21, 22]


class Crash(BaseException):
    """Exception that simulates the process dying at a change to the log's files."""


def crash_at_step(monkeypatch, step: int) -> None:
    """Make the `step`-th file change from now on (counted from 0) raise Crash.

    The changes counted are renames, truncations, deletions and `Path.touch`,
    which are all the ways a restart of the write-ahead log changes its files.
    Creating the temporary file that a rename then moves is not counted.
    """
    calls = itertools.count()

    def crashing(function):
        def wrapper(*args, **kwargs):
            if next(calls) == step:
                raise Crash
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(os, "replace", crashing(os.replace))
    monkeypatch.setattr(os, "truncate", crashing(os.truncate))
    monkeypatch.setattr(os, "unlink", crashing(os.unlink))
    monkeypatch.setattr(pathlib.Path, "touch", crashing(pathlib.Path.touch))


def restart_with_crash(
    directory, monkeypatch, operation: str, step: int
) -> tuple[bool, tuple[int, list[int]]]:
    """Fill a log in `directory`, then restart it by `operation`, crashing at `step`.

    Returns whether the crash happened, and the log's last sequence and its
    sequences before the restart.
    """
    wal = WriteAheadLog(directory, segment_bytes=300)
    for first in range(1, 40, 3):
        wal.append(make_record(first, 3))
    if operation == "truncate_into_purged":
        wal.purge_through(wal.purge_point(20))
    before = (wal.last_sequence, sequences(wal.replay()))
    crash_at_step(monkeypatch, step)
    try:
        if operation == "restart_after":
            wal.restart_after(100, wal.history.entries)
        else:
            wal.truncate_after(5)
    except Crash:
        return True, before
    finally:
        monkeypatch.undo()
        wal.close()
    return False, before


@pytest.mark.parametrize(
    ("operation", "restarted_last"),
    [("restart_after", 100), ("truncate_into_purged", 5)],
)
def test_restart_crash_leaves_intact_log(
    tmp_path, monkeypatch, operation, restarted_last
):
    step = 0
    crashed = True
    while crashed:
        directory = tmp_path / f"step-{step}"
        crashed, before = restart_with_crash(directory, monkeypatch, operation, step)

        reopened = WriteAheadLog(directory, segment_bytes=300)
        state = (reopened.last_sequence, sequences(reopened.replay()))

        assert reopened.damage is None, f"crash at step {step}"
        assert not (directory / DAMAGE_FILE).exists(), f"crash at step {step}"
        assert state in [before, (restarted_last, [])], f"crash at step {step}"
        reopened.close()
        step += 1
    assert step > 3


def test_read_from_respects_bytes_and_through(tmp_path):
    wal = WriteAheadLog(tmp_path, cache_bytes=1)
    for first in range(1, 11):
        wal.append(make_record(first, 1))

    one = wal.read_from(3, 1)
    bounded = wal.read_from(3, 1_000_000, through=6)

    assert sequences(one) == [3]
    assert sequences(bounded) == [3, 4, 5, 6]
    assert wal.read_from(11, 1_000) == []


def test_concurrent_appends_share_fsyncs(tmp_path):
    wal = WriteAheadLog(tmp_path)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def appender() -> None:
        try:
            for _ in range(20):
                with lock:
                    last = wal.write(make_record(wal.last_sequence + 1, 2))
                wal.sync(last)
                assert wal.durable_sequence >= last
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sequences(WriteAheadLog(tmp_path).replay()) == list(range(1, 321))


def test_epoch_history_survives_reopen(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 3, epoch=1))
    wal.history.note(2, 4)
    wal.append(make_record(4, 2, epoch=2))
    wal.append(make_record(6, 2, epoch=4))
    wal.close()

    history = WriteAheadLog(tmp_path).history

    assert history.entries == [EpochStart(1, 1), EpochStart(2, 4), EpochStart(4, 6)]
    assert history.end_of(1, 7) == 3
    assert history.end_of(3, 7) == 5
    assert history.end_of(4, 7) == 7
    assert history.epoch_at(5) == 2


def test_epoch_history_truncates_with_the_log(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(make_record(1, 3, epoch=1))
    wal.append(make_record(4, 3, epoch=2))

    wal.truncate_after(3)

    assert EpochHistory(tmp_path / "epochs.json").entries == [EpochStart(1, 1)]
    assert wal.last_record_epoch() == 1


def test_epoch_history_rejects_lower_epoch(tmp_path):
    history = EpochHistory(tmp_path / "epochs.json")
    history.note(3, 1)

    with pytest.raises(ValueError, match="must not decrease"):
        history.note(2, 10)


def test_unused_epoch_start_is_replaced(tmp_path):
    history = EpochHistory(tmp_path / "epochs.json")
    history.note(1, 1)
    history.note(5, 11)

    history.note(4, 11)

    assert history.entries == [EpochStart(1, 1), EpochStart(4, 11)]
