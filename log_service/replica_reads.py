"""Node calls of one query, one per shard, that fail over between replicas.

`ShardReader.call` sends a node call for each shard and returns one response
per shard. A shard's call goes first to its leader, unless the leader missed
the coordinator's latest poll while an in-sync follower responded to it. The next
readable replica gets the same call, while the calls already sent still run,
as soon as one of these holds:

- every call of the shard failed, with any status but INVALID_ARGUMENT,
  which describes the request and so ends the whole read;
- every node with a running call of the shard missed the latest poll, and
  the next replica responded to it. A stopped (SIGSTOP) or cut-off node keeps its
  TCP connection open, so its call would otherwise wait for the whole
  deadline;
- the running calls have had their share of the time: the time left when
  the latest call started, divided by the replicas it and the later ones
  make. That covers a node that responds to polls but not to reads.

The first usable response of a shard is kept, and the shard's other calls
are cancelled. A follower's response to a page of a listing is not usable
when the follower lacks entries below the page token's sequence bound,
which would make the page skip them (see `ShardReader.call`).

When every replica of a shard failed, or none responded by the deadline,
the call raises Unavailable naming the shard, with a RetryInfo delay. The
router sets that deadline a margin before its caller's
(`channels.answer_before`), so the caller receives that error instead of
its own DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from log_service.clients import ROUTER_STOPPING, is_closed_channel_error
from splitlog_runtime.errors import Unavailable
from splitlog_runtime.failure_log import FailureLogs

if TYPE_CHECKING:
    from log_service.coordinator import Coordinator

_LOGGER = logging.getLogger(__name__)

RETRY_DELAY_SECONDS = 1.0
# Maximum seconds between two checks of the coordinator's latest poll while
# a read waits for its nodes. A poll round starts every 0.25 s.
POLL_CHECK_SECONDS = 0.1


@dataclass(eq=False)
class _ShardRead:
    """The calls of one shard's request, and their outcome.

    Attributes:
      untried: readable replicas not called yet, in the order to call them.
      running: calls in flight, by node address.
      next_call_at: `time.monotonic()` time at which the next replica is
        called even though the running calls have not ended.
      failures: why each finished call gave no response, for the error.
    """

    shard: str
    request: object
    leader_address: str | None
    untried: list[str]
    running: dict[str, grpc.Future] = field(default_factory=dict)
    next_call_at: float = 0.0
    failures: list[str] = field(default_factory=list)
    response: object | None = None

    @property
    def pending(self) -> bool:
        return self.response is None


class ShardReader:
    """Parallel reader of many shards, with failover between their replicas.

    Args:
      coordinator: the source of each shard's readable replicas and of the
        nodes that responded to its latest poll.
      stub_for: returns the LogNodeService stub of an address.
      timeout: seconds that the node calls of a read may take when the
        caller gave no deadline.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        stub_for: Callable[[str], object],
        timeout: float,
    ) -> None:
        self._coordinator = coordinator
        self._stub_for = stub_for
        self.timeout = timeout
        # Keyed by node address, and by shard for reads that no replica served.
        self._failures = FailureLogs(_LOGGER, lambda key: f"log reads of {key}")

    def deadline(self, timeout: float | None) -> float:
        """Return the `time.monotonic()` time at which reads of `timeout` s end.

        None gives them the reader's default timeout.
        """
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def call(
        self,
        method: str,
        requests: Mapping[str, object],
        deadline: float | None = None,
    ) -> dict[str, object]:
        """Call `method` for each shard of `requests`; return the responses.

        `deadline` is a `time.monotonic()` time. None ends the calls after
        the reader's default timeout.

        A QueryEntries request with `filter.max_sequence` set continues a
        listing from its page token. A follower that returns a lower
        `last_sequence` lacks entries that the listing's first page counted
        on, so its response is dropped and the next replica is called. The
        leader's response counts even then, because the leader's log is the
        shard's: an entry that it lacks was never acknowledged, or with quorum
        `leader` was lost with an earlier leader.

        Raises:
          grpc.RpcError: a node rejected a request with INVALID_ARGUMENT.
          Unavailable: no replica of a shard responded by the deadline, every
            one failed, or the router is stopping.
        """
        if deadline is None:
            deadline = self.deadline(None)
        responding = set(self._coordinator.reachable_addresses())
        reads: list[_ShardRead] = []
        finished: queue.SimpleQueue = queue.SimpleQueue()
        try:
            for shard, request in requests.items():
                reads.append(self._plan(shard, request, responding))
            for read in reads:
                self._call_next(method, read, deadline, finished)
            self._collect(method, reads, deadline, finished)
        except Unavailable as error:
            if error.reason != ROUTER_STOPPING:
                shard = error.metadata["shard"]
                self._failures.failed(shard, "log read failed: %s", error.message)
            raise
        finally:
            for read in reads:
                for future in read.running.values():
                    future.cancel()
        return {read.shard: read.response for read in reads}

    def _plan(self, shard: str, request: object, responding: set[str]) -> _ShardRead:
        """Order the shard's readable replicas, those that responded to the poll first.

        Raises:
          Unavailable: the shard has no readable replica.
        """
        route = self._coordinator.route(shard)
        if not route.readable:
            cause = "it has no leader, and no in-sync follower responded to the poll"
            raise _shard_unavailable(shard, [cause])
        # A stable sort keeps the leader first among the nodes that responded.
        untried = sorted(route.readable, key=lambda address: address not in responding)
        return _ShardRead(shard, request, route.leader_address, untried)

    def _call_next(
        self,
        method: str,
        read: _ShardRead,
        deadline: float,
        finished: queue.SimpleQueue,
    ) -> None:
        """Call the shard's next untried replica, with the time left until `deadline`.

        Raises:
          Unavailable: the router closed its node channels, so it is stopping.
        """
        address = read.untried.pop(0)
        now = time.monotonic()
        left = max(deadline - now, 0.001)
        try:
            stub = self._stub_for(address)
            future = getattr(stub, method).future(read.request, timeout=left)
        except ValueError as error:
            # Only a closed node channel (`ClientsClosed` included) means
            # that the router is stopping. Any other ValueError is a bug,
            # which the service's interceptor logs and returns as INTERNAL.
            if not is_closed_channel_error(error):
                raise
            raise _router_stopping(read.shard) from None
        read.running[address] = future
        read.next_call_at = now + left / (len(read.untried) + 1)
        future.add_done_callback(
            lambda done: finished.put((read, address, done)),
        )

    def _collect(
        self,
        method: str,
        reads: list[_ShardRead],
        deadline: float,
        finished: queue.SimpleQueue,
    ) -> None:
        """Wait until each shard has a response, calling further replicas.

        Raises:
          grpc.RpcError: a node rejected a request with INVALID_ARGUMENT.
          Unavailable: as `call` describes.
        """
        while True:
            pending = [read for read in reads if read.pending]
            if not pending:
                return
            now = time.monotonic()
            if now >= deadline:
                read = pending[0]
                read.failures += [
                    f"{address} did not respond in time" for address in read.running
                ]
                raise _shard_unavailable(read.shard, read.failures)
            wake_at = min(
                [deadline, now + POLL_CHECK_SECONDS]
                + [read.next_call_at for read in pending if read.untried]
            )
            try:
                item = finished.get(timeout=max(wake_at - now, 0.0))
            except queue.Empty:
                item = None
            while item is not None:
                self._settle(method, *item)
                try:
                    item = finished.get_nowait()
                except queue.Empty:
                    item = None
            responding = set(self._coordinator.reachable_addresses())
            now = time.monotonic()
            for read in reads:
                if not read.pending or read.running and not read.untried:
                    continue
                if not read.untried:
                    raise _shard_unavailable(read.shard, read.failures)
                if read.running:
                    reason = _reason_to_call_next(read, now, responding)
                    if not reason:
                        continue
                    for address in read.running:
                        self._failures.failed(
                            address,
                            "log shard %s: node %s %s; reading from %s too",
                            read.shard,
                            address,
                            reason,
                            read.untried[0],
                            level=logging.INFO,
                        )
                self._call_next(method, read, deadline, finished)

    def _settle(
        self, method: str, read: _ShardRead, address: str, future: grpc.Future
    ) -> None:
        """Record the outcome of a finished call of the shard.

        Raises:
          grpc.RpcError: the node rejected the request with INVALID_ARGUMENT.
        """
        read.running.pop(address, None)
        if not read.pending:
            # Another replica responded first, and this call was cancelled.
            return
        if future.cancelled():
            error, code = None, grpc.StatusCode.CANCELLED
        else:
            error = future.exception()
            if error is not None and not isinstance(error, grpc.RpcError):
                raise error
            code = None if error is None else error.code()
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise error
        if code == grpc.StatusCode.CANCELLED:
            self._check_open(read, address)
        if code is not None:
            read.failures.append(f"{address}: {code.name}")
            self._failures.failed(
                address,
                "log shard %s: read from node %s failed (%s)",
                read.shard,
                address,
                code.name,
            )
            return
        response = future.result()
        behind = _behind_page_token(method, read, address, response)
        if behind:
            read.failures.append(behind)
            self._failures.failed(
                address, "log shard %s: %s", read.shard, behind, level=logging.INFO
            )
            return
        self._failures.succeeded(address)
        self._failures.succeeded(read.shard)
        read.response = response
        for other in read.running.values():
            other.cancel()

    def _check_open(self, read: _ShardRead, address: str) -> None:
        """Raise Unavailable when the router closed its node channels.

        Closing them, which the router does only when it stops, ends their
        calls with CANCELLED. Such a call is no failure of its node.
        """
        try:
            self._stub_for(address)
        except ValueError as error:
            if not is_closed_channel_error(error):
                raise
            raise _router_stopping(read.shard) from None


