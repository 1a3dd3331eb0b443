"""The pairwise lines of each group and currency, netted once per change.

Cancelling the circular debts of a group (`balance_service.cycles`) takes
seconds in a large group, and ListPairwiseBalances (each page),
GetUserBalance and ExplainBalance of a pair all need the result. So each
BalancesServicer keeps it in memory, under the version of the group and
currency in `pair_versions`. Every write to the pair amounts raises that
version in its own transaction (`storage.add_to_pairs`). A read looks the
versions up in its own transaction and uses a kept result only when its
version is the one it read, else it nets the pair amounts of that same
transaction. Versions only grow, so a read never gets lines of another
state than the one it reads, even when another balance_service process on
the same database wrote the change.

The cache keeps at most `MAX_CACHED_LINES` lines, and drops the group and
currency read least recently first. A restored backup of the database can bring
back an old version number with other amounts, so restart the service after
a restore.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from balance_service import cycles, storage

#: Lines that one servicer keeps at most, over all groups and currencies.
#: Each line took about 75 bytes (tracemalloc, CPython 3.11), so about 15 MB
#: when full. A group of 500 members with a debt between every two after
#: netting has 124,750 lines; the dense group of `bench.pairwise_read` nets
#: to about 9,400.
MAX_CACHED_LINES = 200_000

Line = tuple[str, str, int]  # (debtor id, creditor id, amount > 0)


@dataclass(frozen=True)
class NettedLines:
    """The pairwise lines of one group and currency, with cycles cancelled.

    Attributes:
      version: the `pair_versions` version they were netted at.
      lines: `(debtor, creditor, amount)`, sorted by debtor then creditor.
    """

    version: int
    lines: tuple[Line, ...]

    def owed(self, debtor: str, creditor: str) -> int:
        """Return what `debtor` owes `creditor` in the lines, 0 without a line."""
        index = bisect_left(self.lines, (debtor, creditor))
        if index < len(self.lines):
            found_debtor, found_creditor, amount = self.lines[index]
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
        index = bisect_left(self.lines, (debtor, creditor))
        if index < len(self.lines) and self.lines[index][:2] == (debtor, creditor):
            index += 1
        return index


def net(version: int, pairs: list[cycles.PairAmount]) -> NettedLines:
    """Cancel the cycles of one group and currency's pair amounts."""
    netted = cycles.pairwise_lines(pairs)
    debts = next(iter(netted.values()), {})
    return NettedLines(
        version,
        tuple(
            sorted(
                (debtor, creditor, amount)
                for (debtor, creditor), amount in debts.items()
            )
        ),
    )


class PairwiseCache:
    """Netted lines per group and currency, kept while their version holds.

    Thread-safe. Two reads that miss the same entry at once both net it.
    """

    def __init__(self, max_lines: int = MAX_CACHED_LINES) -> None:
        self._max_lines = max_lines
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], NettedLines] = OrderedDict()
        self._held_lines = 0

    def lines(
        self, session: Session, versions: storage.PairVersions
    ) -> dict[tuple[str, str], NettedLines]:
        """Return the netted lines of each group and currency in `versions`.

        Args:
          session: the read's transaction, in which `versions` were read; a
            missing entry is netted from the pair amounts it reads.
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
            entry = net(versions[key], storage.group_pairs(session, group_id, currency))
            found[key] = entry
            self._keep(key, entry)
        return found

    def _keep(self, key: tuple[str, str], entry: NettedLines) -> None:
        """Store an entry unless a newer version is stored; drop the oldest reads."""
        size = len(entry.lines) + 1
        if size > self._max_lines:
            return
        with self._lock:
            stored = self._entries.get(key)
            if stored is not None:
                if stored.version > entry.version:
                    return
                self._held_lines -= len(stored.lines) + 1
                del self._entries[key]
            self._entries[key] = entry
            self._held_lines += size
            while self._held_lines > self._max_lines:
                _, dropped = self._entries.popitem(last=False)
                self._held_lines -= len(dropped.lines) + 1
