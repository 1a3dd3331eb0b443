"""CreateExpense against real servers: splits, money, idempotency, membership."""

from __future__ import annotations

import datetime
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.type import money_pb2

from expense_service import storage as expense_storage
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime.database import Database
from splitlog_runtime.idempotency import FILLED_REQUEST_ID_KEY
from splitlog_runtime.validation import EARLIEST_RECORD_DATE, latest_record_date
from tests.expense_service.support import (
    TIMEOUT,
    as_text,
    backlog,
    create_expense,
    create_group,
    create_outsider,
    day,
    equal_expense,
    error_details,
    latest_sequence,
    money,
    new_request_id,
    owed,
    reason_of,
    violated_fields,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def group(clients):
    return create_group(clients.users, size=4)


def _create_error(clients, parent: str, expense: pb.Expense, **request):
    with pytest.raises(grpc.RpcError) as caught:
        clients.expenses.CreateExpense(
            pb.CreateExpenseRequest(parent=parent, expense=expense, **request),
            timeout=TIMEOUT,
        )
    return caught.value


def _split(split_type, *participants: pb.SplitParticipant) -> pb.Split:
    return pb.Split(type=split_type, participants=list(participants))


def _expense(group, total: str, split: pb.Split, currency: str = "USD", payers=None):
    return pb.Expense(
        description="Groceries",
        expense_date=day(),
        total=money(total, currency),
        payers=payers
        or [pb.Payer(user=group.members[0], amount=money(total, currency))],
        split=split,
        creator=group.members[0],
    )


def _first_by_tie_break(name: str, users: list[str]) -> str:
    return min(users, key=lambda u: hashlib.sha256(f"{name}\0{u}".encode()).digest())


# Success


def test_create_returns_stored_expense(clients, group):
    expense = create_expense(
        clients,
        group,
        equal_expense(group, "30.00", notes="Paid by card", description=" Dinner "),
    )

    assert expense.name.startswith(f"{group.name}/expenses/")
    assert expense.description == "Dinner"
    assert expense.category == pb.CATEGORY_GENERAL
    assert expense.currency_code == "USD"
    assert expense.notes == "Paid by card"
    assert expense.creator == group.members[0]
    assert expense.last_modifier == group.members[0]
    assert expense.etag == '"1"'
    assert expense.update_time == expense.create_time
    assert not expense.HasField("delete_time")
    assert [line.user for line in expense.owed_amounts] == group.members
    assert sorted(as_text(a) for a in owed(expense).values()) == ["7.50"] * 4
    stored = clients.expenses.GetExpense(
        pb.GetExpenseRequest(name=expense.name), timeout=TIMEOUT
    ).expense
    assert stored == expense


def test_one_dollar_among_three_sums_exactly(clients, group):
    members = group.members[:3]
    expense = create_expense(
        clients, group, equal_expense(group, "1.00", participants=members)
    )

    amounts = owed(expense)
    cents = sorted(as_text(amount) for amount in amounts.values())
    assert cents == ["0.33", "0.33", "0.34"]
    assert sum(a.units * 100 + a.nanos // 10_000_000 for a in amounts.values()) == 100
    assert as_text(amounts[_first_by_tie_break(expense.name, members)]) == "0.34"


def test_one_cent_between_two(clients, group):
    members = group.members[:2]
    expense = create_expense(
        clients, group, equal_expense(group, "0.01", participants=members)
    )

    assert sorted(as_text(a) for a in owed(expense).values()) == ["0.00", "0.01"]


def test_exact_split(clients, group):
    a, b, *_ = group.members
    split = _split(
        pb.SPLIT_TYPE_EXACT,
        pb.SplitParticipant(user=a, exact_amount=money("12.34")),
        pb.SplitParticipant(user=b, exact_amount=money("7.66")),
    )

    expense = create_expense(clients, group, _expense(group, "20.00", split))

    assert {u: as_text(m) for u, m in owed(expense).items()} == {
        a: "12.34",
        b: "7.66",
    }
    assert expense.split == split


def test_percentage_split_shares_the_rest(clients, group):
    a, b, c, _ = group.members
    split = _split(
        pb.SPLIT_TYPE_PERCENTAGE,
        pb.SplitParticipant(user=a, basis_points=6000),
        pb.SplitParticipant(user=b),
        pb.SplitParticipant(user=c),
    )

    expense = create_expense(clients, group, _expense(group, "100.00", split))

    assert {u: as_text(m) for u, m in owed(expense).items()} == {
        a: "60.00",
        b: "20.00",
        c: "20.00",
    }


def test_shares_split(clients, group):
    a, b, c, _ = group.members
    split = _split(
        pb.SPLIT_TYPE_SHARES,
        pb.SplitParticipant(user=a, shares=2),
        pb.SplitParticipant(user=b, shares=1),
        pb.SplitParticipant(user=c, shares=1),
    )

    expense = create_expense(clients, group, _expense(group, "10.00", split))

    assert {u: as_text(m) for u, m in owed(expense).items()} == {
        a: "5.00",
        b: "2.50",
        c: "2.50",
    }


def test_mixed_split(clients, group):
    a, b, c, d = group.members
    split = _split(
        pb.SPLIT_TYPE_MIXED,
        pb.SplitParticipant(user=a, exact_amount=money("10.00")),
        pb.SplitParticipant(user=b, basis_points=2500),
        pb.SplitParticipant(user=c, shares=2),
        pb.SplitParticipant(user=d, shares=1),
    )

    expense = create_expense(clients, group, _expense(group, "100.00", split))

    assert {u: as_text(m) for u, m in owed(expense).items()} == {
        a: "10.00",
        b: "25.00",
        c: "43.33",
        d: "21.67",
    }


def test_several_payers(clients, group):
    a, b, *_ = group.members
    payers = [
        pb.Payer(user=a, amount=money("25.00")),
        pb.Payer(user=b, amount=money("15.00")),
    ]
    expense = equal_expense(group, "40.00")
    del expense.payers[:]
    expense.payers.extend(payers)

    created = create_expense(clients, group, expense)

    assert list(created.payers) == payers


def test_refund_has_negative_amounts(clients, group):
    expense = create_expense(clients, group, equal_expense(group, "-1.00"))

    amounts = [as_text(a) for a in owed(expense).values()]
    assert sorted(amounts) == ["-0.25", "-0.25", "-0.25", "-0.25"]
    assert as_text(expense.total) == "-1.00"
    assert as_text(expense.payers[0].amount) == "-1.00"


def test_refund_of_odd_amount_keeps_sign(clients, group):
    expense = create_expense(
        clients, group, equal_expense(group, "-1.00", participants=group.members[:3])
    )

    assert sorted(as_text(a) for a in owed(expense).values()) == [
        "-0.33",
        "-0.33",
        "-0.34",
    ]


def test_yen_has_no_minor_digits(clients, group):
    members = group.members[:3]
    expense = create_expense(
        clients, group, equal_expense(group, "1000", "JPY", participants=members)
    )

    amounts = sorted((a.units, a.nanos) for a in owed(expense).values())
    assert amounts == [(333, 0), (333, 0), (334, 0)]
    assert expense.currency_code == "JPY"


def test_bahraini_dinar_has_three_digits(clients, group):
    members = group.members[:3]
    expense = create_expense(
        clients, group, equal_expense(group, "10.000", "BHD", participants=members)
    )

    amounts = sorted((a.units, a.nanos) for a in owed(expense).values())
    assert amounts == [(3, 333_000_000), (3, 333_000_000), (3, 334_000_000)]


def test_chosen_id(clients, group):
    expense = create_expense(clients, group, expense_id="dinner-on-friday")

    assert expense.name == f"{group.name}/expenses/dinner-on-friday"


def test_category_is_stored(clients, group):
    expense = create_expense(
        clients, group, equal_expense(group, category=pb.CATEGORY_DINING_OUT)
    )

    assert expense.category == pb.CATEGORY_DINING_OUT


# Idempotency


def test_same_request_id_creates_one_expense(clients, group):
    request_id = new_request_id()
    create_expense(clients, group)
    before = latest_sequence(clients)

    first = create_expense(clients, group, request_id=request_id)
    second = create_expense(clients, group, request_id=request_id.upper())

    assert second == first
    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=group.name), timeout=TIMEOUT
    ).expenses
    assert first.name in [e.name for e in listed]
    assert len(listed) == 2
    assert [e.expense for e in backlog(clients, before)] == [first.name]


