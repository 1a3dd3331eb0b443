"""A balance service per test module and backend, with its real peers.

Each module gets a user service (SQLite), a `LedgerPeer` standing in for
expense_service's ledger feed, and a balance service on a SQLite file and
then on a fresh PostgreSQL database. Tests keep apart by using fresh groups.
Tests that restart the service use `start_services` with the function-scoped
`db_url` fixture.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from splitlog_runtime import config as config_module
from splitlog_runtime.server import ServiceHost
from tests.balance_service.support import LedgerPeer, Services, start_balances
from tests.conftest import POSTGRES_ADMIN_URL
from user_service.app import build as build_users
from user_service.guards import AllowAllBalanceGuard


@pytest.fixture(scope="module")
def users_host(tmp_path_factory) -> Iterator[ServiceHost]:
    """A user service that allows every removal; balances are not its topic here."""
    data = tmp_path_factory.mktemp("users")
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": data,
            "user_service_db_url": f"sqlite:///{data / 'users.db'}",
            "workers": 8,
        },
    )
    host = build_users(config, "127.0.0.1:0", guard=AllowAllBalanceGuard())
    yield host
    host.stop(0)


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def module_db_url(request, tmp_path_factory):
    """A database for one module: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('balances') / 'balances.db'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    name = f"splitlog_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def services(module_db_url, users_host, tmp_path_factory) -> Iterator[Services]:
    peer = LedgerPeer()
    running = start_balances(
        module_db_url, users_host.port, peer, tmp_path_factory.mktemp("data")
    )
    yield running
    running.close()
    peer.stop()
