"""Tables of the expense service and the queries on them.

Every function takes the caller's Session and neither opens nor commits one,
so each RPC writes the expense, its payers and owed amounts, its idempotency
key and its ledger event in one transaction. Amounts are BIGINT minor units
of the expense's currency. Expenses carry an integer `revision` that
SQLAlchemy checks on every UPDATE (`version_id_col`); it is also the etag and
the revision of the ledger events.

Times are stored as naive UTC datetimes, because SQLite has no time zone
type and both backends then compare them the same way.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

#: Resource names sort byte by byte on both backends, so that ListExpenses
#: orders ties by name the same way everywhere.
NAME_TYPE = String(160).with_variant(String(160, collation="C"), "postgresql")
LEDGER_TABLE = "expense_ledger_events"


class Base(DeclarativeBase):
    pass


class ExpenseRow(Base):
    """An expense. `delete_time` is set while it is soft-deleted."""

    __tablename__ = "expenses"

    name: Mapped[str] = mapped_column(NAME_TYPE, primary_key=True)
    group_id: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(200))
    category: Mapped[int] = mapped_column(Integer)
    expense_date: Mapped[datetime.date] = mapped_column(Date)
    currency_code: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    split_type: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str] = mapped_column(Text)
    creator: Mapped[str] = mapped_column(String(80))
    last_modifier: Mapped[str] = mapped_column(String(80))
    create_time: Mapped[datetime.datetime] = mapped_column(DateTime())
    update_time: Mapped[datetime.datetime] = mapped_column(DateTime())
    delete_time: Mapped[datetime.datetime | None] = mapped_column(
        DateTime(), nullable=True
    )
    revision: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": revision}
    __table_args__ = (
        Index("ix_expenses_group_date", "group_id", "expense_date", "name"),
        Index("ix_expenses_group_created", "group_id", "create_time", "name"),
    )


class PayerRow(Base):
    """The amount one member paid for an expense, in the expense's currency."""

    __tablename__ = "expense_payers"

    expense_name: Mapped[str] = mapped_column(
        NAME_TYPE, ForeignKey("expenses.name"), primary_key=True
    )
    user: Mapped[str] = mapped_column(String(80), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_expense_payers_user", "user", "expense_name"),)


class ParticipantRow(Base):
    """One member's part of a split: the value given and the amount owed.

    At most one of `exact_minor`, `basis_points` and `shares` is set, like
    the `value` oneof of `SplitParticipant`. `owed_minor` is the amount the
    split computed; every view of the expense reads it from here.
    """

    __tablename__ = "expense_participants"

    expense_name: Mapped[str] = mapped_column(
        NAME_TYPE, ForeignKey("expenses.name"), primary_key=True
    )
    user: Mapped[str] = mapped_column(String(80), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    exact_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    basis_points: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shares: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owed_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_expense_participants_user", "user", "expense_name"),)


class RequestIdRow(Base):
    """An idempotency key: which expense a create with this request_id made.

    `request_hash` is the SHA-256 of the create request without its key, so a
    replay can tell a retry from another request under the same key. Keys
    stored before the column existed have none and replay whatever comes.
    """

    __tablename__ = "expense_request_ids"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    expense_name: Mapped[str] = mapped_column(NAME_TYPE)
    create_time: Mapped[datetime.datetime] = mapped_column(DateTime())
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LedgerEventRow(Base):
    """One entry of the transactional outbox read by StreamLedgerEvents.

    `payload` is the serialized `splitlog.expenses.v1.LedgerEvent`, sequence
    included, so the stream sends exactly what was committed.
    """

    __tablename__ = LEDGER_TABLE

    sequence: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False
    )
    expense_name: Mapped[str] = mapped_column(NAME_TYPE)
    revision: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[int] = mapped_column(Integer)
    commit_time: Mapped[datetime.datetime] = mapped_column(DateTime())
    payload: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_expense_ledger_events_expense", "expense_name", "revision"),
    )


