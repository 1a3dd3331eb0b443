"""GetExpense, ListExpenses and ListCategories against real servers."""

from __future__ import annotations

import grpc
import pytest

from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog_runtime import pagination
from tests.expense_service.support import (
    TIMEOUT,
    create_expense,
    create_group,
    day,
    equal_expense,
    error_details,
    reason_of,
    violated_fields,
)
from tests.page_tokens import FORGED_KEYS, with_key

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _list(clients, **fields) -> pb.ListExpensesResponse:
    return clients.expenses.ListExpenses(
        pb.ListExpensesRequest(**fields), timeout=TIMEOUT
    )


def _names(clients, **fields) -> list[str]:
    return [expense.name for expense in _list(clients, **fields).expenses]


def _all_pages(clients, **fields) -> list[str]:
    names, token = [], ""
    while True:
        response = _list(clients, page_token=token, **fields)
        names.extend(expense.name for expense in response.expenses)
        token = response.next_page_token
        if not token:
            return names


def _list_error(clients, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _list(clients, **fields)
    return caught.value


@pytest.fixture(scope="module")
def history(clients):
    """A group with five expenses on three dates, one of them deleted.

    Returns the group and the expenses by id.
    """
    group = create_group(clients.users, size=3)
    a, b, c = group.members
    plan = {
        # id: (date, category, payer, participants)
        "e-april": (day(2024, 4, 2), pb.CATEGORY_RENT, a, [a, b]),
        "e-may-b": (day(2024, 5, 1), pb.CATEGORY_GROCERIES, b, [a, b]),
        "e-may-a": (day(2024, 5, 1), pb.CATEGORY_GROCERIES, a, [a, c]),
        "e-june": (day(2024, 6, 9), pb.CATEGORY_TRAVEL, a, [a, b]),
        "e-gone": (day(2024, 6, 30), pb.CATEGORY_TRAVEL, a, [a, b]),
    }
    expenses = {}
    for expense_id, (date, category, payer, participants) in plan.items():
        expense = equal_expense(
            group,
            "10.00",
            payer=payer,
            participants=participants,
            expense_date=date,
            category=category,
        )
        expenses[expense_id] = create_expense(
            clients, group, expense, expense_id=expense_id
        )
    clients.expenses.DeleteExpense(
        pb.DeleteExpenseRequest(name=expenses["e-gone"].name, last_modifier=a),
        timeout=TIMEOUT,
    )
    return group, {key: value.name for key, value in expenses.items()}


# GetExpense


def test_get_unknown_expense_not_found(clients):
    group = create_group(clients.users, size=1)
    name = f"{group.name}/expenses/nothing"

    with pytest.raises(grpc.RpcError) as caught:
        clients.expenses.GetExpense(pb.GetExpenseRequest(name=name), timeout=TIMEOUT)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "EXPENSE_NOT_FOUND"
    assert error_details(caught.value)["ResourceInfo"].resource_name == name


@pytest.mark.parametrize(
    "method, request_message",
    [
        ("GetExpense", pb.GetExpenseRequest(name="groups/no-such-group/expenses/none")),
        ("ListExpenses", pb.ListExpensesRequest(parent="groups/no-such-group")),
    ],
)
def test_unknown_group_not_found(clients, method, request_message):
    with pytest.raises(grpc.RpcError) as caught:
        getattr(clients.expenses, method)(request_message, timeout=TIMEOUT)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"
    assert "'groups/no-such-group' does not exist" in caught.value.details()
    resource = error_details(caught.value)["ResourceInfo"].resource_name
    assert resource == "groups/no-such-group"


@pytest.mark.parametrize(
    "name", ["", "groups/g1/expenses", "groups/abcd/items/abcd", "expenses/abcd"]
)
def test_get_malformed_name(clients, name):
    with pytest.raises(grpc.RpcError) as caught:
        clients.expenses.GetExpense(pb.GetExpenseRequest(name=name), timeout=TIMEOUT)

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["name"]


@pytest.mark.parametrize(
    ("name", "bad_id"),
    [("groups/trip-2026/expenses/a_b", "a_b"), ("groups/Trip/expenses/abcd", "Trip")],
)
def test_get_invalid_id_shows_expense_example(clients, name, bad_id):
    with pytest.raises(grpc.RpcError) as caught:
        clients.expenses.GetExpense(pb.GetExpenseRequest(name=name), timeout=TIMEOUT)

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["name"]
    assert caught.value.details() == (
        f"name: {name!r} contains the invalid id {bad_id!r}; ids are 4 to 63 "
        "lower-case letters, digits and hyphens, starting with a letter and "
        "not ending with a hyphen, as in 'groups/example-id/expenses/example-id'"
    )


def test_get_returns_deleted_expense(clients, history):
    _, names = history

    expense = clients.expenses.GetExpense(
        pb.GetExpenseRequest(name=names["e-gone"]), timeout=TIMEOUT
    ).expense

    assert expense.HasField("delete_time")


# ListExpenses


def test_list_newest_first_ties_latest_recorded(clients, history):
    group, names = history

    listed = _names(clients, parent=group.name)

    assert listed == [
        names["e-june"],
        names["e-may-a"],
        names["e-may-b"],
        names["e-april"],
    ]


@pytest.fixture(scope="module")
def imported(clients):
    """A group whose expenses `row-1` to `row-12` were created in one batch,
    as an import does, so that they share one create_time. Rows 1 to 6 are
    dated May 2 and rows 7 to 12 May 1.

    Returns the group and the names in ListExpenses' order.
    """
    group = create_group(clients.users, size=2)
    creates = [
        pb.CreateExpenseRequest(
            expense=equal_expense(
                group, expense_date=day(2024, 5, 2 if line <= 6 else 1)
            ),
            expense_id=f"row-{line}",
        )
        for line in range(1, 13)
    ]
    clients.expenses.BatchCreateExpenses(
        pb.BatchCreateExpensesRequest(parent=group.name, requests=creates),
        timeout=TIMEOUT,
    )
    lines = [6, 5, 4, 3, 2, 1, 12, 11, 10, 9, 8, 7]
    return group, [f"{group.name}/expenses/row-{line}" for line in lines]


@pytest.mark.parametrize("order_by", ["", "create_time desc"])
def test_list_batch_ties_by_date_then_number(clients, imported, order_by):
    group, expected = imported

    listed = _names(clients, parent=group.name, order_by=order_by)

    assert listed == expected


@pytest.mark.parametrize("order_by", ["", "create_time desc"])
def test_list_batch_pages_keep_order(clients, imported, order_by):
    group, expected = imported

    pages = _all_pages(clients, parent=group.name, page_size=5, order_by=order_by)

    assert pages == expected


def test_list_pages(clients, history):
    group, _ = history
    first = _list(clients, parent=group.name, page_size=3)

    assert len(first.expenses) == 3
    assert first.next_page_token
    assert _all_pages(clients, parent=group.name, page_size=1) == _names(
        clients, parent=group.name
    )


def test_list_earlier_token_still_pages(clients, history):
    group, names = history
    # A token of the previous format: the expense date and the name of the
    # last expense returned, here the first page of one.
    selector = ["ListExpenses", group.name, None, None, "None", "None", False, False]
    token = pagination.encode_token(["2024-06-09", names["e-june"]], selector)

    listed = _names(clients, parent=group.name, page_token=token)

    assert listed == [names["e-may-a"], names["e-may-b"], names["e-april"]]


def test_list_last_page_has_no_token(clients, history):
    group, _ = history

    response = _list(clients, parent=group.name, page_size=4)

    assert len(response.expenses) == 4
    assert response.next_page_token == ""


def test_list_show_deleted(clients, history):
    group, names = history

    listed = _names(clients, parent=group.name, show_deleted=True)

    assert listed[0] == names["e-gone"]
    assert len(listed) == 5


def test_list_by_participant(clients, history):
    group, names = history
    _, b, c = group.members

    assert _names(clients, parent=group.name, participant=c) == [names["e-may-a"]]
    assert names["e-may-b"] in _names(clients, parent=group.name, participant=b)
    assert names["e-may-a"] not in _names(clients, parent=group.name, participant=b)


def test_list_by_payer_only(clients):
    group = create_group(clients.users, size=2)
    a, b = group.members
    paid_for_other = create_expense(
        clients, group, equal_expense(group, payer=b, participants=[a])
    )

    assert _names(clients, parent=group.name, participant=b) == [paid_for_other.name]


def test_list_by_category(clients, history):
    group, names = history

    listed = _names(clients, parent=group.name, category=pb.CATEGORY_GROCERIES)

    assert listed == [names["e-may-a"], names["e-may-b"]]


def test_list_by_date_range_inclusive(clients, history):
    group, names = history

    listed = _names(
        clients,
        parent=group.name,
        start_date=day(2024, 4, 2),
        end_date=day(2024, 5, 1),
    )

    assert listed == [names["e-may-a"], names["e-may-b"], names["e-april"]]


def test_list_by_create_time(clients, history):
    group, names = history

    listed = _names(clients, parent=group.name, order_by="create_time  desc")

    assert listed == [
        names["e-june"],
        names["e-may-a"],
        names["e-may-b"],
        names["e-april"],
    ]


def test_list_across_groups_by_participant(clients, history):
    group, names = history
    a = group.members[0]
    other = create_group(clients.users, size=1)
    elsewhere = create_expense(
        clients,
        other,
        equal_expense(other, participants=[other.members[0]], expense_date=day(2025)),
    )

    listed = _names(clients, parent="groups/-", participant=a)
    mine = _names(clients, parent="groups/-", participant=other.members[0])

    assert listed == _names(clients, parent=group.name, participant=a)
    assert mine == [elsewhere.name]


def test_token_with_other_filter_rejected(clients, history):
    group, _ = history
    token = _list(clients, parent=group.name, page_size=1).next_page_token

    error = _list_error(
        clients, parent=group.name, page_token=token, category=pb.CATEGORY_TRAVEL
    )

    assert error.code() == INVALID
    assert reason_of(error) == "PAGE_TOKEN_MISMATCH"
    assert violated_fields(error) == ["page_token"]


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"parent": "groups/-"}, "participant", "REQUIRED"),
        ({"parent": "groups/"}, "parent", "INVALID_RESOURCE_NAME"),
        ({"participant": "alice"}, "participant", "INVALID_RESOURCE_NAME"),
        ({"page_size": -1}, "page_size", "INVALID_FIELD"),
        ({"page_token": "garbage"}, "page_token", "INVALID_PAGE_TOKEN"),
        ({"category": 77}, "category", "INVALID_CATEGORY"),
        ({"order_by": "amount"}, "order_by", "INVALID_ORDER_BY"),
        ({"start_date": day(2024, 13, 1)}, "start_date", "INVALID_DATE"),
        (
            {"start_date": day(2024, 5, 2), "end_date": day(2024, 5, 1)},
            "end_date",
            "INVALID_DATE_RANGE",
        ),
    ],
)
def test_list_invalid_argument(clients, history, fields, field, reason):
    group, _ = history
    fields = {"parent": group.name, **fields}

    error = _list_error(clients, **fields)

    assert error.code() == INVALID
    assert reason_of(error) == reason
    assert violated_fields(error) == [field]


