"""Authorization end to end: real user, expense and balance services behind a
real gateway, with `auth_required` on.

Users sign up through the gateway and call it with their access tokens, over
gRPC and REST. The module's servers are shared; each test makes its own users
and groups.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from google.type import date_pb2, money_pb2

from balance_service.app import build as build_balances
from expense_service import membership
from expense_service.app import build as build_expenses
from gateway.app import Gateway, build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.gateway.v1 import gateway_service_pb2 as gateway_pb
from splitlog.gateway.v1 import gateway_service_pb2_grpc as gateway_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.client.credentials import TOKEN_ENV
from splitlog_cli.main import main
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from splitlog_runtime.server import ServiceHost
from tests.auth.support import operator_admin_key, sign_up_user
from tests.gateway.support import LoopThread, error_details
from tests.ports import closed_address, free_ports
from tests.rich_errors import fails
from tests.splitwise.conftest import FIXTURES as SPLITWISE_FIXTURES
from user_service.app import build as build_users
from user_service.guards import BalanceGuard

SECRET = "authorization-test-secret-" + "y" * 32
PASSWORD = "correct horse battery staple"
TIMEOUT = 10.0
DENIED = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class Stack:
    users: ServiceHost
    expenses: ServiceHost
    balances: ServiceHost
    gateway: Gateway
    data_dir: Path


def _start_stack(
    loop_thread: LoopThread,
    data_dir,
    required: bool,
    guard: BalanceGuard | None = None,
) -> Stack:
    """Start the three services and the gateway, all with one auth setting.

    Unless `guard` replaces it, user_service's balance guard is the real one,
    so removing a member calls balance_service; its address is reserved
    before balance_service starts.
    """
    (balances_port,) = free_ports(1)
    balances_address = f"127.0.0.1:{balances_port}"
    base = config_module.load(
        environ={},
        overrides={
            "data_dir": data_dir,
            "auth_required": required,
            "auth_secret": SECRET,
            "workers": 8,
            "grace_seconds": 0.5,
            "deadline_seconds": 5.0,
            "balance_service_addr": balances_address,
            "log_service_addr": closed_address(),
        },
    )
    users = build_users(base, "127.0.0.1:0", guard=guard)
    base = base.replace(user_service_addr=f"127.0.0.1:{users.port}")
    expenses = build_expenses(base, "127.0.0.1:0")
    base = base.replace(expense_service_addr=f"127.0.0.1:{expenses.port}")
    balances = build_balances(base, balances_address)
    gateway = loop_thread.run(build(base, "127.0.0.1:0", "127.0.0.1:0"))
    return Stack(users, expenses, balances, gateway, data_dir)


def _stop_stack(loop_thread: LoopThread, stack: Stack) -> None:
    loop_thread.run(stack.gateway.stop(0))
    stack.balances.stop(0)
    stack.expenses.stop(0)
    stack.users.stop(0)


@pytest.fixture(scope="module")
def stack(loop_thread, tmp_path_factory) -> Iterator[Stack]:
    started = _start_stack(loop_thread, tmp_path_factory.mktemp("authz"), True)
    yield started
    _stop_stack(loop_thread, started)
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.gateway.http_port}", timeout=TIMEOUT
    ) as client:
        yield client


# Clients that act as one user


class Caller:
    """The stubs of the gateway, each call carrying one credential."""

    def __init__(self, channel: grpc.Channel, user: str, credential: str) -> None:
        self.user = user
        self.credential = credential
        self.metadata = (("authorization", f"Bearer {credential}"),)
        self._users = users_grpc.UsersServiceStub(channel)
        self._expenses = expenses_grpc.ExpensesServiceStub(channel)
        self._balances = balances_grpc.BalancesServiceStub(channel)
        self._gateway = gateway_grpc.GatewayServiceStub(channel)
        self._auth = auth_grpc.AuthServiceStub(channel)

    def users(self, method: str, request):
        return self._call(self._users, method, request)

    def expenses(self, method: str, request):
        return self._call(self._expenses, method, request)

    def balances(self, method: str, request):
        return self._call(self._balances, method, request)

    def gateway(self, method: str, request):
        return self._call(self._gateway, method, request)

    def auth(self, method: str, request):
        return self._call(self._auth, method, request)

    def _call(self, stub, method: str, request):
        return getattr(stub, method)(request, metadata=self.metadata, timeout=TIMEOUT)

    def create_group(self, title: str = "Trip") -> str:
        return self.users(
            "CreateGroup",
            users_pb.CreateGroupRequest(
                group=users_pb.Group(display_name=title, creator=self.user)
            ),
        ).group.name

    def add_member(self, group: str, user: str) -> None:
        self.users(
            "AddGroupMember", users_pb.AddGroupMemberRequest(parent=group, user=user)
        )

    def create_expense(self, group: str, participants: list[str]) -> str:
        request = expenses_pb.CreateExpenseRequest(
            parent=group, expense=_expense(self.user, participants)
        )
        return self.expenses("CreateExpense", request).expense.name

    def pay(self, group: str, payee: str, units: int) -> str:
        """Record a settlement in which this user pays `units` EUR to `payee`."""
        request = balances_pb.CreateSettlementRequest(
            parent=group,
            settlement=balances_pb.Settlement(
                payer=self.user,
                payee=payee,
                creator=self.user,
                amount=money_pb2.Money(currency_code="EUR", units=units),
                settlement_date=date_pb2.Date(year=2024, month=5, day=2),
            ),
        )
        return self.balances("CreateSettlement", request).settlement.name


def _sign_up(channel: grpc.Channel, label: str) -> Caller:
    reply = sign_up_user(channel, label, PASSWORD, TIMEOUT)
    return Caller(channel, reply.user.name, reply.tokens.access_token)


def _api_key(owner: Caller, channel: grpc.Channel, scopes: list[str]) -> Caller:
    created = owner.auth(
        "CreateApiKey",
        auth_pb.CreateApiKeyRequest(
            parent=owner.user,
            api_key=auth_pb.ApiKey(display_name="script", scopes=scopes),
        ),
    )
    return Caller(channel, owner.user, created.secret)


def _expense(payer: str, participants: list[str]) -> expenses_pb.Expense:
    return expenses_pb.Expense(
        description="Dinner",
        expense_date=date_pb2.Date(year=2024, month=5, day=1),
        total=money_pb2.Money(currency_code="EUR", units=30),
        payers=[
            expenses_pb.Payer(
                user=payer, amount=money_pb2.Money(currency_code="EUR", units=30)
            )
        ],
        split=expenses_pb.Split(
            type=expenses_pb.SPLIT_TYPE_EQUAL,
            participants=[
                expenses_pb.SplitParticipant(user=user) for user in participants
            ],
        ),
        creator=payer,
    )


def _group_reads(group: str, expense: str) -> list[tuple[str, str, object]]:
    """Every read of a group's resources, as (service, method, request)."""
    balance = f"{group}/balance"
    return [
        ("users", "GetGroup", users_pb.GetGroupRequest(name=group)),
        (
            "users",
            "ListGroupMembers",
            users_pb.ListGroupMembersRequest(parent=group),
        ),
        ("expenses", "GetExpense", expenses_pb.GetExpenseRequest(name=expense)),
        ("expenses", "ListExpenses", expenses_pb.ListExpensesRequest(parent=group)),
        (
            "balances",
            "GetGroupBalance",
            balances_pb.GetGroupBalanceRequest(name=balance),
        ),
        (
            "balances",
            "ComputeSettlementPlan",
            balances_pb.ComputeSettlementPlanRequest(name=balance),
        ),
        (
            "balances",
            "ListPairwiseBalances",
            balances_pb.ListPairwiseBalancesRequest(parent=group),
        ),
        (
            "balances",
            "GetGroupReport",
            balances_pb.GetGroupReportRequest(
                name=f"{group}/report", currency_code="EUR"
            ),
        ),
        (
            "balances",
            "ListSettlements",
            balances_pb.ListSettlementsRequest(parent=group),
        ),
        (
            "balances",
            "CheckSettled",
            balances_pb.CheckSettledRequest(name=balance),
        ),
        (
            "gateway",
            "GetGroupOverview",
            gateway_pb.GetGroupOverviewRequest(group=group),
        ),
    ]


