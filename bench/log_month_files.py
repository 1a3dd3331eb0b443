"""Benchmark time range queries on old-day files, in arrival order and sorted.

`python -m bench.log_month_files --entries 100000 --calls 30` fills a
`LogStore` with `--entries` synthetic entries (`bench.log_entries`). Their
timestamps are spread at random over the first `--days` days of March 2024,
an old month. Each `LogStore.apply` call gets `--apply-entries` entries in
records of `--record-entries`, in the order that `--order` selects:

- `random`: every entry at a random place, as when files of the month are
  shipped together, or a file's lines are out of order.
- `days`: the days in random order, each day's entries in time order, as
  when daily files are shipped in no particular order.

The days have no hour files, so the entries go to the month's file until it
contains `month_file_rows` (100,000) entries, then to day files (see
docs/logs.md, "Storage"). The folder is then copied, and `LogStore.compact`
rewrites the copy's files sorted by (timestamp, sequence). The same queries
run `--calls` times on each folder, in this process, alternating between
the two, and the script prints the median wall time and the process's CPU
time per call (DuckDB's threads included) as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from bench.log_entries import KEYWORD, SERVICES, EntryFactory, append_columns
from bench.machine import cpu_model
from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2 as pb

SECOND_NS = 1_000_000_000
HOUR_NS = 3600 * SECOND_NS
DAY_NS = 24 * HOUR_NS
MONTH_START_NS = 1_709_251_200 * SECOND_NS  # 2024-03-01T00:00:00Z
MONTH_DAYS = 31
BENCH_SERVICES = SERVICES[:10]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_records(
    entries: int, record_entries: int, order: str, days: int, seed: int
) -> list[pb.LogRecord]:
    """Return `entries` entries of the first `days` days, in arrival order."""
    rand = random.Random(seed)
    stamps = sorted(
        MONTH_START_NS + rand.randrange(days * DAY_NS) for _ in range(entries)
    )
    if order == "random":
        rand.shuffle(stamps)
    else:
        days = list(range(days))
        rand.shuffle(days)
        rank = {day: position for position, day in enumerate(days)}
        stamps.sort(key=lambda ts: (rank[(ts - MONTH_START_NS) // DAY_NS], ts))
    factory = EntryFactory(seed)
    records = []
    for first in range(0, entries, record_entries):
        columns = pb.EntryColumns()
        for ts in stamps[first : first + record_entries]:
            entry = factory.entry(ts, rand.choice(BENCH_SERVICES))
            append_columns(columns, entry, ts, ts + SECOND_NS)
        records.append(pb.LogRecord(first_sequence=first + 1, entries=columns))
    return records


def open_store(directory: Path, sort_quiet_seconds: float = 3600.0) -> LogStore:
    """Open a store with a node's default partitions and no compaction thread.

    The defaults are hour files, and day or month files for days that ended
    24 hours ago. With `sort_quiet_seconds` at an hour, no `compact` call
    sorts a file that was written during the run.
    """
    return LogStore(
        directory,
        partition_seconds=3600,
        compact_after_seconds=86400,
        sort_quiet_seconds=sort_quiet_seconds,
    )


def fill(
    directory: Path, records: list[pb.LogRecord], per_apply: int
) -> tuple[float, list[str]]:
    """Apply `records` to a store in `directory`.

    Returns the CPU seconds of the applies and the partition file names.
    """
    store = open_store(directory)
    cpu = _cpu()
    for first in range(0, len(records), per_apply):
        store.apply(records[first : first + per_apply])
    spent = _cpu() - cpu
    names = sorted(p.path.name for p in store._partitions.values())
    store.close()
    return spent, names


def sort_copy(source: Path, target: Path) -> tuple[float, int]:
    """Copy the store at `source` to `target` and sort the copy with `compact`.

    Returns the CPU seconds of `LogStore.compact` and the number of files
    that it wrote.
    """
    shutil.copytree(source, target)
    store = open_store(target, sort_quiet_seconds=0)
    cpu = _cpu()
    written = store.compact()
    spent = _cpu() - cpu
    store.close()
    return spent, written


def row_groups(directory: Path) -> int:
    """Return the number of row groups in the store's partition files."""
    connection = duckdb.connect()
    groups = 0
    for index, path in enumerate(sorted(directory.glob("*.duckdb"))):
        connection.execute(f"ATTACH ? AS p{index} (READ_ONLY)", [str(path)])
        (count,) = connection.execute(
            "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info(?)",
            [f"p{index}.entries"],
        ).fetchone()
        groups += count
    connection.close()
    return groups


def disk_mb(directory: Path) -> float:
    """Return the size of the store's files after a checkpoint, in MB."""
    store = open_store(directory)
    size = store.disk_bytes()
    store.close()
    return round(size / 1e6, 1)


