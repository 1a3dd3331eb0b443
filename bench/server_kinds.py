"""Compare sync `grpc.server` with `grpc.aio` for a service-like unary call.

Each server runs in its own process and serves a point lookup in a SQLite
file (the shape of GetUser). The client is the shared load generator in
another process. Run: `python -m bench.server_kinds [--seconds 5]`.

Besides calls/s and latency, each row gives the server process's CPU time
per call (user and system, from /proc), which is what bounds throughput
when the client and the servers share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sqlite3
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc

from bench.load import run_load
from bench.log_ingest import process_cpu_seconds

METHOD = "/bench.Bench/Get"
ROWS = 10_000


def _make_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        db.executemany(
            "INSERT INTO users VALUES (?, ?)",
            ((i, f"user{i}@example.com") for i in range(ROWS)),
        )


def _lookup_factory(path: Path):
    local = threading.local()

    def lookup(request: bytes, _context) -> bytes:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = sqlite3.connect(path)
        row = connection.execute(
            "SELECT email FROM users WHERE id = ?", (int(request) % ROWS,)
        ).fetchone()
        return row[0].encode()

    return lookup


def _serve_sync(path: Path, ready, port_value) -> None:
    lookup = _lookup_factory(path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.unary_unary_rpc_method_handler(lookup)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("bench.Bench", {"Get": handler})]
    )
    port_value.value = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.set()
    server.wait_for_termination()


def _serve_aio(path: Path, ready, port_value, use_uvloop: bool = False) -> None:
    lookup = _lookup_factory(path)

    async def handle(request: bytes, context) -> bytes:
        return lookup(request, context)

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(handle)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("bench.Bench", {"Get": handler})]
        )
        port_value.value = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _serve_aio_uvloop(path: Path, ready, port_value) -> None:
    _serve_aio(path, ready, port_value, use_uvloop=True)


def _request(n: int) -> bytes:
    return str(n).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        _make_db(path)
        print("| server | clients | calls/s | p50 ms | p99 ms | server CPU us/call |")
        print("|---|---|---|---|---|---|")
        for label, target in (
            ("grpc.server (sync)", _serve_sync),
            ("grpc.aio", _serve_aio),
            ("grpc.aio on uvloop", _serve_aio_uvloop),
        ):
            ready = context.Event()
            port = context.Value("i", 0)
            process = context.Process(target=target, args=(path, ready, port))
            process.start()
            ready.wait(30)
            try:
                for concurrency in (1, 8, 32):
                    target_address = f"127.0.0.1:{port.value}"
                    # Warm up apart, so that the CPU reading covers only the
                    # calls that are counted.
                    run_load(target_address, METHOD, _request, concurrency, 1.0)
                    cpu_before = process_cpu_seconds(process.pid)
                    result = run_load(
                        target_address,
                        METHOD,
                        _request,
                        concurrency,
                        seconds=options.seconds,
                        warmup=0.0,
                    )
                    cpu = process_cpu_seconds(process.pid) - cpu_before
                    cpu_us = cpu / max(result.calls, 1) * 1e6
                    print(
                        f"| {label} | {concurrency} | {result.calls_per_second:,.0f} "
                        f"| {result.p50_ms:.2f} | {result.p99_ms:.2f} | {cpu_us:.0f} |"
                    )
            finally:
                process.terminate()
                process.join()


if __name__ == "__main__":
    main()
