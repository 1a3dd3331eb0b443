"""Check that the configured ports are free before anything starts."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from splitlog_cli.errors import StartupError
from splitlog_cli.topology import Component
from splitlog_runtime.config import SETTINGS_BY_NAME, Config


def port_in_use_message(host: str, port: int, setting_name: str) -> str:
    """Describe a busy port and the setting that moves it."""
    setting = SETTINGS_BY_NAME[setting_name]
    return (
        f"port {port} on {host} is already in use; stop the program using it or "
        f"choose another port with {setting.flag} or {setting.env}"
    )


def _is_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # The gRPC servers and the gateway's HTTP socket set SO_REUSEADDR too,
        # so a port whose old connections linger in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise StartupError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return False


def check_ports_free(config: Config, components: Iterable[Component]) -> None:
    """Raise StartupError naming the first configured port that is taken.

    Port 0 (any free port) is never checked.
    """
    for component in components:
        if component.is_log_node:
            port = component.node_port
            if port and _is_in_use(config.host, port):
                raise StartupError(
                    f"log node {component.node_id}: port {port} on {config.host} "
                    "is in use; stop what holds it or choose other ports with "
                    "--log-node-port or --log-nodes"
                )
            continue
        for setting_name in component.port_settings:
            port = getattr(config, setting_name)
            if port and _is_in_use(config.host, port):
                raise StartupError(
                    f"{component.name}: "
                    + port_in_use_message(config.host, port, setting_name)
                )
