"""Alembic environment of the user service; the runtime supplies the connection."""

from alembic import context

from splitlog_runtime.database import run_migrations
from user_service.storage import Base

run_migrations(context, Base.metadata)
