"""Removals racing settlement writes, with real user, expense and balance services.

Each round removes member X (or deletes the group) while a thread records a
settlement in which X pays Alice 1 EUR, at a random moment in the first
`WRITER_DELAY_SECONDS`. The settlement leaves Alice owing X, so a removal
that succeeds must leave X's balance at zero. Without the settlement fence,
a settlement that checked membership before the leaving mark can commit
after the balance check, and some round fails.
"""

from __future__ import annotations

import functools

import grpc
import pytest

from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.users.v1 import users_service_pb2 as pb
from splitlog_runtime.database import Database
from tests.expense_service.support import day, money
from tests.user_service.support import create_user, reason_of
from tests.user_service.test_removal_fence import (
    TIMEOUT,
    Cluster,
    _deleted_group_settled,
    _expense,
    _group_with,
    _members,
    _settled,
    cluster,  # noqa: F401 (the fixture)
    race_writes,
)
from user_service import removals

#: Rounds per test. Without the fence, one run left X with a balance after 6
#: of 8 successful removals (SQLite and PostgreSQL together) and 7 of 11
#: successful group deletions.
ROUNDS = 16
#: Reasons a settlement naming X may fail with while X leaves or after.
REJECTED_SETTLEMENT_REASONS = {
    grpc.StatusCode.FAILED_PRECONDITION: {"MEMBER_LEAVING", "NOT_A_GROUP_MEMBER"},
    grpc.StatusCode.NOT_FOUND: {"GROUP_NOT_FOUND"},
}


def _settle_once(
    servers: Cluster,
    group: str,
    payer: str,
    payee: str,
    creator: str,
    amount: str = "1.00",
):
    """Return a call that records a settlement of `amount` EUR."""
    request = balances_pb.CreateSettlementRequest(
        parent=group,
        settlement=balances_pb.Settlement(
            payer=payer,
            payee=payee,
            amount=money(amount, "EUR"),
            settlement_date=day(),
            creator=creator,
        ),
    )
    return functools.partial(
        servers.balances.CreateSettlement, request, timeout=TIMEOUT
    )


def _settle(servers: Cluster, group, payer, payee, creator, amount: str):
    return _settle_once(servers, group, payer, payee, creator, amount)().settlement


def settled_group(servers: Cluster) -> tuple[str, str, str, str, str]:
    """Create a group of Alice and X whose balances are zero again: Alice pays
    10.00 EUR split equally with X, and X pays Alice 5.00 back.

    Returns:
      The group, Alice, X, the expense and the settlement.
    """
    group, alice, leaver = _group_with(servers)
    shared = servers.expenses.CreateExpense(
        expenses_pb.CreateExpenseRequest(
            parent=group, expense=_expense(alice, [alice, leaver])
        ),
        timeout=TIMEOUT,
    ).expense
    settlement = _settle(servers, group, leaver, alice, alice, "5.00")
    return group, alice, leaver, shared.name, settlement.name


def _assert_owed(error: grpc.RpcError, debtor: str, creditor: str) -> None:
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert reason_of(error) == "UNSETTLED_BALANCE"
    details = error.details()
    assert f"{debtor} owes" in details or f"{creditor} is owed" in details, details


def _check_failed_settlements(failures: list[grpc.RpcError]) -> None:
    for failure in failures:
        assert failure.code() in REJECTED_SETTLEMENT_REASONS, failure.details()
        expected = REJECTED_SETTLEMENT_REASONS[failure.code()]
        assert reason_of(failure) in expected, failure.details()


def test_remove_member_during_settlements(cluster):  # noqa: F811
    outcomes = {"removed": 0, "refused": 0, "leaving_rejections": 0}
    for _ in range(ROUNDS):
        group, alice, leaver = _group_with(cluster)
        member = f"{group}/members/{leaver.removeprefix('users/')}"
        remove = functools.partial(
            cluster.users.RemoveGroupMember,
            pb.RemoveGroupMemberRequest(name=member),
            timeout=TIMEOUT,
        )

        error, failures = race_writes(
            remove, _settle_once(cluster, group, leaver, alice, alice), 1, 1
        )

        _check_failed_settlements(failures)
        outcomes["leaving_rejections"] += sum(
            reason_of(failure) == "MEMBER_LEAVING" for failure in failures
        )
        if error is None:
            outcomes["removed"] += 1
            assert _settled(cluster, group, leaver)
            assert leaver not in _members(cluster, group)
            continue
        outcomes["refused"] += 1
        _assert_owed(error, alice, leaver)
        assert not _members(cluster, group)[leaver].leaving
    print(f"outcomes over {ROUNDS} rounds: {outcomes}")
    assert outcomes["removed"], "no round removed X, so nothing was tested"


def test_delete_group_during_settlements(cluster):  # noqa: F811
    outcomes = {"deleted": 0, "refused": 0}
    for _ in range(ROUNDS):
        group, alice, leaver = _group_with(cluster)
        delete = functools.partial(
            cluster.users.DeleteGroup,
            pb.DeleteGroupRequest(name=group),
            timeout=TIMEOUT,
        )

        error, failures = race_writes(
            delete, _settle_once(cluster, group, leaver, alice, alice), 1, 1
        )

        _check_failed_settlements(failures)
        if error is None:
            outcomes["deleted"] += 1
            assert _deleted_group_settled(cluster, group)
            continue
        outcomes["refused"] += 1
        _assert_owed(error, alice, leaver)
        members = _members(cluster, group)
        assert not any(member.leaving for member in members.values())
    print(f"outcomes over {ROUNDS} rounds: {outcomes}")
    assert outcomes["deleted"], "no round deleted the group, so nothing was tested"


