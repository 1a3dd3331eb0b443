"""Node calls of one query, one per shard, that fail over between replicas.

`ShardReader.call` sends a node call for each shard and returns one
response per shard. A shard's call goes first to its leader. With quorum
`all` it goes first to an in-sync follower instead when the leader missed
the coordinator's latest poll and the follower responded to it. While a
call runs, the reader sends the same call to the shard's next readable
replica at most once (the extra call), when one of these is true:

- every node with a running call of the shard missed the latest poll,
  and the next replica responded to it. A stopped (SIGSTOP) or cut-off
  node keeps its TCP connection open, so its call would otherwise wait
  for the whole deadline;
- the running call has had its share of the time, and its node has
  responded to no poll sent since the call started. The share is the time
  left when the call started, divided by the replicas not called before
  it. A node that responds to polls is alive and its scan only slow, so
  another replica would repeat the same scan.

No extra call starts with less time left than the running call has used,
because the same scan would then likely run out of time. A call that
fails is replaced by a call to the next replica, unless it failed with
INVALID_ARGUMENT, which describes the request and so ends the whole read.

The first usable response of a shard is kept, and the shard's other calls
are cancelled. A follower's response is not usable:

- for a page of a listing, when the follower lacks entries below the page
  token's sequence bound, which would make the page skip them (see
  `ShardReader.call`);
- with quorum `leader`, while the leader's call runs and the leader has
  missed no poll sent since the read began. Such a leader acknowledges
  entries before the followers store them, so a follower may lack some.
  The response is kept, and used once the leader's call ends without a
  response or the leader misses a poll. A follower that holds every
  entry up to a page token's bound is usable at once.

When every replica of a shard failed, the call raises Unavailable naming
the shard, with a RetryInfo delay. When the deadline passes first, the
error names every shard without a response. A replica that responded to
polls during its call is slow rather than down, and the same request
would fail again. So then the error advises a longer deadline and
carries no RetryInfo. The router sets the deadline a margin before its
caller's (`channels.answer_before`), so the caller receives that error
instead of its own DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from log_service.clients import ROUTER_STOPPING, is_closed_channel_error
from splitlog_runtime.channels import ANSWER_MARGIN_SECONDS
from splitlog_runtime.errors import Unavailable
from splitlog_runtime.failure_log import FailureLogs

if TYPE_CHECKING:
    from log_service.coordinator import Coordinator, PollResponses

_LOGGER = logging.getLogger(__name__)

RETRY_DELAY_SECONDS = 1.0
# Maximum seconds between two checks of the coordinator's latest poll while
# a read waits for its nodes. A poll round starts every 0.25 s.
POLL_CHECK_SECONDS = 0.1

# Kinds of `FailureLogs` keys, one log per (kind, address or shard), so that
# the INFO lines about a fallback and the warnings about failed calls of the
# same node are throttled and summarised apart.
_FAILED_CALLS = "failed"
_FALLBACKS = "fallback"
_FAILED_SHARDS = "shard"


def _failure_calls(key: tuple[str, str]) -> str:
    kind, name = key
    if kind == _FALLBACKS:
        return f"log reads from node {name} without a fallback to another replica"
    if kind == _FAILED_SHARDS:
        return f"log reads of shard {name}"
    return f"log reads from node {name}"


@dataclass(frozen=True)
class _Miss:
    """A call of a shard that gave no usable response.

    Attributes:
      started, ended: `time.monotonic()` times of the call.
      problem: the cause for the error message, such as
        `<address>: UNAVAILABLE` or why the response is not usable.
      timed_out: the call ended with DEADLINE_EXCEEDED, or still ran when
        the read's deadline passed.
    """

    address: str
    started: float
    ended: float
    problem: str
    timed_out: bool = False

    def slow(self, polls: PollResponses) -> bool:
        """Return whether the call timed out while its node responded to polls."""
        return self.timed_out and polls.responded_since(self.address, self.started)

    def describe(self, polls: PollResponses) -> str:
        seconds = self.ended - self.started
        if self.slow(polls):
            return (
                f"{self.address} responded to polls but not to the read within "
                f"{seconds:.1f} s"
            )
        if self.timed_out:
            return (
                f"{self.address} responded neither to the read nor to a poll "
                f"within {seconds:.1f} s"
            )
        return self.problem


@dataclass(eq=False)
class _ShardRead:
    """The calls of one shard's request, and their outcome.

    Attributes:
      began: `time.monotonic()` time at which the read began.
      untried: readable replicas not called yet, in the order to call them.
      running: calls in flight, by node address.
      started: `time.monotonic()` time at which each call started.
      next_call_at: `time.monotonic()` time at which the running call has
        had its share of the time.
      extra_call_made: whether a call started while another one ran.
      misses: the finished calls that gave no usable response.
      follower_response: a follower's response, with its address, that waits
        for the leader's (quorum `leader`).
    """

    shard: str
    request: object
    leader_address: str | None
    began: float
    untried: list[str]
    running: dict[str, grpc.Future] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    next_call_at: float = 0.0
    extra_call_made: bool = False
    misses: list[_Miss] = field(default_factory=list)
    follower_response: tuple[str, object] | None = None
    response: object | None = None

    @property
    def pending(self) -> bool:
        return self.response is None


class ShardReader:
    """Parallel reader of many shards, with failover between their replicas.

    Args:
      coordinator: the source of each shard's readable replicas, of the
        nodes' responses to its polls and of the write quorum.
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
        self._failures = FailureLogs(_LOGGER, _failure_calls)

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
        began = time.monotonic()
        if deadline is None:
            deadline = self.deadline(None)
        polls = self._coordinator.poll_responses()
        reads: list[_ShardRead] = []
        finished: queue.SimpleQueue = queue.SimpleQueue()
        try:
            for shard, request in requests.items():
                reads.append(self._plan(shard, request, polls, began))
            for read in reads:
                self._call_next(method, read, deadline, finished)
            self._collect(method, reads, deadline, finished)
        finally:
            for read in reads:
                for future in read.running.values():
                    future.cancel()
        return {read.shard: read.response for read in reads}

    def _plan(
        self, shard: str, request: object, polls: PollResponses, began: float
    ) -> _ShardRead:
        """Order the shard's readable replicas.

        With quorum `leader` the leader comes first. Otherwise the nodes that
        responded to the latest poll come first, the leader first among them.

        Raises:
          Unavailable: the shard has no readable replica.
        """
        route = self._coordinator.route(shard)
        if not route.readable:
            cause = "it has no leader, and no in-sync follower responded to the poll"
            error = _shard_unavailable([shard], [cause])
            self._log_failed_shard(shard, cause)
            raise error
        if self._coordinator.leader_only_ack:

            def rank(address: str) -> tuple[bool, bool]:
                return address != route.leader_address, not polls.responding(address)

        else:

            def rank(address: str) -> tuple[bool, bool]:
                return False, not polls.responding(address)

        # A stable sort keeps the leader first among equals.
        untried = sorted(route.readable, key=rank)
        return _ShardRead(shard, request, route.leader_address, began, untried)

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
        read.started[address] = now
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
            polls = self._coordinator.poll_responses()
            now = time.monotonic()
            pending = [read for read in reads if read.pending]
            if pending and now >= deadline:
                raise self._deadline_passed(pending, polls, now, deadline)
            for read in pending:
                self._advance(method, read, polls, now, deadline, finished)
            pending = [read for read in reads if read.pending]
            if not pending:
                return
            wake_at = min(
                [deadline, now + POLL_CHECK_SECONDS]
                + [
                    read.next_call_at
                    for read in pending
                    if read.untried
                    and not read.extra_call_made
                    and read.next_call_at > now
                ]
            )
            try:
                item = finished.get(timeout=max(wake_at - time.monotonic(), 0.0))
            except queue.Empty:
                continue
            while item is not None:
                self._settle(method, *item)
                try:
                    item = finished.get_nowait()
                except queue.Empty:
                    item = None

    def _advance(
        self,
        method: str,
        read: _ShardRead,
        polls: PollResponses,
        now: float,
        deadline: float,
        finished: queue.SimpleQueue,
    ) -> None:
        """Use a follower's kept response, or call a further replica, when due.

        Raises:
          Unavailable: every replica of the shard failed, or the router is
            stopping.
        """
        if read.follower_response is not None and self._leader_silent(read, polls):
            self._accept(read, *read.follower_response)
            return
        if read.running:
            reason = _reason_for_extra_call(read, polls, now, deadline)
            if not reason:
                return
            for address in read.running:
                self._failures.failed(
                    (_FALLBACKS, address),
                    "log shard %s: node %s %s; reading from %s too",
                    read.shard,
                    address,
                    reason,
                    read.untried[0],
                    level=logging.INFO,
                )
            read.extra_call_made = True
            self._call_next(method, read, deadline, finished)
            return
        if read.untried:
            self._call_next(method, read, deadline, finished)
            return
        if any(miss.timed_out for miss in read.misses):
            # A call that timed out ends with the read's deadline, which is
            # therefore a moment away. The error raised then names every
            # shard still pending, not only this one.
            return
        causes = [miss.describe(polls) for miss in read.misses]
        error = _shard_unavailable([read.shard], causes)
        self._log_failed_shard(read.shard, "; ".join(causes))
        raise error

    def _leader_silent(self, read: _ShardRead, polls: PollResponses) -> bool:
        """Return whether a follower's kept response may replace the leader's."""
        leader = read.leader_address
        return leader not in read.running or polls.missed_since(leader, read.began)

    def _deadline_passed(
        self,
        pending: list[_ShardRead],
        polls: PollResponses,
        now: float,
        deadline: float,
    ) -> Unavailable:
        """Build the error of the shards without a response at the deadline."""
        causes = []
        slow = False
        for read in pending:
            misses = read.misses + [
                _Miss(address, read.started[address], now, "", timed_out=True)
                for address in read.running
            ]
            slow = slow or any(miss.slow(polls) for miss in misses)
            described = [miss.describe(polls) for miss in misses]
            if read.follower_response is not None:
                described.append(
                    f"follower {read.follower_response[0]} responded, but with "
                    "quorum `leader` it may lack entries that the leader "
                    "acknowledged, so the read waited for the leader"
                )
            cause = "; ".join(described) or "no response"
            self._log_failed_shard(read.shard, cause)
            causes.append(cause if len(pending) == 1 else f"{read.shard}: {cause}")
        budget = deadline - pending[0].began
        return _shard_unavailable(
            [read.shard for read in pending],
            causes,
            deadline_passed=True,
            slow_budget=budget if slow else None,
        )

    def _log_failed_shard(self, shard: str, cause: str) -> None:
        self._failures.failed(
            (_FAILED_SHARDS, shard), "log shard %s: read failed: %s", shard, cause
        )

    def _settle(
        self, method: str, read: _ShardRead, address: str, future: grpc.Future
    ) -> None:
        """Record the outcome of a finished call of the shard.

        Raises:
          grpc.RpcError: the node rejected the request with INVALID_ARGUMENT.
          Unavailable: the router is stopping.
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
        started, ended = read.started[address], time.monotonic()
        if code is not None:
            read.misses.append(
                _Miss(
                    address,
                    started,
                    ended,
                    f"{address}: {code.name}",
                    timed_out=code == grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            )
            self._failures.failed(
                (_FAILED_CALLS, address),
                "log shard %s: read from node %s failed (%s)",
                read.shard,
                address,
                code.name,
            )
            return
        response = future.result()
        behind = _behind_page_token(method, read, address, response)
        if behind:
            read.misses.append(_Miss(address, started, ended, behind))
            self._failures.failed(
                (_FALLBACKS, address),
                "log shard %s: %s",
                read.shard,
                behind,
                level=logging.INFO,
            )
            return
        if self._waits_for_leader(method, read, address):
            read.follower_response = (address, response)
            return
        self._accept(read, address, response)

    def _waits_for_leader(self, method: str, read: _ShardRead, address: str) -> bool:
        """Return whether a follower's response must wait for the leader's.

        With quorum `leader`, a follower may lack entries that the leader
        acknowledged, unless it reached the page token's sequence bound,
        which `_behind_page_token` checked before.
        """
        if not self._coordinator.leader_only_ack:
            return False
        if address == read.leader_address or read.leader_address not in read.running:
            return False
        return method != "QueryEntries" or read.request.filter.max_sequence <= 0

    def _accept(self, read: _ShardRead, address: str, response: object) -> None:
        """Keep `response` as the shard's, and cancel the shard's other calls."""
        self._failures.succeeded((_FAILED_CALLS, address))
        self._failures.succeeded((_FALLBACKS, address))
        self._failures.succeeded((_FAILED_SHARDS, read.shard))
        read.response = response
        read.follower_response = None
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


def _reason_for_extra_call(
    read: _ShardRead, polls: PollResponses, now: float, deadline: float
) -> str:
    """Return why the shard's next replica is called now, or "" to wait on.

    See the module's description for the rules.
    """
    if read.extra_call_made or not read.untried:
        return ""
    oldest = min(read.started[address] for address in read.running)
    if deadline - now < now - oldest:
        return ""
    if polls.responding(read.untried[0]) and not any(
        polls.responding(address) for address in read.running
    ):
        return "missed the latest poll"
    if now >= read.next_call_at and not any(
        polls.responded_since(address, read.started[address])
        for address in read.running
    ):
        return (
            "responded neither to the read nor to a poll within its share of the time"
        )
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


def _shard_unavailable(
    shards: list[str],
    causes: list[str],
    *,
    deadline_passed: bool = False,
    slow_budget: float | None = None,
) -> Unavailable:
    """Build the error of shards that no replica served.

    `slow_budget` is the seconds that the node calls had when a replica
    that responded to polls ran out of time, else None. After the deadline,
    the error is a final attempt, because a retry by the caller's channel
    would have only the margin that the router kept before its caller's
    deadline.
    """
    names = ", ".join(repr(shard) for shard in shards)
    subject = f"log shard {names}" if len(shards) == 1 else f"log shards {names}"
    cause = "; ".join(causes) or "no response"
    if slow_budget is None:
        return Unavailable(
            f"no replica of {subject} responded ({cause}); retry shortly",
            reason="SHARD_UNAVAILABLE",
            metadata={"shards": ",".join(shards)},
            retry_delay=RETRY_DELAY_SECONDS,
            final_attempt=deadline_passed,
        )
    suggested = math.ceil(2 * (slow_budget + ANSWER_MARGIN_SECONDS))
    return Unavailable(
        f"no replica of {subject} responded in time ({cause}). Replicas that "
        "respond to the router's polls are slow rather than down, so the same "
        f"request would fail again: send the query again with a longer "
        f"deadline, such as {suggested} s (the node calls had "
        f"{slow_budget:.1f} s), set as the gRPC deadline or over REST with "
        f"the header `grpc-timeout: {suggested}S`, or narrow its time range "
        "or filters",
        reason="SHARD_UNAVAILABLE",
        metadata={"shards": ",".join(shards)},
        final_attempt=True,
    )
