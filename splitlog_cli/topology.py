"""The components of splitlog and how they are wired together.

One description serves every way of running the system: `splitlog up
--processes` starts one child per component from it, and docker-compose.yml
declares one container per component with the same command, ports and
environment (a test checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from splitlog_runtime.config import SERVICES, SETTINGS_BY_NAME, Config


@dataclass(frozen=True)
class Component:
    """One separately runnable part of splitlog.

    Attributes:
      name: the component name, also the argument of `splitlog serve` and the
        Python package that contains its `app.build()`.
      port_settings: the settings naming the ports it listens on; the first is
        its gRPC port.
      peers: the services whose addresses it receives.
      depends_on: the components that must be healthy before it starts.
      has_database: whether it owns a database (`<name>_db_url`).
    """

    name: str
    port_settings: tuple[str, ...]
    peers: tuple[str, ...]
    depends_on: tuple[str, ...]
    has_database: bool
    node_id: str = ""
    node_port: int = 0

    @property
    def command(self) -> tuple[str, ...]:
        """Return the `splitlog` arguments that run this component."""
        return ("serve", LOG_NODE if self.node_id else self.name)

    @property
    def is_log_node(self) -> bool:
        return bool(self.node_id)

    @property
    def ships_logs(self) -> bool:
        """Whether it sends its own log records to log_service.

        The log router and the log nodes store logs, so shipping theirs would
        loop. The others ship when `log_self_ship` is on.
        """
        return not self.is_log_node and self.name != LOG_ROUTER

    @property
    def hostname(self) -> str:
        """Return the DNS-safe host name of its container (no underscores)."""
        return self.name.replace("_", "-")

    @property
    def grpc_port_setting(self) -> str:
        return self.port_settings[0]

    def grpc_port(self, config: Config) -> int:
        """Return the port of its gRPC server under the given settings."""
        if self.is_log_node:
            return self.node_port
        return getattr(config, self.grpc_port_setting)

    @property
    def setting_names(self) -> tuple[str, ...]:
        """Return the settings whose environment variables wire it up."""
        if self.is_log_node:
            return ("host", "log_node_id", "log_nodes")
        names = ["host", *self.port_settings]
        if self.has_database:
            names.append(f"{self.name}_db_url")
        names.extend(f"{peer}_addr" for peer in self.peers)
        if self.name == "log_service":
            names.append("log_nodes")
        return tuple(names)


LOG_NODE = "log_node"
LOG_ROUTER = "log_service"


def _service(name: str) -> Component:
    # Every service can reach every other one; channels connect lazily, so
    # the services need no start order among themselves.
    peers = tuple(other for other in SERVICES if other != name)
    has_database = f"{name}_db_url" in SETTINGS_BY_NAME
    return Component(name, (f"{name}_port",), peers, (), has_database=has_database)


GATEWAY = Component(
    "gateway",
    ("gateway_port", "http_port"),
    peers=SERVICES,
    depends_on=SERVICES,
    has_database=False,
)

COMPONENTS: tuple[Component, ...] = (*(_service(name) for name in SERVICES), GATEWAY)

COMPONENTS_BY_NAME = {component.name: component for component in COMPONENTS}


def log_node_components(config: Config) -> tuple[Component, ...]:
    """Return one component per log node of the configured topology.

    Raises:
      ValueError: the log topology settings do not parse.
    """
    # Imported here so that commands which never run log nodes skip it.
    from log_service.topology import topology_from_config

    nodes = []
    for node in topology_from_config(config).nodes:
        port = int(node.address.rpartition(":")[2])
        nodes.append(
            Component(
                f"{LOG_NODE}_{node.node_id}",
                (),
                (),
                (),
                has_database=False,
                node_id=node.node_id,
                node_port=port,
            )
        )
    return tuple(nodes)


def all_components(config: Config) -> tuple[Component, ...]:
    """Return every component that `splitlog up --processes` runs.

    The log router waits for the log nodes; everything else is as in
    COMPONENTS.

    Raises:
      ValueError: the log topology settings do not parse.
    """
    nodes = log_node_components(config)
    node_names = tuple(node.name for node in nodes)
    components = []
    for component in COMPONENTS:
        if component.name == "log_service":
            component = replace(component, depends_on=node_names)
        components.append(component)
    return (*nodes, *components)


def log_nodes_setting(
    config: Config, host_of: Callable[[str], str] | None = None
) -> str:
    """Render the log topology with the address each peer should dial.

    Args:
      host_of: maps a node component to the host name to dial; by default
        the loopback address of the host setting.
    """
    from log_service.topology import topology_from_config

    topology = topology_from_config(config)
    parts = []
    for shard in topology.shards:
        members = []
        for node in shard.nodes:
            port = int(node.address.rpartition(":")[2])
            host = host_of(node.node_id) if host_of else connect_host(config.host)
            members.append(f"{node.node_id}@{format_address(host, port)}")
        parts.append(f"{shard.shard}=" + ",".join(members))
    return ";".join(parts)


def connect_host(host: str) -> str:
    """Return the address to dial for a server bound to `host`.

    A server bound to every interface (`0.0.0.0`, `::` or empty) is reached
    over loopback.
    """
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def format_address(host: str, port: int) -> str:
    """Join host and port, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def grpc_address(component: Component, config: Config) -> str:
    """Return the loopback address of the component's gRPC port."""
    return format_address(connect_host(config.host), component.grpc_port(config))


def local_environment(component: Component, config: Config) -> dict[str, str]:
    """Return the `SPLITLOG_*` variables that wire a component on one machine.

    These are the same variables docker-compose.yml sets, with loopback
    addresses in place of container host names and the resolved database URL.
    """
    values: dict[str, str] = {}
    for name in component.setting_names:
        if name == "log_node_id":
            value = component.node_id
        elif name == "log_nodes":
            value = log_nodes_setting(config)
        elif name.endswith("_addr"):
            peer = COMPONENTS_BY_NAME[name.removesuffix("_addr")]
            value = getattr(config, name) or grpc_address(peer, config)
        elif name.endswith("_db_url"):
            value = config.database_url(name.removesuffix("_db_url"))
        else:
            value = str(getattr(config, name))
        values["SPLITLOG_" + name.upper()] = value
    return values
