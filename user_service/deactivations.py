"""Deactivating marks: they keep a user from joining a group while
DeactivateUser checks the balances of every group the user belongs to.

DeactivateUser writes this mark, and a leaving mark in each of the user's
groups (`user_service.removals`), in one transaction that locks the user's
row. AddGroupMember and CreateGroup lock the same row and reject the user
while the mark counts. So no group joins between the marks and the final
transaction, and the balances checked are those of every group the user
is in when the deactivation commits. The final transaction also compares
the user's groups with the marked ones, and fails when another group
appeared, for instance after the mark expired.

A mark counts for `removals.MARK_SECONDS`, like a leaving mark, so a user
whose deactivation crashed between the steps can join groups again after
that time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.orm import Session

from splitlog_runtime.errors import (
    Aborted,
    FailedPrecondition,
    PreconditionViolation,
    Resource,
)
from user_service import domain, removals, storage

USER_DEACTIVATING = "USER_DEACTIVATING"
DEACTIVATION_IN_PROGRESS = "DEACTIVATION_IN_PROGRESS"
GROUPS_CHANGED = "GROUPS_CHANGED"


def _live_mark(session: Session, user_id: str) -> storage.PendingDeactivationRow | None:
    mark = storage.get_pending_deactivation(session, user_id)
    now = storage.utc_now()
    if mark is not None and mark.start_time > removals.live_since(now):
        return mark
    return None


def start(session: Session, user_id: str) -> str:
    """Write the deactivating mark of a user whose row the session has locked.

    Returns:
      The token that identifies this deactivation's mark.

    Raises:
      Aborted: another deactivation of the user has a mark that still counts
        (reason DEACTIVATION_IN_PROGRESS).
    """
    if _live_mark(session, user_id) is not None:
        name = domain.user_name(user_id)
        raise Aborted(
            f"a deactivation of {name!r} is checking balances right now; retry "
            "once it has finished",
            reason=DEACTIVATION_IN_PROGRESS,
            resource=Resource(domain.USER_TYPE, name),
            retry_delay=removals.RETRY_DELAY_SECONDS,
        )
    token = uuid.uuid4().hex
    storage.put_pending_deactivation(session, user_id, token, storage.utc_now())
    return token


def require_not_deactivating(session: Session, user_id: str, action: str) -> None:
    """Reject a user whose deactivation is checking balances.

    The caller must hold the lock on the user's row, so that a deactivation
    cannot write its mark between this check and the caller's commit.

    Raises:
      FailedPrecondition: the user has a deactivating mark that still counts
        (reason USER_DEACTIVATING).
    """
    if _live_mark(session, user_id) is None:
        return
    name = domain.user_name(user_id)
    raise FailedPrecondition(
        f"user {name!r} is being deactivated and cannot {action}; retry after "
        "the deactivation has failed, or use an active user",
        reason=USER_DEACTIVATING,
        metadata={"user": name},
        preconditions=[
            PreconditionViolation(
                USER_DEACTIVATING,
                name,
                f"a user whose deactivation is checking balances cannot {action}",
            )
        ],
    )


def require_same_groups(
    session: Session, user_id: str, marked_group_ids: Iterable[str]
) -> None:
    """Check that the user joined no group after the balance checks began.

    Raises:
      Aborted: the user is a member of a group that was not checked (reason
        GROUPS_CHANGED). Nothing is deactivated, and the call may be retried.
    """
    current = {group.id for group in storage.all_groups_of_user(session, user_id)}
    unchecked = sorted(current - set(marked_group_ids))
    if not unchecked:
        return
    name = domain.user_name(user_id)
    groups = ", ".join(domain.group_name(group_id) for group_id in unchecked)
    raise Aborted(
        f"{name!r} joined {groups} while the balances of the deactivation were "
        "checked, so the check does not cover every group; nothing was "
        "changed, retry the deactivation",
        reason=GROUPS_CHANGED,
        resource=Resource(domain.USER_TYPE, name),
        retry_delay=removals.RETRY_DELAY_SECONDS,
    )


def require_own(session: Session, user_id: str, token: str) -> None:
    """Check that this deactivation's mark is still in place and young enough.

    Raises:
      Unavailable: the mark is gone, replaced or older than
        `removals.FINISH_SECONDS` (reason REMOVAL_EXPIRED).
    """
    mark = storage.get_pending_deactivation(session, user_id)
    age = None
    if mark is not None and mark.token == token:
        age = (storage.utc_now() - mark.start_time).total_seconds()
    if age is not None and age < removals.FINISH_SECONDS:
        return
    raise removals.expired(domain.user_name(user_id), age, "deactivation")
