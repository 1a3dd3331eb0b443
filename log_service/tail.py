"""TailLogEntries: one FollowEntries stream per shard, merged as they arrive.

A thread per shard follows the shard's leader. When the stream breaks, the
thread requests the current leader from the coordinator and follows it again
from the last sequence number it received, so the client sees no gap and no
entry twice. With that sequence number goes the epoch of its entry. When the
new leader's log has a newer epoch that begins at or before it, the old
leader had entries that the new one lacks, as can happen with quorum
`leader`. The new leader then starts the stream after the last entry the two
logs share, so the tail sends every entry the new leader stores after it.
Each stream names the epoch of the coordinator's route, and a node that does
not lead the shard at that epoch refuses it with UNAVAILABLE. So a follower
that the coordinator has promoted but that has not taken its configuration
yet, and whose log may end before the position, is followed only once it
leads.
A watcher thread cancels a stream that stays open but is of no more use,
which the shard thread then replaces in the same way:

- the coordinator names another leader or a higher epoch for the shard, as
  after a failover from a leader that is stopped or cut off and so keeps its
  connection open;
- no message, not even a keep-alive, arrives for `follow_timeout` seconds.

The threads add what they receive to one buffer of pending messages, and the
response iterator sends them in the order they arrived.

Entries come in two kinds:

- **Backlog**: entries of a tail resumed from a token, up to the last
  sequence number the shard had when the call began. The client requested
  each of them, so a thread waits for room in the buffer rather than drop
  any. The shard's stream then waits too, and the node reads on once the
  client has taken more. At most `max_pending` backlog entries wait, or one
  message when a single message is larger.
- **Live**: every other entry. The threads never wait for the client with
  these. When the client reads so slowly that more than `max_pending` live
  entries wait, the oldest live entries are dropped. The first response
  whose resume token points past them reports how many in `skipped_count`.

Responses are serialized here (`log_service/entry_wire.py`), with at most
`max_response_bytes` each, except that a response always carries at least one
entry of a message.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_status import rpc_status

from log_service.clients import ROUTER_STOPPING, is_closed_channel_error
from log_service.coordinator import Coordinator
from log_service.entry_wire import encode_entries
from log_service.pages import page_budget
from log_service.query import EntrySelection
from log_service.tokens import ResumeToken, encode_resume_token, invalid_sequence_error
from log_service.wal import slice_columns
from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from splitlog_runtime.errors import (
    ERROR_CLASSES,
    OutOfRange,
    Unavailable,
    status_reason,
)

_LOGGER = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 10.0
# Wait before following a shard again. It doubles after each attempt in a row
# that received no message, up to the maximum.
RECONNECT_DELAY_SECONDS = 0.2
MAX_RECONNECT_DELAY_SECONDS = 1.6
# Node statuses that describe the request rather than the node's state, so
# the same request to the same node fails the same way. They end the tail.
# Every other status, such as UNAVAILABLE from a node that stops or is no
# longer leader, makes the tail follow the shard's leader again. That
# includes INTERNAL and UNKNOWN, which gRPC also reports for a broken
# connection.
FINAL_NODE_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# Seconds without any message on a node's FollowEntries stream after which the
# tail follows the shard's leader again. Nodes send a keep-alive after each
# second without entries (`log_service.node.FOLLOW_KEEPALIVE_SECONDS`), so
# this allows for four lost ones.
FOLLOW_TIMEOUT_SECONDS = 5.0
# Seconds between two checks of every stream's silence and its shard's route.
WATCH_INTERVAL_SECONDS = 0.25
# Live entries that may wait for a slow client before the oldest are dropped,
# and backlog entries that may wait before the shard threads wait too.
MAX_PENDING_ENTRIES = 10_000
# Bound of one response. gRPC clients reject larger messages unless they raise
# grpc.max_receive_message_length, whose default is 4 MiB.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Maximum time the first response waits for every shard's stream to open, so
# that a resume token the nodes reject fails the call before any response.
OPEN_WAIT_SECONDS = 2.0
# Deadline of the call that reads a shard's last sequence number when a tail
# resumes from a token.
LAST_SEQUENCE_TIMEOUT_SECONDS = 5.0
# RetryInfo delay of a tail that ends because the router closed its channel to
# a node, which it does when it stops.
RETRY_DELAY_SECONDS = 1.0


@dataclass
class _Pending:
    """A message received from a shard and not yet sent."""

    shard: str
    message: node_service_pb2.FollowEntriesResponse
    # Whether it contains backlog entries, which are never dropped.
    backlog: bool
    # Live entries of the same shard that were dropped after this message
    # arrived. They count as skipped when this message is taken, because the
    # shard's position moves past them only then.
    skipped: int = 0


@dataclass
class _Stream:
    """A shard's open FollowEntries call."""

    call: grpc.Call
    # The leader's address and epoch in the coordinator's route when the call
    # opened.
    address: str
    epoch: int
    # Monotonic time at which the shard thread began waiting for the next
    # message, or None while it hands a message to the buffer, which may wait
    # for the client.
    reading_since: float | None
    # Why the watcher cancelled the call, or empty.
    abandoned: str = ""
    # True when the call starts after the shard's newest committed entry, as
    # it does for a shard without a position.
    from_newest: bool = False