def test_gateway_filled_key_replays_on_unique_index(clients, group):
    # With the gateway's mark the create skips its early look-up of the key,
    # so a retry replays through the key's unique index instead.
    request_id = new_request_id()
    marked = ((FILLED_REQUEST_ID_KEY, "1"),)
    create_expense(clients, group)
    before = latest_sequence(clients)

    def send(expense: pb.Expense) -> pb.Expense:
        request = pb.CreateExpenseRequest(
            parent=group.name, expense=expense, request_id=request_id
        )
        return clients.expenses.CreateExpense(
            request, metadata=marked, timeout=TIMEOUT
        ).expense

    first = send(equal_expense(group))
    second = send(equal_expense(group))
    with pytest.raises(grpc.RpcError) as raised:
        send(equal_expense(group, description="Lunch"))

    assert second == first
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert request_id in raised.value.details()
    assert [e.expense for e in backlog(clients, before)] == [first.name]


def _listed_names(clients, group) -> list[str]:
    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=group.name), timeout=TIMEOUT
    ).expenses
    return [expense.name for expense in listed]


def test_retry_spelling_out_defaults_replays(clients, group):
    request_id = new_request_id()
    first = create_expense(clients, group, request_id=request_id)
    spelled_out = equal_expense(group, category=pb.CATEGORY_GENERAL)
    padded = equal_expense(group, description="  Dinner ")
    # The first response sent back: it adds name, etag, owed amounts and
    # the other output-only fields, which a create ignores.
    echoed = first

    for expense in (spelled_out, padded, echoed):
        again = create_expense(clients, group, expense, request_id=request_id)
        assert again == first

    assert _listed_names(clients, group) == [first.name]


