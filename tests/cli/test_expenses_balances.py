"""`splitlog expenses`, `settlements`, `balances` and `demo` against `splitlog up`.

The users and groups are created over gRPC to keep the module fast; every
command under test runs as a subprocess. `splitlog up` runs without
authentication, except for the demo's test and the tests of who records a
write, which run with it on.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import time
from decimal import Decimal

import grpc
import pytest
from google.protobuf import json_format
from google.type import money_pb2

from splitlog.auth.v1 import auth_service_pb2 as auth_pb2
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.balances.v1 import balances_service_pb2 as balances_pb2
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb2
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.client import balances as balances_cli
from splitlog_cli.client import expenses as expenses_cli
from splitlog_cli.client.command import Context
from splitlog_cli.client.connection import ServerError
from splitlog_cli.client.credentials import Session, SessionStore, config_dir
from splitlog_cli.client.demo import BALANCE_WAIT_SECONDS, wait_for_balance
from tests.cli.conftest import run_splitlog

PEOPLE = ("ann", "ben", "cat", "dan")


@pytest.fixture(scope="module")
def channel(splitlog_up):
    with grpc.insecure_channel(splitlog_up.grpc_address) as opened:
        yield opened


@pytest.fixture(scope="module")
def cli(splitlog_up, channel):
    """Run a client command; skip the module while expenses are unimplemented."""
    stub = expenses_grpc.ExpensesServiceStub(channel)
    try:
        stub.CreateExpense(expenses_pb2.CreateExpenseRequest(), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip("expense_service answers CreateExpense with UNIMPLEMENTED")

    def run(*args: str):
        return run_splitlog(*args, gateway=splitlog_up.grpc_address)

    return run


@pytest.fixture
def group(channel):
    """Return a new EUR group of four members, as {"group": id, "ann": id, ...}."""
    stub = users_grpc.UsersServiceStub(channel)
    suffix = secrets.token_hex(3)
    ids = {person: f"{person}-{suffix}" for person in PEOPLE}
    for user_id in ids.values():
        stub.CreateUser(
            users_pb2.CreateUserRequest(
                user=users_pb2.User(
                    email=f"{user_id}@example.com",
                    display_name=user_id,
                    currency_code="EUR",
                ),
                user_id=user_id,
            ),
            timeout=10,
        )
    ids["group"] = f"grp-{suffix}"
    stub.CreateGroup(
        users_pb2.CreateGroupRequest(
            group=users_pb2.Group(
                display_name="Test group", creator=f"users/{ids['ann']}"
            ),
            group_id=ids["group"],
        ),
        timeout=10,
    )
    for person in PEOPLE[1:]:
        stub.AddGroupMember(
            users_pb2.AddGroupMemberRequest(
                parent=f"groups/{ids['group']}", user=f"users/{ids[person]}"
            ),
            timeout=10,
        )
    return ids


def add_expense(cli, ids, amount, *extra: str) -> dict:
    """Create an expense paid by ann through the CLI and return its JSON."""
    result = cli(
        "expenses", "add", ids["group"], "--description", "Test",
        "--amount", amount, "--paid-by", ids["ann"], "--format", "json", *extra,
    )  # fmt: skip
    assert result.status == 0, result.stderr
    return json.loads(result.stdout)


def owed(expense: dict) -> dict[str, Decimal]:
    """Return participant id -> owed amount of an expense's JSON."""
    return {
        item["user"].removeprefix("users/"): money(item["amount"])
        for item in expense["owedAmounts"]
    }


def money(value: dict) -> Decimal:
    units = Decimal(value.get("units", "0"))
    return units + Decimal(value.get("nanos", 0)).scaleb(-9)


def error_label(stderr: str) -> str:
    """Return the `(CODE, REASON)` part of a one-line error."""
    match = re.search(r"\(([A-Z_]+(?:, [A-Z_]+)?)\)", stderr)
    assert match, stderr
    return match[1]


def test_equal_split_leftover_cent(cli, group):
    expense = add_expense(
        cli, group, "1.00", "--currency", "EUR",
        "--participant", group["ann"], "--participant", group["ben"],
        "--participant", group["cat"],
    )  # fmt: skip
    shares = owed(expense)

    assert sorted(shares.values()) == [
        Decimal("0.33"),
        Decimal("0.33"),
        Decimal("0.34"),
    ]
    assert sum(shares.values()) == Decimal("1.00")


def test_lower_case_currency_is_read_as_its_code(cli, group):
    expense = add_expense(cli, group, "12", "--currency", "jpy")

    assert expense["total"]["currencyCode"] == "JPY"
    assert sum(owed(expense).values()) == Decimal("12")


def test_equal_split_defaults_to_members(cli, group):
    expense = add_expense(cli, group, "0.01")

    assert expense["total"]["currencyCode"] == "EUR"
    assert set(owed(expense)) == {group[person] for person in PEOPLE}
    assert sorted(owed(expense).values())[-1] == Decimal("0.01")


def test_split_types_table(cli, group):
    result = cli(
        "expenses", "add", group["group"], "--description", "Hotel",
        "--amount", "600.00", "--currency", "EUR", "--paid-by", group["ben"],
        "--split", "percent", "--participant", f"{group['ann']}=40",
        "--participant", f"{group['ben']}=30", "--participant", group["cat"],
        "--participant", group["dan"], "--category", "travel",
        "--date", "2024-05-31", "--notes", "two nights",
    )  # fmt: skip
    lines = result.stdout.splitlines()

    assert result.status == 0, result.stderr
    assert "date:        2024-05-31" in lines
    assert "category:    travel" in lines
    assert "total:       600.00 EUR" in lines
    assert "split:       percentage" in lines
    assert "notes:       two nights" in lines
    assert lines[-4].split() == [group["ann"], "40.00", "%", "240.00", "EUR"]
    assert lines[-2].split() == [group["cat"], "90.00", "EUR"]


