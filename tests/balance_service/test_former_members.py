"""Settling the balance that a former member keeps after leaving a group.

The module's user service removes members whatever their balances, so each
test gives X a balance with a ledger event, removes X, and settles.
"""

from __future__ import annotations

import uuid

import grpc
import pytest

from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from tests.balance_service.support import (
    create_group,
    error_details,
    group_nets,
    reason_of,
    settle,
)


def _group_with_former(services, leaver_net: int) -> tuple[str, str, str, str]:
    """Create a group of Alice, Bob and X, then remove X.

    X keeps a net amount of `leaver_net` EUR cents against Alice. Returns the
    group, Alice, Bob and X.
    """
    group_id, (alice, bob, leaver) = create_group(services.users, 3)
    paid = {alice: (max(-leaver_net, 0), max(leaver_net, 0))}
    paid[leaver] = (max(leaver_net, 0), max(-leaver_net, 0))
    services.peer.publish(group_id, uuid.uuid4().hex[:8], paid)
    services.sync()
    services.users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(name=f"groups/{group_id}/members/{leaver}"),
        timeout=10,
    )
    return group_id, alice, bob, leaver


def _deactivate(services, user_id: str) -> None:
    services.users.DeactivateUser(
        users_pb.DeactivateUserRequest(name=f"users/{user_id}"), timeout=10
    )


def _create(
    services,
    group_id: str,
    payer: str,
    payee: str,
    creator: str,
    amount: int,
    currency: str = "EUR",
    **fields,
) -> pb.Settlement:
    return settle(
        services.balances,
        group_id,
        payer,
        payee,
        amount,
        currency,
        creator=creator,
        **fields,
    )


