"""Check that the configured ports are free before anything starts."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from pathlib import Path

from splitlog_cli.errors import StartupError
from splitlog_cli.topology import Component, connect_host
from splitlog_runtime.config import SETTINGS_BY_NAME, Config

#: Linux's range of local ports for outgoing connections (and port-0 binds).
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Seconds that the connect probe waits for a listener to accept.
CONNECT_PROBE_SECONDS = 1.0


def _is_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # The gRPC servers and the gateway's HTTP socket set SO_REUSEADDR too,
        # so the TIME_WAIT sockets of connections that a server accepted count
        # as free. Linux rejects this bind and the servers' binds while a
        # socket without SO_REUSEADDR uses the port. Such a socket is one
        # bound without listening, the local end of an outgoing connection,
        # or such an end in TIME_WAIT for up to 60 s after it closed.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise StartupError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return False


def _is_listening(host: str, port: int) -> bool:
    """Return whether a server accepts connections on the port.

    Returns True when the probe neither connects nor is refused, as when a
    firewall drops it, because then a listener is the likelier cause.
    """
    try:
        with socket.create_connection(
            (connect_host(host), port), timeout=CONNECT_PROBE_SECONDS
        ):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return True


def ephemeral_port_range() -> tuple[int, int] | None:
    """Return Linux's range of local ports for outgoing connections, or None.

    None when the file cannot be read or parsed, as on other systems.
    """
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def busy_port_message(host: str, port: int, change: str) -> str:
    """Describe why `port` cannot be bound on `host`.

    `change` names the settings that move the port, as in
    "--gateway-port or SPLITLOG_GATEWAY_PORT".
    """
    if _is_listening(host, port):
        return (
            f"port {port} on {host} is already in use; stop the program using it "
            f"or choose another port with {change}"
        )
    message = (
        f"port {port} on {host} is taken by a socket that does not listen, such "
        "as the local end of an outgoing connection, which the kernel keeps in "
        "TIME_WAIT for up to 60 s after the connection closes; choose another "
        f"port with {change}"
    )
    ephemeral = ephemeral_port_range()
    if ephemeral is not None and ephemeral[0] <= port <= ephemeral[1]:
        message += (
            f". The port lies in the kernel's range for the local ports of "
            f"outgoing connections, {ephemeral[0]}-{ephemeral[1]} "
            f"(net.ipv4.ip_local_port_range, read from {EPHEMERAL_RANGE_FILE}), "
            "so choose ports outside that range, or reserve them with "
            f"`sysctl -w net.ipv4.ip_local_reserved_ports={port}`"
        )
    return message


def check_ports_free(config: Config, components: Iterable[Component]) -> None:
    """Raise StartupError naming the first configured port that is taken.

    Port 0 (any free port) is never checked.
    """
    for component in components:
        if component.is_log_node:
            port = component.node_port
            if port and _is_in_use(config.host, port):
                raise StartupError(
                    f"log node {component.node_id}: "
                    + busy_port_message(
                        config.host, port, "--log-node-port or --log-nodes"
                    )
                )
            continue
        for setting_name in component.port_settings:
            port = getattr(config, setting_name)
            if port and _is_in_use(config.host, port):
                setting = SETTINGS_BY_NAME[setting_name]
                raise StartupError(
                    f"{component.name}: "
                    + busy_port_message(
                        config.host, port, f"{setting.flag} or {setting.env}"
                    )
                )
