"""The leaving mark while a removal checks balances, with real user and
expense services and a guard that holds the check open until the test
releases it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2

from expense_service.app import build as build_expenses
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog.users.v1 import users_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from tests.expense_service.support import day, money
from tests.user_service.support import (
    create_user,
    error_details,
    open_stub,
    reason_of,
)
from user_service.app import build as build_users
from user_service.guards import unsettled_balance

TIMEOUT = 10.0
FIVE_NAMES = ["Eve", "Dan", "Cy", "Bo", "Al"]


class HeldGuard:
    """A balance guard that fences the group in expense_service, as
    balance_service's CheckSettled does, then waits until released.

    `verdict` decides the outcome: None allows the removal, and an
    exception is raised.
    """

    def __init__(self) -> None:
        self.ledger: ledger_grpc.LedgerServiceStub | None = None
        self.entered = threading.Event()
        self.release = threading.Event()
        self.verdict: Exception | None = None

    def _hold(self, group_name: str) -> None:
        self.ledger.GetLedgerPosition(
            ledger_pb.GetLedgerPositionRequest(group=group_name), timeout=TIMEOUT
        )
        self.entered.set()
        assert self.release.wait(TIMEOUT)
        if self.verdict is not None:
            raise self.verdict

    def check_member_removable(
        self, group_name: str, user_name: str, context: grpc.ServicerContext
    ) -> None:
        self._hold(group_name)

    def check_group_deletable(
        self, group_name: str, context: grpc.ServicerContext
    ) -> None:
        self._hold(group_name)


@dataclass
class Pair:
    users: users_grpc.UsersServiceStub
    expenses: expenses_grpc.ExpensesServiceStub
    guard: HeldGuard


@pytest.fixture
def pair(db_url, tmp_path) -> Iterator[Pair]:
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path,
            "user_service_db_url": db_url,
            "expense_service_db_url": f"sqlite:///{tmp_path / 'expenses.db'}",
            "workers": 8,
            "grace_seconds": 1.0,
        },
    )
    guard = HeldGuard()
    users = build_users(config, "127.0.0.1:0", guard=guard)
    expenses = build_expenses(
        config.replace(user_service_addr=f"127.0.0.1:{users.port}"), "127.0.0.1:0"
    )
    users_channel, users_stub = open_stub(users.port)
    expenses_channel = grpc.insecure_channel(f"127.0.0.1:{expenses.port}")
    guard.ledger = ledger_grpc.LedgerServiceStub(expenses_channel)
    yield Pair(users_stub, expenses_grpc.ExpensesServiceStub(expenses_channel), guard)
    guard.release.set()
    users_channel.close()
    expenses_channel.close()
    expenses.stop(0)
    users.stop(0)


def _group(pair: Pair) -> tuple[str, str, str]:
    alice = create_user(pair.users, "Alice").name
    xavier = create_user(pair.users, "Xavier").name
    group = pair.users.CreateGroup(
        pb.CreateGroupRequest(group=pb.Group(display_name="Trip", creator=alice)),
        timeout=TIMEOUT,
    ).group.name
    pair.users.AddGroupMember(
        pb.AddGroupMemberRequest(parent=group, user=xavier), timeout=TIMEOUT
    )
    return group, alice, xavier


def _expense(payer: str, participants: list[str], total: str = "10.00"):
    return expenses_pb.Expense(
        description="Taxi",
        expense_date=day(),
        total=money(total, "EUR"),
        payers=[expenses_pb.Payer(user=payer, amount=money(total, "EUR"))],
        split=expenses_pb.Split(
            type=expenses_pb.SPLIT_TYPE_EQUAL,
            participants=[expenses_pb.SplitParticipant(user=u) for u in participants],
        ),
        creator=payer,
    )


def _create(pair: Pair, group: str, payer: str, participants: list[str]):
    return pair.expenses.CreateExpense(
        expenses_pb.CreateExpenseRequest(
            parent=group, expense=_expense(payer, participants)
        ),
        timeout=TIMEOUT,
    ).expense


def _update(pair: Pair, expense: expenses_pb.Expense, modifier: str, **fields):
    """Change the fields given, such as `description` or a new `total`."""
    changed = expenses_pb.Expense(name=expense.name, last_modifier=modifier)
    paths = []
    if "total" in fields:
        participants = [line.user for line in expense.split.participants]
        new = _expense(expense.payers[0].user, participants, fields.pop("total"))
        for path in ("total", "payers", "split"):
            getattr(changed, path).MergeFrom(getattr(new, path))
            paths.append(path)
    for path, value in fields.items():
        setattr(changed, path, value)
        paths.append(path)
    return pair.expenses.UpdateExpense(
        expenses_pb.UpdateExpenseRequest(
            expense=changed, update_mask=field_mask_pb2.FieldMask(paths=paths)
        ),
        timeout=TIMEOUT,
    ).expense


def _delete(pair: Pair, expense: expenses_pb.Expense) -> expenses_pb.Expense:
    """Delete an expense in the name of its creator."""
    request = expenses_pb.DeleteExpenseRequest(
        name=expense.name, last_modifier=expense.creator
    )
    return pair.expenses.DeleteExpense(request, timeout=TIMEOUT).expense


def _undelete(pair: Pair, expense: expenses_pb.Expense) -> expenses_pb.Expense:
    """Restore an expense in the name of its creator."""
    request = expenses_pb.UndeleteExpenseRequest(
        name=expense.name, last_modifier=expense.creator
    )
    return pair.expenses.UndeleteExpense(request, timeout=TIMEOUT).expense


def _rejected(call) -> grpc.RpcError:
    """Run a call that must fail with FAILED_PRECONDITION; return its error."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    return error


