"""Compare the log node's DuckDB store with a plain SQLite table.

`python -m bench.log_storage --rows 1000000` prints a Markdown table.

Both stores get the same synthetic entries from `bench.log_entries` (ten
services, five severities, messages of about 140 bytes). Their timestamps
mostly increase: each entry is about `--span-hours` / `--rows` after the
previous one, and one in 50 comes up to a minute late. Entries arrive
in records of `--record-entries` entries, one record per call:

- DuckDB: `LogStore.apply`, one partition file per UTC day.
- SQLite: one table with two indexes, (service, severity, ts) and (ts, seq),
  in WAL mode with synchronous=FULL, one `executemany` per record.

Then three queries run `--queries` times each, with parameters drawn from
a seeded random generator:

- (a) one service and one severity in a one-hour window, limit 100;
- (b) a keyword, case-insensitive, newest 100;
- (c) counts by severity, by service and by (hour, severity) over all rows.

SQLite's LIKE folds ASCII letters only, so (b) is not quite the same
comparison as DuckDB's Unicode-aware lower(); with ASCII messages the
results agree.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from bench.log_entries import KEYWORD, SERVICES, EntryFactory, append_columns
from bench.machine import cpu_model
from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2

HOUR_NS = 3600 * 1_000_000_000
START_NS = 1_714_521_600 * 1_000_000_000  # 2024-05-01T00:00:00Z
BENCH_SERVICES = SERVICES[:10]
SEVERITIES = (5, 9, 13, 17, 21)  # DEBUG, INFO, WARN, ERROR, FATAL
KEYWORDS = (KEYWORD, "Timeout", "broadcast", "Expiring session", "no such text")


def build_records(
    rows: int, record_entries: int, span_hours: float, seed: int
) -> list[node_service_pb2.LogRecord]:
    """Build `rows` synthetic entries in records of `record_entries`."""
    factory = EntryFactory(seed)
    rand = random.Random(seed)
    step = int(span_hours * HOUR_NS / rows)
    records = []
    sequence = 1
    for first in range(0, rows, record_entries):
        columns = node_service_pb2.EntryColumns()
        for index in range(first, min(rows, first + record_entries)):
            ts = START_NS + index * step
            if rand.randrange(50) == 0:
                ts -= rand.randrange(60 * 1_000_000_000)
            entry = factory.entry(ts, rand.choice(BENCH_SERVICES))
            append_columns(columns, entry, ts, ts + 1_000_000)
        records.append(
            node_service_pb2.LogRecord(first_sequence=sequence, entries=columns)
        )
        sequence += len(columns.timestamps)
    return records


class DuckStore:
    """The queries of the benchmark on a `LogStore`."""

    name = "DuckDB LogStore"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store = LogStore(directory)

    def apply(self, record: node_service_pb2.LogRecord) -> None:
        self.store.apply([record])

    def finish(self) -> int:
        # Reopening checkpoints each file, so its size no longer counts a WAL.
        self.store.close()
        self.store = LogStore(self.directory)
        return self.store.disk_bytes()

    def by_service(self, service: str, severity: int, start: int) -> int:
        flt = node_service_pb2.EntryFilter(
            services=[service],
            severities=[severity],
            start_time=start,
            end_time=start + HOUR_NS,
        )
        columns, _ = self.store.query(flt, after=None, descending=False, limit=100)
        return len(columns.timestamps)

    def by_keyword(self, keyword: str) -> int:
        flt = node_service_pb2.EntryFilter(keyword=keyword)
        columns, _ = self.store.query(flt, after=None, descending=True, limit=100)
        return len(columns.timestamps)

    def counts(self) -> int:
        flt = node_service_pb2.EntryFilter()
        severity, _, _ = self.store.count(
            flt, histogram_start=START_NS, histogram_step=HOUR_NS
        )
        return sum(severity.values())

    def close(self) -> None:
        self.store.close()


class SqliteStore:
    """The same work on one SQLite table with two indexes."""

    name = "SQLite, 2 indexes"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "entries.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE entries (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL,"
            " observed_ts INTEGER, severity INTEGER, service TEXT, host TEXT,"
            " message TEXT, attributes TEXT, trace_id TEXT, span_id TEXT,"
            " truncated INTEGER, dropped_attributes INTEGER)"
        )
        self.db.execute("CREATE INDEX by_service ON entries (service, severity, ts)")
        self.db.execute("CREATE INDEX by_time ON entries (ts, seq)")

    def apply(self, record: node_service_pb2.LogRecord) -> None:
        columns = record.entries
        rows = zip(
            range(
                record.first_sequence, record.first_sequence + len(columns.timestamps)
            ),
            columns.timestamps,
            columns.observed_timestamps,
            columns.severities,
            columns.services,
            columns.hosts,
            columns.messages,
            columns.attributes,
            columns.trace_ids,
            columns.span_ids,
            columns.truncated,
            columns.dropped_attributes_counts,
            strict=True,
        )
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )
        self.db.execute("COMMIT")

    def finish(self) -> int:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sum(
            path.stat().st_size for path in self.path.parent.glob(self.path.name + "*")
        )

    def by_service(self, service: str, severity: int, start: int) -> int:
        rows = self.db.execute(
            "SELECT * FROM entries WHERE service = ? AND severity = ?"
            " AND ts >= ? AND ts < ? ORDER BY ts, seq LIMIT 100",
            (service, severity, start, start + HOUR_NS),
        ).fetchall()
        return len(rows)

    def by_keyword(self, keyword: str) -> int:
        pattern = "%" + keyword.replace("\\", "\\\\").replace("%", "\\%")
        pattern = pattern.replace("_", "\\_") + "%"
        rows = self.db.execute(
            "SELECT * FROM entries WHERE message LIKE ? ESCAPE '\\'"
            " ORDER BY ts DESC, seq DESC LIMIT 100",
            (pattern,),
        ).fetchall()
        return len(rows)

    def counts(self) -> int:
        severity = self.db.execute(
            "SELECT severity, count(*) FROM entries GROUP BY severity"
        ).fetchall()
        self.db.execute(
            "SELECT service, count(*) FROM entries GROUP BY service"
        ).fetchall()
        self.db.execute(
            "SELECT (ts - ?) / ?, severity, count(*) FROM entries GROUP BY 1, 2",
            (START_NS, HOUR_NS),
        ).fetchall()
        return sum(count for _, count in severity)

    def close(self) -> None:
        self.db.close()


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def time_calls(calls: Iterator[Callable[[], int]]) -> tuple[float, float]:
    """Run each call; return p50 and p99 in milliseconds."""
    samples = []
    for call in calls:
        begin = time.perf_counter()
        call()
        samples.append((time.perf_counter() - begin) * 1000)
    return statistics.median(samples), percentile(samples, 0.99)


def measure(store, records, args) -> dict[str, object]:
    begin = time.perf_counter()
    for record in records:
        store.apply(record)
    seconds = time.perf_counter() - begin
    disk = store.finish()
    rand = random.Random(args.seed)
    hours = max(1, int(args.span_hours) - 1)

    def service_calls() -> Iterator[Callable[[], int]]:
        for _ in range(args.queries):
            service = rand.choice(BENCH_SERVICES)
            severity = rand.choice(SEVERITIES)
            start = START_NS + rand.randrange(hours) * HOUR_NS
            yield partial(store.by_service, service, severity, start)

    def keyword_calls() -> Iterator[Callable[[], int]]:
        for _ in range(args.queries):
            keyword = rand.choice(KEYWORDS)
            yield partial(store.by_keyword, keyword)

    def count_calls() -> Iterator[Callable[[], int]]:
        for _ in range(args.count_queries):
            yield store.counts

    print(f"{store.name}: stored, now querying", file=sys.stderr)
    result = {
        "rows/s": args.rows / seconds,
        "bytes/row": disk / args.rows,
        "a": time_calls(service_calls()),
        "b": time_calls(keyword_calls()),
        "c": time_calls(count_calls()),
    }
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="entries to store")
    parser.add_argument(
        "--record-entries", type=int, default=10_000, help="entries per record"
    )
    parser.add_argument(
        "--span-hours", type=float, default=72.0, help="hours the timestamps cover"
    )
    parser.add_argument(
        "--queries", type=int, default=200, help="runs of each query per store"
    )
    parser.add_argument(
        "--count-queries",
        type=int,
        default=20,
        help="runs of the count query per store; SQLite needs seconds per run",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument(
        "--directory", type=Path, default=None, help="where to put the files"
    )
    args = parser.parse_args()

    begin = time.perf_counter()
    records = build_records(args.rows, args.record_entries, args.span_hours, args.seed)
    built = time.perf_counter() - begin
    results = {}
    with tempfile.TemporaryDirectory(dir=args.directory) as scratch:
        for kind in (DuckStore, SqliteStore):
            directory = Path(scratch) / kind.__name__
            directory.mkdir()
            results[kind.name] = measure(kind(directory), records, args)

    print(
        f"Machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {cpu_model()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}. "
        f"{args.rows:,} entries in records of {args.record_entries:,} over "
        f"{args.span_hours:g} hours (built in {built:.0f} s); {args.queries} runs "
        f"per query, {args.count_queries} for (c), where p99 is then the maximum.\n"
    )
    print(
        "| store | apply rows/s | disk bytes/row "
        "| (a) service+severity+1 h p50 / p99 ms "
        "| (b) keyword p50 / p99 ms | (c) counts p50 / p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        cells = [f"{result['rows/s']:,.0f}", f"{result['bytes/row']:.1f}"]
        for key in ("a", "b", "c"):
            p50, p99 = result[key]
            cells.append(f"{p50:.1f} / {p99:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
