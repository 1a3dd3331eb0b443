"""The choice of a shard for each log entry and for each query.

The shards come from the cluster's `Topology` (see log_service.topology).
Two sharding strategies implement `Sharder`:

- `ServiceRing`: a consistent-hash ring over the service name, with virtual
  nodes, so every entry of a service lands on one shard and adding a shard
  moves about 1/N of the services.
- `TimeBuckets`: shard `(timestamp // bucket) mod N`, so a query for a narrow
  time range reads only the shards that hold its buckets.

`ShardingHistory` combines the sharders of successive placements, each for
the entry timestamps from its start on (see log_service.placement).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from splitlog_runtime.config import Config

if TYPE_CHECKING:
    from log_service.topology import Topology

VIRTUAL_NODES_PER_SHARD = 128
# Distinct service names whose shard a ServiceRing caches.
_RING_CACHE_SIZE = 100_000


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


class ShardingHistory:
    """The sharders of successive placements, picked by entry timestamp.

    The sharder of placement `i` places the entries whose timestamps fall in
    `[starts[i - 1], starts[i])`. The first sharder places every entry before
    `starts[0]`, and the last one every entry from `starts[-1]` on. For each
    placement whose period overlaps a query's time range, the query reads the
    shards that this placement gives the range.

    Args:
      sharders: one sharder per placement, oldest first.
      starts: the Unix nanoseconds at which each placement after the first
        takes effect, increasing.
      order: every shard id of every placement, in the order that query
        results list them.
    """

    def __init__(
        self, sharders: Sequence[Sharder], starts: Sequence[int], order: Sequence[str]
    ) -> None:
        if len(sharders) != len(starts) + 1:
            raise ValueError(
                f"{len(sharders)} sharders need {len(sharders) - 1} start times, "
                f"got {len(starts)}"
            )
        if any(later <= earlier for earlier, later in itertools.pairwise(starts)):
            raise ValueError(f"placement start times must increase, got {starts}")
        self._sharders = list(sharders)
        self._starts = list(starts)
        self._start_array = np.asarray(starts, dtype=np.int64)
        self._order = list(order)

    def shard_for(self, service: str, timestamp: int) -> str:
        sharder = self._sharders[bisect.bisect_right(self._starts, timestamp)]
        return sharder.shard_for(service, timestamp)

    def shard_runs(
        self, service: str, timestamps: Sequence[int]
    ) -> list[tuple[str, int, int]]:
        stamps = np.asarray(timestamps, dtype=np.int64)
        periods = np.searchsorted(self._start_array, stamps, side="right")
        starts = [0, *(np.flatnonzero(periods[1:] != periods[:-1]) + 1).tolist()]
        stops = [*starts[1:], len(stamps)]
        runs: list[tuple[str, int, int]] = []
        for start, stop in zip(starts, stops, strict=True):
            sharder = self._sharders[int(periods[start])]
            for shard, run_start, run_stop in sharder.shard_runs(
                service, timestamps[start:stop]
            ):
                if runs and runs[-1][0] == shard:
                    # The shard is the same on both sides of a placement's
                    # start, so extend the previous run.
                    runs[-1] = (shard, runs[-1][1], start + run_stop)
                else:
                    runs.append((shard, start + run_start, start + run_stop))
        return runs

    def shards_for_query(
        self, services: Sequence[str], start: int | None, end: int | None
    ) -> list[str]:
        if start is not None and end is not None and end <= start:
            return []
        matching: set[str] = set()
        for index, sharder in enumerate(self._sharders):
            low = self._starts[index - 1] if index else None
            high = self._starts[index] if index < len(self._starts) else None
            if low is not None and end is not None and end <= low:
                continue
            if high is not None and start is not None and start >= high:
                continue
            matching.update(
                sharder.shards_for_query(
                    services, _later(start, low), _earlier(end, high)
                )
            )
        return [shard for shard in self._order if shard in matching]


def _later(first: int | None, second: int | None) -> int | None:
    """Return the later of two lower bounds, where None is unbounded."""
    if first is None:
        return second
    return first if second is None else max(first, second)


def _earlier(first: int | None, second: int | None) -> int | None:
    """Return the earlier of two upper bounds, where None is unbounded."""
    if first is None:
        return second
    return first if second is None else min(first, second)


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
