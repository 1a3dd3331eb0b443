"""Exit statuses and messages of the client commands, without a running server.

Every command here points at a closed port, so a command that wrongly sent a
request would exit with 1 instead of 2.
"""

from __future__ import annotations

import pytest
from google.type import money_pb2

from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb2
from splitlog_cli.client import expenses, settlements
from splitlog_cli.client.credentials import Credential, token_subject
from splitlog_cli.main import build_parser, main
from splitlog_runtime import auth
from tests import ports
from tests.cli.conftest import run_splitlog

EXPENSE = [
    "expenses", "add", "trip", "--description", "Dinner", "--currency", "EUR",
    "--paid-by", "alice",
]  # fmt: skip


@pytest.fixture(scope="module")
def closed_address():
    return ports.closed_address()


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--amount", "12.345"], ["--amount", "'12.345'", "digits below"]),
        (["--amount", "12,34"], ["--amount", "'12,34'", "plain decimal"]),
        (
            ["--amount", "10", "--currency", "zzz"],
            ["--currency", "'ZZZ'", "ISO 4217"],
        ),
        (
            ["--amount", "10", "--split", "percent", "--participant", "bob=150"],
            ["--participant bob=150", "'150'", "over 100"],
        ),
        (
            ["--amount", "10", "--split", "percent", "--participant", "bob=33.333"],
            ["--participant bob=33.333", "two decimals"],
        ),
        (
            ["--amount", "10", "--split", "shares", "--participant", "bob=1.5"],
            ["--participant bob=1.5", "whole number of shares"],
        ),
        (
            ["--amount", "10", "--split", "exact", "--participant", "bob"],
            ["--participant", "'bob'", "USER=AMOUNT"],
        ),
        (
            ["--amount", "10", "--split", "mixed", "--participant", "bob=2"],
            ["--participant", "'bob=2'", "amount:X"],
        ),
        (["--amount", "10", "--split", "shares"], ["--participant", "at least one"]),
        (["--amount", "10", "--date", "2023-02-30"], ["--date", "'2023-02-30'"]),
        (["--amount", "10", "--category", "snacks"], ["--category", "'snacks'"]),
        (["--amount", "10", "--paid-by", "bob"], ["--paid-by", "have no amount"]),
    ],
)
def test_expense_bad_value_exits_2(capsys, closed_address, extra, fragments):
    status = main([*EXPENSE, *extra, "--gateway", closed_address])
    stderr = capsys.readouterr().err

    assert status == 2
    assert stderr.startswith("splitlog expenses: error: ")
    assert stderr.count("\n") == 1
    for fragment in fragments:
        assert fragment in stderr


def test_settlement_bad_amount_exits_2(capsys, closed_address):
    status = main(
        ["settlements", "add", "trip", "--from", "alice", "--to", "bob",
         "--amount", "1.2.3", "--currency", "EUR", "--gateway", closed_address]
    )  # fmt: skip
    stderr = capsys.readouterr().err

    assert status == 2
    assert "invalid value '1.2.3' for --amount" in stderr


def test_bad_expense_name_exits_2(capsys, closed_address):
    status = main(["expenses", "get", "dinner", "--gateway", closed_address])
    stderr = capsys.readouterr().err

    assert status == 2
    assert "invalid value 'dinner' for NAME" in stderr


def test_missing_option_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["expenses", "add", "trip", "--description", "Dinner"])

    assert caught.value.code == 2
    assert "--amount" in capsys.readouterr().err


def test_build_expense_request_offline():
    args = build_parser().parse_args(
        [*EXPENSE, "--amount", "80.00", "--paid-by", "bob=50", "--split", "mixed",
         "--participant", "alice=amount:20.00", "--participant", "bob=percent:25",
         "--participant", "carol=shares:2", "--category", "Dining out",
         "--date", "2024-05-31", "--notes", "n", "--id", "dinner-1"]
    )  # fmt: skip

    request = expenses.build_create_request(args, "groups/trip", "EUR")

    expense = request.expense
    assert request.parent == "groups/trip"
    assert request.expense_id == "dinner-1"
    assert len(request.request_id) == 36
    assert (expense.total.units, expense.total.nanos) == (80, 0)
    assert [(p.user, p.amount.units) for p in expense.payers] == [
        ("users/alice", 30),
        ("users/bob", 50),
    ]
    assert [p.WhichOneof("value") for p in expense.split.participants] == [
        "exact_amount",
        "basis_points",
        "shares",
    ]
    assert expense.creator == "users/alice"
    assert (expense.expense_date.year, expense.expense_date.day) == (2024, 31)
    assert expense.category == 4


def test_build_settlement_request_offline():
    args = build_parser().parse_args(
        ["settlements", "add", "groups/trip", "--from", "carol", "--to", "bob",
         "--amount", "29.67", "--currency", "EUR", "--note", "cash"]
    )  # fmt: skip

    request = settlements.build_create_request(args)

    assert request.parent == "groups/trip"
    assert request.settlement.payer == "users/carol"
    assert request.settlement.payee == "users/bob"
    assert request.settlement.creator == "users/carol"
    assert request.settlement.amount.units == 29
    assert request.settlement.amount.nanos == 670_000_000


