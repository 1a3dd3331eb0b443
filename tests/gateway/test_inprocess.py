"""In-process dispatch of unary calls: the same results as network forwarding.

Two gateways run in front of the same service hosts of this process. `local`
runs unary calls in process, as `splitlog up` does; `network` forwards them
over loopback gRPC. The hosts are a real user_service and a probe host built
by `create_server`, whose GetExpense behaves as the expense name selects.
Tests send a call through `local`, and where the result matters the same call
through `network`, and compare what the client receives.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_status import rpc_status

from gateway import inprocess
from gateway.app import build
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.errors import NotFound, Resource
from splitlog_runtime.server import ServiceHost, create_server
from tests.gateway.support import error_details, find_method, method_path
from tests.ports import closed_address
from user_service.app import build as build_users

EXPENSES_SERVICE = "splitlog.expenses.v1.ExpensesService"
GET_EXPENSE = f"/{EXPENSES_SERVICE}/GetExpense"
CREATE_EXPENSE = f"/{EXPENSES_SERVICE}/CreateExpense"
GET_USER = "/splitlog.users.v1.UsersService/GetUser"
DEFAULT_DEADLINE_SECONDS = 1.0


@dataclass
class ProbeLog:
    """What the probe's GetExpense observed."""

    time_remaining: list[float] = field(default_factory=list)
    metadata: list[dict[str, str | bytes]] = field(default_factory=list)
    sleeping: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)


class Probe:
    """GetExpense with the behaviour that the last segment of the name selects.

    `slow-<ms>` sleeps and `hang` waits until the call ends. `set-code` returns
    normally after setting FAILED_PRECONDITION, and `abort` aborts. `crash`
    raises an unexpected exception and `missing` raises a NotFound. Any other
    name succeeds. Every call records its deadline and metadata and returns the
    name of its thread and the `x-request-id` in its trailing metadata.
    """

    def __init__(self, log: ProbeLog) -> None:
        self.log = log

    def GetExpense(self, request, context):
        self.log.time_remaining.append(context.time_remaining())
        self.log.metadata.append(dict(context.invocation_metadata()))
        echoed = [
            ("x-echo-request-id", value)
            for key, value in context.invocation_metadata()
            if key == "x-request-id"
        ]
        context.set_trailing_metadata(
            [*echoed, ("x-thread", threading.current_thread().name)]
        )
        behaviour = request.name.rsplit("/", 1)[-1]
        if behaviour.startswith("slow-"):
            self.log.sleeping.set()
            time.sleep(int(behaviour.removeprefix("slow-")) / 1000)
        elif behaviour == "hang":
            context.add_callback(self.log.cancelled.set)
            self.log.hanging.set()
            deadline = time.monotonic() + 10
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
        elif behaviour == "set-code":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details("the probe set this code")
        elif behaviour == "abort":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "the probe aborted")
        elif behaviour == "crash":
            raise RuntimeError("the probe crashed")
        elif behaviour == "missing":
            raise NotFound(
                f"expense {request.name!r} does not exist",
                reason="EXPENSE_NOT_FOUND",
                resource=Resource("splitlog.dev/Expense", request.name),
            )
        return expenses_pb.GetExpenseResponse(
            expense=expenses_pb.Expense(name=request.name)
        )


def _echo_stream(request: bytes, context):
    yield from (request, request, request)


def start_probe(log: ProbeLog) -> ServiceHost:
    """Start a host that serves GetExpense and one raw server-streaming method.

    No other ExpensesService method is registered, so the rest of that
    service is unknown to the host.
    """
    stream_method = find_method(False, True)
    stream_service = stream_method.containing_service.full_name
    get_expense = grpc.unary_unary_rpc_method_handler(
        Probe(log).GetExpense,
        request_deserializer=expenses_pb.GetExpenseRequest.FromString,
        response_serializer=expenses_pb.GetExpenseResponse.SerializeToString,
    )

    def register(server: grpc.Server) -> None:
        server.add_registered_method_handlers(
            EXPENSES_SERVICE, {"GetExpense": get_expense}
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    stream_service,
                    {
                        stream_method.name: grpc.unary_stream_rpc_method_handler(
                            _echo_stream
                        )
                    },
                )
            ]
        )

    host = create_server(
        "expense_service", [register], [EXPENSES_SERVICE, stream_service], workers=4
    )
    host.start()
    host.mark_serving()
    return host