def test_retry_leaving_default_unset_replays(clients, group):
    request_id = new_request_id()
    spelled_out = equal_expense(group, category=pb.CATEGORY_GENERAL)
    first = create_expense(clients, group, spelled_out, request_id=request_id)

    again = create_expense(clients, group, request_id=request_id)

    assert again == first
    assert _listed_names(clients, group) == [first.name]


def test_retry_with_other_category_rejected(clients, group):
    request_id = new_request_id()
    create_expense(clients, group, request_id=request_id)

    error = _create_error(
        clients,
        group.name,
        equal_expense(group, category=pb.CATEGORY_TRAVEL),
        request_id=request_id,
    )

    assert error.code() == INVALID
    assert reason_of(error) == "REQUEST_ID_REUSED"


def _bytes_hash(request: pb.CreateExpenseRequest) -> str:
    """Hash a create as keys were hashed before requests were normalized."""
    copy = pb.CreateExpenseRequest()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _store_hash(database_url: str, request_id: str, request_hash: str) -> None:
    database = Database(database_url)
    try:
        with database.transaction() as session:
            table = expense_storage.RequestIdRow.__table__
            session.execute(
                table.update()
                .where(table.c.request_id == request_id)
                .values(request_hash=request_hash)
            )
    finally:
        database.dispose()


def test_key_hashed_before_normalization_replays(clients, group, module_db_url):
    """A key stored with the hash of the request's bytes still replays the
    same bytes, and a retry that spells out the category left unset."""
    sent = pb.CreateExpenseRequest(
        parent=group.name, expense=equal_expense(group), request_id=new_request_id()
    )
    first = clients.expenses.CreateExpense(sent, timeout=TIMEOUT).expense
    _store_hash(module_db_url, sent.request_id, _bytes_hash(sent))
    padded = pb.CreateExpenseRequest()
    padded.CopyFrom(sent)
    padded.request_id = new_request_id()
    padded.expense.description = " Dinner "
    padded_first = clients.expenses.CreateExpense(padded, timeout=TIMEOUT).expense
    _store_hash(module_db_url, padded.request_id, _bytes_hash(padded))
    spelled_out = equal_expense(group, category=pb.CATEGORY_GENERAL)

    same_bytes = clients.expenses.CreateExpense(sent, timeout=TIMEOUT).expense
    same_padded = clients.expenses.CreateExpense(padded, timeout=TIMEOUT).expense
    category_set = create_expense(
        clients, group, spelled_out, request_id=sent.request_id
    )

    assert same_bytes == first
    assert same_padded == padded_first
    assert category_set == first
    assert sorted(_listed_names(clients, group)) == sorted(
        [first.name, padded_first.name]
    )


def test_concurrent_retries_create_one_expense(clients, group):
    request_id = new_request_id()

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(create_expense, clients, group, request_id=request_id)
            for _ in range(8)
        ]
        created = [future.result() for future in futures]

    assert len({expense.name for expense in created}) == 1
    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=group.name), timeout=TIMEOUT
    ).expenses
    assert [expense.name for expense in listed] == [created[0].name]


def test_concurrent_shared_request_ids(clients, group, caplog):
    # Creates that arrive together are written in one transaction. Of a pair
    # that shares a request_id, only the first is written with the group, and
    # the second replays it. No group fails and falls back to writing each
    # create alone. Every other create succeeds.
    caplog.set_level(logging.DEBUG, logger="expense_service")
    create_expense(clients, group)
    before = latest_sequence(clients)
    shared = [new_request_id() for _ in range(4)]
    keys = [*shared, *shared, *(new_request_id() for _ in range(24))]

    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = [
            pool.submit(
                create_expense,
                clients,
                group,
                # A retry sends the same body as the first create of its key.
                equal_expense(group, f"{keys.index(key) + 1}.00"),
                request_id=key,
            )
            for key in keys
        ]
        created = [future.result() for future in futures]

    by_key: dict[str, set[str]] = {}
    for key, expense in zip(keys, created, strict=True):
        by_key.setdefault(key, set()).add(expense.name)
    for key, names in by_key.items():
        assert len(names) == 1, key
    names = {name for found in by_key.values() for name in found}
    assert len(names) == 28
    events = backlog(clients, before)
    assert [e.sequence for e in events] == list(range(before + 1, before + 29))
    assert sorted(e.expense for e in events) == sorted(names)
    messages = [record.getMessage() for record in caplog.records]
    assert not [text for text in messages if "writing each alone" in text]
    assert not [text for text in messages if "unique-key conflict" in text]
    # No request_id reaches the log at INFO or above.
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [text for text in loud for key in shared if key in text]


