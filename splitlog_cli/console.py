"""The address block that `splitlog up` and `splitlog serve` print on start."""

from __future__ import annotations

from pathlib import Path

from splitlog_cli.topology import format_address
from splitlog_runtime.config import SERVICES, Config

READY_LINE = "splitlog is ready; press Ctrl-C to stop"


def address_rows(
    config: Config, ports: dict[str, int], pids: dict[str, int] | None = None
) -> list[tuple[str, str]]:
    """Return (label, address) rows for the components in `ports`.

    Args:
      config: resolved settings; supplies the host.
      ports: bound port per component name; the gateway's key `gateway` is
        its gRPC port and `http` its REST port.
      pids: process id per component, shown when components run as children.
    """
    pids = pids or {}
    entries = []
    if "gateway" in ports:
        address = format_address(config.host, ports["gateway"])
        entries.append(("gateway", "gateway (gRPC)", address))
    if "http" in ports:
        address = format_address(config.host, ports["http"])
        scheme = "https" if config.tls_cert_file else "http"
        entries.append(("gateway", "gateway (REST)", f"{scheme}://{address}"))
    for name in SERVICES:
        if name in ports:
            entries.append((name, name, format_address(config.host, ports[name])))
    for name in sorted(ports):
        if name.startswith("log_node_"):
            label = "log node " + name.removeprefix("log_node_")
            entries.append((name, label, format_address(config.host, ports[name])))
    rows = []
    for component, label, value in entries:
        if component in pids:
            value = f"{value}  (pid {pids[component]})"
        rows.append((label, value))
    if any(name in ports for name in SERVICES):
        rows.append(("data directory", str(Path(config.data_dir).resolve())))
    return rows


def print_ready(rows: list[tuple[str, str]]) -> None:
    """Print the address block and the ready line, flushed at once."""
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print(READY_LINE, flush=True)
