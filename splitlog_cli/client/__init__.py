"""Client commands that call a running splitlog through its gateway.

`add_parsers` registers `users`, `groups`, `expenses`, `settlements`,
`balances`, `logs`, `auth` and `demo` on the `splitlog` parser; `run` executes
the parsed command, sending the credential of `--token`, `SPLITLOG_TOKEN` or
the saved session. Exit status: 0 on success, 1 when a call fails or the gateway
cannot be reached, 2 for an invalid command-line value, or the status that a
command documents for a run that finished but did not fully succeed (3 from
`logs ship` when entries were rejected).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

from splitlog_cli.client import (
    auth,
    balances,
    demo,
    demo_logs,
    expenses,
    groups,
    logs,
    logs_retention,
    settlements,
    users,
)
from splitlog_cli.client.command import (
    HANDLER,
    Context,
    PartialFailure,
    common_options,
)
from splitlog_cli.client.connection import ServerError, error_info, sending
from splitlog_cli.client.credentials import (
    TOKEN_ENV,
    Credential,
    SessionStore,
    check_token,
    config_dir,
)
from splitlog_cli.client.values import UsageError
from splitlog_cli.tls_options import client_tls
from splitlog_cli.topology import connect_host, format_address
from splitlog_runtime import auth as runtime_auth
from splitlog_runtime.config import Config
from splitlog_runtime.tls import TlsConfigError

EXIT_FAILURE = 1
EXIT_USAGE = 2

_MODULES = (users, groups, expenses, settlements, balances, logs, auth, demo)
# The option that names each author field a client command may leave empty.
_AUTHOR_OPTIONS = {
    "expense.creator": "--by",
    "expense.last_modifier": "--by",
    # The author field of DeleteExpense and UndeleteExpense.
    "last_modifier": "--by",
    "settlement.creator": "--by",
    "group.creator": "--creator",
}


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Add the client commands to the `splitlog` subcommands."""
    common = common_options()
    for module in _MODULES:
        module.add_parsers(commands, common)
    demo_logs.add_demo_parser(_subcommands(commands.choices["demo"]), common)
    logs_retention.add_parsers(_subcommands(commands.choices["logs"]), common)


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """Return the parser set of a command's actions, such as those of `demo`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError(f"{parser.prog} has no actions")


def handles(args: argparse.Namespace) -> bool:
    """Return True when the parsed command is one of the client commands."""
    return hasattr(args, HANDLER)


def prepare(args: argparse.Namespace) -> None:
    """Set up the parsed client command before its settings load.

    `logs ship` reports a SIGTERM from here on, even before it connects.
    """
    if getattr(args, HANDLER) is logs.ship_files:
        logs.stop_on_sigterm_before_shipping()


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the parsed client command and return its exit status."""
    address = gateway_address(args, config)
    try:
        credential = credential_of(args, address)
    except UsageError as exc:
        print(f"splitlog {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    context = Context(
        address,
        args.format,
        sys.stdout,
        client_tls(args, config),
        credential,
        time_zone=config.log_default_time_zone,
    )
    try:
        with sending(credential):
            getattr(args, HANDLER)(context, args)
    except (UsageError, TlsConfigError) as exc:
        print(f"splitlog {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServerError as exc:
        print(_error_report(exc, credential), file=sys.stderr)
        return EXIT_FAILURE
    except PartialFailure as exc:
        name = " ".join(filter(None, (args.command, getattr(args, "action", ""))))
        print(f"splitlog {name}: {exc}", file=sys.stderr)
        return exc.status
    finally:
        context.close()
    return 0


def gateway_address(args: argparse.Namespace, config: Config) -> str:
    """Return the gateway address that `--gateway` or the settings name."""
    return args.gateway_address or format_address(
        connect_host(config.host), config.gateway_port
    )


def credential_of(args: argparse.Namespace, address: str) -> Credential | None:
    """Return the credential that the command sends, if any.

    Raises:
      UsageError: the token of `--token`, `SPLITLOG_TOKEN` or the saved
        session cannot be sent in a header.
    """
    if not getattr(args, auth.SENDS_CREDENTIAL, True):
        return None
    # An explicitly empty value must not fall back to the saved session,
    # because a script whose key variable is unset would then run as the
    # user who signed in last.
    if args.token == "":
        raise UsageError(
            "--token is empty; give a token, or leave the option out to use "
            f"{TOKEN_ENV} or the saved session"
        )
    if args.token is None and os.environ.get(TOKEN_ENV) == "":
        raise UsageError(
            f"{TOKEN_ENV} is set but empty; set it to a token, or unset it to "
            "use the saved session"
        )
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if token:
        check_token(token, "--token" if args.token else TOKEN_ENV)
    return Credential(address, token, SessionStore(config_dir()))


def _error_report(error: ServerError, credential: Credential | None) -> str:
    """Return the lines to print for a failed call.

    The advice about the credential comes right after the status line, and
    before the lines that a command added about what it did, such as how
    far `logs ship` got.
    """
    status_line, _, added = str(error).partition("\n")
    hint = _hint(error, credential) or _author_hint(error)
    lines = [f"splitlog: error: {status_line}", hint, added]
    return "\n".join(line for line in lines if line)


def _hint(error: ServerError, credential: Credential | None) -> str:
    """Say how to get a credential when the gateway rejected the call for one."""
    if error.code != grpc.StatusCode.UNAUTHENTICATED:
        return ""
    if _user_deactivated(error, credential):
        user = credential.user if credential is not None else None
        account = f"The account {user}" if user else "The account"
        return (
            f"{account} is deactivated, so its sessions and API keys no longer "
            "work, and signing in again will not help. splitlog has no call "
            "that reactivates a user, so ask an administrator of this splitlog "
            "for an active account."
        )
    if credential is None:
        return ""
    if credential.from_session:
        return (
            "The saved session has ended. Sign in again with `splitlog auth "
            "signin --email EMAIL`."
        )
    if credential.present:
        return f"Check the token given by --token or {TOKEN_ENV}."
    return (
        f"You are not signed in to {credential.address}. Run `splitlog auth "
        "signin --email EMAIL`, or pass an access token or API key with "
        f"--token or {TOKEN_ENV}."
    )


def _author_hint(error: ServerError) -> str:
    """Name the option that sets an author field the server rejected.

    A command sends an author field such as `expense.creator` empty when its
    credential is an API key, which names no user. The server fills it with
    the key's owner only while the gateway requires a credential. With
    authentication off it rejects the write with the reason REQUIRED. An
    author who is not a member of the group, such as an administrator
    outside it, gets NOT_A_GROUP_MEMBER, whose metadata lists the fields.
    """
    if error.reason == "NOT_A_GROUP_MEMBER":
        fields = error.metadata.get("fields", "").split(",")
        options = [
            _AUTHOR_OPTIONS[field] for field in fields if field in _AUTHOR_OPTIONS
        ]
        if not options:
            return ""
        return (
            f"The author of a write must be a member of the group. Name a member "
            f"with {options[0]} USER (an administrator may name any member), or "
            "add the author to the group."
        )
    option = _AUTHOR_OPTIONS.get(error.metadata.get("field", ""))
    required = error.code == grpc.StatusCode.INVALID_ARGUMENT
    if option is None or not required or error.reason != "REQUIRED":
        return ""
    return (
        "This gateway does not check credentials, so the server cannot tell "
        f"whose API key this is. Name the user with {option} USER."
    )


def _user_deactivated(error: ServerError, credential: Credential | None) -> bool:
    """Return whether the call failed because the caller's user is deactivated.

    SignIn and RefreshToken fail with the reason USER_DEACTIVATED. Other
    calls fail at the gateway with CREDENTIAL_INVALID, which names
    user_service's reason in its metadata.
    """
    reasons = (error.reason, error.metadata.get(runtime_auth.CREDENTIAL_REASON_KEY))
    if runtime_auth.USER_DEACTIVATED in reasons:
        return True
    refused = credential.refresh_error if credential is not None else None
    return (
        refused is not None
        and error_info(refused).reason == runtime_auth.USER_DEACTIVATED
    )