def gateway_config(tmp_path, **ports: int):
    """Return a gateway config that reaches the given services by port.

    Services not given point at a closed address.
    """
    overrides = {
        "auth_required": False,
        "data_dir": tmp_path,
        "host": "127.0.0.1",
        "deadline_seconds": DEFAULT_DEADLINE_SECONDS,
        "grace_seconds": 2.0,
    }
    for name in ("user_service", "expense_service", "balance_service", "log_service"):
        if name in ports:
            overrides[f"{name}_port"] = ports[name]
        else:
            overrides[f"{name}_addr"] = closed_address()
    return config_module.load(environ={}, overrides=overrides)


@pytest.fixture(scope="module")
def probe_log() -> ProbeLog:
    return ProbeLog()


@pytest.fixture(scope="module")
def probe_host(probe_log):
    host = start_probe(probe_log)
    yield host
    host.stop(0)


@pytest.fixture(scope="module")
def users_host(tmp_path_factory):
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("users"),
            "balance_service_addr": closed_address(),
            "workers": 4,
        },
    )
    host = build_users(config, "127.0.0.1:0")
    yield host
    host.stop(0)


@pytest.fixture(scope="module")
def config(users_host, probe_host, tmp_path_factory):
    return gateway_config(
        tmp_path_factory.mktemp("gateway"),
        user_service=users_host.port,
        expense_service=probe_host.port,
        log_service=probe_host.port,
    )


@pytest.fixture(scope="module")
def hosts(users_host, probe_host):
    return {
        "user_service": users_host,
        "expense_service": probe_host,
        "log_service": probe_host,
    }


@pytest.fixture(scope="module")
def local_gateway(loop_thread, config, hosts):
    running = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    inprocess.install(running.pool, hosts, config)
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def network_gateway(loop_thread, config):
    running = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def channels(local_gateway, network_gateway):
    opened = {
        "local": grpc.insecure_channel(f"127.0.0.1:{local_gateway.grpc_port}"),
        "network": grpc.insecure_channel(f"127.0.0.1:{network_gateway.grpc_port}"),
    }
    yield opened
    for channel in opened.values():
        channel.close()


def get_expense(channel: grpc.Channel, name: str, **kwargs):
    call = channel.unary_unary(
        GET_EXPENSE,
        request_serializer=expenses_pb.GetExpenseRequest.SerializeToString,
        response_deserializer=expenses_pb.GetExpenseResponse.FromString,
    )
    return call.with_call(expenses_pb.GetExpenseRequest(name=name), **kwargs)


def failure(send) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        send()
    return caught.value


def trailer(call, key: str):
    return dict(call.trailing_metadata())[key]


# Routing


def test_routes_only_unary_methods_the_hosts_serve(local_gateway):
    methods = local_gateway.pool.in_process.methods
    stream_method = method_path(find_method(False, True))

    assert GET_USER in methods
    assert GET_EXPENSE in methods
    assert CREATE_EXPENSE not in methods
    assert stream_method not in methods
    assert not any(path.startswith("/splitlog.balances.") for path in methods)


def test_call_runs_on_local_worker_thread(channels):
    _, local = get_expense(channels["local"], "groups/g/expenses/e1", timeout=5)
    _, network = get_expense(channels["network"], "groups/g/expenses/e1", timeout=5)

    assert trailer(local, "x-thread").startswith("expense_service-local")
    assert not trailer(network, "x-thread").startswith("expense_service-local")


