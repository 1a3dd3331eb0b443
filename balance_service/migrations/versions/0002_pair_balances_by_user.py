"""Index pair_balances by each of its two users, for a user's counterparties.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_pair_balances_first_user", "pair_balances", ["first_user_id"])
    op.create_index("ix_pair_balances_second_user", "pair_balances", ["second_user_id"])


def downgrade() -> None:
    op.drop_index("ix_pair_balances_second_user", table_name="pair_balances")
    op.drop_index("ix_pair_balances_first_user", table_name="pair_balances")
