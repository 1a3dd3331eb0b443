"""`splitlog serve COMPONENT`: one component in the foreground.

This is what each container runs, and what `splitlog up --processes` starts
for every child.
"""

from __future__ import annotations

import asyncio
import os

from splitlog_cli import components
from splitlog_cli.console import address_rows, print_ready
from splitlog_cli.errors import StartupError
from splitlog_cli.ports import check_ports_free
from splitlog_cli.signals import SUPERVISOR_PID_ENV, StopSignals, watch_supervisor
from splitlog_cli.topology import (
    COMPONENTS_BY_NAME,
    GATEWAY,
    LOG_NODE,
    Component,
    log_node_components,
)
from splitlog_runtime import aio, logsetup
from splitlog_runtime.config import Config
from splitlog_runtime.private_files import restrict_new_files


def run(name: str, config: Config) -> int:
    """Serve one component until a stop signal; return the exit status.

    Raises:
      StartupError: its port is taken or it failed to start.
    """
    restrict_new_files()
    signals = StopSignals()
    signals.install()
    watch_supervisor(signals)
    if name == LOG_NODE:
        component = _log_node_component(config)
    else:
        component = COMPONENTS_BY_NAME[name]
    check_ports_free(config, [component])
    if name == GATEWAY.name:
        return aio.run(_serve_gateway(config, signals))
    # The shipper starts before the component, so that its startup records
    # wait in the shipper's queue until the log router accepts calls.
    shipper = None
    if component.ships_logs:
        shipper = logsetup.start_self_ship(config, name)
    try:
        _serve_service(name, config, component, signals)
    finally:
        logsetup.stop_self_ship(shipper, timeout=logsetup.SHIP_FLUSH_SECONDS)
    return 0


def _serve_service(
    name: str, config: Config, component: Component, signals: StopSignals
) -> None:
    if name == LOG_NODE:
        host = components.start_log_node(config)
    else:
        host = components.start_service(name, config)
    try:
        _announce(config, {component.name: host.port})
        while not signals.wait(timeout=1.0):
            pass
    finally:
        host.stop(config.grace_seconds, signals.reason or "startup interrupted")


async def _serve_gateway(config: Config, signals: StopSignals) -> int:
    stop_requested = signals.attach(asyncio.get_running_loop())
    # Started first, so that the gateway's startup records are shipped too.
    shipper = logsetup.start_self_ship(config, GATEWAY.name)
    try:
        gateway = await components.start_gateway(config)
        try:
            ports = {"gateway": gateway.grpc_port, "http": gateway.http_port}
            _announce(config, ports)
            await stop_requested.wait()
        finally:
            await gateway.stop(config.grace_seconds)
    finally:
        await asyncio.to_thread(
            logsetup.stop_self_ship, shipper, logsetup.SHIP_FLUSH_SECONDS
        )
    return 0


def _log_node_component(config: Config) -> Component:
    try:
        nodes = log_node_components(config)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    for node in nodes:
        if node.node_id == config.log_node_id:
            return node
    known = ", ".join(node.node_id for node in nodes)
    raise StartupError(
        f"log node id {config.log_node_id!r} is not in the log topology; set "
        f"--log-node-id (SPLITLOG_LOG_NODE_ID) to one of: {known}"
    )


def _announce(config: Config, ports: dict[str, int]) -> None:
    # Under a supervisor the parent prints one block for all its children.
    if not os.environ.get(SUPERVISOR_PID_ENV):
        print_ready(address_rows(config, ports))
