"""The gRPC handlers of `splitlog.expenses.v1.ExpensesService`.

Each handler checks the request, calls user_service to check membership when
a write adds users to an expense, then runs the storage calls and the ledger
event in one database transaction. Creates with a generated name that arrive
together share one transaction (`grouping.GroupWriter`); a create whose group
fails is written again on its own, so it gets the response it would have got
alone. Errors are raised as `DomainError`s and turned into status codes by
the runtime's interceptor.

Choices that the proto leaves open:
- A replayed `request_id` returns the expense that the first request
  created, in its current state. The same key with another request (any
  field but `request_id` differs) is rejected with INVALID_ARGUMENT, reason
  REQUEST_ID_REUSED, like a key reused in another group, rather than
  returning an expense that the caller did not ask for. Keys are kept
  forever; keys stored before requests were hashed replay whatever comes.
- BatchCreateExpenses writes all its creates in one transaction or none.
  A batch `request_id` is stored as one derived key per position, so a
  retried batch returns the same expenses in the same order. An inner
  create whose own `request_id` was used before returns that expense in
  its slot instead of writing a second one.
- A batch also stores its `request_id` itself, so a single create with
  that key, alone or inside another batch, finds it taken. Either way the
  call fails with REQUEST_ID_REUSED: the two requests differ. A create
  checks the derived key of position 0 as well, for batches stored before
  they stored their own key.
- Deleting a deleted expense succeeds, changes nothing and writes no ledger
  event, so a retried DeleteExpense does not fail. The etag is then not
  checked, because nothing is written.
- Every successful UpdateExpense stores `last_modifier` and a new
  `update_time`, so it makes a new revision and a ledger event even when the
  other fields keep their values. DeleteExpense and UndeleteExpense store
  their request's `last_modifier` and a new `update_time` too, except for a
  delete of a deleted expense, which stores nothing.
- A `request_id` is scoped to the group: reusing it under another parent
  is rejected with REQUEST_ID_REUSED rather than replaying.
- The creator, the `last_modifier` of an update, a delete or an undelete,
  and, on undelete, every payer and participant must be current members of
  the group. This holds for administrators too: one who is not a member
  names a member as the author.
- While a removal or the group's deletion checks the balances, an update or
  a delete may not change what a leaving member paid or owes
  (MEMBER_LEAVING), and during a deletion no amount at all (GROUP_DELETING),
  so that the check reads final balances (`membership.require_not_leaving`).
- A group that does not exist, or was deleted, answers every call about
  its expenses with NOT_FOUND (reason GROUP_NOT_FOUND), as GetGroup does
  for the group. Reads learn this from the member lists of
  `MembershipClient`, which may be up to `membership.CACHE_SECONDS` old, so
  a group deleted less than that ago may still be read. ListExpenses across
  every group (`groups/-`) leaves out the expenses of groups that no longer
  exist. When user_service does not respond within `GROUP_CHECK_SECONDS`,
  reads by callers who may use every group skip this check and return the
  stored expenses.

With `auth_required` on, `splitlog_runtime.authz` limits each call to
members of the expense's group (ListCategories is open to every caller).
`expense.creator` and the `last_modifier` of updates, deletes and undeletes
must name the caller and are filled with the caller when empty (with auth
off they are required). A ListExpenses across every group (`groups/-`) must
name the caller as `participant` and returns only expenses of groups the
caller belongs to now.
Membership comes from the cached member lists of `MembershipClient`, so a
removed member, or a member of a deleted group, loses access within
`membership.CACHE_SECONDS`. A write that fails after a cached list accepted
its caller checks the caller against a fresh list (`authz.GroupWriteAccess`),
so a removed member gets PERMISSION_DENIED, as after the list expires, and
not the write's own error, such as NOT_FOUND for a missing expense. Like
GetGroup, a call about a deleted group then fails with PERMISSION_DENIED for
its former members and NOT_FOUND for administrators.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TypeVar

import grpc
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from expense_service import (
    domain,
    grouping,
    ledger,
    messages,
    request_hashes,
    storage,
    volumes,
)
from expense_service.membership import MembershipClient
from expense_service.request_hashes import RequestHash
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as pb_grpc
from splitlog_runtime import auth, authz, limits, pagination
from splitlog_runtime.database import Database
from splitlog_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Resource,
    Unavailable,
    invalid_field,
)
from splitlog_runtime.etags import stale_etag
from splitlog_runtime.fencing import GroupWrites
from splitlog_runtime.idempotency import FILLED_REQUEST_ID_KEY, key_reused
from splitlog_runtime.resources import OrderedIds
from splitlog_runtime.validation import date_given

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExpensesService"].full_name

#: Attempts of one transaction that hits lock timeouts or lost races.
MAX_TRANSACTION_ATTEMPTS = 8
#: Maximum seconds that a read by a caller who may use every group waits for
#: user_service to confirm that the group exists. After that the read goes on.
GROUP_CHECK_SECONDS = 1.0
#: Attempts of an update whose expense keeps changing between the membership
#: check and the write.
MAX_UPDATE_ATTEMPTS = 5
# PostgreSQL errors after which the same transaction may succeed when run
# again: serialization_failure, deadlock_detected and lock_not_available.
_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}
#: Maximum number of creates that the group commit writes in one transaction.
MAX_GROUPED_CREATES = 64
# Request fields named per user in the membership error of a batch.
_PATHS_PER_USER = 3
#: Bytes of a response kept below max_message_bytes for the fields other
#: than its expenses, such as a page token, which take a few hundred bytes.
RESPONSE_MARGIN_BYTES = 1024
# Namespace of the per-position keys that a batch request_id is stored as.
_BATCH_NAMESPACE = uuid.UUID("0d7cbb52-4a0e-4c3e-9a8b-7b1e3f5c2a61")
# Generated expense ids; ordered ids keep each group commit's inserts together.
_EXPENSE_IDS = OrderedIds()
_ORDERINGS = {"": False, "expense_date desc": False, "create_time desc": True}


class _RevisionChanged(Exception):
    """The expense changed after a write read it, so that the write now adds
    users whose membership was not checked, or changes the amounts of users
    not checked for a removal; plan the write again."""


def _is_transient(exc: DBAPIError) -> bool:
    """Return whether running the same transaction again may succeed."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    name = getattr(orig, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


@dataclass
class _WriteChecks:
    """The users an update has checked: those it may add to the expense
    (`members`), and those whose amounts it may change (`movable`)."""

    members: set[str]
    movable: set[str]


def _changed_users(
    stored: storage.StoredExpense, checked: domain.CheckedExpense
) -> set[str]:
    """Return the users whose amounts an update changes."""
    return messages.changed_users(
        messages.stored_amounts(stored), messages.checked_amounts(checked)
    )


def _group_of(expense_name: str) -> str:
    """Return the `groups/{group}` part of an expense name, valid or not."""
    return "/".join(expense_name.split("/", 2)[:2])


def _author(name: str, field: str) -> str:
    """Check the user that a write names as its author, the caller if empty."""
    return domain.validate_user_name(authz.author_or_caller(name, field), field)


def _not_found(name: str) -> NotFound:
    return NotFound(
        f"expense {name!r} does not exist; check the name, or list the group's "
        "expenses with ListExpenses",
        reason="EXPENSE_NOT_FOUND",
        resource=Resource(domain.EXPENSE_TYPE, name),
    )


