"""`splitlog settlements`: record, list, delete and restore payments."""

from __future__ import annotations

import argparse
import datetime
import uuid

from splitlog.balances.v1 import balances_service_pb2 as balances_pb2
from splitlog_cli.client import render
from splitlog_cli.client.command import Context, add_action, add_actions
from splitlog_cli.client.values import (
    child_name,
    parse_date,
    parse_money,
    recorder,
    recorder_help,
    resource_name,
    to_proto_date,
)

_HEADERS = ("NAME", "DATE", "FROM", "TO", "AMOUNT", "NOTE")


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(
        commands, "settlements", "record, list, delete and restore payments"
    )

    create = add_action(
        actions, "add", common, create_settlement, "record a payment between members"
    )
    create.add_argument("group", metavar="GROUP", help="group id or name groups/ID")
    create.add_argument(
        "--from", dest="payer", required=True, metavar="USER", help="who paid"
    )
    create.add_argument(
        "--to", dest="payee", required=True, metavar="USER", help="who was paid"
    )
    create.add_argument(
        "--amount", required=True, help="amount paid as decimal text, such as 25.00"
    )
    create.add_argument("--currency", required=True, help="ISO 4217 code, such as EUR")
    create.add_argument(
        "--date", metavar="YYYY-MM-DD", help="day of the payment (default: today)"
    )
    create.add_argument("--note", help="free text, at most 2000 characters by default")
    create.add_argument("--by", metavar="USER", help=recorder_help("the --from user"))
    create.add_argument(
        "--id", help="id of the new settlement (default: chosen by the server)"
    )

    listing = add_action(
        actions, "list", common, list_settlements, "list a group's payments"
    )
    listing.add_argument("group", metavar="GROUP", help="group id or name groups/ID")
    listing.add_argument(
        "--deleted", action="store_true", help="include deleted settlements"
    )

    for action, handler, help_text in (
        ("delete", delete_settlement, "delete a settlement; it stops counting"),
        ("restore", restore_settlement, "restore a deleted settlement"),
    ):
        parser = add_action(actions, action, common, handler, help_text)
        parser.add_argument(
            "settlement",
            metavar="NAME",
            help="settlement name groups/GROUP/settlements/ID",
        )


def build_create_request(
    args: argparse.Namespace, default_recorder: str | None = None
) -> balances_pb2.CreateSettlementRequest:
    """Build a CreateSettlementRequest from `settlements add` options, offline.

    Without `--by`, the settlement is recorded by `default_recorder` (see
    `recorder`), or without one by the payer.

    Raises:
      UsageError: an option has an invalid value.
    """
    payer = resource_name(args.payer, "users", "--from")
    settlement = balances_pb2.Settlement(
        payer=payer,
        payee=resource_name(args.payee, "users", "--to"),
        amount=parse_money(args.amount, args.currency, "--amount"),
        settlement_date=(
            parse_date(args.date, "--date")
            if args.date
            else to_proto_date(datetime.date.today())
        ),
        note=args.note or "",
        creator=recorder(args.by, default_recorder, payer),
    )
    return balances_pb2.CreateSettlementRequest(
        parent=resource_name(args.group, "groups", "GROUP"),
        settlement=settlement,
        settlement_id=args.id or "",
        request_id=str(uuid.uuid4()),
    )


def create_settlement(
    context: Context, args: argparse.Namespace
) -> balances_pb2.Settlement:
    request = build_create_request(args, context.default_recorder)
    settlement = context.call("balances.CreateSettlement", request).settlement
    context.show(settlement, lambda settlement: _table([settlement]))
    return settlement


def list_settlements(
    context: Context, args: argparse.Namespace
) -> balances_pb2.ListSettlementsResponse:
    request = balances_pb2.ListSettlementsRequest(
        parent=resource_name(args.group, "groups", "GROUP"),
        show_deleted=args.deleted,
    )
    found = context.all_pages("balances.ListSettlements", request, "settlements")
    response = balances_pb2.ListSettlementsResponse(settlements=found)
    context.show(response, lambda response: _table(response.settlements))
    return response


def delete_settlement(
    context: Context, args: argparse.Namespace
) -> balances_pb2.Settlement:
    name = child_name(args.settlement, "settlements", "NAME")
    request = balances_pb2.DeleteSettlementRequest(name=name)
    settlement = context.call("balances.DeleteSettlement", request).settlement
    context.show(settlement, lambda settlement: f"deleted {settlement.name}")
    return settlement


def restore_settlement(
    context: Context, args: argparse.Namespace
) -> balances_pb2.Settlement:
    name = child_name(args.settlement, "settlements", "NAME")
    request = balances_pb2.UndeleteSettlementRequest(name=name)
    settlement = context.call("balances.UndeleteSettlement", request).settlement
    context.show(settlement, lambda settlement: f"restored {settlement.name}")
    return settlement


def _table(settlements) -> str:
    rows = []
    for settlement in settlements:
        note = settlement.note
        if settlement.HasField("delete_time"):
            note = f"{note} (deleted)".strip()
        rows.append(
            (
                settlement.name,
                render.date(settlement.settlement_date),
                render.short(settlement.payer),
                render.short(settlement.payee),
                render.amount(settlement.amount),
                note,
            )
        )
    return render.table(_HEADERS, rows)