class VolumeRow(Base):
    """The gross volume of a group's live expenses in one currency.

    `gross_minor` is the sum of the absolute totals of the group's live
    expenses in the currency. Each write that changes an expense updates it
    in the same transaction (see `expense_service.volumes`).
    """

    __tablename__ = "expense_volumes"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    currency_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    gross_minor: Mapped[int] = mapped_column(BigInteger)


def utc_now() -> datetime.datetime:
    """Return the current time as the naive UTC datetime the tables store."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


@dataclass
class StoredExpense:
    """An expense row with its payers and participants in request order.

    Each part is either loaded ORM rows or the values just inserted, which
    have the same attributes.
    """

    row: ExpenseRow | ExpenseValues
    payers: list[PayerRow] | list[PayerValues]
    participants: list[ParticipantRow] | list[ParticipantValues]


# Reads


def get_expense(
    session: Session, name: str, lock: bool = False
) -> StoredExpense | None:
    """Return an expense with its lines; `lock` locks the row until commit.

    NOTE: SQLite has no row locks, so `lock` does nothing there; the
    revision check of the UPDATE catches a concurrent change instead.
    """
    row = session.get(ExpenseRow, name, with_for_update=lock, populate_existing=lock)
    if row is None:
        return None
    return _with_lines(session, [row])[0]


def _with_lines(session: Session, rows: Sequence[ExpenseRow]) -> list[StoredExpense]:
    names = [row.name for row in rows]
    if not names:
        return []
    payers: dict[str, list[PayerRow]] = {name: [] for name in names}
    for payer in session.scalars(
        select(PayerRow)
        .where(PayerRow.expense_name.in_(names))
        .order_by(PayerRow.expense_name, PayerRow.position)
    ):
        payers[payer.expense_name].append(payer)
    participants: dict[str, list[ParticipantRow]] = {name: [] for name in names}
    for participant in session.scalars(
        select(ParticipantRow)
        .where(ParticipantRow.expense_name.in_(names))
        .order_by(ParticipantRow.expense_name, ParticipantRow.position)
    ):
        participants[participant.expense_name].append(participant)
    return [
        StoredExpense(row, payers[row.name], participants[row.name]) for row in rows
    ]


@dataclass(frozen=True)
class ExpenseQuery:
    """The selecting fields of a ListExpenses request, checked."""

    group_id: str | None
    participant: str | None
    category: int | None
    start_date: datetime.date | None
    end_date: datetime.date | None
    show_deleted: bool
    order_by_create_time: bool


#: Sort key of a ListExpenses page position: the first sort column, the
#: second one (None in a page token of an earlier version, which had no
#: second column), and the resource name.
PageKey = tuple[
    datetime.date | datetime.datetime, datetime.datetime | datetime.date | None, str
]


def list_expenses(
    session: Session,
    query: ExpenseQuery,
    after: PageKey | None,
    limit: int,
) -> list[StoredExpense]:
    """Return up to `limit` expenses, newest first, after a keyset position.

    The sort key is (expense_date, create_time, name) by default, or
    (create_time, expense_date, name) for `create_time desc`, every part
    descending. Names compare by length first, then byte by byte, so that
    the rows of an import, which share one create_time and are named after
    their lines, list `row-154` before `row-99`. Generated expense ids all
    have one length and rise with time. `after` is the key of the last
    expense already returned.

    NOTE: the second entry of a split import line, `row-12-2`, is longer than
    `row-13` and so lists before it when both have one date.
    """
    first, second = (
        (ExpenseRow.create_time, ExpenseRow.expense_date)
        if query.order_by_create_time
        else (ExpenseRow.expense_date, ExpenseRow.create_time)
    )
    name_length = func.length(ExpenseRow.name)
    statement = select(ExpenseRow)
    if query.group_id is not None:
        statement = statement.where(ExpenseRow.group_id == query.group_id)
    if query.participant is not None:
        statement = statement.where(
            or_(
                exists().where(
                    PayerRow.expense_name == ExpenseRow.name,
                    PayerRow.user == query.participant,
                ),
                exists().where(
                    ParticipantRow.expense_name == ExpenseRow.name,
                    ParticipantRow.user == query.participant,
                ),
            )
        )
    if query.category is not None:
        statement = statement.where(ExpenseRow.category == query.category)
    if query.start_date is not None:
        statement = statement.where(ExpenseRow.expense_date >= query.start_date)
    if query.end_date is not None:
        statement = statement.where(ExpenseRow.expense_date <= query.end_date)
    if not query.show_deleted:
        statement = statement.where(ExpenseRow.delete_time.is_(None))
    if after is not None:
        statement = statement.where(_after(first, second, name_length, after))
    statement = statement.order_by(
        first.desc(), second.desc(), name_length.desc(), ExpenseRow.name.desc()
    )
    statement = statement.limit(limit)
    return _with_lines(session, session.scalars(statement).all())


def _after(first, second, name_length, after: PageKey):
    """Select the rows that sort after `after` in ListExpenses' order."""
    first_key, second_key, name = after
    if second_key is None:
        # NOTE: ties on the first column skip the second one here, so a page
        # after such a token may repeat or leave out a few tied expenses.
        return or_(
            first < first_key,
            and_(first == first_key, name_length < len(name)),
            and_(first == first_key, name_length == len(name), ExpenseRow.name < name),
        )
    return or_(
        first < first_key,
        and_(first == first_key, second < second_key),
        and_(first == first_key, second == second_key, name_length < len(name)),
        and_(
            first == first_key,
            second == second_key,
            name_length == len(name),
            ExpenseRow.name < name,
        ),
    )