class Tail:
    """One TailLogEntries call.

    Args:
      coordinator: the source of each shard's current leader.
      stub_for: returns the LogNodeService stub of an address.
      selection: the entry conditions.
      fingerprint: hash of the conditions, for resume tokens.
      positions: last sequence number sent per shard. -1 starts after the
        newest committed entry. When the stream opens only after the first
        response, -1 starts after the commit sequence that the coordinator
        last polled instead, or, for a shard that no poll has reached, from
        the coordinator's `start_floor`.
      epochs: the epoch of the entry at each shard's position, from a resume
        token; a missing or 0 epoch leaves the position unchecked.
      keepalive: seconds without entries after which an empty message goes out.
      max_pending: live entries received but not yet sent beyond which the
        oldest are dropped and counted as skipped; also the backlog entries
        that may wait.
      max_response_bytes: bound of one serialized response.
      follow_timeout: seconds without any message on a node stream after
        which the tail follows the shard's leader again.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        stub_for: Callable[[str], object],
        selection: EntrySelection,
        fingerprint: str,
        positions: dict[str, int],
        epochs: dict[str, int] | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
        max_pending: int = MAX_PENDING_ENTRIES,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        follow_timeout: float = FOLLOW_TIMEOUT_SECONDS,
    ) -> None:
        self._coordinator = coordinator
        self._stub_for = stub_for
        self._filter = selection.to_filter()
        self._fingerprint = fingerprint
        self._positions = dict(positions)
        self._epochs = {shard: (epochs or {}).get(shard, 0) for shard in positions}
        self._shards = tuple(positions)
        self._keepalive = keepalive
        self._max_pending = max_pending
        self._entry_budget = page_budget(max_response_bytes)
        self._follow_timeout = follow_timeout

        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Guarded by `_lock`: the messages not yet sent, oldest first, the
        # number of live and of backlog entries in them, entries dropped since
        # the last response, the last backlog sequence of each resumed shard,
        # the shards whose stream has opened, an error that ends the call, and
        # each shard's open node stream.
        self._pending: collections.deque[_Pending] = collections.deque()
        self._live_entries = 0
        self._backlog_entries = 0
        self._skipped = 0
        self._backlog_through: dict[str, int] = {}
        self._opened: set[str] = set()
        # Shards without a position whose stream had not opened by the first
        # response. Each starts after the commit sequence polled before that
        # response.
        self._late: set[str] = set()
        # Shards without a position whose stream had not opened by the first
        # response, and of which no poll had reported a commit sequence. Each
        # starts from the coordinator's `start_floor` once it has one.
        self._unplaced: set[str] = set()
        # What ends the tail: a DomainError for its client, or an unexpected
        # exception of a shard thread, which the response stream raises.
        self._error: Exception | None = None
        self._streams: dict[str, _Stream] = {}

        self._threads = [
            threading.Thread(
                target=self._follow,
                args=(shard, position, self._epochs[shard]),
                name=f"log-tail-{shard}",
                daemon=True,
            )
            for shard, position in self._positions.items()
        ]
        self._threads.append(
            threading.Thread(target=self._watch, name="log-tail-watch", daemon=True)
        )

    def stop(self) -> None:
        """End the node streams and the response iterator."""
        self._stop.set()
        with self._lock:
            calls = [stream.call for stream in self._streams.values()]
            self._changed.notify_all()
        for call in calls:
            call.cancel()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the tail's threads to end.

        Returns:
          Whether every thread has ended or never started.
        """
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def responses(self) -> Iterator[bytes]:
        """Yield serialized responses as entries arrive, and keep-alives in between.

        Raises:
          OutOfRange: a node no longer stores the entries after the resume
            token's position.
          InvalidArgument: the resume token's position of a shard is beyond
            the shard's last sequence number.
          DomainError: a node rejected a shard's call with a status of
            `FINAL_NODE_CODES`; the error has the same status.
          ValueError: a shard thread's node call raised one that does not
            come from a closed channel, which is a bug of the router.
        """
        # Polled commit sequences, read before the first response. Each is
        # therefore at most the shard's commit sequence when the client
        # receives that response.
        known_commits = {
            shard: self._coordinator.known_commit(shard)
            for shard, position in self._positions.items()
            if position < 0
        }
        with self._lock:
            # A tail stopped before its first response starts no threads.
            # `stop` takes the lock after it sets the flag, so no thread
            # starts after `stop` returns, when the router may already wait
            # for the threads.
            if not self._stop.is_set():
                for thread in self._threads:
                    thread.start()
        try:
            with self._lock:
                self._wait_for_streams_locked()
                self._place_unopened_locked(known_commits)
                positions = self._positions_locked()
                skipped = self._take_skipped_locked()
            yield self._closing_fields(positions, skipped)
            while True:
                with self._lock:
                    item = self._next_locked()
                    if item is None:
                        return
                    positions = self._positions_locked()
                    skipped = self._take_skipped_locked()
                yield from self._serialized(item, positions, skipped)
        finally:
            self.stop()

    def _serialized(
        self, item: _Pending, positions: dict[str, tuple[int, int]], skipped: int
    ) -> Iterator[bytes]:
        """Yield the responses that carry one message's entries.

        A message larger than the budget goes out in several responses. The
        token of each but the last points at its own last entry, so a client
        that stops in between resumes after the entries it received. The
        skipped count goes out with the last, whose token is past every
        dropped entry that the count includes.
        """
        sequences = item.message.sequences
        if not sequences:
            yield self._closing_fields(positions, skipped)
            return
        encoded = encode_entries(item.message.entries)
        start = 0
        while start < len(encoded):
            stop = _fitting_stop(encoded.offsets, start, self._entry_budget)
            chunk_positions = positions
            chunk_skipped = skipped
            if stop < len(encoded):
                # The message's epoch is that of its last entry. An earlier
                # entry may have an older epoch, but a log that shares the
                # message's last entry also shares every earlier one.
                chunk_position = (sequences[stop - 1], item.message.last_epoch)
                chunk_positions = {**positions, item.shard: chunk_position}
                chunk_skipped = 0
            yield encoded.chunk(start, stop) + self._closing_fields(
                chunk_positions, chunk_skipped
            )
            start = stop

    def _closing_fields(
        self, positions: dict[str, tuple[int, int]], skipped: int
    ) -> bytes:
        """Serialize the resume token and skipped count of a response.

        Appended to serialized entries, they make one response, because
        protobuf parsers merge concatenated messages.
        """
        # The shards never change, so their names need no lock.
        unopened = frozenset(self._positions) - set(positions)
        token = encode_resume_token(
            ResumeToken(
                self._fingerprint,
                {shard: sequence for shard, (sequence, _) in positions.items()},
                unopened,
                {shard: epoch for shard, (_, epoch) in positions.items()},
            )
        )
        with self._lock:
            waiting = sorted(set(self._shards) - self._opened)
        return logs_service_pb2.TailLogEntriesResponse(
            resume_token=token, skipped_count=skipped, unopened_shards=waiting
        ).SerializeToString()

    def _wait_for_streams_locked(self) -> None:
        deadline = time.monotonic() + OPEN_WAIT_SECONDS
        while len(self._opened) < len(self._positions) and self._error is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                break
            self._changed.wait(remaining)
        if self._error is not None:
            raise self._error

    def _place_unopened_locked(
        self, known_commits: dict[str, tuple[int, int] | None]
    ) -> None:
        """Set a safe start for each shard without a position or an open stream.

        The client may write as soon as it has the first response. A stream
        that opened later and started after the shard's newest entry would
        miss the entries acknowledged in between. So the shard starts after
        the commit sequence that the coordinator polled before the call. That
        may send a few entries acknowledged before the first response.
        """
        for shard, known in known_commits.items():
            if shard in self._opened or self._positions[shard] >= 0:
                continue
            if known is None:
                self._unplaced.add(shard)
                _LOGGER.info(
                    "log tail of shard %s: the stream did not open within %.1f s "
                    "and no node of the shard has responded to a poll yet, so the "
                    "shard starts from the lower of the positions that the "
                    "router's acknowledged writes and its next poll give it",
                    shard,
                    OPEN_WAIT_SECONDS,
                )
                continue
            sequence, epoch = known
            self._positions[shard] = sequence
            self._epochs[shard] = epoch
            self._late.add(shard)
            _LOGGER.info(
                "log tail of shard %s: the stream did not open within %.1f s, "
                "so the shard starts after sequence %d (epoch %d), the commit "
                "sequence last polled",
                shard,
                OPEN_WAIT_SECONDS,
                sequence,
                epoch,
            )

    def _late_start(self, shard: str) -> tuple[int, int] | None:
        """Return the (sequence, epoch) start of a late shard, or None.

        For a shard that no poll had reported by the first response, the
        start is the coordinator's `start_floor`, which is None until the
        router has polled the shard or acknowledged a write of it. Without
        it the stream starts after the shard's newest entry, and `_add`
        restarts it when a floor appears before that entry. None also once
        the shard's stream has opened.
        """
        with self._lock:
            if shard in self._opened:
                return None
            if shard in self._late:
                return self._positions[shard], self._epochs[shard]
            if shard not in self._unplaced:
                return None
        return self._coordinator.start_floor(shard)

    def _next_locked(self) -> _Pending | None:
        """Take the next message with entries, or wait for one.

        Returns:
          The message; one without entries when a keep-alive or a skipped
          count is due; None once the tail stops.

        Raises:
          OutOfRange: a node rejected the position of a resumed stream.
          InvalidArgument: the position of a resumed stream is beyond the
            shard's last sequence number.
        """
        deadline = time.monotonic() + self._keepalive
        while True:
            if self._error is not None:
                raise self._error
            if self._stop.is_set():
                return None
            while self._pending:
                item = self._pending.popleft()
                self._count_locked(item, -len(item.message.sequences))
                self._release_locked(item)
                if item.message.sequences:
                    # A shard thread may wait for room for its backlog.
                    self._changed.notify_all()
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._skipped:
                return _Pending("", node_service_pb2.FollowEntriesResponse(), False)
            self._changed.wait(remaining)

    def _positions_locked(self) -> dict[str, tuple[int, int]]:
        """Return each shard's position and the epoch of its entry.

        A shard whose stream has not opened yet has no position. The token
        lists it as unopened, and a tail resumed from the token starts that
        shard after its newest entry.
        """
        return {
            shard: (position, self._epochs[shard])
            for shard, position in self._positions.items()
            if position >= 0
        }

    def _take_skipped_locked(self) -> int:
        skipped = self._skipped
        self._skipped = 0
        return skipped

    def _advance_locked(
        self, shard: str, message: node_service_pb2.FollowEntriesResponse
    ) -> None:
        """Move a shard's position to a message's last sequence when it is later.

        Positions compare by epoch first. After a failover the new leader may
        number its entries from below the position of the old leader's last
        entries, and its entries still come later.
        """
        current = (self._epochs[shard], self._positions[shard])
        if (message.last_epoch, message.last_sequence) > current:
            self._epochs[shard] = message.last_epoch
            self._positions[shard] = message.last_sequence

    def _release_locked(self, item: _Pending) -> None:
        """Move the shard's position past a taken message and count its drops."""
        self._advance_locked(item.shard, item.message)
        self._skipped += item.skipped

    def _count_locked(self, item: _Pending, entries: int) -> None:
        if item.backlog:
            self._backlog_entries += entries
        else:
            self._live_entries += entries

    def _add(
        self,
        shard: str,
        message: node_service_pb2.FollowEntriesResponse,
        stream: _Stream,
    ) -> bool:
        """Add a received message to the pending ones.

        Returns:
          False, without adding the message, when it is the first of a stream
          that started after the shard's newest entry while the shard has an
          earlier start: from the first response, or from the coordinator's
          `start_floor` for a shard that no poll had reached by then. The
          caller then follows the shard again. True otherwise.
        """
        count = len(message.sequences)
        floor = None
        if stream.from_newest and shard in self._unplaced:
            # Read outside the tail's lock, as the shard thread does.
            floor = self._coordinator.start_floor(shard)
        with self._lock:
            if stream.from_newest and shard not in self._opened:
                if shard in self._late:
                    return False
                if floor is not None and shard in self._unplaced:
                    # The entries after the floor up to the stream's start were
                    # acknowledged after the first response, or may have been.
                    start = message.sequences[0] - 1 if count else message.last_sequence
                    if floor[0] < start:
                        return False
            # Waiting for room for a backlog is no silence of the stream.
            stream.reading_since = None
            self._opened.add(shard)
            backlog = bool(count) and message.sequences[0] <= self._backlog_through.get(
                shard, -1
            )
            if backlog:
                while (
                    self._backlog_entries
                    and self._backlog_entries + count > self._max_pending
                    and not self._stop.is_set()
                    and self._error is None
                ):
                    self._changed.wait()
                if self._stop.is_set() or self._error is not None:
                    return True
            item = _Pending(shard, message, backlog)
            self._pending.append(item)
            self._count_locked(item, count)
            self._drop_live_locked()
            # A message without entries that waits behind nothing moves its
            # shard's position at once, so the next resume token includes it.
            while self._pending and not self._pending[0].message.sequences:
                self._release_locked(self._pending.popleft())
            self._changed.notify_all()
            stream.reading_since = time.monotonic()
        return True

    def _drop_live_locked(self) -> None:
        """Drop the oldest live entries beyond `max_pending`."""
        index = 0
        while self._live_entries > self._max_pending and index < len(self._pending):
            item = self._pending[index]
            if item.backlog or not item.message.sequences:
                index += 1
                continue
            if not self._drop_from_locked(
                index, self._live_entries - self._max_pending
            ):
                index += 1

    def _drop_from_locked(self, index: int, excess: int) -> bool:
        """Drop up to `excess` entries from the pending message at `index`.

        The dropped entries' shard position moves past them, and they count
        as skipped. When an older message of the same shard still waits,
        that message carries the position and the count instead, so no token
        skips the entries it contains, and no response reports the dropped
        entries before its token is past them. When that message comes from
        an older epoch, a message without entries replaces a removed message
        to carry the position and the count. A message cut only in part keeps
        its position and carries the count itself, so a resumed tail may send
        the dropped entries again.

        Returns:
          Whether the whole message was removed and nothing took its place.
        """
        item = self._pending[index]
        message = item.message
        count = len(message.sequences)
        removed = count <= excess
        if removed:
            del self._pending[index]
            dropped = count
            through = message.last_sequence
            carried = item.skipped
        else:
            dropped = excess
            through = message.sequences[excess - 1]
            carried = 0
            item.message = node_service_pb2.FollowEntriesResponse(
                entries=slice_columns(message.entries, excess, count),
                sequences=message.sequences[excess:],
                last_sequence=message.last_sequence,
                last_epoch=message.last_epoch,
            )
        earlier = None
        for position in range(index - 1, -1, -1):
            if self._pending[position].shard == item.shard:
                earlier = self._pending[position]
                break
        dropped_through = node_service_pb2.FollowEntriesResponse(
            last_sequence=through, last_epoch=message.last_epoch
        )
        if earlier is None:
            self._advance_locked(item.shard, dropped_through)
            self._skipped += dropped + carried
        elif earlier.message.last_epoch == message.last_epoch:
            earlier.message.last_sequence = max(earlier.message.last_sequence, through)
            earlier.skipped += dropped + carried
        elif removed:
            self._pending.insert(
                index,
                _Pending(item.shard, dropped_through, False, dropped + carried),
            )
            removed = False
        else:
            item.skipped += dropped
        self._live_entries -= dropped
        return removed

    def _fail(self, shard: str, exc: grpc.RpcError) -> None:
        error = OutOfRange(
            f"resume_token is older than the retention of shard {shard}: "
            f"{exc.details()}. Start a new tail without resume_token, and read "
            "older entries with ListLogEntries",
            reason="RESUME_TOKEN_EXPIRED",
            metadata={"shard": shard},
        )
        _LOGGER.info("log tail of shard %s: rejected resume token (%s)", shard, exc)
        self._end_with(error)

    def _fail_final(
        self, shard: str, address: str, method: str, exc: grpc.RpcError
    ) -> None:
        """End the tail with a node's status from `FINAL_NODE_CODES`."""
        status = rpc_status.from_call(exc)
        reason = status_reason(status) if status is not None else ""
        error = ERROR_CLASSES[exc.code()](
            f"log shard {shard}: node {address} rejected {method} with "
            f"{exc.code().name}: {exc.details()}",
            reason=reason or None,
            metadata={"shard": shard},
        )
        _LOGGER.warning(
            "log tail of shard %s: node %s rejected %s (%s: %s); ending the tail",
            shard,
            address,
            method,
            exc.code().name,
            exc.details(),
        )
        self._end_with(error)

    def _end_on_value_error(
        self, shard: str, address: str, method: str, exc: ValueError
    ) -> None:
        """End the tail after `method` to a node raised ValueError.

        A closed channel (`is_closed_channel_error`) ends it as
        `_end_closed` does. Any other ValueError is a bug of the router. The
        response stream raises it, so the service's interceptor logs it with
        its traceback and returns INTERNAL. A stopped tail has no reader, so
        the bug is logged here instead.
        """
        if is_closed_channel_error(exc):
            self._end_closed(shard, address, method, exc)
        elif self._stop.is_set():
            _LOGGER.error(
                "log tail of shard %s: %s to node %s failed after the tail stopped",
                shard,
                method,
                address,
                exc_info=exc,
            )
        else:
            self._end_with(exc)

    def _end_closed(
        self, shard: str, address: str, method: str, exc: ValueError
    ) -> None:
        """End the tail after `method` found the node's channel closed.

        The router closes its node channels when it stops, after it stopped
        its tails, so a stopped tail ends without an error. A tail that has
        not stopped yet ends with UNAVAILABLE, because its client may resume
        it from the last resume token on a running router.
        """
        if self._stop.is_set():
            return
        _LOGGER.warning(
            "log tail of shard %s: %s to node %s found the channel closed (%s); "
            "ending the tail",
            shard,
            method,
            address,
            exc,
        )
        self._end_with(
            Unavailable(
                f"log shard {shard}: {method} to node {address} failed because the "
                "router closed its channel to the node, as it does when it stops. "
                "Retry the tail with the last resume_token",
                reason=ROUTER_STOPPING,
                metadata={"shard": shard},
                retry_delay=RETRY_DELAY_SECONDS,
            )
        )

    def _end_with(self, error: Exception) -> None:
        with self._lock:
            self._error = error
            self._changed.notify_all()

    def _read_last_sequence(self, shard: str, stub: object) -> int:
        """Return the last sequence of the shard's leader, which ends the backlog.

        Raises:
          grpc.RpcError: the leader did not respond.
        """
        response = stub.QueryEntries(
            node_service_pb2.QueryEntriesRequest(shard=shard, limit=1),
            timeout=LAST_SEQUENCE_TIMEOUT_SECONDS,
        )
        with self._lock:
            self._backlog_through[shard] = response.last_sequence
        return response.last_sequence

    def _check_start(self, shard: str, start: int, last_sequence: int) -> bool:
        """Check where a resumed stream starts against the leader's last sequence.

        `start` is the first message's `last_sequence`: the token's position,
        or where the leader's log and the one the token was read from part.
        A token from a wiped or rebuilt cluster, or a crafted one, can hold a
        position that the shard has not reached. FollowEntries would then wait
        silently until the shard catches up, so the tail ends with
        INVALID_ARGUMENT instead. A token returned by this cluster passes,
        because its position is an entry that the leader stores or lies
        beyond where the two logs part. A stream with a position opens only
        on a node that leads at the route's epoch (`leader_epoch`). A
        promoted follower that has not taken its configuration yet cannot
        tell where the two logs part, so it refuses the stream and fails no
        valid token here.
        NOTE: `last_sequence` is the leader's visible sequence, and reads on
        a new leader wait only for its commit sequence, which trails its log
        until a follower acknowledges. If its store has not applied the end
        of the log by then, a valid token could still fail here.

        Returns:
          Whether to follow the shard; False after ending the tail.
        """
        if start <= last_sequence:
            return True
        problem = (
            f"sequence {start} of shard {shard} is beyond the shard's last "
            f"sequence {last_sequence}, so the token comes from another "
            "cluster, one since rebuilt, or was altered"
        )
        _LOGGER.info("log tail of shard %s: rejected resume token (%s)", shard, problem)
        self._end_with(
            invalid_sequence_error("resume_token", "resume token", shard, problem)
        )
        return False

    def _follow(self, shard: str, position: int, epoch: int) -> None:
        # A negative position starts after the newest entry, so it needs no check.
        checked = position < 0
        last_sequence = -1
        # Streams in a row that ended without any message. Of these, the log
        # shows the 1st, 2nd, 4th, 8th and so on, so that a leader that stays
        # unreachable does not flood it.
        silent = 0
        failed_checks = 0
        while not self._stop.is_set():
            if position < 0:
                late = self._late_start(shard)
                if late is not None:
                    # The start is a commit sequence that the coordinator
                    # polled, so it needs no check against the leader's last
                    # sequence.
                    position, epoch = late
                    checked = True
            route = self._coordinator.route(shard)
            if route.leader_address is None:
                self._stop.wait(RECONNECT_DELAY_SECONDS)
                continue
            try:
                stub = self._stub_for(route.leader_address)
            except ValueError as exc:
                # `NodeClients.stubs` raises ClientsClosed after the router
                # closed its node channels.
                method = "FollowEntries" if checked else "QueryEntries"
                self._end_on_value_error(shard, route.leader_address, method, exc)
                return
            if not checked:
                try:
                    last_sequence = self._read_last_sequence(shard, stub)
                except ValueError as exc:
                    # gRPC raises ValueError for a call on a closed channel.
                    self._end_on_value_error(
                        shard, route.leader_address, "QueryEntries", exc
                    )
                    return
                except grpc.RpcError as exc:
                    if self._stop.is_set():
                        return
                    if exc.code() in FINAL_NODE_CODES:
                        self._fail_final(
                            shard, route.leader_address, "QueryEntries", exc
                        )
                        return
                    failed_checks += 1
                    _LOGGER.info(
                        "log tail of shard %s: reading the last sequence from %s "
                        "failed (%s); retrying",
                        shard,
                        route.leader_address,
                        exc.code(),
                    )
                    self._stop.wait(_reconnect_delay(failed_checks))
                    continue
            request = node_service_pb2.FollowEntriesRequest(
                shard=shard,
                filter=self._filter,
                after_sequence=position,
                after_epoch=epoch,
                # A live tail without a position opens on the named leader
                # even before that node has taken its configuration. A
                # refusal would start the shard later and miss the entries
                # stored in between.
                leader_epoch=route.epoch if position >= 0 else 0,
            )
            try:
                call = stub.FollowEntries(request)
            except ValueError as exc:
                self._end_on_value_error(
                    shard, route.leader_address, "FollowEntries", exc
                )
                return
            stream = _Stream(
                call,
                route.leader_address,
                route.epoch,
                time.monotonic(),
                from_newest=position < 0,
            )
            with self._lock:
                self._streams[shard] = stream
            if self._stop.is_set():
                call.cancel()
            received = False
            try:
                for message in call:
                    received = True
                    if not checked:
                        if not self._check_start(
                            shard, message.last_sequence, last_sequence
                        ):
                            call.cancel()
                            return
                        checked = True
                    if not self._add(shard, message, stream):
                        call.cancel()
                        problem = (
                            "the stream started after the shard's newest entry, "
                            "but the shard has an earlier start"
                        )
                        break
                    if (message.last_epoch, message.last_sequence) > (epoch, position):
                        epoch = message.last_epoch
                        position = message.last_sequence
                else:
                    problem = "the node ended the stream"
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    self._fail(shard, exc)
                    return
                if exc.code() in FINAL_NODE_CODES and not stream.abandoned:
                    self._fail_final(shard, route.leader_address, "FollowEntries", exc)
                    return
                problem = stream.abandoned or f"the stream failed ({exc.code()})"
            finally:
                with self._lock:
                    if self._streams.get(shard) is stream:
                        del self._streams[shard]
            silent = 0 if received else silent + 1
            if silent & (silent - 1) == 0:
                _LOGGER.info(
                    "log tail of shard %s: left the stream from %s because %s; "
                    "following the leader again after sequence %d%s",
                    shard,
                    route.leader_address,
                    problem,
                    position,
                    f" ({silent} streams in a row without a message)" if silent else "",
                )
            self._stop.wait(_reconnect_delay(silent))

    def _watch(self) -> None:
        """Cancel node streams that fell silent or whose shard has a new leader.

        The shard thread then follows the shard's current leader from the last
        sequence it received.
        """
        while not self._stop.wait(WATCH_INTERVAL_SECONDS):
            for shard in self._shards:
                self._check_stream(shard)

    def _check_stream(self, shard: str) -> None:
        route = self._coordinator.route(shard)
        now = time.monotonic()
        with self._lock:
            stream = self._streams.get(shard)
            if stream is None or stream.abandoned:
                return
            if route.leader_address is not None and (
                route.leader_address != stream.address or route.epoch != stream.epoch
            ):
                stream.abandoned = (
                    f"the coordinator named {route.leader_address} leader at "
                    f"epoch {route.epoch} (the stream's epoch is {stream.epoch})"
                )
            elif (
                stream.reading_since is not None
                and now - stream.reading_since > self._follow_timeout
            ):
                stream.abandoned = (
                    f"no message arrived for {now - stream.reading_since:.1f} s"
                )
            else:
                return
        stream.call.cancel()


def _reconnect_delay(failures: int) -> float:
    """Return the seconds to wait after `failures` attempts in a row without a
    message."""
    doubled = RECONNECT_DELAY_SECONDS * 2 ** min(max(failures - 1, 0), 8)
    return min(doubled, MAX_RECONNECT_DELAY_SECONDS)


def _fitting_stop(offsets: np.ndarray, start: int, budget: int) -> int:
    """Return the end of the entries from `start` on that fit in `budget` bytes.

    At least one entry fits.
    """
    stop = int(np.searchsorted(offsets, offsets[start] + budget, "right")) - 1
    return max(stop, start + 1)
