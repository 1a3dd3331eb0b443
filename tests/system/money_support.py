"""Helpers for the fault tests of the money side: clients, writers, checks.

The tests talk to a running `splitlog up` through its gateway only. An
`ExpenseWriter` thread writes a random stream of expense changes the way a
careful client does. A create carries a `request_id` and is sent again with
the same one until it is acknowledged. An update, delete or undelete that
fails with a retryable status is resolved by reading the expense back, and is
sent again only if it did not happen. Each writer changes only the expenses
it created, so what it last saw acknowledged is what must be stored at the end.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import grpc
from google.protobuf import field_mask_pb2
from google.type import date_pb2, money_pb2

from expense_service import money
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from tests.system.conftest import Splitlog, supervised_pids

#: One currency per minor-unit exponent: 2, 0 and 3 digits.
CURRENCIES = ("EUR", "JPY", "BHD")

#: Status codes after which a client may send the same request again.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

#: Seconds each single call may take before the client gives up on it.
CALL_TIMEOUT = 5.0
#: Seconds between two attempts of a retried call.
RETRY_PAUSE = 0.2

_SPLIT_TYPES = (
    expenses_pb.SPLIT_TYPE_EQUAL,
    expenses_pb.SPLIT_TYPE_EXACT,
    expenses_pb.SPLIT_TYPE_PERCENTAGE,
    expenses_pb.SPLIT_TYPE_SHARES,
)

Nets = dict[str, dict[str, int]]


# Clients and money


@dataclass
class Clients:
    """Stubs of the public services over one channel to the gateway."""

    channel: grpc.Channel
    users: users_grpc.UsersServiceStub
    expenses: expenses_grpc.ExpensesServiceStub
    balances: balances_grpc.BalancesServiceStub

    @classmethod
    def connect(cls, address: str) -> Clients:
        channel = grpc.insecure_channel(address)
        return cls(
            channel,
            users_grpc.UsersServiceStub(channel),
            expenses_grpc.ExpensesServiceStub(channel),
            balances_grpc.BalancesServiceStub(channel),
        )

    def close(self) -> None:
        self.channel.close()


def money_of(amount_minor: int, currency: str) -> money_pb2.Money:
    units, nanos = money.from_minor_units(amount_minor, currency)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def minor(value: money_pb2.Money) -> int:
    return money.to_minor_units(value.units, value.nanos, value.currency_code)


def short_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_group(clients: Clients, size: int) -> tuple[str, list[str]]:
    """Create `size` users and a group of all of them, and return their ids."""
    user_ids = [short_id("user") for _ in range(size)]
    for user_id in user_ids:
        clients.users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"{user_id}@example.com", display_name=user_id
                ),
                user_id=user_id,
            ),
            timeout=CALL_TIMEOUT,
        )
    group_id = short_id("group")
    clients.users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Flat", creator=f"users/{user_ids[0]}"),
            group_id=group_id,
        ),
        timeout=CALL_TIMEOUT,
    )
    for user_id in user_ids[1:]:
        clients.users.AddGroupMember(
            users_pb.AddGroupMemberRequest(
                parent=f"groups/{group_id}", user=f"users/{user_id}"
            ),
            timeout=CALL_TIMEOUT,
        )
    return group_id, user_ids


# Random expenses


def _partition(rng: random.Random, total: int, parts: int) -> list[int]:
    """Split `total` into `parts` amounts of the same sign, none of them zero."""
    sign = -1 if total < 0 else 1
    size = abs(total)
    parts = min(parts, size)
    cuts = sorted(rng.sample(range(1, size), parts - 1))
    bounds = [0, *cuts, size]
    return [sign * (high - low) for low, high in zip(bounds, bounds[1:], strict=False)]


def random_content(
    rng: random.Random, members: list[str], currency: str, description: str
) -> expenses_pb.Expense:
    """Build the editable fields of an expense with a random total and split.

    About one expense in ten is a refund, with a negative total.
    """
    total = rng.randint(1, 40_000)
    if rng.random() < 0.1:
        total = -total
    payers = rng.sample(members, rng.choice((1, 1, 2)))
    paid = _partition(rng, total, len(payers))
    participants = rng.sample(members, rng.randint(2, len(members)))
    split_type = rng.choice(_SPLIT_TYPES)
    split = expenses_pb.Split(type=split_type)
    if split_type == expenses_pb.SPLIT_TYPE_EXACT and abs(total) < len(participants):
        split_type = split.type = expenses_pb.SPLIT_TYPE_EQUAL
    if split_type == expenses_pb.SPLIT_TYPE_EXACT:
        owed = _partition(rng, total, len(participants))
    elif split_type == expenses_pb.SPLIT_TYPE_PERCENTAGE:
        basis_points = _partition(rng, 10_000, len(participants))
    for index, user_id in enumerate(participants):
        participant = split.participants.add(user=f"users/{user_id}")
        if split_type == expenses_pb.SPLIT_TYPE_EXACT:
            participant.exact_amount.CopyFrom(money_of(owed[index], currency))
        elif split_type == expenses_pb.SPLIT_TYPE_PERCENTAGE:
            participant.basis_points = basis_points[index]
        elif split_type == expenses_pb.SPLIT_TYPE_SHARES:
            participant.shares = rng.randint(1, 3)
    return expenses_pb.Expense(
        description=description,
        category=rng.choice(
            (expenses_pb.CATEGORY_GROCERIES, expenses_pb.CATEGORY_RENT)
        ),
        expense_date=date_pb2.Date(year=2024, month=rng.randint(1, 12), day=14),
        total=money_of(total, currency),
        payers=[
            expenses_pb.Payer(
                user=f"users/{user_id}", amount=money_of(amount, currency)
            )
            for user_id, amount in zip(payers, paid, strict=True)
        ],
        split=split,
    )


@dataclass(frozen=True)
class Fingerprint:
    """What a writer expects of a stored expense: its text, total and state."""

    description: str
    total: int
    deleted: bool

    @classmethod
    def of(cls, expense: expenses_pb.Expense) -> Fingerprint:
        return cls(
            expense.description, minor(expense.total), expense.HasField("delete_time")
        )


# Writers


class Deadline(Exception):
    """A write was still not acknowledged when the writer's deadline passed."""


