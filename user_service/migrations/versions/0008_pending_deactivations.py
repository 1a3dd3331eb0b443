"""Add deactivating marks, written while a deactivation checks balances.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_deactivations",
        sa.Column(
            "user_id",
            sa.String(63),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pending_deactivations")
