"""The limit on the router's open long-lived calls.

The router's gRPC server is synchronous, so an open TailLogEntries or
StreamLogEntries call occupies one handler thread for as long as it stays open,
even while idle. The server gets `log_max_open_streams` threads on top of
`workers`, and each such call takes a slot from `OpenStreams` when it starts
and gives it back when it ends. A call over the limit fails at once with
RESOURCE_EXHAUSTED, so open calls never hold the threads that the other
calls need.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc

from splitlog_runtime.errors import ResourceExhausted

_LOGGER = logging.getLogger(__name__)

SETTING = "log_max_open_streams"
# Seconds a rejected client should wait, sent as RetryInfo. Open calls are
# long-lived, so a slot seldom frees within a second.
RETRY_DELAY_SECONDS = 5.0
# Minimum seconds between two warnings about rejected calls.
WARNING_INTERVAL_SECONDS = 60.0


class StreamSlot:
    """One call's slot; `release()` gives it back, and later calls do nothing."""

    def __init__(self, owner: OpenStreams) -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._owner._give_back()


class OpenStreams:
    """A count of open long-lived calls with a maximum.

    Args:
      maximum: the maximum number of calls open at once, the
        `log_max_open_streams` setting.
    """

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError(
                f"{SETTING} must be 1 or more, got {maximum}; set the maximum "
                "number of TailLogEntries and StreamLogEntries calls open at once"
            )
        self.maximum = maximum
        self._lock = threading.Lock()
        self._open = 0
        self._rejected = 0
        self._next_warning = 0.0

    @property
    def open_count(self) -> int:
        """The calls that hold a slot now."""
        with self._lock:
            return self._open

    def acquire(self, method: str, context: grpc.ServicerContext) -> StreamSlot:
        """Take a slot for a call that ends with `context`.

        The slot comes back when the call terminates, also when the client
        cancels it or its deadline passes. The caller should also release it
        as soon as the handler is done.

        Raises:
          ResourceExhausted: every slot is taken; the message names the setting.
        """
        with self._lock:
            full = self._open >= self.maximum
            if not full:
                self._open += 1
        if full:
            self._warn_rejected(method)
            raise too_many_open_streams(method, self.maximum)
        slot = StreamSlot(self)
        if not context.add_callback(slot.release):
            # The call has already terminated.
            slot.release()
        return slot

    def _warn_rejected(self, method: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._rejected += 1
            if now < self._next_warning:
                return
            self._next_warning = now + WARNING_INTERVAL_SECONDS
            rejected, self._rejected = self._rejected, 0
        _LOGGER.warning(
            "rejected %d long-lived call(s), the last a %s call: %d are open, "
            "the maximum (%s)",
            rejected,
            method,
            self.maximum,
            SETTING,
        )

    def _give_back(self) -> None:
        with self._lock:
            self._open -= 1


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
