"""Measure what the trigram filters add to a log store insert, in one process.

Run `python -m bench.keyword_filter`. It builds `--batches` batches of
`--batch` synthetic entries (`bench/log_entries.py`, messages of about 140
bytes) with timestamps spread over the last `--span-hours` hours, then, best
of `--repeat`:

- applies them to a fresh `LogStore` with hour partitions and prints the
  process CPU time per entry, trigram filters included;
- adds the same messages to one `TrigramFilter` and prints its CPU time per
  entry, the part of the insert that the filters cost when a batch lies in
  one partition.

To compare with a store without filters, run the first step on an older
checkout of `log_service` (PYTHONPATH) and the same arguments.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from bench.log_entries import EntryFactory
from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2

_HOUR_NS = 3600 * 1_000_000_000


def _records(batch: int, batches: int, span_ns: int) -> list:
    factory = EntryFactory(seed=7)
    now = time.time_ns()
    records = []
    sequence = 1
    for entries in factory.batches(batch * batches, batch, now - span_ns, now):
        columns = node_service_pb2.EntryColumns(
            timestamps=[
                e.timestamp.seconds * 10**9 + e.timestamp.nanos for e in entries
            ],
            severities=[e.severity for e in entries],
            services=[e.service for e in entries],
            hosts=[e.host for e in entries],
            messages=[e.message for e in entries],
        )
        records.append(
            node_service_pb2.LogRecord(first_sequence=sequence, entries=columns)
        )
        sequence += len(entries)
    return records


def _apply_cpu_us(records: list, entries: int) -> float:
    directory = Path(tempfile.mkdtemp(prefix="keyword-filter-"))
    store = LogStore(directory / "store", partition_seconds=3600)
    try:
        started = time.process_time()
        for record in records:
            store.apply([record])
        return (time.process_time() - started) / entries * 1e6
    finally:
        store.close()
        shutil.rmtree(directory)


def _filter_cpu_us(records: list, entries: int) -> float | None:
    try:
        from log_service.keyword_index import TrigramFilter
    except ImportError:
        return None  # a checkout without the filters
    columns = [pa.array(list(r.entries.messages), pa.large_string()) for r in records]
    trigrams = TrigramFilter()
    started = time.process_time()
    for messages in columns:
        trigrams.add(messages)
    return (time.process_time() - started) / entries * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10_000, help="entries per batch")
    parser.add_argument("--batches", type=int, default=20, help="number of batches")
    parser.add_argument(
        "--span-hours", type=int, default=1, help="hours the timestamps spread over"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best counts")
    args = parser.parse_args()
    records = _records(args.batch, args.batches, args.span_hours * _HOUR_NS)
    entries = args.batch * args.batches
    apply_us = min(_apply_cpu_us(records, entries) for _ in range(args.repeat))
    print(f"LogStore.apply: {apply_us:.3f} us of CPU per entry")
    filter_runs = [_filter_cpu_us(records, entries) for _ in range(args.repeat)]
    if filter_runs[0] is None:
        print("TrigramFilter.add: not in this checkout")
    else:
        best = min(run for run in filter_runs if run is not None)
        print(f"TrigramFilter.add: {best:.3f} us of CPU per entry")


if __name__ == "__main__":
    main()
