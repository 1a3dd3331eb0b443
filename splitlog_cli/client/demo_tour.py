"""Steps, narration and throwaway users shared by the `splitlog demo` tours.

Each step prints a one-line explanation and the equivalent `splitlog`
command, then runs that same command line through the same parser and
handler. A step can run as a user that the tour signed up: it then sends
that user's credential instead of the command's own, and the printed command
ends with a shell comment that names the user.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import string
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from google.protobuf.message import Message

from splitlog.auth.v1 import auth_service_pb2 as auth_pb2
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import users
from splitlog_cli.client.command import HANDLER, Context
from splitlog_cli.client.connection import sending
from splitlog_cli.client.credentials import Credential

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def random_suffix() -> str:
    """Return six random lower-case letters and digits for ids of one run."""
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(6))


@dataclass
class Actor:
    """A user or API key that steps run as: its connection and a comment naming it."""

    label: str
    context: Context


class Tour:
    """Runs and narrates the steps of a demo against one gateway."""

    def __init__(
        self,
        context: Context,
        args: argparse.Namespace,
        modules: tuple[ModuleType, ...],
    ) -> None:
        self.context = context
        self.gateway_flag = (
            ["--gateway", args.gateway_address] if args.gateway_address else []
        )
        self.step_number = 0
        self.parser = argparse.ArgumentParser(prog="splitlog", add_help=False)
        commands = self.parser.add_subparsers(dest="command", required=True)
        common = argparse.ArgumentParser(add_help=False)
        for module in modules:
            module.add_parsers(commands, common)
        self._actors: list[Actor] = []

    def say(self, text: str) -> None:
        print(text, file=self.context.out, flush=True)

    def announce(
        self, explanation: str, argv: list[str], actor: Actor | None = None
    ) -> None:
        """Print the step number, the explanation and the command line."""
        self.step_number += 1
        command = shlex.join(["splitlog", *argv, *self.gateway_flag])
        if actor is not None:
            command += f"  # {actor.label}"
        self.say(f"\n{self.step_number}. {explanation}\n$ {command}")

    def step(
        self, explanation: str, argv: list[str], actor: Actor | None = None
    ) -> Message:
        """Print the explanation and the command, then run the command."""
        self.announce(explanation, argv, actor)
        args = self.parser.parse_args(argv)
        if actor is None:
            return getattr(args, HANDLER)(self.context, args)
        # `sending` covers the commands, such as `logs`, that open channels
        # of their own rather than using the context's.
        with sending(actor.context.credential):
            return getattr(args, HANDLER)(actor.context, args)

    def actor(self, label: str, token: str) -> Actor:
        """Return an actor that sends `token` (an access token or API key)."""
        actor = Actor(
            label, self._context_with(Credential(self.context.address, token, None))
        )
        self._actors.append(actor)
        return actor

    def sign_up(self, explanation: str, user: users_pb2.User, user_id: str) -> Actor:
        """Sign up `user` with a random password and return it as an actor.

        The printed `auth signup` command would also save the session. The
        tour keeps the access token in memory only and never shows the
        password, so the user cannot be signed in to after the tour.
        """
        argv = ["auth", "signup", "--email", user.email,
                "--display-name", user.display_name, "--user-id", user_id]  # fmt: skip
        if user.currency_code:
            argv += ["--currency", user.currency_code]
        self.announce(explanation, argv)
        request = auth_pb2.SignUpRequest(
            user=user, user_id=user_id, password=secrets.token_urlsafe(24)
        )
        # SignUp is open, so it goes out without the command's credential,
        # which may belong to a session that has ended.
        anonymous = self._context_with(Credential(self.context.address, None, None))
        try:
            response = anonymous.call("auth.SignUp", request)
        finally:
            anonymous.close()
        self.context.show(response.user, lambda user: users.users_table([user]))
        return self.actor(f"as {user_id}", response.tokens.access_token)

    def close(self) -> None:
        for actor in self._actors:
            actor.context.close()

    def _context_with(self, credential: Credential) -> Context:
        context = self.context
        return Context(
            context.address,
            context.format,
            context.out,
            context.tls,
            credential,
            time_zone=context.time_zone,
        )


def run_tour(
    context: Context,
    args: argparse.Namespace,
    modules: tuple[ModuleType, ...],
    body: Callable[[Tour], Message],
) -> Message:
    """Run `body` on a new tour of the commands in `modules`, then close it."""
    tour = Tour(context, args, modules)
    try:
        return body(tour)
    finally:
        tour.close()
