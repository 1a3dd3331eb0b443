"""The leader's side of replication: one sender per follower.

A `ReplicationSender` keeps one `ReplicateEntries` stream open to its
follower. The stream begins with a heartbeat. The follower's reply gives its
last sequence number and the epoch of the record that contains it, and the
sender finds where the two logs diverge: the end of that epoch in the
leader's epoch history. A follower that stores more than that receives a request to
truncate (`truncate_after`). From then on the sender sends the leader's
durable records in order, several per message, with up to `WINDOW_MESSAGES`
messages awaiting replies. Each reply moves the follower's acknowledged
sequence forward, which may advance the leader's commit sequence.

When the stream fails, the sender reconnects with a backoff from 50 ms to 1 s.
An idle stream carries a heartbeat every `HEARTBEAT_SECONDS` with the commit
sequence. A reply with a higher epoch makes the leader step down.

When the follower needs records that the leader has purged, the heartbeats
carry a snapshot offer instead of records (see `snapshot.py`). The follower
fetches and installs the snapshot; its next reply then names the snapshot's
last sequence, and the sender starts a new stream that continues from there.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from log_service.clients import node_channel_options
from log_service.wal import RecordsPurged, encode_varint, entry_count
from splitlog.logs.v1 import replication_service_pb2
from splitlog_runtime import auth

if TYPE_CHECKING:
    from log_service.node import LogNode

_LOGGER = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 0.2
# A stream with messages in flight and no reply for this long is restarted.
REPLY_TIMEOUT_SECONDS = 3.0
MESSAGE_BYTES = 4 * 1024 * 1024
WINDOW_MESSAGES = 8
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0
_METHOD = "/{}/ReplicateEntries".format(
    replication_service_pb2.DESCRIPTOR.services_by_name["ReplicationService"].full_name
)
# The key of ReplicateEntriesRequest.records: its field number, then wire
# type 2 (length-delimited).
_RECORDS_KEY = encode_varint(
    replication_service_pb2.ReplicateEntriesRequest.DESCRIPTOR.fields_by_name[
        "records"
    ].number
    << 3
    | 2
)


def _identity(data: bytes) -> bytes:
    return data


@dataclass
class FollowerProgress:
    """The leader's view of one follower, for GetNodeStatus."""

    node: str
    address: str
    reachable: bool = False
    acknowledged: int = 0
    last_contact: float | None = None


@dataclass
class _Stream:
    """The state of one open ReplicateEntries stream."""

    handshake_done: bool = False
    next_sequence: int = 0
    truncate_after: int | None = None
    # Set once the follower needs records purged from the leader's log.
    needs_snapshot: bool = False
    # The follower's expected last sequence after each message in flight.
    in_flight: collections.deque[int | None] = field(default_factory=collections.deque)
    # (last sequence of this leader, last of the follower, its record's epoch)
    # when the follower holds entries of this leader's epoch that the
    # leader's own log lacks.
    leader_lost: tuple[int, int, int] | None = None
    last_send: float = 0.0
    last_reply: float = 0.0
    failure: str = ""


