"""Writes by a member removed a moment ago, with auth on, over the gateway.

expense_service and balance_service reuse a group's member list for a few
seconds (`CACHE_SECONDS`), so right after a removal they may still accept
the removed member as the caller. A write that then fails must fail with
the PERMISSION_DENIED that the same write gets once the list has expired,
and not with the error of a later step, such as NOT_FOUND for a missing
expense.

user_service here permits every removal without calling balance_service
(`AllowAllBalanceGuard`), so no removal has expense_service drop its list,
as happens when that call reaches another expense_service process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.type import date_pb2, money_pb2

from balance_service import members as balance_members
from expense_service import membership as expense_membership
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime import auth
from tests.auth.test_authorization import (
    DENIED,
    Caller,
    Stack,
    _expense,
    _sign_up,
    _start_stack,
    _stop_stack,
)
from tests.rich_errors import reason_of
from user_service.guards import AllowAllBalanceGuard

# Seconds after which neither service reuses a member list fetched earlier.
EXPIRY_SECONDS = max(expense_membership.CACHE_SECONDS, balance_members.CACHE_SECONDS)


@pytest.fixture(scope="module")
def stack(loop_thread, tmp_path_factory) -> Iterator[Stack]:
    started = _start_stack(
        loop_thread,
        tmp_path_factory.mktemp("removed"),
        True,
        guard=AllowAllBalanceGuard(),
    )
    yield started
    _stop_stack(loop_thread, started)
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}") as opened:
        yield opened


Write = Callable[[], object]


def _update_missing_expense(ann: Caller, ben: Caller, group: str) -> Write:
    expense = _expense(ben.user, [ben.user])
    expense.name = f"{group}/expenses/missing"
    expense.last_modifier = ben.user
    request = expenses_pb.UpdateExpenseRequest(expense=expense)
    return lambda: ben.expenses("UpdateExpense", request)


def _delete_missing_expense(ann: Caller, ben: Caller, group: str) -> Write:
    request = expenses_pb.DeleteExpenseRequest(name=f"{group}/expenses/missing")
    return lambda: ben.expenses("DeleteExpense", request)


def _restore_live_expense(ann: Caller, ben: Caller, group: str) -> Write:
    name = ann.create_expense(group, [ann.user])
    request = expenses_pb.UndeleteExpenseRequest(name=name)
    return lambda: ben.expenses("UndeleteExpense", request)


def _create_naming_outsider(outsider: Caller) -> Callable[..., Write]:
    def setup(ann: Caller, ben: Caller, group: str) -> Write:
        return lambda: ben.create_expense(group, [ben.user, outsider.user])

    return setup


def _pay_member(ann: Caller, ben: Caller, group: str) -> Write:
    return lambda: ben.pay(group, ann.user, 5)


def _delete_missing_settlement(ann: Caller, ben: Caller, group: str) -> Write:
    request = balances_pb.DeleteSettlementRequest(name=f"{group}/settlements/missing")
    return lambda: ben.balances("DeleteSettlement", request)


def _restore_live_settlement(ann: Caller, ben: Caller, group: str) -> Write:
    request = balances_pb.CreateSettlementRequest(
        parent=group,
        settlement=balances_pb.Settlement(
            payer=ann.user,
            payee=ben.user,
            creator=ann.user,
            amount=money_pb2.Money(currency_code="EUR", units=5),
            settlement_date=date_pb2.Date(year=2024, month=5, day=2),
        ),
    )
    name = ann.balances("CreateSettlement", request).settlement.name
    restore = balances_pb.UndeleteSettlementRequest(name=name)
    return lambda: ben.balances("UndeleteSettlement", restore)


def _error(write: Write) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        write()
    return caught.value


def test_removed_caller_write_same_error(channel):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    outsider = _sign_up(channel, "cy")
    cases = {
        "UpdateExpense of a missing expense": _update_missing_expense,
        "DeleteExpense of a missing expense": _delete_missing_expense,
        "UndeleteExpense of a live expense": _restore_live_expense,
        "CreateExpense naming an outsider": _create_naming_outsider(outsider),
        "CreateSettlement paying a member": _pay_member,
        "DeleteSettlement of a missing settlement": _delete_missing_settlement,
        "UndeleteSettlement of a live settlement": _restore_live_settlement,
    }
    writes: dict[str, Write] = {}
    at_once: dict[str, grpc.RpcError] = {}
    for label, setup in cases.items():
        # A group per case, because a failed write refreshes the member list.
        group = ann.create_group()
        ann.add_member(group, ben.user)
        writes[label] = setup(ann, ben, group)
        # Fill the member lists that both services reuse.
        ben.expenses("ListExpenses", expenses_pb.ListExpensesRequest(parent=group))
        balance = balances_pb.GetGroupBalanceRequest(name=f"{group}/balance")
        ben.balances("GetGroupBalance", balance)
        ann.users(
            "RemoveGroupMember",
            users_pb.RemoveGroupMemberRequest(
                name=f"{group}/members/{ben.user.removeprefix('users/')}"
            ),
        )
        # The reused lists still accept ben for reads.
        ben.expenses("ListExpenses", expenses_pb.ListExpensesRequest(parent=group))
        ben.balances("GetGroupBalance", balance)
        at_once[label] = _error(writes[label])

    time.sleep(EXPIRY_SECONDS)
    for label, write in writes.items():
        later = _error(write)
        assert later.code() == DENIED, f"{label}: {later.details()}"
        assert at_once[label].code() == later.code(), (
            f"{label}: {at_once[label].details()}"
        )
        assert reason_of(at_once[label]) == reason_of(later), label
        assert at_once[label].details() == later.details(), label
