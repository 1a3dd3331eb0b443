"""Groups, members and users as user_service reports them.

user_service owns groups and memberships, so the balance service asks it
over gRPC whether a group or user exists and who the members are. Its
answers are not cached: a member who just joined can be paid at once.
"""

from __future__ import annotations

import grpc

from balance_service import domain
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime.channels import downstream_timeout, insecure_channel
from splitlog_runtime.errors import NotFound, Resource, Unavailable


class UserDirectory:
    """A client of user_service for the checks the balance service makes."""

    def __init__(self, target: str, default_timeout: float, max_message_bytes: int):
        self._target = target
        self._default_timeout = default_timeout
        self._channel = insecure_channel(target, max_message_bytes)
        self._stub = users_grpc.UsersServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def members(self, group_id: str, context: grpc.ServicerContext | None) -> set[str]:
        """Return the ids of a group's current members.

        Raises:
          NotFound: the group does not exist (reason GROUP_NOT_FOUND).
          Unavailable: user_service did not answer.
        """
        found: set[str] = set()
        token = ""
        while True:
            request = users_pb.ListGroupMembersRequest(
                parent=domain.group_name(group_id), page_size=1000, page_token=token
            )
            response = self._call(
                self._stub.ListGroupMembers, request, context, group_id=group_id
            )
            found.update(member.user.split("/", 1)[1] for member in response.members)
            token = response.next_page_token
            if not token:
                return found

    def require_user(self, user_id: str, context: grpc.ServicerContext | None):
        """Check that a user exists.

        Raises:
          NotFound: no user has this id (reason USER_NOT_FOUND).
          Unavailable: user_service did not answer.
        """
        request = users_pb.GetUserRequest(name=domain.user_name(user_id))
        self._call(self._stub.GetUser, request, context, user_id=user_id)

    def _call(self, method, request, context, *, group_id=None, user_id=None):
        try:
            return method(
                request, timeout=downstream_timeout(context, self._default_timeout)
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND and group_id is not None:
                name = domain.group_name(group_id)
                raise NotFound(
                    f"group {name!r} does not exist; check the name, or list a "
                    "user's groups with ListGroups",
                    reason="GROUP_NOT_FOUND",
                    resource=Resource(domain.GROUP_TYPE, name),
                ) from None
            if code == grpc.StatusCode.NOT_FOUND and user_id is not None:
                name = domain.user_name(user_id)
                raise NotFound(
                    f"user {name!r} does not exist; check the name, or list users "
                    "with ListUsers",
                    reason="USER_NOT_FOUND",
                    resource=Resource(domain.USER_TYPE, name),
                ) from None
            raise Unavailable(
                f"user_service at {self._target} did not answer ({code.name}: "
                f"{exc.details()}); retry the call",
                reason="USER_SERVICE_UNAVAILABLE",
                metadata={"service": "user_service"},
                retry_delay=1.0,
            ) from None
