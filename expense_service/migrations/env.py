"""Alembic environment of the expense service; the runtime supplies the connection."""

from alembic import context

from expense_service.storage import Base
from splitlog_runtime.database import run_migrations

run_migrations(context, Base.metadata)
