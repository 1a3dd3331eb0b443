"""The log cluster's topology and the choice of a shard for each entry.

`Topology` lists the shards and their nodes, from the `log_nodes` setting or
derived from `log_shards`, `log_replicas` and `log_node_port`. The first node
of each shard is its initial leader.

Two sharding strategies implement `Sharder`:

- `ServiceRing`: a consistent-hash ring over the service name, with virtual
  nodes, so every entry of a service lands on one shard and adding a shard
  moves about 1/N of the services.
- `TimeBuckets`: shard `(timestamp // bucket) mod N`, so a query for a narrow
  time range reads only the shards that hold its buckets.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from splitlog_runtime.config import Config

VIRTUAL_NODES_PER_SHARD = 128
# Distinct service names whose shard a ServiceRing caches.
_RING_CACHE_SIZE = 100_000
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


def stable_hash(text: str) -> int:
    """Hash text to 64 bits, the same in every process and Python version."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Sharder(Protocol):
    """Strategy that picks the shard of an entry and the shards of a query."""

    def shard_for(self, service: str, timestamp: int) -> str:
        """Return the shard of an entry; timestamp is in Unix nanoseconds."""
        ...

    def shard_runs(
        self, service: str, timestamps: Sequence[int]
    ) -> list[tuple[str, int, int]]:
        """Split entries of one service into runs that go to one shard each.

        Returns `(shard, start, stop)` for each run of consecutive entries
        with the same shard, in order, covering `0` to `len(timestamps)`.
        """
        ...

    def shards_for_query(
        self, services: Sequence[str], start: int | None, end: int | None
    ) -> list[str]:
        """Return the shards that may hold entries of a query, in shard order.

        Args:
          services: the query's services; empty means every service.
          start: inclusive lower time bound in Unix nanoseconds, or None.
          end: exclusive upper time bound in Unix nanoseconds, or None.
        """
        ...


class ServiceRing:
    """Consistent hashing of service names onto shards, with virtual nodes."""

    def __init__(
        self, shard_ids: Sequence[str], virtual_nodes: int = VIRTUAL_NODES_PER_SHARD
    ) -> None:
        if not shard_ids:
            raise ValueError("a service ring needs at least one shard")
        self._order = list(shard_ids)
        points = sorted(
            (stable_hash(f"{shard}#{replica}"), shard)
            for shard in shard_ids
            for replica in range(virtual_nodes)
        )
        self._hashes = [point for point, _ in points]
        self._owners = [shard for _, shard in points]
        self._cache: dict[str, str] = {}

    def shard_for(self, service: str, timestamp: int = 0) -> str:
        # Every entry of a batch looks up its shard, and batches repeat a few
        # services, so the shard is cached per service.
        shard = self._cache.get(service)
        if shard is None:
            index = bisect.bisect_right(self._hashes, stable_hash(service))
            shard = self._owners[index % len(self._owners)]
            if len(self._cache) >= _RING_CACHE_SIZE:
                self._cache.clear()
            self._cache[service] = shard
        return shard

    def shard_runs(
        self, service: str, timestamps: Sequence[int]
    ) -> list[tuple[str, int, int]]:
        return [(self.shard_for(service), 0, len(timestamps))]

    def shards_for_query(
        self, services: Sequence[str], start: int | None, end: int | None
    ) -> list[str]:
        if not services:
            return list(self._order)
        matching = {self.shard_for(service) for service in services}
        return [shard for shard in self._order if shard in matching]


class TimeBuckets:
    """Entries go to shard `(timestamp // bucket) mod N`."""

    def __init__(self, shard_ids: Sequence[str], bucket_ns: int) -> None:
        if not shard_ids:
            raise ValueError("time sharding needs at least one shard")
        if bucket_ns <= 0:
            raise ValueError(
                f"log_time_bucket_seconds must be positive, got {bucket_ns / 1e9:g}"
            )
        self._order = list(shard_ids)
        self._bucket_ns = bucket_ns

    def shard_for(self, service: str, timestamp: int) -> str:
        return self._order[(timestamp // self._bucket_ns) % len(self._order)]

    def shard_runs(
        self, service: str, timestamps: Sequence[int]
    ) -> list[tuple[str, int, int]]:
        # NumPy's floor division and modulo of int64 round as Python's do,
        # also for times before 1970.
        shards = (np.asarray(timestamps, dtype=np.int64) // self._bucket_ns) % len(
            self._order
        )
        starts = [0, *(np.flatnonzero(shards[1:] != shards[:-1]) + 1).tolist()]
        stops = [*starts[1:], len(shards)]
        return [
            (self._order[int(shards[start])], start, stop)
            for start, stop in zip(starts, stops, strict=True)
        ]

    def shards_for_query(
        self, services: Sequence[str], start: int | None, end: int | None
    ) -> list[str]:
        count = len(self._order)
        if start is None or end is None:
            return list(self._order)
        if end <= start:
            return []
        first = start // self._bucket_ns
        last = (end - 1) // self._bucket_ns
        if last - first + 1 >= count:
            return list(self._order)
        matching = {bucket % count for bucket in range(first, last + 1)}
        return [shard for index, shard in enumerate(self._order) if index in matching]


def sharder_from_config(config: Config, topology: Topology) -> Sharder:
    """Build the sharder that `log_sharding` names.

    Raises:
      ValueError: log_sharding is neither `service` nor `time`.
    """
    strategy = config.log_sharding.strip().lower()
    if strategy == "service":
        return ServiceRing(topology.shard_ids)
    if strategy == "time":
        return TimeBuckets(
            topology.shard_ids, int(config.log_time_bucket_seconds) * 1_000_000_000
        )
    raise ValueError(
        f"log_sharding must be `service` or `time`, got {config.log_sharding!r}"
    )
