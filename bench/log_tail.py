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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.log_cluster import CHANNEL_OPTIONS, start_cluster
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc as pb_grpc
from splitlog_runtime import aio

_SERVICE = "bench-tail"
_PREFIX = "tail probe "
# How long the tailer keeps waiting for missing entries after the last write.
_DRAIN_SECONDS = 5.0


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
    run(parser.parse_args())


if __name__ == "__main__":
    main()
