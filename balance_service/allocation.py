"""Who owes whom within one expense: the pairwise allocation rule.

Within an expense, each participant owes each payer a part of what the
participant owes, in proportion to what that payer paid. For a participant u
who owes `owed[u]` and a payer p who paid `paid[p]` out of a total T, the
exact part is owed[u] * paid[p] / T. Parts are whole minor units, so this
rule rounds them:

1. Every part starts at the floor of its exact value.
2. The floors leave each participant short by a whole number of units
   (the sum of the fractional parts of its row), and each payer short by the
   sum of the fractional parts of its column. Each short unit is then given
   to one (participant, payer) cell with a non-zero fractional part, so that
   every row adds up to exactly `owed[u]` and every column to exactly
   `paid[p]`. Such a choice always exists: the fractional parts themselves
   are a fractional solution of that transport problem, and its polytope
   has integral vertices.
3. Cells are chosen largest fractional part first, ties by participant and
   then payer name, and augmenting paths repair the few cases where that
   greedy order gets stuck.

Because rows and columns add up exactly, the pairwise lines of a group add
up to every member's net amount. What the others owe a member, minus what
the member owes the others, is what the member paid minus what they owe.

Example: 100.00 paid by A 60.00 and B 40.00, owed equally by A, B and C
(33.34, 33.33, 33.33). Exact parts: C owes A 19.998 and B 13.332, so C owes
A 20.00 and B 13.33 after rounding. A owes B 13.336 (13.34) and itself
20.004; B owes A 19.998 (20.00). Netted, B owes A 6.66 and C owes A 20.00
and B 13.33: A is owed 26.66 = 60.00 - 33.34, B 6.67 = 40.00 - 33.33, and C
owes 33.33.

A refund has a negative total and negative amounts; the same rule applies
with exact floor division, so nothing changes sign. An expense whose paid
amounts add up to zero has no proportions; its members' net amounts
(paid - owed) are then paired off in user order, each debtor paying the
creditors in turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction


def allocate(
    paid: Mapping[str, int], owed: Mapping[str, int]
) -> dict[tuple[str, str], int]:
    """Split what each participant owes among the payers.

    Args:
      paid: minor units each member paid; zeros are allowed.
      owed: minor units each member owes; zeros are allowed. Must add up to
        the same total as `paid`.

    Returns:
      `(participant, payer) -> minor units` for the non-zero parts, a member
      paired with itself included. For every participant the parts add up
      to `owed[participant]`, and for every payer to `paid[payer]`.

    Raises:
      ValueError: `paid` and `owed` do not add up to the same total.
    """
    total = sum(paid.values())
    if total != sum(owed.values()):
        raise ValueError(
            f"paid amounts add up to {total} but owed amounts to "
            f"{sum(owed.values())}; they must be equal"
        )
    payers = sorted(user for user, amount in paid.items() if amount)
    participants = sorted(user for user, amount in owed.items() if amount)
    if total == 0:
        return _pair_net_amounts(paid, owed)

    parts: dict[tuple[str, str], int] = {}
    fractions: dict[tuple[str, str], Fraction] = {}
    row_short = {user: owed[user] for user in participants}
    column_short = {user: paid[user] for user in payers}
    for participant in participants:
        for payer in payers:
            exact = Fraction(owed[participant] * paid[payer], total)
            floor = exact.numerator // exact.denominator
            parts[participant, payer] = floor
            row_short[participant] -= floor
            column_short[payer] -= floor
            if exact != floor:
                fractions[participant, payer] = exact - floor

    raised = _round_up_cells(fractions, row_short, column_short)
    for cell in raised:
        parts[cell] += 1
    return {cell: amount for cell, amount in parts.items() if amount}


def _round_up_cells(
    fractions: dict[tuple[str, str], Fraction],
    row_short: dict[str, int],
    column_short: dict[str, int],
) -> set[tuple[str, str]]:
    """Pick cells to raise by one unit so every row and column is met exactly."""
    raised: set[tuple[str, str]] = set()
    order = sorted(fractions, key=lambda cell: (-fractions[cell], cell))
    rows = dict(row_short)
    columns = dict(column_short)
    for participant, payer in order:
        if rows[participant] > 0 and columns[payer] > 0:
            raised.add((participant, payer))
            rows[participant] -= 1
            columns[payer] -= 1
    while any(rows.values()):
        path = _augmenting_path(order, raised, rows, columns)
        if path is None:
            raise AssertionError("no exact rounding found; the totals disagree")
        # The path alternates cells to raise and raised cells to lower.
        for index, cell in enumerate(path):
            if index % 2 == 0:
                raised.add(cell)
            else:
                raised.remove(cell)
        rows[path[0][0]] -= 1
        columns[path[-1][1]] -= 1
    return raised


def _augmenting_path(
    order: list[tuple[str, str]],
    raised: set[tuple[str, str]],
    rows: dict[str, int],
    columns: dict[str, int],
) -> list[tuple[str, str]] | None:
    """Find row -> column -> row ... -> short column through the cell graph.

    A step from a row to a column uses a cell that is not raised yet, while a
    step back from a column to a row uses a raised cell. The search is breadth
    first, so the path is a shortest one.
    """
    starts = [row for row, short in rows.items() if short > 0]
    came_from: dict[str, tuple[str, str] | None] = {("r", row): None for row in starts}
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
                return _trace(came_from, nxt)
            queue.append(nxt)
    return None


def _trace(came_from: dict, end: tuple[str, str]) -> list[tuple[str, str]]:
    path = []
    node = end
    while came_from[node] is not None:
        kind, previous, cell = came_from[node]
        path.append(cell)
        node = (kind, previous)
    return path[::-1]


def _pair_net_amounts(
    paid: Mapping[str, int], owed: Mapping[str, int]
) -> dict[tuple[str, str], int]:
    nets = {user: paid.get(user, 0) - owed.get(user, 0) for user in {*paid, *owed}}
    debtors = [[user, -net] for user, net in sorted(nets.items()) if net < 0]
    creditors = [[user, net] for user, net in sorted(nets.items()) if net > 0]
    parts: dict[tuple[str, str], int] = {}
    for debtor in debtors:
        for creditor in creditors:
            amount = min(debtor[1], creditor[1])
            if amount:
                parts[debtor[0], creditor[0]] = amount
                debtor[1] -= amount
                creditor[1] -= amount
    return parts
