"""UpdateExpense, DeleteExpense and UndeleteExpense against real servers."""

from __future__ import annotations

import datetime

import grpc
import pytest
from google.protobuf import field_mask_pb2

from expense_service import storage as expense_storage
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime.database import Database
from tests.expense_service.support import (
    TIMEOUT,
    as_text,
    create_expense,
    create_group,
    create_outsider,
    day,
    equal_expense,
    error_details,
    latest_sequence,
    money,
    owed,
    reason_of,
    violated_fields,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def group(clients):
    return create_group(clients.users, size=3)


@pytest.fixture
def expense(clients, group):
    return create_expense(clients, group, equal_expense(group, "30.00"))


def _update(clients, expense: pb.Expense, *paths: str) -> pb.Expense:
    request = pb.UpdateExpenseRequest(
        expense=expense, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )
    return clients.expenses.UpdateExpense(request, timeout=TIMEOUT).expense


def _update_error(clients, expense: pb.Expense, *paths: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _update(clients, expense, *paths)
    return caught.value


def _get(clients, name: str) -> pb.Expense:
    return clients.expenses.GetExpense(
        pb.GetExpenseRequest(name=name), timeout=TIMEOUT
    ).expense


def _delete(
    clients, expense: pb.Expense, etag: str = "", modifier: str = ""
) -> pb.Expense:
    """Delete an expense in the name of `modifier`, by default its creator."""
    request = pb.DeleteExpenseRequest(
        name=expense.name, etag=etag, last_modifier=modifier or expense.creator
    )
    return clients.expenses.DeleteExpense(request, timeout=TIMEOUT).expense


def _undelete(
    clients, expense: pb.Expense, etag: str = "", modifier: str = ""
) -> pb.Expense:
    """Restore an expense in the name of `modifier`, by default its creator."""
    request = pb.UndeleteExpenseRequest(
        name=expense.name, etag=etag, last_modifier=modifier or expense.creator
    )
    return clients.expenses.UndeleteExpense(request, timeout=TIMEOUT).expense


def _change(expense: pb.Expense, modifier: str, **fields) -> pb.Expense:
    return pb.Expense(name=expense.name, last_modifier=modifier, **fields)


# UpdateExpense


def test_update_description_keeps_split(clients, group, expense):
    modifier = group.members[1]

    updated = _update(
        clients,
        _change(expense, modifier, description="Brunch", etag=expense.etag),
        "description",
    )

    assert updated.description == "Brunch"
    assert updated.last_modifier == modifier
    assert updated.creator == expense.creator
    assert updated.etag == '"2"'
    assert updated.owed_amounts == expense.owed_amounts
    assert updated.create_time == expense.create_time
    assert updated.update_time.ToNanoseconds() > expense.update_time.ToNanoseconds()
    assert _get(clients, expense.name) == updated


def test_update_with_too_many_payers_rejected(clients, group, expense):
    payers = [
        pb.Payer(user=f"users/u{index}", amount=money("0.50")) for index in range(60)
    ]

    error = _update_error(
        clients, _change(expense, group.members[0], payers=payers), "payers"
    )

    assert error.code() == INVALID
    assert reason_of(error) == "TOO_MANY_PAYERS"
    assert violated_fields(error) == ["expense.payers"]
    assert "has 60 entries" in error.details()
    assert _get(clients, expense.name).payers == expense.payers


def test_update_moves_the_split(clients, group, expense):
    a, b, c = group.members
    split = pb.Split(
        type=pb.SPLIT_TYPE_SHARES,
        participants=[
            pb.SplitParticipant(user=b, shares=1),
            pb.SplitParticipant(user=c, shares=3),
        ],
    )
    change = _change(
        expense,
        a,
        total=money("40.00"),
        payers=[pb.Payer(user=c, amount=money("40.00"))],
        split=split,
    )

    updated = _update(clients, change, "total", "payers", "split")

    assert {u: as_text(m) for u, m in owed(updated).items()} == {
        b: "10.00",
        c: "30.00",
    }
    assert as_text(updated.total) == "40.00"
    assert updated.split == split


def test_update_without_mask_changes_populated_fields(clients, group, expense):
    change = _change(
        expense, group.members[0], notes="Tip included", category=pb.CATEGORY_TRAVEL
    )

    updated = _update(clients, change)

    assert updated.notes == "Tip included"
    assert updated.category == pb.CATEGORY_TRAVEL
    assert updated.description == expense.description
    assert updated.expense_date == expense.expense_date


def test_update_star_replaces_everything(clients, group, expense):
    replacement = equal_expense(
        group,
        "9.00",
        "EUR",
        participants=group.members[:2],
        description="Taxi",
        expense_date=day(2024, 1, 3),
    )
    replacement.name = expense.name
    replacement.last_modifier = group.members[2]

    updated = _update(clients, replacement, "*")

    assert updated.description == "Taxi"
    assert updated.currency_code == "EUR"
    assert updated.category == pb.CATEGORY_GENERAL
    assert updated.notes == ""
    assert sorted(as_text(m) for m in owed(updated).values()) == ["4.50", "4.50"]


def test_update_reordered_participants_same_amounts(clients, group):
    members = group.members
    created = create_expense(
        clients, group, equal_expense(group, "1.00", participants=members)
    )
    split = pb.Split(
        type=pb.SPLIT_TYPE_EQUAL,
        participants=[pb.SplitParticipant(user=u) for u in reversed(members)],
    )

    updated = _update(clients, _change(created, members[0], split=split), "split")

    assert owed(updated) == owed(created)
    assert [line.user for line in updated.owed_amounts] == list(reversed(members))


def test_update_member_who_left_may_stay(clients, group, expense):
    leaver = group.members[2]
    clients.users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(
            name=f"{group.name}/members/{leaver.removeprefix('users/')}"
        ),
        timeout=TIMEOUT,
    )

    updated = _update(
        clients, _change(expense, group.members[0], description="Kept"), "description"
    )

    assert leaver in owed(updated)


def test_update_adding_non_member_fails(clients, group, expense):
    outsider = create_outsider(clients.users)
    split = pb.Split(
        type=pb.SPLIT_TYPE_EQUAL,
        participants=[pb.SplitParticipant(user=u) for u in [*group.members, outsider]],
    )

    error = _update_error(clients, _change(expense, group.members[0], split=split))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    subjects = [
        v.subject for v in error_details(error)["PreconditionFailure"].violations
    ]
    assert subjects == [f"{group.name}/members/{outsider.removeprefix('users/')}"]
    assert _get(clients, expense.name) == expense


def test_update_by_non_member_fails(clients, group, expense):
    outsider = create_outsider(clients.users)

    error = _update_error(
        clients, _change(expense, outsider, description="Lunch"), "description"
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    subjects = [
        v.subject for v in error_details(error)["PreconditionFailure"].violations
    ]
    assert subjects == [f"{group.name}/members/{outsider.removeprefix('users/')}"]
    assert "expense.last_modifier" in error.details()
    assert _get(clients, expense.name) == expense


def _refresh_members(clients, group) -> None:
    # The service reuses a group's member list for a few seconds, but fetches
    # it again when a write names someone missing from it, as this one does.
    with pytest.raises(grpc.RpcError) as refresh:
        create_expense(
            clients,
            group,
            equal_expense(group, payer=create_outsider(clients.users)),
        )
    assert refresh.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _deactivate_now(clients, group, user: str) -> None:
    """Deactivate a user and make the service fetch the group's members again."""
    clients.users.DeactivateUser(
        users_pb.DeactivateUserRequest(name=user), timeout=TIMEOUT
    )
    _refresh_members(clients, group)


def test_update_adding_deactivated_user_fails(clients, group):
    first_two = group.members[:2]
    expense = create_expense(
        clients, group, equal_expense(group, "30.00", participants=first_two)
    )
    added = group.members[2]
    _deactivate_now(clients, group, added)
    split = pb.Split(
        type=pb.SPLIT_TYPE_EQUAL,
        participants=[pb.SplitParticipant(user=u) for u in group.members],
    )

    error = _update_error(clients, _change(expense, group.members[0], split=split))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "USER_DEACTIVATED"
    assert "expense.split.participants[2].user" in error.details()
    assert "Name an active member instead" in error.details()
    assert _get(clients, expense.name) == expense


def test_update_by_deactivated_modifier_fails(clients, group, expense):
    modifier = group.members[1]
    _deactivate_now(clients, group, modifier)

    error = _update_error(
        clients, _change(expense, modifier, description="Lunch"), "description"
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "USER_DEACTIVATED"
    assert "expense.last_modifier" in error.details()
    assert _get(clients, expense.name) == expense


def test_update_deactivated_user_may_stay(clients, group, expense):
    _deactivate_now(clients, group, group.members[2])

    updated = _update(
        clients, _change(expense, group.members[0], description="Kept"), "description"
    )

    assert updated.description == "Kept"
    assert group.members[2] in owed(updated)


def test_update_empty_changes_nothing(clients, group, expense):
    before = latest_sequence(clients)

    updated = _update(clients, _change(expense, group.members[1]))

    assert updated == expense
    assert _get(clients, expense.name) == expense
    assert latest_sequence(clients) == before


@pytest.mark.parametrize(
    ("fields", "paths"),
    [
        ({"description": "Dinner"}, ["description"]),
        ({"description": "Dinner"}, []),
        ({"category": pb.CATEGORY_GENERAL}, ["category"]),
        ({"notes": ""}, ["notes"]),
        ({"expense_date": day()}, ["expense_date"]),
    ],
)
def test_update_same_value_changes_nothing(clients, group, expense, fields, paths):
    before = latest_sequence(clients)
    change = _change(expense, group.members[1], etag=expense.etag, **fields)

    updated = _update(clients, change, *paths)

    assert updated == expense
    assert updated.last_modifier == expense.last_modifier
    assert _get(clients, expense.name) == expense
    assert latest_sequence(clients) == before


def test_update_star_resent_changes_nothing(clients, group, expense):
    before = latest_sequence(clients)
    resent = pb.Expense()
    resent.CopyFrom(expense)
    resent.last_modifier = group.members[2]

    updated = _update(clients, resent, "*")

    assert updated == expense
    assert latest_sequence(clients) == before


def test_update_no_op_still_checks_etag(clients, group, expense):
    _update(clients, _change(expense, group.members[0], notes="First"))

    error = _update_error(
        clients, _change(expense, group.members[0], notes="First", etag=expense.etag)
    )

    assert error.code() == grpc.StatusCode.ABORTED
    assert reason_of(error) == "ETAG_MISMATCH"


def test_update_no_op_deleted_fails(clients, group, expense):
    _delete(clients, expense)

    error = _update_error(clients, _change(expense, group.members[1]))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "EXPENSE_DELETED"


def test_update_stale_etag_aborted(clients, group, expense):
    _update(clients, _change(expense, group.members[0], description="First"))

    error = _update_error(
        clients,
        _change(expense, group.members[0], description="Second", etag=expense.etag),
    )

    assert error.code() == grpc.StatusCode.ABORTED
    assert reason_of(error) == "ETAG_MISMATCH"
    assert error.details() == (
        f'expense.etag {expense.etag} does not match the current etag "2" of '
        f"{expense.name!r}: it is stale, because the expense has changed since "
        "it was read. Read it again and retry with the current etag"
    )
    assert error_details(error)["ErrorInfo"].metadata["current_etag"] == '"2"'
    assert _get(clients, expense.name).description == "First"


def test_update_deleted_expense_fails(clients, group, expense):
    _delete(clients, expense)

    error = _update_error(clients, _change(expense, group.members[0], notes="x"))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "EXPENSE_DELETED"


def test_update_unknown_expense_not_found(clients, group):
    missing = pb.Expense(
        name=f"{group.name}/expenses/missing", last_modifier=group.members[0]
    )

    error = _update_error(clients, missing, "notes")

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(error) == "EXPENSE_NOT_FOUND"


def test_update_new_total_needs_new_payers(clients, group, expense):
    error = _update_error(
        clients, _change(expense, group.members[0], total=money("45.00")), "total"
    )

    assert error.code() == INVALID
    assert reason_of(error) == "PAYERS_DO_NOT_ADD_UP"
    assert violated_fields(error) == ["expense.payers"]
    assert "15.00 USD under" in error.details()


def test_update_new_currency_needs_new_payers(clients, group, expense):
    error = _update_error(
        clients,
        _change(expense, group.members[0], total=money("30.00", "EUR")),
        "total",
    )

    assert error.code() == INVALID
    assert reason_of(error) == "CURRENCY_MISMATCH"
    assert violated_fields(error) == ["expense.payers[0].amount"]


@pytest.mark.parametrize(
    ("paths", "fields", "field", "reason"),
    [
        (["owed_amounts"], {}, "update_mask.paths[0]", "FIELD_NOT_MUTABLE"),
        (["creator"], {}, "update_mask.paths[0]", "FIELD_NOT_MUTABLE"),
        (["notes", "amount"], {}, "update_mask.paths[1]", "UNKNOWN_FIELD_PATH"),
        (["split.type"], {}, "update_mask.paths[0]", "INVALID_UPDATE_MASK"),
        (["*", "notes"], {}, "update_mask.paths[0]", "INVALID_UPDATE_MASK"),
        (["notes", ""], {}, "update_mask.paths[1]", "INVALID_UPDATE_MASK"),
        (["split"], {}, "expense.split", "REQUIRED"),
        (["description"], {}, "expense.description", "REQUIRED"),
        (["notes"], {"etag": "7"}, "expense.etag", "INVALID_ETAG"),
        (["notes"], {"last_modifier": ""}, "expense.last_modifier", "REQUIRED"),
    ],
)
def test_update_invalid_argument(clients, group, expense, paths, fields, field, reason):
    change = _change(expense, group.members[0])
    for key, value in fields.items():
        setattr(change, key, value)

    error = _update_error(clients, change, *paths)

    assert error.code() == INVALID
    assert reason_of(error) == reason
    assert violated_fields(error) == [field]


def test_update_date_out_of_range(clients, group, expense):
    change = _change(
        expense,
        group.members[1],
        expense_date=day(9999, 12, 31),
        etag=expense.etag,
    )

    error = _update_error(clients, change, "expense_date")

    assert error.code() == INVALID
    assert reason_of(error) == "DATE_OUT_OF_RANGE"
    assert violated_fields(error) == ["expense.expense_date"]
    assert "9999-12-31 is outside the accepted range" in error.details()
    assert _get(clients, expense.name) == expense


def _store_date(db_url: str, name: str, stored: datetime.date) -> None:
    """Write the date of an expense straight to its row, as a release before
    the date range check could have stored it."""
    database = Database(db_url)
    try:
        with database.transaction() as session:
            table = expense_storage.ExpenseRow.__table__
            session.execute(
                table.update().where(table.c.name == name).values(expense_date=stored)
            )
    finally:
        database.dispose()


@pytest.mark.parametrize("paths", [["*"], []], ids=["all", "no_mask"])
def test_update_keeps_legacy_date(clients, group, expense, module_db_url, paths):
    _store_date(module_db_url, expense.name, datetime.date(1850, 1, 1))
    change = _get(clients, expense.name)
    assert change.expense_date == day(1850, 1, 1)
    change.description = "Renamed"
    change.last_modifier = group.members[1]

    updated = _update(clients, change, *paths)

    assert updated.description == "Renamed"
    assert updated.expense_date == day(1850, 1, 1)
    assert _get(clients, expense.name) == updated


def test_update_moving_legacy_date_rejected(clients, group, expense, module_db_url):
    _store_date(module_db_url, expense.name, datetime.date(1850, 1, 1))
    stored = _get(clients, expense.name)
    change = _get(clients, expense.name)
    change.expense_date.CopyFrom(day(1850, 1, 2))
    change.last_modifier = group.members[1]

    error = _update_error(clients, change, "*")

    assert error.code() == INVALID
    assert reason_of(error) == "DATE_OUT_OF_RANGE"
    assert violated_fields(error) == ["expense.expense_date"]
    assert "1850-01-02 is outside the accepted range" in error.details()
    assert _get(clients, expense.name) == stored


def test_update_mask_json_name_suggested(clients, group, expense):
    change = _change(expense, group.members[0], description="Brunch")

    error = _update_error(clients, change, "_description")

    assert error.code() == INVALID
    assert reason_of(error) == "UNKNOWN_FIELD_PATH"
    assert violated_fields(error) == ["update_mask.paths[0]"]
    message = error.details()
    assert "unknown field path 'Description' (received as '_description'" in message
    assert "did you mean 'description'?" in message


# DeleteExpense and UndeleteExpense


def test_delete_is_soft(clients, group, expense):
    deleted = _delete(clients, expense, etag=expense.etag)

    assert deleted.HasField("delete_time")
    assert deleted.etag == '"2"'
    assert deleted.owed_amounts == expense.owed_amounts
    assert _get(clients, expense.name) == deleted
    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=group.name), timeout=TIMEOUT
    )
    assert list(listed.expenses) == []


def test_delete_twice_changes_nothing(clients, expense):
    deleted = _delete(clients, expense)

    again = _delete(clients, expense, etag='"1"')

    assert again == deleted


def test_delete_stale_etag_aborted(clients, group, expense):
    _update(clients, _change(expense, group.members[0], notes="changed"))

    with pytest.raises(grpc.RpcError) as caught:
        _delete(clients, expense, etag=expense.etag)

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "ETAG_MISMATCH"
    assert not _get(clients, expense.name).HasField("delete_time")


def test_delete_records_modifier(clients, group, expense):
    modifier = group.members[1]
    before = latest_sequence(clients)

    deleted = _delete(clients, expense, modifier=modifier)

    assert deleted.last_modifier == modifier
    assert deleted.creator == expense.creator
    assert deleted.update_time == deleted.delete_time
    assert deleted.update_time.ToNanoseconds() > expense.update_time.ToNanoseconds()
    assert _get(clients, expense.name) == deleted
    assert latest_sequence(clients) == before + 1


def test_delete_twice_keeps_first_modifier(clients, group, expense):
    first = _delete(clients, expense, modifier=group.members[1])

    again = _delete(clients, expense, modifier=group.members[2])

    assert again == first
    assert _get(clients, expense.name).last_modifier == group.members[1]


def test_delete_without_modifier_keeps_stored(clients, group, expense):
    # With authentication off, a delete or restore that names no modifier
    # keeps the stored one, as a REST DELETE sends no body.
    request = pb.DeleteExpenseRequest(name=expense.name)

    deleted = clients.expenses.DeleteExpense(request, timeout=TIMEOUT).expense
    restore = pb.UndeleteExpenseRequest(name=expense.name)
    restored = clients.expenses.UndeleteExpense(restore, timeout=TIMEOUT).expense

    assert deleted.HasField("delete_time")
    assert deleted.last_modifier == expense.last_modifier
    assert deleted.etag == '"2"'
    assert deleted.update_time.ToNanoseconds() > expense.update_time.ToNanoseconds()
    assert not restored.HasField("delete_time")
    assert restored.last_modifier == expense.last_modifier
    assert restored.etag == '"3"'
    assert _get(clients, expense.name) == restored


def test_delete_retry_by_former_member(clients, group, expense):
    leaver = group.members[2]
    deleted = _delete(clients, expense, modifier=leaver)
    clients.users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(
            name=f"{group.name}/members/{leaver.removeprefix('users/')}"
        ),
        timeout=TIMEOUT,
    )
    _refresh_members(clients, group)

    # The retry changes nothing, so it does not check the modifier.
    again = _delete(clients, expense, modifier=leaver)

    assert again == deleted


