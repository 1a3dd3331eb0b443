"""Fuzz every public unary RPC through the gateway of a running `splitlog up`.

The methods come from the descriptors that the gateway itself exposes, and the
requests from `support.request_strategy`. No request may end in INTERNAL or
UNKNOWN. After the fuzzing the system must still serve, its log must show no
unhandled exception, every group's balances must add up to zero per currency
and match its expenses and settlements, and every acknowledged log write
must be found again.
"""

from __future__ import annotations

import os
from collections import defaultdict

import grpc
import pytest
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings

from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from tests.security.support import (
    SERVER_FAILURES,
    MarkerLog,
    call_unary,
    log_problems,
    method_path,
    public_unary_methods,
    request_strategy,
    seed_system,
)
from tests.system.conftest import start_splitlog, wait_for_health
from tests.system.money_support import (
    CALL_TIMEOUT,
    Clients,
    balance_nets,
    wait_for_balances,
)

pytestmark = pytest.mark.system

METHODS = public_unary_methods()
# More examples find more bugs. 100 examples of one method took about 0.3 s
# on a 2-core machine, so the default run took about 20 s there.
EXAMPLES_PER_METHOD = int(os.environ.get("SECURITY_FUZZ_EXAMPLES", "100"))
PUBLIC_SERVICES = {
    "splitlog.users.v1.UsersService",
    "splitlog.expenses.v1.ExpensesService",
    "splitlog.balances.v1.BalancesService",
    "splitlog.logs.v1.LogsService",
    "splitlog.gateway.v1.GatewayService",
}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    running = start_splitlog(tmp_path_factory.mktemp("fuzz"))
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.kill_everything()


@pytest.fixture(scope="module")
def seed(system):
    return seed_system(system.grpc_address)


@pytest.fixture(scope="module")
def channel(system):
    with grpc.insecure_channel(
        system.grpc_address,
        options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def markers() -> MarkerLog:
    return MarkerLog()


def _describe(request) -> str:
    text = text_format.MessageToString(request, as_utf8=True)
    return text if len(text) < 3000 else text[:3000] + " ..."


def test_methods_cover_every_public_service():
    services = {method.containing_service.full_name for method in METHODS}

    assert services >= PUBLIC_SERVICES
    assert "splitlog.expenses.v1.LedgerService" not in services
    assert len(METHODS) >= 40


@pytest.mark.parametrize("method", METHODS, ids=method_path)
def test_fuzz_never_fails_inside(method, system, seed, channel, markers):
    markers.write(channel)

    @settings(
        max_examples=EXAMPLES_PER_METHOD,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=request_strategy(method, seed))
    def send(request):
        code, details = call_unary(channel, method, request)
        assert code not in SERVER_FAILURES, (
            f"{method_path(method)} returned {code.name}: {details}\n"
            f"request: {_describe(request)}"
        )

    send()
    markers.write(channel)


def test_system_still_serving_after_fuzz(system):
    wait_for_health(system.grpc_address, timeout=10)

    assert system.process.poll() is None


def test_log_has_no_unhandled_exception(system):
    problems = log_problems(system.log())

    assert problems == []


def _all_groups(clients: Clients) -> set[str]:
    users, token = [], ""
    while True:
        response = clients.users.ListUsers(
            users_pb.ListUsersRequest(page_size=1000, page_token=token),
            timeout=CALL_TIMEOUT,
        )
        users += [user.name for user in response.users]
        token = response.next_page_token
        if not token:
            break
    groups = set()
    for user in users:
        token = ""
        while True:
            response = clients.users.ListGroups(
                users_pb.ListGroupsRequest(
                    member=user, page_size=1000, page_token=token
                ),
                timeout=CALL_TIMEOUT,
            )
            groups.update(group.name for group in response.groups)
            token = response.next_page_token
            if not token:
                break
    return groups


def test_group_balances_add_up_to_zero(system, seed):
    clients = Clients.connect(system.grpc_address)
    try:
        groups = _all_groups(clients)
        assert set(seed.groups) <= groups
        for group in sorted(groups):
            group_id = group.removeprefix("groups/")
            balances, expected = wait_for_balances(clients, group_id, timeout=10)
            totals: dict[str, int] = defaultdict(int)
            for currency, nets in balance_nets(clients, group_id).items():
                totals[currency] += sum(nets.values())

            assert all(total == 0 for total in totals.values()), (group, totals)
            nonzero = {
                currency: {user: net for user, net in nets.items() if net}
                for currency, nets in balances.items()
            }
            nonzero = {currency: nets for currency, nets in nonzero.items() if nets}
            assert nonzero == expected, group
    finally:
        clients.close()


def test_acknowledged_log_writes_found(system, channel, markers):
    for _ in range(3):
        markers.write(channel)
    stub = logs_grpc.LogsServiceStub(channel)

    assert markers.acknowledged
    missing = []
    for marker in markers.acknowledged:
        response = stub.ListLogEntries(
            logs_pb.ListLogEntriesRequest(
                services=["security-fuzz"], keyword=marker, page_size=10
            ),
            timeout=CALL_TIMEOUT,
        )
        found = [entry for entry in response.entries if marker in entry.message]
        if len(found) != 1:
            missing.append((marker, len(found)))
    assert missing == []
