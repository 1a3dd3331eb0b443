"""Membership checks against user_service, which owns groups and members.

A write that names payers or participants must only name members of the
expense's group. Asking user_service on every write costs a round trip, so
a group's member list is reused for up to `CACHE_SECONDS`:

- A user missing from the reused list is never rejected on its word: the
  list is fetched again first, so a member added a moment ago is accepted
  at once.
- A member who is leaving (user_service's `Member.leaving`) is rejected
  with FAILED_PRECONDITION (reason MEMBER_LEAVING). Before a removal or a
  group deletion checks the balances, it has this service drop the group's
  list (`forget`, called by `ledger.LedgerServicer.GetLedgerPosition`), so
  no write that starts after that accepts the member from an older list.
- `require_not_leaving` checks the users whose amounts an update or a
  delete changes in the same way. While the group is being deleted
  (`ListGroupMembersResponse.group_deleting`), it rejects every such
  change, even one that names only former members (reason GROUP_DELETING).
- A NOT_FOUND response is never reused, so a group created a moment ago is
  found at once, and it drops the group's reused list. The exception is a
  group that user_service reports deleted: its id is never given to a new
  group, so it stays known as deleted without another call
  (`splitlog_runtime.groups`).
- At most `MAX_CACHED_GROUPS` groups are kept; the least recently used go
  first.
- A deactivated user stays a member but is rejected with FAILED_PRECONDITION
  (reason USER_DEACTIVATED). A user deactivated less than `CACHE_SECONDS`
  ago may still be accepted from a reused list.

The same lists decide who may use a group when `auth_required` is on
(`is_member`), so a removed member keeps access to the group's expenses for
up to `CACHE_SECONDS`, and a new member gets it at once. A write that fails
after such a list accepted its caller checks the caller again with
`is_member(..., fresh=True)`, so a removed member gets PERMISSION_DENIED
rather than the write's own error. The members of a
deleted group keep access for as long. Member lists are always fetched on
this service's own behalf, because the caller may not be allowed to list the
members.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import authz
from splitlog_runtime.channels import insecure_channel, timeout_before_answer
from splitlog_runtime.errors import (
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
    Unavailable,
    ended_its_attempts,
    join_some,
)
from splitlog_runtime.failure_log import FailureLog
from splitlog_runtime.groups import (
    DeletedGroups,
    group_not_found,
    reports_deleted_group,
)

_LOGGER = logging.getLogger(__name__)

NOT_A_MEMBER = "NOT_A_GROUP_MEMBER"
USER_DEACTIVATED = "USER_DEACTIVATED"
MEMBER_LEAVING = "MEMBER_LEAVING"
GROUP_DELETING = "GROUP_DELETING"
#: Seconds a caller should wait before retrying while user_service is down.
RETRY_DELAY_SECONDS = 1.0
#: Seconds a group's member list may be reused to accept payers and
#: participants. A removal that skips the balance check, and so the fence,
#: leaves the removed member accepted for up to this long.
CACHE_SECONDS = 5.0
#: Maximum number of groups whose member lists are kept.
MAX_CACHED_GROUPS = 10_000
_PAGE_SIZE = 1000
# Codes after which the same call may succeed later.
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True)
class _Members:
    """A group's members: those who may be named on a write (`active`), those
    whose user is deactivated, and those whose removal is checking balances
    (`leaving`), with whether the group's deletion is checking them
    (`deleting`). A deactivated member can be leaving too."""

    active: frozenset[str]
    deactivated: frozenset[str]
    leaving: frozenset[str] = frozenset()
    deleting: bool = False

    @property
    def all(self) -> frozenset[str]:
        return self.active | self.deactivated | self.leaving


class _RecentMembers:
    """Member lists by group name that expire after `max_age` seconds.

    Beyond `max_entries` groups, the least recently used list is dropped.
    """

    def __init__(
        self, max_age: float, max_entries: int, clock: Callable[[], float]
    ) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, _Members]] = OrderedDict()
        self._lock = threading.Lock()
        # Number of `forget` calls so far; a fetch that started before one
        # does not store its list, which may predate a leaving mark.
        self._forgotten = 0

    @property
    def generation(self) -> int:
        """Number of `forget` calls so far; pass it to `put` with a fetch."""
        with self._lock:
            return self._forgotten

    def get(self, group: str) -> _Members | None:
        """Return the stored members, or None when missing or too old."""
        with self._lock:
            entry = self._entries.get(group)
            if entry is None:
                return None
            fetched_at, members = entry
            if self._clock() - fetched_at >= self._max_age:
                del self._entries[group]
                return None
            self._entries.move_to_end(group)
            return members

    def put(
        self, group: str, members: _Members, fetched_at: float, generation: int
    ) -> None:
        """Store members fetched at `fetched_at`, dropping the oldest beyond the cap.

        Nothing is stored when `forget` ran since `generation` was read.
        """
        if self._max_age <= 0:
            return
        with self._lock:
            if generation != self._forgotten:
                return
            current = self._entries.get(group)
            if current is not None and current[0] > fetched_at:
                return  # A concurrent fetch that started later already stored.
            self._entries[group] = (fetched_at, members)
            self._entries.move_to_end(group)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def discard(self, group: str) -> None:
        with self._lock:
            self._entries.pop(group, None)

    def forget(self, group: str) -> None:
        """Drop a group's list, and keep fetches in flight from storing theirs."""
        with self._lock:
            self._entries.pop(group, None)
            self._forgotten += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class MembershipClient:
    """Client that checks group membership in user_service.

    Args:
      address: host:port of user_service.
      default_timeout: seconds a check may take when the caller set no
        deadline.
      cache_seconds: how long a group's member list may be reused; 0 turns
        reuse off.
      max_cached_groups: maximum number of groups whose lists are kept.
      clock: monotonic seconds, replaceable so tests can move time.
    """

    def __init__(
        self,
        address: str,
        default_timeout: float,
        *,
        cache_seconds: float = CACHE_SECONDS,
        max_cached_groups: int = MAX_CACHED_GROUPS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = address
        self._default_timeout = default_timeout
        self._clock = clock
        self._channel = insecure_channel(address)
        self._stub = users_grpc.UsersServiceStub(self._channel)
        self._recent = _RecentMembers(cache_seconds, max_cached_groups, clock)
        self._deleted = DeletedGroups(max_cached_groups)
        self._failures = FailureLog(_LOGGER, "membership checks with user_service")

    def close(self) -> None:
        self._channel.close()

    def forget(self, group: str) -> None:
        """Drop a group's member list, so that the next check reads it again.

        A list whose fetch was in flight during the call is not stored.
        """
        self._recent.forget(group)

    @property
    def cached_groups(self) -> int:
        """Number of groups whose member lists are kept right now."""
        return len(self._recent)

    def require_members(
        self,
        group: str,
        users: Iterable[str],
        context: grpc.ServicerContext | None,
        fields: Mapping[str, Sequence[str]] | None = None,
        stored_fields: Mapping[str, Sequence[str]] | None = None,
        filled: Collection[str] = (),
    ) -> None:
        """Check that a group exists and that every user is one of its members.

        A member list up to `cache_seconds` old is enough to accept the users.
        When it lacks some of them, the list is fetched again before they are
        rejected.

        Args:
          group: the group's name, `groups/{group}`.
          users: the users to check.
          context: the caller's context, whose deadline the check keeps.
          fields: for each user, the request fields that name it, such as
            `expense.payers[0].user`; the error names them, and the users
            in the order of `fields`.
          stored_fields: for users that `fields` does not name, the fields
            of the stored expense that name them, such as `payers[0].user`;
            the error names them, and those users next in this order.
          filled: the request fields of `fields` that were empty and that
            `authz.author_or_caller` set to the caller; the error says so.

        Raises:
          NotFound: the group does not exist (reason GROUP_NOT_FOUND).
          FailedPrecondition: some users are not members (reason
            NOT_A_GROUP_MEMBER), are deactivated (USER_DEACTIVATED) or are
            leaving the group (MEMBER_LEAVING); one violation names each
            of them.
          Unavailable: user_service cannot be reached or timed out; the
            error carries RetryInfo.
        """
        names = _FieldNames(fields or {}, stored_fields or {})
        # Errors name the users in the order that the fields name them.
        ordered = names.order(users)
        users = set(ordered)
        if group in self._deleted:
            raise group_not_found(group, deleted=True)
        cached = self._recent.get(group)
        if cached is not None and users <= cached.active:
            return
        members = self._fetch_members(group, context)
        missing = [user for user in ordered if user not in members.all]
        if not missing:
            deactivated = [user for user in ordered if user in members.deactivated]
            if deactivated:
                raise _deactivated(group, deactivated, names)
            leaving = [user for user in ordered if user in members.leaving]
            if leaving:
                raise _leaving(group, leaving, names)
            return
        listed = join_some([names.describe(user) for user in missing])
        metadata = names.metadata(group, missing)
        verb = "is not a member" if len(missing) == 1 else "are not members"
        message = (
            f"{listed} {verb} of {group!r}; add them to the group with "
            "AddGroupMember, or name members of the group instead"
        )
        for user in missing:
            paths = [path for path in names.request.get(user, ()) if path in filled]
            if paths:
                message += ". " + authz.filled_author_hint(paths, user)
        raise FailedPrecondition(
            message,
            reason=NOT_A_MEMBER,
            metadata=metadata,
            preconditions=[
                PreconditionViolation(
                    NOT_A_MEMBER,
                    f"{group}/members/{user.removeprefix('users/')}",
                    f"{names.describe(user)} is not a member of {group}",
                )
                for user in missing
            ],
        )

    def require_not_leaving(
        self,
        group: str,
        users: Iterable[str],
        context: grpc.ServicerContext | None,
        fields: Mapping[str, Sequence[str]] | None = None,
        stored_fields: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Check that a write may change what `users` paid or owe in a group.

        It may not while one of them is leaving the group, or while the
        group is being deleted: the balance check of that removal may
        already have read the balances. Users need not be members, because
        an update or a delete may change the amounts of a former member.

        A member list up to `cache_seconds` old that shows neither is
        enough. Call this inside the write's `GroupWrites.track` block: a
        removal whose mark the list misses has then not fenced the group
        yet, because its fence (`forget`) drops the list, and that fence
        waits for this write. A list that shows a removal is fetched again
        before the write is rejected.

        Args:
          group: the group's name, `groups/{group}`.
          users: the users whose amounts the write changes.
          context: the caller's context, whose deadline the check keeps.
          fields: for each user, the request fields that name it. The error
            names these fields, and lists the users in the order of `fields`.
          stored_fields: for users that `fields` does not name, such as the
            users an update drops, the fields of the stored expense that
            name them. The error names these too, and lists those users
            after the others, in this order.

        Raises:
          NotFound: the group does not exist (reason GROUP_NOT_FOUND).
          FailedPrecondition: some users are leaving the group (reason
            MEMBER_LEAVING), or the group is being deleted (reason
            GROUP_DELETING).
          Unavailable: user_service cannot be reached or timed out.
        """
        names = _FieldNames(fields or {}, stored_fields or {})
        ordered = names.order(users)
        if not ordered:
            return
        if group in self._deleted:
            raise group_not_found(group, deleted=True)
        cached = self._recent.get(group)
        if (
            cached is not None
            and not cached.deleting
            and cached.leaving.isdisjoint(ordered)
        ):
            return
        members = self._fetch_members(group, context)
        leaving = [user for user in ordered if user in members.leaving]
        if leaving:
            raise _leaving(group, leaving, names)
        if members.deleting:
            raise _group_deleting(group, ordered, names)

    def require_group(
        self,
        group: str,
        context: grpc.ServicerContext | None,
        max_wait: float | None = None,
    ) -> None:
        """Check that a group exists, reusing a member list up to `cache_seconds` old.

        `max_wait` caps the seconds spent waiting for user_service, below the
        caller's deadline.

        Raises:
          NotFound: the group does not exist or was deleted (reason
            GROUP_NOT_FOUND).
          Unavailable: user_service cannot be reached or timed out.
        """
        if group in self._deleted:
            raise group_not_found(group, deleted=True)
        if self._recent.get(group) is None:
            self._fetch_members(group, context, max_wait)

    def group_exists(
        self,
        group: str,
        context: grpc.ServicerContext | None,
        max_wait: float | None = None,
    ) -> bool:
        """Return whether a group exists now; False if it is missing or deleted.

        Raises:
          Unavailable: user_service cannot be reached or timed out.
        """
        try:
            self.require_group(group, context, max_wait)
        except NotFound:
            return False
        return True

    def is_deleted(self, group: str) -> bool:
        """Return whether user_service reported the group deleted.

        Only groups named since this process started, and not yet dropped
        from the bounded `DeletedGroups`, count, so call it after a look-up
        such as `is_member` has asked user_service.
        """
        return group in self._deleted

    def is_member(
        self,
        group: str,
        user: str,
        context: grpc.ServicerContext | None,
        *,
        fresh: bool = False,
    ) -> bool:
        """Return whether a user is a member of a group; False if it does not exist.

        A member list up to `cache_seconds` old that contains the user is
        enough; otherwise the list is fetched again. With `fresh`, it is
        always fetched.

        Raises:
          Unavailable: user_service cannot be reached or timed out.
        """
        if group in self._deleted:
            return False
        cached = None if fresh else self._recent.get(group)
        if cached is not None and user in cached.all:
            return True
        try:
            return user in self._fetch_members(group, context).all
        except NotFound:
            return False

    def _fetch_members(
        self,
        group: str,
        context: grpc.ServicerContext | None,
        max_wait: float | None = None,
    ) -> _Members:
        """Read every member of a group from user_service and cache the list."""
        fetched_at = self._clock()
        generation = self._recent.generation
        timeout = timeout_before_answer(context, self._default_timeout)
        if max_wait is not None:
            timeout = min(timeout, max_wait)
        deadline = time.monotonic() + timeout
        members: set[str] = set()
        deactivated: set[str] = set()
        leaving: set[str] = set()
        deleting = False
        token = ""
        while True:
            request = users_pb.ListGroupMembersRequest(
                parent=group, page_size=_PAGE_SIZE, page_token=token
            )
            try:
                with authz.as_service():
                    response = self._stub.ListGroupMembers(
                        request, timeout=max(deadline - time.monotonic(), 0.0)
                    )
            except grpc.RpcError as exc:
                if exc.code() not in _TRANSIENT:
                    self._failures.succeeded()  # user_service answered.
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    self._recent.discard(group)
                    if reports_deleted_group(exc):
                        self._deleted.add(group)
                        raise group_not_found(group, deleted=True) from None
                raise self._translate(exc, group, timeout) from None
            self._failures.succeeded()
            for member in response.members:
                if member.leaving:
                    leaving.add(member.user)
                if member.user_state == users_pb.User.STATE_DEACTIVATED:
                    deactivated.add(member.user)
                elif not member.leaving:
                    members.add(member.user)
            deleting = deleting or response.group_deleting
            token = response.next_page_token
            if not token:
                found = _Members(
                    frozenset(members),
                    frozenset(deactivated),
                    frozenset(leaving),
                    deleting,
                )
                self._recent.put(group, found, fetched_at, generation)
                return found

    def _translate(self, exc: grpc.RpcError, group: str, timeout: float) -> Exception:
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND:
            return group_not_found(group)
        if code in _TRANSIENT:
            self._failures.failed(
                "membership check of %s failed: user_service at %s returned %s: %s",
                group,
                self._address,
                code.name,
                exc.details(),
            )
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                failure = f"within {timeout:.2f} s"
            else:
                failure = f"({code.name})"
            return Unavailable(
                "user_service did not respond to the membership check of "
                f"{group} {failure}; retry in a moment",
                reason="USER_SERVICE_UNAVAILABLE",
                metadata={"service": "user_service", "code": code.name},
                retry_delay=RETRY_DELAY_SECONDS,
                final_attempt=ended_its_attempts(exc),
            )
        return RuntimeError(
            f"user_service failed ListGroupMembers for {group}: {code.name}: "
            f"{exc.details()}"
        )


@dataclass(frozen=True)
class _FieldNames:
    """The fields that name each user in an error: those of the request, or
    for a user that the request does not name, those of the stored expense."""

    request: Mapping[str, Sequence[str]]
    stored: Mapping[str, Sequence[str]]

    def order(self, users: Iterable[str]) -> list[str]:
        """Return each user once, in the order of the request fields, then of
        the stored fields, then of `users`.

        Users that no field names keep the order of `users`, so a set gives
        an order that can change from run to run.
        """
        named = dict.fromkeys([*self.request, *self.stored])
        position = {user: index for index, user in enumerate(named)}
        distinct = list(dict.fromkeys(users))
        return sorted(distinct, key=lambda user: position.get(user, len(position)))

    def in_request(self, user: str) -> bool:
        """Return whether a request field names the user."""
        return bool(self.request.get(user))

    def describe(self, user: str) -> str:
        """Name a user with its fields, such as `'users/a' (expense.payers[0].user)`."""
        paths = self.request.get(user)
        if paths:
            return f"{user!r} ({', '.join(paths)})"
        paths = self.stored.get(user)
        if paths:
            return f"{user!r} ({', '.join(paths)} of the stored expense)"
        return repr(user)

    def metadata(self, group: str, users: list[str]) -> dict[str, str]:
        """Build the error metadata that names the group, the users and their
        fields. `fields` lists request fields, and `stored_fields` lists the
        stored expense's fields of users that the request does not name."""
        metadata = {"group": group, "users": ",".join(users)}
        paths = [path for user in users for path in self.request.get(user, ())]
        if paths:
            metadata["fields"] = ",".join(paths)
        stored = [
            path
            for user in users
            if not self.in_request(user)
            for path in self.stored.get(user, ())
        ]
        if stored:
            metadata["stored_fields"] = ",".join(stored)
        return metadata


def _deactivated(
    group: str, users: list[str], names: _FieldNames
) -> FailedPrecondition:
    """Build the error for deactivated users named on a write."""
    listed = join_some([names.describe(user) for user in users])
    verb = "is deactivated" if len(users) == 1 else "are deactivated"
    if all(names.in_request(user) for user in users):
        advice = "Name an active member instead"
    else:
        advice = (
            "An expense that names a deactivated user cannot be restored, and "
            "an update cannot change what they paid or owe"
        )
    return _users_rejected(
        USER_DEACTIVATED,
        f"{listed} {verb}; a deactivated user keeps its history but cannot pay "
        f"or take part in expenses. {advice}",
        group,
        users,
        names,
        {user: (user, f"{names.describe(user)} is deactivated") for user in users},
    )


def _leaving(group: str, users: list[str], names: _FieldNames) -> FailedPrecondition:
    """Build the error for members named on a write while they leave the group.

    Only when the request names every one of them may the caller name other
    members instead. A delete, a restore or an update that drops them from
    the expense can only wait.
    """
    listed = join_some([names.describe(user) for user in users])
    verb = "is leaving" if len(users) == 1 else "are leaving"
    if all(names.in_request(user) for user in users):
        advice = (
            "Name members who stay in the group, or retry in a moment, after "
            "the removal has finished or been rejected"
        )
    else:
        advice = (
            "A write that changes what a leaving member paid or owes is "
            "rejected until that check ends. Retry in a moment, after the "
            "removal has finished or been rejected"
        )
    return _users_rejected(
        MEMBER_LEAVING,
        f"{listed} {verb} {group!r}: a removal from the group, or its deletion, "
        f"is checking balances. {advice}",
        group,
        users,
        names,
        {
            user: (
                f"{group}/members/{user.removeprefix('users/')}",
                f"{names.describe(user)} is leaving {group}",
            )
            for user in users
        },
    )


def _group_deleting(
    group: str, users: list[str], names: _FieldNames
) -> FailedPrecondition:
    """Build the error for a write that changes balances while its group is
    being deleted."""
    listed = join_some([names.describe(user) for user in users])
    return FailedPrecondition(
        f"{group!r} is being deleted: DeleteGroup is checking its balances, and "
        f"this write would change the amounts of {listed}. Retry in a moment: "
        "the write goes through if the deletion is rejected, and finds no "
        "group once it has finished",
        reason=GROUP_DELETING,
        metadata=names.metadata(group, users),
        preconditions=[
            PreconditionViolation(GROUP_DELETING, group, f"{group} is being deleted")
        ],
    )


def _users_rejected(
    reason: str,
    message: str,
    group: str,
    users: list[str],
    names: _FieldNames,
    violations: Mapping[str, tuple[str, str]],
) -> FailedPrecondition:
    """Build a FAILED_PRECONDITION error about users named on a write.

    Args:
      violations: for each user, the subject and the description of its
        precondition violation.
    """
    return FailedPrecondition(
        message,
        reason=reason,
        metadata=names.metadata(group, users),
        preconditions=[
            PreconditionViolation(reason, *violations[user]) for user in users
        ],
    )
