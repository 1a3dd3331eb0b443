"""Start-up, restart, shutdown, migrations and an unreachable user service."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import create_engine

from expense_service.app import build as build_expenses
from expense_service.storage import Base
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as pb_grpc
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog_runtime.database import normalise_url
from tests.expense_service.conftest import make_config, open_clients, start_pair
from tests.expense_service.support import (
    TIMEOUT,
    Group,
    backlog,
    create_expense,
    create_group,
    equal_expense,
    error_details,
    reason_of,
)
from tests.ports import closed_address

SERVICES = [
    "splitlog.expenses.v1.ExpensesService",
    "splitlog.expenses.v1.LedgerService",
]


@pytest.fixture
def config(tmp_path, db_url):
    return make_config(tmp_path / "data", db_url)


def test_health_and_reflection_list_both_services(config):
    with (
        start_pair(config) as (_, expenses),
        grpc.insecure_channel(f"127.0.0.1:{expenses.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        statuses = [
            health.Check(
                health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT
            ).status
            for name in SERVICES
        ]
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            timeout=TIMEOUT,
        )
        listed = [s.name for s in next(replies).list_services_response.service]

    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 2
    assert set(SERVICES) <= set(listed)


def test_user_service_down_is_unavailable(config):
    expenses = build_expenses(
        config.replace(user_service_addr=closed_address()), "127.0.0.1:0"
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{expenses.port}") as channel:
            stub = pb_grpc.ExpensesServiceStub(channel)
            group = Group("groups/offline", ["users/alice", "users/bobby"])
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateExpense(
                    pb.CreateExpenseRequest(
                        parent=group.name, expense=equal_expense(group)
                    ),
                    timeout=TIMEOUT,
                )
            listed = stub.ListExpenses(
                pb.ListExpensesRequest(parent=group.name), timeout=TIMEOUT
            )
    finally:
        expenses.stop(0)

    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(error) == "USER_SERVICE_UNAVAILABLE"
    assert error_details(error)["RetryInfo"].retry_delay.ToNanoseconds() > 0
    assert "user_service" in error.details()
    assert list(listed.expenses) == []


def test_data_and_sequence_survive_restart(config):
    with start_pair(config) as hosts, open_clients(*hosts) as clients:
        group = create_group(clients.users, size=2)
        first = create_expense(clients, group)
    with start_pair(config) as hosts, open_clients(*hosts) as clients:
        stored = clients.expenses.GetExpense(
            pb.GetExpenseRequest(name=first.name), timeout=TIMEOUT
        ).expense
        group = create_group(clients.users, size=2)
        second = create_expense(clients, group)
        events = backlog(clients)

    assert stored == first
    assert [(e.sequence, e.expense) for e in events] == [
        (1, first.name),
        (2, second.name),
    ]


def test_stop_ends_ledger_streams_promptly(config):
    with (
        start_pair(config) as (users, expenses),
        open_clients(users, expenses) as clients,
    ):
        group = create_group(clients.users, size=2)
        create_expense(clients, group)
        stream = clients.ledger.StreamLedgerEvents(
            ledger_pb.StreamLedgerEventsRequest(), timeout=30
        )
        outcome = {}

        def consume():
            try:
                for _ in stream:
                    outcome.setdefault("first", time.monotonic())
            except grpc.RpcError as error:
                outcome["error"] = error

        reader = threading.Thread(target=consume)
        reader.start()
        while "first" not in outcome:
            time.sleep(0.01)
        started = time.monotonic()
        expenses.stop(5)
        stopped = time.monotonic() - started
        reader.join(TIMEOUT)

    assert stopped < 2
    assert outcome["error"].code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(outcome["error"]) == "SERVER_STOPPING"


def test_migrations_match_models(config, db_url):
    with start_pair(config):
        pass
    engine = create_engine(normalise_url(db_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()

    # Alembic's own version table is not part of the models.
    assert [d for d in differences if "alembic_version" not in str(d)] == []
