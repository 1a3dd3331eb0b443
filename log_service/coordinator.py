"""The coordinator: leaders, in-sync sets and failover of the log shards.

It runs in the router. A poller thread calls GetNodeStatus on every node a
few times a second and feeds what it saw to `plan_shard`, a pure function
that returns the shard's next configuration:

- a leader silent for `log_failover_seconds` is replaced by the reachable
  in-sync follower with the highest last sequence, under a higher epoch. When
  no such follower responds, the shard has no leader until a member of its
  in-sync set (the old leader included) responds again;
- an in-sync follower unreachable for that long, either from the coordinator
  or as the leader reports it, leaves the in-sync set;
- a follower whose last sequence has reached the leader's commit sequence,
  and that is not receiving or installing a snapshot, rejoins it in two
  steps. First it is *joining*: the leader waits for its
  acknowledgements, but it cannot be promoted yet, because the leader may have
  acknowledged entries without it before it heard of the change. Once the
  leader has taken that configuration, its response gives its last sequence at
  that moment; when the follower has reached that sequence too, it stores
  every acknowledged entry and becomes in sync.

Every change is saved to `<data_dir>/log_service/coordinator.json` (written
to a temporary file, flushed, renamed, and the folder flushed) before any
node hears of it. Then ConfigureShard goes to the leader first and to the
followers after, and to any node that reports an older epoch or another role,
until each has answered.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from log_service.clients import NodeClients, is_closed_channel_error
from log_service.topology import Topology
from splitlog.logs.v1 import (
    logs_service_pb2,
    node_service_pb2,
    replication_service_pb2,
)
from splitlog_runtime import private_files

_LOGGER = logging.getLogger(__name__)

LEADER = logs_service_pb2.REPLICA_ROLE_LEADER
FOLLOWER = logs_service_pb2.REPLICA_ROLE_FOLLOWER

POLL_INTERVAL_SECONDS = 0.25
POLL_DEADLINE_SECONDS = 0.5
CONFIGURE_DEADLINE_SECONDS = 2.0
# Seconds that `Coordinator.stop` waits for the poller thread. After the stop,
# a round only finishes its running calls, each within POLL_DEADLINE_SECONDS
# or CONFIGURE_DEADLINE_SECONDS, and skips its other pushes.
STOP_WAIT_SECONDS = 5.0
# Errors besides a closed channel's ValueError (`is_closed_channel_error`)
# that a poll round raises when `Coordinator.stop` cuts it short: a cancelled
# push raises CancelledError, and a push submitted to the pool after its
# shutdown RuntimeError.
_STOP_ERRORS = (RuntimeError, futures.CancelledError)
STATE_FILE_NAME = "coordinator.json"


def ended_by_stop(error: Exception) -> bool:
    """Return whether `error` is one that a stop raises in a poll round.

    That is a call on a closed node channel or one of `_STOP_ERRORS`. Any
    other error, another ValueError included, is a bug of the round.
    """
    return isinstance(error, _STOP_ERRORS) or is_closed_channel_error(error)


@dataclass(frozen=True)
class ShardState:
    """The durable configuration of one shard.

    Attributes:
      shard: shard id.
      epoch: epoch of the current or last leader; it grows at each promotion.
      config_version: grows with every change of this state.
      leader: node id of the leader, or None while the shard has none.
      in_sync: followers that hold every acknowledged entry. While the shard
        has no leader it also contains the old leader, which may return.
      followers: every node of the shard except the leader.
      joining: followers that the leader waits for but that may still miss
        entries acknowledged before it heard of them; never promoted.
    """

    shard: str
    epoch: int
    config_version: int
    leader: str | None
    in_sync: tuple[str, ...]
    followers: tuple[str, ...]
    joining: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeView:
    """The coordinator's view of one node's replica of one shard.

    Attributes:
      reachable: whether the latest poll succeeded.
      silent_for: seconds since the last successful poll, or since the
        coordinator started when no poll has succeeded yet, without the
        rounds in which every node timed out.
      replica: the node's report for the shard from its last successful poll.
      reported_unreachable_for: seconds for which the shard's leader has
        reported this follower unreachable, zero when it reports it reachable.
    """

    reachable: bool
    silent_for: float
    replica: replication_service_pb2.ShardReplica | None = None
    reported_unreachable_for: float = 0.0


def bootstrap_state(shard: str, nodes: Sequence[str]) -> ShardState:
    """Return the first configuration: epoch 1, first node leader, all in sync."""
    followers = tuple(nodes[1:])
    return ShardState(shard, 1, 1, nodes[0], followers, followers)


def _is_candidate(view: NodeView | None) -> bool:
    return (
        view is not None
        and view.reachable
        and view.replica is not None
        and view.replica.ready
        and not view.replica.HasField("snapshot")
    )


def _damaged(view: NodeView | None) -> bool:
    """Return whether a node reports entries lost to a damaged write-ahead log."""
    return (
        view is not None
        and view.replica is not None
        and view.replica.HasField("log_damage")
    )


def _log_position(view: NodeView) -> tuple[int, int]:
    """The order of logs for a promotion: the epoch of the last record, then
    the last sequence. Replicas write records of one epoch only from its
    leader, so a log that is ahead in this order holds every entry of one
    behind it in the same epoch."""
    replica = view.replica
    assert replica is not None
    return (replica.last_record_epoch, replica.last_sequence)


def _promote(
    state: ShardState,
    members: Sequence[str],
    views: Mapping[str, NodeView],
    absent: Sequence[str] = (),
) -> ShardState | None:
    """Return the configuration with the best member as leader, or None.

    `members` hold every acknowledged entry, unless they report damage
    (entries lost from a damaged write-ahead log). The reachable member whose
    log is furthest ahead wins among those without damage. A damaged member
    is chosen only when every member and every node in `absent` (such as a
    silent old leader) responds, because one that does not may hold what the
    damaged ones lost. Even then, a follower outside `members` whose log is
    ahead of the chosen one wins, as it holds entries that the damaged node
    lost. Members with damage leave the in-sync set; they rejoin it once
    they have caught up.
    """
    candidates = [node for node in members if _is_candidate(views.get(node))]
    if not candidates:
        return None
    intact = [node for node in candidates if not _damaged(views[node])]
    if intact:
        pool = intact
    else:
        waiting = [
            node
            for node in (*members, *absent)
            if node not in candidates and node is not None
        ]
        if waiting:
            # A member that does not respond may hold what the others lost.
            return None
        pool = candidates
    # max() keeps the first of equal values, so ties go to the listed order.
    chosen = max(pool, key=lambda node: _log_position(views[node]))
    if not intact:
        nodes = ([state.leader] if state.leader else []) + list(state.followers)
        ahead = [
            node
            for node in nodes
            if node not in members
            and _is_candidate(views.get(node))
            and not _damaged(views[node])
            and _log_position(views[node]) > _log_position(views[chosen])
        ]
        if ahead:
            chosen = max(ahead, key=lambda node: _log_position(views[node]))
    nodes = ([state.leader] if state.leader else []) + list(state.followers)
    return ShardState(
        state.shard,
        state.epoch + 1,
        state.config_version + 1,
        chosen,
        tuple(
            node for node in members if node != chosen and not _damaged(views.get(node))
        ),
        tuple(node for node in nodes if node != chosen),
    )


def plan_shard(
    state: ShardState,
    views: Mapping[str, NodeView],
    failover_seconds: float,
    join_floors: Mapping[str, int] | None = None,
) -> ShardState:
    """Return the shard's next configuration, the same object when unchanged.

    Args:
      join_floors: for each joining follower whose configuration the leader
        has taken, the leader's last sequence when it took it. The follower
        becomes in sync once it stores that sequence.
    """
    join_floors = join_floors or {}
    if state.leader is None:
        promoted = _promote(state, state.in_sync, views)
        return promoted if promoted is not None else state

    leader_view = views.get(state.leader)
    if (
        leader_view is not None
        and leader_view.reachable
        and _damaged(leader_view)
        and leader_view.replica.role != LEADER
    ):
        # The leader restarted with a damaged write-ahead log and waits as a
        # follower: another in-sync replica may hold the entries it lost.
        promoted = _promote(state, (state.leader, *state.in_sync), views)
        if promoted is not None:
            return promoted
        return replace(
            state,
            config_version=state.config_version + 1,
            leader=None,
            in_sync=(state.leader, *state.in_sync),
            followers=(state.leader, *state.followers),
            joining=(),
        )
    if leader_view is None or leader_view.silent_for >= failover_seconds:
        promoted = _promote(state, state.in_sync, views, absent=(state.leader,))
        if promoted is not None:
            return promoted
        return replace(
            state,
            config_version=state.config_version + 1,
            leader=None,
            in_sync=(state.leader, *state.in_sync),
            followers=(state.leader, *state.followers),
            joining=(),
        )

    def healthy(node: str) -> bool:
        view = views.get(node)
        return (
            view is not None
            and view.silent_for < failover_seconds
            and view.reported_unreachable_for < failover_seconds
        )

    in_sync = [node for node in state.in_sync if healthy(node)]
    joining = [node for node in state.joining if healthy(node)]
    for node in list(joining):
        view = views[node]
        floor = join_floors.get(node)
        if (
            floor is not None
            and view.replica is not None
            and view.replica.leader_epoch == state.epoch
            and view.replica.last_sequence >= floor
        ):
            joining.remove(node)
            in_sync.append(node)
    leader_replica = leader_view.replica
    if leader_view.reachable and leader_replica is not None:
        for node in state.followers:
            view = views.get(node)
            if node in in_sync or node in joining or view is None:
                continue
            replica = view.replica
            if (
                view.reachable
                and replica is not None
                and replica.role == FOLLOWER
                and replica.leader_epoch == state.epoch
                and replica.last_sequence >= leader_replica.commit_sequence
                and not replica.HasField("snapshot")
                and not replica.HasField("log_damage")
                and view.reported_unreachable_for == 0
            ):
                joining.append(node)
    ordered = tuple(node for node in state.followers if node in in_sync)
    ordered_joining = tuple(node for node in state.followers if node in joining)
    if ordered == state.in_sync and ordered_joining == state.joining:
        return state
    return replace(
        state,
        config_version=state.config_version + 1,
        in_sync=ordered,
        joining=ordered_joining,
    )


class StateFile:
    """The coordinator's shard states in one JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, ShardState] | None:
        """Return the saved states, or None when nothing was saved yet.

        Raises:
          ValueError: the file exists but does not contain coordinator state.
        """
        try:
            payload = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {self.path}: {exc}") from None
        try:
            return {
                shard: ShardState(
                    shard,
                    int(item["epoch"]),
                    int(item["config_version"]),
                    item["leader"],
                    tuple(item["in_sync"]),
                    tuple(item["followers"]),
                    tuple(item.get("joining", ())),
                )
                for shard, item in payload["shards"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"{self.path} is not a coordinator state file ({exc!r}); move it "
                "away to start from the configured topology"
            ) from None

    def save(self, states: Mapping[str, ShardState]) -> None:
        """Write the states durably: temporary file, fsync, rename, fsync folder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "version": 1,
            "shards": {
                shard: {k: v for k, v in asdict(state).items() if k != "shard"}
                for shard, state in sorted(states.items())
            },
        }
        text = json.dumps(payload, indent=1, sort_keys=True)
        private_files.write_file_atomically(self.path, text.encode("utf-8"))


def reconcile(
    topology: Topology, saved: Mapping[str, ShardState] | None
) -> dict[str, ShardState]:
    """Fit saved states to the topology; shards new to it start from scratch."""
    states = {}
    for spec in topology.shards:
        nodes = [node.node_id for node in spec.nodes]
        state = (saved or {}).get(spec.shard)
        if state is None:
            states[spec.shard] = bootstrap_state(spec.shard, nodes)
            continue
        leader = state.leader if state.leader in nodes else None
        states[spec.shard] = replace(
            state,
            leader=leader,
            in_sync=tuple(node for node in state.in_sync if node in nodes),
            followers=tuple(node for node in nodes if node != leader),
        )
    return states


@dataclass(frozen=True)
class ShardRoute:
    """The route of a shard's writes and reads in the router.

    Attributes:
      shard: shard id.
      leader_address: the leader's address, or None while it has none.
      epoch: the leader's epoch, sent with every append.
      readable: addresses that serve every acknowledged entry, the leader
        first, then the reachable in-sync followers.
    """

    shard: str
    leader_address: str | None
    epoch: int
    readable: tuple[str, ...]


@dataclass(frozen=True)
class ShardReplicas:
    """The nodes of one shard, as the retention enforcer reaches them.

    Attributes:
      shard: shard id.
      leader_address: the leader's address, or None while it has none.
      follower_addresses: the addresses of the shard's other nodes.
    """

    shard: str
    leader_address: str | None
    follower_addresses: tuple[str, ...]


@dataclass(frozen=True)
class PollResponses:
    """The nodes' responses to the coordinator's polls, for the reads of a query.

    Times are `time.monotonic()` times at which a poll round sent its
    GetNodeStatus calls. A node that responded to a round sent at time t was
    alive at some moment after t.

    Attributes:
      latest_sent_at: when the latest finished round sent its calls, or None
        before the first round ends. A round in which every node timed out
        (see `Coordinator._note_blind_round`) does not count.
      responded_at: per node address, when the latest round that the node
        responded to sent its calls. A node that never responded is missing.
    """

    latest_sent_at: float | None
    responded_at: Mapping[str, float]

    def responding(self, address: str) -> bool:
        """Return whether the node responded to the latest round."""
        sent_at = self.responded_at.get(address)
        return sent_at is not None and sent_at == self.latest_sent_at

    def responded_since(self, address: str, moment: float) -> bool:
        """Return whether the node responded to a round sent at or after `moment`."""
        return self.responded_at.get(address, float("-inf")) >= moment

    def missed_since(self, address: str, moment: float) -> bool:
        """Return whether the node missed the latest round, sent after `moment`."""
        latest = self.latest_sent_at
        return latest is not None and latest >= moment and not self.responding(address)


@dataclass
class _NodeTrack:
    last_ok: float | None = None
    #: When the latest poll round that the node responded to sent its calls.
    responded_round_sent_at: float | None = None
    #: The coordinator's blind seconds (see `Coordinator._blind_seconds`) at
    #: `last_ok`, so that silence excludes the time it could see no node.
    blind_at_last_ok: float = 0.0
    reachable: bool = False
    status: replication_service_pb2.GetNodeStatusResponse | None = None
    unreachable_reported_since: float | None = None
    pushed: dict[str, int] = field(default_factory=dict)


class Coordinator:
    """The tracker of every shard's leader and in-sync set, which configures nodes.

    Args:
      topology: the shards and nodes.
      clients: shared stubs for the nodes.
      data_dir: the router's data directory; the state lives under
        `<data_dir>/log_service/`.
      failover_seconds: how long a leader or follower may stay silent.
      leader_only_ack: whether leaders acknowledge after their own flush.
      poll_interval: seconds between polls.
    """

    def __init__(
        self,
        topology: Topology,
        clients: NodeClients,
        data_dir: Path,
        *,
        failover_seconds: float,
        leader_only_ack: bool = False,
        poll_interval: float = POLL_INTERVAL_SECONDS,
    ) -> None:
        self._topology = topology
        self._clients = clients
        self._failover = failover_seconds
        self._leader_only_ack = leader_only_ack
        self._interval = poll_interval
        self._addresses = {node.node_id: node.address for node in topology.nodes}
        self._file = StateFile(Path(data_dir) / "log_service" / STATE_FILE_NAME)
        self._lock = threading.Condition()
        self._states: dict[str, ShardState] = {}
        self._tracks = {node: _NodeTrack() for node in self._addresses}
        # (shard, node) -> the leader's last sequence when it first took a
        # configuration that lists the node as joining.
        self._join_floors: dict[tuple[str, str], int] = {}
        # Per shard, the lowest (epoch, sequence) before an entry that a
        # write acknowledged since the router started, from `note_stored`.
        # Its own lock keeps the write path off the poller's lock.
        self._stored_floors: dict[str, tuple[int, int]] = {}
        self._stored_floors_lock = threading.Lock()
        self._rounds = 0
        # When the latest finished poll round sent its calls.
        self._round_sent_at: float | None = None
        self._started = time.monotonic()
        # Seconds of poll rounds in which every node timed out, and the end
        # of the latest round. A node's silence does not count those seconds.
        self._blind_seconds = 0.0
        self._round_end = self._started
        # Whether the latest round was blind, to warn once for each run.
        self._blind_run = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round_listeners: list[Callable[[], None]] = []
        self._pool = futures.ThreadPoolExecutor(
            max_workers=max(4, len(self._addresses)), thread_name_prefix="log-coord"
        )

    # Lifecycle

    def start(self) -> None:
        """Load or create the state, save it and start the poller thread."""
        saved = self._file.load()
        states = reconcile(self._topology, saved)
        if states != saved:
            self._file.save(states)
        with self._lock:
            self._states = states
            self._started = time.monotonic()
        for state in states.values():
            _LOGGER.info(
                "log shard %s: leader %s, epoch %d, in sync %s",
                state.shard,
                state.leader,
                state.epoch,
                list(state.in_sync),
            )
        self._thread = threading.Thread(
            target=self._run, name="log-coordinator", daemon=True
        )
        self._thread.start()

    @property
    def clients(self) -> NodeClients:
        """The node stubs that the coordinator shares with the router."""
        return self._clients

    def stop(self) -> None:
        """Stop polling and wait for the round in progress to end.

        The saved state stays for the next start. Pushes not yet started are
        cancelled, and those running end within CONFIGURE_DEADLINE_SECONDS,
        so no call of the coordinator runs once the router closes the node
        channels.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT_SECONDS)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wait_until_ready(self, timeout: float) -> bool:
        """Wait until every shard's leader has taken its configuration."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._all_leaders_configured():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def wait_for_poll(self, timeout: float) -> None:
        """Wait until the next poll round has finished, or the timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._rounds + 1
            while self._rounds < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._lock.wait(remaining)

    def add_round_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` on the poller thread after each poll round.

        A listener that raises is logged, and the poller goes on.
        """
        with self._lock:
            self._round_listeners.append(listener)

    # Views for the router

    def state(self, shard: str) -> ShardState:
        with self._lock:
            return self._states[shard]

    def route(self, shard: str) -> ShardRoute:
        """Return where a shard's writes and reads go now."""
        with self._lock:
            state = self._states[shard]
            leader_address = self._addresses[state.leader] if state.leader else None
            readable = [leader_address] if leader_address else []
            readable += [
                self._addresses[node]
                for node in state.in_sync
                if node != state.leader and self._tracks[node].reachable
            ]
            return ShardRoute(shard, leader_address, state.epoch, tuple(readable))

    def leaders(self) -> dict[str, tuple[str | None, int]]:
        """Return each shard's leader address, None without one, and epoch."""
        with self._lock:
            return {
                shard: (
                    self._addresses[state.leader] if state.leader else None,
                    state.epoch,
                )
                for shard, state in self._states.items()
            }

    def known_commit(self, shard: str) -> tuple[int, int] | None:
        """Return a commit sequence of the shard from the polls, and an epoch.

        The sequence is the highest commit sequence that a node of the shard
        reported in its last successful poll, so it is at most the shard's
        commit sequence now, even while no node responds. The epoch is that
        node's `last_record_epoch`, which is at least the epoch of the entry at
        the sequence. Returns None when no node of the shard ever responded.
        """
        with self._lock:
            state = self._states[shard]
            members = ([state.leader] if state.leader else []) + list(state.followers)
            known = [
                replica
                for replica in (self._replica(node, shard) for node in members)
                if replica is not None
            ]
        if not known:
            return None
        best = max(known, key=lambda replica: replica.commit_sequence)
        return best.commit_sequence, best.last_record_epoch

    def note_stored(self, shard: str, first_sequence: int, epoch: int) -> None:
        """Record that the router acknowledged a write of entries of the shard.

        The router calls this before it acknowledges the write. `first_sequence`
        is the lowest sequence of the write's entries, and `epoch` the leader
        epoch that the write went to, which is at least the epoch of the entry
        before it.
        """
        if first_sequence <= 0:
            return
        floor = (epoch, first_sequence - 1)
        with self._stored_floors_lock:
            known = self._stored_floors.get(shard)
            if known is None or floor < known:
                self._stored_floors[shard] = floor

    def start_floor(self, shard: str) -> tuple[int, int] | None:
        """Return a (sequence, epoch) for a tail to start the shard after.

        The start is the lower of `known_commit` and the position before the
        lowest entry of any write that the router acknowledged since it
        started (`note_stored`). An entry committed after the polls that
        `known_commit` read lies after that commit sequence. An entry
        committed before them belongs to a write that `note_stored` has
        usually recorded by now. Returns None when no node of the shard ever
        responded to a poll and the router acknowledged no write of it.
        NOTE: a write whose entries were committed before those polls, and
        whose acknowledgement reaches the router only after this call, lies
        before the start.
        """
        known = self.known_commit(shard)
        with self._stored_floors_lock:
            stored = self._stored_floors.get(shard)
        candidates = []
        if known is not None:
            candidates.append((known[1], known[0]))
        if stored is not None:
            candidates.append(stored)
        if not candidates:
            return None
        epoch, sequence = min(candidates)
        return sequence, epoch

    def reachable_addresses(self) -> list[str]:
        """Return the address of every node that answered the latest poll."""
        with self._lock:
            return [
                self._addresses[node]
                for node, track in self._tracks.items()
                if track.reachable
            ]

    def poll_responses(self) -> PollResponses:
        """Return when each node last responded to a poll, and the latest round."""
        with self._lock:
            return PollResponses(
                self._round_sent_at,
                {
                    self._addresses[node]: track.responded_round_sent_at
                    for node, track in self._tracks.items()
                    if track.responded_round_sent_at is not None
                },
            )

    @property
    def leader_only_ack(self) -> bool:
        """Whether leaders acknowledge after their own flush (quorum `leader`)."""
        return self._leader_only_ack

    def node_addresses(self) -> list[str]:
        """Return the address of every node."""
        return list(self._addresses.values())

    def shard_replicas(self) -> list[ShardReplicas]:
        """Return the addresses of each shard's leader and of its other nodes."""
        with self._lock:
            return [
                ShardReplicas(
                    state.shard,
                    self._addresses[state.leader] if state.leader else None,
                    tuple(
                        self._addresses[node]
                        for node in state.followers
                        if node != state.leader
                    ),
                )
                for state in self._states.values()
            ]

    def leaders_responding(self) -> dict[str, bool]:
        """Return, for each shard, whether its leader responded to the latest poll.

        A shard without a leader, or whose leader missed the latest poll or
        did not list the shard, maps to False. GetClusterStatus reports
        exactly those shards as HEALTH_UNAVAILABLE.
        """
        with self._lock:
            return {
                shard: self._leader_responds(state)
                for shard, state in self._states.items()
            }

    def _leader_responds(self, state: ShardState) -> bool:
        if state.leader is None or not self._tracks[state.leader].reachable:
            return False
        return self._replica(state.leader, state.shard) is not None

    def cluster_status(self) -> logs_service_pb2.GetClusterStatusResponse:
        """Build the GetClusterStatus response from the latest polls."""
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        with self._lock:
            shards = [self._shard_status(state) for state in self._states.values()]
        shards.sort(key=lambda status: status.shard)
        health = max(
            (status.health for status in shards),
            default=logs_service_pb2.HEALTH_UNAVAILABLE,
        )
        return logs_service_pb2.GetClusterStatusResponse(
            health=health, shards=shards, observe_time=now
        )

    def _replica(
        self, node: str, shard: str
    ) -> replication_service_pb2.ShardReplica | None:
        status = self._tracks[node].status
        if status is None:
            return None
        for replica in status.shards:
            if replica.shard == shard:
                return replica
        return None

    def _shard_status(self, state: ShardState) -> logs_service_pb2.ShardStatus:
        status = logs_service_pb2.ShardStatus(
            shard=state.shard, leader=state.leader or "", leader_epoch=state.epoch
        )
        leader_replica = None
        if state.leader is not None:
            leader_replica = self._replica(state.leader, state.shard)
            if not self._tracks[state.leader].reachable:
                leader_replica = None
        if leader_replica is not None:
            status.last_sequence = leader_replica.last_sequence
            if leader_replica.HasField("log_damage"):
                status.leader_log_damage.CopyFrom(leader_replica.log_damage)
        reported = {
            item.node: item
            for item in (leader_replica.followers if leader_replica else [])
        }
        degraded = False
        for node in state.followers:
            follower = logs_service_pb2.ReplicaStatus(node=node)
            own = self._replica(node, state.shard)
            if node in reported:
                follower.CopyFrom(reported[node])
            else:
                follower.reachable = self._tracks[node].reachable
                if own is not None:
                    follower.last_sequence = own.last_sequence
                if leader_replica is not None:
                    follower.lag_entries = max(
                        0, leader_replica.last_sequence - follower.last_sequence
                    )
            if (
                own is not None
                and self._tracks[node].reachable
                and own.HasField("snapshot")
            ):
                follower.snapshot.CopyFrom(own.snapshot)
            if (
                own is not None
                and self._tracks[node].reachable
                and own.HasField("log_damage")
            ):
                follower.log_damage.CopyFrom(own.log_damage)
            if node not in state.in_sync or not follower.reachable:
                degraded = True
            status.followers.append(follower)
        if not self._leader_responds(state):
            status.health = logs_service_pb2.HEALTH_UNAVAILABLE
        elif degraded:
            status.health = logs_service_pb2.HEALTH_DEGRADED
        else:
            status.health = logs_service_pb2.HEALTH_SERVING
        return status

    # The poll loop

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.poll_once()
            except Exception as exc:
                if self._stop.is_set() and ended_by_stop(exc):
                    _LOGGER.info("log coordinator: stop ended a poll round (%r)", exc)
                    return
                _LOGGER.exception("log coordinator: a poll round failed")
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - began)))

    def poll_once(self) -> None:
        """Poll every node, apply the plans, save them and push configurations."""
        self._poll_nodes()
        if self._stop.is_set():
            # Calls that the stop cut short would count as silent nodes.
            return
        changed = []
        with self._lock:
            now = time.monotonic()
            new_states = dict(self._states)
            for shard, state in self._states.items():
                floors = {
                    node: self._join_floors[(shard, node)]
                    for node in state.joining
                    if (shard, node) in self._join_floors
                }
                planned = plan_shard(
                    state, self._views(state, now), self._failover, floors
                )
                self._forget_joins(shard, keep=planned.joining)
                if planned is not state:
                    new_states[shard] = planned
                    changed.append((state, planned))
        if changed:
            self._file.save(new_states)
            with self._lock:
                self._states = new_states
            for old, new in changed:
                _log_change(old, new)
        self._push_configurations()
        with self._lock:
            self._rounds += 1
            self._lock.notify_all()
            listeners = list(self._round_listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:
                _LOGGER.exception("log coordinator: a poll round listener failed")

    def _poll_nodes(self) -> None:
        request = replication_service_pb2.GetNodeStatusRequest()
        sent_at = time.monotonic()
        calls = {
            node: self._clients.stubs(address).replication.GetNodeStatus.future(
                request, timeout=POLL_DEADLINE_SECONDS
            )
            for node, address in self._addresses.items()
        }
        results = {}
        timeouts = 0
        for node, call in calls.items():
            try:
                results[node] = call.result()
            except grpc.RpcError as error:
                results[node] = None
                timeouts += error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        now = time.monotonic()
        blind = len(results) > 1 and timeouts == len(results)
        with self._lock:
            self._note_blind_round(blind, now)
            if not blind:
                # A blind round shows nothing about any node, so `missed_since`
                # must not count it as a poll that the leader missed.
                self._round_sent_at = sent_at
            for node, status in results.items():
                track = self._tracks[node]
                track.reachable = status is not None
                if status is not None:
                    track.last_ok = now
                    track.responded_round_sent_at = sent_at
                    track.blind_at_last_ok = self._blind_seconds
                    track.status = status
            self._note_leader_reports(now)

    def _note_blind_round(self, blind: bool, now: float) -> None:
        """Count a round in which every node timed out as blind time.

        Every node missing its deadline at once points at this process or
        its machine (a router starved of CPU, a paused VM) more than at
        every node failing together. A failover would then only move
        leaders and raise epochs for nothing. So such a round does not add
        to any node's silence. A node that refuses the connection still
        counts as silent.
        """
        if blind:
            if not self._blind_run:
                _LOGGER.warning(
                    "log coordinator: no log node answered GetNodeStatus within "
                    "%.1f s; this process may be short of CPU, so the silence "
                    "does not count towards failover",
                    POLL_DEADLINE_SECONDS,
                )
            self._blind_seconds += now - self._round_end
        self._blind_run = blind
        self._round_end = now

    def _note_leader_reports(self, now: float) -> None:
        reported: dict[str, bool] = {}
        for state in self._states.values():
            if state.leader is None or not self._tracks[state.leader].reachable:
                continue
            replica = self._replica(state.leader, state.shard)
            if replica is None or replica.leader_epoch != state.epoch:
                continue
            for follower in replica.followers:
                reported[follower.node] = follower.reachable
        for node, track in self._tracks.items():
            if reported.get(node, True):
                track.unreachable_reported_since = None
            elif track.unreachable_reported_since is None:
                track.unreachable_reported_since = now

    def _views(self, state: ShardState, now: float) -> dict[str, NodeView]:
        views = {}
        members = ([state.leader] if state.leader else []) + list(state.followers)
        for node in members:
            track = self._tracks[node]
            since = track.last_ok if track.last_ok is not None else self._started
            blind = self._blind_seconds - track.blind_at_last_ok
            reported_since = track.unreachable_reported_since
            views[node] = NodeView(
                reachable=track.reachable,
                silent_for=max(0.0, now - since - blind),
                replica=self._replica(node, state.shard),
                reported_unreachable_for=(
                    0.0 if reported_since is None else now - reported_since
                ),
            )
        return views

    def _all_leaders_configured(self) -> bool:
        for state in self._states.values():
            if state.leader is None:
                return False
            if self._tracks[state.leader].pushed.get(state.shard) != (
                state.config_version
            ):
                return False
        return True

    def _configure_request(
        self, state: ShardState, node: str
    ) -> node_service_pb2.ConfigureShardRequest:
        def member(node_id: str) -> node_service_pb2.ShardMember:
            return node_service_pb2.ShardMember(
                node=node_id, address=self._addresses[node_id]
            )

        return node_service_pb2.ConfigureShardRequest(
            shard=state.shard,
            leader_epoch=state.epoch,
            role=LEADER if node == state.leader else FOLLOWER,
            leader=member(state.leader),
            # The leader waits for joining followers too.
            in_sync=[member(n) for n in (*state.in_sync, *state.joining)],
            followers=[member(n) for n in state.followers],
            leader_only_ack=self._leader_only_ack,
            config_version=state.config_version,
        )

    def _needs_push(self, state: ShardState, node: str) -> bool:
        # Unreachable nodes are skipped, so that they do not hold up the poll
        # loop. They get their configuration once they respond to a poll again.
        track = self._tracks[node]
        if not track.reachable:
            return False
        if track.pushed.get(state.shard) != state.config_version:
            return True
        replica = self._replica(node, state.shard)
        if replica is None:
            return True
        role = LEADER if node == state.leader else FOLLOWER
        return replica.leader_epoch < state.epoch or replica.role != role

    def _push_configurations(self) -> None:
        with self._lock:
            states = list(self._states.values())
            plans = []
            for state in states:
                if state.leader is None:
                    continue
                nodes = [state.leader, *state.followers]
                plans.append((state, [n for n in nodes if self._needs_push(state, n)]))
        for state, nodes in plans:
            if not nodes:
                continue
            if nodes[0] == state.leader:
                self._push(state, nodes[0])
                nodes = nodes[1:]
            list(self._pool.map(functools.partial(self._push, state), nodes))

    def _push(self, state: ShardState, node: str) -> None:
        if self._stop.is_set():
            return
        request = self._configure_request(state, node)
        stub = self._clients.stubs(self._addresses[node]).node
        try:
            response = stub.ConfigureShard(request, timeout=CONFIGURE_DEADLINE_SECONDS)
        except grpc.RpcError as exc:
            if self._tracks[node].reachable and not self._stop.is_set():
                _LOGGER.warning(
                    "log shard %s: configuring node %s failed (%s); retrying",
                    state.shard,
                    node,
                    exc.code(),
                )
            return
        with self._lock:
            self._tracks[node].pushed[state.shard] = state.config_version
            if node == state.leader:
                for joiner in state.joining:
                    self._join_floors.setdefault(
                        (state.shard, joiner), response.last_sequence
                    )
            self._lock.notify_all()

    def _forget_joins(self, shard: str, keep: tuple[str, ...]) -> None:
        """Drop the floors of the shard's nodes that are no longer joining.

        A node that joins again later needs a new floor, taken when the
        leader hears of it again.
        """
        stale = [key for key in self._join_floors if key[0] == shard]
        for key in stale:
            if key[1] not in keep:
                del self._join_floors[key]


def _log_change(old: ShardState, new: ShardState) -> None:
    if new.leader != old.leader:
        if new.leader is None:
            _LOGGER.error(
                "log shard %s: leader %s silent and no in-sync follower "
                "reachable; the shard has no leader",
                new.shard,
                old.leader,
            )
        else:
            # A first leader, or one after a shard had none, is routine; a
            # leader replacing a live one is a failover.
            level = logging.INFO if old.leader is None else logging.WARNING
            _LOGGER.log(
                level,
                "log shard %s: %s is leader at epoch %d (was %s)",
                new.shard,
                new.leader,
                new.epoch,
                old.leader,
            )
    for node in set(old.in_sync) - set(new.in_sync) - {new.leader}:
        _LOGGER.warning(
            "log shard %s: follower %s left the in-sync set", new.shard, node
        )
    for node in set(new.in_sync) - set(old.in_sync):
        _LOGGER.info("log shard %s: follower %s is in sync again", new.shard, node)
