"""`splitlog expenses`: record, list, show, update, delete and restore expenses."""

from __future__ import annotations

import argparse
import datetime
import uuid

from google.protobuf import field_mask_pb2
from google.type import money_pb2

from expense_service.currencies import UnknownCurrencyError
from expense_service.money import MoneyError, format_amount, to_minor_units
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
    recorder,
    recorder_help,
    resource_name,
    to_proto_date,
)

_UPDATE_OPTIONS = (
    "--description, --category, --date, --amount, --paid-by, --split, "
    "--participant or --notes"
)
_SPLIT_KEYS = {number: key for key, number in SPLIT_TYPES.items()}
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
        commands,
        "expenses",
        "record, list, show, update, delete and restore expenses",
    )
    _add_create_parser(actions, common)
    _add_update_parser(actions, common)

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
        if handler is not get_expense:
            parser.add_argument(
                "--by",
                metavar="USER",
                help=(
                    "who records the change (default: the signed-in user, "
                    "whom the server fills in; without a credential, the "
                    "expense keeps its last modifier)"
                ),
            )

    add_action(
        actions, "categories", common, list_categories, "list the expense categories"
    )


def _add_create_parser(
    actions: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    create = add_action(actions, "add", common, create_expense, "record an expense")
    create.add_argument("group", metavar="GROUP", help="group id or name groups/ID")
    _add_expense_arguments(create, creating=True)
    create.add_argument(
        "--id", help="id of the new expense (default: chosen by the server)"
    )


def _add_update_parser(
    actions: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    update = add_action(
        actions,
        "update",
        common,
        update_expense,
        "change the given fields of an expense; the others keep their values",
    )
    update.add_argument(
        "expense", metavar="NAME", help="expense name groups/GROUP/expenses/ID"
    )
    _add_expense_arguments(update, creating=False)
    update.add_argument(
        "--etag",
        help="etag of the expense as you last read it; the update fails with "
        "ABORTED if the expense changed since (default: the etag read just "
        "before the update)",
    )


def _add_expense_arguments(parser: argparse.ArgumentParser, creating: bool) -> None:
    """Add the options that set an expense's fields.

    `expenses add` requires some of them and has defaults; for `expenses
    update` every option is optional and an absent one leaves its field as is.
    """
    parser.add_argument(
        "--description",
        required=creating,
        help="short text, 1 to 200 characters by default",
    )
    parser.add_argument(
        "--amount",
        required=creating,
        help="total as decimal text in the currency's unit, such as 12.34; "
        "negative for a refund",
    )
    if creating:
        currency_help = "ISO 4217 code, such as EUR (default: the group's)"
        paid_by_help = (
            "a payer, repeatable; the one payer without an amount pays the rest"
        )
        split_help = _SPLIT_HELP
        participant_help = _PARTICIPANT_HELP
    else:
        currency_help = (
            "ISO 4217 code of a new --amount, which it requires (default: the "
            "expense's)"
        )
        paid_by_help = (
            "a payer, repeatable, replacing every current payer; the one payer "
            "without an amount pays the rest. Without it, a new --amount goes "
            "to the expense's only payer"
        )
        split_help = _SPLIT_HELP.replace("equal (the default)", "equal") + (
            " (default: the expense's split type)"
        )
        participant_help = (
            "a participant, repeatable, replacing every current participant; "
            "VALUE as for `expenses add`. --split equal without any "
            "--participant keeps the current participants"
        )
    parser.add_argument("--currency", type=str.upper, help=currency_help)

    parser.add_argument(
        "--paid-by",
        action="append",
        required=creating,
        metavar="USER[=AMOUNT]",
        help=paid_by_help,
    )
    parser.add_argument(
        "--split",
        choices=list(SPLIT_TYPES),
        default="equal" if creating else None,
        help=split_help,
    )
    parser.add_argument(
        "--participant",
        action="append",
        default=[],
        metavar="USER[=VALUE]",
        help=participant_help,
    )

    parser.add_argument("--category", help="such as groceries or dining-out")
    parser.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        help="day of the expense" + (" (default: today)" if creating else ""),
    )
    parser.add_argument("--notes", help="free text, at most 2000 characters by default")
    parser.add_argument("--by", metavar="USER", help=recorder_help("the first payer"))


def create_expense(context: Context, args: argparse.Namespace) -> expenses_pb2.Expense:
    group = resource_name(args.group, "groups", "GROUP")
    currency = args.currency
    if currency is None:
        request = users_pb2.GetGroupRequest(name=group)
        currency = context.call("users.GetGroup", request).group.currency_code
    request = build_create_request(args, group, currency, context.default_recorder)
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
    args: argparse.Namespace,
    group: str,
    currency: str,
    default_recorder: str | None = None,
) -> expenses_pb2.CreateExpenseRequest:
    """Build a CreateExpenseRequest from `expenses add` options, offline.

    Without `--by`, the expense is recorded by `default_recorder` (see
    `recorder`), or without one by the first payer.

    Raises:
      UsageError: an option has an invalid value.
    """
    total_minor = parse_minor_units(args.amount, currency, "--amount")
    split = _build_split(args.split, args.participant, currency)
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
        split=split,
        notes=args.notes or "",
        creator=recorder(args.by, default_recorder, payers[0].user),
    )
    return expenses_pb2.CreateExpenseRequest(
        parent=group,
        expense=expense,
        expense_id=args.id or "",
        request_id=str(uuid.uuid4()),
    )


