"""GatewayService end to end: the gateway in front of the real user, expense
and balance services, over gRPC and REST.

One set of servers serves the module. The data is written through the
gateway: two groups, expenses in two currencies and a settlement. The test
that stops balance_service runs last, because the module's servers stay
without it afterwards.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2

from balance_service.app import build as build_balances
from expense_service import money
from expense_service.app import build as build_expenses
from gateway.aggregate import MAX_RECENT_ACTIVITY, MAX_RECENT_EXPENSES
from gateway.app import build
from gateway.proxy import UNREACHABLE_LOG_INTERVAL
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.gateway.v1 import gateway_service_pb2 as pb
from splitlog.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.interceptor import ErrorInterceptor
from splitlog_runtime.validation import latest_record_date
from tests.gateway.support import LoopThread, Stack, error_details
from tests.ports import closed_address
from user_service.app import build as build_users
from user_service.guards import AllowAllBalanceGuard

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
TIMEOUT = 10.0


def _gateway_config(data_dir, users, expenses, balances, **addresses: str):
    overrides = {
        "auth_required": False,
        "data_dir": data_dir,
        "user_service_addr": f"127.0.0.1:{users.port}",
        "expense_service_addr": f"127.0.0.1:{expenses.port}",
        "balance_service_addr": f"127.0.0.1:{balances.port}",
        "log_service_addr": closed_address(),
        "grace_seconds": 1.0,
        "deadline_seconds": 5.0,
    }
    overrides.update(addresses)
    return config_module.load(environ={}, overrides=overrides)


@pytest.fixture(scope="module")
def stack(loop_thread: LoopThread, tmp_path_factory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("aggregate")
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": data,
            "workers": 8,
            "grace_seconds": 1.0,
            "deadline_seconds": 5.0,
        },
    )
    users = build_users(base, "127.0.0.1:0", guard=AllowAllBalanceGuard())
    users_address = f"127.0.0.1:{users.port}"
    expenses = build_expenses(
        base.replace(user_service_addr=users_address), "127.0.0.1:0"
    )
    balances = build_balances(
        base.replace(
            user_service_addr=users_address,
            expense_service_addr=f"127.0.0.1:{expenses.port}",
        ),
        "127.0.0.1:0",
    )
    config = _gateway_config(data, users, expenses, balances)
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield Stack(users, expenses, balances, gateway)
    loop_thread.run(gateway.stop(0))
    balances.stop(0)
    expenses.stop(0)
    users.stop(0)


@contextmanager
def _extra_gateway(loop_thread, stack: Stack, tmp_path, **addresses: str):
    """Run a second gateway in front of the module's servers, with some
    backend addresses replaced."""
    config = _gateway_config(
        tmp_path, stack.users, stack.expenses, stack.balances, **addresses
    )
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as opened:
            yield pb_grpc.GatewayServiceStub(opened)
    finally:
        loop_thread.run(gateway.stop(0))


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def gateway_stub(channel) -> pb_grpc.GatewayServiceStub:
    return pb_grpc.GatewayServiceStub(channel)


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.gateway.http_port}", timeout=TIMEOUT
    ) as opened:
        yield opened


def _money(amount_minor: int, currency: str) -> money_pb2.Money:
    units, nanos = money.from_minor_units(amount_minor, currency)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def _minor(value: money_pb2.Money) -> int:
    return money.to_minor_units(value.units, value.nanos, value.currency_code)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Trip:
    """What the module writes through the gateway, and the nets it expects.

    In `trip`, Ann paid 90.00 EUR and Ben 30.00 EUR, both split equally among
    Ann, Ben and Cal, then Ben paid Ann 10.00 EUR. Cal paid 3000 JPY split
    between Ann and Cal. In `flat`, Ben paid 20.00 EUR split between Ann and
    Ben.
    """

    ann: str
    ben: str
    cal: str
    trip: str
    flat: str
    # Expense and settlement names, oldest recorded first.
    recorded: list[str]
    trip_expenses: list[str]
    nets: dict[str, dict[str, dict[str, int]]]


def _expense(
    payer: str, cents: int, currency: str, participants: list[str], text: str
) -> expenses_pb.Expense:
    return expenses_pb.Expense(
        description=text,
        expense_date=date_pb2.Date(year=2024, month=5, day=1),
        total=_money(cents, currency),
        payers=[expenses_pb.Payer(user=payer, amount=_money(cents, currency))],
        split=expenses_pb.Split(
            type=expenses_pb.SPLIT_TYPE_EQUAL,
            participants=[expenses_pb.SplitParticipant(user=u) for u in participants],
        ),
        creator=payer,
    )


def _create_user(users: users_grpc.UsersServiceStub, name: str) -> str:
    user_id = _unique(name)
    users.CreateUser(
        users_pb.CreateUserRequest(
            user=users_pb.User(email=f"{user_id}@example.com", display_name=name),
            user_id=user_id,
        ),
        timeout=TIMEOUT,
    )
    return f"users/{user_id}"


def _create_group(users, creator: str, members: list[str], title: str) -> str:
    group = users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name=title, creator=creator)
        ),
        timeout=TIMEOUT,
    ).group
    for member in members:
        users.AddGroupMember(
            users_pb.AddGroupMemberRequest(parent=group.name, user=member),
            timeout=TIMEOUT,
        )
    return group.name


def _group_nets(balance: balances_pb.GroupBalance) -> dict[str, dict[str, int]]:
    return {
        entry.currency_code: {
            member.user: _minor(member.net_amount)
            for member in entry.member_balances
            if _minor(member.net_amount) != 0
        }
        for entry in balance.currency_balances
    }


def _wait_for_nets(balances, group: str, expected, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        balance = balances.GetGroupBalance(
            balances_pb.GetGroupBalanceRequest(name=f"{group}/balance"),
            timeout=TIMEOUT,
        ).balance
        if _group_nets(balance) == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"balances of {group} are {_group_nets(balance)}, expected {expected}"
            )
        time.sleep(0.02)


@pytest.fixture(scope="module")
def trip(channel) -> Trip:
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    balances = balances_grpc.BalancesServiceStub(channel)
    ann, ben, cal = (_create_user(users, name) for name in ("ann", "ben", "cal"))
    trip_group = _create_group(users, ann, [ben, cal], "Trip")
    flat_group = _create_group(users, ben, [ann], "Flat")

    recorded = []
    for group, expense in [
        (trip_group, _expense(ann, 9000, "EUR", [ann, ben, cal], "Hotel")),
        (trip_group, _expense(ben, 3000, "EUR", [ann, ben, cal], "Dinner")),
        (trip_group, _expense(cal, 3000, "JPY", [ann, cal], "Train")),
    ]:
        created = expenses.CreateExpense(
            expenses_pb.CreateExpenseRequest(parent=group, expense=expense),
            timeout=TIMEOUT,
        ).expense
        recorded.append(created.name)
    settlement = balances.CreateSettlement(
        balances_pb.CreateSettlementRequest(
            parent=trip_group,
            settlement=balances_pb.Settlement(
                payer=ben,
                payee=ann,
                creator=ben,
                amount=_money(1000, "EUR"),
                settlement_date=date_pb2.Date(year=2024, month=5, day=2),
            ),
        ),
        timeout=TIMEOUT,
    ).settlement
    recorded.append(settlement.name)
    flat_expense = expenses.CreateExpense(
        expenses_pb.CreateExpenseRequest(
            parent=flat_group, expense=_expense(ben, 2000, "EUR", [ann, ben], "Rent")
        ),
        timeout=TIMEOUT,
    ).expense
    recorded.append(flat_expense.name)

    nets = {
        trip_group: {
            "EUR": {ann: 4000, cal: -4000},
            "JPY": {ann: -1500, cal: 1500},
        },
        flat_group: {"EUR": {ann: -1000, ben: 1000}},
    }
    for group, expected in nets.items():
        _wait_for_nets(balances, group, expected)
    return Trip(ann, ben, cal, trip_group, flat_group, recorded, recorded[:3], nets)


def _overview(stub, group: str, **fields) -> pb.GetGroupOverviewResponse:
    return stub.GetGroupOverview(
        pb.GetGroupOverviewRequest(group=group, **fields), timeout=TIMEOUT
    )


def _dashboard(stub, user: str, **fields) -> pb.GetUserDashboardResponse:
    return stub.GetUserDashboard(
        pb.GetUserDashboardRequest(user=user, **fields), timeout=TIMEOUT
    )


def _sum_by_currency(amounts) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for amount in amounts:
        totals[amount.currency_code] += _minor(amount)
    return dict(totals)


def test_overview_group_and_members(gateway_stub, trip):
    response = _overview(gateway_stub, trip.trip)

    assert response.group.name == trip.trip
    assert response.group.display_name == "Trip"
    assert [member.user for member in response.members] == [
        trip.ann,
        trip.ben,
        trip.cal,
    ]
    assert list(response.section_errors) == []


def test_overview_balances_add_to_zero(gateway_stub, trip):
    response = _overview(gateway_stub, trip.trip)

    assert response.balance.name == f"{trip.trip}/balance"
    for entry in response.balance.currency_balances:
        total = sum(_minor(member.net_amount) for member in entry.member_balances)
        assert total == 0, entry.currency_code
    assert _group_nets(response.balance) == trip.nets[trip.trip]


def test_overview_plan_settles_group(gateway_stub, trip):
    response = _overview(gateway_stub, trip.trip)

    nets = {
        currency: dict(by_user) for currency, by_user in trip.nets[trip.trip].items()
    }
    for transfer in response.settlement_plan:
        currency = transfer.amount.currency_code
        amount = _minor(transfer.amount)
        assert amount > 0
        nets[currency][transfer.payer] = nets[currency].get(transfer.payer, 0) + amount
        nets[currency][transfer.payee] = nets[currency].get(transfer.payee, 0) - amount
    assert len(response.settlement_plan) == 2
    assert all(net == 0 for by_user in nets.values() for net in by_user.values())


def test_overview_recent_expenses_newest_first(gateway_stub, trip):
    response = _overview(gateway_stub, trip.trip)
    limited = _overview(gateway_stub, trip.trip, recent_expense_count=2)

    newest_first = list(reversed(trip.trip_expenses))
    assert [expense.name for expense in response.recent_expenses] == newest_first
    assert [expense.name for expense in limited.recent_expenses] == newest_first[:2]


def test_overview_batch_in_list_order(channel, gateway_stub):
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    dan, eve = _create_user(users, "dan"), _create_user(users, "eve")
    group = _create_group(users, dan, [eve], "Imported")
    # One batch, as an import sends it: every row has one create_time, and
    # row N is dated 13 - N May.
    creates = []
    for line in range(1, 13):
        expense = _expense(dan, 100 * line, "EUR", [dan, eve], f"Row {line}")
        expense.expense_date.day = 13 - line
        creates.append(
            expenses_pb.CreateExpenseRequest(expense=expense, expense_id=f"row-{line}")
        )
    expenses.BatchCreateExpenses(
        expenses_pb.BatchCreateExpensesRequest(parent=group, requests=creates),
        timeout=TIMEOUT,
    )
    listed = expenses.ListExpenses(
        expenses_pb.ListExpensesRequest(parent=group), timeout=TIMEOUT
    ).expenses

    response = _overview(gateway_stub, group, recent_expense_count=12)

    newest_first = [f"{group}/expenses/row-{line}" for line in range(1, 13)]
    assert [expense.name for expense in response.recent_expenses] == newest_first
    assert [expense.name for expense in listed] == newest_first


def test_overview_count_over_maximum_lowered(channel, gateway_stub):
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    dan, eve = _create_user(users, "dan"), _create_user(users, "eve")
    group = _create_group(users, dan, [eve], "Lunches")
    creates = [
        expenses_pb.CreateExpenseRequest(
            expense=_expense(dan, 100 + n, "EUR", [dan, eve], f"Lunch {n}")
        )
        for n in range(MAX_RECENT_EXPENSES + 2)
    ]
    expenses.BatchCreateExpenses(
        expenses_pb.BatchCreateExpensesRequest(parent=group, requests=creates),
        timeout=TIMEOUT,
    )

    response = _overview(gateway_stub, group, recent_expense_count=1_000_000)

    assert len(response.recent_expenses) == MAX_RECENT_EXPENSES
    assert list(response.section_errors) == []


def test_overview_leaves_out_deleted_expense(channel, gateway_stub):
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    dan, eve = _create_user(users, "dan"), _create_user(users, "eve")
    group = _create_group(users, dan, [eve], "Picnic")
    kept, deleted = (
        expenses.CreateExpense(
            expenses_pb.CreateExpenseRequest(
                parent=group, expense=_expense(dan, 500, "EUR", [dan, eve], text)
            ),
            timeout=TIMEOUT,
        ).expense
        for text in ("Bread", "Cheese")
    )
    expenses.DeleteExpense(
        expenses_pb.DeleteExpenseRequest(name=deleted.name, last_modifier=dan),
        timeout=TIMEOUT,
    )

    response = _overview(gateway_stub, group)

    assert [expense.name for expense in response.recent_expenses] == [kept.name]


def test_overview_unknown_group_not_found(gateway_stub, trip):
    with pytest.raises(grpc.RpcError) as caught:
        _overview(gateway_stub, "groups/no-such-group")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    details = error_details(caught.value)
    assert details["ErrorInfo"].reason == "GROUP_NOT_FOUND"
    assert details["ResourceInfo"].resource_name == "groups/no-such-group"


@pytest.mark.parametrize(
    ("group", "reason"),
    [
        ("", "REQUIRED"),
        ("groups/", "INVALID_RESOURCE_NAME"),
        ("groups/-", "INVALID_RESOURCE_NAME"),
        ("users/abcd", "INVALID_RESOURCE_NAME"),
    ],
)
def test_overview_invalid_group_name(gateway_stub, group, reason):
    with pytest.raises(grpc.RpcError) as caught:
        _overview(gateway_stub, group)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(caught.value)
    assert details["ErrorInfo"].reason == reason
    assert details["BadRequest"].field_violations[0].field == "group"


def test_overview_negative_count_invalid(gateway_stub, trip):
    with pytest.raises(grpc.RpcError) as caught:
        _overview(gateway_stub, trip.trip, recent_expense_count=-1)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(caught.value)
    assert details["ErrorInfo"].reason == "INVALID_COUNT"
    assert details["BadRequest"].field_violations[0].field == "recent_expense_count"
    message = details["BadRequest"].field_violations[0].description
    assert "-1 is negative" in message
    assert f"lowered to {MAX_RECENT_EXPENSES}" in message


def test_dashboard_groups_with_nets(gateway_stub, trip):
    response = _dashboard(gateway_stub, trip.ann)

    assert response.user.name == trip.ann
    # Newest membership first: Ann joined the flat after creating the trip.
    assert [s.group.name for s in response.group_summaries] == [trip.flat, trip.trip]
    for summary in response.group_summaries:
        expected = {
            currency: by_user[trip.ann]
            for currency, by_user in trip.nets[summary.group.name].items()
            if trip.ann in by_user
        }
        assert _sum_by_currency(summary.net_amounts) == expected
    assert list(response.section_errors) == []


def test_dashboard_totals_sum_group_nets(gateway_stub, trip):
    response = _dashboard(gateway_stub, trip.ann)

    summed = _sum_by_currency(
        amount for summary in response.group_summaries for amount in summary.net_amounts
    )
    totals = _sum_by_currency(response.total_net_amounts)
    assert totals == summed
    assert totals == {"EUR": 3000, "JPY": -1500}
    assert len(response.total_net_amounts) == 2


# Maximum yen of one expense, and the expenses per group, so that three
# groups take a member's net past the int64 range of google.type.Money.
_MAX_EXPENSE_YEN = 10**15
_OVERFLOW_GROUP_EXPENSES = 3100


@pytest.fixture(scope="module")
def overflowing(channel) -> tuple[str, list[str]]:
    """A user owed 3.1 * 10^18 JPY in each of three groups and 10.00 EUR in
    one, so that the JPY total is past 2^63 - 1; returns the user and the
    groups."""
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    balances = balances_grpc.BalancesServiceStub(channel)
    rich, other = _create_user(users, "rich"), _create_user(users, "other")
    groups = [_create_group(users, rich, [other], f"Big {n}") for n in range(3)]

    total = _MAX_EXPENSE_YEN * _OVERFLOW_GROUP_EXPENSES
    for group in groups:
        expense = _expense(rich, _MAX_EXPENSE_YEN, "JPY", [other], "Big")
        expenses.BatchCreateExpenses(
            expenses_pb.BatchCreateExpensesRequest(
                parent=group,
                requests=[
                    expenses_pb.CreateExpenseRequest(expense=expense)
                    for _ in range(_OVERFLOW_GROUP_EXPENSES)
                ],
            ),
            timeout=60,
        )
    expenses.CreateExpense(
        expenses_pb.CreateExpenseRequest(
            parent=groups[0], expense=_expense(rich, 1000, "EUR", [other], "Taxi")
        ),
        timeout=TIMEOUT,
    )

    for index, group in enumerate(groups):
        expected = {"JPY": {rich: total, other: -total}}
        if index == 0:
            expected["EUR"] = {rich: 1000, other: -1000}
        _wait_for_nets(balances, group, expected, timeout=120)
    return rich, groups


def _error_info(status) -> error_details_pb2.ErrorInfo:
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def test_dashboard_total_past_int64_named(gateway_stub, overflowing):
    rich, groups = overflowing

    response = _dashboard(gateway_stub, rich)

    assert {s.group.name for s in response.group_summaries} == set(groups)
    assert list(response.total_net_amounts) == []
    assert [e.section for e in response.section_errors] == [
        "group_summaries.net_amounts",
        "total_net_amounts",
    ]
    for error in response.section_errors:
        assert error.status.code == grpc.StatusCode.OUT_OF_RANGE.value[0]
        info = _error_info(error.status)
        assert info.reason == "TOTAL_OUT_OF_RANGE"
        assert info.metadata["currency_code"] == "JPY"
        assert f"net amounts of {rich} in JPY" in error.status.message
        assert "GetGroupOverview" in error.status.message
    overview = _overview(gateway_stub, groups[0])
    nets = _group_nets(overview.balance)
    assert nets["JPY"][rich] == _MAX_EXPENSE_YEN * _OVERFLOW_GROUP_EXPENSES
    assert nets["EUR"][rich] == 1000


def test_dashboard_settled_group_has_no_nets(gateway_stub, trip):
    response = _dashboard(gateway_stub, trip.ben)

    nets = {s.group.name: list(s.net_amounts) for s in response.group_summaries}
    assert nets[trip.trip] == []
    assert _sum_by_currency(nets[trip.flat]) == {"EUR": 1000}


@dataclass
class FormerMember:
    """A user who left a group and then got a balance in it back.

    Kim and Jon each owed Ivy 10.00 EUR for a cabin that Ivy paid, and Kim
    paid her back. Kim left the cabin group, settled, and then the cabin
    expense was deleted, so Kim is owed 10.00 EUR in a group Kim has left.
    In the club group, which Kim still belongs to, Kim paid 20.00 EUR split
    with Ivy, so Kim is owed 10.00 EUR there too.
    """

    kim: str
    cabin: str
    club: str


@pytest.fixture(scope="module")
def former(channel) -> FormerMember:
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    balances = balances_grpc.BalancesServiceStub(channel)
    ivy, jon, kim = (_create_user(users, name) for name in ("ivy", "jon", "kim"))
    cabin = _create_group(users, ivy, [jon, kim], "Cabin")
    club = _create_group(users, kim, [ivy], "Club")

    stay = expenses.CreateExpense(
        expenses_pb.CreateExpenseRequest(
            parent=cabin, expense=_expense(ivy, 3000, "EUR", [ivy, jon, kim], "Stay")
        ),
        timeout=TIMEOUT,
    ).expense
    expenses.CreateExpense(
        expenses_pb.CreateExpenseRequest(
            parent=club, expense=_expense(kim, 2000, "EUR", [kim, ivy], "Court")
        ),
        timeout=TIMEOUT,
    )

    balances.CreateSettlement(
        balances_pb.CreateSettlementRequest(
            parent=cabin,
            settlement=balances_pb.Settlement(
                payer=kim,
                payee=ivy,
                creator=kim,
                amount=_money(1000, "EUR"),
                settlement_date=date_pb2.Date(year=2024, month=5, day=2),
            ),
        ),
        timeout=TIMEOUT,
    )
    _wait_for_nets(balances, cabin, {"EUR": {ivy: 1000, jon: -1000}})

    users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(
            name=f"{cabin}/members/{kim.removeprefix('users/')}"
        ),
        timeout=TIMEOUT,
    )
    expenses.DeleteExpense(
        expenses_pb.DeleteExpenseRequest(name=stay.name, last_modifier=ivy),
        timeout=TIMEOUT,
    )
    _wait_for_nets(balances, cabin, {"EUR": {ivy: -1000, kim: 1000}})
    _wait_for_nets(balances, club, {"EUR": {ivy: -1000, kim: 1000}})

    return FormerMember(kim, cabin, club)


def test_dashboard_lists_former_group(gateway_stub, former):
    response = _dashboard(gateway_stub, former.kim)

    names = [summary.group.name for summary in response.group_summaries]
    assert names == [former.club, former.cabin]
    current, left = response.group_summaries
    assert not current.former_member
    assert current.group.display_name == "Club"
    assert left.former_member
    # Only members may read a group, so a former group carries its name only.
    assert left.group == users_pb.Group(name=former.cabin)
    assert _sum_by_currency(left.net_amounts) == {"EUR": 1000}
    assert list(response.section_errors) == []


def test_dashboard_totals_include_former_group(gateway_stub, former):
    response = _dashboard(gateway_stub, former.kim)

    summed = _sum_by_currency(
        amount for summary in response.group_summaries for amount in summary.net_amounts
    )
    totals = _sum_by_currency(response.total_net_amounts)
    assert totals == {"EUR": 2000}
    assert summed == totals


def test_rest_dashboard_former_group(http, former):
    response = http.get(f"/v1/{former.kim}/dashboard")

    assert response.status_code == 200, response.text
    summaries = response.json()["groupSummaries"]
    assert [s["group"]["name"] for s in summaries] == [former.club, former.cabin]
    assert "formerMember" not in summaries[0]
    assert summaries[1]["formerMember"] is True
    assert summaries[1]["group"] == {"name": former.cabin}
    assert summaries[1]["netAmounts"] == [{"currencyCode": "EUR", "units": "10"}]


def test_dashboard_recent_activity_newest_first(gateway_stub, trip):
    response = _dashboard(gateway_stub, trip.ann)
    limited = _dashboard(gateway_stub, trip.ann, recent_activity_count=2)

    newest_first = list(reversed(trip.recorded))
    names = [
        getattr(item, item.WhichOneof("item")).name for item in response.recent_activity
    ]
    assert names[: len(newest_first)] == newest_first
    kinds = [item.WhichOneof("item") for item in response.recent_activity[:5]]
    assert kinds == ["expense", "settlement", "expense", "expense", "expense"]
    groups = [item.group for item in response.recent_activity[:5]]
    assert groups == [trip.flat] + [trip.trip] * 4
    times = [item.activity_time.ToNanoseconds() for item in response.recent_activity]
    assert times == sorted(times, reverse=True)
    assert len(limited.recent_activity) == 2


def test_dashboard_batch_in_list_order(channel, gateway_stub):
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    dan, eve = _create_user(users, "dan"), _create_user(users, "eve")
    group = _create_group(users, dan, [eve], "Imported")
    # One batch, as an import sends it, so every row has one create_time.
    creates = [
        expenses_pb.CreateExpenseRequest(
            expense=_expense(dan, 100 * line, "EUR", [dan, eve], f"Row {line}"),
            expense_id=f"row-{line}",
        )
        for line in range(1, 13)
    ]
    expenses.BatchCreateExpenses(
        expenses_pb.BatchCreateExpensesRequest(parent=group, requests=creates),
        timeout=TIMEOUT,
    )

    response = _dashboard(gateway_stub, dan, recent_activity_count=12)

    names = [item.expense.name for item in response.recent_activity]
    assert names == [f"{group}/expenses/row-{line}" for line in range(12, 0, -1)]


def test_dashboard_activity_only_involving_user(gateway_stub, trip):
    response = _dashboard(gateway_stub, trip.cal)

    names = [
        getattr(item, item.WhichOneof("item")).name for item in response.recent_activity
    ]
    # Cal takes no part in the flat's rent or in the settlement.
    assert names == list(reversed(trip.trip_expenses))


def test_dashboard_unknown_user_not_found(gateway_stub):
    with pytest.raises(grpc.RpcError) as caught:
        _dashboard(gateway_stub, "users/no-such-user")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value)["ErrorInfo"].reason == "USER_NOT_FOUND"


def test_dashboard_invalid_user_name(gateway_stub):
    with pytest.raises(grpc.RpcError) as caught:
        _dashboard(gateway_stub, "users/A!")

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(caught.value)
    assert details["ErrorInfo"].reason == "INVALID_RESOURCE_NAME"
    assert details["BadRequest"].field_violations[0].field == "user"


def test_rest_overview(http, trip):
    response = http.get(f"/v1/{trip.trip}/overview", params={"recentExpenseCount": 1})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["group"]["name"] == trip.trip
    assert len(body["members"]) == 3
    assert body["balance"]["name"] == f"{trip.trip}/balance"
    assert len(body["settlementPlan"]) == 2
    assert [e["name"] for e in body["recentExpenses"]] == [trip.trip_expenses[-1]]
    assert "sectionErrors" not in body


def test_rest_dashboard(http, trip):
    response = http.get(f"/v1/{trip.ann}/dashboard")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["name"] == trip.ann
    assert [s["group"]["name"] for s in body["groupSummaries"]] == [
        trip.flat,
        trip.trip,
    ]
    assert {t["currencyCode"] for t in body["totalNetAmounts"]} == {"EUR", "JPY"}
    first = body["recentActivity"][0]
    assert first["expense"]["name"] == trip.recorded[-1]
    assert first["group"] == trip.flat


def test_rest_views_send_no_etag(http, trip):
    group = http.get(f"/v1/{trip.trip}")
    overview = http.get(f"/v1/{trip.trip}/overview")
    dashboard = http.get(f"/v1/{trip.ann}/dashboard")

    # The group's etag does not change with its balances or expenses, so it
    # cannot stand for a view of them.
    assert group.headers["ETag"] == group.json()["group"]["etag"]
    assert overview.status_code == 200, overview.text
    assert "ETag" not in overview.headers
    assert dashboard.status_code == 200, dashboard.text
    assert "ETag" not in dashboard.headers


def test_rest_unknown_group_404(http):
    response = http.get("/v1/groups/no-such-group/overview")

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["status"] == "NOT_FOUND"
    info = next(d for d in error["details"] if d["@type"] == ERROR_INFO)
    assert info["reason"] == "GROUP_NOT_FOUND"


def test_rest_negative_count_400(http, trip):
    response = http.get(f"/v1/{trip.ann}/dashboard", params={"recentActivityCount": -3})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    info = next(d for d in error["details"] if d["@type"] == ERROR_INFO)
    assert info["reason"] == "INVALID_COUNT"
    assert f"lowered to {MAX_RECENT_ACTIVITY}" in error["message"]


def test_rest_count_over_maximum_accepted(http, trip):
    response = http.get(
        f"/v1/{trip.ann}/dashboard",
        params={"recentActivityCount": MAX_RECENT_ACTIVITY + 1},
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["recentActivity"]) <= MAX_RECENT_ACTIVITY


def test_report_lists_only_months_with_expenses(channel, http):
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    balances = balances_grpc.BalancesServiceStub(channel)
    dan, eve = _create_user(users, "dan"), _create_user(users, "eve")
    group = _create_group(users, dan, [eve], "Centuries")
    # The first and the last date that an expense accepts.
    latest = latest_record_date()
    first = _expense(dan, 1000, "EUR", [dan, eve], "First")
    first.expense_date.CopyFrom(date_pb2.Date(year=1900, month=1, day=1))
    last = _expense(eve, 300, "EUR", [dan, eve], "Last")
    last.expense_date.CopyFrom(
        date_pb2.Date(year=latest.year, month=latest.month, day=latest.day)
    )
    for expense in (first, last):
        expenses.CreateExpense(
            expenses_pb.CreateExpenseRequest(parent=group, expense=expense),
            timeout=TIMEOUT,
        )
    _wait_for_nets(balances, group, {"EUR": {dan: 350, eve: -350}})

    report = balances.GetGroupReport(
        balances_pb.GetGroupReportRequest(name=f"{group}/report", currency_code="EUR"),
        timeout=TIMEOUT,
    ).report
    rest = http.get(f"/v1/{group}/report", params={"currencyCode": "EUR"})

    assert [
        (m.month.year, m.month.month, m.month.day, _minor(m.amount), m.expense_count)
        for m in report.month_totals
    ] == [(1900, 1, 0, 1000, 1), (latest.year, latest.month, 0, 300, 1)]
    assert rest.status_code == 200, rest.text
    assert rest.json()["report"]["monthTotals"] == [
        {
            "month": {"year": 1900, "month": 1},
            "amount": {"currencyCode": "EUR", "units": "10"},
            "expenseCount": 1,
        },
        {
            "month": {"year": latest.year, "month": latest.month},
            "amount": {"currencyCode": "EUR", "units": "3"},
            "expenseCount": 1,
        },
    ]


def _rest_ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _rest_debt(http: httpx.Client, group: str, debtor: str, creditor: str) -> None:
    """Record over REST an expense of 10.00 EUR that `creditor` paid for `debtor`."""
    ten = {"currencyCode": "EUR", "units": "10"}
    expense = {
        "description": "Tickets",
        "expenseDate": {"year": 2024, "month": 5, "day": 1},
        "total": ten,
        "payers": [{"user": creditor, "amount": ten}],
        "split": {
            "type": "SPLIT_TYPE_EXACT",
            "participants": [{"user": debtor, "exactAmount": ten}],
        },
        "creator": creditor,
    }
    _rest_ok(http.post(f"/v1/{group}/expenses", json=expense))


def test_rest_plan_followed_leaves_no_pairwise_lines(channel, http):
    users = users_grpc.UsersServiceStub(channel)
    balances = balances_grpc.BalancesServiceStub(channel)
    ben, cleo, dora = (_create_user(users, name) for name in ("ben", "cleo", "dora"))
    group = _create_group(users, ben, [cleo, dora], "Cycle")
    ten = {"currencyCode": "EUR", "units": "10"}
    _rest_debt(http, group, dora, ben)
    _rest_debt(http, group, cleo, dora)
    _wait_for_nets(balances, group, {"EUR": {ben: 1000, cleo: -1000}})
    plan = _rest_ok(http.get(f"/v1/{group}/balance:computeSettlementPlan"))
    assert plan["transfers"] == [{"payer": cleo, "payee": ben, "amount": ten}]
    settlement = {
        "payer": cleo,
        "payee": ben,
        "creator": cleo,
        "amount": ten,
        "settlementDate": {"year": 2024, "month": 6, "day": 1},
    }
    _rest_ok(http.post(f"/v1/{group}/settlements", json=settlement))

    # dora owes ben, cleo owes dora and ben owes cleo 10.00 each: a cycle.
    balance = _rest_ok(http.get(f"/v1/{group}/balance"))["balance"]
    lines = _rest_ok(http.get(f"/v1/{group}/pairwiseBalances"))
    of_dora = _rest_ok(http.get(f"/v1/{dora}/balance"))["balance"]
    explained = _rest_ok(
        http.get(
            f"/v1/{group}/balance:explain",
            params={"user": dora, "counterparty": ben, "currencyCode": "EUR"},
        )
    )

    assert balance["settled"] is True
    assert lines.get("pairwiseBalances", []) == []
    assert of_dora.get("counterpartyBalances", []) == []
    assert explained["netAmount"] == {"currencyCode": "EUR", "units": "-10"}
    assert explained["circularDebtAdjustment"] == ten
    assert explained["pairwiseAmount"] == {"currencyCode": "EUR"}
    assert [item["netChange"] for item in explained["contributions"]] == [
        {"currencyCode": "EUR", "units": "-10"}
    ]

    # As a former member with a zero net amount, cleo keeps no line either.
    removed = http.delete(f"/v1/{group}/members/{cleo.removeprefix('users/')}")
    assert removed.status_code == 200, removed.text
    of_cleo = _rest_ok(http.get(f"/v1/{cleo}/balance"))["balance"]
    assert of_cleo.get("counterpartyBalances", []) == []


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A loopback address that accepts connections and never responds."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def test_slow_backend_section_deadline(
    loop_thread, stack, trip, silent_address, tmp_path
):
    with _extra_gateway(
        loop_thread, stack, tmp_path, expense_service_addr=silent_address
    ) as stub:
        # Any response shows that the overview ended within the 1.5 s
        # deadline, with the silent backend's section marked failed.
        response = stub.GetGroupOverview(
            pb.GetGroupOverviewRequest(group=trip.trip), timeout=1.5
        )

    assert response.group.name == trip.trip
    assert len(response.members) == 3
    assert _group_nets(response.balance) == trip.nets[trip.trip]
    assert list(response.recent_expenses) == []
    [error] = response.section_errors
    assert error.section == "recent_expenses"
    assert error.status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "expense_service" in error.status.message
    assert _reasons(error.status) == ["BACKEND_DEADLINE_EXCEEDED"]


@pytest.fixture
def frozen_expenses() -> Iterator[str]:
    """The address of a real ExpensesService whose calls wait until cancelled."""
    stopping = threading.Event()

    def wait(request: bytes, context: grpc.ServicerContext) -> bytes:
        while context.is_active() and not stopping.wait(0.05):
            pass
        return b""

    service = expenses_pb.DESCRIPTOR.services_by_name["ExpensesService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(wait)
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    }
    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service.full_name, handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stopping.set()
        server.stop(0)


@pytest.mark.parametrize("deadline", [10.0, 15.0])
def test_frozen_backend_partial_at_long_deadline(
    loop_thread, stack, trip, frozen_expenses, tmp_path, deadline
):
    """grpc's C core sends a 10 s deadline as about 10.1 s, so the gateway
    must end its backend calls early enough for the client's own 10 s."""
    with _extra_gateway(
        loop_thread, stack, tmp_path, expense_service_addr=frozen_expenses
    ) as stub:
        # A connected channel sends the call at once, with the deadline that
        # C core rounds up: 10 s goes out as about 10.1 s.
        stub.GetGroupOverview(pb.GetGroupOverviewRequest(group=trip.trip), timeout=1)
        response = stub.GetGroupOverview(
            pb.GetGroupOverviewRequest(group=trip.trip), timeout=deadline
        )

    assert response.group.name == trip.trip
    assert _group_nets(response.balance) == trip.nets[trip.trip]
    [error] = response.section_errors
    assert error.section == "recent_expenses"
    assert error.status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


