"""`splitlog demo expenses`: a guided tour of the money side of a running splitlog.

Each step prints a one-line explanation and the equivalent `splitlog`
command, then runs that same command line through the same parser and
handler (see `demo_tour`). The tour signs up its own four users, so it needs
no credential and works with authentication on or off. Each later step runs
as a user who may make it: the group's creator creates the group and adds
the members, and the first payer of each expense records it. Ids and emails
end in a random suffix, so the tour can run again against the same data.
"""

from __future__ import annotations

import argparse
import time

import grpc
from google.protobuf.message import Message

from splitlog.balances.v1 import balances_service_pb2 as balances_pb2
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import balances, expenses, groups, settlements
from splitlog_cli.client.command import Context, add_action, add_actions
from splitlog_cli.client.connection import ServerError
from splitlog_cli.client.demo_tour import Actor, Tour, random_suffix, run_tour
from splitlog_cli.client.render import amount, short

_PEOPLE = ("alice", "bob", "carol", "dave")
# How long the tour waits for balance_service to count a write, and how long
# it sleeps between two reads of the balance meanwhile.
BALANCE_WAIT_SECONDS = 5.0
_BALANCE_POLL_SECONDS = 0.005


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(commands, "demo", "guided tours against a running splitlog")
    add_action(
        actions,
        "expenses",
        common,
        run_expenses_demo,
        "sign up users, create a group, add one expense of each split type, "
        "then show balances, the settle-up plan, a settlement and the report",
    )


def run_expenses_demo(context: Context, args: argparse.Namespace) -> Message:
    return run_tour(context, args, (groups, expenses, settlements, balances), _run)


def _run(tour: Tour) -> Message:
    suffix = random_suffix()
    ids = {person: f"{person}-{suffix}" for person in _PEOPLE}
    group = f"trip-{suffix}"
    alice, bob, carol, dave = (ids[person] for person in _PEOPLE)

    tour.say(
        f"A tour of splitlog's expenses against {tour.context.address}. Every "
        f"id ends in -{suffix}, so nothing here touches other data. The tour "
        "signs up four users with random passwords that it does not show, and "
        "runs each later step as the user named after the command."
    )
    actors: dict[str, Actor] = {}
    for person, user in ids.items():
        actors[user] = tour.sign_up(
            f"Sign up {person}, whose default currency is EUR; the email "
            "must be unique.",
            users_pb2.User(
                email=f"{user}@example.com",
                display_name=person.title(),
                currency_code="EUR",
            ),
            user,
        )
    tour.step(
        "Create a group; its creator becomes the first member, and without "
        "--currency the group uses the creator's currency.",
        ["groups", "create", "--id", group, "--name", "Lisbon trip",
         "--creator", alice],
        actors[alice],
    )  # fmt: skip
    for user in (bob, carol, dave):
        tour.step(
            "Add a member; only members can pay or take part in expenses, and "
            "any member may add one.",
            ["groups", "add-member", group, user],
            actors[alice],
        )
    last_expense = _add_expenses(tour, group, actors, alice, bob, carol, dave)
    tour.step(
        "List the expenses, newest first. Every member may read the group.",
        ["expenses", "list", group],
        actors[bob],
    )
    tour.say(
        "\nBalances count an expense a moment after it is written, so the tour "
        "waits until they count the last one."
    )
    wait_for_balance(actors[alice].context, group, last_expense)
    tour.step(
        "Each member's net amount: paid minus owed. They add up to exactly zero.",
        ["balances", "group", group],
        actors[alice],
    )
    tour.step(
        "Who owes whom, pair by pair, after cancelling circular debts (a owes "
        "b, b owes c, c owes a). The plan below can need fewer transfers.",
        ["balances", "pairwise", group],
        actors[alice],
    )
    plan = tour.step(
        "The settle-up plan: the fewest transfers that bring everyone to zero.",
        ["balances", "plan", group],
        actors[alice],
    )
    if plan.transfers:
        transfer = plan.transfers[0]
        payer = short(transfer.payer)
        settlement = tour.step(
            "Record the first transfer of the plan as paid; the payer records it.",
            ["settlements", "add", group, "--from", short(transfer.payer),
             "--to", short(transfer.payee),
             "--amount", amount(transfer.amount, with_code=False),
             "--currency", transfer.amount.currency_code,
             "--note", "settle-up from the demo"],
            actors[payer],
        )  # fmt: skip
        wait_for_balance(actors[alice].context, group, settlement)
        tour.step(
            "The plan again: the paid transfer is gone, the others stay the same.",
            ["balances", "plan", group],
            actors[alice],
        )
    tour.step(
        "Which expenses and settlements make up alice's net amount.",
        ["balances", "explain", group, alice, "--currency", "EUR"],
        actors[alice],
    )
    report = tour.step(
        "The group report: spending by category, by member and by month.",
        ["balances", "report", group, "--currency", "EUR"],
        actors[alice],
    )
    tour.say(
        "\nDone. Only the group's members may read it while authentication is "
        "on, and the tour did not keep their passwords. To go on, sign up "
        "yourself with `splitlog auth signup` and create a group of your own. "
        "Add --format json to any command for proto3 JSON."
    )
    return report


