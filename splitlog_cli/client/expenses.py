"""`splitlog expenses`: record, list, show, delete and restore expenses."""

from __future__ import annotations

import argparse
import datetime
import uuid

from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb2
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import render
from splitlog_cli.client.command import Context, add_action, add_actions
from splitlog_cli.client.values import (
    SPLIT_TYPES,
    UsageError,
    child_name,
    money,
    parse_category,
    parse_date,
    parse_minor_units,
    parse_participant,
    parse_payers,
    resource_name,
    to_proto_date,
)

_LIST_HEADERS = ("NAME", "DATE", "DESCRIPTION", "CATEGORY", "TOTAL", "PAID BY")
_SPLIT_HELP = (
    "how the total is divided: equal (the default), exact amounts, percent, "
    "shares (weights such as 2:1:1), or mixed"
)
_PARTICIPANT_HELP = (
    "a participant, repeatable. VALUE is absent for equal, an amount for "
    "exact, a percentage such as 33.33 for percent (participants without one "
    "share the remaining percentage), a whole number of shares for shares "
    "(default 1), and amount:X, percent:P or shares:N for mixed. Without any "
    "--participant an equal split covers every member of the group"
)


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(
        commands, "expenses", "record, list, show, delete and restore expenses"
    )
    _add_create_parser(actions, common)

    listing = add_action(
        actions, "list", common, list_expenses, "list a group's expenses, newest first"
    )
    listing.add_argument("group", metavar="GROUP", help="group id or name groups/ID")
    listing.add_argument(
        "--participant", metavar="USER", help="only expenses this user paid or shares"
    )
    listing.add_argument("--category", help="only expenses of this category")
    listing.add_argument(
        "--from",
        dest="start_date",
        metavar="YYYY-MM-DD",
        help="only expenses on or after this day",
    )
    listing.add_argument(
        "--to",
        dest="end_date",
        metavar="YYYY-MM-DD",
        help="only expenses on or before this day",
    )
    listing.add_argument(
        "--deleted", action="store_true", help="include deleted expenses"
    )

    for action, handler, help_text in (
        ("get", get_expense, "show one expense with what each participant owes"),
        ("delete", delete_expense, "delete an expense; it stops counting"),
        ("restore", restore_expense, "restore a deleted expense"),
    ):
        parser = add_action(actions, action, common, handler, help_text)
        parser.add_argument(
            "expense", metavar="NAME", help="expense name groups/GROUP/expenses/ID"
        )

    add_action(
        actions, "categories", common, list_categories, "list the expense categories"
    )