def test_undelete_not_deleted_skips_modifier(clients, expense):
    outsider = create_outsider(clients.users)

    with pytest.raises(grpc.RpcError) as caught:
        _undelete(clients, expense, modifier=outsider)

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "EXPENSE_NOT_DELETED"


def test_undelete_records_modifier(clients, group, expense):
    deleted = _delete(clients, expense, modifier=group.members[1])

    restored = _undelete(clients, expense, modifier=group.members[2])

    assert restored.last_modifier == group.members[2]
    assert restored.update_time.ToNanoseconds() > deleted.update_time.ToNanoseconds()
    assert _get(clients, expense.name) == restored


def test_delete_by_non_member_rejected(clients, expense):
    outsider = create_outsider(clients.users)
    before = latest_sequence(clients)

    with pytest.raises(grpc.RpcError) as caught:
        _delete(clients, expense, modifier=outsider)

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    assert f"{outsider!r} (last_modifier) is not a member" in error.details()
    assert error_details(error)["ErrorInfo"].metadata["fields"] == "last_modifier"
    assert _get(clients, expense.name) == expense
    assert latest_sequence(clients) == before


def test_undelete_by_non_member_rejected(clients, expense):
    deleted = _delete(clients, expense)
    outsider = create_outsider(clients.users)

    with pytest.raises(grpc.RpcError) as caught:
        _undelete(clients, expense, modifier=outsider)

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    assert f"{outsider!r} (last_modifier) is not a member" in error.details()
    assert _get(clients, expense.name) == deleted


