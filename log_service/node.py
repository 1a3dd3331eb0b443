"""A log node: one replica of one shard, as its leader or as a follower.

`LogNode` owns the node's write-ahead log (`wal.py`), its DuckDB store
(`store.py`) and its durable state (`node_state.py`), all under one
directory:

- A leader assigns sequence numbers to each appended batch and writes one
  `LogRecord` to its write-ahead log, and many appenders share one fsync.
  It hands the record to one `ReplicationSender` per follower. It
  acknowledges once every in-sync follower has stored the record, or right
  after its own flush with `leader_only_ack`. The highest acknowledged
  sequence is the commit sequence.
- A follower accepts `ReplicateEntries` from the leader of the highest epoch
  it has seen, truncates where the leader requests, and appends contiguous
  records to its own write-ahead log with fsync before replying.
- An applier thread moves records from the write-ahead log into the store in
  large groups. Reads on a leader wait until the store contains everything
  committed when the read began. Reads on a follower wait for everything it
  stored durably (see `wait_until_visible`).
- A record is durable, and visible to the applier and the senders, once an
  fsync covered it (or once written, with `log_fsync` off).

`build_node` starts a node's gRPC server: health is NOT_SERVING until the
write-ahead log has been replayed into the store. `python -m log_service.node`
runs one node until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2

from log_service import node_state
from log_service import snapshot as snapshots
from log_service.clients import NODE_HEADROOM_BYTES, node_channel_options
from log_service.index_runs import HeldIndexes, runs_at, runs_error
from log_service.model import SPARSE_FIELDS
from log_service.node_state import (
    ROLE_NONE,
    BatchIndex,
    HeldBatch,
    Member,
    NodeState,
)
from log_service.open_streams import OpenStreams
from log_service.pages import fit_columns, page_budget
from log_service.replication import ReplicationSender
from log_service.wal import (
    EntryColumns,
    LogDamage,
    PendingRecord,
    WriteAheadLog,
    embedded_messages,
    entry_count,
    slice_columns,
    slice_record,
    split_field,
)
from splitlog.logs.v1 import (
    logs_service_pb2,
    node_service_pb2,
    node_service_pb2_grpc,
    replication_service_pb2,
    replication_service_pb2_grpc,
)
from splitlog_runtime import auth, logsetup, private_files
from splitlog_runtime import config as config_module
from splitlog_runtime.config import Config
from splitlog_runtime.errors import (
    FailedPrecondition,
    NotFound,
    OutOfRange,
    PreconditionViolation,
    Unavailable,
    invalid_field,
)
from splitlog_runtime.private_files import write_file_atomically
from splitlog_runtime.server import ServiceHost, create_server

_LOGGER = logging.getLogger(__name__)

LEADER = logs_service_pb2.REPLICA_ROLE_LEADER
FOLLOWER = logs_service_pb2.REPLICA_ROLE_FOLLOWER
NODE_SERVICE = node_service_pb2.DESCRIPTOR.services_by_name["LogNodeService"]
REPLICATION_SERVICE = replication_service_pb2.DESCRIPTOR.services_by_name[
    "ReplicationService"
]

# Maximum time a read waits for the store to apply the committed entries.
READ_WAIT_SECONDS = 5.0
# Handler threads kept for ReplicateEntries and FetchSnapshot streams beside
# `workers`: a shard has a few replicas, so a few streams are open at once.
REPLICATION_STREAM_THREADS = 8
FOLLOW_KEEPALIVE_SECONDS = 1.0
# Bounds of one FollowEntries message. A follower that is behind reads its
# backlog in pages of up to this many entries and bytes (estimated as in
# `LogStore.follow_page`, and never above the `max_message_bytes` budget). The
# byte bound matches the router's bound of a tail response
# (`log_service.tail.MAX_RESPONSE_BYTES`), so a page usually leaves the router
# as one response. In a one-off in-process measurement of LogStore with
# 200,000 entries spread over 25 to 42 partitions (2 shared cores, load
# average 13 to 16), a page of 10,000 took 80 to 110 ms, against 135 to 240
# ms for a page of 1,000 by `since`, which sorts all later rows. End-to-end
# numbers: docs/benchmarks.md, "Catch-up from a resume token".
FOLLOW_BATCH_ENTRIES = 10_000
FOLLOW_BATCH_BYTES = 4 * 1024 * 1024
# The sequence numbers that one page of a follower reads. It starts at
# FOLLOW_BATCH_ENTRIES and doubles after each page that found fewer than half
# of that, up to FOLLOW_MAX_SPAN, so a filter that matches few entries reads a
# long backlog in few queries.
FOLLOW_MAX_SPAN = 1_000_000
APPLY_BATCH_BYTES = 64 * 1024 * 1024
# The applier waits up to APPLY_LINGER_SECONDS for APPLY_GROUP_ENTRIES durable
# entries, so that small batches reach the store in larger inserts (each one
# costs a DuckDB statement and two fsyncs, about 1 ms of CPU besides its
# rows). A read or a tail that waits for the store ends the wait at once, so
# it is not delayed. With 100-entry batches from 4 callers, the applier of a
# replica took 4.7 to 5.6 us of CPU per entry at 50 ms, and 2.4 to 3.3 at
# 250 ms.
APPLY_LINGER_SECONDS = 0.25
APPLY_GROUP_ENTRIES = 10_000
RETRY_DELAY_SECONDS = 0.5
_RECORDS_FIELD = (
    replication_service_pb2.ReplicateEntriesRequest.DESCRIPTOR.fields_by_name[
        "records"
    ].number
)
DEADLINE_MARGIN_SECONDS = 0.05
# After a FetchSnapshot stream ends, the leader keeps its write-ahead log from
# the snapshot's end on for this long, so the follower can install it and
# continue from there.
SNAPSHOT_HOLD_SECONDS = 60.0
# A follower whose snapshot fetch failed waits this long before it fetches
# again on the leader's next offer.
SNAPSHOT_RETRY_SECONDS = 1.0

_ROLE_NAMES = {LEADER: node_state.ROLE_LEADER, FOLLOWER: node_state.ROLE_FOLLOWER}
_ROLE_ENUMS = {name: role for role, name in _ROLE_NAMES.items()}


def _open_store(directory: Path, config, *, compact: bool = True) -> object:
    # Imported here so that the write-ahead log and replication can be used
    # and tested without DuckDB.
    from log_service.store import LogStore

    store = LogStore(
        directory,
        partition_seconds=int(config.log_partition_hours) * 3600,
        compact_after_seconds=int(config.log_compact_after_hours) * 3600,
    )
    if compact:
        store.start_compaction()
    return store


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def _disk_full_is_unavailable(shard: str) -> Iterator[None]:
    """Turn a full disk into UNAVAILABLE with a retry delay.

    The write-ahead log removes a frame cut short, so the batch can be sent
    again under the same id once space returns.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL_ERRNOS:
            raise
        _LOGGER.error("log shard %s: the disk is full (%s)", shard, exc)
        raise Unavailable(
            f"shard {shard}: the log node's disk is full; retry the batch with "
            "the same batch_id once space is freed",
            reason="DISK_FULL",
            metadata={"shard": shard},
            retry_delay=RETRY_DELAY_SECONDS,
        ) from None


def _member(proto: node_service_pb2.ShardMember) -> Member:
    return Member(proto.node, proto.address)


