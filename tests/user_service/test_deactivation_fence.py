"""Deactivations racing group joins, with real user, expense and balance
services, and with a guard that holds the balance check open.

In each race round, user U is a member of `GROUPS` groups, and Ana has a
group of her own. U is deactivated while a thread adds U to Ana's group
and records an expense that Ana paid and U shares, at a random moment in
the first `WRITE_DELAY_SECONDS`. That expense leaves U owing Ana. So either
the deactivation fails, or the join or the expense was rejected and U owes
nothing: a deactivated user's debt could never be settled.
"""

from __future__ import annotations

import random
import threading
import time

import grpc
import pytest

from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.users.v1 import users_service_pb2 as pb
from splitlog_runtime.database import Database
from splitlog_runtime.errors import Unavailable
from tests.expense_service.support import day, money
from tests.user_service.support import create_user, error_details, reason_of
from tests.user_service.test_leaving_mark import (
    Pair,
    pair,  # noqa: F401 (the fixture)
)
from tests.user_service.test_removal_fence import (
    TIMEOUT,
    _members,
    _settled,
    cluster,  # noqa: F401 (the fixture)
)
from user_service import storage
from user_service.guards import unsettled_balance

#: Rounds of the race test.
ROUNDS = 8
#: Groups U belongs to, so that the balance checks take a while.
GROUPS = 10
#: Maximum seconds the join waits after the deactivation is sent.
WRITE_DELAY_SECONDS = 0.15
#: Reasons the join and the expense may fail with during or after the
#: deactivation.
REJECTED_WRITE_REASONS = {
    grpc.StatusCode.FAILED_PRECONDITION: {
        "USER_DEACTIVATING",
        "USER_DEACTIVATED",
        "MEMBER_LEAVING",
    },
}
#: Reasons the deactivation may fail with when the join came first.
REJECTED_DEACTIVATION_REASONS = {
    grpc.StatusCode.FAILED_PRECONDITION: {"UNSETTLED_BALANCE"},
    grpc.StatusCode.ABORTED: {"GROUPS_CHANGED", "REMOVAL_IN_PROGRESS"},
}


def _create_group(users, creator: str) -> str:
    return users.CreateGroup(
        pb.CreateGroupRequest(group=pb.Group(display_name="Trip", creator=creator)),
        timeout=TIMEOUT,
    ).group.name


def _shared_expense(ana: str, user: str) -> expenses_pb.Expense:
    return expenses_pb.Expense(
        description="Dinner",
        expense_date=day(),
        total=money("50.00", "EUR"),
        payers=[expenses_pb.Payer(user=ana, amount=money("50.00", "EUR"))],
        split=expenses_pb.Split(
            type=expenses_pb.SPLIT_TYPE_EQUAL,
            participants=[
                expenses_pb.SplitParticipant(user=ana),
                expenses_pb.SplitParticipant(user=user),
            ],
        ),
        creator=ana,
    )


def _state(users, user: str) -> int:
    return users.GetUser(pb.GetUserRequest(name=user), timeout=TIMEOUT).user.state


def _check_rejected(error: grpc.RpcError, allowed: dict) -> None:
    assert error.code() in allowed, error.details()
    assert reason_of(error) in allowed[error.code()], error.details()