@dataclass
class WriterReport:
    """What one writer did and saw."""

    #: Expense name -> its fingerprint at the last acknowledged write.
    acknowledged: dict[str, Fingerprint] = field(default_factory=dict)
    #: Description of every create sent -> expense name once acknowledged.
    creates: dict[str, str | None] = field(default_factory=dict)
    #: Settlement note -> settlement name once acknowledged.
    settlements: dict[str, str | None] = field(default_factory=dict)
    #: Calls that failed with a retryable status and were sent again.
    retried: int = 0
    #: Writes whose outcome was unknown and was read back afterwards.
    resolved_by_reading: int = 0
    #: Failures that no client should see: (operation, code, details).
    errors: list[tuple[str, str, str]] = field(default_factory=list)


class ExpenseWriter(threading.Thread):
    """A thread that writes random changes to its own expenses in one group.

    Args:
      operations: number of writes to make, or None to write until `stop()`.
      settlements: share of the writes that create settlements instead.
      creates: share of the other writes that create an expense; the rest
        update, delete or restore one.
      deadline: monotonic time after which a write that keeps failing with a
        retryable status counts as an error.
    """

    def __init__(
        self,
        clients: Clients,
        group_id: str,
        members: list[str],
        seed: int,
        *,
        operations: int | None = None,
        settlements: float = 0.0,
        creates: float = 0.45,
        deadline: float,
        pause: float = 0.0,
    ) -> None:
        super().__init__(name=f"writer-{seed}", daemon=True)
        self.clients = clients
        self.group = f"groups/{group_id}"
        self.members = members
        self.rng = random.Random(seed)
        self.tag = f"w{seed}"
        self.operations = operations
        self.settlement_share = settlements
        self.create_share = creates
        self.deadline = deadline
        self.pause = pause
        self.report = WriterReport()
        self.done = 0
        self._stopping = threading.Event()
        self._current: dict[str, expenses_pb.Expense] = {}

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            if self.operations is not None and self.done >= self.operations:
                return
            try:
                self._write_once()
            except Deadline as exc:
                self.report.errors.append(("deadline", "", str(exc)))
                return
            except grpc.RpcError as exc:
                self.report.errors.append(("write", exc.code().name, exc.details()))
            except AssertionError as exc:
                self.report.errors.append(("write", "", str(exc)))
            self.done += 1
            if self.pause:
                time.sleep(self.pause)

    def _write_once(self) -> None:
        if self.rng.random() < self.settlement_share:
            self._create_settlement()
            return
        if not self._current or self.rng.random() < self.create_share:
            self._create_expense()
            return
        name = self.rng.choice(sorted(self._current))
        if self._current[name].HasField("delete_time"):
            self._undelete_expense(name)
        elif self.rng.random() < 0.6:
            self._update_expense(name)
        else:
            self._delete_expense(name)

    # Sending with retries

    def _call(self, operation: str, method, request):
        """Send `request` until it succeeds; retryable failures are sent again."""
        while True:
            try:
                return method(request, timeout=CALL_TIMEOUT)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                self._wait_to_retry(operation, exc)

    def _wait_to_retry(self, operation: str, error: grpc.RpcError) -> None:
        if time.monotonic() > self.deadline:
            raise Deadline(
                f"{operation} still failed with {error.code().name} at the "
                f"deadline: {error.details()}"
            )
        self.report.retried += 1
        time.sleep(RETRY_PAUSE)

    def _get(self, name: str) -> expenses_pb.Expense:
        request = expenses_pb.GetExpenseRequest(name=name)
        return self._call(
            "GetExpense", self.clients.expenses.GetExpense, request
        ).expense

    def _change(self, operation: str, name: str, send, happened) -> None:
        """Send a change, and after a retryable failure read the expense back.

        `happened(stored)` returns whether the stored expense shows the change,
        which the failed attempt may have applied. If not, the change is resent.
        """
        before = self._current[name]
        while True:
            try:
                expense = send(before.etag)
                break
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                self._wait_to_retry(operation, exc)
            stored = self._get(name)
            self.report.resolved_by_reading += 1
            if happened(stored):
                expense = stored
                break
            if stored.etag != before.etag:
                raise AssertionError(
                    f"{operation} of {name} failed, yet the expense changed to "
                    f"{Fingerprint.of(stored)} from {Fingerprint.of(before)}"
                )
        self._record(expense)

    def _record(self, expense: expenses_pb.Expense) -> None:
        self._current[expense.name] = expense
        self.report.acknowledged[expense.name] = Fingerprint.of(expense)

    # Writes

    def _new_content(self, description: str) -> expenses_pb.Expense:
        currency = self.rng.choice(CURRENCIES)
        return random_content(self.rng, self.members, currency, description)

    def _create_expense(self) -> None:
        description = f"{self.tag}-e{len(self.report.creates)}"
        content = self._new_content(description)
        content.creator = f"users/{self.rng.choice(self.members)}"
        request = expenses_pb.CreateExpenseRequest(
            parent=self.group, expense=content, request_id=str(uuid.uuid4())
        )
        self.report.creates[description] = None
        expense = self._call(
            "CreateExpense", self.clients.expenses.CreateExpense, request
        ).expense
        self.report.creates[description] = expense.name
        self._record(expense)

    def _update_expense(self, name: str) -> None:
        description = f"{self._current[name].description}-u"
        content = self._new_content(description)
        content.name = name
        content.last_modifier = f"users/{self.rng.choice(self.members)}"
        mask = field_mask_pb2.FieldMask(
            paths=["description", "total", "payers", "split", "expense_date"]
        )

        def send(etag: str) -> expenses_pb.Expense:
            content.etag = etag
            request = expenses_pb.UpdateExpenseRequest(
                expense=content, update_mask=mask
            )
            return self.clients.expenses.UpdateExpense(
                request, timeout=CALL_TIMEOUT
            ).expense

        self._change(
            "UpdateExpense",
            name,
            send,
            lambda stored: stored.description == description,
        )

    def _delete_expense(self, name: str) -> None:
        modifier = f"users/{self.rng.choice(self.members)}"

        def send(etag: str) -> expenses_pb.Expense:
            request = expenses_pb.DeleteExpenseRequest(
                name=name, etag=etag, last_modifier=modifier
            )
            return self.clients.expenses.DeleteExpense(
                request, timeout=CALL_TIMEOUT
            ).expense

        self._change(
            "DeleteExpense", name, send, lambda stored: stored.HasField("delete_time")
        )

    def _undelete_expense(self, name: str) -> None:
        modifier = f"users/{self.rng.choice(self.members)}"

        def send(etag: str) -> expenses_pb.Expense:
            request = expenses_pb.UndeleteExpenseRequest(
                name=name, etag=etag, last_modifier=modifier
            )
            return self.clients.expenses.UndeleteExpense(
                request, timeout=CALL_TIMEOUT
            ).expense

        self._change(
            "UndeleteExpense",
            name,
            send,
            lambda stored: not stored.HasField("delete_time"),
        )

    def _create_settlement(self) -> None:
        note = f"{self.tag}-s{len(self.report.settlements)}"
        payer, payee = self.rng.sample(self.members, 2)
        currency = self.rng.choice(CURRENCIES)
        request = balances_pb.CreateSettlementRequest(
            parent=self.group,
            settlement=balances_pb.Settlement(
                payer=f"users/{payer}",
                payee=f"users/{payee}",
                amount=money_of(self.rng.randint(1, 20_000), currency),
                settlement_date=date_pb2.Date(year=2024, month=6, day=1),
                note=note,
                creator=f"users/{payer}",
            ),
            request_id=str(uuid.uuid4()),
        )
        self.report.settlements[note] = None
        settlement = self._call(
            "CreateSettlement", self.clients.balances.CreateSettlement, request
        ).settlement
        self.report.settlements[note] = settlement.name


