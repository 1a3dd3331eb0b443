"""Settle-up plans: the transfers that bring every net balance of a group to zero.

Balances are ints in minor units of one currency: positive for a member who
is owed money, negative for a member who owes it. They add up to zero.

With at most `EXACT_LIMIT` non-zero balances the plan has the fewest possible
transfers, unless the exact search needs more than `WORK_LIMIT` work units.
The transfers of a plan connect the n members with a non-zero balance into
parts that each add up to zero, and a part of k members needs at least
k - 1 transfers. So the fewest transfers is n minus the largest number
of zero-sum groups the members can be split into.

Every transfer goes from a member who owes to a member who is owed. Among
the plans with the fewest transfers, the plan returned comes first when each
plan's transfers are sorted by amount (largest first), then payer, then
payee, and the sorted lists are compared. It is built one transfer at a
time: each step makes the largest transfer between a debtor and a creditor
that some fewest-transfer plan of the current balances contains. Choosing
the first plan in a fixed order of transfers makes plans stable. After one
transfer of a plan is paid, the plan of the new balances is the old plan
without that transfer.

Above the limit, a heuristic first settles pairs of equal and opposite
balances, then repeatedly lets the largest debtor pay the largest creditor.
Each transfer then zeroes at least one balance, so the plan has at most n - 1
transfers, but it may have more than the fewest.

A search that runs out of work returns the fallback plan with fewer
transfers of two: the transfers found so far followed by the heuristic plan
of the rest, or the heuristic plan of all balances. `plan_settlement` flags
such a plan as not proven to have the fewest transfers.

NOTE: only exact plans are stable when a transfer is paid. After a transfer
of a heuristic plan is paid, the new plan can differ in other transfers too.

The algorithm, its cost and its limits are described in docs/settle-up.md.
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: Largest number of non-zero balances that get a plan with the fewest
#: transfers. `python -m bench.settle` on a 2-CPU AMD EPYC with Python 3.11
#: measured 20 balances at about 10 ms for wide amounts and up to about
#: 0.3 s for small distinct amounts, a slow kind. At 24 such balances one
#: run took over a minute, so the limit stays at 20.
EXACT_LIMIT = 20

#: Work units the exact search may spend on one plan before it returns a
#: fallback plan that is not proven to have the fewest transfers. A unit is
#: about one zero-sum group looked at. A unit count, unlike a time limit,
#: gives the same plan on every machine. The slowest 20-member balances found
#: need about 3.1 million units, 0.4 to 1.8 s on the machine above.
#: NOTE: the units per second differ between inputs by a factor of about 3.
WORK_LIMIT = 2_000_000

#: Work units between two calls of a plan's `should_stop` check.
_STOP_CHECK_INTERVAL = 10_000


@dataclass(frozen=True, order=True)
class Transfer:
    """One payment of a plan, mapping to `splitlog.balances.v1.Transfer`.

    Attributes:
      payer: the member who pays, `users/{user}`.
      payee: the member who receives the money, `users/{user}`.
      amount: amount in minor units, greater than zero.
    """

    payer: str
    payee: str
    amount: int


class UnbalancedError(ValueError):
    """Balances that do not add up to zero, so no plan can settle them."""

    reason = "UNBALANCED"

    def __init__(self, total: int) -> None:
        super().__init__(
            f"balances add up to {total} minor units instead of 0; every amount "
            "owed must be owed to someone, so check the ledger for a one-sided "
            "entry"
        )
        self.total = total


@dataclass(frozen=True)
class SettlementPlan:
    """The transfers of a plan and whether they are proven to be the fewest.

    Attributes:
      transfers: the transfers, sorted by payer, then payee.
      fewest_transfers: true when the exact search finished, so no plan has
        fewer transfers. False for the heuristic plan above `exact_limit` and
        for the fallback plan of a search that ran out of work or was stopped.
    """

    transfers: tuple[Transfer, ...]
    fewest_transfers: bool


def compute_settlement_plan(
    balances: Mapping[str, int], *, exact_limit: int = EXACT_LIMIT
) -> list[Transfer]:
    """Compute the transfers that settle every balance exactly.

    Same as `plan_settlement` with the default work limit, without the flag.

    Raises:
      UnbalancedError: the balances do not add up to zero.
    """
    return list(plan_settlement(balances, exact_limit=exact_limit).transfers)


def plan_settlement(
    balances: Mapping[str, int],
    *,
    exact_limit: int = EXACT_LIMIT,
    work_limit: int = WORK_LIMIT,
    should_stop: Callable[[], bool] | None = None,
) -> SettlementPlan:
    """Plan the transfers that settle every balance exactly.

    Args:
      balances: net balance of each member in minor units, positive when
        the member is owed money. Zero balances are allowed and ignored.
      exact_limit: largest number of non-zero balances for the exact search;
        above it the heuristic is used.
      work_limit: work units the exact search may spend (see `WORK_LIMIT`).
        A search that needs more returns the fallback plan instead.
      should_stop: called now and then during the exact search, for example
        to check the caller's deadline. When it returns true, the search
        stops and the fallback plan is returned, and the plan is not cached.

    Returns:
      The plan. Its transfers depend only on the balances and `work_limit`,
      not on the order of the mapping, unless `should_stop` stopped the
      search.

    Raises:
      UnbalancedError: the balances do not add up to zero.
    """
    total = sum(balances.values())
    if total != 0:
        raise UnbalancedError(total)
    open_balances = frozenset(
        (user, amount) for user, amount in balances.items() if amount
    )
    key = (open_balances, exact_limit, work_limit)
    cached = _PLANS.get(key)
    if cached is not None:
        return cached
    remaining = dict(open_balances)
    if len(remaining) > exact_limit:
        plan = SettlementPlan(tuple(sorted(_heuristic_transfers(remaining))), False)
        _PLANS.put(key, plan)
        return plan
    budget = _Budget(work_limit, should_stop)
    try:
        transfers = _fewest_transfers(remaining, budget)
        plan = SettlementPlan(tuple(sorted(transfers)), True)
    except _OutOfWork as stop:
        plan = SettlementPlan(tuple(sorted(stop.fallback)), False)
        if budget.stopped:
            return plan
    _PLANS.put(key, plan)
    return plan


class _PlanCache:
    """Plans of recent balances, least recently used dropped first.

    A plan depends only on the balances and the limits, and the exact search
    can take a tenth of a second or more. Overviews and repeated reads of an
    unchanged group then cost a look-up. Servicer threads share it.
    """

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._plans: OrderedDict[object, SettlementPlan] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: object) -> SettlementPlan | None:
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                self.hits += 1
            return plan

    def put(self, key: object, plan: SettlementPlan) -> None:
        with self._lock:
            self._plans[key] = plan
            self._plans.move_to_end(key)
            while len(self._plans) > self._maxsize:
                self._plans.popitem(last=False)


_PLANS = _PlanCache(maxsize=256)


class _OutOfWork(Exception):
    """The exact search used up its work limit or its caller stopped it."""

    def __init__(self) -> None:
        super().__init__("the exact search ran out of work")
        self.fallback: list[Transfer] = []


class _Budget:
    """Work units left for the exact search, and the caller's stop check."""

    def __init__(self, work_limit: int, should_stop: Callable[[], bool] | None):
        self.left = work_limit
        self.should_stop = should_stop
        self.next_check = work_limit - _STOP_CHECK_INTERVAL
        self.stopped = False

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise _OutOfWork
        if self.left <= self.next_check:
            self.next_check = self.left - _STOP_CHECK_INTERVAL
            if self.should_stop is not None and self.should_stop():
                self.stopped = True
                raise _OutOfWork


