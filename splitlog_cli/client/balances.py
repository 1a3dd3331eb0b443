"""`splitlog balances`: net amounts, the settle-up plan, explanations and reports."""

from __future__ import annotations

import argparse
from collections import defaultdict

from balance_service.settle import EXACT_LIMIT
from splitlog.balances.v1 import balances_service_pb2 as balances_pb2
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import render
from splitlog_cli.client.command import Context, add_action, add_actions
from splitlog_cli.client.values import UsageError, parse_date, resource_name


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(
        commands, "balances", "show balances, the settle-up plan and reports"
    )

    group = add_action(
        actions, "group", common, group_balance, "net amount of every member"
    )
    _add_group_argument(group)

    user = add_action(
        actions,
        "user",
        common,
        user_balance,
        "a user's net amounts in every group and with every other user",
    )
    user.add_argument("user", metavar="USER", help="user id or name users/ID")

    plan = add_action(
        actions,
        "plan",
        common,
        settlement_plan,
        "transfers that settle the group: the fewest possible, unless more "
        f"than {EXACT_LIMIT} members of a currency have a non-zero balance or "
        "the search reaches its work limit, when a note under the table says so",
    )
    _add_group_argument(plan)
    plan.add_argument(
        "--currency", type=str.upper, help="only this ISO 4217 code (default: all)"
    )

    pairwise = add_action(
        actions, "pairwise", common, pairwise_balances, "who owes whom, per pair"
    )
    _add_group_argument(pairwise)
    pairwise.add_argument(
        "--currency", type=str.upper, help="only this ISO 4217 code (default: all)"
    )
    pairwise.add_argument(
        "--user",
        metavar="USER",
        help="only pairs that include this user id or name users/ID",
    )

    explain = add_action(
        actions,
        "explain",
        common,
        explain_balance,
        "the expenses and settlements behind a member's net amount",
    )
    _add_group_argument(explain)
    explain.add_argument("user", metavar="USER", help="user id or name users/ID")
    explain.add_argument(
        "--currency",
        type=str.upper,
        help="ISO 4217 code to explain (default: the group's only currency)",
    )
    explain.add_argument(
        "--with",
        dest="counterparty",
        metavar="USER",
        help="explain only what USER and this member owe each other",
    )

    report = add_action(
        actions,
        "report",
        common,
        group_report,
        "spending by category, member and month",
    )
    _add_group_argument(report)
    report.add_argument(
        "--currency", type=str.upper, required=True, help="ISO 4217 code to report"
    )
    report.add_argument(
        "--from",
        dest="start_date",
        metavar="YYYY-MM-DD",
        help="only expenses on or after this day",
    )
    report.add_argument(
        "--to",
        dest="end_date",
        metavar="YYYY-MM-DD",
        help="only expenses on or before this day",
    )


def _add_group_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", metavar="GROUP", help="group id or name groups/ID")


def _balance_name(args: argparse.Namespace) -> str:
    return resource_name(args.group, "groups", "GROUP") + "/balance"


def group_balance(
    context: Context, args: argparse.Namespace
) -> balances_pb2.GroupBalance:
    request = balances_pb2.GetGroupBalanceRequest(name=_balance_name(args))
    balance = context.call("balances.GetGroupBalance", request).balance
    context.show(balance, _group_balance_text)
    return balance


def user_balance(
    context: Context, args: argparse.Namespace
) -> balances_pb2.UserBalance:
    name = resource_name(args.user, "users", "USER") + "/balance"
    request = balances_pb2.GetUserBalanceRequest(name=name)
    balance = context.call("balances.GetUserBalance", request).balance
    context.show(balance, _user_balance_text)
    return balance


def settlement_plan(
    context: Context, args: argparse.Namespace
) -> balances_pb2.ComputeSettlementPlanResponse:
    request = balances_pb2.ComputeSettlementPlanRequest(
        name=_balance_name(args), currency_code=args.currency or ""
    )
    response = context.call("balances.ComputeSettlementPlan", request)
    context.show(response, _plan_text)
    return response


def pairwise_balances(
    context: Context, args: argparse.Namespace
) -> balances_pb2.ListPairwiseBalancesResponse:
    request = balances_pb2.ListPairwiseBalancesRequest(
        parent=resource_name(args.group, "groups", "GROUP"),
        currency_code=args.currency or "",
    )
    if args.user:
        request.user = resource_name(args.user, "users", "--user")
    found = context.all_pages(
        "balances.ListPairwiseBalances", request, "pairwise_balances"
    )
    response = balances_pb2.ListPairwiseBalancesResponse(pairwise_balances=found)
    context.show(response, _pairwise_text)
    return response


