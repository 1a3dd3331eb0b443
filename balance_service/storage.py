"""Tables of the balance service and the queries on them.

Every function takes the caller's Session and neither opens nor commits one,
so each RPC and each applied ledger batch is one transaction.

The tables:
- `ledger_cursors`: the sequence of the last ledger event applied, one row
  per feed. It is advanced in the transaction that applies the events, which
  makes the apply exactly-once across crashes.
- `ledger_expenses` and `ledger_lines`: the latest applied state of each
  expense (revision, currency, date, category, total) and what each member
  paid and owes in it. The group report and the explanations of a member's
  balance read them, and applying a changed or deleted expense reads them to
  take back its old contribution.
- `balances`: each member's running net amount per group and currency, paid
  minus owed over every expense and settlement that is not deleted. Every
  change to it is a zero-sum set of increments, so a group's rows add up to
  zero in every currency after every commit. It serves the group balance
  (joined with `group_activity`), the net amounts of the user summary, the
  settled check and the settle-up plan.
- `pair_balances`: for each pair of members (first id < second id) and
  currency, what the first owes the second, following the allocation rule in
  `balance_service.allocation`. Negative when the second owes the first.
  Kept up to date with `balances` in the same transaction. The pairwise
  view of a group, the counterparties of the user summary and the pair
  explanation read it and cancel circular debts at read time
  (`balance_service.cycles`). Indexed by each of the two users, for the user
  summary.
- `pair_versions`: a counter per group and currency that every write to its
  `pair_balances` rows raises in the same transaction. The pairwise reads
  keep the netted lines in memory under it (`balance_service.pair_cache`).
- `group_activity`: when the latest expense or settlement of a group changed.
- `settlements` and `balance_service_request_ids`.
- `settlement_volumes`: the sum of the live settlements' amounts per group
  and currency, capped so that the running totals fit their BIGINT columns.
- `checked_members`: users whom CheckSettled found to be members of a group
  while they had no balance row there (see `CheckedMemberRow`).

Amounts are BIGINT minor units. Times are naive UTC datetimes, as in the
user service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    Row,
    String,
    Text,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column

from balance_service.cycles import DebtAmount, PairAmount

EXPENSE_FEED = "expense_service"


class Base(DeclarativeBase):
    pass


class CursorRow(Base):
    """How far a feed has been applied."""

    __tablename__ = "ledger_cursors"

    feed: Mapped[str] = mapped_column(String(63), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    update_time: Mapped[datetime] = mapped_column(DateTime())


class ExpenseRow(Base):
    """The latest applied state of one expense."""

    __tablename__ = "ledger_expenses"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    expense_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean)
    currency_code: Mapped[str] = mapped_column(String(3))
    expense_date: Mapped[date] = mapped_column(Date())
    category: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text())
    total: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(DateTime())
    update_time: Mapped[datetime] = mapped_column(DateTime())

    __table_args__ = (
        # In ExplainBalance order, so that a page reads one range of it. The
        # group report reads date ranges of its first three columns.
        Index(
            "ix_ledger_expenses_group_currency_order",
            "group_id",
            "currency_code",
            "expense_date",
            "create_time",
            "expense_id",
        ),
    )


class LineRow(Base):
    """One member's paid and owed amounts in one expense.

    The currency, date and create time are copies of the expense's, written
    with the line, so that an ExplainBalance page walks one member's lines
    in page order.
    """

    __tablename__ = "ledger_lines"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    expense_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    paid: Mapped[int] = mapped_column(BigInteger)
    owed: Mapped[int] = mapped_column(BigInteger)
    currency_code: Mapped[str] = mapped_column(String(3))
    expense_date: Mapped[date] = mapped_column(Date())
    create_time: Mapped[datetime] = mapped_column(DateTime())

    __table_args__ = (
        # In ExplainBalance order within one member's lines.
        Index(
            "ix_ledger_lines_user_order",
            "group_id",
            "user_id",
            "currency_code",
            "expense_date",
            "create_time",
            "expense_id",
        ),
    )


class BalanceRow(Base):
    """A member's net amount in one group and currency."""

    __tablename__ = "balances"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    currency_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    net: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_balances_user", "user_id"),)


class PairRow(Base):
    """The amount `first_user_id` owes `second_user_id`; the first id sorts lower."""

    __tablename__ = "pair_balances"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    currency_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    first_user_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    second_user_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_pair_balances_first_user", "first_user_id"),
        Index("ix_pair_balances_second_user", "second_user_id"),
    )


class PairVersionRow(Base):
    """How many times the pair amounts of a group and currency changed.

    `add_to_pairs` raises it in the transaction that changes them, so two
    reads that find the same version read the same pair amounts.
    """

    __tablename__ = "pair_versions"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    currency_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class GroupActivityRow(Base):
    """When an expense or settlement of a group last changed."""

    __tablename__ = "group_activity"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    update_time: Mapped[datetime] = mapped_column(DateTime())


class CheckedMemberRow(Base):
    """A user whom CheckSettled found to be a member of a group while they
    had no balance row there.

    user_service keeps no past memberships, but it calls CheckSettled for
    every member it removes. This row lets a later CheckSettled tell a
    former member whom nothing ever named from a user who never joined.
    """

    __tablename__ = "checked_members"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    check_time: Mapped[datetime] = mapped_column(DateTime())