@pytest.mark.parametrize(
    ("split", "values", "expected"),
    [
        ("exact", ["20.00", "15.50", "10.00"], ["20.00", "15.50", "10.00"]),
        ("shares", ["2", "1", None], ["22.75", "11.38", "11.37"]),
        (
            "mixed",
            ["amount:5.50", "percent:50", "shares:1"],
            ["5.50", "22.75", "17.25"],
        ),
    ],
)
def test_split_types_owed(cli, group, split, values, expected):
    people = [group["ann"], group["ben"], group["cat"]]
    participants = []
    for user, value in zip(people, values, strict=True):
        participants += ["--participant", user if value is None else f"{user}={value}"]

    expense = add_expense(
        cli, group, "45.50", "--currency", "EUR", "--split", split, *participants
    )
    shares = owed(expense)

    assert sum(shares.values()) == Decimal("45.50")
    if split == "shares":
        assert shares[people[0]] == Decimal("22.75")
        assert sorted(shares[user] for user in people[1:]) == [
            Decimal("11.37"),
            Decimal("11.38"),
        ]
    else:
        assert [shares[user] for user in people] == [Decimal(v) for v in expected]


def test_exact_split_over_by_a_cent(cli, group):
    result = cli(
        "expenses", "add", group["group"], "--description", "Tickets",
        "--amount", "95.00", "--currency", "EUR", "--paid-by", group["ann"],
        "--split", "exact", "--participant", f"{group['ann']}=31.67",
        "--participant", f"{group['ben']}=31.67",
        "--participant", f"{group['cat']}=31.67",
    )  # fmt: skip

    assert result.status == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "0.01 EUR over" in result.stderr
    assert error_label(result.stderr) == "INVALID_ARGUMENT, SPLIT_DOES_NOT_ADD_UP"


def test_percent_split_missing(cli, group):
    result = cli(
        "expenses", "add", group["group"], "--description", "Rent",
        "--amount", "100.00", "--currency", "EUR", "--paid-by", group["ann"],
        "--split", "percent", "--participant", f"{group['ann']}=60",
        "--participant", f"{group['ben']}=30",
    )  # fmt: skip

    assert result.status == 1
    assert "10 % is missing" in result.stderr
    assert error_label(result.stderr) == "INVALID_ARGUMENT, SPLIT_DOES_NOT_ADD_UP"


def test_zero_total_rejected(cli, group):
    result = cli(
        "expenses", "add", group["group"], "--description", "Nothing",
        "--amount", "0.00", "--currency", "EUR", "--paid-by", group["ann"],
    )  # fmt: skip

    assert result.status == 1
    assert error_label(result.stderr) == "INVALID_ARGUMENT, INVALID_TOTAL"


def test_non_member_participant(cli, group):
    result = cli(
        "expenses", "add", group["group"], "--description", "Taxi",
        "--amount", "10.00", "--currency", "EUR", "--paid-by", group["ann"],
        "--participant", "stranger-1",
    )  # fmt: skip

    assert result.status == 1
    assert "users/stranger-1" in result.stderr
    assert error_label(result.stderr) == "FAILED_PRECONDITION, NOT_A_GROUP_MEMBER"
    # The precondition details repeat what the message says.
    assert result.stderr.count("is not a member") == 1, result.stderr
    assert result.stderr.count("users/stranger-1") == 1, result.stderr


def test_many_non_members_each_named(cli, group):
    strangers = [f"stranger-many-{index}" for index in range(7)]
    options = [word for user in strangers for word in ("--participant", user)]

    result = cli(
        "expenses", "add", group["group"], "--description", "Taxi",
        "--amount", "10.00", "--currency", "EUR", "--paid-by", group["ann"],
        *options,
    )  # fmt: skip

    # The message names five users and counts the others, which the
    # precondition details name.
    assert result.status == 1
    assert "and 2 more are not members" in result.stderr
    for user in strangers:
        assert result.stderr.count(f"'users/{user}'") == 1, result.stderr


def test_negative_amount_over_limit_names_fields(cli, group):
    result = cli(
        "expenses", "add", group["group"], "--description", "Refund",
        "--amount=-99999999999999", "--currency", "EUR", "--paid-by", group["ann"],
    )  # fmt: skip

    assert result.status == 1
    assert error_label(result.stderr) == "INVALID_ARGUMENT, AMOUNT_OUT_OF_RANGE"
    assert "below the minimum of -10000000000000.00" in result.stderr
    assert "larger than" not in result.stderr
    # The message counts the second field, so the details name it.
    assert "(and 1 more invalid field)" in result.stderr
    assert "expense.payers[0].amount: amount -99999999999999.00" in result.stderr


def test_expenses_list_filters(cli, group):
    food = add_expense(
        cli, group, "30.00", "--currency", "EUR", "--category", "groceries",
        "--date", "2024-01-10", "--participant", group["ben"],
    )  # fmt: skip
    fun = add_expense(
        cli, group, "12.00", "--currency", "EUR", "--category", "entertainment",
        "--date", "2024-03-01", "--participant", group["cat"],
    )  # fmt: skip

    def names(*filters: str) -> list[str]:
        result = cli("expenses", "list", group["group"], "--format", "json", *filters)
        assert result.status == 0, result.stderr
        return [item["name"] for item in json.loads(result.stdout)["expenses"]]

    table = cli("expenses", "list", group["group"])

    assert names() == [fun["name"], food["name"]]
    assert names("--category", "groceries") == [food["name"]]
    assert names("--participant", group["cat"]) == [fun["name"]]
    assert names("--from", "2024-02-01") == [fun["name"]]
    assert names("--to", "2024-02-01") == [food["name"]]
    assert table.stdout.splitlines()[0].split() == [
        "NAME", "DATE", "DESCRIPTION", "CATEGORY", "TOTAL", "PAID", "BY",
    ]  # fmt: skip
    assert table.stdout.splitlines()[1].split() == [
        fun["name"], "2024-03-01", "Test", "entertainment", "12.00", "EUR",
        group["ann"], "12.00",
    ]  # fmt: skip