def _pay(balances: dict[str, int], transfer: Transfer) -> None:
    """Apply a transfer to the balances and drop the members it settles."""
    for user, change in (
        (transfer.payer, transfer.amount),
        (transfer.payee, -transfer.amount),
    ):
        balances[user] += change
        if not balances[user]:
            del balances[user]


def _fewest_transfers(balances: dict[str, int], budget: _Budget) -> list[Transfer]:
    """Return the first fewest-transfer plan, one transfer at a time.

    Raises:
      _OutOfWork: the budget ran out. Its `fallback` is the plan with fewer
        transfers of two: the transfers found so far followed by the
        heuristic plan of the rest, and the heuristic plan of all balances.
    """
    remaining = dict(balances)
    transfers: list[Transfer] = []
    try:
        while remaining:
            transfer = _next_transfer(remaining, budget)
            transfers.append(transfer)
            _pay(remaining, transfer)
    except _OutOfWork as stop:
        completed = transfers + _heuristic_transfers(remaining)
        heuristic = _heuristic_transfers(balances)
        stop.fallback = heuristic if len(heuristic) < len(completed) else completed
        raise
    return transfers


def _next_transfer(balances: dict[str, int], budget: _Budget) -> Transfer:
    """Return the largest transfer that some fewest-transfer plan contains.

    For a debtor d and a creditor c, the largest possible transfer is
    min(-balance[d], balance[c]), and it settles at least one of them. It
    belongs to a fewest-transfer plan exactly when d and c can share a group
    of a largest partition into zero-sum groups, because the rest of that
    group can then be settled in one transfer fewer than its size. Candidates
    are tried largest first, ties by payer, then payee.
    """
    candidates = sorted(
        (-min(-debt, credit), debtor, creditor)
        for debtor, debt in balances.items()
        if debt < 0
        for creditor, credit in balances.items()
        if credit > 0
    )
    negative_amount, debtor, creditor = candidates[0]
    if balances[debtor] == -balances[creditor]:
        # A pair of equal and opposite balances is always a group of some
        # largest partition, so no search is needed.
        return Transfer(debtor, creditor, -negative_amount)

    partitions = _Partitions(list(balances.values()), budget)
    for negative_amount, debtor, creditor in candidates:
        if partitions.can_share_group(balances[debtor], balances[creditor]):
            return Transfer(debtor, creditor, -negative_amount)
    raise AssertionError("all balances form one zero-sum group, so a pair must fit")


