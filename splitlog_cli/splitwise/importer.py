"""`splitlog import splitwise`: create a Splitwise export in a running splitlog.

The whole file is parsed, converted and checked against its summary rows
before the first call, so a bad file writes nothing. The file's users that
exist already are then read, and one that is deactivated, or that an import
did not create, stops the import before the first write. The writes then go
through the gateway in this order: users, group, members, every expense in
one BatchCreateExpenses call (one per `MAX_BATCH_CREATES` rows or
`MAX_BATCH_PAIRS` payer and participant pairs, and smaller when the server
rejects a response as too large), then the settlements. Every create carries
ids derived from the file (see `identity`), so running the same import again
skips what exists and creates the rest, without duplicates. When the expense
write fails, the group that this run created is deleted again, because it
contains nothing.

The ids are predictable, so anyone could create a user or a group with one
of them first. The import therefore uses an existing user only when its
email is the one the import gives (`identity.email`), which user_service
lets only administrators set, and an existing group only when the file's
first user created it and every member is one of the file's users.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.splitwise import identity
from splitlog_cli.splitwise.convert import (
    UNKNOWN_MEMBER,
    ExpensePlan,
    ImportPlan,
    Mismatch,
    SettlementPlan,
    compare_balances,
    convert,
)
from splitlog_cli.splitwise.csvformat import (
    SplitwiseFormatError,
    missing_summaries,
    parse_bytes,
)
from splitlog_cli.splitwise.progress import ProgressBar
from splitlog_cli.splitwise.wire import pages, to_date, to_minor, to_money
from splitlog_runtime.limits import DEFAULTS, RequestLimits
from user_service.domain import ISO_4217_CODES

_T = TypeVar("_T")

MAX_DISPLAY_NAME = 100
PAGE_SIZE = 1000
DEFAULT_BALANCE_WAIT = 30.0
BALANCE_POLL_SECONDS = 0.2
#: Expenses per BatchCreateExpenses call: the default of expense_service's
#: expense_max_batch_creates setting. A server set lower rejects larger files.
MAX_BATCH_CREATES = 10_000
#: Payer and participant pairs per BatchCreateExpenses call: the default of
#: expense_service's expense_max_batch_pairs setting.
MAX_BATCH_PAIRS = 50_000
#: Expenses of a batch per `--timeout` of its deadline.
ROWS_PER_TIMEOUT = 1000
# The index of the failing create in a batch error, as in `requests[12].`.
_BATCH_INDEX = re.compile(r"requests\[(\d+)\]\.?")


class SplitwiseImportError(Exception):
    """An import that cannot start or did not finish; the message gives the fix."""


@dataclass
class ImportResult:
    """Counts and balances of a finished import, for the closing summary."""

    group: str
    group_display_name: str
    rows: int
    expenses: int = 0
    settlements: int = 0
    members: int = 0
    skipped_rows: tuple[int, ...] = ()
    already_present: int = 0
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    actual: dict[str, dict[str, int]] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)


@dataclass
class _Ids:
    """Resource names of one import: member name -> `users/{id}`, and the group."""

    digest: str
    group: str
    users: dict[str, str]

    def request_id(self, kind: str, key: str) -> str:
        """Return the request id of a create in this import's group.

        The ids in the file's first group derive from the digest alone, as
        they did before a file could have several groups. The ids in a later
        group also contain the group, so they never replay a create of a
        deleted group.
        """
        scope = self.digest
        if self.group != f"groups/{identity.group_id(self.digest)}":
            scope = f"{self.digest}/{self.group}"
        return identity.request_id(scope, kind, key)


def _read_regular_file(path: Path) -> bytes:
    """Read a regular file, checked before opening it.

    A device such as /dev/zero never ends, and opening a FIFO blocks until
    something writes to it.

    Raises:
      OSError: the path is missing, unreadable or not a regular file.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(
            errno.EINVAL, "not a regular file; give the CSV file Splitwise wrote"
        )
    return path.read_bytes()


