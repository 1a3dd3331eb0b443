"""Helpers for the gateway tests: an event loop thread, a test backend, errors,
and the record of a running stack of real services.

The gateway runs on its own asyncio loop in a background thread, so tests can
call it with ordinary sync gRPC and HTTP clients. The test backend is a real
sync gRPC server built with the shared runtime. It implements GetUser with
behaviour that the requested name selects. It also serves one server-streaming
and one client-streaming public method on raw bytes, whatever their message
types, to exercise the generic forwarding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor

from balance_service.app import build as build_balances
from expense_service.app import build as build_expenses
from gateway.app import Gateway, build
from gateway.services import public_services
from splitlog.users.v1 import users_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2_grpc as pb_grpc
from splitlog_runtime.config import Config
from splitlog_runtime.errors import NotFound, Resource
from splitlog_runtime.server import ServiceHost, create_server
from tests.loop_thread import LoopThread  # noqa: F401 (re-exported)
from tests.ports import closed_address, free_ports
from tests.rich_errors import error_details  # noqa: F401 (re-exported)
from user_service.app import build as build_users

USERS_SERVICE = "splitlog.users.v1.UsersService"


@dataclass
class Stack:
    """The real user, expense and balance services and a gateway before them."""

    users: ServiceHost
    expenses: ServiceHost
    balances: ServiceHost
    gateway: Gateway


def find_method(client_streaming: bool, server_streaming: bool) -> MethodDescriptor:
    """Return the first public method with the given streaming kind."""
    for service in public_services():
        for method in service.descriptor.methods:
            if (method.client_streaming, method.server_streaming) == (
                client_streaming,
                server_streaming,
            ):
                return method
    raise LookupError("no public method of that streaming kind")


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass
class BackendLog:
    """What the test backend observed, for the tests to check."""

    time_remaining: list[float] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    stream_time_remaining: list[float] = field(default_factory=list)
    stream_cancelled: threading.Event = field(default_factory=threading.Event)


class UsersBackend(pb_grpc.UsersServiceServicer):
    """GetUser behaviour chosen by the requested name.

    `users/slow-<ms>` sleeps that many milliseconds; `users/hang` waits until
    the call is cancelled; `users/missing` fails with a rich NOT_FOUND;
    `users/huge-trailer` returns a user with 20 KB of trailing metadata; any
    other name returns a user. Every call records its remaining deadline and
    echoes the `x-request-id` metadata in its trailing metadata.
    """

    def __init__(self, log: BackendLog) -> None:
        self.log = log

    def GetUser(self, request, context):
        self.log.time_remaining.append(context.time_remaining())
        echoed = [
            ("x-echo-request-id", value)
            for key, value in context.invocation_metadata()
            if key == "x-request-id"
        ]
        context.set_trailing_metadata(echoed)
        if request.name.startswith("users/slow-"):
            time.sleep(int(request.name.removeprefix("users/slow-")) / 1000)
        elif request.name == "users/hang":
            context.add_callback(self.log.cancelled.set)
            self.log.hanging.set()
            deadline = time.monotonic() + 10
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
            return pb.GetUserResponse()
        elif request.name == "users/huge-trailer":
            # Far over the 8 KiB metadata limit of the gateway's channel.
            context.set_trailing_metadata([*echoed, ("x-filler", "x" * 20_000)])
        elif request.name == "users/missing":
            raise NotFound(
                f"user {request.name!r} does not exist",
                reason="USER_NOT_FOUND",
                resource=Resource("splitlog.dev/User", request.name),
            )
        return pb.GetUserResponse(
            user=pb.User(name=request.name, email="ada@example.com", display_name="Ada")
        )


def _echo_stream(log: BackendLog) -> Callable:
    def echo(request: bytes, context) -> Any:
        """Send the request bytes back three times.

        A request whose bytes contain `hang` sends nothing and waits until
        the call is cancelled.
        """
        log.stream_time_remaining.append(context.time_remaining())
        if b"hang" in request:
            context.add_callback(log.stream_cancelled.set)
            log.stream_cancelled.wait(60)
            return
        yield from (request, request, request)

    return echo


def _concatenate(requests, context) -> bytes:
    """Return the received messages joined into one."""
    return b"".join(requests)


def start_backend(log: BackendLog, address: str = "127.0.0.1:0") -> ServiceHost:
    """Start the test backend at `address`, a free port by default, and mark it
    SERVING."""
    server_stream = find_method(False, True)
    client_stream = find_method(True, False)
    raw_methods = {
        server_stream.name: grpc.unary_stream_rpc_method_handler(_echo_stream(log)),
        client_stream.name: grpc.stream_unary_rpc_method_handler(_concatenate),
    }
    streaming_services = {
        server_stream.containing_service.full_name,
        client_stream.containing_service.full_name,
    }
    assert len(streaming_services) == 1, "the test backend serves one raw service"
    raw_service = streaming_services.pop()

    def register(server: grpc.Server) -> None:
        pb_grpc.add_UsersServiceServicer_to_server(UsersBackend(log), server)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(raw_service, raw_methods)]
        )

    host = create_server(
        "test_backend", [register], [USERS_SERVICE, raw_service], address, workers=8
    )
    host.start()
    host.mark_serving()
    return host


@contextmanager
def running_stack(
    loop_thread: LoopThread,
    base: Config,
    ledger_address: Callable[[str], str] = lambda address: address,
) -> Iterator[Stack]:
    """Run the user, expense and balance services and a gateway before them.

    user_service uses its default balance guard. user_service and
    balance_service call each other, so balance_service's address is chosen
    before either starts. `ledger_address` maps expense_service's address to
    the one balance_service reads the ledger from, such as a relay's.
    """
    (balances_port,) = free_ports(1)
    balances_address = f"127.0.0.1:{balances_port}"
    base = base.replace(balance_service_addr=balances_address)
    users = build_users(base, "127.0.0.1:0")
    users_address = f"127.0.0.1:{users.port}"
    expenses = build_expenses(
        base.replace(user_service_addr=users_address), "127.0.0.1:0"
    )
    expenses_address = f"127.0.0.1:{expenses.port}"
    balances = build_balances(
        base.replace(
            user_service_addr=users_address,
            expense_service_addr=ledger_address(expenses_address),
        ),
        balances_address,
    )
    gateway_config = base.replace(
        user_service_addr=users_address,
        expense_service_addr=expenses_address,
        log_service_addr=closed_address(),
    )
    gateway = loop_thread.run(build(gateway_config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        yield Stack(users, expenses, balances, gateway)
    finally:
        loop_thread.run(gateway.stop(0))
        balances.stop(0)
        expenses.stop(0)
        users.stop(0)
