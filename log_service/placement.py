"""The record of the settings that decide which shard stores each entry.

The router writes `<data_dir>/log_service/sharding.json` at its first start
and checks it at every later start. A router started with another
`log_sharding`, other shards or another time bucket width would put new
entries on other shards than the stored ones, and queries that pick shards
by service or time would then miss the stored entries. So such a start is
rejected with both values and the fix. No migration moves stored entries to
the shards of a new placement.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from log_service.coordinator import STATE_FILE_NAME
from log_service.sharding import VIRTUAL_NODES_PER_SHARD
from log_service.topology import Topology
from splitlog_runtime.config import Config
from splitlog_runtime.private_files import write_file_atomically

_LOGGER = logging.getLogger(__name__)

PLACEMENT_FILE_NAME = "sharding.json"


@dataclass(frozen=True)
class Placement:
    """The settings that decide an entry's shard.

    Attributes:
      strategy: `service` or `time`, as `log_sharding` names it.
      shards: the shard ids in the order of the topology.
      time_bucket_seconds: the bucket width of `time`; None for `service`.
      virtual_nodes: ring points per shard of `service`; None for `time`.
    """

    strategy: str
    shards: tuple[str, ...]
    time_bucket_seconds: int | None = None
    virtual_nodes: int | None = None

    @classmethod
    def from_config(cls, config: Config, topology: Topology) -> Placement:
        strategy = config.log_sharding.strip().lower()
        if strategy == "time":
            return cls(
                strategy,
                tuple(topology.shard_ids),
                time_bucket_seconds=int(config.log_time_bucket_seconds),
            )
        return cls(
            strategy, tuple(topology.shard_ids), virtual_nodes=VIRTUAL_NODES_PER_SHARD
        )

    def to_json(self) -> dict[str, object]:
        return {
            "version": 1,
            "log_sharding": self.strategy,
            "shards": list(self.shards),
            "log_time_bucket_seconds": self.time_bucket_seconds,
            "virtual_nodes_per_shard": self.virtual_nodes,
        }

    @classmethod
    def from_json(cls, payload: dict) -> Placement:
        bucket = payload.get("log_time_bucket_seconds")
        virtual_nodes = payload.get("virtual_nodes_per_shard")
        return cls(
            str(payload["log_sharding"]),
            tuple(str(shard) for shard in payload["shards"]),
            None if bucket is None else int(bucket),
            None if virtual_nodes is None else int(virtual_nodes),
        )

    def describe(self) -> str:
        """Render the placement as the settings that give it."""
        text = f"log_sharding={self.strategy}"
        if self.time_bucket_seconds is not None:
            text += f", log_time_bucket_seconds={self.time_bucket_seconds}"
        return text + f", shards {', '.join(self.shards)}"

    def differences(self, configured: Placement) -> list[str]:
        """Describe each setting in which `configured` places entries elsewhere."""
        if configured.strategy != self.strategy:
            return [
                f"log_sharding is {configured.strategy!r}, but the stored "
                f"entries were placed with {self.strategy!r}"
            ]
        found = []
        # The ring hashes shard ids, so only time buckets depend on the order.
        same_shards = (
            configured.shards == self.shards
            if self.strategy == "time"
            else sorted(configured.shards) == sorted(self.shards)
        )
        if not same_shards:
            found.append(
                f"the shards (log_shards or log_nodes) are "
                f"{', '.join(configured.shards)}, but the stored entries were "
                f"placed on {', '.join(self.shards)}"
            )
        if configured.time_bucket_seconds != self.time_bucket_seconds:
            found.append(
                f"log_time_bucket_seconds is {configured.time_bucket_seconds}, "
                f"but the stored entries were placed with "
                f"{self.time_bucket_seconds}"
            )
        if configured.virtual_nodes != self.virtual_nodes:
            found.append(
                f"the ring has {configured.virtual_nodes} virtual nodes per "
                f"shard, but the stored entries were placed with "
                f"{self.virtual_nodes}"
            )
        return found


def check_placement(router_dir: Path, configured: Placement) -> None:
    """Compare the configured placement with the recorded one, or record it.

    A router without a record, a first start or one from a version that kept
    none, records the configured placement.

    Raises:
      ValueError: the record differs from `configured` or cannot be read;
        the message names both values and the fix.
    """
    path = router_dir / PLACEMENT_FILE_NAME
    try:
        recorded = Placement.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        if (router_dir / STATE_FILE_NAME).exists():
            # A router of a version that kept no record ran on this folder.
            _LOGGER.warning(
                "log placement: %s is missing, so the placement of the stored "
                "entries is unknown; recording the configured one (%s)",
                path,
                configured.describe(),
            )
        _record(path, configured)
        return
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"cannot read the recorded log placement in {path} ({exc!r}); "
            "restore the file from a backup, or write it again by deleting it "
            "and starting with the settings the stored entries were placed with"
        ) from None
    differences = recorded.differences(configured)
    if differences:
        raise ValueError(
            "; ".join(differences)
            + ". New entries would go to other shards than the stored ones, and "
            "queries that pick shards by service or time would miss the stored "
            "entries. Start with the recorded settings "
            f"({recorded.describe()}), or, to use the new ones, start the router "
            "and the log nodes on empty data directories, which leaves the stored "
            f"entries behind. The record is {path}"
        )


def _record(path: Path, placement: Placement) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(placement.to_json(), indent=1, sort_keys=True)
    write_file_atomically(path, text.encode("utf-8"))
    _LOGGER.info("log placement recorded in %s: %s", path, placement.describe())