def _reason_to_call_next(read: _ShardRead, now: float, responding: set[str]) -> str:
    """Return why the shard's next replica is called now, or "" to wait on.

    Every running call's node missed the latest poll while the next replica
    responded to it, or the running calls have had their share of the time.
    """
    if read.untried[0] in responding and not any(
        address in responding for address in read.running
    ):
        return "missed the latest poll"
    if now >= read.next_call_at:
        return "has not responded within its share of the deadline"
    return ""


def _behind_page_token(
    method: str, read: _ShardRead, address: str, response: object
) -> str:
    """Return why a follower's page lacks entries of its page token, or "".

    The node caps its scan at the lower of its store's visible sequence and
    the request's `max_sequence`, and returns that cap as `last_sequence`.
    """
    if method != "QueryEntries" or address == read.leader_address:
        return ""
    bound = read.request.filter.max_sequence
    if bound <= 0 or response.last_sequence >= bound:
        return ""
    return (
        f"follower {address} has applied entries only up to sequence "
        f"{response.last_sequence}, below the page token's bound {bound}"
    )


def _router_stopping(shard: str) -> Unavailable:
    return Unavailable(
        f"log shard {shard!r} could not be read because the router is "
        "stopping; retry on a running router",
        reason=ROUTER_STOPPING,
        metadata={"shard": shard},
        retry_delay=RETRY_DELAY_SECONDS,
    )


def _shard_unavailable(shard: str, causes: list[str]) -> Unavailable:
    cause = "; ".join(causes) or "no response"
    return Unavailable(
        f"no replica of log shard {shard!r} answered ({cause}); retry shortly",
        reason="SHARD_UNAVAILABLE",
        metadata={"shard": shard},
        retry_delay=RETRY_DELAY_SECONDS,
    )
