"""Record the members that CheckSettled found without a balance row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checked_members",
        sa.Column("group_id", sa.String(63), primary_key=True),
        sa.Column("user_id", sa.String(63), primary_key=True),
        sa.Column("check_time", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("checked_members")