def _build_split(
    split_type: str, participants: list[str], currency: str
) -> expenses_pb2.Split:
    """Build a Split from `--split` and the `--participant` values.

    Raises:
      UsageError: a value is invalid, or a split other than equal has no
        participant.
    """
    if not participants and split_type != "equal":
        raise _participant_needed(split_type)
    return expenses_pb2.Split(
        type=SPLIT_TYPES[split_type],
        participants=[
            parse_participant(text, split_type, currency) for text in participants
        ],
    )


def update_expense(context: Context, args: argparse.Namespace) -> expenses_pb2.Expense:
    name = _expense_name(args)
    _check_update_options(args)
    request = expenses_pb2.GetExpenseRequest(name=name)
    current = context.call("expenses.GetExpense", request).expense
    request = build_update_request(args, current, context.default_recorder)
    expense = context.call("expenses.UpdateExpense", request).expense
    context.show(expense, _expense_text)
    return expense


def build_update_request(
    args: argparse.Namespace,
    current: expenses_pb2.Expense,
    default_recorder: str | None = None,
) -> expenses_pb2.UpdateExpenseRequest:
    """Build an UpdateExpenseRequest from `expenses update` options, offline.

    The update mask names only the fields that the options change. `current`
    is the expense as read before the update: it gives the currency, the
    payer of a new total and the etag unless `--etag` is given. Without
    `--by`, the change is recorded by `default_recorder` (see `recorder`), or
    without one by the first payer.

    Raises:
      UsageError: an option has an invalid value, or none changes anything.
    """
    fields = _check_update_options(args)
    currency = args.currency or current.total.currency_code
    expense = expenses_pb2.Expense(
        name=current.name,
        etag=current.etag if args.etag is None else args.etag,
        description=args.description or "",
        category=parse_category(args.category) if args.category is not None else 0,
        notes=args.notes or "",
    )
    if args.date is not None:
        expense.expense_date.CopyFrom(parse_date(args.date, "--date"))
    if args.amount is None:
        total_minor = _minor_units(current.total)
    else:
        total_minor = parse_minor_units(args.amount, currency, "--amount")
        expense.total.CopyFrom(money(total_minor, currency, "--amount"))
    if "payers" in fields:
        payer_texts = args.paid_by or [_only_payer(current, total_minor, currency)]
        expense.payers.extend(parse_payers(payer_texts, total_minor, currency))
    if "split" in fields:
        expense.split.CopyFrom(_updated_split(args, current, currency))
    first_payer = (expense.payers or current.payers)[0].user
    expense.last_modifier = recorder(args.by, default_recorder, first_payer)
    return expenses_pb2.UpdateExpenseRequest(
        expense=expense, update_mask=field_mask_pb2.FieldMask(paths=fields)
    )


def _check_update_options(args: argparse.Namespace) -> list[str]:
    """Check the `expenses update` options that need no expense; return its fields.

    Raises:
      UsageError: no option changes anything, or one is invalid by itself.
    """
    fields = _changed_fields(args)
    if not fields:
        raise UsageError(f"nothing to change: pass at least one of {_UPDATE_OPTIONS}")
    if args.currency is not None and args.amount is None:
        raise UsageError(
            "--currency: a new currency needs the total in it; pass --amount too"
        )
    if args.split not in (None, "equal") and not args.participant:
        raise _participant_needed(args.split)
    if args.category is not None:
        parse_category(args.category)
    if args.date is not None:
        parse_date(args.date, "--date")
    return fields


