"""The ledger: one event per change, and StreamLedgerEvents with live events."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from expense_service import storage
from expense_service.app import build as build_expenses
from expense_service.ledger import HEARTBEAT_SECONDS, RECENT_EVENTS, LedgerFeed
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog_runtime.database import Database
from tests.expense_service.conftest import make_config, open_clients, start_pair
from tests.expense_service.support import (
    TIMEOUT,
    backlog,
    create_expense,
    create_group,
    equal_expense,
    latest_sequence,
    money,
    reason_of,
    violated_fields,
)


@pytest.fixture
def group(clients):
    return create_group(clients.users, size=3)


def _minor(amount) -> int:
    return amount.units * 100 + amount.nanos // 10_000_000


def test_each_change_makes_one_event(clients, group):
    a, b, c = group.members
    created = create_expense(clients, group)
    first = latest_sequence(clients)

    clients.expenses.UpdateExpense(
        pb.UpdateExpenseRequest(
            expense=pb.Expense(name=created.name, last_modifier=b, description="Pizza")
        ),
        timeout=TIMEOUT,
    )
    delete = pb.DeleteExpenseRequest(name=created.name, last_modifier=c)
    clients.expenses.DeleteExpense(delete, timeout=TIMEOUT)
    clients.expenses.DeleteExpense(delete, timeout=TIMEOUT)
    clients.expenses.UndeleteExpense(
        pb.UndeleteExpenseRequest(name=created.name, last_modifier=a),
        timeout=TIMEOUT,
    )
    events = backlog(clients, first - 1)

    assert [e.sequence for e in events] == [first, first + 1, first + 2, first + 3]
    assert {e.expense for e in events} == {created.name}
    assert [e.revision for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events] == [
        ledger_pb.LEDGER_EVENT_TYPE_CREATED,
        ledger_pb.LEDGER_EVENT_TYPE_UPDATED,
        ledger_pb.LEDGER_EVENT_TYPE_DELETED,
        ledger_pb.LEDGER_EVENT_TYPE_RESTORED,
    ]
    assert [e.deleted for e in events] == [False, False, True, False]
    assert [e.description for e in events] == ["Dinner", "Pizza", "Pizza", "Pizza"]
    assert all(e.group == group.name for e in events)


def test_event_carries_full_state(clients, group):
    a, b, c = group.members
    expense = equal_expense(group, "10.00", payer=c, participants=[a, b])
    expense.category = pb.CATEGORY_TAXES
    created = create_expense(clients, group, expense)

    (event,) = backlog(clients, latest_sequence(clients) - 1)

    assert event.expense == created.name
    assert event.currency_code == "USD"
    assert event.expense_date == created.expense_date
    assert event.category == pb.CATEGORY_TAXES
    assert event.total == money("10.00")
    assert event.commit_time == created.create_time
    lines = {line.user: (_minor(line.paid), _minor(line.owed)) for line in event.lines}
    assert lines == {a: (0, 500), b: (0, 500), c: (1000, 0)}
    assert all(line.paid.currency_code == "USD" for line in event.lines)


def test_refund_event_lines_are_negative(clients, group):
    create_expense(clients, group, equal_expense(group, "-3.00"))

    (event,) = backlog(clients, latest_sequence(clients) - 1)

    assert sum(_minor(line.owed) for line in event.lines) == -300
    assert sum(_minor(line.paid) for line in event.lines) == -300
    assert all(_minor(line.owed) == -100 for line in event.lines)


def test_rejected_change_makes_no_event(clients, group):
    created = create_expense(clients, group)
    before = latest_sequence(clients)

    with pytest.raises(grpc.RpcError):
        clients.expenses.UpdateExpense(
            pb.UpdateExpenseRequest(
                expense=pb.Expense(
                    name=created.name,
                    last_modifier=group.members[0],
                    total=money("99.00"),
                )
            ),
            timeout=TIMEOUT,
        )
    with pytest.raises(grpc.RpcError):
        clients.expenses.UndeleteExpense(
            pb.UndeleteExpenseRequest(
                name=created.name, last_modifier=group.members[0]
            ),
            timeout=TIMEOUT,
        )
    create_expense(clients, group)

    assert [e.sequence for e in backlog(clients, before)] == [before + 1]


def test_stream_sends_backlog_in_order(clients, group):
    for _ in range(3):
        create_expense(clients, group)

    events = backlog(clients)

    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_stream_sends_live_events(clients, group):
    create_expense(clients, group)
    before = latest_sequence(clients)
    received: queue.Queue = queue.Queue()
    stream = clients.ledger.StreamLedgerEvents(
        ledger_pb.StreamLedgerEventsRequest(after_sequence=before - 1),
        timeout=TIMEOUT,
    )

    def consume():
        try:
            for response in stream:
                for event in response.events:
                    received.put((time.monotonic(), event))
        except grpc.RpcError as error:
            received.put((time.monotonic(), error))

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        _, backlog_event = received.get(timeout=TIMEOUT)
        created = create_expense(clients, group)
        committed = time.monotonic()
        arrived, live_event = received.get(timeout=TIMEOUT)
    finally:
        stream.cancel()
        reader.join(TIMEOUT)

    assert backlog_event.sequence == before
    assert live_event.sequence == before + 1
    assert live_event.expense == created.name
    assert arrived - committed < 2
    assert not reader.is_alive()


def test_idle_stream_sends_headers_at_once_then_heartbeats(clients, group):
    create_expense(clients, group)
    stream = clients.ledger.StreamLedgerEvents(
        ledger_pb.StreamLedgerEventsRequest(after_sequence=latest_sequence(clients)),
        timeout=HEARTBEAT_SECONDS + 5,
    )
    try:
        opened = time.monotonic()
        stream.initial_metadata()
        headers = time.monotonic() - opened
        first = next(stream)
        heartbeat = time.monotonic() - opened
    finally:
        stream.cancel()

    assert headers < 1
    assert list(first.events) == []
    assert heartbeat < HEARTBEAT_SECONDS + 2


def test_stream_reads_other_writers_events(clients, group, module_db_url):
    first = create_expense(clients, group)
    before = latest_sequence(clients)
    (event,) = backlog(clients, before - 1)
    # Another expense_service process on the same database stores an event,
    # which never reaches this process's feed.
    event.sequence = before + 1
    event.revision += 1
    event.type = ledger_pb.LEDGER_EVENT_TYPE_UPDATED
    other = Database(module_db_url)
    try:
        with other.transaction() as session:
            assert storage.next_sequence(session) == event.sequence
            storage.add_event(
                session,
                sequence=event.sequence,
                expense_name=event.expense,
                revision=event.revision,
                event_type=event.type,
                commit_time=storage.utc_now(),
                payload=event.SerializeToString(),
            )
    finally:
        other.dispose()
    last = create_expense(clients, group)

    events = backlog(clients, before - 1)

    assert [e.sequence for e in events] == [before, before + 1, before + 2]
    assert [e.expense for e in events] == [first.name, first.name, last.name]
    assert events[1] == event


def _events(*sequences: int) -> list[ledger_pb.LedgerEvent]:
    return [ledger_pb.LedgerEvent(sequence=sequence) for sequence in sequences]


def _sequences(events: list[ledger_pb.LedgerEvent] | None) -> list[int] | None:
    return None if events is None else [event.sequence for event in events]


def test_feed_returns_published_events_in_sequence_order():
    feed = LedgerFeed()
    feed.publish(_events(5, 6))
    feed.publish(_events(4))
    feed.publish(_events(7))

    assert _sequences(feed.recent(3, 10)) == [4, 5, 6, 7]
    assert _sequences(feed.recent(4, 2)) == [5, 6]
    assert _sequences(feed.recent(6, 10)) == [7]


def test_feed_gap_returns_none():
    feed = LedgerFeed()
    # Sequence 5 committed in another process.
    feed.publish(_events(4, 6))

    assert feed.recent(2, 10) is None
    assert feed.recent(3, 10) is None
    assert _sequences(feed.recent(3, 1)) == [4]
    assert _sequences(feed.recent(5, 10)) == [6]
    assert feed.recent(6, 10) is None


def test_feed_keeps_only_the_newest_events():
    feed = LedgerFeed()
    feed.publish(_events(*range(1, RECENT_EVENTS + 11)))

    assert feed.recent(0, 5) is None
    assert feed.recent(9, 5) is None
    assert _sequences(feed.recent(10, 3)) == [11, 12, 13]


def test_feed_publish_wakes_a_waiting_stream():
    feed = LedgerFeed()
    generation = feed.generation
    with ThreadPoolExecutor(1) as pool:
        waiter = pool.submit(feed.wait, generation, TIMEOUT)
        feed.publish(_events(1))
        woken = waiter.result(TIMEOUT)

    assert woken is True
    assert feed.generation == generation + 1


def test_stream_negative_sequence_rejected(clients):
    stream = clients.ledger.StreamLedgerEvents(
        ledger_pb.StreamLedgerEventsRequest(after_sequence=-1), timeout=TIMEOUT
    )

    with pytest.raises(grpc.RpcError) as caught:
        next(stream)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "INVALID_SEQUENCE"
    assert violated_fields(caught.value) == ["after_sequence"]


def test_stream_ahead_of_ledger_out_of_range(clients, group):
    create_expense(clients, group)
    ahead = latest_sequence(clients) + 1000
    stream = clients.ledger.StreamLedgerEvents(
        ledger_pb.StreamLedgerEventsRequest(after_sequence=ahead), timeout=TIMEOUT
    )

    with pytest.raises(grpc.RpcError) as caught:
        next(stream)

    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert reason_of(caught.value) == "SEQUENCE_AHEAD_OF_LEDGER"


def test_concurrent_creates_on_one_group(clients, group):
    create_expense(clients, group)
    before = latest_sequence(clients)

    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = [
            pool.submit(
                create_expense,
                clients,
                group,
                equal_expense(group, f"{index + 1}.00"),
            )
            for index in range(32)
        ]
        created = [future.result() for future in futures]

    events = backlog(clients, before)
    assert [e.sequence for e in events] == list(range(before + 1, before + 33))
    assert sorted(e.expense for e in events) == sorted(c.name for c in created)
    assert all(e.revision == 1 for e in events)


def test_concurrent_updates_of_one_expense(clients, group):
    created = create_expense(clients, group)
    before = latest_sequence(clients)

    def rename(index: int) -> pb.Expense:
        request = pb.UpdateExpenseRequest(
            expense=pb.Expense(
                name=created.name,
                last_modifier=group.members[index % 3],
                description=f"Version {index}",
            )
        )
        return clients.expenses.UpdateExpense(request, timeout=TIMEOUT).expense

    with ThreadPoolExecutor(max_workers=8) as pool:
        updated = list(pool.map(rename, range(8)))

    events = backlog(clients, before)
    assert sorted(e.etag for e in updated) == sorted(f'"{n}"' for n in range(2, 10))
    assert [e.revision for e in events] == list(range(2, 10))
    assert [e.sequence for e in events] == list(range(before + 1, before + 9))


def test_position_is_newest_event(clients, group):
    created = create_expense(clients, group)

    position = clients.ledger.GetLedgerPosition(
        ledger_pb.GetLedgerPositionRequest(), timeout=TIMEOUT
    ).last_sequence
    events = backlog(clients, position - 1)
    create_expense(clients, group)
    next_position = clients.ledger.GetLedgerPosition(
        ledger_pb.GetLedgerPositionRequest(), timeout=TIMEOUT
    ).last_sequence

    assert [event.sequence for event in events] == [position]
    assert events[0].expense == created.name
    assert next_position == position + 1


def _stream_messages(clients, count: int) -> list[ledger_pb.StreamLedgerEventsResponse]:
    """Read stream messages from the start until `count` events arrived."""
    messages = []
    stream = clients.ledger.StreamLedgerEvents(
        ledger_pb.StreamLedgerEventsRequest(after_sequence=0), timeout=TIMEOUT
    )
    try:
        for response in stream:
            messages.append(response)
            if sum(len(message.events) for message in messages) >= count:
                break
    finally:
        stream.cancel()
    return messages


def test_stream_messages_fit_message_limit(tmp_path):
    # 60 events of a 12-member group take about 40 KiB, so they need several
    # messages of at most 16 KiB, from the feed and from the table.
    limit = 16 * 1024
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'expenses.db'}")
    config = config.replace(max_message_bytes=limit)
    with start_pair(config) as (users, expenses):
        with open_clients(users, expenses) as clients:
            group = create_group(clients.users, size=12)
            for _ in range(60):
                create_expense(clients, group)
            from_feed = _stream_messages(clients, 60)
        # A new process has an empty feed, so it reads the table.
        expenses.stop(0)
        wired = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
        restarted = build_expenses(wired, "127.0.0.1:0")
        try:
            with open_clients(users, restarted) as clients:
                from_table = _stream_messages(clients, 60)
        finally:
            restarted.stop(0)

    for messages in (from_feed, from_table):
        sequences = [event.sequence for message in messages for event in message.events]
        assert sequences == list(range(1, 61))
        assert len(messages) > 2
        assert max(message.ByteSize() for message in messages) <= limit
