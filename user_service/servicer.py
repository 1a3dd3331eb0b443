"""The gRPC handlers of `splitlog.users.v1.UsersService`.

Each handler validates the request, runs the domain and storage calls in one
database transaction and builds the response. Errors are raised as
`DomainError`s and turned into status codes by the runtime's interceptor.

Choices that the proto leaves open:
- A replayed `request_id` returns the resource that the first request
  created, in its current state. The same key with other values (any
  checked field but `request_id`) fails with INVALID_ARGUMENT, reason
  REQUEST_ID_REUSED, as in expense_service and balance_service
  (`splitlog_runtime.idempotency`). A CreateGroup retry may still name the
  currency that an empty `currency_code` gave the group at creation, or the
  other way round, also after UpdateGroup changed the group's currency
  (`user_service.request_hashes`). Keys are kept forever; keys stored
  before request hashes were kept replay whatever comes.
- Deactivating a deactivated user succeeds and changes nothing, so a retried
  DeactivateUser does not fail with FAILED_PRECONDITION. The etag is then not
  checked, because nothing is written.
- DeactivateUser revokes the user's sessions and API keys in the transaction
  that sets the state, so user_service accepts none of its credentials afterwards.
- A deactivated user may still be updated, read and listed with its groups.
- While DeactivateUser checks balances, the user cannot join or create a
  group (FAILED_PRECONDITION, reason USER_DEACTIVATING), so that every
  group the user is in at the end has been checked
  (`user_service.deactivations`).
- The last member of a group cannot leave it; delete the group instead.
  A group without members would be unreachable, because ListGroups lists
  groups by member.
- A group's etag covers its own fields; members joining or leaving do not
  change it.

With `auth_required` on, `splitlog_runtime.authz` limits each call:
- CreateUser needs an administrator; users create their account with SignUp.
- GetUser, UpdateUser, DeactivateUser and ListGroups accept only the
  caller's own account, and ListUsers returns only the caller's account.
- CreateGroup needs `group.creator` to be the caller, who becomes its first
  member. An empty `group.creator` names the caller (with auth off it is
  required).
- Every other group method needs the caller to be a member of the group, and
  then any member may rename or delete the group and add or remove any
  member. Membership is read from this service's database on each call, so a
  removed member loses access here at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from splitlog.users.v1 import users_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2_grpc as pb_grpc
from splitlog_runtime import authz, pagination
from splitlog_runtime.database import Database, repeatable_read
from splitlog_runtime.errors import (
    MAX_LISTED_IN_MESSAGE,
    MAX_TEXT_LENGTH,
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
    Resource,
    Unavailable,
    invalid_field,
    join_whole,
)
from splitlog_runtime.etags import stale_etag
from splitlog_runtime.idempotency import check_same_request, values_hash
from splitlog_runtime.resources import ID_PATTERN, new_id
from user_service import (
    auth_storage,
    deactivations,
    domain,
    removals,
    request_hashes,
    storage,
)
from user_service.guards import SETTLE_ADVICE, UNSETTLED_BALANCE, BalanceGuard

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["UsersService"].full_name

_STATES = {
    domain.STATE_ACTIVE: pb.User.STATE_ACTIVE,
    domain.STATE_DEACTIVATED: pb.User.STATE_DEACTIVATED,
}


# Conversions to messages


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)  # naive datetimes are read as UTC
    return stamp


def user_message(user: storage.UserRow) -> pb.User:
    return pb.User(
        name=domain.user_name(user.id),
        email=user.email,
        display_name=user.display_name,
        currency_code=user.currency_code,
        state=_STATES[user.state],
        create_time=_timestamp(user.create_time),
        update_time=_timestamp(user.update_time),
        etag=domain.format_etag(user.version),
    )


def group_message(group: storage.GroupRow, member_count: int) -> pb.Group:
    return pb.Group(
        name=domain.group_name(group.id),
        display_name=group.display_name,
        creator=domain.user_name(group.creator_id),
        currency_code=group.currency_code,
        member_count=member_count,
        create_time=_timestamp(group.create_time),
        update_time=_timestamp(group.update_time),
        etag=domain.format_etag(group.version),
    )


def member_message(
    member: storage.MemberRow, user: storage.UserRow, leaving: bool = False
) -> pb.Member:
    return pb.Member(
        name=domain.member_name(member.group_id, member.user_id),
        user=domain.user_name(user.id),
        display_name=user.display_name,
        join_time=_timestamp(member.join_time),
        user_state=_STATES[user.state],
        leaving=leaving,
    )


# Shared checks


def _check_etag(
    expected: int | None, current: int, resource: Resource, field: str
) -> None:
    if expected is not None and expected != current:
        raise stale_etag(field, expected, current, resource)


def require_active(user: storage.UserRow, action: str) -> None:
    if user.state == domain.STATE_DEACTIVATED:
        name = domain.user_name(user.id)
        raise FailedPrecondition(
            f"user {name!r} is deactivated and cannot {action}; use an active user",
            reason="USER_DEACTIVATED",
            metadata={"user": name},
            preconditions=[
                PreconditionViolation(
                    "USER_DEACTIVATED", name, f"a deactivated user cannot {action}"
                )
            ],
        )


def _deactivate(session: Session, row: storage.UserRow) -> tuple[int, int]:
    """Deactivate a user and revoke its sessions and API keys.

    A deactivated user cannot sign in, and the credentials it already has
    must stop working too: refresh tokens, the access tokens of its sessions
    and its API keys. Returns the counts of revoked sessions and keys.
    """
    now = storage.utc_now()
    row.state = domain.STATE_DEACTIVATED
    row.update_time = now
    sessions = auth_storage.revoke_sessions_of_user(session, row.id, now)
    keys = auth_storage.revoke_api_keys_of_user(session, row.id, now)
    return sessions, keys


def _parse_author(name: str, field: str) -> str:
    """Return the user id of a write's author, the caller's if `name` is empty."""
    return domain.parse_user_name(authz.author_or_caller(name, field), field)


def _check_creator_unchanged(creator: str, row: storage.GroupRow) -> None:
    """Reject an update whose body changes the immutable `creator`.

    An empty or '*' mask takes the whole body, and an empty creator or the
    stored one is accepted, so a client can send back a group it read.
    """
    stored = domain.user_name(row.creator_id)
    if creator and creator != stored:
        raise invalid_field(
            "group.creator",
            f"{creator!r} differs from the creator {stored!r}, and the creator "
            "cannot change after the group is created; send the stored creator "
            "or leave the field empty",
            reason="FIELD_IMMUTABLE",
        )


def _page_key(key: list | None, token: str) -> tuple[datetime, str] | None:
    """Read the (time, id) key stored in a page token.

    Raises:
      InvalidArgument: the key does not have that form; the message quotes
        `token`, the page_token of the request.
    """
    if key is None:
        return None
    try:
        when, resource_id = key
        if not isinstance(resource_id, str) or not ID_PATTERN.match(resource_id):
            raise ValueError(resource_id)
        return datetime.fromisoformat(when), resource_id
    except (TypeError, ValueError):
        raise pagination.invalid_token(token) from None


def _next_token(rows: list, size: int, key: Callable, selector: list) -> str:
    if len(rows) <= size:
        return ""
    when, resource_id = key(rows[size - 1])
    return pagination.encode_token([when.isoformat(), resource_id], selector)


def _authorize_group(session: Session, group_id: str) -> None:
    """Raise PERMISSION_DENIED unless the caller may use the group.

    The check runs before the group is looked up, so a missing group and a
    group of others give the same error. The error for a deleted group
    states that it was deleted.
    """

    def is_member(user: str) -> bool:
        user_id = user.removeprefix("users/")
        return storage.get_member(session, group_id, user_id) is not None

    authz.require_group_member(
        domain.group_name(group_id),
        is_member,
        is_deleted=lambda: storage.is_deleted_group(session, group_id),
    )


@contextmanager
def transaction(database: Database, read_only: bool = False) -> Iterator[Session]:
    """Run one unit of work; a lost optimistic-lock race becomes ABORTED.

    Raises:
      Aborted: another transaction changed or deleted a row that this one
        updates or deletes (SQLAlchemy's StaleDataError from `version_id_col`).
    """
    try:
        with database.transaction(read_only) as session:
            yield session
    except StaleDataError:
        raise Aborted(
            "the resource was changed by a concurrent request; read it again and retry",
            reason="CONCURRENT_MODIFICATION",
        ) from None


def _open_balances(
    user_name: str, owed: dict[str, PreconditionViolation]
) -> FailedPrecondition:
    """Build the error of a deactivation that found open balances.

    The message lists the open balances of as many groups as fit it whole and
    counts the other groups. The PreconditionFailure has the guard's
    violation of each group, whose subject is the user's membership in that
    group. `DomainError.to_status` counts the violations that do not fit the
    status in the ErrorInfo metadata (`OMITTED_VIOLATIONS_KEY`).

    Args:
      owed: the guard's violation of each unsettled group, by group name.
    """
    count = f"{len(owed)} groups" if len(owed) > 1 else "1 group"
    start = f"{user_name!r} cannot be deactivated while a balance is open in {count}: "
    end = f"; {SETTLE_ADVICE}, then deactivate again"
    suffix = f"; {SETTLE_ADVICE}"
    listed = join_whole(
        [violation.description.removesuffix(suffix) for violation in owed.values()],
        "; ",
        MAX_TEXT_LENGTH - len(start) - len(end),
        "group",
        "groups",
        limit=MAX_LISTED_IN_MESSAGE,
    )
    return FailedPrecondition(
        f"{start}{listed}{end}",
        reason=UNSETTLED_BALANCE,
        metadata={
            "user": user_name,
            "group": next(iter(owed)),
            "unsettled_groups": str(len(owed)),
        },
        preconditions=list(owed.values()),
    )


class UsersServicer(pb_grpc.UsersServiceServicer):
    """Users, groups and memberships stored in one database."""

    def __init__(self, database: Database, guard: BalanceGuard) -> None:
        self._database = database
        self._guard = guard

    def _transaction(self, read_only: bool = False):
        return transaction(self._database, read_only)

    def _run_with_conflict_retry(self, work: Callable[[Session], _T]) -> _T:
        """Run `work` in a transaction; after a unique-key conflict, once more.

        Concurrent requests can pass the existence checks together, and then
        the loser's INSERT hits a unique index. On the second run its checks
        see the winner's committed row and raise ALREADY_EXISTS (or replay a
        request_id) instead of an internal error.
        """
        try:
            with self._transaction() as session:
                return work(session)
        except IntegrityError as exc:
            _LOGGER.info("retrying after a unique-key conflict: %s", exc.orig)
        with self._transaction() as session:
            return work(session)

    # Users

    def CreateUser(
        self, request: pb.CreateUserRequest, context: grpc.ServicerContext
    ) -> pb.CreateUserResponse:
        authz.require_admin("CreateUser")
        user, violations = request.user, domain.Violations()
        email = violations.check(domain.validate_email, user.email, "user.email")
        display_name = violations.check(
            domain.validate_display_name, user.display_name, "user.display_name"
        )
        currency = domain.DEFAULT_CURRENCY
        if user.currency_code:
            currency = violations.check(
                domain.validate_currency_code, user.currency_code, "user.currency_code"
            )
        if request.user_id:
            violations.check(domain.validate_new_id, request.user_id, "user_id")
        request_id = violations.check(domain.validate_request_id, request.request_id)
        violations.raise_if_any()
        request_hash = values_hash([request.user_id, email, display_name, currency])

        def replay(session: Session) -> pb.User | None:
            earlier = storage.find_request(session, "CreateUser", request_id)
            if earlier is None:
                return None
            check_same_request(earlier.request_hash, request_hash, request_id, "user")
            replayed = domain.parse_user_name(earlier.resource_name, "request_id")
            return user_message(storage.require_user(session, replayed))

        def create(session: Session) -> pb.User:
            replayed = replay(session) if request_id else None
            if replayed is not None:
                return replayed
            user_id = request.user_id or new_id()
            try:
                self._check_new_user(session, user_id, email)
            except AlreadyExists:
                # Under READ COMMITTED a concurrent create with the same
                # request_id can commit between the look-ups. Replay it.
                replayed = replay(session) if request_id else None
                if replayed is None:
                    raise
                return replayed
            now = storage.utc_now()
            row = storage.UserRow(
                id=user_id,
                currency_code=currency,
                state=domain.STATE_ACTIVE,
                create_time=now,
                update_time=now,
            )
            row.set_email(email)
            row.set_display_name(display_name)
            storage.add_user(session, row)
            if request_id:
                storage.remember_request(
                    session,
                    "CreateUser",
                    request_id,
                    domain.user_name(user_id),
                    request_hash,
                )
            return user_message(row)

        return pb.CreateUserResponse(user=self._run_with_conflict_retry(create))

    def _check_new_user(self, session: Session, user_id: str, email: str) -> None:
        if storage.get_user(session, user_id) is not None:
            name = domain.user_name(user_id)
            raise AlreadyExists(
                f"user {name!r} already exists; choose another user_id or leave it "
                "empty to get a generated one",
                reason="USER_ALREADY_EXISTS",
                resource=Resource(domain.USER_TYPE, name),
            )
        self._check_email_free(session, email, owner_id=None)

    @staticmethod
    def _check_email_free(session: Session, email: str, owner_id: str | None) -> None:
        """Raise EMAIL_TAKEN if another user has the uniqueness key of `email`.

        The error names the email but not the other user, so that it cannot
        be used to map addresses to user ids: SignUp callers are
        unauthenticated. So ResourceInfo has the user type and an empty
        `resource_name`, and the email goes in its description and in the
        ErrorInfo metadata key `email`, as the request spelled it.
        """
        holder = storage.find_user_by_email(session, email)
        if holder is not None and holder.id != owner_id:
            raise AlreadyExists(
                f"the email {email!r} already belongs to another user (emails are "
                "unique whatever their case, width or compatibility form); use "
                "another address",
                reason="EMAIL_TAKEN",
                metadata={"email": email},
                resource=Resource(
                    domain.USER_TYPE,
                    "",
                    f"a user with the email {email!r} exists; its name is not "
                    "disclosed",
                ),
            )

    def GetUser(
        self, request: pb.GetUserRequest, context: grpc.ServicerContext
    ) -> pb.GetUserResponse:
        user_id = domain.parse_user_name(request.name, "name")
        authz.require_self(domain.user_name(user_id), "name")
        with self._transaction(read_only=True) as session:
            user = storage.require_user(session, user_id)
            return pb.GetUserResponse(user=user_message(user))

    def ListUsers(
        self, request: pb.ListUsersRequest, context: grpc.ServicerContext
    ) -> pb.ListUsersResponse:
        size = pagination.page_size(request.page_size)
        user_filter = domain.parse_user_filter(request.filter)
        selector = ["ListUsers", user_filter.canonical()]
        after = _page_key(
            pagination.decode_token(request.page_token, selector), request.page_token
        )
        # A restricted caller sees only their own account.
        only = authz.restricted_user()
        only_id = only.removeprefix("users/") if only else None
        with self._transaction(read_only=True) as session:
            rows = list(
                storage.list_users(session, user_filter, after, size + 1, only_id)
            )
        return pb.ListUsersResponse(
            users=[user_message(row) for row in rows[:size]],
            next_page_token=_next_token(
                rows, size, lambda row: (row.create_time, row.id), selector
            ),
        )

    def UpdateUser(
        self, request: pb.UpdateUserRequest, context: grpc.ServicerContext
    ) -> pb.UpdateUserResponse:
        user, violations = request.user, domain.Violations()
        user_id = violations.check(domain.parse_user_name, user.name, "user.name")
        if user_id:
            authz.require_self(domain.user_name(user_id), "user.name")
        expected = violations.check(domain.parse_etag, user.etag, "user.etag")
        populated = [name for name in domain.USER_MASK.mutable if getattr(user, name)]
        fields = violations.check(
            domain.resolve_update_mask,
            list(request.update_mask.paths),
            domain.USER_MASK,
            populated,
        )
        violations.raise_if_any()
        changes = {}
        if "email" in fields:
            changes["email"] = violations.check(
                domain.validate_email, user.email, "user.email"
            )
        if "display_name" in fields:
            changes["display_name"] = violations.check(
                domain.validate_display_name, user.display_name, "user.display_name"
            )
        if "currency_code" in fields:
            changes["currency_code"] = domain.DEFAULT_CURRENCY
            if user.currency_code:
                changes["currency_code"] = violations.check(
                    domain.validate_currency_code,
                    user.currency_code,
                    "user.currency_code",
                )
        violations.raise_if_any()

        def update(session: Session) -> pb.User:
            row = storage.require_user(session, user_id)
            resource = Resource(domain.USER_TYPE, domain.user_name(user_id))
            _check_etag(expected, row.version, resource, "user.etag")
            if "email" in changes:
                self._check_email_allowed(row, changes["email"])
                self._check_email_free(session, changes["email"], owner_id=row.id)
            if self._apply_user_changes(row, changes):
                row.update_time = storage.utc_now()
                session.flush()
            return user_message(row)

        return pb.UpdateUserResponse(user=self._run_with_conflict_retry(update))

    @staticmethod
    def _check_email_allowed(row: storage.UserRow, email: str) -> None:
        """Reject a new `.invalid` address unless an administrator sets it.

        A user who keeps the address they have (such as an imported user
        changing their display name with the email in the mask) passes.
        """
        if authz.restricted_user() is None:
            return
        if domain.normalise_email(email) == row.email_normalised:
            return
        domain.check_email_not_reserved(email, "user.email")

    @staticmethod
    def _apply_user_changes(row: storage.UserRow, changes: dict[str, str]) -> bool:
        """Copy the changed values onto the row; return whether any differed."""
        changed = False
        if "email" in changes and changes["email"] != row.email:
            row.set_email(changes["email"])
            changed = True
        if "display_name" in changes and changes["display_name"] != row.display_name:
            row.set_display_name(changes["display_name"])
            changed = True
        currency = changes.get("currency_code")
        if currency is not None and currency != row.currency_code:
            row.currency_code = currency
            changed = True
        return changed

    def DeactivateUser(
        self, request: pb.DeactivateUserRequest, context: grpc.ServicerContext
    ) -> pb.DeactivateUserResponse:
        violations = domain.Violations()
        user_id = violations.check(domain.parse_user_name, request.name, "name")
        expected = violations.check(domain.parse_etag, request.etag, "etag")
        violations.raise_if_any()
        authz.require_self(domain.user_name(user_id), "name")
        resource = Resource(domain.USER_TYPE, request.name)
        with self._transaction() as session:
            # The lock orders this against AddGroupMember and CreateGroup, so
            # the groups read below are all the groups the user is in.
            row = storage.require_user(session, user_id, lock=True)
            if row.state == domain.STATE_DEACTIVATED:
                return pb.DeactivateUserResponse(user=user_message(row))
            _check_etag(expected, row.version, resource, "etag")
            # A deactivated user cannot be named on settlements, so a debt
            # left behind could never be paid. Each group gets a leaving mark,
            # as for a removal, so no expense names the user during the check,
            # and the user gets a deactivating mark, so no group is joined.
            user_token = deactivations.start(session, user_id)
            tokens = {
                group.id: removals.start(session, group.id, user_id)
                for group in storage.all_groups_of_user(session, user_id)
            }

        try:
            self._check_settled_everywhere(user_id, sorted(tokens), context)
            with self._transaction() as session:
                row = storage.require_user(session, user_id, lock=True)
                deactivations.require_own(session, user_id, user_token)
                deactivations.require_same_groups(session, user_id, tokens)
                for group_id, token in tokens.items():
                    # A group deleted since the marks were written took this
                    # mark with it. `_check_settled_everywhere` explains why the
                    # deactivation may go on.
                    if not storage.is_deleted_group(session, group_id):
                        removals.require_own(session, group_id, user_id, token)
                revoked = None
                if row.state != domain.STATE_DEACTIVATED:
                    _check_etag(expected, row.version, resource, "etag")
                    revoked = _deactivate(session, row)
                for group_id, token in tokens.items():
                    storage.delete_pending_removal(session, group_id, user_id, token)
                storage.delete_pending_deactivation(session, user_id, user_token)
                session.flush()
                reply = pb.DeactivateUserResponse(user=user_message(row))
        except BaseException:
            for group_id, token in tokens.items():
                self._clear_mark(group_id, user_id, token)
            self._clear_deactivating_mark(user_id, user_token)
            raise
        if revoked is not None:
            _LOGGER.info(
                "user %s deactivated; revoked %d sessions and %d API keys",
                request.name,
                *revoked,
            )
        return reply

    def _check_settled_everywhere(
        self, user_id: str, group_ids: list[str], context: grpc.ServicerContext
    ) -> None:
        """Raise FAILED_PRECONDITION naming every group where the user's
        balance is not zero.

        A group deleted since the marks were written is skipped when its
        check fails, as balance_service's CheckSettled fails for a deleted
        group. Its
        deletion checked that every balance in it was zero, and a deleted
        group takes no more expenses or settlements, so the user's balance
        there stays zero.

        `context` is the deactivation's call, whose deadline the checks keep.
        """
        user_name = domain.user_name(user_id)
        # The guard's violation of each unsettled group.
        owed: dict[str, PreconditionViolation] = {}
        for group_id in group_ids:
            try:
                # The caller is the user, who may not be allowed to read the
                # group's balances, so this service checks on its own behalf.
                with authz.as_service():
                    self._guard.check_member_removable(
                        domain.group_name(group_id), user_name, context
                    )
            except Unavailable as exc:
                if not self._is_deleted_group(group_id):
                    raise
                _LOGGER.info(
                    "deactivation of %s skips groups/%s, deleted during the "
                    "balance checks: %s",
                    user_name,
                    group_id,
                    exc,
                )
            except FailedPrecondition as exc:
                if exc.reason != UNSETTLED_BALANCE:
                    raise
                group_name = domain.group_name(group_id)
                owed[group_name] = (
                    exc.preconditions[0]
                    if exc.preconditions
                    else PreconditionViolation(
                        UNSETTLED_BALANCE,
                        f"{group_name}/members/{user_id}",
                        f"the balance of {user_name} in {group_name} is not "
                        f"zero; {SETTLE_ADVICE}",
                    )
                )
        if owed:
            raise _open_balances(user_name, owed)

    # Groups

    def CreateGroup(
        self, request: pb.CreateGroupRequest, context: grpc.ServicerContext
    ) -> pb.CreateGroupResponse:
        group, violations = request.group, domain.Violations()
        display_name = violations.check(
            domain.validate_display_name, group.display_name, "group.display_name"
        )
        creator_id = violations.check(_parse_author, group.creator, "group.creator")
        if group.currency_code:
            violations.check(
                domain.validate_currency_code,
                group.currency_code,
                "group.currency_code",
            )
        if request.group_id:
            violations.check(domain.validate_new_id, request.group_id, "group_id")
        request_id = violations.check(domain.validate_request_id, request.request_id)
        violations.raise_if_any()
        authz.require_acting_as_caller(domain.user_name(creator_id), "group.creator")
        group_create = request_hashes.GroupCreate(
            request.group_id, display_name, creator_id, group.currency_code
        )

        def replay(session: Session) -> pb.Group | None:
            earlier = storage.find_request(session, "CreateGroup", request_id)
            if earlier is None:
                return None
            request_hashes.check_same_group_create(
                session, earlier, group_create, request_id
            )
            return self._replay_group(session, earlier.resource_name, request_id)

        def create(session: Session) -> pb.Group:
            replayed = replay(session) if request_id else None
            if replayed is not None:
                return replayed
            group_id = request.group_id or new_id()
            try:
                self._check_group_id_free(session, group_id)
            except AlreadyExists:
                # The same race as in CreateUser: replay a concurrent winner.
                replayed = replay(session) if request_id else None
                if replayed is None:
                    raise
                return replayed
            # The lock keeps a deactivation from starting before this commits.
            creator = storage.require_user(session, creator_id, lock=True)
            require_active(creator, "create a group")
            deactivations.require_not_deactivating(
                session, creator_id, "create a group"
            )
            now = storage.utc_now()
            row = storage.GroupRow(
                id=group_id,
                display_name=display_name,
                creator_id=creator.id,
                currency_code=group.currency_code or creator.currency_code,
                create_time=now,
                update_time=now,
            )
            storage.add_group(session, row)
            storage.add_member(
                session,
                storage.MemberRow(group_id=group_id, user_id=creator.id, join_time=now),
            )
            if request_id:
                storage.remember_request(
                    session,
                    "CreateGroup",
                    request_id,
                    domain.group_name(group_id),
                    group_create.request_hash(),
                    group_create.resolved_hash(row.currency_code),
                )
            return group_message(row, member_count=1)

        return pb.CreateGroupResponse(group=self._run_with_conflict_retry(create))

    def _replay_group(self, session: Session, name: str, request_id: str) -> pb.Group:
        row = session.get(storage.GroupRow, domain.parse_group_name(name, "request_id"))
        if row is None:
            raise NotFound(
                f"request_id {request_id!r} created the group {name!r}, which has "
                "since been deleted; send a new request_id to create another group",
                reason="GROUP_NOT_FOUND",
                metadata={"request_id": request_id},
                resource=Resource(domain.GROUP_TYPE, name),
            )
        return self._group_message(session, row)

    @staticmethod
    def _check_group_id_free(session: Session, group_id: str) -> None:
        name = domain.group_name(group_id)
        if session.get(storage.GroupRow, group_id) is not None:
            raise AlreadyExists(
                f"group {name!r} already exists; choose another group_id or leave "
                "it empty to get a generated one",
                reason="GROUP_ALREADY_EXISTS",
                resource=Resource(domain.GROUP_TYPE, name),
            )
        if storage.is_deleted_group(session, group_id):
            # The expenses and settlements of the deleted group are still
            # stored under this id, so a new group must not take it.
            raise AlreadyExists(
                f"group {name!r} was deleted and its id cannot be used again; "
                "choose another group_id or leave it empty to get a generated one",
                reason="GROUP_ID_DELETED",
                metadata={"group": name},
                resource=Resource(domain.GROUP_TYPE, name),
            )

    @staticmethod
    def _group_message(session: Session, row: storage.GroupRow) -> pb.Group:
        count = storage.member_counts(session, [row.id])[row.id]
        return group_message(row, count)

    def GetGroup(
        self, request: pb.GetGroupRequest, context: grpc.ServicerContext
    ) -> pb.GetGroupResponse:
        group_id = domain.parse_group_name(request.name, "name")
        with self._transaction(read_only=True) as session:
            _authorize_group(session, group_id)
            row = storage.require_group(session, group_id)
            return pb.GetGroupResponse(group=self._group_message(session, row))

    def ListGroups(
        self, request: pb.ListGroupsRequest, context: grpc.ServicerContext
    ) -> pb.ListGroupsResponse:
        user_id = domain.parse_user_name(request.member, "member")
        authz.require_self(domain.user_name(user_id), "member")
        size = pagination.page_size(request.page_size)
        selector = ["ListGroups", request.member]
        after = _page_key(
            pagination.decode_token(request.page_token, selector), request.page_token
        )
        with self._transaction(read_only=True) as session:
            storage.require_user(session, user_id)
            rows = storage.list_groups_of_user(session, user_id, after, size + 1)
            counts = storage.member_counts(session, [group.id for group, _ in rows])
        return pb.ListGroupsResponse(
            groups=[group_message(group, counts[group.id]) for group, _ in rows[:size]],
            next_page_token=_next_token(
                rows, size, lambda row: (row[1], row[0].id), selector
            ),
        )

    def UpdateGroup(
        self, request: pb.UpdateGroupRequest, context: grpc.ServicerContext
    ) -> pb.UpdateGroupResponse:
        group, violations = request.group, domain.Violations()
        group_id = violations.check(domain.parse_group_name, group.name, "group.name")
        expected = violations.check(domain.parse_etag, group.etag, "group.etag")
        populated = [name for name in domain.GROUP_MASK.mutable if getattr(group, name)]
        fields = violations.check(
            domain.resolve_update_mask,
            list(request.update_mask.paths),
            domain.GROUP_MASK,
            populated,
        )
        violations.raise_if_any()
        display_name = currency = None
        if "display_name" in fields:
            display_name = violations.check(
                domain.validate_display_name, group.display_name, "group.display_name"
            )
        if "currency_code" in fields and group.currency_code:
            currency = violations.check(
                domain.validate_currency_code,
                group.currency_code,
                "group.currency_code",
            )
        violations.raise_if_any()

        with self._transaction() as session:
            _authorize_group(session, group_id)
            row = storage.require_group(session, group_id)
            if list(request.update_mask.paths) in ([], ["*"]):
                _check_creator_unchanged(group.creator, row)
            resource = Resource(domain.GROUP_TYPE, domain.group_name(group_id))
            _check_etag(expected, row.version, resource, "group.etag")
            if "currency_code" in fields and currency is None:
                # An empty currency under the mask restores the default.
                currency = storage.require_user(session, row.creator_id).currency_code
            changed = False
            if display_name is not None and display_name != row.display_name:
                row.display_name = display_name
                changed = True
            if currency is not None and currency != row.currency_code:
                row.currency_code = currency
                changed = True
            if changed:
                row.update_time = storage.utc_now()
                session.flush()
            return pb.UpdateGroupResponse(group=self._group_message(session, row))

    def DeleteGroup(
        self, request: pb.DeleteGroupRequest, context: grpc.ServicerContext
    ) -> pb.DeleteGroupResponse:
        violations = domain.Violations()
        group_id = violations.check(domain.parse_group_name, request.name, "name")
        expected = violations.check(domain.parse_etag, request.etag, "etag")
        violations.raise_if_any()
        name = domain.group_name(group_id)
        resource = Resource(domain.GROUP_TYPE, name)
        with self._transaction() as session:
            _authorize_group(session, group_id)
            row = storage.require_group(session, group_id, lock=True)
            _check_etag(expected, row.version, resource, "etag")
            token = removals.start(session, group_id, removals.GROUP)

        def delete(session: Session) -> None:
            row = storage.require_group(session, group_id, lock=True)
            _check_etag(expected, row.version, resource, "etag")
            storage.delete_group(session, row)

        self._finish_removal(
            group_id,
            removals.GROUP,
            token,
            lambda: self._guard.check_group_deletable(name, context),
            delete,
        )
        return pb.DeleteGroupResponse()

    # Members

    def AddGroupMember(
        self, request: pb.AddGroupMemberRequest, context: grpc.ServicerContext
    ) -> pb.AddGroupMemberResponse:
        violations = domain.Violations()
        group_id = violations.check(domain.parse_group_name, request.parent, "parent")
        user_id = violations.check(domain.parse_user_name, request.user, "user")
        violations.raise_if_any()

        def add(session: Session) -> pb.Member:
            _authorize_group(session, group_id)
            storage.require_group(session, group_id)
            # The lock keeps a deactivation from starting before this commits.
            user = storage.require_user(session, user_id, lock=True)
            if storage.get_member(session, group_id, user_id) is not None:
                name = domain.member_name(group_id, user_id)
                raise AlreadyExists(
                    f"{request.user!r} is already a member of {request.parent!r}",
                    reason="MEMBER_ALREADY_EXISTS",
                    resource=Resource(domain.MEMBER_TYPE, name),
                )
            require_active(user, "join a group")
            deactivations.require_not_deactivating(session, user_id, "join a group")
            member = storage.MemberRow(
                group_id=group_id, user_id=user_id, join_time=storage.utc_now()
            )
            storage.add_member(session, member)
            return member_message(member, user)

        return pb.AddGroupMemberResponse(member=self._run_with_conflict_retry(add))

    def ListGroupMembers(
        self, request: pb.ListGroupMembersRequest, context: grpc.ServicerContext
    ) -> pb.ListGroupMembersResponse:
        group_id = domain.parse_group_name(request.parent, "parent")
        size = pagination.page_size(request.page_size)
        selector = ["ListGroupMembers", request.parent]
        after = _page_key(
            pagination.decode_token(request.page_token, selector), request.page_token
        )
        with self._transaction(read_only=True) as session:
            # The group, its members and the marks come from one state. Under
            # READ COMMITTED, a deletion that commits between the statements
            # could return the members without the group's mark.
            repeatable_read(session)
            _authorize_group(session, group_id)
            storage.require_group(session, group_id)
            now = storage.utc_now()
            since = removals.live_since(now)
            rows = storage.list_members(session, group_id, after, size + 1, since)
            deleting = removals.is_group_deleting(session, group_id, now)
        return pb.ListGroupMembersResponse(
            members=[
                member_message(member, user, leaving)
                for member, user, leaving in rows[:size]
            ],
            next_page_token=_next_token(
                rows, size, lambda row: (row[0].join_time, row[0].user_id), selector
            ),
            group_deleting=deleting,
        )

    def RemoveGroupMember(
        self, request: pb.RemoveGroupMemberRequest, context: grpc.ServicerContext
    ) -> pb.RemoveGroupMemberResponse:
        group_id, user_id = domain.parse_member_name(request.name, "name")
        group_name = domain.group_name(group_id)
        with self._transaction() as session:
            _authorize_group(session, group_id)
            # The lock stops two members from leaving together and emptying it.
            storage.require_group(session, group_id, lock=True)
            storage.require_member(session, group_id, user_id)
            _check_not_last_member(session, group_id, user_id)
            token = removals.start(session, group_id, user_id)

        def remove(session: Session) -> None:
            storage.require_group(session, group_id, lock=True)
            member = storage.require_member(session, group_id, user_id)
            # Another member may have left while the balances were checked.
            _check_not_last_member(session, group_id, user_id)
            storage.remove_member(session, member)

        self._finish_removal(
            group_id,
            user_id,
            token,
            lambda: self._guard.check_member_removable(
                group_name, domain.user_name(user_id), context
            ),
            remove,
        )
        return pb.RemoveGroupMemberResponse()

    def _finish_removal(
        self,
        group_id: str,
        user_id: str,
        token: str,
        check: Callable[[], None],
        delete: Callable[[Session], None],
    ) -> None:
        """Check the balances, then delete under the leaving mark, or clear it.

        Args:
          group_id: the group.
          user_id: the member, or `removals.GROUP` for a group deletion.
          token: the mark that `removals.start` wrote and committed.
          check: the balance guard's check, which raises to stop the removal.
          delete: deletes the membership or the group in the final
            transaction.
        """
        try:
            # The caller's membership was checked with the mark, so
            # balance_service is called on this service's own behalf.
            with authz.as_service():
                check()
            with self._transaction() as session:
                storage.require_group(session, group_id, lock=True)
                removals.require_own(session, group_id, user_id, token)
                delete(session)
                storage.delete_pending_removal(session, group_id, user_id, token)
        except BaseException:
            self._clear_mark(group_id, user_id, token)
            raise

    def _is_deleted_group(self, group_id: str) -> bool:
        with self._transaction(read_only=True) as session:
            return storage.is_deleted_group(session, group_id)

    def _clear_mark(self, group_id: str, user_id: str, token: str) -> None:
        """Delete a leaving mark after a failed removal; on error it expires."""
        try:
            with self._transaction() as session:
                storage.delete_pending_removal(session, group_id, user_id, token)
        except Exception:
            _LOGGER.exception(
                "cannot clear the leaving mark of %s in groups/%s after a failed "
                "removal; it expires after %.0fs",
                user_id or "every member",
                group_id,
                removals.MARK_SECONDS,
            )

    def _clear_deactivating_mark(self, user_id: str, token: str) -> None:
        """Delete a deactivating mark after a failed deactivation; on error it
        expires."""
        try:
            with self._transaction() as session:
                storage.delete_pending_deactivation(session, user_id, token)
        except Exception:
            _LOGGER.exception(
                "cannot clear the deactivating mark of users/%s after a failed "
                "deactivation; it expires after %.0fs",
                user_id,
                removals.MARK_SECONDS,
            )


def _check_not_last_member(session: Session, group_id: str, user_id: str) -> None:
    """Raise FAILED_PRECONDITION when the user is the group's only member."""
    if storage.member_counts(session, [group_id])[group_id] != 1:
        return
    group_name = domain.group_name(group_id)
    raise FailedPrecondition(
        f"{domain.user_name(user_id)!r} is the last member of "
        f"{group_name!r} and cannot leave it; delete the group instead",
        reason="LAST_MEMBER",
        preconditions=[
            PreconditionViolation(
                "LAST_MEMBER",
                domain.member_name(group_id, user_id),
                "a group must keep at least one member",
            )
        ],
    )