def _rejected(services, *args, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _create(services, *args, **fields)
    return caught.value


def _settled(services, group_id: str) -> bool:
    request = pb.CheckSettledRequest(name=f"groups/{group_id}/balance")
    return services.balances.CheckSettled(request, timeout=10).settled


def test_former_debtor_pays_in_parts(services):
    group_id, alice, bob, leaver = _group_with_former(services, -1000)

    _create(services, group_id, leaver, alice, alice, 400)
    assert group_nets(services.balances, group_id)["EUR"][leaver] == -600
    _create(services, group_id, leaver, alice, bob, 600)

    assert group_nets(services.balances, group_id)["EUR"][alice] == 0
    assert _settled(services, group_id)


def test_former_member_pairwise_lines_listed(services):
    group_id, alice, _, leaver = _group_with_former(services, 1000)
    request = pb.ListPairwiseBalancesRequest(
        parent=f"groups/{group_id}", user=f"users/{leaver}"
    )

    owed = services.balances.ListPairwiseBalances(request, timeout=10)
    _create(services, group_id, alice, leaver, alice, 1000)
    settled = services.balances.ListPairwiseBalances(request, timeout=10)

    assert [line.creditor for line in owed.pairwise_balances] == [f"users/{leaver}"]
    assert list(settled.pairwise_balances) == []


def test_former_creditor_is_paid(services):
    group_id, alice, bob, leaver = _group_with_former(services, 1000)

    created = _create(services, group_id, alice, leaver, alice, 1000)

    assert created.payee == f"users/{leaver}"
    assert _settled(services, group_id)


def test_former_member_overpaid_rejected(services):
    group_id, alice, _, leaver = _group_with_former(services, -1000)

    error = _rejected(services, group_id, leaver, alice, alice, 1001)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    details = error.details()
    assert f"settlement.payer 'users/{leaver}' is not a member" in details
    assert "owes 10.00 EUR, less than 10.01 EUR; record at most 10.00 EUR" in details
    assert "AddGroupMember" in details
    violation = error_details(error)["PreconditionFailure"].violations[0]
    assert violation.subject == f"groups/{group_id}/members/{leaver}"
    assert group_nets(services.balances, group_id)["EUR"][alice] == 1000


@pytest.mark.parametrize(
    ("leaver_net", "as_payer", "problem"),
    [
        (-1000, False, "owes 10.00 EUR, so they can only be the payer"),
        (1000, True, "is owed 10.00 EUR, so they can only be the payee"),
    ],
)
def test_former_member_wrong_direction_rejected(
    services, leaver_net, as_payer, problem
):
    group_id, alice, _, leaver = _group_with_former(services, leaver_net)
    payer, payee = (leaver, alice) if as_payer else (alice, leaver)

    error = _rejected(services, group_id, payer, payee, alice, 100)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    field = "settlement.payer" if as_payer else "settlement.payee"
    assert f"{field} 'users/{leaver}' is not a member" in error.details()
    assert problem in error.details()


def test_former_member_other_currency_rejected(services):
    group_id, alice, _, leaver = _group_with_former(services, -1000)

    error = _rejected(services, group_id, leaver, alice, alice, 100, "USD")

    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    assert f"'users/{leaver}' has no balance in USD in the group" in error.details()


def test_former_member_as_creator_rejected(services):
    group_id, alice, _, leaver = _group_with_former(services, -1000)

    error = _rejected(services, group_id, leaver, alice, leaver, 1000)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    assert f"settlement.creator 'users/{leaver}' is not a member" in error.details()
    assert "former member" not in error.details()
    assert not _settled(services, group_id)


def test_deactivated_former_member_settles(services):
    group_id, alice, _, leaver = _group_with_former(services, -1000)
    _deactivate(services, leaver)

    _create(services, group_id, leaver, alice, alice, 1000)

    assert _settled(services, group_id)


def test_deactivated_former_member_overpaying_rejected(services):
    group_id, alice, _, leaver = _group_with_former(services, -1000)
    _deactivate(services, leaver)

    error = _rejected(services, group_id, leaver, alice, alice, 1001)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    assert "owes 10.00 EUR, less than 10.01 EUR" in error.details()
    assert not _settled(services, group_id)


def _deactivated_member_owed(services, owed: int) -> tuple[str, str, str]:
    """Create a group of Alice and Bob in which Bob, now deactivated, is owed
    `owed` EUR cents by Alice. Returns the group, Alice and Bob."""
    group_id, (alice, bob) = create_group(services.users, 2)
    services.peer.publish(
        group_id, uuid.uuid4().hex[:8], {alice: (0, owed), bob: (owed, 0)}
    )
    services.sync()
    _deactivate(services, bob)
    return group_id, alice, bob


def test_deactivated_member_paid_what_owed(services):
    group_id, alice, bob = _deactivated_member_owed(services, 500)

    _create(services, group_id, alice, bob, alice, 500)

    assert _settled(services, group_id)
    assert group_nets(services.balances, group_id)["EUR"] == {alice: 0, bob: 0}


@pytest.mark.parametrize(
    ("payer_is_bob", "amount", "problem"),
    [
        (False, 501, "is owed 5.00 EUR, less than 5.01 EUR; record at most 5.00 EUR"),
        (True, 100, "is owed 5.00 EUR, so they can only be the payee"),
    ],
)
def test_deactivated_member_unsettling_rejected(
    services, payer_is_bob, amount, problem
):
    group_id, alice, bob = _deactivated_member_owed(services, 500)
    payer, payee = (bob, alice) if payer_is_bob else (alice, bob)
    field = "settlement.payer" if payer_is_bob else "settlement.payee"

    error = _rejected(services, group_id, payer, payee, alice, amount)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "USER_DEACTIVATED"
    assert f"'users/{bob}' ({field}) is deactivated" in error.details()
    assert problem in error.details()
    assert "Name an active member instead" not in error.details()
    violations = error_details(error)["PreconditionFailure"].violations
    assert [v.subject for v in violations] == [f"users/{bob}"]
    assert group_nets(services.balances, group_id)["EUR"][bob] == 500


def test_deactivated_member_as_creator_rejected(services):
    group_id, alice, bob = _deactivated_member_owed(services, 500)

    error = _rejected(services, group_id, alice, bob, bob, 500)

    assert reason_of(error) == "USER_DEACTIVATED"
    assert (
        f"'users/{bob}' (settlement.payee, settlement.creator) is deactivated"
        in error.details()
    )
    assert not _settled(services, group_id)


def test_settling_retry_with_request_id_replays(services):
    group_id, alice, _, leaver = _group_with_former(services, -1000)
    key = str(uuid.uuid4())

    first = _create(services, group_id, leaver, alice, alice, 1000, request_id=key)
    again = _create(services, group_id, leaver, alice, alice, 1000, request_id=key)

    assert again == first
    assert _settled(services, group_id)
    error = _rejected(services, group_id, leaver, alice, alice, 1000)
    assert "has no balance in EUR in the group" in error.details()


def test_delete_settlement_of_former_member_names_fixes(services):
    group_id, alice, _, leaver = _group_with_former(services, -1000)
    created = _create(services, group_id, leaver, alice, alice, 400)

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.DeleteSettlement(
            pb.DeleteSettlementRequest(name=created.name), timeout=10
        )

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    assert error.details() == (
        f"the settlement's payer 'users/{leaver}' is not a member of "
        f"'groups/{group_id}'; deleting a settlement needs its payer and payee "
        "to be members. Add the user back with AddGroupMember first, or keep "
        "the settlement and record one in the opposite direction, which may "
        "name a former member when it moves their balance towards zero"
    )
    assert "pick a member" not in error.details()
    assert group_nets(services.balances, group_id)["EUR"][leaver] == -600


def test_undelete_settlement_of_former_member_names_fixes(services):
    group_id, (alice, _, leaver) = create_group(services.users, 3)
    services.peer.publish(
        group_id, uuid.uuid4().hex[:8], {alice: (1000, 0), leaver: (0, 1000)}
    )
    services.sync()
    created = _create(services, group_id, leaver, alice, alice, 1000)
    deleted = services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=created.name), timeout=10
    ).settlement
    services.users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(name=f"groups/{group_id}/members/{leaver}"),
        timeout=10,
    )

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.UndeleteSettlement(
            pb.UndeleteSettlementRequest(name=created.name, etag=deleted.etag),
            timeout=10,
        )

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    assert error.details() == (
        f"the settlement's payer 'users/{leaver}' is not a member of "
        f"'groups/{group_id}'; restoring a settlement needs its payer and payee "
        "to be members. Add the user back with AddGroupMember first, or record "
        "a new settlement in its place, which may name a former member when "
        "it moves their balance towards zero"
    )
