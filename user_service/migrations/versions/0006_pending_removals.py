"""Add leaving marks, written while a removal checks balances.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_removals",
        sa.Column(
            "group_id",
            sa.String(63),
            sa.ForeignKey("groups.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.String(63), primary_key=True),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pending_removals")
