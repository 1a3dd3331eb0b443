"""Store the hash of each CreateGroup with its currency filled in.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_service_request_ids") as table:
        table.add_column(sa.Column("resolved_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_service_request_ids") as table:
        table.drop_column("resolved_hash")