class SettlementRow(Base):
    """A payment from `payer_id` to `payee_id`; `version` is its etag."""

    __tablename__ = "settlements"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    payer_id: Mapped[str] = mapped_column(String(63))
    payee_id: Mapped[str] = mapped_column(String(63))
    currency_code: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    settlement_date: Mapped[date] = mapped_column(Date())
    note: Mapped[str] = mapped_column(Text())
    creator_id: Mapped[str] = mapped_column(String(63))
    create_time: Mapped[datetime] = mapped_column(DateTime())
    update_time: Mapped[datetime] = mapped_column(DateTime())
    delete_time: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_settlements_group_date", "group_id", "settlement_date", "id"),
        # In the order of ExplainBalance, as on ledger_expenses.
        Index(
            "ix_settlements_group_currency_order",
            "group_id",
            "currency_code",
            "settlement_date",
            "create_time",
            "id",
        ),
        Index("ix_settlements_payer", "payer_id"),
        Index("ix_settlements_payee", "payee_id"),
    )


class SettlementVolumeRow(Base):
    """The gross volume of a group's live settlements in one currency.

    `gross_minor` is the sum of the amounts of the group's live settlements
    in the currency. Each settlement write updates it in the same
    transaction (see `expense_service.volumes`).
    """

    __tablename__ = "settlement_volumes"

    group_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    currency_code: Mapped[str] = mapped_column(String(3), primary_key=True)
    gross_minor: Mapped[int] = mapped_column(BigInteger)


class RequestIdRow(Base):
    """An idempotency key: which resource a create with this request_id made.

    `request_hash` is the SHA-256 of the create's values, so a replay can
    tell a retry from another request under the same key. Keys stored before
    the column existed have none and replay whatever comes.
    """

    __tablename__ = "balance_service_request_ids"

    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resource_name: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime] = mapped_column(DateTime())
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


def utc_now() -> datetime:
    """Return the current time as the naive UTC datetime the tables store."""
    return datetime.now(UTC).replace(tzinfo=None)


def _insert(session: Session, table):
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# Upserts built once per dialect, because the ledger consumer runs each of
# them for every batch and building one costs more than running it on SQLite.
_UPSERTS: dict[tuple[str, str], object] = {}


def _upsert(session: Session, name: str, build):
    """Return the statement that `build(session)` makes, built once per dialect."""
    key = (session.get_bind().dialect.name, name)
    statement = _UPSERTS.get(key)
    if statement is None:
        statement = _UPSERTS[key] = build(session)
    return statement


# Ledger cursor


# Core statements on the table: the ORM's `Session.get` and update also
# search the session for cursor rows, which costs more than the statements.
_CURSORS = CursorRow.__table__
_READ_CURSOR = select(_CURSORS.c.last_sequence).where(
    _CURSORS.c.feed == bindparam("cursor_feed")
)
_ADVANCE_CURSOR = (
    update(_CURSORS)
    .where(
        _CURSORS.c.feed == bindparam("cursor_feed"),
        _CURSORS.c.last_sequence == bindparam("expected_sequence"),
    )
    .values(last_sequence=bindparam("new_sequence"), update_time=bindparam("now"))
)


def read_cursor(session: Session, feed: str = EXPENSE_FEED) -> int:
    """Return the sequence of the last applied event, 0 before the first."""
    sequence = session.execute(_READ_CURSOR, {"cursor_feed": feed}).scalar()
    return sequence if sequence is not None else 0


class CursorMoved(Exception):
    """Another consumer advanced the cursor first; this transaction must roll back."""


def advance_cursor(session: Session, expected: int, new: int, feed: str = EXPENSE_FEED):
    """Move the cursor from `expected` to `new`, or raise CursorMoved.

    The conditional UPDATE makes two consumers on one database safe: only
    the first one to commit a batch applies it.
    """
    result = session.execute(
        _ADVANCE_CURSOR,
        {
            "cursor_feed": feed,
            "expected_sequence": expected,
            "new_sequence": new,
            "now": utc_now(),
        },
    )
    if result.rowcount != 1:
        raise CursorMoved(f"cursor of {feed} is no longer at {expected}")


# Running balances


def add_to_balances(
    session: Session, changes: Mapping[tuple[str, str, str], int]
) -> None:
    """Add `(group_id, currency_code, user_id) -> change` to the net amounts.

    Keys are written in sorted order so concurrent transactions lock rows in
    the same order. A zero change still creates its row, so a currency that
    an expense used shows in the group's balance even if every net is zero.

    Raises:
      DBAPIError: among others when a net amount would pass the range of a
        BIGINT, for which `total_out_of_range` returns True.
    """
    rows = [
        (group_id, currency, user_id, change)
        for (group_id, currency, user_id), change in sorted(changes.items())
    ]
    if rows:
        _ADD_TO_BALANCES.run(session, rows)