def _check_etag(expected: int | None, stored: storage.StoredExpense, field: str):
    if expected is not None and expected != stored.row.revision:
        resource = Resource(domain.EXPENSE_TYPE, stored.row.name)
        raise stale_etag(field, expected, stored.row.revision, resource)


def _date_key(text: str, by_create_time: bool) -> datetime.date | datetime.datetime:
    if by_create_time:
        return datetime.datetime.fromisoformat(text)
    return datetime.date.fromisoformat(text)


def _page_position(row: storage.ExpenseRow, by_create_time: bool) -> list[str]:
    """Return the sort key of an expense as stored in a ListExpenses token."""
    first, second = row.expense_date, row.create_time
    if by_create_time:
        first, second = second, first
    return [first.isoformat(), second.isoformat(), row.name]


@dataclass(frozen=True)
class _NewExpense:
    """A checked create, waiting for its write.

    Attributes:
      fields: every user the expense names, with the request fields that
        name them, for the membership check.
      chosen_id: whether the caller chose the expense id, so that the name
        may be taken already.
    """

    name: str
    group_id: str
    creator: str
    checked: domain.CheckedExpense
    request_id: str
    request_hash: RequestHash | None = None
    fields: dict[str, list[str]] = dataclass_field(default_factory=dict)
    chosen_id: bool = False
    # The creator field when it was empty and set to the caller.
    filled: tuple[str, ...] = ()

    @property
    def stored_hash(self) -> str | None:
        """The request hash to store with `request_id`."""
        return self.request_hash.value if self.request_hash is not None else None


def _batch_key(batch_id: str, index: int) -> str:
    """Return the key stored for one position of a batch request_id.

    A batch key is kept as one ordinary request_id per position, derived
    from the batch's key, so that a batch needs no table of its own.
    """
    if not batch_id:
        return ""
    return str(uuid.uuid5(_BATCH_NAMESPACE, f"{batch_id}/{index}"))


def _key_reused(request_id: str, field: str, what: str) -> InvalidArgument:
    return key_reused(
        request_id,
        f"was already used for another {what}",
        "Send a new UUID for a new request",
        field,
    )


def _check_reuse(
    earlier: storage.EarlierRequest,
    earlier_group: str,
    group_id: str,
    request_id: str,
    request_hash: RequestHash | None,
    field: str,
) -> None:
    """Reject a key that an earlier create used in another group or request.

    Raises:
      InvalidArgument: with reason REQUEST_ID_REUSED.
    """
    if earlier_group != group_id:
        raise invalid_field(
            field,
            f"{request_id!r} was already used to create an expense in another "
            "group; send a new UUID for each new expense",
            reason="REQUEST_ID_REUSED",
        )
    if request_hash is not None and not request_hash.matches(earlier.request_hash):
        raise _key_reused(request_id, field, "create with other values")


def _check_not_batch_key(
    found: dict[str, storage.EarlierRequest], request_id: str, field: str
) -> None:
    """Reject a create's key that a BatchCreateExpenses call used as its own.

    Args:
      found: the stored keys among the create's key and the first key that a
        batch with that key stores (`_batch_key(request_id, 0)`).

    Raises:
      InvalidArgument: with reason REQUEST_ID_REUSED.
    """
    if _batch_key(request_id, 0) in found:
        raise _key_reused(request_id, field, "batch of creates")


def _name_taken(name: str, prefix: str) -> AlreadyExists:
    return AlreadyExists(
        f"{prefix}expense_id: expense {name!r} already exists; choose another "
        "expense_id or leave it empty to get a generated one",
        reason="EXPENSE_ALREADY_EXISTS",
        resource=Resource(domain.EXPENSE_TYPE, name),
        metadata={"field": f"{prefix}expense_id"} if prefix else None,
    )


def _comparable(expense: pb.Expense) -> pb.Expense:
    """Return an expense without the fields that differ between two writes of it."""
    copy = pb.Expense()
    copy.CopyFrom(expense)
    for field in ("create_time", "update_time", "etag"):
        copy.ClearField(field)
    return copy


def _key_filled_by_gateway(context: grpc.ServicerContext) -> bool:
    """Return whether the gateway filled in the call's request_id.

    Such a key can repeat only in the gateway's own retries of this call, so
    the create skips its look-up of an earlier request before the write. A
    retry whose first attempt was stored fails on the key's unique index, and
    the write's second attempt then replays the stored expense.
    """
    return any(
        key == FILLED_REQUEST_ID_KEY for key, _ in context.invocation_metadata() or ()
    )


def _own_committed_create(session: Session, create: _NewExpense) -> pb.Expense | None:
    """Return the expense that this very create stored, if it did.

    A create with a generated id whose group commit failed writes again
    alone. When the group's COMMIT reached the database but its reply was
    lost, the row is there already, under the id that the server generated
    for this call and for no other. The stored expense is then this call's
    own write, and it is returned when it holds the request's values.
    """
    stored = storage.get_expense(session, create.name)
    if stored is None:
        return None
    payers, participants = messages.line_rows(create.name, create.checked)
    values = messages.new_expense_values(
        create.name,
        create.group_id,
        create.creator,
        create.checked.draft,
        stored.row.create_time,
    )
    expected = messages.expense_message(
        storage.StoredExpense(values, payers, participants)
    )
    found = messages.expense_message(stored)
    if _comparable(found) != _comparable(expected):
        return None
    _LOGGER.info(
        "%s was stored by its own earlier attempt, whose commit answer was lost",
        create.name,
    )
    return found


def _check_distinct(
    creates: Sequence[_NewExpense],
    requests: Sequence[pb.CreateExpenseRequest],
    batch_id: str,
) -> None:
    """Reject a batch in which two creates share an expense_id or request_id,
    or a create has the batch's request_id."""
    seen_ids: dict[str, int] = {}
    seen_keys: dict[str, int] = {}
    for index, (create, request) in enumerate(zip(creates, requests, strict=True)):
        if batch_id and create.request_id == batch_id:
            raise invalid_field(
                f"requests[{index}].request_id",
                f"{batch_id!r} is also the batch's request_id; give each create "
                "a request_id other than the batch's",
                reason="DUPLICATE_IN_BATCH",
            )
        for value, seen, field_name in (
            (request.expense_id, seen_ids, "expense_id"),
            (create.request_id, seen_keys, "request_id"),
        ):
            if not value:
                continue
            if value in seen:
                raise invalid_field(
                    f"requests[{index}].{field_name}",
                    f"{value!r} is also the {field_name} of requests[{seen[value]}]; "
                    f"give each create of a batch its own {field_name}",
                    reason="DUPLICATE_IN_BATCH",
                )
            seen[value] = index


def _leading_fit(expenses: Sequence[pb.Expense], budget: int) -> int:
    """Return how many leading expenses fit in a response of `budget` bytes."""
    total = 0
    for index, expense in enumerate(expenses):
        size = expense.ByteSize()
        # A repeated message field adds a tag byte and a length prefix.
        total += size + 1 + (size.bit_length() + 6) // 7
        if total > budget:
            return index
    return len(expenses)


# Most invalid creates of one batch whose fields an error lists. Each adds
# about 150 bytes of BadRequest to the status, which travels in trailers.
MAX_REPORTED_INVALID_CREATES = 20


