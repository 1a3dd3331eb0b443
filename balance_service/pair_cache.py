"""The pairwise lines of each group and currency, netted once per change.

Cancelling the circular debts of a group (`balance_service.cycles`) takes
seconds in a large group, and ListPairwiseBalances (each page),
GetUserBalance and ExplainBalance of a pair all need the result. So each
BalancesServicer keeps it in memory, under the version of the group and
currency in `pair_versions`. Every write to the pair amounts raises that
version in its own transaction (`storage.add_to_pairs`). A read looks the
versions up in its own transaction and uses a kept result only when its
version is the one it read, else it reads the debts of that same
transaction. Versions only grow, so a read never gets lines of another
state than the one it reads, even when another balance_service process on
the same database wrote the change.

A kept entry contains the walk that cancels the cycles, taken only as far as
the reads so far needed it (`cycles.DebtWalk`). ExplainBalance of a pair
needs the walk only until that pair's debt is final; the lines of a whole
group or of a user need all of it. Later reads at the same version go on
from where the walk stopped.

The cache keeps entries up to a total size of `MAX_CACHED_SIZE`, and
drops the group and currency read least recently first. A restored backup
of the database can bring back an old version number with other amounts,
so restart the service after a restore.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from sqlalchemy.orm import Session

from balance_service import cycles, storage

#: Total size of the entries that one servicer keeps, at most, over all groups
#: and currencies (see `NettedLines.size`). On the group of
#: `bench.explain_wide` (tracemalloc, CPython 3.11), a debt took about 50
#: bytes in the walk, and a line about 105 bytes once the walk had ended. So
#: the cache takes at most about 21 MB. A group of 500 members with a debt
#: between every two has 124,750 debts.
MAX_CACHED_SIZE = 200_000

Line = tuple[str, str, int]  # (debtor id, creditor id, amount > 0)


class NettedLines:
    """The pairwise lines of one group and currency, with cycles cancelled.

    Thread-safe. A lock lets one read at a time take the walk further, so
    reads of one entry at once share one walk.

    Attributes:
      version: the `pair_versions` version of the debts it was built from.
      debts: the number of debts it was built from.
    """

    def __init__(self, version: int, debts: Sequence[cycles.DebtAmount]) -> None:
        """Prepare the walk over `debts`, in the form `cycles.DebtWalk` takes."""
        self.version = version
        self.debts = len(debts)
        self._lock = threading.Lock()
        self._walk: cycles.DebtWalk | None = cycles.DebtWalk(debts)
        self._lines: tuple[Line, ...] | None = None

    @property
    def size(self) -> int:
        """The entry's weight in the cache: its debts while the walk is
        unfinished, its lines once the walk has ended, plus one."""
        lines = self._lines
        if lines is None:
            return self.debts + 1
        return len(lines) + 1

    @property
    def lines(self) -> tuple[Line, ...]:
        """`(debtor, creditor, amount)`, sorted by debtor then creditor.

        The first use runs the walk to the end.
        """
        return self.finish()

    def finish(self) -> tuple[Line, ...]:
        """Run the walk to the end, unless it has ended; return the lines."""
        with self._lock:
            if self._lines is None:
                assert self._walk is not None
                self._lines = tuple(self._walk.remaining())
                # The lines contain all that reads need from now on.
                self._walk = None
            return self._lines

    def owed(self, debtor: str, creditor: str) -> int:
        """Return what `debtor` owes `creditor` in the lines, 0 without a line.

        Runs the walk only until that debt is final.
        """
        with self._lock:
            if self._walk is not None:
                return self._walk.amount(debtor, creditor)
        lines = self.lines
        index = bisect_left(lines, (debtor, creditor))
        if index < len(lines):
            found_debtor, found_creditor, amount = lines[index]
            if (found_debtor, found_creditor) == (debtor, creditor):
                return amount
        return 0

    def counterparties(self, user_id: str) -> Iterator[tuple[str, int]]:
        """Yield `(counterparty, amount)` of the user's lines, positive when the
        counterparty owes the user."""
        for debtor, creditor, amount in self.lines:
            if creditor == user_id:
                yield debtor, amount
            elif debtor == user_id:
                yield creditor, -amount

    def after(self, debtor: str, creditor: str) -> int:
        """Return the index of the first line past `(debtor, creditor)`."""
        lines = self.lines
        index = bisect_left(lines, (debtor, creditor))
        if index < len(lines) and lines[index][:2] == (debtor, creditor):
            index += 1
        return index


def net(version: int, pairs: list[cycles.PairAmount]) -> NettedLines:
    """Build the netted lines of one group and currency from its pair amounts."""
    debts = [
        (first, second, amount) if amount > 0 else (second, first, -amount)
        for _, _, first, second, amount in pairs
        if amount
    ]
    return NettedLines(version, debts)


class PairwiseCache:
    """Netted lines per group and currency, kept while their version holds.

    Thread-safe. Two reads that miss the same entry at once both read its
    debts, and then share the entry that is kept first.
    """

    def __init__(self, max_size: int = MAX_CACHED_SIZE) -> None:
        self._max_size = max_size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], NettedLines] = OrderedDict()
        # The size of each kept entry when it was kept. An entry whose walk
        # ends later takes less room than it counts for.
        self._sizes: dict[tuple[str, str], int] = {}
        self._held_size = 0

    def lines(
        self, session: Session, versions: storage.PairVersions
    ) -> dict[tuple[str, str], NettedLines]:
        """Return the netted lines of each group and currency in `versions`.

        Args:
          session: the read's transaction, in which `versions` were read; a
            missing entry is built from the debts it reads.
          versions: `(group_id, currency_code) -> version`, as
            `storage.pair_versions` returns them.
        """
        found: dict[tuple[str, str], NettedLines] = {}
        with self._lock:
            for key, version in versions.items():
                entry = self._entries.get(key)
                if entry is not None and entry.version == version:
                    self._entries.move_to_end(key)
                    found[key] = entry
        for key in sorted(versions.keys() - found.keys()):
            group_id, currency = key
            entry = NettedLines(
                versions[key], storage.group_debts(session, group_id, currency)
            )
            if entry.size > self._max_size:
                # Too large to keep unfinished, but its lines may fit.
                entry.finish()
            found[key] = self._keep(key, entry)
        return found

    def _keep(self, key: tuple[str, str], entry: NettedLines) -> NettedLines:
        """Store an entry unless one of its version or newer is stored; drop the
        entries read least recently beyond the limit.

        Returns:
          the stored entry of the same version when there is one, so that
          its walk is shared, else `entry`.
        """
        size = entry.size
        if size > self._max_size:
            return entry
        with self._lock:
            stored = self._entries.get(key)
            if stored is not None:
                if stored.version == entry.version:
                    self._entries.move_to_end(key)
                    return stored
                if stored.version > entry.version:
                    return entry
                self._held_size -= self._sizes.pop(key)
                del self._entries[key]
            self._entries[key] = entry
            self._sizes[key] = size
            self._held_size += size
            while self._held_size > self._max_size:
                dropped, _ = self._entries.popitem(last=False)
                self._held_size -= self._sizes.pop(dropped)
        return entry
