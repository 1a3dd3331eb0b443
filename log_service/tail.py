"""TailLogEntries: one FollowEntries stream per shard, merged as they arrive.

A thread per shard follows the shard's leader. When the stream breaks, for
example because the leader failed, the thread requests the current leader from
the coordinator and follows it again from the last sequence number it
received, so the client sees no gap. The threads never wait for the client,
because they add what they receive to one buffer of pending messages. When the client
reads so slowly that the buffer contains more than `max_pending` entries, the
oldest pending entries are dropped, and the next response reports how many
in `skipped_count`. The resume token then points past the dropped entries.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from log_service.coordinator import Coordinator
from log_service.model import columns_to_entries
from log_service.query import EntrySelection
from log_service.tokens import ResumeToken, encode_resume_token, invalid_sequence_error
from log_service.wal import slice_columns
from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from splitlog_runtime.errors import DomainError, OutOfRange

_LOGGER = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 10.0
RECONNECT_DELAY_SECONDS = 0.2
# Entries that may wait for a slow client before the oldest are dropped.
MAX_PENDING_ENTRIES = 10_000
# Maximum time the first response waits for every shard's stream to open, so
# that a resume token the nodes reject fails the call before any response.
OPEN_WAIT_SECONDS = 2.0
# Deadline of the call that reads a shard's last sequence number when a tail
# resumes from a token.
LAST_SEQUENCE_TIMEOUT_SECONDS = 5.0


class Tail:
    """One TailLogEntries call.

    Args:
      coordinator: the source of each shard's current leader.
      stub_for: returns the LogNodeService stub of an address.
      selection: the entry conditions.
      fingerprint: hash of the conditions, for resume tokens.
      positions: last sequence number sent per shard; -1 starts after the
        newest committed entry.
      keepalive: seconds without entries after which an empty message goes out.
      max_pending: entries received but not yet sent beyond which the oldest
        are dropped and counted as skipped.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        stub_for: Callable[[str], object],
        selection: EntrySelection,
        fingerprint: str,
        positions: dict[str, int],
        keepalive: float = KEEPALIVE_SECONDS,
        max_pending: int = MAX_PENDING_ENTRIES,
    ) -> None:
        self._coordinator = coordinator
        self._stub_for = stub_for
        self._filter = selection.to_filter()
        self._fingerprint = fingerprint
        self._positions = dict(positions)
        self._keepalive = keepalive
        self._max_pending = max_pending

        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Guarded by `_lock`: the messages not yet sent, oldest first, the
        # number of entries in them, entries dropped since the last response,
        # the shards whose stream has opened, and an error that ends the call.
        self._pending: collections.deque[
            tuple[str, node_service_pb2.FollowEntriesResponse]
        ] = collections.deque()
        self._pending_entries = 0
        self._skipped = 0
        self._opened: set[str] = set()
        self._error: DomainError | None = None
        self._calls: dict[str, grpc.Call] = {}

        self._threads = [
            threading.Thread(
                target=self._follow,
                args=(shard, position),
                name=f"log-tail-{shard}",
                daemon=True,
            )
            for shard, position in self._positions.items()
        ]

    def stop(self) -> None:
        """End the node streams and the response iterator."""
        self._stop.set()
        with self._lock:
            calls = list(self._calls.values())
            self._changed.notify_all()
        for call in calls:
            call.cancel()

    def responses(self) -> Iterator[logs_service_pb2.TailLogEntriesResponse]:
        """Yield entries as they arrive, and keep-alives in between.

        Raises:
          OutOfRange: a node no longer stores the entries after the resume
            token's position.
          InvalidArgument: the resume token's position of a shard is beyond
            the shard's last sequence number.
        """
        for thread in self._threads:
            thread.start()
        try:
            with self._lock:
                self._wait_for_streams_locked()
                response = self._response_locked()
            yield response
            while True:
                with self._lock:
                    item = self._next_locked()
                    if item is None:
                        return
                    response = self._response_locked()
                if item.sequences:
                    response.entries.extend(columns_to_entries(item.entries))
                yield response
        finally:
            self.stop()

    def _wait_for_streams_locked(self) -> None:
        deadline = time.monotonic() + OPEN_WAIT_SECONDS
        while len(self._opened) < len(self._threads) and self._error is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                break
            self._changed.wait(remaining)
        if self._error is not None:
            raise self._error

    def _next_locked(self) -> node_service_pb2.FollowEntriesResponse | None:
        """Take the next message with entries, or wait for one.

        Returns:
          The message; an empty message when a keep-alive or a skipped count
          is due; None once the tail stops.

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
                shard, message = self._pending.popleft()
                self._pending_entries -= len(message.sequences)
                self._advance_locked(shard, message.last_sequence)
                if message.sequences:
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._skipped:
                return node_service_pb2.FollowEntriesResponse()
            self._changed.wait(remaining)

    def _response_locked(self) -> logs_service_pb2.TailLogEntriesResponse:
        # A shard whose stream has not opened yet has no position. The token
        # lists it as unopened, and a tail resumed from the token starts that
        # shard after its newest entry.
        positions = {
            shard: position
            for shard, position in self._positions.items()
            if position >= 0
        }
        unopened = frozenset(self._positions) - set(positions)
        token = encode_resume_token(ResumeToken(self._fingerprint, positions, unopened))
        response = logs_service_pb2.TailLogEntriesResponse(
            resume_token=token, skipped_count=self._skipped
        )
        self._skipped = 0
        return response

    def _advance_locked(self, shard: str, sequence: int) -> None:
        self._positions[shard] = max(self._positions[shard], sequence)

    def _add(self, shard: str, message: node_service_pb2.FollowEntriesResponse) -> None:
        with self._lock:
            self._opened.add(shard)
            self._pending.append((shard, message))
            self._pending_entries += len(message.sequences)
            while self._pending_entries > self._max_pending:
                self._drop_oldest_locked(self._pending_entries - self._max_pending)
            # A message without entries that waits behind nothing moves its
            # shard's position at once, so the next resume token includes it.
            while self._pending and not self._pending[0][1].sequences:
                shard, message = self._pending.popleft()
                self._advance_locked(shard, message.last_sequence)
            self._changed.notify_all()

    def _drop_oldest_locked(self, excess: int) -> None:
        """Drop up to `excess` entries from the oldest pending message."""
        shard, message = self._pending[0]
        count = len(message.sequences)
        if count <= excess:
            self._pending.popleft()
            dropped = count
            self._advance_locked(shard, message.last_sequence)
        else:
            dropped = excess
            self._pending[0] = (
                shard,
                node_service_pb2.FollowEntriesResponse(
                    entries=slice_columns(message.entries, excess, count),
                    sequences=message.sequences[excess:],
                    last_sequence=message.last_sequence,
                ),
            )
            self._advance_locked(shard, message.sequences[excess - 1])
        self._pending_entries -= dropped
        self._skipped += dropped

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

    def _end_with(self, error: DomainError) -> None:
        with self._lock:
            self._error = error
            self._changed.notify_all()

    def _check_position(self, shard: str, position: int, stub: object) -> bool:
        """Check a resumed position against the last sequence of the shard's leader.

        A token from a wiped or rebuilt cluster, or a crafted one, can hold a
        position that the shard has not reached. FollowEntries would then wait
        silently until the shard catches up, so the tail ends with
        INVALID_ARGUMENT instead. Positions in tokens come from the leader's
        committed entries, which every later leader also stores, so a token
        returned by this cluster passes.

        Returns:
          Whether to follow the shard; False after ending the tail.

        Raises:
          grpc.RpcError: the leader did not respond.
        """
        response = stub.QueryEntries(
            node_service_pb2.QueryEntriesRequest(shard=shard, limit=1),
            timeout=LAST_SEQUENCE_TIMEOUT_SECONDS,
        )
        if position <= response.last_sequence:
            return True
        problem = (
            f"sequence {position} of shard {shard} is beyond the shard's last "
            f"sequence {response.last_sequence}, so the token comes from another "
            "cluster, one since rebuilt, or was altered"
        )
        _LOGGER.info("log tail of shard %s: rejected resume token (%s)", shard, problem)
        self._end_with(
            invalid_sequence_error("resume_token", "resume token", shard, problem)
        )
        return False

    def _follow(self, shard: str, position: int) -> None:
        # A negative position starts after the newest entry, so it needs no check.
        checked = position < 0
        while not self._stop.is_set():
            route = self._coordinator.route(shard)
            if route.leader_address is None:
                self._stop.wait(RECONNECT_DELAY_SECONDS)
                continue
            stub = self._stub_for(route.leader_address)
            if not checked:
                try:
                    if not self._check_position(shard, position, stub):
                        return
                    checked = True
                except grpc.RpcError as exc:
                    _LOGGER.info(
                        "log tail of shard %s: reading the last sequence from %s "
                        "failed (%s); retrying",
                        shard,
                        route.leader_address,
                        exc.code(),
                    )
                    self._stop.wait(RECONNECT_DELAY_SECONDS)
                    continue
            request = node_service_pb2.FollowEntriesRequest(
                shard=shard, filter=self._filter, after_sequence=position
            )
            call = stub.FollowEntries(request)
            with self._lock:
                self._calls[shard] = call
            if self._stop.is_set():
                call.cancel()
            try:
                for message in call:
                    position = max(position, message.last_sequence)
                    self._add(shard, message)
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    self._fail(shard, exc)
                    return
                _LOGGER.info(
                    "log tail of shard %s: stream from %s ended (%s); "
                    "following the leader again after sequence %d",
                    shard,
                    route.leader_address,
                    exc.code(),
                    position,
                )
            self._stop.wait(RECONNECT_DELAY_SECONDS)
