"""The durable state of a log node: its role, epoch and shard members.

`NodeState` is saved to `state.json` in the node's directory, atomically
(temporary file, fsync, rename, fsync of the directory), before the node acts
on a change, and restored at start. `BatchIndex` maps batch ids to their
sequence numbers so that a retried batch is stored once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from log_service.wal import write_file_atomically

ROLE_NONE = "none"
ROLE_LEADER = "leader"
ROLE_FOLLOWER = "follower"

# Purged batches whose ids a node keeps, so retries stay recognised.
RECENT_PURGED_BATCHES = 50_000


@dataclass(frozen=True)
class Member:
    """A node of the shard: its id and `host:port`."""

    node: str
    address: str


@dataclass(frozen=True)
class NodeState:
    """Role and configuration of a node for its shard.

    Attributes:
      epoch: the highest leader epoch the node has seen.
      role: `leader`, `follower`, or `none` before the first configuration.
      leader: the leader of `epoch`, when known.
      in_sync: the followers whose acknowledgement a leader waits for.
      followers: every follower of the shard.
      config_version: version of the configuration within `epoch`.
      leader_only_ack: whether a leader acknowledges after its own flush.
    """

    epoch: int = 0
    role: str = ROLE_NONE
    leader: Member | None = None
    in_sync: tuple[Member, ...] = ()
    followers: tuple[Member, ...] = ()
    config_version: int = 0
    leader_only_ack: bool = False


def load_state(path: Path) -> NodeState:
    """Read a node state file; a missing file gives the initial state."""
    if not path.exists():
        return NodeState()
    raw = json.loads(path.read_text(encoding="utf-8"))
    leader = raw.get("leader")
    return NodeState(
        epoch=int(raw["epoch"]),
        role=str(raw["role"]),
        leader=Member(**leader) if leader else None,
        in_sync=tuple(Member(**m) for m in raw.get("in_sync", [])),
        followers=tuple(Member(**m) for m in raw.get("followers", [])),
        config_version=int(raw.get("config_version", 0)),
        leader_only_ack=bool(raw.get("leader_only_ack", False)),
    )


def save_state(path: Path, state: NodeState) -> None:
    """Replace the node state file atomically."""
    write_file_atomically(path, json.dumps(asdict(state), indent=1).encode("utf-8"))


@dataclass
class BatchIndex:
    """Batch id to (first sequence, entry count), in sequence order.

    It contains every batch whose record is still in the write-ahead log, plus
    the most recent `limit` batches purged from it. The purged ones are saved
    in a file before the purge, so the index survives a restart: a retry is
    recognised while its record is in the log or among the last `limit`
    purged batches.
    """

    path: Path
    limit: int = RECENT_PURGED_BATCHES
    _batches: OrderedDict[str, tuple[int, int]] = field(default_factory=OrderedDict)

    def load(self) -> None:
        """Read the purged batches saved by `save_through`."""
        if not self.path.exists():
            return
        for batch_id, first, count in json.loads(self.path.read_text("utf-8")):
            self._batches[batch_id] = (int(first), int(count))

    def get(self, batch_id: str) -> tuple[int, int] | None:
        return self._batches.get(batch_id)

    def add(self, batch_id: str, first: int, count: int) -> None:
        if batch_id:
            self._batches[batch_id] = (first, count)

    def __len__(self) -> int:
        return len(self._batches)

    def drop_after(self, sequence: int) -> None:
        """Forget batches with any entry above `sequence` (a truncated tail)."""
        while self._batches:
            batch_id, (first, count) = next(reversed(self._batches.items()))
            if first + count - 1 <= sequence:
                return
            del self._batches[batch_id]

    def ended_through(self, sequence: int) -> list[tuple[str, int, int]]:
        """Return the last `limit` batches that end at or below `sequence`."""
        ended = [
            (batch_id, first, count)
            for batch_id, (first, count) in self._batches.items()
            if first + count - 1 <= sequence
        ]
        return ended[-self.limit :]

    def save_through(self, sequence: int) -> None:
        """Save the last `limit` batches that end at or below `sequence`."""
        ended = [
            [batch_id, first, count]
            for batch_id, (first, count) in self._batches.items()
            if first + count - 1 <= sequence
        ]
        write_file_atomically(
            self.path, json.dumps(ended[-self.limit :]).encode("utf-8")
        )

    def trim(self, purged_through: int) -> None:
        """Keep at most `limit` batches that end at or below `purged_through`."""
        ended = 0
        for first, count in self._batches.values():
            if first + count - 1 > purged_through:
                break
            ended += 1
        for _ in range(max(0, ended - self.limit)):
            self._batches.popitem(last=False)
