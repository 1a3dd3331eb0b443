"""Start balance_service. Its API is defined; the logic arrives in a later version."""

from __future__ import annotations

from splitlog.balances.v1 import balances_service_pb2, balances_service_pb2_grpc
from splitlog_runtime.config import Config
from splitlog_runtime.placeholder import placeholder_servicer
from splitlog_runtime.server import ServiceHost
from splitlog_runtime.service import start_service

SERVICE = balances_service_pb2.DESCRIPTOR.services_by_name["BalancesService"]


def build(config: Config, address: str | None = None) -> ServiceHost:
    """Start the service and return its running host."""
    servicer = placeholder_servicer(
        balances_service_pb2_grpc.BalancesServiceServicer, SERVICE
    )
    return start_service(
        "balance_service",
        config,
        [
            lambda s: balances_service_pb2_grpc.add_BalancesServiceServicer_to_server(
                servicer, s
            )
        ],
        [SERVICE.full_name],
        address=address,
    )