def test_explicit_address_keeps_network(loop_thread, config, hosts):
    pinned = config.replace(user_service_addr=f"127.0.0.1:{hosts['user_service'].port}")
    gateway = loop_thread.run(build(pinned, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        dispatcher = inprocess.install(gateway.pool, hosts, pinned)
    finally:
        loop_thread.run(gateway.stop(0))

    assert GET_USER not in dispatcher.methods
    assert GET_EXPENSE in dispatcher.methods


# Responses and statuses, both ways


def test_user_round_trip(channels):
    local = users_grpc.UsersServiceStub(channels["local"])
    network = users_grpc.UsersServiceStub(channels["network"])
    request = users_pb.CreateUserRequest(
        user=users_pb.User(display_name="Ada", email="ada.inprocess@example.com")
    )

    created = local.CreateUser(request, timeout=5).user
    fetched = local.GetUser(users_pb.GetUserRequest(name=created.name), timeout=5)
    over_network = network.GetUser(
        users_pb.GetUserRequest(name=created.name), timeout=5
    )

    assert created.display_name == "Ada"
    assert fetched.user == created
    assert fetched.SerializeToString() == over_network.SerializeToString()


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        ("users/Upper-Case", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "REQUIRED"),
        ("users/nobody-here", grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND"),
    ],
)
def test_user_error_matches_network(channels, name, code, reason):
    request = users_pb.GetUserRequest(name=name)
    errors = {
        way: failure(
            lambda channel=channel: users_grpc.UsersServiceStub(channel).GetUser(
                request, timeout=5
            )
        )
        for way, channel in channels.items()
    }

    local, network = errors["local"], errors["network"]
    assert local.code() == code
    assert error_details(local)["ErrorInfo"].reason == reason
    assert local.code() == network.code()
    assert local.details() == network.details()
    assert rpc_status.from_call(local) == rpc_status.from_call(network)


@pytest.mark.parametrize(
    ("behaviour", "code", "details"),
    [
        ("set-code", grpc.StatusCode.FAILED_PRECONDITION, "the probe set this code"),
        ("abort", grpc.StatusCode.PERMISSION_DENIED, "the probe aborted"),
        (
            "missing",
            grpc.StatusCode.NOT_FOUND,
            "expense 'groups/g/expenses/missing' does not exist",
        ),
    ],
)
def test_handler_status_matches_network(channels, behaviour, code, details):
    name = f"groups/g/expenses/{behaviour}"
    errors = {
        way: failure(lambda channel=channel: get_expense(channel, name, timeout=5))
        for way, channel in channels.items()
    }

    local, network = errors["local"], errors["network"]
    assert local.code() == code
    assert local.details() == details
    assert local.code() == network.code()
    assert local.details() == network.details()
    assert rpc_status.from_call(local) == rpc_status.from_call(network)


def test_unexpected_exception_is_internal(channels):
    errors = {
        way: failure(
            lambda channel=channel: get_expense(
                channel, "groups/g/expenses/crash", timeout=5
            )
        )
        for way, channel in channels.items()
    }

    for error in errors.values():
        assert error.code() == grpc.StatusCode.INTERNAL
        assert error.details().startswith("internal error (incident ")
        assert "crashed" not in error.details()
        assert error_details(error)["ErrorInfo"].reason == "INTERNAL"


def test_unregistered_method_falls_back(channels):
    errors = {
        way: failure(
            lambda channel=channel: channel.unary_unary(CREATE_EXPENSE)(b"", timeout=5)
        )
        for way, channel in channels.items()
    }

    assert errors["local"].code() == grpc.StatusCode.UNIMPLEMENTED
    assert errors["local"].details() == errors["network"].details()


def test_stream_still_forwarded(channels):
    stream = channels["local"].unary_stream(method_path(find_method(False, True)))

    responses = list(stream(b"\x0a\x01x", timeout=5))

    assert responses == [b"\x0a\x01x"] * 3


# Metadata and deadlines


def test_metadata_forwarded_both_ways(channels, probe_log):
    probe_log.metadata.clear()

    _, call = get_expense(
        channels["local"],
        "groups/g/expenses/e2",
        metadata=[("x-request-id", "req-7"), ("x-trace-bin", b"\x00\xff")],
        timeout=5,
    )

    received = probe_log.metadata[-1]
    assert received["x-request-id"] == "req-7"
    assert received["x-trace-bin"] == b"\x00\xff"
    assert trailer(call, "x-echo-request-id") == "req-7"


def test_caller_deadline_reaches_handler(channels, probe_log):
    probe_log.time_remaining.clear()

    get_expense(channels["local"], "groups/g/expenses/e3", timeout=2.0)

    # The wire format rounds a deadline up slightly, so the deadline that the
    # gateway receives is a little over 2 s.
    assert 1.5 < probe_log.time_remaining[-1] < 2.5


def test_default_deadline_reaches_handler(channels, probe_log):
    probe_log.time_remaining.clear()

    get_expense(channels["local"], "groups/g/expenses/e4")

    remaining = probe_log.time_remaining[-1]
    assert DEFAULT_DEADLINE_SECONDS - 0.5 < remaining <= DEFAULT_DEADLINE_SECONDS


def test_slow_handler_exceeds_caller_deadline(channels):
    started = time.monotonic()
    error = failure(
        lambda: get_expense(
            channels["local"], "groups/g/expenses/slow-1500", timeout=0.3
        )
    )
    elapsed = time.monotonic() - started

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.0


@pytest.mark.parametrize("way", ["local", "network"])
def test_default_deadline_ends_hanging_handler(channels, probe_log, way):
    probe_log.hanging.clear()
    probe_log.cancelled.clear()
    started = time.monotonic()

    error = failure(lambda: get_expense(channels[way], "groups/g/expenses/hang"))
    elapsed = time.monotonic() - started

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "expense_service did not answer within the call's deadline" in (
        error.details()
    )
    assert DEFAULT_DEADLINE_SECONDS - 0.1 < elapsed < DEFAULT_DEADLINE_SECONDS + 1.0
    assert probe_log.cancelled.wait(2), "the handler's callback did not run"


@pytest.mark.parametrize("way", ["local", "network"])
def test_caller_cancel_ends_handler(channels, probe_log, way):
    probe_log.hanging.clear()
    probe_log.cancelled.clear()
    call = channels[way].unary_unary(
        GET_EXPENSE,
        request_serializer=expenses_pb.GetExpenseRequest.SerializeToString,
    )
    future = call.future(
        expenses_pb.GetExpenseRequest(name="groups/g/expenses/hang"), timeout=10
    )
    assert probe_log.hanging.wait(5), "the handler never received the call"

    future.cancel()

    assert probe_log.cancelled.wait(5), "the handler did not see the cancel"


# A host that stops


@pytest.fixture
def lone_probe(loop_thread, tmp_path):
    """A probe host of its own and a channel to a gateway that calls it in process."""
    log = ProbeLog()
    host = start_probe(log)
    config = gateway_config(tmp_path, expense_service=host.port)
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    inprocess.install(gateway.pool, {"expense_service": host}, config)
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    yield host, channel, log
    channel.close()
    loop_thread.run(gateway.stop(0))
    host.stop(0)


def test_stopping_host_finishes_calls_then_falls_back(lone_probe):
    host, channel, log = lone_probe
    with futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            get_expense, channel, "groups/g/expenses/slow-400", timeout=5
        )
        assert log.sleeping.wait(5), "the handler never received the call"
        stop_started = time.monotonic()
        host.stop(2.0)
        stop_took = time.monotonic() - stop_started
        _, finished = slow.result()

    error = failure(lambda: get_expense(channel, "groups/g/expenses/e5", timeout=5))

    assert trailer(finished, "x-thread").startswith("expense_service-local")
    assert 0.2 < stop_took < 2.0, "stop did not wait for the running call"
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(error)["ErrorInfo"].reason == "BACKEND_UNAVAILABLE"


def test_stopping_host_cancels_calls_after_grace(lone_probe):
    host, channel, log = lone_probe
    with futures.ThreadPoolExecutor(1) as pool:
        hanging = pool.submit(get_expense, channel, "groups/g/expenses/hang", timeout=5)
        assert log.hanging.wait(5), "the handler never received the call"
        host.stop(0.2)
        error = failure(hanging.result)

    assert error.code() == grpc.StatusCode.CANCELLED
    assert log.cancelled.wait(2), "the handler did not see the cancel"
