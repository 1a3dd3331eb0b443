"""Fencing a group's writes while a member leaves.

A write that names users checks their membership first and commits a moment
later. user_service marks a leaving member before it checks the balances
(`user_service.removals`), but a write that checked membership before the
mark can still commit after the balance check. `GroupWrites` counts the
writes in flight per group, so that the balance check can wait for every
write to the group that started before it:

- expense_service counts expense writes, and
  `expense_service.ledger.LedgerServicer.GetLedgerPosition` with a group
  first drops the group's cached member list, then waits for them.
- balance_service counts settlement writes, and CheckSettled waits for them
  (`balance_service.servicer`). Settlement writes read the member list from
  user_service every time.

A write enters the count before its membership check and leaves it after its
commit or failure, so a write that is not waited for checked membership
after the leaving mark, and was rejected.

NOTE: the count lives in one process. With several processes of a service
on one database, the wait covers only the writes of the process that serves
it.
"""

from __future__ import annotations

import threading
import time


class GroupWrites:
    """Writes in flight, by group."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._last_ticket = 0
        self._active: dict[str, set[int]] = {}
        # Callers inside `wait_for_earlier`. A write that ends wakes them
        # only when there are any, because most writes end with none.
        self._waiting = 0

    def track(self, group: str) -> _TrackedWrite:
        """Count a write to `group` for the duration of a `with` block.

        Enter it before the write checks membership, and leave it only after
        the write has committed or failed.
        """
        return _TrackedWrite(self, group)

    def _enter(self, group: str) -> int:
        with self._changed:
            self._last_ticket += 1
            ticket = self._last_ticket
            self._active.setdefault(group, set()).add(ticket)
        return ticket

    def _leave(self, group: str, ticket: int) -> None:
        with self._changed:
            tickets = self._active[group]
            tickets.discard(ticket)
            if not tickets:
                del self._active[group]
            if self._waiting:
                self._changed.notify_all()

    def wait_for_earlier(self, group: str, timeout: float) -> int:
        """Wait until every write to `group` in flight at the call has ended.

        Writes that start during the wait are not waited for.

        Returns:
          The number of those writes still in flight when `timeout` seconds
          passed; 0 when all of them ended.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            earlier = set(self._active.get(group, ()))
            self._waiting += 1
            try:
                while True:
                    earlier &= self._active.get(group, set())
                    remaining = deadline - time.monotonic()
                    if not earlier or remaining <= 0:
                        return len(earlier)
                    self._changed.wait(remaining)
            finally:
                self._waiting -= 1


class _TrackedWrite:
    """One write counted by `GroupWrites.track` while its block runs.

    A plain class rather than `contextlib.contextmanager`, which costs a
    generator per write.
    """

    __slots__ = ("_writes", "_group", "_ticket")

    def __init__(self, writes: GroupWrites, group: str) -> None:
        self._writes = writes
        self._group = group
        self._ticket = 0

    def __enter__(self) -> None:
        self._ticket = self._writes._enter(self._group)

    def __exit__(self, *_exc_info: object) -> None:
        self._writes._leave(self._group, self._ticket)
