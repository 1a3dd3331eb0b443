"""The ledger consumer: exactly-once apply, revisions, restarts and reconnects."""

from __future__ import annotations

import logging
import re

import pytest
from google.type import money_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balance_service.ledger import LedgerConsumer
from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from tests.balance_service.support import (
    LedgerPeer,
    create_group,
    group_nets,
    minor,
    money_of,
    settle,
    start_balances,
    wait_until,
)
from tests.ports import free_ports


@pytest.fixture
def peer():
    running = LedgerPeer()
    yield running
    running.stop()


@pytest.fixture
def own_services(db_url, users_host, peer, tmp_path):
    running = start_balances(db_url, users_host.port, peer, tmp_path / "data")
    yield running
    running.close()


def test_update_delete_and_restore_move_by_difference(own_services):
    services = own_services
    group_id, (alice, bob, carol) = create_group(services.users, 3)
    publish = services.peer.publish

    publish(group_id, "e1", {alice: (900, 300), bob: (0, 300), carol: (0, 300)})
    services.sync()
    created = group_nets(services.balances, group_id)
    publish(group_id, "e1", {bob: (600, 200), alice: (0, 400)})
    services.sync()
    updated = group_nets(services.balances, group_id)
    publish(group_id, "e1", {bob: (600, 200), alice: (0, 400)}, deleted=True)
    services.sync()
    deleted = group_nets(services.balances, group_id)
    publish(group_id, "e1", {bob: (50, 0), alice: (0, 50)}, currency="USD")
    services.sync()
    restored = group_nets(services.balances, group_id)

    assert created == {"EUR": {alice: 600, bob: -300, carol: -300}}
    assert updated == {"EUR": {alice: -400, bob: 400, carol: 0}}
    assert deleted == {"EUR": {alice: 0, bob: 0, carol: 0}}
    assert restored == {
        "EUR": {alice: 0, bob: 0, carol: 0},
        "USD": {alice: -50, bob: 50, carol: 0},
    }


def test_stale_and_repeated_revisions_are_ignored(own_services):
    services = own_services
    group_id, (alice, bob) = create_group(services.users, 2)
    publish = services.peer.publish

    publish(group_id, "e1", {alice: (500, 0), bob: (0, 500)}, revision=2)
    publish(group_id, "e1", {alice: (100, 0), bob: (0, 100)}, revision=1)
    publish(group_id, "e1", {alice: (700, 0), bob: (0, 700)}, revision=2)
    services.sync()

    assert services.cursor() == 3
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 500, bob: -500}}


def test_restart_and_replay_from_zero_count_once(db_url, users_host, tmp_path):
    peer = LedgerPeer(replay_from_start=True)
    first = start_balances(db_url, users_host.port, peer, tmp_path / "data")
    group_id, (alice, bob) = create_group(first.users, 2)
    peer.publish(group_id, "e1", {alice: (1000, 500), bob: (0, 500)})
    peer.publish(group_id, "e2", {bob: (300, 0), alice: (0, 300)})
    peer.publish(group_id, "e1", {alice: (1000, 0), bob: (0, 1000)})
    first.sync()
    first.close()

    peer.publish(group_id, "e3", {bob: (40, 20), alice: (0, 20)})
    second = start_balances(db_url, users_host.port, peer, tmp_path / "data")
    try:
        second.sync()
        nets = group_nets(second.balances, group_id)
    finally:
        second.close()
        peer.stop()

    assert peer.requests[-1] == 3
    assert nets == {"EUR": {alice: 1000 - 300 - 20, bob: -1000 + 300 + 20}}


def test_consumer_retries_until_expense_service_starts(
    db_url, users_host, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="balance_service.ledger")
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    placeholder = LedgerPeer()
    placeholder.stop()
    placeholder.port = port
    services = start_balances(db_url, users_host.port, placeholder, tmp_path / "d")
    try:
        wait_until(lambda: "failed" in caplog.text, timeout=5)
        peer = LedgerPeer(address)
        services.peer = peer
        group_id, (alice, bob) = create_group(services.users, 2)
        peer.publish(group_id, "e1", {alice: (800, 0), bob: (0, 800)})
        services.sync()
        nets = group_nets(services.balances, group_id)
    finally:
        services.close()

    peer.stop()
    assert nets == {"EUR": {alice: 800, bob: -800}}
    assert "UNAVAILABLE" in caplog.text


