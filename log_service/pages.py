"""Byte budgets of query pages, so each response fits in `max_message_bytes`.

A node returns at most `limit` entries from QueryEntries, and the router at
most `page_size` from ListLogEntries. With entries of several KiB each, either
response could exceed `max_message_bytes`, and the receiver would reject it.
So both stop before the first entry that would not fit in the budget, but
always send the first entry: a stored entry fits in `max_message_bytes`.
"""

from __future__ import annotations

from collections.abc import Sequence

from splitlog.logs.v1 import node_service_pb2

# Bytes kept free for the fields of a response other than its entries: column
# headers, `last_sequence` and `size_limited` from a node, and the page token
# from the router. The token carries a sequence number per shard, about 30
# bytes each, so this margin covers an estimated 500 shards.
RESPONSE_MARGIN_BYTES = 16 * 1024
# The repeated fields, which hold one value per entry. The scalar
# `observed_timestamp` is left out.
_FIELDS = tuple(
    f for f in node_service_pb2.EntryColumns.DESCRIPTOR.fields if f.is_repeated
)
_STRING_COLUMNS = tuple(f.name for f in _FIELDS if f.type == f.TYPE_STRING)
# Upper bound of the bytes that one entry adds to `EntryColumns` beyond the
# text of its strings. Each string takes a tag and a length prefix of up to 5
# bytes. Each number, `truncated` and the sequence number take up to 10 bytes.
_ENTRY_FRAMING_BYTES = 6 * len(_STRING_COLUMNS) + 10 * (
    len(_FIELDS) - len(_STRING_COLUMNS) + 1
)


def page_budget(max_message_bytes: int) -> int:
    """Return the bytes of entries that one query response may carry."""
    return max(max_message_bytes - RESPONSE_MARGIN_BYTES, 1)


def fit_columns(
    columns: node_service_pb2.EntryColumns, sequences: list[int], budget: int
) -> bool:
    """Drop the trailing entries that do not fit in `budget` bytes.

    The first entry always stays. Returns whether entries were dropped.
    """
    if columns.ByteSize() + len(sequences) * 10 <= budget:
        return False
    strings = [getattr(columns, name) for name in _STRING_COLUMNS]
    sizes = [
        _ENTRY_FRAMING_BYTES + sum(len(column[index].encode()) for column in strings)
        for index in range(len(sequences))
    ]
    fitting = fitting_count(sizes, budget)
    if fitting == len(sequences):
        return False
    for field in _FIELDS:
        del getattr(columns, field.name)[fitting:]
    del sequences[fitting:]
    return True


def fitting_count(sizes: Sequence[int], budget: int) -> int:
    """Return how many of the leading items of `sizes` fit in `budget`, at least 1."""
    used = 0
    for count, size in enumerate(sizes):
        if count and used + size > budget:
            return count
        used += size
    return len(sizes)
