"""The transactional outbox of expense changes and the stream that serves it.

Every create, update, delete and undelete calls `append_event` in its own
transaction, so an expense change and its ledger event commit together or
not at all. `LedgerServicer.StreamLedgerEvents` sends the stored backlog,
then each new event once its transaction commits. A stream wakes up when
`LedgerFeed.notify` reports a commit in this process, and also every
`POLL_SECONDS`, so events written by another process on the same database
arrive too. After a wake-up it lingers `LINGER_SECONDS` before reading, so
the commits of concurrent writers go out together in one message and the
reader applies them in one transaction.

A message carries at most `BATCH_SIZE` events, and fewer when they would not
fit in `max_message_bytes`: 500 events of an expense with 500 participants
and long user names do not, and a message that the reader cannot receive
would stop the ledger of every group. A message always carries at least one
event, which fits, because the payers and participants of an expense are
limited.

A stream sends its headers as soon as it opens, and a message without events
(a heartbeat) after every `HEARTBEAT_SECONDS` without events. A reader that
receives nothing for several heartbeats can take the stream for dead, even
when the connection looks open (see balance_service/ledger.py).

The writers of this process hand their events to the feed once they have
committed (`LedgerFeed.publish`), and a stream sends them from there without
reading the table. It reads the table whenever the feed lacks one of the
events it needs, such as an event written by another process or one that a
lagging stream needs after the feed dropped it.

`LedgerServicer.GetLedgerPosition` returns the newest committed sequence, so
that a reader can wait until it has applied every change acknowledged so far.
Given a group, it first fences the group's writes
(`splitlog_runtime.fencing`), so that the position also covers every write
that checked membership before the call.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TypeVar

import grpc
from sqlalchemy.orm import Session

from expense_service import domain, messages, storage
from expense_service.membership import MembershipClient
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog_runtime.channels import downstream_timeout
from splitlog_runtime.database import Database
from splitlog_runtime.errors import OutOfRange, Unavailable, invalid_field
from splitlog_runtime.fencing import GroupWrites

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = ledger_pb.DESCRIPTOR.services_by_name["LedgerService"].full_name

#: Maximum number of events in one StreamLedgerEventsResponse.
BATCH_SIZE = 500
#: Bytes of a StreamLedgerEventsResponse kept below max_message_bytes. The
#: events are counted exactly, so this only covers the gRPC framing.
MESSAGE_MARGIN_BYTES = 1024
#: Seconds between two checks of the ledger table when no commit is reported.
POLL_SECONDS = 0.5
#: Seconds a stream waits after a wake-up so that more commits join the batch.
LINGER_SECONDS = 0.03
#: Seconds without events after which a stream sends a heartbeat, an empty message.
HEARTBEAT_SECONDS = 5.0
#: Seconds a client should wait before reconnecting after the server stopped.
RECONNECT_DELAY_SECONDS = 1.0
#: Seconds GetLedgerPosition keeps for its response after fencing writes, so
#: that the caller receives its error rather than DEADLINE_EXCEEDED.
FENCE_MARGIN_SECONDS = 0.1
#: Committed events that the feed keeps for the streams, by sequence.
RECENT_EVENTS = 2 * BATCH_SIZE
# An event as a message or as its stored payload.
_E = TypeVar("_E")
# The key in `Session.info` of the events a transaction appended.
_APPENDED = "splitlog_ledger_events"

CREATED = ledger_pb.LEDGER_EVENT_TYPE_CREATED
UPDATED = ledger_pb.LEDGER_EVENT_TYPE_UPDATED
DELETED = ledger_pb.LEDGER_EVENT_TYPE_DELETED
RESTORED = ledger_pb.LEDGER_EVENT_TYPE_RESTORED


class LedgerFeed:
    """Signal that wakes waiting ledger streams after commits and ends them on stop.

    It also keeps the latest `RECENT_EVENTS` committed events of this process,
    so that the streams send them without reading the table.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self._closed = False
        # By sequence, in the order published, which is about sequence order.
        self._recent: OrderedDict[int, ledger_pb.LedgerEvent] = OrderedDict()
        self._newest = 0

    @property
    def generation(self) -> int:
        """Number of wake-ups so far; compare it to notice a new one."""
        with self._condition:
            return self._generation

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed

    def notify(self) -> None:
        """Wake every stream, because an event committed or a client left."""
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def publish(self, events: Sequence[ledger_pb.LedgerEvent]) -> None:
        """Keep the events of a transaction that committed, and wake every stream.

        Call it only after the commit, so that a stream never sends an event
        that is not stored. The events must not change afterwards.
        """
        with self._condition:
            for event in events:
                self._recent[event.sequence] = event
                self._newest = max(self._newest, event.sequence)
            while len(self._recent) > RECENT_EVENTS:
                self._recent.popitem(last=False)
            self._generation += 1
            self._condition.notify_all()

    def recent(self, after: int, limit: int) -> list[ledger_pb.LedgerEvent] | None:
        """Return the kept events after sequence `after`, at most `limit`.

        Returns None unless the feed contains every event from `after + 1`
        to its newest one (or `limit` events), because otherwise the table
        may contain events that the feed lacks.
        """
        with self._condition:
            events = []
            sequence = after + 1
            while len(events) < limit:
                event = self._recent.get(sequence)
                if event is None:
                    break
                events.append(event)
                sequence += 1
            if not events or (len(events) < limit and sequence <= self._newest):
                return None
            return events

    def close(self) -> None:
        """End every stream, current and future; the server is stopping."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def wait(self, seen_generation: int, timeout: float) -> bool:
        """Block until a wake-up after `seen_generation`, a close, or the timeout.

        Returns:
          True after a wake-up or a close, False after the timeout.
        """
        with self._condition:
            return self._condition.wait_for(
                lambda: self._closed or self._generation != seen_generation,
                timeout,
            )


def _varint_bytes(value: int) -> int:
    """Return the bytes of a non-negative int as a protobuf varint."""
    return max(1, (value.bit_length() + 6) // 7)


def build_event(
    stored: storage.StoredExpense,
    event_type: int,
    commit_time: datetime.datetime,
) -> ledger_pb.LedgerEvent:
    """Describe an expense's state after a change; the sequence is set later."""
    row, currency = stored.row, stored.row.currency_code
    paid = {payer.user: payer.amount_minor for payer in stored.payers}
    owed = {
        participant.user: participant.owed_minor for participant in stored.participants
    }
    return ledger_pb.LedgerEvent(
        expense=row.name,
        group=domain.group_name(row.group_id),
        revision=row.revision,
        type=event_type,
        deleted=row.delete_time is not None,
        currency_code=currency,
        expense_date=domain.date_message(row.expense_date),
        category=row.category,
        description=row.description,
        lines=[
            ledger_pb.LedgerLine(
                user=user,
                paid=domain.money_message(paid.get(user, 0), currency),
                owed=domain.money_message(owed.get(user, 0), currency),
            )
            for user in sorted(paid.keys() | owed.keys())
        ],
        total=domain.money_message(row.total_minor, currency),
        commit_time=messages.timestamp(commit_time),
    )