def test_deactivation_during_join_and_expense(cluster):  # noqa: F811
    outcomes = {"deactivated": 0, "refused": 0, "joins_rejected": 0}
    for _ in range(ROUNDS):
        user = create_user(cluster.users, "Ursula").name
        ana = create_user(cluster.users, "Ana").name
        for _ in range(GROUPS):
            group = _create_group(cluster.users, ana)
            cluster.users.AddGroupMember(
                pb.AddGroupMemberRequest(parent=group, user=user), timeout=TIMEOUT
            )
        joined = _create_group(cluster.users, ana)
        start = threading.Barrier(2)
        write_errors: list[grpc.RpcError] = []

        def join_and_spend(
            joined=joined, user=user, ana=ana, start=start, errors=write_errors
        ) -> None:
            start.wait()
            time.sleep(random.uniform(0, WRITE_DELAY_SECONDS))
            try:
                cluster.users.AddGroupMember(
                    pb.AddGroupMemberRequest(parent=joined, user=user),
                    timeout=TIMEOUT,
                )
                cluster.expenses.CreateExpense(
                    expenses_pb.CreateExpenseRequest(
                        parent=joined, expense=_shared_expense(ana, user)
                    ),
                    timeout=TIMEOUT,
                )
            except grpc.RpcError as exc:
                errors.append(exc)

        writer = threading.Thread(target=join_and_spend)
        writer.start()
        start.wait()
        error = None
        try:
            cluster.users.DeactivateUser(
                pb.DeactivateUserRequest(name=user), timeout=TIMEOUT
            )
        except grpc.RpcError as exc:
            error = exc
        writer.join(TIMEOUT)
        assert not writer.is_alive()

        for failure in write_errors:
            _check_rejected(failure, REJECTED_WRITE_REASONS)
        outcomes["joins_rejected"] += len(write_errors)
        if error is None:
            outcomes["deactivated"] += 1
            assert _state(cluster.users, user) == pb.User.STATE_DEACTIVATED
            assert _settled(cluster, joined, user), (
                f"{user} was deactivated while owing money in {joined}"
            )
            continue
        outcomes["refused"] += 1
        _check_rejected(error, REJECTED_DEACTIVATION_REASONS)
        assert _state(cluster.users, user) == pb.User.STATE_ACTIVE
        members = _members(cluster, joined)
        assert not any(member.leaving for member in members.values())
    print(f"outcomes over {ROUNDS} rounds: {outcomes}")
    assert outcomes["deactivated"], "no round deactivated the user, so nothing ran"


def _user_in_group(pair: Pair) -> tuple[str, str, str, str]:  # noqa: F811
    """Create Ana, U, a group of both and a group of Ana alone.

    Returns:
      Ana, U, the shared group and Ana's own group.
    """
    ana = create_user(pair.users, "Ana").name
    user = create_user(pair.users, "Ursula").name
    first = _create_group(pair.users, ana)
    other = _create_group(pair.users, ana)
    pair.users.AddGroupMember(
        pb.AddGroupMemberRequest(parent=first, user=user), timeout=TIMEOUT
    )
    return ana, user, first, other


def _start_deactivation(pair: Pair, user: str):  # noqa: F811
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["user"] = pair.users.DeactivateUser(
                pb.DeactivateUserRequest(name=user), timeout=TIMEOUT
            ).user
        except grpc.RpcError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert pair.guard.entered.wait(TIMEOUT)
    return thread, result


def test_join_rejected_while_deactivating(pair):  # noqa: F811
    ana, user, first, other = _user_in_group(pair)
    thread, result = _start_deactivation(pair, user)

    with pytest.raises(grpc.RpcError) as joining:
        pair.users.AddGroupMember(
            pb.AddGroupMemberRequest(parent=other, user=user), timeout=TIMEOUT
        )
    with pytest.raises(grpc.RpcError) as creating:
        _create_group(pair.users, user)
    with pytest.raises(grpc.RpcError) as again:
        pair.users.DeactivateUser(pb.DeactivateUserRequest(name=user), timeout=TIMEOUT)

    for caught in (joining, creating):
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(caught.value) == "USER_DEACTIVATING"
        assert repr(user) in caught.value.details()
        assert "retry after the deactivation" in caught.value.details()
        violation = error_details(caught.value)["PreconditionFailure"].violations[0]
        assert violation.subject == user
    assert again.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(again.value) == "DEACTIVATION_IN_PROGRESS"
    pair.guard.release.set()
    thread.join(TIMEOUT)
    assert "error" not in result
    assert result["user"].state == pb.User.STATE_DEACTIVATED
    assert set(_members(pair, other)) == {ana}


def test_failed_deactivation_allows_join(pair):  # noqa: F811
    ana, user, first, other = _user_in_group(pair)
    member = f"{first}/members/{user.removeprefix('users/')}"
    pair.guard.verdict = unsettled_balance(member, f"{user} owes 5.00 EUR")
    thread, result = _start_deactivation(pair, user)

    pair.guard.release.set()
    thread.join(TIMEOUT)

    assert result["error"].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(result["error"]) == "UNSETTLED_BALANCE"
    added = pair.users.AddGroupMember(
        pb.AddGroupMemberRequest(parent=other, user=user), timeout=TIMEOUT
    ).member
    assert added.name.endswith(user.removeprefix("users/"))
    assert not _members(pair, first)[user].leaving


