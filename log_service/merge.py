"""Merge per-shard query results into one order across shards.

Entries are ordered by (timestamp, shard, sequence): shard ids break ties
between shards and sequence numbers break ties within one, so the order is
total and a cursor on it never skips or repeats an entry.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from log_service.tokens import Cursor

_T = TypeVar("_T")

MAX_SEQUENCE = 2**63 - 1


def shard_cursor(cursor: Cursor, shard: str) -> tuple[int, int]:
    """Return the (timestamp, sequence) position to resume one shard from.

    A node returns entries strictly after the position (strictly before it
    when descending). Entries of shards ordered before the cursor's shard
    with the cursor's timestamp come before the cursor, those of shards
    ordered after it come after it, in either direction.
    """
    if shard < cursor.shard:
        return cursor.timestamp, MAX_SEQUENCE
    if shard == cursor.shard:
        return cursor.timestamp, cursor.sequence
    return cursor.timestamp, 0


class Row(Generic[_T]):
    """One entry of one shard with its sort key."""

    __slots__ = ("cursor", "item")

    def __init__(self, cursor: Cursor, item: _T) -> None:
        self.cursor = cursor
        self.item = item

    @property
    def key(self) -> tuple[int, str, int]:
        return self.cursor.timestamp, self.cursor.shard, self.cursor.sequence


def merge_rows(
    per_shard: Mapping[str, Sequence[Row[_T]]], descending: bool, limit: int
) -> list[Row[_T]]:
    """Merge rows that are sorted per shard and return the first `limit`."""
    streams: Iterable[Sequence[Row[_T]]] = per_shard.values()
    merged = heapq.merge(*streams, key=lambda row: row.key, reverse=descending)
    rows = []
    for row in merged:
        if len(rows) >= limit:
            break
        rows.append(row)
    return rows