def _check_creates(
    check_create: Callable[[pb.CreateExpenseRequest, str, str], _NewExpense],
    request: pb.BatchCreateExpensesRequest,
) -> list[_NewExpense]:
    """Check every create of a batch, so that one error lists all bad fields.

    The check stops after MAX_REPORTED_INVALID_CREATES invalid creates.

    Raises:
      InvalidArgument: at least one create is invalid.
    """
    violations = domain.Violations()
    creates = []
    for index, inner in enumerate(request.requests):
        create = violations.check(
            check_create, inner, request.parent, f"requests[{index}]."
        )
        creates.append(create)
        if len(violations.errors) == MAX_REPORTED_INVALID_CREATES:
            break
    violations.raise_if_any()
    return creates


def _check_batch_pairs(requests: Sequence[pb.CreateExpenseRequest]) -> None:
    """Reject a batch whose creates name too many payer and participant pairs.

    balance_service allocates each participant's share among the payers of
    each expense when it applies the batch, so its work grows with payers x
    participants, summed over the creates. The ledger applies every group's
    changes in one sequence, so the balances of every group wait for it.

    Raises:
      InvalidArgument: over expense_max_batch_pairs, with reason
        BATCH_TOO_LARGE.
    """
    limit = limits.current().expense_max_batch_pairs
    total = 0
    fitting = None
    for index, inner in enumerate(requests):
        total += len(inner.expense.payers) * len(inner.expense.split.participants)
        if total > limit and fitting is None:
            fitting = index
    if fitting is None:
        return
    if fitting:
        fix = f"the first {fitting} creates of this one do"
    else:
        fix = "its first create alone has more, so send that one with CreateExpense"
    raise invalid_field(
        "requests",
        f"names {total} payer and participant pairs (payers x participants, "
        f"summed over the creates), more than expense_max_batch_pairs "
        f"({limit}); split the batch so that each call stays within {limit} "
        f"pairs: {fix}",
        reason="BATCH_TOO_LARGE",
    )