def test_signed_in_user_records_by_default():
    expense_args = build_parser().parse_args([*EXPENSE, "--amount", "9.00"])
    settlement_args = build_parser().parse_args(
        ["settlements", "add", "trip", "--from", "carol", "--to", "bob",
         "--amount", "1.00", "--currency", "EUR"]
    )  # fmt: skip
    explicit = build_parser().parse_args([*EXPENSE, "--amount", "9.00", "--by", "bob"])

    expense = expenses.build_create_request(
        expense_args, "groups/trip", "EUR", "users/dora"
    ).expense
    settlement = settlements.build_create_request(settlement_args, "users/dora")
    by_option = expenses.build_create_request(
        explicit, "groups/trip", "EUR", "users/dora"
    ).expense

    assert expense.creator == "users/dora"
    assert settlement.settlement.creator == "users/dora"
    assert by_option.creator == "users/bob"


def test_token_subject_of_access_token():
    issuer = auth.TokenIssuer(b"k" * 32, lifetime_seconds=60)
    token, _ = issuer.issue("users/dora", "session-1", now=0)

    assert token_subject(token) == "users/dora"
    assert Credential("127.0.0.1:1", token, None).user == "users/dora"
    assert Credential("127.0.0.1:1", "slk_secret", None).user is None
    assert token_subject("not-a-jwt") is None


CURRENT = expenses_pb2.Expense(
    name="groups/trip/expenses/dinner",
    etag='"7"',
    description="Dinner",
    total=money_pb2.Money(currency_code="EUR", units=30),
    payers=[
        expenses_pb2.Payer(
            user="users/alice", amount=money_pb2.Money(currency_code="EUR", units=30)
        )
    ],
    split=expenses_pb2.Split(
        type=expenses_pb2.SPLIT_TYPE_EQUAL,
        participants=[
            expenses_pb2.SplitParticipant(user="users/alice"),
            expenses_pb2.SplitParticipant(user="users/bob"),
        ],
    ),
)
UPDATE = ["expenses", "update", CURRENT.name]


@pytest.mark.parametrize(
    ("options", "mask"),
    [
        (["--description", "Lunch"], ["description"]),
        (["--notes", ""], ["notes"]),
        (["--date", "2024-05-31", "--category", "dining-out"],
         ["category", "expense_date"]),
        (["--amount", "40.00"], ["total", "payers"]),
        (["--paid-by", "bob"], ["payers"]),
        (["--split", "equal"], ["split"]),
        (["--participant", "bob"], ["split"]),
    ],
)  # fmt: skip
def test_update_mask_names_given_fields(options, mask):
    args = build_parser().parse_args([*UPDATE, *options])

    request = expenses.build_update_request(args, CURRENT)

    assert list(request.update_mask.paths) == mask
    assert request.expense.name == CURRENT.name
    assert request.expense.etag == CURRENT.etag
    first_payer = "users/bob" if "--paid-by" in options else "users/alice"
    assert request.expense.last_modifier == first_payer


def test_update_amount_goes_to_only_payer():
    args = build_parser().parse_args([*UPDATE, "--amount", "40.00", "--by", "bob"])

    request = expenses.build_update_request(args, CURRENT, "users/dora")

    assert request.expense.total.units == 40
    assert [(p.user, p.amount.units) for p in request.expense.payers] == [
        ("users/alice", 40)
    ]
    assert request.expense.last_modifier == "users/bob"


def test_update_equal_split_keeps_participants():
    args = build_parser().parse_args([*UPDATE, "--split", "equal", "--etag", '"3"'])

    request = expenses.build_update_request(args, CURRENT, "users/dora")

    assert [p.user for p in request.expense.split.participants] == [
        "users/alice",
        "users/bob",
    ]
    assert request.expense.etag == '"3"'
    assert request.expense.last_modifier == "users/dora"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ([], "nothing to change"),
        (["--currency", "USD"], "--currency: a new currency needs"),
        (["--split", "exact"], "needs at least one --participant"),
        (["--category", "snacks"], "invalid value 'snacks' for --category"),
    ],
)
def test_update_usage_errors_exit_2(options, fragment, capsys, closed_address):
    status = main([*UPDATE, *options, "--gateway", closed_address])

    assert status == 2
    assert fragment in capsys.readouterr().err


def test_unreachable_gateway_exits_1(closed_address):
    result = run_splitlog("users", "list", gateway=closed_address)

    assert result.status == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"splitlog: error: cannot reach splitlog at {closed_address}; "
        "start it with `make up`"
    )
    assert result.stderr.count("\n") == 1


def test_default_gateway_from_environment(monkeypatch, capsys, closed_address):
    monkeypatch.setenv("SPLITLOG_GATEWAY_PORT", closed_address.rsplit(":", 1)[1])

    status = main(["groups", "members", "trip"])

    assert status == 1
    assert f"cannot reach splitlog at {closed_address}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["logs", "query", "--bogus"], "usage: splitlog logs query"),
        (["up", "--nope"], "usage: splitlog up"),
        (["expenses", "list", "trip", "--nope"], "usage: splitlog expenses list"),
    ],
)
def test_unknown_option_shows_subcommand_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    error = capsys.readouterr().err
    assert caught.value.code == 2
    assert usage in error
    assert f"unrecognized arguments: {argv[-1]}" in error