def test_undelete_restores(clients, expense):
    deleted = _delete(clients, expense)

    restored = _undelete(clients, expense, etag=deleted.etag)

    assert not restored.HasField("delete_time")
    assert restored.etag == '"3"'
    assert restored.owed_amounts == expense.owed_amounts
    assert _get(clients, expense.name) == restored


def test_undelete_with_former_member_fails(clients, group, expense):
    deleted = _delete(clients, expense)
    leaver = group.members[2]
    clients.users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(
            name=f"{group.name}/members/{leaver.removeprefix('users/')}"
        ),
        timeout=TIMEOUT,
    )
    _refresh_members(clients, group)
    before = latest_sequence(clients)

    with pytest.raises(grpc.RpcError) as caught:
        _undelete(clients, expense, etag=deleted.etag)

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    subjects = [
        v.subject for v in error_details(error)["PreconditionFailure"].violations
    ]
    assert subjects == [f"{group.name}/members/{leaver.removeprefix('users/')}"]
    assert "(split.participants[2].user of the stored expense)" in error.details()
    assert _get(clients, expense.name) == deleted
    assert latest_sequence(clients) == before


def test_undelete_with_deactivated_user_fails(clients, group, expense):
    deleted = _delete(clients, expense)
    _deactivate_now(clients, group, group.members[2])

    with pytest.raises(grpc.RpcError) as caught:
        _undelete(clients, expense, etag=deleted.etag)

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "USER_DEACTIVATED"
    assert "(split.participants[2].user of the stored expense)" in error.details()
    assert "cannot be restored" in error.details()
    assert "Name an active member" not in error.details()
    assert _get(clients, expense.name) == deleted


