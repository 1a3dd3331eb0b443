"""Alembic environment of the balance service; the runtime supplies the connection."""

from alembic import context

from balance_service.storage import Base
from splitlog_runtime.database import run_migrations

run_migrations(context, Base.metadata)
