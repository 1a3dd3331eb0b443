"""`splitlog up`: every component in this one process.

Each sync service runs its own gRPC server, with its own port and handler
threads. The gateway runs in an asyncio loop in the main thread. Unless
`gateway_inprocess` is off, it calls the services' unary methods directly
rather than over loopback gRPC. On SIGTERM or SIGINT the gateway stops first,
then the other services, then the log shipper of the process sends what it
has queued, and the log router and the log nodes stop last, each within the
grace period.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from splitlog_cli import components
from splitlog_cli.console import address_rows, print_ready
from splitlog_cli.errors import StartupError
from splitlog_cli.ports import check_ports_free
from splitlog_cli.signals import StopSignals
from splitlog_cli.topology import LOG_ROUTER, all_components
from splitlog_runtime import aio, logsetup
from splitlog_runtime.config import SERVICES, Config
from splitlog_runtime.private_files import restrict_new_files
from splitlog_runtime.server import ServiceHost

_LOGGER = logging.getLogger(__name__)


# Every component shares one interpreter lock in this process, and a thread
# that gives it up (for SQLite, a socket, a random read) may wait a whole
# switch interval to get it back. Python's default of 5 ms put 17 ms at p50 on
# a single CreateExpense through the gateway; 0.2 ms gave 10 ms
# (`python -m bench.expenses --clients 1`, 2 cores).
SWITCH_INTERVAL_SECONDS = 0.0002


def run(config: Config) -> int:
    """Run the whole system until a stop signal; return the exit status.

    Raises:
      StartupError: a port is taken or a component failed to start; whatever
        had started is stopped first.
    """
    restrict_new_files()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    signals = StopSignals()
    signals.install()
    try:
        check_ports_free(config, all_components(config))
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    hosts: dict[str, ServiceHost] = {}
    node_hosts: dict[str, ServiceHost] = {}
    shipper = None
    try:
        # The shipper is attached first, so that the startup records wait in
        # its queue until the log router, started below, accepts calls.
        shipper = logsetup.start_self_ship(
            config, logsetup.LAUNCHER_SERVICE, by_logger=True, send=False
        )
        # The log nodes come first so that the log router finds them.
        config = components.start_log_nodes(config, node_hosts)
        for name in SERVICES:
            if signals.requested:
                return 0
            hosts[name] = components.start_service(name, config)
        if signals.requested:
            return 0
        if shipper is not None:
            shipper.start_sending()
        node_ports = {
            f"log_node_{node_id}": host.port for node_id, host in node_hosts.items()
        }
        return aio.run(_run_gateway(config, hosts, node_ports, signals))
    finally:
        # Stops what the gateway coroutine did not: the log router, once the
        # shipper has sent its queue, or everything after a startup failure.
        # `ServiceHost.stop` returns at once for a host already stopped.
        signals.install()
        reason = signals.reason or "startup failed"
        logsetup.stop_self_ship(shipper, timeout=logsetup.SHIP_FLUSH_SECONDS)
        _stop_services(hosts, config.grace_seconds, reason)
        _stop_services(node_hosts, config.grace_seconds, reason)


async def _run_gateway(
    config: Config,
    hosts: dict[str, ServiceHost],
    node_ports: dict[str, int],
    signals: StopSignals,
) -> int:
    stop_requested = signals.attach(asyncio.get_running_loop())
    gateway = await components.start_gateway(
        components.with_bound_addresses(config, hosts)
    )
    if config.gateway_inprocess:
        # Imported here, as the components are, so other commands skip it.
        from gateway import inprocess

        inprocess.install(gateway.pool, hosts, config)
    try:
        ports = {name: host.port for name, host in hosts.items()}
        ports.update(node_ports, gateway=gateway.grpc_port, http=gateway.http_port)
        print_ready(address_rows(config, ports))
        await stop_requested.wait()
    finally:
        _LOGGER.info(
            "stopping the gateway, then the services, then the log router and "
            "the log nodes"
        )
        await gateway.stop(config.grace_seconds)
        # The log router stops in `run`, after the shipper has sent the
        # records of these stops.
        shipping = {name: host for name, host in hosts.items() if name != LOG_ROUTER}
        await asyncio.to_thread(
            _stop_services, shipping, config.grace_seconds, signals.reason
        )
    return 0


def _stop_services(hosts: dict[str, ServiceHost], grace: float, reason: str) -> None:
    """Stop the services in parallel, each with the full grace period."""
    if not hosts:
        return
    with ThreadPoolExecutor(len(hosts), thread_name_prefix="stop") as pool:
        list(pool.map(lambda host: host.stop(grace, reason), hosts.values()))
