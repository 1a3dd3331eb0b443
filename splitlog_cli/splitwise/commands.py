"""The `splitlog import splitwise` and `splitlog export splitwise` commands."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import grpc

from expense_service.money import format_amount
from splitlog_cli.client import credential_of, gateway_address
from splitlog_cli.client.command import connection_options
from splitlog_cli.client.connection import Unreachable, channel_reachable, open_channel
from splitlog_cli.client.credentials import Credential
from splitlog_cli.client.render import FORMATS
from splitlog_cli.client.values import UsageError
from splitlog_cli.tls_options import client_tls
from splitlog_runtime.config import Config
from splitlog_runtime.limits import DEFAULTS, RequestLimits
from splitlog_runtime.tls import ClientTls, TlsConfigError

if TYPE_CHECKING:
    from splitlog_cli.splitwise.importer import ImportResult

EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_TIMEOUT = 10.0
# Seconds that import and export wait for the connection to the gateway.
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Access:
    """How to reach the gateway: TLS or plaintext, and the credential to send."""

    tls: ClientTls | None = None
    credential: Credential | None = None

    def open(self, gateway: str) -> grpc.Channel:
        """Open a channel to `gateway` that sends the credential, if any."""
        return open_channel(gateway, self.tls, self.credential)

    def unreachable(self, gateway: str) -> Unreachable:
        """Return the error to print when no gateway answers at `gateway`."""
        return Unreachable(gateway, tls=self.tls is not None)


def _connects(channel: grpc.Channel) -> bool:
    """Wait until the channel connects; return False if it does not in time.

    A file's import makes many calls, so an unreachable gateway is reported
    once, before the first, as the other client commands report it.
    """
    return channel_reachable(channel, CONNECT_TIMEOUT)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Add the `import` and `export` commands, each with a `splitwise` format."""
    connection = connection_options()
    importing = commands.add_parser(
        "import",
        help="import data from another app into a running splitlog",
        description="Import data from another app through the gateway.",
    )
    apps = importing.add_subparsers(dest="app", required=True, metavar="APP")
    splitwise = apps.add_parser(
        "splitwise",
        parents=[connection],
        help="a Splitwise 'Export as spreadsheet' CSV file",
        description="Create the users, the group, the expenses and the payments "
        "of a Splitwise export. The file is checked completely before anything "
        "is written, and importing the same file again creates nothing twice.",
    )
    splitwise.add_argument("file", type=Path, help="the CSV file Splitwise wrote")
    splitwise.add_argument(
        "--group-name",
        help="display name of the new group (default: the file name without "
        ".csv); a repeated import keeps the first name",
    )
    splitwise.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="print the summary as aligned text (table, the default) or as one "
        "JSON object (json); the progress bar goes to stderr either way",
    )
    _add_timeout_flag(splitwise)

    exporting = commands.add_parser(
        "export",
        help="export a group of a running splitlog for another app",
        description="Export a group through the gateway.",
    )
    apps = exporting.add_subparsers(dest="app", required=True, metavar="APP")
    splitwise = apps.add_parser(
        "splitwise",
        parents=[connection],
        help="as a Splitwise 'Export as spreadsheet' CSV file",
        description="Write a group's members, expenses and settlements in the "
        "CSV layout of Splitwise's 'Export as spreadsheet', with one 'Total "
        "balance' row per currency. The output is always that CSV, so this "
        "command takes no --format.",
    )
    splitwise.add_argument("group", help="the group, as groups/ID or ID")
    splitwise.add_argument(
        "-o",
        "--output",
        type=Path,
        help="file to write; - or no option writes to standard output",
    )
    _add_timeout_flag(splitwise)