def _add_create_parser(
    actions: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    create = add_action(actions, "add", common, create_expense, "record an expense")
    create.add_argument("group", metavar="GROUP", help="group id or name groups/ID")
    create.add_argument(
        "--description",
        required=True,
        help="short text, 1 to 200 characters by default",
    )
    create.add_argument(
        "--amount",
        required=True,
        help="total as decimal text in the currency's unit, such as 12.34; "
        "negative for a refund",
    )
    create.add_argument(
        "--currency", help="ISO 4217 code, such as EUR (default: the group's)"
    )

    create.add_argument(
        "--paid-by",
        action="append",
        required=True,
        metavar="USER[=AMOUNT]",
        help="a payer, repeatable; the one payer without an amount pays the rest",
    )
    create.add_argument(
        "--split", choices=list(SPLIT_TYPES), default="equal", help=_SPLIT_HELP
    )
    create.add_argument(
        "--participant",
        action="append",
        default=[],
        metavar="USER[=VALUE]",
        help=_PARTICIPANT_HELP,
    )

    create.add_argument("--category", help="such as groceries or dining-out")
    create.add_argument(
        "--date", metavar="YYYY-MM-DD", help="day of the expense (default: today)"
    )
    create.add_argument("--notes", help="free text, at most 2000 characters by default")
    create.add_argument(
        "--by", metavar="USER", help="who records it (default: the first payer)"
    )
    create.add_argument(
        "--id", help="id of the new expense (default: chosen by the server)"
    )


def create_expense(context: Context, args: argparse.Namespace) -> expenses_pb2.Expense:
    group = resource_name(args.group, "groups", "GROUP")
    currency = args.currency
    if currency is None:
        request = users_pb2.GetGroupRequest(name=group)
        currency = context.call("users.GetGroup", request).group.currency_code
    request = build_create_request(args, group, currency)
    if not request.expense.split.participants:
        members = context.all_pages(
            "users.ListGroupMembers",
            users_pb2.ListGroupMembersRequest(parent=group),
            "members",
        )
        request.expense.split.participants.extend(
            expenses_pb2.SplitParticipant(user=member.user) for member in members
        )
    expense = context.call("expenses.CreateExpense", request).expense
    context.show(expense, _expense_text)
    return expense


def build_create_request(
    args: argparse.Namespace, group: str, currency: str
) -> expenses_pb2.CreateExpenseRequest:
    """Build a CreateExpenseRequest from `expenses add` options, offline.

    Raises:
      UsageError: an option has an invalid value.
    """
    total_minor = parse_minor_units(args.amount, currency, "--amount")
    if not args.participant and args.split != "equal":
        raise UsageError(
            f"--participant: a {args.split} split needs at least one "
            "--participant USER=VALUE"
        )
    payers = parse_payers(args.paid_by, total_minor, currency)
    expense = expenses_pb2.Expense(
        description=args.description,
        category=parse_category(args.category) if args.category else 0,
        expense_date=(
            parse_date(args.date, "--date")
            if args.date
            else to_proto_date(datetime.date.today())
        ),
        total=money(total_minor, currency, "--amount"),
        payers=payers,
        split=expenses_pb2.Split(
            type=SPLIT_TYPES[args.split],
            participants=[
                parse_participant(text, args.split, currency)
                for text in args.participant
            ],
        ),
        notes=args.notes or "",
        creator=(
            resource_name(args.by, "users", "--by") if args.by else payers[0].user
        ),
    )
    return expenses_pb2.CreateExpenseRequest(
        parent=group,
        expense=expense,
        expense_id=args.id or "",
        request_id=str(uuid.uuid4()),
    )


def list_expenses(
    context: Context, args: argparse.Namespace
) -> expenses_pb2.ListExpensesResponse:
    request = expenses_pb2.ListExpensesRequest(
        parent=resource_name(args.group, "groups", "GROUP"),
        show_deleted=args.deleted,
    )
    if args.participant:
        request.participant = resource_name(args.participant, "users", "--participant")
    if args.category:
        request.category = parse_category(args.category)
    if args.start_date:
        request.start_date.CopyFrom(parse_date(args.start_date, "--from"))
    if args.end_date:
        request.end_date.CopyFrom(parse_date(args.end_date, "--to"))
    found = context.all_pages("expenses.ListExpenses", request, "expenses")
    response = expenses_pb2.ListExpensesResponse(expenses=found)
    context.show(response, lambda response: _expenses_table(response.expenses))
    return response


def get_expense(context: Context, args: argparse.Namespace) -> expenses_pb2.Expense:
    request = expenses_pb2.GetExpenseRequest(name=_expense_name(args))
    expense = context.call("expenses.GetExpense", request).expense
    context.show(expense, _expense_text)
    return expense


def delete_expense(context: Context, args: argparse.Namespace) -> expenses_pb2.Expense:
    request = expenses_pb2.DeleteExpenseRequest(name=_expense_name(args))
    expense = context.call("expenses.DeleteExpense", request).expense
    context.show(expense, lambda expense: f"deleted {expense.name}")
    return expense


def restore_expense(context: Context, args: argparse.Namespace) -> expenses_pb2.Expense:
    request = expenses_pb2.UndeleteExpenseRequest(name=_expense_name(args))
    expense = context.call("expenses.UndeleteExpense", request).expense
    context.show(expense, lambda expense: f"restored {expense.name}")
    return expense


def list_categories(
    context: Context, args: argparse.Namespace
) -> expenses_pb2.ListCategoriesResponse:
    found = context.all_pages(
        "expenses.ListCategories", expenses_pb2.ListCategoriesRequest(), "categories"
    )
    response = expenses_pb2.ListCategoriesResponse(categories=found)
    context.show(response, _categories_table)
    return response


def _expense_name(args: argparse.Namespace) -> str:
    return child_name(args.expense, "expenses", "NAME")


def _payers_text(expense: expenses_pb2.Expense) -> str:
    return ", ".join(
        f"{render.short(payer.user)} {render.amount(payer.amount, with_code=False)}"
        for payer in expense.payers
    )


def _expenses_table(expenses) -> str:
    rows = []
    for expense in expenses:
        description = expense.description
        if expense.HasField("delete_time"):
            description += " (deleted)"
        rows.append(
            (
                expense.name,
                render.date(expense.expense_date),
                description,
                render.category(expense.category),
                render.amount(expense.total),
                _payers_text(expense),
            )
        )
    return render.table(_LIST_HEADERS, rows)


def _expense_text(expense: expenses_pb2.Expense) -> str:
    split_type = expenses_pb2.SplitType.Name(expense.split.type)
    pairs = [
        ("name", expense.name),
        ("description", expense.description),
        ("date", render.date(expense.expense_date)),
        ("category", render.category(expense.category)),
        ("total", render.amount(expense.total)),
        ("paid by", _payers_text(expense)),
        ("split", split_type.removeprefix("SPLIT_TYPE_").lower()),
    ]
    if expense.notes:
        pairs.append(("notes", expense.notes))
    pairs.append(("created by", render.short(expense.creator)))
    if expense.HasField("delete_time"):
        pairs.append(("deleted", render.timestamp(expense.delete_time)))
    values = {
        participant.user: _participant_value(participant)
        for participant in expense.split.participants
    }
    owed = render.table(
        ("PARTICIPANT", "VALUE", "OWES"),
        [
            (
                render.short(item.user),
                values.get(item.user, ""),
                render.amount(item.amount),
            )
            for item in expense.owed_amounts
        ],
    )
    return render.fields(pairs) + "\n\n" + owed


def _participant_value(participant: expenses_pb2.SplitParticipant) -> str:
    kind = participant.WhichOneof("value")
    if kind == "exact_amount":
        return render.amount(participant.exact_amount, with_code=False)
    if kind == "basis_points":
        whole, hundredths = divmod(participant.basis_points, 100)
        return f"{whole}.{hundredths:02d} %"
    if kind == "shares":
        unit = "share" if participant.shares == 1 else "shares"
        return f"{participant.shares} {unit}"
    return ""


def _categories_table(response: expenses_pb2.ListCategoriesResponse) -> str:
    return render.table(
        ("CATEGORY", "DISPLAY NAME", "PARENT"),
        [
            (
                render.category(info.category),
                info.display_name,
                render.category(info.parent_category) if info.parent_category else "",
            )
            for info in response.categories
        ],
    )
