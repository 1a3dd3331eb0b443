"""The components of splitlog and how they are wired together.

One description serves every way of running the system: `splitlog up
--processes` starts one child per component from it, and docker-compose.yml
declares one container per component with the same command, ports and
environment (a test checks that the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from splitlog_runtime.config import SERVICES, Config


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

    @property
    def command(self) -> tuple[str, ...]:
        """Return the `splitlog` arguments that run this component."""
        return ("serve", self.name)

    @property
    def hostname(self) -> str:
        """Return the DNS-safe host name of its container (no underscores)."""
        return self.name.replace("_", "-")

    @property
    def grpc_port_setting(self) -> str:
        return self.port_settings[0]

    @property
    def setting_names(self) -> tuple[str, ...]:
        """Return the settings whose environment variables wire it up."""
        names = ["host", *self.port_settings]
        if self.has_database:
            names.append(f"{self.name}_db_url")
        names.extend(f"{peer}_addr" for peer in self.peers)
        return tuple(names)


def _service(name: str) -> Component:
    # Every service can reach every other one; channels connect lazily, so
    # the services need no start order among themselves.
    peers = tuple(other for other in SERVICES if other != name)
    return Component(name, (f"{name}_port",), peers, (), has_database=True)


GATEWAY = Component(
    "gateway",
    ("gateway_port", "http_port"),
    peers=SERVICES,
    depends_on=SERVICES,
    has_database=False,
)

COMPONENTS: tuple[Component, ...] = (*(_service(name) for name in SERVICES), GATEWAY)

COMPONENTS_BY_NAME = {component.name: component for component in COMPONENTS}


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
    port = getattr(config, component.grpc_port_setting)
    return format_address(connect_host(config.host), port)


def local_environment(component: Component, config: Config) -> dict[str, str]:
    """Return the `SPLITLOG_*` variables that wire a component on one machine.

    These are the same variables docker-compose.yml sets, with loopback
    addresses in place of container host names and the resolved database URL.
    """
    values: dict[str, str] = {}
    for name in component.setting_names:
        if name.endswith("_addr"):
            peer = COMPONENTS_BY_NAME[name.removesuffix("_addr")]
            value = getattr(config, name) or grpc_address(peer, config)
        elif name.endswith("_db_url"):
            value = config.database_url(name.removesuffix("_db_url"))
        else:
            value = str(getattr(config, name))
        values["SPLITLOG_" + name.upper()] = value
    return values