@dataclass(frozen=True)
class EarlierRequest:
    """The record of an idempotency key: the expense created and the request hash."""

    expense_name: str
    request_hash: str | None


def find_request(session: Session, request_id: str) -> EarlierRequest | None:
    """Return what an earlier create with this key made, if any."""
    found = find_requests(session, [request_id])
    return found.get(request_id)


def find_requests(
    session: Session, request_ids: Sequence[str]
) -> dict[str, EarlierRequest]:
    """Return the earlier creates of several keys; unknown keys are left out."""
    found: dict[str, EarlierRequest] = {}
    connection = session.connection()
    # Bounded lists keep each statement under the backends' parameter limits.
    for start in range(0, len(request_ids), 500):
        chunk = list(request_ids[start : start + 500])
        rows = connection.execute(
            select(
                _REQUEST_IDS.c.request_id,
                _REQUEST_IDS.c.expense_name,
                _REQUEST_IDS.c.request_hash,
            ).where(_REQUEST_IDS.c.request_id.in_(chunk))
        )
        for request_id, name, request_hash in rows:
            found[request_id] = EarlierRequest(name, request_hash)
    return found


def get_expenses(session: Session, names: Sequence[str]) -> dict[str, StoredExpense]:
    """Return several expenses with their lines, by name; missing ones are left out."""
    found: dict[str, StoredExpense] = {}
    for start in range(0, len(names), 500):
        rows = session.scalars(
            select(ExpenseRow).where(ExpenseRow.name.in_(names[start : start + 500]))
        ).all()
        for stored in _with_lines(session, rows):
            found[stored.row.name] = stored
    return found


# Writes
#
# Writes use Core statements on the session's connection rather than the
# ORM unit of work, which costs several times more per row. The ORM is still
# used to update an expense row, because `version_id_col` checks the revision.

_EXPENSES = ExpenseRow.__table__
_PAYERS = PayerRow.__table__
_PARTICIPANTS = ParticipantRow.__table__
_REQUEST_IDS = RequestIdRow.__table__
_LEDGER = LedgerEventRow.__table__
# Built once, because on SQLite building a statement costs a large share of
# running it, and every create runs each of these.
_INSERT_EXPENSE = _EXPENSES.insert()
_INSERT_PAYERS = _PAYERS.insert()
_INSERT_PARTICIPANTS = _PARTICIPANTS.insert()
_INSERT_REQUEST_ID = _REQUEST_IDS.insert()
_INSERT_EVENT = _LEDGER.insert()
_LAST_SEQUENCE = select(func.max(_LEDGER.c.sequence))