def test_expense_get_delete_restore(cli, group):
    name = add_expense(cli, group, "9.99", "--currency", "EUR")["name"]

    shown = cli("expenses", "get", name, "--format", "json")
    deleted = cli("expenses", "delete", name)
    listed = cli("expenses", "list", group["group"], "--format", "json")
    with_deleted = cli("expenses", "list", group["group"], "--deleted")
    restored = cli("expenses", "restore", name)
    restored_again = cli("expenses", "restore", name)

    assert json.loads(shown.stdout)["name"] == name
    assert deleted.stdout.strip() == f"deleted {name}"
    assert json.loads(listed.stdout)["expenses"] == []
    assert "Test (deleted)" in with_deleted.stdout
    assert restored.stdout.strip() == f"restored {name}"
    assert restored_again.status == 1
    assert error_label(restored_again.stderr).startswith("ALREADY_EXISTS, ")


def test_delete_restore_record_by(cli, group):
    name = add_expense(cli, group, "9.99", "--currency", "EUR")["name"]
    ben, cat = f"users/{group['ben']}", f"users/{group['cat']}"

    deleted = cli("expenses", "delete", name, "--by", ben, "--format", "json")
    restored = cli("expenses", "restore", name, "--by", cat, "--format", "json")

    assert deleted.status == 0, deleted.stderr
    assert json.loads(deleted.stdout)["lastModifier"] == ben
    assert "deleteTime" in json.loads(deleted.stdout)
    assert restored.status == 0, restored.stderr
    assert json.loads(restored.stdout)["lastModifier"] == cat


def test_delete_without_credential_keeps_modifier(cli, group):
    # Without --by and without a credential, the CLI names no modifier, so
    # the server keeps the stored one. The first payer may have left.
    added = add_expense(
        cli, group, "8.00", "--currency", "EUR", "--by", group["ben"]
    )  # fmt: skip

    deleted = cli("expenses", "delete", added["name"], "--format", "json")
    restored = cli("expenses", "restore", added["name"], "--format", "json")

    assert added["lastModifier"] == f"users/{group['ben']}"
    assert deleted.status == 0, deleted.stderr
    assert json.loads(deleted.stdout)["lastModifier"] == f"users/{group['ben']}"
    assert restored.status == 0, restored.stderr
    assert json.loads(restored.stdout)["lastModifier"] == f"users/{group['ben']}"


def test_delete_by_non_member_names_option(cli, group):
    name = add_expense(cli, group, "5.00", "--currency", "EUR")["name"]

    result = cli("expenses", "delete", name, "--by", "users/nobody-here")

    assert result.status == 1
    assert error_label(result.stderr) == "FAILED_PRECONDITION, NOT_A_GROUP_MEMBER"
    assert "'users/nobody-here' (last_modifier) is not a member" in result.stderr
    assert "Name a member with --by USER" in result.stderr


def test_update_deleted_expense_states_once(cli, group):
    name = add_expense(cli, group, "4.00", "--currency", "EUR")["name"]
    assert cli("expenses", "delete", name).status == 0

    result = cli("expenses", "update", name, "--amount", "5.00")

    assert result.status == 1
    assert error_label(result.stderr) == "FAILED_PRECONDITION, EXPENSE_DELETED"
    assert result.stderr.count("cannot be updated") == 1, result.stderr
    assert result.stderr.count(name) == 1, result.stderr


def test_update_description_only(cli, group):
    before = add_expense(cli, group, "100.00", "--category", "groceries")

    result = cli(
        "expenses", "update", before["name"], "--description", "Market",
        "--format", "json",
    )  # fmt: skip

    assert result.status == 0, result.stderr
    after = json.loads(result.stdout)
    assert after["description"] == "Market"
    assert after["total"] == before["total"]
    assert after["payers"] == before["payers"]
    assert after["split"] == before["split"]
    assert after["category"] == "CATEGORY_GROCERIES"
    assert owed(after) == owed(before)
    assert after["etag"] != before["etag"]
    assert after["lastModifier"] == f"users/{group['ann']}"


def test_update_amount_equal_split(cli, group):
    name = add_expense(cli, group, "100.00")["name"]

    result = cli("expenses", "update", name, "--amount", "90.00", "--format", "json")

    assert result.status == 0, result.stderr
    after = json.loads(result.stdout)
    assert money(after["total"]) == Decimal("90.00")
    assert [payer["user"] for payer in after["payers"]] == [f"users/{group['ann']}"]
    assert money(after["payers"][0]["amount"]) == Decimal("90.00")
    assert owed(after) == {group[person]: Decimal("22.50") for person in PEOPLE}


def test_update_split_and_payers(cli, group):
    name = add_expense(cli, group, "60.00")["name"]

    result = cli(
        "expenses", "update", name, "--paid-by", group["ben"], "--split", "shares",
        "--participant", f"{group['ann']}=2", "--participant", group["cat"],
        "--format", "json",
    )  # fmt: skip

    assert result.status == 0, result.stderr
    after = json.loads(result.stdout)
    assert [payer["user"] for payer in after["payers"]] == [f"users/{group['ben']}"]
    assert owed(after) == {group["ann"]: Decimal("40.00"), group["cat"]: Decimal(20)}
    assert after["lastModifier"] == f"users/{group['ben']}"


