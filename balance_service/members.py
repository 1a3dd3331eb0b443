"""Groups, members and users as user_service reports them.

user_service owns groups and memberships, so the balance service calls it
over gRPC to check that a group or user exists and to list the members.

Writes (creating, deleting or restoring a settlement) always call
user_service, so a member who just joined can be paid at once, and a member
who just left or was deactivated cannot. Reads may reuse a response for up
to `cache_seconds` (5 s by default). A balance read then needs no call to
user_service, and a membership change shows in reads at most that long after
it was made. Only found groups and users are cached. A NOT_FOUND response is
never reused, so a group created a moment ago is found at once. The exception
is a group that user_service reports deleted: its id is never given to a new
group, so it stays known as deleted without another call
(`splitlog_runtime.groups`).

With `auth_required` on, `is_member` decides who may use a group from the
same cached lists. A removed member, or a member of a deleted group, keeps
access for up to `cache_seconds`, and a new member gets it at once, because
a caller missing from a cached list makes it fetch the list again. Every
call to user_service is made on this service's own behalf, because the
caller may not be allowed to make it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from balance_service import domain
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import authz
from splitlog_runtime.channels import insecure_channel, timeout_before_answer
from splitlog_runtime.errors import (
    NotFound,
    Resource,
    Unavailable,
    ended_its_attempts,
)
from splitlog_runtime.failure_log import FailureLog
from splitlog_runtime.groups import (
    DeletedGroups,
    group_not_found,
    reports_deleted_group,
)

_LOGGER = logging.getLogger(__name__)

#: Seconds a read may reuse user_service's response about a group or user.
CACHE_SECONDS = 5.0
#: Maximum number of cached groups and users; the least recently used go first.
MAX_CACHED_ENTRIES = 10_000


class _RecentResponses:
    """Values by key that expire after `max_age` seconds, evicting the least used."""

    def __init__(
        self, max_age: float, max_entries: int, clock: Callable[[], float]
    ) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> frozenset[str] | None:
        """Return the stored value, or None when it is missing or too old."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored_at, value = entry
            if self._clock() - stored_at >= self._max_age:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: frozenset[str], stored_at: float) -> None:
        """Store a value fetched at `stored_at`, dropping the oldest beyond the cap."""
        if self._max_age <= 0:
            return
        with self._lock:
            self._entries[key] = (stored_at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)


@dataclass(frozen=True)
class GroupMembers:
    """The ids of a group's members, of those whose user is deactivated, and
    of those whose removal, or the group's deletion, is checking balances
    (user_service's `Member.leaving`)."""

    all: frozenset[str]
    deactivated: frozenset[str]
    leaving: frozenset[str] = frozenset()


