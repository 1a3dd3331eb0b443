"""Author fields left empty: the caller with auth on, required with it off.

`group.creator`, `expense.creator`, `expense.last_modifier` and
`settlement.creator` may name only the caller while `auth_required` is on,
so an empty one is filled with the caller. With auth off no caller identity
arrives, and they stay required. Real user, expense and balance services run
behind a real gateway, called over gRPC and REST and through the `splitlog`
client commands, which leave the field empty for an API key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.api import field_behavior_pb2
from google.type import date_pb2, money_pb2

from gateway.app import Gateway
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_cli.client.credentials import TOKEN_ENV
from splitlog_cli.main import main
from splitlog_runtime import auth
from tests.auth.support import operator_admin_key
from tests.auth.test_authorization import (
    TIMEOUT,
    Caller,
    Stack,
    _expense,
    _sign_up,
    _start_stack,
    _stop_stack,
)
from tests.gateway.support import LoopThread, error_details
from tests.rich_errors import fails

INVALID = grpc.StatusCode.INVALID_ARGUMENT
AUTH_OFF = "is required because authentication is off"


def _run_stack(loop_thread: LoopThread, data_dir, required: bool) -> Iterator[Stack]:
    started = _start_stack(loop_thread, data_dir, required)
    try:
        yield started
    finally:
        _stop_stack(loop_thread, started)
        auth.install_process_signer(None)


@pytest.fixture(scope="module")
def stack(loop_thread, tmp_path_factory) -> Iterator[Stack]:
    yield from _run_stack(loop_thread, tmp_path_factory.mktemp("author-on"), True)


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.gateway.http_port}", timeout=TIMEOUT
    ) as client:
        yield client


@pytest.fixture
def pair(channel) -> tuple[Caller, Caller, str]:
    """Return ann, ben and a group of the two that ann created."""
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    group = ann.create_group()
    ann.add_member(group, ben.user)
    return ann, ben, group


def _unsigned_expense(payer: str, participants: list[str]) -> expenses_pb.Expense:
    expense = _expense(payer, participants)
    expense.ClearField("creator")
    return expense


def _settlement(payer: str, payee: str, creator: str = "") -> balances_pb.Settlement:
    return balances_pb.Settlement(
        payer=payer,
        payee=payee,
        creator=creator,
        amount=money_pb2.Money(currency_code="EUR", units=5),
        settlement_date=date_pb2.Date(year=2024, month=5, day=2),
    )


# Auth on: the caller fills the field


# The authors of groups, expenses and settlements, which the tests below leave
# empty with auth on. The descriptors that reflection serves must not call them
# required.
@pytest.mark.parametrize(
    "message",
    [users_pb.Group, expenses_pb.Expense, balances_pb.Settlement],
    ids=["group", "expense", "settlement"],
)
def test_creator_annotated_optional(message):
    options = message.DESCRIPTOR.fields_by_name["creator"].GetOptions()
    behaviors = list(options.Extensions[field_behavior_pb2.field_behavior])

    assert field_behavior_pb2.REQUIRED not in behaviors
    assert field_behavior_pb2.OPTIONAL in behaviors
    assert field_behavior_pb2.IMMUTABLE in behaviors


def test_group_creator_defaults_to_caller(channel):
    ann = _sign_up(channel, "ann")
    request = users_pb.CreateGroupRequest(group=users_pb.Group(display_name="Trip"))

    group = ann.users("CreateGroup", request).group

    assert group.creator == ann.user
    assert group.member_count == 1


def test_expense_creator_defaults_to_caller(pair):
    ann, ben, group = pair
    request = expenses_pb.CreateExpenseRequest(
        parent=group, expense=_unsigned_expense(ann.user, [ann.user, ben.user])
    )

    # ben records an expense that ann paid, as any member may.
    expense = ben.expenses("CreateExpense", request).expense

    assert expense.creator == ben.user
    assert expense.last_modifier == ben.user


def test_update_last_modifier_defaults_to_caller(pair):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    request = expenses_pb.UpdateExpenseRequest(
        expense=expenses_pb.Expense(name=name, description="Lunch")
    )

    expense = ben.expenses("UpdateExpense", request).expense

    assert expense.last_modifier == ben.user
    assert expense.creator == ann.user
    assert expense.description == "Lunch"


def test_rest_patch_without_last_modifier(pair, http):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])

    response = http.patch(
        f"/v1/{name}",
        json={"description": "Lunch"},
        headers={"authorization": f"Bearer {ben.credential}"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["expense"]["lastModifier"] == ben.user


def _get_expense(caller: Caller, name: str) -> expenses_pb.Expense:
    request = expenses_pb.GetExpenseRequest(name=name)
    return caller.expenses("GetExpense", request).expense


def test_delete_and_restore_record_caller(pair):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    created = _get_expense(ann, name)

    # ben deletes the expense that ann recorded, and ann restores it.
    deleted = ben.expenses(
        "DeleteExpense", expenses_pb.DeleteExpenseRequest(name=name)
    ).expense
    shown_deleted = _get_expense(ann, name)
    restored = ann.expenses(
        "UndeleteExpense", expenses_pb.UndeleteExpenseRequest(name=name)
    ).expense

    assert deleted.last_modifier == ben.user
    assert deleted.creator == ann.user
    assert deleted.etag != created.etag
    assert deleted.update_time.ToNanoseconds() > created.update_time.ToNanoseconds()
    assert shown_deleted == deleted
    assert restored.last_modifier == ann.user
    assert restored.etag != deleted.etag
    assert restored.update_time.ToNanoseconds() > deleted.update_time.ToNanoseconds()
    assert _get_expense(ben, name) == restored


def test_repeated_delete_keeps_first_modifier(pair):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    request = expenses_pb.DeleteExpenseRequest(name=name)
    first = ben.expenses("DeleteExpense", request).expense

    # A delete of a deleted expense changes nothing, the modifier included.
    again = ann.expenses("DeleteExpense", request).expense

    assert again == first
    assert again.last_modifier == ben.user


def test_delete_for_other_member_rejected(pair):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    request = expenses_pb.DeleteExpenseRequest(name=name, last_modifier=ann.user)

    error = fails(lambda: ben.expenses("DeleteExpense", request))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error)["ErrorInfo"].reason == "ACTING_FOR_OTHER"
    assert "may not record" in error.details()
    assert "as last_modifier" in error.details()
    assert not _get_expense(ann, name).HasField("delete_time")


def test_rest_delete_and_undelete_record_caller(pair, http):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])

    deleted = http.delete(
        f"/v1/{name}", headers={"authorization": f"Bearer {ben.credential}"}
    )
    restored = http.post(
        f"/v1/{name}:undelete",
        json={},
        headers={"authorization": f"Bearer {ann.credential}"},
    )

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["expense"]["lastModifier"] == ben.user
    assert restored.status_code == 200, restored.text
    assert restored.json()["expense"]["lastModifier"] == ann.user


def test_rest_create_without_creator(pair, http):
    ann, ben, group = pair
    settlement = {
        "payer": ben.user,
        "payee": ann.user,
        "amount": {"currencyCode": "EUR", "units": "5"},
        "settlementDate": {"year": 2024, "month": 5, "day": 2},
    }

    response = http.post(
        f"/v1/{group}/settlements",
        json=settlement,
        headers={"authorization": f"Bearer {ben.credential}"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["settlement"]["creator"] == ben.user


def test_create_retry_spelling_out_creator_replays(pair):
    ann, ben, group = pair
    request_id = str(uuid.uuid4())
    omitted = expenses_pb.CreateExpenseRequest(
        parent=group,
        expense=_unsigned_expense(ann.user, [ann.user, ben.user]),
        request_id=request_id,
    )
    spelled = expenses_pb.CreateExpenseRequest()
    spelled.CopyFrom(omitted)
    spelled.expense.creator = ann.user

    first = ann.expenses("CreateExpense", omitted).expense
    retried = ann.expenses("CreateExpense", spelled).expense
    retried_again = ann.expenses("CreateExpense", omitted).expense

    assert retried.name == first.name
    assert retried_again.name == first.name
    assert first.creator == ann.user


def test_create_retry_by_other_member_rejected(pair):
    ann, ben, group = pair
    request = expenses_pb.CreateExpenseRequest(
        parent=group,
        expense=_unsigned_expense(ann.user, [ann.user, ben.user]),
        request_id=str(uuid.uuid4()),
    )
    ann.expenses("CreateExpense", request)

    # The same bytes from another caller name another creator.
    error = fails(lambda: ben.expenses("CreateExpense", request))

    assert error.code() == INVALID
    assert error_details(error)["ErrorInfo"].reason == "REQUEST_ID_REUSED"


def test_batch_creators_default_to_caller(pair):
    ann, ben, group = pair
    creates = [
        expenses_pb.CreateExpenseRequest(
            expense=_unsigned_expense(ann.user, [ann.user, ben.user])
        )
        for _ in range(2)
    ]
    omitted = expenses_pb.BatchCreateExpensesRequest(
        parent=group, requests=creates, request_id=str(uuid.uuid4())
    )
    spelled = expenses_pb.BatchCreateExpensesRequest()
    spelled.CopyFrom(omitted)
    for create in spelled.requests:
        create.expense.creator = ann.user

    first = ann.expenses("BatchCreateExpenses", omitted).expenses
    retried = ann.expenses("BatchCreateExpenses", spelled).expenses

    assert [expense.creator for expense in first] == [ann.user, ann.user]
    assert [expense.name for expense in retried] == [e.name for e in first]


def test_settlement_creator_defaults_to_caller(pair):
    ann, ben, group = pair
    request_id = str(uuid.uuid4())
    omitted = balances_pb.CreateSettlementRequest(
        parent=group, settlement=_settlement(ben.user, ann.user), request_id=request_id
    )
    spelled = balances_pb.CreateSettlementRequest(
        parent=group,
        settlement=_settlement(ben.user, ann.user, creator=ann.user),
        request_id=request_id,
    )

    first = ann.balances("CreateSettlement", omitted).settlement
    retried = ann.balances("CreateSettlement", spelled).settlement

    assert first.creator == ann.user
    assert retried.name == first.name


# The CLI with an API key: the server fills the author


@dataclass
class Output:
    status: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run `splitlog ARGS --gateway ADDRESS` without a saved session."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)

    def run(gateway: Gateway, *args: str) -> Output:
        status = main([*args, "--gateway", f"127.0.0.1:{gateway.grpc_port}"])
        captured = capsys.readouterr()
        return Output(status, captured.out, captured.err)

    return run


def _cli_json(cli, gateway: Gateway, *args: str) -> dict:
    result = cli(gateway, *args, "--format", "json")
    assert result.status == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_api_key_records_its_owner(stack, pair, cli):
    ann, ben, group = pair
    _, key = operator_admin_key(stack.data_dir, ann.user)
    gateway = stack.gateway

    # ben paid, and ann records it with her key without --by.
    created = _cli_json(
        cli, gateway, "expenses", "add", group, "--description", "Taxi",
        "--amount", "12.00", "--currency", "EUR", "--paid-by", ben.user,
        "--participant", ann.user, "--participant", ben.user, "--token", key,
    )  # fmt: skip
    updated = _cli_json(
        cli, gateway, "expenses", "update", created["name"],
        "--description", "Cab", "--token", key,
    )  # fmt: skip
    settled = _cli_json(
        cli, gateway, "settlements", "add", group, "--from", ben.user,
        "--to", ann.user, "--amount", "6.00", "--currency", "EUR", "--token", key,
    )  # fmt: skip
    flat = _cli_json(cli, gateway, "groups", "create", "--name", "Flat", "--token", key)

    assert created["creator"] == ann.user
    assert updated["lastModifier"] == ann.user
    assert updated["creator"] == ann.user
    assert settled["creator"] == ann.user
    assert flat["creator"] == ann.user


def test_cli_by_option_overrides_key_owner(stack, pair, cli):
    ann, ben, group = pair
    _, key = operator_admin_key(stack.data_dir, ann.user)

    created = _cli_json(
        cli, stack.gateway, "expenses", "add", group, "--description", "Taxi",
        "--amount", "12.00", "--currency", "EUR", "--paid-by", ann.user,
        "--participant", ann.user, "--participant", ben.user,
        "--by", ben.user, "--token", key,
    )  # fmt: skip

    assert created["creator"] == ben.user


# Auth off: the fields stay required, except for a delete or restore


@pytest.fixture(scope="module")
def open_stack(loop_thread, tmp_path_factory) -> Iterator[Stack]:
    yield from _run_stack(loop_thread, tmp_path_factory.mktemp("author-off"), False)


@pytest.fixture(scope="module")
def open_caller(open_stack: Stack) -> Iterator[Caller]:
    """A caller without a credential on the stack with auth off."""
    address = f"127.0.0.1:{open_stack.gateway.grpc_port}"
    with grpc.insecure_channel(address) as opened:
        caller = Caller(opened, "users/nobody", "unused")
        caller.metadata = ()
        yield caller


def _assert_required_without_auth(error: grpc.RpcError, field: str) -> None:
    assert error.code() == INVALID, error.details()
    assert error_details(error)["ErrorInfo"].reason == "REQUIRED"
    assert f"{field}: {AUTH_OFF}" in error.details()
    assert "such as 'users/alice'" in error.details()


def test_group_creator_required_without_auth(open_caller):
    request = users_pb.CreateGroupRequest(group=users_pb.Group(display_name="Trip"))

    error = fails(lambda: open_caller.users("CreateGroup", request))

    _assert_required_without_auth(error, "group.creator")


def test_expense_authors_required_without_auth(open_caller):
    create = expenses_pb.CreateExpenseRequest(
        parent="groups/trip-one",
        expense=_unsigned_expense(
            "users/ann-lima", ["users/ann-lima", "users/ben-costa"]
        ),
    )
    update = expenses_pb.UpdateExpenseRequest(
        expense=expenses_pb.Expense(
            name="groups/trip-one/expenses/dinner", description="Lunch"
        )
    )

    create_error = fails(lambda: open_caller.expenses("CreateExpense", create))
    update_error = fails(lambda: open_caller.expenses("UpdateExpense", update))

    _assert_required_without_auth(create_error, "expense.creator")
    _assert_required_without_auth(update_error, "expense.last_modifier")


def test_delete_modifier_optional_without_auth(open_caller):
    # An empty last_modifier keeps the stored one, so the call goes on to
    # look up the expense, which does not exist.
    name = "groups/trip-one/expenses/dinner"
    delete = expenses_pb.DeleteExpenseRequest(name=name)
    undelete = expenses_pb.UndeleteExpenseRequest(name=name)

    delete_error = fails(lambda: open_caller.expenses("DeleteExpense", delete))
    undelete_error = fails(lambda: open_caller.expenses("UndeleteExpense", undelete))

    assert delete_error.code() == grpc.StatusCode.NOT_FOUND, delete_error.details()
    assert undelete_error.code() == grpc.StatusCode.NOT_FOUND


def test_batch_creator_required_without_auth(open_caller):
    request = expenses_pb.BatchCreateExpensesRequest(
        parent="groups/trip-one",
        requests=[
            expenses_pb.CreateExpenseRequest(
                expense=_unsigned_expense(
                    "users/ann-lima", ["users/ann-lima", "users/ben-costa"]
                )
            )
        ],
    )

    error = fails(lambda: open_caller.expenses("BatchCreateExpenses", request))

    _assert_required_without_auth(error, "requests[0].expense.creator")


def test_settlement_creator_required_without_auth(open_caller):
    request = balances_pb.CreateSettlementRequest(
        parent="groups/trip-one",
        settlement=_settlement("users/ann-lima", "users/ben-costa"),
    )

    error = fails(lambda: open_caller.balances("CreateSettlement", request))

    _assert_required_without_auth(error, "settlement.creator")


def test_cli_api_key_without_auth_names_option(open_stack, cli):
    key = "slk_not-checked-without-auth"
    gateway = open_stack.gateway

    expense = cli(
        gateway, "expenses", "add", "groups/trip-one", "--description", "Taxi",
        "--amount", "12.00", "--currency", "EUR", "--paid-by", "users/ann-lima",
        "--participant", "users/ann-lima", "--token", key,
    )  # fmt: skip
    group = cli(gateway, "groups", "create", "--name", "Flat", "--token", key)

    assert expense.status == 1
    assert f"expense.creator: {AUTH_OFF}" in expense.stderr
    assert "Name the user with --by USER." in expense.stderr
    assert group.status == 1
    assert f"group.creator: {AUTH_OFF}" in group.stderr
    assert "Name the user with --creator USER." in group.stderr


def test_cli_group_without_credential_needs_creator(open_stack, cli):
    result = cli(open_stack.gateway, "groups", "create", "--name", "Flat")

    assert result.status == 2
    assert "--creator is missing, and no user is signed in to" in result.stderr
    assert "give --creator USER" in result.stderr
    assert result.stdout == ""


# Auth on: a filled-in author who is not a member


@pytest.fixture
def outside_admin(stack, channel) -> Caller:
    """Return a caller with an admin API key whose owner is in no group."""
    owner = _sign_up(channel, "root")
    _, secret = operator_admin_key(stack.data_dir, owner.user)
    return Caller(channel, owner.user, secret)


def _assert_filled_hint(error: grpc.RpcError, field: str, caller: str) -> None:
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(error)["ErrorInfo"].reason == "NOT_A_GROUP_MEMBER"
    assert (
        f"{field} was empty, so it was set to the caller {caller!r}, who is not "
        "a member of the group" in error.details()
    )
    assert f"set {field} to a member, or add the caller to the group" in error.details()


def test_filled_creator_not_member(pair, outside_admin):
    ann, ben, group = pair
    request = expenses_pb.CreateExpenseRequest(
        parent=group, expense=_unsigned_expense(ann.user, [ann.user, ben.user])
    )

    error = fails(lambda: outside_admin.expenses("CreateExpense", request))

    _assert_filled_hint(error, "expense.creator", outside_admin.user)


def test_filled_batch_creators_not_member(pair, outside_admin):
    ann, ben, group = pair
    creates = [
        expenses_pb.CreateExpenseRequest(
            expense=_unsigned_expense(ann.user, [ann.user, ben.user])
        )
        for _ in range(2)
    ]
    creates[1].expense.creator = ann.user
    request = expenses_pb.BatchCreateExpensesRequest(parent=group, requests=creates)

    error = fails(lambda: outside_admin.expenses("BatchCreateExpenses", request))

    _assert_filled_hint(error, "requests[0].expense.creator", outside_admin.user)
    assert "requests[1]" not in error.details()


def test_filled_last_modifier_not_member(pair, outside_admin):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    request = expenses_pb.UpdateExpenseRequest(
        expense=expenses_pb.Expense(name=name, description="Lunch")
    )

    error = fails(lambda: outside_admin.expenses("UpdateExpense", request))

    _assert_filled_hint(error, "expense.last_modifier", outside_admin.user)


def test_filled_settlement_creator_not_member(pair, outside_admin):
    ann, ben, group = pair
    request = balances_pb.CreateSettlementRequest(
        parent=group, settlement=_settlement(ben.user, ann.user)
    )

    error = fails(lambda: outside_admin.balances("CreateSettlement", request))

    _assert_filled_hint(error, "settlement.creator", outside_admin.user)


def test_named_creator_not_member_has_no_hint(pair, outside_admin):
    ann, ben, group = pair
    expense = _unsigned_expense(ann.user, [ann.user, ben.user])
    expense.creator = outside_admin.user
    request = expenses_pb.CreateExpenseRequest(parent=group, expense=expense)

    error = fails(lambda: outside_admin.expenses("CreateExpense", request))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "was empty" not in error.details()


def _deleted_by(caller: Caller, name: str) -> expenses_pb.Expense:
    request = expenses_pb.DeleteExpenseRequest(name=name)
    return caller.expenses("DeleteExpense", request).expense


def test_filled_delete_modifier_not_member(pair, outside_admin):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    request = expenses_pb.DeleteExpenseRequest(name=name)

    error = fails(lambda: outside_admin.expenses("DeleteExpense", request))

    _assert_filled_hint(error, "last_modifier", outside_admin.user)
    assert not _get_expense(ann, name).HasField("delete_time")


def test_filled_restore_modifier_not_member(pair, outside_admin):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    deleted = _deleted_by(ann, name)
    request = expenses_pb.UndeleteExpenseRequest(name=name)

    error = fails(lambda: outside_admin.expenses("UndeleteExpense", request))

    _assert_filled_hint(error, "last_modifier", outside_admin.user)
    assert _get_expense(ann, name) == deleted


def test_admin_writes_naming_member(pair, outside_admin):
    # An administrator outside the group records each change in a member's
    # name: update, delete and restore follow the same rule.
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    update = expenses_pb.UpdateExpenseRequest(
        expense=expenses_pb.Expense(
            name=name, description="Lunch", last_modifier=ben.user
        )
    )
    delete = expenses_pb.DeleteExpenseRequest(name=name, last_modifier=ben.user)
    undelete = expenses_pb.UndeleteExpenseRequest(name=name, last_modifier=ann.user)

    updated = outside_admin.expenses("UpdateExpense", update).expense
    deleted = outside_admin.expenses("DeleteExpense", delete).expense
    restored = outside_admin.expenses("UndeleteExpense", undelete).expense

    assert updated.last_modifier == ben.user
    assert deleted.last_modifier == ben.user
    assert deleted.HasField("delete_time")
    assert restored.last_modifier == ann.user
    assert not restored.HasField("delete_time")


def test_admin_outside_group_deletes_settlement(pair, outside_admin):
    # A settlement has no modifier field, so its delete and restore record
    # no author and need no member to name; the etag and update_time move.
    ann, ben, group = pair
    created = ben.pay(group, ann.user, 5)
    first = ann.balances(
        "GetSettlement", balances_pb.GetSettlementRequest(name=created)
    ).settlement

    deleted = outside_admin.balances(
        "DeleteSettlement", balances_pb.DeleteSettlementRequest(name=created)
    ).settlement
    restored = outside_admin.balances(
        "UndeleteSettlement", balances_pb.UndeleteSettlementRequest(name=created)
    ).settlement

    assert deleted.HasField("delete_time")
    assert deleted.etag != first.etag
    assert deleted.update_time.ToNanoseconds() > first.update_time.ToNanoseconds()
    assert not restored.HasField("delete_time")
    assert restored.etag != deleted.etag
    assert restored.update_time.ToNanoseconds() > deleted.update_time.ToNanoseconds()
    assert restored.creator == ben.user


def test_cli_admin_outside_group_needs_by(stack, pair, outside_admin, cli):
    ann, ben, group = pair
    name = ann.create_expense(group, [ann.user, ben.user])
    gateway, key = stack.gateway, outside_admin.credential

    rejected = cli(gateway, "expenses", "delete", name, "--token", key)
    deleted = _cli_json(
        cli, gateway, "expenses", "delete", name, "--by", ben.user, "--token", key
    )
    restored = _cli_json(
        cli, gateway, "expenses", "restore", name, "--by", ann.user, "--token", key
    )

    assert rejected.status == 1
    assert "NOT_A_GROUP_MEMBER" in rejected.stderr
    assert "--by USER" in rejected.stderr
    assert deleted["lastModifier"] == ben.user
    assert restored["lastModifier"] == ann.user
    assert "deleteTime" not in restored