def _changed_fields(args: argparse.Namespace) -> list[str]:
    """Return the Expense fields that the `expenses update` options change."""
    changed = {
        "description": args.description is not None,
        "category": args.category is not None,
        "expense_date": args.date is not None,
        "total": args.amount is not None or args.currency is not None,
        # A new total changes what the payers paid.
        "payers": bool(args.paid_by) or args.amount is not None,
        "split": args.split is not None or bool(args.participant),
        "notes": args.notes is not None,
    }
    return [name for name, present in changed.items() if present]


def _only_payer(expense: expenses_pb2.Expense, total_minor: int, currency: str) -> str:
    """Return the single payer of `expense`, who pays all of a new total.

    `total_minor` is the new total in minor units of `currency`.

    Raises:
      UsageError: the expense has more than one payer. The message suggests
        `--paid-by` options that keep each payer's share of the total.
    """
    if len(expense.payers) == 1:
        return expense.payers[0].user
    payers = ", ".join(
        f"{payer.user} {render.amount(payer.amount)}" for payer in expense.payers
    )
    total = f"{format_amount(total_minor, currency)} {currency}"
    raise UsageError(
        f"--amount: {expense.name} has {len(expense.payers)} payers ({payers}), "
        "so a new total needs --paid-by for each of them. To keep their shares "
        f"of the new total {total}, pass "
        f"{_scaled_payer_options(expense, total_minor, currency)} (the payer "
        "without an amount pays the rest)"
    )


def _scaled_payer_options(
    expense: expenses_pb2.Expense, total_minor: int, currency: str
) -> str:
    """Return `--paid-by` options that split a new total as the old one was.

    Every payer but the last gets the old share of the new total, rounded
    down to a minor unit, and the last pays the rest. Where such an amount
    is zero or leaves the last payer nothing, the options show AMOUNT.
    """
    users = [render.short(payer.user) for payer in expense.payers]
    old_total = _minor_units(expense.total)
    scaled = [
        _minor_units(payer.amount) * total_minor // old_total if old_total else 0
        for payer in expense.payers[:-1]
    ]
    rest = total_minor - sum(scaled)
    if 0 in scaled or rest * total_minor <= 0:
        amounts = ["AMOUNT"] * len(scaled)
    else:
        amounts = [format_amount(minor, currency) for minor in scaled]
    options = [
        f"--paid-by {user}={amount}"
        for user, amount in zip(users[:-1], amounts, strict=True)
    ]
    return " ".join([*options, f"--paid-by {users[-1]}"])


def _updated_split(
    args: argparse.Namespace, current: expenses_pb2.Expense, currency: str
) -> expenses_pb2.Split:
    split_type = args.split or _SPLIT_KEYS[current.split.type]
    participants = args.participant
    if not participants and split_type == "equal":
        participants = [item.user for item in current.split.participants]
    return _build_split(split_type, participants, currency)


def _minor_units(amount: money_pb2.Money) -> int:
    try:
        return to_minor_units(amount.units, amount.nanos, amount.currency_code)
    except (MoneyError, UnknownCurrencyError) as exc:
        raise UsageError(f"the expense's total cannot be read: {exc}") from None


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
    name = _expense_name(args)
    request = expenses_pb2.DeleteExpenseRequest(
        name=name, last_modifier=_state_changer(args)
    )
    expense = context.call("expenses.DeleteExpense", request).expense
    context.show(expense, lambda expense: f"deleted {expense.name}")
    return expense


def restore_expense(context: Context, args: argparse.Namespace) -> expenses_pb2.Expense:
    name = _expense_name(args)
    request = expenses_pb2.UndeleteExpenseRequest(
        name=name, last_modifier=_state_changer(args)
    )
    expense = context.call("expenses.UndeleteExpense", request).expense
    context.show(expense, lambda expense: f"restored {expense.name}")
    return expense


def _state_changer(args: argparse.Namespace) -> str:
    """Return who deletes or restores an expense: `--by`, or "" without it.

    The server fills an empty modifier with the signed-in user, or keeps the
    stored one when authentication is off. The expense's first payer may
    have left the group, so the CLI does not name them.
    """
    return recorder(args.by, "", "")


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


def _participant_needed(split_type: str) -> UsageError:
    return UsageError(
        f"--participant: --split {split_type} needs at least one "
        "--participant USER=VALUE"
    )