def test_update_stale_etag_rejected(cli, group):
    first = add_expense(cli, group, "10.00")
    changed = cli("expenses", "update", first["name"], "--notes", "changed")

    stale = cli(
        "expenses", "update", first["name"], "--description", "Late",
        "--etag", first["etag"],
    )  # fmt: skip
    current = cli("expenses", "get", first["name"], "--format", "json")

    assert changed.status == 0, changed.stderr
    assert stale.status == 1
    assert error_label(stale.stderr) == "ABORTED, ETAG_MISMATCH"
    assert f"expense.etag {first['etag']} does not match" in stale.stderr
    assert "it is stale, because the expense has changed" in stale.stderr
    assert json.loads(current.stdout)["description"] == "Test"


def test_update_without_changes_exits_2(cli, group):
    name = add_expense(cli, group, "10.00")["name"]

    result = cli("expenses", "update", name)

    assert result.status == 2
    assert "nothing to change" in result.stderr


def test_update_amount_of_two_payers_needs_paid_by(cli, group):
    ann, ben = group["ann"], group["ben"]
    name = add_expense(cli, group, "10.00", "--paid-by", f"{ben}=4.00")["name"]

    result = cli("expenses", "update", name, "--amount", "12.00")
    text = " ".join(result.stderr.split())
    suggested = re.search(r"pass (--paid-by .*) \(the payer", text)
    # The suggested options keep ann's 60 % and ben's 40 % of the total.
    rerun = cli(
        "expenses", "update", name, "--amount", "12.00", *suggested[1].split(),
        "--format", "json",
    )  # fmt: skip
    payers = {
        payer["user"]: money(payer["amount"])
        for payer in json.loads(rerun.stdout)["payers"]
    }

    assert result.status == 2
    assert "--amount" in result.stderr
    assert "needs --paid-by for each" in result.stderr
    assert f"users/{ann} 6.00 EUR, users/{ben} 4.00 EUR" in text
    assert suggested[1] == f"--paid-by {ann}=7.20 --paid-by {ben}"
    assert "alice" not in text
    assert rerun.status == 0, rerun.stderr
    assert payers == {f"users/{ann}": Decimal("7.20"), f"users/{ben}": Decimal("4.80")}


def test_payer_hint_zero_share_placeholder():
    def eur(text: str) -> money_pb2.Money:
        units, cents = text.split(".")
        return money_pb2.Money(
            currency_code="EUR", units=int(units), nanos=int(cents) * 10_000_000
        )

    expense = expenses_pb2.Expense(
        name="groups/g/expenses/e",
        total=eur("100.00"),
        payers=[
            expenses_pb2.Payer(user="users/ann", amount=eur("0.01")),
            expenses_pb2.Payer(user="users/ben", amount=eur("99.99")),
        ],
    )

    # ann's share of a 1.00 total is 0.0001 EUR, less than a cent.
    options = expenses_cli._scaled_payer_options(expense, 100, "EUR")

    assert options == "--paid-by ann=AMOUNT --paid-by ben"


@pytest.mark.parametrize(
    ("amount", "paid", "verb"),
    [
        ("10.00", "12.00", "exceed"),
        ("10.00", "10.00", "equal"),
        ("-10.00", "-12.00", "exceed"),
    ],
)
def test_payer_amounts_leave_no_rest(cli, group, amount, paid, verb):
    ann, ben = group["ann"], group["ben"]

    result = cli(
        "expenses", "add", group["group"], "--description", "Too much",
        "--amount", amount, "--currency", "EUR",
        "--paid-by", f"{ann}={paid}", "--paid-by", f"users/{ben}",
    )  # fmt: skip
    listed = cli("expenses", "list", group["group"], "--format", "json")

    assert result.status == 2, result.stderr
    assert (
        f"the payers' amounts {paid} EUR {verb} the total {amount} EUR" in result.stderr
    )
    assert f"nothing is left for users/{ben}" in result.stderr
    assert "INVALID_PAYER_AMOUNT" not in result.stderr
    assert json.loads(listed.stdout).get("expenses", []) == []


def test_update_payer_amounts_leave_no_rest(cli, group):
    name = add_expense(cli, group, "10.00")["name"]

    result = cli(
        "expenses", "update", name, "--amount", "5.00",
        "--paid-by", f"{group['ann']}=6.00", "--paid-by", group["ben"],
    )  # fmt: skip

    assert result.status == 2, result.stderr
    assert "the payers' amounts 6.00 EUR exceed the total 5.00 EUR" in result.stderr


def test_expense_get_missing(cli, group):
    result = cli("expenses", "get", f"groups/{group['group']}/expenses/nope-1")

    assert result.status == 1
    assert error_label(result.stderr) == "NOT_FOUND, EXPENSE_NOT_FOUND"


def test_categories(cli):
    result = cli("expenses", "categories")
    rows = [line.split("  ")[0] for line in result.stdout.splitlines()]

    assert result.status == 0, result.stderr
    assert rows[:2] == ["CATEGORY", "general"]
    assert "dining-out" in rows
    assert "Food and drink" in result.stdout


