"""Options, gateway connection and output shared by every client command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from google.protobuf.message import Message

from splitlog_cli.client.connection import Gateway
from splitlog_cli.client.credentials import TOKEN_ENV, Credential
from splitlog_cli.client.render import FORMATS, to_json
from splitlog_cli.tls_options import add_tls_arguments
from splitlog_runtime.tls import ClientTls

# Attribute of the parsed arguments that contains the command's handler.
HANDLER = "client_handler"
PAGE_SIZE = 500

Handler = Callable[["Context", argparse.Namespace], Message]


class PartialFailure(Exception):
    """Raised by a handler that printed its result but did not fully succeed.

    The command prints the message on stderr and exits with `status`.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


FORMAT_HELP = (
    "print aligned columns (table, the default) or proto3 JSON (json): "
    "the resource, or for a list one response with the items of every page"
)
# The --format help of commands that print items as they arrive.
STREAM_FORMAT_HELP = (
    "print aligned columns (table, the default) or JSON Lines (json): one "
    "proto3 JSON object per line for each item as it arrives"
)


def common_options(format_help: str = FORMAT_HELP) -> argparse.ArgumentParser:
    """Return the parent parser with `--gateway`, `--format`, `--token` and TLS."""
    common = argparse.ArgumentParser(add_help=False)
    _add_gateway_argument(common)
    common.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help=format_help,
    )
    _add_credential_arguments(common)
    return common


def connection_options() -> argparse.ArgumentParser:
    """Return the parent parser with `--gateway`, `--token` and TLS.

    It is for commands that print their own report, such as `import`, and so
    take no `--format`.
    """
    options = argparse.ArgumentParser(add_help=False)
    _add_gateway_argument(options)
    _add_credential_arguments(options)
    return options


def _add_gateway_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gateway",
        dest="gateway_address",
        metavar="HOST:PORT",
        help="gRPC address of the gateway (default: 127.0.0.1 and the port in "
        "SPLITLOG_GATEWAY_PORT, or 50051)",
    )


def _add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    add_token_argument(parser)
    add_tls_arguments(parser)


def add_token_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--token`, the credential that `credential_of` reads."""
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"access token or API key to send as `authorization: Bearer` "
        f"(default: ${TOKEN_ENV}, else the session saved by `splitlog auth "
        "signin` for this gateway)",
    )


def add_actions(
    commands: argparse._SubParsersAction, name: str, help_text: str
) -> argparse._SubParsersAction:
    """Add a command such as `users` and return the parser set of its actions."""
    parser = commands.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def add_action(
    actions: argparse._SubParsersAction,
    name: str,
    common: argparse.ArgumentParser,
    handler: Handler,
    help_text: str,
) -> argparse.ArgumentParser:
    """Add one action, such as `users create`, that runs `handler`."""
    parser = actions.add_parser(
        name, parents=[common], help=help_text, description=help_text
    )
    parser.set_defaults(**{HANDLER: handler})
    return parser


@dataclass
class Context:
    """The gateway connection and the output format of one command run."""

    address: str
    format: str
    out: TextIO
    tls: ClientTls | None = None
    credential: Credential | None = None
    # IANA zone of times given without an offset (the log_default_time_zone
    # setting).
    time_zone: str = "UTC"
    _gateway: Gateway | None = field(default=None, repr=False)

    @property
    def gateway(self) -> Gateway:
        """The connection, opened on first use so that usage errors need none."""
        if self._gateway is None:
            self._gateway = Gateway(
                self.address, tls=self.tls, credential=self.credential
            )
        return self._gateway

    @property
    def signed_in_user(self) -> str | None:
        """The `users/{user}` of the credential, or None when it names no user."""
        return self.credential.user if self.credential else None

    @property
    def default_recorder(self) -> str | None:
        """The author of a write that names none, such as `expense.creator`.

        The signed-in user when the credential names one. An API key names
        no user, so the value is "", which leaves the field empty for the
        server to fill with the key's owner. The server can do that only
        while the gateway requires a credential. None without a credential,
        so the command takes a default from the write itself.
        """
        if self.signed_in_user is not None:
            return self.signed_in_user
        if self.credential is not None and self.credential.present:
            return ""
        return None

    def call(self, method_name: str, request: Message) -> Any:
        """Call `service.Method` (such as `users.GetUser`) with the deadline."""
        service, method = method_name.split(".")
        stub = getattr(self.gateway, service)
        return self.gateway.call(getattr(stub, method), request)

    def all_pages(
        self, method_name: str, request: Any, repeated_field: str
    ) -> list[Any]:
        """Call a List method until the last page and return every item."""
        items: list[Any] = []
        request.page_size = PAGE_SIZE
        while True:
            response = self.call(method_name, request)
            items.extend(getattr(response, repeated_field))
            if not response.next_page_token:
                return items
            request.page_token = response.next_page_token

    def show(self, message: Message, render: Callable[[Any], str]) -> None:
        """Print `message` as JSON, or as the table that `render` returns."""
        text = to_json(message) if self.format == "json" else render(message)
        print(text, file=self.out, flush=True)

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