@dataclass
class ExpenseValues:
    """The columns of a new expense row, as written; an `ExpenseRow` look-alike."""

    name: str
    group_id: str
    description: str
    category: int
    expense_date: datetime.date
    currency_code: str
    total_minor: int
    split_type: int
    notes: str
    creator: str
    last_modifier: str
    create_time: datetime.datetime
    update_time: datetime.datetime
    delete_time: datetime.datetime | None = None
    revision: int = 1


@dataclass
class PayerValues:
    """The columns of a payer row, as written; a `PayerRow` look-alike."""

    expense_name: str
    user: str
    position: int
    amount_minor: int


@dataclass
class ParticipantValues:
    """The columns of a participant row, as written; a `ParticipantRow` look-alike."""

    expense_name: str
    user: str
    position: int
    exact_minor: int | None
    basis_points: int | None
    shares: int | None
    owed_minor: int


def expense_exists(session: Session, name: str) -> bool:
    """Return whether an expense of this name exists, deleted or not."""
    found = session.connection().scalar(
        select(_EXPENSES.c.name).where(_EXPENSES.c.name == name)
    )
    return found is not None


def add_expense(
    session: Session,
    values: ExpenseValues,
    payers: Sequence[PayerValues],
    participants: Sequence[ParticipantValues],
) -> StoredExpense:
    """Insert an expense with its lines; a duplicate name raises IntegrityError.

    Returns:
      The expense as written, built from the values without reading it back.
    """
    connection = session.connection()
    connection.execute(_INSERT_EXPENSE, [vars(values)])
    _insert_lines(connection, payers, participants)
    return StoredExpense(values, list(payers), list(participants))


def replace_lines(
    session: Session,
    stored: StoredExpense,
    payers: Sequence[PayerValues],
    participants: Sequence[ParticipantValues],
) -> StoredExpense:
    """Swap an expense's payers and participants for new ones.

    Changes to the loaded expense row are written first, which checks and
    bumps its revision.
    """
    session.flush()
    name = stored.row.name
    connection = session.connection()
    connection.execute(delete(_PAYERS).where(_PAYERS.c.expense_name == name))
    connection.execute(
        delete(_PARTICIPANTS).where(_PARTICIPANTS.c.expense_name == name)
    )
    # The loaded rows are gone from the database, so they are removed from the session.
    for old in [*stored.payers, *stored.participants]:
        session.expunge(old)
    _insert_lines(connection, payers, participants)
    return StoredExpense(stored.row, list(payers), list(participants))


def _insert_lines(
    connection,
    payers: Sequence[PayerValues],
    participants: Sequence[ParticipantValues],
) -> None:
    if payers:
        connection.execute(_INSERT_PAYERS, [vars(payer) for payer in payers])
    if participants:
        connection.execute(
            _INSERT_PARTICIPANTS, [vars(participant) for participant in participants]
        )


def remember_request(
    session: Session, request_id: str, name: str, request_hash: str | None
) -> None:
    """Record a request_id in the transaction that creates its expense.

    A request_id recorded by a concurrent transaction raises IntegrityError.
    """
    session.connection().execute(
        _INSERT_REQUEST_ID,
        [
            {
                "request_id": request_id,
                "expense_name": name,
                "create_time": utc_now(),
                "request_hash": request_hash,
            }
        ],
    )


class _BulkInsert:
    """An INSERT in the dialect's own SQL, run with the driver's executemany.

    A group of creates writes each table's rows with one executemany. Handing
    the rows to the driver directly skips SQLAlchemy's per-row parameter
    handling, which costs more than the insert itself on SQLite. Each value
    still goes through its column type's bind processor for the dialect, so
    the stored values are the ones a Core insert writes.
    """

    def __init__(self, table, dialect) -> None:
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._columns = [
            (column.name, column.type.dialect_impl(dialect).bind_processor(dialect))
            for column in table.columns
        ]
        names = ", ".join(quote(name) for name, _ in self._columns)
        marks = ", ".join([mark] * len(self._columns))
        self._sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"

    def run(self, connection, rows: Sequence[dict]) -> None:
        """Insert rows given as dicts of column values."""
        if not rows:
            return
        columns = self._columns
        connection.exec_driver_sql(
            self._sql,
            [
                tuple(
                    row[name] if process is None else process(row[name])
                    for name, process in columns
                )
                for row in rows
            ],
        )


