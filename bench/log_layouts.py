"""Compare log queries on one node's entries in three partition layouts.

Run `python -m bench.log_query --entries 10000000 --data-dir DIR` first (it
keeps DIR), then `python -m bench.log_layouts DIR/log_nodes/shard-1-b/store
WORK`. The store of a node holds hour files when its entries are recent.
This module copies it into WORK three ways:

- `hourly`: the files as they are (the default layout for the last day);
- `daily`: one file per UTC day with rows in sequence (arrival) order, the
  layout that the default `log_partition_hours=24` gave before;
- `merged`: the hour files merged by `LogStore.compact` into day files
  sorted by time, the layout of days older than `log_compact_after_hours`.

Then it runs each query `--calls` times in this process and prints the
median wall time and the mean CPU time of the process per call. CPU time
is the fairer figure on a shared machine.

The load of `bench.log_query` repeats a pool of entries with the same
timestamps, so a day file sorted by time puts equal messages next to each
other. DuckDB then compresses them far better than real logs would allow,
and scans of the `merged` layout are faster than they would be on real data.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from log_service import store_sql
from log_service.store import LogStore
from splitlog.logs.v1 import node_service_pb2 as pb

HOUR_NS = 3600 * 1_000_000_000
DAY_NS = 24 * HOUR_NS
LAYOUTS = ("hourly", "daily", "merged")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _copy_daily(source: Path, target: Path) -> None:
    """Write one file per UTC day, rows in sequence order, and a format-1 state."""
    target.mkdir(parents=True)
    state = json.loads((source / "store.json").read_text())
    names = [item["name"] for item in state["files"]]
    connection = duckdb.connect()
    for index, name in enumerate(names):
        connection.execute(f"ATTACH ? AS s{index} (READ_ONLY)", [str(source / name)])
    union = " UNION ALL ".join(f"SELECT * FROM s{i}.entries" for i in range(len(names)))
    days = sorted({item["start"] // 86400 * 86400 for item in state["files"]})
    for day in days:
        name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(day)) + ".duckdb"
        connection.execute("ATTACH ? AS day", [str(target / name)])
        connection.execute(store_sql.CREATE_TABLES.format(db="day"))
        connection.execute(
            f"INSERT INTO day.entries SELECT * FROM ({union})"
            " WHERE ts >= ? AND ts < ? ORDER BY seq",
            [day * 1_000_000_000, (day + 86400) * 1_000_000_000],
        )
        connection.execute("DETACH day")
    connection.close()
    daily_state = {
        "format": 1,
        "partition_seconds": 86400,
        "last_sequence": state["last_sequence"],
    }
    (target / "store.json").write_text(json.dumps(daily_state))


def prepare(layout: str, source: Path, work: Path) -> Path:
    """Return the folder of `layout`, copying `source` into it if missing."""
    target = work / layout
    if target.exists():
        return target
    if layout == "daily":
        _copy_daily(source, target)
        return target
    shutil.copytree(source, target)
    if layout == "merged":
        store = LogStore(
            target,
            partition_seconds=3600,
            compact_after_seconds=0,
            clock=lambda: time.time_ns() + 3 * DAY_NS,
        )
        began, cpu = time.perf_counter(), _cpu()
        days = store.compact()
        print(
            f"merged {days} days in {time.perf_counter() - began:.1f} s, "
            f"{_cpu() - cpu:.1f} s CPU",
            flush=True,
        )
        store.close()
    return target


def measure(layout: str, directory: Path, calls: int) -> None:
    """Print one table row per query."""
    width = 86400 if layout == "daily" else 3600
    store = LogStore(directory, partition_seconds=width)
    partitions = list(store._partitions.values())
    low = min(p.min_ts for p in partitions if p.min_ts is not None)
    high = max(p.max_ts for p in partitions if p.max_ts is not None)
    middle = low + (high - low) // 2
    services = sorted(set().union(*(p.services for p in partitions)))

    def page(make: Callable[[int], pb.EntryFilter]) -> Callable[[int], object]:
        return lambda i: store.query(make(i), after=None, descending=True, limit=100)

    def service_hour(i: int) -> pb.EntryFilter:
        start = middle - (i % 12) * HOUR_NS
        return pb.EntryFilter(
            services=[services[i % len(services)]],
            severities=[13, 17, 21],
            start_time=start,
            end_time=start + HOUR_NS,
        )

    queries = (
        ("service+severity+1h, page 100", page(service_hour)),
        ("keyword, page 100", page(lambda i: pb.EntryFilter(keyword="timeout"))),
        (
            "keyword without a match, page 100",
            page(lambda i: pb.EntryFilter(keyword=f"absent-{i}")),
        ),
        (
            "stats, everything",
            lambda i: store.count(
                pb.EntryFilter(), histogram_start=low, histogram_step=HOUR_NS
            ),
        ),
    )
    rows = sum(p.rows for p in partitions)
    print(f"{layout}: {len(partitions)} files, {rows:,} entries", flush=True)
    for name, call in queries:
        call(0)  # one unmeasured call
        walls = []
        cpu = _cpu()
        for index in range(calls):
            began = time.perf_counter()
            call(index)
            walls.append(time.perf_counter() - began)
        walls.sort()
        print(
            f"| {layout} | {name} | {walls[len(walls) // 2] * 1e3:.1f} "
            f"| {(_cpu() - cpu) / calls * 1e3:.1f} |",
            flush=True,
        )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="A node's store folder.")
    parser.add_argument("work", type=Path, help="Folder for the copies.")
    parser.add_argument("--calls", type=int, default=10, help="Calls per query.")
    parser.add_argument(
        "--layouts", default=",".join(LAYOUTS), help="Comma-separated layouts."
    )
    args = parser.parse_args()
    print("| layout | query | p50 ms | CPU ms per call |")
    print("|---|---|---:|---:|")
    for layout in args.layouts.split(","):
        measure(layout, prepare(layout, args.store, args.work), args.calls)


if __name__ == "__main__":
    main()
