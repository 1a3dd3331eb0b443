"""Fixtures shared by every test: databases, data paths and settings."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, text

from splitlog_runtime import config as config_module
from tests.loop_thread import LoopThread
from tests.ports import closed_address

POSTGRES_ADMIN_URL = os.environ.get(
    "SPLITLOG_TEST_POSTGRES_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
)
REQUIRE_POSTGRES = os.environ.get("SPLITLOG_REQUIRE_POSTGRES") == "1"
SHARED_DATA = Path(
    os.environ.get(
        "SPLITLOG_SHARED_DATA",
        Path(__file__).resolve().parent.parent.parent / "shared" / "data",
    )
)


def pytest_configure(config) -> None:
    # `splitlog logs ship` records positions, and `auth signin` sessions,
    # under $XDG_CONFIG_HOME/splitlog. Keep them out of the user's home, in
    # a folder of this run, unless a test sets its own folder.
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="splitlog-tests-config-")
    # A shell starts a background job with SIGINT ignored, and a child keeps
    # an ignored signal across exec. Tests that press Ctrl-C on a command
    # they start need the child to see SIGINT, so catch it here: a caught
    # signal goes back to its default in the child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_alembic(
    engine, migrations_dir: Path, version_table: str, command_name: str, revision: str
) -> None:
    """Run one Alembic command, such as downgrade to 0001, on some migrations."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["version_table"] = version_table
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(alembic_command, command_name)(config, revision)


def _postgres_admin_engine():
    engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        message = (
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} "
            f"({exc.__class__.__name__}); start it or set SPLITLOG_TEST_POSTGRES_URL"
        )
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (SPLITLOG_REQUIRE_POSTGRES=1 makes this an error)")
        pytest.skip(message)
    return engine


@pytest.fixture(scope="session")
def postgres_admin():
    """An AUTOCOMMIT engine on the PostgreSQL server, or a skip when it is down."""
    engine = _postgres_admin_engine()
    yield engine
    engine.dispose()


@contextlib.contextmanager
def new_postgres_database(admin) -> Iterator[str]:
    """Create an empty PostgreSQL database with the `postgres_admin` engine;
    yield its URL, and drop it afterwards."""
    name = f"splitlog_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_admin) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    with new_postgres_database(postgres_admin) as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    """A fresh database URL: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request, tmp_path_factory) -> Iterator[str]:
    """A database for one module: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('module-db') / 'service.db'}"
        return
    with new_postgres_database(request.getfixturevalue("postgres_admin")) as url:
        yield url


@pytest.fixture
def base_config(tmp_path):
    """Settings for in-process tests: loopback, port 0, data in tmp_path.

    Each peer address is a closed port, so a service whose test starts no
    peer never reaches a system that runs on the default ports.
    """
    peers = {f"{name}_addr": closed_address() for name in PEER_SERVICES}
    return config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path / "data",
            "grace_seconds": 1.0,
            "workers": 8,
            **peers,
        },
    )


PEER_SERVICES = ("user_service", "expense_service", "balance_service", "log_service")


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    """An asyncio loop in a thread, shared by the tests of one module, on
    which they run the gateway."""
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, or a skip that names the path and the variable."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared data not found at {SHARED_DATA}; set SPLITLOG_SHARED_DATA to "
            "the folder that holds splitwise/ and logs/"
        )
    return SHARED_DATA
