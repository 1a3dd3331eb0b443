"""The balance guard against a real balance service: members who owe or are
owed money cannot leave, groups with open balances cannot be deleted."""

from __future__ import annotations

import uuid

import grpc
import pytest

from balance_service.app import build as build_balances
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.users.v1 import users_service_pb2 as pb
from splitlog_runtime import config as config_module
from tests.balance_service.support import LedgerPeer, wait_until
from tests.ports import closed_address
from tests.user_service.support import (
    create_group,
    create_user,
    error_details,
    open_stub,
    reason_of,
)
from user_service.app import build


@pytest.fixture
def system(db_url, tmp_path):
    """A user service whose default guard calls a real balance service."""
    peer = LedgerPeer()
    balances_config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path / "balances",
            "balance_service_db_url": db_url,
            "expense_service_addr": peer.address,
            "user_service_addr": closed_address(),
            "workers": 4,
        },
    )
    balances = build_balances(balances_config, "127.0.0.1:0")
    users_config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path / "users",
            "balance_service_addr": f"127.0.0.1:{balances.port}",
            # The cap on each balance check. With expense_service down, a check
            # is a chain of grpc retries: up to 4 CheckSettled attempts, each
            # retrying its calls to the unreachable services. That took about
            # 1.9 s on an idle 2-core machine, so a 2 s cap ended it in
            # DEADLINE_EXCEEDED under load. The tests' 10 s call timeouts still
            # bound every check.
            "deadline_seconds": 8.0,
            "workers": 4,
        },
    )
    users = build(users_config, "127.0.0.1:0")
    channel, stub = open_stub(users.port)
    yield stub, peer, balances
    channel.close()
    users.stop(0)
    balances.stop(0)
    peer.stop()


def _group_with_debt(stub, peer):
    """Alice paid 25.00 for herself and Bob; Bob owes her 12.50."""
    alice = create_user(stub, "Alice")
    bob = create_user(stub, "Bob")
    carol = create_user(stub, "Carol")
    group = create_group(stub, alice.name)
    for user in (bob, carol):
        stub.AddGroupMember(
            pb.AddGroupMemberRequest(parent=group.name, user=user.name), timeout=10
        )
    group_id = group.name.split("/")[1]
    lines = {alice.name[6:]: (2500, 1250), bob.name[6:]: (0, 1250)}
    peer.publish(group_id, "dinner", lines)
    return group, alice, bob, carol, lines


def _wait_until_applied(balances, group, settled: bool) -> None:
    """Wait until the balance service has applied the published expense."""
    with grpc.insecure_channel(f"127.0.0.1:{balances.port}") as channel:
        stub = balances_grpc.BalancesServiceStub(channel)
        request = balances_pb.CheckSettledRequest(name=f"{group.name}/balance")
        wait_until(lambda: stub.CheckSettled(request, timeout=10).settled == settled)


def test_member_who_owes_cannot_leave(system):
    stub, peer, balances = system
    group, _, bob, _, _ = _group_with_debt(stub, peer)
    member = f"{group.name}/members/{bob.name[6:]}"
    _wait_until_applied(balances, group, settled=False)

    with pytest.raises(grpc.RpcError) as caught:
        stub.RemoveGroupMember(pb.RemoveGroupMemberRequest(name=member), timeout=10)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "UNSETTLED_BALANCE"
    violation = error_details(caught.value)["PreconditionFailure"].violations[0]
    assert violation.subject == member
    assert f"{bob.name} owes 12.50 EUR in {group.name}" in violation.description
    assert "owes 12.50 EUR" in caught.value.details()


def test_removal_with_too_short_deadline_rejected(system):
    stub, peer, balances = system
    group, _, bob, _, _ = _group_with_debt(stub, peer)
    member = f"{group.name}/members/{bob.name[6:]}"
    _wait_until_applied(balances, group, settled=False)

    with pytest.raises(grpc.RpcError) as caught:
        stub.RemoveGroupMember(pb.RemoveGroupMemberRequest(name=member), timeout=0.4)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert reason_of(caught.value) == "DEADLINE_TOO_SHORT"
    assert "retry with a longer deadline" in caught.value.details()
    members = stub.ListGroupMembers(
        pb.ListGroupMembersRequest(parent=group.name), timeout=10
    ).members
    assert bob.name in [m.user for m in members]


def test_group_with_open_balances_cannot_be_deleted(system):
    stub, peer, balances = system
    group, alice, bob, _, _ = _group_with_debt(stub, peer)
    _wait_until_applied(balances, group, settled=False)

    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteGroup(pb.DeleteGroupRequest(name=group.name), timeout=10)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "UNSETTLED_BALANCE"
    description = error_details(caught.value)["PreconditionFailure"].violations[0]
    assert f"{alice.name} is owed 12.50 EUR" in description.description
    assert f"{bob.name} owes 12.50 EUR" in description.description


