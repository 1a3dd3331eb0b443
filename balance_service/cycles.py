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

A debt can change only while the walk has not yet passed it, so a read of
one pair's line needs the walk only up to that point (`DebtWalk`).

NOTE: the number of members of a group is not capped. Debts between every
two of 500 members took 0.5 to 7 s to net on a shared 2-core machine,
depending on its load (`python -m bench.pairwise_read`, see
docs/benchmarks.md). The reads keep the walk until the group's pair
amounts change (`balance_service.pair_cache`), so after each change the
reads together pay for at most one walk.

Amounts are whole minor units (ints).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping

Debt = tuple[str, str]  # (debtor id, creditor id)
# A stored pair amount: (group_id, currency_code, first_user_id,
# second_user_id, amount), where `amount` is what the first user owes the
# second, negative when the second owes the first.
PairAmount = tuple[str, str, str, str, int]
# A debt with its amount: (debtor id, creditor id, amount > 0).
DebtAmount = tuple[str, str, int]


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
    walk = DebtWalk(
        (debtor, creditor, amount) for (debtor, creditor), amount in debts.items()
    )
    return {(debtor, creditor): amount for debtor, creditor, amount in walk.remaining()}


class DebtWalk:
    """The walk of this module over the debts of one group and currency,
    taken only as far as the reads need it.

    `amount` runs the walk until the debt it reads can no longer change, and
    `remaining` runs it to the end. Each goes on from where the walk stopped
    before, so all reads together take at most one walk.

    A debt changes only in a cycle that the walk closes while the debt leads
    from one member of the path to the next. The walk takes a member's debts
    in order and never goes back to one it has passed. So a debt is final
    once its amount is zero, or once its debtor's next debt is a later one,
    which includes a debtor that is finished.

    Not thread-safe: callers hold a lock around each call
    (`balance_service.pair_cache`).

    Attributes:
      cycles: the cycles cancelled so far.
    """

    def __init__(self, debts: Iterable[DebtAmount]) -> None:
        """Prepare the walk; it takes no step yet.

        Args:
          debts: `(debtor, creditor, amount)` in any order, each amount
            greater than zero, a debtor never its own creditor and at most
            one direction per pair of members. `cancel_cycles` checks this,
            and `storage.group_debts` returns debts in this form.
        """
        debts = list(debts)
        members = sorted({debt[0] for debt in debts} | {debt[1] for debt in debts})
        self._members = members
        self._number = {member: index for index, member in enumerate(members)}
        number = self._number
        by_debtor: list[list[tuple[int, int]]] = [[] for _ in members]
        for debtor, creditor, amount in debts:
            by_debtor[number[debtor]].append((number[creditor], amount))
        # Debts are numbered by debtor, then by creditor, so each member's
        # debts are a run of consecutive numbers in creditor order.
        self._creditor_of: list[int] = []
        self._amount_of: list[int] = []
        self._first_debt: list[int] = []
        self._end_of: list[int] = []
        for own in by_debtor:
            own.sort()
            self._first_debt.append(len(self._creditor_of))
            self._creditor_of += [creditor for creditor, _ in own]
            self._amount_of += [amount for _, amount in own]
            self._end_of.append(len(self._creditor_of))
        # The debt that the walk takes next from each member.
        self._next_debt = list(self._first_debt)
        self._finished = [False] * len(members)
        # Index of each member on the path, -1 when it is not on it.
        self._position = [-1] * len(members)
        self._path: list[int] = []
        # The debt by which each member on the path reached the next one.
        self._path_debts: list[int] = []
        # The next member to start a path at when the path is empty.
        self._start = 0
        self.cycles = 0

    def amount(self, debtor: str, creditor: str) -> int:
        """Return what `debtor` owes `creditor` after cancelling, 0 without a debt."""
        debtor_number = self._number.get(debtor)
        creditor_number = self._number.get(creditor)
        if debtor_number is None or creditor_number is None:
            return 0
        end = self._end_of[debtor_number]
        debt = bisect_left(
            self._creditor_of, creditor_number, self._first_debt[debtor_number], end
        )
        if debt == end or self._creditor_of[debt] != creditor_number:
            return 0
        self._walk(debt, debtor_number)
        return self._amount_of[debt]

    def remaining(self) -> list[DebtAmount]:
        """Run the walk to the end; return the debts left, sorted by debtor
        then creditor."""
        self._walk(-1, -1)
        members = self._members
        creditor_of = self._creditor_of
        amount_of = self._amount_of
        return [
            (members[debtor], members[creditor_of[debt]], amount_of[debt])
            for debtor in range(len(members))
            for debt in range(self._first_debt[debtor], self._end_of[debtor])
            if amount_of[debt]
        ]

    def _walk(self, target: int, target_debtor: int) -> None:
        """Cancel cycles by the rule of this module until debt `target` of
        member `target_debtor` is final, or to the end when both are -1."""
        creditor_of = self._creditor_of
        amount_of = self._amount_of
        next_debt = self._next_debt
        end_of = self._end_of
        finished = self._finished
        position = self._position
        path = self._path
        path_debts = self._path_debts

        if target_debtor >= 0 and (
            not amount_of[target] or next_debt[target_debtor] > target
        ):
            return

        members = len(end_of)
        start = self._start
        cycles = self.cycles
        while start < members:
            if not path:
                if finished[start]:
                    start += 1
                    continue
                path.append(start)
                position[start] = 0
            while path:
                debtor = path[-1]
                debt = next_debt[debtor]
                end = end_of[debtor]
                # Pass the debts that are zero or lead to a finished member.
                while debt < end and (
                    not amount_of[debt] or finished[creditor_of[debt]]
                ):
                    debt += 1
                next_debt[debtor] = debt
                if debtor == target_debtor and debt > target:
                    self.cycles = cycles
                    self._start = start
                    return
                if debt == end:
                    finished[debtor] = True
                    position[debtor] = -1
                    path.pop()
                    if path_debts:
                        path_debts.pop()
                    continue

                creditor = creditor_of[debt]
                first = position[creditor]
                path_debts.append(debt)
                if first < 0:
                    position[creditor] = len(path)
                    path.append(creditor)
                    continue

                # The cycle: the path from the creditor on, then this debt.
                # Its smallest debt is subtracted from each, and the path is
                # cut at the first of them to reach zero, counted from the
                # creditor.
                links = path_debts[first:]
                amounts = [amount_of[link] for link in links]
                smallest = min(amounts)
                for link, amount in zip(links, amounts, strict=True):
                    amount_of[link] = amount - smallest
                cut = first + amounts.index(smallest)
                for member in path[cut + 1 :]:
                    position[member] = -1
                del path[cut + 1 :]
                del path_debts[cut:]
                cycles += 1
                if target_debtor >= 0 and not amount_of[target]:
                    self.cycles = cycles
                    self._start = start
                    return
            start += 1
        self._start = start
        self.cycles = cycles
