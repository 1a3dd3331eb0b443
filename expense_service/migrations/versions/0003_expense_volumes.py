"""Keep the gross volume of each group's live expenses per currency.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

The table starts with the sums of the expenses already stored. They are
added up in Python, where no sum overflows. A group whose volume is already
over the cap keeps a value over the cap, so that it accepts only writes that
lower its volume, but the value is held below 2**63 - 1 minus the cap, so
that adding one more write in SQL never overflows a BIGINT.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Copies of expense_service.volumes constants, so this revision keeps the
# meaning it had when it was written.
_INT64_MAX = 2**63 - 1
_MAX_EXPENSE_VOLUME_MINOR = 4 * 10**18


def upgrade() -> None:
    volumes = op.create_table(
        "expense_volumes",
        sa.Column("group_id", sa.String(63), primary_key=True),
        sa.Column("currency_code", sa.String(3), primary_key=True),
        sa.Column("gross_minor", sa.BigInteger(), nullable=False),
    )
    expenses = sa.table(
        "expenses",
        sa.column("group_id", sa.String),
        sa.column("currency_code", sa.String),
        sa.column("total_minor", sa.BigInteger),
        sa.column("delete_time", sa.DateTime),
    )
    sums: dict[tuple[str, str], int] = {}
    rows = op.get_bind().execute(
        sa.select(expenses.c.group_id, expenses.c.currency_code, expenses.c.total_minor)
        .where(expenses.c.delete_time.is_(None))
        .execution_options(yield_per=10_000)
    )
    for group_id, currency, total in rows:
        key = (group_id, currency)
        sums[key] = sums.get(key, 0) + abs(int(total))
    ceiling = _INT64_MAX - _MAX_EXPENSE_VOLUME_MINOR
    values = [
        {
            "group_id": group_id,
            "currency_code": currency,
            "gross_minor": min(gross, ceiling),
        }
        for (group_id, currency), gross in sorted(sums.items())
    ]
    for start in range(0, len(values), 1000):
        op.bulk_insert(volumes, values[start : start + 1000])


def downgrade() -> None:
    op.drop_table("expense_volumes")