class LogNode:
    """One replica of one shard: write-ahead log, store, role and replication.

    Args:
      node_id: the node's id, as the coordinator names it.
      address: `host:port` where other nodes and the router reach it.
      shard: the shard it stores.
      directory: folder for the write-ahead log, the store and the state.
      config: settings; `log_fsync` and `max_message_bytes` apply.
      append_timeout: maximum seconds an append waits for its acknowledgements when
        the call's own deadline is later; defaults to `deadline_seconds`.
    """

    def __init__(
        self,
        node_id: str,
        address: str,
        shard: str,
        directory: Path,
        config: Config,
        *,
        append_timeout: float | None = None,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.shard = shard
        self._directory = Path(directory)
        private_files.private_tree(self._directory)
        # A crash while a state file of the node, its store or its
        # write-ahead log was being replaced leaves a temporary file of it.
        private_files.remove_abandoned_temporary_files_in(self._directory)
        self._config = config
        self._append_timeout = (
            config.deadline_seconds if append_timeout is None else append_timeout
        )

        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        # Held while records move into the store or a tail is truncated.
        self._apply_lock = threading.Lock()
        # Serialises the ReplicateEntries messages a follower handles.
        self._replicate_lock = threading.Lock()
        self._state_path = self._directory / "state.json"
        self._state = node_state.load_state(self._state_path)
        self._batches = BatchIndex(self._directory / "batches.json")

        self.wal: WriteAheadLog = None  # type: ignore[assignment]
        self._store = None
        self._ready = False
        self._stopping = False
        self.durable_sequence = 0
        self.commit_sequence = 0
        self._applied = 0
        # Number of reads and tails that wait for the applier. While any
        # waits, the applier does not linger.
        self._store_waiters = 0

        self._acknowledged: dict[str, int] = {}
        self._senders: dict[str, ReplicationSender] = {}
        self._applier: threading.Thread | None = None
        # Leader: the end of each snapshot being sent, with the time until
        # which the log after it is kept once the stream has ended.
        self._snapshot_holds: dict[object, tuple[int, float | None]] = {}
        # Follower: the snapshot being fetched, and the last one installed.
        self._snapshot_progress: snapshots.Progress | None = None
        self._snapshot_call: grpc.Future | None = None
        self._snapshot_epoch = 0
        self._snapshot_failed_at = 0.0
        self._installed_snapshot = 0
        self.start_time = time.time()
        # Returns whether the server is shutting down, so open streams end.
        self.server_stopping: Callable[[], bool] = lambda: False

    # Start and stop.

    def open(self) -> None:
        """Open the write-ahead log and the store, replay, and start serving."""
        snapshots.discard_unfinished(self._directory)
        manifest = snapshots.ready_manifest(self._directory)
        if manifest is not None:
            # A crash interrupted the installation; finish it.
            snapshots.install_store(self._directory)
        self.wal = WriteAheadLog(
            self._directory / "wal",
            fsync=bool(self._config.log_fsync),
            segment_bytes=int(self._config.log_wal_segment_bytes),
        )
        if manifest is not None:
            self._finish_snapshot(manifest)
            self._installed_snapshot = manifest.last_sequence
        self._store = _open_store(self._directory / "store", self._config)
        last = self.wal.last_sequence
        damage = self.wal.damage
        if damage is not None and not damage.epoch:
            damage = self.wal.update_damage(epoch=self._state.epoch)
        self._batches.load()
        for info in self.wal.records():
            self._batches.add(info.batch_id, info.first, info.count, info.index_runs)
        store_last = self._store.last_sequence()
        if store_last > last and damage is not None:
            last = self._keep_store_after_damage(store_last)
            damage = self._clear_damage_covered_by_store(store_last)
        elif store_last > last:
            # A torn final record can have reached the store only without
            # fsync; it was never acknowledged.
            _LOGGER.warning(
                "log shard %s: store contains entries after the write-ahead log's "
                "last sequence %d; deleting them",
                self.shard,
                last,
            )
            self._store.delete_after(last)
        self._apply_pending()
        if damage is not None:
            self._refuse_to_lead_damaged()

        with self.lock:
            self.durable_sequence = last
            self._ready = True
            self._advance_commit_locked()
            state = self._state
        if state.role == node_state.ROLE_LEADER:
            self._restart_senders(state)

        self._applier = threading.Thread(
            target=self._apply_loop, name=f"apply-{self.shard}", daemon=True
        )
        self._applier.start()
        _LOGGER.info(
            "log node %s: shard %s ready as %s at epoch %d, last sequence %d",
            self.node_id,
            self.shard,
            state.role,
            state.epoch,
            last,
        )

    def _keep_store_after_damage(self, store_last: int) -> int:
        """Keep the store's entries past a damaged log; return the new last one.

        The store received those entries from intact records before the
        damage, so they are kept, and the write-ahead log continues after
        them, as after a snapshot: a follower that needs them receives a
        snapshot. The ids of the batches in the records up to the cut are
        saved first; those of the batches only in the store are not known.
        If another leader's log differs there, its handshake truncates them.
        """
        damage = self.wal.damage
        assert damage is not None
        cut = self.wal.last_sequence
        self._batches.save_through(cut)
        self.wal.restart_after(store_last, self.wal.history.entries)
        if self.wal.earlier_damage is not None or not _store_covers_damage(
            damage, store_last
        ):
            self.wal.update_damage(after=max(damage.after, store_last))
        _LOGGER.warning(
            "log shard %s: the store holds entries %d..%d past the damaged part of "
            "the write-ahead log; keeping them, and the log continues after "
            "sequence %d",
            self.shard,
            cut + 1,
            store_last,
            store_last,
        )
        return store_last

    def _clear_damage_covered_by_store(self, store_last: int) -> LogDamage | None:
        """Delete the damage record when the store contains every entry it lists.

        Only damage found at this open counts. Damage from an earlier open
        remains when the node crashed between `_keep_store_after_damage` and
        this call, and since then the node may have written other entries
        under the lost sequence numbers. Returns the damage that remains, if
        any.
        """
        damage = self.wal.damage
        if (
            damage is None
            or self.wal.earlier_damage is not None
            or not _store_covers_damage(damage, store_last)
        ):
            return damage
        self.wal.clear_damage()
        _LOGGER.warning(
            "log shard %s: the store contains entries %d..%d that the damaged "
            "write-ahead log lost, so no entry was lost",
            self.shard,
            damage.after + 1,
            damage.seen_through,
        )
        return None

    def _refuse_to_lead_damaged(self) -> None:
        """Start as a follower after damage, even when this node was the leader.

        Another in-sync replica may hold the entries this node lost, and as
        leader this node would remove them from it. The coordinator sees the
        damage in GetNodeStatus, promotes the replica with the most entries,
        and gives this node the lead again only when no other replica may
        hold more.
        """
        damage = self.wal.damage
        assert damage is not None
        old = self._state
        lost = _lost_range(damage)
        if old.role == node_state.ROLE_LEADER and not old.followers:
            # Stepping down would only make the coordinator promote this
            # node again under a new epoch.
            _LOGGER.error(
                "log node %s: shard %s lost %s to a damaged write-ahead log; it "
                "keeps leading at epoch %d because the shard has no other "
                "replica that may hold them",
                self.node_id,
                self.shard,
                lost,
                old.epoch,
            )
            return
        if old.role == node_state.ROLE_LEADER:
            new = replace(old, role=node_state.ROLE_FOLLOWER, leader=None, in_sync=())
            node_state.save_state(self._state_path, new)
            self._state = new
        _LOGGER.error(
            "log node %s: shard %s lost %s to a damaged write-ahead log; it "
            "starts as a follower (it was %s at epoch %d) and catches up from "
            "the replica that the coordinator makes leader",
            self.node_id,
            self.shard,
            lost,
            old.role,
            old.epoch,
        )

    def close(self) -> None:
        """Stop the senders and the applier, then close the log and the store."""
        with self.lock:
            self._stopping = True
            senders = list(self._senders.values())
            self._senders.clear()
            snapshot_call = self._snapshot_call
            self.changed.notify_all()
        if snapshot_call is not None:
            snapshot_call.cancel()
        for sender in senders:
            sender.stop()
        if self._applier is not None:
            self._applier.join(timeout=10)
        with self._apply_lock:
            if self.wal is not None:
                self.wal.close()
            if self._store is not None:
                self._store.close()

    def notify(self) -> None:
        """Wake every thread that waits for a change of the node."""
        with self.lock:
            self.changed.notify_all()

    # Role and configuration.

    @property
    def state(self) -> NodeState:
        return self._state

    def is_leading(self, epoch: int) -> bool:
        with self.lock:
            return self.is_leading_locked(epoch)

    def is_leading_locked(self, epoch: int) -> bool:
        state = self._state
        return (
            not self._stopping
            and state.role == node_state.ROLE_LEADER
            and state.epoch == epoch
        )

    def configure(
        self, request: node_service_pb2.ConfigureShardRequest
    ) -> node_service_pb2.ConfigureShardResponse:
        """Apply a configuration from the coordinator and persist it first."""
        self._check_shard(request.shard, "shard")
        role = _ROLE_NAMES.get(request.role)
        if role is None:
            raise invalid_field(
                "role",
                f"{request.role} is not a role; send REPLICA_ROLE_LEADER or "
                "REPLICA_ROLE_FOLLOWER",
            )
        if role == node_state.ROLE_LEADER and request.leader.node != self.node_id:
            raise invalid_field(
                "leader.node",
                f"is {request.leader.node!r} but this node is {self.node_id!r}; "
                "a node can only be configured as leader under its own id",
            )
        with self._replicate_lock, self.lock:
            self._check_ready()
            old = self._state
            self._check_not_stale(old, request)
            new = NodeState(
                epoch=request.leader_epoch,
                role=role,
                leader=_member(request.leader),
                in_sync=tuple(_member(m) for m in request.in_sync),
                followers=tuple(_member(m) for m in request.followers),
                config_version=request.config_version,
                leader_only_ack=request.leader_only_ack,
            )
            becoming_leader = role == node_state.ROLE_LEADER and (
                old.role != node_state.ROLE_LEADER or old.epoch != new.epoch
            )
            if becoming_leader:
                # The epoch starts right after the last entry this node stores.
                self.wal.history.note(new.epoch, self.wal.last_sequence + 1)
                self._acknowledged.clear()
                damage = self.wal.damage
                if damage is not None:
                    _LOGGER.error(
                        "log node %s: leads shard %s at epoch %d without %s, "
                        "which its damaged write-ahead log lost: no other "
                        "in-sync replica is left that may hold them",
                        self.node_id,
                        self.shard,
                        new.epoch,
                        _lost_range(damage),
                    )
            if new != old:
                node_state.save_state(self._state_path, new)
                self._state = new
                self._log_change(old, new)
            self._advance_commit_locked()
            self.changed.notify_all()
            last = self.wal.last_sequence
        self._restart_senders(new)
        return node_service_pb2.ConfigureShardResponse(last_sequence=last)

    def _check_not_stale(
        self, old: NodeState, request: node_service_pb2.ConfigureShardRequest
    ) -> None:
        if request.leader_epoch < old.epoch:
            raise FailedPrecondition(
                f"leader_epoch {request.leader_epoch} is below epoch {old.epoch}, "
                f"which node {self.node_id} has already seen for shard "
                f"{self.shard}; send the current configuration",
                reason="STALE_EPOCH",
                metadata={"shard": self.shard, "epoch": str(old.epoch)},
                preconditions=[
                    PreconditionViolation(
                        "STALE_EPOCH",
                        f"shards/{self.shard}",
                        f"epoch {request.leader_epoch} < {old.epoch}",
                    )
                ],
            )
        if (
            request.leader_epoch == old.epoch
            and request.config_version < old.config_version
        ):
            raise FailedPrecondition(
                f"config_version {request.config_version} is below version "
                f"{old.config_version} of epoch {old.epoch} on node "
                f"{self.node_id}; send the current configuration",
                reason="STALE_CONFIG_VERSION",
                metadata={
                    "shard": self.shard,
                    "config_version": str(old.config_version),
                },
                preconditions=[
                    PreconditionViolation(
                        "STALE_CONFIG_VERSION",
                        f"shards/{self.shard}",
                        f"version {request.config_version} < {old.config_version}",
                    )
                ],
            )

    def _log_change(self, old: NodeState, new: NodeState) -> None:
        if old.role != new.role or old.epoch != new.epoch:
            # The first role after a start is routine; a change of role is not.
            level = logging.INFO if old.role == ROLE_NONE else logging.WARNING
            _LOGGER.log(
                level,
                "log node %s: shard %s is now %s at epoch %d (was %s at epoch %d)",
                self.node_id,
                self.shard,
                new.role,
                new.epoch,
                old.role,
                old.epoch,
            )

    def _restart_senders(self, state: NodeState) -> None:
        """Run one sender per follower while leading; stop the others."""
        with self.lock:
            leading = self.is_leading_locked(state.epoch) and self._state == state
            wanted = {m.node: m for m in state.followers} if leading else {}
            stale = [
                sender
                for node, sender in self._senders.items()
                if node not in wanted
                or sender.progress.address != wanted[node].address
                or sender.epoch != state.epoch
            ]
            for sender in stale:
                del self._senders[sender.follower]
            started = []
            for node, member in wanted.items():
                if node in self._senders or node == self.node_id:
                    continue
                sender = ReplicationSender(
                    self,
                    node,
                    member.address,
                    state.epoch,
                    self._config.max_message_bytes,
                )
                self._senders[node] = sender
                started.append(sender)
        for sender in stale:
            sender.stop()
        for sender in started:
            sender.start()

    def step_down(self, epoch: int) -> None:
        """Leave the leader role because a follower has seen a higher epoch."""
        with self.lock:
            old = self._state
            if epoch <= old.epoch:
                return
            new = replace(
                old,
                epoch=epoch,
                role=node_state.ROLE_FOLLOWER,
                leader=None,
                in_sync=(),
                config_version=0,
            )
            node_state.save_state(self._state_path, new)
            self._state = new
            self._log_change(old, new)
            self.changed.notify_all()
        self._restart_senders(new)

    def step_aside(
        self, epoch: int, follower: str, last: int, held: int, record_epoch: int
    ) -> None:
        """Stop leading because a follower holds entries this leader lost.

        The follower holds entries `last + 1..held` of epoch `record_epoch`,
        which only this node can have written, so this node's log lost them
        (a write-ahead log cut at start). They are recorded as damage, and
        the node waits as a follower: the coordinator then promotes the
        replica with the most entries, and this node catches up from it.
        """
        with self.lock:
            if not self.is_leading_locked(epoch):
                return
            problem = (
                f"follower {follower} holds entries {last + 1}..{held} of epoch "
                f"{record_epoch} that this leader's log lacks"
            )
            self.wal.record_damage(LogDamage(last, held, "", 0, problem, epoch))
            old = self._state
            new = replace(old, role=node_state.ROLE_FOLLOWER, leader=None, in_sync=())
            node_state.save_state(self._state_path, new)
            self._state = new
            self.changed.notify_all()
        _LOGGER.warning(
            "log shard %s: %s; this node stops leading epoch %d instead of "
            "removing them from %s, so that the coordinator promotes the replica "
            "with the most entries",
            self.shard,
            problem,
            epoch,
            follower,
        )
        self._restart_senders(new)

    # Appends (leader).

    def append(
        self,
        request: node_service_pb2.AppendEntriesRequest,
        timeout: float | None,
        entries: bytes | None = None,
    ) -> node_service_pb2.AppendEntriesResponse:
        """Store a batch on the write quorum and return its sequence numbers.

        `entries` is the batch's serialized `EntryColumns` when the caller
        received it that way (see `parse_append_request`); `request.entries`
        is then not read. The bytes go into the write-ahead log record as
        they are, so the columns are parsed once and not serialized again.

        Raises:
          InvalidArgument: the batch is malformed.
          Unavailable: the node is not the leader of `leader_epoch`, or the
            acknowledgements did not arrive in time. The record then stays in
            the log, so a retry with the same batch id finds it.
        """
        return self.append_batches([(request, entries)], timeout, prefix="")[0]

    def append_batches(
        self,
        batches: Sequence[tuple[node_service_pb2.AppendEntriesRequest, bytes | None]],
        timeout: float | None,
        *,
        prefix: str = "batches",
    ) -> list[node_service_pb2.AppendEntriesResponse]:
        """Store batches in order, each as `append` does; return one answer each.

        Every new batch becomes its own record, one flush covers them all,
        and the call waits once, until the last of them is committed. Field
        names in errors start with `<prefix>[<index>].` (nothing when
        `prefix` is empty).

        Raises:
          InvalidArgument: a batch is malformed or there is none; nothing
            is stored then.
          Unavailable: as for `append`. Batches written before the failure
            stay in the log, and a retry finds them by their ids.
        """
        if not batches:
            raise invalid_field(
                prefix or "batches", "is empty; send at least one batch"
            )
        prepared = []
        for index, (request, entries) in enumerate(batches):
            where = f"{prefix}[{index}]." if prefix else ""
            self._check_shard(request.shard, f"{where}shard")
            if entries is None:
                entries = request.entries.SerializeToString()
            pending = PendingRecord.from_columns(entries)
            count = _check_batch(request.batch_id, pending.record.entries, where)
            error = runs_error(request.index_runs, count)
            if error is not None:
                raise invalid_field(f"{where}index_runs", error)
            prepared.append((request, pending, count))
        wait = self._append_timeout
        if timeout is not None:
            # Return before the caller's deadline, so it receives the RetryInfo.
            wait = min(wait, timeout - DEADLINE_MARGIN_SECONDS)
        deadline = time.monotonic() + wait
        responses = []
        last = written = 0
        with self.lock:
            self._check_ready()
            for request, _, _ in prepared:
                self._check_leader(request.leader_epoch)
            epoch = self._state.epoch
            for request, pending, count in prepared:
                runs = request.index_runs
                held = self._batches.held(request.batch_id)
                # `indexes` is also None when retention deleted every entry
                # stored under the id. The batch is then stored again as a new
                # one.
                indexes = None if held is None else self._still_held(held)
                if held is not None and indexes is not None:
                    # The entries stored earlier must be committed before
                    # this call reports them.
                    last = max(last, held.last)
                    unheld = _unheld_entries(indexes, runs, pending)
                    if unheld is None:
                        responses.append(
                            node_service_pb2.AppendEntriesResponse(
                                first_sequence=held.first,
                                count=held.count,
                                duplicate=True,
                                duplicate_count=count,
                            )
                        )
                        continue
                    pending, runs = unheld
                first = self.wal.last_sequence + 1
                record, payload = pending.complete(
                    first, epoch, request.batch_id, time.time_ns(), runs
                )
                with _disk_full_is_unavailable(self.shard):
                    written = self.wal.write(record, payload)
                stored = written - first + 1
                self._batches.add(request.batch_id, first, stored, runs)
                last = max(last, written)
                responses.append(
                    node_service_pb2.AppendEntriesResponse(
                        first_sequence=first,
                        count=stored,
                        duplicate_count=count - stored,
                    )
                )
        if written:
            with _disk_full_is_unavailable(self.shard):
                self.wal.sync(written)
            self._note_durable()
        self._wait_for_commit(last, deadline, epoch)
        return responses

    def _still_held(self, held: HeldBatch) -> HeldIndexes | None:
        """Return the request indexes of `held` that the store still contains.

        Returns None when it contains none of them. The caller holds the lock.

        A retention pass is the only step that deletes applied entries but
        keeps their records in the batch index (a truncation drops the records
        too). So the entries of an applied record that the store lacks were
        deleted by retention, and a resend stores them again. The router
        rejects entries older than the current retention, so only entries
        that a longer retention now keeps come back. A record above the
        applied sequence counts as held whole. So does a record without index
        runs while any of its entries is stored, because such a batch is one
        unit. Only the leader decides, and the record of the entries stored
        again replicates under the same batch id.

        NOTE: the read runs under the node lock and covers every file that
        contains sequences of the batch. A batch of shuffled old days spread
        over 32 files took about 10 ms of CPU (docs/logs.md, "Known limits").
        """
        store = self._store
        # Resends of recent batches, the usual case, end here without a read.
        if store is None or not store.retention_may_have_deleted(held.first):
            return held.indexes
        applied = store.last_sequence()
        ranges = [
            (first, first + count - 1)
            for first, count, _ in held.records
            if count and first + count - 1 <= applied
        ]
        if not ranges:
            return held.indexes
        stored = store.stored_sequences(ranges)
        held_runs: list[Sequence[int]] = []
        for first, count, runs in held.records:
            last = first + count - 1
            if not count:
                continue
            if last > applied:
                held_runs.append(runs)
                continue
            low, high = np.searchsorted(stored, [first, last + 1]).tolist()
            if low == high:
                continue
            if not runs:
                held_runs.append(runs)
                continue
            held_runs.append(runs_at(runs, (stored[low:high] - first).tolist()))
        if not held_runs:
            return None
        return HeldIndexes(held_runs)

    def _check_leader(self, epoch: int) -> None:
        state = self._state
        if state.role != node_state.ROLE_LEADER:
            leader = state.leader.node if state.leader else "unknown"
            raise Unavailable(
                f"node {self.node_id} is not the leader of shard {self.shard} "
                f"(epoch {state.epoch}, leader {leader}); refresh the shard's "
                "leader and retry",
                reason="NOT_LEADER",
                metadata={"shard": self.shard, "epoch": str(state.epoch)},
                retry_delay=RETRY_DELAY_SECONDS,
            )
        if epoch != state.epoch:
            raise Unavailable(
                f"leader_epoch {epoch} differs from epoch {state.epoch} of the "
                f"leader of shard {self.shard}; refresh the shard's leader and "
                "retry",
                reason="STALE_EPOCH",
                metadata={"shard": self.shard, "epoch": str(state.epoch)},
                retry_delay=RETRY_DELAY_SECONDS,
            )

    def _wait_for_commit(self, last: int, deadline: float, epoch: int) -> None:
        with self.lock:
            while self.commit_sequence < last:
                if self._stopping:
                    raise Unavailable(
                        f"node {self.node_id} is stopping; retry the batch",
                        reason="NODE_STOPPING",
                        retry_delay=RETRY_DELAY_SECONDS,
                    )
                if not self.is_leading_locked(epoch):
                    self._check_leader(epoch)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(
                        f"shard {self.shard}: the in-sync followers did not "
                        f"acknowledge sequence {last} in time; retry with the "
                        "same batch_id",
                        reason="REPLICATION_TIMEOUT",
                        metadata={"shard": self.shard, "sequence": str(last)},
                        retry_delay=RETRY_DELAY_SECONDS,
                    )
                self.changed.wait(remaining)

    def _note_durable(self) -> None:
        with self.lock:
            durable = self.wal.durable_sequence
            if durable > self.durable_sequence:
                self.durable_sequence = durable
                self._advance_commit_locked()
                self.changed.notify_all()

    def on_acknowledged_locked(self, follower: str, sequence: int) -> None:
        """Record a follower's acknowledgement; the node lock is held."""
        self._acknowledged[follower] = sequence
        self._advance_commit_locked()
        self.changed.notify_all()

    def _advance_commit_locked(self) -> None:
        state = self._state
        if state.role != node_state.ROLE_LEADER:
            return
        target = self.durable_sequence
        if not state.leader_only_ack:
            for member in state.in_sync:
                if member.node != self.node_id:
                    target = min(target, self._acknowledged.get(member.node, 0))
        if target > self.commit_sequence:
            self.commit_sequence = target
            self.changed.notify_all()

    # Replication (follower).

    def replicate(
        self,
        request: replication_service_pb2.ReplicateEntriesRequest,
        payloads: Sequence[bytes] | None = None,
    ) -> replication_service_pb2.ReplicateEntriesResponse:
        """Handle one message from a leader and return the follower's position.

        `payloads` contains the serialized form of each record of the request,
        which the write-ahead log then stores without serializing again.
        """
        self._check_shard(request.shard, "shard")
        with self._replicate_lock:
            with self.lock:
                self._check_ready()
                if request.leader_epoch < self._state.epoch:
                    return self._replication_reply_locked()
                stopped = self._follow_locked(request)
            if stopped:
                self._restart_senders(self._state)
            if request.HasField("truncate_after"):
                self._truncate(request.truncate_after)
            last = self._append_replicated(request.records, payloads)
            self._clear_damage_if_caught_up(request, last)
            with self.lock:
                commit = min(request.commit_sequence, last)
                if commit > self.commit_sequence:
                    self.commit_sequence = commit
                    self.changed.notify_all()
                if request.HasField("snapshot"):
                    self._take_snapshot_offer_locked(request)
                return self._replication_reply_locked()

    def _follow_locked(
        self, request: replication_service_pb2.ReplicateEntriesRequest
    ) -> bool:
        """Adopt the sender as leader if needed; return whether the role changed.

        Raises:
          FailedPrecondition: this node leads the same epoch.
        """
        old = self._state
        same_leader = old.leader is not None and old.leader.node == request.leader
        if (
            request.leader_epoch == old.epoch
            and old.role == node_state.ROLE_FOLLOWER
            and same_leader
        ):
            return False
        if request.leader_epoch == old.epoch and (
            old.role == node_state.ROLE_LEADER or (old.leader and not same_leader)
        ):
            raise FailedPrecondition(
                f"node {request.leader} sends as leader of epoch "
                f"{request.leader_epoch}, but that epoch's leader is "
                f"{old.leader.node if old.leader else self.node_id}",
                reason="CONFLICTING_LEADER",
                metadata={"shard": self.shard, "epoch": str(old.epoch)},
            )
        address = old.leader.address if same_leader and old.leader else ""
        new = replace(
            old,
            epoch=request.leader_epoch,
            role=node_state.ROLE_FOLLOWER,
            leader=Member(request.leader, address),
            in_sync=(),
            config_version=(
                old.config_version if request.leader_epoch == old.epoch else 0
            ),
        )
        node_state.save_state(self._state_path, new)
        self._state = new
        self._log_change(old, new)
        self.changed.notify_all()
        return old.role == node_state.ROLE_LEADER

    def _clear_damage_if_caught_up(
        self, request: replication_service_pb2.ReplicateEntriesRequest, last: int
    ) -> None:
        """Forget the log's damage once another leader's log has replaced it.

        That is when this node follows a leader other than itself, of the
        epoch in which the damage was found or a later one, and stores every
        entry that leader has acknowledged.
        """
        damage = self.wal.damage
        if (
            damage is None
            or request.leader == self.node_id
            or request.leader_epoch < damage.epoch
            or last < request.commit_sequence
        ):
            return
        self.wal.clear_damage()
        _LOGGER.warning(
            "log shard %s: holds every entry that leader %s acknowledged "
            "(through sequence %d); the entries lost to the damaged write-ahead "
            "log are replaced",
            self.shard,
            request.leader,
            request.commit_sequence,
        )

    def _truncate(self, sequence: int) -> None:
        with self._apply_lock:
            removed = self.wal.truncate_after(sequence)
            self._store.delete_after(sequence)
            with self.lock:
                self._batches.drop_after(sequence)
                self._applied = min(self._applied, sequence)
                self.durable_sequence = min(
                    self.durable_sequence, self.wal.durable_sequence
                )
                self.commit_sequence = min(self.commit_sequence, sequence)
        if removed:
            _LOGGER.warning(
                "log shard %s: removed %d entries after sequence %d on the "
                "leader's request",
                self.shard,
                removed,
                sequence,
            )

    def _append_replicated(
        self,
        records: Sequence[node_service_pb2.LogRecord],
        payloads: Sequence[bytes] | None,
    ) -> int:
        if payloads is None or len(payloads) != len(records):
            payloads = [None] * len(records)
        last = self.wal.last_sequence
        written = False
        for record, payload in zip(records, payloads, strict=True):
            count = entry_count(record)
            record_last = record.first_sequence + count - 1
            if count == 0 or record_last <= last:
                continue
            if record.first_sequence > last + 1:
                break
            if record.first_sequence <= last:
                # The entries up to `last` are this record's first ones,
                # which this node kept through a truncation, and the batch
                # index contains them as a record of their own.
                record = slice_record(record, last + 1, record_last)
                payload = None
            self.wal.write(record, payload)
            with self.lock:
                self._batches.add(
                    record.batch_id,
                    record.first_sequence,
                    entry_count(record),
                    record.index_runs,
                )
            last = record_last
            written = True
        if written:
            self.wal.sync(last)
            self._note_durable()
        return last

    def _replication_reply_locked(
        self,
    ) -> replication_service_pb2.ReplicateEntriesResponse:
        return replication_service_pb2.ReplicateEntriesResponse(
            node=self.node_id,
            last_sequence=self.wal.last_sequence,
            leader_epoch=self._state.epoch,
            last_record_epoch=self.wal.last_record_epoch(),
        )

    # Snapshots.

    def _take_snapshot_offer_locked(
        self, request: replication_service_pb2.ReplicateEntriesRequest
    ) -> None:
        """Start fetching a snapshot when the leader purged entries this node needs.

        The node lock is held.
        """
        offer = request.snapshot
        if self.wal.last_sequence + 1 >= offer.first_sequence:
            return
        if self._snapshot_progress is not None:
            call = self._snapshot_call
            if request.leader_epoch > self._snapshot_epoch and call is not None:
                # The snapshot comes from a deposed leader; fetch it anew.
                call.cancel()
            return
        if self._stopping:
            return
        if time.monotonic() - self._snapshot_failed_at < SNAPSHOT_RETRY_SECONDS:
            return
        if not offer.address:
            return
        self._snapshot_progress = snapshots.Progress()
        self._snapshot_epoch = request.leader_epoch
        _LOGGER.warning(
            "log shard %s: the leader %s purged entries after sequence %d that "
            "this node needs (its log begins at %d); fetching a snapshot",
            self.shard,
            request.leader,
            self.wal.last_sequence,
            offer.first_sequence,
        )
        thread = threading.Thread(
            target=self._fetch_snapshot,
            args=(offer.address, request.leader_epoch),
            name=f"snapshot-{self.shard}",
            daemon=True,
        )
        thread.start()

    def _fetch_snapshot(self, address: str, epoch: int) -> None:
        progress = self._snapshot_progress
        assert progress is not None
        channel = grpc.insecure_channel(
            address, options=node_channel_options(self._config.max_message_bytes)
        )
        config = self._config
        request = replication_service_pb2.FetchSnapshotRequest(
            shard=self.shard, node=self.node_id, leader_epoch=epoch
        )
        try:
            manifest = snapshots.receive(
                self._directory,
                channel,
                request,
                lambda path: _open_store(path, config, compact=False),
                progress,
                lambda: self._stopping,
                lambda call: setattr(self, "_snapshot_call", call),
                # Signed like replication, for a leader with auth_required.
                auth.outgoing_metadata(),
            )
            self._install_snapshot(manifest, progress)
        except (grpc.RpcError, snapshots.SnapshotError) as exc:
            detail = (
                f"{exc.code().name}: {exc.details()}"
                if isinstance(exc, grpc.RpcError)
                else str(exc)
            )
            _LOGGER.warning(
                "log shard %s: fetching a snapshot from %s failed (%s); it is "
                "fetched again on the leader's next offer",
                self.shard,
                address,
                detail,
            )
            self._snapshot_failed_at = time.monotonic()
        except Exception:
            _LOGGER.exception(
                "log shard %s: fetching a snapshot from %s failed", self.shard, address
            )
            self._snapshot_failed_at = time.monotonic()
        finally:
            channel.close()
            with self.lock:
                self._snapshot_progress = None
                self._snapshot_call = None
                self.changed.notify_all()

    def _install_snapshot(
        self, manifest: snapshots.Manifest, progress: snapshots.Progress
    ) -> None:
        """Replace the store, the log and the batch ids with a received snapshot.

        Reads fail with NODE_NOT_READY meanwhile. A crash at any point is
        finished by the next `open`.
        """
        with self._replicate_lock, self._apply_lock:
            with self.lock:
                if self._stopping:
                    # The next start installs it.
                    return
                if self.wal.last_sequence >= manifest.last_sequence:
                    # Another leader sent the records meanwhile.
                    snapshots.finish(self._directory)
                    return
                progress.installing = True
                self._ready = False
                self.changed.notify_all()
            try:
                self._store.close()
                snapshots.install_store(self._directory)
                self._finish_snapshot(manifest)
                self._store = _open_store(self._directory / "store", self._config)
            except BaseException:
                _LOGGER.exception(
                    "log shard %s: installing the snapshot through sequence %d "
                    "failed; restart the node to finish it",
                    self.shard,
                    manifest.last_sequence,
                )
                raise
            last = manifest.last_sequence
            with self.lock:
                self._applied = last
                self.durable_sequence = last
                self.commit_sequence = min(self.commit_sequence, last)
                self._installed_snapshot = last
                self._ready = True
                self.changed.notify_all()
        _LOGGER.warning(
            "log shard %s: installed a snapshot of %d entries through sequence %d; "
            "replicating from sequence %d",
            self.shard,
            progress.received_entries,
            last,
            last + 1,
        )

    def _finish_snapshot(self, manifest: snapshots.Manifest) -> None:
        """Restart the log after the snapshot and take its batch ids.

        The new store is already in place. The write-ahead log is open; the
        store may be closed.
        """
        self.wal.restart_after(manifest.last_sequence, manifest.epochs)
        path = self._batches.path
        write_file_atomically(path, snapshots.ready_batches(self._directory))
        batches = BatchIndex(path)
        batches.load()
        snapshots.finish(self._directory)
        with self.lock:
            self._batches = batches

    def fetch_snapshot(
        self,
        request: replication_service_pb2.FetchSnapshotRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[replication_service_pb2.FetchSnapshotResponse]:
        """Stream a snapshot of the stored entries to a follower (leader side)."""
        self._check_shard(request.shard, "shard")
        if not request.node:
            raise invalid_field(
                "node", "is empty; send the id of the node that fetches the snapshot"
            )
        with self.lock:
            self._check_ready()
            if not self.is_leading_locked(request.leader_epoch):
                state = self._state
                raise FailedPrecondition(
                    f"leader_epoch {request.leader_epoch}: node {self.node_id} is "
                    f"{state.role} of shard {self.shard} at epoch {state.epoch}; "
                    "fetch the snapshot from the leader of the current epoch",
                    reason="NOT_LEADER",
                    metadata={"shard": self.shard, "epoch": str(state.epoch)},
                )
        token = object()
        # The applier holds this lock while it moves records into the store,
        # so the store's last sequence and the batch ids agree.
        with self._apply_lock:
            last = self._store.last_sequence()
            with self.lock:
                self._snapshot_holds[token] = (last, None)
                source = snapshots.SnapshotSource(
                    last_sequence=last,
                    last_record_epoch=self.wal.history.epoch_at(last),
                    epochs=[
                        e
                        for e in self.wal.history.entries
                        if e.first_sequence <= last + 1
                    ],
                    batches=self._batches.ended_through(last),
                )
        _LOGGER.warning(
            "log shard %s: sending %s a snapshot through sequence %d",
            self.shard,
            request.node,
            last,
        )
        # A throttled stream waits between messages. Ending the call or
        # stopping the node ends the wait, so no handler thread outlives the
        # server by a throttle interval.
        context.add_callback(self.notify)
        try:
            yield from snapshots.leader_messages(
                self._store,
                source,
                self._config.max_message_bytes,
                int(self._config.log_snapshot_bytes_per_second),
                wait=lambda seconds: self._wait_while_serving(seconds, context),
            )
        finally:
            with self.lock:
                until = time.monotonic() + SNAPSHOT_HOLD_SECONDS
                self._snapshot_holds[token] = (last, until)

    def _wait_while_serving(
        self, seconds: float, context: grpc.ServicerContext
    ) -> bool:
        """Return True after `seconds`, or False once the call or the node stops."""
        deadline = time.monotonic() + seconds
        with self.lock:
            while not self._stopping and not self.server_stopping():
                if not context.is_active():
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self.changed.wait(remaining)
        return False

    # Applying records to the store.

    def _apply_pending(self) -> None:
        """Move the durable records that the store lacks into it."""
        with self._apply_lock:
            target = self.wal.durable_sequence
            start = self._store.last_sequence() + 1
            while start <= target:
                records = self.wal.read_from(start, APPLY_BATCH_BYTES, through=target)
                if not records:
                    break
                self._store.apply(records)
                end = records[-1].first_sequence + entry_count(records[-1]) - 1
                with self.lock:
                    self._applied = max(self._applied, end)
                    self.changed.notify_all()
                start = end + 1
            with self.lock:
                self._applied = max(self._applied, min(target, self.wal.last_sequence))
                self.changed.notify_all()

    def _apply_loop(self) -> None:
        while True:
            with self.lock:
                while not self._stopping and self._applied >= self.durable_sequence:
                    self.changed.wait(1.0)
                linger_end = time.monotonic() + APPLY_LINGER_SECONDS
                while (
                    not self._stopping
                    and self._store_waiters == 0
                    and self.durable_sequence - self._applied < APPLY_GROUP_ENTRIES
                ):
                    remaining = linger_end - time.monotonic()
                    if remaining <= 0:
                        break
                    self.changed.wait(remaining)
                if self._stopping:
                    return
            try:
                self._apply_pending()
                self._purge()
            except Exception:
                _LOGGER.exception(
                    "log shard %s: applying records to the store failed; "
                    "retrying in 1 s",
                    self.shard,
                )
                time.sleep(1.0)

    def _purge(self) -> None:
        """Delete write-ahead log segments that every replica no longer needs."""
        keep_bytes = int(self._config.log_wal_keep_bytes)
        with self.lock:
            through = self._applied
            if self._state.role == node_state.ROLE_LEADER:
                needed = through
                for member in self._state.followers:
                    needed = min(needed, self._acknowledged.get(member.node, 0))
                if keep_bytes > 0:
                    # Followers further behind receive a snapshot instead.
                    needed = max(needed, self.wal.purge_point_keeping(keep_bytes))
                through = min(through, needed)
            now = time.monotonic()
            for token, (end, until) in list(self._snapshot_holds.items()):
                if until is not None and until < now:
                    del self._snapshot_holds[token]
                else:
                    through = min(through, end)
        point = self.wal.purge_point(through)
        if point == 0:
            return
        with self._apply_lock:
            # The batch ids go to disk before their records leave the log.
            with self.lock:
                self._batches.save_through(point)
            purged = self.wal.purge_through(point)
            with self.lock:
                self._batches.trim(point)
        _LOGGER.info(
            "log shard %s: purged %d entries through sequence %d from the "
            "write-ahead log",
            self.shard,
            purged,
            point,
        )

    # Reads.

    def wait_until_visible(self, timeout: float | None) -> None:
        """Wait until the store contains every entry that a read must return.

        On a leader that is every entry committed when the call began. A
        follower learns the commit sequence one message after it stored the
        entries, so it waits for every entry it stored durably when the call
        began. The leader acknowledges an entry only after each in-sync
        follower stored it, so a read that falls back to such a follower
        returns every acknowledged entry.

        Raises:
          Unavailable: the node is not ready or the store did not catch up.
        """
        with self.lock:
            self._check_ready()
            if self._state.role == node_state.ROLE_LEADER:
                target = self.commit_sequence
            else:
                target = max(self.commit_sequence, self.durable_sequence)
        self._wait_applied(target, timeout)

    def _wait_applied(self, target: int, timeout: float | None) -> None:
        """Wait until the applier moved every record through `target` into the store.

        A waiting call ends the applier's linger, so it applies at once.

        Raises:
          Unavailable: the node is not ready, or the store did not reach
            `target` within `timeout` (at most READ_WAIT_SECONDS).
        """
        wait = READ_WAIT_SECONDS if timeout is None else min(timeout, READ_WAIT_SECONDS)
        deadline = time.monotonic() + wait
        with self.lock:
            self._check_ready()
            if self._applied >= target:
                return
            self._store_waiters += 1
            self.changed.notify_all()
            try:
                while self._applied < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        raise Unavailable(
                            f"shard {self.shard}: node {self.node_id} has applied "
                            f"sequence {self._applied} of {target}; retry shortly",
                            reason="CATCHING_UP",
                            metadata={"shard": self.shard},
                            retry_delay=RETRY_DELAY_SECONDS,
                        )
                    self.changed.wait(remaining)
            finally:
                self._store_waiters -= 1

    def query(
        self, request: node_service_pb2.QueryEntriesRequest, timeout: float | None
    ) -> node_service_pb2.QueryEntriesResponse:
        """Return one page of matching entries and the sequence the scan covered.

        The response's `last_sequence` is the store's visible sequence, read
        before the scan and passed to it as `max_sequence`. So the page
        contains every matching entry up to it, and no entry above it. The
        router sends it back as `max_sequence` for the next pages, which then
        see the same entries: a record applied during the scan is left out of
        every page rather than cut at the page's cursor.
        """
        self._check_shard(request.shard, "shard")
        if request.limit < 1:
            raise invalid_field(
                "limit", f"is {request.limit}; send a limit of at least 1"
            )
        self.wait_until_visible(timeout)
        bound = self._store.visible_sequence()
        if request.filter.max_sequence > 0:
            bound = min(bound, request.filter.max_sequence)
        if bound <= 0:
            # Nothing was applied yet. A max_sequence of 0 would read every
            # entry, those applied during the scan included.
            return node_service_pb2.QueryEntriesResponse(last_sequence=0)
        entry_filter = node_service_pb2.EntryFilter()
        entry_filter.CopyFrom(request.filter)
        entry_filter.max_sequence = bound
        after = None
        if request.HasField("after"):
            after = (request.after.timestamp, request.after.sequence)
        columns, sequences = self._store.query(
            entry_filter,
            after=after,
            descending=request.descending,
            limit=request.limit,
        )
        budget = page_budget(self._config.max_message_bytes)
        size_limited = fit_columns(columns, sequences, budget)
        return node_service_pb2.QueryEntriesResponse(
            entries=columns,
            sequences=sequences,
            last_sequence=bound,
            size_limited=size_limited,
        )

    def count(
        self, request: node_service_pb2.CountEntriesRequest, timeout: float | None
    ) -> node_service_pb2.CountEntriesResponse:
        self._check_shard(request.shard, "shard")
        if request.histogram_step < 0:
            raise invalid_field(
                "histogram_step",
                f"is {request.histogram_step}; send 0 for no histogram or a "
                "positive width in nanoseconds",
            )
        self.wait_until_visible(timeout)
        severities, services, buckets = self._store.count(
            request.filter,
            histogram_start=request.histogram_start,
            histogram_step=request.histogram_step,
        )
        return node_service_pb2.CountEntriesResponse(
            severity_counts=[
                logs_service_pb2.SeverityCount(severity=s, count=n)
                for s, n in sorted(severities.items())
            ],
            service_counts=[
                logs_service_pb2.ServiceCount(service=s, count=n)
                for s, n in sorted(services.items())
            ],
            bucket_counts=[
                node_service_pb2.BucketCount(bucket=b, severity=s, count=n)
                for (b, s), n in sorted(buckets.items())
            ],
        )

    def follow(
        self,
        request: node_service_pb2.FollowEntriesRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[node_service_pb2.FollowEntriesResponse]:
        """Yield committed entries after `after_sequence`, then wait for more.

        Raises:
          Unavailable: the node is not ready, or `leader_epoch` is set and the
            node is not the shard's leader at that epoch.
          OutOfRange: retention deleted the entries after `after_sequence`.
        """
        self._check_shard(request.shard, "shard")
        flt = node_service_pb2.EntryFilter()
        flt.CopyFrom(request.filter)
        flt.ClearField("start_time")
        flt.ClearField("end_time")
        with self.lock:
            self._check_ready()
            if request.leader_epoch > 0:
                # A follower that the coordinator has just promoted may lack
                # the old leader's last entries and cannot yet tell where its
                # log parts from the caller's, so the caller waits for it.
                self._check_leader(request.leader_epoch)
            after = request.after_sequence
            if after < 0:
                after = self.commit_sequence
            elif request.after_epoch > 0:
                # A newer epoch that begins at or before `after` means that
                # the caller read up to `after` from another log. That log
                # differs from this one after the end of `after_epoch`, for
                # example an old leader whose last entries no follower stored.
                after = min(after, self.wal.history.end_of(request.after_epoch, after))
            epoch = self.wal.history.epoch_at(after)
        if request.after_sequence >= 0:
            self._check_follow_start(after)
        with self.lock:
            self._store_waiters += 1
            self.changed.notify_all()
        try:
            # The first message signals to the caller that the stream is open,
            # and gives where it starts.
            yield node_service_pb2.FollowEntriesResponse(
                last_sequence=after, last_epoch=epoch
            )
            yield from self._follow(flt, after, context)
        finally:
            with self.lock:
                self._store_waiters -= 1

    def _check_follow_start(self, after: int) -> None:
        """Reject a start position whose next entries retention has deleted.

        Sequence numbers have no gaps, so when the lowest sequence the store
        contains is above `after + 1`, the entries in between were deleted.
        The store does not record the services of deleted entries, so the
        check ignores the stream's filter. A per-service retention pass on one
        service also rejects a stream that follows only other services.

        Raises:
          OutOfRange: the store no longer contains the entry after `after`.
        """
        first = self._store.first_sequence()
        if after + 1 >= first:
            return
        raise OutOfRange(
            f"after_sequence {after} is too old: shard {self.shard} no longer "
            f"stores the entries after it, because retention deleted every entry "
            f"below sequence {first}, of any service; follow from sequence "
            f"{first - 1} or later",
            reason="ENTRIES_EXPIRED",
            metadata={"shard": self.shard, "first_sequence": str(first)},
        )

    def _follow(
        self,
        flt: node_service_pb2.EntryFilter,
        after: int,
        context: grpc.ServicerContext,
    ) -> Iterator[node_service_pb2.FollowEntriesResponse]:
        context.add_callback(self.notify)
        last_message = time.monotonic()
        max_bytes = min(page_budget(self._config.max_message_bytes), FOLLOW_BATCH_BYTES)
        span = FOLLOW_BATCH_ENTRIES
        while context.is_active():
            with self.lock:
                target = min(self.commit_sequence, self._applied)
                while target <= after and not self._stopping:
                    remaining = last_message + FOLLOW_KEEPALIVE_SECONDS
                    remaining -= time.monotonic()
                    if remaining <= 0 or not context.is_active():
                        break
                    self.changed.wait(remaining)
                    target = min(self.commit_sequence, self._applied)
                if self._stopping:
                    return
            if self.server_stopping():
                return
            if target > after:
                flt.max_sequence = target
                columns, sequences, examined = self._store.follow_page(
                    after,
                    flt,
                    span=span,
                    limit=FOLLOW_BATCH_ENTRIES,
                    max_bytes=max_bytes,
                )
                span = _next_follow_span(span, len(sequences), examined - after)
                after = max(after, min(examined, target))
                if sequences:
                    last_message = time.monotonic()
                    yield node_service_pb2.FollowEntriesResponse(
                        entries=columns,
                        sequences=sequences,
                        last_sequence=after,
                        last_epoch=self._epoch_at(after),
                    )
                    continue
            if time.monotonic() - last_message >= FOLLOW_KEEPALIVE_SECONDS:
                last_message = time.monotonic()
                yield node_service_pb2.FollowEntriesResponse(
                    last_sequence=after, last_epoch=self._epoch_at(after)
                )

    def _epoch_at(self, sequence: int) -> int:
        with self.lock:
            return self.wal.history.epoch_at(sequence)

    def apply_retention(
        self,
        request: node_service_pb2.ApplyRetentionRequest,
        timeout: float | None = None,
    ) -> node_service_pb2.ApplyRetentionResponse:
        """Delete the expired entries up to the request's sequence bound.

        The bound is `request.max_sequence`, or with 0 the commit sequence on
        a leader and the durable sequence elsewhere. The node first waits
        until the applier moved every record up to the bound into the store,
        so a record that was durable but not yet applied does not escape the
        pass. Entries above the bound are kept, so replicas that receive the
        same bound delete the same entries.

        Raises:
          InvalidArgument: `max_sequence` is negative.
          Unavailable: the node is not ready, or its store did not reach the
            bound in time (a follower that lags behind the leader).
        """
        if request.max_sequence < 0:
            raise invalid_field(
                "max_sequence",
                f"is {request.max_sequence}; send 0 for the node's own bound or "
                "the leader's bound from its ApplyRetention response",
            )
        with self.lock:
            self._check_ready()
            bound = request.max_sequence
            if bound == 0:
                if self._state.role == node_state.ROLE_LEADER:
                    bound = self.commit_sequence
                else:
                    bound = self.durable_sequence
        if bound == 0:
            return node_service_pb2.ApplyRetentionResponse()
        self._wait_applied(bound, timeout)
        deleted, dropped = self._store.apply_retention(
            request.default_cutoff,
            dict(request.service_cutoffs),
            max_sequence=bound,
        )
        return node_service_pb2.ApplyRetentionResponse(
            deleted_count=deleted, dropped_partitions=dropped, max_sequence=bound
        )

    # Status.

    def status(self) -> replication_service_pb2.GetNodeStatusResponse:
        start = timestamp_pb2.Timestamp()
        start.FromNanoseconds(int(self.start_time * 1e9))
        response = replication_service_pb2.GetNodeStatusResponse(
            node=self.node_id, address=self.address, start_time=start
        )
        with self.lock:
            state = self._state
            replica = response.shards.add(
                shard=self.shard,
                role=_ROLE_ENUMS.get(state.role, 0),
                leader_epoch=state.epoch,
                ready=self._ready,
            )
            if self._snapshot_progress is not None:
                replica.snapshot.CopyFrom(self._snapshot_progress.to_proto())
            if not self._ready:
                return response
            replica.last_sequence = self.wal.last_sequence
            replica.commit_sequence = self.commit_sequence
            replica.last_record_epoch = self.wal.last_record_epoch()
            replica.installed_snapshot_sequence = self._installed_snapshot
            damage = self.wal.damage
            if damage is not None:
                replica.log_damage.CopyFrom(damage_proto(damage))
            if state.role == node_state.ROLE_LEADER:
                senders = [self._senders.get(m.node) for m in state.followers]
                for member, sender in zip(state.followers, senders, strict=True):
                    replica.followers.append(self._follower_status(member, sender))
        return response

    def _follower_status(
        self, member: Member, sender: ReplicationSender | None
    ) -> logs_service_pb2.ReplicaStatus:
        status = logs_service_pb2.ReplicaStatus(node=member.node)
        if sender is None:
            return status
        progress = sender.progress
        status.reachable = progress.reachable
        status.last_sequence = progress.acknowledged
        status.lag_entries = max(0, self.wal.last_sequence - progress.acknowledged)
        if progress.last_contact is not None:
            status.last_contact_time.FromNanoseconds(int(progress.last_contact * 1e9))
        missing = self.wal.record_at(progress.acknowledged + 1)
        if missing is not None:
            lag = duration_pb2.Duration()
            lag.FromNanoseconds(max(0, time.time_ns() - missing.receive_time))
            status.lag.CopyFrom(lag)
        return status

    # Checks.

    def _check_ready(self) -> None:
        if not self._ready or self._stopping:
            raise Unavailable(
                f"node {self.node_id} is not serving shard {self.shard} yet "
                "(replaying its write-ahead log, or stopping); retry shortly",
                reason="NODE_NOT_READY",
                metadata={"shard": self.shard},
                retry_delay=RETRY_DELAY_SECONDS,
            )

    def _check_shard(self, shard: str, field: str) -> None:
        if shard != self.shard:
            raise NotFound(
                f"{field}: node {self.node_id} stores shard {self.shard!r}, not "
                f"{shard!r}; send the request to a node of that shard",
                reason="SHARD_NOT_ON_NODE",
                metadata={"shard": shard, "node": self.node_id},
            )


def damage_proto(damage: LogDamage) -> logs_service_pb2.LogDamage:
    """Return a damage record as the LogDamage message of the status calls."""
    return logs_service_pb2.LogDamage(
        first_lost_sequence=damage.after + 1,
        last_lost_sequence=damage.seen_through,
        location=(
            f"wal/{damage.segment} at byte {damage.offset}"
            if damage.segment
            else damage.problem
        ),
    )


def _store_covers_damage(damage: LogDamage, store_last: int) -> bool:
    """Return whether the store contains every entry that the damage may have lost.

    That is known only when intact records behind the damage showed the
    log's last sequence (`seen_through` above `after`).
    """
    return damage.after < damage.seen_through <= store_last


def _lost_range(damage: LogDamage) -> str:
    first = damage.after + 1
    if damage.seen_through >= first:
        return f"entries {first}..{damage.seen_through}"
    return f"any entries after sequence {damage.after} (none is known)"


def _next_follow_span(span: int, found: int, examined: int) -> int:
    """Return the span of a follower's next page after one that found `found`
    entries in `examined` sequence numbers."""
    if found >= FOLLOW_BATCH_ENTRIES // 2:
        return FOLLOW_BATCH_ENTRIES
    if examined >= span:
        return min(span * 2, FOLLOW_MAX_SPAN)
    return span


def _check_batch(
    batch_id: str, columns: node_service_pb2.EntryColumns, where: str = ""
) -> int:
    """Return the number of entries of a batch after checking its shape.

    `where` goes before the field names in errors, such as `batches[2].`.
    """
    if not batch_id:
        raise invalid_field(
            f"{where}batch_id", "is empty; send an id that stays the same on retries"
        )
    count = len(columns.timestamps)
    if count == 0:
        raise invalid_field(f"{where}entries", "contains no entries; send at least one")
    for descriptor in columns.DESCRIPTOR.fields:
        if not descriptor.is_repeated:
            continue
        length = len(getattr(columns, descriptor.name))
        if length == count or (length == 0 and descriptor.name in SPARSE_FIELDS):
            continue
        if descriptor.name in SPARSE_FIELDS:
            fix = "send one value per entry, or none when every entry has the default"
        else:
            fix = "send one value per entry in every column"
        raise invalid_field(
            f"{where}entries.{descriptor.name}",
            f"contains {length} values but entries.timestamps contains {count}; " + fix,
        )
    if columns.observed_timestamps and columns.observed_timestamp:
        raise invalid_field(
            f"{where}entries.observed_timestamp",
            f"is {columns.observed_timestamp} but entries.observed_timestamps "
            "has values too; send either one observed time per entry or one for "
            "the whole batch",
        )
    return count


def _unheld_entries(
    held: HeldIndexes, runs: Sequence[int], pending: PendingRecord
) -> tuple[PendingRecord, Sequence[int]] | None:
    """Return the entries of a batch that the node does not store yet, with runs.

    `held` contains the request indexes that the node stores under the
    batch's id, and `runs` contains the batch's index runs. Returns None when
    the node stores every entry.
    """
    positions, new_runs = held.new_entries(runs)
    if not positions:
        return None
    if new_runs == list(runs):
        return pending, runs
    columns = pending.record.entries
    unheld = EntryColumns()
    for start, stop in positions:
        # Every slice has the same `observed_timestamp`, and a sparse column
        # is empty in each of them or in none.
        unheld.MergeFrom(slice_columns(columns, start, stop))
    return PendingRecord.from_columns(unheld.SerializeToString()), new_runs


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:
        return None
    return max(remaining, 0.0)


class LogNodeServicer(node_service_pb2_grpc.LogNodeServiceServicer):
    """LogNodeService over one `LogNode`.

    Each open FollowEntries call occupies a handler thread of the node's
    sync server. So it takes a slot from `follows`, and the server has that
    many threads on top of `workers` (see `start_node`).
    """

    def __init__(self, node: LogNode, follows: OpenStreams) -> None:
        self._node = node
        self._follows = follows

    def AppendEntries(self, request, context):
        if isinstance(request, ReceivedBatch):
            return self._node.append(
                request.request, _timeout(context), request.entries
            )
        return self._node.append(request, _timeout(context))

    def AppendBatches(self, request, context):
        if isinstance(request, node_service_pb2.AppendBatchesRequest):
            batches = [(batch, None) for batch in request.batches]
        else:
            batches = [(batch.request, batch.entries) for batch in request]
        responses = self._node.append_batches(batches, _timeout(context))
        return node_service_pb2.AppendBatchesResponse(results=responses)

    def QueryEntries(self, request, context):
        return self._node.query(request, _timeout(context))

    def CountEntries(self, request, context):
        return self._node.count(request, _timeout(context))

    def FollowEntries(self, request, context):
        slot = self._follows.acquire("FollowEntries", context)
        try:
            yield from self._node.follow(request, context)
        finally:
            slot.release()

    def ConfigureShard(self, request, context):
        return self._node.configure(request)

    def ApplyRetention(self, request, context):
        return self._node.apply_retention(request, _timeout(context))


class ReplicationServicer(replication_service_pb2_grpc.ReplicationServiceServicer):
    """ReplicationService over one `LogNode`."""

    def __init__(self, node: LogNode) -> None:
        self._node = node

    def ReplicateEntries(self, request_iterator, context):
        try:
            for message in request_iterator:
                if self._node.server_stopping():
                    return
                yield self._node.replicate(message.request, message.payloads)
        except grpc.RpcError:
            # The leader went away or cancelled the stream. It reconnects and
            # resends from the last sequence this node acknowledged.
            if context.is_active():
                raise

    def FetchSnapshot(self, request, context):
        yield from self._node.fetch_snapshot(request, context)

    def GetNodeStatus(self, request, context):
        return self._node.status()


@dataclass(frozen=True)
class ReceivedBatch:
    """An AppendEntriesRequest whose entries are still serialized.

    `request` holds every field except `entries`; `entries` is the
    serialized `EntryColumns`.
    """

    request: node_service_pb2.AppendEntriesRequest
    entries: bytes


_APPEND_ENTRIES_FIELD = node_service_pb2.AppendEntriesRequest.DESCRIPTOR.fields_by_name[
    "entries"
].number


def parse_append_request(data: bytes) -> ReceivedBatch:
    """Parse a serialized AppendEntriesRequest, leaving its entries serialized."""
    entries, rest = split_field(data, _APPEND_ENTRIES_FIELD)
    return ReceivedBatch(
        node_service_pb2.AppendEntriesRequest.FromString(rest), entries
    )


_BATCHES_FIELD = node_service_pb2.AppendBatchesRequest.DESCRIPTOR.fields_by_name[
    "batches"
].number


def parse_append_batches(data: bytes) -> list[ReceivedBatch]:
    """Parse a serialized AppendBatchesRequest, leaving the entries serialized."""
    return [
        parse_append_request(batch) for batch in embedded_messages(data, _BATCHES_FIELD)
    ]


# Handlers that receive requests with their entries still serialized.
_RAW_PARSERS = {
    "AppendEntries": parse_append_request,
    "AppendBatches": parse_append_batches,
}


def add_node_service(node: LogNode, server: grpc.Server, follows: OpenStreams) -> None:
    """Serve LogNodeService for `node`, keeping received batches serialized.

    It registers the same handlers as the generated
    `add_LogNodeServiceServicer_to_server`, except that AppendEntries and
    AppendBatches receive `ReceivedBatch`es. `follows` limits the open
    FollowEntries calls.
    """
    servicer = LogNodeServicer(node, follows)
    handlers = {}
    for method in NODE_SERVICE.methods:
        request_class = getattr(node_service_pb2, method.input_type.name)
        response_class = getattr(node_service_pb2, method.output_type.name)
        handler = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = handler(
            getattr(servicer, method.name),
            request_deserializer=_RAW_PARSERS.get(
                method.name, request_class.FromString
            ),
            response_serializer=response_class.SerializeToString,
        )
    name = NODE_SERVICE.full_name
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(name, handlers),)
    )
    server.add_registered_method_handlers(name, handlers)


@dataclass(frozen=True)
class ReplicatedMessage:
    """One ReplicateEntriesRequest with the serialized form of each record."""

    request: replication_service_pb2.ReplicateEntriesRequest
    payloads: list[bytes]


def parse_replicated_message(data: bytes) -> ReplicatedMessage:
    """Parse a serialized ReplicateEntriesRequest and keep its record bytes."""
    request = replication_service_pb2.ReplicateEntriesRequest.FromString(data)
    return ReplicatedMessage(request, embedded_messages(data, _RECORDS_FIELD))


def add_replication_service(node: LogNode, server: grpc.Server) -> None:
    """Serve ReplicationService for `node`, keeping received records' bytes.

    It registers the same handlers as the generated
    `add_ReplicationServiceServicer_to_server`, except that ReplicateEntries
    receives `ReplicatedMessage`s.
    """
    servicer = ReplicationServicer(node)
    handlers = {
        "ReplicateEntries": grpc.stream_stream_rpc_method_handler(
            servicer.ReplicateEntries,
            request_deserializer=parse_replicated_message,
            response_serializer=(
                replication_service_pb2.ReplicateEntriesResponse.SerializeToString
            ),
        ),
        "FetchSnapshot": grpc.unary_stream_rpc_method_handler(
            servicer.FetchSnapshot,
            request_deserializer=replication_service_pb2.FetchSnapshotRequest.FromString,
            response_serializer=(
                replication_service_pb2.FetchSnapshotResponse.SerializeToString
            ),
        ),
        "GetNodeStatus": grpc.unary_unary_rpc_method_handler(
            servicer.GetNodeStatus,
            request_deserializer=replication_service_pb2.GetNodeStatusRequest.FromString,
            response_serializer=(
                replication_service_pb2.GetNodeStatusResponse.SerializeToString
            ),
        ),
    }
    name = REPLICATION_SERVICE.full_name
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(name, handlers),)
    )
    server.add_registered_method_handlers(name, handlers)


