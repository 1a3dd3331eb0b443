"""Index expenses and settlements in the order in which ExplainBalance pages.

A page of ExplainBalance reads the items after the previous page's last one,
by date, create time and id. These indexes let it seek there and stop after
one page. The expense index replaces one on group, currency and date, whose
queries the new index serves as well.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_ledger_expenses_group_currency_order",
        "ledger_expenses",
        ["group_id", "currency_code", "expense_date", "create_time", "expense_id"],
    )
    op.drop_index(
        "ix_ledger_expenses_group_currency_date", table_name="ledger_expenses"
    )
    op.create_index(
        "ix_settlements_group_currency_order",
        "settlements",
        ["group_id", "currency_code", "settlement_date", "create_time", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_settlements_group_currency_order", table_name="settlements")
    op.create_index(
        "ix_ledger_expenses_group_currency_date",
        "ledger_expenses",
        ["group_id", "currency_code", "expense_date"],
    )
    op.drop_index(
        "ix_ledger_expenses_group_currency_order", table_name="ledger_expenses"
    )
