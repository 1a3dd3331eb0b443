"""Keep the ids of deleted groups so that no new group reuses one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deleted_groups",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("delete_time", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deleted_groups")
