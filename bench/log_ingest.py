"""Measure log ingest through the router, against the gRPC transport limit.

Run `python -m bench.log_ingest`. It starts, each in its own process:
- a 2 shards x 2 replicas log cluster (`bench/log_cluster.py`): four nodes
  and the router, write quorum `all` (or `--quorum leader`), data in a
  temporary directory;
- the transport limit: a grpc.aio server (on uvloop) that parses each
  WriteLogEntries or StreamLogEntries request, adds up its entries and
  returns the count, and does nothing else.

This process is the client. It builds and serializes every request before
the measurement, then for each batch size sends the same batches to both
targets in two ways: unary WriteLogEntries from `--concurrency` callers, and
StreamLogEntries from as many concurrent streams. `--form` picks how the
requests carry the entries: `rows` (one LogEntry each), `streams` (the same
entries in LogStream columns, one stream per run of entries that share
service, host and attributes), or both, measured one after the other.
`--shape` picks the entries: `mixed` (every entry of a random service, host
and thread) or `files` (runs of 500 entries from one service, host and
file, as `splitlog logs ship` sends them). Each call gets a fresh
request id, appended to the pre-serialized batch. The table gives entries
acknowledged per second, the ratio to the limit, and p50/p99 per call (per
whole stream in stream mode).

At the end it compares the entries the router acknowledged with what the
cluster holds: GetLogStats through the router, and CountEntries on each node.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.log_cluster import CHANNEL_OPTIONS, Cluster, start_cluster
from bench.log_entries import EntryFactory
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog_runtime import aio

_SERVICE = "splitlog.logs.v1.LogsService"
_WRITE = f"/{_SERVICE}/WriteLogEntries"
_STREAM = f"/{_SERVICE}/StreamLogEntries"
_STATS = f"/{_SERVICE}/GetLogStats"

# Entries built per batch size. A measurement sends these batches in turn.
_DISTINCT_ENTRIES = 20_000


@dataclass(frozen=True)
class IngestResult:
    """Measurements of one target, batch size and mode."""

    calls: int
    entries: int
    acknowledged_total: int
    errors: int
    first_error: str
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def entries_per_second(self) -> float:
        return self.entries / self.seconds if self.seconds else 0.0


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _with_request_id(body: bytes) -> bytes:
    # Both request messages keep `request_id` in field 2, and a serialized
    # field appended to a message is parsed as part of it.
    suffix = pb.WriteLogEntriesRequest(request_id=str(uuid.uuid4()))
    return body + suffix.SerializeToString()


# Entries of one file in the `files` shape.
_FILE_ENTRIES = 500


def build_bodies(
    batch_size: int, seed: int = 1, form: str = "rows", shape: str = "mixed"
) -> list[bytes]:
    """Serialize batches of `batch_size` entries, `_DISTINCT_ENTRIES` in all.

    Every form of one shape and seed gets the same entries.
    """
    factory = EntryFactory(seed)
    now = time.time_ns()
    start = now - 600 * 1_000_000_000
    count = max(1, _DISTINCT_ENTRIES // batch_size)
    if shape == "files":
        entries = factory.files(count * batch_size, _FILE_ENTRIES, start, now)
        batches = [
            entries[i : i + batch_size] for i in range(0, len(entries), batch_size)
        ]
    else:
        batches = [factory.entries(batch_size, start, now) for _ in range(count)]
    if form == "streams":
        return [
            pb.WriteLogEntriesRequest(streams=as_streams(batch)).SerializeToString()
            for batch in batches
        ]
    return [
        pb.WriteLogEntriesRequest(entries=batch).SerializeToString()
        for batch in batches
    ]


def as_streams(entries: list[pb.LogEntry]) -> list[pb.LogStream]:
    """Return the entries as streams, one per run that shares service, host
    and attributes. They have no trace ids, observed times or severity words.
    """
    streams: list[pb.LogStream] = []
    previous = None
    for entry in entries:
        if previous is None or (
            (entry.service, entry.host) != (previous.service, previous.host)
            or entry.attributes != previous.attributes
        ):
            streams.append(
                pb.LogStream(
                    service=entry.service, host=entry.host, attributes=entry.attributes
                )
            )
        stream = streams[-1]
        stream.messages.append(entry.message)
        stream.timestamps_unix_nano.append(entry.timestamp.ToNanoseconds())
        stream.severities.append(entry.severity)
        previous = entry
    return streams


def stream_messages(batch_size: int, stream_entries: int) -> int:
    """Return how many batches one measured stream sends: 2 to 1,000."""
    return max(2, min(1000, stream_entries // batch_size))


class _Run:
    """Counters shared by the callers of one phase of a measurement."""

    def __init__(self, seconds: float) -> None:
        self.stop_at = time.perf_counter() + seconds
        self.latencies: list[float] = []
        self.entries = 0
        self.errors = 0
        self.first_error = ""
        self.counter = 0

    def record_error(self, error: grpc.aio.AioRpcError) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{error.code().name}: {error.details()}"

    def record(self, started: float, accepted: int) -> None:
        self.latencies.append(time.perf_counter() - started)
        self.entries += accepted


async def _unary_worker(channel: grpc.aio.Channel, bodies: list[bytes], run: _Run):
    call = channel.unary_unary(
        _WRITE, response_deserializer=pb.WriteLogEntriesResponse.FromString
    )
    while time.perf_counter() < run.stop_at:
        run.counter += 1
        body = _with_request_id(bodies[run.counter % len(bodies)])
        started = time.perf_counter()
        try:
            response = await call(body, timeout=120)
        except grpc.aio.AioRpcError as error:
            run.record_error(error)
            await asyncio.sleep(0.05)
            continue
        run.record(started, response.accepted_count)


async def _stream_worker(
    channel: grpc.aio.Channel, bodies: list[bytes], messages: int, run: _Run
):
    call_factory = channel.stream_unary(
        _STREAM, response_deserializer=pb.StreamLogEntriesResponse.FromString
    )
    while time.perf_counter() < run.stop_at:
        outgoing = []
        for _ in range(messages):
            run.counter += 1
            outgoing.append(_with_request_id(bodies[run.counter % len(bodies)]))
        started = time.perf_counter()
        call = call_factory(timeout=300)
        try:
            for body in outgoing:
                await call.write(body)
            await call.done_writing()
            response = await call
        except grpc.aio.AioRpcError as error:
            run.record_error(error)
            await asyncio.sleep(0.05)
            continue
        run.record(started, response.accepted_count)


async def _run_phase(
    channel: grpc.aio.Channel,
    bodies: list[bytes],
    mode: str,
    messages: int,
    concurrency: int,
    seconds: float,
) -> tuple[_Run, float]:
    run = _Run(seconds)
    if mode == "unary":
        workers = [_unary_worker(channel, bodies, run) for _ in range(concurrency)]
    else:
        workers = [
            _stream_worker(channel, bodies, messages, run) for _ in range(concurrency)
        ]
    began = time.perf_counter()
    await asyncio.gather(*workers)
    return run, time.perf_counter() - began


async def _measure(
    target: str,
    bodies: list[bytes],
    mode: str,
    messages: int,
    concurrency: int,
    seconds: float,
    warmup: float,
) -> IngestResult:
    async with grpc.aio.insecure_channel(target, CHANNEL_OPTIONS) as channel:
        # The warm-up phase ends with its last call, so no call of it runs
        # into the measured phase. Callers start no call after `seconds`, and
        # the elapsed time runs until the last call ends.
        warm, _ = await _run_phase(channel, bodies, mode, messages, concurrency, warmup)
        run, elapsed = await _run_phase(
            channel, bodies, mode, messages, concurrency, seconds
        )
    latencies = sorted(run.latencies)
    return IngestResult(
        calls=len(latencies),
        entries=run.entries,
        acknowledged_total=warm.entries + run.entries,
        errors=warm.errors + run.errors,
        first_error=warm.first_error or run.first_error,
        seconds=elapsed,
        p50_ms=statistics.median(latencies) * 1e3 if latencies else float("nan"),
        p99_ms=_percentile(latencies, 0.99) * 1e3 if latencies else float("nan"),
    )


def measure(
    target: str,
    bodies: list[bytes],
    mode: str,
    *,
    messages: int = 1,
    concurrency: int = 4,
    seconds: float = 10.0,
    warmup: float = 2.0,
) -> IngestResult:
    """Send `bodies` to `target` in `mode` (`unary` or `stream`) and measure."""
    return aio.run(
        _measure(target, bodies, mode, messages, concurrency, seconds, warmup)
    )


# --- the transport limit -----------------------------------------------------


async def _serve_counter() -> None:
    counted = 0

    def entry_count(request) -> int:
        streamed = sum(len(stream.messages) for stream in request.streams)
        return len(request.entries) + streamed

    async def write(request: pb.WriteLogEntriesRequest, context):
        nonlocal counted
        counted += entry_count(request)
        return pb.WriteLogEntriesResponse(accepted_count=entry_count(request))

    async def stream(requests, context):
        nonlocal counted
        batches = entries = 0
        async for request in requests:
            batches += 1
            entries += entry_count(request)
        counted += entries
        return pb.StreamLogEntriesResponse(batch_count=batches, accepted_count=entries)

    async def stats(request: pb.GetLogStatsRequest, context):
        return pb.GetLogStatsResponse(total_count=counted)

    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    server.add_registered_method_handlers(
        _SERVICE,
        {
            "WriteLogEntries": grpc.unary_unary_rpc_method_handler(
                write,
                request_deserializer=pb.WriteLogEntriesRequest.FromString,
                response_serializer=pb.WriteLogEntriesResponse.SerializeToString,
            ),
            "StreamLogEntries": grpc.stream_unary_rpc_method_handler(
                stream,
                request_deserializer=pb.StreamLogEntriesRequest.FromString,
                response_serializer=pb.StreamLogEntriesResponse.SerializeToString,
            ),
            "GetLogStats": grpc.unary_unary_rpc_method_handler(
                stats,
                request_deserializer=pb.GetLogStatsRequest.FromString,
                response_serializer=pb.GetLogStatsResponse.SerializeToString,
            ),
        },
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def start_counter() -> tuple[subprocess.Popen, str]:
    """Start the transport-limit server in a subprocess; return it and its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.log_ingest", "--role", "counter"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if not line.strip():
        process.kill()
        raise RuntimeError("the transport-limit server did not start")
    return process, f"127.0.0.1:{int(line)}"


