"""Keep rotated refresh tokens so that their reuse revokes the session.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
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
        "auth_rotated_refresh_tokens",
        sa.Column("refresh_hash", sa.String(64), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(32),
            sa.ForeignKey("auth_sessions.id"),
            nullable=False,
        ),
        sa.Column("rotate_time", sa.DateTime(), nullable=False),
        sa.Column("expire_time", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_auth_rotated_refresh_tokens_session",
        "auth_rotated_refresh_tokens",
        ["session_id"],
    )


def downgrade() -> None:
    op.drop_table("auth_rotated_refresh_tokens")
