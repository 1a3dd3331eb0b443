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
   greedy order gets stuck. Each repair is the first shortest path of a
   breadth-first search that starts from the short participants in name
   order and tries each one's cells in the same largest-first order.

The work is exact integer arithmetic: every exact part has the denominator
T, so its floor and remainder come from one integer division, and the
remainder orders the fractional parts. One repair search reads each cell at
most twice, once from its participant and once from its payer. So an expense
costs time in proportion to payers x participants per repair, and
expense_service caps both counts (expense_max_payers and
expense_max_participants).

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

from collections import deque
from collections.abc import Mapping

Cell = tuple[str, str]

# Kinds of entries in the queue of `_augmenting_path`.
_ROW, _COLUMN, _READER = 0, 1, 2


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
    if len(payers) == 1:
        # Each exact part is owed[u] * total / total, a whole number.
        payer = payers[0]
        return {(participant, payer): owed[participant] for participant in participants}

    # Every exact part has the denominator |total|, so the part's floor and
    # its fractional part times |total| (the remainder) are whole numbers.
    # Dividing signed products by |total| keeps floors exact for refunds.
    sign = 1 if total > 0 else -1
    denominator = abs(total)
    parts: dict[Cell, int] = {}
    remainders: list[tuple[int, Cell]] = []
    row_short = {user: owed[user] for user in participants}
    column_short = {user: paid[user] for user in payers}
    for participant in participants:
        owes = owed[participant] * sign
        row_floor = 0
        for payer in payers:
            floor, remainder = divmod(owes * paid[payer], denominator)
            parts[participant, payer] = floor
            row_floor += floor
            column_short[payer] -= floor
            if remainder:
                remainders.append((-remainder, (participant, payer)))
        row_short[participant] -= row_floor

    remainders.sort()
    order = [cell for _, cell in remainders]
    for cell in _round_up_cells(order, participants, payers, row_short, column_short):
        parts[cell] += 1
    return {cell: amount for cell, amount in parts.items() if amount}


def _round_up_cells(
    order: list[Cell],
    participants: list[str],
    payers: list[str],
    row_short: dict[str, int],
    column_short: dict[str, int],
) -> list[Cell]:
    """Pick cells to raise by one unit so every row and column is met exactly.

    `order` lists the cells with a fractional part, largest first, ties by
    participant and then payer. Rows are the participants and columns the
    payers, both in name order.
    """
    row_index = {user: index for index, user in enumerate(participants)}
    column_index = {user: index for index, user in enumerate(payers)}
    rows = [row_short[user] for user in participants]
    columns = [column_short[user] for user in payers]
    width = len(payers)
    cells = [(row_index[row], column_index[column]) for row, column in order]
    raised = bytearray(len(participants) * width)
    for row, column in cells:
        if rows[row] > 0 and columns[column] > 0:
            raised[row * width + column] = 1
            rows[row] -= 1
            columns[column] -= 1
    if any(rows):
        # Each row's columns and each column's rows in the rounding order,
        # so that one search reads every cell at most twice.
        row_cells: list[list[int]] = [[] for _ in participants]
        column_cells: list[list[int]] = [[] for _ in payers]
        for row, column in cells:
            row_cells[row].append(column)
            column_cells[column].append(row)
        while any(rows):
            path = _augmenting_path(row_cells, column_cells, raised, rows, columns)
            if path is None:
                raise AssertionError("no exact rounding found; the totals disagree")
            # The path alternates cells to raise and raised cells to lower.
            for index, (row, column) in enumerate(path):
                raised[row * width + column] = 1 - index % 2
            rows[path[0][0]] -= 1
            columns[path[-1][1]] -= 1
    return [
        (participants[row], payers[column])
        for row, column in cells
        if raised[row * width + column]
    ]


def _augmenting_path(
    row_cells: list[list[int]],
    column_cells: list[list[int]],
    raised: bytearray,
    rows: list[int],
    columns: list[int],
) -> list[tuple[int, int]] | None:
    """Find row -> column -> row ... -> short column through the cell graph.

    A step from a row to a column uses a cell that is not raised yet, while a
    step back from a column to a row uses a raised cell. The search is breadth
    first, so the path is a shortest one. It starts from the short rows in
    name order and tries each node's cells in the rounding order.

    The rows that a column reaches are read only when the search gets to
    them. A column's turn puts a reader of its rows at the back of the
    queue, and the reader hands out one row at a time at the front. The
    readers run in queue order, each to its end before the next one starts.
    So rows come out in the order that adding them all at the column's turn
    would give, and the search stops as soon as it reaches a short column,
    often after a few rows.
    """
    width = len(columns)
    # Parent row of each reached column and parent column of each reached
    # row; -1 for the rows the search starts from, None for unreached nodes.
    row_parent: list[int | None] = [None] * len(rows)
    column_parent: list[int | None] = [None] * width
    # Entries: (_ROW, row, 0), (_COLUMN, column, 0), or (_READER, column,
    # position of the next row to read in column_cells[column]).
    queue: deque[tuple[int, int, int]] = deque()
    for row, short in enumerate(rows):
        if short > 0:
            row_parent[row] = -1
            queue.append((_ROW, row, 0))
    while queue:
        kind, node, position = queue.popleft()
        if kind == _COLUMN:
            queue.append((_READER, node, 0))
            continue
        if kind == _READER:
            cells = column_cells[node]
            while position < len(cells):
                row = cells[position]
                position += 1
                if raised[row * width + node] and row_parent[row] is None:
                    break
            else:
                continue
            row_parent[row] = node
            queue.appendleft((_READER, node, position))
            node = row
        base = node * width
        for column in row_cells[node]:
            if raised[base + column] or column_parent[column] is not None:
                continue
            column_parent[column] = node
            if columns[column] > 0:
                return _trace(row_parent, column_parent, column)
            queue.append((_COLUMN, column, 0))
    return None


def _trace(
    row_parent: list[int | None], column_parent: list[int | None], column: int
) -> list[tuple[int, int]]:
    """Return the cells from a start row to `column`, first cell first."""
    path = []
    while True:
        row = column_parent[column]
        path.append((row, column))
        previous = row_parent[row]
        if previous == -1:
            return path[::-1]
        path.append((row, previous))
        column = previous


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