def total_count(target: str) -> int:
    """Return GetLogStats' total_count from the router or the counter."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            _STATS,
            request_serializer=pb.GetLogStatsRequest.SerializeToString,
            response_deserializer=pb.GetLogStatsResponse.FromString,
        )
        return call(pb.GetLogStatsRequest(), timeout=600).total_count


# --- the run -----------------------------------------------------------------


def _row(batch: int, mode: str, result: IngestResult, limit: IngestResult) -> str:
    ratio = (
        result.entries_per_second / limit.entries_per_second
        if limit.entries_per_second
        else float("nan")
    )
    return (
        f"| {batch:,} | {mode} | {result.calls} | {result.entries_per_second:,.0f} "
        f"| {limit.entries_per_second:,.0f} | {ratio:.2f} | {result.p50_ms:.2f} "
        f"| {result.p99_ms:.2f} | {limit.p50_ms:.2f} | {result.errors} |"
    )


def process_cpu_seconds(pid: int) -> float:
    """Return the user and system CPU seconds a process has used (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name may contain spaces; the fields after it do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_cpu(cluster: Cluster) -> dict[str, float]:
    """Return the CPU seconds used so far by each process of the cluster."""
    return {
        name: process_cpu_seconds(process.pid)
        for name, process in cluster.processes.items()
    }


def _cpu_line(before: dict[str, float], after: dict[str, float], entries: int) -> str:
    if not entries:
        return "  cpu: no entries acknowledged"
    used = {name: after[name] - before[name] for name in after}
    nodes = sum(seconds for name, seconds in used.items() if name != "router")
    parts = [f"{name} {seconds / entries * 1e6:.2f}" for name, seconds in used.items()]
    return (
        f"  cpu us/entry: router {used.get('router', 0.0) / entries * 1e6:.2f}, "
        f"nodes together {nodes / entries * 1e6:.2f} ({', '.join(parts)})"
    )


def _print_header(quorum: str, concurrency: int, seconds: float) -> None:
    print(
        f"\nquorum {quorum}, {concurrency} concurrent callers or streams, "
        f"{seconds:g} s per row\n"
    )
    print(
        "| batch | mode | calls | entries/s | limit entries/s | ratio "
        "| p50 ms | p99 ms | limit p50 ms | errors |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def _check_counts(
    cluster: Cluster | None, acknowledged: int, limit_target: str, limit_acked: int
) -> None:
    counted = total_count(limit_target)
    print(f"\ntransport limit: acknowledged {limit_acked:,}, counted {counted:,}")
    if cluster is None:
        return
    print(f"cluster: acknowledged {acknowledged:,} entries")
    try:
        print(f"cluster: GetLogStats total_count {cluster.router_total():,}")
    except grpc.RpcError as error:
        print(f"cluster: GetLogStats failed: {error.code().name}: {error.details()}")
    try:
        for node, count in cluster.node_counts().items():
            print(f"cluster: node {node} holds {count:,}")
    except grpc.RpcError as error:
        print(f"cluster: CountEntries failed: {error.code().name}: {error.details()}")


def run(args: argparse.Namespace) -> None:
    """Start the targets, measure every batch size and mode, and print the table."""
    batches = [int(text) for text in args.batches.split(",")]
    modes = args.modes.split(",")
    forms = args.form.split(",")
    counter, limit_target = start_counter()
    cluster = None
    temp = None
    try:
        if not args.limit_only:
            data_dir = args.data_dir
            if data_dir is None:
                temp = tempfile.TemporaryDirectory(prefix="splitlog-ingest-")
                data_dir = Path(temp.name)
            cluster = start_cluster(data_dir, quorum=args.quorum)
            print(f"cluster ready at {cluster.router_address}, data in {data_dir}")
        _print_header(args.quorum, args.concurrency, args.seconds)
        acknowledged = limit_acked = 0
        failures = []
        cpu_lines: list[str] = []
        for batch in batches:
            bodies = {
                form: build_bodies(batch, form=form, shape=args.shape) for form in forms
            }
            for mode, form in itertools.product(modes, forms):
                messages = stream_messages(batch, args.stream_entries)
                label = mode if mode == "unary" else f"stream x{messages}"
                if len(forms) > 1:
                    label += f", {form}"
                options = dict(
                    messages=messages,
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                    warmup=args.warmup,
                )
                limit = measure(limit_target, bodies[form], mode, **options)
                limit_acked += limit.acknowledged_total
                result = limit
                cpu_line = ""
                if cluster is not None:
                    before = cluster_cpu(cluster)
                    result = measure(
                        cluster.router_address, bodies[form], mode, **options
                    )
                    cpu_line = _cpu_line(
                        before, cluster_cpu(cluster), result.acknowledged_total
                    )
                    acknowledged += result.acknowledged_total
                if result.first_error:
                    failures.append(f"{batch} {label}: {result.first_error}")
                print(_row(batch, label, result, limit), flush=True)
                if cpu_line and args.cpu:
                    cpu_lines.append(f"{batch} {label}:{cpu_line}")
        for line in cpu_lines:
            print(line)
        for failure in failures:
            print(f"first error, {failure}")
        _check_counts(cluster, acknowledged, limit_target, limit_acked)
    finally:
        if cluster is not None:
            cluster.stop()
        counter.terminate()
        counter.wait()
        if temp is not None and not args.keep_data:
            temp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["client", "counter"], default="client")
    parser.add_argument(
        "--batches", default="1,100,1000,10000", help="Batch sizes in entries."
    )
    parser.add_argument(
        "--modes", default="unary,stream", help="`unary`, `stream` or both."
    )
    parser.add_argument(
        "--form",
        default="rows",
        help="`rows` (LogEntry messages), `streams` (LogStream columns) or both.",
    )
    parser.add_argument(
        "--shape",
        choices=["mixed", "files"],
        default="mixed",
        help="Entries of random services, hosts and threads, or runs of one file.",
    )
    parser.add_argument(
        "--quorum", choices=["all", "leader"], default="all", help="log_write_quorum."
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="Concurrent callers or streams."
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="Measured seconds per row."
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="Unmeasured seconds before each row."
    )
    parser.add_argument(
        "--stream-entries",
        type=int,
        default=5_000,
        help="Entries one measured stream carries (2 to 1,000 batches).",
    )
    parser.add_argument(
        "--limit-only",
        action="store_true",
        help="Measure only the transport limit, without a cluster.",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="After the table, print the CPU each cluster process used per entry.",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="Cluster data directory; default a temp dir."
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="Keep the temporary data directory."
    )
    args = parser.parse_args()
    if args.role == "counter":
        aio.run(_serve_counter())
        return
    run(args)


if __name__ == "__main__":
    main()