def test_settled_member_and_group_can_go(system):
    stub, peer, balances = system
    group, _, bob, carol, lines = _group_with_debt(stub, peer)
    _wait_until_applied(balances, group, settled=False)

    stub.RemoveGroupMember(
        pb.RemoveGroupMemberRequest(name=f"{group.name}/members/{carol.name[6:]}"),
        timeout=10,
    )
    peer.publish(group.name.split("/")[1], "dinner", lines, deleted=True)
    _wait_until_applied(balances, group, settled=True)
    stub.RemoveGroupMember(
        pb.RemoveGroupMemberRequest(name=f"{group.name}/members/{bob.name[6:]}"),
        timeout=10,
    )
    stub.DeleteGroup(pb.DeleteGroupRequest(name=group.name), timeout=10)

    with pytest.raises(grpc.RpcError) as caught:
        stub.GetGroup(pb.GetGroupRequest(name=group.name), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _deactivate_error(stub, user) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeactivateUser(pb.DeactivateUserRequest(name=user.name), timeout=10)
    return caught.value


def _state(stub, user) -> int:
    return stub.GetUser(pb.GetUserRequest(name=user.name), timeout=10).user.state


def test_user_who_owes_cannot_deactivate(system):
    stub, peer, balances = system
    group, _, bob, _, _ = _group_with_debt(stub, peer)
    _wait_until_applied(balances, group, settled=False)

    error = _deactivate_error(stub, bob)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "UNSETTLED_BALANCE"
    assert f"{bob.name} owes 12.50 EUR in {group.name}" in error.details()
    assert "record settlements" in error.details()
    assert "then deactivate again" in error.details()
    violation = error_details(error)["PreconditionFailure"].violations[0]
    assert violation.subject == f"{group.name}/members/{bob.name[6:]}"
    assert _state(stub, bob) == pb.User.STATE_ACTIVE


def test_deactivation_lists_every_open_group(system):
    stub, peer, balances = system
    alice, bob = create_user(stub, "Alice"), create_user(stub, "Bob")
    # Bob owes 1.00 USD in the first group, 2.00 USD in the second, and so on.
    groups = []
    for number in range(1, 8):
        group = create_group(stub, alice.name)
        stub.AddGroupMember(
            pb.AddGroupMemberRequest(parent=group.name, user=bob.name), timeout=10
        )
        lines = {
            alice.name[6:]: (200 * number, 100 * number),
            bob.name[6:]: (0, 100 * number),
        }
        peer.publish(group.name.split("/")[1], "taxi", lines, currency="USD")
        groups.append((group, f"{bob.name} owes {number}.00 USD in {group.name}"))
    for group, _ in groups:
        _wait_until_applied(balances, group, settled=False)

    error = _deactivate_error(stub, bob)

    message = error.details()
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "UNSETTLED_BALANCE"
    assert "while a balance is open in 7 groups: " in message
    listed = sorted(groups, key=lambda item: item[0].name)
    for _, owed in listed[:5]:
        assert owed in message
    for _, owed in listed[5:]:
        assert owed not in message
    assert "and 2 more groups; record settlements" in message
    violations = error_details(error)["PreconditionFailure"].violations
    assert [violation.subject for violation in violations] == [
        f"{group.name}/members/{bob.name[6:]}" for group, _ in listed
    ]
    assert _state(stub, bob) == pb.User.STATE_ACTIVE


def test_deactivation_details_hold_whole_entries(system):
    """Open balances in three currencies in each of many groups with long
    names: every text of the error lists whole balances and counts the rest,
    instead of losing its middle to the status size limit."""
    stub, peer, balances = system
    alice, bob = create_user(stub, "Alice"), create_user(stub, "Bob")
    groups = []
    for number in range(1, 13):
        # The longest id a group may have: 63 characters.
        group_id = f"g{number:02d}-{uuid.uuid4().hex}".ljust(63, "x")
        group = create_group(stub, alice.name, group_id=group_id)
        stub.AddGroupMember(
            pb.AddGroupMemberRequest(parent=group.name, user=bob.name), timeout=10
        )
        for currency in ("EUR", "USD", "JPY"):
            lines = {alice.name[6:]: (200, 100), bob.name[6:]: (0, 100)}
            peer.publish(group_id, f"taxi-{currency.lower()}", lines, currency=currency)
        groups.append(group.name)
    with grpc.insecure_channel(f"127.0.0.1:{balances.port}") as channel:
        balance_stub = balances_grpc.BalancesServiceStub(channel)
        for group in groups:
            request = balances_pb.CheckSettledRequest(
                name=f"{group}/balance", user=bob.name
            )
            wait_until(
                lambda request=request: (
                    len(
                        balance_stub.CheckSettled(
                            request, timeout=10
                        ).unsettled_balances
                    )
                    == 3
                )
            )

    error = _deactivate_error(stub, bob)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "UNSETTLED_BALANCE"
    message = error.details()
    assert "omitted" not in message
    assert "and 2 more balances" in message
    assert message.endswith(
        " more groups; record settlements until every balance "
        "is zero, then deactivate again"
    )
    details = error_details(error)
    violations = details["PreconditionFailure"].violations
    omitted = int(details["ErrorInfo"].metadata.get("omitted_violations", "0"))
    assert violations
    assert len(violations) + omitted == len(groups)
    for violation, group in zip(violations, sorted(groups), strict=False):
        assert violation.type == "UNSETTLED_BALANCE"
        assert violation.subject == f"{group}/members/{bob.name[6:]}"
        assert "omitted" not in violation.description
        assert violation.description.startswith(f"{bob.name} owes 1.00 ")
        assert f" in {group} and 2 more balances; " in violation.description
        assert violation.description.endswith(
            "; record settlements until every balance is zero"
        )
    assert _state(stub, bob) == pb.User.STATE_ACTIVE


def test_user_who_is_owed_cannot_deactivate(system):
    stub, peer, balances = system
    group, alice, _, _, _ = _group_with_debt(stub, peer)
    _wait_until_applied(balances, group, settled=False)

    error = _deactivate_error(stub, alice)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"{alice.name} is owed 12.50 EUR in {group.name}" in error.details()
    assert _state(stub, alice) == pb.User.STATE_ACTIVE


def test_refused_deactivation_clears_leaving_marks(system):
    stub, peer, balances = system
    group, _, bob, _, _ = _group_with_debt(stub, peer)
    _wait_until_applied(balances, group, settled=False)

    _deactivate_error(stub, bob)
    members = stub.ListGroupMembers(
        pb.ListGroupMembersRequest(parent=group.name), timeout=10
    ).members

    assert [member.leaving for member in members] == [False, False, False]


def test_settled_users_can_deactivate(system):
    stub, peer, balances = system
    group, _, bob, carol, lines = _group_with_debt(stub, peer)
    _wait_until_applied(balances, group, settled=False)

    carol_after = stub.DeactivateUser(
        pb.DeactivateUserRequest(name=carol.name), timeout=10
    ).user
    peer.publish(group.name.split("/")[1], "dinner", lines, deleted=True)
    _wait_until_applied(balances, group, settled=True)
    bob_after = stub.DeactivateUser(
        pb.DeactivateUserRequest(name=bob.name), timeout=10
    ).user

    assert carol_after.state == pb.User.STATE_DEACTIVATED
    assert bob_after.state == pb.User.STATE_DEACTIVATED


def test_deactivation_without_balance_service_changes_nothing(system):
    stub, peer, balances = system
    group, _, _, carol, _ = _group_with_debt(stub, peer)
    balances.stop(0)

    error = _deactivate_error(stub, carol)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert _state(stub, carol) == pb.User.STATE_ACTIVE


def _removals_after(stub, stop):
    """Create Alice and Bob in a group, call `stop`, then try to remove Bob
    and to delete the group.

    Returns:
      The two errors and the members listed afterwards, with Alice and Bob.
    """
    alice = create_user(stub, "Alice")
    bob = create_user(stub, "Bob")
    group = create_group(stub, alice.name)
    stub.AddGroupMember(
        pb.AddGroupMemberRequest(parent=group.name, user=bob.name), timeout=10
    )
    stop()
    member = f"{group.name}/members/{bob.name[6:]}"

    with pytest.raises(grpc.RpcError) as removing:
        stub.RemoveGroupMember(pb.RemoveGroupMemberRequest(name=member), timeout=10)
    with pytest.raises(grpc.RpcError) as deleting:
        stub.DeleteGroup(pb.DeleteGroupRequest(name=group.name), timeout=10)
    members = stub.ListGroupMembers(
        pb.ListGroupMembersRequest(parent=group.name), timeout=10
    ).members
    return removing.value, deleting.value, [m.user for m in members], alice, bob


def test_unreachable_balance_service_is_unavailable(system):
    stub, _, balances = system

    removing, deleting, members, alice, bob = _removals_after(
        stub, lambda: balances.stop(0)
    )

    assert removing.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(removing) == "BALANCE_SERVICE_UNAVAILABLE"
    assert f"127.0.0.1:{balances.port}" not in removing.details()
    assert deleting.code() == grpc.StatusCode.UNAVAILABLE
    assert members == [alice.name, bob.name]


def test_unreachable_expense_service_is_unavailable(system):
    stub, peer, _ = system

    removing, deleting, members, alice, bob = _removals_after(stub, peer.stop)

    assert removing.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(removing) == "BALANCE_SERVICE_UNAVAILABLE"
    assert "did not return its ledger position" in removing.details()
    assert deleting.code() == grpc.StatusCode.UNAVAILABLE
    assert members == [alice.name, bob.name]
