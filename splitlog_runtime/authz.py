"""Authorization: which users, groups and group resources a caller may use.

The checks apply only while a signed principal is current, that is with
`auth_required` on. With it off no principal arrives, every check passes and
the services behave as before.

Rules:
- A user (an access token, or one of the user's API keys) may read and
  change only their own account and the groups they are a member of. A
  group includes everything inside it: members, expenses, settlements,
  balances, reports and settle-up plans.
- An administrator passes every check here: an API key with the `admin`
  scope, or the access token of a user who has an active `admin` key
  (user_service adds `admin` to that token's scopes). The gateway already
  rejects keys without `admin` on every method outside LogsService, so a
  key reaches these checks only with it.
- Calls between services (`services/splitlog`) pass every check.
- `anonymous` (a call that the gateway let through without a credential)
  gets UNAUTHENTICATED.
- A caller who may not use a group gets PERMISSION_DENIED with the same
  message whether the group exists or not, so group ids cannot be probed
  (permission is checked before existence). Only administrators and services
  see NOT_FOUND for a missing group. A deleted group is the exception,
  because its PERMISSION_DENIED message states that the group was deleted.
  CreateGroup already returns that fact to any caller who requests the id.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from splitlog_runtime import auth
from splitlog_runtime.errors import (
    DomainError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    invalid_field,
    join_some,
)
from splitlog_runtime.groups import DELETED_KEY

_LOGGER = logging.getLogger(__name__)

ANONYMOUS = "anonymous"

GROUP_ACCESS_DENIED = "GROUP_ACCESS_DENIED"
NOT_SELF = "NOT_SELF"
ADMIN_REQUIRED = "ADMIN_REQUIRED"
ACTING_FOR_OTHER = "ACTING_FOR_OTHER"

SERVICE = auth.Principal(auth.SERVICE_PRINCIPAL)


def is_unrestricted(principal: auth.Principal | None) -> bool:
    """Return whether a principal passes every check: none, a service or admin."""
    return principal is None or principal.is_administrator


def restricted_user() -> str | None:
    """Return the `users/{user}` that the current call is limited to.

    Returns None when the call is unrestricted: auth is off, or the caller is
    a service or an administrator.

    Raises:
      Unauthenticated: the call arrived without a credential.
    """
    principal = auth.current_principal()
    if principal is None or is_unrestricted(principal):
        return None
    user = principal.user
    if user is None:
        raise Unauthenticated(
            "this call needs a credential; send `authorization: Bearer <token>` "
            "with an access token from SignIn or an API key",
            reason="CREDENTIAL_MISSING",
        )
    return user


@contextlib.contextmanager
def as_service() -> Iterator[None]:
    """Make the calls inside the block on the service's own behalf.

    Used for lookups that an authorization check itself needs, such as a
    group's member list, so that the lookup is not rejected for the caller.
    With auth off (no current principal) nothing changes.
    """
    if auth.current_principal() is None:
        yield
        return
    with auth.acting_as(SERVICE):
        yield


def require_admin(method: str) -> None:
    """Allow only administrators and services to call `method`.

    Raises:
      Unauthenticated: the call arrived without a credential.
      PermissionDenied: the caller is a user without `admin`.
    """
    user = restricted_user()
    if user is None:
        return
    raise PermissionDenied(
        f"{method} needs an administrator, and {user} is not one; "
        f"{auth.scope_grant_advice(auth.SCOPE_ADMIN)}",
        reason=ADMIN_REQUIRED,
        metadata={"method": method, "principal": user},
    )


def require_self(user: str, field: str) -> None:
    """Allow a restricted caller to name only their own account in `field`.

    Args:
      user: the user that the request names, `users/{user}`.
      field: the request field that names it, for the message.

    Raises:
      Unauthenticated: the call arrived without a credential.
      PermissionDenied: the caller is another user.
    """
    caller = restricted_user()
    if caller is None or caller == user:
        return
    raise PermissionDenied(
        f"{caller} may not use the account {user!r} ({field}); a user may read "
        f"and change only their own account, so set {field} to {caller!r}",
        reason=NOT_SELF,
        metadata={"principal": caller, "field": field},
    )


def require_acting_as_caller(user: str, field: str) -> None:
    """Reject a write that records another user as its author.

    Fields such as `expense.creator` name who made a change. A restricted
    caller may only name themselves there, so no one can write in another
    member's name.

    Raises:
      Unauthenticated: the call arrived without a credential.
      PermissionDenied: the field names another user.
    """
    caller = restricted_user()
    if caller is None or caller == user:
        return
    raise PermissionDenied(
        f"{caller} may not record {user!r} as {field}; set {field} to {caller!r}",
        reason=ACTING_FOR_OTHER,
        metadata={"principal": caller, "field": field},
    )


def author_or_caller(name: str, field: str) -> str:
    """Return the author that a write names in `field`, or its caller if none.

    Fields such as `expense.creator` name who made a change. With
    authentication on, a user may name only themselves there
    (`require_acting_as_caller`), so an empty field means the user that the
    call is authenticated as. Filling it before any hash of the request is
    taken makes a retry that spells the caller out hash the same.

    Raises:
      InvalidArgument: the field is empty and the call has no user to fill
        it with, because authentication is off or the caller is a service or
        anonymous (reason REQUIRED).
    """
    if name:
        return name
    principal = auth.current_principal()
    if principal is not None and principal.user is not None:
        return principal.user
    if principal is None:
        why = "authentication is off, so the server cannot tell who the caller is"
    else:
        why = f"the caller {principal.name} is not a user"
    raise invalid_field(
        field,
        f"is required because {why}; name the user who makes this change, such "
        f"as 'users/alice' (with authentication on, a user's call may leave "
        f"{field} empty to name themselves)",
        reason="REQUIRED",
    )


def filled_author_hint(fields: Sequence[str], caller: str) -> str:
    """Build the error sentence for author fields filled with a non-member caller.

    `author_or_caller` filled the empty `fields` with `caller`, such as the
    owner of an admin API key, and the membership check then rejected that
    user. The sentence names the fields, the caller and both fixes.
    """
    if len(fields) == 1:
        return (
            f"{fields[0]} was empty, so it was set to the caller {caller!r}, who "
            f"is not a member of the group; set {fields[0]} to a member, or add "
            "the caller to the group"
        )
    return (
        f"{join_some(list(fields))} were empty, so they were set to the caller "
        f"{caller!r}, who is not a member of the group; set them to a member, "
        "or add the caller to the group"
    )


def group_denied(caller: str, group: str, deleted: bool = False) -> PermissionDenied:
    """Return the error for a group that the caller may not use.

    The message is the same whether the group is missing or belongs to
    others. A deleted group gets its own message, because no member is left
    to add anyone back. It reveals no more than CreateGroup, which rejects a
    deleted id with GROUP_ID_DELETED for any caller.
    """
    if deleted:
        return PermissionDenied(
            f"{caller} may not access {group!r} because the group was deleted, "
            "together with its memberships. Its expenses, settlements and "
            "balances can no longer be read or changed, so a retried "
            f"DeleteGroup has nothing left to do. List the groups that {caller} "
            "still belongs to with ListGroups, or start a new group with "
            "CreateGroup",
            reason=GROUP_ACCESS_DENIED,
            metadata={"principal": caller, "group": group, DELETED_KEY: "true"},
        )
    return PermissionDenied(
        f"{caller} may not access {group!r} because the group does not exist or "
        f"{caller} is not one of its members; ask a member to add {caller} with "
        "AddGroupMember. To settle a balance left from an earlier membership, "
        "ask a member to record the settlement with CreateSettlement, naming "
        f"{caller} as payer or payee",
        reason=GROUP_ACCESS_DENIED,
        metadata={"principal": caller, "group": group},
    )


def require_group_member(
    group: str,
    is_member: Callable[[str], bool],
    is_deleted: Callable[[], bool] | None = None,
) -> None:
    """Allow a restricted caller to use a group only when they are a member.

    Args:
      group: the group's name, `groups/{group}`.
      is_member: returns whether a user (`users/{user}`) is a member of the
        group now; it must return False for a group that does not exist.
      is_deleted: returns whether the group was deleted. It is called only
        after `is_member` returned False, so it may rely on what that call
        found out.

    Raises:
      Unauthenticated: the call arrived without a credential.
      PermissionDenied: the caller is not a member, or the group does not
        exist; both give the same message. A deleted group gives the
        message of `group_denied(..., deleted=True)`.
    """
    caller = restricted_user()
    if caller is None:
        return
    if not is_member(caller):
        deleted = is_deleted is not None and is_deleted()
        raise group_denied(caller, group, deleted=deleted)


# Errors after which a write does not check its caller again: they already
# deny access, or user_service would not respond to the check either.
_NOT_RECHECKED = (PermissionDenied, Unauthenticated, Unavailable)


class GroupWriteAccess:
    """The access check of one write to a group, made again from a fresh
    member list when the write fails.

    Services may accept a caller from a member list they reuse for a few
    seconds, so `authorize` can accept a member removed a moment ago. A later
    step of the write would then reject them with its own error, such as
    NOT_FOUND for a missing expense, while the same write after the list
    expired gets PERMISSION_DENIED. Used as a context manager around the
    write, this object checks the caller again with `is_member_now` when the
    write raises after `authorize` accepted them. A caller who is no longer a
    member then gets the PERMISSION_DENIED of `require_group_member` in place
    of the write's error.

    NOTE: a write that succeeds is not checked again, so a removed member's
    writes can still succeed while a service reuses a list that contains
    them.

    Args:
      group: the group's name, `groups/{group}`.
      is_member: as in `require_group_member`; it may use a reused member
        list.
      is_member_now: returns whether a user is a member, from a member list
        fetched for this check; False for a group that does not exist.
      is_deleted: as in `require_group_member`.
    """

    def __init__(
        self,
        group: str,
        is_member: Callable[[str], bool],
        is_member_now: Callable[[str], bool],
        is_deleted: Callable[[], bool] | None = None,
    ) -> None:
        self._group = group
        self._is_member = is_member
        self._is_member_now = is_member_now
        self._is_deleted = is_deleted
        # The restricted caller that `authorize` accepted, if any.
        self._accepted: str | None = None

    def authorize(self) -> None:
        """Raise PERMISSION_DENIED unless the caller may use the group.

        Raises:
          Unauthenticated: the call arrived without a credential.
          PermissionDenied: see `require_group_member`.
        """
        require_group_member(self._group, self._is_member, self._is_deleted)
        self._accepted = restricted_user()

    def __enter__(self) -> GroupWriteAccess:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        caller = self._accepted
        if caller is None or not isinstance(error, DomainError):
            return
        if isinstance(error, _NOT_RECHECKED):
            return
        try:
            member = self._is_member_now(caller)
        except Unavailable as unavailable:
            _LOGGER.warning(
                "cannot check again whether %s is a member of %s after a failed "
                "write (%s): %s",
                caller,
                self._group,
                error.reason,
                unavailable.message,
            )
            return
        if member:
            return
        deleted = self._is_deleted is not None and self._is_deleted()
        raise group_denied(caller, self._group, deleted=deleted) from None
