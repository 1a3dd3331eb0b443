"""Keep the gross volume of each group's live settlements per currency.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

The table starts with the sums of the settlements already stored, added up
in Python, where no sum overflows. As in expense_service's volumes, a value
over the cap is kept below 2**63 - 1 minus the cap, so that adding one more
write in SQL never overflows a BIGINT.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Copies of expense_service.volumes constants, so this revision keeps the
# meaning it had when it was written.
_INT64_MAX = 2**63 - 1
_MAX_SETTLEMENT_VOLUME_MINOR = 4 * 10**18


def upgrade() -> None:
    volumes = op.create_table(
        "settlement_volumes",
        sa.Column("group_id", sa.String(63), primary_key=True),
        sa.Column("currency_code", sa.String(3), primary_key=True),
        sa.Column("gross_minor", sa.BigInteger(), nullable=False),
    )
    settlements = sa.table(
        "settlements",
        sa.column("group_id", sa.String),
        sa.column("currency_code", sa.String),
        sa.column("amount", sa.BigInteger),
        sa.column("delete_time", sa.DateTime),
    )
    sums: dict[tuple[str, str], int] = {}
    rows = op.get_bind().execute(
        sa.select(
            settlements.c.group_id, settlements.c.currency_code, settlements.c.amount
        )
        .where(settlements.c.delete_time.is_(None))
        .execution_options(yield_per=10_000)
    )
    for group_id, currency, amount in rows:
        key = (group_id, currency)
        sums[key] = sums.get(key, 0) + abs(int(amount))
    ceiling = _INT64_MAX - _MAX_SETTLEMENT_VOLUME_MINOR
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
    op.drop_table("settlement_volumes")
