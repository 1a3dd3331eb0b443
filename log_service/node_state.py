"""The durable state of a log node: its role, epoch and shard members.

`NodeState` is saved to `state.json` in the node's directory, atomically
(temporary file, fsync, rename, fsync of the directory), before the node acts
on a change, and restored at start. `BatchIndex` maps batch ids to their
records and the request indexes they contain, so that each entry of a retried
batch is stored once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from log_service.index_runs import HeldIndexes, slice_runs
from splitlog_runtime.private_files import write_file_atomically

ROLE_NONE = "none"
ROLE_LEADER = "leader"
ROLE_FOLLOWER = "follower"

# Purged records whose batch ids a node keeps, so retries stay recognised.
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


class BatchIndex:
    """The records of each batch id, with the request indexes they contain.

    It contains every record whose entries are still in the write-ahead log,
    plus the most recent `limit` records purged from it. The purged ones
    are saved in a file before the purge, so the index survives a restart:
    a retry is recognised while its records are in the log or among the last
    `limit` purged records. A batch id can have several records, such as a
    retry that stored the entries that the first call had rejected, or a
    record that a truncation cut short followed by the rest of it from the
    next leader.
    """

    def __init__(self, path: Path, limit: int = RECENT_PURGED_BATCHES) -> None:
        self.path = path
        self.limit = limit
        # First sequence of each record to (batch id, entry count, index
        # runs), in sequence order.
        self._records: OrderedDict[int, tuple[str, int, tuple[int, ...]]] = (
            OrderedDict()
        )
        # Batch id to the first sequence of its record, or to a list of them
        # when it has several, so the usual single record costs no list.
        self._firsts: dict[str, int | list[int]] = {}

    def load(self) -> None:
        """Read the purged records saved by `save_through`.

        A file written before records had index runs lists each batch as
        [batch id, first, count]; such a batch counts as stored whole.
        """
        if not self.path.exists():
            return
        for item in json.loads(self.path.read_text("utf-8")):
            batch_id, first, count = item[:3]
            runs = tuple(int(value) for value in item[3]) if len(item) > 3 else ()
            self.add(batch_id, int(first), int(count), runs)

    def held(self, batch_id: str) -> HeldBatch | None:
        """Return what the node stores under `batch_id`, or None for an unknown id."""
        firsts = self._firsts.get(batch_id)
        if firsts is None:
            return None
        if isinstance(firsts, int):
            firsts = [firsts]
        records = [(first, *self._records[first][1:]) for first in firsts]
        return HeldBatch(
            first=min(first for first, _, _ in records),
            count=sum(count for _, count, _ in records),
            last=max(first + count - 1 for first, count, _ in records),
            indexes=HeldIndexes(runs for _, _, runs in records),
            records=tuple(records),
        )

    def add(
        self, batch_id: str, first: int, count: int, runs: Sequence[int] = ()
    ) -> None:
        """Add a record that begins after every record already added.

        A record with the first sequence of one already present replaces it
        in place, as when a record saved to the file before a purge that a
        crash interrupted is also still in the log.
        """
        if not batch_id:
            return
        known = self._records.get(first)
        if known is not None:
            # The record keeps its place in the order.
            self._unlink(known[0], first)
        self._records[first] = (batch_id, count, tuple(runs))
        firsts = self._firsts.get(batch_id)
        if firsts is None:
            self._firsts[batch_id] = first
        elif isinstance(firsts, int):
            self._firsts[batch_id] = [firsts, first]
        else:
            firsts.append(first)

    def _forget(self, first: int) -> None:
        batch_id, _, _ = self._records.pop(first)
        self._unlink(batch_id, first)

    def _unlink(self, batch_id: str, first: int) -> None:
        firsts = self._firsts[batch_id]
        if isinstance(firsts, int):
            del self._firsts[batch_id]
            return
        firsts.remove(first)
        if len(firsts) == 1:
            self._firsts[batch_id] = firsts[0]

    def __len__(self) -> int:
        """Return the number of records."""
        return len(self._records)

    def drop_after(self, sequence: int) -> None:
        """Forget the entries above `sequence`, as a truncated log does.

        A record that contains `sequence` keeps its entries up to it, with
        their index runs, as the write-ahead log keeps them.
        """
        while self._records:
            first, (batch_id, count, runs) = next(reversed(self._records.items()))
            if first + count - 1 <= sequence:
                return
            self._forget(first)
            if first <= sequence:
                kept = sequence - first + 1
                self.add(
                    batch_id, first, kept, slice_runs(runs, 0, kept) if runs else ()
                )

    def ended_through(
        self, sequence: int
    ) -> list[tuple[str, int, int, tuple[int, ...]]]:
        """Return the last `limit` records that end at or below `sequence`.

        Each is (batch id, first sequence, entry count, index runs).
        """
        ended = [
            (batch_id, first, count, runs)
            for first, (batch_id, count, runs) in self._records.items()
            if first + count - 1 <= sequence
        ]
        return ended[-self.limit :]

    def save_through(self, sequence: int) -> None:
        """Save the last `limit` records that end at or below `sequence`."""
        ended = [
            list(item[:3]) + [list(item[3])] for item in self.ended_through(sequence)
        ]
        write_file_atomically(self.path, json.dumps(ended).encode("utf-8"))

    def trim(self, purged_through: int) -> None:
        """Keep at most `limit` records that end at or below `purged_through`."""
        ended = []
        for first, (_, count, _) in self._records.items():
            if first + count - 1 > purged_through:
                break
            ended.append(first)
        for first in ended[: max(0, len(ended) - self.limit)]:
            self._forget(first)


@dataclass(frozen=True)
class HeldBatch:
    """Records and entries that a node stores under one batch id.

    `first` is the first sequence of its records, `last` the last one, and
    `count` the number of entries in them. The records need not be
    consecutive, so `count` can be smaller than `last - first + 1`.
    `records` lists (first sequence, entry count, index runs) of each record.
    """

    first: int
    count: int
    last: int
    indexes: HeldIndexes
    records: tuple[tuple[int, int, tuple[int, ...]], ...] = ()