def _add_timeout_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"deadline of each call in seconds (default {DEFAULT_TIMEOUT:g})",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    """Run `import splitwise` or `export splitwise`; return the exit status.

    The calls carry the credential and use the TLS settings that every client
    command takes: `--token`, `SPLITLOG_TOKEN` or the saved session, and
    `--tls` and its files.
    """
    gateway = gateway_address(args, config)
    try:
        access = Access(client_tls(args, config), credential_of(args, gateway))
    except (TlsConfigError, UsageError) as exc:
        print(f"splitlog {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "import":
        # The rows are checked against the limits of this command's settings,
        # which match the server's when both read the same environment.
        limits = RequestLimits(
            expense_max_payers=config.expense_max_payers,
            expense_max_participants=config.expense_max_participants,
        )
        return run_import(
            args.file,
            gateway,
            args.timeout,
            args.group_name,
            access=access,
            limits=limits,
            output_format=args.format,
        )
    return run_export(args.group, gateway, args.timeout, args.output, access=access)


def run_import(
    path: Path,
    gateway: str,
    timeout: float,
    group_name: str | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    access: Access | None = None,
    limits: RequestLimits = DEFAULTS,
    output_format: str = "table",
) -> int:
    """Import one file and print the summary; return the exit status.

    `limits` gives the payer and participant limits per expense that the
    rows are checked against before anything is written. `output_format`
    is `table` for the text summary or `json` for `summary_json`.
    """
    # The converters load here, so that every other command starts without
    # them.
    from splitlog_cli.splitwise.csvformat import SplitwiseFormatError
    from splitlog_cli.splitwise.importer import (
        MAX_DISPLAY_NAME,
        SplitwiseImporter,
        SplitwiseImportError,
        load_plan,
    )

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        plan, digest = load_plan(path, limits)
    except OSError as exc:
        print(f"splitlog: error: cannot read {path}: {exc.strerror}", file=err)
        return EXIT_FAILURE
    except SplitwiseFormatError as exc:
        print(
            f"splitlog: error: nothing was imported, because {path} has these "
            "problems:",
            file=err,
        )
        for problem in exc.problems:
            print(f"  {path}:{problem}", file=err)
        return EXIT_FAILURE
    except SplitwiseImportError as exc:
        print(f"splitlog: error: {exc}", file=err)
        return EXIT_FAILURE
    if group_name is not None and len(group_name) > MAX_DISPLAY_NAME:
        print(
            f"splitlog import: error: --group-name is {len(group_name)} "
            f"characters long; a group name takes at most {MAX_DISPLAY_NAME}, "
            "so pass a shorter one",
            file=err,
        )
        return EXIT_USAGE
    # A name taken from a long file name is cut, as the group stores it.
    name = (group_name or path.name.removesuffix(".csv"))[:MAX_DISPLAY_NAME]
    access = access or Access()
    with access.open(gateway) as channel:
        if not _connects(channel):
            print(f"splitlog: error: {access.unreachable(gateway)}", file=err)
            return EXIT_FAILURE
        try:
            result = SplitwiseImporter(channel, timeout, err).run(plan, digest, name)
        except SplitwiseImportError as exc:
            print(f"splitlog: error: {exc}", file=err)
            return EXIT_FAILURE
    if output_format == "json":
        print(json.dumps(summary_json(result), indent=2, ensure_ascii=False), file=out)
    else:
        print_summary(result, out)
    return EXIT_FAILURE if result.mismatches else 0


def print_summary(result: ImportResult, out: TextIO) -> None:
    """Print what the import created and the balances against the summary row."""
    counts = [
        ("group", f"{result.group} ({result.group_display_name})"),
        ("rows read", result.rows),
        ("expenses", result.expenses),
        ("settlements", result.settlements),
        ("members", result.members),
    ]
    for label, value in counts:
        print(f"{label:<12} {value}", file=out)
    if result.already_present:
        print(
            f"{result.already_present} of the entries were already stored (by an "
            "earlier or concurrent run of this import) and were left as they were",
            file=out,
        )
    if result.skipped_rows:
        lines = ", ".join(str(line) for line in result.skipped_rows)
        noun = "line" if len(result.skipped_rows) == 1 else "lines"
        print(f"rows without any effect, not imported: {noun} {lines}", file=out)
    for currency in sorted(result.expected.keys() | result.actual.keys()):
        expected = result.expected.get(currency, {})
        actual = result.actual.get(currency, {})
        print(f"\nbalances in {currency} (file's summary row / splitlog):", file=out)
        members = list(expected) + [m for m in actual if m not in expected]
        width = max(len(member) for member in members)
        for member in members:
            want = expected.get(member, 0)
            have = actual.get(member, 0)
            status = "OK" if want == have else "MISMATCH"
            print(
                f"  {member:<{width}}  {format_amount(want, currency):>12}  "
                f"{format_amount(have, currency):>12}  {status}",
                file=out,
            )
    if result.mismatches:
        print(f"\nMISMATCH: {len(result.mismatches)} balances differ", file=out)
    else:
        print("\nOK: every balance equals the file's summary row", file=out)


def summary_json(result: ImportResult) -> dict[str, object]:
    """Return the import summary as JSON values, with the keys in camelCase.

    Amounts are decimal strings in the currency's minor unit, such as
    "-12.50", as `print_summary` shows them. `balancesMatch` is false when
    a balance differs from the file's summary row, which also makes the
    exit status 1.
    """
    balances = []
    for currency in sorted(result.expected.keys() | result.actual.keys()):
        expected = result.expected.get(currency, {})
        actual = result.actual.get(currency, {})
        members = list(expected) + [m for m in actual if m not in expected]
        balances.append(
            {
                "currencyCode": currency,
                "members": [
                    {
                        "member": member,
                        "summaryRow": format_amount(expected.get(member, 0), currency),
                        "splitlog": format_amount(actual.get(member, 0), currency),
                        "matches": expected.get(member, 0) == actual.get(member, 0),
                    }
                    for member in members
                ],
            }
        )
    return {
        "group": result.group,
        "groupDisplayName": result.group_display_name,
        "rowsRead": result.rows,
        "expenses": result.expenses,
        "settlements": result.settlements,
        "members": result.members,
        "alreadyStored": result.already_present,
        "skippedRows": list(result.skipped_rows),
        "balances": balances,
        "balancesMatch": not result.mismatches,
    }


def run_export(
    group: str,
    gateway: str,
    timeout: float,
    output: Path | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    access: Access | None = None,
) -> int:
    """Export one group to a file, or to `out` when `output` is None or `-`;
    return the exit status."""
    from splitlog_cli.splitwise.exporter import export_group

    out = out or sys.stdout
    err = err or sys.stderr
    name = group if group.startswith("groups/") else f"groups/{group}"
    access = access or Access()
    with access.open(gateway) as channel:
        if not _connects(channel):
            print(f"splitlog: error: {access.unreachable(gateway)}", file=err)
            return EXIT_FAILURE
        try:
            text = export_group(channel, name, timeout)
        except grpc.RpcError as exc:
            print(
                f"splitlog: error: cannot export {name}: {exc.code().name}: "
                f"{exc.details()}",
                file=err,
            )
            return EXIT_FAILURE
    if output is None or str(output) == "-":
        out.write(text)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"splitlog: error: cannot write {output}: {exc.strerror}", file=err)
        return EXIT_FAILURE
    print(f"wrote {name} to {output}", file=err)
    return 0
