"""Rate-limited warnings about a call that fails again and again.

While a peer is down, every request that needs it fails the same way, and a
warning per failure floods the log (and log_service, which every component
ships its log to). `FailureLog` writes the first failure of a run at
WARNING, then at most one WARNING per interval that counts the failures it
did not write, and one INFO line when a call succeeds again. `FailureLogs`
keeps one such log per key, such as per backend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

#: Default seconds between two warnings of one run of failures.
SUMMARY_INTERVAL_SECONDS = 30.0


class FailureLog:
    """The log of one kind of failing call, such as membership checks.

    Args:
      logger: the logger to write to.
      calls: the calls, in plural, for the recovery line, such as
        "membership checks with user_service".
      interval: minimum seconds between two warnings of one run of failures.
      clock: monotonic seconds; tests may pass their own.
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
        self._failing = False
        self._first_failure = 0.0
        self._next_warning = 0.0
        self._failures = 0
        self._unlogged = 0

    def failed(self, message: str, *args: object) -> None:
        """Record a failure and write it when the run starts or the interval is up.

        `message` and `args` are as for `logging.Logger.warning`.
        """
        now = self._clock()
        with self._lock:
            self._failures += 1
            if not self._failing:
                self._failing = True
                self._first_failure = now
                self._failures = 1
                unlogged = 0
            elif now < self._next_warning:
                self._unlogged += 1
                return
            else:
                unlogged = self._unlogged
            self._unlogged = 0
            self._next_warning = now + self._interval
        if unlogged:
            self._logger.warning(
                message + " (%d more such failures not logged since the last "
                "warning; at most one warning every %gs)",
                *args,
                unlogged,
                self._interval,
            )
        else:
            self._logger.warning(message, *args)

    def succeeded(self) -> None:
        """Record a success; the first one after failures writes an INFO line."""
        if not self._failing:  # Read without the lock: the common case is cheap.
            return
        now = self._clock()
        with self._lock:
            if not self._failing:
                return
            self._failing = False
            failures, started = self._failures, self._first_failure
            self._failures = self._unlogged = 0
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
      clock: monotonic seconds; tests may pass their own.
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

    def failed(self, key: Hashable, message: str, *args: object) -> None:
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
        log.failed(message, *args)

    def succeeded(self, key: Hashable) -> None:
        """Record a success of `key`, as `FailureLog.succeeded` does."""
        log = self._logs.get(key)
        if log is not None:
            log.succeeded()
