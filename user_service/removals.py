"""Leaving marks: the first step of removing a member or deleting a group.

A removal must not race an expense write that names the member. The servicer
therefore removes in two transactions with the balance check between them:

1. It writes a leaving mark (`storage.PendingRemovalRow`) and commits.
   ListGroupMembers then reports the member as `leaving`. expense_service
   and balance_service reject every write that would change what a leaving
   member paid or owes. A group deletion marks every member at once, and
   ListGroupMembers reports it as `group_deleting`, so that expense_service
   also rejects changes to the amounts of former members.
2. The balance guard calls balance_service's CheckSettled, which waits for
   the group's settlement writes that started earlier, and has
   expense_service fence the group's writes (drop its cached member list
   and wait for every write to the group that started earlier). Then it
   waits for the ledger and reads the balances.
3. If the balances are settled, the servicer deletes the membership or the
   group, together with the mark. Otherwise, or when anything fails, it
   deletes the mark and the member stays.

A mark counts for `MARK_SECONDS` only, so a member whose removal crashed
between the steps is accepted on expenses again after that time. A removal
deletes only while its mark is younger than `FINISH_SECONDS`, which leaves
the rest of the lifetime as a margin for the delete to commit.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from splitlog_runtime.errors import Aborted, Resource, Unavailable
from user_service import domain, storage

_LOGGER = logging.getLogger(__name__)

#: Seconds a leaving mark counts after it was written.
MARK_SECONDS = 60.0
#: Maximum age in seconds of its mark at which a removal may still delete.
FINISH_SECONDS = MARK_SECONDS / 2
#: Seconds a caller should wait before retrying a removal that found another.
RETRY_DELAY_SECONDS = 1.0
REMOVAL_IN_PROGRESS = "REMOVAL_IN_PROGRESS"
GROUP = ""  # The `user_id` of the mark that a group deletion writes.


def live_since(now: datetime) -> datetime:
    """Return the oldest start time of a mark that still counts at `now`."""
    return now - timedelta(seconds=MARK_SECONDS)


def is_group_deleting(session: Session, group_id: str, now: datetime) -> bool:
    """Return whether a deletion of the group has a mark that counts at `now`."""
    mark = storage.get_pending_removal(session, group_id, GROUP)
    return mark is not None and mark.start_time > live_since(now)


def start(session: Session, group_id: str, user_id: str) -> str:
    """Write the leaving mark of a member, or with `user_id` GROUP of a group.

    Returns:
      The token that identifies this removal's mark.

    Raises:
      Aborted: another removal of the same member, or a deletion of the
        group, has a mark that still counts (reason REMOVAL_IN_PROGRESS).
    """
    now = storage.utc_now()
    for key in dict.fromkeys((user_id, GROUP)):
        mark = storage.get_pending_removal(session, group_id, key)
        if mark is not None and mark.start_time > live_since(now):
            raise _in_progress(group_id, key)
    token = uuid.uuid4().hex
    storage.put_pending_removal(session, group_id, user_id, token, now)
    return token


def require_own(session: Session, group_id: str, user_id: str, token: str) -> None:
    """Check that this removal's mark is still in place and young enough.

    Raises:
      Unavailable: the mark is gone, replaced or older than `FINISH_SECONDS`,
        so expenses may have named the member since the check. Nothing is
        removed, and the removal may be retried.
    """
    mark = storage.get_pending_removal(session, group_id, user_id)
    age = None
    if mark is not None and mark.token == token:
        age = (storage.utc_now() - mark.start_time).total_seconds()
    if age is not None and age < FINISH_SECONDS:
        return
    raise expired(_subject(group_id, user_id), age)


def expired(subject: str, age: float | None, what: str = "removal") -> Unavailable:
    """Log and build the error of a removal or deactivation whose mark expired.

    Args:
      subject: the member, group or user.
      age: the mark's age in seconds, or None when it is gone or replaced.
      what: "removal", or "deactivation" for a user.
    """
    _LOGGER.warning(
        "%s of %s found its mark %s; nothing changed",
        what,
        subject,
        "gone or replaced" if age is None else f"{age:.1f}s old",
    )
    return Unavailable(
        f"the {what} of {subject!r} took longer than {FINISH_SECONDS:.0f}s "
        "between its mark and the final write, so the balance check no "
        "longer holds; nothing was changed, retry",
        reason="REMOVAL_EXPIRED",
        metadata={"subject": subject},
        retry_delay=RETRY_DELAY_SECONDS,
    )


def _subject(group_id: str, user_id: str) -> str:
    if user_id == GROUP:
        return domain.group_name(group_id)
    return domain.member_name(group_id, user_id)


def _in_progress(group_id: str, key: str) -> Aborted:
    subject = _subject(group_id, key)
    what = "deletion" if key == GROUP else "removal"
    resource_type = domain.GROUP_TYPE if key == GROUP else domain.MEMBER_TYPE
    return Aborted(
        f"a {what} of {subject!r} is checking balances right now; retry once "
        "it has finished",
        reason=REMOVAL_IN_PROGRESS,
        resource=Resource(resource_type, subject),
        retry_delay=RETRY_DELAY_SECONDS,
    )
