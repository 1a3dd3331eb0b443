"""Membership checks against user_service, which owns groups and members."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import grpc

from expense_service import domain
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime.channels import downstream_timeout, insecure_channel
from splitlog_runtime.errors import (
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
    Resource,
    Unavailable,
)

_LOGGER = logging.getLogger(__name__)

NOT_A_MEMBER = "NOT_A_GROUP_MEMBER"
#: Seconds a caller should wait before retrying while user_service is down.
RETRY_DELAY_SECONDS = 1.0
_PAGE_SIZE = 1000
# Codes after which the same call may succeed later.
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class MembershipClient:
    """Client that checks group membership in user_service.

    Args:
      address: host:port of user_service.
      default_timeout: seconds a check may take when the caller set no
        deadline.
    """

    def __init__(self, address: str, default_timeout: float) -> None:
        self._address = address
        self._default_timeout = default_timeout
        self._channel = insecure_channel(address)
        self._stub = users_grpc.UsersServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def require_members(
        self,
        group: str,
        users: Iterable[str],
        context: grpc.ServicerContext | None,
    ) -> None:
        """Check that a group exists and that every user is one of its members.

        Raises:
          NotFound: the group does not exist (reason GROUP_NOT_FOUND).
          FailedPrecondition: some users are not members; one violation
            names each of them.
          Unavailable: user_service cannot be reached or timed out; the
            error carries RetryInfo.
        """
        members = self._members(group, context)
        missing = sorted(set(users) - members)
        if not missing:
            return
        listed = ", ".join(repr(user) for user in missing)
        raise FailedPrecondition(
            f"{listed} {'is not a member' if len(missing) == 1 else 'are not members'}"
            f" of {group!r}; add them with AddGroupMember, or leave them out of "
            "the payers and the split",
            reason=NOT_A_MEMBER,
            metadata={"group": group, "users": ",".join(missing)},
            preconditions=[
                PreconditionViolation(
                    NOT_A_MEMBER,
                    f"{group}/members/{user.removeprefix('users/')}",
                    f"{user} is not a member of {group}",
                )
                for user in missing
            ],
        )

    def _members(self, group: str, context: grpc.ServicerContext | None) -> set[str]:
        deadline = time.monotonic() + downstream_timeout(context, self._default_timeout)
        members: set[str] = set()
        token = ""
        while True:
            request = users_pb.ListGroupMembersRequest(
                parent=group, page_size=_PAGE_SIZE, page_token=token
            )
            try:
                response = self._stub.ListGroupMembers(
                    request, timeout=max(deadline - time.monotonic(), 0.0)
                )
            except grpc.RpcError as exc:
                raise self._translate(exc, group) from None
            members.update(member.user for member in response.members)
            token = response.next_page_token
            if not token:
                return members

    def _translate(self, exc: grpc.RpcError, group: str) -> Exception:
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(
                f"group {group!r} does not exist; check the name, or list a user's "
                "groups with ListGroups",
                reason="GROUP_NOT_FOUND",
                resource=Resource(domain.GROUP_TYPE, group),
            )
        if code in _TRANSIENT:
            _LOGGER.warning(
                "membership check of %s failed: user_service at %s returned %s: %s",
                group,
                self._address,
                code.name,
                exc.details(),
            )
            return Unavailable(
                "cannot check group membership because user_service is not "
                f"answering ({code.name}); retry in a moment",
                reason="USER_SERVICE_UNAVAILABLE",
                metadata={"service": "user_service", "code": code.name},
                retry_delay=RETRY_DELAY_SECONDS,
            )
        return RuntimeError(
            f"user_service failed ListGroupMembers for {group}: {code.name}: "
            f"{exc.details()}"
        )
