"""Cancelling circular debts, against a plain reference of the rule.

`_reference_cancel` follows the walk of `balance_service.cycles` step by
step on member ids, as the rule reads. The service's `cancel_cycles` must
give the same debts on every input, keep every net amount, and leave no
cycle. A `DebtWalk` that returns single debts first, in any order, must
give the same amounts.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balance_service.cycles import DebtWalk, cancel_cycles, pairwise_lines
from balance_service.pair_cache import net
from tests.balance_service.support import debt_nets, has_cycle


def _reference_cancel(debts: dict[tuple[str, str], int]) -> dict:
    remaining = dict(debts)
    creditors = defaultdict(list)
    for debtor, creditor in sorted(remaining):
        creditors[debtor].append(creditor)
    finished: set[str] = set()
    next_index = defaultdict(int)
    for start in sorted({member for debt in remaining for member in debt}):
        if start in finished:
            continue
        path = [start]
        while path:
            debtor = path[-1]
            if next_index[debtor] == len(creditors[debtor]):
                finished.add(debtor)
                path.pop()
                continue
            creditor = creditors[debtor][next_index[debtor]]
            if (debtor, creditor) not in remaining or creditor in finished:
                next_index[debtor] += 1
            elif creditor in path:
                cycle = path[path.index(creditor) :]
                links = list(zip(cycle, cycle[1:] + cycle[:1], strict=True))
                smallest = min(remaining[link] for link in links)
                dropped = []
                for link in links:
                    remaining[link] -= smallest
                    if not remaining[link]:
                        del remaining[link]
                        dropped.append(link)
                del path[path.index(dropped[0][0]) + 1 :]
            else:
                path.append(creditor)
    return remaining


AMOUNTS = st.integers(1, 50)


@st.composite
def _debts(draw, members: int = 6):
    names = [f"user-{number}" for number in range(members)]
    found = {}
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            direction = draw(st.sampled_from(["none", "forward", "back"]))
            if direction == "forward":
                found[first, second] = draw(AMOUNTS)
            elif direction == "back":
                found[second, first] = draw(AMOUNTS)
    return found


def test_three_member_cycle_cancels_fully():
    debts = {("dora", "ben"): 1000, ("cleo", "dora"): 1000, ("ben", "cleo"): 1000}

    assert cancel_cycles(debts) == {}


def test_overlapping_cycles_follow_documented_example():
    # The worked example of docs/balances.md: the cycle through cleo is
    # found first, because ben's debts are taken in creditor id order.
    debts = {
        ("ann", "ben"): 2000,
        ("ben", "cleo"): 2000,
        ("cleo", "ann"): 1000,
        ("ben", "dora"): 1500,
        ("dora", "ann"): 2500,
    }

    assert cancel_cycles(debts) == {
        ("ben", "cleo"): 1000,
        ("ben", "dora"): 500,
        ("dora", "ann"): 1500,
    }


def test_acyclic_debts_stay_as_they_are():
    debts = {("ann", "ben"): 5, ("ben", "cleo"): 7, ("ann", "cleo"): 2}

    assert cancel_cycles(debts) == debts


@pytest.mark.parametrize(
    "debts",
    [
        {("ann", "ben"): 0},
        {("ann", "ben"): -3},
        {("ann", "ann"): 3},
        {("ann", "ben"): 3, ("ben", "ann"): 2},
    ],
)
def test_invalid_debts_rejected(debts):
    with pytest.raises(ValueError, match="not a pairwise line"):
        cancel_cycles(debts)


@settings(max_examples=300, deadline=None)
@given(_debts())
def test_matches_reference_and_keeps_nets(debts):
    result = cancel_cycles(debts)

    assert result == _reference_cancel(debts)
    assert debt_nets(result) == debt_nets(debts)
    assert not has_cycle(result)
    for debt, amount in result.items():
        assert 0 < amount <= debts[debt], debt


def _sorted_debts(debts: dict[tuple[str, str], int]) -> list[tuple[str, str, int]]:
    return sorted(
        (debtor, creditor, amount) for (debtor, creditor), amount in debts.items()
    )


@settings(max_examples=300, deadline=None)
@given(_debts(), st.data())
def test_walk_amounts_match_reference(debts, data):
    expected = _reference_cancel(debts)
    names = [f"user-{number}" for number in range(6)] + ["outsider"]
    pairs = [(debtor, creditor) for debtor in names for creditor in names]
    requested = data.draw(st.lists(st.sampled_from(pairs), max_size=12))
    walk = DebtWalk(data.draw(st.permutations(_sorted_debts(debts))))

    for debtor, creditor in requested:
        assert walk.amount(debtor, creditor) == expected.get((debtor, creditor), 0)
    assert walk.remaining() == _sorted_debts(expected)
    for debtor, creditor in requested:
        assert walk.amount(debtor, creditor) == expected.get((debtor, creditor), 0)


# Ids whose code point order differs from a case-insensitive or locale
# order, as ids in a database with another collation might sort.
_MIXED_IDS = ["user_a", "user-b", "User-c", "user-B", "user-a", "USER-d"]


@settings(max_examples=200, deadline=None)
@given(_debts())
def test_walk_orders_ids_by_code_point(debts):
    renamed = {
        (_MIXED_IDS[int(debtor[5:])], _MIXED_IDS[int(creditor[5:])]): amount
        for (debtor, creditor), amount in debts.items()
    }
    expected = _reference_cancel(renamed)

    assert DebtWalk(_sorted_debts(renamed)[::-1]).remaining() == _sorted_debts(expected)


def test_walk_stops_at_final_debt():
    debts = {
        # The first cycle, ann -> ben -> cleo -> ann, drops ann -> ben.
        ("ann", "ben"): 500,
        ("ben", "cleo"): 1000,
        ("cleo", "ann"): 1000,
        # A cycle that the walk reaches only after ann, ben and cleo.
        ("dora", "erin"): 300,
        ("erin", "fred"): 400,
        ("fred", "dora"): 200,
    }
    walk = DebtWalk(_sorted_debts(debts))

    assert walk.amount("ann", "ben") == 0
    assert walk.cycles == 1
    assert walk.amount("ben", "cleo") == 500
    assert walk.cycles == 1
    assert walk.amount("erin", "fred") == 200
    assert walk.cycles == 2
    assert walk.remaining() == [
        ("ben", "cleo", 500),
        ("cleo", "ann", 500),
        ("dora", "erin", 100),
        ("erin", "fred", 200),
    ]
    assert walk.cycles == 2


@settings(max_examples=100, deadline=None)
@given(_debts(), st.randoms(use_true_random=False))
def test_independent_of_insertion_order(debts, shuffler: random.Random):
    items = list(debts.items())
    shuffler.shuffle(items)

    assert cancel_cycles(dict(items)) == cancel_cycles(debts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.permutations(range(6)), min_size=1, max_size=6), st.data())
def test_all_nets_zero_leaves_no_debt(orders, data):
    # A sum of cycles has a zero net amount for every member. Each random
    # order gives one cycle, over its first three to six members.
    debts: dict[tuple[str, str], int] = defaultdict(int)
    for order in orders:
        size = data.draw(st.integers(3, 6))
        amount = data.draw(st.integers(1, 40))
        cycle = [f"user-{number}" for number in order[:size]]
        for debtor, creditor in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            debts[debtor, creditor] += amount
    # Two members may owe each other both ways. Keep only the difference, as
    # the stored pair amounts do.
    netted = {}
    for (debtor, creditor), amount in debts.items():
        left = amount - debts.get((creditor, debtor), 0)
        if left > 0:
            netted[debtor, creditor] = left

    assert debt_nets(netted) == {}
    assert cancel_cycles(netted) == {}


def test_pairwise_lines_read_stored_signs():
    pairs = [
        ("g1", "EUR", "ann", "ben", 300),
        ("g1", "EUR", "ben", "cleo", -200),
        ("g1", "USD", "ann", "cleo", 0),
        ("g2", "EUR", "ann", "ben", -50),
    ]

    assert pairwise_lines(pairs) == {
        ("g1", "EUR"): {("ann", "ben"): 300, ("cleo", "ben"): 200},
        ("g2", "EUR"): {("ben", "ann"): 50},
    }


def test_netted_lines_of_user_and_pair_after_cycle():
    # dora owes ben, cleo owes dora and ben owes cleo 10.00 each.
    pairs = [
        ("g1", "EUR", "ben", "dora", -1000),
        ("g1", "EUR", "cleo", "dora", 1000),
        ("g1", "EUR", "ben", "cleo", 1000),
        ("g1", "EUR", "ann", "ben", 400),
    ]

    netted = net(7, pairs)

    assert netted.version == 7
    assert netted.lines == (("ann", "ben", 400),)
    assert list(netted.counterparties("ben")) == [("ann", 400)]
    assert list(netted.counterparties("ann")) == [("ben", -400)]
    assert list(netted.counterparties("dora")) == []
    assert netted.owed("ann", "ben") == 400
    assert netted.owed("ben", "ann") == 0
    assert netted.owed("dora", "ben") == 0
    assert netted.after("ann", "ben") == 1
    assert netted.after("ann", "a") == 0


def test_netted_lines_of_pair_before_whole_walk():
    # The same debts as above. ann's line is final once the walk reaches ann.
    pairs = [
        ("g1", "EUR", "ben", "dora", -1000),
        ("g1", "EUR", "cleo", "dora", 1000),
        ("g1", "EUR", "ben", "cleo", 1000),
        ("g1", "EUR", "ann", "ben", 400),
    ]

    netted = net(7, pairs)

    assert netted.owed("ann", "ben") == 400
    assert netted.owed("dora", "ben") == 0
    assert netted.owed("ann", "zoe") == 0
    assert list(netted.counterparties("ben")) == [("ann", 400)]
    assert netted.owed("ann", "ben") == 400


def test_netted_lines_of_pairs_without_debt():
    netted = net(3, [])

    assert netted.lines == ()
    assert netted.owed("ann", "ben") == 0
    assert netted.after("ann", "ben") == 0