@pytest.fixture
def raising_expenses() -> Iterator[str]:
    """The address of a real ExpensesService whose every call raises an
    unexpected exception, behind the error interceptor of the services."""

    def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("cursor lost at /srv/splitlog/expenses.db")

    service = expenses_pb.DESCRIPTOR.services_by_name["ExpensesService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(fail)
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    }
    server = grpc.server(
        ThreadPoolExecutor(4), interceptors=[ErrorInterceptor(4 * 1024 * 1024)]
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service.full_name, handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_raising_backend_section_logged_per_window(
    loop_thread, stack, trip, raising_expenses, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    request = pb.GetGroupOverviewRequest(group=trip.trip)
    with _extra_gateway(
        loop_thread, stack, tmp_path, expense_service_addr=raising_expenses
    ) as stub:
        responses = [stub.GetGroupOverview(request, timeout=TIMEOUT)]
        responses.append(stub.GetGroupOverview(request, timeout=TIMEOUT))
        # After the window, the next warning counts the failure it left out.
        time.sleep(UNREACHABLE_LOG_INTERVAL + 0.5)
        responses.append(stub.GetGroupOverview(request, timeout=TIMEOUT))

    incidents = []
    for response in responses:
        assert response.group.name == trip.trip
        [error] = response.section_errors
        assert error.section == "recent_expenses"
        assert error.status.code == grpc.StatusCode.INTERNAL.value[0]
        message = error.status.message
        assert message.startswith("internal error (incident "), message
        assert "RuntimeError" not in str(error.status)
        assert "expenses.db" not in str(error.status)
        incidents.append(message.split("(incident ")[1].split(")")[0])
    tracebacks = [
        record
        for record in caplog.records
        if record.name == "splitlog_runtime.interceptor" and record.exc_info
    ]
    assert [record.exc_info[0] for record in tracebacks] == [RuntimeError] * 3
    for record, incident in zip(tracebacks, incidents, strict=True):
        assert f"(incident {incident})" in record.getMessage()
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "gateway.aggregate" and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 2, warnings
    for warning in warnings:
        assert warning.startswith("section recent_expenses left empty: INTERNAL ")
    assert "1 more such failures not logged" in warnings[1]


@dataclass
class ToggledExpenses:
    """A real ExpensesService that fails every call while `failing` is set.

    A failing call raises behind the error interceptor of the services, so
    it ends with INTERNAL. Otherwise every call returns an empty response.
    """

    address: str
    failing: threading.Event


@pytest.fixture
def toggled_expenses() -> Iterator[ToggledExpenses]:
    failing = threading.Event()

    def respond(request: bytes, context: grpc.ServicerContext) -> bytes:
        if failing.is_set():
            raise RuntimeError("expense database offline")
        return b""

    service = expenses_pb.DESCRIPTOR.services_by_name["ExpensesService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(respond)
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    }
    server = grpc.server(
        ThreadPoolExecutor(4), interceptors=[ErrorInterceptor(4 * 1024 * 1024)]
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service.full_name, handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield ToggledExpenses(f"127.0.0.1:{port}", failing)
    finally:
        server.stop(0)


def _aggregate_lines(caplog) -> list[tuple[int, str]]:
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == "gateway.aggregate"
    ]


def test_section_second_outage_in_interval_counted(
    loop_thread, stack, trip, toggled_expenses, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="gateway.aggregate")
    request = pb.GetGroupOverviewRequest(group=trip.trip)
    failing = toggled_expenses.failing
    failed_sections = []
    with _extra_gateway(
        loop_thread, stack, tmp_path, expense_service_addr=toggled_expenses.address
    ) as stub:
        # Two outages of recent_expenses with a recovery between them, all
        # within one UNREACHABLE_LOG_INTERVAL. The second outage starts less
        # than an interval after the first warning, so it is only counted.
        for fails in (True, True, False, True, True, False):
            if fails:
                failing.set()
            else:
                failing.clear()
            response = stub.GetGroupOverview(request, timeout=TIMEOUT)
            failed_sections.append([e.section for e in response.section_errors])

    lines = _aggregate_lines(caplog)
    expenses_failed = ["recent_expenses"]
    assert failed_sections == [
        expenses_failed,
        expenses_failed,
        [],
        expenses_failed,
        expenses_failed,
        [],
    ]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO], lines
    warning, recovery = (message for _, message in lines)
    assert warning.startswith("section recent_expenses left empty: INTERNAL")
    assert "not logged" not in warning
    assert recovery.startswith(
        "backend calls of section recent_expenses succeed again after 2 failures"
    )


def test_section_alternating_one_warning(
    loop_thread, stack, trip, toggled_expenses, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="gateway.aggregate")
    request = pb.GetGroupOverviewRequest(group=trip.trip)
    failing = toggled_expenses.failing
    failures = 0
    started = time.monotonic()
    with _extra_gateway(
        loop_thread, stack, tmp_path, expense_service_addr=toggled_expenses.address
    ) as stub:
        # The section fails for every other request, as when one backend
        # call times out for some groups and not for others.
        for index in range(20):
            if index % 2 == 0:
                failing.set()
            else:
                failing.clear()
            response = stub.GetGroupOverview(request, timeout=TIMEOUT)
            failures += len(response.section_errors)
    elapsed = time.monotonic() - started

    assert failures == 10
    lines = _aggregate_lines(caplog)
    warnings = [message for level, message in lines if level == logging.WARNING]
    infos = [message for level, message in lines if level == logging.INFO]
    # One warning per started interval, and one recovery line per warning.
    intervals = int(elapsed // UNREACHABLE_LOG_INTERVAL) + 1
    assert 1 <= len(warnings) <= intervals, lines
    assert len(infos) <= len(warnings), lines
    assert warnings[0].startswith("section recent_expenses left empty: INTERNAL")
    assert infos[0].startswith(
        "backend calls of section recent_expenses succeed again after 1 failures"
    )


def test_users_unreachable_fails_call(loop_thread, stack, trip, tmp_path):
    unreachable = closed_address()

    with (
        _extra_gateway(
            loop_thread, stack, tmp_path, user_service_addr=unreachable
        ) as stub,
        pytest.raises(grpc.RpcError) as caught,
    ):
        stub.GetUserDashboard(
            pb.GetUserDashboardRequest(user=trip.ann), timeout=TIMEOUT
        )

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "user_service" in caught.value.details()
    details = error_details(caught.value)
    assert details["ErrorInfo"].reason == "BACKEND_UNAVAILABLE"
    assert details["ErrorInfo"].metadata["backend"] == "user_service"
    assert "RetryInfo" in details


def _reasons(status) -> list[str]:
    reasons = []
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            reasons.append(info.reason)
    return reasons


def test_view_success_counts_as_completed(loop_thread, stack, trip, tmp_path):
    # A backend that misses health checks still gets calls while it completes
    # some, and a view's successful section is such a completion.
    config = _gateway_config(tmp_path, stack.users, stack.expenses, stack.balances)
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as opened:
            response = _overview(pb_grpc.GatewayServiceStub(opened), trip.trip)
        gateway.pool.unresponsive.add("balance_service")
        error = gateway.pool.unresponsive_error(
            "/splitlog.balances.v1.BalancesService/GetGroupBalance"
        )
    finally:
        loop_thread.run(gateway.stop(0))

    assert list(response.section_errors) == []
    assert error is None


# Runs last in the module: balance_service stays stopped afterwards.
def test_balance_service_down_sections(gateway_stub, http, stack, trip):
    stack.balances.stop(0)

    overview = _overview(gateway_stub, trip.trip)
    dashboard = _dashboard(gateway_stub, trip.ann)
    rest = http.get(f"/v1/{trip.trip}/overview")

    assert overview.group.name == trip.trip
    assert len(overview.members) == 3
    assert [e.name for e in overview.recent_expenses] == list(
        reversed(trip.trip_expenses)
    )
    assert not overview.HasField("balance")
    assert list(overview.settlement_plan) == []
    assert [e.section for e in overview.section_errors] == [
        "balance",
        "settlement_plan",
    ]
    for error in overview.section_errors:
        assert error.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "balance_service" in error.status.message
        assert _reasons(error.status) == ["BACKEND_UNAVAILABLE"]

    assert [s.group.name for s in dashboard.group_summaries] == [trip.flat, trip.trip]
    assert all(not s.net_amounts for s in dashboard.group_summaries)
    assert list(dashboard.total_net_amounts) == []
    assert list(dashboard.recent_activity) == []
    assert [e.section for e in dashboard.section_errors] == [
        "group_summaries.net_amounts",
        "total_net_amounts",
        "recent_activity",
    ]
    for error in dashboard.section_errors:
        assert error.status.code == grpc.StatusCode.UNAVAILABLE.value[0]

    assert rest.status_code == 200, rest.text
    sections = rest.json()["sectionErrors"]
    assert [s["section"] for s in sections] == ["balance", "settlement_plan"]
    assert sections[0]["status"]["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert sections[0]["status"]["details"][0]["reason"] == "BACKEND_UNAVAILABLE"


def test_balance_service_down_group_not_found(gateway_stub, stack):
    stack.balances.stop(0)

    with pytest.raises(grpc.RpcError) as caught:
        _overview(gateway_stub, "groups/still-missing")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value)["ErrorInfo"].reason == "GROUP_NOT_FOUND"