def run_writers(writers: list[ExpenseWriter], timeout: float) -> None:
    """Start the writers, wait for them and fail if one is still running."""
    for writer in writers:
        writer.start()
    join_writers(writers, timeout)


def join_writers(writers: list[ExpenseWriter], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for writer in writers:
        writer.join(max(0.0, deadline - time.monotonic()))
    stuck = [writer.name for writer in writers if writer.is_alive()]
    assert not stuck, f"writers still running after {timeout:.0f}s: {stuck}"


def wait_for_writes(writers: list[ExpenseWriter], count: int, timeout: float) -> None:
    """Wait until the writers together made `count` more writes than now."""
    target = sum(writer.done for writer in writers) + count
    deadline = time.monotonic() + timeout
    while sum(writer.done for writer in writers) < target:
        assert time.monotonic() < deadline, (
            f"the writers made fewer than {count} writes within {timeout:.0f}s"
        )
        assert any(writer.is_alive() for writer in writers), "every writer ended"
        time.sleep(0.05)


def merged_reports(writers: list[ExpenseWriter]) -> WriterReport:
    merged = WriterReport()
    for writer in writers:
        report = writer.report
        merged.acknowledged.update(report.acknowledged)
        merged.creates.update(report.creates)
        merged.settlements.update(report.settlements)
        merged.retried += report.retried
        merged.resolved_by_reading += report.resolved_by_reading
        merged.errors.extend(report.errors)
    return merged


# Balances and their recomputation


def _pages(method, request, items: str):
    while True:
        response = method(request, timeout=CALL_TIMEOUT)
        yield from getattr(response, items)
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


def list_expenses(
    clients: Clients, group_id: str, show_deleted: bool
) -> list[expenses_pb.Expense]:
    request = expenses_pb.ListExpensesRequest(
        parent=f"groups/{group_id}", page_size=1000, show_deleted=show_deleted
    )
    return list(_pages(clients.expenses.ListExpenses, request, "expenses"))


def list_settlements(
    clients: Clients, group_id: str, show_deleted: bool
) -> list[balances_pb.Settlement]:
    request = balances_pb.ListSettlementsRequest(
        parent=f"groups/{group_id}", page_size=1000, show_deleted=show_deleted
    )
    return list(_pages(clients.balances.ListSettlements, request, "settlements"))


def nonzero_nets(nets: dict[str, dict[str, int]]) -> Nets:
    """Drop zero nets, and currencies left without any."""
    cleaned = {
        currency: {user: net for user, net in users.items() if net}
        for currency, users in nets.items()
    }
    return {currency: users for currency, users in cleaned.items() if users}


def recomputed_nets(clients: Clients, group_id: str) -> Nets:
    """Recompute every net amount from the expenses and settlements stored.

    A member's net is what they paid minus what they owe. A settlement counts
    as paid by its payer and owed by its payee. Zero nets are left out.
    """
    nets: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for expense in list_expenses(clients, group_id, show_deleted=False):
        currency = expense.total.currency_code
        for payer in expense.payers:
            nets[currency][payer.user] += minor(payer.amount)
        for share in expense.owed_amounts:
            nets[currency][share.user] -= minor(share.amount)
    for settlement in list_settlements(clients, group_id, show_deleted=False):
        currency = settlement.amount.currency_code
        nets[currency][settlement.payer] += minor(settlement.amount)
        nets[currency][settlement.payee] -= minor(settlement.amount)
    return nonzero_nets(nets)


def balance_nets(clients: Clients, group_id: str) -> dict[str, dict[str, int]]:
    """Return `currency -> user -> net` from GetGroupBalance, zeros included."""
    balance = clients.balances.GetGroupBalance(
        balances_pb.GetGroupBalanceRequest(name=f"groups/{group_id}/balance"),
        timeout=CALL_TIMEOUT,
    ).balance
    return {
        entry.currency_code: {
            member.user: minor(member.net_amount) for member in entry.member_balances
        }
        for entry in balance.currency_balances
    }


def wait_for_balances(
    clients: Clients, group_id: str, timeout: float
) -> tuple[dict[str, dict[str, int]], Nets]:
    """Poll until the balances equal the recomputed nets twice in a row.

    Returns the last balances read, zeros included, and the recomputed nets.
    When the timeout passes first, they may differ, and the caller's assert
    shows how.
    """
    deadline = time.monotonic() + timeout
    matches = 0
    while True:
        expected = recomputed_nets(clients, group_id)
        actual = balance_nets(clients, group_id)
        matches = matches + 1 if nonzero_nets(actual) == expected else 0
        if matches == 2 or time.monotonic() > deadline:
            return actual, expected
        time.sleep(0.3)


# Processes of `splitlog up --processes`


def component_pid(supervisor_pid: int, component: str) -> int | None:
    pids = [
        pid
        for pid, name in supervised_pids(supervisor_pid).items()
        if name == component
    ]
    return pids[0] if pids else None


def start_with_deadline(
    splitlog_factory, deadline_seconds: float, component: str, **options
) -> tuple[Splitlog, int]:
    """Run `splitlog up --processes --deadline-seconds D` until it is ready;
    return it and the pid of its child `component`."""
    running = splitlog_factory(
        "--processes", "--deadline-seconds", str(deadline_seconds), **options
    )
    running.wait_until_ready()
    pid = component_pid(running.process.pid, component)
    assert pid, f"no {component} child of splitlog pid {running.process.pid}"
    return running, pid


def kill_process_group(pid: int) -> None:
    """SIGKILL the process group that `pid` leads, or `pid` alone if it leads none."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
