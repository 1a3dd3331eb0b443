"""Tests of index runs and of the node's batch index that contains them."""

from __future__ import annotations

import json

import pytest

from log_service.index_runs import (
    HeldIndexes,
    join_runs,
    runs_at,
    runs_error,
    runs_of,
    slice_runs,
)
from log_service.node_state import BatchIndex


def expand(runs: list[int]) -> list[int]:
    return [
        index
        for first, count in zip(runs[::2], runs[1::2], strict=True)
        for index in range(first, first + count)
    ]


@pytest.mark.parametrize(
    ("indexes", "offset", "runs"),
    [
        ([], 0, []),
        ([3, 4, 5], 0, [3, 3]),
        ([10, 11, 12], 10, [0, 3]),
        ([0, 2, 3, 7], 0, [0, 1, 2, 2, 7, 1]),
        ([5, 6, 9], 5, [0, 2, 4, 1]),
    ],
)
def test_runs_of_indexes(indexes, offset, runs):
    assert runs_of(indexes, offset) == runs


def test_join_runs_merges_touching_runs():
    runs = [0, 2]

    join_runs(runs, [2, 3, 9, 1])
    join_runs(runs, [11, 1])
    join_runs(runs, [])

    assert runs == [0, 5, 9, 1, 11, 1]


@pytest.mark.parametrize(("start", "stop"), [(0, 6), (0, 1), (1, 4), (2, 3), (3, 6)])
def test_slice_runs_matches_expanded_slice(start, stop):
    runs = [0, 2, 5, 3, 20, 1]

    assert expand(slice_runs(runs, start, stop)) == expand(runs)[start:stop]


@pytest.mark.parametrize(
    "positions", [[], [0], [0, 1, 2, 3, 4, 5], [1, 2, 4], [2, 3], [5], [0, 5]]
)
def test_runs_at_matches_expanded_positions(positions):
    runs = [2, 2, 7, 1, 10, 3]  # indexes 2 3 7 10 11 12

    picked = runs_at(runs, positions)

    assert expand(picked) == [expand(runs)[p] for p in positions]


@pytest.mark.parametrize(
    ("runs", "count", "message"),
    [
        ([0, 2, 4], 2, "contains 3 values"),
        ([0, 0], 0, "run 0 has 0 entries"),
        ([0, 3, 2, 1], 4, "run 1 begins at index 2, before 3"),
        ([0, 3], 4, "covers 3 entries but the batch has 4"),
        ([-1, 2], 2, "run 0 begins at index -1; indexes start at 0"),
    ],
)
def test_runs_error_names_problem(runs, count, message):
    error = runs_error(runs, count)

    assert error is not None
    assert message in error


def test_runs_error_accepts_valid_and_empty_runs():
    assert runs_error([0, 2, 5, 1], 3) is None
    assert runs_error([], 7) is None


def test_new_entries_of_partly_held_batch():
    held = HeldIndexes([[5, 5], [0, 1, 2, 1]])
    runs = [0, 10]

    positions, new_runs = held.new_entries(runs)

    assert positions == [(1, 2), (3, 5)]
    assert new_runs == [1, 1, 3, 2]


def test_new_entries_maps_positions_through_gaps():
    # The batch contains indexes 2, 3, 8, 9, 10 at positions 0 to 4.
    held = HeldIndexes([[3, 1, 9, 1]])

    positions, new_runs = held.new_entries([2, 2, 8, 3])

    assert positions == [(0, 1), (2, 3), (4, 5)]
    assert expand(new_runs) == [2, 8, 10]


def test_new_entries_when_all_or_none_held():
    held = HeldIndexes([[0, 4]])

    assert held.new_entries([0, 4]) == ([], [])
    assert held.new_entries([1, 2]) == ([], [])
    assert held.new_entries([4, 2]) == ([(0, 2)], [4, 2])


def test_batch_without_runs_is_held_whole():
    assert HeldIndexes([[0, 2], []]).new_entries([5, 3]) == ([], [])
    assert HeldIndexes([[0, 2]]).new_entries([]) == ([], [])


def test_batch_index_holds_each_record(tmp_path):
    index = BatchIndex(tmp_path / "batches.json")
    index.add("a", 1, 3, (5, 3))
    index.add("b", 4, 2, (0, 2))
    index.add("a", 6, 5, (0, 5))

    held = index.held("a")

    assert index.held("unknown") is None
    assert (held.first, held.count, held.last) == (1, 8, 10)
    assert held.indexes.new_entries([0, 10]) == ([(8, 10)], [8, 2])


def test_drop_after_keeps_head_of_cut_record(tmp_path):
    index = BatchIndex(tmp_path / "batches.json")
    index.add("a", 1, 3, (0, 3))
    index.add("b", 4, 6, (2, 2, 10, 4))
    index.add("c", 10, 1, (0, 1))

    index.drop_after(6)

    assert index.held("c") is None
    held = index.held("b")
    assert (held.first, held.count, held.last) == (4, 3, 6)
    assert held.indexes.new_entries([2, 2, 10, 4]) == ([(3, 6)], [11, 3])
    assert len(index) == 2


def test_saved_records_keep_runs(tmp_path):
    path = tmp_path / "batches.json"
    index = BatchIndex(path, limit=2)
    index.add("a", 1, 2, (0, 2))
    index.add("b", 3, 1, ())
    index.add("a", 4, 2, (4, 2))
    index.add("c", 6, 4, (0, 4))

    index.save_through(5)
    loaded = BatchIndex(path)
    loaded.load()

    assert json.loads(path.read_text()) == [["b", 3, 1, []], ["a", 4, 2, [4, 2]]]
    assert loaded.held("a").indexes.new_entries([0, 6]) == ([(0, 4)], [0, 4])
    assert loaded.held("b").indexes.whole
    assert loaded.held("c") is None


def test_file_without_runs_holds_batches_whole(tmp_path):
    path = tmp_path / "batches.json"
    path.write_text(json.dumps([["a", 1, 3]]))
    index = BatchIndex(path)

    index.load()

    assert index.held("a").indexes.new_entries([0, 5]) == ([], [])


def test_trim_drops_oldest_ended_records(tmp_path):
    index = BatchIndex(tmp_path / "batches.json", limit=1)
    index.add("a", 1, 2, (0, 2))
    index.add("b", 3, 2, (0, 2))
    index.add("a", 5, 1, (2, 1))
    index.add("c", 6, 1, (0, 1))

    index.trim(5)

    assert index.held("b") is None
    held = index.held("a")
    assert (held.first, held.count) == (5, 1)
    assert index.held("c") is not None


def test_record_added_again_keeps_its_place(tmp_path):
    index = BatchIndex(tmp_path / "batches.json")
    index.add("a", 1, 2, (0, 2))
    index.add("b", 3, 2, (0, 2))
    index.add("a", 1, 2, (0, 2))

    index.drop_after(2)

    assert index.held("b") is None
    assert index.held("a").count == 2
