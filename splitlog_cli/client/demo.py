"""`splitlog demo expenses`: a guided tour of the money side of a running splitlog.

Each step prints a one-line explanation and the equivalent `splitlog`
command, then runs that same command line through the same parser and
handler. Ids end in a random suffix, so the tour can run again against the
same data.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import string

from google.protobuf.message import Message

from splitlog_cli.client import balances, expenses, groups, settlements, users
from splitlog_cli.client.command import HANDLER, Context, add_action, add_actions
from splitlog_cli.client.render import amount, short

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_PEOPLE = ("alice", "bob", "carol", "dave")


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(commands, "demo", "guided tours against a running splitlog")
    add_action(
        actions,
        "expenses",
        common,
        run_expenses_demo,
        "create users, a group, one expense of each split type, then show "
        "balances, the settle-up plan, a settlement and the report",
    )


class _Tour:
    """Runs and narrates the steps of a demo with one connection."""

    def __init__(self, context: Context, gateway_flag: list[str]) -> None:
        self.context = context
        self.gateway_flag = gateway_flag
        self.step_number = 0
        self.parser = argparse.ArgumentParser(prog="splitlog", add_help=False)
        commands = self.parser.add_subparsers(dest="command", required=True)
        common = argparse.ArgumentParser(add_help=False)
        for module in (users, groups, expenses, settlements, balances):
            module.add_parsers(commands, common)

    def say(self, text: str) -> None:
        print(text, file=self.context.out, flush=True)

    def step(self, explanation: str, argv: list[str]) -> Message:
        """Print the explanation and the command, then run the command."""
        self.step_number += 1
        command = shlex.join(["splitlog", *argv, *self.gateway_flag])
        self.say(f"\n{self.step_number}. {explanation}\n$ {command}")
        args = self.parser.parse_args(argv)
        return getattr(args, HANDLER)(self.context, args)


def _suffix() -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(6))


def run_expenses_demo(context: Context, args: argparse.Namespace) -> Message:
    gateway_flag = ["--gateway", args.gateway_address] if args.gateway_address else []
    tour = _Tour(context, gateway_flag)
    suffix = _suffix()
    ids = {person: f"{person}-{suffix}" for person in _PEOPLE}
    group = f"trip-{suffix}"
    alice, bob, carol, dave = (ids[person] for person in _PEOPLE)

    tour.say(
        f"A tour of splitlog's expenses against {context.address}. Every id ends "
        f"in -{suffix}, so nothing here touches other data."
    )
    for person, user in ids.items():
        tour.step(
            f"Create the user {person}; the email must be unique.",
            ["users", "create", "--id", user, "--name", person.title(),
             "--email", f"{user}@example.com", "--currency", "EUR"],
        )  # fmt: skip
    tour.step(
        "Create a group; its creator becomes the first member.",
        ["groups", "create", "--id", group, "--name", "Lisbon trip",
         "--creator", alice, "--currency", "EUR"],
    )  # fmt: skip
    for user in (bob, carol, dave):
        tour.step(
            "Add a member; only members can pay or take part in expenses.",
            ["groups", "add-member", group, user],
        )
    _add_expenses(tour, group, alice, bob, carol, dave)
    tour.step("List the expenses, newest first.", ["expenses", "list", group])
    tour.step(
        "Each member's net amount: paid minus owed. They add up to exactly zero.",
        ["balances", "group", group],
    )
    tour.step(
        "Who owes whom, pair by pair, before any simplification.",
        ["balances", "pairwise", group],
    )
    plan = tour.step(
        "The settle-up plan: the fewest transfers that bring everyone to zero.",
        ["balances", "plan", group],
    )
    if plan.transfers:
        transfer = plan.transfers[0]
        tour.step(
            "Record the first transfer of the plan as paid.",
            ["settlements", "add", group, "--from", short(transfer.payer),
             "--to", short(transfer.payee),
             "--amount", amount(transfer.amount, with_code=False),
             "--currency", transfer.amount.currency_code,
             "--note", "settle-up from the demo"],
        )  # fmt: skip
        tour.step(
            "The plan again: the paid transfer is gone, the others stay the same.",
            ["balances", "plan", group],
        )
    tour.step(
        "Which expenses and settlements make up alice's net amount.",
        ["balances", "explain", group, alice, "--currency", "EUR"],
    )
    report = tour.step(
        "The group report: spending by category, by member and by month.",
        ["balances", "report", group, "--currency", "EUR"],
    )
    tour.say(
        f"\nDone. Explore further with `splitlog balances user {alice}` or "
        f"`splitlog expenses get NAME`, and add --format json to any command."
    )
    return report


def _add_expenses(
    tour: _Tour, group: str, alice: str, bob: str, carol: str, dave: str
) -> None:
    tour.step(
        "An equal split of 100.00 among three: the leftover cent goes to one "
        "participant by a fixed tie-break, so the shares add up to 100.00.",
        ["expenses", "add", group, "--description", "Dinner at the harbour",
         "--amount", "100.00", "--currency", "EUR", "--paid-by", alice,
         "--split", "equal", "--participant", alice, "--participant", bob,
         "--participant", carol, "--category", "dining-out"],
    )  # fmt: skip
    tour.step(
        "An exact split: each participant owes a fixed amount, and the amounts "
        "must add up to the total.",
        ["expenses", "add", group, "--description", "Groceries",
         "--amount", "45.50", "--currency", "EUR", "--paid-by", carol,
         "--split", "exact", "--participant", f"{alice}=20.00",
         "--participant", f"{carol}=15.50", "--participant", f"{dave}=10.00",
         "--category", "groceries"],
    )  # fmt: skip
    tour.step(
        "A percent split: alice 40 %, bob 30 %, and carol and dave, who have "
        "no percentage, share the remaining 30 % equally.",
        ["expenses", "add", group, "--description", "Hotel",
         "--amount", "600.00", "--currency", "EUR", "--paid-by", bob,
         "--split", "percent", "--participant", f"{alice}=40",
         "--participant", f"{bob}=30", "--participant", carol,
         "--participant", dave, "--category", "travel"],
    )  # fmt: skip
    tour.step(
        "A shares split: weights 2:1:1:3, so dave owes three times bob's part.",
        ["expenses", "add", group, "--description", "Car rental",
         "--amount", "280.00", "--currency", "EUR", "--paid-by", dave,
         "--split", "shares", "--participant", f"{alice}=2",
         "--participant", f"{bob}=1", "--participant", f"{carol}=1",
         "--participant", f"{dave}=3", "--category", "transportation"],
    )  # fmt: skip
    tour.step(
        "A mixed split with two payers: alice owes 20.00, bob 25 %, and carol "
        "and dave divide the rest by shares. Bob paid 50.00 and alice the rest.",
        ["expenses", "add", group, "--description", "Museum tickets",
         "--amount", "80.00", "--currency", "EUR",
         "--paid-by", f"{bob}=50.00", "--paid-by", alice,
         "--split", "mixed", "--participant", f"{alice}=amount:20.00",
         "--participant", f"{bob}=percent:25",
         "--participant", f"{carol}=shares:1",
         "--participant", f"{dave}=shares:1", "--category", "entertainment"],
    )  # fmt: skip
