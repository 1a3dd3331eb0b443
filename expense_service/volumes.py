"""Gross money volume per group and currency, and the cap that keeps sums exact.

balance_service adds expenses and settlements into running totals stored as
signed 64-bit integers: net balances, pair balances and report totals. Each
amount is capped (`domain.MAX_AMOUNT_MINOR`), but nothing else would bound
their sum. So each service keeps, per group and currency, the gross volume of
what it holds: the sum of the absolute totals of the live expenses
(expense_service) or of the live settlements (balance_service). A write that
would take a volume over its cap fails, in its own transaction, with
FAILED_PRECONDITION and reason `GROUP_VOLUME_LIMIT`.

Why the caps are enough: in one expense, a member's paid and owed amounts
have the total's sign and are at most its size. So the expense moves a net
balance, a pair balance or a report total by at most its absolute total, and
a settlement moves one by at most its amount. So every running total of a
group and currency is at most the expense volume plus the settlement volume,
8 * 10**18 minor units, below 2**63 - 1 (about 9.22 * 10**18). A batch of
ledger events moves a balance by the difference of two such states, at most
twice the expense volume, which also fits. Totals across groups, such as a
user's balance, are summed in Python, which has no overflow.

The status is FAILED_PRECONDITION rather than INVALID_ARGUMENT because the
request is valid on its own: the same write succeeds in a group with less
volume, or here once other expenses or settlements are deleted.
"""

from __future__ import annotations

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from expense_service import money, storage
from splitlog_runtime.errors import FailedPrecondition, PreconditionViolation

#: Largest gross volume of live expenses in one group and currency, in minor
#: units: for example 4,000 expenses of 1,000,000,000,000 BHD.
MAX_EXPENSE_VOLUME_MINOR = 4 * 10**18
#: Largest gross volume of live settlements in one group and currency, in
#: minor units. It equals the expense cap, so that settlements can clear any
#: balance that the expenses leave.
MAX_SETTLEMENT_VOLUME_MINOR = 4 * 10**18
#: Largest value of a BIGINT column.
INT64_MAX = 2**63 - 1

# Every running total must stay inside a BIGINT, and so must the change that
# one ledger batch makes to a balance (see the module docstring).
assert MAX_EXPENSE_VOLUME_MINOR + MAX_SETTLEMENT_VOLUME_MINOR <= INT64_MAX
assert 2 * MAX_EXPENSE_VOLUME_MINOR <= INT64_MAX

REASON = "GROUP_VOLUME_LIMIT"


def _add(session: Session, table: Table, key: dict, delta: int) -> int:
    """Add `delta` to the volume row of `key`, or create it, and return the result.

    The upsert locks the row until the commit on PostgreSQL, so concurrent
    writes of one group and currency add up in turn. On SQLite the write
    transaction holds the database's write lock. `delta` and the stored
    volume are each at most the cap, so their sum in SQL fits a BIGINT.
    """
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(table)
    else:
        statement = sqlite.insert(table)
    statement = (
        statement.values(**key, gross_minor=delta)
        .on_conflict_do_update(
            index_elements=list(key),
            set_={"gross_minor": table.c.gross_minor + statement.excluded.gross_minor},
        )
        .returning(table.c.gross_minor)
    )
    return session.execute(statement).scalar_one()


def _current(session: Session, table: Table, key: dict) -> int:
    query = select(table.c.gross_minor).where(
        *(table.c[column] == value for column, value in key.items())
    )
    return session.execute(query).scalar() or 0


def apply_changes(
    session: Session,
    table: Table,
    changes: dict[tuple[str, str], int],
    limit: int,
    counted: str,
    fix: str,
) -> None:
    """Add volume changes `{(group_id, currency_code): delta}` and check the cap.

    Rows are written in key order, so that concurrent writers lock them in
    the same order. A change that does not raise the volume is always
    accepted, even for a group already over the cap.

    Args:
      table: the volume table, with columns group_id, currency_code and
        gross_minor.
      limit: the cap of the table.
      counted: the things whose amounts the volume adds up, such as "its
        live expenses", for the message.
      fix: how to stay under the cap, for the message.

    Raises:
      FailedPrecondition: a volume would pass `limit` (reason
        GROUP_VOLUME_LIMIT). The caller's transaction must roll back.
    """
    for (group_id, currency), delta in sorted(changes.items()):
        if delta == 0:
            continue
        key = {"group_id": group_id, "currency_code": currency}
        if delta > limit:
            reached = _current(session, table, key) + delta
        else:
            reached = _add(session, table, key, delta)
        if delta > 0 and reached > limit:
            raise limit_error(group_id, currency, reached, limit, counted, fix)


def limit_error(
    group_id: str, currency: str, reached: int, limit: int, counted: str, fix: str
) -> FailedPrecondition:
    """Build the GROUP_VOLUME_LIMIT error of a write that would pass a cap."""
    group = f"groups/{group_id}"
    shown_reached = f"{money.format_amount(reached, currency)} {currency}"
    shown_limit = f"{money.format_amount(limit, currency)} {currency}"
    message = (
        f"this write would take the volume of {group!r} in {currency}, the sum "
        f"of the absolute amounts of {counted}, to {shown_reached}, over the limit "
        f"of {shown_limit} that keeps its balances exact; {fix}"
    )
    return FailedPrecondition(
        message,
        reason=REASON,
        metadata={
            "group": group,
            "currency_code": currency,
            "volume": shown_reached,
            "limit": shown_limit,
        },
        preconditions=[
            PreconditionViolation(
                REASON,
                group,
                f"the volume in {currency} would be {shown_reached}, over "
                f"{shown_limit}",
            )
        ],
    )


def add_expense_volumes(session: Session, changes: dict[tuple[str, str], int]) -> None:
    """Apply `{(group_id, currency_code): delta}` to the expense volumes.

    Raises:
      FailedPrecondition: a group's expense volume would pass
        MAX_EXPENSE_VOLUME_MINOR.
    """
    apply_changes(
        session,
        storage.VolumeRow.__table__,
        changes,
        MAX_EXPENSE_VOLUME_MINOR,
        "its live expenses",
        "delete or shrink expenses of the group in that currency, or record "
        "further expenses in another group",
    )
