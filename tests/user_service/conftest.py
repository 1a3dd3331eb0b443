"""A user service per test module and backend, shared by the module's tests.

Tests that share a server keep apart by using fresh emails and ids. Tests
that need a server of their own (restarts, a refusing guard) use the
function-scoped `db_url` fixture instead.
"""

from __future__ import annotations

import pytest

from balance_service.app import build as build_balances
from splitlog_runtime import config as config_module
from tests.balance_service.support import LedgerPeer
from tests.ports import closed_address
from tests.user_service.support import open_stub
from user_service.app import build


@pytest.fixture(scope="module")
def balances_host(tmp_path_factory):
    """A real balance service for the guard, with no expenses to read.

    An empty `LedgerPeer` replaces expense_service, because CheckSettled
    requests the ledger position from it. The user_service address leads nowhere,
    because CheckSettled does not call it.
    """
    data = tmp_path_factory.mktemp("balances")
    peer = LedgerPeer()
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": data,
            "expense_service_addr": peer.address,
            "user_service_addr": closed_address(),
            "workers": 4,
        },
    )
    host = build_balances(config, "127.0.0.1:0")
    yield host
    host.stop(0)
    peer.stop()


@pytest.fixture(scope="module")
def users_host(module_db_url, balances_host, tmp_path_factory):
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("data"),
            "user_service_db_url": module_db_url,
            "balance_service_addr": f"127.0.0.1:{balances_host.port}",
            "workers": 8,
        },
    )
    host = build(config, "127.0.0.1:0")
    yield host
    host.stop(0)


@pytest.fixture(scope="module")
def stub(users_host):
    channel, users_stub = open_stub(users_host.port)
    yield users_stub
    channel.close()
