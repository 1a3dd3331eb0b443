"""The pairwise allocation rule of one expense, against a plain reference.

`_reference_allocate` spells the rule out cell by cell with exact fractions
and a breadth-first search over every cell, as the rule reads. The service's
`allocate` must give the same parts on every input, and be quick on the
largest expense that expense_service accepts.
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from balance_service.allocation import allocate
from splitlog_runtime import limits


def _reference_allocate(paid: dict[str, int], owed: dict[str, int]) -> dict:
    total = sum(paid.values())
    assert total == sum(owed.values())
    assert total != 0
    payers = sorted(user for user, amount in paid.items() if amount)
    participants = sorted(user for user, amount in owed.items() if amount)
    parts, fractions = {}, {}
    rows = {user: owed[user] for user in participants}
    columns = {user: paid[user] for user in payers}
    for participant in participants:
        for payer in payers:
            exact = Fraction(owed[participant] * paid[payer], total)
            floor = exact.numerator // exact.denominator
            parts[participant, payer] = floor
            rows[participant] -= floor
            columns[payer] -= floor
            if exact != floor:
                fractions[participant, payer] = exact - floor
    order = sorted(fractions, key=lambda cell: (-fractions[cell], cell))
    raised = set()
    for participant, payer in order:
        if rows[participant] > 0 and columns[payer] > 0:
            raised.add((participant, payer))
            rows[participant] -= 1
            columns[payer] -= 1
    while any(rows.values()):
        path = _reference_path(order, raised, rows, columns)
        for index, cell in enumerate(path):
            if index % 2 == 0:
                raised.add(cell)
            else:
                raised.remove(cell)
        rows[path[0][0]] -= 1
        columns[path[-1][1]] -= 1
    for cell in raised:
        parts[cell] += 1
    return {cell: amount for cell, amount in parts.items() if amount}


def _reference_path(order, raised, rows, columns):
    starts = [row for row, short in rows.items() if short > 0]
    came_from = {("r", row): None for row in starts}
    queue = [("r", row) for row in starts]
    while queue:
        kind, node = queue.pop(0)
        for cell in order:
            if kind == "r" and cell[0] == node and cell not in raised:
                nxt = ("c", cell[1])
            elif kind == "c" and cell[1] == node and cell in raised:
                nxt = ("r", cell[0])
            else:
                continue
            if nxt in came_from:
                continue
            came_from[nxt] = (kind, node, cell)
            if nxt[0] == "c" and columns[nxt[1]] > 0:
                path, step = [], nxt
                while came_from[step] is not None:
                    kind, previous, cell = came_from[step]
                    path.append(cell)
                    step = (kind, previous)
                return path[::-1]
            queue.append(nxt)
    raise AssertionError("no augmenting path")


def _spread(draw, total: int, users: list[str]) -> dict[str, int]:
    """Split `total` among `users` at random cut points, zeros allowed."""
    sign = 1 if total > 0 else -1
    cuts = sorted(
        draw(
            st.lists(
                st.integers(0, abs(total)),
                min_size=len(users) - 1,
                max_size=len(users) - 1,
            )
        )
    )
    bounds = [0, *cuts, abs(total)]
    return {
        user: sign * (bounds[index + 1] - bounds[index])
        for index, user in enumerate(users)
    }


@st.composite
def expenses(draw):
    members = [f"users/m{index}" for index in range(draw(st.integers(1, 8)))]
    total = draw(st.integers(1, 5000)) * draw(st.sampled_from([1, -1]))
    payers = draw(st.lists(st.sampled_from(members), min_size=1, unique=True))
    participants = draw(st.lists(st.sampled_from(members), min_size=1, unique=True))
    return _spread(draw, total, payers), _spread(draw, total, participants)


@settings(max_examples=400, deadline=None)
@given(expenses())
def test_allocate_matches_the_reference(expense):
    paid, owed = expense

    assert allocate(paid, owed) == _reference_allocate(paid, owed)


@settings(max_examples=200, deadline=None)
@given(expenses())
def test_rows_and_columns_add_up(expense):
    paid, owed = expense

    parts = allocate(paid, owed)

    for user, amount in owed.items():
        assert sum(v for (row, _), v in parts.items() if row == user) == amount
    for user, amount in paid.items():
        assert sum(v for (_, col), v in parts.items() if col == user) == amount


def test_worked_example_of_the_rule():
    parts = allocate({"A": 6000, "B": 4000}, {"A": 3334, "B": 3333, "C": 3333})

    assert parts == {
        ("A", "A"): 2000,
        ("A", "B"): 1334,
        ("B", "A"): 2000,
        ("B", "B"): 1333,
        ("C", "A"): 2000,
        ("C", "B"): 1333,
    }


def test_many_repairs_match_the_reference():
    # Amounts where the largest-first order gets stuck 55 times, so the
    # repair step runs 55 searches on a changing set of raised cells.
    paid = {f"p{index:02d}": 413 + 178 * index * index % 1009 for index in range(10)}
    total = sum(paid.values())
    owed = {f"q{index:02d}": total // 60 for index in range(60)}
    owed["q00"] += total - sum(owed.values())

    assert allocate(paid, owed) == _reference_allocate(paid, owed)


def test_largest_accepted_expense_adds_up():
    # Its time is measured in docs/benchmarks.md, not here.
    payers = limits.DEFAULTS.expense_max_payers
    participants = limits.DEFAULTS.expense_max_participants
    users = [f"users/u{index:04d}" for index in range(participants)]
    paid = {user: 100_003 + 7919 * index for index, user in enumerate(users[:payers])}
    total = sum(paid.values())
    owed = {user: total // participants for user in users}
    owed[users[0]] += total - sum(owed.values())

    parts = allocate(paid, owed)

    assert sum(parts.values()) == total
    for user in users:
        assert sum(v for (owes, _), v in parts.items() if owes == user) == owed[user]
