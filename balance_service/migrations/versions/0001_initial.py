"""Create the ledger copy, balances, pairs, settlements and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(63)


def upgrade() -> None:
    cursors = op.create_table(
        "ledger_cursors",
        sa.Column("feed", _ID, primary_key=True),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
    )
    # The consumer only ever updates this row, so its conditional UPDATE
    # never has to insert it.
    op.bulk_insert(
        cursors,
        [
            {
                "feed": "expense_service",
                "last_sequence": 0,
                "update_time": datetime.now(UTC).replace(tzinfo=None),
            }
        ],
    )

    op.create_table(
        "ledger_expenses",
        sa.Column("group_id", _ID, primary_key=True),
        sa.Column("expense_id", _ID, primary_key=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("expense_date", sa.Date(), nullable=False),
        sa.Column("category", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_ledger_expenses_group_currency_date",
        "ledger_expenses",
        ["group_id", "currency_code", "expense_date"],
    )

    op.create_table(
        "ledger_lines",
        sa.Column("group_id", _ID, primary_key=True),
        sa.Column("expense_id", _ID, primary_key=True),
        sa.Column("user_id", _ID, primary_key=True),
        sa.Column("paid", sa.BigInteger(), nullable=False),
        sa.Column("owed", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_ledger_lines_group_user", "ledger_lines", ["group_id", "user_id"]
    )

    op.create_table(
        "balances",
        sa.Column("group_id", _ID, primary_key=True),
        sa.Column("currency_code", sa.String(3), primary_key=True),
        sa.Column("user_id", _ID, primary_key=True),
        sa.Column("net", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_balances_user", "balances", ["user_id"])

    op.create_table(
        "pair_balances",
        sa.Column("group_id", _ID, primary_key=True),
        sa.Column("currency_code", sa.String(3), primary_key=True),
        sa.Column("first_user_id", _ID, primary_key=True),
        sa.Column("second_user_id", _ID, primary_key=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
    )

    op.create_table(
        "group_activity",
        sa.Column("group_id", _ID, primary_key=True),
        sa.Column("update_time", sa.DateTime(), nullable=False),
    )

    op.create_table(
        "settlements",
        sa.Column("group_id", _ID, primary_key=True),
        sa.Column("id", _ID, primary_key=True),
        sa.Column("payer_id", _ID, nullable=False),
        sa.Column("payee_id", _ID, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("settlement_date", sa.Date(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("creator_id", _ID, nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.Column("delete_time", sa.DateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_settlements_group_date",
        "settlements",
        ["group_id", "settlement_date", "id"],
    )
    op.create_index("ix_settlements_payer", "settlements", ["payer_id"])
    op.create_index("ix_settlements_payee", "settlements", ["payee_id"])

    op.create_table(
        "balance_service_request_ids",
        sa.Column("method", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("resource_name", sa.String(200), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "balance_service_request_ids",
        "settlements",
        "group_activity",
        "pair_balances",
        "balances",
        "ledger_lines",
        "ledger_expenses",
        "ledger_cursors",
    ):
        op.drop_table(table)
