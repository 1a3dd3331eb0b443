"""Helpers shared by the expense service tests: clients, errors and builders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from google.type import date_pb2, money_pb2

from expense_service.ledger import BATCH_SIZE
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as pb_grpc
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from tests.rich_errors import (  # noqa: F401 (re-exported)
    error_details,
    reason_of,
    violated_fields,
)

TIMEOUT = 10


@dataclass
class Clients:
    """Stubs on one channel to expense_service and one to user_service."""

    expenses: pb_grpc.ExpensesServiceStub
    ledger: ledger_grpc.LedgerServiceStub
    users: users_grpc.UsersServiceStub


def money(text: str, currency: str = "USD") -> money_pb2.Money:
    """Build a Money from decimal text such as '-12.34', without floats."""
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("-").partition(".")
    units = int(whole)
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    if negative:
        units, nanos = -units, -nanos
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def as_text(amount: money_pb2.Money) -> str:
    """Format a Money as decimal text with two digits, for readable asserts."""
    sign = "-" if amount.units < 0 or amount.nanos < 0 else ""
    cents = abs(amount.nanos) // 10_000_000
    return f"{sign}{abs(amount.units)}.{cents:02d}"


def day(year: int = 2024, month: int = 5, day_of_month: int = 17) -> date_pb2.Date:
    return date_pb2.Date(year=year, month=month, day=day_of_month)


def owed(expense: pb.Expense) -> dict[str, money_pb2.Money]:
    return {line.user: line.amount for line in expense.owed_amounts}


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Group:
    """A group created in user_service with its members, creator first."""

    name: str
    members: list[str]


def create_group(users: users_grpc.UsersServiceStub, size: int = 3) -> Group:
    """Create `size` users and a group that they all belong to."""
    names = []
    for _ in range(size):
        user = users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"member.{uuid.uuid4().hex[:10]}@example.com",
                    display_name="Member",
                )
            ),
            timeout=TIMEOUT,
        ).user
        names.append(user.name)
    group = users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Trip", creator=names[0])
        ),
        timeout=TIMEOUT,
    ).group
    for name in names[1:]:
        users.AddGroupMember(
            users_pb.AddGroupMemberRequest(parent=group.name, user=name),
            timeout=TIMEOUT,
        )
    return Group(group.name, names)


def create_outsider(users: users_grpc.UsersServiceStub) -> str:
    """Create a user who belongs to no group."""
    return users.CreateUser(
        users_pb.CreateUserRequest(
            user=users_pb.User(
                email=f"outsider.{uuid.uuid4().hex[:10]}@example.com",
                display_name="Outsider",
            )
        ),
        timeout=TIMEOUT,
    ).user.name


def equal_expense(
    group: Group,
    total: str = "30.00",
    currency: str = "USD",
    participants: list[str] | None = None,
    payer: str | None = None,
    **fields,
) -> pb.Expense:
    """Build an expense paid by one member and split equally."""
    payer = payer or group.members[0]
    fields.setdefault("description", "Dinner")
    fields.setdefault("expense_date", day())
    return pb.Expense(
        total=money(total, currency),
        payers=[pb.Payer(user=payer, amount=money(total, currency))],
        split=pb.Split(
            type=pb.SPLIT_TYPE_EQUAL,
            participants=[
                pb.SplitParticipant(user=user)
                for user in (participants or group.members)
            ],
        ),
        creator=group.members[0],
        **fields,
    )


def create_expense(
    clients: Clients, group: Group, expense: pb.Expense | None = None, **request
) -> pb.Expense:
    response = clients.expenses.CreateExpense(
        pb.CreateExpenseRequest(
            parent=group.name, expense=expense or equal_expense(group), **request
        ),
        timeout=TIMEOUT,
    )
    return response.expense


def backlog(
    clients: Clients, after: int = 0, timeout: float = TIMEOUT
) -> list[ledger_pb.LedgerEvent]:
    """Read the committed events after a sequence, up to the newest one.

    The server sends a stored backlog in full batches of BATCH_SIZE events and
    then a shorter one, so the first short batch ends the backlog. There must
    be at least one event after `after`, or the call waits for the timeout.
    """
    events: list[ledger_pb.LedgerEvent] = []
    stream = clients.ledger.StreamLedgerEvents(
        ledger_pb.StreamLedgerEventsRequest(after_sequence=after), timeout=timeout
    )
    try:
        for response in stream:
            events.extend(response.events)
            if len(response.events) < BATCH_SIZE:
                break
    finally:
        stream.cancel()
    return events


def latest_sequence(clients: Clients) -> int:
    """Return the newest sequence; the ledger must hold at least one event."""
    return backlog(clients)[-1].sequence
