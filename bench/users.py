"""GetUser and CreateUser, directly against user_service and through the gateway.

user_service and the gateway each run in their own process, on SQLite in a
temporary folder; the load generator runs in this process. Run:
`python -m bench.users [--seconds 5] [--clients 1,8,32]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import platform
import sys
import tempfile
import uuid
from pathlib import Path

import grpc

from bench.load import run_load
from splitlog.users.v1 import users_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2_grpc
from splitlog_runtime import aio
from splitlog_runtime.config import load

SERVICE = "/splitlog.users.v1.UsersService"


def _config(data_dir: str, user_port: int = 0):
    return load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": Path(data_dir),
            "user_service_port": user_port,
            "log_level": "WARNING",
        },
    )


def _run_user_service(data_dir: str, ready, port) -> None:
    from user_service.app import build

    host = build(_config(data_dir), "127.0.0.1:0")
    port.value = host.port
    ready.set()
    host.server.wait_for_termination()


def _run_gateway(data_dir: str, user_port: int, ready, port) -> None:
    from gateway.app import build

    async def main() -> None:
        gateway = await build(
            _config(data_dir, user_port), "127.0.0.1:0", "127.0.0.1:0"
        )
        port.value = gateway.grpc_port
        ready.set()
        await asyncio.Event().wait()

    aio.run(main())


def _run_all_in_one(data_dir: str, ready, port) -> None:
    from gateway import inprocess
    from gateway.app import build as build_gateway
    from user_service.app import build as build_users

    async def main() -> None:
        host = build_users(_config(data_dir), "127.0.0.1:0")
        config = _config(data_dir, host.port)
        gateway = await build_gateway(config, "127.0.0.1:0", "127.0.0.1:0")
        inprocess.install(gateway.pool, {"user_service": host}, config)
        port.value = gateway.grpc_port
        ready.set()
        await asyncio.Event().wait()

    aio.run(main())


def _start(context, target, *args) -> tuple[multiprocessing.Process, int]:
    ready = context.Event()
    port = context.Value("i", 0)
    process = context.Process(target=target, args=(*args, ready, port), daemon=True)
    process.start()
    if not ready.wait(60):
        raise SystemExit(f"{target.__name__} did not start within 60 s")
    return process, port.value


def _create_user(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        stub = users_service_pb2_grpc.UsersServiceStub(channel)
        request = pb.CreateUserRequest(
            user=pb.User(email="reader@example.com", display_name="Reader"),
            user_id="bench-reader",
        )
        return stub.CreateUser(request, timeout=10).user.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,8,32")
    options = parser.parse_args()
    clients = [int(n) for n in options.clients.split(",")]
    context = multiprocessing.get_context("spawn")

    with tempfile.TemporaryDirectory() as data_dir:
        user_process, user_port = _start(context, _run_user_service, data_dir)
        gateway_process, gateway_port = _start(
            context, _run_gateway, data_dir, user_port
        )
        # A second data directory: the all-in-one process runs its own
        # user_service, so the two must not share a SQLite file.
        all_in_one_dir = tempfile.mkdtemp(dir=data_dir)
        all_in_one_process, all_in_one_port = _start(
            context, _run_all_in_one, all_in_one_dir
        )
        targets = {
            "user_service": f"127.0.0.1:{user_port}",
            "gateway (separate process)": f"127.0.0.1:{gateway_port}",
            "gateway (all-in-one)": f"127.0.0.1:{all_in_one_port}",
        }
        name = _create_user(targets["user_service"])
        get_request = pb.GetUserRequest(name=name).SerializeToString()
        # The all-in-one process has its own database: give it the same user.
        _create_user(targets["gateway (all-in-one)"])
        run_id = uuid.uuid4().hex[:8]

        sequence = itertools.count()

        def create_request(_n: int) -> bytes:
            email = f"u{run_id}-{next(sequence)}@example.com"
            user = pb.User(email=email, display_name="Bench")
            return pb.CreateUserRequest(user=user).SerializeToString()

        print(
            f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"grpcio {grpc.__version__}; {options.seconds:.0f} s per row"
        )
        print("| call | path | clients | calls/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|---|")
        for method, make_request in (
            ("GetUser", lambda n: get_request),
            ("CreateUser", create_request),
        ):
            for concurrency in clients:
                for path, target in targets.items():
                    result = run_load(
                        target,
                        f"{SERVICE}/{method}",
                        make_request,
                        concurrency,
                        seconds=options.seconds,
                    )
                    print(
                        f"| {method} | {path} | {concurrency} "
                        f"| {result.calls_per_second:,.0f} | {result.p50_ms:.2f} "
                        f"| {result.p99_ms:.2f} | {result.errors} |",
                        flush=True,
                    )
                    if result.first_error:
                        print(f"first error: {result.first_error}", file=sys.stderr)
        for process in (all_in_one_process, gateway_process, user_process):
            process.terminate()
            process.join()


if __name__ == "__main__":
    main()