class _Partitions:
    """Partitions of a multiset of balances into the most zero-sum groups.

    Members with equal balances are interchangeable here, so a sub-multiset
    is a vector of counts, one per distinct balance, packed into one int.
    Field i is the count of `values[i]` in `width` bits. Its top bit is a
    guard, which makes a field-wise `a - b` with `b <= a` a single
    subtraction. Repeated balances, a common source of many zero-sum
    subsets, therefore collapse into few vectors.
    """

    def __init__(self, balances: list[int], budget: _Budget) -> None:
        self.budget = budget
        counts: dict[int, int] = defaultdict(int)
        for balance in balances:
            counts[balance] += 1
        self.values = sorted(counts)
        self.width = max(counts.values()).bit_length() + 1
        self.ones = sum(1 << (i * self.width) for i in range(len(self.values)))
        self.guard = self.ones << (self.width - 1)
        self.full = self._pack([counts[value] for value in self.values])
        self.positive_ones = sum(
            1 << (i * self.width) for i, value in enumerate(self.values) if value > 0
        )
        self.zero_vectors = sorted(self._zero_sum_vectors(), key=self._size)
        self.smallest_group = self._size(self.zero_vectors[0])
        self.by_lowest_field: dict[int, list[int]] = defaultdict(list)
        for vector in self.zero_vectors:
            self.by_lowest_field[self._lowest_field(vector)].append(vector)
        index = {value: i for i, value in enumerate(self.values)}
        self.opposite_pairs = [
            (1 << (i * self.width)) | (1 << (index[-value] * self.width))
            for i, value in enumerate(self.values)
            if value > 0 and -value in index
        ]
        self.memo = {0: 0}
        self.max_groups = self.groups(self.full)

    def can_share_group(self, debt: int, credit: int) -> bool:
        """Tell whether the two balances can share a group of a largest partition."""
        if self.max_groups == 1:
            return True
        fields = (self.values.index(debt), self.values.index(credit))
        self.budget.spend(len(self.zero_vectors))
        for vector in self.zero_vectors:
            if not all(self._field(vector, field) for field in fields):
                continue
            rest = self._minus(self.full, vector)
            if 1 + self._upper_bound(rest) < self.max_groups:
                continue
            if 1 + self.groups(rest) == self.max_groups:
                return True
        return False

    def groups(self, vector: int) -> int:
        """Return the most zero-sum groups that a zero-sum vector splits into.

        The member with the lowest balance in the vector belongs to some
        group, so the search tries each zero-sum group that contains it, smaller
        groups first, and stops once it reaches an upper bound.
        """
        if vector in self.memo:
            return self.memo[vector]
        pairs, rest = self._without_opposite_pairs(vector)
        if pairs:
            best = pairs + self.groups(rest)
            self.memo[vector] = best
            return best
        best = 1
        limit = self._upper_bound(vector)
        guard = self.guard
        guarded = vector | guard
        scanned = fitted = 0
        for group in self.by_lowest_field[self._lowest_field(vector)]:
            if best >= limit:
                break
            scanned += 1
            # Field-wise vector - group; a cleared guard bit means the group
            # does not fit into the vector.
            rest = guarded - group
            if rest & guard != guard or group == vector:
                continue
            fitted += 1
            rest ^= guard
            if 1 + self._upper_bound(rest) > best:
                best = max(best, 1 + self.groups(rest))
        self.budget.spend(1 + scanned + fitted)
        self.memo[vector] = best
        return best

    def _without_opposite_pairs(self, vector: int) -> tuple[int, int]:
        """Split off every pair of equal and opposite balances in the vector.

        Such a pair is a group of some largest partition: when x and -x sit
        in different groups, swapping them into a pair of their own and
        joining the two remainders keeps the number of groups.
        """
        pairs = 0
        for pair_bits in self.opposite_pairs:
            low = pair_bits & -pair_bits
            count = min(
                self._count_at(vector, low), self._count_at(vector, pair_bits ^ low)
            )
            if count:
                pairs += count
                vector -= count * pair_bits
        return pairs, vector

    def _count_at(self, vector: int, one: int) -> int:
        return (vector // one) & ((1 << (self.width - 1)) - 1)

    def _pack(self, counts: list[int]) -> int:
        return sum(count << (i * self.width) for i, count in enumerate(counts))

    def _field(self, vector: int, field: int) -> int:
        return (vector >> (field * self.width)) & ((1 << (self.width - 1)) - 1)

    def _lowest_field(self, vector: int) -> int:
        return ((vector & -vector).bit_length() - 1) // self.width

    def _contains(self, vector: int, part: int) -> bool:
        return ((vector | self.guard) - part) & self.guard == self.guard

    def _minus(self, vector: int, part: int) -> int:
        return ((vector | self.guard) - part) ^ self.guard

    def _count(self, vector: int, field_ones: int) -> int:
        """Return the total count in the fields marked by `field_ones`."""
        total = 0
        for bit in range(self.width - 1):
            total += ((vector >> bit) & field_ones).bit_count() << bit
        return total

    def _size(self, vector: int) -> int:
        return self._count(vector, self.ones)

    def _upper_bound(self, vector: int) -> int:
        # Each group contains a creditor, a debtor and at least as many members
        # as the smallest zero-sum group.
        creditors = self._count(vector, self.positive_ones)
        size = self._size(vector)
        return min(creditors, size - creditors, size // self.smallest_group)

    def _zero_sum_vectors(self) -> list[int]:
        """Return every non-empty sub-multiset whose balances add up to zero.

        Meet in the middle: the vectors of each half of the distinct values
        with their sums, matched by opposite sums.
        """
        counts = [self._field(self.full, i) for i in range(len(self.values))]
        # Split where the two halves hold about as many vectors each.
        sizes = [count + 1 for count in counts]
        total_log = sum(size.bit_length() for size in sizes)
        split, running = 0, 0
        while split < len(sizes) and 2 * running < total_log:
            running += sizes[split].bit_length()
            split += 1
        left = self._half_vectors(range(split), counts)
        right = self._half_vectors(range(split, len(counts)), counts)
        left_by_sum: dict[int, list[int]] = defaultdict(list)
        for vector, total in left:
            left_by_sum[total].append(vector)
        self.budget.spend(len(left) + len(right))
        found = []
        for right_vector, total in right:
            for left_vector in left_by_sum.get(-total, ()):
                if left_vector | right_vector:
                    found.append(left_vector | right_vector)
        self.budget.spend(len(found))
        return found

    def _half_vectors(self, fields: range, counts: list[int]) -> list[tuple[int, int]]:
        vectors = [(0, 0)]
        for field in fields:
            one = 1 << (field * self.width)
            value = self.values[field]
            vectors = [
                (vector + taken * one, total + taken * value)
                for vector, total in vectors
                for taken in range(counts[field] + 1)
            ]
        return vectors


def _heuristic_transfers(balances: dict[str, int]) -> list[Transfer]:
    """Settle equal and opposite pairs, then largest debtor to largest creditor."""
    transfers = []
    debtors_by_amount: dict[int, list[str]] = defaultdict(list)
    creditors_by_amount: dict[int, list[str]] = defaultdict(list)
    for user in sorted(balances):
        if balances[user] < 0:
            debtors_by_amount[-balances[user]].append(user)
        else:
            creditors_by_amount[balances[user]].append(user)
    remaining = dict(balances)
    for amount in sorted(debtors_by_amount.keys() & creditors_by_amount.keys()):
        pairs = zip(
            debtors_by_amount[amount], creditors_by_amount[amount], strict=False
        )
        for debtor, creditor in pairs:
            transfer = Transfer(debtor, creditor, amount)
            transfers.append(transfer)
            _pay(remaining, transfer)

    debtors = [(amount, user) for user, amount in remaining.items() if amount < 0]
    creditors = [(-amount, user) for user, amount in remaining.items() if amount > 0]
    heapq.heapify(debtors)
    heapq.heapify(creditors)
    while debtors:
        negative_debt, debtor = heapq.heappop(debtors)
        negative_credit, creditor = heapq.heappop(creditors)
        amount = min(-negative_debt, -negative_credit)
        transfers.append(Transfer(debtor, creditor, amount))
        if negative_debt + amount:
            heapq.heappush(debtors, (negative_debt + amount, debtor))
        if negative_credit + amount:
            heapq.heappush(creditors, (negative_credit + amount, creditor))
    return transfers
