"""Create expenses, their payers and participants, request ids and the ledger.

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

# Resource names sort byte by byte on PostgreSQL too.
NAME = sa.String(160).with_variant(sa.String(160, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "expenses",
        sa.Column("name", NAME, primary_key=True),
        sa.Column("group_id", sa.String(63), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("category", sa.Integer(), nullable=False),
        sa.Column("expense_date", sa.Date(), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("split_type", sa.Integer(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("creator", sa.String(80), nullable=False),
        sa.Column("last_modifier", sa.String(80), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.Column("delete_time", sa.DateTime(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_expenses_group_date", "expenses", ["group_id", "expense_date", "name"]
    )
    op.create_index(
        "ix_expenses_group_created", "expenses", ["group_id", "create_time", "name"]
    )

    op.create_table(
        "expense_payers",
        sa.Column(
            "expense_name", NAME, sa.ForeignKey("expenses.name"), primary_key=True
        ),
        sa.Column("user", sa.String(80), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_expense_payers_user", "expense_payers", ["user", "expense_name"]
    )

    op.create_table(
        "expense_participants",
        sa.Column(
            "expense_name", NAME, sa.ForeignKey("expenses.name"), primary_key=True
        ),
        sa.Column("user", sa.String(80), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("exact_minor", sa.BigInteger(), nullable=True),
        sa.Column("basis_points", sa.Integer(), nullable=True),
        sa.Column("shares", sa.Integer(), nullable=True),
        sa.Column("owed_minor", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_expense_participants_user",
        "expense_participants",
        ["user", "expense_name"],
    )

    op.create_table(
        "expense_request_ids",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("expense_name", NAME, nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
    )

    op.create_table(
        "expense_ledger_events",
        sa.Column("sequence", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("expense_name", NAME, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.Integer(), nullable=False),
        sa.Column("commit_time", sa.DateTime(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
    )
    op.create_index(
        "ix_expense_ledger_events_expense",
        "expense_ledger_events",
        ["expense_name", "revision"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_expense_ledger_events_expense", table_name="expense_ledger_events"
    )
    op.drop_table("expense_ledger_events")
    op.drop_table("expense_request_ids")
    op.drop_index("ix_expense_participants_user", table_name="expense_participants")
    op.drop_table("expense_participants")
    op.drop_index("ix_expense_payers_user", table_name="expense_payers")
    op.drop_table("expense_payers")
    op.drop_index("ix_expenses_group_created", table_name="expenses")
    op.drop_index("ix_expenses_group_date", table_name="expenses")
    op.drop_table("expenses")
