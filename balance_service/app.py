"""Wiring of the balance service: its database, servicer, ledger consumer and server."""

from __future__ import annotations

from pathlib import Path

from balance_service.fence import LedgerFence
from balance_service.ledger import LedgerConsumer
from balance_service.members import UserDirectory
from balance_service.servicer import SERVICE_NAME, BalancesServicer
from splitlog.balances.v1 import balances_service_pb2_grpc
from splitlog_runtime.config import Config
from splitlog_runtime.database import Database
from splitlog_runtime.server import ServiceHost
from splitlog_runtime.service import start_service

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def build(config: Config, address: str | None = None) -> ServiceHost:
    """Start the balance service and return its host once it reports SERVING.

    The ledger consumer starts after the migrations and keeps retrying while
    expense_service is unreachable, so the service starts without it. It
    reopens a stream that brings neither events nor heartbeats, and health
    turns NOT_SERVING if its thread ever ends. The
    host's stop ends the consumer before the database is disposed.

    Args:
      config: resolved settings; `config.database_url("balance_service")`
        picks the database, and `service_address("expense_service")` and
        `service_address("user_service")` the peers.
      address: host:port to bind; defaults to the configured host and port.
    """
    database = Database(config.database_url("balance_service"))
    directory = UserDirectory(
        config.service_address("user_service"),
        config.deadline_seconds,
        config.max_message_bytes,
    )
    fence = LedgerFence(
        database, config.service_address("expense_service"), config.max_message_bytes
    )
    servicer = BalancesServicer(database, directory, fence, config.deadline_seconds)
    try:
        host = start_service(
            "balance_service",
            config,
            [
                lambda server: (
                    balances_service_pb2_grpc.add_BalancesServiceServicer_to_server(
                        servicer, server
                    )
                )
            ],
            [SERVICE_NAME],
            address=address,
            database=database,
            migrations_dir=MIGRATIONS_DIR,
        )
    except Exception:
        # start_service disposes the database only once the server is up.
        database.dispose()
        directory.close()
        fence.close()
        raise
    host.on_stop(directory.close)
    host.on_stop(fence.close)
    consumer = LedgerConsumer(
        database,
        config.service_address("expense_service"),
        max_message_bytes=config.max_message_bytes,
        on_applied=fence.notify_applied,
        # Balances that stop following the ledger are not fit to serve.
        on_failed=host.mark_not_serving,
        # The error of a check that times out behind such events names them.
        on_problem=fence.report_problem,
    )
    # Closers run in reverse order, so the consumer stops before the
    # database is disposed.
    host.on_stop(consumer.stop)
    consumer.start()
    return host
