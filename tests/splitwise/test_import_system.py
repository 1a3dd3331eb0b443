"""Import and export Splitwise files through a running `splitlog up`."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from google.type import date_pb2, money_pb2

from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.splitwise import identity
from splitlog_cli.splitwise.commands import run_export, run_import
from splitlog_cli.splitwise.convert import UNKNOWN_MEMBER, ExpensePlan, convert
from splitlog_cli.splitwise.csvformat import parse_bytes, parse_text
from splitlog_cli.splitwise.importer import (
    SplitwiseImporter,
    SplitwiseImportError,
    load_plan,
)
from splitlog_cli.splitwise.wire import to_minor
from tests.ports import free_ports
from tests.rich_errors import fails
from tests.splitwise.conftest import (
    FIXTURES,
    lookup_code,
    running_splitlog,
    shared_export_params,
)
from tests.system.conftest import SPLITLOG

pytestmark = pytest.mark.system

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def splitlog(tmp_path_factory):
    """A `splitlog up` that runs for the whole module."""
    with running_splitlog(tmp_path_factory.mktemp("splitwise-system")) as running:
        _skip_unless_expenses_exist(running.grpc_address)
        yield running


@pytest.fixture(scope="module")
def gateway(splitlog):
    """The gRPC address of the gateway."""
    return splitlog.grpc_address


def _skip_unless_expenses_exist(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = expenses_grpc.ExpensesServiceStub(channel)
        try:
            stub.CreateExpense(expenses_pb.CreateExpenseRequest(), timeout=TIMEOUT)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                pytest.skip(
                    "ExpensesService/CreateExpense returns UNIMPLEMENTED; the "
                    "import needs expense_service"
                )


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway) as opened:
        yield opened


def group_balance(channel, group: str) -> dict[str, dict[str, int]]:
    """Return display name -> net per currency, as balance_service reports it."""
    users = users_grpc.UsersServiceStub(channel)
    balances = balances_grpc.BalancesServiceStub(channel)
    response = balances.GetGroupBalance(
        balances_pb.GetGroupBalanceRequest(name=f"{group}/balance"), timeout=TIMEOUT
    )
    result = {}
    for currency in response.balance.currency_balances:
        nets = {}
        for member in currency.member_balances:
            user = users.GetUser(users_pb.GetUserRequest(name=member.user))
            nets[user.user.display_name] = to_minor(member.net_amount)
        result[currency.currency_code] = nets
    return result


def expense_count(channel, group: str) -> int:
    stub = expenses_grpc.ExpensesServiceStub(channel)
    count, token = 0, ""
    while True:
        response = stub.ListExpenses(
            expenses_pb.ListExpensesRequest(
                parent=group, page_size=1000, page_token=token
            ),
            timeout=TIMEOUT,
        )
        count += len(response.expenses)
        token = response.next_page_token
        if not token:
            return count


def summary_balances(data: bytes) -> dict[str, dict[str, int]]:
    """Return the nets of the summary rows, placeholder included when used."""
    return convert(parse_bytes(data)).expected_balances()


def import_file(path, gateway, group_name=None):
    out, err = io.StringIO(), io.StringIO()
    status = run_import(path, gateway, TIMEOUT, group_name, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("shared_export", shared_export_params(), indirect=True)
def test_shared_export_imports_exactly(shared_export, gateway, channel):
    data = shared_export.read_bytes()
    group = f"groups/{identity.group_id(identity.file_digest(data))}"

    status, out, err = import_file(shared_export, gateway)

    assert status == 0, out + err
    assert "OK: every balance equals the file's summary row" in out
    assert "importing [" in err
    assert group_balance(channel, group) == summary_balances(data)


def test_fixture_with_two_currencies(gateway, channel):
    path = FIXTURES / "current_flat.csv"
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"

    status, out, err = import_file(path, gateway, "Trip to Lyon")

    assert status == 0, out + err
    assert "balances in JPY" in out
    assert "(Trip to Lyon)" in out
    balances = group_balance(channel, group)
    assert balances["EUR"] == {"Ana": -67833, "Ben": -39833, "Chloé": 107666}
    assert balances["JPY"] == {"Ana": 3600, "Ben": -1800, "Chloé": -1800}


def test_second_import_creates_nothing(gateway, channel):
    path = FIXTURES / "older_imbalanced.csv"
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"
    first_status, _, _ = import_file(path, gateway)
    count = expense_count(channel, group)

    status, out, err = import_file(path, gateway)

    assert first_status == 0
    assert status == 0, out + err
    assert (
        "5 of the entries were already stored (by an earlier or concurrent run" in out
    )
    assert expense_count(channel, group) == count
    assert group_balance(channel, group)["USD"][UNKNOWN_MEMBER] == 64100


def test_second_import_with_other_group_name(gateway, channel, tmp_path):
    """A rerun under another --group-name finds the group of the first run."""
    path = tmp_path / "renamed.csv"
    path.write_bytes((FIXTURES / "current_flat.csv").read_bytes() + b"\n" * 5)
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"
    first_status, first_out, first_err = import_file(path, gateway, "First name")
    count = expense_count(channel, group)

    status, out, err = import_file(path, gateway, "Second name")

    assert first_status == 0, first_out + first_err
    assert status == 0, out + err
    assert "(First name)" in out
    assert expense_count(channel, group) == count
    users = users_grpc.UsersServiceStub(channel)
    found = users.GetGroup(users_pb.GetGroupRequest(name=group), timeout=TIMEOUT)
    assert found.group.display_name == "First name"


def test_interrupted_import_completes(gateway, channel, tmp_path):
    path = tmp_path / "interrupted.csv"
    path.write_bytes((FIXTURES / "current_flat.csv").read_bytes() + b"\n")
    plan, digest = load_plan(path)
    group = f"groups/{identity.group_id(digest)}"
    first_part = dataclasses.replace(plan, entries=plan.entries[:3])
    SplitwiseImporter(channel, TIMEOUT, io.StringIO(), balance_wait=0).run(
        first_part, digest, "interrupted"
    )

    result = SplitwiseImporter(channel, TIMEOUT, io.StringIO()).run(
        plan, digest, "interrupted"
    )

    assert result.already_present == 3
    assert result.mismatches == []
    assert expense_count(channel, group) == 6


def test_rejected_expense_deletes_new_group(gateway, channel, tmp_path):
    # A row that the server rejects: its total no longer equals what its
    # payers paid. The file itself is fine, so the import gets to the write.
    path = tmp_path / "rejected.csv"
    path.write_bytes((FIXTURES / "current_flat.csv").read_bytes() + b"\n\n")
    plan, digest = load_plan(path)
    group = f"groups/{identity.group_id(digest)}"
    index = next(
        i for i, entry in enumerate(plan.entries) if isinstance(entry, ExpensePlan)
    )
    bad = plan.entries[index]
    entries = list(plan.entries)
    entries[index] = dataclasses.replace(bad, total=bad.total + 1)
    progress = io.StringIO()

    with pytest.raises(SplitwiseImportError) as caught:
        SplitwiseImporter(channel, TIMEOUT, progress, balance_wait=0).run(
            dataclasses.replace(plan, entries=entries), digest, "rejected"
        )

    message = str(caught.value)
    assert f"on line {bad.line}" in message
    assert "INVALID_ARGUMENT: expense.payers: " in message
    assert "requests[" not in message
    assert "the row." not in message
    assert f"the group {group} that this import created was deleted" in message
    assert "importing [" in progress.getvalue()
    users = users_grpc.UsersServiceStub(channel)
    missing = fails(
        lambda: users.GetGroup(users_pb.GetGroupRequest(name=group), timeout=TIMEOUT)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    # The file as it is then imports in full, into the file's next group.
    result = SplitwiseImporter(channel, TIMEOUT, io.StringIO()).run(
        plan, digest, "rejected"
    )
    assert result.group == f"{group}-2"
    assert result.mismatches == []
    assert expense_count(channel, f"{group}-2") > 0


def test_withdrawn_currencies_import(gateway, channel):
    path = FIXTURES / "withdrawn_currencies.csv"
    data = path.read_bytes()
    group = f"groups/{identity.group_id(identity.file_digest(data))}"

    status, out, err = import_file(path, gateway)

    assert status == 0, out + err
    assert group_balance(channel, group) == summary_balances(data)
    loaded = users_grpc.UsersServiceStub(channel).GetGroup(
        users_pb.GetGroupRequest(name=group), timeout=TIMEOUT
    )
    # The first currency of the file that is still active is the default.
    assert loaded.group.currency_code == "EUR"
    report = (
        balances_grpc.BalancesServiceStub(channel)
        .GetGroupReport(
            balances_pb.GetGroupReportRequest(
                name=f"{group}/report", currency_code="HRK"
            ),
            timeout=TIMEOUT,
        )
        .report
    )
    assert report.total_spent.currency_code == "HRK"
    assert to_minor(report.total_spent) == 12050
    assert report.expense_count == 1


def test_self_paid_suffix_mixed_signs_imports(gateway, channel, tmp_path):
    description = "Own [paid and owed by Ana 15.00; Ben -5.00]"
    path = tmp_path / "mixed-signs.csv"
    path.write_text(
        "Date,Description,Category,Cost,Currency,Ana,Ben\n\n"
        f"2024-05-01,{description},General,10.00,EUR,0.00,0.00\n"
        "2024-05-02,Dinner,Dining out,20.00,EUR,10.00,-10.00\n\n"
        "2024-05-10,Total balance, , ,EUR,10.00,-10.00\n",
        encoding="utf-8",
    )
    digest = identity.file_digest(path.read_bytes())
    group = f"groups/{identity.group_id(digest)}"

    status, out, err = import_file(path, gateway)

    assert status == 0, out + err
    own = _expenses_by_description(channel, group)[description]
    placeholder = f"users/{identity.placeholder_user_id(digest)}"
    assert [(payer.user, to_minor(payer.amount)) for payer in own.payers] == [
        (placeholder, 1000)
    ]
    assert _member_display_names(channel, group) == ["Ana", "Ben", UNKNOWN_MEMBER]


def test_row_over_payer_limit_writes_nothing(gateway, channel, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    names = [f"P{index} {suffix}" for index in range(51)]
    path = tmp_path / "many-payers.csv"
    # Every member paid 1.00 for people missing from the export: 51 payers.
    path.write_text(
        "Date,Description,Category,Cost,Currency," + ",".join(names) + "\n\n"
        "2024-05-01,Party,General,51.00,EUR," + ",".join(["1.00"] * 51) + "\n\n"
        "2024-05-10,Total balance, , ,EUR," + ",".join(["1.00"] * 51) + "\n",
        encoding="utf-8",
    )
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"

    status, out, err = import_file(path, gateway)

    assert status == 1
    assert "nothing was imported" in err
    assert f"{path}:line 3: 51 members paid in this row" in err
    assert "expense_max_payers" in err
    assert lookup_code(channel, group) == grpc.StatusCode.NOT_FOUND
    for name in names:
        user = f"users/{identity.user_id(name)}"
        assert lookup_code(channel, user) == grpc.StatusCode.NOT_FOUND, name


@pytest.mark.parametrize("name", [UNKNOWN_MEMBER, UNKNOWN_MEMBER.lower()])
def test_member_named_like_placeholder_writes_nothing(gateway, channel, tmp_path, name):
    path = tmp_path / "placeholder-column.csv"
    path.write_text(
        f"Date,Description,Category,Cost,Currency,Ana,{name}\n\n"
        "2024-05-01,Dinner,Dining out,20.00,EUR,10.00,-5.00\n\n"
        "2024-05-10,Total balance, , ,EUR,10.00,-5.00\n",
        encoding="utf-8",
    )
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"

    status, out, err = import_file(path, gateway)

    assert status == 1
    assert f"{path}:line 1, column {name}: " in err
    assert "name of the placeholder" in err
    assert lookup_code(channel, group) == grpc.StatusCode.NOT_FOUND


def test_deactivated_user_stops_import_before_writes(gateway, channel, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    kept, gone = f"Kim {suffix}", f"Lou {suffix}"
    gone_id = identity.user_id(gone)
    users = users_grpc.UsersServiceStub(channel)
    users.CreateUser(
        users_pb.CreateUserRequest(
            user=users_pb.User(email=identity.email(gone_id), display_name=gone),
            user_id=gone_id,
        ),
        timeout=TIMEOUT,
    )
    users.DeactivateUser(
        users_pb.DeactivateUserRequest(name=f"users/{gone_id}"), timeout=TIMEOUT
    )
    text = (
        f"Date,Description,Category,Cost,Currency,{kept},{gone}\n\n"
        "2024-05-01,Dinner,Dining out,20.00,EUR,10.00,-10.00\n\n"
        "2024-05-10,Total balance, , ,EUR,10.00,-10.00\n"
    )
    path = tmp_path / "deactivated.csv"
    path.write_text(text, encoding="utf-8")
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"

    status, out, err = import_file(path, gateway)

    assert status == 1
    assert f"member {gone!r} is the user users/{gone_id}, which is deactivated" in err
    assert f"rename the column in the file's header (for example to '{gone} 2')" in (
        err
    )
    assert "Nothing was created." in err
    assert lookup_code(channel, group) == grpc.StatusCode.NOT_FOUND
    kept_user = f"users/{identity.user_id(kept)}"
    assert lookup_code(channel, kept_user) == grpc.StatusCode.NOT_FOUND

    # With the column renamed, the member is imported as a new user.
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(text.replace(f",{gone}\n", f",{gone} 2\n", 1), "utf-8")
    status, out, err = import_file(renamed, gateway)
    assert status == 0, out + err


def test_export_then_import_again(gateway, channel, tmp_path):
    source = FIXTURES / "older_imbalanced.csv"
    import_file(source, gateway)
    group = identity.group_id(identity.file_digest(source.read_bytes()))
    exported = tmp_path / "exported.csv"

    status = run_export(group, gateway, TIMEOUT, exported, err=io.StringIO())
    again_status, out, err = import_file(exported, gateway)

    assert status == 0
    assert again_status == 0, out + err
    parsed = parse_text(exported.read_text(encoding="utf-8"))
    original = parse_bytes(source.read_bytes())
    assert parsed.members == original.members
    assert [row.nets for row in parsed.rows] == [row.nets for row in original.rows]
    assert [s.nets for s in parsed.summaries] == [s.nets for s in original.summaries]
    again = identity.group_id(identity.file_digest(exported.read_bytes()))
    assert group_balance(channel, f"groups/{again}") == group_balance(
        channel, f"groups/{group}"
    )


def test_export_orders_rows_of_a_day(gateway, tmp_path):
    # A payment between two expenses of one day comes back after both: the
    # export orders a day's rows by creation, and the import writes every
    # expense before the first payment.
    source = tmp_path / "one-day.csv"
    source.write_text(
        "Date,Description,Category,Cost,Currency,Rui,Sol\n"
        "\n"
        "2024-06-01,Groceries,Groceries,20.00,EUR,10.00,-10.00\n"
        "2024-06-01,Sol paid Rui,Payment,10.00,EUR,-10.00,10.00\n"
        "2024-06-01,Dinner,Dining out,30.00,EUR,-15.00,15.00\n"
        "2024-06-02,Bus,Taxi,4.00,EUR,2.00,-2.00\n"
        "\n"
        "2024-06-03,Total balance, , ,EUR,-13.00,13.00\n",
        encoding="utf-8",
    )
    status, out, err = import_file(source, gateway)
    group = identity.group_id(identity.file_digest(source.read_bytes()))
    exported = tmp_path / "exported.csv"

    export_status = run_export(group, gateway, TIMEOUT, exported, err=io.StringIO())

    assert status == 0, out + err
    assert export_status == 0
    rows = parse_text(exported.read_text(encoding="utf-8")).rows
    assert [row.description for row in rows] == [
        "Groceries",
        "Dinner",
        "Sol paid Rui",
        "Bus",
    ]


def _self_paid_group(channel) -> str:
    """Make a group of Ana and Ben with a dinner they split and a lunch that
    Ana paid for herself alone, and return its name."""
    users = users_grpc.UsersServiceStub(channel)
    names = []
    for label in ("Ana", "Ben"):
        created = users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"{label.lower()}-{uuid.uuid4().hex[:8]}@example.com",
                    display_name=label,
                )
            ),
            timeout=TIMEOUT,
        )
        names.append(created.user.name)
    ana, ben = names
    group = users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Trip", creator=ana)
        ),
        timeout=TIMEOUT,
    ).group.name
    users.AddGroupMember(
        users_pb.AddGroupMemberRequest(parent=group, user=ben), timeout=TIMEOUT
    )
    expenses = expenses_grpc.ExpensesServiceStub(channel)
    for description, units, participants in [
        ("Dinner", 30, [ana, ben]),
        ("Own lunch", 12, [ana]),
    ]:
        amount = money_pb2.Money(currency_code="EUR", units=units)
        expenses.CreateExpense(
            expenses_pb.CreateExpenseRequest(
                parent=group,
                expense=expenses_pb.Expense(
                    description=description,
                    expense_date=date_pb2.Date(year=2024, month=5, day=1),
                    total=amount,
                    payers=[expenses_pb.Payer(user=ana, amount=amount)],
                    split=expenses_pb.Split(
                        type=expenses_pb.SPLIT_TYPE_EQUAL,
                        participants=[
                            expenses_pb.SplitParticipant(user=user)
                            for user in participants
                        ],
                    ),
                    creator=ana,
                ),
            ),
            timeout=TIMEOUT,
        )
    return group


def _expenses_by_description(channel, group: str) -> dict[str, expenses_pb.Expense]:
    listed = expenses_grpc.ExpensesServiceStub(channel).ListExpenses(
        expenses_pb.ListExpensesRequest(parent=group, page_size=1000),
        timeout=TIMEOUT,
    )
    return {expense.description: expense for expense in listed.expenses}


def _member_display_names(channel, group: str) -> list[str]:
    listed = users_grpc.UsersServiceStub(channel).ListGroupMembers(
        users_pb.ListGroupMembersRequest(parent=group, page_size=1000),
        timeout=TIMEOUT,
    )
    return [member.display_name for member in listed.members]


def test_self_paid_expense_round_trip(gateway, channel, tmp_path):
    group = _self_paid_group(channel)
    first = tmp_path / "first.csv"
    assert run_export(group, gateway, TIMEOUT, first, err=io.StringIO()) == 0
    assert "Own lunch [paid and owed by Ana],General,12.00,EUR,0.00,0.00" in (
        first.read_text(encoding="utf-8")
    )

    status, out, err = import_file(first, gateway)
    assert status == 0, out + err
    imported = f"groups/{identity.group_id(identity.file_digest(first.read_bytes()))}"
    second = tmp_path / "second.csv"
    assert run_export(imported, gateway, TIMEOUT, second, err=io.StringIO()) == 0
    again_status, out, err = import_file(second, gateway)
    assert again_status == 0, out + err
    again = f"groups/{identity.group_id(identity.file_digest(second.read_bytes()))}"

    assert second.read_text(encoding="utf-8") == first.read_text(encoding="utf-8")
    balances = group_balance(channel, group)
    for copy in (imported, again):
        assert group_balance(channel, copy) == balances
        assert _member_display_names(channel, copy) == ["Ana", "Ben"]
        lunch = _expenses_by_description(channel, copy)["Own lunch"]
        ana = lunch.payers[0].user
        assert [(payer.user, to_minor(payer.amount)) for payer in lunch.payers] == [
            (ana, 1200)
        ]
        assert [(owed.user, to_minor(owed.amount)) for owed in lunch.owed_amounts] == [
            (ana, 1200)
        ]


def _payment_lookalike_group(channel) -> tuple[str, str, str]:
    """Make a group of Ana and Ben with an expense "Ben paid Ana" that Ben paid
    for Ana alone, and a settlement of 4.00 from Ana to Ben.

    Returns the group and the names of Ana and Ben.
    """
    users = users_grpc.UsersServiceStub(channel)
    names = []
    for label in ("Ana", "Ben"):
        created = users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"{label.lower()}-{uuid.uuid4().hex[:8]}@example.com",
                    display_name=label,
                )
            ),
            timeout=TIMEOUT,
        )
        names.append(created.user.name)
    ana, ben = names
    group = users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Flat", creator=ana)
        ),
        timeout=TIMEOUT,
    ).group.name
    users.AddGroupMember(
        users_pb.AddGroupMemberRequest(parent=group, user=ben), timeout=TIMEOUT
    )
    amount = money_pb2.Money(currency_code="EUR", units=10)
    expenses_grpc.ExpensesServiceStub(channel).CreateExpense(
        expenses_pb.CreateExpenseRequest(
            parent=group,
            expense=expenses_pb.Expense(
                description="Ben paid Ana",
                expense_date=date_pb2.Date(year=2024, month=5, day=1),
                total=amount,
                payers=[expenses_pb.Payer(user=ben, amount=amount)],
                split=expenses_pb.Split(
                    type=expenses_pb.SPLIT_TYPE_EQUAL,
                    participants=[expenses_pb.SplitParticipant(user=ana)],
                ),
                creator=ben,
            ),
        ),
        timeout=TIMEOUT,
    )
    balances_grpc.BalancesServiceStub(channel).CreateSettlement(
        balances_pb.CreateSettlementRequest(
            parent=group,
            settlement=balances_pb.Settlement(
                payer=ana,
                payee=ben,
                creator=ana,
                amount=money_pb2.Money(currency_code="EUR", units=4),
                settlement_date=date_pb2.Date(year=2024, month=5, day=2),
            ),
        ),
        timeout=TIMEOUT,
    )
    return group, ana, ben


def _settlement_count(channel, group: str) -> int:
    listed = balances_grpc.BalancesServiceStub(channel).ListSettlements(
        balances_pb.ListSettlementsRequest(parent=group, page_size=1000),
        timeout=TIMEOUT,
    )
    return len(listed.settlements)


def test_expense_like_payment_round_trip(gateway, channel, tmp_path):
    group, _, _ = _payment_lookalike_group(channel)
    exported = tmp_path / "exported.csv"
    assert run_export(group, gateway, TIMEOUT, exported, err=io.StringIO()) == 0

    status, out, err = import_file(exported, gateway)

    assert status == 0, out + err
    digest = identity.file_digest(exported.read_bytes())
    imported = f"groups/{identity.group_id(digest)}"
    assert expense_count(channel, imported) == 1
    assert _settlement_count(channel, imported) == 1
    lookalike = _expenses_by_description(channel, imported)["Ben paid Ana"]
    assert lookalike.category == expenses_pb.CATEGORY_GENERAL
    assert group_balance(channel, imported) == group_balance(channel, group)
    assert group_balance(channel, group) == {"EUR": {"Ana": -600, "Ben": 600}}


def _write_csv(path: Path, records: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        csv.writer(file, lineterminator="\n").writerows(records)


def test_awkward_member_names_round_trip(gateway, channel, tmp_path):
    """Members whose names hold the suffix's separator or quotes keep their
    self-paid expenses through an import and an export."""
    suffix = uuid.uuid4().hex[:6]
    first, second = f"Ana; Ben {suffix}", f'Li "Boss" {suffix}'
    shares = f"{json.dumps(first)} 6.00; {json.dumps(second)} 4.00"
    path = tmp_path / "awkward.csv"
    _write_csv(
        path,
        [
            ["Date", "Description", "Category", "Cost", "Currency", first, second],
            [],
            ["2024-05-01", "Dinner", "Dining out", "20.00", "EUR", "10.00", "-10.00"],
            [
                "2024-05-02",
                f"Taxi [paid and owed by {shares}]",
                "Taxi",
                "10.00",
                "EUR",
                "0.00",
                "0.00",
            ],
            [
                "2024-05-03",
                f"Lunch [paid and owed by {json.dumps(first)}]",
                "General",
                "5.00",
                "EUR",
                "0.00",
                "0.00",
            ],
            [],
            ["2024-05-10", "Total balance", " ", " ", "EUR", "10.00", "-10.00"],
        ],
    )
    status, out, err = import_file(path, gateway)
    assert status == 0, out + err
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"
    exported = tmp_path / "exported.csv"

    assert run_export(group, gateway, TIMEOUT, exported, err=io.StringIO()) == 0

    original = parse_bytes(path.read_bytes())
    parsed = parse_text(exported.read_text(encoding="utf-8"))
    assert parsed.members == (first, second)
    assert parsed.rows == original.rows
    assert _member_display_names(channel, group) == [first, second]
    imported = _expenses_by_description(channel, group)
    taxi, lunch = imported["Taxi"], imported["Lunch"]
    assert [to_minor(payer.amount) for payer in taxi.payers] == [600, 400]
    assert [to_minor(owed.amount) for owed in lunch.owed_amounts] == [500]


def test_formula_texts_escaped_on_export(gateway, channel, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    member = f"-Mo {suffix}"
    path = tmp_path / "formulas.csv"
    _write_csv(
        path,
        [
            ["Date", "Description", "Category", "Cost", "Currency", "Ana", member],
            [],
            [
                "2024-05-01",
                '=HYPERLINK("x")',
                "General",
                "20.00",
                "EUR",
                "10.00",
                "-10.00",
            ],
            ["2024-05-02", "-5 off", "@Dining", "-4.00", "EUR", "-2.00", "2.00"],
            ["2024-05-03", "+1 guest", "General", "6.00", "EUR", "-3.00", "3.00"],
            [],
            ["2024-05-10", "Total balance", " ", " ", "EUR", "5.00", "-5.00"],
        ],
    )
    status, out, err = import_file(path, gateway)
    assert status == 0, out + err
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"
    exported = tmp_path / "exported.csv"

    assert run_export(group, gateway, TIMEOUT, exported, err=io.StringIO()) == 0

    records = list(csv.reader(exported.open(encoding="utf-8", newline="")))
    assert records[0][5:] == ["Ana", f"'{member}"]
    assert records[2][1] == '\'=HYPERLINK("x")'
    assert records[3][1:] == ["'-5 off", "'@Dining", "-4.00", "EUR", "-2.00", "2.00"]
    assert records[4][1] == "'+1 guest"
    original = parse_bytes(path.read_bytes())
    parsed = parse_text(exported.read_text(encoding="utf-8"))
    assert parsed.members == original.members
    assert parsed.rows == original.rows
    descriptions = sorted(_expenses_by_description(channel, group))
    assert descriptions == ["+1 guest", "-5 off", '=HYPERLINK("x")']


def test_export_dash_writes_stdout(gateway, tmp_path, monkeypatch):
    source = FIXTURES / "older_imbalanced.csv"
    import_file(source, gateway)
    group = identity.group_id(identity.file_digest(source.read_bytes()))
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()

    status = run_export(group, gateway, TIMEOUT, Path("-"), out=out, err=io.StringIO())

    assert status == 0
    assert not (tmp_path / "-").exists()
    parsed = parse_text(out.getvalue())
    assert parsed.members == parse_bytes(source.read_bytes()).members


def test_self_paid_fixture_round_trip(gateway, channel, tmp_path):
    path = FIXTURES / "self_paid.csv"
    status, out, err = import_file(path, gateway)
    assert status == 0, out + err
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"
    exported = tmp_path / "exported.csv"

    assert run_export(group, gateway, TIMEOUT, exported, err=io.StringIO()) == 0

    original = parse_bytes(path.read_bytes())
    parsed = parse_text(exported.read_text(encoding="utf-8"))
    assert parsed.members == original.members
    assert parsed.rows == original.rows
    assert [s.nets for s in parsed.summaries] == [s.nets for s in original.summaries]
    members = _member_display_names(channel, group)
    assert members == ["Ana", "Ben", "Chloé", UNKNOWN_MEMBER]
    taxi = _expenses_by_description(channel, group)["Shared taxi"]
    assert [to_minor(payer.amount) for payer in taxi.payers] == [600, 400]


def test_import_after_group_deleted_uses_next_group(gateway, channel, tmp_path):
    path = tmp_path / "deleted.csv"
    path.write_bytes((FIXTURES / "current_flat.csv").read_bytes() + b"\n\n\n")
    status, out, err = import_file(path, gateway)
    assert status == 0, out + err
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"
    users = users_grpc.UsersServiceStub(channel)
    # Payments back to the payers settle the group, so that it can be deleted.
    balances = balances_grpc.BalancesServiceStub(channel)
    plan = balances.ComputeSettlementPlan(
        balances_pb.ComputeSettlementPlanRequest(name=f"{group}/balance"),
        timeout=TIMEOUT,
    )
    for transfer in plan.transfers:
        balances.CreateSettlement(
            balances_pb.CreateSettlementRequest(
                parent=group,
                settlement=balances_pb.Settlement(
                    payer=transfer.payer,
                    payee=transfer.payee,
                    creator=transfer.payer,
                    amount=transfer.amount,
                    settlement_date=date_pb2.Date(year=2024, month=1, day=1),
                ),
            ),
            timeout=TIMEOUT,
        )
    users.DeleteGroup(users_pb.DeleteGroupRequest(name=group), timeout=TIMEOUT)

    status, out, err = import_file(path, gateway)
    imported = expense_count(channel, f"{group}-2")
    again_status, again_out, again_err = import_file(path, gateway)

    assert status == 0, out + err
    assert f"{group}-2" in out
    assert imported > 0
    missing = fails(
        lambda: users.GetGroup(users_pb.GetGroupRequest(name=group), timeout=TIMEOUT)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    # A rerun finds the new group and creates nothing twice.
    assert again_status == 0, again_out + again_err
    assert expense_count(channel, f"{group}-2") == imported


def test_export_unknown_group_fails(gateway):
    err = io.StringIO()

    status = run_export("no-such-group", gateway, TIMEOUT, None, err=err)

    assert status == 1
    assert "NOT_FOUND" in err.getvalue()


def test_bad_file_writes_nothing(gateway, channel, tmp_path):
    path = tmp_path / "bad.csv"
    text = (FIXTURES / "current_flat.csv").read_text(encoding="utf-8")
    path.write_text(text.replace("45.00,EUR", "45.0x,EUR"), encoding="utf-8")
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"

    status, out, err = import_file(path, gateway)

    assert status == 1
    assert f"{path}:line 6, column Cost: invalid amount '45.0x'" in err
    assert "nothing was imported" in err
    with pytest.raises(grpc.RpcError) as caught:
        users_grpc.UsersServiceStub(channel).GetGroup(
            users_pb.GetGroupRequest(name=group), timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_rows_not_matching_summary_rejected(gateway, tmp_path):
    path = tmp_path / "edited.csv"
    text = (FIXTURES / "current_flat.csv").read_text(encoding="utf-8")
    path.write_text(text.replace("EUR,-678.33", "EUR,-678.34"), encoding="utf-8")

    status, out, err = import_file(path, gateway)

    assert status == 1
    assert "Ana: the summary row says -678.34 EUR" in err
    assert "nothing was imported" in err


@pytest.mark.parametrize(
    "keep", ["", "EUR", "JPY"], ids=["no-summary", "no-jpy-summary", "no-eur-summary"]
)
def test_missing_summary_row_rejected(gateway, channel, tmp_path, keep):
    path = tmp_path / "no-summary.csv"
    lines = (FIXTURES / "current_flat.csv").read_text(encoding="utf-8").splitlines()
    kept = [
        line
        for line in lines
        if "Total balance" not in line or line.split(",")[4] == keep
    ]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"

    status, out, err = import_file(path, gateway)

    missing = {"EUR", "JPY"} - {keep}
    assert status == 1
    assert "nothing was imported" in err
    assert "the summary row says" not in err
    for currency in missing:
        assert f"the summary row for {currency} is missing" in err
        assert f"Total balance, , ,{currency},<Ana>,<Ben>,<Chloé>" in err
    if keep:
        assert f"{path}:line 12: " in err
        assert "expected with the summary rows from line 12" in err
    else:
        assert f"{path}:line 10: " in err
        assert "expected after line 10, the last row" in err
    assert lookup_code(channel, group) == grpc.StatusCode.NOT_FOUND


def test_user_rejected_before_group_reports_users_only(gateway, channel, tmp_path):
    # user_service rejects a name of combining marks alone, which the file
    # check lets through, so the import stops after the first user and
    # before the group.
    path = tmp_path / "bad-name.csv"
    text = (FIXTURES / "current_flat.csv").read_text(encoding="utf-8")
    path.write_text(text.replace(",Ben,", ",\u0301\u0301,", 1), encoding="utf-8")
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"

    status, out, err = import_file(path, gateway)

    ana = f"users/{identity.user_id('Ana')}"
    assert status == 1
    assert "while creating the users: INVALID_ARGUMENT" in err
    assert (
        f"The group {group} was not created. 1 of the file's 3 users exist ({ana})"
        in err
    )
    assert "stays in" not in err
    assert "run the same command again" in err
    assert lookup_code(channel, group) == grpc.StatusCode.NOT_FOUND


def test_unreachable_gateway_says_rerun():
    (port,) = free_ports(1)
    plan, digest = load_plan(FIXTURES / "current_flat.csv")

    with grpc.insecure_channel(f"127.0.0.1:{port}") as closed:
        importer = SplitwiseImporter(closed, 1.0, io.StringIO())
        with pytest.raises(SplitwiseImportError) as caught:
            importer.run(plan, digest, "unreachable")

    message = str(caught.value)
    assert "while reading the users that exist: UNAVAILABLE" in message
    assert "Nothing was created" in message
    assert "run the same command again" in message


@pytest.mark.parametrize("command", ["import", "export"])
def test_unreachable_gateway_reported_once(command):
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    err = io.StringIO()

    if command == "import":
        path = FIXTURES / "current_flat.csv"
        status = run_import(path, address, TIMEOUT, None, out=io.StringIO(), err=err)
    else:
        status = run_export("some-group", address, TIMEOUT, None, err=err)

    assert status == 1
    assert err.getvalue().startswith(
        f"splitlog: error: cannot reach splitlog at {address}"
    )
    assert "stays in" not in err.getvalue()


def test_command_line_import(gateway, tmp_path):
    path = tmp_path / "cli.csv"
    path.write_bytes((FIXTURES / "current_flat.csv").read_bytes() + b"\n\n")

    result = subprocess.run(
        [str(SPLITLOG), "import", "splitwise", str(path), "--gateway", gateway],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "rows read    8" in result.stdout
    assert "settlements  2" in result.stdout
    assert "OK: every balance" in result.stdout


def test_command_line_import_json(gateway, tmp_path):
    path = tmp_path / "cli-json.csv"
    # Trailing blank lines that no other test of the module adds make the
    # file's digest its own, so this is a new import, not a repeat.
    path.write_bytes((FIXTURES / "current_flat.csv").read_bytes() + b"\n" * 7)

    result = subprocess.run(
        [str(SPLITLOG), "import", "splitwise", str(path), "--gateway", gateway,
         "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    summary = json.loads(result.stdout)
    members = summary["balances"][0]["members"]

    assert result.returncode == 0, result.stderr
    assert summary["group"].startswith("groups/")
    assert summary["groupDisplayName"] == "cli-json"
    assert summary["rowsRead"] == 8
    assert summary["settlements"] == 2
    assert summary["balancesMatch"] is True
    assert summary["balances"][0]["currencyCode"] == "EUR"
    assert all(member["matches"] for member in members)
    assert all(member["summaryRow"] == member["splitlog"] for member in members)


def test_export_help_says_output_is_csv():
    result = subprocess.run(
        [str(SPLITLOG), "export", "splitwise", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = " ".join(result.stdout.split())

    assert result.returncode == 0, result.stderr
    assert "The output is always that CSV, so this command takes no --format" in text


def _rest_group(splitlog, client) -> tuple[str, str]:
    """Create a user and a group over REST; return their names."""
    user = client.post(
        "/v1/users",
        json={
            "email": f"rest-{uuid.uuid4().hex[:10]}@example.com",
            "displayName": "Ana",
        },
    ).json()["user"]["name"]
    group = client.post(
        "/v1/groups", json={"displayName": "Batch", "creator": user}
    ).json()["group"]["name"]
    return user, group


def _rest_expense(user: str, units: str) -> dict:
    amount = {"currencyCode": "EUR", "units": units}
    return {
        "expense": {
            "description": "Bread",
            "expenseDate": {"year": 2024, "month": 5, "day": 1},
            "total": amount,
            "payers": [{"user": user, "amount": amount}],
            "split": {"type": "SPLIT_TYPE_EQUAL", "participants": [{"user": user}]},
            "creator": user,
        }
    }


def test_batch_create_over_rest(splitlog):
    with httpx.Client(base_url=splitlog.http_url, timeout=TIMEOUT) as client:
        user, group = _rest_group(splitlog, client)
        url = f"/v1/{group}/expenses:batchCreate"

        bad = client.post(
            url,
            json={"requests": [_rest_expense(user, "3"), _rest_expense(user, "0")]},
        )
        created = client.post(
            url,
            json={"requests": [_rest_expense(user, "3"), _rest_expense(user, "4")]},
        )
        listed = client.get(f"/v1/{group}/expenses").json()

    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["message"].startswith("requests[1].expense.total")
    assert created.status_code == 200, created.text
    units = [e["total"]["units"] for e in created.json()["expenses"]]
    assert units == ["3", "4"]
    assert len(listed["expenses"]) == 2


def test_too_long_group_name_refused_before_connecting():
    out, err = io.StringIO(), io.StringIO()

    status = run_import(
        FIXTURES / "current_flat.csv", "127.0.0.1:1", TIMEOUT, "g" * 101, out, err
    )

    assert status == 2
    assert "--group-name is 101 characters long" in err.getvalue()