def test_same_key_retries_beside_other_creates(clients, group, caplog):
    # Each round sends 6 creates that share one request_id, as from a client
    # that retries without waiting. They go at the same time as 12 creates
    # with other keys.
    caplog.set_level(logging.INFO, logger="expense_service.grouping")
    for _ in range(4):
        shared = new_request_id()
        keys = [shared] * 6 + [new_request_id() for _ in range(12)]
        with ThreadPoolExecutor(max_workers=len(keys)) as pool:
            futures = [
                pool.submit(
                    create_expense,
                    clients,
                    group,
                    equal_expense(group, "5.00"),
                    request_id=key,
                )
                for key in keys
            ]
            created = [future.result() for future in futures]

        assert len({expense.name for expense in created[:6]}) == 1
        assert len({expense.name for expense in created}) == 13

    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=group.name, page_size=100), timeout=TIMEOUT
    ).expenses
    assert len(listed) == 4 * 13
    assert not [r for r in caplog.records if "writing each alone" in r.getMessage()]


def test_concurrent_retries_with_chosen_id_replay(clients, group):
    request_id = new_request_id()

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(
                create_expense,
                clients,
                group,
                request_id=request_id,
                expense_id="retried-id",
            )
            for _ in range(8)
        ]
        created = [future.result() for future in futures]

    assert {expense.name for expense in created} == {
        f"{group.name}/expenses/retried-id"
    }
    assert len({expense.etag for expense in created}) == 1


def test_request_id_reused_with_other_values_rejected(clients, group):
    request_id = new_request_id()
    first = create_expense(clients, group, request_id=request_id)

    error = _create_error(
        clients,
        group.name,
        equal_expense(group, "31.00"),
        request_id=request_id,
    )

    assert error.code() == INVALID
    assert reason_of(error) == "REQUEST_ID_REUSED"
    assert violated_fields(error) == ["request_id"]
    assert request_id in error.details()
    assert "new UUID" in error.details()
    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=group.name), timeout=TIMEOUT
    ).expenses
    assert [expense.name for expense in listed] == [first.name]


def test_request_id_reused_in_other_group_rejected(clients, group):
    request_id = new_request_id()
    create_expense(clients, group, request_id=request_id)
    other_group = create_group(clients.users, size=2)

    error = _create_error(
        clients, other_group.name, equal_expense(other_group), request_id=request_id
    )

    assert error.code() == INVALID
    assert reason_of(error) == "REQUEST_ID_REUSED"
    assert violated_fields(error) == ["request_id"]
    assert "another group" in error.details()
    assert "new UUID" in error.details()
    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=other_group.name), timeout=TIMEOUT
    )
    assert list(listed.expenses) == []


# Invalid arguments


def test_ninety_five_in_exact_thirds_is_over(clients, group):
    split = _split(
        pb.SPLIT_TYPE_EXACT,
        *[
            pb.SplitParticipant(user=user, exact_amount=money("31.67"))
            for user in group.members[:3]
        ],
    )

    error = _create_error(clients, group.name, _expense(group, "95.00", split))

    assert error.code() == INVALID
    assert reason_of(error) == "SPLIT_DOES_NOT_ADD_UP"
    assert violated_fields(error) == ["expense.split.participants"]
    assert "0.01 USD over" in error.details()


def test_too_many_participants_rejected(clients, group):
    split = _split(
        pb.SPLIT_TYPE_EQUAL,
        *[pb.SplitParticipant(user=f"users/u{index}") for index in range(501)],
    )

    error = _create_error(clients, group.name, _expense(group, "10.00", split))

    assert error.code() == INVALID
    assert reason_of(error) == "TOO_MANY_PARTICIPANTS"
    assert violated_fields(error) == ["expense.split.participants"]
    assert "500" in error.details()


def _cent_payers(count: int) -> list[pb.Payer]:
    return [
        pb.Payer(user=f"users/u{index}", amount=money("0.01")) for index in range(count)
    ]


def test_too_many_payers_rejected(clients, group):
    split = _split(pb.SPLIT_TYPE_EQUAL, pb.SplitParticipant(user=group.members[0]))
    expense = _expense(group, "0.51", split, payers=_cent_payers(51))

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "TOO_MANY_PAYERS"
    assert violated_fields(error) == ["expense.payers"]
    assert "has 51 entries" in error.details()
    assert "limit of 50 payers" in error.details()
    assert "expense_max_payers" in error.details()


def test_fifty_payers_accepted(clients):
    crowd = create_group(clients.users, size=50)
    split = _split(pb.SPLIT_TYPE_EQUAL, pb.SplitParticipant(user=crowd.members[0]))
    payers = [pb.Payer(user=member, amount=money("0.01")) for member in crowd.members]

    created = create_expense(
        clients, crowd, _expense(crowd, "0.50", split, payers=payers)
    )

    assert len(created.payers) == 50