def load_plan(path: Path, limits: RequestLimits = DEFAULTS) -> tuple[ImportPlan, str]:
    """Read, convert and check a file; return the plan and the file digest.

    `limits` are the server's payer and participant limits per expense,
    which the rows are checked against.

    Raises:
      SplitwiseFormatError: the file is not a readable Splitwise export, a
        currency of its rows has no summary row, or a row breaks a limit of
        `limits` or of the services (see `convert`).
      SplitwiseImportError: the rows do not add up to the file's summary row.
    """
    data = _read_regular_file(path)
    source = parse_bytes(data)
    missing = missing_summaries(source)
    if missing:
        raise SplitwiseFormatError(missing)
    plan = convert(source, limits)
    mismatches = plan.mismatches()
    if mismatches:
        listed = "\n  ".join(str(mismatch) for mismatch in mismatches)
        raise SplitwiseImportError(
            f"{path}: the rows do not add up to the summary row, so the file was "
            f"changed after Splitwise wrote it; nothing was imported:\n  {listed}"
        )
    return plan, identity.file_digest(data)


class SplitwiseImporter:
    """Client that writes an import plan through the gateway, idempotently.

    Args:
      channel: a channel to the gateway.
      timeout: deadline in seconds of each call.
      progress_stream: where the progress bar is drawn; None for stderr.
      balance_wait: seconds to wait for the group balance to take in the
        last writes before it is compared with the file.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        timeout: float,
        progress_stream: TextIO | None = None,
        balance_wait: float = DEFAULT_BALANCE_WAIT,
    ) -> None:
        self._balance_wait = balance_wait
        self._users = users_grpc.UsersServiceStub(channel)
        self._expenses = expenses_grpc.ExpensesServiceStub(channel)
        self._balances = balances_grpc.BalancesServiceStub(channel)
        self._timeout = timeout
        self._progress_stream = progress_stream

    def run(self, plan: ImportPlan, digest: str, group_name: str) -> ImportResult:
        """Create everything in the plan that does not exist yet.

        Raises:
          SplitwiseImportError: a user of the file exists and is deactivated
            or was not created by an import, which stops the import before
            the first write; the file's group exists and was not created by
            this import; or a call failed.
            The message of a failed call names the row and asks the user to
            run the same import again to complete it.
        """
        ids = _Ids(digest, f"groups/{identity.group_id(digest)}", {})
        result = ImportResult(ids.group, group_name, rows=len(plan.source.rows))
        result.skipped_rows = plan.skipped
        entries = plan.entries
        steps = len(plan.members) * 2 + 1 + len(entries)
        progress = ProgressBar("importing", steps, self._progress_stream)
        step = "reading the users that exist"
        created_group = group_exists = False
        try:
            deactivated, foreign = self._existing_users(plan.members, digest)
            if foreign:
                raise SplitwiseImportError(_foreign_users_message(foreign))
            if deactivated:
                raise SplitwiseImportError(_deactivated_message(deactivated))
            step = "creating the users"
            currency = _default_currency(plan.source.currencies())
            for member in plan.members:
                ids.users[member] = self._create_user(member, digest, currency)
                progress.advance()
            step = "creating the group"
            created_group, result.group_display_name = self._create_group(
                ids, group_name, currency
            )
            result.group = ids.group
            group_exists = True
            progress.advance()
            step = "adding the members"
            for member in plan.members:
                self._add_member(ids, member)
                progress.advance()
            result.members = len(plan.members)
            step = "listing the entries of an earlier run"
            existing = self._existing_entries(ids)
            expenses = [entry for entry in entries if isinstance(entry, ExpensePlan)]
            settlements = [
                entry for entry in entries if isinstance(entry, SettlementPlan)
            ]
            result.expenses, result.settlements = len(expenses), len(settlements)
            present = [
                entry for entry in entries if _entry_name(ids, entry) in existing
            ]
            result.already_present = len(present)
            progress.advance(len(present))
            missing = [
                entry for entry in expenses if _entry_name(ids, entry) not in existing
            ]
            step = "writing the expenses"
            # A call rejected with RESPONSE_TOO_LARGE wrote nothing, and its
            # error names how many leading creates fit, so later calls send
            # that many at most.
            size = MAX_BATCH_CREATES
            sending: list[ExpensePlan] = []
            written = 0
            try:
                for batch in _batches(missing):
                    start = 0
                    while start < len(batch):
                        sending = batch[start : start + size]
                        try:
                            self._create_expenses(ids, sending)
                        except grpc.RpcError as exc:
                            fitting = _creates_that_fit(exc)
                            if not 0 < fitting < len(sending):
                                raise
                            size = fitting
                            continue
                        start += len(sending)
                        written += len(sending)
                        progress.advance(len(sending))
            except grpc.RpcError as exc:
                progress.finish()
                raise self._expenses_failed(
                    exc,
                    sending,
                    ids,
                    created_group and not existing and not written,
                    written,
                ) from None
            for entry in settlements:
                if _entry_name(ids, entry) in existing:
                    continue
                step = f"importing the payment on line {entry.line}"
                self._create_settlement(ids, entry)
                progress.advance()
            step = "reading the group balance"
            progress.finish()
            result.actual = self._await_balance(ids, plan)
        except grpc.RpcError as exc:
            progress.finish()
            if group_exists:
                left = f"What was created so far stays in {ids.group}."
            else:
                left = _left_without_group(ids, len(plan.members))
            raise SplitwiseImportError(
                f"import stopped while {step}: {exc.code().name}: {exc.details()}\n"
                f"{left} Fix the cause and run the same command again: it skips "
                "what exists and creates the rest, without duplicates."
            ) from None
        result.expected = _by_user(plan.expected_balances(), ids)
        names = {user: member for member, user in ids.users.items()}
        result.mismatches = [
            Mismatch(m.currency, names.get(m.member, m.member), m.expected, m.actual)
            for m in compare_balances(result.expected, result.actual)
        ]
        result.expected = _by_member(result.expected, names)
        result.actual = _by_member(result.actual, names)
        return result

    def _existing_users(
        self, members: tuple[str, ...], digest: str
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
        """Read the file's users that exist already.

        A deactivated user cannot create or join a group. Without this check
        the import would create the file's other users and then stop.

        Returns:
          (member, user name) of each deactivated user, and (member, user
          name, email) of each user whose email is not the import's.
        """
        deactivated, foreign = [], []
        for member in members:
            name = _user_name(member, digest)
            try:
                user = self._users.GetUser(
                    users_pb.GetUserRequest(name=name), timeout=self._timeout
                ).user
            except grpc.RpcError as exc:
                # A caller who may not read other users may not create them
                # either, and CreateUser's error then names what is needed.
                if exc.code() in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    continue
                raise
            if not _is_import_email(user):
                foreign.append((member, name, user.email))
            elif user.state == users_pb.User.STATE_DEACTIVATED:
                deactivated.append((member, name))
        return deactivated, foreign

    def _create_user(self, member: str, digest: str, currency: str) -> str:
        name = _user_name(member, digest)
        user_id = name.removeprefix("users/")
        request = users_pb.CreateUserRequest(
            user=users_pb.User(
                email=identity.email(user_id),
                display_name=member[:MAX_DISPLAY_NAME],
                currency_code=currency,
            ),
            user_id=user_id,
            request_id=identity.request_id(digest, "user", user_id),
        )
        created = self._create(
            lambda: self._users.CreateUser(request, timeout=self._timeout)
        )
        if not created:
            # Someone may have created the user after `_existing_users` read.
            user = self._users.GetUser(
                users_pb.GetUserRequest(name=name), timeout=self._timeout
            ).user
            if not _is_import_email(user):
                raise SplitwiseImportError(
                    _foreign_users_message([(member, name, user.email)], early=False)
                )
        return name

    def _create_group(
        self, ids: _Ids, display_name: str, currency: str
    ) -> tuple[bool, str]:
        """Create the group, or find it from an earlier run.

        The id of a deleted group is never used again. When the file's group
        was deleted, the next id in `identity.group_ids` is tried, so the
        file can be imported once more and a rerun still finds its group.
        `ids.group` names the group found or created.

        Returns:
          Whether this run created the group, and its display name.
        """
        creator = next(iter(ids.users.values()))
        display_name = display_name[:MAX_DISPLAY_NAME]
        for group_id in identity.group_ids(ids.digest):
            ids.group = f"groups/{group_id}"
            # The key names the display name too: user_service rejects a key
            # sent again with other values, and a rerun may pass another
            # --group-name. Its create then finds the group ALREADY_EXISTS.
            key = f"{ids.group}/{display_name}"
            request = users_pb.CreateGroupRequest(
                group=users_pb.Group(
                    display_name=display_name,
                    creator=creator,
                    currency_code=currency,
                ),
                group_id=group_id,
                request_id=identity.request_id(ids.digest, "group", key),
            )
            created = True
            try:
                group = self._users.CreateGroup(request, timeout=self._timeout).group
            except grpc.RpcError as exc:
                # user_service does not replay the request id of a deleted
                # group, so it returns NOT_FOUND for the group it created.
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    continue
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                created = False
            if not created:
                try:
                    group = self._users.GetGroup(
                        users_pb.GetGroupRequest(name=ids.group),
                        timeout=self._timeout,
                    ).group
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    continue
            # A replayed request id returns the group as it is now, with the
            # members added since, so it is checked like a group found.
            self._check_group_is_ours(ids, group)
            return created, display_name if created else group.display_name
        raise SplitwiseImportError(
            f"import stopped: the groups of this file were deleted "
            f"{identity.MAX_GROUP_IDS} times, and the id of a deleted group is "
            "never used again. Change the file's bytes (an empty line at its "
            "end is enough) to import it into a new group."
        )

    def _check_group_is_ours(self, ids: _Ids, group: users_pb.Group) -> None:
        """Raise unless the file's first user created the group and every
        member is one of the file's users.

        Only that user or an administrator may name that creator, and only a
        member or an administrator may add members.
        """
        problem = self._foreign_group_problem(ids, group)
        if not problem:
            return
        raise SplitwiseImportError(
            "import stopped: the import writes only into a group that the file's "
            f"first user created and whose members are all users of the file, but "
            f"the group {ids.group} {problem}. Change the file's bytes (an empty "
            "line at its end is enough) to import it into a new group. Or, as an "
            "administrator, remove the members who are not in the file, or delete "
            f"a group that this import did not create (`splitlog groups delete "
            f"{ids.group}`), and run the same command again.\n"
            f"{_left_without_group(ids, len(ids.users))}"
        )

    def _foreign_group_problem(self, ids: _Ids, group: users_pb.Group) -> str:
        """Return why a group is not this import's, or "" if it is."""
        creator = next(iter(ids.users.values()))
        if group.creator != creator:
            return f"was created by {group.creator}, not by {creator}"
        ours = set(ids.users.values())
        members = pages(
            lambda token: self._users.ListGroupMembers(
                users_pb.ListGroupMembersRequest(
                    parent=ids.group, page_size=PAGE_SIZE, page_token=token
                ),
                timeout=self._timeout,
            ),
            "members",
        )
        others = [member.user for member in members if member.user not in ours]
        if others:
            return f"has members who are not in the file: {', '.join(others)}"
        return ""

    def _add_member(self, ids: _Ids, member: str) -> None:
        request = users_pb.AddGroupMemberRequest(
            parent=ids.group, user=ids.users[member]
        )
        self._create(lambda: self._users.AddGroupMember(request, timeout=self._timeout))

    def _existing_entries(self, ids: _Ids) -> set[str]:
        """Return the names of the group's expenses and settlements, deleted too.

        An entry that a user deleted after an earlier import is not created
        again.
        """
        expenses = pages(
            lambda token: self._expenses.ListExpenses(
                expenses_pb.ListExpensesRequest(
                    parent=ids.group,
                    page_size=PAGE_SIZE,
                    page_token=token,
                    show_deleted=True,
                ),
                timeout=self._timeout,
            ),
            "expenses",
        )
        settlements = pages(
            lambda token: self._balances.ListSettlements(
                balances_pb.ListSettlementsRequest(
                    parent=ids.group,
                    page_size=PAGE_SIZE,
                    page_token=token,
                    show_deleted=True,
                ),
                timeout=self._timeout,
            ),
            "settlements",
        )
        return {entry.name for entry in (*expenses, *settlements)}

    def _create_expenses(self, ids: _Ids, entries: list[ExpensePlan]) -> None:
        """Create expenses in one BatchCreateExpenses call: all or none.

        The batch's request id depends on the rows in it, so a retry of
        the same rows replays it and another set of rows gets another key.
        """
        creator = next(iter(ids.users.values()))
        keys = ",".join(entry.key for entry in entries)
        request = expenses_pb.BatchCreateExpensesRequest(
            parent=ids.group,
            requests=[
                expenses_pb.CreateExpenseRequest(
                    expense=_expense_message(entry, ids.users, creator),
                    expense_id=identity.entry_id(entry.key),
                    request_id=ids.request_id("expense", entry.key),
                )
                for entry in entries
            ],
            request_id=ids.request_id("expense-batch", keys),
        )
        # The deadline is per call, and a batch does the work of many calls.
        scale = max(1, -(-len(entries) // ROWS_PER_TIMEOUT))
        self._expenses.BatchCreateExpenses(request, timeout=self._timeout * scale)

    def _expenses_failed(
        self,
        exc: grpc.RpcError,
        entries: list[ExpensePlan],
        ids: _Ids,
        remove_group: bool,
        written: int = 0,
    ) -> SplitwiseImportError:
        """Build the error of a failed expense write, after cleaning up.

        Args:
          exc: the error of the batch call.
          entries: the expenses of the batch, to find the row it names.
          ids: the import's resource names.
          remove_group: whether this run created the group and nothing else
            is in it, so that it can be deleted. A later run of the same
            file then creates the next group of `identity.group_ids`.
          written: expenses that earlier calls of this run created.
        """
        details = exc.details() or ""
        found = _BATCH_INDEX.search(details)
        where = ""
        if found is not None and int(found.group(1)) < len(entries):
            line = entries[int(found.group(1))].line
            # "requests[3].expense.total: ..." becomes "expense.total: ...".
            details = _BATCH_INDEX.sub("", details, count=1)
            where = f" on line {line}"
        cause = f"{exc.code().name}: {details}"
        if exc.code() in (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,
        ):
            # The batch may have committed after the client gave up; running
            # the import again replays it, so the group stays.
            left = (
                f"The expenses may have been written; {ids.group} and its members "
                "stay, and running the same command again completes the import."
            )
        elif written:
            left = (
                f"This call wrote nothing, but earlier calls wrote {written} "
                f"expenses; {ids.group} and its members stay, and running the "
                "same command again completes the import."
            )
        else:
            left = f"No expense was written; {ids.group} and its members stay."
            if remove_group:
                left = self._delete_group(ids)
            if left.endswith("stay."):
                left += (
                    f" Delete the group with `splitlog groups delete {ids.group}` "
                    "if it holds nothing else."
                )
        return SplitwiseImportError(
            f"import stopped: expense_service rejected the expenses{where}: "
            f"{cause}\n{left}"
        )

    def _delete_group(self, ids: _Ids) -> str:
        """Delete the group this run created; return a sentence on what is left."""
        try:
            self._users.DeleteGroup(
                users_pb.DeleteGroupRequest(name=ids.group), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            return (
                f"No expense was written. The group {ids.group} could not be "
                f"deleted again ({exc.code().name}: {exc.details()}), so it and "
                "its members stay."
            )
        return (
            f"No expense was written, and the group {ids.group} that this import "
            "created was deleted again. The users stay, so that a second run "
            "reuses them."
        )

    def _create_settlement(self, ids: _Ids, entry: SettlementPlan) -> bool:
        creator = next(iter(ids.users.values()))
        request = balances_pb.CreateSettlementRequest(
            parent=ids.group,
            settlement=balances_pb.Settlement(
                payer=ids.users[entry.payer],
                payee=ids.users[entry.payee],
                amount=to_money(entry.amount, entry.currency),
                settlement_date=to_date(entry.date),
                note=entry.note,
                creator=creator,
            ),
            settlement_id=identity.entry_id(entry.key),
            request_id=ids.request_id("settlement", entry.key),
        )
        return self._create(
            lambda: self._balances.CreateSettlement(request, timeout=self._timeout)
        )

    def _await_balance(self, ids: _Ids, plan: ImportPlan) -> dict[str, dict[str, int]]:
        """Read the group balance until it matches the plan or the wait is over.

        balance_service applies expenses from a ledger feed, shortly after
        CreateExpense returns, so the first read can miss the newest ones.
        """
        expected = _by_user(plan.expected_balances(), ids)
        deadline = time.monotonic() + self._balance_wait
        while True:
            actual = self._group_balance(ids)
            if not compare_balances(expected, actual):
                return actual
            if time.monotonic() >= deadline:
                return actual
            time.sleep(BALANCE_POLL_SECONDS)

    def _group_balance(self, ids: _Ids) -> dict[str, dict[str, int]]:
        response = self._balances.GetGroupBalance(
            balances_pb.GetGroupBalanceRequest(name=f"{ids.group}/balance"),
            timeout=self._timeout,
        )
        balances: dict[str, dict[str, int]] = {}
        for currency_balance in response.balance.currency_balances:
            code = currency_balance.currency_code
            balances[code] = {
                member.user: to_minor(member.net_amount)
                for member in currency_balance.member_balances
            }
        return balances

    @staticmethod
    def _create(call: Callable[[], _T]) -> bool:
        """Run a create call; return False when the resource already exists."""
        try:
            call()
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                return False
            raise
        return True


def _batches(
    entries: list[ExpensePlan],
    max_creates: int = MAX_BATCH_CREATES,
    max_pairs: int = MAX_BATCH_PAIRS,
) -> Iterator[list[ExpensePlan]]:
    """Split expenses into batches within the server's default batch limits.

    Each batch has at most `max_creates` creates and `max_pairs` payer and
    participant pairs, unless one expense alone has more.
    """
    batch: list[ExpensePlan] = []
    pairs = 0
    for entry in entries:
        cost = len(entry.payers) * len(entry.owed)
        if batch and (len(batch) == max_creates or pairs + cost > max_pairs):
            yield batch
            batch, pairs = [], 0
        batch.append(entry)
        pairs += cost
    if batch:
        yield batch


def _creates_that_fit(exc: grpc.RpcError) -> int:
    """Return the creates that fit in one call, from a RESPONSE_TOO_LARGE error.

    Returns 0 for any other error.
    """
    status = rpc_status.from_call(exc)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.reason == "RESPONSE_TOO_LARGE":
            return int(info.metadata.get("creates_that_fit", "0") or 0)
    return 0


def _expense_message(
    entry: ExpensePlan, users: dict[str, str], creator: str
) -> expenses_pb.Expense:
    return expenses_pb.Expense(
        description=entry.description,
        category=expenses_pb.Category.Value(entry.category),
        expense_date=to_date(entry.date),
        total=to_money(entry.total, entry.currency),
        payers=[
            expenses_pb.Payer(
                user=users[member], amount=to_money(amount, entry.currency)
            )
            for member, amount in entry.payers
        ],
        split=expenses_pb.Split(
            type=expenses_pb.SPLIT_TYPE_EXACT,
            participants=[
                expenses_pb.SplitParticipant(
                    user=users[member],
                    exact_amount=to_money(amount, entry.currency),
                )
                for member, amount in entry.owed
            ],
        ),
        notes=entry.notes,
        creator=creator,
    )


def _user_name(member: str, digest: str) -> str:
    """Return the `users/{id}` of a member column, or of the file's placeholder."""
    if member == UNKNOWN_MEMBER:
        return f"users/{identity.placeholder_user_id(digest)}"
    return f"users/{identity.user_id(member)}"


def _default_currency(currencies: list[str]) -> str:
    """Return the default currency of the new users and group.

    It is the file's first currency that user_service accepts as a default,
    that is an active ISO 4217 code. An empty result leaves the choice to
    user_service, for a file whose every currency is withdrawn (such as DEM
    or HRK), which expenses may use but a default may not.
    """
    return next((code for code in currencies if code in ISO_4217_CODES), "")


def _is_import_email(user: users_pb.User) -> bool:
    """Return whether a user has the email that the import gives its users."""
    user_id = user.name.removeprefix("users/")
    return user.email.casefold() == identity.email(user_id).casefold()


def _foreign_users_message(
    foreign: list[tuple[str, str, str]], early: bool = True
) -> str:
    """Build the error for users of the file that an import did not create."""
    lines = []
    for member, name, email in foreign:
        if member == UNKNOWN_MEMBER:
            fix = (
                "Its id comes from the file's bytes, so change them (an empty "
                "line at the end is enough) to import the file with a new "
                "placeholder."
            )
        else:
            fix = (
                "The user's id comes from the member's name, so rename the "
                f"column in the file's header (for example to '{member} 2') to "
                "import the member as a new user."
            )
        lines.append(
            f"member {member!r} would be the user {name}, which exists with the "
            f"email {email!r}, not {identity.email(name.removeprefix('users/'))!r}, "
            f"so an import did not create it. {fix}"
        )
    listed = "\n  ".join(lines)
    left = (
        "Nothing was created."
        if early
        else "The users created before it stay, and no group was created."
    )
    return (
        "import stopped, because a user of the file exists that someone other "
        "than an import created, and they could sign in as that member:\n"
        f"  {listed}\nAn administrator may want to deactivate such an account. "
        f"{left}"
    )


def _deactivated_message(deactivated: list[tuple[str, str]]) -> str:
    """Build the error for users of the file that exist and are deactivated."""
    lines = []
    for member, name in deactivated:
        if member == UNKNOWN_MEMBER:
            lines.append(
                f"the placeholder {member!r} of this file ({name}) is deactivated. "
                "Its id comes from the file's bytes, so change them (an empty "
                "line at the end is enough) to import the file into a new group "
                "with a new placeholder."
            )
        else:
            lines.append(
                f"member {member!r} is the user {name}, which is deactivated. "
                "splitlog cannot reactivate a user, and the user's id comes from "
                f"the member's name, so rename the column in the file's header "
                f"(for example to '{member} 2') to import the member as a new "
                "user."
            )
    listed = "\n  ".join(lines)
    return (
        "import stopped before writing anything, because a deactivated user "
        f"cannot join the group:\n  {listed}\nNothing was created."
    )


def _left_without_group(ids: _Ids, member_count: int) -> str:
    """Describe what an import that stopped before its group existed left behind."""
    if not ids.users:
        return "Nothing was created: neither the group nor any user exists yet."
    names = ", ".join(ids.users.values())
    return (
        f"The group {ids.group} was not created. {len(ids.users)} of the file's "
        f"{member_count} users exist ({names}); a second run reuses them."
    )


def _entry_name(ids: _Ids, entry: ExpensePlan | SettlementPlan) -> str:
    collection = "expenses" if isinstance(entry, ExpensePlan) else "settlements"
    return f"{ids.group}/{collection}/{identity.entry_id(entry.key)}"


def _by_user(
    balances: dict[str, dict[str, int]], ids: _Ids
) -> dict[str, dict[str, int]]:
    return {
        currency: {ids.users[member]: net for member, net in nets.items()}
        for currency, nets in balances.items()
    }


def _by_member(
    balances: dict[str, dict[str, int]], names: dict[str, str]
) -> dict[str, dict[str, int]]:
    return {
        currency: {names.get(user, user): net for user, net in nets.items()}
        for currency, nets in balances.items()
    }