def node_directory(config: Config, node_id: str) -> Path:
    """Return the folder of a node's data: `<data_dir>/log_nodes/<node_id>`."""
    return Path(config.data_dir) / "log_nodes" / node_id


def build_node(
    config: Config,
    node_id: str,
    shard: str,
    address: str | None = None,
    *,
    directory: Path | None = None,
    append_timeout: float | None = None,
) -> ServiceHost:
    """Start a log node's gRPC server and return its host once it serves.

    See `start_node` for the arguments.
    """
    host, _ = start_node(
        config,
        node_id,
        shard,
        address,
        directory=directory,
        append_timeout=append_timeout,
    )
    return host


def node_interceptors(config: Config) -> list[grpc.ServerInterceptor]:
    """Return the interceptors of a node's server: signature checks with auth.

    With `auth_required`, a node accepts only calls signed with the shared
    auth secret, which the router and the other nodes add, and signs its own
    calls to the other nodes. Health, and reflection when
    `auth_open_reflection`, stay open.
    """
    if not config.auth_required:
        return []
    signer = auth.install_signer_from_settings(config.auth_secret, config.data_dir)
    return [
        auth.ServiceAuthInterceptor(
            signer,
            auth.open_services(True, config.auth_open_reflection),
            signers="the log router or another log node",
            advice=(
                "log nodes are internal; send log calls to LogsService through "
                "the gateway"
            ),
        )
    ]


