"""An expense service and its user service per test module and backend.

The expense service runs on a SQLite file, then on a fresh PostgreSQL
database, and checks membership against a real user service on SQLite.
Tests that share the servers keep apart by creating their own users and
groups. Tests that need servers of their own build them with `start_pair`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from expense_service.app import build as build_expenses
from splitlog.expenses.v1 import expenses_service_pb2_grpc as pb_grpc
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.config import Config
from splitlog_runtime.server import ServiceHost
from tests.expense_service.support import Clients
from user_service.app import build as build_users
from user_service.guards import AllowAllBalanceGuard


def make_config(data_dir, expenses_db_url: str) -> Config:
    return config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": data_dir,
            "expense_service_db_url": expenses_db_url,
            "workers": 8,
            "grace_seconds": 1.0,
            "deadline_seconds": 5.0,
        },
    )


@contextmanager
def start_pair(config: Config) -> Iterator[tuple[ServiceHost, ServiceHost]]:
    """Run a user service and an expense service that checks members with it."""
    # No balance_service runs here, so members may always leave their groups.
    users = build_users(config, "127.0.0.1:0", guard=AllowAllBalanceGuard())
    try:
        wired = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
        expenses = build_expenses(wired, "127.0.0.1:0")
        try:
            yield users, expenses
        finally:
            expenses.stop(0)
    finally:
        users.stop(0)


@contextmanager
def open_clients(users: ServiceHost, expenses: ServiceHost) -> Iterator[Clients]:
    with (
        grpc.insecure_channel(f"127.0.0.1:{expenses.port}") as expense_channel,
        grpc.insecure_channel(f"127.0.0.1:{users.port}") as user_channel,
    ):
        yield Clients(
            expenses=pb_grpc.ExpensesServiceStub(expense_channel),
            ledger=ledger_grpc.LedgerServiceStub(expense_channel),
            users=users_grpc.UsersServiceStub(user_channel),
        )


@pytest.fixture(scope="module")
def hosts(module_db_url, tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("data"), module_db_url)
    with start_pair(config) as pair:
        yield pair


@pytest.fixture(scope="module")
def clients(hosts) -> Iterator[Clients]:
    with open_clients(*hosts) as opened:
        yield opened
