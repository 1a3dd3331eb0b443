"""Start expense_service. Its API is defined; the logic arrives in a later version."""

from __future__ import annotations

from splitlog.expenses.v1 import expenses_service_pb2, expenses_service_pb2_grpc
from splitlog_runtime.config import Config
from splitlog_runtime.placeholder import placeholder_servicer
from splitlog_runtime.server import ServiceHost
from splitlog_runtime.service import start_service

SERVICE = expenses_service_pb2.DESCRIPTOR.services_by_name["ExpensesService"]


def build(config: Config, address: str | None = None) -> ServiceHost:
    """Start the service and return its running host."""
    servicer = placeholder_servicer(
        expenses_service_pb2_grpc.ExpensesServiceServicer, SERVICE
    )
    return start_service(
        "expense_service",
        config,
        [
            lambda s: expenses_service_pb2_grpc.add_ExpensesServiceServicer_to_server(
                servicer, s
            )
        ],
        [SERVICE.full_name],
        address=address,
    )
