"""Wiring of the expense service: its database, servicers, user_service client
and server."""

from __future__ import annotations

from pathlib import Path

from expense_service import ledger
from expense_service.membership import MembershipClient
from expense_service.servicer import SERVICE_NAME, ExpensesServicer
from splitlog.expenses.v1 import expenses_service_pb2_grpc, ledger_service_pb2_grpc
from splitlog_runtime.config import Config
from splitlog_runtime.database import Database
from splitlog_runtime.fencing import GroupWrites
from splitlog_runtime.server import ServiceHost
from splitlog_runtime.service import start_service

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def build(config: Config, address: str | None = None) -> ServiceHost:
    """Start the expense service and return its host once it reports SERVING.

    The host serves ExpensesService and the internal LedgerService. Stopping
    it first ends the open ledger streams, so that they do not hold the
    graceful shutdown for its whole grace period.

    Args:
      config: resolved settings; `config.database_url("expense_service")`
        picks the database and `config.service_address("user_service")` the
        user service that checks group membership.
      address: host:port to bind; defaults to the configured host and port.
    """
    database = Database(config.database_url("expense_service"))
    membership = MembershipClient(
        config.service_address("user_service"), config.deadline_seconds
    )
    feed = ledger.LedgerFeed()
    writes = GroupWrites()
    expenses = ExpensesServicer(
        database, membership, feed, writes, config.max_message_bytes
    )
    ledger_servicer = ledger.LedgerServicer(
        database,
        feed,
        membership,
        writes,
        config.deadline_seconds,
        max_message_bytes=config.max_message_bytes,
    )
    try:
        host = start_service(
            "expense_service",
            config,
            [
                lambda server: (
                    expenses_service_pb2_grpc.add_ExpensesServiceServicer_to_server(
                        expenses, server
                    )
                ),
                lambda server: (
                    ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server(
                        ledger_servicer, server
                    )
                ),
            ],
            [SERVICE_NAME, ledger.SERVICE_NAME],
            address=address,
            database=database,
            migrations_dir=MIGRATIONS_DIR,
        )
    except Exception:
        # start_service disposes the database only once the server is up.
        membership.close()
        database.dispose()
        raise
    host.on_stop(membership.close)
    _end_streams_before_stop(host, feed)
    return host


def _end_streams_before_stop(host: ServiceHost, feed: ledger.LedgerFeed) -> None:
    """Make `host.stop` end the ledger streams before it waits for RPCs.

    `ServiceHost.stop` waits up to its grace period for running RPCs, and a
    ledger stream runs until its client leaves, so the streams must end first.
    """
    # NOTE: ServiceHost has no hook that runs before the server stops, so the
    # bound method is wrapped on this instance.
    stop = host.stop

    def stop_after_closing_streams(grace: float, reason: str = "stop requested"):
        feed.close()
        stop(grace, reason)

    host.stop = stop_after_closing_streams
