"""The log cluster's topology: its shards and the nodes of each.

`Topology` lists the shards and their nodes, from the `log_nodes` setting or
derived from `log_shards`, `log_replicas` and `log_node_port`. The first node
of each shard is its initial leader. The module imports no NumPy, so that
every `splitlog` command checks these settings without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitlog_runtime.config import Config

_REPLICA_SUFFIXES = "abcdefghijklmnopqrstuvwxyz"
#: Maximum nodes per shard in the default topology, one per suffix letter.
MAX_REPLICAS = len(_REPLICA_SUFFIXES)


@dataclass(frozen=True)
class NodeSpec:
    """One log node: its id, the shard it stores and its gRPC address."""

    node_id: str
    shard: str
    address: str


@dataclass(frozen=True)
class ShardSpec:
    """One shard and its nodes; the first node is the initial leader."""

    shard: str
    nodes: tuple[NodeSpec, ...]


@dataclass(frozen=True)
class Topology:
    """Every shard of the cluster, in the order the configuration lists them."""

    shards: tuple[ShardSpec, ...]

    @property
    def shard_ids(self) -> list[str]:
        return [spec.shard for spec in self.shards]

    @property
    def nodes(self) -> list[NodeSpec]:
        return [node for spec in self.shards for node in spec.nodes]

    def shard(self, shard_id: str) -> ShardSpec:
        """Return one shard.

        Raises:
          KeyError: the topology has no such shard.
        """
        for spec in self.shards:
            if spec.shard == shard_id:
                return spec
        raise KeyError(shard_id)

    def to_setting(self) -> str:
        """Render the topology in the syntax of the `log_nodes` setting."""
        return ";".join(
            spec.shard
            + "="
            + ",".join(f"{node.node_id}@{node.address}" for node in spec.nodes)
            for spec in self.shards
        )


def _check_address(address: str, where: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"log_nodes: {where} has the address {address!r}; write it as "
            "host:port, for example 127.0.0.1:50070"
        )


def parse_log_nodes(text: str) -> Topology:
    """Parse the `log_nodes` setting.

    The syntax is `shard-0=n0@host:port,n1@host:port;shard-1=...`.

    Raises:
      ValueError: the text does not follow the syntax, or repeats a shard id,
        a node id or an address. The message names the part at fault.
    """
    shards: list[ShardSpec] = []
    seen_nodes: set[str] = set()
    seen_addresses: set[str] = set()
    for part in (piece.strip() for piece in text.split(";")):
        if not part:
            continue
        shard_id, sep, members = part.partition("=")
        shard_id = shard_id.strip()
        if not sep or not shard_id:
            raise ValueError(
                f"log_nodes: {part!r} is not `shard=node@host:port,...`; "
                "start each shard with its id and an equals sign"
            )
        if any(spec.shard == shard_id for spec in shards):
            raise ValueError(f"log_nodes: shard {shard_id!r} is listed twice")
        nodes = []
        for member in (piece.strip() for piece in members.split(",")):
            node_id, at, address = member.partition("@")
            node_id, address = node_id.strip(), address.strip()
            if not at or not node_id:
                raise ValueError(
                    f"log_nodes: {member!r} in shard {shard_id!r} is not "
                    "`node@host:port`"
                )
            _check_address(address, f"node {node_id!r}")
            if node_id in seen_nodes:
                raise ValueError(f"log_nodes: node {node_id!r} is listed twice")
            if address in seen_addresses and not address.endswith(":0"):
                raise ValueError(
                    f"log_nodes: address {address!r} is given to two nodes"
                )
            seen_nodes.add(node_id)
            seen_addresses.add(address)
            nodes.append(NodeSpec(node_id, shard_id, address))
        shards.append(ShardSpec(shard_id, tuple(nodes)))
    if not shards:
        raise ValueError("log_nodes: names no shard; leave it empty for the default")
    return Topology(tuple(shards))


def default_topology(
    shards: int, replicas: int, host: str, first_port: int
) -> Topology:
    """Build `shards` x `replicas` nodes with consecutive ports from first_port.

    Node ids are `shard-0-a`, `shard-0-b`, ... A first_port of 0 gives every
    node port 0, so that each binds a free port.

    Raises:
      ValueError: shards or replicas is out of range.
    """
    if shards < 1:
        raise ValueError(f"log_shards must be 1 or more, got {shards}")
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(
            f"log_replicas must be between 1 and {MAX_REPLICAS}, got {replicas}"
        )
    specs = []
    for index in range(shards):
        shard_id = f"shard-{index}"
        nodes = []
        for replica in range(replicas):
            port = first_port + index * replicas + replica if first_port else 0
            node_id = f"{shard_id}-{_REPLICA_SUFFIXES[replica]}"
            nodes.append(NodeSpec(node_id, shard_id, f"{host}:{port}"))
        specs.append(ShardSpec(shard_id, tuple(nodes)))
    return Topology(tuple(specs))


def topology_from_config(config: Config) -> Topology:
    """Return the topology that the settings describe.

    Raises:
      ValueError: log_nodes does not parse, or the counts are out of range.
    """
    if config.log_nodes.strip():
        return parse_log_nodes(config.log_nodes)
    return default_topology(
        config.log_shards, config.log_replicas, config.host, config.log_node_port
    )