# ListCategories


def _categories(clients, **fields) -> pb.ListCategoriesResponse:
    return clients.expenses.ListCategories(
        pb.ListCategoriesRequest(**fields), timeout=TIMEOUT
    )


def test_categories_cover_the_enum(clients):
    response = _categories(clients)

    listed = [info.category for info in response.categories]
    assert sorted(listed) == [
        value for value in pb.Category.values() if value != pb.CATEGORY_UNSPECIFIED
    ]
    assert listed[0] == pb.CATEGORY_GENERAL
    assert response.next_page_token == ""


def test_categories_have_display_names_and_parents(clients):
    infos = {info.category: info for info in _categories(clients).categories}

    assert infos[pb.CATEGORY_FOOD_AND_DRINK].display_name == "Food and drink"
    assert infos[pb.CATEGORY_DINING_OUT].display_name == "Dining out"
    assert infos[pb.CATEGORY_GROCERIES].parent_category == pb.CATEGORY_FOOD_AND_DRINK
    assert infos[pb.CATEGORY_RENT].parent_category == pb.CATEGORY_UNSPECIFIED
    assert all(info.display_name for info in infos.values())


def test_categories_pages(clients):
    everything = list(_categories(clients).categories)
    pages, token = [], ""
    while True:
        response = _categories(clients, page_size=5, page_token=token)
        pages.extend(response.categories)
        token = response.next_page_token
        if not token:
            break

    assert pages == everything


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"page_size": -5}, "page_size", "INVALID_FIELD"),
        ({"page_token": "bm9wZQ"}, "page_token", "INVALID_PAGE_TOKEN"),
    ],
)
def test_categories_invalid_argument(clients, fields, field, reason):
    with pytest.raises(grpc.RpcError) as caught:
        _categories(clients, **fields)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == reason
    assert violated_fields(caught.value) == [field]


@pytest.mark.parametrize("key", FORGED_KEYS)
def test_list_forged_key_quotes_token(clients, history, key):
    group, _ = history
    first = _list(clients, parent=group.name, page_size=1)
    token = with_key(first.next_page_token, key)

    error = _list_error(clients, parent=group.name, page_size=1, page_token=token)

    assert error.code() == INVALID
    assert reason_of(error) == "INVALID_PAGE_TOKEN"
    assert repr(token[:40] + "…") in error.details()


@pytest.mark.parametrize("key", FORGED_KEYS)
def test_categories_forged_key_quotes_token(clients, key):
    first = _categories(clients, page_size=5)
    token = with_key(first.next_page_token, key)

    with pytest.raises(grpc.RpcError) as caught:
        _categories(clients, page_size=5, page_token=token)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "INVALID_PAGE_TOKEN"
    assert repr(token[:40] + "…") in caught.value.details()
