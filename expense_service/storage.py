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
from collections.abc import Iterable, Sequence
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
    text,
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
    """An idempotency key: which expense a create with this request_id made."""

    __tablename__ = "expense_request_ids"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    expense_name: Mapped[str] = mapped_column(NAME_TYPE)
    create_time: Mapped[datetime.datetime] = mapped_column(DateTime())


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


def utc_now() -> datetime.datetime:
    """Return the current time as the naive UTC datetime the tables store."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


@dataclass
class StoredExpense:
    """An expense row with its payers and participants in request order."""

    row: ExpenseRow
    payers: list[PayerRow]
    participants: list[ParticipantRow]


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


def list_expenses(
    session: Session,
    query: ExpenseQuery,
    after: tuple[datetime.date | datetime.datetime, str] | None,
    limit: int,
) -> list[StoredExpense]:
    """Return up to `limit` expenses, newest first, after a keyset position.

    The sort key is (expense_date or create_time, descending; name,
    ascending), and `after` is the key of the last expense already returned.
    """
    sort_column = (
        ExpenseRow.create_time
        if query.order_by_create_time
        else ExpenseRow.expense_date
    )
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
        after_key, after_name = after
        statement = statement.where(
            or_(
                sort_column < after_key,
                and_(sort_column == after_key, ExpenseRow.name > after_name),
            )
        )
    statement = statement.order_by(sort_column.desc(), ExpenseRow.name).limit(limit)
    return _with_lines(session, session.scalars(statement).all())


def find_request(session: Session, request_id: str) -> str | None:
    """Return the name of the expense that an earlier create made."""
    row = session.get(RequestIdRow, request_id)
    return row.expense_name if row is not None else None


# Writes


def add_expense(
    session: Session,
    row: ExpenseRow,
    payers: Iterable[PayerRow],
    participants: Iterable[ParticipantRow],
) -> StoredExpense:
    """Insert an expense with its lines; a duplicate name raises IntegrityError."""
    session.add(row)
    session.flush()
    stored = StoredExpense(row, list(payers), list(participants))
    session.add_all([*stored.payers, *stored.participants])
    session.flush()
    return stored


def replace_lines(
    session: Session,
    stored: StoredExpense,
    payers: Iterable[PayerRow],
    participants: Iterable[ParticipantRow],
) -> StoredExpense:
    """Swap an expense's payers and participants for new ones."""
    name = stored.row.name
    unsynchronized = {"synchronize_session": False}
    session.execute(
        delete(PayerRow).where(PayerRow.expense_name == name),
        execution_options=unsynchronized,
    )
    session.execute(
        delete(ParticipantRow).where(ParticipantRow.expense_name == name),
        execution_options=unsynchronized,
    )
    for old in [*stored.payers, *stored.participants]:
        session.expunge(old)
    replaced = StoredExpense(stored.row, list(payers), list(participants))
    session.add_all([*replaced.payers, *replaced.participants])
    session.flush()
    return replaced


def remember_request(session: Session, request_id: str, name: str) -> None:
    """Record a request_id in the transaction that creates its expense."""
    session.add(
        RequestIdRow(request_id=request_id, expense_name=name, create_time=utc_now())
    )
    session.flush()


def next_sequence(session: Session) -> int:
    """Allocate the next ledger sequence inside the current write transaction.

    Writers must commit in sequence order, or a reader could see sequence 8
    before 7 commits and skip 7 for good. On PostgreSQL an EXCLUSIVE lock on
    the ledger table (which still allows reads) makes concurrent writers
    wait here until the holder commits. SQLite runs one write transaction at
    a time, and the caller's writes have already started it, so the maximum
    read here cannot change before this transaction commits.
    """
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"LOCK TABLE {LEDGER_TABLE} IN EXCLUSIVE MODE"))
    last = session.scalar(select(func.max(LedgerEventRow.sequence)))
    return (last or 0) + 1


def add_event(session: Session, event: LedgerEventRow) -> None:
    session.add(event)
    session.flush()


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