def wait_for_balance(
    context: Context,
    group: str,
    write: Message,
    timeout: float = BALANCE_WAIT_SECONDS,
) -> None:
    """Poll the group's balance until it counts `write`, an expense or settlement.

    The balance counts the write once its update_time is at or after the
    write's update_time. That test is exact only while no other client writes
    to the group, as for the tour's own group. Raises ServerError with
    DEADLINE_EXCEEDED when the balance still lags after `timeout` seconds.
    """
    request = balances_pb2.GetGroupBalanceRequest(name=f"groups/{group}/balance")
    written = write.update_time.ToNanoseconds()
    deadline = time.monotonic() + timeout
    while True:
        balance = context.call("balances.GetGroupBalance", request).balance
        if balance.update_time.ToNanoseconds() >= written:
            return
        if time.monotonic() >= deadline:
            counted = (
                balance.update_time.ToJsonString()
                if balance.HasField("update_time")
                else "unset"
            )
            raise ServerError(
                f"timed out after {timeout:g} s waiting for {request.name} to "
                f"count {write.name}, because the balance's update_time "
                f"({counted}) is still before the write's update_time "
                f"({write.update_time.ToJsonString()}). Check that "
                "balance_service is running and receives expense_service's "
                "ledger, then run the demo again",
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        time.sleep(_BALANCE_POLL_SECONDS)


def _add_expenses(
    tour: Tour,
    group: str,
    actors: dict[str, Actor],
    alice: str,
    bob: str,
    carol: str,
    dave: str,
) -> Message:
    """Add one expense of each split type, each recorded by its first payer.

    Returns the last expense.
    """
    tour.step(
        "An equal split of 100.00 among three: the leftover cent goes to one "
        "participant by a fixed tie-break, so the shares add up to 100.00.",
        ["expenses", "add", group, "--description", "Dinner at the harbour",
         "--amount", "100.00", "--currency", "EUR", "--paid-by", alice,
         "--split", "equal", "--participant", alice, "--participant", bob,
         "--participant", carol, "--category", "dining-out"],
        actors[alice],
    )  # fmt: skip
    tour.step(
        "An exact split: each participant owes a fixed amount, and the amounts "
        "must add up to the total.",
        ["expenses", "add", group, "--description", "Groceries",
         "--amount", "45.50", "--currency", "EUR", "--paid-by", carol,
         "--split", "exact", "--participant", f"{alice}=20.00",
         "--participant", f"{carol}=15.50", "--participant", f"{dave}=10.00",
         "--category", "groceries"],
        actors[carol],
    )  # fmt: skip
    tour.step(
        "A percent split: alice 40 %, bob 30 %, and carol and dave, who have "
        "no percentage, share the remaining 30 % equally.",
        ["expenses", "add", group, "--description", "Hotel",
         "--amount", "600.00", "--currency", "EUR", "--paid-by", bob,
         "--split", "percent", "--participant", f"{alice}=40",
         "--participant", f"{bob}=30", "--participant", carol,
         "--participant", dave, "--category", "travel"],
        actors[bob],
    )  # fmt: skip
    tour.step(
        "A shares split: weights 2:1:1:3, so dave owes three times bob's part.",
        ["expenses", "add", group, "--description", "Car rental",
         "--amount", "280.00", "--currency", "EUR", "--paid-by", dave,
         "--split", "shares", "--participant", f"{alice}=2",
         "--participant", f"{bob}=1", "--participant", f"{carol}=1",
         "--participant", f"{dave}=3", "--category", "transportation"],
        actors[dave],
    )  # fmt: skip
    return tour.step(
        "A mixed split with two payers: alice owes 20.00, bob 25 %, and carol "
        "and dave divide the rest by shares. Bob paid 50.00 and alice the rest.",
        ["expenses", "add", group, "--description", "Museum tickets",
         "--amount", "80.00", "--currency", "EUR",
         "--paid-by", f"{bob}=50.00", "--paid-by", alice,
         "--split", "mixed", "--participant", f"{alice}=amount:20.00",
         "--participant", f"{bob}=percent:25",
         "--participant", f"{carol}=shares:1",
         "--participant", f"{dave}=shares:1", "--category", "entertainment"],
        actors[bob],
    )  # fmt: skip