def test_undelete_not_deleted_already_exists(clients, expense):
    with pytest.raises(grpc.RpcError) as caught:
        _undelete(clients, expense)

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "EXPENSE_NOT_DELETED"
    assert error_details(caught.value)["ResourceInfo"].resource_name == expense.name


def test_undelete_stale_etag_aborted(clients, expense):
    _delete(clients, expense)

    with pytest.raises(grpc.RpcError) as caught:
        _undelete(clients, expense, etag=expense.etag)

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "ETAG_MISMATCH"


@pytest.mark.parametrize("method", ["DeleteExpense", "UndeleteExpense"])
def test_delete_and_undelete_errors(clients, group, method):
    call = getattr(clients.expenses, method)
    request_type = getattr(pb, f"{method}Request")
    missing = f"{group.name}/expenses/missing"

    with pytest.raises(grpc.RpcError) as not_found:
        call(
            request_type(name=missing, last_modifier=group.members[0]),
            timeout=TIMEOUT,
        )
    with pytest.raises(grpc.RpcError) as malformed:
        call(
            request_type(name="groups/x", etag="bad", last_modifier="alice"),
            timeout=TIMEOUT,
        )

    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(not_found.value) == "EXPENSE_NOT_FOUND"
    assert malformed.value.code() == INVALID
    assert violated_fields(malformed.value) == ["name", "etag", "last_modifier"]
