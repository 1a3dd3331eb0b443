"""Copy each expense's currency, date and create time into its lines.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

An ExplainBalance page lists a member's expenses, or the expenses that a
member shares with a counterparty, in the order of date, create time and
id. It walked every expense of the group in that order and kept those with
the member's lines, so a page of a member of a wide group read many
expenses of others. With these columns and the index on them, a page walks
the member's own lines in page order instead. The columns are filled from
the stored expenses, then made NOT NULL. The new index starts with the
group and user, so it replaces the index on those two columns.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COPIED = (
    ("currency_code", sa.String(3)),
    ("expense_date", sa.Date()),
    ("create_time", sa.DateTime()),
)


def upgrade() -> None:
    for name, column_type in _COPIED:
        op.add_column("ledger_lines", sa.Column(name, column_type, nullable=True))
    for name, _ in _COPIED:
        op.execute(
            f"UPDATE ledger_lines SET {name} = ("
            f"SELECT ledger_expenses.{name} FROM ledger_expenses "
            "WHERE ledger_expenses.group_id = ledger_lines.group_id "
            "AND ledger_expenses.expense_id = ledger_lines.expense_id)"
        )
    with op.batch_alter_table("ledger_lines") as batch:
        for name, column_type in _COPIED:
            batch.alter_column(name, existing_type=column_type, nullable=False)
    op.create_index(
        "ix_ledger_lines_user_order",
        "ledger_lines",
        [
            "group_id",
            "user_id",
            "currency_code",
            "expense_date",
            "create_time",
            "expense_id",
        ],
    )
    op.drop_index("ix_ledger_lines_group_user", table_name="ledger_lines")


def downgrade() -> None:
    op.create_index(
        "ix_ledger_lines_group_user", "ledger_lines", ["group_id", "user_id"]
    )
    op.drop_index("ix_ledger_lines_user_order", table_name="ledger_lines")
    with op.batch_alter_table("ledger_lines") as batch:
        for name, _ in reversed(_COPIED):
            batch.drop_column(name)
