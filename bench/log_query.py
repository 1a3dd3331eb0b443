"""Measure log queries through the router on a loaded 2 x 2 cluster.

Run `python -m bench.log_query --entries 1000000`. It starts a cluster of two
shards with two replicas each (`bench/log_cluster.py`, each node and the
router in its own process), or uses a running router given with `--router`.
It then loads `--entries` synthetic entries (`bench/log_entries.py`) with
timestamps spread over the last `--span-hours` hours, over concurrent
StreamLogEntries streams of 10,000-entry batches, and prints the load rate.

The client builds a pool of at most `--pool-entries` distinct entries and
sends it again and again, so for large loads many entries repeat with the
same timestamp. The queries below do not depend on the entries being
distinct.

Then one client calls, one call at a time:
- `service+severity+1h`: ListLogEntries with one service, min severity WARN
  and a one-hour range, page size 100. Each call takes the next service and
  another hour of the span.
- `keyword`: ListLogEntries with keyword `timeout` (in about 1 in 30
  messages), page size 100.
- `keyword, no match`: ListLogEntries with a keyword that no message has,
  page size 100: the worst case, a scan of every message.
- `stats, everything`: GetLogStats with no filter.

and prints p50 and p99 per kind of call.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.log_cluster import CHANNEL_OPTIONS, start_cluster
from bench.log_entries import KEYWORD, SERVICES, EntryFactory
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc as pb_grpc
from splitlog_runtime import aio

_BATCH = 10_000
_ATTEMPTS = 10
_HOUR_NS = 3600 * 1_000_000_000


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def build_pool(entries: int, start_ns: int, end_ns: int) -> list[bytes]:
    """Serialize 10,000-entry StreamLogEntries batches, `entries` entries in all."""
    factory = EntryFactory(seed=7)
    return [
        pb.StreamLogEntriesRequest(entries=batch).SerializeToString()
        for batch in factory.batches(entries, _BATCH, start_ns, end_ns)
    ]


async def _load(target: str, pool: list[bytes], total: int, streams: int) -> int:
    batches = -(-total // _BATCH)
    next_batch = 0
    accepted = 0
    started = time.perf_counter()
    reported = 0
    retries = 0

    async with grpc.aio.insecure_channel(target, CHANNEL_OPTIONS) as channel:
        open_stream = channel.stream_unary(
            "/splitlog.logs.v1.LogsService/StreamLogEntries",
            response_deserializer=pb.StreamLogEntriesResponse.FromString,
        )

        async def send(messages: list[bytes]) -> int:
            call = open_stream(timeout=3600)
            for message in messages:
                await call.write(message)
            await call.done_writing()
            return (await call).accepted_count

        async def stream() -> None:
            nonlocal next_batch, accepted, reported, retries
            # One stream carries up to 10 batches, then the next one opens, so
            # a failure loses little and progress shows on the way.
            while next_batch < batches:
                messages = []
                while next_batch < batches and len(messages) < 10:
                    body = pool[next_batch % len(pool)]
                    suffix = pb.StreamLogEntriesRequest(request_id=str(uuid.uuid4()))
                    next_batch += 1
                    messages.append(body + suffix.SerializeToString())
                for attempt in range(_ATTEMPTS):
                    try:
                        count = await send(messages)
                        accepted += count
                        break
                    except grpc.aio.AioRpcError as exc:
                        # A failover under load: the same request ids make
                        # the resent batches store each entry once.
                        if exc.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        if attempt == _ATTEMPTS - 1:
                            raise
                        retries += 1
                        await asyncio.sleep(1.0)
                if accepted - reported >= total // 10:
                    reported = accepted
                    rate = accepted / (time.perf_counter() - started)
                    print(f"  loaded {accepted:,} entries, {rate:,.0f}/s", flush=True)

        await asyncio.gather(*(stream() for _ in range(streams)))
    if retries:
        print(f"  resent {retries} streams after UNAVAILABLE", flush=True)
    return accepted


def load(target: str, pool: list[bytes], total: int, streams: int) -> int:
    """Send `total` entries from `pool`; return the number acknowledged."""
    return aio.run(_load(target, pool, total, streams))


def _time_calls(call: Callable[[int], int], count: int) -> tuple[list[float], int]:
    latencies = []
    returned = 0
    for index in range(count):
        started = time.perf_counter()
        returned += call(index)
        latencies.append(time.perf_counter() - started)
    return sorted(latencies), returned


def _print_row(name: str, latencies: list[float], returned: int) -> None:
    p50 = statistics.median(latencies) * 1e3
    p99 = _percentile(latencies, 0.99) * 1e3
    average = returned / len(latencies)
    print(
        f"| {name} | {len(latencies)} | {p50:.1f} | {p99:.1f} "
        f"| {latencies[-1] * 1e3:.1f} | {average:,.0f} |",
        flush=True,
    )


def measure_queries(
    target: str, start_ns: int, end_ns: int, calls: int, stats_calls: int
) -> None:
    """Time each kind of query and print a markdown table."""
    channel = grpc.insecure_channel(target, CHANNEL_OPTIONS)
    stub = pb_grpc.LogsServiceStub(channel)
    hours = max(1, (end_ns - start_ns) // _HOUR_NS)

    def service_hour(index: int) -> int:
        hour_start = start_ns + (index % hours) * _HOUR_NS
        request = pb.ListLogEntriesRequest(
            services=[SERVICES[index % len(SERVICES)]],
            min_severity=pb.SEVERITY_WARN,
            start_time=_timestamp(hour_start),
            end_time=_timestamp(hour_start + _HOUR_NS),
            page_size=100,
        )
        return len(stub.ListLogEntries(request, timeout=600).entries)

    def keyword(index: int) -> int:
        request = pb.ListLogEntriesRequest(keyword=KEYWORD, page_size=100)
        return len(stub.ListLogEntries(request, timeout=600).entries)

    def no_match(index: int) -> int:
        request = pb.ListLogEntriesRequest(keyword=f"absent-{index}", page_size=100)
        return len(stub.ListLogEntries(request, timeout=600).entries)

    def stats(index: int) -> int:
        return stub.GetLogStats(pb.GetLogStatsRequest(), timeout=600).total_count

    print("| query | calls | p50 ms | p99 ms | max ms | entries returned, mean |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        for name, call, count in (
            ("service+severity+1h, page 100", service_hour, calls),
            ("keyword, page 100", keyword, calls),
            ("keyword without a match, page 100", no_match, stats_calls),
            ("stats, everything", stats, stats_calls),
        ):
            call(0)  # one unmeasured call, so first-use costs stay out
            latencies, returned = _time_calls(call, count)
            _print_row(name, latencies, returned)
    finally:
        channel.close()


def run(args: argparse.Namespace) -> None:
    """Start or reach the cluster, load it, and measure the queries."""
    end_ns = time.time_ns() - 60 * 1_000_000_000
    start_ns = end_ns - args.span_hours * _HOUR_NS
    cluster = None
    temp = None
    try:
        target = args.router
        if target is None:
            data_dir = args.data_dir
            if data_dir is None:
                temp = tempfile.TemporaryDirectory(prefix="splitlog-query-")
                data_dir = Path(temp.name)
            cluster = start_cluster(data_dir, quorum=args.quorum)
            target = cluster.router_address
            print(f"cluster ready at {target}, data in {data_dir}")
        if args.entries:
            began = time.perf_counter()
            pool = build_pool(min(args.entries, args.pool_entries), start_ns, end_ns)
            print(f"built {len(pool)} batches in {time.perf_counter() - began:.1f} s")
            began = time.perf_counter()
            accepted = load(target, pool, args.entries, args.streams)
            seconds = time.perf_counter() - began
            print(
                f"loaded {accepted:,} of {args.entries:,} entries in {seconds:.1f} s, "
                f"{accepted / seconds:,.0f} entries/s"
            )
            began = time.perf_counter()
            with grpc.insecure_channel(target, CHANNEL_OPTIONS) as channel:
                stats = pb_grpc.LogsServiceStub(channel).GetLogStats(
                    pb.GetLogStatsRequest(), timeout=3600
                )
            print(
                f"first GetLogStats after the load: {stats.total_count:,} entries "
                f"in {time.perf_counter() - began:.1f} s"
            )
        measure_queries(target, start_ns, end_ns, args.calls, args.stats_calls)
        if cluster is not None:
            for node, count in cluster.node_counts().items():
                print(f"node {node} holds {count:,}")
    finally:
        if cluster is not None:
            cluster.stop()
        if temp is not None and not args.keep_data:
            temp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="Entries to load; 0 loads none."
    )
    parser.add_argument(
        "--span-hours", type=int, default=24, help="Hours the timestamps spread over."
    )
    parser.add_argument(
        "--pool-entries",
        type=int,
        default=200_000,
        help="Distinct entries built; the load repeats them.",
    )
    parser.add_argument(
        "--streams", type=int, default=2, help="Concurrent load streams."
    )
    parser.add_argument(
        "--calls", type=int, default=100, help="Measured calls per list query."
    )
    parser.add_argument(
        "--stats-calls",
        type=int,
        default=20,
        help="Measured calls of the full-scan queries: no-match keyword, stats.",
    )
    parser.add_argument(
        "--quorum", choices=["all", "leader"], default="all", help="log_write_quorum."
    )
    parser.add_argument(
        "--router", help="host:port of a running router; default start a cluster."
    )
    parser.add_argument(
        "--data-dir", type=Path, help="Cluster data directory; default a temp dir."
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="Keep the temporary data directory."
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
