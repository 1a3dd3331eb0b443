"""Time the first log query after shipping a file of scattered old dates.

Run `python -m bench.log_first_query FILE --service NAME`. It starts
`splitlog up` (one process, authentication off, 3 log shards of 2
replicas) on free loopback ports, or 16 ports from `--base-port`, with a
fresh data directory. It sets a retention long enough for the file's
dates, ships FILE with `splitlog logs ship`, and then at once sends
`GET /logs?services=NAME&pageSize=5` to the REST port until `--queries` of
them (3 by default) succeeded. A leader serves a read only once its store
contains every entry committed before the read, so the first query waits
for the shipped entries to reach the partition files. With dates spread
over many old days, every replica creates a file per month of them (a file
per day before month files).

`--store-days N` starts no server: it applies one entry on each of N old
days to a `LogStore` in this process, once with a file per day
(`month_file_rows=0`, the layout before month files) and once with the
defaults (old days without files of their own share a file per month), and
prints the files created and the CPU time of each.

The output gives the ship's time, each query's status and time, the
partition files on disk and the process's peak resident memory.
`--sharding` picks `time` (with `--bucket-seconds`, 60 by default) or
`service`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.log_cluster import free_ports

_READY_SECONDS = 120.0
_PORT_SETTINGS = (
    "SPLITLOG_GATEWAY_PORT",
    "SPLITLOG_HTTP_PORT",
    "SPLITLOG_USER_SERVICE_PORT",
    "SPLITLOG_EXPENSE_SERVICE_PORT",
    "SPLITLOG_BALANCE_SERVICE_PORT",
    "SPLITLOG_LOG_SERVICE_PORT",
)


def _environment(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    if args.base_port:
        ports = list(range(args.base_port, args.base_port + len(_PORT_SETTINGS)))
        node_port = args.base_port + 10
    else:
        ports = free_ports(len(_PORT_SETTINGS))
        # The 6 nodes take consecutive ports from this one. Nothing checks
        # that those are free, so pass --base-port to choose them.
        node_port = free_ports(1)[0]
    env.update(zip(_PORT_SETTINGS, map(str, ports), strict=True))
    env["SPLITLOG_LOG_NODE_PORT"] = str(node_port)
    env["SPLITLOG_HOST"] = "127.0.0.1"
    env["SPLITLOG_AUTH_REQUIRED"] = "false"
    env["SPLITLOG_DATA_DIR"] = str(data_dir)
    env["SPLITLOG_LOG_SHARDS"] = "3"
    env["SPLITLOG_LOG_SHARDING"] = args.sharding
    env["SPLITLOG_LOG_TIME_BUCKET_SECONDS"] = str(args.bucket_seconds)
    return env


# `python -m splitlog_cli.main` does not run `main`, so call it as the
# installed `splitlog` script does.
_CLI = "import sys; from splitlog_cli.main import main; sys.exit(main())"


def _splitlog(env: dict[str, str], *arguments: str) -> None:
    command = [sys.executable, "-c", _CLI, *arguments]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


def _get(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.perf_counter() - started


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run(args: argparse.Namespace, data_dir: Path) -> None:
    env = _environment(args, data_dir)
    log = (data_dir.parent / "up.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", _CLI, "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + _READY_SECONDS
        while b"is ready" not in (data_dir.parent / "up.log").read_bytes():
            if server.poll() is not None or time.monotonic() > deadline:
                output = (data_dir.parent / "up.log").read_text(errors="replace")
                raise SystemExit(
                    "splitlog up exited or was not ready within "
                    f"{_READY_SECONDS:.0f} s; its output:\n{output[-4000:]}"
                )
            time.sleep(0.5)
        _splitlog(
            env, "logs", "retention", "set", "--service", f"{args.service}=36500d"
        )
        started = time.perf_counter()
        ship = ["logs", "ship", str(args.file), "--service", args.service]
        _splitlog(env, *ship, "--no-positions")
        print(f"ship: {time.perf_counter() - started:.2f} s")
        url = (
            f"http://127.0.0.1:{env['SPLITLOG_HTTP_PORT']}/logs"
            f"?services={args.service}&pageSize=5"
        )
        # Queries go on until `--queries` of them have succeeded, since the
        # first ones may run out of their deadline.
        succeeded = 0
        shipped = time.perf_counter()
        for number in range(1, args.queries + 20):
            status, seconds = _get(url)
            print(f"query {number}: HTTP {status} in {seconds:.3f} s")
            if status == 200 and not succeeded:
                waited = time.perf_counter() - shipped
                print(f"until the first answer: {waited:.2f} s")
            succeeded += status == 200
            if succeeded == args.queries:
                break
        files = len(list(data_dir.rglob("*.duckdb")))
        print(f"partition files: {files}")
        print(f"peak resident memory: {_peak_rss_kib(server.pid) / 1024:.0f} MiB")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def measure_store(days: int, work: Path) -> None:
    """Print the CPU time of one apply over `days` old days, in both layouts."""
    # Imported here so that the server run needs no DuckDB in this process.
    from log_service.store import MONTH_FILE_MAX_ROWS, LogStore
    from splitlog.logs.v1 import node_service_pb2 as pb

    day_ns = 86400 * 1_000_000_000
    now = time.time_ns()
    # One entry an hour into each of `days` days that ended a year ago.
    first_day = (now - 365 * day_ns) // day_ns * day_ns - days * day_ns
    stamps = [first_day + day * day_ns + 3600 * 1_000_000_000 for day in range(days)]
    entries = pb.EntryColumns(
        timestamps=stamps,
        severities=[9] * days,
        services=["bench"] * days,
        messages=[f"entry {day}" for day in range(days)],
    )
    for label, month_rows in (("day files", 0), ("month files", MONTH_FILE_MAX_ROWS)):
        directory = work / label.replace(" ", "-")
        store = LogStore(
            directory,
            partition_seconds=3600,
            compact_after_seconds=86400,
            month_file_rows=month_rows,
        )
        try:
            started = time.process_time()
            store.apply([pb.LogRecord(first_sequence=1, entries=entries)])
            cpu = time.process_time() - started
        finally:
            store.close()
        files = len(list(directory.glob("*.duckdb")))
        print(
            f"store, {label}: {files} files for {days} days in {cpu:.2f} s of CPU;"
            f" {cpu / files * 1000:.2f} ms per file, {cpu / days * 1000:.2f} ms"
            " per day"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, nargs="?", help="log file to ship")
    parser.add_argument("--service", default="bench-first-query")
    parser.add_argument("--sharding", choices=("time", "service"), default="time")
    parser.add_argument("--bucket-seconds", type=int, default=60)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="first of 16 loopback ports to use (0: free ports from the system)",
    )
    parser.add_argument(
        "--store-days",
        type=int,
        default=0,
        help="instead of a server, time one LogStore apply over this many old days",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="splitlog-first-query-") as work:
        if args.store_days:
            measure_store(args.store_days, Path(work) / "store")
            return
        if args.file is None:
            parser.error("FILE is required unless --store-days is given")
        data_dir = Path(work) / "data"
        data_dir.mkdir()
        run(args, data_dir)


if __name__ == "__main__":
    main()
