"""`splitlog export splitwise`: write a splitlog group as a Splitwise export.

The group's members become the columns, in the order they joined; its
expenses and settlements that are not deleted become the rows, ordered by
date, then by create time, then by name. An import creates every expense
before the first settlement, so within a day the exported payment rows
follow the expense rows, whatever their order in the imported file.
Amounts come from the stored payers and owed amounts, so the file's summary
rows equal the group's balances.
"""

from __future__ import annotations

import dataclasses
import datetime
import re

import grpc

from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.splitwise.convert import Entry, ExpensePlan, SettlementPlan
from splitlog_cli.splitwise.export import export_text
from splitlog_cli.splitwise.wire import pages, to_day, to_minor

PAGE_SIZE = 1000


def export_group(
    channel: grpc.Channel,
    group: str,
    timeout: float,
    export_date: datetime.date | None = None,
) -> str:
    """Return the export of a group, `groups/{group}`.

    Raises:
      grpc.RpcError: a call failed, for example NOT_FOUND for an unknown group.
    """
    users = users_grpc.UsersServiceStub(channel)
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    balances = balances_grpc.BalancesServiceStub(channel)
    users.GetGroup(users_pb.GetGroupRequest(name=group), timeout=timeout)

    columns: dict[str, str] = {}
    member_pages = pages(
        lambda token: users.ListGroupMembers(
            users_pb.ListGroupMembersRequest(
                parent=group, page_size=PAGE_SIZE, page_token=token
            ),
            timeout=timeout,
        ),
        "members",
    )
    for member in member_pages:
        columns[member.user] = member.display_name

    timed: list[tuple[tuple, Entry]] = []
    expense_pages = pages(
        lambda token: expenses.ListExpenses(
            expenses_pb.ListExpensesRequest(
                parent=group, page_size=PAGE_SIZE, page_token=token
            ),
            timeout=timeout,
        ),
        "expenses",
    )
    settlement_pages = pages(
        lambda token: balances.ListSettlements(
            balances_pb.ListSettlementsRequest(
                parent=group, page_size=PAGE_SIZE, page_token=token
            ),
            timeout=timeout,
        ),
        "settlements",
    )
    for found, to_entry in (
        (expense_pages, _expense_entry),
        (settlement_pages, _settlement_entry),
    ):
        for item in found:
            entry = to_entry(item)
            order = (
                entry.date,
                item.create_time.ToNanoseconds(),
                name_order(item.name),
            )
            timed.append((order, entry))
    timed.sort(key=lambda item: item[0])
    entries = [entry for _, entry in timed]

    for entry in entries:
        for user in entry.nets():
            if user not in columns:  # A former member who is still on an entry.
                response = users.GetUser(
                    users_pb.GetUserRequest(name=user), timeout=timeout
                )
                columns[user] = response.user.display_name
    headers = _unique_headers(columns)
    renamed = [_rename(entry, headers) for entry in entries]
    return export_text(
        list(headers.values()), renamed, export_date or datetime.date.today()
    )


def name_order(name: str) -> tuple[tuple[int, int | str], ...]:
    """Return a sort key that orders the numbers inside a name by value.

    Imported rows share a create time and are named after their lines, so
    `row-6` must come before `row-10`, and `row-12-2` after `row-12-1`.
    """
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", name)
    )


def _expense_entry(expense: expenses_pb.Expense) -> ExpensePlan:
    currency = expense.currency_code or expense.total.currency_code
    return ExpensePlan(
        key=expense.name,
        line=0,
        description=expense.description,
        category=expenses_pb.Category.Name(expense.category),
        date=to_day(expense.expense_date),
        currency=currency,
        total=to_minor(expense.total),
        payers=tuple((payer.user, to_minor(payer.amount)) for payer in expense.payers),
        owed=tuple((owed.user, to_minor(owed.amount)) for owed in expense.owed_amounts),
        notes=expense.notes,
    )


def _settlement_entry(settlement: balances_pb.Settlement) -> SettlementPlan:
    return SettlementPlan(
        key=settlement.name,
        line=0,
        date=to_day(settlement.settlement_date),
        currency=settlement.amount.currency_code,
        payer=settlement.payer,
        payee=settlement.payee,
        amount=to_minor(settlement.amount),
        note=settlement.note,
    )


def _unique_headers(display_names: dict[str, str]) -> dict[str, str]:
    """Return user -> column header; equal display names get the user id added."""
    counts: dict[str, int] = {}
    for name in display_names.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        user: name if counts[name] == 1 else f"{name} ({user.removeprefix('users/')})"
        for user, name in display_names.items()
    }


def _rename(entry: Entry, headers: dict[str, str]) -> Entry:
    if isinstance(entry, SettlementPlan):
        return dataclasses.replace(
            entry, payer=headers[entry.payer], payee=headers[entry.payee]
        )
    return dataclasses.replace(
        entry,
        payers=tuple((headers[user], amount) for user, amount in entry.payers),
        owed=tuple((headers[user], amount) for user, amount in entry.owed),
    )
