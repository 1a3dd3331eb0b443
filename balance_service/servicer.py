"""The gRPC handlers of `splitlog.balances.v1.BalancesService`.

Each handler validates the request, calls user_service about the group or
user when the result depends on it, runs its storage calls in one database
transaction and builds the response. Errors are raised as `DomainError`s.
Reads reuse user_service's responses for a few seconds, and writes always
call it again (see `balance_service.members`).

Choices that the proto leaves open:
- CheckSettled fails for a missing or deleted group as GetGroup does,
  except that it skips this check when user_service does not respond.
  user_service calls it during a removal, after it has committed the
  leaving mark and released the group's row lock, so the group still
  exists then. A group without expenses or settlements is settled.
  Before it reads, it waits until the ledger consumer has applied every
  expense change that expense_service committed before the check
  (`balance_service.fence`), and fails with UNAVAILABLE when it cannot.
  It also first waits for the settlement writes to the group that started
  before it (`splitlog_runtime.fencing`): they count from before their
  membership check to their commit or failure.
- Payer, payee and creator of a settlement must be current members of the
  group, except that a former or deactivated member may pay or be paid
  what remains of their balance (`balance_service.former_members`).
  Otherwise none of them may be deactivated (FAILED_PRECONDITION,
  USER_DEACTIVATED, as expense_service rejects a deactivated payer or
  participant), nor leaving the group
  (MEMBER_LEAVING, while a removal or the group's deletion checks the
  balances). Deleting or restoring a settlement moves its payer's and
  payee's balances, so both must still be members who are not leaving
  then too. Restoring also rejects a deactivated payer or payee, as
  UndeleteExpense does. Deleting does not, as DeleteExpense does not.
- Deleting a deleted settlement succeeds and changes nothing, as
  DeleteExpense does, so a retried delete does not fail. The etag and the
  members are then not checked, because nothing is written. Restoring a
  settlement that is not deleted fails with ALREADY_EXISTS, as the proto
  says.
- A replayed `request_id` returns the settlement the first call created, in
  its current state. The same key with other values (any checked field but
  `request_id`) fails with INVALID_ARGUMENT, reason REQUEST_ID_REUSED, as
  CreateExpense does, and so does a key used in another group. That group
  is named only to a caller who may see it. Keys stored before requests
  were hashed replay whatever comes.

With `auth_required` on, `splitlog_runtime.authz` limits each call to
members of the group it names. GetUserBalance accepts only the caller's own
balance, `settlement.creator` must be the caller and is filled with the
caller when empty (with auth off it is required), and a ListSettlements
across every group (`groups/-`) must name the caller as `participant` and
returns only settlements of groups the caller belongs to now. Membership
comes from `UserDirectory`'s cached member lists, so a removed member, or a
member of a deleted group, loses access within its `cache_seconds`. A
settlement write that fails after a cached list accepted its caller checks
the caller against a fresh list (`authz.GroupWriteAccess`), so a removed
member gets PERMISSION_DENIED, as after the list expires, and not the
write's own error, such as FAILED_PRECONDITION for a former member named as
`settlement.creator`.

Calls about the balances and settlements of a group that does not exist or
was deleted fail with NOT_FOUND (reason GROUP_NOT_FOUND) for callers who may
use every group, and PERMISSION_DENIED for the others, as GetGroup does.
ListSettlements across every group leaves out the settlements of groups
that no longer exist.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar

import grpc
from google.type import date_pb2
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from balance_service import allocation, domain, former_members, storage, views
from balance_service.fence import RETRY_DELAY_SECONDS, LedgerFence
from balance_service.former_members import USER_DEACTIVATED, Named, not_a_member
from balance_service.ledger import Changes
from balance_service.members import GroupMembers, UserDirectory
from balance_service.pair_cache import NettedLines, PairwiseCache
from balance_service.settle import plan_settlement
from expense_service import volumes
from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.balances.v1 import balances_service_pb2_grpc as pb_grpc
from splitlog_runtime import authz, limits, pagination
from splitlog_runtime.database import Database, repeatable_read
from splitlog_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Resource,
    Unavailable,
    invalid_field,
    join_some,
)
from splitlog_runtime.etags import stale_etag
from splitlog_runtime.fencing import GroupWrites
from splitlog_runtime.idempotency import check_same_request, key_reused, values_hash
from splitlog_runtime.resources import check_id, new_id
from splitlog_runtime.validation import (
    NOTE_CONTROLS,
    date_example,
    date_given,
    find_control_character,
)

_LOGGER = logging.getLogger(__name__)
#: Seconds that CheckSettled keeps for sending its response after waiting for
#: the ledger.
_ANSWER_MARGIN_SECONDS = 0.2
_T = TypeVar("_T")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BalancesService"].full_name

# The same reason as expense_service gives for a leaving member.
# `former_members` has the reasons for a non-member and a deactivated user.
MEMBER_LEAVING = "MEMBER_LEAVING"

_ORDER_BY = {"": False, "settlement_date desc": False, "create_time desc": True}


def settlement_message(row: storage.SettlementRow) -> pb.Settlement:
    message = pb.Settlement(
        name=domain.settlement_name(row.group_id, row.id),
        payer=domain.user_name(row.payer_id),
        payee=domain.user_name(row.payee_id),
        amount=domain.to_money(row.amount, row.currency_code),
        settlement_date=domain.date_message(row.settlement_date),
        note=row.note,
        creator=domain.user_name(row.creator_id),
        create_time=views.timestamp_message(row.create_time),
        update_time=views.timestamp_message(row.update_time),
        etag=domain.format_etag(row.version),
    )
    if row.delete_time is not None:
        message.delete_time.CopyFrom(views.timestamp_message(row.delete_time))
    return message


@contextmanager
def transaction(database: Database, read_only: bool = False) -> Iterator[Session]:
    """Run one unit of work; a lost optimistic-lock race becomes ABORTED."""
    try:
        with database.transaction(read_only) as session:
            yield session
    except StaleDataError:
        raise Aborted(
            "the settlement was changed by a concurrent request; read it again "
            "and retry",
            reason="CONCURRENT_MODIFICATION",
        ) from None


def _string_key(key: list | None, token: str) -> list[str] | None:
    """Check the key of a page token whose sort key is three strings.

    The key is compared with the keys of the rows, and a number in it would
    make that comparison raise TypeError.
    """
    if key is None:
        return None
    if len(key) != 3 or not all(isinstance(part, str) for part in key):
        raise pagination.invalid_token(token)
    return key


#: The largest running amount a page token may carry, in minor units: the
#: most that a group's expense and settlement volume caps let a net reach.
#: 1,000 more changes of the largest amount (10**15 each) still keep the
#: running amount within the 64-bit `units` of a Money.
_MAX_RUNNING_MINOR = (
    volumes.MAX_EXPENSE_VOLUME_MINOR + volumes.MAX_SETTLEMENT_VOLUME_MINOR
)


def _explain_token(
    key: list | None, group_id: str, token: str
) -> tuple[storage.ExplainPosition | None, int]:
    """Return where an ExplainBalance page starts and the running net before it.

    The token's key is the date, create time and resource name of the
    previous page's last item, as ISO strings and the name, then the running
    net amount after that item in minor units. Without a token the page
    starts at the oldest item with a running amount of 0.

    Raises:
      InvalidArgument: the key does not have that form or names an item of
        another group (INVALID_PAGE_TOKEN).
    """
    if key is None:
        return None, 0
    if len(key) == 3:
        raise invalid_field(
            "page_token",
            f"{pagination.quote_token(token)} was issued by an earlier version "
            "of the service and holds no running amount; start again without a "
            "page_token",
            reason="INVALID_PAGE_TOKEN",
        )
    if len(key) != 4:
        raise pagination.invalid_token(token)
    day, created, source, running = key
    if not (
        isinstance(day, str)
        and isinstance(created, str)
        and isinstance(source, str)
        and type(running) is int
        and abs(running) <= _MAX_RUNNING_MINOR
    ):
        raise pagination.invalid_token(token)
    try:
        position_day = date.fromisoformat(day)
        position_time = datetime.fromisoformat(created)
    except ValueError:
        raise pagination.invalid_token(token) from None
    if position_time.tzinfo is not None:
        raise pagination.invalid_token(token)
    for kind, name_of in (
        (storage.EXPENSES, domain.expense_name),
        (storage.SETTLEMENTS, domain.settlement_name),
    ):
        prefix = name_of(group_id, "")
        item_id = source.removeprefix(prefix)
        if item_id != source and item_id and "/" not in item_id:
            return (position_day, position_time, kind, item_id), running
    raise pagination.invalid_token(token)


class _ReusedInGroup(Exception):
    """A request_id that created a settlement in another group.

    Raised inside the write transaction and turned into INVALID_ARGUMENT
    after it, because the message depends on whether the caller may see
    that group, which needs a call to user_service.
    """

    def __init__(self, group_id: str) -> None:
        super().__init__(group_id)
        self.group_id = group_id


def _parse_author(name: str, field: str) -> str:
    """Return the user id of a write's author, the caller's if `name` is empty."""
    return domain.parse_user(authz.author_or_caller(name, field), field)


def _settlement_hash(
    group_id: str,
    settlement_id: str,
    users: tuple[str, str, str],
    amount: tuple[str, int],
    day: date,
    note: str,
) -> str:
    """Hash the checked values of a create, without its request_id."""
    payer, payee, creator = users
    currency, amount_minor = amount
    return values_hash(
        [
            group_id,
            settlement_id,
            payer,
            payee,
            creator,
            currency,
            amount_minor,
            day.isoformat(),
            note,
        ]
    )


def _named_users(fields: dict[str, list[str]]) -> dict[str, str]:
    """Describe each user with the fields that name it, by user id, such as
    `'users/a' (settlement.payer)`."""
    return {
        user_id: f"{domain.user_name(user_id)!r} ({', '.join(paths)})"
        for user_id, paths in fields.items()
    }


def _users_rejected(
    reason: str,
    message: str,
    group_id: str,
    fields: dict[str, list[str]],
    violations: list[PreconditionViolation],
) -> FailedPrecondition:
    """Build a FAILED_PRECONDITION error about the users that `fields` names."""
    return FailedPrecondition(
        message,
        reason=reason,
        metadata={
            "group": domain.group_name(group_id),
            "users": ",".join(domain.user_name(user_id) for user_id in fields),
            "fields": ",".join(path for paths in fields.values() for path in paths),
        },
        preconditions=violations,
    )


def _deactivated(group_id: str, fields: dict[str, list[str]]) -> FailedPrecondition:
    """Build the error for deactivated users, given the fields that name each."""
    named = _named_users(fields)
    verb = "is deactivated" if len(named) == 1 else "are deactivated"
    return _users_rejected(
        USER_DEACTIVATED,
        f"{join_some(list(named.values()))} {verb}; a deactivated user keeps its "
        "history but cannot pay, be paid or record settlements. Name an active "
        "member instead",
        group_id,
        fields,
        [
            PreconditionViolation(
                USER_DEACTIVATED,
                domain.user_name(user_id),
                f"{description} is deactivated",
            )
            for user_id, description in named.items()
        ],
    )


def _leaving(group_id: str, fields: dict[str, list[str]]) -> FailedPrecondition:
    """Build the error for leaving members, given the fields that name each."""
    group = domain.group_name(group_id)
    named = _named_users(fields)
    verb = "is leaving" if len(named) == 1 else "are leaving"
    # Only a new settlement names its users in the request; deleting or
    # restoring one can only wait for the check.
    in_request = all(
        path.startswith("settlement.") for paths in fields.values() for path in paths
    )
    advice = (
        "Name members who stay in the group, or retry in a moment"
        if in_request
        else "A settlement of a leaving member cannot be deleted or restored "
        "while that check runs. Retry in a moment"
    )
    return _users_rejected(
        MEMBER_LEAVING,
        f"{join_some(list(named.values()))} {verb} {group!r}: a removal from the "
        f"group, or its deletion, is checking balances. {advice}, after the "
        "removal has finished or been rejected",
        group_id,
        fields,
        [
            PreconditionViolation(
                MEMBER_LEAVING,
                f"{group}/members/{user_id}",
                f"{description} is leaving {group}",
            )
            for user_id, description in named.items()
        ],
    )


# The fixes for a delete or restore of a settlement that names a former
# member. Both keep the documented rule that payer and payee must be members,
# and point to CreateSettlement, which accepts a former member when the new
# settlement moves their balance towards zero.
_DELETE_FIX = (
    "deleting a settlement needs its payer and payee to be members. Add the "
    "user back with AddGroupMember first, or keep the settlement and record "
    "one in the opposite direction, which may name a former member when it "
    "moves their balance towards zero"
)
_UNDELETE_FIX = (
    "restoring a settlement needs its payer and payee to be members. Add the "
    "user back with AddGroupMember first, or record a new settlement in its "
    "place, which may name a former member when it moves their balance "
    "towards zero"
)


def _require_members(
    group_id: str,
    members: GroupMembers,
    named: list[tuple[str, str]],
    *,
    active: bool,
    filled: Collection[str] = (),
    fix: str = "",
) -> None:
    """Check that each user is a member, not leaving and, if `active`, not
    deactivated.

    Args:
      named: (user id, the field that names the user) pairs.
      filled: the fields of `named` that the request left empty and that
        `authz.author_or_caller` set to the caller.
      fix: the fix that the NOT_A_GROUP_MEMBER message names, as in
        `former_members.not_a_member`.

    Raises:
      FailedPrecondition: a user is not a member (reason NOT_A_GROUP_MEMBER),
        is deactivated (reason USER_DEACTIVATED) or is leaving the group
        (reason MEMBER_LEAVING); one violation per user.
    """
    for user_id, field_path in named:
        if user_id not in members.all:
            raise not_a_member(
                group_id, user_id, field_path, filled=field_path in filled, fix=fix
            )
    if active:
        deactivated = _fields_of(named, members.deactivated)
        if deactivated:
            raise _deactivated(group_id, deactivated)
    leaving = _fields_of(named, members.leaving)
    if leaving:
        raise _leaving(group_id, leaving)


def _fields_of(
    named: list[tuple[str, str]], users: frozenset[str]
) -> dict[str, list[str]]:
    """Return the fields that name each user of `users`, by user id."""
    fields: dict[str, list[str]] = {}
    for user_id, field_path in named:
        if user_id in users:
            fields.setdefault(user_id, []).append(field_path)
    return fields


def _add_settlement_volume(
    session: Session, group_id: str, currency: str, delta: int
) -> None:
    """Count a settlement in or out of its group's volume in its currency.

    Raises:
      FailedPrecondition: the volume would pass the cap (reason
        GROUP_VOLUME_LIMIT).
    """
    volumes.apply_changes(
        session,
        storage.SettlementVolumeRow.__table__,
        {(group_id, currency): delta},
        volumes.MAX_SETTLEMENT_VOLUME_MINOR,
        "its live settlements",
        "delete settlements of the group in that currency that were recorded "
        "by mistake, or record further payments in another group",
    )


def _plan_stop_check(context: grpc.ServicerContext) -> Callable[[], bool]:
    """Return the stop check of a settle-up search for this call.

    The search stops when the call was cancelled, or `_ANSWER_MARGIN_SECONDS`
    before the caller's deadline, so the caller still receives a plan.
    """
    remaining = context.time_remaining()
    deadline = None
    if remaining is not None:
        deadline = time.monotonic() + remaining - _ANSWER_MARGIN_SECONDS

    def should_stop() -> bool:
        if not context.is_active():
            return True
        return deadline is not None and time.monotonic() >= deadline

    return should_stop


class BalancesServicer(pb_grpc.BalancesServiceServicer):
    """Balances from the ledger copy, settlements and their reports.

    Args:
      database: this service's database.
      directory: member lists and user states from user_service.
      fence: makes CheckSettled wait for the ledger; None checks the
        balances as they are, which can miss an expense acknowledged a moment
        ago.
      check_seconds: maximum wait for the ledger in CheckSettled, in seconds; a caller's
        earlier deadline shortens it.
    """

    def __init__(
        self,
        database: Database,
        directory: UserDirectory,
        fence: LedgerFence | None = None,
        check_seconds: float = 5.0,
    ) -> None:
        self._database = database
        self._directory = directory
        self._fence = fence
        self._check_seconds = check_seconds
        self._writes = GroupWrites()
        self._pairwise = PairwiseCache()

    def _transaction(self, read_only: bool = False):
        return transaction(self._database, read_only)

    def _authorize(self, group_id: str, context: grpc.ServicerContext) -> None:
        """Raise PERMISSION_DENIED unless the caller may use the group.

        Runs before any look-up, so a missing group and a group of others
        give the same error.
        """
        self._access(group_id, context).authorize()

    def _access(
        self, group_id: str, context: grpc.ServicerContext
    ) -> authz.GroupWriteAccess:
        """Build the access check of a write to the group.

        A write runs inside it and calls its `authorize` in place of
        `_authorize`, so that a caller whom a reused member list accepted is
        checked again when the write fails.
        """

        def is_member(user: str) -> bool:
            user_id = user.removeprefix("users/")
            return self._directory.is_member(group_id, user_id, context)

        def is_member_now(user: str) -> bool:
            user_id = user.removeprefix("users/")
            return self._directory.is_member(group_id, user_id, context, fresh=True)

        return authz.GroupWriteAccess(
            domain.group_name(group_id),
            is_member,
            is_member_now,
            is_deleted=lambda: self._directory.is_deleted(group_id),
        )

    def _member_states_for_write(
        self, group_id: str, context: grpc.ServicerContext
    ) -> GroupMembers:
        """Fetch the group's members from user_service for a settlement write.

        `_authorize` may have accepted the caller from a member list up to
        `cache_seconds` old. When the fresh list shows that the group was
        deleted since, a caller limited to their own groups gets the
        PERMISSION_DENIED of a non-member, as GetGroup and CreateExpense
        return, and not the NOT_FOUND that only administrators see.

        Raises:
          NotFound: the group does not exist or was deleted, and the caller
            may use every group.
          PermissionDenied: the same, for any other caller.
          Unavailable: user_service did not respond.
        """
        try:
            return self._directory.member_states(group_id, context)
        except NotFound:
            caller = authz.restricted_user()
            if caller is None:
                raise
            raise authz.group_denied(
                caller,
                domain.group_name(group_id),
                deleted=self._directory.is_deleted(group_id),
            ) from None

    # Balances

    def GetGroupBalance(
        self, request: pb.GetGroupBalanceRequest, context: grpc.ServicerContext
    ) -> pb.GetGroupBalanceResponse:
        group_id = domain.parse_balance(request.name)
        self._authorize(group_id, context)
        members = self._directory.recent_members(group_id, context)
        with self._transaction(read_only=True) as session:
            update_time, nets = storage.group_snapshot(session, group_id)
        balance = views.group_balance(request.name, nets, members, update_time)
        return pb.GetGroupBalanceResponse(balance=balance)

    def GetUserBalance(
        self, request: pb.GetUserBalanceRequest, context: grpc.ServicerContext
    ) -> pb.GetUserBalanceResponse:
        user_id = domain.parse_user_balance(request.name)
        authz.require_self(domain.user_name(user_id), "name")
        self._directory.require_user(user_id, context)
        with self._transaction(read_only=True) as session:
            # The counterparties add up to the totals only in one state.
            repeatable_read(session)
            nets = storage.user_balances(session, user_id)
            versions = storage.user_pair_versions(session, user_id)
            netted = self._pairwise.lines(session, versions)
        counterparties = [
            (group_id, currency, counterparty, amount)
            for (group_id, currency), entry in netted.items()
            for counterparty, amount in entry.counterparties(user_id)
        ]
        balance = views.user_balance(request.name, nets, counterparties)
        return pb.GetUserBalanceResponse(balance=balance)

    def CheckSettled(
        self, request: pb.CheckSettledRequest, context: grpc.ServicerContext
    ) -> pb.CheckSettledResponse:
        group_id = domain.parse_balance(request.name)
        self._authorize(group_id, context)
        user_id = domain.parse_user(request.user, "user") if request.user else None
        self._require_group(group_id, context)
        if self._fence is not None:
            group = domain.group_name(group_id)
            deadline = time.monotonic() + self._fence_timeout(context)
            self._wait_for_settlements(group, deadline - time.monotonic())
            self._fence.catch_up(
                max(deadline - time.monotonic(), 0.0), request.name, group
            )
        with self._transaction(read_only=True) as session:
            rows = storage.unsettled_balances(session, group_id, user_id)
            known = user_id is None or bool(rows)
            if not known:
                known = storage.has_balance(
                    session, group_id, user_id
                ) or storage.was_checked_member(session, group_id, user_id)
        if not known:
            self._require_member(group_id, user_id, context)
        return pb.CheckSettledResponse(
            settled=not rows,
            unsettled_balances=[
                pb.MemberBalance(
                    user=domain.user_name(row.user_id),
                    net_amount=domain.to_money(row.net, row.currency_code),
                )
                for row in rows
            ],
        )

    def _require_member(
        self, group_id: str, user_id: str, context: grpc.ServicerContext
    ) -> None:
        """Reject a CheckSettled `user` who has no balance and was never a member.

        A settled response for such a user would read as a settled member, so
        they get NOT_A_GROUP_MEMBER, as in ExplainBalance. A former member is
        settled: one whose balance is back at zero has a balance row, and one
        whom nothing ever named has the record that this check stores for a
        member without a row (`storage.CheckedMemberRow`). user_service calls
        CheckSettled for every member before it removes them. When
        user_service does not respond, the user counts as settled, as
        `_require_group` skips its check then.

        NOTE: a member removed without that call, such as one removed before
        balance_service stored the records, or by a user_service whose
        balance guard permits every removal, has neither and gets
        NOT_A_GROUP_MEMBER.

        Raises:
          FailedPrecondition: the user is not a member (NOT_A_GROUP_MEMBER).
        """
        try:
            member = self._directory.is_member(group_id, user_id, context)
        except Unavailable:
            _LOGGER.warning(
                "CheckSettled of users/%s in groups/%s skips the member check: "
                "user_service did not respond",
                user_id,
                group_id,
            )
            return
        if not member:
            raise not_a_member(group_id, user_id, "user")
        with self._transaction() as session:
            storage.record_checked_member(session, group_id, user_id, storage.utc_now())

    def _require_group(self, group_id: str, context: grpc.ServicerContext) -> None:
        """Raise NOT_FOUND for a missing or deleted group, as GetGroup does.

        The balances of a deleted group stay stored but are not found. When
        user_service does not respond, the check is skipped, because the
        balances are this service's own data and a removal should not fail
        only because balance_service cannot reach user_service.
        """
        try:
            self._directory.recent_members(group_id, context)
        except Unavailable:
            _LOGGER.warning(
                "CheckSettled of groups/%s skips the group check: user_service "
                "did not respond",
                group_id,
            )

    def _wait_for_settlements(self, group: str, timeout: float) -> None:
        """Wait for the settlement writes to `group` that started before the call.

        A settlement write checks membership before it commits, so one that
        checked before user_service marked a member as leaving may commit
        after the balances are read. Later writes see the mark and fail.

        Raises:
          Unavailable: some of those writes were still running after
            `timeout` seconds (reason WRITES_IN_FLIGHT). Nothing was
            checked.
        """
        pending = self._writes.wait_for_earlier(group, max(timeout, 0.0))
        if not pending:
            return
        _LOGGER.warning(
            "settlement writes of %s still running after %.2fs: %d",
            group,
            timeout,
            pending,
        )
        raise Unavailable(
            f"cannot check the balances of {group!r}: {pending} settlement "
            f"writes to the group that started before the check were still "
            f"running after {max(timeout, 0.0):.2f}s, so the balances might "
            "miss them; nothing was checked, retry in a moment",
            reason="WRITES_IN_FLIGHT",
            metadata={"group": group, "writes": str(pending)},
            retry_delay=RETRY_DELAY_SECONDS,
            final_attempt=True,
        )

    def _fence_timeout(self, context: grpc.ServicerContext) -> float:
        """Return the seconds CheckSettled may wait for the ledger.

        The wait ends `_ANSWER_MARGIN_SECONDS` before the caller's deadline,
        so the caller receives this service's error, not DEADLINE_EXCEEDED.
        """
        remaining = context.time_remaining()
        if remaining is None:
            return self._check_seconds
        return max(0.0, min(remaining, self._check_seconds) - _ANSWER_MARGIN_SECONDS)

    def ComputeSettlementPlan(
        self, request: pb.ComputeSettlementPlanRequest, context: grpc.ServicerContext
    ) -> pb.ComputeSettlementPlanResponse:
        group_id = domain.parse_balance(request.name)
        self._authorize(group_id, context)
        currency = None
        if request.currency_code:
            currency = domain.check_currency(request.currency_code, "currency_code")
        self._directory.recent_members(group_id, context)
        with self._transaction(read_only=True) as session:
            rows = storage.group_nets(session, group_id)
        nets: dict[str, dict[str, int]] = defaultdict(dict)
        for code, user_id, net in rows:
            if currency is None or code == currency:
                nets[code][domain.user_name(user_id)] = net
        response = pb.ComputeSettlementPlanResponse(fewest_transfers=True)
        should_stop = _plan_stop_check(context)
        for code in sorted(nets):
            plan = plan_settlement(nets[code], should_stop=should_stop)
            if not plan.fewest_transfers:
                response.fewest_transfers = False
            for transfer in plan.transfers:
                response.transfers.add(
                    payer=transfer.payer,
                    payee=transfer.payee,
                    amount=domain.to_money(transfer.amount, code),
                )
        return response

    def ListPairwiseBalances(
        self, request: pb.ListPairwiseBalancesRequest, context: grpc.ServicerContext
    ) -> pb.ListPairwiseBalancesResponse:
        group_id = domain.parse_group(request.parent, "parent")
        self._authorize(group_id, context)
        violations = domain.Violations()
        size = violations.check(pagination.page_size, request.page_size)
        currency = None
        if request.currency_code:
            currency = violations.check(
                domain.check_currency, request.currency_code, "currency_code"
            )
        user_id = None
        if request.user:
            user_id = violations.check(domain.parse_user, request.user, "user")
        violations.raise_if_any()
        selector = ["ListPairwiseBalances", request.parent, currency, user_id]
        after = _string_key(
            pagination.decode_token(request.page_token, selector), request.page_token
        )
        self._directory.recent_members(group_id, context)
        with self._transaction(read_only=True) as session:
            # The versions and the pairs netted for them come from one state.
            repeatable_read(session)
            versions = storage.pair_versions(session, group_id, currency)
            netted = self._pairwise.lines(session, versions)
            page = _pairwise_page(netted, user_id, after, size + 1)
            # As in ExplainBalance: a user with lines has history, so only a
            # first page without lines needs the look-up.
            without_history = (
                user_id is not None
                and not page
                and after is None
                and not storage.has_balance(session, group_id, user_id)
            )
        # An empty list for someone outside the group would read as a settled
        # member, while a former member with history gets their lines, if any.
        if without_history and not self._directory.is_member(
            group_id, user_id, context
        ):
            raise not_a_member(group_id, user_id, "user")
        more = len(page) > size
        page = page[:size]
        response = pb.ListPairwiseBalancesResponse(
            pairwise_balances=[
                pb.PairwiseBalance(
                    debtor=domain.user_name(debtor),
                    creditor=domain.user_name(creditor),
                    amount=domain.to_money(amount, code),
                )
                for code, debtor, creditor, amount in page
            ]
        )
        if more:
            response.next_page_token = pagination.encode_token(
                list(page[-1][:3]), selector
            )
        return response

    def ExplainBalance(
        self, request: pb.ExplainBalanceRequest, context: grpc.ServicerContext
    ) -> pb.ExplainBalanceResponse:
        group_id = domain.parse_balance(request.name)
        self._authorize(group_id, context)
        violations = domain.Violations()
        user_id = violations.check(domain.parse_user, request.user, "user")
        currency = violations.check(
            domain.check_currency, request.currency_code, "currency_code"
        )
        counterparty = None
        if request.counterparty:
            counterparty = violations.check(
                domain.parse_user, request.counterparty, "counterparty"
            )
        size = violations.check(pagination.page_size, request.page_size)
        violations.raise_if_any()
        if counterparty == user_id:
            raise invalid_field(
                "counterparty",
                f"{request.counterparty!r} is the explained user; give another "
                "member, or leave it empty",
                reason="SAME_USER",
            )
        selector = ["ExplainBalance", request.name, user_id, currency, counterparty]
        after, running = _explain_token(
            pagination.decode_token(request.page_token, selector),
            group_id,
            request.page_token,
        )
        self._directory.recent_members(group_id, context)
        with self._transaction(read_only=True) as session:
            # The net amount, the items and their lines come from one state.
            repeatable_read(session)
            if counterparty is None:
                net = storage.member_nets(session, group_id, currency, [user_id])
                net_amount = net[user_id]
            else:
                net_amount = storage.pair_amount(
                    session, group_id, currency, user_id, counterparty
                )
                # Cancelling cycles never makes a debt, so a pair without one
                # needs no netting.
                pairwise_amount = 0
                if net_amount:
                    pairwise_amount = self._pair_line(
                        session, group_id, currency, user_id, counterparty
                    )
            items = self._contributions(
                session, group_id, user_id, currency, counterparty, after, size + 1
            )
            # The users that no expense or settlement of the group names, in
            # any currency. Items of this request name both users, so only a
            # request without items needs the look-up.
            without_history = []
            if not items and after is None:
                without_history = [
                    (field_path, named)
                    for field_path, named in (
                        ("user", user_id),
                        ("counterparty", counterparty),
                    )
                    if named is not None
                    and not storage.has_balance(session, group_id, named)
                ]
        # A net of 0.00 for someone outside the group would read as a settled
        # member. A former member with history in the group is still
        # explained, with zeros for a currency or pair without items.
        for field_path, named in without_history:
            if not self._directory.is_member(group_id, named, context):
                raise not_a_member(group_id, named, field_path)

        page = items[:size]
        response = pb.ExplainBalanceResponse(
            net_amount=domain.to_money(net_amount, currency)
        )
        if counterparty is not None:
            response.circular_debt_adjustment.CopyFrom(
                domain.to_money(pairwise_amount - net_amount, currency)
            )
            response.pairwise_amount.CopyFrom(
                domain.to_money(pairwise_amount, currency)
            )
        for item in page:
            running += item.net_change_minor
            response.contributions.add(
                source=item.source,
                description=item.description,
                date=domain.date_message(item.day),
                paid_amount=domain.to_money(item.paid, currency),
                owed_amount=domain.to_money(item.owed, currency),
                net_change=domain.to_money(item.net_change_minor, currency),
                running_net_amount=domain.to_money(running, currency),
            )
        if len(items) > size:
            last = page[-1]
            response.next_page_token = pagination.encode_token(
                [
                    last.day.isoformat(),
                    last.create_time.isoformat(),
                    last.source,
                    running,
                ],
                selector,
            )
        return response

    def _pair_line(
        self,
        session: Session,
        group_id: str,
        currency: str,
        user_id: str,
        counterparty: str,
    ) -> int:
        """Return what the counterparty owes the user after cancelling cycles.

        Negative when the user owes the counterparty. The walk that cancels
        them runs only until this pair's debt is final.
        """
        versions = storage.pair_versions(session, group_id, currency)
        return sum(
            entry.owed(counterparty, user_id) - entry.owed(user_id, counterparty)
            for entry in self._pairwise.lines(session, versions).values()
        )

    @staticmethod
    def _contributions(
        session: Session,
        group_id: str,
        user_id: str,
        currency: str,
        counterparty: str | None,
        after: storage.ExplainPosition | None,
        limit: int,
    ) -> list[_Contribution]:
        """Return the first `limit` items behind a net amount after `after`.

        Items sort by date, create time, then source: an expense before a
        settlement, and ids in byte order within each kind. Both queries
        read at most `limit` rows from where `after` is.
        """
        items = []
        expenses = storage.explain_expenses(
            session, group_id, user_id, currency, counterparty, after, limit
        )
        pair_changes = {}
        if counterparty is not None:
            pair_changes = _pair_changes(
                session, group_id, user_id, counterparty, expenses
            )
        for expense in expenses:
            change = pair_changes.get(expense.expense_id, expense.paid - expense.owed)
            items.append(
                _Contribution(
                    kind=storage.EXPENSES,
                    item_id=expense.expense_id,
                    source=domain.expense_name(group_id, expense.expense_id),
                    description=expense.description,
                    day=expense.expense_date,
                    create_time=expense.create_time,
                    paid=expense.paid,
                    owed=expense.owed,
                    net_change_minor=change,
                )
            )
        settlements = storage.explain_settlements(
            session, group_id, user_id, currency, counterparty, after, limit
        )
        for row in settlements:
            paid = row.amount if row.payer_id == user_id else 0
            owed = row.amount if row.payee_id == user_id else 0
            items.append(
                _Contribution(
                    kind=storage.SETTLEMENTS,
                    item_id=row.id,
                    source=domain.settlement_name(group_id, row.id),
                    description=row.note,
                    day=row.settlement_date,
                    create_time=row.create_time,
                    paid=paid,
                    owed=owed,
                    net_change_minor=paid - owed,
                )
            )
        items.sort(key=lambda item: item.position)
        return items[:limit]

    def GetGroupReport(
        self, request: pb.GetGroupReportRequest, context: grpc.ServicerContext
    ) -> pb.GetGroupReportResponse:
        group_id = domain.parse_report(request.name)
        self._authorize(group_id, context)
        violations = domain.Violations()
        currency = violations.check(
            domain.check_currency, request.currency_code, "currency_code"
        )
        start = violations.check(
            domain.optional_date, request, "start_date", "start_date"
        )
        end = violations.check(domain.optional_date, request, "end_date", "end_date")
        violations.raise_if_any()
        if start is not None and end is not None and start > end:
            raise invalid_field(
                "end_date",
                f"{end.isoformat()} is before start_date {start.isoformat()}; give "
                "an end date on or after the start date",
                reason="INVALID_DATE_RANGE",
            )
        self._directory.recent_members(group_id, context)
        with self._transaction(read_only=True) as session:
            days = storage.report_by_day(session, group_id, currency, start, end)
            categories = storage.report_by_category(
                session, group_id, currency, start, end
            )
            members = storage.report_by_member(session, group_id, currency, start, end)
        report = pb.GroupReport(
            name=request.name,
            currency_code=currency,
            total_spent=domain.to_money(sum(total for _, total, _ in days), currency),
            expense_count=sum(count for _, _, count in days),
        )
        if start is not None:
            report.start_date.CopyFrom(domain.date_message(start))
        if end is not None:
            report.end_date.CopyFrom(domain.date_message(end))
        for category, total, count in sorted(categories, key=lambda c: (-c[1], c[0])):
            report.category_totals.add(
                category=category,
                amount=domain.to_money(total, currency),
                expense_count=count,
            )
        for user_id, paid, owed in members:
            report.member_totals.add(
                user=domain.user_name(user_id),
                paid_amount=domain.to_money(paid, currency),
                owed_amount=domain.to_money(owed, currency),
                net_amount=domain.to_money(paid - owed, currency),
            )
        for month, total, count in _months(days):
            report.month_totals.add(
                month=date_pb2.Date(year=month[0], month=month[1], day=0),
                amount=domain.to_money(total, currency),
                expense_count=count,
            )
        return pb.GetGroupReportResponse(report=report)

    # Settlements

    def CreateSettlement(
        self, request: pb.CreateSettlementRequest, context: grpc.ServicerContext
    ) -> pb.CreateSettlementResponse:
        group_id = domain.parse_group(request.parent, "parent")
        access = self._access(group_id, context)
        with access, self._writes.track(domain.group_name(group_id)):
            access.authorize()
            return self._create_settlement(group_id, request, context)

    def _create_settlement(
        self,
        group_id: str,
        request: pb.CreateSettlementRequest,
        context: grpc.ServicerContext,
    ) -> pb.CreateSettlementResponse:
        settlement, violations = request.settlement, domain.Violations()
        payer = violations.check(
            domain.parse_user, settlement.payer, "settlement.payer"
        )
        payee = violations.check(
            domain.parse_user, settlement.payee, "settlement.payee"
        )
        creator = violations.check(
            _parse_author, settlement.creator, "settlement.creator"
        )
        amount = violations.check(
            domain.to_minor, settlement.amount, "settlement.amount"
        )
        day = None
        if date_given(settlement, "settlement_date"):
            day = violations.check(
                domain.to_settlement_date,
                settlement.settlement_date,
                "settlement.settlement_date",
            )
        else:
            violations.errors.append(
                invalid_field(
                    "settlement.settlement_date",
                    "is required; give the day of the payment, "
                    + date_example("settlement.settlement_date"),
                    reason="REQUIRED",
                )
            )
        max_note = limits.current().max_notes_length
        if len(settlement.note) > max_note:
            violations.errors.append(
                invalid_field(
                    "settlement.note",
                    f"has {len(settlement.note)} characters, more than the maximum "
                    f"of {max_note} (max_notes_length); shorten it",
                    reason="NOTE_TOO_LONG",
                )
            )
        control = find_control_character(settlement.note, allowed=NOTE_CONTROLS)
        if control is not None:
            violations.errors.append(
                invalid_field(
                    "settlement.note",
                    f"contains the control character U+{ord(control):04X}; "
                    "remove it (line breaks and tabs are allowed)",
                    reason="INVALID_NOTE",
                )
            )
        if request.settlement_id:
            violations.check(check_id, request.settlement_id, "settlement_id")
        request_id = violations.check(domain.check_request_id, request.request_id)
        violations.raise_if_any()
        currency, amount_minor = amount
        if amount_minor <= 0:
            raise invalid_field(
                "settlement.amount",
                f"{domain.format_money(amount_minor, currency)} is not positive; "
                "record the payment from the member who paid, with a positive "
                "amount",
                reason="AMOUNT_NOT_POSITIVE",
            )
        if payer == payee:
            raise invalid_field(
                "settlement.payee",
                f"{settlement.payee!r} is also the payer; a settlement goes from "
                "one member to another",
                reason="SAME_PAYER_AND_PAYEE",
            )

        authz.require_acting_as_caller(domain.user_name(creator), "settlement.creator")
        members = self._member_states_for_write(group_id, context)
        # A former member or a deactivated one may be named to settle what
        # remains of their balance (`balance_service.former_members`). With a
        # deactivated creator the call fails anyway, and the error names every
        # field of that user.
        settling_deactivated = creator not in members.deactivated
        former = [
            dataclasses.replace(
                named, deactivated_member=named.user_id in members.deactivated
            )
            for named in (
                Named(payer, "settlement.payer", pays=True),
                Named(payee, "settlement.payee", pays=False),
            )
            if named.user_id not in members.all
            or (settling_deactivated and named.user_id in members.deactivated)
        ]
        former_ids = {named.user_id for named in former}
        _require_members(
            group_id,
            members,
            [
                (user_id, field_path)
                for user_id, field_path in (
                    (payer, "settlement.payer"),
                    (payee, "settlement.payee"),
                )
                if user_id not in former_ids
            ]
            + [(creator, "settlement.creator")],
            active=True,
            filled=() if settlement.creator else ("settlement.creator",),
        )

        request_hash = None
        if request_id:
            request_hash = _settlement_hash(
                group_id,
                request.settlement_id,
                (payer, payee, creator),
                amount,
                day,
                settlement.note,
            )

        def replay(session: Session) -> pb.Settlement | None:
            earlier = storage.find_request(session, "CreateSettlement", request_id)
            if earlier is None:
                return None
            earlier_group, earlier_id = domain.parse_settlement(earlier.resource_name)
            if earlier_group != group_id:
                raise _ReusedInGroup(earlier_group)
            check_same_request(
                earlier.request_hash, request_hash, request_id, "settlement"
            )
            return settlement_message(self._require(session, earlier_group, earlier_id))

        def create(session: Session) -> pb.Settlement:
            if request_id:
                replayed = replay(session)
                if replayed is not None:
                    return replayed
            settlement_id = request.settlement_id or new_id()
            if storage.get_settlement(session, group_id, settlement_id) is not None:
                # Under READ COMMITTED a concurrent create with the same
                # request_id can commit between the two look-ups.
                replayed = replay(session) if request_id else None
                if replayed is not None:
                    return replayed
                name = domain.settlement_name(group_id, settlement_id)
                raise AlreadyExists(
                    f"settlement {name!r} already exists; pick another "
                    "settlement_id, or leave it empty",
                    reason="SETTLEMENT_ALREADY_EXISTS",
                    resource=Resource(domain.SETTLEMENT_TYPE, name),
                )
            # Before the balance rows, which every settlement write locks after
            # the volume row.
            _add_settlement_volume(session, group_id, currency, amount_minor)
            if former:
                # Payer and payee rows are locked in the order in which the
                # balances are written, so a concurrent settlement of the same
                # balance reads this one's change.
                nets = storage.member_nets(
                    session, group_id, currency, (payer, payee), lock=True
                )
                former_members.check_settles(
                    group_id, former, nets, amount_minor, currency
                )
            now = storage.utc_now()
            row = storage.SettlementRow(
                group_id=group_id,
                id=settlement_id,
                payer_id=payer,
                payee_id=payee,
                currency_code=currency,
                amount=amount_minor,
                settlement_date=day,
                note=settlement.note,
                creator_id=creator,
                create_time=now,
                update_time=now,
            )
            storage.add_settlement(session, row)
            changes = Changes()
            changes.add_settlement(row, 1)
            changes.write(session)
            storage.touch_group(session, group_id, now)
            if request_id:
                storage.remember_request(
                    session,
                    "CreateSettlement",
                    request_id,
                    domain.settlement_name(group_id, settlement_id),
                    request_hash,
                )
            return settlement_message(row)

        try:
            if former:
                replayed = self._check_former_members(
                    group_id, former, amount, context, replay if request_id else None
                )
                if replayed is not None:
                    return pb.CreateSettlementResponse(settlement=replayed)
            created = self._run_with_conflict_retry(create)
        except _ReusedInGroup as reused:
            raise self._reused_in_group(request_id, reused.group_id, context) from None
        return pb.CreateSettlementResponse(settlement=created)

    def _check_former_members(
        self,
        group_id: str,
        former: list[Named],
        amount: tuple[str, int],
        context: grpc.ServicerContext,
        replay: Callable[[Session], pb.Settlement | None] | None,
    ) -> pb.Settlement | None:
        """Check that former or deactivated members named on a new settlement
        may settle.

        The create checks their balances again, with the rows locked.

        Args:
          replay: returns the settlement created earlier with the request's
            `request_id`, if any; None without a `request_id`.

        Returns:
          The earlier settlement when the check fails but the request is a
          retry of a create that succeeded, because that create may have
          settled the balance. Otherwise None.

        Raises:
          FailedPrecondition: a former member has no balance that the
            settlement settles (NOT_A_GROUP_MEMBER), nor has a deactivated
            member (USER_DEACTIVATED).
          Unavailable: the balances could not catch up with the ledger.
        """
        currency, amount_minor = amount
        if self._fence is not None:
            # An expense change acknowledged a moment ago, such as the delete
            # that gave the former member this balance, must count.
            self._fence.catch_up(
                self._fence_timeout(context), domain.group_name(group_id)
            )
        with self._transaction(read_only=True) as session:
            nets = storage.member_nets(
                session, group_id, currency, [named.user_id for named in former]
            )
            try:
                former_members.check_settles(
                    group_id, former, nets, amount_minor, currency
                )
            except FailedPrecondition:
                replayed = replay(session) if replay is not None else None
                if replayed is None:
                    raise
                return replayed
        return None

    def _reused_in_group(
        self, request_id: str, earlier_group: str, context: grpc.ServicerContext
    ) -> InvalidArgument:
        """Build the error for a key used in another group.

        The group is named only to a caller who may see it.
        """
        caller = authz.restricted_user()
        where = "another group"
        if caller is None or self._directory.is_member(
            earlier_group, caller.removeprefix("users/"), context
        ):
            where = repr(domain.group_name(earlier_group))
        return key_reused(
            request_id,
            f"was already used to create a settlement in {where}",
            "Send a new UUID for each new settlement",
        )

    def _run_with_conflict_retry(self, work: Callable[[Session], _T]) -> _T:
        """Run `work`; after a unique-key conflict, once more to see the winner."""
        try:
            with self._transaction() as session:
                return work(session)
        except IntegrityError as exc:
            _LOGGER.info("retrying after a unique-key conflict: %s", exc.orig)
        with self._transaction() as session:
            return work(session)

    @staticmethod
    def _require(
        session: Session, group_id: str, settlement_id: str, lock: bool = False
    ) -> storage.SettlementRow:
        row = storage.get_settlement(session, group_id, settlement_id, lock=lock)
        if row is None:
            name = domain.settlement_name(group_id, settlement_id)
            raise NotFound(
                f"settlement {name!r} does not exist; check the name, or list the "
                "group's settlements with ListSettlements",
                reason="SETTLEMENT_NOT_FOUND",
                resource=Resource(domain.SETTLEMENT_TYPE, name),
            )
        return row

    def GetSettlement(
        self, request: pb.GetSettlementRequest, context: grpc.ServicerContext
    ) -> pb.GetSettlementResponse:
        group_id, settlement_id = domain.parse_settlement(request.name)
        self._authorize(group_id, context)
        with self._transaction(read_only=True) as session:
            settlement = settlement_message(
                self._require(session, group_id, settlement_id)
            )
        # The settlements of a deleted group stay stored but are not found.
        self._directory.recent_members(group_id, context)
        return pb.GetSettlementResponse(settlement=settlement)

    def ListSettlements(
        self, request: pb.ListSettlementsRequest, context: grpc.ServicerContext
    ) -> pb.ListSettlementsResponse:
        group_id = (
            domain.ALL_GROUPS
            if request.parent == "groups/-"
            else domain.parse_group(request.parent, "parent")
        )
        violations = domain.Violations()
        size = violations.check(pagination.page_size, request.page_size)
        participant = None
        if request.participant:
            participant = violations.check(
                domain.parse_user, request.participant, "participant"
            )
        start = violations.check(
            domain.optional_date, request, "start_date", "start_date"
        )
        end = violations.check(domain.optional_date, request, "end_date", "end_date")
        if request.order_by.strip() not in _ORDER_BY:
            violations.errors.append(
                invalid_field(
                    "order_by",
                    f"{request.order_by!r} is not a supported order; use "
                    "'settlement_date desc' (the default) or 'create_time desc'",
                    reason="INVALID_ORDER_BY",
                )
            )
        violations.raise_if_any()
        if group_id == domain.ALL_GROUPS and participant is None:
            raise invalid_field(
                "participant",
                "is required when parent is 'groups/-'; give the user whose "
                "settlements to list across every group",
                reason="REQUIRED",
            )
        if group_id == domain.ALL_GROUPS:
            authz.require_self(request.participant, "participant")
        else:
            self._authorize(group_id, context)
        by_create_time = _ORDER_BY[request.order_by.strip()]
        selector = [
            "ListSettlements",
            request.parent,
            participant,
            start,
            end,
            request.show_deleted,
            by_create_time,
        ]
        after = self._settlement_key(
            pagination.decode_token(request.page_token, selector),
            by_create_time,
            request.page_token,
        )
        if group_id == domain.ALL_GROUPS:
            self._directory.require_user(participant, context)
        else:
            self._directory.recent_members(group_id, context)
        with self._transaction(read_only=True) as session:
            rows = storage.list_settlements(
                session,
                group_id=None if group_id == domain.ALL_GROUPS else group_id,
                participant_id=participant,
                start=start,
                end=end,
                show_deleted=request.show_deleted,
                by_create_time=by_create_time,
                after=after,
                limit=size + 1,
            )
        page = rows[:size]
        if group_id == domain.ALL_GROUPS:
            # Settlements of groups that the caller has left, or that were
            # deleted, are dropped, so a page across every group may be short.
            page = self._in_visible_groups(page, context)
        response = pb.ListSettlementsResponse(
            settlements=[settlement_message(row) for row in page]
        )
        if len(rows) > size:
            last = rows[size - 1]
            value = last.create_time if by_create_time else last.settlement_date
            response.next_page_token = pagination.encode_token(
                [value.isoformat(), last.group_id, last.id], selector
            )
        return response

    def _in_visible_groups(self, rows: list, context: grpc.ServicerContext) -> list:
        """Keep the rows of groups that the caller may read now.

        Those are the groups the caller belongs to, or for a caller who may
        use every group, the groups that still exist.
        """
        caller = authz.restricted_user()
        if caller is None:
            existing = {
                group_id
                for group_id in {row.group_id for row in rows}
                if self._directory.group_exists(group_id, context)
            }
            return [row for row in rows if row.group_id in existing]
        caller_id = caller.removeprefix("users/")
        visible = {
            group_id
            for group_id in {row.group_id for row in rows}
            if self._directory.is_member(group_id, caller_id, context)
        }
        return [row for row in rows if row.group_id in visible]

    @staticmethod
    def _settlement_key(
        key: list | None, by_create_time: bool, token: str
    ) -> tuple | None:
        if key is None:
            return None
        try:
            value, group_id, settlement_id = key
            parse = datetime.fromisoformat if by_create_time else date.fromisoformat
            return (
                parse(value),
                check_id(group_id, "page_token"),
                check_id(settlement_id, "page_token"),
            )
        except (TypeError, ValueError):
            raise pagination.invalid_token(token) from None

    def DeleteSettlement(
        self, request: pb.DeleteSettlementRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSettlementResponse:
        row = self._set_deleted(request.name, request.etag, context, deleted=True)
        return pb.DeleteSettlementResponse(settlement=row)

    def UndeleteSettlement(
        self, request: pb.UndeleteSettlementRequest, context: grpc.ServicerContext
    ) -> pb.UndeleteSettlementResponse:
        row = self._set_deleted(request.name, request.etag, context, deleted=False)
        return pb.UndeleteSettlementResponse(settlement=row)

    def _set_deleted(
        self, name: str, etag: str, context: grpc.ServicerContext, *, deleted: bool
    ) -> pb.Settlement:
        """Delete or restore a settlement and move the balances with it."""
        group_id, settlement_id = domain.parse_settlement(name)
        access = self._access(group_id, context)
        with access, self._writes.track(domain.group_name(group_id)):
            access.authorize()
            return self._write_deleted(
                group_id, settlement_id, name, etag, context, deleted=deleted
            )

    def _write_deleted(
        self,
        group_id: str,
        settlement_id: str,
        name: str,
        etag: str,
        context: grpc.ServicerContext,
        *,
        deleted: bool,
    ) -> pb.Settlement:
        expected = domain.parse_etag(etag)
        # A deleted group's settlements are not found, whatever their state.
        self._directory.recent_members(group_id, context)
        with self._transaction() as session:
            row = self._require(session, group_id, settlement_id)
            if deleted and row.delete_time is not None:
                return settlement_message(row)
            if expected is not None and expected != row.version:
                resource = Resource(domain.SETTLEMENT_TYPE, name)
                raise stale_etag("etag", expected, row.version, resource)
            if not deleted and row.delete_time is None:
                raise AlreadyExists(
                    f"settlement {name!r} is not deleted, so there is nothing to "
                    "restore",
                    reason="SETTLEMENT_NOT_DELETED",
                    resource=Resource(domain.SETTLEMENT_TYPE, name),
                )
            seen_version = row.version
        _require_members(
            group_id,
            self._member_states_for_write(group_id, context),
            [
                (row.payer_id, "the settlement's payer"),
                (row.payee_id, "the settlement's payee"),
            ],
            active=not deleted,
            fix=_DELETE_FIX if deleted else _UNDELETE_FIX,
        )
        with self._transaction() as session:
            row = self._require(session, group_id, settlement_id, lock=True)
            if deleted and row.delete_time is not None:
                # A concurrent delete won; the result is the same.
                return settlement_message(row)
            if row.version != seen_version:
                raise Aborted(
                    f"{name!r} changed while the request ran; read it again and retry",
                    reason="CONCURRENT_MODIFICATION",
                    resource=Resource(domain.SETTLEMENT_TYPE, name),
                )
            _add_settlement_volume(
                session,
                group_id,
                row.currency_code,
                -row.amount if deleted else row.amount,
            )
            now = storage.utc_now()
            row.delete_time = now if deleted else None
            row.update_time = now
            session.flush()
            changes = Changes()
            changes.add_settlement(row, -1 if deleted else 1)
            changes.write(session)
            storage.touch_group(session, group_id, now)
            return settlement_message(row)


def _pair_changes(
    session: Session,
    group_id: str,
    user_id: str,
    counterparty: str,
    expenses: Sequence[Row],
) -> dict[str, int]:
    """Return what each expense changed in what the counterparty owes the user.

    That is the counterparty's part owed to the user minus the user's part
    owed to the counterparty, by the rule of `balance_service.allocation`.
    When one member paid the whole non-zero total, every participant owes
    that payer exactly what they owe, so the two members' own lines give
    the change. Only an expense with several payers, or with nothing paid,
    is allocated in full from all its lines, which costs time in proportion
    to its payers times its participants.
    """
    counts = storage.payer_counts(
        session, group_id, [expense.expense_id for expense in expenses]
    )
    changes = {}
    shared = []
    for expense in expenses:
        if counts.get(expense.expense_id) != 1:
            shared.append(expense.expense_id)
        elif expense.paid:
            changes[expense.expense_id] = expense.their_owed
        elif expense.their_paid:
            changes[expense.expense_id] = -expense.owed
        else:
            changes[expense.expense_id] = 0
    all_lines = storage.lines_of_expenses(session, group_id, shared)
    for expense_id, lines in all_lines.items():
        parts = allocation.allocate(
            {line.user_id: line.paid for line in lines},
            {line.user_id: line.owed for line in lines},
        )
        changes[expense_id] = parts.get((counterparty, user_id), 0) - parts.get(
            (user_id, counterparty), 0
        )
    return changes


def _pairwise_page(
    netted: Mapping[tuple[str, str], NettedLines],
    user_id: str | None,
    after: list[str] | None,
    limit: int,
) -> list[tuple[str, str, str, int]]:
    """Return up to `limit` pairwise lines after `after`, in page order.

    Lines sort by currency, debtor and creditor; `after` is the `[currency,
    debtor, creditor]` of the last line of the previous page. Only lines of
    `user_id` count when it is given.
    """
    page: list[tuple[str, str, str, int]] = []
    for (_, code), entry in sorted(netted.items(), key=lambda item: item[0][1]):
        start = 0
        if after is not None:
            if code < after[0]:
                continue
            if code == after[0]:
                start = entry.after(after[1], after[2])
        for debtor, creditor, amount in entry.lines[start:]:
            if user_id is None or user_id in (debtor, creditor):
                page.append((code, debtor, creditor, amount))
                if len(page) == limit:
                    return page
    return page


@dataclass(frozen=True)
class _Contribution:
    """One expense or settlement behind a net amount, in minor units."""

    kind: str
    item_id: str
    source: str
    description: str
    day: date
    create_time: datetime
    paid: int
    owed: int
    net_change_minor: int

    @property
    def position(self) -> storage.ExplainPosition:
        return (self.day, self.create_time, self.kind, self.item_id)


def _months(
    days: list[tuple[date, int, int]],
) -> list[tuple[tuple[int, int], int, int]]:
    """Roll daily totals into months, oldest first, leaving out empty months.

    Empty months are left out because filling them in would tie the size of
    a report to the span of the dates rather than to the number of expenses.
    Two expenses dated in years 1 and 9999 would otherwise fill 119,988 months.
    """
    totals: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for day, total, count in days:
        totals[day.year, day.month][0] += total
        totals[day.year, day.month][1] += count
    return [(month, total, count) for month, (total, count) in sorted(totals.items())]