# The bulk inserts of each dialect, built on first use.
_BULK_INSERTS: dict[tuple[str, str], _BulkInsert] = {}


def _bulk_insert(connection, table, rows: Sequence[dict]) -> None:
    key = (connection.dialect.name, table.name)
    insert = _BULK_INSERTS.get(key)
    if insert is None:
        insert = _BULK_INSERTS[key] = _BulkInsert(table, connection.dialect)
    insert.run(connection, rows)


def add_expenses(
    session: Session,
    expenses: Sequence[StoredExpense],
    request_ids: Sequence[tuple[str, str, str | None]],
) -> None:
    """Insert new expenses with their lines and idempotency keys, in bulk.

    Args:
      expenses: the new expenses with their lines, as written.
      request_ids: (request_id, expense name, request hash) to remember.

    Raises:
      IntegrityError: a name or request_id is taken; the caller's
        transaction must then roll back, as the rows before it are written.
    """
    connection = session.connection()
    _bulk_insert(connection, _EXPENSES, [vars(stored.row) for stored in expenses])
    _bulk_insert(
        connection,
        _PAYERS,
        [vars(payer) for stored in expenses for payer in stored.payers],
    )
    _bulk_insert(
        connection,
        _PARTICIPANTS,
        [vars(line) for stored in expenses for line in stored.participants],
    )
    now = utc_now()
    _bulk_insert(
        connection,
        _REQUEST_IDS,
        [
            {
                "request_id": request_id,
                "expense_name": name,
                "create_time": now,
                "request_hash": request_hash,
            }
            for request_id, name, request_hash in request_ids
        ],
    )


def add_events(session: Session, events: Sequence[dict]) -> None:
    """Insert ledger events in bulk; call it right after `next_sequence`.

    Each event is a dict with the keyword arguments of `add_event`.
    """
    _bulk_insert(session.connection(), _LEDGER, events)


def next_sequence(session: Session) -> int:
    """Allocate the next ledger sequence inside the current write transaction.

    Writers must commit in sequence order, or a reader could see sequence 8
    before 7 commits and skip 7 for good. On PostgreSQL an EXCLUSIVE lock on
    the ledger table (which still allows reads) makes concurrent writers
    wait here until the holder commits. On SQLite every write transaction
    begins with BEGIN IMMEDIATE and so holds the database's only write lock
    from its start, so the maximum read here cannot change before this
    transaction commits.

    Pending ORM changes are flushed first, so that nothing runs after the
    lock is taken but the event's own insert.
    """
    session.flush()
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"LOCK TABLE {LEDGER_TABLE} IN EXCLUSIVE MODE")
    last = connection.scalar(_LAST_SEQUENCE)
    return (last or 0) + 1


def add_event(
    session: Session,
    *,
    sequence: int,
    expense_name: str,
    revision: int,
    event_type: int,
    commit_time: datetime.datetime,
    payload: bytes,
) -> None:
    """Insert one ledger event; call it right after `next_sequence`."""
    session.connection().execute(
        _INSERT_EVENT,
        [
            {
                "sequence": sequence,
                "expense_name": expense_name,
                "revision": revision,
                "event_type": event_type,
                "commit_time": commit_time,
                "payload": payload,
            }
        ],
    )


def read_events(session: Session, after: int, limit: int) -> list[tuple[int, bytes]]:
    """Return up to `limit` (sequence, payload) pairs after a sequence, in order."""
    rows = session.execute(
        select(LedgerEventRow.sequence, LedgerEventRow.payload)
        .where(LedgerEventRow.sequence > after)
        .order_by(LedgerEventRow.sequence)
        .limit(limit)
    )
    return [(sequence, bytes(payload)) for sequence, payload in rows]


def last_sequence(session: Session) -> int:
    """Return the sequence of the latest committed event, 0 when none."""
    return session.scalar(select(func.max(LedgerEventRow.sequence))) or 0