def test_silent_stream_is_given_up_and_reopened(db_url, users_host, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="balance_service.ledger")
    nowhere = LedgerPeer()
    nowhere.stop()
    services = start_balances(db_url, users_host.port, nowhere, tmp_path / "data")
    # The service's own consumer reads from an address where nothing listens,
    # so this consumer alone applies the events.
    peer = LedgerPeer(stalled_streams=1)
    services.peer = peer
    consumer = LedgerConsumer(services.database, peer.address, idle_timeout=1.0)
    try:
        group_id, (alice, bob) = create_group(services.users, 2)
        peer.publish(group_id, "e1", {alice: (300, 0), bob: (0, 300)})
        consumer.start()
        services.sync()
        nets = group_nets(services.balances, group_id)
    finally:
        consumer.stop()
        services.close()
        peer.stop()

    assert nets == {"EUR": {alice: 300, bob: -300}}
    assert peer.requests == [0, 0]
    assert "no events and no heartbeat for 1s" in caplog.text


def test_gap_in_feed_stops_before_it(own_services, caplog):
    services = own_services
    caplog.set_level(logging.ERROR, logger="balance_service.ledger")
    group_id, (alice, bob) = create_group(services.users, 2)
    services.peer.publish(group_id, "e1", {alice: (100, 0), bob: (0, 100)})
    services.sync()

    skipped = services.peer.publish(group_id, "e2", {alice: (5, 0), bob: (0, 5)})
    skipped.sequence = 3
    wait_until(lambda: "gap" in caplog.text)

    assert services.cursor() == 1
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 100, bob: -100}}


def test_event_with_unbalanced_lines_is_not_applied(own_services, caplog):
    services = own_services
    caplog.set_level(logging.ERROR, logger="balance_service.ledger")
    group_id, (alice, bob) = create_group(services.users, 2)

    event = services.peer.publish(group_id, "e1", {alice: (100, 0), bob: (0, 100)})
    event.lines[1].owed.CopyFrom(money_of(90))
    wait_until(lambda: "add up to" in caplog.text)

    assert services.cursor() == 0
    assert group_nets(services.balances, group_id) == {}


def test_event_fields_are_checked():
    from balance_service.ledger import InvalidEventError, parse_event

    event = ledger_pb.LedgerEvent(
        sequence=1,
        expense="groups/abcd/expenses/efgh",
        group="groups/other",
        revision=1,
        currency_code="EUR",
    )

    with pytest.raises(InvalidEventError, match="is not in group"):
        parse_event(event)


def _two_line_event() -> ledger_pb.LedgerEvent:
    """Build a valid event of 1 EUR that alice paid and bobb owes."""
    event = ledger_pb.LedgerEvent(
        sequence=1,
        expense="groups/abcd/expenses/efgh",
        group="groups/abcd",
        revision=1,
        currency_code="EUR",
        total=money_pb2.Money(currency_code="EUR", units=1),
        expense_date={"year": 2026, "month": 11, "day": 3},
    )
    # Amounts without a currency code are in the event's currency.
    event.lines.add(
        user="users/alice",
        paid=money_pb2.Money(units=1),
        owed=money_pb2.Money(),
    )
    event.lines.add(
        user="users/bobb",
        paid=money_pb2.Money(currency_code="EUR"),
        owed=money_pb2.Money(currency_code="EUR", units=1),
    )
    return event