@pytest.mark.parametrize(
    ("points", "said"),
    [
        ((6000, 3000), "percentages add up to 90 %, so 10 % is missing"),
        ((6050, 5000), "percentages add up to 110.5 %, which is 10.5 % over 100 %"),
    ],
)
def test_percentages_mismatch_in_percent(clients, group, points, said):
    participants = [
        pb.SplitParticipant(user=user, basis_points=value)
        for user, value in zip(group.members, points, strict=False)
    ]
    split = _split(pb.SPLIT_TYPE_PERCENTAGE, *participants)

    error = _create_error(clients, group.name, _expense(group, "100.00", split))

    assert error.code() == INVALID
    assert reason_of(error) == "SPLIT_DOES_NOT_ADD_UP"
    assert said in error.details()
    assert "USD" not in error.details()


@pytest.mark.parametrize(
    ("values", "said", "unsaid"),
    [
        (
            [{"exact_amount": money("11.00")}, {"shares": 1}],
            "the exact amount comes to 11.00 USD, which is 1.00 USD over the total "
            "of 10.00 USD; lower it",
            "percentage",
        ),
        (
            [{"basis_points": 6050}, {"basis_points": 5000}, {"shares": 1}],
            "percentages add up to 110.5 %, which is 10.5 % over 100 %; lower them",
            "11.05",
        ),
        (
            [{"basis_points": 9050}],
            "the percentage is 90.5 %, so 9.5 % of the total of 10.00 USD is not "
            "divided",
            "0.95",
        ),
        (
            [{"exact_amount": money("4.00")}, {"basis_points": 1000}],
            "the exact amount of 4.00 USD and the percentage of 10 % come to "
            "5.00 USD, so 5.00 USD of the total of 10.00 USD is not divided",
            "shares add up",
        ),
        (
            [
                {"exact_amount": money("4.00")},
                {"basis_points": 3500},
                {"basis_points": 3550},
            ],
            "the exact amount of 4.00 USD and percentages adding up to 70.5 % come "
            "to 11.05 USD, which is 1.05 USD over the total of 10.00 USD; lower "
            "them",
            "shares",
        ),
        (
            [{"shares": 0}, {"shares": 0}],
            "shares add up to 0, so the total of 10.00 USD is not divided",
            "percentage",
        ),
        (
            [{"basis_points": 0}],
            "the percentage is 0 %, so 100 % of the total of 10.00 USD is not divided",
            "shares add up",
        ),
    ],
)
def test_mixed_mismatch_names_given_values(clients, group, values, said, unsaid):
    participants = [
        pb.SplitParticipant(user=user, **value)
        for user, value in zip(group.members, values, strict=False)
    ]
    split = _split(pb.SPLIT_TYPE_MIXED, *participants)

    error = _create_error(clients, group.name, _expense(group, "10.00", split))

    assert reason_of(error) == "SPLIT_DOES_NOT_ADD_UP"
    assert said in error.details()
    assert unsaid not in error.details()


@pytest.mark.parametrize(
    ("split_type", "field", "fix"),
    [
        (
            pb.SPLIT_TYPE_EXACT,
            "expense.split.participants[1].exact_amount",
            "exact_amount is required in a SPLIT_TYPE_EXACT split; set "
            "exact_amount to what this member owes",
        ),
        (
            pb.SPLIT_TYPE_SHARES,
            "expense.split.participants[1].shares",
            "set shares to this member's weight, such as 1",
        ),
        (
            pb.SPLIT_TYPE_MIXED,
            "expense.split.participants[1]",
            "set exact_amount for a fixed amount, basis_points for a percentage",
        ),
    ],
)
def test_missing_participant_value_says_fix(clients, group, split_type, field, fix):
    a, b, *_ = group.members
    first = pb.SplitParticipant(user=a, exact_amount=money("10.00"))
    if split_type == pb.SPLIT_TYPE_SHARES:
        first = pb.SplitParticipant(user=a, shares=1)
    split = _split(split_type, first, pb.SplitParticipant(user=b))

    error = _create_error(clients, group.name, _expense(group, "10.00", split))

    assert reason_of(error) == "INVALID_SPLIT_PARTICIPANT"
    assert violated_fields(error) == [field]
    assert fix in error.details()


def test_zero_total_rejected(clients, group):
    error = _create_error(clients, group.name, equal_expense(group, "0.00"))

    assert error.code() == INVALID
    assert reason_of(error) == "INVALID_TOTAL"
    assert violated_fields(error) == ["expense.total"]


def test_payers_must_add_up(clients, group):
    expense = equal_expense(group, "30.00")
    expense.payers[0].amount.CopyFrom(money("29.50"))

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "PAYERS_DO_NOT_ADD_UP"
    assert violated_fields(error) == ["expense.payers"]
    assert "0.50 USD under" in error.details()


def test_refund_payer_must_be_negative(clients, group):
    expense = equal_expense(group, "-30.00")
    expense.payers[0].amount.CopyFrom(money("30.00"))

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "INVALID_PAYER_AMOUNT"
    assert violated_fields(error) == ["expense.payers[0].amount"]