def append_event(
    session: Session,
    stored: storage.StoredExpense,
    event_type: int,
    commit_time: datetime.datetime,
) -> int:
    """Write the ledger event of a change in the change's transaction.

    Call it last in the transaction: on PostgreSQL it locks the ledger table
    until the commit, so anything after it delays every other writer.

    Returns:
      The event's sequence.
    """
    event = build_event(stored, event_type, commit_time)
    event.sequence = storage.next_sequence(session)
    session.info.setdefault(_APPENDED, []).append(event)
    storage.add_event(
        session,
        sequence=event.sequence,
        expense_name=stored.row.name,
        revision=stored.row.revision,
        event_type=event_type,
        commit_time=commit_time,
        payload=event.SerializeToString(),
    )
    return event.sequence


def append_events(
    session: Session,
    changes: Sequence[storage.StoredExpense],
    event_type: int,
    commit_time: datetime.datetime,
) -> None:
    """Write the ledger events of several changes, in order, in their transaction.

    Like `append_event`, call it last in the transaction.
    """
    first = storage.next_sequence(session)
    rows = []
    appended = session.info.setdefault(_APPENDED, [])
    for offset, stored in enumerate(changes):
        event = build_event(stored, event_type, commit_time)
        event.sequence = first + offset
        appended.append(event)
        rows.append(
            {
                "sequence": event.sequence,
                "expense_name": stored.row.name,
                "revision": stored.row.revision,
                "event_type": event_type,
                "commit_time": commit_time,
                "payload": event.SerializeToString(),
            }
        )
    storage.add_events(session, rows)