def add_to_pairs(
    session: Session, changes: Mapping[tuple[str, str, str, str], int]
) -> None:
    """Add `(group_id, currency, debtor_id, creditor_id) -> change` to the pairs.

    Each group and currency whose pairs change gets a new version in
    `pair_versions`, after its pair rows, so that every writer locks rows
    in the same order.

    Raises:
      DBAPIError: as `add_to_balances`.
    """
    canonical: dict[tuple[str, str, str, str], int] = {}
    for (group_id, currency, debtor, creditor), change in changes.items():
        if debtor == creditor:
            continue
        if debtor < creditor:
            key, signed = (group_id, currency, debtor, creditor), change
        else:
            key, signed = (group_id, currency, creditor, debtor), -change
        canonical[key] = canonical.get(key, 0) + signed
    rows = [(*key, change) for key, change in sorted(canonical.items()) if change]
    if not rows:
        return
    _ADD_TO_PAIRS.run(session, rows)
    versions = sorted({(group_id, currency) for group_id, currency, *_ in rows})
    session.execute(
        _upsert(session, "pair_versions", _raise_pair_versions),
        [
            {"group_id": group, "currency_code": code, "version": 1}
            for group, code in versions
        ],
    )


class _BulkInsert:
    """An INSERT of many rows at once, with an optional ON CONFLICT clause.

    SQLite gets the rows through the driver's executemany, because
    SQLAlchemy's processing of each row's parameters costs more than
    SQLite's work for it. PostgreSQL gets one statement that reads each
    column from an array parameter with `unnest`, in the order of the rows.
    psycopg's executemany would send one statement per row, and the server
    and the client spent more CPU time on those than on the rows. Values
    must need no bind processing (strings, integers, and dates and times
    already processed).

    Args:
      table: the table's name.
      columns: `(name, PostgreSQL type)` of each column, in row order.
      on_conflict: the ON CONFLICT clause of each dialect, by dialect name.
    """

    def __init__(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        on_conflict: Mapping[str, str] | None = None,
    ) -> None:
        names = ", ".join(name for name, _ in columns)
        markers = ", ".join("?" for _ in columns)
        arrays = ", ".join(f"%s::{sql_type}[]" for _, sql_type in columns)
        on_conflict = on_conflict or {}
        self._sqlite = (
            f"INSERT INTO {table} ({names}) VALUES ({markers}) "
            f"{on_conflict.get('sqlite', '')}"
        )
        self._postgresql = (
            f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({arrays}) "
            f"WITH ORDINALITY AS source ({names}, position) ORDER BY position "
            f"{on_conflict.get('postgresql', '')}"
        )

    def run(self, session: Session, rows: Sequence[tuple]) -> None:
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            columns = tuple(list(column) for column in zip(*rows, strict=True))
            connection.exec_driver_sql(self._postgresql, columns)
        else:
            connection.exec_driver_sql(self._sqlite, list(rows))