class ExpensesServicer(pb_grpc.ExpensesServiceServicer):
    """Expenses stored in one database, with their ledger events.

    Args:
      database: the service's database.
      membership: the client that checks group membership in user_service.
      feed: woken after every committed write, for the ledger streams.
      writes: counts the writes that check membership, from the start of
        the RPC to its commit or failure, for the ledger's fence.
      max_message_bytes: the largest response that the server sends.
    """

    def __init__(
        self,
        database: Database,
        membership: MembershipClient,
        feed: ledger.LedgerFeed,
        writes: GroupWrites,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._database = database
        self._max_message_bytes = max_message_bytes
        self._membership = membership
        self._feed = feed
        self._writes = writes
        self._creates = grouping.GroupWriter(
            self._write_creates,
            MAX_GROUPED_CREATES,
            key=lambda create: create.request_id or None,
        )

    # Transactions

    def _write(self, work: Callable[[Session], _T], retry_conflict: bool = False) -> _T:
        """Run a write in a transaction, again after lock timeouts and lost races.

        Args:
          work: the unit of work; it must be safe to run more than once,
            because a failed attempt leaves nothing behind.
          retry_conflict: run once more after a unique-key conflict, whose
            second run finds the winner's row and replays or reports it.

        Raises:
          Unavailable: the database stayed busy for every attempt.
        """
        integrity_retried = False
        for attempt in range(MAX_TRANSACTION_ATTEMPTS):
            try:
                with self._database.transaction() as session:
                    result = work(session)
                    events = ledger.appended_events(session)
            except StaleDataError:
                _LOGGER.info("retrying a write after a concurrent change")
                continue
            except IntegrityError as exc:
                if not retry_conflict or integrity_retried:
                    raise
                integrity_retried = True
                # The database's message quotes the key's value, so it is
                # logged at DEBUG only.
                _LOGGER.debug("retrying after a unique-key conflict: %s", exc.orig)
                continue
            except DBAPIError as exc:
                if not _is_transient(exc):
                    raise
                _LOGGER.info("retrying a write after %s", exc.orig)
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            self._feed.publish(events)
            return result
        raise Unavailable(
            "the expense database stayed busy with concurrent writes; retry in a "
            "moment",
            reason="DATABASE_BUSY",
            retry_delay=0.5,
        )

    def _read(self, work: Callable[[Session], _T]) -> _T:
        with self._database.transaction(read_only=True) as session:
            return work(session)

    def _authorize(self, group: str, context: grpc.ServicerContext) -> None:
        """Raise PERMISSION_DENIED unless the caller may use the group.

        Runs before any look-up, so a missing group or expense and one in a
        group of others give the same error.
        """
        self._access(group, context).authorize()

    def _access(
        self, group: str, context: grpc.ServicerContext
    ) -> authz.GroupWriteAccess:
        """Build the access check of a write to `group`.

        A write runs inside it and calls its `authorize` in place of
        `_authorize`, so that a caller whom a reused member list accepted is
        checked again when the write fails.
        """
        return authz.GroupWriteAccess(
            group,
            lambda user: self._membership.is_member(group, user, context),
            lambda user: self._membership.is_member(group, user, context, fresh=True),
            is_deleted=lambda: self._membership.is_deleted(group),
        )

    def _require_group(self, group: str, context: grpc.ServicerContext) -> None:
        """Raise NOT_FOUND for a missing or deleted group, as GetGroup does.

        Only callers who may use every group need the check, because the
        others passed `_authorize`, which found them in the member list.
        When user_service does not respond within `GROUP_CHECK_SECONDS`, such
        a caller is served anyway: they may read every group, and reads stay
        available while user_service is down or hangs.
        """
        if authz.restricted_user() is not None:
            return
        try:
            self._membership.require_group(group, context, GROUP_CHECK_SECONDS)
        except Unavailable:
            return

    def _authorize_expense(
        self,
        name: str,
        context: grpc.ServicerContext,
        access: authz.GroupWriteAccess | None = None,
    ) -> None:
        """Check that the caller may use the expense's group, and that it exists.

        Args:
          access: the write's access check, built by `_access` for the
            expense's group; None for a read.
        """
        group_id, _ = domain.parse_expense_name(name, "name")
        group = domain.group_name(group_id)
        (access or self._access(group, context)).authorize()
        self._require_group(group, context)

    def _visible_groups(
        self, rows: list[storage.StoredExpense], context: grpc.ServicerContext
    ) -> set[str]:
        """Return the group ids among `rows` that the caller may read now.

        Those are the groups the caller belongs to, or for a caller who may
        use every group, the groups that still exist.
        """
        caller = authz.restricted_user()
        group_ids = {stored.row.group_id for stored in rows}
        if caller is None:
            return self._existing_groups(group_ids, context)
        return {
            group_id
            for group_id in group_ids
            if self._membership.is_member(domain.group_name(group_id), caller, context)
        }

    def _existing_groups(
        self, group_ids: set[str], context: grpc.ServicerContext
    ) -> set[str]:
        """Return the group ids that still exist.

        Once user_service fails to respond within `GROUP_CHECK_SECONDS`, the
        groups not yet checked are kept, so that a page waits for it once.
        """
        existing = set()
        for group_id in sorted(group_ids):
            try:
                found = self._membership.group_exists(
                    domain.group_name(group_id), context, GROUP_CHECK_SECONDS
                )
            except Unavailable:
                return existing | {other for other in group_ids if other >= group_id}
            if found:
                existing.add(group_id)
        return existing

    @staticmethod
    def _require(session: Session, name: str, lock: bool = False):
        stored = storage.get_expense(session, name, lock=lock)
        if stored is None:
            raise _not_found(name)
        return stored

    # Create

    def CreateExpense(
        self, request: pb.CreateExpenseRequest, context: grpc.ServicerContext
    ) -> pb.CreateExpenseResponse:
        access = self._access(request.parent, context)
        with access, self._writes.track(request.parent):
            return self._create_expense(request, context, access)

    def _create_expense(
        self,
        request: pb.CreateExpenseRequest,
        context: grpc.ServicerContext,
        access: authz.GroupWriteAccess,
    ) -> pb.CreateExpenseResponse:
        create = self._check_create(request, request.parent, "")
        access.authorize()
        authz.require_acting_as_caller(create.creator, "expense.creator")
        group_id, request_id = create.group_id, create.request_id

        if request_id and not _key_filled_by_gateway(context):
            replayed = self._read(
                lambda session: self._replay(
                    session, request_id, group_id, create.request_hash
                )
            )
            if replayed is not None:
                return pb.CreateExpenseResponse(expense=replayed)
        name, checked, fields = create.name, create.checked, create.fields
        self._membership.require_members(
            request.parent, fields, context, fields, filled=create.filled
        )

        # A create with a generated id skips two look-ups on its first attempt:
        # the replay was checked just above, and the name is new. A concurrent
        # create with the same request_id then fails on its unique key, and
        # the second attempt makes both look-ups to replay the winner.
        attempts = 0

        def replay(session: Session) -> pb.Expense | None:
            return self._replay(session, request_id, group_id, create.request_hash)

        def write(session: Session) -> pb.Expense:
            nonlocal attempts
            attempts += 1
            look_up = bool(request.expense_id) or attempts > 1
            if request_id and look_up:
                replayed = replay(session)
                if replayed is not None:
                    return replayed
            if look_up and storage.expense_exists(session, name):
                # Under READ COMMITTED a concurrent create with the same
                # request_id can commit between the two look-ups. Its request
                # row is visible now that its expense is.
                replayed = replay(session) if request_id else None
                if replayed is not None:
                    return replayed
                if not request.expense_id:
                    own = _own_committed_create(session, create)
                    if own is not None:
                        # Its ledger event committed with it but was never
                        # published; the streams read it from the table.
                        self._feed.notify()
                        return own
                raise _name_taken(name, "")
            now = storage.utc_now()
            values = messages.new_expense_values(
                name, group_id, create.creator, checked.draft, now
            )
            payers, participants = messages.line_rows(name, checked)
            total = checked.draft.total
            volumes.add_expense_volumes(
                session, {(group_id, total.currency_code): abs(total.minor)}
            )
            stored = storage.add_expense(session, values, payers, participants)
            if request_id:
                storage.remember_request(session, request_id, name, create.stored_hash)
            ledger.append_event(session, stored, ledger.CREATED, now)
            return messages.expense_message(stored)

        if not request.expense_id:
            # A generated name needs no look-up, so the create can join a
            # group commit. The group may not write the create, for example
            # when a concurrent create took its request_id. The create then
            # runs alone below. Its first attempt makes the look-ups, which
            # replay the other create's expense.
            written, stored = self._creates.write(create)
            if written:
                return pb.CreateExpenseResponse(
                    expense=messages.expense_message(stored)
                )
            attempts = 1
        expense = self._write(write, retry_conflict=True)
        return pb.CreateExpenseResponse(expense=expense)

    @staticmethod
    def _check_create(
        request: pb.CreateExpenseRequest, parent: str, prefix: str
    ) -> _NewExpense:
        """Check one create on its own, before any call or look-up.

        Args:
          request: the create.
          parent: the group it goes into; in a batch, the batch's parent.
          prefix: the create's path in a batch request, such as
            `requests[3].`, put before every field an error names.

        Raises:
          InvalidArgument: one violation per invalid field.
        """
        violations = domain.Violations()
        if prefix and request.parent and request.parent != parent:
            violations.errors.append(
                invalid_field(
                    f"{prefix}parent",
                    f"{request.parent!r} is not the batch's parent {parent!r}; "
                    "leave it empty or give the same group, and send creates "
                    "for another group in a batch of their own",
                    reason="PARENT_MISMATCH",
                )
            )
        group_id = violations.check(domain.parse_group_name, parent, "parent")
        draft = violations.check(
            domain.parse_draft, request.expense, f"{prefix}expense"
        )
        creator = violations.check(
            _author, request.expense.creator, f"{prefix}expense.creator"
        )
        if request.expense_id:
            violations.check(
                domain.validate_new_id, request.expense_id, f"{prefix}expense_id"
            )
        request_id = violations.check(
            domain.validate_request_id, request.request_id, f"{prefix}request_id"
        )
        violations.raise_if_any()
        name = domain.expense_name(group_id, request.expense_id or _EXPENSE_IDS.new())
        checked = domain.check_expense(draft, seed=name, field=f"{prefix}expense")
        fields = draft.user_fields(f"{prefix}expense")
        fields.setdefault(creator, []).append(f"{prefix}expense.creator")
        return _NewExpense(
            name=name,
            group_id=group_id,
            creator=creator,
            checked=checked,
            request_id=request_id,
            request_hash=(
                request_hashes.create_hash(request, parent, draft, creator)
                if request_id
                else None
            ),
            fields=fields,
            chosen_id=bool(request.expense_id),
            filled=() if request.expense.creator else (f"{prefix}expense.creator",),
        )

    def _write_creates(
        self, creates: Sequence[_NewExpense]
    ) -> list[storage.StoredExpense | None]:
        """Write a group of new expenses and their ledger events in one transaction.

        A create whose request_id is stored already, typically by a
        concurrent retry in the previous group, is left out and gets None.
        Its caller then replays the stored expense, and the key does not
        make the whole group fail.

        Raises:
          IntegrityError: a transaction that committed after the look-up took
            one of the request_ids. Nothing is written.
        """
        keys = [create.request_id for create in creates if create.request_id]
        with self._database.transaction() as session:
            stored_keys = storage.find_requests(session, keys) if keys else {}
            fresh = [
                create
                for create in creates
                if not create.request_id or create.request_id not in stored_keys
            ]
            stored = iter(self._insert_creates(session, fresh) if fresh else [])
            events = ledger.appended_events(session)
        self._feed.publish(events)
        return [
            next(stored)
            if not create.request_id or create.request_id not in stored_keys
            else None
            for create in creates
        ]

    @staticmethod
    def _insert_creates(
        session: Session,
        creates: Sequence[_NewExpense],
        extra_keys: Sequence[tuple[str, str, str | None]] = (),
    ) -> list[storage.StoredExpense]:
        """Insert new expenses, their keys and their ledger events, in order.

        Args:
          session: the write transaction.
          creates: the checked creates.
          extra_keys: more (request_id, expense name, hash) keys to remember,
            such as those of a batch request_id.
        """
        now = storage.utc_now()
        written = []
        added: dict[tuple[str, str], int] = {}
        for create in creates:
            total = create.checked.draft.total
            key = (create.group_id, total.currency_code)
            added[key] = added.get(key, 0) + abs(total.minor)
        volumes.add_expense_volumes(session, added)
        for create in creates:
            values = messages.new_expense_values(
                create.name, create.group_id, create.creator, create.checked.draft, now
            )
            payers, participants = messages.line_rows(create.name, create.checked)
            written.append(storage.StoredExpense(values, payers, participants))
        storage.add_expenses(
            session,
            written,
            [
                (create.request_id, create.name, create.stored_hash)
                for create in creates
                if create.request_id
            ]
            + list(extra_keys),
        )
        ledger.append_events(session, written, ledger.CREATED, now)
        return written

    @staticmethod
    def _replay(
        session: Session,
        request_id: str,
        group_id: str,
        request_hash: RequestHash | None,
        field: str = "request_id",
    ) -> pb.Expense | None:
        """Return the expense an earlier create with this key made, if any.

        Raises:
          InvalidArgument: the key created an expense in another group, or
            came with another request, such as a batch.
        """
        found = storage.find_requests(session, [request_id, _batch_key(request_id, 0)])
        _check_not_batch_key(found, request_id, field)
        earlier = found.get(request_id)
        if earlier is None:
            return None
        stored = storage.get_expense(session, earlier.expense_name)
        if stored is None:  # Expenses are only soft-deleted, so this is a bug.
            raise RuntimeError(
                f"request_id {request_id} names missing {earlier.expense_name}"
            )
        _check_reuse(
            earlier, stored.row.group_id, group_id, request_id, request_hash, field
        )
        return messages.expense_message(stored)

    # Batch create

    def BatchCreateExpenses(
        self, request: pb.BatchCreateExpensesRequest, context: grpc.ServicerContext
    ) -> pb.BatchCreateExpensesResponse:
        access = self._access(request.parent, context)
        with access, self._writes.track(request.parent):
            return self._batch_create_expenses(request, context, access)

    def _batch_create_expenses(
        self,
        request: pb.BatchCreateExpensesRequest,
        context: grpc.ServicerContext,
        access: authz.GroupWriteAccess,
    ) -> pb.BatchCreateExpensesResponse:
        violations = domain.Violations()
        group_id = violations.check(domain.parse_group_name, request.parent, "parent")
        batch_id = violations.check(domain.validate_request_id, request.request_id)
        count = len(request.requests)
        max_creates = limits.current().expense_max_batch_creates
        if count == 0:
            violations.errors.append(
                invalid_field(
                    "requests",
                    f"is empty; send 1 to {max_creates} CreateExpenseRequests",
                    reason="REQUIRED",
                )
            )
        elif count > max_creates:
            violations.errors.append(
                invalid_field(
                    "requests",
                    f"holds {count} creates, more than expense_max_batch_creates "
                    f"({max_creates}); split them into batches of at most "
                    f"{max_creates}",
                    reason="BATCH_TOO_LARGE",
                )
            )
        violations.raise_if_any()
        _check_batch_pairs(request.requests)
        creates = _check_creates(self._check_create, request)
        _check_distinct(creates, request.requests, batch_id)
        access.authorize()
        for index, create in enumerate(creates):
            authz.require_acting_as_caller(
                create.creator, f"requests[{index}].expense.creator"
            )
        batch_hash = None
        if batch_id:
            normalized = [
                request_hashes.normalized_create(
                    inner,
                    request.parent,
                    create.checked.draft,
                    create.creator,
                    create.request_id,
                )
                for inner, create in zip(request.requests, creates, strict=True)
            ]
            batch_hash = request_hashes.batch_hash(request, normalized)
        batch_keys = [_batch_key(batch_id, index) for index in range(count)]

        def replay_batch(session: Session) -> pb.BatchCreateExpensesResponse | None:
            if not batch_id:
                return None
            replayed = self._replay_batch(
                session, batch_id, batch_keys, group_id, batch_hash
            )
            if replayed is None:
                return None
            response = pb.BatchCreateExpensesResponse(expenses=replayed)
            self._check_replay_size(response, batch_id)
            return response

        replayed = self._read(replay_batch)
        if replayed is not None:
            return replayed

        # A user named on thousands of creates is shown with a few of them.
        fields: dict[str, list[str]] = {}
        for create in creates:
            for user, paths in create.fields.items():
                named = fields.setdefault(user, [])
                named.extend(paths[: max(_PATHS_PER_USER - len(named), 0)])
        filled = {path for create in creates for path in create.filled}
        self._membership.require_members(
            request.parent, fields, context, fields, filled=filled
        )

        def write(session: Session) -> pb.BatchCreateExpensesResponse:
            replayed = replay_batch(session)
            if replayed is not None:
                return replayed
            # A create whose own request_id was used before is replayed in
            # its slot instead of being written again.
            inner_keys = [create.request_id for create in creates if create.request_id]
            earlier = storage.find_requests(
                session, inner_keys + [_batch_key(key, 0) for key in inner_keys]
            )

            slots: dict[int, str] = {}
            for index, create in enumerate(creates):
                if not create.request_id:
                    continue
                field = f"requests[{index}].request_id"
                _check_not_batch_key(earlier, create.request_id, field)
                found = earlier.get(create.request_id)
                if found is not None:
                    slots[index] = found.expense_name
            kept = storage.get_expenses(session, list(slots.values()))
            for index, name in slots.items():
                create = creates[index]
                _check_reuse(
                    earlier[create.request_id],
                    kept[name].row.group_id,
                    group_id,
                    create.request_id,
                    create.request_hash,
                    f"requests[{index}].request_id",
                )

            new = [
                (index, create)
                for index, create in enumerate(creates)
                if index not in slots
            ]
            names = [create.name for _, create in new if create.chosen_id]
            if names:
                taken = storage.get_expenses(session, names)
                for index, create in new:
                    if create.name in taken:
                        raise _name_taken(create.name, f"requests[{index}].")

            result: list[pb.Expense | None] = [None] * count
            stored_hash = batch_hash.value if batch_hash is not None else None
            keys = [
                (batch_keys[index], create.name, stored_hash)
                for index, create in new
                if batch_id
            ]
            if batch_id:
                # The batch's own key, so that a CreateExpense with it finds
                # it taken, even one that runs concurrently.
                keys.append((batch_id, slots.get(0, creates[0].name), stored_hash))
            written = self._insert_creates(session, [create for _, create in new], keys)
            for (index, _), stored in zip(new, written, strict=True):
                result[index] = messages.expense_message(stored)
            for index, name in slots.items():
                result[index] = messages.expense_message(kept[name])
                if batch_id:
                    storage.remember_request(
                        session, batch_keys[index], name, stored_hash
                    )
            response = pb.BatchCreateExpensesResponse(expenses=result)
            # Raising here rolls the batch back. After the commit, a response
            # over max_message_bytes would fail to send although every
            # expense was written, and a retry would replay it.
            self._check_response_size(response)
            return response

        return self._write(write, retry_conflict=True)

    def _response_budget(self) -> int:
        """Return the bytes of expenses that one response may carry."""
        return max(self._max_message_bytes - RESPONSE_MARGIN_BYTES, 1)

    def _check_response_size(self, response: pb.BatchCreateExpensesResponse) -> None:
        """Reject a batch whose response would not fit in max_message_bytes.

        Raises:
          InvalidArgument: with reason RESPONSE_TOO_LARGE, naming the number
            of leading creates that fit in one call.
        """
        budget = self._response_budget()
        size = response.ByteSize()
        if size <= budget:
            return
        fitting = _leading_fit(response.expenses, budget)
        count = len(response.expenses)
        description = (
            f"the response would carry the {count} created expenses in {size} "
            f"bytes, over the {budget} bytes that max_message_bytes "
            f"({self._max_message_bytes}) leaves for it, so nothing was "
            f"written; split the batch: at most {fitting} of these creates "
            "fit in one call"
        )
        _LOGGER.info("batch of %d creates rejected: response of %d bytes", count, size)
        raise InvalidArgument(
            f"requests: {description}",
            reason="RESPONSE_TOO_LARGE",
            metadata={
                "field": "requests",
                "response_bytes": str(size),
                "max_message_bytes": str(self._max_message_bytes),
                "creates_that_fit": str(fitting),
            },
            field_violations=[
                FieldViolation("requests", description, "RESPONSE_TOO_LARGE")
            ],
        )

    def _check_replay_size(
        self, response: pb.BatchCreateExpensesResponse, batch_id: str
    ) -> None:
        """Reject a replayed batch whose expenses no longer fit in one response.

        The first call's response fitted, but its expenses may have grown
        since then through updates.

        Raises:
          FailedPrecondition: with reason RESPONSE_TOO_LARGE; the expenses
            exist, so the caller must read them another way.
        """
        budget = self._response_budget()
        size = response.ByteSize()
        if size <= budget:
            return
        count = len(response.expenses)
        _LOGGER.info(
            "replay of batch %s rejected: response of %d bytes", batch_id, size
        )
        raise FailedPrecondition(
            f"request_id {batch_id!r}: an earlier call with this key created "
            f"its {count} expenses, but they have grown since and now take "
            f"{size} bytes, over the {budget} bytes that max_message_bytes "
            f"({self._max_message_bytes}) leaves for a response; nothing was "
            "written. Read them with ListExpenses (order_by 'create_time desc')",
            reason="RESPONSE_TOO_LARGE",
            metadata={
                "request_id": batch_id,
                "created": "true",
                "response_bytes": str(size),
                "max_message_bytes": str(self._max_message_bytes),
            },
        )

    @staticmethod
    def _replay_batch(
        session: Session,
        batch_id: str,
        keys: Sequence[str],
        group_id: str,
        batch_hash: RequestHash | None,
    ) -> list[pb.Expense] | None:
        """Return the expenses an earlier batch with this key made, if any.

        Raises:
          InvalidArgument: the key came with other requests or another group,
            or a create of one expense used it.
        """
        earlier = storage.find_requests(session, [*keys, batch_id])
        # A batch stores its own key too, except one stored before batch and
        # single keys were checked against each other.
        own_key = earlier.pop(batch_id, None)
        if not earlier:
            if own_key is not None:
                raise _key_reused(batch_id, "request_id", "create of one expense")
            return None
        first = earlier.get(keys[0])
        stored = storage.get_expenses(
            session, [found.expense_name for found in earlier.values()]
        )
        if first is None or len(earlier) != len(keys):
            # A batch of another size used this key before.
            raise _key_reused(batch_id, "request_id", "batch of creates")
        _check_reuse(
            first,
            stored[first.expense_name].row.group_id,
            group_id,
            batch_id,
            batch_hash,
            "request_id",
        )
        return [
            messages.expense_message(stored[earlier[key].expense_name]) for key in keys
        ]

    # Reads

    def GetExpense(
        self, request: pb.GetExpenseRequest, context: grpc.ServicerContext
    ) -> pb.GetExpenseResponse:
        self._authorize_expense(request.name, context)
        stored = self._read(lambda session: self._require(session, request.name))
        return pb.GetExpenseResponse(expense=messages.expense_message(stored))

    def ListExpenses(
        self, request: pb.ListExpensesRequest, context: grpc.ServicerContext
    ) -> pb.ListExpensesResponse:
        query = self._expense_query(request)
        if query.group_id is not None:
            self._authorize(request.parent, context)
        else:
            authz.require_self(request.participant, "participant")
        size = pagination.page_size(request.page_size)
        selector = [
            "ListExpenses",
            request.parent,
            query.participant,
            query.category,
            str(query.start_date),
            str(query.end_date),
            query.show_deleted,
            query.order_by_create_time,
        ]
        after = self._page_key(
            pagination.decode_token(request.page_token, selector),
            query.order_by_create_time,
            request.page_token,
        )
        if query.group_id is not None:
            self._require_group(request.parent, context)
        rows = self._read(
            lambda session: storage.list_expenses(session, query, after, size + 1)
        )
        page = rows[:size]
        expenses = [messages.expense_message(stored) for stored in page]
        # A page of large expenses ends early, so that the response fits in
        # max_message_bytes. One expense always fits, as its lines are limited.
        fitting = max(_leading_fit(expenses, self._response_budget()), 1)
        next_token = ""
        if len(rows) > size or fitting < len(page):
            last = _page_position(page[fitting - 1].row, query.order_by_create_time)
            next_token = pagination.encode_token(last, selector)
        listed = list(zip(page[:fitting], expenses[:fitting], strict=True))
        if query.group_id is None:
            # Expenses of groups that the caller has left, or that were
            # deleted, are dropped, so a page across every group may be short.
            visible = self._visible_groups(page[:fitting], context)
            listed = [item for item in listed if item[0].row.group_id in visible]
        return pb.ListExpensesResponse(
            expenses=[expense for _, expense in listed],
            next_page_token=next_token,
        )

    @staticmethod
    def _expense_query(request: pb.ListExpensesRequest) -> storage.ExpenseQuery:
        violations = domain.Violations()

        group_id = None
        if request.parent != domain.ALL_GROUPS:
            group_id = violations.check(
                domain.parse_group_name, request.parent, "parent"
            )
        participant = None
        if request.participant:
            participant = violations.check(
                domain.validate_user_name, request.participant, "participant"
            )
        elif request.parent == domain.ALL_GROUPS:
            violations.errors.append(
                invalid_field(
                    "participant",
                    "is required when parent is 'groups/-'; name the user whose "
                    "expenses to list across every group, or give one group",
                    reason="REQUIRED",
                )
            )

        category = violations.check(
            domain.validate_category_filter, request.category, "category"
        )
        dates = {}
        for field in ("start_date", "end_date"):
            if date_given(request, field):
                dates[field] = violations.check(
                    domain.validate_date, getattr(request, field), True, field, True
                )

        order_by = " ".join(request.order_by.split())
        if order_by not in _ORDERINGS:
            violations.errors.append(
                invalid_field(
                    "order_by",
                    f"{request.order_by!r} is not a supported order; use "
                    "'expense_date desc' (the default) or 'create_time desc'",
                    reason="INVALID_ORDER_BY",
                )
            )
        violations.raise_if_any()

        start, end = dates.get("start_date"), dates.get("end_date")
        if start is not None and end is not None and start > end:
            raise invalid_field(
                "end_date",
                f"{end} is before start_date {start}; give an end date on or "
                "after the start date",
                reason="INVALID_DATE_RANGE",
            )
        return storage.ExpenseQuery(
            group_id=group_id,
            participant=participant,
            category=category,
            start_date=start,
            end_date=end,
            show_deleted=request.show_deleted,
            order_by_create_time=_ORDERINGS[order_by],
        )

    @staticmethod
    def _page_key(
        key: list | None, by_create_time: bool, token: str
    ) -> storage.PageKey | None:
        """Read the (date, time, name) or (time, date, name) key of a token.

        A token of an earlier version holds only the first column and the
        name, and its key has None in place of the second column.

        Raises:
          InvalidArgument: the key has neither form; the message quotes
            `token`, the page_token of the request.
        """
        if key is None:
            return None
        try:
            if len(key) == 2:
                first_text, name = key
                domain.parse_expense_name(name, "page_token")
                return _date_key(first_text, by_create_time), None, name
            date_text, time_text, name = key
            if by_create_time:
                date_text, time_text = time_text, date_text
            domain.parse_expense_name(name, "page_token")
            date = datetime.date.fromisoformat(date_text)
            time = datetime.datetime.fromisoformat(time_text)
            return (time, date, name) if by_create_time else (date, time, name)
        except (TypeError, ValueError, domain.InvalidArgument):
            raise pagination.invalid_token(token) from None

    def ListCategories(
        self, request: pb.ListCategoriesRequest, context: grpc.ServicerContext
    ) -> pb.ListCategoriesResponse:
        size = len(domain.CATEGORIES)
        if request.page_size:
            size = pagination.page_size(request.page_size)
        selector = ["ListCategories"]
        key = pagination.decode_token(request.page_token, selector)
        start = 0
        if key is not None:
            if len(key) != 1 or not isinstance(key[0], int) or key[0] < 0:
                raise pagination.invalid_token(request.page_token)
            start = key[0]
        page = domain.CATEGORIES[start : start + size]
        end = start + len(page)
        return pb.ListCategoriesResponse(
            categories=[
                pb.CategoryInfo(
                    category=info.category,
                    display_name=info.display_name,
                    parent_category=info.parent,
                )
                for info in page
            ],
            next_page_token=(
                pagination.encode_token([end], selector)
                if end < len(domain.CATEGORIES)
                else ""
            ),
        )

    # Update

    def UpdateExpense(
        self, request: pb.UpdateExpenseRequest, context: grpc.ServicerContext
    ) -> pb.UpdateExpenseResponse:
        group = _group_of(request.expense.name)
        access = self._access(group, context)
        with access, self._writes.track(group):
            return self._update_expense(request, context, access)

    def _update_expense(
        self,
        request: pb.UpdateExpenseRequest,
        context: grpc.ServicerContext,
        access: authz.GroupWriteAccess,
    ) -> pb.UpdateExpenseResponse:
        expense, violations = request.expense, domain.Violations()
        violations.check(domain.parse_expense_name, expense.name, "expense.name")
        expected = violations.check(domain.parse_etag, expense.etag, "expense.etag")
        modifier = violations.check(
            _author, expense.last_modifier, "expense.last_modifier"
        )
        filled = () if expense.last_modifier else ("expense.last_modifier",)
        fields = violations.check(
            domain.resolve_update_mask,
            list(request.update_mask.paths),
            domain.populated_fields(expense),
        )
        violations.raise_if_any()
        self._authorize_expense(expense.name, context, access)
        authz.require_acting_as_caller(modifier, "expense.last_modifier")
        changes = domain.parse_changes(expense, fields)

        checks = _WriteChecks(set(), set())
        for _ in range(MAX_UPDATE_ATTEMPTS):
            stored = self._read(lambda session: self._require(session, expense.name))
            checked, added = self._plan_update(stored, expected, changes)
            group = domain.group_name(stored.row.group_id)
            # The modifier must be a member now, but users who stay on the
            # expense need not be, so that an expense of a former member can
            # be fixed.
            user_fields = checked.draft.user_fields()
            fields = {
                user: paths for user, paths in user_fields.items() if user in added
            }
            fields.setdefault(modifier, []).append("expense.last_modifier")
            unverified = set(fields) - checks.members
            if unverified:
                self._membership.require_members(
                    group, unverified, context, fields, filled=filled
                )
                checks.members.update(unverified)
            # Nor may it change the amounts of a member whose removal, or the
            # group's deletion, is checking the balances.
            moved = _changed_users(stored, checked) - checks.movable
            if moved:
                # Users that the update drops keep the stored expense's fields.
                stored_fields = messages.stored_draft(stored).user_fields(prefix="")
                self._membership.require_not_leaving(
                    group, moved, context, user_fields, stored_fields
                )
                checks.movable.update(moved)
            try:
                updated = self._write(
                    lambda session: self._store_update(
                        session, expense.name, expected, changes, modifier, checks
                    )
                )
            except _RevisionChanged:
                continue
            return pb.UpdateExpenseResponse(expense=updated)
        raise Aborted(
            f"expense {expense.name!r} kept changing while this update was "
            "applied; read it again and retry",
            reason="CONCURRENT_MODIFICATION",
            resource=Resource(domain.EXPENSE_TYPE, expense.name),
        )

    @staticmethod
    def _plan_update(
        stored: storage.StoredExpense, expected: int | None, changes: dict
    ) -> tuple[domain.CheckedExpense, set[str]]:
        """Check an update against the stored expense.

        Returns:
          The checked expense after the update, and the users it adds.
        """
        name = stored.row.name
        if stored.row.delete_time is not None:
            raise FailedPrecondition(
                f"expense {name!r} is deleted and cannot be updated; restore it "
                "with UndeleteExpense first",
                reason="EXPENSE_DELETED",
                preconditions=[
                    PreconditionViolation(
                        "EXPENSE_DELETED", name, "a deleted expense cannot be updated"
                    )
                ],
            )
        _check_etag(expected, stored, "expense.etag")
        before = messages.stored_draft(stored)
        domain.check_changed_date(changes, before.expense_date)
        checked = domain.check_expense(domain.apply_changes(before, changes), name)
        return checked, checked.draft.users() - before.users()

    def _store_update(
        self,
        session: Session,
        name: str,
        expected: int | None,
        changes: dict,
        modifier: str,
        checks: _WriteChecks,
    ) -> pb.Expense:
        """Apply an update to the expense as it is now, under its row lock.

        A concurrent update may have committed since the first read, so the
        update is checked again here. If it now adds users whose membership
        was not checked, or changes the amounts of users not checked for a
        removal, it raises _RevisionChanged so the caller checks them.
        """
        stored = self._require(session, name, lock=True)
        checked, added = self._plan_update(stored, expected, changes)
        if not added <= checks.members or not (
            _changed_users(stored, checked) <= checks.movable
        ):
            raise _RevisionChanged()
        if checked.draft == messages.stored_draft(stored):
            # An update that sets every field to its stored value writes
            # nothing. The etag, update_time, last_modifier and ledger stay
            # as they are, so other readers' etags stay current.
            return messages.expense_message(stored)
        now = storage.utc_now()
        row = stored.row
        total = checked.draft.total
        changes = {(row.group_id, row.currency_code): -abs(row.total_minor)}
        key = (row.group_id, total.currency_code)
        changes[key] = changes.get(key, 0) + abs(total.minor)
        volumes.add_expense_volumes(session, changes)
        messages.copy_fields(row, checked.draft)
        row.last_modifier = modifier
        row.update_time = now
        payers, participants = messages.line_rows(row.name, checked)
        stored = storage.replace_lines(session, stored, payers, participants)
        ledger.append_event(session, stored, ledger.UPDATED, now)
        return messages.expense_message(stored)

    # Delete and undelete

    def DeleteExpense(
        self, request: pb.DeleteExpenseRequest, context: grpc.ServicerContext
    ) -> pb.DeleteExpenseResponse:
        group = _group_of(request.name)
        access = self._access(group, context)
        with access, self._writes.track(group):
            return self._delete_expense(request, context, access)

    def _delete_expense(
        self,
        request: pb.DeleteExpenseRequest,
        context: grpc.ServicerContext,
        access: authz.GroupWriteAccess,
    ) -> pb.DeleteExpenseResponse:
        expected, modifier = self._parse_state_change(request)
        self._authorize_expense(request.name, context, access)
        if modifier is not None:
            authz.require_acting_as_caller(modifier, "last_modifier")
        group = _group_of(request.name)

        def delete(session: Session) -> pb.Expense:
            stored = self._require(session, request.name, lock=True)
            if stored.row.delete_time is not None:
                return messages.expense_message(stored)
            _check_etag(expected, stored, "etag")
            if not messages.stored_amounts(stored).keys() <= movable:
                raise _RevisionChanged()
            if modifier is not None and not modifier_checked:
                # The expense was restored after the read that found it
                # deleted, so the modifier has not been checked yet.
                raise _RevisionChanged()
            row = stored.row
            volumes.add_expense_volumes(
                session, {(row.group_id, row.currency_code): -abs(row.total_minor)}
            )
            now = storage.utc_now()
            row.delete_time = now
            row.update_time = now
            if modifier is not None:
                row.last_modifier = modifier
            session.flush()
            ledger.append_event(session, stored, ledger.DELETED, now)
            return messages.expense_message(stored)

        # The delete takes back what each payer paid and each participant
        # owes, so none of them may be leaving. They need not be members, so
        # that an expense of a former member can still be deleted, but the
        # modifier must be one, as for an update. A delete of a deleted
        # expense changes nothing, so it checks neither. An update may change
        # the users between this check and the write; then check again.
        movable: set[str] = set()
        modifier_checked = False
        for _ in range(MAX_UPDATE_ATTEMPTS):
            stored = self._read(lambda session: self._require(session, request.name))
            deleted = stored.row.delete_time is not None
            moved = set()
            if not deleted:
                moved = set(messages.stored_amounts(stored)) - movable
            if moved:
                fields = messages.stored_draft(stored).user_fields(prefix="")
                self._membership.require_not_leaving(
                    group, moved, context, stored_fields=fields
                )
                movable.update(moved)
            if modifier is not None and not deleted and not modifier_checked:
                self._require_modifier(group, modifier, request, context)
                modifier_checked = True
            try:
                return pb.DeleteExpenseResponse(expense=self._write(delete))
            except _RevisionChanged:
                continue
        raise Aborted(
            f"expense {request.name!r} kept changing while it was deleted; read "
            "it again and retry",
            reason="CONCURRENT_MODIFICATION",
            resource=Resource(domain.EXPENSE_TYPE, request.name),
        )

    def UndeleteExpense(
        self, request: pb.UndeleteExpenseRequest, context: grpc.ServicerContext
    ) -> pb.UndeleteExpenseResponse:
        group = _group_of(request.name)
        access = self._access(group, context)
        with access, self._writes.track(group):
            return self._undelete_expense(request, context, access)

    def _undelete_expense(
        self,
        request: pb.UndeleteExpenseRequest,
        context: grpc.ServicerContext,
        access: authz.GroupWriteAccess,
    ) -> pb.UndeleteExpenseResponse:
        expected, modifier = self._parse_state_change(request)
        self._authorize_expense(request.name, context, access)
        if modifier is not None:
            authz.require_acting_as_caller(modifier, "last_modifier")

        def check(stored: storage.StoredExpense) -> set[str]:
            """Check the expense can be restored; return its users."""
            if stored.row.delete_time is None:
                raise AlreadyExists(
                    f"expense {request.name!r} is not deleted, so there is nothing "
                    "to restore",
                    reason="EXPENSE_NOT_DELETED",
                    resource=Resource(domain.EXPENSE_TYPE, request.name),
                )
            _check_etag(expected, stored, "etag")
            return messages.stored_draft(stored).users()

        def undelete(session: Session) -> pb.Expense:
            stored = self._require(session, request.name, lock=True)
            if not check(stored) <= verified:
                raise _RevisionChanged()
            row = stored.row
            volumes.add_expense_volumes(
                session, {(row.group_id, row.currency_code): abs(row.total_minor)}
            )
            now = storage.utc_now()
            row.delete_time = None
            row.update_time = now
            if modifier is not None:
                row.last_modifier = modifier
            session.flush()
            ledger.append_event(session, stored, ledger.RESTORED, now)
            return messages.expense_message(stored)

        # Restored debts must be settleable, so every payer and participant
        # must still be a member. The expense may be restored, changed and
        # deleted again between the check and the write; then check again.
        verified: set[str] = set()
        modifier_checked = False
        for _ in range(MAX_UPDATE_ATTEMPTS):
            stored = self._read(lambda session: self._require(session, request.name))
            group = domain.group_name(stored.row.group_id)
            users = check(stored)
            if not users <= verified:
                fields = messages.stored_draft(stored).user_fields(prefix="")
                self._membership.require_members(
                    group, users, context, stored_fields=fields
                )
                verified.update(users)
            if modifier is not None and not modifier_checked:
                self._require_modifier(group, modifier, request, context)
                modifier_checked = True
            try:
                return pb.UndeleteExpenseResponse(expense=self._write(undelete))
            except _RevisionChanged:
                continue
        raise Aborted(
            f"expense {request.name!r} kept changing while it was restored; read "
            "it again and retry",
            reason="CONCURRENT_MODIFICATION",
            resource=Resource(domain.EXPENSE_TYPE, request.name),
        )

    @staticmethod
    def _parse_state_change(
        request: pb.DeleteExpenseRequest | pb.UndeleteExpenseRequest,
    ) -> tuple[int | None, str | None]:
        """Check a delete or restore request.

        Returns:
          The etag's revision (None when no etag was sent), and the modifier:
          `last_modifier`, or the caller when it is empty. It is None when
          both are missing because authentication is off, and the write then
          keeps the stored `last_modifier`.
        """
        violations = domain.Violations()
        violations.check(domain.parse_expense_name, request.name, "name")
        expected = violations.check(domain.parse_etag, request.etag, "etag")
        modifier = None
        if request.last_modifier or auth.current_principal() is not None:
            modifier = violations.check(_author, request.last_modifier, "last_modifier")
        violations.raise_if_any()
        return expected, modifier

    def _require_modifier(
        self,
        group: str,
        modifier: str,
        request: pb.DeleteExpenseRequest | pb.UndeleteExpenseRequest,
        context: grpc.ServicerContext,
    ) -> None:
        """Check that the user a delete or restore records is a member now.

        The same rule applies to the `last_modifier` of an update, so an
        administrator who is not a member names a member as the modifier.
        """
        filled = () if request.last_modifier else ("last_modifier",)
        self._membership.require_members(
            group, {modifier}, context, {modifier: ["last_modifier"]}, filled=filled
        )