def _members(pair: Pair, group: str) -> pb.ListGroupMembersResponse:
    return pair.users.ListGroupMembers(
        pb.ListGroupMembersRequest(parent=group), timeout=TIMEOUT
    )


def _leaving(pair: Pair, group: str) -> dict[str, bool]:
    return {member.user: member.leaving for member in _members(pair, group).members}


def _start(call) -> futures.Future:
    executor = futures.ThreadPoolExecutor(max_workers=1)
    future = executor.submit(call)
    executor.shutdown(wait=False)
    return future


def test_leaving_member_rejected_on_expenses(pair):
    group, alice, xavier = _group(pair)
    # Alice's expense fills expense_service's member list, with Xavier in it.
    _create(pair, group, alice, [alice])
    member = f"{group}/members/{xavier.removeprefix('users/')}"
    removal = _start(
        lambda: pair.users.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(name=member), timeout=TIMEOUT
        )
    )
    assert pair.guard.entered.wait(TIMEOUT)

    with pytest.raises(grpc.RpcError) as caught:
        _create(pair, group, alice, [alice, xavier])

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "MEMBER_LEAVING"
    assert xavier in error.details()
    assert "expense.split.participants[1].user" in error.details()
    assert "Name members who stay" in error.details()
    violation = error_details(error)["PreconditionFailure"].violations[0]
    assert violation.subject == member
    assert _leaving(pair, group) == {alice: False, xavier: True}
    assert not _members(pair, group).group_deleting
    assert _create(pair, group, alice, [alice]).name.startswith(group)

    pair.guard.release.set()
    removal.result(TIMEOUT)
    assert xavier not in _leaving(pair, group)


def test_leaving_member_amounts_frozen(pair):
    """While X's removal checks balances, no expense write may change what X
    paid or owes, and writes that leave X's amounts alone go through."""
    group, alice, xavier = _group(pair)
    shared = _create(pair, group, alice, [alice, xavier])
    paid_by_x = _create(pair, group, xavier, [alice, xavier])
    deleted = _delete(pair, _create(pair, group, alice, [alice, xavier]))
    own = _create(pair, group, alice, [alice])
    member = f"{group}/members/{xavier.removeprefix('users/')}"
    removal = _start(
        lambda: pair.users.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(name=member), timeout=TIMEOUT
        )
    )
    assert pair.guard.entered.wait(TIMEOUT)

    removed_from_delete = _rejected(lambda: _delete(pair, shared))
    resized = _rejected(lambda: _update(pair, paid_by_x, alice, total="12.00"))
    restored = _rejected(lambda: _undelete(pair, deleted))
    renamed = _update(pair, shared, alice, description="Train")
    alone = _update(pair, own, alice, total="12.00")
    own_deleted = _delete(pair, own)

    for error in (removed_from_delete, resized, restored):
        assert reason_of(error) == "MEMBER_LEAVING", error.details()
        assert repr(xavier) in error.details()
        violation = error_details(error)["PreconditionFailure"].violations[0]
        assert violation.subject == member
    assert (
        "split.participants[1].user of the stored expense"
        in removed_from_delete.details()
    )
    assert "expense.payers[0].user" in resized.details()
    assert "Name members who stay" in resized.details()
    assert "retry in a moment" in resized.details()
    # A delete or a restore names no members, so it may only wait.
    for error in (removed_from_delete, restored):
        assert "Name members" not in error.details()
        assert "changes what a leaving member paid or owes" in error.details()
        assert "Retry in a moment" in error.details()
    assert renamed.description == "Train"
    assert alone.total == money("12.00", "EUR")
    assert own_deleted.HasField("delete_time")

    pair.guard.release.set()
    removal.result(TIMEOUT)
    # A former member's expenses stay open to corrections.
    assert _delete(pair, shared).HasField("delete_time")


