"""Per-shard entries in the router's gRPC health service.

The router reports `splitlog.logs.v1.LogsService/<shard id>` SERVING while
the shard's leader responds to the coordinator's polls, and NOT_SERVING while
the shard has no leader or its leader does not respond. Writes to such a shard
fail with UNAVAILABLE. An entry changes at the end of the poll round that
detects the change. A round starts every 0.25 s and waits up to 0.5 s for
each node. The NOT_SERVING entries are the shards that GetClusterStatus
reports as HEALTH_UNAVAILABLE.

The whole-server status `""` and the LogsService entry stay SERVING while a
shard is down. The router still writes to the other shards and serves
queries. The gateway's whole-server status is SERVING only while every
backend service it watches is. A NOT_SERVING router would make a load
balancer that checks the gateway take it out of rotation, and with it every
user, expense and balance call, for an outage of one log shard.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

from splitlog.logs.v1 import logs_service_pb2
from splitlog_runtime.server import NOT_SERVING, SERVING, ClosingHealthServicer

_LOGGER = logging.getLogger(__name__)

LOGS_SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name


def shard_health_name(shard: str) -> str:
    """Return the health service name of one shard's entry."""
    return f"{LOGS_SERVICE}/{shard}"


def shard_of_health_name(name: str) -> str | None:
    """Return the shard id of a shard's health entry name, or None for another name."""
    prefix = f"{LOGS_SERVICE}/"
    if name.startswith(prefix) and len(name) > len(prefix):
        return name[len(prefix) :]
    return None


class ShardHealth:
    """The health entries of the shards, set from the coordinator's polls.

    Every entry starts NOT_SERVING, until a poll finds the shard's leader.
    Once the host has begun to stop, the servicer ignores further updates.
    """

    def __init__(self, health: ClosingHealthServicer, shards: Iterable[str]) -> None:
        self._health = health
        self._lock = threading.Lock()
        self._responding: dict[str, bool] = {}
        for shard in shards:
            health.set(shard_health_name(shard), NOT_SERVING)

    def update(self, leaders_responding: Mapping[str, bool]) -> None:
        """Set the entry of each shard whose state changed since the last update."""
        with self._lock:
            for shard, responding in leaders_responding.items():
                previous = self._responding.get(shard)
                if previous == responding:
                    continue
                self._responding[shard] = responding
                name = shard_health_name(shard)
                self._health.set(name, SERVING if responding else NOT_SERVING)
                if responding:
                    _LOGGER.info(
                        "log shard %s: leader responds; %s SERVING", shard, name
                    )
                elif previous is not None:
                    _LOGGER.warning(
                        "log shard %s: no leader responds; %s NOT_SERVING until "
                        "one does, and writes to the shard fail with UNAVAILABLE",
                        shard,
                        name,
                    )
