"""Index runs: which entries of a client's write request a batch contains.

A batch that the router sends to a node, and each write-ahead log record
made of it, lists the index of each of its entries in the client's request
(counted from 0 within that request) as runs of consecutive indexes. The
runs are stored flat, as in the protobuf field `index_runs`:
`[first index, entry count, first index, entry count, ...]`, in entry
order, with indexes that increase along the batch. Entry `i` of the batch
has the `i`-th index of the expanded runs.

The runs let a node store a retried batch at the granularity of entries:
the entries whose indexes it already stores under the batch id are
duplicates, and the others are new, such as entries that the router
rejected on the first call and accepts on the retry. An empty list of
runs stands for the whole batch, which is how batches were stored before
the runs existed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence


def runs_of(indexes: Sequence[int], offset: int = 0) -> list[int]:
    """Return the runs of increasing `indexes`, each reduced by `offset`."""
    if not indexes:
        return []
    first = indexes[0]
    if indexes[-1] - first == len(indexes) - 1:
        # Every index is present, the common case: one run.
        return [first - offset, len(indexes)]
    runs = [first - offset, 1]
    previous = first
    for index in indexes[1:]:
        if index == previous + 1:
            runs[-1] += 1
        else:
            runs += (index - offset, 1)
        previous = index
    return runs


def run_pairs(runs: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Yield the (first index, entry count) pairs of flat runs."""
    return zip(runs[::2], runs[1::2], strict=True)


def join_runs(runs: list[int], following: Sequence[int]) -> None:
    """Append `following` to `runs` in place, merging runs that touch."""
    if not following:
        return
    if runs and runs[-2] + runs[-1] == following[0]:
        runs[-1] += following[1]
        runs.extend(following[2:])
    else:
        runs.extend(following)


def slice_runs(runs: Sequence[int], start: int, stop: int) -> list[int]:
    """Return the runs of the entries at positions `start` to `stop` (exclusive)."""
    sliced: list[int] = []
    position = 0
    for first, count in run_pairs(runs):
        low = max(start - position, 0)
        high = min(stop - position, count)
        if low < high:
            join_runs(sliced, (first + low, high - low))
        position += count
        if position >= stop:
            break
    return sliced


def runs_at(runs: Sequence[int], positions: Sequence[int]) -> list[int]:
    """Return the runs of the entries at increasing `positions` of a batch.

    `runs` are the batch's runs, and position `i` is its `i`-th entry.
    """
    indexes: list[int] = []
    start = 0
    at = 0
    for first, count in run_pairs(runs):
        stop = start + count
        while at < len(positions) and positions[at] < stop:
            indexes.append(first + positions[at] - start)
            at += 1
        start = stop
    return runs_of(indexes)


def runs_error(runs: Sequence[int], count: int) -> str | None:
    """Return what is wrong with the runs of a batch of `count` entries, or None.

    Empty runs are valid: they stand for the whole batch.
    """
    if not runs:
        return None
    if len(runs) % 2:
        return f"contains {len(runs)} values; send pairs of (first index, entry count)"
    total = 0
    end = 0
    for number, (first, length) in enumerate(run_pairs(runs)):
        if length < 1:
            return f"run {number} has {length} entries; each run needs at least 1"
        if first < 0:
            return f"run {number} begins at index {first}; indexes start at 0"
        if first < end:
            return (
                f"run {number} begins at index {first}, before {end}, where the "
                "previous run ends; send increasing indexes, each once"
            )
        end = first + length
        total += length
    if total != count:
        return (
            f"covers {total} entries but the batch has {count}; send one index "
            "per entry"
        )
    return None


class HeldIndexes:
    """The request indexes that a node stores under one batch id.

    `whole` is true when a record of the batch has no runs, so the node
    stores the whole batch. Otherwise the indexes are kept as sorted,
    disjoint half-open intervals.
    """

    def __init__(self, runs_per_record: Iterable[Sequence[int]]) -> None:
        self.whole = False
        intervals: list[tuple[int, int]] = []
        for runs in runs_per_record:
            if not runs:
                self.whole = True
                return
            intervals += ((first, first + count) for first, count in run_pairs(runs))
        intervals.sort()
        merged: list[list[int]] = []
        for low, high in intervals:
            if merged and low <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        self._starts = [low for low, _ in merged]
        self._stops = [high for _, high in merged]

    def new_entries(
        self, runs: Sequence[int]
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """Return which entries of a batch with `runs` the node does not store yet.

        Returns the positions of those entries in the batch, as half-open
        (start, stop) ranges in order, and their runs. A batch without runs
        is one unit, new only when nothing is stored.
        """
        if self.whole or not runs:
            return [], []
        positions: list[tuple[int, int]] = []
        new_runs: list[int] = []
        position = 0
        for first, count in run_pairs(runs):
            for low, high in self._missing(first, first + count):
                start = position + low - first
                positions.append((start, start + high - low))
                join_runs(new_runs, (low, high - low))
            position += count
        return positions, new_runs

    def _missing(self, low: int, high: int) -> Iterator[tuple[int, int]]:
        """Yield the parts of the interval [low, high) that are not stored."""
        # The first held interval that may overlap: the last one that
        # starts at or before `low`.
        at = max(bisect.bisect_right(self._starts, low) - 1, 0)
        cursor = low
        while at < len(self._starts) and self._starts[at] < high:
            held_low, held_high = self._starts[at], self._stops[at]
            if held_high > cursor:
                if held_low > cursor:
                    yield cursor, held_low
                cursor = held_high
            at += 1
        if cursor < high:
            yield cursor, high
