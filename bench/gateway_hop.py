"""Measure the latency that the gateway adds to a unary call.

Run `python -m bench.gateway_hop`. It starts four processes on loopback:
- a trivial UsersService backend,
- the gateway in front of it,
- a bare grpc.aio pass-through (one handler that awaits one multicallable),
  for reference,
- a gateway with its own backend in the same process, as `splitlog up` runs
  them, which calls the backend in process (`gateway/inprocess.py`).

Every backend is built by `create_server`, so it runs the error interceptor
as the services do. One sync client then calls GetUser on each in turn, in
rounds, and prints the median of the per-round p50 latencies and what each
target adds to the direct call. The pass-through shows the cost of grpc.aio
itself, so the difference between it and the gateway is the cost of the
gateway's own logic.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import grpc

from splitlog.users.v1 import users_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2_grpc as pb_grpc
from splitlog_runtime import aio
from splitlog_runtime.server import ServiceHost, create_server

_GET_USER = "/splitlog.users.v1.UsersService/GetUser"


class _Users(pb_grpc.UsersServiceServicer):
    def GetUser(self, request, context):
        return pb.GetUserResponse(user=pb.User(name=request.name, display_name="A"))


def _start_backend() -> ServiceHost:
    host = create_server(
        "user_service",
        [lambda server: pb_grpc.add_UsersServiceServicer_to_server(_Users(), server)],
        ["splitlog.users.v1.UsersService"],
        workers=4,
    )
    host.start()
    host.mark_serving()
    return host


def _serve_backend() -> None:
    host = _start_backend()
    print(host.port, flush=True)
    host.server.wait_for_termination()


async def _serve_gateway(backend_port: int) -> None:
    from gateway.app import build
    from splitlog_runtime import config as config_module

    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "user_service_addr": f"127.0.0.1:{backend_port}",
        },
    )
    gateway = await build(config, "127.0.0.1:0", "127.0.0.1:0")
    print(gateway.grpc_port, flush=True)
    await asyncio.Event().wait()


async def _serve_in_process() -> None:
    from gateway import inprocess
    from gateway.app import build
    from splitlog_runtime import config as config_module

    host = _start_backend()
    # The backend's port setting, not an address, points the gateway at it, so
    # `install` treats it as a host of this process, as `splitlog up` does.
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "user_service_port": host.port,
            "workers": 4,
        },
    )
    gateway = await build(config, "127.0.0.1:0", "127.0.0.1:0")
    inprocess.install(gateway.pool, {"user_service": host}, config)
    print(gateway.grpc_port, flush=True)
    await asyncio.Event().wait()


async def _serve_passthrough(backend_port: int) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{backend_port}")
    get_user = channel.unary_unary(_GET_USER, _registered_method=True)

    async def forward(request: bytes, context) -> bytes:
        return await get_user(request, timeout=5)

    server = grpc.aio.server()
    server.add_registered_method_handlers(
        "splitlog.users.v1.UsersService",
        {"GetUser": grpc.unary_unary_rpc_method_handler(forward)},
    )
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    await server.start()
    await server.wait_for_termination()


def _spawn(*args: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_hop", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return process, int(process.stdout.readline())


def _p50_ms(stub: pb_grpc.UsersServiceStub, calls: int) -> float:
    request = pb.GetUserRequest(name="users/bench")
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        stub.GetUser(request, timeout=5)
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies) * 1e3


def _measure(rounds: int, calls: int) -> None:
    backend, backend_port = _spawn("--role", "backend")
    processes = [backend]
    ports = {"direct": backend_port}
    try:
        for role in ("passthrough", "gateway"):
            process, ports[role] = _spawn(
                "--role", role, "--backend", str(backend_port)
            )
            processes.append(process)
        process, ports["in-process"] = _spawn("--role", "in-process")
        processes.append(process)
        channels = {
            name: grpc.insecure_channel(f"127.0.0.1:{p}") for name, p in ports.items()
        }
        stubs = {name: pb_grpc.UsersServiceStub(c) for name, c in channels.items()}
        for stub in stubs.values():
            _p50_ms(stub, 300)
        results: dict[str, list[float]] = {name: [] for name in stubs}
        for _ in range(rounds):
            for name, stub in stubs.items():
                results[name].append(_p50_ms(stub, calls))
    finally:
        for process in processes:
            process.kill()

    direct = statistics.median(results["direct"])
    for name, values in results.items():
        p50 = statistics.median(values)
        print(f"{name:12s} p50 {p50:.3f} ms, adds {p50 - direct:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--role",
        choices=["client", "backend", "gateway", "passthrough", "in-process"],
        default="client",
    )
    parser.add_argument("--backend", type=int, help="backend port (for the proxies)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds per target")
    parser.add_argument("--calls", type=int, default=400, help="calls per round")
    options = parser.parse_args()
    if options.role == "backend":
        _serve_backend()
    elif options.role == "gateway":
        aio.run(_serve_gateway(options.backend))
    elif options.role == "passthrough":
        aio.run(_serve_passthrough(options.backend))
    elif options.role == "in-process":
        aio.run(_serve_in_process())
    else:
        _measure(options.rounds, options.calls)


if __name__ == "__main__":
    main()