def _mark_leaving(db_url: str, group: str, user: str) -> None:
    """Write X's leaving mark in user_service's database, as the first step of
    a removal does, so that it stays while the test runs. With `user` empty,
    write the mark of the group's deletion."""
    database = Database(db_url)
    try:
        with database.transaction() as session:
            removals.start(
                session, group.removeprefix("groups/"), user.removeprefix("users/")
            )
    finally:
        database.dispose()


def test_settlement_writes_naming_leaving_member_rejected(cluster, db_url):  # noqa: F811
    group, alice, leaver = _group_with(cluster)
    bob = create_user(cluster.users, "Bob").name
    cluster.users.AddGroupMember(
        pb.AddGroupMemberRequest(parent=group, user=bob), timeout=TIMEOUT
    )
    settled_up = _settle_once(cluster, group, alice, leaver, alice)().settlement
    deleted = cluster.balances.DeleteSettlement(
        balances_pb.DeleteSettlementRequest(name=settled_up.name), timeout=TIMEOUT
    ).settlement
    live = _settle(cluster, group, leaver, alice, alice, "1.00")
    _mark_leaving(db_url, group, leaver)

    for payer, payee, creator, field in [
        (leaver, alice, alice, "settlement.payer"),
        (alice, leaver, alice, "settlement.payee"),
        (alice, bob, leaver, "settlement.creator"),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            _settle_once(cluster, group, payer, payee, creator)()
        error = caught.value
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "MEMBER_LEAVING"
        assert repr(leaver) in error.details()
        assert field in error.details()
        assert "Name members who stay" in error.details()

    with pytest.raises(grpc.RpcError) as caught:
        cluster.balances.UndeleteSettlement(
            balances_pb.UndeleteSettlementRequest(name=deleted.name), timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "MEMBER_LEAVING"
    assert "the settlement's payee" in caught.value.details()
    assert "cannot be deleted or restored" in caught.value.details()
    assert "Name members who stay" not in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        cluster.balances.DeleteSettlement(
            balances_pb.DeleteSettlementRequest(name=live.name), timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "MEMBER_LEAVING"
    assert "the settlement's payer" in caught.value.details()
    assert "cannot be deleted or restored" in caught.value.details()
    assert _settled(cluster, group, leaver) is False


def test_settlement_writes_during_group_deletion_rejected(cluster, db_url):  # noqa: F811
    group, alice, leaver = _group_with(cluster)
    deleted = _settle(cluster, group, alice, leaver, alice, "1.00")
    cluster.balances.DeleteSettlement(
        balances_pb.DeleteSettlementRequest(name=deleted.name), timeout=TIMEOUT
    )
    live = _settle(cluster, group, leaver, alice, alice, "1.00")
    _mark_leaving(db_url, group, removals.GROUP)

    calls = {
        "create": _settle_once(cluster, group, leaver, alice, alice),
        "delete": functools.partial(
            cluster.balances.DeleteSettlement,
            balances_pb.DeleteSettlementRequest(name=live.name),
            timeout=TIMEOUT,
        ),
        "restore": functools.partial(
            cluster.balances.UndeleteSettlement,
            balances_pb.UndeleteSettlementRequest(name=deleted.name),
            timeout=TIMEOUT,
        ),
    }
    for what, call in calls.items():
        with pytest.raises(grpc.RpcError) as caught:
            call()
        error = caught.value
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, what
        assert reason_of(error) == "MEMBER_LEAVING", what
        assert "retry in a moment" in error.details().lower(), what
    # Only the live settlement counts: X paid Alice 1.00.
    balance = cluster.balances.CheckSettled(
        balances_pb.CheckSettledRequest(name=f"{group}/balance"), timeout=TIMEOUT
    )
    nets = {line.user: line.net_amount for line in balance.unsettled_balances}
    assert nets == {leaver: money("1.00", "EUR"), alice: money("-1.00", "EUR")}


def test_former_member_balance_settled_after_expense_delete(cluster):  # noqa: F811
    """Deleting an expense that names a removed member gives them a balance,
    which a settlement with them clears, so the group can be deleted."""
    group, alice, leaver, shared, _ = settled_group(cluster)
    cluster.users.RemoveGroupMember(
        pb.RemoveGroupMemberRequest(
            name=f"{group}/members/{leaver.removeprefix('users/')}"
        ),
        timeout=TIMEOUT,
    )
    cluster.expenses.DeleteExpense(
        expenses_pb.DeleteExpenseRequest(name=shared), timeout=TIMEOUT
    )
    # Right after the delete, so the settlement must wait for the ledger.
    with pytest.raises(grpc.RpcError) as overpaid:
        _settle(cluster, group, alice, leaver, alice, "5.01")
    with pytest.raises(grpc.RpcError) as caught:
        cluster.users.DeleteGroup(pb.DeleteGroupRequest(name=group), timeout=TIMEOUT)
    _assert_owed(caught.value, alice, leaver)
    _settle(cluster, group, alice, leaver, alice, "5.00")
    cluster.users.DeleteGroup(pb.DeleteGroupRequest(name=group), timeout=TIMEOUT)

    assert reason_of(overpaid.value) == "NOT_A_GROUP_MEMBER"
    assert "record at most 5.00 EUR" in overpaid.value.details()
    assert _deleted_group_settled(cluster, group)