def test_group_deletion_freezes_amounts(pair):
    """While the group's deletion checks balances, no expense write may change
    an amount, not even one of a former member only."""
    group, alice, xavier = _group(pair)
    bob = create_user(pair.users, "Bob").name
    pair.users.AddGroupMember(
        pb.AddGroupMemberRequest(parent=group, user=bob), timeout=TIMEOUT
    )
    former_only = _create(pair, group, xavier, [xavier, bob])
    shared = _create(pair, group, alice, [alice])
    # The guard holds only the deletion below, not these removals.
    pair.guard.release.set()
    for user in (xavier, bob):
        pair.users.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(
                name=f"{group}/members/{user.removeprefix('users/')}"
            ),
            timeout=TIMEOUT,
        )
    pair.guard.release.clear()
    pair.guard.entered.clear()
    deletion = _start(
        lambda: pair.users.DeleteGroup(
            pb.DeleteGroupRequest(name=group), timeout=TIMEOUT
        )
    )
    assert pair.guard.entered.wait(TIMEOUT)

    listed = _members(pair, group)
    former_deleted = _rejected(lambda: _delete(pair, former_only))
    shared_deleted = _rejected(lambda: _delete(pair, shared))
    shared_resized = _rejected(lambda: _update(pair, shared, alice, total="12.00"))

    assert listed.group_deleting
    assert reason_of(former_deleted) == "GROUP_DELETING"
    assert f"{group!r} is being deleted" in former_deleted.details()
    assert repr(xavier) in former_deleted.details()
    assert repr(bob) in former_deleted.details()
    violation = error_details(former_deleted)["PreconditionFailure"].violations[0]
    assert violation.subject == group
    assert reason_of(shared_deleted) == "MEMBER_LEAVING"
    assert reason_of(shared_resized) == "MEMBER_LEAVING"

    pair.guard.release.set()
    deletion.result(TIMEOUT)
    with pytest.raises(grpc.RpcError) as missing:
        _delete(pair, former_only)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def _positions(text: str, users: list[str]) -> list[int]:
    return [text.index(repr(user)) for user in users]


def _add_five_members(pair: Pair, group: str) -> list[str]:
    """Add five new members, enough that a set order matching the order of
    an expense that names them all is unlikely."""
    others = [create_user(pair.users, name).name for name in FIVE_NAMES]
    for user in others:
        pair.users.AddGroupMember(
            pb.AddGroupMemberRequest(parent=group, user=user), timeout=TIMEOUT
        )
    return others


def test_delete_errors_follow_stored_expense(pair):
    """DeleteExpense and UndeleteExpense name the users in the order the
    stored expense lists them, by the stored expense's fields."""
    group, alice, _ = _group(pair)
    others = _add_five_members(pair, group)
    payer, participants = others[2], [others[4], others[0], others[3], others[1]]
    former_only = _create(pair, group, payer, participants)
    restorable = _delete(pair, _create(pair, group, alice, [alice]))
    pair.guard.release.set()
    for user in others:
        pair.users.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(
                name=f"{group}/members/{user.removeprefix('users/')}"
            ),
            timeout=TIMEOUT,
        )
    pair.guard.release.clear()
    pair.guard.entered.clear()
    deletion = _start(
        lambda: pair.users.DeleteGroup(
            pb.DeleteGroupRequest(name=group), timeout=TIMEOUT
        )
    )
    assert pair.guard.entered.wait(TIMEOUT)

    deleted = _rejected(lambda: _delete(pair, former_only))
    restored = _rejected(lambda: _undelete(pair, restorable))

    pair.guard.release.set()
    deletion.result(TIMEOUT)
    expected = [payer, *participants]
    info = error_details(deleted)["ErrorInfo"]
    assert reason_of(deleted) == "GROUP_DELETING"
    assert info.metadata["users"] == ",".join(expected)
    assert info.metadata["stored_fields"] == (
        "payers[0].user,split.participants[0].user,split.participants[1].user,"
        "split.participants[2].user,split.participants[3].user"
    )
    positions = _positions(deleted.details(), expected)
    assert positions == sorted(positions)
    assert f"{payer!r} (payers[0].user of the stored expense)" in deleted.details()
    assert "expense." not in deleted.details()
    assert reason_of(restored) == "MEMBER_LEAVING"
    assert error_details(restored)["ErrorInfo"].metadata["users"] == alice
    assert (
        f"{alice!r} (payers[0].user, split.participants[0].user of the stored "
        "expense)" in restored.details()
    )
    assert "expense." not in restored.details()


