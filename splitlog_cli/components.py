"""Build the components in this process through their `app.build()` factories."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from splitlog_cli.errors import StartupError
from splitlog_cli.topology import GATEWAY, connect_host, format_address
from splitlog_runtime.config import SERVICES, Config, SettingsError
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
      StartupError: the service cannot start. The message of a
        `SettingsError` names the setting and the fix, so it goes into the
        StartupError alone. Any other cause is logged with its traceback.
    """
    build = _load_build(name)
    try:
        return build(config)
    except SettingsError as exc:
        raise StartupError(f"{name} failed to start: {exc}") from None
    except Exception as exc:
        _LOGGER.exception("%s failed to start", name)
        raise StartupError(f"{name} failed to start: {exc}") from exc


def _log_topology(config: Config):
    from log_service.topology import topology_from_config

    try:
        return topology_from_config(config)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def _build_log_node(config: Config, node) -> ServiceHost:
    """Start one node on the host setting and the port the topology gives it."""
    from log_service.node import build_node

    port = int(node.address.rpartition(":")[2])
    try:
        return build_node(
            config, node.node_id, node.shard, address=format_address(config.host, port)
        )
    except Exception as exc:
        _LOGGER.exception("log node %s failed to start", node.node_id)
        raise StartupError(f"log node {node.node_id} failed to start: {exc}") from exc


def start_log_node(config: Config) -> ServiceHost:
    """Start the log node named by the log_node_id setting; return its host.

    Raises:
      StartupError: the node id is unknown or the node cannot start.
    """
    for node in _log_topology(config).nodes:
        if node.node_id == config.log_node_id:
            return _build_log_node(config, node)
    raise StartupError(
        f"log node id {config.log_node_id!r} is not in the log topology; set "
        "--log-node-id to one of the nodes of --log-nodes"
    )


def start_log_nodes(config: Config, hosts: dict[str, ServiceHost]) -> Config:
    """Start every log node of the topology in this process.

    Each node gets its own gRPC server, so the router still reaches it over
    gRPC. `hosts` receives the running hosts by node id as they start, so a
    caller can stop them even when a later one fails.

    Returns:
      The settings with `log_nodes` naming the ports the nodes bound, which
      differ from the configured ones when those are 0.

    Raises:
      StartupError: the topology does not parse or a node cannot start.
    """
    parts = []
    for shard in _log_topology(config).shards:
        members = []
        for node in shard.nodes:
            host = hosts[node.node_id] = _build_log_node(config, node)
            address = format_address(connect_host(config.host), host.port)
            members.append(f"{node.node_id}@{address}")
        parts.append(f"{shard.shard}=" + ",".join(members))
    return config.replace(log_nodes=";".join(parts))


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