def _call(caller: Caller, service: str, method: str, request):
    return getattr(caller, service)(method, request)


def _error_of(caller: Caller, service: str, method: str, request) -> grpc.RpcError:
    """Make one call that must fail; return its error."""
    with pytest.raises(grpc.RpcError) as caught:
        _call(caller, service, method, request)
    return caught.value


def _expense_names(caller: Caller, group: str) -> list[str]:
    listed = caller.expenses(
        "ListExpenses", expenses_pb.ListExpensesRequest(parent=group)
    )
    return [expense.name for expense in listed.expenses]


def _member_names(caller: Caller, group: str) -> list[str]:
    listed = caller.users(
        "ListGroupMembers", users_pb.ListGroupMembersRequest(parent=group)
    )
    return [member.user for member in listed.members]


# Members


def test_creator_becomes_member(channel):
    ann = _sign_up(channel, "ann")
    group = ann.create_group()
    assert _member_names(ann, group) == [ann.user]
    expense = ann.create_expense(group, [ann.user])
    for service, method, request in _group_reads(group, expense):
        _call(ann, service, method, request)


def test_added_member_gets_access_at_once(channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    group = ann.create_group()
    expense = ann.create_expense(group, [ann.user])
    # Fill the member caches of expense_service and balance_service first.
    get_expense = expenses_pb.GetExpenseRequest(name=expense)
    assert _error_of(ben, "expenses", "GetExpense", get_expense).code() == DENIED
    get_balance = balances_pb.GetGroupBalanceRequest(name=f"{group}/balance")
    assert _error_of(ben, "balances", "GetGroupBalance", get_balance).code() == DENIED
    ann.add_member(group, ben.user)
    for service, method, request in _group_reads(group, expense):
        _call(ben, service, method, request)


def test_any_member_may_add_members(channel):
    ann, ben, cal = (_sign_up(channel, name) for name in ("ann", "ben", "cal"))
    group = ann.create_group()
    ann.add_member(group, ben.user)
    ben.add_member(group, cal.user)
    assert set(_member_names(cal, group)) == {ann.user, ben.user, cal.user}


# Non-members


def test_non_member_reads_denied(channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    group = ann.create_group()
    expense = ann.create_expense(group, [ann.user])
    for service, method, request in _group_reads(group, expense):
        error = _error_of(eve, service, method, request)
        assert error.code() == DENIED, method
        assert eve.user in error.details(), method
        assert group in error.details(), method


def test_non_member_writes_denied(channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    group = ann.create_group()
    expense = ann.create_expense(group, [ann.user])
    etag = ann.users("GetGroup", users_pb.GetGroupRequest(name=group)).group.etag
    writes = [
        (
            "expenses",
            "CreateExpense",
            expenses_pb.CreateExpenseRequest(
                parent=group, expense=_expense(eve.user, [eve.user])
            ),
        ),
        (
            "expenses",
            "DeleteExpense",
            expenses_pb.DeleteExpenseRequest(name=expense),
        ),
        (
            "users",
            "AddGroupMember",
            users_pb.AddGroupMemberRequest(parent=group, user=eve.user),
        ),
        (
            "users",
            "UpdateGroup",
            users_pb.UpdateGroupRequest(
                group=users_pb.Group(name=group, display_name="Mine now")
            ),
        ),
        (
            "users",
            "RemoveGroupMember",
            users_pb.RemoveGroupMemberRequest(
                name=f"{group}/members/{ann.user.removeprefix('users/')}"
            ),
        ),
        ("users", "DeleteGroup", users_pb.DeleteGroupRequest(name=group)),
        (
            "balances",
            "CreateSettlement",
            balances_pb.CreateSettlementRequest(
                parent=group,
                settlement=balances_pb.Settlement(
                    payer=eve.user,
                    payee=ann.user,
                    creator=eve.user,
                    amount=money_pb2.Money(currency_code="EUR", units=5),
                    settlement_date=date_pb2.Date(year=2024, month=5, day=2),
                ),
            ),
        ),
    ]
    for service, method, request in writes:
        error = _error_of(eve, service, method, request)
        assert error.code() == DENIED, method

    # Nothing was written.
    assert _expense_names(ann, group) == [expense]
    assert _member_names(ann, group) == [ann.user]
    after = ann.users("GetGroup", users_pb.GetGroupRequest(name=group)).group
    assert after.display_name == "Trip"
    assert after.etag == etag
    settlements = ann.balances(
        "ListSettlements", balances_pb.ListSettlementsRequest(parent=group)
    )
    assert list(settlements.settlements) == []


def test_missing_and_foreign_group_same_error(channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    group = ann.create_group()
    expense = ann.create_expense(group, [ann.user])
    missing = f"groups/missing-{uuid.uuid4().hex[:8]}"
    missing_expense = expense.replace(group, missing)
    for service, method, request in _group_reads(group, expense):
        existing = _error_of(eve, service, method, request)
        probes = {read[1]: read for read in _group_reads(missing, missing_expense)}
        absent = _error_of(eve, *probes[method])
        assert absent.code() == existing.code() == DENIED, method
        # The messages differ only in the group name that was asked for.
        assert absent.details().replace(missing, group) == existing.details(), method
        absent_info = error_details(absent)
        existing_info = error_details(existing)
        assert absent_info.keys() == existing_info.keys(), method


def test_missing_expense_in_foreign_group_same_error(channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    group = ann.create_group()
    expense = ann.create_expense(group, [ann.user])
    missing = f"{group}/expenses/missing-{uuid.uuid4().hex[:8]}"

    def read(name: str) -> grpc.RpcError:
        request = expenses_pb.GetExpenseRequest(name=name)
        return fails(lambda: eve.expenses("GetExpense", request))

    assert read(expense).details() == read(missing).details()
    assert read(missing).code() == DENIED
    # A member still learns that the expense is missing.
    error = fails(
        lambda: ann.expenses("GetExpense", expenses_pb.GetExpenseRequest(name=missing))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_expense_creator_must_be_caller(channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    group = ann.create_group()
    ann.add_member(group, ben.user)
    forged = _expense(ann.user, [ann.user, ben.user])
    error = fails(
        lambda: ben.expenses(
            "CreateExpense",
            expenses_pb.CreateExpenseRequest(parent=group, expense=forged),
        )
    )
    assert error.code() == DENIED
    assert "expense.creator" in error.details()
    assert _expense_names(ann, group) == []


def test_group_creator_must_be_caller(channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    request = users_pb.CreateGroupRequest(
        group=users_pb.Group(display_name="Forged", creator=ann.user)
    )
    error = fails(lambda: eve.users("CreateGroup", request))
    assert error.code() == DENIED
    assert "group.creator" in error.details()


# Accounts


def test_other_account_denied(channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    calls = [
        ("users", "GetUser", users_pb.GetUserRequest(name=ann.user)),
        ("users", "ListGroups", users_pb.ListGroupsRequest(member=ann.user)),
        (
            "users",
            "UpdateUser",
            users_pb.UpdateUserRequest(
                user=users_pb.User(name=ann.user, display_name="Eve was here")
            ),
        ),
        ("users", "DeactivateUser", users_pb.DeactivateUserRequest(name=ann.user)),
        (
            "balances",
            "GetUserBalance",
            balances_pb.GetUserBalanceRequest(name=f"{ann.user}/balance"),
        ),
        (
            "gateway",
            "GetUserDashboard",
            gateway_pb.GetUserDashboardRequest(user=ann.user),
        ),
        (
            "expenses",
            "ListExpenses",
            expenses_pb.ListExpensesRequest(parent="groups/-", participant=ann.user),
        ),
        (
            "balances",
            "ListSettlements",
            balances_pb.ListSettlementsRequest(parent="groups/-", participant=ann.user),
        ),
    ]
    for service, method, request in calls:
        error = _error_of(eve, service, method, request)
        assert error.code() == DENIED, method
    assert (
        ann.users("GetUser", users_pb.GetUserRequest(name=ann.user)).user.display_name
        == "ann"
    )


class _CountingBackend(grpc.GenericRpcHandler):
    """A backend that counts the calls it gets, other than health checks, and
    fails each with UNAVAILABLE."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def service(self, handler_call_details):
        method = handler_call_details.method
        if method.startswith("/grpc.health.v1.Health/"):
            return None
        self.methods.append(method)

        def fail(request, context):
            context.abort(grpc.StatusCode.UNAVAILABLE, "counting backend")

        return grpc.unary_unary_rpc_method_handler(fail)


@pytest.fixture
def counted_gateway(loop_thread, stack: Stack, tmp_path):
    """A gateway in front of the real user_service, whose expense and balance
    calls go to a `_CountingBackend`."""
    backend = _CountingBackend()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((backend,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    config = config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path,
            "auth_required": True,
            "auth_secret": SECRET,
            "deadline_seconds": 5.0,
            "user_service_addr": f"127.0.0.1:{stack.users.port}",
            "expense_service_addr": f"127.0.0.1:{port}",
            "balance_service_addr": f"127.0.0.1:{port}",
            "log_service_addr": closed_address(),
        },
    )
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as opened:
            yield opened, backend
    finally:
        loop_thread.run(gateway.stop(0))
        server.stop(0)


def test_foreign_views_denied_before_fan_out(channel, counted_gateway, caplog):
    counted_channel, backend = counted_gateway
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    group = ann.create_group()
    eve_here = Caller(counted_channel, eve.user, eve.credential)
    caplog.set_level(logging.WARNING, logger="gateway.aggregate")

    dashboard = fails(
        lambda: eve_here.gateway(
            "GetUserDashboard", gateway_pb.GetUserDashboardRequest(user=ann.user)
        )
    )
    overview = fails(
        lambda: eve_here.gateway(
            "GetGroupOverview", gateway_pb.GetGroupOverviewRequest(group=group)
        )
    )

    assert dashboard.code() == DENIED
    assert overview.code() == DENIED
    assert backend.methods == []
    assert "left empty" not in caplog.text


def test_list_users_returns_only_caller(channel):
    ann = _sign_up(channel, "ann")
    _sign_up(channel, "ben")
    listed = ann.users("ListUsers", users_pb.ListUsersRequest())
    assert [user.name for user in listed.users] == [ann.user]


def test_list_groups_returns_own_groups(channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    mine = ann.create_group("Mine")
    eve.create_group("Other")
    listed = ann.users("ListGroups", users_pb.ListGroupsRequest(member=ann.user))
    assert [group.name for group in listed.groups] == [mine]


def test_create_user_needs_admin(channel):
    ann = _sign_up(channel, "ann")
    request = users_pb.CreateUserRequest(
        user=users_pb.User(email=f"new-{uuid.uuid4().hex[:8]}@example.com")
    )
    error = fails(lambda: ann.users("CreateUser", request))
    assert error.code() == DENIED
    assert "admin" in error.details()


def test_own_dashboard_allowed(channel):
    ann = _sign_up(channel, "ann")
    group = ann.create_group()
    ann.create_expense(group, [ann.user])
    dashboard = ann.gateway(
        "GetUserDashboard", gateway_pb.GetUserDashboardRequest(user=ann.user)
    )
    assert [summary.group.name for summary in dashboard.group_summaries] == [group]
    assert list(dashboard.section_errors) == []


def test_own_dashboard_lists_former_group(channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    group, expense, _ = _settled_group(ann, ben)
    member = f"{group}/members/{ben.user.removeprefix('users/')}"
    ben.users("RemoveGroupMember", users_pb.RemoveGroupMemberRequest(name=member))
    # Ben paid his share back before leaving, so without the expense he is
    # owed that payment in a group he can no longer read.
    ann.expenses("DeleteExpense", expenses_pb.DeleteExpenseRequest(name=expense))
    request = gateway_pb.GetUserDashboardRequest(user=ben.user)

    deadline = time.monotonic() + TIMEOUT
    while not (dashboard := ben.gateway("GetUserDashboard", request)).group_summaries:
        assert time.monotonic() < deadline, "the deleted expense was not applied"
        time.sleep(0.05)

    assert list(dashboard.section_errors) == []
    (summary,) = dashboard.group_summaries
    assert summary.former_member
    assert summary.group == users_pb.Group(name=group)
    owed = money_pb2.Money(currency_code="EUR", units=15)
    assert list(summary.net_amounts) == [owed]
    assert list(dashboard.total_net_amounts) == [owed]


def test_former_member_settlement_by_member(channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    group, expense, _ = _settled_group(ann, ben)
    member = f"{group}/members/{ben.user.removeprefix('users/')}"
    ben.users("RemoveGroupMember", users_pb.RemoveGroupMemberRequest(name=member))
    # Without the expense, ann owes ben the 15 EUR he paid her.
    ann.expenses("DeleteExpense", expenses_pb.DeleteExpenseRequest(name=expense))
    owed = balances_pb.Settlement(
        payer=ann.user,
        payee=ben.user,
        creator=ben.user,
        amount=money_pb2.Money(currency_code="EUR", units=15),
        settlement_date=date_pb2.Date(year=2024, month=5, day=4),
    )
    request = balances_pb.CreateSettlementRequest(parent=group, settlement=owed)

    # balance_service may accept ben from a cached member list for a few
    # seconds, and then rejects him as settlement.creator instead.
    deadline = time.monotonic() + membership.CACHE_SECONDS + 2.0
    while (
        error := fails(lambda: ben.balances("CreateSettlement", request))
    ).code() != DENIED:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert time.monotonic() < deadline, error.details()
        time.sleep(0.1)
    assert "ask a member to record the settlement with CreateSettlement" in (
        error.details()
    )
    assert f"naming {ben.user} as payer or payee" in error.details()
    assert error_details(error)["ErrorInfo"].reason == "GROUP_ACCESS_DENIED"

    request.settlement.creator = ann.user
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            ann.balances("CreateSettlement", request)
            break
        except grpc.RpcError as pending:
            # The settlement waits until the ledger has applied the delete.
            assert pending.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert time.monotonic() < deadline, pending.details()
            time.sleep(0.05)
    balance = balances_pb.CheckSettledRequest(name=f"{group}/balance")
    assert ann.balances("CheckSettled", balance).settled


def test_check_settled_non_member_user(channel, http):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    eve = _sign_up(channel, "eve")
    group, _, _ = _settled_group(ann, ben)
    balance = f"{group}/balance"
    headers = {"authorization": f"Bearer {ann.credential}"}

    for user in (eve.user, "users/nobody"):
        request = balances_pb.CheckSettledRequest(name=balance, user=user)
        error = _error_of(ann, "balances", "CheckSettled", request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, user
        assert f"user {user!r} is not a member of {group!r}" in error.details()
        assert error_details(error)["ErrorInfo"].reason == "NOT_A_GROUP_MEMBER"

        reply = http.get(
            f"/v1/{balance}:checkSettled", params={"user": user}, headers=headers
        )
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["status"] == "FAILED_PRECONDITION", user
        assert f"user {user!r} is not a member" in reply.json()["error"]["message"]

    reply = http.get(
        f"/v1/{balance}:checkSettled", params={"user": ben.user}, headers=headers
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["settled"] is True


# API keys


def test_key_without_admin_denied(stack, channel):
    ann = _sign_up(channel, "ann")
    group = ann.create_group()
    reader = _api_key(_admin(stack, channel, ann), channel, ["logs:read"])
    error = fails(
        lambda: reader.users("GetGroup", users_pb.GetGroupRequest(name=group))
    )
    assert error.code() == DENIED
    assert "admin" in error.details()


def _admin(stack: Stack, channel: grpc.Channel, owner: Caller) -> Caller:
    _, secret = operator_admin_key(stack.data_dir, owner.user)
    return Caller(channel, owner.user, secret)


def test_user_cannot_grant_self_admin(channel):
    eve = _sign_up(channel, "eve")
    error = fails(lambda: _api_key(eve, channel, ["logs:read", "admin"]))
    assert error.code() == DENIED
    assert "only an administrator" in error.details()
    assert "splitlog admin-key" in error.details()
    listed = eve.auth("ListApiKeys", auth_pb.ListApiKeysRequest(parent=eve.user))
    assert list(listed.api_keys) == []


def test_admin_may_create_admin_key(stack, channel):
    root = _sign_up(channel, "root")
    admin = _admin(stack, channel, root)
    second = _api_key(admin, channel, ["admin"])
    listed = second.users("ListUsers", users_pb.ListUsersRequest(page_size=1000))
    assert root.user in {user.name for user in listed.users}


def _key_request(owner: str, scopes: list[str]) -> auth_pb.CreateApiKeyRequest:
    return auth_pb.CreateApiKeyRequest(
        parent=owner, api_key=auth_pb.ApiKey(display_name="issued", scopes=scopes)
    )


def test_admin_manages_other_users_keys(stack, channel):
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    ann = _sign_up(channel, "ann")

    created = admin.auth("CreateApiKey", _key_request(ann.user, ["logs:read"]))
    listed = admin.auth("ListApiKeys", auth_pb.ListApiKeysRequest(parent=ann.user))
    revoked = admin.auth(
        "RevokeApiKey", auth_pb.RevokeApiKeyRequest(name=created.api_key.name)
    )

    assert created.api_key.name.startswith(f"{ann.user}/apiKeys/")
    assert [key.name for key in listed.api_keys] == [created.api_key.name]
    assert revoked.api_key.HasField("revoke_time")
    # The key belongs to ann: her own token lists it.
    own = ann.auth("ListApiKeys", auth_pb.ListApiKeysRequest(parent=ann.user))
    assert [key.name for key in own.api_keys] == [created.api_key.name]


def test_admin_manages_keys_over_rest(stack, channel, http):
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    ann = _sign_up(channel, "ann")
    headers = {"authorization": f"Bearer {admin.credential}"}

    created = http.post(
        f"/v1/{ann.user}/apiKeys",
        json={"displayName": "issued", "scopes": ["logs:write"]},
        headers=headers,
    )
    listed = http.get(f"/v1/{ann.user}/apiKeys", headers=headers)
    name = created.json()["apiKey"]["name"]
    revoked = http.post(f"/v1/{name}:revoke", json={}, headers=headers)

    assert created.status_code == 200, created.text
    assert listed.status_code == 200, listed.text
    assert [key["name"] for key in listed.json()["apiKeys"]] == [name]
    assert revoked.status_code == 200, revoked.text
    assert "revokeTime" in revoked.json()["apiKey"]


def test_admin_revokes_other_admins_key(stack, channel):
    first = _admin(stack, channel, _sign_up(channel, "root"))
    leaked_owner = _sign_up(channel, "root")
    name, secret = operator_admin_key(stack.data_dir, leaked_owner.user)

    first.auth("RevokeApiKey", auth_pb.RevokeApiKeyRequest(name=name))

    leaked = Caller(channel, leaked_owner.user, secret)
    error = fails(lambda: leaked.users("ListUsers", users_pb.ListUsersRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in error.details()


def test_admin_key_for_other_makes_admin(stack, channel):
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")

    admin.auth("CreateApiKey", _key_request(ann.user, ["admin"]))

    # ann's access token now carries `admin`, so she reads other accounts.
    read = ann.users("GetUser", users_pb.GetUserRequest(name=ben.user))
    assert read.user.name == ben.user


def test_key_methods_missing_user(stack, channel):
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    eve = _sign_up(channel, "eve")
    missing = f"users/ghost-{uuid.uuid4().hex[:8]}"
    calls = [
        ("CreateApiKey", _key_request(missing, ["logs:read"])),
        ("ListApiKeys", auth_pb.ListApiKeysRequest(parent=missing)),
        ("RevokeApiKey", auth_pb.RevokeApiKeyRequest(name=f"{missing}/apiKeys/k1")),
    ]
    for method, request in calls:
        not_found = fails(functools.partial(admin.auth, method, request))
        assert not_found.code() == grpc.StatusCode.NOT_FOUND, method
        assert error_details(not_found)["ErrorInfo"].reason == "USER_NOT_FOUND"
        assert f"user {missing!r} does not exist" in not_found.details()
        # A user who is no administrator cannot tell a missing user from
        # an existing one.
        denied = fails(functools.partial(eve.auth, method, request))
        assert denied.code() == DENIED, method
        assert error_details(denied)["ErrorInfo"].reason == "NOT_OWNER"
        assert "only the user itself or an administrator" in denied.details()


def test_user_cannot_manage_others_keys(channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    error = fails(
        lambda: eve.auth("ListApiKeys", auth_pb.ListApiKeysRequest(parent=ann.user))
    )
    assert error.code() == DENIED
    assert error_details(error)["ErrorInfo"].reason == "NOT_OWNER"


def test_admin_sets_first_password(stack, channel):
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    created = _create_user(admin)
    email = created.user.email
    set_password = auth_pb.SetPasswordRequest(
        name=created.user.name, new_password=PASSWORD
    )

    admin.auth("SetPassword", set_password)
    # With a password in place, a change needs the old one, also for an
    # administrator.
    replaced = fails(lambda: admin.auth("SetPassword", set_password))

    signed_in = auth_grpc.AuthServiceStub(channel).SignIn(
        auth_pb.SignInRequest(email=email, password=PASSWORD), timeout=TIMEOUT
    )
    assert signed_in.user == created.user.name
    assert replaced.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(replaced)["ErrorInfo"].reason == "OLD_PASSWORD_REQUIRED"


def test_admin_key_command_unknown_user(stack, capsys):
    status = main(["admin-key", "nobody-here", "--data-dir", str(stack.data_dir)])
    error = capsys.readouterr().err
    assert status == 1
    assert "'nobody-here' does not exist" in error
    assert "sign the user up first" in error


def test_admin_key_command_invalid_id(stack, capsys):
    status = main(["admin-key", "BAD ID", "--data-dir", str(stack.data_dir)])
    error = capsys.readouterr().err
    assert status == 2
    assert "USER: 'BAD ID' is not a valid id" in error
    assert "4 to 63 lower-case letters" in error
    assert "does not exist" not in error


def test_admin_key_command_wrong_data_dir(tmp_path, capsys):
    wrong = tmp_path / "not-the-data-dir"
    status = main(["admin-key", "someone", "--data-dir", str(wrong)])
    error = capsys.readouterr().err
    assert status == 1
    assert f"no user database at {wrong / 'user_service.db'}" in error
    assert "--data-dir (or SPLITLOG_DATA_DIR)" in error
    assert "Traceback" not in error
    assert not wrong.exists()


def test_admin_key_command_wrong_database_url(tmp_path, capsys):
    wrong = tmp_path / "elsewhere" / "users.db"
    url = f"sqlite:///{wrong}"
    status = main(["admin-key", "someone", "--user-service-db-url", url])
    error = capsys.readouterr().err
    assert status == 1
    assert f"no user database at {wrong}" in error
    assert "--user-service-db-url (SPLITLOG_USER_SERVICE_DB_URL)" in error
    assert not wrong.parent.exists()


def test_admin_key_command_empty_database(tmp_path, capsys):
    (tmp_path / "user_service.db").touch()
    status = main(["admin-key", "someone", "--data-dir", str(tmp_path)])
    error = capsys.readouterr().err
    assert status == 1
    assert "has no users table" in error
    assert "OperationalError" not in error


def test_admin_key_command_deactivated_user(stack, channel, capsys):
    ann = _sign_up(channel, "ann")
    ann.users("DeactivateUser", users_pb.DeactivateUserRequest(name=ann.user))
    capsys.readouterr()

    status = main(["admin-key", ann.user, "--data-dir", str(stack.data_dir)])

    captured = capsys.readouterr()
    assert status == 1
    assert f"user {ann.user.removeprefix('users/')!r} is deactivated" in captured.err
    assert captured.out == ""


def test_admin_key_sees_every_group(stack, channel):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    group = ann.create_group()
    expense = ann.create_expense(group, [ann.user])
    admin = _admin(stack, channel, eve)
    for service, method, request in _group_reads(group, expense):
        _call(admin, service, method, request)
    listed = admin.users("ListUsers", users_pb.ListUsersRequest(page_size=1000))
    assert {ann.user, eve.user} <= {user.name for user in listed.users}
    # An administrator learns that a missing group is missing.
    missing = users_pb.GetGroupRequest(name=f"groups/missing-{uuid.uuid4().hex[:8]}")
    error = fails(lambda: admin.users("GetGroup", missing))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    check = balances_pb.CheckSettledRequest(name=f"{missing.name}/balance")
    unchecked = fails(lambda: admin.balances("CheckSettled", check))
    assert unchecked.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(unchecked)["ErrorInfo"].reason == "GROUP_NOT_FOUND"


def _create_user(admin: Caller) -> users_pb.CreateUserResponse:
    """Create a user without a password, as only an administrator may."""
    email = f"made-{uuid.uuid4().hex[:8]}@example.com"
    return admin.users(
        "CreateUser",
        users_pb.CreateUserRequest(user=users_pb.User(email=email, display_name="M")),
    )


def test_admin_key_may_create_user(stack, channel):
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    created = _create_user(admin)
    assert created.user.email.startswith("made-")


# Removal


def test_removed_member_loses_access(channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    group = ann.create_group()
    ann.add_member(group, ben.user)
    expense = ann.create_expense(group, [ann.user])
    list_expenses = expenses_pb.ListExpensesRequest(parent=group)
    get_balance = balances_pb.GetGroupBalanceRequest(name=f"{group}/balance")
    # Fill the member caches of expense_service and balance_service.
    ben.expenses("ListExpenses", list_expenses)
    ben.balances("GetGroupBalance", get_balance)

    ann.users(
        "RemoveGroupMember",
        users_pb.RemoveGroupMemberRequest(
            name=f"{group}/members/{ben.user.removeprefix('users/')}"
        ),
    )
    # user_service reads membership from its own database: denied at once.
    error = fails(lambda: ben.users("GetGroup", users_pb.GetGroupRequest(name=group)))
    assert error.code() == DENIED

    # The other services may reuse their member lists for the cache window,
    # and then reject every read with the error that GetGroup returns.
    for service, method, request in _group_reads(group, expense):
        denied = _wait_for_error(
            functools.partial(_call, ben, service, method, request), DENIED, method
        )
        assert denied.details() == error.details(), method


def test_removed_member_cross_group_list(channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    shared = ann.create_group("Shared")
    ann.add_member(shared, ben.user)
    # Ben pays for himself alone, so his balance stays zero and he can leave.
    left_behind = ben.create_expense(shared, [ben.user])
    own = ben.create_group("Own")
    kept = ben.create_expense(own, [ben.user])
    across = expenses_pb.ListExpensesRequest(parent="groups/-", participant=ben.user)

    def listed() -> set[str]:
        response = ben.expenses("ListExpenses", across)
        return {expense.name for expense in response.expenses}

    assert listed() == {kept, left_behind}
    ann.users(
        "RemoveGroupMember",
        users_pb.RemoveGroupMemberRequest(
            name=f"{shared}/members/{ben.user.removeprefix('users/')}"
        ),
    )
    # expense_service may reuse the member list of `shared` for its window.
    deadline = time.monotonic() + membership.CACHE_SECONDS + 2.0
    while listed() != {kept}:
        assert time.monotonic() < deadline, f"still listed: {listed()}"
        time.sleep(0.1)


# Deleted groups


def _wait_for_error(call, code: grpc.StatusCode, method: str) -> grpc.RpcError:
    """Retry `call` until it fails with `code`, for at most the cache window.

    expense_service and balance_service may reuse a member list for
    `membership.CACHE_SECONDS`, so they see a removal or deletion that late.
    """
    deadline = time.monotonic() + membership.CACHE_SECONDS + 2.0
    while True:
        try:
            call()
        except grpc.RpcError as error:
            if error.code() == code:
                return error
            assert error.code() == DENIED, f"{method}: {error.code()} {error.details()}"
        assert time.monotonic() < deadline, f"{method} still allowed"
        time.sleep(0.1)


def _settled_group(ann: Caller, ben: Caller) -> tuple[str, str, str]:
    """Make a group of ann and ben with one expense and the settlement that
    evens it out, so that the group can be deleted.

    Returns the names of the group, the expense and the settlement.
    """
    group = ann.create_group()
    ann.add_member(group, ben.user)
    expense = ann.create_expense(group, [ann.user, ben.user])
    settlement = ben.pay(group, ann.user, 15)
    return group, expense, settlement


def _deleted_group_reads(group, expense, settlement) -> list[tuple[str, str, object]]:
    reads = _group_reads(group, expense)
    reads.append(
        (
            "balances",
            "GetSettlement",
            balances_pb.GetSettlementRequest(name=settlement),
        )
    )
    return reads


def test_deleted_group_matches_get_group(stack, channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    group, expense, settlement = _settled_group(ann, ben)
    reads = _deleted_group_reads(group, expense, settlement)
    # Fill the member caches of expense_service and balance_service.
    for service, method, request in reads:
        _call(ben, service, method, request)
        _call(admin, service, method, request)

    ann.users("DeleteGroup", users_pb.DeleteGroupRequest(name=group))

    get_group = users_pb.GetGroupRequest(name=group)
    denied = fails(lambda: ben.users("GetGroup", get_group))
    assert denied.code() == DENIED
    missing = fails(lambda: admin.users("GetGroup", get_group))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert f"group {group!r} was deleted" in missing.details()
    info = error_details(missing)["ErrorInfo"]
    assert info.reason == "GROUP_NOT_FOUND"
    assert info.metadata["deleted"] == "true"

    for service, method, request in reads:
        error = _wait_for_error(
            functools.partial(_call, ben, service, method, request), DENIED, method
        )
        assert error.details() == denied.details(), method
        assert error_details(error)["ErrorInfo"].reason == "GROUP_ACCESS_DENIED"
    for service, method, request in reads:
        error = _wait_for_error(
            functools.partial(_call, admin, service, method, request),
            grpc.StatusCode.NOT_FOUND,
            method,
        )
        assert f"group {group!r} was deleted" in error.details(), method
        assert error_details(error)["ErrorInfo"].reason == "GROUP_NOT_FOUND"


def _deleter_calls(
    ben: Caller, group: str, expense: str, settlement: str
) -> list[tuple[str, str, object]]:
    """Calls that the member who deleted a group may try next, retries included."""
    balance = f"{group}/balance"
    return [
        ("users", "DeleteGroup", users_pb.DeleteGroupRequest(name=group)),
        (
            "users",
            "AddGroupMember",
            users_pb.AddGroupMemberRequest(parent=group, user=ben.user),
        ),
        (
            "users",
            "RemoveGroupMember",
            users_pb.RemoveGroupMemberRequest(
                name=f"{group}/members/{ben.user.removeprefix('users/')}"
            ),
        ),
        ("balances", "CheckSettled", balances_pb.CheckSettledRequest(name=balance)),
        (
            "balances",
            "DeleteSettlement",
            balances_pb.DeleteSettlementRequest(name=settlement),
        ),
        (
            "balances",
            "UndeleteSettlement",
            balances_pb.UndeleteSettlementRequest(name=settlement),
        ),
        ("expenses", "DeleteExpense", expenses_pb.DeleteExpenseRequest(name=expense)),
    ]


def test_deleted_group_denial_says_deleted(stack, channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    eve = _sign_up(channel, "eve")
    group, expense, settlement = _settled_group(ann, ben)
    calls = _deleter_calls(ben, group, expense, settlement)
    # Fill the member caches, so that the services learn of the deletion
    # only when the cached list runs out.
    ann.balances(
        "CheckSettled", balances_pb.CheckSettledRequest(name=f"{group}/balance")
    )
    _expense_names(ann, group)

    ann.users("DeleteGroup", users_pb.DeleteGroupRequest(name=group))

    for caller in (ann, eve):
        for service, method, request in calls:
            error = _wait_for_error(
                functools.partial(_call, caller, service, method, request),
                DENIED,
                method,
            )
            details = error.details()
            assert f"{group!r} because the group was deleted" in details, method
            assert "ListGroups" in details, method
            assert "AddGroupMember" not in details, method
            info = error_details(error)["ErrorInfo"]
            assert info.reason == "GROUP_ACCESS_DENIED", method
            assert info.metadata["deleted"] == "true", method
            assert info.metadata["principal"] == caller.user, method


def test_missing_group_denial_unchanged(channel):
    eve = _sign_up(channel, "eve")
    missing = f"groups/missing-{uuid.uuid4().hex[:8]}"
    error = fails(lambda: eve.users("GetGroup", users_pb.GetGroupRequest(name=missing)))
    assert error.code() == DENIED
    assert "does not exist or" in error.details()
    assert "was deleted" not in error.details()
    assert "deleted" not in error_details(error)["ErrorInfo"].metadata


def test_deleted_group_rest_reads(stack, channel, http):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    group, expense, _ = _settled_group(ann, ben)
    member = {"authorization": f"Bearer {ben.credential}"}
    operator = {"authorization": f"Bearer {admin.credential}"}
    for headers in (member, operator):
        assert http.get(f"/v1/{group}/expenses", headers=headers).status_code == 200

    ann.users("DeleteGroup", users_pb.DeleteGroupRequest(name=group))

    deadline = time.monotonic() + membership.CACHE_SECONDS + 2.0
    paths = (
        f"/v1/{group}/expenses",
        f"/v1/{expense}",
        f"/v1/{group}/balance",
        f"/v1/{group}/balance:checkSettled",
    )
    for path in paths:
        while (reply := http.get(path, headers=member)).status_code == 200:
            assert time.monotonic() < deadline, f"{path} still allowed"
            time.sleep(0.1)
        assert reply.status_code == 403, path
        assert (
            reply.json()["error"]["message"]
            == (http.get(f"/v1/{group}", headers=member).json()["error"]["message"])
        )
        while (reply := http.get(path, headers=operator)).status_code == 200:
            assert time.monotonic() < deadline, f"{path} still found"
            time.sleep(0.1)
        assert reply.status_code == 404, path
        assert f"group {group!r} was deleted" in reply.json()["error"]["message"]


def _deleted_group_writes(
    caller: Caller,
    payee: str,
    group: str,
    deleted: tuple[str, str],
    live: tuple[str, str],
) -> list[tuple[str, str, object]]:
    """Writes in a group, as (service, method, request), restores first.

    Args:
      payee: the user whom the caller pays in the new settlement.
      deleted: a deleted expense and a deleted settlement of the group.
      live: an expense and a settlement of the group that are not deleted.
    """
    settlement = balances_pb.Settlement(
        payer=caller.user,
        payee=payee,
        creator=caller.user,
        amount=money_pb2.Money(currency_code="EUR", units=1),
        settlement_date=date_pb2.Date(year=2024, month=5, day=3),
    )
    return [
        (
            "expenses",
            "CreateExpense",
            expenses_pb.CreateExpenseRequest(
                parent=group, expense=_expense(caller.user, [caller.user])
            ),
        ),
        (
            "expenses",
            "UndeleteExpense",
            expenses_pb.UndeleteExpenseRequest(name=deleted[0]),
        ),
        (
            "expenses",
            "UndeleteExpense",
            expenses_pb.UndeleteExpenseRequest(name=live[0]),
        ),
        (
            "balances",
            "UndeleteSettlement",
            balances_pb.UndeleteSettlementRequest(name=deleted[1]),
        ),
        (
            "balances",
            "UndeleteSettlement",
            balances_pb.UndeleteSettlementRequest(name=live[1]),
        ),
        (
            "balances",
            "DeleteSettlement",
            balances_pb.DeleteSettlementRequest(name=deleted[1]),
        ),
        (
            "balances",
            "CreateSettlement",
            balances_pb.CreateSettlementRequest(parent=group, settlement=settlement),
        ),
    ]


def _deleted_pair(ann: Caller, ben: Caller, group: str) -> tuple[str, str]:
    """Create an expense and a settlement in the group, and delete both."""
    expense = ann.create_expense(group, [ann.user, ben.user])
    ann.expenses("DeleteExpense", expenses_pb.DeleteExpenseRequest(name=expense))
    settlement = ben.pay(group, ann.user, 2)
    ben.balances(
        "DeleteSettlement", balances_pb.DeleteSettlementRequest(name=settlement)
    )
    return expense, settlement


def test_deleted_group_restores_match_create(stack, channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    group, expense, settlement = _settled_group(ann, ben)
    deleted = _deleted_pair(ann, ben, group)
    # Fill the member caches, so that ben is still accepted from them for a
    # few seconds after the deletion, and the writes fetch the list again.
    for caller in (ben, admin):
        caller.balances(
            "ListSettlements", balances_pb.ListSettlementsRequest(parent=group)
        )
        _expense_names(caller, group)

    ann.users("DeleteGroup", users_pb.DeleteGroupRequest(name=group))

    get_group = users_pb.GetGroupRequest(name=group)
    denied = fails(lambda: ben.users("GetGroup", get_group))
    writes = _deleted_group_writes(ben, ann.user, group, deleted, (expense, settlement))
    for service, method, request in writes:
        error = _error_of(ben, service, method, request)
        assert error.code() == DENIED, f"{method} {error.details()}"
        assert error.details() == denied.details(), method
        assert error_details(error)["ErrorInfo"].reason == "GROUP_ACCESS_DENIED"
    writes = _deleted_group_writes(
        admin, ann.user, group, deleted, (expense, settlement)
    )
    for service, method, request in writes:
        error = _error_of(admin, service, method, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND, f"{method} {error.details()}"
        assert f"group {group!r} was deleted" in error.details(), method
        assert error_details(error)["ErrorInfo"].reason == "GROUP_NOT_FOUND"


def test_deleted_group_rest_restores(stack, channel, http):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    group, _, settlement = _settled_group(ann, ben)
    deleted_expense, deleted_settlement = _deleted_pair(ann, ben, group)
    ann.users("DeleteGroup", users_pb.DeleteGroupRequest(name=group))

    for name in (deleted_expense, deleted_settlement, settlement):
        for caller, status in ((ben, 403), (admin, 404)):
            reply = http.post(
                f"/v1/{name}:undelete",
                json={},
                headers={"authorization": f"Bearer {caller.credential}"},
            )
            assert reply.status_code == status, (name, reply.text)


def test_deleted_group_left_out_of_lists(stack, channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    admin = _admin(stack, channel, _sign_up(channel, "root"))
    group, expense, settlement = _settled_group(ann, ben)
    own = ben.create_group("Own")
    kept = ben.create_expense(own, [ben.user])
    expenses_across = expenses_pb.ListExpensesRequest(
        parent="groups/-", participant=ben.user
    )
    settlements_across = balances_pb.ListSettlementsRequest(
        parent="groups/-", participant=ben.user
    )
    dashboard = gateway_pb.GetUserDashboardRequest(user=ben.user)

    def listed(caller: Caller) -> set[str]:
        expenses = caller.expenses("ListExpenses", expenses_across).expenses
        settlements = caller.balances("ListSettlements", settlements_across)
        return {item.name for item in expenses} | {
            item.name for item in settlements.settlements
        }

    def on_dashboard(caller: Caller) -> set[str]:
        response = caller.gateway("GetUserDashboard", dashboard)
        assert list(response.section_errors) == []
        return {item.group for item in response.recent_activity} | {
            summary.group.name for summary in response.group_summaries
        }

    for caller in (ben, admin):
        assert listed(caller) == {expense, settlement, kept}
        assert on_dashboard(caller) == {group, own}

    ann.users("DeleteGroup", users_pb.DeleteGroupRequest(name=group))

    deadline = time.monotonic() + membership.CACHE_SECONDS + 2.0
    for caller in (ben, admin):
        while listed(caller) != {kept}:
            assert time.monotonic() < deadline, f"still listed: {listed(caller)}"
            time.sleep(0.1)
        assert on_dashboard(caller) == {own}


def test_deleted_group_id_not_reused(stack, channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    group, _, _ = _settled_group(ann, ben)
    ann.users("DeleteGroup", users_pb.DeleteGroupRequest(name=group))
    again = users_pb.CreateGroupRequest(
        group=users_pb.Group(display_name="Again", creator=ann.user),
        group_id=group.removeprefix("groups/"),
    )
    error = fails(lambda: ann.users("CreateGroup", again))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"group {group!r} was deleted" in error.details()
    assert "choose another group_id" in error.details()
    assert error_details(error)["ErrorInfo"].reason == "GROUP_ID_DELETED"


# REST


def test_rest_non_member_denied(channel, http):
    ann, eve = _sign_up(channel, "ann"), _sign_up(channel, "eve")
    group = ann.create_group()
    expense = ann.create_expense(group, [ann.user])
    headers = {"authorization": f"Bearer {eve.credential}"}

    read = http.get(f"/v1/{group}", headers=headers)
    assert read.status_code == 403
    assert group in read.json()["error"]["message"]
    missing = f"groups/missing-{uuid.uuid4().hex[:8]}"
    probe = http.get(f"/v1/{missing}", headers=headers)
    assert probe.status_code == 403
    assert (
        probe.json()["error"]["message"].replace(missing, group)
        == (read.json()["error"]["message"])
    )
    assert http.get(f"/v1/{group}/expenses", headers=headers).status_code == 403
    assert http.get(f"/v1/{group}/overview", headers=headers).status_code == 403

    body = {
        "description": "Forged",
        "expenseDate": {"year": 2024, "month": 5, "day": 1},
        "total": {"currencyCode": "EUR", "units": "30"},
        "payers": [
            {"user": eve.user, "amount": {"currencyCode": "EUR", "units": "30"}}
        ],
        "split": {"type": "SPLIT_TYPE_EQUAL", "participants": [{"user": eve.user}]},
        "creator": eve.user,
    }
    write = http.post(f"/v1/{group}/expenses", json=body, headers=headers)
    assert write.status_code == 403
    join = http.post(f"/v1/{group}/members", json={"user": eve.user}, headers=headers)
    assert join.status_code == 403
    assert _expense_names(ann, group) == [expense]
    assert _member_names(ann, group) == [ann.user]

    own = http.get(
        f"/v1/{group}", headers={"authorization": f"Bearer {ann.credential}"}
    )
    assert own.status_code == 200


# Auth off


def test_auth_off_allows_everything(loop_thread, tmp_path):
    off = _start_stack(loop_thread, tmp_path, False)
    try:
        address = f"127.0.0.1:{off.gateway.grpc_port}"
        with grpc.insecure_channel(address) as plain:
            users = users_grpc.UsersServiceStub(plain)
            names = []
            for label in ("ann", "ben"):
                created = users.CreateUser(
                    users_pb.CreateUserRequest(
                        user=users_pb.User(
                            email=f"{label}-off@example.com", display_name=label
                        )
                    ),
                    timeout=TIMEOUT,
                )
                names.append(created.user.name)
            group = users.CreateGroup(
                users_pb.CreateGroupRequest(
                    group=users_pb.Group(display_name="Open", creator=names[0])
                ),
                timeout=TIMEOUT,
            ).group.name
            expense = expenses_grpc.ExpensesServiceStub(plain).CreateExpense(
                expenses_pb.CreateExpenseRequest(
                    parent=group, expense=_expense(names[0], [names[0]])
                ),
                timeout=TIMEOUT,
            )
            assert expense.expense.name.startswith(group)
            listed = users.ListUsers(users_pb.ListUsersRequest(), timeout=TIMEOUT)
            assert [user.name for user in listed.users] == names
            missing = fails(
                lambda: users.GetGroup(
                    users_pb.GetGroupRequest(name="groups/missing-group"),
                    timeout=TIMEOUT,
                )
            )
            assert missing.code() == grpc.StatusCode.NOT_FOUND
    finally:
        _stop_stack(loop_thread, off)


# The Splitwise commands, which send the credential as every client command does


def test_splitwise_export_sends_token(stack, channel, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    ann = _sign_up(channel, "ann")
    group = ann.create_group()
    ann.create_expense(group, [ann.user])
    exported = tmp_path / "export.csv"

    status = main(
        ["export", "splitwise", group, "-o", str(exported), "--token", ann.credential]
        + ["--gateway", f"127.0.0.1:{stack.gateway.grpc_port}"]
    )

    assert status == 0, capsys.readouterr().err
    assert "Dinner" in exported.read_text()


def test_splitwise_import_bad_env_token(stack, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv(TOKEN_ENV, "Secret:\nsl_key_abc")

    status = main(
        ["import", "splitwise", str(SPLITWISE_FIXTURES / "current_flat.csv")]
        + ["--gateway", f"127.0.0.1:{stack.gateway.grpc_port}"]
    )

    error = capsys.readouterr().err
    assert status == 2
    assert f"the token in {TOKEN_ENV} is invalid" in error
    assert "line break at character 8 of 18" in error


def test_splitwise_import_sends_env_token(
    stack, channel, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    ann = _sign_up(channel, "ann")
    monkeypatch.setenv(TOKEN_ENV, ann.credential)

    status = main(
        ["import", "splitwise", str(SPLITWISE_FIXTURES / "current_flat.csv")]
        + ["--gateway", f"127.0.0.1:{stack.gateway.grpc_port}"]
    )

    # The gateway accepted the token: the import then needs an administrator
    # to create the file's users.
    error = capsys.readouterr().err
    assert status == 1
    assert "UNAUTHENTICATED" not in error
    assert "CreateUser needs an administrator" in error
