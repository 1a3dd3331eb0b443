"""Measure the delay from a write to its arrival on TailLogEntries.

Run `python -m bench.log_tail`. It starts a 2 x 2 log cluster
(`bench/log_cluster.py`), or uses a running router given with `--router`.
One client process runs a tailer and a writer on one event loop: the tailer
follows TailLogEntries for the service `bench-tail`, and the writer sends one
entry at a time with WriteLogEntries, `--interval` seconds apart. Each
entry's message carries its number. The delay is the time from the start of
its write call to its arrival on the tail stream, and both ends read the same
clock.

It prints p50, p99 and max of the delay, and counts entries that were
acknowledged but never arrived within 5 s after the last write.

`python -m bench.log_tail --replay N` measures catch-up instead: it opens a
tail over every service and keeps its first resume token, stores N entries of
`bench/log_entries.py` (12 services, so both shards get some) with
WriteLogEntries calls of 1,000 entries, with timestamps spread over the last
`--spread-hours`, and waits until every node's store contains them. Then it
opens a tail with that token and reads until all N entries arrived or were
reported skipped. It prints the time to the first entry, the total time,
entries per second, and the CPU time per entry of this client and, when it
started the cluster, of the router and the nodes. It also checks that every
entry arrived exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.log_cluster import CHANNEL_OPTIONS, start_cluster
from bench.log_entries import EntryFactory
from bench.log_ingest import cluster_cpu
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc as pb_grpc
from splitlog_runtime import aio

_SERVICE = "bench-tail"
_PREFIX = "tail probe "
# How long the tailer keeps waiting for missing entries after the last write.
_DRAIN_SECONDS = 5.0
# Entries per WriteLogEntries call and calls in flight while --replay stores
# its entries.
_REPLAY_BATCH = 1000
_REPLAY_WRITERS = 4
# Maximum wait for a replayed tail to deliver every entry.
_REPLAY_TIMEOUT_SECONDS = 900.0


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _probe(number: int) -> bytes:
    now = time.time_ns()
    entry = pb.LogEntry(
        timestamp=Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000),
        severity=pb.SEVERITY_INFO,
        service=_SERVICE,
        host="bench",
        message=f"{_PREFIX}{number}",
    )
    request = pb.WriteLogEntriesRequest(entries=[entry], request_id=str(uuid.uuid4()))
    return request.SerializeToString()


async def _measure(target: str, count: int, interval: float, warmup: int):
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    first_arrival = asyncio.Event()
    errors: list[str] = []
    async with grpc.aio.insecure_channel(target, CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.LogsServiceStub(channel)
        write = channel.unary_unary(
            "/splitlog.logs.v1.LogsService/WriteLogEntries",
            response_deserializer=pb.WriteLogEntriesResponse.FromString,
        )
        tail = stub.TailLogEntries(pb.TailLogEntriesRequest(services=[_SERVICE]))

        async def follow() -> None:
            try:
                async for response in tail:
                    now = time.perf_counter()
                    for entry in response.entries:
                        if entry.message.startswith(_PREFIX):
                            arrived.setdefault(int(entry.message[len(_PREFIX) :]), now)
                            first_arrival.set()
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.CANCELLED:
                    errors.append(f"tail: {error.code().name}: {error.details()}")

        follower = asyncio.create_task(follow())
        # The stream starts after the newest stored entry, so unmeasured probes
        # are sent until one arrives.
        number = -1
        deadline = time.monotonic() + 30
        while not first_arrival.is_set() and time.monotonic() < deadline:
            try:
                await write(_probe(number), timeout=10)
            except grpc.aio.AioRpcError as error:
                errors.append(f"warm-up write: {error.code().name}: {error.details()}")
            number -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_arrival.wait(), 0.5)
        if not first_arrival.is_set():
            tail.cancel()
            raise RuntimeError("no entry arrived on the tail stream within 30 s")
        for number in range(count + warmup):
            body = _probe(number)
            started = time.perf_counter()
            try:
                await write(body, timeout=10)
            except grpc.aio.AioRpcError as error:
                errors.append(f"write {number}: {error.code().name}: {error.details()}")
            else:
                sent[number] = started
            await asyncio.sleep(interval)
        drain_until = time.monotonic() + _DRAIN_SECONDS
        while time.monotonic() < drain_until and not set(sent) <= set(arrived):
            await asyncio.sleep(0.05)
        tail.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    return sent, arrived, errors


@dataclass
class ReplayResult:
    """Result of one catch-up from a resume token: entries delivered and rate."""

    stored: int
    store_seconds: float
    first_entry_seconds: float
    caught_up_seconds: float
    received: int
    missing: int
    repeated: int
    skipped: int
    responses: int
    # CPU seconds during the catch-up, by process name ("client" for this one).
    cpu_seconds: dict[str, float]


def _store_entries(stub, count: int, spread_hours: float) -> tuple[list[str], float]:
    """Store `count` entries; return their messages and the seconds it took.

    Each message ends with its number, so every message is distinct.
    """
    factory = EntryFactory()
    now = time.time_ns()
    start = now - int(spread_hours * 3600 * 1_000_000_000)
    batches = []
    messages = []
    for first in range(0, count, _REPLAY_BATCH):
        entries = factory.entries(min(_REPLAY_BATCH, count - first), start, now)
        for number, entry in enumerate(entries, first):
            entry.message += f" #{number}"
            messages.append(entry.message)
        batches.append(
            pb.WriteLogEntriesRequest(entries=entries, request_id=str(uuid.uuid4()))
        )
    started = time.perf_counter()
    with ThreadPoolExecutor(_REPLAY_WRITERS) as pool:
        for response in pool.map(
            lambda request: stub.WriteLogEntries(request, timeout=120), batches
        ):
            if response.rejected_count:
                raise RuntimeError(f"{response.rejected_count} entries rejected")
    return messages, time.perf_counter() - started


def _wait_until_applied(stub) -> None:
    """Wait until every node's store contains what the writes stored.

    A write returns once its entries are in the write-ahead logs, and each
    node moves them into its store a moment later. GetLogStats waits for
    that, so the replay times the tail and not the store's catch-up.
    """
    deadline = time.monotonic() + _REPLAY_TIMEOUT_SECONDS
    while True:
        try:
            stub.GetLogStats(pb.GetLogStatsRequest(), timeout=60)
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass
class _Replayed:
    received: collections.Counter[str]
    skipped: int
    responses: int
    first_entry_seconds: float
    caught_up_seconds: float


def _replay(stub, token: str, count: int) -> _Replayed:
    """Tail from `token` until `count` entries arrived or were skipped."""
    replayed = _Replayed(collections.Counter(), 0, 0, 0.0, 0.0)
    started = time.perf_counter()
    call = stub.TailLogEntries(
        pb.TailLogEntriesRequest(resume_token=token), timeout=_REPLAY_TIMEOUT_SECONDS
    )
    try:
        for response in call:
            replayed.responses += 1
            replayed.skipped += response.skipped_count
            if response.entries and not replayed.first_entry_seconds:
                replayed.first_entry_seconds = time.perf_counter() - started
            replayed.received.update(entry.message for entry in response.entries)
            if replayed.received.total() + replayed.skipped >= count:
                break
    finally:
        call.cancel()
    replayed.caught_up_seconds = time.perf_counter() - started
    return replayed


def measure_replay(
    target: str,
    count: int,
    spread_hours: float,
    cpu_seconds: Callable[[], dict[str, float]] = dict,
) -> ReplayResult:
    """Store `count` entries after a resume token, then time a tail from it.

    `cpu_seconds` returns the CPU seconds used so far by each server process.
    """
    with grpc.insecure_channel(target, CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.LogsServiceStub(channel)
        call = stub.TailLogEntries(pb.TailLogEntriesRequest())
        token = next(call).resume_token
        call.cancel()
        messages, store_seconds = _store_entries(stub, count, spread_hours)
        _wait_until_applied(stub)
        before = {**cpu_seconds(), "client": time.process_time()}
        replayed = _replay(stub, token, count)
        after = {**cpu_seconds(), "client": time.process_time()}
    expected = set(messages)
    received = replayed.received
    return ReplayResult(
        stored=count,
        store_seconds=store_seconds,
        first_entry_seconds=replayed.first_entry_seconds,
        caught_up_seconds=replayed.caught_up_seconds,
        received=received.total(),
        missing=len(expected - received.keys()),
        repeated=sum(n - 1 for n in received.values() if n > 1)
        + sum(n for m, n in received.items() if m not in expected),
        skipped=replayed.skipped,
        responses=replayed.responses,
        cpu_seconds={name: after[name] - before[name] for name in after},
    )


def _print_replay(quorum: str, result: ReplayResult) -> None:
    print(
        f"\nquorum {quorum}, {result.stored} entries stored in "
        f"{result.store_seconds:.1f} s, then one tail from a resume token "
        "taken before them\n"
    )
    print(
        "| received | skipped | missing | repeated | first entry s | caught up s "
        "| received/s | responses | CPU us/entry: router, nodes, client |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    rate = result.received / result.caught_up_seconds
    used = result.cpu_seconds
    nodes = sum(s for name, s in used.items() if name not in ("router", "client"))
    per_entry = [used.get("router"), nodes if "router" in used else None]
    per_entry.append(used["client"])
    cpu = ", ".join(
        "-" if seconds is None else f"{seconds / result.stored * 1e6:.1f}"
        for seconds in per_entry
    )
    print(
        f"| {result.received} | {result.skipped} | {result.missing} "
        f"| {result.repeated} | {result.first_entry_seconds:.2f} "
        f"| {result.caught_up_seconds:.2f} | {rate:,.0f} | {result.responses} "
        f"| {cpu} |"
    )


def run(args: argparse.Namespace) -> None:
    """Start or reach the cluster, measure the tail delay and print it."""
    cluster = None
    temp = None
    try:
        target = args.router
        if target is None:
            temp = tempfile.TemporaryDirectory(prefix="splitlog-tail-")
            cluster = start_cluster(Path(temp.name), quorum=args.quorum)
            target = cluster.router_address
        if args.replay:
            cpu_seconds = dict if cluster is None else partial(cluster_cpu, cluster)
            result = measure_replay(target, args.replay, args.spread_hours, cpu_seconds)
            _print_replay(args.quorum, result)
            return
        sent, arrived, errors = aio.run(
            _measure(target, args.entries, args.interval, args.warmup)
        )
    finally:
        if cluster is not None:
            cluster.stop()
        if temp is not None:
            temp.cleanup()
    measured = [n for n in sent if n >= args.warmup and n in arrived]
    delays = sorted((arrived[n] - sent[n]) * 1e3 for n in measured)
    lost = sorted(n for n in sent if n not in arrived)
    print(
        f"\nquorum {args.quorum}, one writer and one tailer, "
        f"{args.interval * 1e3:g} ms between writes\n"
    )
    print("| entries | p50 ms | p99 ms | max ms | acknowledged, never arrived |")
    print("|---:|---:|---:|---:|---:|")
    if delays:
        print(
            f"| {len(delays)} | {statistics.median(delays):.2f} "
            f"| {_percentile(delays, 0.99):.2f} | {delays[-1]:.2f} | {len(lost)} |"
        )
    else:
        print(f"| 0 | - | - | - | {len(lost)} |")
    for error in errors[:5]:
        print(error)
    if len(errors) > 5:
        print(f"... and {len(errors) - 5} more errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300, help="Measured entries.")
    parser.add_argument(
        "--warmup", type=int, default=20, help="Entries sent first, not measured."
    )
    parser.add_argument(
        "--interval", type=float, default=0.02, help="Seconds between writes."
    )
    parser.add_argument(
        "--quorum", choices=["all", "leader"], default="all", help="log_write_quorum."
    )
    parser.add_argument(
        "--router", help="host:port of a running router; default start a cluster."
    )
    parser.add_argument(
        "--replay",
        type=int,
        default=0,
        metavar="N",
        help="Measure catch-up instead: store N entries, then tail them from a "
        "resume token taken before them.",
    )
    parser.add_argument(
        "--spread-hours",
        type=float,
        default=0.1,
        help="With --replay: the stored entries' timestamps lie within this many "
        "hours before now.",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
