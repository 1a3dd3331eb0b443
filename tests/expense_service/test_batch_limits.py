"""BatchCreateExpenses limits: the response size and the payer pairs.

A batch whose response would not fit in `max_message_bytes` is rejected
before its transaction commits, so a failed call writes nothing. The servers
here run with a `max_message_bytes` of 64 KiB, so that a small batch has a
response over it while its request fits.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog_runtime import limits
from splitlog_runtime.limits import DEFAULTS
from tests.expense_service.conftest import make_config, open_clients, start_pair
from tests.expense_service.support import (
    TIMEOUT,
    Clients,
    create_group,
    equal_expense,
    error_details,
    new_request_id,
    reason_of,
    violated_fields,
)

LIMIT = 64 * 1024
MEMBERS = 12
# Creates of an equal split among MEMBERS users: their request fits in
# LIMIT, and their response, which adds names, times and owed amounts, does not.
TOO_MANY = 100


@pytest.fixture(scope="module")
def clients(module_db_url, tmp_path_factory) -> Iterator[Clients]:
    config = make_config(tmp_path_factory.mktemp("data"), module_db_url)
    with (
        start_pair(config.replace(max_message_bytes=LIMIT)) as (users, expenses),
        open_clients(users, expenses) as opened,
    ):
        yield opened


@pytest.fixture
def group(clients):
    return create_group(clients.users, size=MEMBERS)


def _request(group, count: int, **fields) -> pb.BatchCreateExpensesRequest:
    creates = [
        pb.CreateExpenseRequest(expense=equal_expense(group, f"{index + 1}.00"))
        for index in range(count)
    ]
    return pb.BatchCreateExpensesRequest(parent=group.name, requests=creates, **fields)


def _batch_error(clients, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        clients.expenses.BatchCreateExpenses(request, timeout=TIMEOUT)
    return caught.value


def _pages(clients, group) -> list[pb.ListExpensesResponse]:
    pages, token = [], ""
    while True:
        page = clients.expenses.ListExpenses(
            pb.ListExpensesRequest(
                parent=group.name, page_size=1000, page_token=token, show_deleted=True
            ),
            timeout=TIMEOUT,
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


def _expense_count(clients, group) -> int:
    return sum(len(page.expenses) for page in _pages(clients, group))


def _position(clients) -> int:
    return clients.ledger.GetLedgerPosition(
        ledger_pb.GetLedgerPositionRequest(), timeout=TIMEOUT
    ).last_sequence


def test_large_response_writes_nothing(clients, group):
    request = _request(group, TOO_MANY)
    assert request.ByteSize() < LIMIT
    before = _position(clients)

    error = _batch_error(clients, request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "RESPONSE_TOO_LARGE"
    assert violated_fields(error) == ["requests"]
    assert f"max_message_bytes ({LIMIT})" in error.details()
    assert "nothing was written" in error.details()
    assert "split the batch" in error.details()
    assert _expense_count(clients, group) == 0
    assert _position(clients) == before


def test_large_response_names_creates_that_fit(clients, group):
    error = _batch_error(clients, _request(group, TOO_MANY))
    metadata = error_details(error)["ErrorInfo"].metadata
    fitting = int(metadata["creates_that_fit"])

    created = clients.expenses.BatchCreateExpenses(
        _request(group, fitting), timeout=TIMEOUT
    )

    assert 0 < fitting < TOO_MANY
    assert f"at most {fitting} of these creates" in error.details()
    assert int(metadata["response_bytes"]) > LIMIT
    assert len(created.expenses) == fitting
    assert _expense_count(clients, group) == fitting


def test_large_response_retry_writes_nothing(clients, group):
    request = _request(group, TOO_MANY, request_id=new_request_id())
    first = _batch_error(clients, request)
    before = _position(clients)

    again = _batch_error(clients, request)

    assert reason_of(first) == "RESPONSE_TOO_LARGE"
    assert reason_of(again) == "RESPONSE_TOO_LARGE"
    assert _expense_count(clients, group) == 0
    assert _position(clients) == before


def test_replay_grown_past_limit_rejected(clients, group):
    # The first call fits while its expenses are split between two members.
    # Updates then split them among all members, so the replay would not fit.
    first, second = group.members[:2]
    request = _request(group, TOO_MANY, request_id=new_request_id())
    for create in request.requests:
        del create.expense.split.participants[2:]
    created = clients.expenses.BatchCreateExpenses(request, timeout=TIMEOUT).expenses
    for expense in created:
        grown = equal_expense(group, f"{expense.total.units}.00")
        grown.name = expense.name
        grown.last_modifier = expense.creator
        clients.expenses.UpdateExpense(
            pb.UpdateExpenseRequest(
                expense=grown, update_mask=field_mask_pb2.FieldMask(paths=["split"])
            ),
            timeout=TIMEOUT,
        )
    before = _position(clients)

    error = _batch_error(clients, request)

    assert [p.user for p in created[0].split.participants] == [first, second]
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "RESPONSE_TOO_LARGE"
    assert error_details(error)["ErrorInfo"].metadata["created"] == "true"
    assert "ListExpenses" in error.details()
    assert _expense_count(clients, group) == len(created)
    assert _position(clients) == before


def _wide_create(payers: int, participants: int) -> pb.CreateExpenseRequest:
    """Build a create with empty payers and participants.

    The pair limit is checked before anything else, so they need no users.
    """
    return pb.CreateExpenseRequest(
        expense=pb.Expense(
            payers=[pb.Payer()] * payers,
            split=pb.Split(participants=[pb.SplitParticipant()] * participants),
        )
    )


def test_too_many_pairs_rejected(clients, group):
    limit = DEFAULTS.expense_max_batch_pairs
    per_create = 50 * 500
    count = limit // per_create + 1
    request = pb.BatchCreateExpensesRequest(
        parent=group.name, requests=[_wide_create(50, 500)] * count
    )

    error = _batch_error(clients, request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "BATCH_TOO_LARGE"
    assert violated_fields(error) == ["requests"]
    assert f"names {count * per_create} payer and participant pairs" in error.details()
    assert f"expense_max_batch_pairs ({limit})" in error.details()
    assert f"the first {count - 1} creates" in error.details()
    assert _expense_count(clients, group) == 0


def test_first_create_over_pairs_named(module_db_url, tmp_path):
    saved = limits.current()
    config = make_config(tmp_path, module_db_url).replace(expense_max_batch_pairs=10)
    request = pb.BatchCreateExpensesRequest(
        parent="groups/wide-group", requests=[_wide_create(2, 6)] * 2
    )
    try:
        with start_pair(config) as pair, open_clients(*pair) as own:
            error = _batch_error(own, request)
    finally:
        limits.install(saved)

    assert reason_of(error) == "BATCH_TOO_LARGE"
    assert "names 24 payer and participant pairs" in error.details()
    assert "expense_max_batch_pairs (10)" in error.details()
    assert "its first create alone has more" in error.details()
    assert "send that one with CreateExpense" in error.details()
    assert "the first 0 creates" not in error.details()


def test_list_pages_fit_message_limit(clients, group):
    # The expenses fit in one call each, but not together in one page.
    for _ in range(2):
        request = _request(group, TOO_MANY // 2)
        clients.expenses.BatchCreateExpenses(request, timeout=TIMEOUT)

    pages = _pages(clients, group)

    assert len(pages) > 1
    assert all(page.ByteSize() <= LIMIT for page in pages)
    names = [expense.name for page in pages for expense in page.expenses]
    assert len(names) == TOO_MANY
    assert len(set(names)) == TOO_MANY