class ReplicationSender:
    """Replicates the leader's log to one follower on a background thread.

    Args:
      node: the leader.
      follower: node id of the follower.
      address: the follower's `host:port`.
      epoch: the leader's epoch; the sender stops sending once the node leaves
        it.
      max_message_bytes: the setting. A message carries records of up to
        half of it, or one larger record. Such a record contains a batch that
        the router sent within `clients.routed_message_bytes`, and with the
        message's framing it stays within `clients.node_message_bytes`,
        which the channel and the follower accept.
    """

    def __init__(
        self,
        node: LogNode,
        follower: str,
        address: str,
        epoch: int,
        max_message_bytes: int,
    ) -> None:
        self._node = node
        self.progress = FollowerProgress(follower, address)
        self._epoch = epoch
        self._stop = threading.Event()
        self._purged_reported = False
        self._call: grpc.Future | None = None
        self._channel = grpc.insecure_channel(
            address, options=node_channel_options(max_message_bytes)
        )
        self._message_bytes = min(MESSAGE_BYTES, max_message_bytes // 2)
        self._thread = threading.Thread(
            target=self._run, name=f"replicate-{follower}", daemon=True
        )

    @property
    def follower(self) -> str:
        return self.progress.node

    @property
    def epoch(self) -> int:
        return self._epoch

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the stream and the thread, and close the channel."""
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._node.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self._channel.close()

    def _run(self) -> None:
        # Messages go out as bytes that `_message` assembles from the records'
        # serialized forms in the write-ahead log, so no record is copied or
        # serialized again per follower.
        stub = self._channel.stream_stream(
            _METHOD,
            request_serializer=_identity,
            response_deserializer=(
                replication_service_pb2.ReplicateEntriesResponse.FromString
            ),
        )
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stop.is_set() and self._node.is_leading(self._epoch):
            stream = _Stream()
            try:
                self._exchange(stub, stream)
            except grpc.RpcError as exc:
                if not self._stop.is_set():
                    self._report_failure(f"{exc.code().name}: {exc.details()}")
            except Exception:
                _LOGGER.exception(
                    "log shard %s: replication to %s failed",
                    self._node.shard,
                    self.follower,
                )
            finally:
                self._call = None
            if stream.failure and not self._stop.is_set():
                self._report_failure(stream.failure)
            with self._node.lock:
                self.progress.reachable = False
            if stream.handshake_done:
                backoff = FIRST_BACKOFF_SECONDS
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _report_purged(self, exc: RecordsPurged) -> None:
        if self._purged_reported:
            return
        self._purged_reported = True
        _LOGGER.warning(
            "log shard %s: follower %s needs purged records (%s); offering it a "
            "snapshot",
            self._node.shard,
            self.follower,
            exc,
        )

    def _report_failure(self, reason: str) -> None:
        with self._node.lock:
            was_reachable = self.progress.reachable
            self.progress.reachable = False
        if was_reachable:
            _LOGGER.warning(
                "log shard %s: replication to %s at %s stopped (%s); reconnecting",
                self._node.shard,
                self.follower,
                self.progress.address,
                reason,
            )

    def _exchange(self, stub: grpc.StreamStreamMultiCallable, stream: _Stream) -> None:
        # The process's signed principal, which a node with auth_required
        # checks; empty while no component of this process requires auth.
        call = stub(self._requests(stream), metadata=auth.outgoing_metadata())
        self._call = call
        if self._stop.is_set():
            call.cancel()
        for reply in call:
            if not self._on_reply(stream, reply):
                call.cancel()
                return

    def _message(self, stream: _Stream, payloads: list[bytes], commit: int) -> bytes:
        """Return one serialized ReplicateEntriesRequest carrying `payloads`."""
        request = replication_service_pb2.ReplicateEntriesRequest(
            shard=self._node.shard,
            leader=self._node.node_id,
            leader_epoch=self._epoch,
            commit_sequence=commit,
        )
        if stream.truncate_after is not None:
            request.truncate_after = stream.truncate_after
        if stream.needs_snapshot:
            request.snapshot.address = self._node.address
            request.snapshot.first_sequence = self._node.wal.first_sequence
        # A repeated message field may follow the other fields: each element
        # is its key, its length and its serialized record.
        parts = [request.SerializeToString()]
        for payload in payloads:
            parts += (_RECORDS_KEY, encode_varint(len(payload)), payload)
        return b"".join(parts)

    def _requests(self, stream: _Stream) -> Iterator[bytes]:
        """Yield the serialized messages of one stream; runs on a gRPC thread."""
        node = self._node
        with node.lock:
            stream.last_send = stream.last_reply = time.monotonic()
            stream.in_flight.append(None)
            commit = node.commit_sequence
        yield self._message(stream, [], commit)
        while True:
            with node.lock:
                durable = self._wait_for_work(stream)
                if durable is None:
                    return
                start = stream.next_sequence
                commit = node.commit_sequence
            records = []
            ready = start <= durable and not stream.needs_snapshot
            if ready and len(stream.in_flight) < WINDOW_MESSAGES:
                try:
                    records = node.wal.read_payloads_from(
                        start, self._message_bytes, through=durable
                    )
                except RecordsPurged as exc:
                    self._report_purged(exc)
                    stream.needs_snapshot = True
            with node.lock:
                request = self._message(
                    stream, [payload for _, payload in records], commit
                )
                stream.truncate_after = None
                if records:
                    last = records[-1][0]
                    stream.next_sequence = last.first_sequence + entry_count(last)
                stream.in_flight.append(stream.next_sequence - 1)
                stream.last_send = time.monotonic()
            yield request

    def _wait_for_work(self, stream: _Stream) -> int | None:
        """Wait, holding the node lock, until a message is due.

        Returns the leader's durable sequence, or None when the stream must end.
        """
        node = self._node
        while True:
            if self._stop.is_set() or stream.failure:
                return None
            if not node.is_leading_locked(self._epoch):
                return None
            now = time.monotonic()
            if stream.in_flight and now - stream.last_reply > REPLY_TIMEOUT_SECONDS:
                stream.failure = f"no reply for {REPLY_TIMEOUT_SECONDS:.0f} s"
                call = self._call
                if call is not None:
                    call.cancel()
                return None
            durable = node.durable_sequence
            if stream.handshake_done:
                has_records = (
                    stream.next_sequence <= durable and not stream.needs_snapshot
                )
                window_open = len(stream.in_flight) < WINDOW_MESSAGES
                if stream.truncate_after is not None or (has_records and window_open):
                    return durable
                if now - stream.last_send >= HEARTBEAT_SECONDS:
                    return durable
            node.changed.wait(HEARTBEAT_SECONDS / 2)

    def _on_reply(
        self, stream: _Stream, reply: replication_service_pb2.ReplicateEntriesResponse
    ) -> bool:
        """Process one reply; return False when the stream must end."""
        node = self._node
        if reply.leader_epoch > self._epoch:
            _LOGGER.warning(
                "log shard %s: follower %s has seen epoch %d, above this leader's "
                "%d; stepping down",
                node.shard,
                self.follower,
                reply.leader_epoch,
                self._epoch,
            )
            node.step_down(reply.leader_epoch)
            return False
        with node.lock:
            now = time.monotonic()
            stream.last_reply = now
            self.progress.last_contact = time.time()
            expected = stream.in_flight.popleft() if stream.in_flight else -1
            if not stream.handshake_done:
                self._handshake(stream, reply)
                if stream.leader_lost is None:
                    return True
        if stream.leader_lost is not None:
            node.step_aside(self._epoch, self.follower, *stream.leader_lost)
            return False
        with node.lock:
            if stream.needs_snapshot and reply.last_sequence != expected:
                # The follower installed the snapshot: start over from it.
                self._purged_reported = False
                return False
            if reply.last_sequence != expected:
                stream.failure = (
                    f"follower holds sequence {reply.last_sequence}, "
                    f"expected {expected}; starting over"
                )
                return False
            self._acknowledge(reply.last_sequence)
        return True

    def _handshake(
        self, stream: _Stream, reply: replication_service_pb2.ReplicateEntriesResponse
    ) -> None:
        node = self._node
        end = node.wal.history.end_of(reply.last_record_epoch, node.wal.last_sequence)
        matched = reply.last_sequence
        if matched > end and reply.last_record_epoch >= self._epoch:
            # Only this leader writes records of its epoch, so the follower
            # received these from it: this leader's log lost them after they
            # were durable, and they may have been acknowledged. Truncating
            # them would lose them everywhere.
            stream.leader_lost = (end, matched, reply.last_record_epoch)
            return
        if matched > end and self._lost_to_damage(matched, end):
            stream.leader_lost = (end, matched, reply.last_record_epoch)
            return
        if matched > end:
            _LOGGER.warning(
                "log shard %s: follower %s holds entries %d..%d of epoch %d that "
                "this leader does not have; truncating them",
                node.shard,
                self.follower,
                end + 1,
                matched,
                reply.last_record_epoch,
            )
            stream.truncate_after = end
            matched = end
        else:
            self._acknowledge(matched)
        stream.next_sequence = matched + 1
        stream.handshake_done = True
        if not self.progress.reachable:
            _LOGGER.info(
                "log shard %s: replicating to %s from sequence %d",
                node.shard,
                self.follower,
                stream.next_sequence,
            )
        self.progress.reachable = True
        node.changed.notify_all()

    def _lost_to_damage(self, matched: int, end: int) -> bool:
        """Return whether the follower may contain entries this leader lost to damage.

        A leader promoted with a damaged log lacks the entries after
        `damage.after`, which may have been acknowledged. A follower that
        contains entries past that point keeps them, and this leader steps aside
        so that the coordinator promotes the follower, whose log is then
        ahead. That holds only while this leader has written no record of
        its own epoch.

        `end` is where the follower's log leaves this leader's: the last
        sequence of the follower's last record epoch here. When `end` is
        before `damage.after`, a newer epoch replaced the follower's entries
        from `end + 1` on in an intact part of this leader's log. So they
        are not the lost entries but stale ones, which the follower
        truncates, even when they reach past `damage.after`.
        """
        node = self._node
        damage = node.wal.damage
        # NOTE: once this leader wrote records of its epoch, its log is ahead
        # of the follower's in the coordinator's order, so the coordinator
        # would promote this node again. The follower's entries are then
        # truncated, as entries of an older epoch that the leader lacks.
        return (
            damage is not None
            and matched > damage.after
            and end >= damage.after
            and node.wal.last_record_epoch() < self._epoch
        )

    def _acknowledge(self, sequence: int) -> None:
        self.progress.acknowledged = sequence
        self._node.on_acknowledged_locked(self.follower, sequence)