def explain_balance(
    context: Context, args: argparse.Namespace
) -> balances_pb2.ExplainBalanceResponse:
    user = resource_name(args.user, "users", "USER")
    request = balances_pb2.ExplainBalanceRequest(
        name=_balance_name(args),
        user=user,
        currency_code=args.currency or _only_currency(context, args),
    )
    if args.counterparty:
        request.counterparty = resource_name(args.counterparty, "users", "--with")
    first = context.call("balances.ExplainBalance", request)
    contributions = list(first.contributions)
    if first.next_page_token:
        request.page_token = first.next_page_token
        contributions += context.all_pages(
            "balances.ExplainBalance", request, "contributions"
        )
    response = balances_pb2.ExplainBalanceResponse(
        net_amount=first.net_amount, contributions=contributions
    )
    if first.HasField("pairwise_amount"):
        response.circular_debt_adjustment.CopyFrom(first.circular_debt_adjustment)
        response.pairwise_amount.CopyFrom(first.pairwise_amount)
    context.show(response, lambda response: _explain_text(response, request))
    return response


def _only_currency(context: Context, args: argparse.Namespace) -> str:
    """Return the currency of the group's balances, or of the group itself."""
    request = balances_pb2.GetGroupBalanceRequest(name=_balance_name(args))
    balance = context.call("balances.GetGroupBalance", request).balance
    codes = [entry.currency_code for entry in balance.currency_balances]
    if len(codes) > 1:
        raise UsageError(
            f"--currency: {args.group} has balances in {', '.join(codes)}; "
            "choose one, such as --currency " + codes[0]
        )
    if codes:
        return codes[0]
    group = resource_name(args.group, "groups", "GROUP")
    request = users_pb2.GetGroupRequest(name=group)
    return context.call("users.GetGroup", request).group.currency_code


def group_report(
    context: Context, args: argparse.Namespace
) -> balances_pb2.GroupReport:
    request = balances_pb2.GetGroupReportRequest(
        name=resource_name(args.group, "groups", "GROUP") + "/report",
        currency_code=args.currency,
    )
    if args.start_date:
        request.start_date.CopyFrom(parse_date(args.start_date, "--from"))
    if args.end_date:
        request.end_date.CopyFrom(parse_date(args.end_date, "--to"))
    report = context.call("balances.GetGroupReport", request).report
    context.show(report, _report_text)
    return report


def _group_balance_text(balance: balances_pb2.GroupBalance) -> str:
    rows = [
        (
            entry.currency_code,
            render.short(member.user),
            render.amount(member.net_amount),
        )
        for entry in balance.currency_balances
        for member in entry.member_balances
    ]
    state = "settled" if balance.settled else "not settled"
    return f"{balance.name}: {state}\n" + render.table(
        ("CURRENCY", "USER", "NET"), rows
    )


def _user_balance_text(balance: balances_pb2.UserBalance) -> str:
    rows = [
        (entry.group, render.amounts(entry.net_amounts))
        for entry in balance.group_balances
    ]
    totals = render.amounts(balance.total_net_amounts)
    groups = render.table(("GROUP", "NET"), rows) + f"\n\ntotal: {totals}"
    return groups + "\n\n" + _counterparty_table(balance)


def _counterparty_table(balance: balances_pb2.UserBalance) -> str:
    """Tabulate what the user and each other user owe each other.

    NET and the per-group amounts are signed from the user's side, as in the
    group table: positive when the counterparty owes the user.
    """
    user = render.short(balance.name.removesuffix("/balance"))
    rows = []
    for entry in balance.counterparty_balances:
        other = render.short(entry.user)
        net = entry.net_amount
        if net.units > 0 or net.nanos > 0:
            direction = f"{other} owes {user}"
        elif net.units < 0 or net.nanos < 0:
            direction = f"{user} owes {other}"
        else:
            direction = "even"
        by_group = ", ".join(
            f"{render.short(part.group)} {render.amount(part.net_amount)}"
            for part in entry.group_amounts
        )
        rows.append((other, render.amount(net), direction, by_group))
    return render.table(("COUNTERPARTY", "NET", "WHO OWES WHOM", "BY GROUP"), rows)