def test_payer_in_other_currency(clients, group):
    expense = equal_expense(group, "30.00")
    expense.payers[0].amount.CopyFrom(money("30.00", "EUR"))

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "CURRENCY_MISMATCH"
    assert violated_fields(error) == ["expense.payers[0].amount"]


def test_exact_amount_in_other_currency(clients, group):
    a, *_ = group.members
    split = _split(
        pb.SPLIT_TYPE_EXACT,
        pb.SplitParticipant(user=a, exact_amount=money("10.00", "EUR")),
    )

    error = _create_error(clients, group.name, _expense(group, "10.00", split))

    assert error.code() == INVALID
    assert reason_of(error) == "CURRENCY_MISMATCH"
    assert violated_fields(error) == ["expense.split.participants[0].exact_amount"]


def test_unknown_currency(clients, group):
    error = _create_error(clients, group.name, equal_expense(group, "30.00", "usd"))

    assert error.code() == INVALID
    assert reason_of(error) == "INVALID_CURRENCY_CODE"
    assert "expense.total.currency_code" in violated_fields(error)
    assert "'USD'" in error.details()


@pytest.mark.parametrize(
    ("total", "currency", "shares"),
    [("30.00", "HRK", ["7.50"] * 4), ("30000", "ITL", ["7500"] * 4)],
)
def test_withdrawn_currency_accepted(clients, group, total, currency, shares):
    created = create_expense(clients, group, equal_expense(group, total, currency))

    assert created.total.currency_code == currency
    assert [owed(created)[user] for user in group.members] == [
        money(share, currency) for share in shares
    ]


def test_withdrawn_currency_keeps_its_minor_unit(clients, group):
    error = _create_error(clients, group.name, equal_expense(group, "10.50", "ITL"))

    assert error.code() == INVALID
    assert reason_of(error) == "AMOUNT_TOO_PRECISE"


def test_yen_with_cents_too_precise(clients, group):
    error = _create_error(clients, group.name, equal_expense(group, "10.50", "JPY"))

    assert error.code() == INVALID
    assert reason_of(error) == "AMOUNT_TOO_PRECISE"
    assert "expense.total" in violated_fields(error)


def test_huge_total_out_of_range(clients, group):
    error = _create_error(
        clients, group.name, equal_expense(group, "90000000000000000.00")
    )

    assert error.code() == INVALID
    assert reason_of(error) == "AMOUNT_OUT_OF_RANGE"


def test_total_over_maximum_names_currency(clients, group):
    error = _create_error(
        clients, group.name, equal_expense(group, "10000000000000.01", "USD")
    )

    message = error.details()
    assert reason_of(error) == "AMOUNT_OUT_OF_RANGE"
    assert "larger than the maximum of 10000000000000.00 USD; " in message
    assert (
        "an expense amount must be from -10000000000000.00 to 10000000000000.00 USD"
        in message
    )


def test_huge_negative_total_below_minimum(clients, group):
    total = money_pb2.Money(currency_code="JPY", units=-(2**63))
    expense = equal_expense(group, "1", "JPY")
    expense.total.CopyFrom(total)
    expense.payers[0].amount.CopyFrom(total)

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "AMOUNT_OUT_OF_RANGE"
    assert "below the minimum of -1000000000000000" in error.details()
    assert "larger than" not in error.details()


def test_several_invalid_fields_counted_once(clients, group):
    expense = equal_expense(group, description=" ", notes="a\x00b")
    expense.creator = "alice"

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert violated_fields(error) == [
        "expense.description",
        "expense.notes",
        "expense.creator",
    ]
    assert error.details().endswith("(and 2 more invalid fields)")
    assert error.details().count("more invalid") == 1


def test_notes_control_character_named(clients, group):
    expense = equal_expense(group, notes="a\x00b")

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "INVALID_NOTES"
    assert violated_fields(error) == ["expense.notes"]
    assert error.details() == (
        "expense.notes: contains the control character U+0000; remove it"
    )


def test_empty_expense_lists_every_missing_field(clients, group):
    error = _create_error(clients, group.name, pb.Expense())

    assert error.code() == INVALID
    assert reason_of(error) == "REQUIRED"
    assert violated_fields(error) == [
        "expense.description",
        "expense.expense_date",
        "expense.total",
        "expense.payers",
        "expense.split",
        "expense.creator",
    ]


def test_duplicate_participant(clients, group):
    a, *_ = group.members
    split = _split(
        pb.SPLIT_TYPE_EQUAL, pb.SplitParticipant(user=a), pb.SplitParticipant(user=a)
    )

    error = _create_error(clients, group.name, _expense(group, "10.00", split))

    assert error.code() == INVALID
    assert reason_of(error) == "DUPLICATE_PARTICIPANT"
    assert violated_fields(error) == ["expense.split.participants[1].user"]


def test_duplicate_payer(clients, group):
    a, *_ = group.members
    expense = equal_expense(group, "10.00")
    expense.payers.append(pb.Payer(user=a, amount=money("1.00")))

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "DUPLICATE_PAYER"
    assert violated_fields(error) == ["expense.payers[1].user"]