def test_join_past_mark_aborts_deactivation(pair, db_url):  # noqa: F811
    """A membership written without the mark's check, as after the mark has
    expired, makes the final transaction fail instead of deactivating."""
    ana, user, first, other = _user_in_group(pair)
    thread, result = _start_deactivation(pair, user)
    database = Database(db_url)
    try:
        with database.transaction() as session:
            storage.add_member(
                session,
                storage.MemberRow(
                    group_id=other.removeprefix("groups/"),
                    user_id=user.removeprefix("users/"),
                    join_time=storage.utc_now(),
                ),
            )
    finally:
        database.dispose()

    pair.guard.release.set()
    thread.join(TIMEOUT)

    error = result["error"]
    assert error.code() == grpc.StatusCode.ABORTED
    assert reason_of(error) == "GROUPS_CHANGED"
    assert repr(user) in error.details()
    assert other in error.details()
    state = pair.users.GetUser(pb.GetUserRequest(name=user), timeout=TIMEOUT).user
    assert state.state == pb.User.STATE_ACTIVE
    assert not _members(pair, first)[user].leaving
    _create_group(pair.users, user)


def _delete_group(pair: Pair, group: str) -> None:  # noqa: F811
    pair.users.DeleteGroup(pb.DeleteGroupRequest(name=group), timeout=TIMEOUT)


def test_group_deleted_during_deactivation(pair):  # noqa: F811
    """A group deleted after the deactivation's checks began no longer
    needs its mark, because its deletion found every balance zero."""
    ana, user, first, other = _user_in_group(pair)
    # Only the deactivation's check waits; the deletion's passes at once.
    pair.guard.check_group_deletable = lambda group_name, context: None
    thread, result = _start_deactivation(pair, user)

    _delete_group(pair, first)
    pair.guard.release.set()
    thread.join(TIMEOUT)

    assert "error" not in result, result.get("error")
    assert result["user"].state == pb.User.STATE_DEACTIVATED


def test_group_deleted_before_its_check(pair):  # noqa: F811
    """A group deleted before the deactivation checks it is skipped when its
    check fails, as balance_service's CheckSettled does for a deleted group."""
    ana, user, first, other = _user_in_group(pair)
    pair.users.AddGroupMember(
        pb.AddGroupMemberRequest(parent=other, user=user), timeout=TIMEOUT
    )
    # The checks run in group id order, and the first one waits.
    checked_later = max(first, other)
    deleted: set[str] = set()
    held = pair.guard.check_member_removable

    def check(group_name: str, user_name: str, context) -> None:
        if group_name in deleted:
            raise Unavailable(
                f"cannot check the balances of {group_name!r}: balance_service "
                "failed the check (NOT_FOUND: group not found)",
                reason="BALANCE_SERVICE_UNAVAILABLE",
            )
        held(group_name, user_name, context)

    pair.guard.check_member_removable = check
    pair.guard.check_group_deletable = lambda group_name, context: None
    thread, result = _start_deactivation(pair, user)

    _delete_group(pair, checked_later)
    deleted.add(checked_later)
    pair.guard.release.set()
    thread.join(TIMEOUT)

    assert "error" not in result, result.get("error")
    assert result["user"].state == pb.User.STATE_DEACTIVATED


def test_live_group_check_failure_still_fails(pair):  # noqa: F811
    ana, user, first, other = _user_in_group(pair)
    pair.guard.verdict = Unavailable(
        "cannot check the balances: balance_service failed the check",
        reason="BALANCE_SERVICE_UNAVAILABLE",
    )
    thread, result = _start_deactivation(pair, user)

    pair.guard.release.set()
    thread.join(TIMEOUT)

    assert result["error"].code() == grpc.StatusCode.UNAVAILABLE
    state = pair.users.GetUser(pb.GetUserRequest(name=user), timeout=TIMEOUT).user
    assert state.state == pb.User.STATE_ACTIVE
