"""The limit on the router's open long-lived calls.

The router's gRPC server is synchronous, so an open TailLogEntries or
StreamLogEntries call occupies one handler thread for as long as it stays open,
even while idle. The server gets `log_max_open_streams` threads on top of
`workers`, and each such call takes a slot from `OpenStreams` when it starts
and gives it back when it ends. A call over the limit fails at once with
RESOURCE_EXHAUSTED, so open calls never hold the threads that the other
calls need.

The router also limits the calls that one caller keeps open to
`log_max_streams_per_caller`, so that a single client cannot take every slot.
`caller_of` names the caller: the signed principal with `auth_required`, else
the client's host (see its docstring).
"""

from __future__ import annotations

import logging
import threading

import grpc

from splitlog_runtime import auth
from splitlog_runtime.errors import ResourceExhausted
from splitlog_runtime.failure_log import Throttle

_LOGGER = logging.getLogger(__name__)

SETTING = "log_max_open_streams"
PER_CALLER_SETTING = "log_max_streams_per_caller"
# Seconds a rejected client should wait, sent as RetryInfo. Open calls are
# long-lived, so a slot seldom frees within a second.
RETRY_DELAY_SECONDS = 5.0
# Minimum seconds between two warnings about rejected calls.
WARNING_INTERVAL_SECONDS = 60.0


def caller_of(context: grpc.ServicerContext) -> str:
    """Return the name that a call's open streams are counted under.

    With `auth_required`, this is the principal that the gateway signed:
    `users/{user}` for an access token, `users/{user}/apiKeys/{key}` for an
    API key, `services/splitlog` for a component's own call. So every client
    behind the gateway counts on its own, although the gateway is the peer of
    all their calls. An anonymous call counts as `peer/{host}` of the client
    host that the gateway signed, else of the peer.

    With auth off, no principal arrives. The call counts as `peer/{host}` of
    the `x-splitlog-client` metadata, which the gateway sets to the host of
    its client, else of the peer.
    NOTE: with auth off nothing checks that metadata, so a client that calls
    the router directly can claim any host. The limit then only keeps
    well-behaved clients apart, and `log_max_open_streams` still holds.
    """
    principal = auth.current_principal()
    if principal is not None:
        host = principal.client or auth.peer_host(context.peer())
        return auth.caller_key(principal, host)
    forwarded = auth.metadata_value(context.invocation_metadata(), auth.CLIENT_KEY)
    return auth.caller_key(None, forwarded or auth.peer_host(context.peer()))


class StreamSlot:
    """One call's slot; `release()` gives it back, and later calls do nothing."""

    def __init__(self, owner: OpenStreams, caller: str) -> None:
        self._owner = owner
        self._caller = caller
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._owner._give_back(self._caller)


