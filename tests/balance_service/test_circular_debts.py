"""Circular debts cancelled in the pairwise reads, against real services.

ListPairwiseBalances, the counterparties of GetUserBalance and the pair
explanation of ExplainBalance all show the lines with circular debts
cancelled (`balance_service.cycles`). Each debt here is one expense that
the creditor paid and the debtor owes in full.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from tests.balance_service.support import (
    create_group,
    debt_nets,
    group_nets,
    has_cycle,
    minor,
    settle,
)

# The worked example of docs/balances.md: two cycles through ann -> ben.
OVERLAPPING = {
    ("ann", "ben"): 2000,
    ("ben", "cleo"): 2000,
    ("cleo", "ann"): 1000,
    ("ben", "dora"): 1500,
    ("dora", "ann"): 2500,
}
OVERLAPPING_LINES = {
    ("ben", "cleo"): 1000,
    ("ben", "dora"): 500,
    ("dora", "ann"): 1500,
}
NAMES = ("ann", "ben", "cleo", "dora")


def _named_group(services, names=NAMES) -> tuple[str, dict[str, str]]:
    """Create a group whose member ids sort in the order of `names`."""
    group_id, user_ids = create_group(services.users, len(names))
    return group_id, dict(zip(names, sorted(user_ids), strict=True))


def _publish_debts(services, group_id, ids, debts, prefix="debt") -> None:
    for (debtor, creditor), amount in debts.items():
        services.peer.publish(
            group_id,
            f"{prefix}-{debtor}-{creditor}",
            {ids[creditor]: (amount, 0), ids[debtor]: (0, amount)},
        )


def _lines(services, group_id: str, **fields) -> dict[tuple[str, str], int]:
    """Return `(debtor id, creditor id) -> amount` of every line of a group."""
    response = services.balances.ListPairwiseBalances(
        pb.ListPairwiseBalancesRequest(
            parent=f"groups/{group_id}", page_size=1000, **fields
        ),
        timeout=10,
    )
    assert not response.next_page_token
    return {
        (line.debtor[6:], line.creditor[6:]): minor(line.amount)
        for line in response.pairwise_balances
    }


def _by_name(lines: dict, ids: dict[str, str]) -> dict[tuple[str, str], int]:
    names = {user_id: name for name, user_id in ids.items()}
    return {(names[d], names[c]): amount for (d, c), amount in lines.items()}


def _counterparties(services, user_id: str) -> dict[str, tuple]:
    """Return `counterparty id -> (net, {group id: amount})` in EUR."""
    balance = services.balances.GetUserBalance(
        pb.GetUserBalanceRequest(name=f"users/{user_id}/balance"), timeout=10
    ).balance
    return {
        entry.user[6:]: (
            minor(entry.net_amount),
            {part.group[7:]: minor(part.net_amount) for part in entry.group_amounts},
        )
        for entry in balance.counterparty_balances
    }


def _explain_pair(services, group_id: str, user: str, counterparty: str):
    response = services.balances.ExplainBalance(
        pb.ExplainBalanceRequest(
            name=f"groups/{group_id}/balance",
            user=f"users/{user}",
            currency_code="EUR",
            counterparty=f"users/{counterparty}",
            page_size=1000,
        ),
        timeout=10,
    )
    assert not response.next_page_token
    return response


def test_following_plan_leaves_no_lines(services):
    group_id, ids = _named_group(services, ("ben", "cleo", "dora"))
    _publish_debts(
        services, group_id, ids, {("dora", "ben"): 1000, ("cleo", "dora"): 1000}
    )
    services.sync()
    plan = services.balances.ComputeSettlementPlan(
        pb.ComputeSettlementPlanRequest(name=f"groups/{group_id}/balance"),
        timeout=10,
    ).transfers
    assert [(t.payer, t.payee, minor(t.amount)) for t in plan] == [
        (f"users/{ids['cleo']}", f"users/{ids['ben']}", 1000)
    ]

    for transfer in plan:
        settle(
            services.balances,
            group_id,
            transfer.payer[6:],
            transfer.payee[6:],
            minor(transfer.amount),
        )

    balance = services.balances.GetGroupBalance(
        pb.GetGroupBalanceRequest(name=f"groups/{group_id}/balance"), timeout=10
    ).balance
    assert balance.settled
    assert _lines(services, group_id) == {}
    for user_id in ids.values():
        assert _lines(services, group_id, user=f"users/{user_id}") == {}
        assert _counterparties(services, user_id) == {}


def test_overlapping_cycles_follow_documented_rule(services):
    group_id, ids = _named_group(services)
    _publish_debts(services, group_id, ids, OVERLAPPING)
    services.sync()

    lines = _lines(services, group_id)

    assert _by_name(lines, ids) == OVERLAPPING_LINES
    nets = group_nets(services.balances, group_id)["EUR"]
    assert debt_nets(lines) == {user: net for user, net in nets.items() if net}


def test_lines_keep_net_amounts_with_settlements(services):
    group_id, ids = _named_group(services, ("ann", "ben", "cleo", "dora", "erin"))
    ann, ben, cleo, dora, erin = ids.values()
    publish = services.peer.publish
    publish(group_id, "e1", {ann: (6000, 1200), ben: (4000, 2000), cleo: (0, 6800)})
    publish(group_id, "e2", {cleo: (3001, 1000), dora: (0, 1000), erin: (0, 1001)})
    publish(group_id, "e3", {erin: (2500, 500), ann: (0, 2000)})
    publish(group_id, "e4", {dora: (900, 300), ben: (0, 300), erin: (0, 300)})
    services.sync()
    settle(services.balances, group_id, cleo, ann, 1500)
    settle(services.balances, group_id, ann, erin, 700)

    lines = _lines(services, group_id)
    nets = group_nets(services.balances, group_id)["EUR"]

    assert debt_nets(lines) == {user: net for user, net in nets.items() if net}
    assert not has_cycle(lines)
    assert all(amount > 0 for amount in lines.values())


def test_former_member_with_zero_net_has_no_lines(services):
    group_id, ids = _named_group(services, ("ben", "cleo", "dora", "erin"))
    _publish_debts(
        services,
        group_id,
        ids,
        {("erin", "ben"): 1000, ("cleo", "erin"): 1000, ("dora", "ben"): 500},
    )
    services.sync()
    # The plan's transfer from cleo to ben brings erin's net amount to zero.
    settle(services.balances, group_id, ids["cleo"], ids["ben"], 1000)
    services.users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(
            name=f"groups/{group_id}/members/{ids['erin']}"
        ),
        timeout=10,
    )

    # The group balance may list erin with zero for a few seconds, while
    # balance_service reuses the member list it read before the removal.
    assert group_nets(services.balances, group_id)["EUR"].get(ids["erin"], 0) == 0
    assert _by_name(_lines(services, group_id), ids) == {("dora", "ben"): 500}
    assert _lines(services, group_id, user=f"users/{ids['erin']}") == {}
    assert _counterparties(services, ids["erin"]) == {}
    assert _counterparties(services, ids["cleo"]) == {}


@pytest.mark.parametrize("members_cached", [True, False])
def test_former_member_pair_without_items(services, members_cached):
    """Explain a former member with a member that they share no item with.

    With `members_cached`, balance_service read the members before the
    removal and still lists ben for a few seconds. Without, it reads them
    from user_service, as it does once that cache has expired.
    """
    group_id, ids = _named_group(services, ("ann", "ben", "cleo"))
    _publish_debts(services, group_id, ids, {("ben", "ann"): 500, ("ann", "cleo"): 300})
    services.sync()
    if members_cached:
        group_nets(services.balances, group_id)
    services.users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(
            name=f"groups/{group_id}/members/{ids['ben']}"
        ),
        timeout=10,
    )
    lines = _by_name(_lines(services, group_id), ids)

    for user, counterparty in (("cleo", "ben"), ("ben", "cleo")):
        response = _explain_pair(services, group_id, ids[user], ids[counterparty])

        pairwise = lines.get((counterparty, user), 0) - lines.get(
            (user, counterparty), 0
        )
        assert pairwise == 0
        assert minor(response.net_amount) == 0, user
        assert list(response.contributions) == [], user
        assert minor(response.pairwise_amount) == pairwise, user
        assert minor(response.circular_debt_adjustment) == pairwise, user


def test_lines_independent_of_expense_order(services):
    first, ids = _named_group(services)
    second, _ = create_group(services.users, 1)
    for user_id in ids.values():
        services.users.AddGroupMember(
            users_pb.AddGroupMemberRequest(
                parent=f"groups/{second}", user=f"users/{user_id}"
            ),
            timeout=10,
        )
    _publish_debts(services, first, ids, OVERLAPPING)
    _publish_debts(services, second, ids, dict(reversed(OVERLAPPING.items())))
    services.sync()

    in_first = _lines(services, first)
    in_second = _lines(services, second)

    assert _by_name(in_first, ids) == OVERLAPPING_LINES
    assert in_second == in_first


def test_explain_adjustment_completes_the_line(services):
    group_id, ids = _named_group(services)
    _publish_debts(services, group_id, ids, OVERLAPPING)
    services.sync()
    settle(services.balances, group_id, ids["cleo"], ids["ann"], 300)
    lines = _lines(services, group_id)

    for user in ids.values():
        for counterparty in ids.values():
            if counterparty == user:
                continue
            response = _explain_pair(services, group_id, user, counterparty)
            items = sum(minor(item.net_change) for item in response.contributions)
            line = lines.get((counterparty, user), 0) - lines.get(
                (user, counterparty), 0
            )
            pair = (user, counterparty)

            assert items == minor(response.net_amount), pair
            assert items + minor(response.circular_debt_adjustment) == line, pair
            assert minor(response.pairwise_amount) == line, pair

    # ann owes ben 20.00 by her own expenses, and all of it is cancelled.
    response = _explain_pair(services, group_id, ids["ann"], ids["ben"])
    assert minor(response.net_amount) == -2000
    assert minor(response.circular_debt_adjustment) == 2000
    assert minor(response.pairwise_amount) == 0


def test_explain_without_counterparty_sets_no_adjustment(services):
    group_id, ids = _named_group(services, ("ben", "cleo", "dora"))
    _publish_debts(
        services,
        group_id,
        ids,
        {("dora", "ben"): 1000, ("cleo", "dora"): 1000, ("ben", "cleo"): 1000},
    )
    services.sync()

    response = services.balances.ExplainBalance(
        pb.ExplainBalanceRequest(
            name=f"groups/{group_id}/balance",
            user=f"users/{ids['dora']}",
            currency_code="EUR",
        ),
        timeout=10,
    )

    assert minor(response.net_amount) == 0
    assert not response.HasField("circular_debt_adjustment")
    assert not response.HasField("pairwise_amount")


def test_user_summary_matches_lines_of_each_group(services):
    first, ids = _named_group(services)
    second, (outsider,) = create_group(services.users, 1)
    for name in ("ann", "ben"):
        services.users.AddGroupMember(
            users_pb.AddGroupMemberRequest(
                parent=f"groups/{second}", user=f"users/{ids[name]}"
            ),
            timeout=10,
        )
    _publish_debts(services, first, ids, OVERLAPPING)
    _publish_debts(
        services,
        second,
        {**ids, "olga": outsider},
        {("ben", "ann"): 700, ("ann", "olga"): 700, ("olga", "ben"): 200},
    )
    services.sync()
    lines = {first: _lines(services, first), second: _lines(services, second)}

    for user in [*ids.values(), outsider]:
        balance = services.balances.GetUserBalance(
            pb.GetUserBalanceRequest(name=f"users/{user}/balance"), timeout=10
        ).balance
        expected: dict[str, dict[str, int]] = defaultdict(dict)
        for group_id, group_lines in lines.items():
            for (debtor, creditor), amount in group_lines.items():
                if creditor == user:
                    expected[debtor][group_id] = amount
                elif debtor == user:
                    expected[creditor][group_id] = -amount
        total = sum(minor(money) for money in balance.total_net_amounts)

        found = _counterparties(services, user)

        assert found == {
            other: (sum(parts.values()), parts) for other, parts in expected.items()
        }, user
        assert sum(net for net, _ in found.values()) == total, user
    # In the second group, 2.00 of the cycle ann -> olga -> ben -> ann is
    # cancelled, which clears what olga owed ben.
    assert _counterparties(services, outsider) == {ids["ann"]: (500, {second: 500})}