def test_balances_settle_up(cli, group):
    ann, ben, cat, dan = (group[person] for person in PEOPLE)
    add_expense(
        cli, group, "90.00", "--currency", "EUR", "--date", "2024-04-02",
        "--category", "dining-out",
        "--participant", ann, "--participant", ben, "--participant", cat,
    )  # fmt: skip

    balance = json.loads(
        cli("balances", "group", group["group"], "--format", "json").stdout
    )
    nets = {
        entry["user"].removeprefix("users/"): money(entry["netAmount"])
        for entry in balance["currencyBalances"][0]["memberBalances"]
    }
    plan = cli("balances", "plan", group["group"])
    settled = cli(
        "settlements", "add", group["group"], "--from", ben, "--to", ann,
        "--amount", "30.00", "--currency", "EUR", "--date", "2024-04-03",
        "--note", "cash", "--format", "json",
    )  # fmt: skip
    plan_after = cli("balances", "plan", group["group"], "--currency", "EUR")
    pairwise = cli("balances", "pairwise", group["group"])
    explained = cli("balances", "explain", group["group"], ann)
    report = cli("balances", "report", group["group"], "--currency", "EUR")
    user = cli("balances", "user", cat)

    assert nets == {
        ann: Decimal("60"), ben: Decimal("-30"), cat: Decimal("-30"), dan: 0
    }  # fmt: skip
    assert sum(nets.values()) == 0
    assert sorted(plan.stdout.splitlines()[1:]) == sorted(
        [f"{ben}  {ann}  30.00 EUR", f"{cat}  {ann}  30.00 EUR"]
    )
    assert settled.status == 0, settled.stderr
    assert json.loads(settled.stdout)["note"] == "cash"
    assert plan_after.stdout.splitlines()[1:] == [f"{cat}  {ann}  30.00 EUR"]
    assert pairwise.stdout.splitlines()[1:] == [f"{cat}  {ann}  30.00 EUR"]
    assert explained.stdout.splitlines()[0] == f"net amount of {ann}: 30.00 EUR"
    assert explained.stdout.splitlines()[-1].split()[-4:] == [
        "0.00", "30.00", "-30.00", "30.00",
    ]  # fmt: skip
    assert "total spent: 90.00 EUR" in report.stdout
    assert f"{ann}  90.00 EUR  30.00 EUR  60.00 EUR" in report.stdout
    assert "2024-04  90.00 EUR  1" in report.stdout
    assert user.stdout.splitlines()[1].split() == [
        f"groups/{group['group']}", "-30.00", "EUR",
    ]  # fmt: skip


def test_balances_plan_notes_heuristic(cli, channel):
    # 22 members with a non-zero balance are more than the exact search's 20.
    stub = users_grpc.UsersServiceStub(channel)
    suffix = secrets.token_hex(3)
    members = [f"big{number}-{suffix}" for number in range(22)]
    for user_id in members:
        stub.CreateUser(
            users_pb2.CreateUserRequest(
                user=users_pb2.User(
                    email=f"{user_id}@example.com",
                    display_name=user_id,
                    currency_code="EUR",
                ),
                user_id=user_id,
            ),
            timeout=10,
        )
    group_id = f"big-{suffix}"
    stub.CreateGroup(
        users_pb2.CreateGroupRequest(
            group=users_pb2.Group(
                display_name="Big group", creator=f"users/{members[0]}"
            ),
            group_id=group_id,
        ),
        timeout=10,
    )
    for user_id in members[1:]:
        stub.AddGroupMember(
            users_pb2.AddGroupMemberRequest(
                parent=f"groups/{group_id}", user=f"users/{user_id}"
            ),
            timeout=10,
        )
    added = cli(
        "expenses", "add", group_id, "--description", "Hall", "--amount", "220.00",
        "--currency", "EUR", "--paid-by", members[0],
    )  # fmt: skip

    table = cli("balances", "plan", group_id)
    as_json = json.loads(cli("balances", "plan", group_id, "--format", "json").stdout)
    text = " ".join(table.stdout.split())

    assert added.status == 0, added.stderr
    assert table.status == 0, table.stderr
    assert len(as_json["transfers"]) == 21
    assert as_json["fewestTransfers"] is False
    assert (
        "note: this plan settles every balance, but it may not use the fewest "
        "transfers: more members have a non-zero balance (22 in EUR) than the "
        "20 that the search for the fewest transfers covers"
    ) in text
    # The note comes after the table's header, 21 rows and a blank line.
    assert table.stdout.splitlines()[23].startswith("note: ")


def test_plan_note_names_search_limit():
    response = balances_pb2.ComputeSettlementPlanResponse(
        transfers=[
            balances_pb2.Transfer(
                payer="users/ann", payee="users/ben",
                amount={"currency_code": "EUR", "units": 5},
            ),
        ],
        fewest_transfers=False,
    )  # fmt: skip

    text = " ".join(balances_cli._plan_text(response).split())

    assert "may not use the fewest transfers" in text
    assert "reached its work limit or the call's deadline" in text


def test_balances_plan_help_names_heuristic(cli):
    result = cli("balances", "plan", "--help")
    text = " ".join(result.stdout.split())

    assert result.status == 0, result.stderr
    assert "the fewest possible, unless more than 20 members" in text
    assert "a note under the table says so" in text


def test_balances_user_lists_counterparties(cli, group):
    ann, ben, cat = group["ann"], group["ben"], group["cat"]
    # ann paid 60.00 for ann, ben and cat, and cat paid 9.00 for ann alone.
    add_expense(
        cli, group, "60.00", "--currency", "EUR",
        "--participant", ann, "--participant", ben, "--participant", cat,
    )  # fmt: skip
    added = cli(
        "expenses", "add", group["group"], "--description", "Coffee",
        "--amount", "9.00", "--currency", "EUR", "--paid-by", cat,
        "--split", "exact", "--participant", f"{ann}=9.00",
    )  # fmt: skip
    assert added.status == 0, added.stderr
    _wait_for_pairwise(
        cli, group["group"], [f"{ben}  {ann}  20.00 EUR", f"{cat}  {ann}  11.00 EUR"]
    )

    ann_view = cli("balances", "user", ann)
    cat_view = cli("balances", "user", cat)

    assert ann_view.status == 0, ann_view.stderr
    assert _table_after(ann_view.stdout, "COUNTERPARTY") == [
        ["COUNTERPARTY", "NET", "WHO OWES WHOM", "BY GROUP"],
        [ben, "20.00 EUR", f"{ben} owes {ann}", f"{group['group']} 20.00 EUR"],
        [cat, "11.00 EUR", f"{cat} owes {ann}", f"{group['group']} 11.00 EUR"],
    ]
    assert cat_view.status == 0, cat_view.stderr
    assert _table_after(cat_view.stdout, "COUNTERPARTY")[1:] == [
        [ann, "-11.00 EUR", f"{cat} owes {ann}", f"{group['group']} -11.00 EUR"],
    ]