def total_out_of_range(exc: DBAPIError) -> bool:
    """Return whether an `add_to_*` statement failed on a total past a BIGINT."""
    if getattr(exc.orig, "sqlstate", None) == "22003":
        # PostgreSQL: numeric_value_out_of_range.
        return True
    return getattr(exc.orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_NOTNULL"


def _add_on_conflict(table: str, keys: str, column: str) -> dict[str, str]:
    """Return the ON CONFLICT clause of an upsert that adds to `column`.

    SQLite turns an integer sum past the range of 64 bits into an inexact
    float. Its clause stores NULL instead, which the column's NOT NULL
    constraint rejects, so the statement fails there as it does on
    PostgreSQL.
    """
    total = f"{table}.{column} + excluded.{column}"
    conflict = f"ON CONFLICT ({keys}) DO UPDATE SET {column} = "
    return {
        "postgresql": conflict + total,
        "sqlite": conflict + f"CASE WHEN typeof({total}) = 'integer' THEN {total} END",
    }


# Upserts that add to a running total.
_ADD_TO_BALANCES = _BulkInsert(
    "balances",
    [
        ("group_id", "varchar"),
        ("currency_code", "varchar"),
        ("user_id", "varchar"),
        ("net", "bigint"),
    ],
    _add_on_conflict("balances", "group_id, currency_code, user_id", "net"),
)
_ADD_TO_PAIRS = _BulkInsert(
    "pair_balances",
    [
        ("group_id", "varchar"),
        ("currency_code", "varchar"),
        ("first_user_id", "varchar"),
        ("second_user_id", "varchar"),
        ("amount", "bigint"),
    ],
    _add_on_conflict(
        "pair_balances",
        "group_id, currency_code, first_user_id, second_user_id",
        "amount",
    ),
)


def _raise_pair_versions(session: Session):
    table = PairVersionRow.__table__
    statement = _insert(session, table)
    return statement.on_conflict_do_update(
        index_elements=["group_id", "currency_code"],
        set_={"version": table.c.version + 1},
    )


def touch_group(session: Session, group_id: str, when: datetime) -> None:
    """Record that an expense or settlement of the group changed at `when`."""
    session.execute(
        _upsert(session, "group_activity", _touch_group),
        {"group_id": group_id, "update_time": when},
    )


def _touch_group(session: Session):
    statement = _insert(session, GroupActivityRow.__table__)
    if session.get_bind().dialect.name == "sqlite":
        latest = func.max(GroupActivityRow.update_time, statement.excluded.update_time)
    else:
        latest = func.greatest(
            GroupActivityRow.update_time, statement.excluded.update_time
        )
    return statement.on_conflict_do_update(
        index_elements=["group_id"], set_={"update_time": latest}
    )


# Built once: constructing a statement costs more than running it on SQLite.
_GROUP_NETS = (
    select(BalanceRow.currency_code, BalanceRow.user_id, BalanceRow.net)
    .where(BalanceRow.group_id == bindparam("group_id"))
    .order_by(BalanceRow.currency_code, BalanceRow.user_id)
)
# Every change to a group's balances also writes its `group_activity` row, so
# a group without that row has no balances, and one indexed join reads both.
_GROUP_SNAPSHOT = (
    select(
        GroupActivityRow.update_time,
        BalanceRow.currency_code,
        BalanceRow.user_id,
        BalanceRow.net,
    )
    .select_from(GroupActivityRow)
    .outerjoin(BalanceRow, BalanceRow.group_id == GroupActivityRow.group_id)
    .where(GroupActivityRow.group_id == bindparam("group_id"))
    .order_by(BalanceRow.currency_code, BalanceRow.user_id)
)


def group_nets(session: Session, group_id: str) -> Sequence[tuple[str, str, int]]:
    """Return `(currency_code, user_id, net)` of a group, by currency and user."""
    result = session.execute(_GROUP_NETS, {"group_id": group_id})
    return [(currency, user_id, net) for currency, user_id, net in result]


def group_snapshot(
    session: Session, group_id: str
) -> tuple[datetime | None, Sequence[tuple[str, str, int]]]:
    """Return a group's last update time and `(currency_code, user_id, net)` rows.

    This is the balance read: one query over two primary keys, touching no
    row per expense. The time is None for a group without any expense or
    settlement.
    """
    rows = session.execute(_GROUP_SNAPSHOT, {"group_id": group_id}).all()
    if not rows:
        return None, []
    nets = [
        (currency, user_id, net)
        for _, currency, user_id, net in rows
        if currency is not None
    ]
    return rows[0][0], nets


# The columns of a `cycles.PairAmount`, in its order.
_PAIR_AMOUNT = (
    PairRow.group_id,
    PairRow.currency_code,
    PairRow.first_user_id,
    PairRow.second_user_id,
    PairRow.amount,
)


PairVersions = dict[tuple[str, str], int]  # (group_id, currency_code) -> version

_VERSIONS = PairVersionRow.__table__.c


def pair_versions(
    session: Session, group_id: str, currency: str | None
) -> PairVersions:
    """Return the pair versions of a group, optionally of one currency.

    A group and currency that never had a pair amount has no version and is
    left out. Read in the transaction that reads the pairs, so that both
    come from one state.
    """
    query = select(
        _VERSIONS.group_id, _VERSIONS.currency_code, _VERSIONS.version
    ).where(_VERSIONS.group_id == group_id)
    if currency is not None:
        query = query.where(_VERSIONS.currency_code == currency)
    return {(group, code): version for group, code, version in session.execute(query)}


def user_pair_versions(session: Session, user_id: str) -> PairVersions:
    """Return the pair versions of each group and currency where the user has a
    non-zero pair amount.

    Cancelling circular debts (`balance_service.cycles`) needs the whole
    group and currency, not only the user's own pairs, so these are the
    groups and currencies to net for the user's counterparties.
    """
    query = (
        select(_VERSIONS.group_id, _VERSIONS.currency_code, _VERSIONS.version)
        .select_from(PairRow)
        .join(
            PairVersionRow,
            and_(
                _VERSIONS.group_id == PairRow.group_id,
                _VERSIONS.currency_code == PairRow.currency_code,
            ),
        )
        .where(
            or_(PairRow.first_user_id == user_id, PairRow.second_user_id == user_id),
            PairRow.amount != 0,
        )
        .distinct()
    )
    return {(group, code): version for group, code, version in session.execute(query)}


def pair_amount(
    session: Session, group_id: str, currency: str, user_id: str, other_id: str
) -> int:
    """Return the stored amount that `other_id` owes `user_id`, before cycles
    are cancelled; negative when the user owes the other member."""
    first, second = sorted((user_id, other_id))
    amount = session.execute(
        select(PairRow.amount).where(
            PairRow.group_id == group_id,
            PairRow.currency_code == currency,
            PairRow.first_user_id == first,
            PairRow.second_user_id == second,
        )
    ).scalar()
    if amount is None:
        return 0
    return amount if first == other_id else -amount


def user_balances(session: Session, user_id: str) -> Sequence[tuple[str, str, int]]:
    """Return `(group_id, currency_code, net)` of a user's non-zero net amounts."""
    query = (
        select(BalanceRow.group_id, BalanceRow.currency_code, BalanceRow.net)
        .where(BalanceRow.user_id == user_id, BalanceRow.net != 0)
        .order_by(BalanceRow.group_id, BalanceRow.currency_code)
    )
    return [
        (group_id, currency, net) for group_id, currency, net in session.execute(query)
    ]


def unsettled_balances(
    session: Session, group_id: str, user_id: str | None
) -> Sequence[BalanceRow]:
    """Return the non-zero balance rows of a group, or of one member in it."""
    query = select(BalanceRow).where(
        BalanceRow.group_id == group_id, BalanceRow.net != 0
    )
    if user_id is not None:
        query = query.where(BalanceRow.user_id == user_id)
    return session.scalars(
        query.order_by(BalanceRow.currency_code, BalanceRow.user_id)
    ).all()


def has_balance(session: Session, group_id: str, user_id: str) -> bool:
    """Return whether a user has a balance row in a group, zero or not.

    A row exists once an expense or settlement of the group named the user,
    and it stays after the net amount returns to zero.
    """
    query = (
        select(BalanceRow.user_id)
        .where(BalanceRow.group_id == group_id, BalanceRow.user_id == user_id)
        .limit(1)
    )
    return session.scalars(query).first() is not None


def record_checked_member(
    session: Session, group_id: str, user_id: str, when: datetime
) -> None:
    """Store that a user was a member of a group at `when`; keep an older record."""
    statement = _insert(session, CheckedMemberRow.__table__).values(
        group_id=group_id, user_id=user_id, check_time=when
    )
    session.execute(
        statement.on_conflict_do_nothing(index_elements=["group_id", "user_id"])
    )


def was_checked_member(session: Session, group_id: str, user_id: str) -> bool:
    """Return whether `record_checked_member` stored the user for the group."""
    query = select(CheckedMemberRow.user_id).where(
        CheckedMemberRow.group_id == group_id, CheckedMemberRow.user_id == user_id
    )
    return session.scalars(query).first() is not None


def member_nets(
    session: Session,
    group_id: str,
    currency: str,
    user_ids: Iterable[str],
    lock: bool = False,
) -> dict[str, int]:
    """Return the net amounts of users in one group and currency; 0 if missing.

    With `lock`, the rows are locked in key order, the order in which
    `add_to_balances` writes them.
    """
    user_ids = sorted(set(user_ids))
    query = (
        select(BalanceRow)
        .where(
            BalanceRow.group_id == group_id,
            BalanceRow.currency_code == currency,
            BalanceRow.user_id.in_(user_ids),
        )
        .order_by(BalanceRow.user_id)
    )
    if lock:
        query = query.with_for_update()
    nets = {row.user_id: row.net for row in session.scalars(query)}
    return {user_id: nets.get(user_id, 0) for user_id in user_ids}


_GROUP_DEBTS = select(
    PairRow.first_user_id, PairRow.second_user_id, PairRow.amount
).where(
    PairRow.group_id == bindparam("group_id"),
    PairRow.currency_code == bindparam("currency_code"),
    PairRow.amount != 0,
)


def group_debts(session: Session, group_id: str, currency: str) -> list[DebtAmount]:
    """Return the debts of a group in one currency, as `cycles.DebtWalk` takes them.

    Each item is `(debtor, creditor, amount)` with the amount above zero, in
    no particular order.
    """
    rows = session.execute(
        _GROUP_DEBTS, {"group_id": group_id, "currency_code": currency}
    )
    return [
        (first, second, amount) if amount > 0 else (second, first, -amount)
        for first, second, amount in rows
    ]


def group_pairs(
    session: Session, group_id: str, currency: str | None
) -> list[PairAmount]:
    """Return the non-zero pair amounts of a group, optionally in one currency.

    Each item is `(group_id, currency_code, first_user_id, second_user_id,
    amount)`, where `amount` is what the first user owes the second.
    """
    query = select(*_PAIR_AMOUNT).where(
        PairRow.group_id == group_id, PairRow.amount != 0
    )
    if currency is not None:
        query = query.where(PairRow.currency_code == currency)
    return [tuple(row) for row in session.execute(query)]


# Expenses from the ledger


ExpenseKey = tuple[str, str]  # (group_id, expense_id)


def _by_group(keys: Iterable[ExpenseKey]) -> list[tuple[str, list[str]]]:
    """Return the expense ids of `keys` per group, both in sorted order."""
    by_group: dict[str, list[str]] = {}
    for group_id, expense_id in keys:
        by_group.setdefault(group_id, []).append(expense_id)
    return [(group_id, sorted(ids)) for group_id, ids in sorted(by_group.items())]


def _in_group(table):
    """Return a condition on one group's expenses, bound by `_group_params`.

    Statements look up a batch's expenses one group at a time, so that
    SQLite searches the primary key. With `(group_id, expense_id) IN
    (VALUES ...)` it scanned the whole table instead.
    """
    return and_(
        table.group_id == bindparam("group_id"),
        table.expense_id.in_(bindparam("expense_ids", expanding=True)),
    )


def _group_params(group_id: str, expense_ids: list[str]) -> dict:
    return {"group_id": group_id, "expense_ids": expense_ids}


Line = tuple[str, int, int]  # (user_id, paid, owed)


def get_expenses(
    session: Session, keys: Sequence[ExpenseKey], lock: bool = False
) -> dict[ExpenseKey, ExpenseRow]:
    """Return the stored expenses among `keys`, locked in key order if `lock`."""
    query = _SELECT_EXPENSES_LOCKED if lock else _SELECT_EXPENSES
    found = {}
    for group_id, expense_ids in _by_group(keys):
        for row in session.scalars(query, _group_params(group_id, expense_ids)):
            found[row.group_id, row.expense_id] = row
    return found


_SELECT_EXPENSES = (
    select(ExpenseRow).where(_in_group(ExpenseRow)).order_by(ExpenseRow.expense_id)
)
_SELECT_EXPENSES_LOCKED = _SELECT_EXPENSES.with_for_update()


class NewExpense:
    """An expense that a batch inserts, with the columns of `ExpenseRow`.

    A plain object, because setting the attributes of an ORM object costs
    more than the insert, and `add_expenses` writes it without the session.
    """

    __slots__ = tuple(column.key for column in ExpenseRow.__table__.columns)

    def __init__(self, group_id: str, expense_id: str, create_time: datetime):
        self.group_id = group_id
        self.expense_id = expense_id
        self.create_time = create_time


def add_expenses(session: Session, rows: Iterable[NewExpense]) -> None:
    """Insert new expenses with one statement, outside the session's unit of work.

    Every column of each row must be set. For a few rows, this costs a
    fraction of an ORM flush.
    """
    values = [
        {column.key: getattr(row, column.key) for column in _EXPENSE_COLUMNS}
        for row in rows
    ]
    if values:
        session.execute(_INSERT_EXPENSE, values)


_EXPENSE_COLUMNS = tuple(ExpenseRow.__table__.columns)
_INSERT_EXPENSE = insert(ExpenseRow.__table__)


def lines_of(
    session: Session, keys: Sequence[ExpenseKey]
) -> dict[ExpenseKey, list[Line]]:
    """Return the stored lines of each expense among `keys`, by user."""
    found: dict[ExpenseKey, list[Line]] = {key: [] for key in keys}
    for group_id, expense_ids in _by_group(keys):
        rows = session.execute(_SELECT_LINES, _group_params(group_id, expense_ids))
        for expense_id, user_id, paid, owed in rows:
            found[group_id, expense_id].append((user_id, paid, owed))
    return found


_SELECT_LINES = (
    select(LineRow.expense_id, LineRow.user_id, LineRow.paid, LineRow.owed)
    .where(_in_group(LineRow))
    .order_by(LineRow.expense_id, LineRow.user_id)
)
_DELETE_LINES = delete(LineRow).where(_in_group(LineRow))


def replace_lines(
    session: Session,
    lines: Mapping[ExpenseKey, Iterable[Line]],
    stored: Iterable[ExpenseKey],
    expenses: Mapping[ExpenseKey, ExpenseRow | NewExpense],
) -> None:
    """Write the lines of several expenses: one delete per group, one insert.

    Each line copies its expense's currency, date and create time, so that
    an ExplainBalance page walks one member's lines in page order. The
    copies come from `expenses`, not from a read of `ledger_expenses` for
    each line, which cost SQLite more than the insert itself. The date and
    time go through their column types' bind processors, once per expense,
    so the stored text is what an ORM insert would store.

    Args:
      lines: the new lines of each expense.
      stored: the expenses among them that have lines in the database now.
        Their old lines are deleted first.
      expenses: the state of each expense of `lines`, after the change.
    """
    for group_id, expense_ids in _by_group(stored):
        session.execute(_DELETE_LINES, _group_params(group_id, expense_ids))
    connection = session.connection()
    to_date, to_time = _line_processors(connection.dialect)
    rows = []
    for key, expense_lines in sorted(lines.items()):
        expense = expenses[key]
        copies = (
            expense.currency_code,
            to_date(expense.expense_date),
            to_time(expense.create_time),
        )
        rows += [(*key, *line, *copies) for line in expense_lines]
    if rows:
        _INSERT_LINES.run(session, rows)


_INSERT_LINES = _BulkInsert(
    "ledger_lines",
    [
        ("group_id", "varchar"),
        ("expense_id", "varchar"),
        ("user_id", "varchar"),
        ("paid", "bigint"),
        ("owed", "bigint"),
        ("currency_code", "varchar"),
        ("expense_date", "date"),
        ("create_time", "timestamp"),
    ],
)
_LINE_PROCESSORS: dict[str, tuple] = {}


def _line_processors(dialect) -> tuple:
    """Return the bind processors of a line's date and time for a dialect.

    A column type without one gets the identity.
    """
    processors = _LINE_PROCESSORS.get(dialect.name)
    if processors is None:
        columns = LineRow.__table__.c
        processors = _LINE_PROCESSORS[dialect.name] = tuple(
            column.type.dialect_impl(dialect).bind_processor(dialect)
            or (lambda value: value)
            for column in (columns.expense_date, columns.create_time)
        )
    return processors


def lines_of_expenses(
    session: Session, group_id: str, expense_ids: Sequence[str]
) -> dict[str, list[Row]]:
    """Return the lines of several expenses of a group, keyed by expense id.

    Each line is a plain row with `expense_id`, `user_id`, `paid` and `owed`.
    """
    found: dict[str, list[Row]] = {expense_id: [] for expense_id in expense_ids}
    for chunk_start in range(0, len(expense_ids), 500):
        chunk = expense_ids[chunk_start : chunk_start + 500]
        rows = session.execute(
            select(
                LineRow.expense_id, LineRow.user_id, LineRow.paid, LineRow.owed
            ).where(LineRow.group_id == group_id, LineRow.expense_id.in_(chunk))
        )
        for row in rows:
            found[row.expense_id].append(row)
    return found


# Explanations of a net amount, in pages

#: The position after which an ExplainBalance page starts: the `(date,
#: create_time, kind, id)` of the item before it, where kind is "expenses"
#: or "settlements". Items sort by these four values, so an expense sorts
#: before a settlement of the same date and time, as their resource names do.
ExplainPosition = tuple[date, datetime, str, str]

EXPENSES = "expenses"
SETTLEMENTS = "settlements"


def _bytewise(session: Session, column):
    """Compare ids byte by byte, as Python compares them.

    SQLite does so by default. A PostgreSQL database may sort text by a
    locale whose order differs from byte order, and ties on date and time
    would then come in another order than the page token expects.
    """
    if session.get_bind().dialect.name == "postgresql":
        return column.collate("C")
    return column


def _read_page(
    session: Session,
    query,
    order: tuple,
    kind: str,
    after: ExplainPosition | None,
    limit: int,
) -> Sequence[Row]:
    """Run `query` on rows of `kind` from `after` on, at most `limit` of them.

    `order` contains the row's date, create time and id columns.
    """
    day, time, row_id = order
    if after is not None:
        after_day, after_time, after_kind, after_id = after
        if after_kind == kind:
            tie = _bytewise(session, row_id) > after_id
        else:
            # Expenses come before settlements of the same date and time.
            tie = true() if after_kind < kind else false()
        query = query.where(
            # Redundant with the rest, but it lets the index seek to the date.
            day >= after_day,
            or_(
                day > after_day,
                and_(
                    day == after_day,
                    or_(time > after_time, and_(time == after_time, tie)),
                ),
            ),
        )
    query = query.order_by(day, time, _bytewise(session, row_id)).limit(limit)
    return session.execute(query).all()


def explain_expenses(
    session: Session,
    group_id: str,
    user_id: str,
    currency: str,
    counterparty: str | None,
    after: ExplainPosition | None,
    limit: int,
) -> Sequence[Row]:
    """Return the first `limit` live expenses of a member after `after`.

    These are the expenses in the currency where the member has a line, and
    the counterparty too when one is given, in the order of
    `ExplainPosition`. Each row has the expense's `expense_id`,
    `description`, `expense_date` and `create_time`, and the member's `paid`
    and `owed`. With a counterparty it also has the counterparty's
    `their_paid` and `their_owed`.

    The query walks the member's lines along `ix_ledger_lines_user_order`
    from `after` and stops after `limit` rows, so a page costs about the
    same early or late in a long history, and the expenses of other members
    of the group cost nothing.

    NOTE: with a counterparty, the walk also passes the member's expenses
    without the counterparty, so a pair that shares few of a busy member's
    expenses costs in proportion to the member's expenses.
    """
    mine = aliased(LineRow)
    columns = [
        ExpenseRow.expense_id,
        ExpenseRow.description,
        mine.expense_date,
        mine.create_time,
        mine.paid,
        mine.owed,
    ]
    theirs = aliased(LineRow)
    if counterparty is not None:
        columns += [theirs.paid.label("their_paid"), theirs.owed.label("their_owed")]
    query = select(*columns).select_from(mine)
    if counterparty is not None:
        query = query.join(
            theirs,
            and_(
                theirs.group_id == mine.group_id,
                theirs.expense_id == mine.expense_id,
                theirs.user_id == counterparty,
            ),
        )
    query = query.join(
        ExpenseRow,
        and_(
            ExpenseRow.group_id == mine.group_id,
            ExpenseRow.expense_id == mine.expense_id,
        ),
    ).where(
        mine.group_id == group_id,
        mine.user_id == user_id,
        mine.currency_code == currency,
        ExpenseRow.deleted.is_(False),
    )
    order = (mine.expense_date, mine.create_time, mine.expense_id)
    return _read_page(session, query, order, EXPENSES, after, limit)


def payer_counts(
    session: Session, group_id: str, expense_ids: Sequence[str]
) -> dict[str, int]:
    """Return how many members paid a non-zero amount in each expense.

    An expense in which no one paid anything is left out.
    """
    found: dict[str, int] = {}
    for chunk_start in range(0, len(expense_ids), 500):
        chunk = expense_ids[chunk_start : chunk_start + 500]
        rows = session.execute(
            select(LineRow.expense_id, func.count())
            .where(
                LineRow.group_id == group_id,
                LineRow.expense_id.in_(chunk),
                LineRow.paid != 0,
            )
            .group_by(LineRow.expense_id)
        )
        found.update({expense_id: count for expense_id, count in rows})
    return found


def explain_settlements(
    session: Session,
    group_id: str,
    user_id: str,
    currency: str,
    counterparty: str | None,
    after: ExplainPosition | None,
    limit: int,
) -> Sequence[Row]:
    """Return the first `limit` live settlements of a member after `after`.

    These are the settlements in the currency with the member as payer or
    payee, and the counterparty on the other side when one is given, in the
    order of `ExplainPosition`. Each row has `id`, `payer_id`, `payee_id`,
    `amount`, `settlement_date`, `note` and `create_time`.
    """
    if counterparty is None:
        parties = or_(
            SettlementRow.payer_id == user_id, SettlementRow.payee_id == user_id
        )
    else:
        parties = or_(
            and_(
                SettlementRow.payer_id == user_id,
                SettlementRow.payee_id == counterparty,
            ),
            and_(
                SettlementRow.payer_id == counterparty,
                SettlementRow.payee_id == user_id,
            ),
        )
    query = select(
        SettlementRow.id,
        SettlementRow.payer_id,
        SettlementRow.payee_id,
        SettlementRow.amount,
        SettlementRow.settlement_date,
        SettlementRow.note,
        SettlementRow.create_time,
    ).where(
        SettlementRow.group_id == group_id,
        SettlementRow.currency_code == currency,
        SettlementRow.delete_time.is_(None),
        parties,
    )
    order = (SettlementRow.settlement_date, SettlementRow.create_time, SettlementRow.id)
    return _read_page(session, query, order, SETTLEMENTS, after, limit)


def _report_filter(
    group_id: str, currency: str, start: date | None, end: date | None
) -> list:
    conditions = [
        ExpenseRow.group_id == group_id,
        ExpenseRow.currency_code == currency,
        ExpenseRow.deleted.is_(False),
    ]
    if start is not None:
        conditions.append(ExpenseRow.expense_date >= start)
    if end is not None:
        conditions.append(ExpenseRow.expense_date <= end)
    return conditions


def report_by_day(
    session: Session, group_id: str, currency: str, start: date | None, end: date | None
) -> Sequence[tuple[date, int, int]]:
    """Return `(expense_date, total, count)` per day with covered expenses."""
    query = (
        select(ExpenseRow.expense_date, func.sum(ExpenseRow.total), func.count())
        .where(*_report_filter(group_id, currency, start, end))
        .group_by(ExpenseRow.expense_date)
        .order_by(ExpenseRow.expense_date)
    )
    return [(day, int(total), count) for day, total, count in session.execute(query)]


def report_by_category(
    session: Session, group_id: str, currency: str, start: date | None, end: date | None
) -> Sequence[tuple[int, int, int]]:
    """Return `(category, total, count)` per category with covered expenses."""
    query = (
        select(ExpenseRow.category, func.sum(ExpenseRow.total), func.count())
        .where(*_report_filter(group_id, currency, start, end))
        .group_by(ExpenseRow.category)
    )
    return [(cat, int(total), count) for cat, total, count in session.execute(query)]


def report_by_member(
    session: Session, group_id: str, currency: str, start: date | None, end: date | None
) -> Sequence[tuple[str, int, int]]:
    """Return `(user_id, paid, owed)` per member with a line in a covered expense."""
    query = (
        select(LineRow.user_id, func.sum(LineRow.paid), func.sum(LineRow.owed))
        .join(
            ExpenseRow,
            and_(
                LineRow.group_id == ExpenseRow.group_id,
                LineRow.expense_id == ExpenseRow.expense_id,
            ),
        )
        .where(*_report_filter(group_id, currency, start, end))
        .group_by(LineRow.user_id)
        .order_by(LineRow.user_id)
    )
    return [
        (user_id, int(paid), int(owed))
        for user_id, paid, owed in session.execute(query)
    ]


# Settlements


def get_settlement(
    session: Session, group_id: str, settlement_id: str, lock: bool = False
) -> SettlementRow | None:
    return session.get(SettlementRow, (group_id, settlement_id), with_for_update=lock)


def add_settlement(session: Session, row: SettlementRow) -> None:
    """Insert a settlement; the flush raises IntegrityError on a duplicate id."""
    session.add(row)
    session.flush()


def list_settlements(
    session: Session,
    *,
    group_id: str | None,
    participant_id: str | None,
    start: date | None,
    end: date | None,
    show_deleted: bool,
    by_create_time: bool,
    after: tuple | None,
    limit: int,
) -> Sequence[SettlementRow]:
    """Return settlements newest first by date or create time, ties by name.

    `after` is the `(sort value, group_id, id)` of the last row of the
    previous page.
    """
    query = select(SettlementRow)
    if group_id is not None:
        query = query.where(SettlementRow.group_id == group_id)
    if participant_id is not None:
        query = query.where(
            or_(
                SettlementRow.payer_id == participant_id,
                SettlementRow.payee_id == participant_id,
            )
        )
    if start is not None:
        query = query.where(SettlementRow.settlement_date >= start)
    if end is not None:
        query = query.where(SettlementRow.settlement_date <= end)
    if not show_deleted:
        query = query.where(SettlementRow.delete_time.is_(None))
    sort = (
        SettlementRow.create_time if by_create_time else SettlementRow.settlement_date
    )
    if after is not None:
        value, after_group, after_id = after
        query = query.where(
            or_(
                sort < value,
                and_(
                    sort == value,
                    or_(
                        SettlementRow.group_id > after_group,
                        and_(
                            SettlementRow.group_id == after_group,
                            SettlementRow.id > after_id,
                        ),
                    ),
                ),
            )
        )
    query = query.order_by(sort.desc(), SettlementRow.group_id, SettlementRow.id)
    return session.scalars(query.limit(limit)).all()


# Idempotency keys


def find_request(session: Session, method: str, request_id: str) -> RequestIdRow | None:
    """Return the record of an earlier request with this key, if any."""
    return session.get(RequestIdRow, (method, request_id))


def remember_request(
    session: Session,
    method: str,
    request_id: str,
    resource_name: str,
    request_hash: str | None,
) -> None:
    """Record a request_id in the transaction that creates its resource."""
    session.add(
        RequestIdRow(
            method=method,
            request_id=request_id,
            resource_name=resource_name,
            create_time=utc_now(),
            request_hash=request_hash,
        )
    )
    session.flush()
