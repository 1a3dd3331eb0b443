"""Create users, groups, memberships and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("email_normalised", sa.String(1024), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("display_name_normalised", sa.String(1024), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("state IN ('ACTIVE', 'DEACTIVATED')", name="ck_users_state"),
    )
    op.create_index(
        "uq_users_email_normalised", "users", ["email_normalised"], unique=True
    )
    op.create_index("ix_users_create_time_id", "users", ["create_time", "id"])

    op.create_table(
        "groups",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column(
            "creator_id", sa.String(63), sa.ForeignKey("users.id"), nullable=False
        ),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )

    op.create_table(
        "group_members",
        sa.Column(
            "group_id",
            sa.String(63),
            sa.ForeignKey("groups.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user_id", sa.String(63), sa.ForeignKey("users.id"), primary_key=True
        ),
        sa.Column("join_time", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_group_members_group_join",
        "group_members",
        ["group_id", "join_time", "user_id"],
    )
    op.create_index(
        "ix_group_members_user_join",
        "group_members",
        ["user_id", "join_time", "group_id"],
    )

    op.create_table(
        "user_service_request_ids",
        sa.Column("method", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("resource_name", sa.String(200), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("user_service_request_ids")
    op.drop_index("ix_group_members_user_join", table_name="group_members")
    op.drop_index("ix_group_members_group_join", table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("groups")
    op.drop_index("ix_users_create_time_id", table_name="users")
    op.drop_index("uq_users_email_normalised", table_name="users")
    op.drop_table("users")