def _table_after(output: str, first_header: str) -> list[list[str]]:
    """Return the cells of the table whose header line starts with `first_header`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    rows = []
    for line in lines[start:]:
        if not line:
            break
        rows.append(re.split(r"\s{2,}", line))
    return rows


def _wait_for_pairwise(cli, group_id: str, expected: list[str]) -> None:
    """Wait until the group's pairwise table lists exactly the `expected` rows."""
    deadline = time.monotonic() + 10
    while True:
        lines = cli("balances", "pairwise", group_id).stdout.splitlines()[1:]
        if lines == expected:
            return
        assert time.monotonic() < deadline, f"pairwise rows stayed {lines}"
        time.sleep(0.1)


def test_balances_pairwise_filters(cli, group):
    ann, ben, cat = group["ann"], group["ben"], group["cat"]
    add_expense(
        cli, group, "60.00", "--currency", "EUR",
        "--participant", ann, "--participant", ben, "--participant", cat,
    )  # fmt: skip
    add_expense(
        cli, group, "10.00", "--currency", "USD",
        "--participant", ann, "--participant", ben,
    )  # fmt: skip
    _wait_for_pairwise(
        cli,
        group["group"],
        [
            f"{ben}  {ann}  20.00 EUR",
            f"{cat}  {ann}  20.00 EUR",
            f"{ben}  {ann}  5.00 USD",
        ],
    )

    in_usd = cli("balances", "pairwise", group["group"], "--currency", "usd")
    with_cat = cli("balances", "pairwise", group["group"], "--user", cat)
    both = cli(
        "balances", "pairwise", group["group"], "--currency", "EUR",
        "--user", f"users/{ben}",
    )  # fmt: skip
    in_clf = cli("balances", "pairwise", group["group"], "--currency", "CLF")

    assert in_usd.status == 0, in_usd.stderr
    assert in_usd.stdout.splitlines()[1:] == [f"{ben}  {ann}  5.00 USD"]
    assert with_cat.status == 0, with_cat.stderr
    assert with_cat.stdout.splitlines()[1:] == [f"{cat}  {ann}  20.00 EUR"]
    assert both.status == 0, both.stderr
    assert both.stdout.splitlines()[1:] == [f"{ben}  {ann}  20.00 EUR"]
    assert in_clf.status == 0, in_clf.stderr
    assert in_clf.stdout.splitlines()[1:] == ["(none)"]


def test_balances_explain_shows_cancelled_circular_debts(cli, group):
    ann, ben, cat = group["ann"], group["ben"], group["cat"]
    # ann owes ben 10.00 and cat owes ann 10.00.
    for payer, debtor in ((ben, ann), (ann, cat)):
        added = cli(
            "expenses", "add", group["group"], "--description", "Tickets",
            "--amount", "10.00", "--currency", "EUR", "--paid-by", payer,
            "--split", "exact", "--participant", f"{debtor}=10.00",
        )  # fmt: skip
        assert added.status == 0, added.stderr
    deadline = time.monotonic() + 10
    while cli("balances", "plan", group["group"]).stdout.splitlines()[1:] != [
        f"{cat}  {ben}  10.00 EUR"
    ]:
        assert time.monotonic() < deadline, "the expenses did not reach the plan"
        time.sleep(0.1)
    settled = cli(
        "settlements", "add", group["group"], "--from", cat, "--to", ben,
        "--amount", "10.00", "--currency", "EUR",
    )  # fmt: skip
    assert settled.status == 0, settled.stderr

    pairwise = cli("balances", "pairwise", group["group"])
    explained = cli(
        "balances", "explain", group["group"], ann, "--with", ben,
        "--currency", "EUR",
    )  # fmt: skip

    assert pairwise.stdout.splitlines()[1:] == ["(none)"]
    assert explained.stdout.splitlines()[0] == (
        f"net amount of {ann} with {ben}: -10.00 EUR"
    )
    assert explained.stdout.splitlines()[-2:] == [
        "cancelled circular debts: 10.00 EUR",
        f"pairwise amount of {ann} with {ben}: 0.00 EUR",
    ]


def test_settlements_list_delete_restore(cli, group):
    created = cli(
        "settlements", "add", group["group"], "--from", group["ben"],
        "--to", group["ann"], "--amount", "5.00", "--currency", "EUR",
        "--format", "json",
    )  # fmt: skip
    name = json.loads(created.stdout)["name"]

    listed = cli("settlements", "list", group["group"])
    deleted = cli("settlements", "delete", name)
    hidden = cli("settlements", "list", group["group"], "--format", "json")
    restored = cli("settlements", "restore", name)
    balance = cli("balances", "group", group["group"], "--format", "json")

    assert listed.stdout.splitlines()[1].split()[0] == name
    assert listed.stdout.splitlines()[1].split()[2:5] == [
        group["ben"], group["ann"], "5.00",
    ]  # fmt: skip
    assert deleted.stdout.strip() == f"deleted {name}"
    assert json.loads(hidden.stdout)["settlements"] == []
    assert restored.stdout.strip() == f"restored {name}"
    assert json.loads(balance.stdout)["settled"] is False


