"""Database engines, sessions and migrations.

Each service owns one database. By default it is a SQLite file in WAL mode;
any SQLAlchemy URL for PostgreSQL works as well. Alembic migrations bring the
schema up to date when the service starts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from splitlog_runtime import private_files

_LOGGER = logging.getLogger(__name__)


def _on_sqlite_connect(dbapi_connection, _record) -> None:
    # Leave BEGIN to the "begin" listener below instead of the sqlite3 module.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


READ_ONLY = "splitlog_read_only"

#: Seconds a new PostgreSQL connection may take before the attempt fails.
CONNECT_TIMEOUT_SECONDS = 5


def _on_sqlite_begin(connection) -> None:
    # A deferred transaction that reads and then writes fails at once with
    # "database is locked" when another writer committed in between. WAL
    # cannot upgrade its stale snapshot, and the busy timeout does not help.
    # Write transactions therefore take the write lock up front and queue on
    # the busy timeout instead. Read-only ones stay deferred and concurrent.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite files get WAL mode and mode 0600.

    A missing folder of a SQLite file is created with mode 0700. Error
    messages of the engine leave out the statement's parameters, because
    they are user data (descriptions, notes, emails) and errors get logged.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            private_files.private_sqlite_file(Path(parsed.database))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=8,
            max_overflow=16,
            hide_parameters=True,
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=16,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        hide_parameters=True,
    )


def safe_url(url: str) -> str:
    """Return the URL with any password hidden, for logs."""
    return make_url(normalise_url(url)).render_as_string(hide_password=True)


def upgrade(engine: Engine, migrations_dir: Path, version_table: str) -> None:
    """Run the Alembic migrations in migrations_dir up to head.

    Args:
      engine: the service's engine.
      migrations_dir: the folder holding env.py and versions/.
      version_table: the Alembic version table, one per service, so services
        can share a PostgreSQL database if an operator wants that.
    """
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["version_table"] = version_table
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def run_migrations(context, target_metadata) -> None:
    """Body of each service's migrations/env.py: migrate on the given connection."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=context.config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


class CommitOutcomeUnknown(sqlalchemy_exc.OperationalError):
    """The connection dropped while a write transaction's COMMIT was on its way.

    The server may have committed the transaction before the connection
    went, or not: nothing shows which. A caller must not report the write as
    failed and safe to repeat. The error interceptor tells the client so
    (`splitlog_runtime.interceptor`). It is an OperationalError, so code that
    handles a dropped connection still handles it.
    """

    def __init__(self, cause: sqlalchemy_exc.DBAPIError) -> None:
        super().__init__(
            cause.statement,
            cause.params,
            cause.orig,
            hide_parameters=cause.hide_parameters,
            connection_invalidated=True,
        )


def _lost_at_commit(exc: Exception) -> bool:
    """Return whether a COMMIT failed because the connection was lost."""
    return isinstance(exc, sqlalchemy_exc.DBAPIError) and exc.connection_invalidated


class Database:
    """An engine and its session factory, with one transaction per unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite runs one write transaction at a time, and a writer that finds
        # the lock taken polls for it with sleeps in the busy handler, so
        # waiting writers wake late and in no order. This process's writers
        # queue on a lock instead; other processes still wait on SQLite.
        self._write_lock = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, read_only: bool = False) -> Iterator[Session]:
        """Yield a session in a transaction that commits on success.

        Args:
          read_only: the unit of work only reads. On SQLite it then runs
            beside other readers and writers; a write transaction takes the
            database's write lock when it begins.

        Raises:
          CommitOutcomeUnknown: a write transaction's connection was lost
            while its COMMIT was sent, so it may be stored or not.
        """
        if read_only:
            with self._sessions.begin() as session:
                session.connection(execution_options={READ_ONLY: True})
                yield session
            return
        with self._write_lock, self._sessions() as session:
            session.begin()
            try:
                yield session
                # Everything but the COMMIT itself fails here, where the
                # outcome is known: nothing was stored.
                session.flush()
            except BaseException:
                session.rollback()
                raise
            try:
                session.commit()
            except sqlalchemy_exc.DBAPIError as exc:
                if _lost_at_commit(exc):
                    raise CommitOutcomeUnknown(exc) from exc
                raise

    def ping(self) -> bool:
        """Return whether the database runs a trivial query now.

        A connection that the server dropped is replaced by the pool's
        pre-ping, so this also shows whether the service can reconnect.
        """
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except Exception as exc:
            _LOGGER.debug("database check failed: %s", exc)
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()


def repeatable_read(session: Session) -> None:
    """Make the rest of a PostgreSQL transaction read one snapshot.

    At PostgreSQL's default level, each statement reads the commits made
    before it began, so a read of several statements can mix two states.
    A SQLite read transaction already reads one snapshot. Call this before
    the transaction's first statement.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
