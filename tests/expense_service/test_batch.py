"""BatchCreateExpenses against real servers: all or nothing, idempotency, limits."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from expense_service import servicer
from expense_service import storage as expense_storage
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog_runtime.database import Database
from splitlog_runtime.limits import DEFAULTS
from tests.expense_service.support import (
    TIMEOUT,
    backlog,
    create_expense,
    create_group,
    create_outsider,
    equal_expense,
    error_details,
    latest_sequence,
    money,
    new_request_id,
    reason_of,
    violated_fields,
)


@pytest.fixture
def group(clients):
    return create_group(clients.users, size=3)


def _creates(group, count: int, **request) -> list[pb.CreateExpenseRequest]:
    return [
        pb.CreateExpenseRequest(
            expense=equal_expense(group, f"{index + 1}.00"), **request
        )
        for index in range(count)
    ]


def _batch(clients, group, creates, **request) -> list[pb.Expense]:
    return list(
        clients.expenses.BatchCreateExpenses(
            pb.BatchCreateExpensesRequest(
                parent=group.name, requests=creates, **request
            ),
            timeout=TIMEOUT,
        ).expenses
    )


def _batch_error(clients, group, creates, **request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _batch(clients, group, creates, **request)
    return caught.value


def _listed(clients, group) -> list[pb.Expense]:
    return list(
        clients.expenses.ListExpenses(
            pb.ListExpensesRequest(parent=group.name, page_size=1000),
            timeout=TIMEOUT,
        ).expenses
    )


def test_batch_writes_every_expense_with_one_event_each(clients, group):
    create_expense(clients, group)
    before = latest_sequence(clients)

    created = _batch(clients, group, _creates(group, 5))

    assert [expense.total.units for expense in created] == [1, 2, 3, 4, 5]
    assert all(
        expense.name.startswith(f"{group.name}/expenses/") for expense in created
    )
    events = backlog(clients, before)
    assert [event.expense for event in events] == [e.name for e in created]
    assert len(_listed(clients, group)) == 6


def test_bad_request_writes_nothing_and_names_its_index(clients, group):
    creates = _creates(group, 4)
    creates[2].expense.total.units = 99  # The payer no longer pays the total.

    error = _batch_error(clients, group, creates)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("requests[2].expense")
    assert all(field.startswith("requests[2].") for field in violated_fields(error))
    assert _listed(clients, group) == []


def test_too_many_payers_in_one_request_writes_nothing(clients, group):
    creates = _creates(group, 3)
    payers = [
        pb.Payer(user=f"users/u{index}", amount=money("0.01")) for index in range(51)
    ]
    creates[1].expense.total.CopyFrom(money("0.51"))
    creates[1].expense.ClearField("payers")
    creates[1].expense.payers.extend(payers)

    error = _batch_error(clients, group, creates)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "TOO_MANY_PAYERS"
    assert violated_fields(error) == ["requests[1].expense.payers"]
    assert "expense_max_payers" in error.details()
    assert _listed(clients, group) == []


def test_non_member_in_one_request_writes_nothing(clients, group):
    outsider = create_outsider(clients.users)
    creates = _creates(group, 3)
    creates[1].expense.split.participants.add(user=outsider)

    error = _batch_error(clients, group, creates)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert outsider in error.details()
    assert "requests[1].expense.split.participants[3].user" in error.details()
    assert _listed(clients, group) == []


def test_taken_expense_id_writes_nothing(clients, group):
    create_expense(clients, group, expense_id="taken-id")
    creates = _creates(group, 3)
    creates[2].expense_id = "taken-id"

    error = _batch_error(clients, group, creates)

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "requests[2].expense_id" in error.details()
    assert len(_listed(clients, group)) == 1


def test_duplicate_ids_inside_batch_rejected(clients, group):
    creates = _creates(group, 3)
    creates[0].expense_id = "same-id"
    creates[2].expense_id = "same-id"

    error = _batch_error(clients, group, creates)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "DUPLICATE_IN_BATCH"
    assert violated_fields(error) == ["requests[2].expense_id"]
    assert "requests[0]" in error.details()


def test_every_invalid_create_is_listed(clients, group):
    creates = _creates(group, 4)
    creates[1].expense.description = ""
    creates[2].expense.total.units = 0
    creates[2].expense.total.nanos = 0
    creates[3].parent = "groups/elsewhere"

    error = _batch_error(clients, group, creates)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = violated_fields(error)
    assert "requests[1].expense.description" in fields
    assert "requests[2].expense.total" in fields
    assert "requests[3].parent" in fields
    assert not any(field.startswith("requests[0]") for field in fields)
    assert "more invalid" in error.details()
    assert _listed(clients, group) == []


def test_invalid_creates_listed_up_to_a_limit(clients, group):
    count = servicer.MAX_REPORTED_INVALID_CREATES + 5
    creates = _creates(group, count)
    for create in creates:
        create.expense.description = ""

    error = _batch_error(clients, group, creates)

    # The check stops at the limit; the status then lists as many of those
    # fields as fit its size limit, in request order.
    listed = servicer.MAX_REPORTED_INVALID_CREATES
    fields = violated_fields(error)
    assert fields == [f"requests[{i}].expense.description" for i in range(len(fields))]
    assert f"(and {listed - 1} more invalid fields)" in error.details()


def test_other_parent_in_request_rejected(clients, group):
    other = create_group(clients.users, size=2)
    creates = _creates(group, 2)
    creates[1].parent = other.name

    error = _batch_error(clients, group, creates)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["requests[1].parent"]
    assert _listed(clients, group) == []


def test_empty_and_oversized_batches_rejected(clients, group):
    empty = _batch_error(clients, group, [])
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(empty) == ["requests"]

    too_many = [pb.CreateExpenseRequest()] * (DEFAULTS.expense_max_batch_creates + 1)
    error = _batch_error(clients, group, too_many)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "BATCH_TOO_LARGE"
    assert "expense_max_batch_creates" in error.details()
    assert str(DEFAULTS.expense_max_batch_creates) in error.details()


def test_wide_batch_over_pairs_rejected(clients, group):
    # Expenses of one payer split among 200 members: each one writes a line
    # per member when balance_service applies it, and every group's balances
    # wait for that work.
    limit = DEFAULTS.expense_max_batch_pairs
    count = limit // 200 + 1
    # The pair limit is checked before anything else, so the creates need no
    # users.
    wide = pb.CreateExpenseRequest(
        expense=pb.Expense(
            payers=[pb.Payer()],
            split=pb.Split(participants=[pb.SplitParticipant()] * 200),
        )
    )

    error = _batch_error(clients, group, [wide] * count)

    assert limit == 50_000
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "BATCH_TOO_LARGE"
    assert violated_fields(error) == ["requests"]
    assert f"names {count * 200} payer and participant pairs" in error.details()
    assert f"more than expense_max_batch_pairs ({limit})" in error.details()
    assert f"the first {count - 1} creates of this one do" in error.details()
    assert _listed(clients, group) == []


def test_retried_batch_returns_first_result(clients, group):
    request_id = new_request_id()
    creates = _creates(group, 3)
    first = _batch(clients, group, creates, request_id=request_id)
    before = latest_sequence(clients)

    again = _batch(clients, group, creates, request_id=request_id.upper())

    assert again == first
    assert len(_listed(clients, group)) == 3
    assert latest_sequence(clients) == before


def _spelled_out(creates: list[pb.CreateExpenseRequest]) -> list:
    """Copy creates, setting the default category and padding descriptions."""
    copies = []
    for create in creates:
        copy = pb.CreateExpenseRequest()
        copy.CopyFrom(create)
        copy.expense.category = pb.CATEGORY_GENERAL
        copy.expense.description = f" {copy.expense.description} "
        copies.append(copy)
    return copies


def test_retried_batch_spelling_out_defaults_replays(clients, group):
    request_id = new_request_id()
    creates = _creates(group, 3)
    first = _batch(clients, group, creates, request_id=request_id)

    again = _batch(clients, group, _spelled_out(creates), request_id=request_id)

    assert again == first
    assert len(_listed(clients, group)) == 3


def test_inner_retry_spelling_out_defaults_replays(clients, group):
    creates = _creates(group, 2)
    creates[1].request_id = new_request_id()
    single = clients.expenses.CreateExpense(
        pb.CreateExpenseRequest(
            parent=group.name,
            expense=creates[1].expense,
            request_id=creates[1].request_id,
        ),
        timeout=TIMEOUT,
    ).expense

    created = _batch(clients, group, _spelled_out(creates))

    assert created[1] == single
    assert len(_listed(clients, group)) == 2


def _bytes_hash(parent: str, creates: list[pb.CreateExpenseRequest]) -> str:
    """Hash a batch as keys were hashed before requests were normalized."""
    sent = pb.BatchCreateExpensesRequest(parent=parent)
    for create in creates:
        added = sent.requests.add()
        added.CopyFrom(create)
        added.parent = parent
    return hashlib.sha256(sent.SerializeToString(deterministic=True)).hexdigest()


def test_batch_hashed_before_normalization_replays(clients, group, module_db_url):
    """A batch stored with the hash of its bytes still replays the same
    bytes, and a retry that spells out the category left unset."""
    request_id = new_request_id()
    creates = _creates(group, 2)
    first = _batch(clients, group, creates, request_id=request_id)
    database = Database(module_db_url)
    try:
        with database.transaction() as session:
            table = expense_storage.RequestIdRow.__table__
            session.execute(
                table.update()
                .where(table.c.expense_name.in_([e.name for e in first]))
                .values(request_hash=_bytes_hash(group.name, creates))
            )
    finally:
        database.dispose()
    spelled_out = _spelled_out(creates)
    for create in spelled_out:
        create.expense.description = create.expense.description.strip()

    same_bytes = _batch(clients, group, creates, request_id=request_id)
    category_set = _batch(clients, group, spelled_out, request_id=request_id)

    assert same_bytes == first
    assert category_set == first
    assert len(_listed(clients, group)) == 2


def test_batch_request_id_with_other_requests_rejected(clients, group):
    request_id = new_request_id()
    _batch(clients, group, _creates(group, 3), request_id=request_id)

    changed = _creates(group, 3)
    changed[0].expense.description = "Lunch"
    error = _batch_error(clients, group, changed, request_id=request_id)
    shorter = _batch_error(clients, group, _creates(group, 2), request_id=request_id)

    for failed in (error, shorter):
        assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(failed) == "REQUEST_ID_REUSED"
        assert request_id in failed.details()
    assert len(_listed(clients, group)) == 3


def test_inner_request_ids_replay_earlier_creates(clients, group):
    creates = _creates(group, 3)
    for create in creates:
        create.request_id = new_request_id()
    single = clients.expenses.CreateExpense(
        pb.CreateExpenseRequest(
            parent=group.name,
            expense=creates[1].expense,
            request_id=creates[1].request_id,
        ),
        timeout=TIMEOUT,
    ).expense

    created = _batch(clients, group, creates)

    assert created[1] == single
    assert len(_listed(clients, group)) == 3
    again = _batch(clients, group, creates)
    assert again == created
    assert len(_listed(clients, group)) == 3


def test_inner_request_id_with_other_values_rejected(clients, group):
    request_id = new_request_id()
    create_expense(clients, group, request_id=request_id)
    creates = _creates(group, 2)
    creates[1].request_id = request_id

    error = _batch_error(clients, group, creates)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["requests[1].request_id"]
    assert len(_listed(clients, group)) == 1
    assert error_details(error)["ErrorInfo"].reason == "REQUEST_ID_REUSED"


def _assert_key_reused(error: grpc.RpcError, field: str, request_id: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert reason_of(error) == "REQUEST_ID_REUSED"
    assert violated_fields(error) == [field]
    assert request_id in error.details()


def test_batch_with_key_of_single_create_rejected(clients, group):
    request_id = new_request_id()
    create = _creates(group, 1)[0]
    create.parent = group.name
    create.request_id = request_id
    clients.expenses.CreateExpense(create, timeout=TIMEOUT)

    error = _batch_error(clients, group, _creates(group, 1), request_id=request_id)

    _assert_key_reused(error, "request_id", request_id)
    assert "create of one expense" in error.details()
    assert len(_listed(clients, group)) == 1


def test_single_create_with_batch_key_rejected(clients, group):
    request_id = new_request_id()
    creates = _creates(group, 2)
    _batch(clients, group, creates, request_id=request_id)
    single = pb.CreateExpenseRequest(
        parent=group.name, expense=creates[0].expense, request_id=request_id
    )

    with pytest.raises(grpc.RpcError) as caught:
        clients.expenses.CreateExpense(single, timeout=TIMEOUT)
    inner = _creates(group, 1)
    inner[0].request_id = request_id
    in_batch = _batch_error(clients, group, inner)

    _assert_key_reused(caught.value, "request_id", request_id)
    assert "batch of creates" in caught.value.details()
    _assert_key_reused(in_batch, "requests[0].request_id", request_id)
    assert len(_listed(clients, group)) == 2


def test_single_create_with_old_batch_key_rejected(clients, group, module_db_url):
    """A batch written before batches stored their own key is found by the
    per-position keys alone."""
    request_id = new_request_id()
    creates = _creates(group, 2)
    first = _batch(clients, group, creates, request_id=request_id)
    database = Database(module_db_url)
    try:
        with database.transaction() as session:
            table = expense_storage.RequestIdRow.__table__
            session.execute(table.delete().where(table.c.request_id == request_id))
    finally:
        database.dispose()
    single = pb.CreateExpenseRequest(
        parent=group.name, expense=creates[0].expense, request_id=request_id
    )

    with pytest.raises(grpc.RpcError) as caught:
        clients.expenses.CreateExpense(single, timeout=TIMEOUT)

    _assert_key_reused(caught.value, "request_id", request_id)
    assert _batch(clients, group, creates, request_id=request_id) == first
    assert len(_listed(clients, group)) == 2


def test_inner_key_equal_to_batch_key_rejected(clients, group):
    request_id = new_request_id()
    creates = _creates(group, 2)
    creates[1].request_id = request_id

    error = _batch_error(clients, group, creates, request_id=request_id)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "DUPLICATE_IN_BATCH"
    assert violated_fields(error) == ["requests[1].request_id"]
    assert "the batch's request_id" in error.details()
    assert _listed(clients, group) == []