def _plan_text(response: balances_pb2.ComputeSettlementPlanResponse) -> str:
    if not response.transfers:
        return "nothing to settle: every net amount is zero"
    table = render.table(
        ("FROM", "TO", "AMOUNT"),
        [
            (
                render.short(transfer.payer),
                render.short(transfer.payee),
                render.amount(transfer.amount),
            )
            for transfer in response.transfers
        ],
    )
    if response.fewest_transfers:
        return table
    return f"{table}\n\n{_heuristic_plan_note(response)}"


def _heuristic_plan_note(response: balances_pb2.ComputeSettlementPlanResponse) -> str:
    """Return the note that explains why a plan is not proven to have the
    fewest transfers.

    Every member with a non-zero balance pays or receives a transfer, so the
    users in a currency's transfers are its members with a non-zero balance.
    """
    members: dict[str, set[str]] = defaultdict(set)
    for transfer in response.transfers:
        members[transfer.amount.currency_code].update((transfer.payer, transfer.payee))
    crowded = [
        f"{len(users)} in {code}"
        for code, users in sorted(members.items())
        if len(users) > EXACT_LIMIT
    ]
    if crowded:
        reason = (
            f"more members have a non-zero balance ({', '.join(crowded)}) than "
            f"the {EXACT_LIMIT} that the search for the fewest transfers covers"
        )
    else:
        reason = (
            "the search for the fewest transfers reached its work limit or the "
            "call's deadline"
        )
    return (
        "note: this plan settles every balance, but it may not use the fewest "
        f"transfers: {reason}, so a heuristic planned it, with at most one "
        "transfer fewer than the members with a non-zero balance (see "
        "docs/settle-up.md)"
    )


def _pairwise_text(response: balances_pb2.ListPairwiseBalancesResponse) -> str:
    return render.table(
        ("DEBTOR", "OWES", "AMOUNT"),
        [
            (
                render.short(line.debtor),
                render.short(line.creditor),
                render.amount(line.amount),
            )
            for line in response.pairwise_balances
        ],
    )


def _explain_text(
    response: balances_pb2.ExplainBalanceResponse,
    request: balances_pb2.ExplainBalanceRequest,
) -> str:
    subject = render.short(request.user)
    if request.counterparty:
        subject += f" with {render.short(request.counterparty)}"
    rows = [
        (
            render.date(item.date),
            item.source,
            item.description,
            render.amount(item.paid_amount, with_code=False),
            render.amount(item.owed_amount, with_code=False),
            render.amount(item.net_change, with_code=False),
            render.amount(item.running_net_amount, with_code=False),
        )
        for item in response.contributions
    ]
    headers = ("DATE", "SOURCE", "DESCRIPTION", "PAID", "OWED", "CHANGE", "RUNNING")
    text = f"net amount of {subject}: {render.amount(response.net_amount)}\n"
    text += render.table(headers, rows)
    if response.HasField("pairwise_amount"):
        adjustment = render.amount(response.circular_debt_adjustment)
        text += f"\ncancelled circular debts: {adjustment}"
        text += f"\npairwise amount of {subject}: "
        text += render.amount(response.pairwise_amount)
    return text


def _report_text(report: balances_pb2.GroupReport) -> str:
    period = "all dates"
    if report.HasField("start_date") or report.HasField("end_date"):
        period = f"{render.date(report.start_date)} to {render.date(report.end_date)}"
    summary = render.fields(
        [
            ("report", report.name),
            ("period", period),
            ("total spent", render.amount(report.total_spent)),
            ("expenses", report.expense_count),
        ]
    )
    categories = render.table(
        ("CATEGORY", "SPENT", "EXPENSES"),
        [
            (
                render.category(total.category),
                render.amount(total.amount),
                total.expense_count,
            )
            for total in report.category_totals
        ],
    )
    members = render.table(
        ("MEMBER", "PAID", "SHARE", "NET"),
        [
            (
                render.short(total.user),
                render.amount(total.paid_amount),
                render.amount(total.owed_amount),
                render.amount(total.net_amount),
            )
            for total in report.member_totals
        ],
    )
    months = render.table(
        ("MONTH", "SPENT", "EXPENSES"),
        [
            (render.date(total.month), render.amount(total.amount), total.expense_count)
            for total in report.month_totals
        ],
    )
    return "\n\n".join([summary, categories, members, months])
