"""The `splitlog` command line: argument parsing and dispatch.

Exit status: 0 on success, 1 when a component cannot start or fails, 2 for
invalid arguments or settings, and 141 (128 + SIGPIPE, as a shell reports a
writer killed by a closed pipe) when the reader of the output, such as
`head`, closed it early.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

from splitlog_cli import admin_key, settings
from splitlog_cli import client as client_commands
from splitlog_cli.client.command import add_token_argument
from splitlog_cli.client.credentials import TOKEN_ENV, Credential
from splitlog_cli.client.values import UsageError
from splitlog_cli.data_lock import (
    component_lock_file,
    data_dir_lock,
    every_component_lock,
)
from splitlog_cli.errors import StartupError
from splitlog_cli.health import check, not_serving
from splitlog_cli.processes import RESTART_POLICY
from splitlog_cli.show_config import FORMATS, render
from splitlog_cli.signals import StopSignals
from splitlog_cli.splitwise import commands as splitwise_commands
from splitlog_cli.tls_options import add_tls_arguments, client_tls
from splitlog_cli.topology import COMPONENTS, COMPONENTS_BY_NAME, LOG_NODE, LOG_ROUTER
from splitlog_runtime import auth, logsetup
from splitlog_runtime.config import Config, add_arguments
from splitlog_runtime.logship import LogShipHandler
from splitlog_runtime.tls import ClientTls, TlsConfigError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every subcommand, each with the configuration flags."""
    config_flags = argparse.ArgumentParser(add_help=False)
    add_arguments(config_flags)

    parser = argparse.ArgumentParser(
        prog="splitlog",
        description="Run and inspect splitlog, the shared-expenses and log "
        "collection gRPC services.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="show program's version number and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        parents=[config_flags],
        help="run every component, in this process or one process each",
        description="Run the gateway and every service until SIGTERM or Ctrl-C. "
        f"With --processes, {RESTART_POLICY.describe()}.",
    )
    up.add_argument(
        "--processes",
        action="store_true",
        help="run each component in its own child process, wired over loopback "
        "like the docker-compose containers, and restart a child that exits "
        "(see above)",
    )

    serve = commands.add_parser(
        "serve",
        parents=[config_flags],
        help="run one component in the foreground (what each container runs)",
        description="Run one component until SIGTERM or Ctrl-C.",
    )
    serve.add_argument("component", choices=[*COMPONENTS_BY_NAME, LOG_NODE])

    show = commands.add_parser(
        "config",
        parents=[config_flags],
        help="print the resolved settings",
        description="Print each setting with its value and source (table), as "
        "SPLITLOG_* lines (env), or the reference table of every setting "
        "(markdown).",
    )
    show.add_argument("--format", choices=FORMATS, default="table")

    # The server settings do not apply to a health check, so it takes none.
    health = commands.add_parser(
        "health",
        help="check a component's health; exit 0 when SERVING",
        description="Call grpc.health.v1.Health/Check and print the status. "
        "Exits 0 when SERVING, 1 otherwise and 2 for an invalid option. A "
        "gateway with auth_open_health off needs a credential, given as for "
        "the client commands; it is sent only after the server rejected the "
        "check without one.",
    )
    health.add_argument("address", help="host:port of the component")
    health.add_argument(
        "service",
        nargs="?",
        default="",
        help="full service name to check, such as splitlog.users.v1.UsersService, "
        "or one log shard at the router, such as "
        "splitlog.logs.v1.LogsService/shard-0; empty checks the whole server",
    )
    health.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        help="deadline of the health check in seconds, including the checks "
        "that name the backends a gateway reports down (default 3)",
    )
    add_token_argument(health)
    add_tls_arguments(health)
    admin_key.add_parser(commands, config_flags)
    splitwise_commands.add_parsers(commands)
    client_commands.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `splitlog` command and return its exit status."""
    try:
        status = _run(argv)
        # Buffered output meets a closed pipe here rather than at exit.
        sys.stdout.flush()
    except BrokenPipeError:
        return _output_closed()
    return status


def _output_closed() -> int:
    """End quietly after the reader of stdout, such as `head`, closed the pipe.

    stdout then points at /dev/null, so that the interpreter's flush at exit
    finds no closed pipe and prints no second error.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OUTPUT_CLOSED


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse reports unknown options with the top-level usage; show
        # the usage of the subcommand that was given them instead.
        _innermost_parser(parser, argv).error(
            f"unrecognized arguments: {' '.join(unknown)}"
        )
    if client_commands.handles(args):
        client_commands.prepare(args)
    if args.command == "health":
        return _health(args)
    if args.command in ("up", "serve", "config"):
        for warning in settings.unknown_variable_warnings():
            print(f"splitlog: warning: {warning}", file=sys.stderr)
    try:
        config = settings.load(args)
        if args.command in ("up", "serve"):
            settings.check_distinct_ports(config, args, _served_ports(args))
            settings.check_data_dir(config, args)
    except settings.ConfigError as exc:
        print(f"splitlog: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with logsetup.configured(config.log_level, config.log_format):
        try:
            return _dispatch(args, config)
        except StartupError as exc:
            print(f"splitlog: error: {exc}", file=sys.stderr)
            return EXIT_FAILURE


def _innermost_parser(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> argparse.ArgumentParser:
    """Return the parser of the deepest subcommand named in `argv`."""
    current = parser
    for token in argv:
        choices = _subcommands(current)
        if token in choices:
            current = choices[token]
    return current


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    # The server commands import the service code here, so that the client
    # commands, such as `splitlog logs tail`, start without loading
    # SQLAlchemy, Alembic, NumPy and the servicers.
    if args.command == "up":
        with data_dir_lock(config.data_dir):
            if args.processes:
                # Each child takes its component's lock.
                return _up(args, config)
            with every_component_lock(config):
                return _up(args, config)
    if args.command == "serve":
        from splitlog_cli import serve

        lock_file = component_lock_file(args.component, config)
        if lock_file is None:
            return serve.run(args.component, config)
        with data_dir_lock(config.data_dir, lock_file):
            return serve.run(args.component, config)
    if args.command == "config":
        print(render(config, args, args.format))
        return 0
    if args.command == "admin-key":
        return admin_key.run(args, config)
    if args.command in ("import", "export"):
        return splitwise_commands.run(args, config)
    if client_commands.handles(args):
        return client_commands.run(args, config)
    raise AssertionError(f"unhandled command {args.command!r}")


def _up(args: argparse.Namespace, config: Config) -> int:
    if args.processes:
        from splitlog_cli.processes import Supervisor

        signals = StopSignals()
        signals.install()
        # The supervisor's own records, such as a child's restart, go out as
        # service `splitlog`, as the launcher's records do in a plain `up`.
        # The log router child rejects them unless they are signed like calls
        # between components. A secret that is too short fails the
        # supervisor's start instead, with its own message.
        if config.auth_required:
            with contextlib.suppress(ValueError):
                auth.install_signer_from_settings(config.auth_secret, config.data_dir)
        # The startup records wait in the shipper's bounded queue until the
        # log router child reports SERVING. The shipper would keep them until
        # its first call succeeds anyway, but this way it makes no calls that
        # can only wait for the router, and it sends as soon as the router
        # serves.
        shipper = logsetup.start_self_ship(
            config, logsetup.LAUNCHER_SERVICE, send=False
        )
        on_serving = None
        if shipper is not None:
            on_serving = _start_sending_when_router_serves(shipper)
        try:
            return Supervisor(config, signals, on_serving=on_serving).run()
        finally:
            logsetup.stop_self_ship(shipper, timeout=logsetup.SHIP_FLUSH_SECONDS)
    from splitlog_cli import up

    return up.run(config)


def _start_sending_when_router_serves(
    shipper: LogShipHandler,
) -> Callable[[str], None]:
    """Return a callback that starts the shipper once the log router serves."""

    def on_serving(component: str) -> None:
        if component == LOG_ROUTER:
            shipper.start_sending()

    return on_serving


def _served_ports(args: argparse.Namespace) -> list[str]:
    """Return the port settings of the components that the command runs."""
    if args.command == "serve" and args.component == LOG_NODE:
        return []
    if args.command == "serve":
        components = [COMPONENTS_BY_NAME[args.component]]
    else:
        components = list(COMPONENTS)
    return [name for component in components for name in component.port_settings]


def _health(args: argparse.Namespace) -> int:
    credential = None
    deadline = time.monotonic() + args.timeout
    try:
        tls = client_tls(args)
        # A credential goes out only when the server requires one, so checking
        # an open health service sends no token and refreshes no session.
        status = check(args.address, args.service, args.timeout, tls, None)
        if status == "UNAUTHENTICATED":
            credential = client_commands.credential_of(args, args.address)
            status = check(args.address, args.service, args.timeout, tls, credential)
    except (UsageError, TlsConfigError) as exc:
        print(f"splitlog health: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if status == "SERVING":
        print(status)
        return 0
    print(status, file=sys.stderr)
    hint = ""
    if status == "NOT_SERVING" and not args.service:
        hint = _backends_down_hint(args, tls, credential, deadline)
    hint = hint or _health_hint(status, args, credential)
    if hint:
        print(hint, file=sys.stderr)
    return EXIT_FAILURE


def _backends_down_hint(
    args: argparse.Namespace,
    tls: ClientTls | None,
    credential: Credential | None,
    deadline: float,
) -> str:
    """Name the backends whose services a gateway reports NOT_SERVING.

    The gateway reports each public service with its backend's health, so
    checking them, in the time left of `--timeout`, shows which backends are
    down. Returns an empty string when none is, as at a server that is not
    a gateway.
    """
    from gateway.services import public_services

    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return ""
    backends = {service.full_name: service.backend for service in public_services()}
    down = not_serving(args.address, list(backends), remaining, tls, credential)
    if not down:
        return ""
    services_by_backend: dict[str, list[str]] = {}
    for service in down:
        services_by_backend.setdefault(backends[service], []).append(service)
    listed = ", ".join(
        f"{backend} ({', '.join(services)})"
        for backend, services in sorted(services_by_backend.items())
    )
    return (
        f"{args.address} is running but not ready, because it reports these "
        f"backends NOT_SERVING: {listed}; check that they are running and read "
        "their logs"
    )


def _health_hint(
    status: str, args: argparse.Namespace, credential: Credential | None
) -> str:
    """Return what a failed health status means for the address checked."""
    if status == "UNAUTHENTICATED":
        return _health_credential_hint(args.address, credential)
    if status == "PERMISSION_DENIED":
        return (
            f"{args.address} accepted the credential, but it does not allow "
            "health checks; use an access token, or an API key with the admin "
            "scope"
        )
    if status == "UNAVAILABLE":
        return (
            f"no server answered at {args.address}; check the host:port and "
            "that the component is running (add --tls for a TLS gateway)"
        )
    if status == "DEADLINE_EXCEEDED":
        return (
            f"{args.address} did not answer within {args.timeout:g} s; check "
            "the component's log, or raise --timeout"
        )
    if status == "NOT_FOUND":
        return (
            f"{args.address} does not report on the service {args.service!r}; "
            "give a full service name such as splitlog.users.v1.UsersService, "
            "or none for the whole server"
        )
    from log_service.shard_health import shard_of_health_name

    shard = shard_of_health_name(args.service)
    if status == "NOT_SERVING" and shard is not None:
        return (
            f"log shard {shard!r} at {args.address} has no leader that responds, "
            "so writes to it fail with UNAVAILABLE; `splitlog logs cluster` "
            "shows its nodes, and the router's log says when a leader returns"
        )
    if status == "NOT_SERVING":
        return (
            f"{args.address} is running but not ready, for example while its "
            "database or a backend is down; its log says which"
        )
    return ""


def _health_credential_hint(address: str, credential: Credential | None) -> str:
    """Say how to send a credential that a gateway accepts for health checks."""
    if credential is not None and credential.from_session:
        return (
            f"the session saved for {address} has ended; sign in again with "
            f"`splitlog auth signin --gateway {address} --email EMAIL`"
        )
    if credential is not None and credential.present:
        return (
            f"{address} rejected the credential; check the token given by "
            f"--token or {TOKEN_ENV}"
        )
    return (
        f"{address} needs a credential for health checks (its auth_open_health "
        f"is off); pass an access token or API key with --token TOKEN or "
        f"{TOKEN_ENV}, or sign in with `splitlog auth signin --gateway "
        f"{address} --email EMAIL`"
    )


class _VersionAction(argparse.Action):
    """Print the version and exit, reading it only when --version is given.

    argparse's own version action takes the string when the parser is built,
    and reading the package metadata costs every command's start.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(_version())
        parser.exit()


def _version() -> str:
    from importlib import metadata

    try:
        return f"splitlog {metadata.version('splitlog')}"
    except metadata.PackageNotFoundError:
        return "splitlog (version unknown)"