class OpenStreams:
    """A count of open long-lived calls with a maximum, in total and per caller.

    Args:
      maximum: the maximum number of calls open at once, the
        `log_max_open_streams` setting.
      per_caller: the maximum number of calls of one caller (`caller_of`)
        open at once, the `log_max_streams_per_caller` setting. 0 means no
        maximum per caller.
    """

    def __init__(self, maximum: int, per_caller: int = 0) -> None:
        if maximum < 1:
            raise ValueError(
                f"{SETTING} must be 1 or more, got {maximum}; set the maximum "
                "number of TailLogEntries and StreamLogEntries calls open at once"
            )
        if per_caller < 0:
            raise ValueError(
                f"{PER_CALLER_SETTING} must be 0 (no limit) or more, got "
                f"{per_caller}; set the maximum number of TailLogEntries and "
                "StreamLogEntries calls that one caller keeps open at once"
            )
        self.maximum = maximum
        self.per_caller = per_caller
        self._lock = threading.Lock()
        self._open = 0
        # Guarded by `_lock`: the open calls of each caller that has any.
        self._open_by_caller: dict[str, int] = {}
        self._rejection_warnings = Throttle(WARNING_INTERVAL_SECONDS)

    @property
    def open_count(self) -> int:
        """The calls that hold a slot now."""
        with self._lock:
            return self._open

    def open_count_of(self, caller: str) -> int:
        """Return the calls of `caller` that hold a slot now."""
        with self._lock:
            return self._open_by_caller.get(caller, 0)

    def acquire(self, method: str, context: grpc.ServicerContext) -> StreamSlot:
        """Take a slot for a call that ends with `context`.

        The slot comes back when the call terminates, also when the client
        cancels it or its deadline passes. The caller should also release it
        as soon as the handler is done.

        Raises:
          ResourceExhausted: the caller already has `per_caller` calls open,
            or every slot is taken; the message names the setting.
        """
        caller = caller_of(context) if self.per_caller else ""
        with self._lock:
            caller_full = (
                self.per_caller > 0
                and self._open_by_caller.get(caller, 0) >= self.per_caller
            )
            full = self._open >= self.maximum
            if not caller_full and not full:
                self._open += 1
                if self.per_caller:
                    self._open_by_caller[caller] = (
                        self._open_by_caller.get(caller, 0) + 1
                    )
        # A caller at its own limit gets that limit's error even when every
        # slot is taken too, because closing its own calls is its fix.
        if caller_full:
            self._warn_rejected(method, caller, PER_CALLER_SETTING)
            raise too_many_streams_of_caller(method, caller, self.per_caller)
        if full:
            self._warn_rejected(method, caller, SETTING)
            raise too_many_open_streams(method, self.maximum)
        slot = StreamSlot(self, caller)
        if not context.add_callback(slot.release):
            # The call has already terminated.
            slot.release()
        return slot

    def _warn_rejected(self, method: str, caller: str, setting: str) -> None:
        held_back = self._rejection_warnings.allow()
        if held_back is None:
            return
        with self._lock:
            open_count = self._open
        _LOGGER.warning(
            "rejected %d long-lived call(s), the last a %s call of %s over %s: "
            "%d are open, at most %d in total and %s per caller",
            held_back + 1,
            method,
            caller or "a caller",
            setting,
            open_count,
            self.maximum,
            self.per_caller or "any number",
        )

    def _give_back(self, caller: str) -> None:
        with self._lock:
            self._open -= 1
            if not self.per_caller:
                return
            remaining = self._open_by_caller[caller] - 1
            if remaining:
                self._open_by_caller[caller] = remaining
            else:
                del self._open_by_caller[caller]


def too_many_open_streams(method: str, maximum: int) -> ResourceExhausted:
    """Build the error for a long-lived call over `log_max_open_streams`."""
    return ResourceExhausted(
        f"{method} rejected: log_service already has {maximum} TailLogEntries "
        f"and StreamLogEntries calls open, the maximum ({SETTING} is "
        f"{maximum}); close a tail or stream that is no longer needed, retry "
        f"in {RETRY_DELAY_SECONDS:g} s, or raise {SETTING}",
        reason="TOO_MANY_OPEN_STREAMS",
        metadata={"limit": SETTING, "max_open_streams": str(maximum)},
        retry_delay=RETRY_DELAY_SECONDS,
    )


def too_many_streams_of_caller(
    method: str, caller: str, per_caller: int
) -> ResourceExhausted:
    """Build the error for a call over `log_max_streams_per_caller`."""
    return ResourceExhausted(
        f"{method} rejected: {caller} already has {per_caller} TailLogEntries "
        f"and StreamLogEntries calls open, the maximum per caller "
        f"({PER_CALLER_SETTING} is {per_caller}); close a tail or stream of "
        f"{caller} that is no longer needed, retry in {RETRY_DELAY_SECONDS:g} s, "
        f"or ask the operator to raise {PER_CALLER_SETTING}",
        reason="TOO_MANY_STREAMS_PER_CALLER",
        metadata={
            "limit": PER_CALLER_SETTING,
            "max_streams_per_caller": str(per_caller),
            "caller": caller,
        },
        retry_delay=RETRY_DELAY_SECONDS,
    )