def test_settlements_list_escapes_note(cli, group):
    cli(
        "settlements", "add", group["group"], "--from", group["cat"],
        "--to", group["ann"], "--amount", "1.00", "--currency", "EUR",
        "--note", "line1\nline2\tend",
    )  # fmt: skip
    rejected = cli(
        "settlements", "add", group["group"], "--from", group["cat"],
        "--to", group["ann"], "--amount", "1.00", "--currency", "EUR",
        "--note", "a\x1b[2Jb",
    )  # fmt: skip

    listed = cli("settlements", "list", group["group"])

    assert "line1\\nline2\\tend" in listed.stdout
    assert "\x1b" not in listed.stdout
    assert len(listed.stdout.splitlines()) == 2
    assert rejected.status == 1
    assert "U+001B" in rejected.stderr


def test_settlement_to_self_rejected(cli, group):
    result = cli(
        "settlements", "add", group["group"], "--from", group["ann"],
        "--to", group["ann"], "--amount", "5.00", "--currency", "EUR",
    )  # fmt: skip

    assert result.status == 1
    assert error_label(result.stderr).startswith("INVALID_ARGUMENT, ")


def test_unsettled_member_cannot_leave(cli, group):
    add_expense(cli, group, "8.00", "--currency", "EUR", "--participant", group["dan"])

    removed = cli("groups", "remove-member", group["group"], group["dan"])
    deleted = cli("groups", "delete", group["group"])

    assert removed.status == 1
    assert "owes 8.00 EUR" in removed.stderr
    assert error_label(removed.stderr) == "FAILED_PRECONDITION, UNSETTLED_BALANCE"
    assert deleted.status == 1
    assert error_label(deleted.stderr) == "FAILED_PRECONDITION, UNSETTLED_BALANCE"


def test_demo_runs_twice(cli):
    first = cli("demo", "expenses")
    second = cli("demo", "expenses")
    commands = [
        line for line in first.stdout.splitlines() if line.startswith("$ splitlog ")
    ]

    assert first.status == 0, first.stderr
    assert second.status == 0, second.stderr
    for split in ("equal", "exact", "percent", "shares", "mixed"):
        assert any(f"--split {split}" in command for command in commands), split
    for command in ("auth signup", "groups create", "groups add-member",
                    "balances group", "balances plan", "settlements add",
                    "balances report"):  # fmt: skip
        assert any(line.startswith(f"$ splitlog {command}") for line in commands)
    assert "nothing to settle" not in first.stdout
    assert "before any simplification" not in first.stdout
    assert "after cancelling circular debts" in first.stdout
    assert first.stdout.splitlines()[0] != second.stdout.splitlines()[0]
    # dave paid the car rental (280.00) and owes 240.00 of the other expenses,
    # so his net amount is 40.00 only once the balance counts every expense.
    balance_table = first.stdout.split("$ splitlog balances group", 1)[1]
    dave_row = next(
        line.split()
        for line in balance_table.splitlines()
        if re.match(r"EUR +dave-", line)
    )
    assert dave_row[-2:] == ["40.00", "EUR"]


def test_wait_for_balance_counts_expense(splitlog_up, cli, group):
    expense = json_format.ParseDict(
        add_expense(cli, group, "10.00", "--currency", "EUR"),
        expenses_pb2.Expense(),
        ignore_unknown_fields=True,
    )
    context = Context(splitlog_up.grpc_address, "table", io.StringIO())
    request = balances_pb2.GetGroupBalanceRequest(
        name=f"groups/{group['group']}/balance"
    )
    try:
        wait_for_balance(context, group["group"], expense)
        balance = context.call("balances.GetGroupBalance", request).balance
    finally:
        context.close()
    nets = {
        member.user: money(json_format.MessageToDict(member.net_amount))
        for entry in balance.currency_balances
        for member in entry.member_balances
    }

    assert nets[f"users/{group['ann']}"] == Decimal("7.50")
    assert nets[f"users/{group['ben']}"] == Decimal("-2.50")


def test_wait_for_balance_times_out(splitlog_up, group):
    # A write stamped an hour from now, which the group's balance never reaches.
    write = balances_pb2.Settlement(name=f"groups/{group['group']}/settlements/late")
    write.update_time.FromSeconds(int(time.time()) + 3600)
    context = Context(splitlog_up.grpc_address, "table", io.StringIO())
    started = time.monotonic()
    try:
        with pytest.raises(ServerError) as raised:
            wait_for_balance(context, group["group"], write, timeout=0.2)
    finally:
        context.close()

    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert write.name in str(raised.value)
    assert "update_time (unset)" in str(raised.value)
    assert time.monotonic() - started < BALANCE_WAIT_SECONDS


def test_demo_with_auth_on(splitlog_up_with_auth, tmp_path):
    # A newcomer runs the demo right after `make up`: no token, no session.
    address = splitlog_up_with_auth.grpc_address
    first = run_splitlog("demo", "expenses", gateway=address, config_home=tmp_path)
    second = run_splitlog("demo", "expenses", gateway=address, config_home=tmp_path)
    lines = first.stdout.splitlines()
    commands = [line for line in lines if line.startswith("$ splitlog ")]
    signups = [line for line in commands if line.startswith("$ splitlog auth signup")]
    alice = re.search(r"--user-id (alice-\w+)", first.stdout).group(1)
    create = next(line for line in lines if line.startswith("$ splitlog groups create"))
    # The created group's row comes after the command line and the header.
    created_row = lines[lines.index(create) + 2]

    assert first.status == 0, first.stderr
    assert second.status == 0, second.stderr
    assert len(signups) == 4
    for line in signups:
        assert "#" not in line, line
    for line in commands[4:]:
        assert re.search(r"  # as (alice|bob|carol|dave)-\w+$", line), line
    assert create.endswith(f"# as {alice}")
    # Without --currency the group takes its creator's currency, EUR.
    assert "--currency" not in create
    assert " EUR " in created_row
    assert "nothing to settle" not in first.stdout
    assert not (tmp_path / "splitlog").exists()