def test_unset_split_type(clients, group):
    split = _split(pb.SPLIT_TYPE_UNSPECIFIED, pb.SplitParticipant(user="users/abcd"))

    error = _create_error(clients, group.name, _expense(group, "10.00", split))

    assert error.code() == INVALID
    assert reason_of(error) == "INVALID_SPLIT_TYPE"
    assert violated_fields(error) == ["expense.split.type"]


def test_value_of_wrong_kind(clients, group):
    a, *_ = group.members
    split = _split(pb.SPLIT_TYPE_EQUAL, pb.SplitParticipant(user=a, shares=2))

    error = _create_error(clients, group.name, _expense(group, "10.00", split))

    assert error.code() == INVALID
    assert reason_of(error) == "INVALID_SPLIT_PARTICIPANT"
    assert violated_fields(error) == ["expense.split.participants[0].shares"]


def test_malformed_user_names(clients, group):
    expense = equal_expense(group, "10.00", participants=["alice"])
    expense.payers[0].user = "users/A"

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "INVALID_RESOURCE_NAME"
    assert violated_fields(error) == [
        "expense.payers[0].user",
        "expense.split.participants[0].user",
    ]


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"description": "x" * 201}, "expense.description", "DESCRIPTION_TOO_LONG"),
        ({"description": "a\x07b"}, "expense.description", "INVALID_DESCRIPTION"),
        # Zero-width spaces and a lone combining accent show nothing.
        ({"description": "\u200b\u200b"}, "expense.description", "REQUIRED"),
        ({"description": " \u0301 "}, "expense.description", "REQUIRED"),
        ({"notes": "n" * 2001}, "expense.notes", "NOTES_TOO_LONG"),
        ({"category": 99}, "expense.category", "INVALID_CATEGORY"),
        ({"expense_date": day(2023, 2, 30)}, "expense.expense_date", "INVALID_DATE"),
        ({"expense_date": day(2023, 0, 1)}, "expense.expense_date", "INVALID_DATE"),
    ],
)
def test_invalid_field(clients, group, fields, field, reason):
    error = _create_error(clients, group.name, equal_expense(group, **fields))

    assert error.code() == INVALID
    assert reason_of(error) == reason
    assert violated_fields(error) == [field]


def _date_of(value: datetime.date):
    return day(value.year, value.month, value.day)


def _days_from_today(days: int) -> datetime.date:
    today = datetime.datetime.now(datetime.UTC).date()
    return today + datetime.timedelta(days=days)


@pytest.mark.parametrize(
    "expense_date",
    [
        datetime.date(9999, 12, 31),
        datetime.date(1, 1, 1),
        datetime.date(1899, 12, 31),
        _days_from_today(400),
    ],
)
def test_date_out_of_range(clients, group, expense_date):
    expense = equal_expense(group, expense_date=_date_of(expense_date))

    error = _create_error(clients, group.name, expense)

    latest = latest_record_date().isoformat()
    message = error.details()
    assert error.code() == INVALID
    assert reason_of(error) == "DATE_OUT_OF_RANGE"
    assert violated_fields(error) == ["expense.expense_date"]
    assert message.startswith(f"expense.expense_date: {expense_date.isoformat()} ")
    assert f"outside the accepted range 1900-01-01 to {latest}" in message
    assert "give the day of the expense" in message
    assert error_details(error)["ErrorInfo"].metadata["latest_date"] == latest


ONE_DAY = datetime.timedelta(days=1)


def _edge_date(edge: str) -> datetime.date:
    """Return a date at or just past an end of the accepted range.

    The latest date moves with the UTC date, so a test computes it when it
    runs, not when pytest collects it.
    """
    dates = {
        "earliest": EARLIEST_RECORD_DATE,
        "before_earliest": EARLIEST_RECORD_DATE - ONE_DAY,
        "latest": latest_record_date(),
        "after_latest": latest_record_date() + ONE_DAY,
    }
    return dates[edge]


@pytest.mark.parametrize("edge", ["earliest", "latest"])
def test_date_range_edges_accepted(clients, group, edge):
    expense_date = _edge_date(edge)
    expense = equal_expense(group, expense_date=_date_of(expense_date))

    created = create_expense(clients, group, expense)

    assert created.expense_date == _date_of(expense_date)


@pytest.mark.parametrize("edge", ["before_earliest", "after_latest"])
def test_date_past_range_edges_rejected(clients, group, edge):
    expense_date = _edge_date(edge)
    expense = equal_expense(group, expense_date=_date_of(expense_date))

    error = _create_error(clients, group.name, expense)

    assert error.code() == INVALID
    assert reason_of(error) == "DATE_OUT_OF_RANGE"
    assert violated_fields(error) == ["expense.expense_date"]
    assert f"{expense_date.isoformat()} is outside" in error.details()


