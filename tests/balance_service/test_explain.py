"""ExplainBalance pages over a long mixed history, against real services.

The history has items of one date and create time, expenses deleted and
restored, an expense moved to another date, and settlements deleted and
restored. Paging through it in small pages must give what one large page
gives, and the net amount, read from the stored balances, must equal the
sum of the listed changes.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime, timedelta

import grpc
import pytest
from google.type import date_pb2

from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime import pagination
from tests.balance_service.support import (
    create_group,
    group_nets,
    minor,
    reason_of,
    settle,
    unique_id,
)

TIE_DAY = date(2024, 3, 1)
TIE_TIME = datetime(2024, 3, 1, 12, 0, 0)


def _date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def _request(group_id: str, user: str, **fields) -> pb.ExplainBalanceRequest:
    counterparty = fields.pop("counterparty", None)
    return pb.ExplainBalanceRequest(
        name=f"groups/{group_id}/balance",
        user=f"users/{user}",
        currency_code=fields.pop("currency_code", "EUR"),
        counterparty=f"users/{counterparty}" if counterparty else "",
        **fields,
    )


def _item(contribution) -> tuple:
    return (
        contribution.source,
        contribution.description,
        (contribution.date.year, contribution.date.month, contribution.date.day),
        minor(contribution.paid_amount),
        minor(contribution.owed_amount),
        minor(contribution.net_change),
        minor(contribution.running_net_amount),
    )


def _pages(services, group_id: str, user: str, page_size: int, **fields):
    """Return the net amounts of every page and all items, page by page."""
    nets, items, token = [], [], ""
    # A token that does not move on would repeat a page forever.
    for _ in range(200):
        response = services.balances.ExplainBalance(
            _request(group_id, user, page_size=page_size, page_token=token, **fields),
            timeout=10,
        )
        assert len(response.contributions) <= page_size
        nets.append(minor(response.net_amount))
        items += [_item(contribution) for contribution in response.contributions]
        token = response.next_page_token
        if not token:
            return nets, items
    raise AssertionError(f"no last page after 200 pages of {page_size}: {items}")


def _one_page(services, group_id: str, user: str, **fields):
    response = services.balances.ExplainBalance(
        _request(group_id, user, page_size=1000, **fields), timeout=10
    )
    assert response.next_page_token == ""
    items = [_item(contribution) for contribution in response.contributions]
    return minor(response.net_amount), items


def _pair_amounts(services, group_id: str) -> dict[tuple[str, str], int]:
    """Return what the second user of each key owes the first."""
    amounts: dict[tuple[str, str], int] = {}
    response = services.balances.ListPairwiseBalances(
        pb.ListPairwiseBalancesRequest(parent=f"groups/{group_id}", page_size=1000),
        timeout=10,
    )
    for line in response.pairwise_balances:
        debtor = line.debtor.removeprefix("users/")
        creditor = line.creditor.removeprefix("users/")
        amounts[creditor, debtor] = minor(line.amount)
        amounts[debtor, creditor] = -minor(line.amount)
    return amounts


def _mixed_history(services) -> tuple[str, list[str], str]:
    """Build a group whose history has every kind of item and tie.

    Returns the group id, the three member ids and the name of the
    settlement that shares its date and create time with an expense.
    """
    group_id, members = create_group(services.users, 3)
    alice, bob, carol = members
    publish = services.peer.publish
    # Seven expenses of one date and create time, published out of id order.
    for index in (4, 1, 6, 3, 0, 5, 2):
        lines = {alice: (900, 300), bob: (0, 300), carol: (0, 300)}
        if index % 3 == 1:
            lines = {bob: (500, 250), carol: (0, 250)}
        elif index % 3 == 2:
            lines = {carol: (701, 234), alice: (0, 234), bob: (0, 233)}
        publish(
            group_id,
            f"tie-{index}",
            lines,
            day=TIE_DAY,
            commit_time=TIE_TIME,
            description=f"tie {index}",
        )
    # Expenses on other dates, published out of date order.
    for index in range(12):
        day = date(2024, 1, 1) + timedelta(days=(index * 7) % 90)
        payer = members[index % 3]
        lines = {member: (0, 100 + index) for member in members}
        lines[payer] = (300 + 3 * index, 100 + index)
        publish(group_id, f"spread-{index}", lines, day=day)
    # Deleted, deleted then restored, and moved to another date.
    publish(group_id, "gone", {alice: (400, 0), bob: (0, 400)}, day=TIE_DAY)
    publish(group_id, "gone", {alice: (400, 0), bob: (0, 400)}, deleted=True)
    back_lines = {bob: (1000, 500), alice: (0, 500)}
    publish(group_id, "back", back_lines, day=date(2024, 2, 2))
    publish(group_id, "back", back_lines, day=date(2024, 2, 2), deleted=True)
    publish(group_id, "back", back_lines, day=date(2024, 2, 2))
    publish(group_id, "moved", {carol: (600, 300), bob: (0, 300)}, day=TIE_DAY)
    publish(group_id, "moved", {carol: (800, 400), bob: (0, 400)}, day=date(2024, 4, 4))
    services.sync()

    # Settlements on the tie date and others, one deleted, one restored.
    tie_date = _date(TIE_DAY)
    settle(services.balances, group_id, bob, alice, 150, settlement_date=tie_date)
    settle(services.balances, group_id, carol, bob, 70, settlement_date=tie_date)
    settle(services.balances, group_id, alice, carol, 30, note="early")
    removed = settle(services.balances, group_id, bob, carol, 999)
    services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=removed.name), timeout=10
    )
    restored = settle(services.balances, group_id, carol, alice, 45)
    deleted = services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=restored.name), timeout=10
    ).settlement
    services.balances.UndeleteSettlement(
        pb.UndeleteSettlementRequest(name=restored.name, etag=deleted.etag),
        timeout=10,
    )
    # An expense with the date and create time of a settlement.
    shared = settle(
        services.balances,
        group_id,
        alice,
        bob,
        20,
        settlement_date=tie_date,
        note="same time",
    )
    publish(
        group_id,
        "beside",
        {bob: (60, 30), alice: (0, 30)},
        day=TIE_DAY,
        commit_time=shared.create_time.ToDatetime(),
        description="same time",
    )
    services.sync()
    return group_id, members, shared.name


@pytest.fixture(scope="module")
def history(services):
    return _mixed_history(services)


def _cases(members: list[str]):
    for user in members:
        yield user, None
        for other in members:
            if other != user:
                yield user, other


@pytest.mark.parametrize("page_size", [1, 2, 3, 7])
def test_pages_match_one_page(services, history, page_size):
    group_id, members, _ = history

    for user, counterparty in _cases(members):
        net, expected = _one_page(services, group_id, user, counterparty=counterparty)
        nets, items = _pages(
            services, group_id, user, page_size, counterparty=counterparty
        )

        assert items == expected, (user, counterparty)
        assert set(nets) == {net}, (user, counterparty)


def test_order_is_date_time_then_source(services, history):
    group_id, (alice, _, _), shared = history

    _, items = _one_page(services, group_id, alice)

    ties = [item[0] for item in items if item[1].startswith("tie ")]
    assert ties == sorted(ties)
    assert len(ties) == 5
    sources = [item[0] for item in items]
    beside = f"groups/{group_id}/expenses/expense-beside"
    assert sources.index(beside) + 1 == sources.index(shared)
    days = [item[2] for item in items]
    assert days == sorted(days)


def test_leaves_out_deleted_items(services, history):
    group_id, (_, bob, _), _ = history

    _, items = _one_page(services, group_id, bob)

    sources = [item[0] for item in items]
    assert f"groups/{group_id}/expenses/expense-gone" not in sources
    assert f"groups/{group_id}/expenses/expense-back" in sources
    settlement_notes = [item[1] for item in items if "/settlements/" in item[0]]
    assert len(settlement_notes) == 3
    moved = [item for item in items if item[0].endswith("/expense-moved")]
    assert [(item[2], item[5]) for item in moved] == [((2024, 4, 4), -400)]


def test_net_is_sum_of_changes(services, history):
    group_id, members, _ = history
    balances = group_nets(services.balances, group_id)["EUR"]
    pairs = _pair_amounts(services, group_id)

    for user, counterparty in _cases(members):
        net, items = _one_page(services, group_id, user, counterparty=counterparty)
        if counterparty is None:
            stored = balances[user]
        else:
            stored = pairs.get((user, counterparty), 0)

        assert net == stored, (user, counterparty)
        assert sum(item[5] for item in items) == net, (user, counterparty)
        assert items[-1][6] == net, (user, counterparty)


def test_later_page_keeps_token_running(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    for index in range(4):
        services.peer.publish(
            group_id,
            f"e{index}",
            {alice: (200, 100), bob: (0, 100)},
            day=date(2024, 1, 1 + index),
        )
    services.sync()
    first = services.balances.ExplainBalance(
        _request(group_id, alice, page_size=2), timeout=10
    )
    # An expense of the first page changes before the second page is read.
    services.peer.publish(
        group_id, "e0", {alice: (1200, 600), bob: (0, 600)}, day=date(2024, 1, 1)
    )
    services.sync()

    second = services.balances.ExplainBalance(
        _request(group_id, alice, page_size=2, page_token=first.next_page_token),
        timeout=10,
    )

    assert [minor(c.running_net_amount) for c in first.contributions] == [100, 200]
    assert [minor(c.running_net_amount) for c in second.contributions] == [300, 400]
    assert minor(second.net_amount) == 900


def _forged_tokens(group_id: str, selector: list) -> dict[str, str]:
    """Return tokens with the right selector but a key the service never makes."""
    day, time = "2024-03-01", "2024-03-01T12:00:00"
    expense = f"groups/{group_id}/expenses/expense-tie-1"

    def token(key: list) -> str:
        return pagination.encode_token(key, selector)

    return {
        "not base64": "%%%",
        "not json": base64.urlsafe_b64encode(b"{").decode(),
        "empty key": token([]),
        "key of an older version": token([day, time, expense]),
        "running as text": token([day, time, expense, "10"]),
        "running as bool": token([day, time, expense, True]),
        "running as float": token([day, time, expense, 1.5]),
        "running too large": token([day, time, expense, 10**30]),
        "running past the volume caps": token([day, time, expense, 8 * 10**18 + 1]),
        "invalid date": token(["2024-13-01", time, expense, 0]),
        "invalid time": token([day, "noon", expense, 0]),
        "time with offset": token([day, "2024-03-01T12:00:00+02:00", expense, 0]),
        "date as number": token([20240301, time, expense, 0]),
        "other group": token([day, time, "groups/other/expenses/e1", 0]),
        "other kind": token([day, time, f"groups/{group_id}/notes/n1", 0]),
        "empty id": token([day, time, f"groups/{group_id}/expenses/", 0]),
        "five parts": token([day, time, expense, 0, 0]),
        "key not a list": base64.urlsafe_b64encode(
            json.dumps({"k": {"a": 1}, "s": "x"}).encode()
        ).decode(),
    }


def test_forged_tokens_rejected(services, history):
    group_id, (alice, _, _), _ = history
    request = _request(group_id, alice)
    selector = ["ExplainBalance", request.name, alice, "EUR", None]

    for case, token in _forged_tokens(group_id, selector).items():
        request.page_token = token
        with pytest.raises(grpc.RpcError) as caught:
            services.balances.ExplainBalance(request, timeout=10)

        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert reason_of(caught.value) == "INVALID_PAGE_TOKEN", case
        assert "page_token" in caught.value.details(), case


def test_token_at_volume_cap_accepted(services, history):
    group_id, (alice, _, _), _ = history
    request = _request(group_id, alice)
    selector = ["ExplainBalance", request.name, alice, "EUR", None]
    # Nets may reach the expense and settlement caps together, 8 * 10**18.
    request.page_token = pagination.encode_token(
        [
            "1999-01-01",
            "1999-01-01T00:00:00",
            f"groups/{group_id}/expenses/x",
            8 * 10**18,
        ],
        selector,
    )

    response = services.balances.ExplainBalance(request, timeout=10)

    assert response.contributions
    first = response.contributions[0]
    assert minor(first.running_net_amount) == 8 * 10**18 + minor(first.net_change)


def test_token_of_other_request_rejected(services, history):
    group_id, (alice, bob, _), _ = history
    token = services.balances.ExplainBalance(
        _request(group_id, alice, page_size=1), timeout=10
    ).next_page_token

    for fields in (
        {"counterparty": bob},
        {"currency_code": "USD"},
        {"user": bob},
    ):
        user = fields.pop("user", alice)
        request = _request(group_id, user, page_token=token, **fields)
        with pytest.raises(grpc.RpcError) as caught:
            services.balances.ExplainBalance(request, timeout=10)

        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(caught.value) == "PAGE_TOKEN_MISMATCH"


def _ordered_group(services, size: int) -> tuple[str, list[str]]:
    """Create a group of `size` users whose ids sort in creation order.

    Rounding ties in an expense with several payers go by user id, so the
    expected amounts below hold only for ids in this order.
    """
    prefix = unique_id("wide")
    user_ids = [f"{prefix}-{index:02d}" for index in range(size)]
    for user_id in user_ids:
        services.users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(email=f"{user_id}@example.com", display_name="W"),
                user_id=user_id,
            ),
            timeout=10,
        )
    group_id = unique_id("group")
    services.users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Wide", creator=f"users/{user_ids[0]}"),
            group_id=group_id,
        ),
        timeout=10,
    )
    for user_id in user_ids[1:]:
        services.users.AddGroupMember(
            users_pb.AddGroupMemberRequest(
                parent=f"groups/{group_id}", user=f"users/{user_id}"
            ),
            timeout=10,
        )
    return group_id, user_ids


@pytest.fixture(scope="module")
def wide_history(services):
    """Build a group of 30 members with many expenses that leave out a pair.

    Returns the group id, the member ids, and for the pair of the first two
    members the expected `(expense id, change)` items in page order, where
    the change is what the second member owes the first.
    """
    group_id, members = _ordered_group(services, 30)
    alice, bob, carol = members[:3]
    others = members[3:]
    publish = services.peer.publish
    everyone = {member: (0, 100) for member in members}
    pair = []

    def publish_shared(expense_id: str, lines: dict, change: int, index: int) -> None:
        day = date(2024, 1, 1) + timedelta(days=index)
        publish(group_id, expense_id, lines, day=day)
        pair.append((expense_id, change))

    # Split among everyone, paid by one of the pair, or by neither.
    publish_shared("alice-pays", {**everyone, alice: (3000, 100)}, 100, 0)
    publish_shared("bob-pays", {**everyone, bob: (3000, 100)}, -100, 1)
    publish_shared("carol-pays", {**everyone, carol: (3000, 100)}, 0, 2)
    # Several payers: the shares follow the rounding rule, with ties by id.
    # Bob owes alice 66.67 and alice owes bob 33.33 before rounding.
    publish_shared(
        "two-payers",
        {alice: (200, 100), bob: (100, 100), carol: (0, 100)},
        67 - 33,
        3,
    )
    publish_shared(
        "three-payers",
        {alice: (1001, 501), bob: (500, 500), carol: (1, 501)},
        333 - 167,
        4,
    )
    # A refund paid back to alice, and an expense with nothing paid.
    refund = {member: (0, -100) for member in members}
    publish_shared("refund", {**refund, alice: (-3000, -100)}, -100, 5)
    publish_shared("nothing-paid", {alice: (0, 50), bob: (0, -50)}, -50, 6)
    # Many expenses without the pair, some with alice alone.
    for index in range(60):
        group = [others[(index + step) % len(others)] for step in range(4)]
        lines = {member: (0, 25) for member in group}
        lines[group[0]] = (100, 25)
        if index % 3 == 0:
            lines[group[0]] = (125, 25)
            lines[alice] = (0, 25)
        publish(group_id, f"others-{index}", lines, day=date(2024, 1, 1))
    # Moved to another currency, deleted, and moved to a later date.
    publish(group_id, "to-usd", {alice: (200, 100), bob: (0, 100)})
    publish(group_id, "to-usd", {alice: (200, 100), bob: (0, 100)}, currency="USD")
    publish(group_id, "deleted", {alice: (0, 100), bob: (200, 100)})
    publish(group_id, "deleted", {alice: (0, 100), bob: (200, 100)}, deleted=True)
    publish(group_id, "later", {alice: (0, 70), bob: (70, 0)}, day=date(2023, 1, 1))
    later = {alice: (0, 70), bob: (140, 70)}
    publish(group_id, "later", later, day=date(2025, 1, 1))
    pair.append(("later", -70))
    services.sync()
    return group_id, members, pair


def test_wide_group_pair_amounts(services, wide_history):
    group_id, members, pair = wide_history
    alice, bob = members[:2]
    expected = []
    running = 0
    for expense_id, change in pair:
        running += change
        expected.append(
            (f"groups/{group_id}/expenses/expense-{expense_id}", change, running)
        )

    net, items = _one_page(services, group_id, alice, counterparty=bob)

    assert [(item[0], item[5], item[6]) for item in items] == expected
    assert net == running


def test_wide_group_pair_mirrors(services, wide_history):
    group_id, members, pair = wide_history
    alice, bob = members[:2]

    _, forward = _one_page(services, group_id, alice, counterparty=bob)
    net, backward = _one_page(services, group_id, bob, counterparty=alice)

    assert [item[0] for item in backward] == [item[0] for item in forward]
    assert [item[5] for item in backward] == [-item[5] for item in forward]
    assert net == -sum(change for _, change in pair)


@pytest.mark.parametrize("page_size", [1, 3])
def test_wide_group_pages_match_one_page(services, wide_history, page_size):
    group_id, members, _ = wide_history
    alice, bob, carol = members[:3]

    for user, counterparty in ((alice, bob), (bob, carol), (alice, None)):
        net, expected = _one_page(services, group_id, user, counterparty=counterparty)
        nets, items = _pages(
            services, group_id, user, page_size, counterparty=counterparty
        )

        assert items == expected, (user, counterparty)
        assert set(nets) == {net}, (user, counterparty)


def test_wide_group_member_items(services, wide_history):
    group_id, members, _ = wide_history
    alice = members[0]
    balances = group_nets(services.balances, group_id)["EUR"]

    net, items = _one_page(services, group_id, alice)

    sources = [item[0].rsplit("/expense-", 1)[1] for item in items]
    assert sources.count("later") == 1
    assert "to-usd" not in sources
    assert "deleted" not in sources
    assert len([source for source in sources if source.startswith("others-")]) == 20
    assert net == balances[alice]
    assert sum(item[5] for item in items) == net