@pytest.mark.parametrize(
    ("field", "amount", "message"),
    [
        (
            "paid",
            money_pb2.Money(currency_code="USD", units=1),
            "lines[0].paid is in USD, but the event is in EUR",
        ),
        ("paid", money_pb2.Money(units=1, nanos=5_000_000), "1.005"),
        ("paid", money_pb2.Money(units=1, nanos=-10_000_000), "same sign as units"),
        (
            "paid",
            money_pb2.Money(units=10**14),
            "larger than the maximum of 10000000000000.00 EUR; an amount must be "
            "from -10000000000000.00 to 10000000000000.00 EUR",
        ),
    ],
)
def test_event_amounts_are_checked(field, amount, message):
    from balance_service.ledger import InvalidEventError, parse_event

    event = _two_line_event()
    getattr(event.lines[0], field).CopyFrom(amount)

    with pytest.raises(InvalidEventError, match=re.escape(message)):
        parse_event(event)


def test_event_amounts_in_minor_units():
    from balance_service.ledger import parse_event

    state = parse_event(_two_line_event())

    assert state.total == 100
    assert state.lines == (("alice", 100, 0), ("bobb", 0, 100))


# Random sequences of expense changes and settlements


_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("expense"),
            st.sampled_from(["e1", "e2", "e3"]),
            st.lists(st.integers(0, 5000), min_size=3, max_size=3),
            st.lists(st.integers(0, 3), min_size=3, max_size=3),
            st.sampled_from(["EUR", "JPY"]),
        ),
        st.tuples(st.just("delete"), st.sampled_from(["e1", "e2", "e3"])),
        st.tuples(
            st.just("settle"), st.integers(0, 2), st.integers(1, 2), st.integers(1, 900)
        ),
        st.tuples(st.just("unsettle"), st.integers(0, 5)),
    ),
    max_size=8,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=_operations)
def test_random_changes_keep_balances_exact(services, operations):
    group_id, users = create_group(services.users, 3)
    expenses: dict[str, tuple[str, dict[str, tuple[int, int]], bool]] = {}
    settlements: list[tuple[pb.Settlement, bool]] = []
    # Every currency ever used keeps its rows, at zero once nothing counts.
    touched: set[str] = set()
    for operation in operations:
        if operation[0] == "expense":
            _, expense, paid, weights, currency = operation
            lines = _lines(users, paid, weights)
            if lines is None:
                continue
            services.peer.publish(group_id, expense, lines, currency=currency)
            expenses[expense] = (currency, lines, False)
            touched.add(currency)
        elif operation[0] == "delete" and operation[1] in expenses:
            currency, lines, _ = expenses[operation[1]]
            services.peer.publish(
                group_id, operation[1], lines, currency=currency, deleted=True
            )
            expenses[operation[1]] = (currency, lines, True)
        elif operation[0] == "settle":
            _, payer, offset, amount = operation
            payee = (payer + offset) % 3
            created = settle(
                services.balances, group_id, users[payer], users[payee], amount
            )
            settlements.append((created, False))
            touched.add("EUR")
        elif operation[0] == "unsettle" and operation[1] < len(settlements):
            created, deleted = settlements[operation[1]]
            if not deleted:
                services.balances.DeleteSettlement(
                    pb.DeleteSettlementRequest(name=created.name), timeout=10
                )
                settlements[operation[1]] = (created, True)
        services.sync()
        group_nets(services.balances, group_id)

    expected = {currency: dict.fromkeys(users, 0) for currency in touched}
    for currency, lines, deleted in expenses.values():
        for user, (paid, owed) in lines.items():
            expected[currency][user] += 0 if deleted else paid - owed
    for created, deleted in settlements:
        if not deleted:
            amount = minor(created.amount)
            expected["EUR"][created.payer[6:]] += amount
            expected["EUR"][created.payee[6:]] -= amount
    assert group_nets(services.balances, group_id) == dict(expected)


def _lines(users, paid, weights):
    """Lines where users pay `paid` and owe the total in proportion to weights."""
    total = sum(paid)
    if not total or not sum(weights):
        return None
    owed = [total * weight // sum(weights) for weight in weights]
    owed[weights.index(max(weights))] += total - sum(owed)
    return {
        user: (paid[i], owed[i]) for i, user in enumerate(users) if paid[i] or owed[i]
    }