@pytest.fixture(scope="module")
def signed_up(splitlog_up_with_auth):
    """Sign up ann, ben and cat over gRPC; ann creates a EUR group of all three.

    Returns {"group": id, person: (user name, SignUpResponse tokens)}.
    """
    address = splitlog_up_with_auth.grpc_address
    suffix = secrets.token_hex(3)
    people = {}
    with grpc.insecure_channel(address) as channel:
        auth_stub = auth_grpc.AuthServiceStub(channel)
        for person in PEOPLE[:3]:
            user_id = f"{person}-{suffix}"
            response = auth_stub.SignUp(
                auth_pb2.SignUpRequest(
                    user=users_pb2.User(
                        email=f"{user_id}@example.com",
                        display_name=user_id,
                        currency_code="EUR",
                    ),
                    user_id=user_id,
                    password=secrets.token_urlsafe(16),
                ),
                timeout=10,
            )
            people[person] = (response.user.name, response.tokens)
        ann_name, ann_tokens = people["ann"]
        metadata = (("authorization", f"Bearer {ann_tokens.access_token}"),)
        users_stub = users_grpc.UsersServiceStub(channel)
        group = users_stub.CreateGroup(
            users_pb2.CreateGroupRequest(
                group=users_pb2.Group(display_name="Auth trip", creator=ann_name)
            ),
            timeout=10,
            metadata=metadata,
        ).group
        for person in ("ben", "cat"):
            users_stub.AddGroupMember(
                users_pb2.AddGroupMemberRequest(
                    parent=group.name, user=people[person][0]
                ),
                timeout=10,
                metadata=metadata,
            )
    return {"group": group.name, **people}


def test_saved_session_records_expense(splitlog_up_with_auth, signed_up, tmp_path):
    # ann is signed in (a saved session) and records what cat paid.
    address = splitlog_up_with_auth.grpc_address
    ann, ann_tokens = signed_up["ann"]
    cat = signed_up["cat"][0]
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    SessionStore(config_dir(environ)).save(
        address, Session.from_tokens(ann, ann_tokens)
    )

    result = run_splitlog(
        "expenses", "add", signed_up["group"], "--description", "Taxi",
        "--amount", "30.00", "--paid-by", cat, "--format", "json",
        gateway=address, config_home=tmp_path,
    )  # fmt: skip

    assert result.status == 0, result.stderr
    expense = json.loads(result.stdout)
    assert expense["creator"] == ann
    assert [payer["user"] for payer in expense["payers"]] == [cat]


def test_token_records_update_and_settlement(
    splitlog_up_with_auth, signed_up, tmp_path
):
    # ben has an access token in SPLITLOG_TOKEN and passes no --by.
    address = splitlog_up_with_auth.grpc_address
    ben, ben_tokens = signed_up["ben"]
    ann, cat = signed_up["ann"][0], signed_up["cat"][0]

    def as_ben(*args: str):
        return run_splitlog(
            *args, "--format", "json",
            gateway=address, config_home=tmp_path, token=ben_tokens.access_token,
        )  # fmt: skip

    added = as_ben(
        "expenses", "add", signed_up["group"], "--description", "Lunch",
        "--amount", "12.00", "--paid-by", ann,
    )  # fmt: skip
    assert added.status == 0, added.stderr
    name = json.loads(added.stdout)["name"]
    updated = as_ben("expenses", "update", name, "--paid-by", cat)
    settled = as_ben(
        "settlements", "add", signed_up["group"], "--from", cat, "--to", ann,
        "--amount", "4.00", "--currency", "EUR",
    )  # fmt: skip

    assert json.loads(added.stdout)["creator"] == ben
    assert updated.status == 0, updated.stderr
    assert json.loads(updated.stdout)["lastModifier"] == ben
    assert json.loads(updated.stdout)["creator"] == ben
    assert settled.status == 0, settled.stderr
    assert json.loads(settled.stdout)["creator"] == ben


def test_token_records_delete_and_restore(splitlog_up_with_auth, signed_up, tmp_path):
    # ann records an expense; ben deletes it and cat restores it, each with
    # an access token in SPLITLOG_TOKEN and without --by.
    address = splitlog_up_with_auth.grpc_address
    ann = signed_up["ann"][0]

    def run_as(person: str, *args: str):
        return run_splitlog(
            *args, "--format", "json",
            gateway=address, config_home=tmp_path,
            token=signed_up[person][1].access_token,
        )  # fmt: skip

    added = run_as(
        "ann", "expenses", "add", signed_up["group"], "--description", "Ferry",
        "--amount", "18.00", "--paid-by", ann,
    )  # fmt: skip
    assert added.status == 0, added.stderr
    name = json.loads(added.stdout)["name"]
    deleted = run_as("ben", "expenses", "delete", name)
    shown = run_as("ann", "expenses", "get", name)
    restored = run_as("cat", "expenses", "restore", name)

    assert deleted.status == 0, deleted.stderr
    assert json.loads(shown.stdout)["lastModifier"] == signed_up["ben"][0]
    assert json.loads(shown.stdout)["creator"] == ann
    assert restored.status == 0, restored.stderr
    assert json.loads(restored.stdout)["lastModifier"] == signed_up["cat"][0]


def test_by_for_another_user_rejected(splitlog_up_with_auth, signed_up, tmp_path):
    # --by still wins over the token, and the server rejects another author.
    address = splitlog_up_with_auth.grpc_address
    ben_tokens = signed_up["ben"][1]
    ann, cat = signed_up["ann"][0], signed_up["cat"][0]

    result = run_splitlog(
        "expenses", "add", signed_up["group"], "--description", "Bus",
        "--amount", "3.00", "--paid-by", cat, "--by", ann,
        gateway=address, config_home=tmp_path, token=ben_tokens.access_token,
    )  # fmt: skip

    assert result.status == 1
    assert error_label(result.stderr) == "PERMISSION_DENIED, ACTING_FOR_OTHER"