def start_node(
    config: Config,
    node_id: str,
    shard: str,
    address: str | None = None,
    *,
    directory: Path | None = None,
    append_timeout: float | None = None,
) -> tuple[ServiceHost, LogNode]:
    """Start a log node's gRPC server; return its host and the node.

    Health reports NOT_SERVING while the write-ahead log is replayed into the
    store, then SERVING. The node closes when the host stops.

    Args:
      config: resolved settings.
      node_id: the node's id.
      shard: the shard it stores.
      address: `host:port` to bind; port 0 picks a free port. Defaults to the
        node's address in the `log_nodes` topology.
      directory: folder of the node's data; defaults to `node_directory()`.
      append_timeout: see `LogNode`.
    """
    if address is None:
        from log_service.topology import topology_from_config

        spec = next(
            (n for n in topology_from_config(config).nodes if n.node_id == node_id),
            None,
        )
        if spec is None:
            raise ValueError(
                f"log node {node_id!r} is not in the log_nodes topology; "
                "pass its address or add it to log_nodes"
            )
        address = spec.address
    if directory is None:
        private_files.private_directory(config.data_dir)
    node = LogNode(
        node_id,
        address,
        shard,
        directory or node_directory(config, node_id),
        config,
        append_timeout=append_timeout,
    )
    interceptors = node_interceptors(config)
    # A router's tail follows each shard's leader with one FollowEntries
    # call, so a node may serve as many of them as the router has tails.
    follows = OpenStreams(config.log_max_open_streams)
    host = create_server(
        f"log_node {node_id}",
        [
            lambda s: add_node_service(node, s, follows),
            lambda s: add_replication_service(node, s),
        ],
        [NODE_SERVICE.full_name, REPLICATION_SERVICE.full_name],
        address,
        workers=config.workers,
        # Replication and snapshot streams hold threads too: one per
        # follower on a leader, one from the leader on a follower.
        stream_workers=follows.maximum + REPLICATION_STREAM_THREADS,
        max_message_bytes=config.max_message_bytes,
        # Only the router and the other nodes call a node, and their
        # messages carry framing on top of what a client sent.
        message_headroom_bytes=NODE_HEADROOM_BYTES,
        reflection_enabled=config.reflection,
        interceptors=interceptors,
    )
    host_part = address.rsplit(":", 1)[0]
    node.address = f"{host_part}:{host.port}"
    node.server_stopping = lambda: host.stopped
    host.start()
    host.on_stop(node.close)
    try:
        node.open()
    except Exception:
        host.stop(0, reason="opening the node failed")
        raise
    host.mark_serving()
    return host, node


def main(argv: Sequence[str] | None = None) -> None:
    """Run one log node until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="Run one splitlog log node.")
    parser.add_argument("--node", required=True, help="Id of the node.")
    parser.add_argument("--shard", required=True, help="Shard the node stores.")
    parser.add_argument("--address", help="host:port to bind.")
    parser.add_argument("--directory", type=Path, help="Folder of the node's data.")
    config_module.add_arguments(parser)
    args = parser.parse_args(argv)
    config = config_module.load(args)
    with logsetup.configured(config.log_level, config.log_format):
        host = build_node(
            config, args.node, args.shard, args.address, directory=args.directory
        )
        stopped = threading.Event()

        def _stop(signum, frame) -> None:
            stopped.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        print(f"log node {args.node} serving on port {host.port}", flush=True)
        stopped.wait()
        host.stop(config.grace_seconds, reason="signal")


if __name__ == "__main__":
    main()