class UserDirectory:
    """A client of user_service for the checks the balance service makes.

    Args:
      target: host:port of user_service.
      default_timeout: seconds a call may take when the caller set no
        deadline.
      max_message_bytes: largest message the channel sends or receives.
      cache_seconds: how long reads may reuse a response; 0 turns reuse off.
      max_cached_entries: maximum number of cached groups and users.
      clock: monotonic seconds, replaceable so tests can move time.
    """

    def __init__(
        self,
        target: str,
        default_timeout: float,
        max_message_bytes: int,
        *,
        cache_seconds: float = CACHE_SECONDS,
        max_cached_entries: int = MAX_CACHED_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._default_timeout = default_timeout
        self._clock = clock
        self._channel = insecure_channel(target, max_message_bytes)
        self._stub = users_grpc.UsersServiceStub(self._channel)
        self._groups = _RecentResponses(cache_seconds, max_cached_entries, clock)
        self._users = _RecentResponses(cache_seconds, max_cached_entries, clock)
        self._deleted = DeletedGroups(max_cached_entries)
        self._failures = FailureLog(_LOGGER, "calls to user_service")

    def close(self) -> None:
        self._channel.close()

    def members(self, group_id: str, context: grpc.ServicerContext | None) -> set[str]:
        """Return the ids of a group's current members, fetched from user_service.

        The response also replaces the cached one that `recent_members` returns.

        Raises:
          NotFound: the group does not exist or was deleted (reason
            GROUP_NOT_FOUND).
          Unavailable: user_service did not respond.
        """
        return set(self.member_states(group_id, context).all)

    def member_states(
        self, group_id: str, context: grpc.ServicerContext | None
    ) -> GroupMembers:
        """Fetch a group's current members from user_service, with their states.

        The response also replaces the cached one that `recent_members` returns.

        Raises:
          NotFound: the group does not exist or was deleted (reason
            GROUP_NOT_FOUND).
          Unavailable: user_service did not respond.
        """
        if domain.group_name(group_id) in self._deleted:
            raise group_not_found(domain.group_name(group_id), deleted=True)
        fetched_at = self._clock()
        found: set[str] = set()
        deactivated: set[str] = set()
        leaving: set[str] = set()
        token = ""
        while True:
            request = users_pb.ListGroupMembersRequest(
                parent=domain.group_name(group_id), page_size=1000, page_token=token
            )
            response = self._call(
                self._stub.ListGroupMembers, request, context, group_id=group_id
            )
            for member in response.members:
                user_id = member.user.split("/", 1)[1]
                found.add(user_id)
                if member.user_state == users_pb.User.STATE_DEACTIVATED:
                    deactivated.add(user_id)
                if member.leaving:
                    leaving.add(user_id)
            token = response.next_page_token
            if not token:
                self._groups.put(group_id, frozenset(found), fetched_at)
                return GroupMembers(
                    frozenset(found), frozenset(deactivated), frozenset(leaving)
                )

    def recent_members(
        self, group_id: str, context: grpc.ServicerContext | None
    ) -> frozenset[str]:
        """Return a group's members, reusing a response up to `cache_seconds` old.

        user_service is called only when no such response is cached.

        Raises:
          NotFound: the group does not exist or was deleted (reason
            GROUP_NOT_FOUND).
          Unavailable: user_service did not respond.
        """
        if domain.group_name(group_id) in self._deleted:
            raise group_not_found(domain.group_name(group_id), deleted=True)
        cached = self._groups.get(group_id)
        if cached is not None:
            return cached
        return frozenset(self.members(group_id, context))

    def is_deleted(self, group_id: str) -> bool:
        """Return whether user_service reported the group deleted.

        Only groups named since this process started, and not yet dropped
        from the bounded `DeletedGroups`, count, so call it after a look-up
        such as `is_member` has asked user_service.
        """
        return domain.group_name(group_id) in self._deleted

    def is_member(
        self,
        group_id: str,
        user_id: str,
        context: grpc.ServicerContext | None,
        *,
        fresh: bool = False,
    ) -> bool:
        """Return whether a user is a member of a group; False if it does not exist.

        A response up to `cache_seconds` old that contains the user is
        enough; otherwise the members are fetched again. With `fresh`, they
        are always fetched.

        Raises:
          Unavailable: user_service did not respond.
        """
        if domain.group_name(group_id) in self._deleted:
            return False
        cached = None if fresh else self._groups.get(group_id)
        if cached is not None and user_id in cached:
            return True
        try:
            return user_id in self.members(group_id, context)
        except NotFound:
            return False

    def group_exists(self, group_id: str, context: grpc.ServicerContext | None) -> bool:
        """Return whether a group exists, reusing a response up to `cache_seconds` old.

        Raises:
          Unavailable: user_service did not respond.
        """
        try:
            self.recent_members(group_id, context)
        except NotFound:
            return False
        return True

    def require_user(self, user_id: str, context: grpc.ServicerContext | None) -> None:
        """Check that a user exists, reusing a response up to `cache_seconds` old.

        Raises:
          NotFound: no user has this id (reason USER_NOT_FOUND).
          Unavailable: user_service did not respond.
        """
        if self._users.get(user_id) is not None:
            return
        fetched_at = self._clock()
        request = users_pb.GetUserRequest(name=domain.user_name(user_id))
        self._call(self._stub.GetUser, request, context, user_id=user_id)
        self._users.put(user_id, frozenset(), fetched_at)

    def _call(self, method, request, context, *, group_id=None, user_id=None):
        timeout = timeout_before_answer(context, self._default_timeout)
        try:
            with authz.as_service():
                response = method(request, timeout=timeout)
            self._failures.succeeded()
            return response
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                self._failures.succeeded()  # user_service answered.
            if code == grpc.StatusCode.NOT_FOUND and group_id is not None:
                name = domain.group_name(group_id)
                deleted = reports_deleted_group(exc)
                if deleted:
                    self._deleted.add(name)
                raise group_not_found(name, deleted=deleted) from None
            if code == grpc.StatusCode.NOT_FOUND and user_id is not None:
                name = domain.user_name(user_id)
                raise NotFound(
                    f"user {name!r} does not exist; check the id: "
                    "ListGroupMembers lists the members of a group you are "
                    "in, and an administrator can list every user with "
                    "ListUsers",
                    reason="USER_NOT_FOUND",
                    resource=Resource(domain.USER_TYPE, name),
                ) from None
            # The address and grpc's text describe the internal network, so
            # they go to the log and not to the caller.
            self._failures.failed(
                "call to user_service at %s failed: %s: %s",
                self._target,
                code.name,
                exc.details(),
            )
            if group_id is not None:
                check = f"membership check of {domain.group_name(group_id)}"
            else:
                check = f"check of {domain.user_name(user_id)}"
            raise Unavailable(
                f"{_describe_failure(code, timeout, check)}; retry in a moment",
                reason="USER_SERVICE_UNAVAILABLE",
                metadata={"service": "user_service", "code": code.name},
                retry_delay=1.0,
                final_attempt=ended_its_attempts(exc),
            ) from None


def _describe_failure(code: grpc.StatusCode, timeout: float, check: str) -> str:
    """Describe a failed call to user_service, such as `user_service did not
    respond to the membership check of groups/g within 2.47 s`."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"user_service did not respond to the {check} within {timeout:.2f} s"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"user_service did not respond to the {check} (UNAVAILABLE)"
    return f"user_service failed the {check} ({code.name})"
