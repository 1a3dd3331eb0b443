"""Count the changes of each group's pair amounts, for the pairwise cache.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Every group and currency that already has pair rows starts at version 1, so
that each one the pairwise reads look up has a row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pair_versions",
        sa.Column("group_id", sa.String(63), primary_key=True),
        sa.Column("currency_code", sa.String(3), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO pair_versions (group_id, currency_code, version) "
        "SELECT DISTINCT group_id, currency_code, 1 FROM pair_balances"
    )


def downgrade() -> None:
    op.drop_table("pair_versions")
