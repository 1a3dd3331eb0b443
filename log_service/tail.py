"""TailLogEntries: one FollowEntries stream per shard, merged as they arrive.

A thread per shard follows the shard's leader. When the stream breaks, for
example because the leader failed, the thread asks the coordinator for the
current leader and follows it again from the last sequence number it
received, so the client sees no gap. The threads feed one bounded queue; when
the client reads slowly the queue fills and the threads wait, which slows
the node streams down instead of dropping entries, so `skipped_count` stays
zero.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator

import grpc

from log_service.coordinator import Coordinator
from log_service.model import columns_to_entries
from log_service.query import EntrySelection
from log_service.tokens import ResumeToken, encode_resume_token
from splitlog.logs.v1 import logs_service_pb2, node_service_pb2

_LOGGER = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 10.0
RECONNECT_DELAY_SECONDS = 0.2
QUEUE_MESSAGES = 256
_STOPPED = object()


class Tail:
    """One TailLogEntries call.

    Args:
      coordinator: where each shard's leader is.
      stub_for: returns the LogNodeService stub of an address.
      selection: the entry conditions.
      fingerprint: hash of the conditions, for resume tokens.
      positions: last sequence number sent per shard; -1 starts after the
        newest committed entry.
      keepalive: seconds without entries after which an empty message goes out.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        stub_for: Callable[[str], object],
        selection: EntrySelection,
        fingerprint: str,
        positions: dict[str, int],
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._coordinator = coordinator
        self._stub_for = stub_for
        self._filter = selection.to_filter()
        self._fingerprint = fingerprint
        self._positions = dict(positions)
        self._keepalive = keepalive
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_MESSAGES)
        self._stop = threading.Event()
        self._lock = threading.Lock()
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
        for call in calls:
            call.cancel()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOPPED)

    def responses(self) -> Iterator[logs_service_pb2.TailLogEntriesResponse]:
        """Yield entries as they arrive, and keep-alives in between."""
        for thread in self._threads:
            thread.start()
        try:
            yield self._response([])
            while not self._stop.is_set():
                try:
                    item = self._queue.get(timeout=self._keepalive)
                except queue.Empty:
                    yield self._response([])
                    continue
                if item is _STOPPED:
                    return
                shard, message = item
                self._positions[shard] = max(
                    self._positions[shard], message.last_sequence
                )
                if message.sequences:
                    yield self._response(columns_to_entries(message.entries))
        finally:
            self.stop()

    def _response(self, entries) -> logs_service_pb2.TailLogEntriesResponse:
        token = encode_resume_token(ResumeToken(self._fingerprint, self._positions))
        return logs_service_pb2.TailLogEntriesResponse(
            entries=entries, resume_token=token
        )

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _follow(self, shard: str, position: int) -> None:
        while not self._stop.is_set():
            route = self._coordinator.route(shard)
            if route.leader_address is None:
                self._stop.wait(RECONNECT_DELAY_SECONDS)
                continue
            request = node_service_pb2.FollowEntriesRequest(
                shard=shard, filter=self._filter, after_sequence=position
            )
            call = self._stub_for(route.leader_address).FollowEntries(request)
            with self._lock:
                self._calls[shard] = call
            if self._stop.is_set():
                call.cancel()
            try:
                for message in call:
                    if message.last_sequence > position or message.sequences:
                        position = max(position, message.last_sequence)
                    if not self._put((shard, message)):
                        return
            except grpc.RpcError as exc:
                if self._stop.is_set():
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
