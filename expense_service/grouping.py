"""Group commit: concurrent writes that queue up are written in one transaction.

Each caller adds its item to a queue. A caller that finds no writer at work
becomes the writer. The writer takes up to `max_items` queued items and
writes them with one call of `write_group`. It then wakes the other callers
of that group and makes the first caller still in the queue the next writer.
So a lone caller writes at once, and callers that arrive while a group is
being written form the next group, with no timer.

Items that share a key (a create's request_id) would make the group's
transaction fail on the key's unique index. So only the first item of each
key in a group is written with the group. The group does not write the later
items of a key, nor items for which `write_group` returns None because their
key is stored already. Their callers write them alone once the group has
committed, and so find the stored row and return it.

If `write_group` raises, every caller of the group then writes its item
alone. One bad item therefore costs the others only the lost group, never a
failure of their own. Usually nothing of the group was written. The exception
is a connection lost while the group's COMMIT was on its way, which may have
stored the whole group. Each caller's write alone must then find its own
item and return it (`expense_service.servicer`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

_LOGGER = logging.getLogger(__name__)

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class _Entry(Generic[_Item, _Result]):
    """A queued item with its result and the lock that wakes its caller."""

    __slots__ = ("item", "result", "written", "finished", "gate")

    def __init__(self, item: _Item) -> None:
        self.item = item
        self.result: _Result | None = None
        self.written = False
        # True once the entry's group ended, written or not. A wake-up before
        # that makes the caller the writer.
        self.finished = False
        # Locked until the caller is woken. A bare lock costs less to wake a
        # thread with than an Event, and a group wakes up to max_items threads.
        self.gate = threading.Lock()
        self.gate.acquire()

    def wake(self) -> None:
        self.gate.release()

    def sleep(self) -> None:
        self.gate.acquire()


class GroupWriter(Generic[_Item, _Result]):
    """Write the items of concurrent callers in groups.

    Args:
      write_group: writes a group of items in one transaction. It returns
        one result per item, in order, with None for an item that it did not
        write. When it raises, it must have written nothing, unless the
        transaction's COMMIT got no response.
      max_items: maximum number of items in one group.
      key: returns an item's unique key, or None for an item without one.
        Of the items in a group that share a key, only the first is passed
        to `write_group`.

    Attributes:
      failed_groups: number of groups whose `write_group` raised. Each
        caller of such a group wrote its item alone.
    """

    def __init__(
        self,
        write_group: Callable[[Sequence[_Item]], Sequence[_Result | None]],
        max_items: int,
        key: Callable[[_Item], Hashable | None] | None = None,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        self._write_group = write_group
        self._max_items = max_items
        self._key = key
        self.failed_groups = 0
        self._lock = threading.Lock()
        self._queue: list[_Entry[_Item, _Result]] = []
        self._writing = False

    def queued(self) -> int:
        """Return the number of items waiting for a group."""
        with self._lock:
            return len(self._queue)

    def write(self, item: _Item) -> tuple[bool, _Result | None]:
        """Write an item in the next group.

        Returns:
          (True, the item's result) once its group is committed, or
          (False, None) when the group did not write the item. The caller
          must then write the item on its own. This happens when the group
          failed, when the item's key was stored already, or when an earlier
          item of the group had the same key.
        """
        entry: _Entry[_Item, _Result] = _Entry(item)
        with self._lock:
            self._queue.append(entry)
            lead = not self._writing
            self._writing = True
        if not lead:
            entry.sleep()
            if entry.finished:
                return entry.written, entry.result
        # This caller is the writer now, and its entry is first in the queue.
        self._write_next_group(entry)
        return entry.written, entry.result

    def _write_next_group(self, writer: _Entry[_Item, _Result]) -> None:
        with self._lock:
            group = self._queue[: self._max_items]
            del self._queue[: self._max_items]
        first_entries = self._first_of_each_key(group)
        try:
            results = self._write_group([entry.item for entry in first_entries])
        except Exception as exc:
            self.failed_groups += 1
            # The error's text may quote the rows' values, so it is logged at
            # DEBUG only.
            _LOGGER.info(
                "a group of %d writes failed (%s); writing each alone",
                len(first_entries),
                type(exc).__name__,
            )
            _LOGGER.debug("the group of writes failed with: %s", exc)
        else:
            for entry, result in zip(first_entries, results, strict=True):
                if result is not None:
                    entry.result = result
                    entry.written = True
        finally:
            self._hand_over(group, writer)

    def _first_of_each_key(
        self, group: list[_Entry[_Item, _Result]]
    ) -> list[_Entry[_Item, _Result]]:
        """Return the entries of a group, less those whose key came earlier."""
        if self._key is None:
            return group
        seen: set[Hashable] = set()
        first_entries = []
        for entry in group:
            key = self._key(entry.item)
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            first_entries.append(entry)
        return first_entries

    def _hand_over(
        self, group: list[_Entry[_Item, _Result]], writer: _Entry[_Item, _Result]
    ) -> None:
        """Wake the group's callers and make the next queued caller the writer."""
        for entry in group:
            entry.finished = True
        with self._lock:
            successor = self._queue[0] if self._queue else None
            self._writing = successor is not None
        for entry in group:
            if entry is not writer:
                entry.wake()
        if successor is not None:
            successor.wake()
