"""Create the credential tables: password hashes, sessions and API keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-03-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_passwords",
        sa.Column(
            "user_id", sa.String(63), sa.ForeignKey("users.id"), primary_key=True
        ),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
    )

    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(63), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("refresh_hash", sa.String(64), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("refresh_expire_time", sa.DateTime(), nullable=False),
        sa.Column("revoke_time", sa.DateTime(), nullable=True),
    )
    op.create_index(
        "uq_auth_sessions_refresh_hash", "auth_sessions", ["refresh_hash"], unique=True
    )
    op.create_index("ix_auth_sessions_user", "auth_sessions", ["user_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("user_id", sa.String(63), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("expire_time", sa.DateTime(), nullable=True),
        sa.Column("revoke_time", sa.DateTime(), nullable=True),
    )
    op.create_index("uq_api_keys_secret_hash", "api_keys", ["secret_hash"], unique=True)
    op.create_index(
        "ix_api_keys_user_create", "api_keys", ["user_id", "create_time", "id"]
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("auth_sessions")
    op.drop_table("user_passwords")
