"""Table layout, filter SQL and Arrow conversions of the log store.

`LogStore` (log_service/store.py) keeps one `entries` table per time
partition. This module turns `LogRecord`s into Arrow tables for insertion,
turns an `EntryFilter` into a WHERE clause with bound parameters, and turns
query results back into `EntryColumns`. No value from a request is ever
formatted into SQL text: each one is passed as a `?` parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from splitlog.logs.v1 import node_service_pb2
from splitlog_runtime.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class Column:
    """One `EntryColumns` field and the table column that stores it."""

    field: str
    name: str
    sql_type: str
    arrow_type: pa.DataType
    default: object


# `attributes` is stored as NULL when an entry has none, so that
# json_extract_string never parses an empty string, which is invalid JSON.
COLUMNS: tuple[Column, ...] = (
    Column("timestamps", "ts", "BIGINT NOT NULL", pa.int64(), 0),
    Column("observed_timestamps", "observed_ts", "BIGINT", pa.int64(), 0),
    Column("severities", "severity", "INTEGER", pa.int32(), 0),
    Column("services", "service", "VARCHAR", pa.large_string(), ""),
    Column("hosts", "host", "VARCHAR", pa.large_string(), ""),
    Column("messages", "message", "VARCHAR", pa.large_string(), ""),
    Column("attributes", "attributes", "VARCHAR", pa.large_string(), ""),
    Column("trace_ids", "trace_id", "VARCHAR", pa.large_string(), ""),
    Column("span_ids", "span_id", "VARCHAR", pa.large_string(), ""),
    Column("truncated", "truncated", "BOOLEAN", pa.bool_(), False),
    Column("dropped_attributes_counts", "dropped_attributes", "INTEGER", pa.int32(), 0),
)


def _create_tables(uncompressed: frozenset[str]) -> str:
    """Return the CREATE TABLE statement of a partition, with `{db}` for its alias."""
    columns = ",\n    ".join(
        f"{c.name} {c.sql_type}"
        + (" USING COMPRESSION uncompressed" if c.name in uncompressed else "")
        for c in COLUMNS
    )
    return (
        "\nCREATE TABLE IF NOT EXISTS {db}.entries (\n    seq BIGINT NOT NULL,\n    "
        + columns
        + "\n)\n"
    )


CREATE_TABLES = _create_tables(frozenset())

# The table of a partition that a merge rewrites later (an hour file of a
# store with day files). DuckDB keeps its messages uncompressed, because
# choosing and building their compression (DICT_FSST) at each checkpoint was
# the costliest step of storing an entry, and the merge compresses them in
# the day file anyway. With DuckDB 2.0.1 on 2 shared cores, for the entries
# of bench.log_ingest, it took 1.4 us of CPU per row. Such a file takes about
# 1.6 times the disk (154 against 97 bytes per entry), and a keyword scan of
# 212,000 of these rows took 19 to 31 ms against 25 to 56 ms compressed.
CREATE_MERGED_LATER_TABLES = _create_tables(frozenset({"message"}))

# Columns in the order `INSERT INTO entries SELECT ...` expects them.
INSERT_SELECT = ", ".join(
    ["seq"]
    + ["NULLIF(attributes, '')" if c.name == "attributes" else c.name for c in COLUMNS]
)

# Columns a query reads, in the order `table_to_columns` expects them.
RESULT_SELECT = ", ".join(
    ["seq"]
    + [
        "coalesce(attributes, '') AS attributes" if c.name == "attributes" else c.name
        for c in COLUMNS
    ]
)


# An upper bound on the bytes of one entry in `EntryColumns`: its text
# columns, plus for each of the 11 columns a key and a length or a value of
# at most 10 bytes.
ENTRY_BYTES_SQL = " + ".join(
    [f"strlen(coalesce({c.name}, ''))" for c in COLUMNS if c.default == ""] + ["176"]
)


def chunk_select(alias: str) -> str:
    """Return the query of one chunk of a copy, bounded by entries and bytes.

    Its parameters are: the last sequence already copied, the copy's last
    sequence, the max entries, the max bytes (by `ENTRY_BYTES_SQL`), and
    the last sequence already copied again. The chunk takes the entries
    after that sequence while their running total of bytes stays within
    the bound, and always at least one.
    """
    return (
        f"WITH sized AS (SELECT seq, {ENTRY_BYTES_SQL} AS size "
        f"FROM {alias}.entries WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?), "
        "totals AS (SELECT seq, size, sum(size) OVER (ORDER BY seq) AS total "
        "FROM sized), "
        "last AS (SELECT max(seq) AS seq FROM totals WHERE total <= ? OR "
        "total = size) "
        f"SELECT {RESULT_SELECT} FROM {alias}.entries "
        "WHERE seq > ? AND seq <= (SELECT seq FROM last) ORDER BY seq"
    )


def follow_sizes_select(aliases: Sequence[str], where: str) -> str:
    """Return the query of the sequence and estimated bytes of a follow page.

    It reads the rows matching `where` in every partition of `aliases`, and
    returns the first ones in sequence order. Its parameters are those of
    `where` once per partition, then the max rows. The estimate is
    `ENTRY_BYTES_SQL`, so the caller can pick the rows that fit a byte bound
    before reading their text.
    """
    selects = [
        f"SELECT seq, {ENTRY_BYTES_SQL} AS size FROM {alias}.entries WHERE {where}"
        for alias in aliases
    ]
    return f"SELECT * FROM ({' UNION ALL '.join(selects)}) ORDER BY seq LIMIT ?"


def follow_rows_select(aliases: Sequence[str], where: str) -> str:
    """Return the query of the rows of a follow page, in sequence order.

    Its parameters are, once per partition of `aliases`, those of `where`
    followed by the last sequence of the page.
    """
    selects = [
        f"SELECT {RESULT_SELECT} FROM {alias}.entries WHERE {where} AND seq <= ?"
        for alias in aliases
    ]
    return f"SELECT * FROM ({' UNION ALL '.join(selects)}) ORDER BY seq"


def records_to_table(
    records: Sequence[node_service_pb2.LogRecord], applied_through: int
) -> pa.Table | None:
    """Build one Arrow table of the entries of `records` not applied yet.

    Entry i of a record gets sequence `first_sequence + i`. Entries at or
    below `applied_through`, and entries at or below those of an earlier
    record of the same call, are left out, so a replayed record adds nothing.

    Returns:
      The table with a `seq` column plus one column per `COLUMNS` item, or
      None when no entry is new.

    Raises:
      InvalidArgument: a record has a sequence below 1 or columns of
        different lengths.
    """
    pieces: list[tuple[node_service_pb2.EntryColumns, int, int]] = []
    sequences: list[np.ndarray] = []
    through = applied_through
    for index, record in enumerate(records):
        entries = record.entries
        count = len(entries.timestamps)
        _check_record(index, record, count)
        skip = max(0, through + 1 - record.first_sequence)
        if skip >= count:
            continue
        pieces.append((entries, skip, count))
        sequences.append(
            np.arange(
                record.first_sequence + skip,
                record.first_sequence + count,
                dtype=np.int64,
            )
        )
        through = record.first_sequence + count - 1
    if not pieces:
        return None
    seq = sequences[0] if len(sequences) == 1 else np.concatenate(sequences)
    arrays = [pa.array(seq)]
    arrays += [_column_array(column, pieces, len(seq)) for column in COLUMNS]
    names = ["seq"] + [c.name for c in COLUMNS]
    return pa.Table.from_arrays(arrays, names=names)


# Records of at least this many entries on average become one Arrow chunk
# each. Smaller ones are joined in one list first, because an Arrow call per
# record would cost more.
_ROWS_PER_CHUNK = 1000


def _column_array(
    column: Column,
    pieces: list[tuple[node_service_pb2.EntryColumns, int, int]],
    rows: int,
) -> pa.Array | pa.ChunkedArray:
    """Return one column of the entries of `pieces` (columns, skip, count).

    A column that no record sent is its default in every row, which Arrow
    repeats without a Python object per row. The default of
    `observed_timestamps` is each record's `entries.observed_timestamp`.
    The values of large records go to Arrow record by record, without a copy
    into one list first.
    """
    sources = [getattr(entries, column.field) for entries, _, _ in pieces]
    defaults = [_default(column, entries) for entries, _, _ in pieces]
    if not any(len(source) for source in sources) and len(set(defaults)) == 1:
        return pa.repeat(pa.scalar(defaults[0], column.arrow_type), rows)
    if len(pieces) == 1:
        return pa.array(sources[0][pieces[0][1] :], type=column.arrow_type)
    if rows >= len(pieces) * _ROWS_PER_CHUNK:
        return pa.chunked_array(
            [
                pa.array(source[skip:], type=column.arrow_type)
                if len(source)
                else pa.repeat(pa.scalar(default, column.arrow_type), count - skip)
                for source, default, (_, skip, count) in zip(
                    sources, defaults, pieces, strict=True
                )
            ],
            type=column.arrow_type,
        )
    values: list[object] = []
    for source, default, (_, skip, count) in zip(
        sources, defaults, pieces, strict=True
    ):
        if len(source) == 0:
            values.extend([default] * (count - skip))
        else:
            values.extend(source[skip:])
    return pa.array(values, type=column.arrow_type)


def _default(column: Column, entries: node_service_pb2.EntryColumns) -> object:
    """Return the value of `column` for every entry of `entries` when it is empty."""
    if column.field == "observed_timestamps":
        return entries.observed_timestamp
    return column.default


def _check_record(index: int, record: node_service_pb2.LogRecord, count: int) -> None:
    if record.first_sequence < 1:
        raise InvalidArgument(
            f"records[{index}].first_sequence is {record.first_sequence}; "
            "sequence numbers start at 1",
            field_violations=[
                FieldViolation(f"records[{index}].first_sequence", "must be at least 1")
            ],
        )
    for column in COLUMNS:
        length = len(getattr(record.entries, column.field))
        if length not in (0, count):
            field = f"records[{index}].entries.{column.field}"
            raise InvalidArgument(
                f"{field} has {length} values but entries.timestamps has {count}; "
                "send one value per entry, or none for the default",
                field_violations=[
                    FieldViolation(field, f"must hold {count} values or none")
                ],
            )


def table_to_columns(
    table: pa.Table,
) -> tuple[node_service_pb2.EntryColumns, list[int]]:
    """Convert rows selected with `RESULT_SELECT` to columns and sequences."""
    columns = node_service_pb2.EntryColumns()
    for column in COLUMNS:
        getattr(columns, column.field).extend(table.column(column.name).to_pylist())
    return columns, table.column("seq").to_pylist()


def json_pointer(key: str) -> str:
    """Return the JSON Pointer (RFC 6901) that selects `key` of an object.

    A pointer, unlike a JSONPath, can name any key: `~` and `/` are the only
    characters it escapes.
    """
    return "/" + key.replace("~", "~0").replace("/", "~1")


def filter_conditions(
    flt: node_service_pb2.EntryFilter, max_sequence: int
) -> tuple[list[str], list[object]]:
    """Translate a filter into WHERE conditions and their parameters.

    Args:
      flt: the filter. Its `max_sequence` is ignored here because the caller
        folds it into `max_sequence`.
      max_sequence: the highest sequence a result may have.

    Returns:
      Conditions to join with AND, and the values of their `?` parameters in
      order.
    """
    conditions = ["seq <= ?"]
    params: list[object] = [max_sequence]
    if flt.HasField("start_time"):
        conditions.append("ts >= ?")
        params.append(flt.start_time)
    if flt.HasField("end_time"):
        conditions.append("ts < ?")
        params.append(flt.end_time)
    if flt.services:
        marks = ", ".join("?" * len(flt.services))
        conditions.append(f"service IN ({marks})")
        params.extend(flt.services)
    if flt.severities:
        marks = ", ".join("?" * len(flt.severities))
        conditions.append(f"severity IN ({marks})")
        params.extend(flt.severities)
    if flt.keyword:
        # DuckDB's lower() applies the one-to-one Unicode lowercase mapping to
        # both sides: "É" finds "é" and "ẞ" finds "ß", but "SS" does not find
        # "ß" because that needs full case folding. contains() compares
        # literally, so % _ and \ in a keyword are plain characters.
        conditions.append("contains(lower(message), lower(?))")
        params.append(flt.keyword)
    for match in flt.attributes:
        conditions.append("json_extract_string(attributes, ?) = ?")
        params.extend([json_pointer(match.key), match.value])
    return conditions, params
