"""Start log_service's router. Its API is defined; the logic arrives later."""

from __future__ import annotations

from splitlog.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from splitlog_runtime.config import Config
from splitlog_runtime.placeholder import placeholder_servicer
from splitlog_runtime.server import ServiceHost
from splitlog_runtime.service import start_service

SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"]


def build(config: Config, address: str | None = None) -> ServiceHost:
    """Start the router and return its running host."""
    servicer = placeholder_servicer(logs_service_pb2_grpc.LogsServiceServicer, SERVICE)
    return start_service(
        "log_service",
        config,
        [
            lambda s: logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
                servicer, s
            )
        ],
        [SERVICE.full_name],
        address=address,
    )
