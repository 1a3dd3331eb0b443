"""Discovery of the public services from the generated protobuf modules.

Every `*_pb2` module under the `splitlog.<area>.v1` packages named in
`BACKEND_BY_PACKAGE` is imported, and each service its file declares becomes a
public service of the gateway unless its full name is in `INTERNAL_SERVICES`.
A new service therefore appears at the gateway once its code is generated,
without a change here.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from google.protobuf.descriptor import ServiceDescriptor

_LOGGER = logging.getLogger(__name__)

# Proto package of each public area, and the component that serves it.
BACKEND_BY_PACKAGE: dict[str, str] = {
    "splitlog.users.v1": "user_service",
    "splitlog.auth.v1": "user_service",
    "splitlog.expenses.v1": "expense_service",
    "splitlog.balances.v1": "balance_service",
    "splitlog.logs.v1": "log_service",
    # OTLP's log export, which the log router serves beside LogsService, so
    # that an OpenTelemetry exporter can send through the one public address.
    "opentelemetry.proto.collector.logs.v1": "log_service",
}

# Services that only the components call among themselves; never exposed.
INTERNAL_SERVICES: frozenset[str] = frozenset(
    {
        "splitlog.auth.v1.CredentialService",
        "splitlog.expenses.v1.LedgerService",
        "splitlog.logs.v1.LogNodeService",
        "splitlog.logs.v1.ReplicationService",
    }
)

GATEWAY_PACKAGE = "splitlog.gateway.v1"
GATEWAY_SERVICE = "splitlog.gateway.v1.GatewayService"


@dataclass(frozen=True)
class PublicService:
    """A service that the gateway forwards, with the component behind it."""

    descriptor: ServiceDescriptor
    backend: str

    @property
    def full_name(self) -> str:
        return self.descriptor.full_name


def _generated_modules(package: str, suffix: str) -> Iterator[ModuleType]:
    try:
        parent = importlib.import_module(package)
    except ModuleNotFoundError:
        _LOGGER.debug("no generated code for %s yet", package)
        return
    for info in sorted(pkgutil.iter_modules(parent.__path__), key=lambda m: m.name):
        if info.name.endswith(suffix):
            yield importlib.import_module(f"{package}.{info.name}")


def public_services() -> list[PublicService]:
    """Import the generated modules and return every public service, by name."""
    found: dict[str, PublicService] = {}
    for package, backend in BACKEND_BY_PACKAGE.items():
        for module in _generated_modules(package, "_pb2"):
            file = module.DESCRIPTOR
            if file.package != package:
                _LOGGER.warning(
                    "%s declares proto package %s, expected %s; its services "
                    "are not exposed",
                    file.name,
                    file.package,
                    package,
                )
                continue
            for descriptor in file.services_by_name.values():
                if descriptor.full_name not in INTERNAL_SERVICES:
                    found[descriptor.full_name] = PublicService(descriptor, backend)
    return [found[name] for name in sorted(found)]


def gateway_services() -> list[ServiceDescriptor]:
    """Import the gateway's own generated modules and return their services."""
    return [
        descriptor
        for module in _generated_modules(GATEWAY_PACKAGE, "_pb2")
        for descriptor in module.DESCRIPTOR.services_by_name.values()
    ]
