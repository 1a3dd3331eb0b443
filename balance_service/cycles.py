"""Cancel circular debts in the pairwise lines of one group and currency.

The stored pair amounts record who owes whom by the allocation rule
(`balance_service.allocation`), netted per pair. They can go round in a
cycle: A owes B 10, B owes C 10 and C owes A 10. Such a cycle moves nobody's
net amount, and no settlement can clear it, because each payment along it
opens a debt the other way. So the pairwise view subtracts every cycle. Every
member's net amount stays the same, no debt grows or changes direction, and
no pair gets a debt it did not have. The result has no cycle, so when every
net amount is zero it has no debt at all.

The rule, a depth-first walk that gives the same result for the same debts
whatever order they were stored in:

1. Start a path at the member with the lowest id that is not finished.
2. Take the member at the end of the path and the next of its debts, in
   creditor id order:
   - when the creditor is finished, skip the debt;
   - when the creditor is on the path, the debts from the creditor along
     the path and back to it form a cycle. Subtract the smallest of them
     from each, and drop the debts that reach zero. Cut the path after the
     debtor of the first dropped debt, counted from the creditor, and go on
     from that debtor with its next debt;
   - otherwise, add the creditor to the end of the path.
3. When the member at the end has no debt left to take, it is finished:
   remove it from the path. Go on from step 2, or from step 1 when the path
   is empty, until every member is finished.

A member is finished only when every debt it still has leads to a finished
member, and debts only shrink, so no cycle can pass through a finished
member. The walk takes each debt at most once, except after a cycle, when
it walks the cut part of the path again. A cycle drops at least one debt, so
for m members and d debts the walk costs at most d + m x d steps, and in
practice d plus the length of the cycles it finds.

NOTE: the number of members of a group is not capped. Debts between every
two of 500 members took 0.5 to 7 s to net on a shared 2-core machine,
depending on its load (`python -m bench.pairwise_read`, see
docs/benchmarks.md). The reads keep the result until the group's pair
amounts change (`balance_service.pair_cache`), so only the first pairwise
read after each change pays for it.

Amounts are whole minor units (ints).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

Debt = tuple[str, str]  # (debtor id, creditor id)
# A stored pair amount: (group_id, currency_code, first_user_id,
# second_user_id, amount), where `amount` is what the first user owes the
# second, negative when the second owes the first.
PairAmount = tuple[str, str, str, str, int]


def pairwise_lines(
    pairs: Iterable[PairAmount],
) -> dict[tuple[str, str], dict[Debt, int]]:
    """Turn stored pair amounts into pairwise lines, with cycles cancelled.

    Each group and currency is netted on its own, so `pairs` must hold every
    non-zero pair amount of each group and currency it names.

    Returns:
      `(group_id, currency_code) -> {(debtor, creditor): amount}`, each
      amount greater than zero. A group and currency whose debts all cancel
      maps to an empty dict.
    """
    debts: dict[tuple[str, str], dict[Debt, int]] = defaultdict(dict)
    for group_id, currency, first, second, amount in pairs:
        if amount > 0:
            debts[group_id, currency][first, second] = amount
        elif amount < 0:
            debts[group_id, currency][second, first] = -amount
    return {key: cancel_cycles(found) for key, found in debts.items()}


def cancel_cycles(debts: Mapping[Debt, int]) -> dict[Debt, int]:
    """Return `debts` with every cycle subtracted, by the rule of this module.

    Args:
      debts: `(debtor, creditor) -> amount`, each amount greater than zero
        and at most one direction per pair of members.

    Returns:
      The remaining debts, each greater than zero, with no cycle among them.

    Raises:
      ValueError: an amount is not greater than zero, a member owes itself,
        or two members owe each other.
    """
    for (debtor, creditor), amount in debts.items():
        if amount <= 0 or debtor == creditor or (creditor, debtor) in debts:
            raise ValueError(
                f"debt {debtor!r} -> {creditor!r} of {amount} is not a pairwise "
                "line: amounts must be positive, between two members, and in "
                "one direction per pair"
            )
    members = sorted({member for debt in debts for member in debt})
    number = {member: index for index, member in enumerate(members)}
    # Debts are numbered in (debtor, creditor) order, so each member's debts
    # are a run of consecutive numbers in creditor order.
    ordered = sorted((number[debtor], number[creditor]) for debtor, creditor in debts)
    creditor_of = [creditor for _, creditor in ordered]
    amount_of = [
        debts[members[debtor], members[creditor]] for debtor, creditor in ordered
    ]
    end_of = [0] * len(members)
    for debtor, _ in ordered:
        end_of[debtor] += 1
    next_debt = [0] * len(members)
    total = 0
    for member, count in enumerate(end_of):
        next_debt[member] = total
        total += count
        end_of[member] = total

    _walk(creditor_of, amount_of, next_debt, end_of)
    return {
        (members[debtor], members[creditor]): amount
        for (debtor, creditor), amount in zip(ordered, amount_of, strict=True)
        if amount
    }


def _walk(
    creditor_of: list[int],
    amount_of: list[int],
    next_debt: list[int],
    end_of: list[int],
) -> None:
    """Subtract every cycle from `amount_of` in place, by the walk of this module.

    Members and debts are numbers. The debts of member m run from
    `next_debt[m]` up to `end_of[m]`, and `next_debt[m]` is the one the walk
    takes next from m. It stays when a cycle cuts m off the path, because
    the debts before it lead to finished members or are zero.
    """
    finished = [False] * len(end_of)
    # Index of each member on the path, -1 when it is not on it.
    position = [-1] * len(end_of)
    path: list[int] = []
    # The debt by which each member on the path reached the next one.
    path_debts: list[int] = []
    for start in range(len(end_of)):
        if finished[start]:
            continue
        path.append(start)
        position[start] = 0
        while path:
            debtor = path[-1]
            debt = next_debt[debtor]
            if debt == end_of[debtor]:
                finished[debtor] = True
                position[debtor] = -1
                path.pop()
                if path_debts:
                    path_debts.pop()
                continue
            creditor = creditor_of[debt]
            if not amount_of[debt] or finished[creditor]:
                next_debt[debtor] = debt + 1
            elif position[creditor] < 0:
                position[creditor] = len(path)
                path.append(creditor)
                path_debts.append(debt)
            else:
                # The cycle: the path from the creditor on, then this debt.
                first = position[creditor]
                path_debts.append(debt)
                smallest = min(amount_of[link] for link in path_debts[first:])
                cut = -1
                for index in range(first, len(path_debts)):
                    link = path_debts[index]
                    amount_of[link] -= smallest
                    if cut < 0 and not amount_of[link]:
                        cut = index
                for member in path[cut + 1 :]:
                    position[member] = -1
                del path[cut + 1 :]
                del path_debts[cut:]
