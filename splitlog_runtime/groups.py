"""The NOT_FOUND error of a missing or deleted group, shared by every service.

user_service owns groups and deletes them for good, but it keeps the id of
each deleted group and never gives it to a new group. The expenses,
settlements and balances that expense_service and balance_service keep under
that id therefore stay out of reach for good. user_service marks the
NOT_FOUND of a deleted group with the ErrorInfo metadata `deleted: "true"`.
The other services read the mark, remember the group as deleted without
asking again, and return for its resources the error that GetGroup returns
for the group.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitlog_runtime.errors import NotFound, Resource

GROUP_TYPE = "splitlog.dev/Group"
GROUP_NOT_FOUND = "GROUP_NOT_FOUND"
#: ErrorInfo metadata key that user_service sets on the NOT_FOUND of a
#: deleted group.
DELETED_KEY = "deleted"


def group_not_found(group: str, deleted: bool = False) -> NotFound:
    """Build the NOT_FOUND of a group, `groups/{group}`, missing or deleted."""
    if deleted:
        return NotFound(
            f"group {group!r} was deleted, so its expenses, settlements and "
            "balances can no longer be read; list a user's groups with ListGroups",
            reason=GROUP_NOT_FOUND,
            metadata={"group": group, DELETED_KEY: "true"},
            resource=Resource(GROUP_TYPE, group),
        )
    return NotFound(
        f"group {group!r} does not exist; check the name, or list a user's "
        "groups with ListGroups",
        reason=GROUP_NOT_FOUND,
        resource=Resource(GROUP_TYPE, group),
    )


def reports_deleted_group(exc: grpc.RpcError) -> bool:
    """Return whether a NOT_FOUND from user_service marks the group as deleted."""
    status = rpc_status.from_call(exc)
    if status is None:
        return False
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.reason == GROUP_NOT_FOUND:
                return info.metadata.get(DELETED_KEY) == "true"
    return False


class DeletedGroups:
    """Names of groups that user_service reported deleted.

    A deleted group never comes back, so an entry never goes stale. Beyond
    `max_entries` names the least recently used is dropped, and a dropped
    group costs one more call to user_service the next time it is named.
    """

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._names: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, group: str) -> None:
        with self._lock:
            self._names[group] = None
            self._names.move_to_end(group)
            while len(self._names) > self._max_entries:
                self._names.popitem(last=False)

    def __contains__(self, group: object) -> bool:
        with self._lock:
            if group not in self._names:
                return False
            self._names.move_to_end(group)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)
