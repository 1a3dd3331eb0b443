"""A balance service per test module and backend, with its real peers.

Each module gets a user service (SQLite), a `LedgerPeer` standing in for
expense_service's ledger feed, and a balance service on a SQLite file and
then on a fresh PostgreSQL database. Tests keep apart by using fresh groups.
Tests that restart the service use `start_services` with the function-scoped
`db_url` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from splitlog_runtime import config as config_module
from splitlog_runtime.server import ServiceHost
from tests.balance_service.support import LedgerPeer, Services, start_balances
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


@pytest.fixture(scope="module")
def services(module_db_url, users_host, tmp_path_factory) -> Iterator[Services]:
    peer = LedgerPeer()
    running = start_balances(
        module_db_url, users_host.port, peer, tmp_path_factory.mktemp("data")
    )
    yield running
    running.close()
    peer.stop()
