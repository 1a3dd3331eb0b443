"""Client commands that call a running splitlog through its gateway.

`add_parsers` registers `users`, `groups`, `expenses`, `settlements`,
`balances`, `logs` and `demo` on the `splitlog` parser; `run` executes the parsed
command. Exit status: 0 on success, 1 when a call fails or the gateway
cannot be reached, 2 for an invalid command-line value.
"""

from __future__ import annotations

import argparse
import os
import sys

from splitlog_cli.client import (
    balances,
    demo,
    demo_logs,
    expenses,
    groups,
    logs,
    settlements,
    users,
)
from splitlog_cli.client.command import HANDLER, Context, common_options
from splitlog_cli.client.connection import ServerError
from splitlog_cli.client.values import UsageError
from splitlog_cli.tls_options import client_tls
from splitlog_cli.topology import connect_host, format_address
from splitlog_runtime.config import Config
from splitlog_runtime.tls import TlsConfigError

EXIT_FAILURE = 1
EXIT_USAGE = 2

_MODULES = (users, groups, expenses, settlements, balances, logs, demo)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Add the client commands to the `splitlog` subcommands."""
    common = common_options()
    for module in _MODULES:
        module.add_parsers(commands, common)
    demo_logs.add_demo_parser(_subcommands(commands.choices["demo"]), common)


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """Return the parser set of a command's actions, such as those of `demo`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError(f"{parser.prog} has no actions")


def handles(args: argparse.Namespace) -> bool:
    """Return True when the parsed command is one of the client commands."""
    return hasattr(args, HANDLER)


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the parsed client command and return its exit status."""
    address = args.gateway_address or format_address(
        connect_host(config.host), config.gateway_port
    )
    context = Context(address, args.format, sys.stdout, client_tls(args, config))
    try:
        getattr(args, HANDLER)(context, args)
    except (UsageError, TlsConfigError) as exc:
        print(f"splitlog {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServerError as exc:
        print(f"splitlog: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader of the output, such as `head`, exited early. Point stdout
        # at /dev/null so that the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    finally:
        context.close()
    return 0
