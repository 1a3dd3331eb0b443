"""Applying the expense ledger to the balances, exactly once.

expense_service writes one ledger event per change of an expense in the
transaction of the change, and streams them in sequence order. Each event
carries the full state of the expense after the change. `LedgerConsumer`
reads the stream from the stored cursor and applies each received batch of
events in one transaction together with the new cursor. A batch whose
expenses have many payers and participants is applied in several
transactions (`split_by_work`), so that no transaction holds the database
for long. A crash before the
commit loses the whole batch and the consumer reads it again; a crash after
it finds the cursor past the batch. Either way each event counts once.

Applying an event replaces the expense's stored contribution with the new
one and moves the running balances and pairs by exactly the difference. An
event whose revision is not above the stored revision changes nothing.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import grpc
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from balance_service import allocation, domain, storage
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog_runtime.channels import insecure_channel
from splitlog_runtime.database import Database
from splitlog_runtime.errors import FailedPrecondition, InvalidArgument
from splitlog_runtime.failure_log import FailureLog, Throttle

_LOGGER = logging.getLogger(__name__)

# Range of a BIGINT column.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


class InvalidEventError(ValueError):
    """A ledger event that cannot be applied without breaking the balances."""


class TotalOutOfRange(FailedPrecondition):
    """A running total that would not fit its BIGINT column; nothing is stored.

    The volume caps of `expense_service.volumes` keep every total in range,
    so this is a last check: SQLite would store such a total as a float and
    PostgreSQL fails the statement. The transaction must roll back.

    Attributes:
      group_ids: the groups whose totals were being written.
    """

    def __init__(self, message: str, group_ids: list[str]) -> None:
        super().__init__(
            message,
            reason="TOTAL_OUT_OF_RANGE",
            metadata={"groups": ",".join(group_ids)},
        )
        self.group_ids = group_ids


@dataclass(frozen=True)
class ExpenseState:
    """One expense as a ledger event describes it, in minor units."""

    sequence: int
    group_id: str
    expense_id: str
    revision: int
    deleted: bool
    currency_code: str
    expense_date: date
    category: int
    description: str
    total: int
    commit_time: datetime
    lines: tuple[tuple[str, int, int], ...]  # (user_id, paid, owed), by user


def parse_event(event: ledger_pb.LedgerEvent) -> ExpenseState:
    """Check a ledger event and convert it.

    Raises:
      InvalidEventError: a malformed name or amount, amounts in another
        currency, a user listed twice, or lines whose paid and owed amounts
        do not both add up to the total.
    """
    try:
        group_id, expense_id = domain.parse_expense(event.expense, "expense")
        if domain.group_name(group_id) != event.group:
            raise InvalidEventError(
                f"expense {event.expense!r} is not in group {event.group!r}"
            )
        currency = domain.check_currency(event.currency_code, "currency_code")
        total = _amount(event.total, currency, "total")
        lines = {}
        for index, line in enumerate(event.lines):
            user_id = _user_id(line.user, index)
            if user_id in lines:
                raise InvalidEventError(f"{line.user!r} appears twice in the lines")
            lines[user_id] = (
                _amount(line.paid, currency, f"lines[{index}].paid"),
                _amount(line.owed, currency, f"lines[{index}].owed"),
            )
        expense_date = domain.to_date(event.expense_date, "expense_date")
    except InvalidArgument as exc:
        raise InvalidEventError(exc.message) from None
    paid = sum(amounts[0] for amounts in lines.values())
    owed = sum(amounts[1] for amounts in lines.values())
    if paid != total or owed != total:
        raise InvalidEventError(
            f"the lines of {event.expense!r} add up to paid {paid} and owed {owed} "
            f"minor units, but its total is {total}"
        )
    return ExpenseState(
        sequence=event.sequence,
        group_id=group_id,
        expense_id=expense_id,
        revision=event.revision,
        deleted=event.deleted,
        currency_code=currency,
        expense_date=expense_date,
        category=event.category,
        description=event.description,
        total=total,
        commit_time=event.commit_time.ToDatetime(),
        lines=tuple((user, *lines[user]) for user in sorted(lines)),
    )


def _amount(value, currency: str, field_path: str) -> int:
    if value.currency_code and value.currency_code != currency:
        raise InvalidEventError(
            f"{field_path} is in {value.currency_code}, but the event is in {currency}"
        )
    if not value.units and not value.nanos:
        # Most lines pay nothing, and zero is valid in every currency.
        return 0
    return domain.minor_units(value.units, value.nanos, currency, field_path)


# User ids of names that parsed, because every event of a group repeats its
# members' names. Cleared when it reaches the maximum size.
_USER_IDS: dict[str, str] = {}
_MAX_USER_IDS = 100_000


def _user_id(name: str, index: int) -> str:
    """Return the id of the user of the line at `index`, from `users/{user}`."""
    user_id = _USER_IDS.get(name)
    if user_id is None:
        user_id = domain.parse_user(name, f"lines[{index}].user")
        if len(_USER_IDS) >= _MAX_USER_IDS:
            _USER_IDS.clear()
        _USER_IDS[name] = user_id
    return user_id


class Changes:
    """Increments to balances and pairs collected within one transaction."""

    def __init__(self) -> None:
        self.balances: dict[tuple[str, str, str], int] = defaultdict(int)
        self.pairs: dict[tuple[str, str, str, str], int] = defaultdict(int)

    def add_expense(
        self,
        group_id: str,
        currency: str,
        lines: Sequence[tuple[str, int, int]],
        sign: int,
    ) -> None:
        """Add (sign 1) or take back (sign -1) the contribution of an expense."""
        for user_id, paid, owed in lines:
            self.balances[group_id, currency, user_id] += sign * (paid - owed)
        parts = allocation.allocate(
            {user: paid for user, paid, _ in lines},
            {user: owed for user, _, owed in lines},
        )
        for (debtor, creditor), amount in parts.items():
            self.pairs[group_id, currency, debtor, creditor] += sign * amount

    def add_settlement(self, row: storage.SettlementRow, sign: int) -> None:
        """Add or take back a settlement: its payer paid, its payee owes."""
        key = (row.group_id, row.currency_code)
        self.balances[(*key, row.payer_id)] += sign * row.amount
        self.balances[(*key, row.payee_id)] -= sign * row.amount
        self.pairs[(*key, row.payee_id, row.payer_id)] += sign * row.amount

    def write(self, session: Session) -> None:
        """Add the increments to the stored totals.

        Raises:
          TotalOutOfRange: an increment or a resulting total does not fit a
            BIGINT. The caller's transaction must roll back.
        """
        for key, change in [*self.balances.items(), *self.pairs.items()]:
            if not _INT64_MIN <= change <= _INT64_MAX:
                raise self._out_of_range(key[0], key[1], f"change by {change}")
        try:
            storage.add_to_balances(session, self.balances)
            storage.add_to_pairs(session, self.pairs)
        except DBAPIError as exc:
            if not storage.total_out_of_range(exc):
                raise
            group_ids = sorted({key[0] for key in self.balances})
            raise TotalOutOfRange(
                "the balances of "
                f"{', '.join(domain.group_name(g) for g in group_ids)} would "
                f"pass the range of a signed 64-bit integer, {_INT64_MIN} to "
                f"{_INT64_MAX} minor units; nothing was stored",
                group_ids,
            ) from None

    @staticmethod
    def _out_of_range(group_id: str, currency: str, change: str) -> TotalOutOfRange:
        return TotalOutOfRange(
            f"a balance of {domain.group_name(group_id)} in {currency} would "
            f"{change}, past the range of a signed 64-bit integer, {_INT64_MIN} "
            f"to {_INT64_MAX} minor units; nothing was stored",
            [group_id],
        )


class _Batch:
    """The expenses that one batch of events touches, loaded with two queries.

    Events change the loaded rows and lines in memory; `write` stores the
    result with a few statements for the whole batch.
    """

    def __init__(self, session: Session, states: Sequence[ExpenseState]) -> None:
        self._session = session
        keys = sorted({(state.group_id, state.expense_id) for state in states})
        self._rows: dict[
            storage.ExpenseKey, storage.ExpenseRow | storage.NewExpense
        ] = dict(storage.get_expenses(session, keys, lock=True))
        self._stored = set(self._rows)
        self._lines: dict[storage.ExpenseKey, Sequence[storage.Line]] = dict(
            storage.lines_of(
                session, [key for key, row in self._rows.items() if not row.deleted]
            )
        )
        self._changed: dict[storage.ExpenseKey, Sequence[storage.Line]] = {}
        # Expenses seen for the first time, inserted by `write`.
        self._new: list[storage.NewExpense] = []
        self._touched: dict[str, datetime] = {}

    def apply(self, state: ExpenseState, changes: Changes) -> bool:
        """Replace an expense's state and contribution.

        Returns:
          False for a stale event, whose revision is not above the stored one.
        """
        key = (state.group_id, state.expense_id)
        row = self._rows.get(key)
        if row is not None and row.revision >= state.revision:
            return False
        if row is not None and not row.deleted:
            old_lines = self._lines.get(key, ())
            changes.add_expense(row.group_id, row.currency_code, old_lines, -1)
        if not state.deleted:
            changes.add_expense(state.group_id, state.currency_code, state.lines, 1)

        if row is None:
            row = storage.NewExpense(
                state.group_id, state.expense_id, state.commit_time
            )
            self._new.append(row)
            self._rows[key] = row
        row.revision = state.revision
        row.deleted = state.deleted
        row.currency_code = state.currency_code
        row.expense_date = state.expense_date
        row.category = state.category
        row.description = state.description
        row.total = state.total
        row.update_time = state.commit_time
        self._lines[key] = self._changed[key] = state.lines
        touched = self._touched.get(state.group_id)
        if touched is None or touched < state.commit_time:
            self._touched[state.group_id] = state.commit_time
        return True

    def write(self) -> None:
        """Store the changed expenses and their lines."""
        self._session.flush()
        storage.add_expenses(self._session, self._new)
        storage.replace_lines(
            self._session,
            self._changed,
            self._stored & self._changed.keys(),
            self._rows,
        )

    def touch_groups(self) -> None:
        """Store when each group of the batch last changed."""
        for group_id, when in sorted(self._touched.items()):
            storage.touch_group(self._session, group_id, when)


def apply_batch(database: Database, states: Sequence[ExpenseState]) -> int:
    """Apply events in one transaction with the cursor; return the new cursor.

    Events at or below the stored cursor were applied before and are skipped.

    Raises:
      InvalidEventError: the batch leaves a gap after the stored cursor.
      storage.CursorMoved: another consumer applied events meanwhile. On
        PostgreSQL the loser of that race may instead fail to insert an
        expense that the other consumer inserted first. A unique violation
        after which the cursor has moved is raised as CursorMoved too.
    """
    cursor: int | None = None
    try:
        with database.transaction() as session:
            cursor = storage.read_cursor(session)
            return _apply_after(session, cursor, states)
    except IntegrityError:
        if cursor is None:
            raise
        with database.transaction(read_only=True) as session:
            moved_to = storage.read_cursor(session)
        if moved_to == cursor:
            raise
        raise storage.CursorMoved(
            f"another consumer moved the cursor from {cursor} to {moved_to}"
        ) from None


def _apply_after(session: Session, cursor: int, states: Sequence[ExpenseState]) -> int:
    """Apply the events after `cursor` in the session; return the new cursor."""
    fresh = []
    position = cursor
    for state in states:
        if state.sequence <= position:
            continue
        if state.sequence != position + 1:
            raise InvalidEventError(
                f"event {state.sequence} follows {position}; the feed has a gap"
            )
        fresh.append(state)
        position = state.sequence
    if not fresh:
        return cursor
    batch = _Batch(session, fresh)
    changes = Changes()
    for state in fresh:
        batch.apply(state, changes)
    batch.write()
    # Balances, pairs, then group activity, in the order in which the
    # settlement writes lock the same rows. The opposite order deadlocked
    # with a concurrent settlement of the same group on PostgreSQL.
    try:
        changes.write(session)
    except TotalOutOfRange as exc:
        raise _unappliable(fresh, exc) from None
    batch.touch_groups()
    storage.advance_cursor(session, cursor, position)
    return position


def _unappliable(states: Sequence[ExpenseState], exc: TotalOutOfRange) -> Exception:
    """Describe a batch whose totals do not fit, naming its events in the groups."""
    groups = set(exc.group_ids)
    events = [state for state in states if state.group_id in groups]
    shown = ", ".join(
        f"{state.sequence} ({domain.expense_name(state.group_id, state.expense_id)})"
        for state in events[:5]
    )
    if len(events) > 5:
        shown += f" and {len(events) - 5} more"
    return InvalidEventError(
        f"ledger events {shown} cannot be applied: {exc.message}. expense_service "
        "caps each group's volume so that this cannot happen; the consumer "
        f"stays after sequence {states[0].sequence - 1} and retries"
    )


#: Payer and participant pairs that one apply transaction allocates at most,
#: unless one expense has more. That is one expense of the default maximum
#: size, 50 payers and 500 participants, which took about 0.2 s of CPU time on
#: a shared 2-core machine (`python -m bench.ledger_apply`). A transaction
#: keeps the database's write lock, so settlements of every group wait for it.
MAX_PAIRS_PER_TRANSACTION = 25_000


def allocation_pairs(state: ExpenseState) -> int:
    """Return the payer and participant pairs that applying an event allocates.

    It counts the new lines only. An update also takes back the old lines,
    so it may cost up to twice as much.
    """
    payers = sum(1 for _, paid, _ in state.lines if paid)
    participants = sum(1 for _, _, owed in state.lines if owed)
    return max(payers * participants, 1)


def split_by_work(
    states: Sequence[ExpenseState], max_pairs: int = MAX_PAIRS_PER_TRANSACTION
) -> list[list[ExpenseState]]:
    """Split a stream message's events into runs that apply in one transaction each.

    Each run allocates at most `max_pairs` pairs, or contains a single event
    that allocates more. One transaction per message made a message of 500
    large expenses hold the write lock for minutes.
    """
    parts: list[list[ExpenseState]] = []
    pairs = 0
    for state in states:
        cost = allocation_pairs(state)
        if not parts or pairs + cost > max_pairs:
            parts.append([])
            pairs = 0
        parts[-1].append(state)
        pairs += cost
    return parts


#: Seconds the consumer waits for a message, with events or without (a
#: heartbeat), before it gives the stream up and opens a new one.
#: expense_service sends a heartbeat after every 5 s without events.
STREAM_IDLE_SECONDS = 20.0


class LedgerConsumer:
    """A background thread that streams ledger events and applies them.

    Reconnects with jittered exponential backoff while expense_service is
    unreachable. Failed attempts are logged at most once every
    `warning_interval` seconds, with the number of attempts not logged in
    between (`FailureLog`). When a stream delivers again after a logged
    failure, an INFO line gives the run's count. Races with another consumer
    on the same database are logged at INFO, at most one every
    `warning_interval` seconds.
    `on_applied` runs after each batch commits.

    Each attempt opens its own channel. A watchdog thread closes it when no
    message, events or heartbeat, arrived for `idle_timeout` seconds while
    the consumer waited for one, so a stream whose server died without
    closing it is reopened like any failed one. Closing the channel ends the
    call even where cancelling it would not: grpcio 1.85 leaves a call that
    grpc holds for a retry waiting after a cancel. Any exception ends one
    attempt, never the thread; if the thread ends all the same, the watchdog
    logs it and calls `on_failed`. `on_problem` gets the description of
    events that cannot be applied while the consumer is stuck on them, and
    None once a batch applies again.
    """

    def __init__(
        self,
        database: Database,
        target: str,
        *,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        warning_interval: float = 10.0,
        idle_timeout: float = STREAM_IDLE_SECONDS,
        max_message_bytes: int = 16 * 1024 * 1024,
        on_applied: Callable[[], None] | None = None,
        on_failed: Callable[[], None] | None = None,
        on_problem: Callable[[str | None], None] | None = None,
    ) -> None:
        self._database = database
        self._on_problem = on_problem
        self._problem: str | None = None
        self._on_applied = on_applied
        self._on_failed = on_failed
        self._target = target
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._idle_timeout = idle_timeout
        self._max_message_bytes = max_message_bytes
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        # When the consumer began to wait for the next message; None while
        # it applies a batch, which may take long without the stream being
        # at fault.
        self._waiting_since: float | None = None
        self._stalled = False
        self._thread = threading.Thread(
            target=self._run, name="ledger-consumer", daemon=True
        )
        self._watchdog = threading.Thread(
            target=self._watch, name="ledger-watchdog", daemon=True
        )
        self._failures = FailureLog(
            _LOGGER, f"ledger streams from {target}", warning_interval
        )
        self._races = 0
        self._race_logs = Throttle(warning_interval)

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()
        _LOGGER.info("ledger consumer reading from %s", self._target)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the open stream and wait for the threads to end."""
        self._stopping.set()
        with self._lock:
            if self._channel is not None:
                self._channel.close()
        self._thread.join(timeout)
        self._watchdog.join(timeout)
        if self._thread.is_alive():
            _LOGGER.warning("ledger consumer did not stop within %.1fs", timeout)

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stopping.is_set():
                try:
                    if self._stream_once():
                        attempt = 0
                except grpc.RpcError as exc:
                    if self._stopping.is_set():
                        break
                    self._warn(self._describe(exc))
                except storage.CursorMoved as exc:
                    self._warn(str(exc))
                except (InvalidEventError, DBAPIError) as exc:
                    if isinstance(exc, InvalidEventError):
                        self._report(str(exc))
                    self._warn(str(exc), level=logging.ERROR)
                except Exception:
                    if self._stopping.is_set():
                        break
                    _LOGGER.exception("ledger consumer failed; retrying")
                attempt += 1
                ceiling = min(self._max_backoff, self._initial_backoff * 2**attempt)
                self._stopping.wait(random.uniform(ceiling / 2, ceiling))
        finally:
            _LOGGER.info("ledger consumer stopped")

    def _describe(self, exc: grpc.RpcError) -> str:
        if self._stalled:
            return (
                f"no events and no heartbeat for {self._idle_timeout:g}s, so the "
                "stream was taken for dead"
            )
        return f"{exc.code().name}: {exc.details()}"

    def _stream_once(self) -> bool:
        """Stream from the stored cursor until the stream ends.

        Returns:
          True if any message, events or heartbeat, arrived.
        """
        with self._database.transaction() as session:
            cursor = storage.read_cursor(session)
        # grpc's own retries stay off: this loop reconnects, and grpc could
        # keep a stream that has not received its headers waiting forever.
        channel = insecure_channel(self._target, self._max_message_bytes, retries=False)
        with self._lock:
            if self._stopping.is_set():
                channel.close()
                return False
            self._channel = channel
            self._stalled = False
            self._waiting_since = time.monotonic()
        received = False
        try:
            call = ledger_grpc.LedgerServiceStub(channel).StreamLedgerEvents(
                ledger_pb.StreamLedgerEventsRequest(after_sequence=cursor)
            )
            for response in call:
                with self._lock:
                    self._waiting_since = None
                if not received:
                    self._failures.succeeded()
                received = True
                if response.events:
                    states = [parse_event(event) for event in response.events]
                    for part in split_by_work(states):
                        self._apply(part)
                    if self._problem is not None:
                        self._report(None)
                    if self._on_applied is not None:
                        self._on_applied()
                with self._lock:
                    self._waiting_since = time.monotonic()
        finally:
            with self._lock:
                self._channel = None
                self._waiting_since = None
            channel.close()
        if not self._stopping.is_set():
            # A stream that ends without an error is reopened from the cursor.
            self._warn("the ledger stream ended")
        return received

    def _apply(self, states: Sequence[ExpenseState]) -> None:
        """Apply a part of a message, again after each race with another consumer.

        Each lost race means the other consumer committed some of these
        events, and the next attempt skips them, so the attempts end within
        one per event. The bound is a guard against a cursor that does not
        move; the outer loop then reconnects.
        """
        for attempt in range(len(states) + 1):
            try:
                apply_batch(self._database, states)
                return
            except storage.CursorMoved as exc:
                if attempt == len(states):
                    raise
                self._note_race(states, exc)

    def _note_race(
        self, states: Sequence[ExpenseState], exc: storage.CursorMoved
    ) -> None:
        """Log a race lost to another consumer at INFO, at most every interval."""
        self._races += 1
        if self._race_logs.allow() is None:
            return
        _LOGGER.info(
            "ledger events %d-%d were being applied by another balance_service "
            "on the same database (%s); this one skips what that one stored and "
            "carries on, %d such race(s) so far",
            states[0].sequence,
            states[-1].sequence,
            exc,
            self._races,
        )

    def _report(self, problem: str | None) -> None:
        self._problem = problem
        if self._on_problem is not None:
            self._on_problem(problem)

    def _watch(self) -> None:
        """Close a stream that went quiet; report a consumer thread that ended."""
        interval = min(1.0, self._idle_timeout / 4)
        while not self._stopping.wait(interval):
            if not self._thread.is_alive():
                _LOGGER.critical(
                    "the ledger consumer thread ended; balances no longer follow "
                    "expense changes, so restart balance_service"
                )
                if self._on_failed is not None:
                    self._on_failed()
                return
            with self._lock:
                since = self._waiting_since
                if self._channel is None or since is None:
                    continue
                if time.monotonic() - since < self._idle_timeout:
                    continue
                self._stalled = True
                self._waiting_since = None
                self._channel.close()

    def _warn(self, problem: str, level: int = logging.WARNING) -> None:
        self._failures.failed(
            "ledger stream from %s failed (%s); retrying with backoff",
            self._target,
            problem,
            level=level,
        )