@pytest.mark.parametrize(
    ("request_fields", "field", "reason"),
    [
        ({"parent": "teams/x"}, "parent", "INVALID_RESOURCE_NAME"),
        ({"parent": ""}, "parent", "REQUIRED"),
        ({"expense_id": "A!"}, "expense_id", "INVALID_ID"),
        ({"request_id": "not-a-uuid"}, "request_id", "INVALID_REQUEST_ID"),
    ],
)
def test_invalid_request_field(clients, group, request_fields, field, reason):
    fields = {"parent": group.name, **request_fields}
    parent = fields.pop("parent")

    error = _create_error(clients, parent, equal_expense(group), **fields)

    assert error.code() == INVALID
    assert reason_of(error) == reason
    assert violated_fields(error) == [field]


# Other codes


def test_existing_id_already_exists(clients, group):
    create_expense(clients, group, expense_id="taken-id")

    error = _create_error(
        clients, group.name, equal_expense(group), expense_id="taken-id"
    )

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(error) == "EXPENSE_ALREADY_EXISTS"
    assert error_details(error)["ResourceInfo"].resource_name == (
        f"{group.name}/expenses/taken-id"
    )


def test_unknown_group_not_found(clients, group):
    error = _create_error(clients, "groups/no-such-group", equal_expense(group))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(error) == "GROUP_NOT_FOUND"
    assert error_details(error)["ResourceInfo"].resource_name == (
        "groups/no-such-group"
    )


def test_non_members_rejected_and_nothing_written(clients, group):
    create_expense(clients, create_group(clients.users, size=1))
    before = latest_sequence(clients)
    outsider, stranger = sorted(
        [create_outsider(clients.users), create_outsider(clients.users)]
    )
    expense = equal_expense(group, participants=[group.members[0], stranger])
    expense.payers[0].user = outsider

    error = _create_error(clients, group.name, expense)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    violations = error_details(error)["PreconditionFailure"].violations
    assert [v.subject for v in violations] == [
        f"{group.name}/members/{outsider.removeprefix('users/')}",
        f"{group.name}/members/{stranger.removeprefix('users/')}",
    ]
    assert outsider in violations[0].description
    assert group.name in violations[0].description
    assert "expense.payers[0].user" in error.details()
    assert "expense.split.participants[1].user" in error.details()
    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=group.name), timeout=TIMEOUT
    )
    assert list(listed.expenses) == []
    assert latest_sequence(clients) == before


def test_non_members_named_in_request_order(clients, group):
    # The payer's id sorts after the participant's, and the payer comes
    # first in the request.
    participant, payer = sorted(
        [create_outsider(clients.users), create_outsider(clients.users)]
    )
    expense = equal_expense(group, participants=[group.members[0], participant])
    expense.payers[0].user = payer

    error = _create_error(clients, group.name, expense)

    violations = error_details(error)["PreconditionFailure"].violations
    assert [v.subject for v in violations] == [
        f"{group.name}/members/{payer.removeprefix('users/')}",
        f"{group.name}/members/{participant.removeprefix('users/')}",
    ]
    assert error.details().index(payer) < error.details().index(participant)


def test_non_member_creator_rejected_and_nothing_written(clients, group):
    create_expense(clients, create_group(clients.users, size=1))
    before = latest_sequence(clients)
    outsider = create_outsider(clients.users)
    expense = equal_expense(group)
    expense.creator = outsider

    error = _create_error(clients, group.name, expense)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NOT_A_GROUP_MEMBER"
    violations = error_details(error)["PreconditionFailure"].violations
    assert [v.subject for v in violations] == [
        f"{group.name}/members/{outsider.removeprefix('users/')}"
    ]
    assert "expense.creator" in error.details()
    listed = clients.expenses.ListExpenses(
        pb.ListExpensesRequest(parent=group.name), timeout=TIMEOUT
    )
    assert list(listed.expenses) == []
    assert latest_sequence(clients) == before


def test_member_added_after_create_accepted_at_once(clients, group):
    create_expense(clients, group)
    newcomer = create_outsider(clients.users)
    clients.users.AddGroupMember(
        users_pb.AddGroupMemberRequest(parent=group.name, user=newcomer),
        timeout=TIMEOUT,
    )

    created = create_expense(
        clients, group, equal_expense(group, participants=[*group.members, newcomer])
    )

    assert newcomer in owed(created)


def test_deactivated_user_rejected_as_payer_or_participant(clients, group):
    deactivated = group.members[2]
    clients.users.DeactivateUser(
        users_pb.DeactivateUserRequest(name=deactivated), timeout=TIMEOUT
    )

    as_payer = _create_error(
        clients, group.name, equal_expense(group, payer=deactivated)
    )
    as_participant = _create_error(clients, group.name, equal_expense(group))

    for error in (as_payer, as_participant):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "USER_DEACTIVATED"
        assert deactivated in error.details()
    assert "expense.payers[0].user" in as_payer.details()
    assert "expense.split.participants[2].user" in as_participant.details()
    others = [user for user in group.members if user != deactivated]
    kept = create_expense(clients, group, equal_expense(group, participants=others))
    assert deactivated not in {line.user for line in kept.owed_amounts}
