"""Build the components in this process through their `app.build()` factories."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from splitlog_cli.errors import StartupError
from splitlog_cli.topology import GATEWAY, connect_host, format_address
from splitlog_runtime.config import SERVICES, Config
from splitlog_runtime.server import ServiceHost

_LOGGER = logging.getLogger(__name__)


def _load_build(component: str) -> Any:
    try:
        module = importlib.import_module(f"{component}.app")
    except ImportError as exc:
        raise StartupError(f"{component} is not available: {exc}") from exc
    return module.build


def start_service(name: str, config: Config) -> ServiceHost:
    """Start one service on its configured host and port; return its host.

    Raises:
      StartupError: the service cannot start; the cause is logged.
    """
    build = _load_build(name)
    try:
        return build(config)
    except Exception as exc:
        _LOGGER.exception("%s failed to start", name)
        raise StartupError(f"{name} failed to start: {exc}") from exc


async def start_gateway(config: Config) -> Any:
    """Start the gateway on its configured ports; return it (running).

    Raises:
      StartupError: the gateway cannot start; the cause is logged.
    """
    build = _load_build(GATEWAY.name)
    try:
        return await build(config)
    except Exception as exc:
        _LOGGER.exception("gateway failed to start")
        raise StartupError(f"gateway failed to start: {exc}") from exc


def with_bound_addresses(config: Config, hosts: dict[str, ServiceHost]) -> Config:
    """Point the gateway at the ports the services actually bound.

    Matters when a service port is 0 (any free port); explicit
    `<service>_addr` settings are kept.
    """
    changes = {}
    for name, host in hosts.items():
        if name in SERVICES and not getattr(config, f"{name}_addr"):
            changes[f"{name}_addr"] = format_address(
                connect_host(config.host), host.port
            )
    return config.replace(**changes)