def queries(store: LogStore, days: int) -> list[tuple[str, Callable[[int], object]]]:
    """Return the timed queries as (name, function) pairs.

    Each function takes the call number, which picks the time window.
    """

    def page(make: Callable[[int], pb.EntryFilter], descending: bool):
        return lambda i: store.query(
            make(i), after=None, descending=descending, limit=100
        )

    def window(i: int, hours: int) -> tuple[int, int]:
        start = MONTH_START_NS + (i * 7 % max(1, days * 24 - hours)) * HOUR_NS
        return start, start + hours * HOUR_NS

    def hour(i: int) -> pb.EntryFilter:
        start, end = window(i, 1)
        return pb.EntryFilter(start_time=start, end_time=end)

    def day(i: int) -> pb.EntryFilter:
        start, end = window(i, 24)
        return pb.EntryFilter(start_time=start, end_time=end)

    def service_day(i: int) -> pb.EntryFilter:
        start, end = window(i, 24)
        return pb.EntryFilter(
            services=[BENCH_SERVICES[i % len(BENCH_SERVICES)]],
            severities=[13, 17, 21],
            start_time=start,
            end_time=end,
        )

    def keyword_day(i: int) -> pb.EntryFilter:
        start, end = window(i, 24)
        return pb.EntryFilter(keyword=KEYWORD, start_time=start, end_time=end)

    def stats(make: Callable[[int], pb.EntryFilter]):
        return lambda i: store.count(
            make(i), histogram_start=MONTH_START_NS, histogram_step=HOUR_NS
        )

    def follow(i: int) -> object:
        # A follower or a tail that resumes inside the month's sequences.
        after = i * 7919 % max(1, store.last_sequence() - 1000)
        return store.follow_page(
            after, pb.EntryFilter(), span=1000, limit=1000, max_bytes=4 << 20
        )

    return [
        ("1 h, newest 100", page(hour, True)),
        ("1 day, oldest 100", page(day, False)),
        ("service+severity+1 day, newest 100", page(service_day, True)),
        ("keyword+1 day, newest 100", page(keyword_day, True)),
        ("stats, 1 day", stats(day)),
        ("stats, everything", stats(lambda i: pb.EntryFilter())),
        ("follow 1,000 sequences", follow),
    ]


def measure(
    folders: dict[str, Path], calls: int, days: int
) -> dict[str, dict[str, tuple]]:
    """Return {layout: {query: (p50 ms, CPU ms per call)}}."""
    stores = {name: open_store(folder) for name, folder in folders.items()}
    plans = {name: queries(store, days) for name, store in stores.items()}
    results: dict[str, dict[str, tuple]] = {name: {} for name in folders}
    names = [query for query, _ in next(iter(plans.values()))]
    for position, query in enumerate(names):
        walls: dict[str, list[float]] = {name: [] for name in folders}
        cpus: dict[str, float] = dict.fromkeys(folders, 0.0)
        for layout in folders:
            plans[layout][position][1](0)  # one unmeasured call each
        for index in range(calls):
            # Alternate the layouts call by call, so load changes hit both.
            for layout in folders:
                call = plans[layout][position][1]
                cpu, began = _cpu(), time.perf_counter()
                call(index)
                walls[layout].append(time.perf_counter() - began)
                cpus[layout] += _cpu() - cpu
        for layout in folders:
            results[layout][query] = (
                statistics.median(walls[layout]) * 1e3,
                cpus[layout] / calls * 1e3,
            )
    for store in stores.values():
        store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entries",
        type=int,
        default=100_000,
        help="number of entries to apply, the month file's cap of 100,000 by default",
    )
    parser.add_argument(
        "--record-entries", type=int, default=500, help="entries per applied record"
    )
    parser.add_argument(
        "--apply-entries",
        type=int,
        default=10_000,
        help="entries per LogStore.apply call (a node's applier groups up to 10,000)",
    )
    parser.add_argument(
        "--order",
        choices=("random", "days"),
        default="random",
        help=(
            "arrival order: random puts every entry at a random place, and days "
            "shuffles the days but keeps each day's entries in time order"
        ),
    )
    parser.add_argument(
        "--days",
        type=int,
        default=MONTH_DAYS,
        help="days from 2024-03-01 that the timestamps span",
    )
    parser.add_argument("--calls", type=int, default=30, help="timed calls per query")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parser.parse_args()

    records = build_records(
        args.entries, args.record_entries, args.order, args.days, args.seed
    )
    with tempfile.TemporaryDirectory(prefix="month-files-") as scratch:
        arrival = Path(scratch) / "arrival"
        per_apply = max(1, args.apply_entries // args.record_entries)
        fill_cpu, names = fill(arrival, records, per_apply)
        sorted_folder = Path(scratch) / "sorted"
        sort_cpu, sorted_files = sort_copy(arrival, sorted_folder)
        folders = {"arrival order": arrival, "sorted by compact": sorted_folder}
        groups = {name: row_groups(folder) for name, folder in folders.items()}
        sizes = {name: disk_mb(folder) for name, folder in folders.items()}
        results = measure(folders, args.calls, args.days)

    print(
        f"{cpu_model()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, DuckDB {duckdb.__version__}"
    )
    print(
        f"{args.entries:,} entries in {len(records)} records, order {args.order}: "
        f"files {names}, applied in {fill_cpu:.2f} s CPU; compact sorted "
        f"{sorted_files} files in {sort_cpu:.2f} s CPU; row groups {groups}; "
        f"MB on disk {sizes}"
    )
    layouts = list(folders)
    header = " | ".join(f"{name}: p50 / CPU ms" for name in layouts)
    print(f"\n| query | {header} |")
    print("|---|" + "---:|" * len(layouts))
    for query in results[layouts[0]]:
        cells = " | ".join(
            "{:.1f} / {:.1f}".format(*results[name][query]) for name in layouts
        )
        print(f"| {query} | {cells} |")


if __name__ == "__main__":
    main()