def test_update_errors_follow_stored_expense(pair):
    """UpdateExpense names the leaving users that it drops from the expense
    in the order the stored expense lists them, by the stored expense's
    fields."""
    group, alice, _ = _group(pair)
    others = _add_five_members(pair, group)
    dropped = [others[4], others[0], others[3], others[1], others[2]]
    shared = _create(pair, group, alice, [alice, *dropped])
    removals = [
        _start(
            lambda user=user: pair.users.RemoveGroupMember(
                pb.RemoveGroupMemberRequest(
                    name=f"{group}/members/{user.removeprefix('users/')}"
                ),
                timeout=TIMEOUT,
            )
        )
        for user in others
    ]
    deadline = time.monotonic() + TIMEOUT
    while not all(_leaving(pair, group).get(user) for user in others):
        assert time.monotonic() < deadline, "the removals did not all start"
        time.sleep(0.05)
    alone = expenses_pb.Expense(
        name=shared.name,
        last_modifier=alice,
        split=expenses_pb.Split(
            type=expenses_pb.SPLIT_TYPE_EQUAL,
            participants=[expenses_pb.SplitParticipant(user=alice)],
        ),
    )

    narrowed = _rejected(
        lambda: pair.expenses.UpdateExpense(
            expenses_pb.UpdateExpenseRequest(
                expense=alone, update_mask=field_mask_pb2.FieldMask(paths=["split"])
            ),
            timeout=TIMEOUT,
        )
    )

    pair.guard.release.set()
    for removal in removals:
        removal.result(TIMEOUT)
    info = error_details(narrowed)["ErrorInfo"]
    assert reason_of(narrowed) == "MEMBER_LEAVING"
    assert info.metadata["users"] == ",".join(dropped)
    assert info.metadata["stored_fields"] == ",".join(
        f"split.participants[{index}].user" for index in range(1, len(dropped) + 1)
    )
    assert "fields" not in info.metadata
    positions = _positions(narrowed.details(), dropped)
    assert positions == sorted(positions)
    assert (
        f"{dropped[0]!r} (split.participants[1].user of the stored expense)"
        in narrowed.details()
    )
    subjects = [
        violation.subject
        for violation in error_details(narrowed)["PreconditionFailure"].violations
    ]
    assert subjects == [
        f"{group}/members/{user.removeprefix('users/')}" for user in dropped
    ]


def test_second_removal_aborted(pair):
    group, alice, xavier = _group(pair)
    member = f"{group}/members/{xavier.removeprefix('users/')}"
    removal = _start(
        lambda: pair.users.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(name=member), timeout=TIMEOUT
        )
    )
    assert pair.guard.entered.wait(TIMEOUT)

    with pytest.raises(grpc.RpcError) as caught:
        pair.users.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(name=member), timeout=TIMEOUT
        )

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "REMOVAL_IN_PROGRESS"
    assert member in caught.value.details()
    pair.guard.release.set()
    removal.result(TIMEOUT)
    assert xavier not in _leaving(pair, group)


def test_rejected_removal_clears_mark(pair):
    group, alice, xavier = _group(pair)
    member = f"{group}/members/{xavier.removeprefix('users/')}"
    pair.guard.verdict = unsettled_balance(member, f"{xavier} owes 5.00 EUR")
    removal = _start(
        lambda: pair.users.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(name=member), timeout=TIMEOUT
        )
    )
    assert pair.guard.entered.wait(TIMEOUT)
    assert _leaving(pair, group)[xavier]

    pair.guard.release.set()
    with pytest.raises(grpc.RpcError) as caught:
        removal.result(TIMEOUT)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "UNSETTLED_BALANCE"
    assert _leaving(pair, group) == {alice: False, xavier: False}
    assert _create(pair, group, alice, [alice, xavier]).name.startswith(group)


def test_group_deletion_marks_every_member(pair):
    group, alice, xavier = _group(pair)
    deletion = _start(
        lambda: pair.users.DeleteGroup(
            pb.DeleteGroupRequest(name=group), timeout=TIMEOUT
        )
    )
    assert pair.guard.entered.wait(TIMEOUT)

    assert _leaving(pair, group) == {alice: True, xavier: True}
    with pytest.raises(grpc.RpcError) as caught:
        _create(pair, group, alice, [alice])
    assert reason_of(caught.value) == "MEMBER_LEAVING"
    member = f"{group}/members/{xavier.removeprefix('users/')}"
    with pytest.raises(grpc.RpcError) as removing:
        pair.users.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(name=member), timeout=TIMEOUT
        )
    assert removing.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(removing.value) == "REMOVAL_IN_PROGRESS"

    pair.guard.release.set()
    deletion.result(TIMEOUT)
    with pytest.raises(grpc.RpcError) as missing:
        _create(pair, group, alice, [alice])
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