def appended_events(session: Session) -> list[ledger_pb.LedgerEvent]:
    """Return the events that `append_event` and `append_events` added in a
    transaction, for `LedgerFeed.publish` once it has committed."""
    return session.info.get(_APPENDED, [])


class LedgerServicer(ledger_grpc.LedgerServiceServicer):
    """Servicer that streams the ledger table as events in sequence order.

    Args:
      database: the service's database.
      feed: reports commits of this process to the streams.
      membership: the member lists that a fence drops.
      writes: the writes in flight that a fence waits for.
      default_timeout: seconds a fence may wait when the caller set no
        deadline.
      linger: seconds a stream waits after a wake-up.
      heartbeat: seconds without events after which a stream sends an empty
        message.
      max_message_bytes: the largest message that a stream sends.
    """

    def __init__(
        self,
        database: Database,
        feed: LedgerFeed,
        membership: MembershipClient,
        writes: GroupWrites,
        default_timeout: float,
        linger: float = LINGER_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._database = database
        self._feed = feed
        self._membership = membership
        self._writes = writes
        self._default_timeout = default_timeout
        self._linger = linger
        self._heartbeat = heartbeat
        self._message_budget = max(max_message_bytes - MESSAGE_MARGIN_BYTES, 1)

    def StreamLedgerEvents(
        self,
        request: ledger_pb.StreamLedgerEventsRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[ledger_pb.StreamLedgerEventsResponse]:
        last = request.after_sequence
        if last < 0:
            raise invalid_field(
                "after_sequence",
                f"{last} is negative; send the sequence of the last event "
                "applied, or 0 to start from the first event",
                reason="INVALID_SEQUENCE",
            )
        self._check_position(last)
        # A cancelled client wakes the loop, so its thread is freed at once.
        context.add_callback(self._feed.notify)
        # Headers at once tell the reader's grpc that the stream reached a
        # server, so grpc never keeps it back for a retry of its own.
        context.send_initial_metadata(())
        _LOGGER.info("ledger stream opened after sequence %d", last)
        sent = time.monotonic()
        while context.is_active():
            if self._feed.closed:
                raise Unavailable(
                    "expense_service is stopping; reconnect and resume after the "
                    f"last event applied (sequence {last})",
                    reason="SERVER_STOPPING",
                    metadata={"last_sequence": str(last)},
                    retry_delay=RECONNECT_DELAY_SECONDS,
                )
            generation = self._feed.generation
            events, more = self._read_batch(last)
            if events:
                last = events[-1].sequence
                yield ledger_pb.StreamLedgerEventsResponse(events=events)
                sent = time.monotonic()
                if more:
                    continue
            elif time.monotonic() - sent >= self._heartbeat:
                yield ledger_pb.StreamLedgerEventsResponse()
                sent = time.monotonic()
            if self._feed.wait(generation, POLL_SECONDS) and self._linger:
                # Writers commit one after another, so a short pause lets the
                # ones right behind this commit join the next message.
                time.sleep(self._linger)
        _LOGGER.info("ledger stream closed by the client after sequence %d", last)

    def GetLedgerPosition(
        self,
        request: ledger_pb.GetLedgerPositionRequest,
        context: grpc.ServicerContext,
    ) -> ledger_pb.GetLedgerPositionResponse:
        if request.group:
            self._fence(request.group, context)
        # Writers commit in sequence order (see `storage.next_sequence`), so
        # the maximum committed sequence covers every acknowledged change.
        with self._database.transaction() as session:
            newest = storage.last_sequence(session)
        return ledger_pb.GetLedgerPositionResponse(last_sequence=newest)

    def _fence(self, group: str, context: grpc.ServicerContext) -> None:
        """Drop the group's member list and wait for its earlier writes.

        Raises:
          InvalidArgument: `group` is not a group name.
          Unavailable: some earlier writes were still in flight at the
            deadline (reason WRITES_IN_FLIGHT).
        """
        domain.parse_group_name(group, "group")
        self._membership.forget(group)
        timeout = downstream_timeout(context, self._default_timeout)
        timeout = max(timeout - FENCE_MARGIN_SECONDS, 0.0)
        pending = self._writes.wait_for_earlier(group, timeout)
        if pending:
            _LOGGER.warning(
                "fence of %s timed out after %.2fs with %d writes in flight",
                group,
                timeout,
                pending,
            )
            raise Unavailable(
                f"{pending} expense writes to {group!r} that started before this "
                f"call were still running after {timeout:.2f}s, so the ledger "
                "position cannot cover them yet; retry in a moment",
                reason="WRITES_IN_FLIGHT",
                metadata={"group": group, "writes": str(pending)},
                retry_delay=RECONNECT_DELAY_SECONDS,
                final_attempt=True,
            )

    def _check_position(self, after: int) -> None:
        with self._database.transaction() as session:
            newest = storage.last_sequence(session)
        if after > newest:
            raise OutOfRange(
                f"after_sequence {after} is past the newest event, {newest}; the "
                "reader has applied events that this ledger does not hold, which "
                "means the two databases do not belong together",
                reason="SEQUENCE_AHEAD_OF_LEDGER",
                metadata={"after_sequence": str(after), "last_sequence": str(newest)},
            )

    def _read_batch(self, after: int) -> tuple[list[ledger_pb.LedgerEvent], bool]:
        """Read the next events of one message, stopping before any gap.

        Writers commit in sequence order, so a gap is not expected; stopping
        there keeps the promise of no gaps even if that ever fails.

        Returns:
          The events, and whether more events may follow at once, because
          the message reached `BATCH_SIZE` events or its byte budget.
        """
        events = self._feed.recent(after, BATCH_SIZE)
        if events is not None:
            return self._fit([(event, event.ByteSize()) for event in events])
        with self._database.transaction(read_only=True) as session:
            rows = storage.read_events(session, after, BATCH_SIZE)
        found = []
        for sequence, payload in rows:
            if sequence != after + len(found) + 1:
                _LOGGER.warning(
                    "ledger gap after sequence %d; waiting for it to fill",
                    after + len(found),
                )
                break
            found.append((payload, len(payload)))
        events, more = self._fit(found)
        return [ledger_pb.LedgerEvent.FromString(payload) for payload in events], more

    def _fit(self, sized: list[tuple[_E, int]]) -> tuple[list[_E], bool]:
        """Keep the leading events whose message fits the byte budget.

        Args:
          sized: events, or their payloads, each with its serialized size.

        Returns:
          At least one event when any is given, and whether events were
          left out or the message contains `BATCH_SIZE` of them.
        """
        total = 0
        for index, (_, size) in enumerate(sized):
            # Each event in the message adds a tag byte and a length prefix.
            total += size + 1 + _varint_bytes(size)
            if index and total > self._message_budget:
                return [event for event, _ in sized[:index]], True
        return [event for event, _ in sized], len(sized) == BATCH_SIZE
