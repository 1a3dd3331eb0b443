"""Rate-limited log lines, such as warnings about a call that keeps failing.

`Throttle` lets at most one event through per interval and counts the
events it held back. A caller writes a log line only for the events that
pass, and can report the count in it.

While a peer is down, every request that needs it fails the same way, and a
warning per failure floods the log (and log_service, which every component
ships its log to). `FailureLog` writes at most one WARNING per interval,
which counts the failures it did not write. The first failure of a run is
written at once unless the last warning is less than an interval old, as
when a call fails for some requests and succeeds for others. A call that
succeeds again writes one INFO line if a warning of its run was written.
`FailureLogs` keeps one such log per key, such as per backend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

#: Default seconds between two warnings of one run of failures.
SUMMARY_INTERVAL_SECONDS = 30.0


class Throttle:
    """Rate limiter that passes at most one event per interval.

    The first event passes. After that, the next event passes only once
    `interval` seconds have gone by since the last one that passed. The
    limiter counts the events it holds back. It is thread-safe.

    Args:
      interval: minimum seconds between two events that pass.
      clock: monotonic seconds; tests may pass their own.
    """

    def __init__(
        self, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next_allowed = float("-inf")
        self._held_back = 0

    def allow(self) -> int | None:
        """Record an event and return whether it passes.

        Returns:
          The number of events held back since the last one that passed, or
          None when this event is held back too.
        """
        now = self._clock()
        with self._lock:
            if now < self._next_allowed:
                self._held_back += 1
                return None
            held_back, self._held_back = self._held_back, 0
            self._next_allowed = now + self.interval
            return held_back

    def reset(self) -> None:
        """Let the next event pass at once and clear the count of held-back events."""
        with self._lock:
            self._next_allowed = float("-inf")
            self._held_back = 0


class FailureLog:
    """The log of one kind of failing call, such as membership checks.

    Args:
      logger: the logger to write to.
      calls: the calls, in plural, for the recovery line, such as
        "membership checks with user_service".
      interval: minimum seconds between two warnings of one run of failures.
      clock: function that returns monotonic seconds. Tests may pass their own.
    """

    def __init__(
        self,
        logger: logging.Logger,
        calls: str,
        interval: float = SUMMARY_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._calls = calls
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._throttle = Throttle(interval, clock)
        self._failing = False
        self._run_logged = False
        self._first_failure = 0.0
        self._failures = 0

    def failed(self, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Record a failure and write it unless a line was written less than an
        interval ago.

        A new run of failures does not reset the interval, so a call that
        fails and succeeds by turns still writes at most one line per
        interval. `message` and `args` are as for `logging.Logger.warning`.
        `level` is the log level of the line, WARNING by default.
        """
        now = self._clock()
        with self._lock:
            self._failures += 1
            if not self._failing:
                self._failing = True
                self._run_logged = False
                self._first_failure = now
                self._failures = 1
            unlogged = self._throttle.allow()
            if unlogged is None:
                return
            self._run_logged = True
        if unlogged:
            self._logger.log(
                level,
                message + " (%d more such failures not logged since the last "
                "line; at most one line every %gs)",
                *args,
                unlogged,
                self._interval,
            )
        else:
            self._logger.log(level, message, *args)

    def succeeded(self) -> None:
        """Record a success and end the run of failures.

        The first success after failures writes an INFO line if a line of
        that run was written. The failures of a run without a line are
        counted in the next line that `failed` writes.
        """
        if not self._failing:  # Read without the lock: the common case is cheap.
            return
        now = self._clock()
        with self._lock:
            if not self._failing:
                return
            self._failing = False
            failures, started = self._failures, self._first_failure
            self._failures = 0
            if not self._run_logged:
                return
        self._logger.info(
            "%s succeed again after %d failures in %.1fs",
            self._calls,
            failures,
            now - started,
        )


class FailureLogs:
    """One `FailureLog` per key, each created at the key's first failure.

    A run of failures of one key, such as one backend, then does not hide
    the first failure of another. The logs are kept for the life of this
    object, so the keys must come from a small fixed set.

    Args:
      logger: the logger to write to.
      calls: the recovery line's name of the calls of a key, such as
        `lambda backend: f"calls to {backend}"`.
      interval: minimum seconds between two warnings of one key.
      clock: function that returns monotonic seconds. Tests may pass their own.
    """

    def __init__(
        self,
        logger: logging.Logger,
        calls: Callable[[Hashable], str],
        interval: float = SUMMARY_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._calls = calls
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._logs: dict[Hashable, FailureLog] = {}

    def failed(
        self,
        key: Hashable,
        message: str,
        *args: object,
        level: int = logging.WARNING,
    ) -> None:
        """Record a failure of `key`, as `FailureLog.failed` does."""
        log = self._logs.get(key)
        if log is None:
            with self._lock:
                log = self._logs.get(key)
                if log is None:
                    log = FailureLog(
                        self._logger, self._calls(key), self._interval, self._clock
                    )
                    self._logs[key] = log
        log.failed(message, *args, level=level)

    def succeeded(self, key: Hashable) -> None:
        """Record a success of `key`, as `FailureLog.succeeded` does."""
        log = self._logs.get(key)
        if log is not None:
            log.succeeded()
