"""Limit on the number of password hashes that user_service computes at once.

Each Argon2 hash or check takes 64 MiB of memory (argon2-cffi's default
memory_cost) and tens of milliseconds of CPU time. Without a limit, a flood of
sign-ins with made-up emails makes every handler thread hash at once. Memory
then grows by 64 MiB per thread, and calls that hash nothing, such as the
gateway's credential checks, queue behind them.

`PasswordHashing` lets `concurrency` callers hash at once and as many more
wait. Each waiter waits at most `max_wait_seconds` and never past its
deadline. Any other caller gets RESOURCE_EXHAUSTED with a retry delay at once,
so most handler threads stay free for calls that present a token or an API key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from splitlog_runtime.errors import ResourceExhausted

_LOGGER = logging.getLogger(__name__)

#: ErrorInfo reason of a call rejected because every hashing slot is taken.
PASSWORD_HASHING_BUSY = "PASSWORD_HASHING_BUSY"
#: Seconds after which a rejected caller may try again.
RETRY_DELAY_SECONDS = 1.0
#: Seconds of the caller's deadline reserved for the work after the wait, which
#: is the hash itself and the database.
DEADLINE_RESERVE_SECONDS = 0.5


def cpu_count() -> int:
    """Return the number of CPUs that this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_concurrency(configured: int, workers: int) -> int:
    """Return the concurrency for an `auth_password_hash_concurrency` setting.

    A setting of 0 selects the number of CPUs, capped at a quarter of
    `workers` and at least 1. Hashing callers and their waiters then occupy at
    most half the handler threads.
    """
    if configured > 0:
        return configured
    return max(1, min(cpu_count(), workers // 4))


class PasswordHashing:
    """Limited set of slots for hashing or checking passwords.

    Attributes:
      concurrency: maximum number of callers that hold a slot at once.
      max_wait_seconds: maximum wait for a slot.
      peak: maximum number of callers that held a slot at once so far.
    """

    @classmethod
    def from_config(cls, config: Any) -> PasswordHashing:
        """Build the limit from auth_password_hash_concurrency and its max wait."""
        return cls(
            resolve_concurrency(config.auth_password_hash_concurrency, config.workers),
            config.auth_password_hash_max_wait_seconds,
        )

    def __init__(self, concurrency: int, max_wait_seconds: float) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, got {concurrency}")
        self.concurrency = concurrency
        self.max_wait_seconds = max_wait_seconds
        self.peak = 0
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0

    @contextlib.contextmanager
    def slot(self, context: grpc.ServicerContext | None) -> Iterator[None]:
        """Acquire a slot to hash or check passwords, and hold it while the block runs.

        Raises:
          ResourceExhausted: `concurrency` callers are already waiting, or no
            slot became free in time. The wait ends after `max_wait_seconds`
            or DEADLINE_RESERVE_SECONDS before the caller's deadline,
            whichever comes first.
        """
        if not self._slots.acquire(blocking=False):
            self._wait(context)
        with self._lock:
            self._running += 1
            self.peak = max(self.peak, self._running)
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
            self._slots.release()

    def _wait(self, context: grpc.ServicerContext | None) -> None:
        wait = self.max_wait_seconds
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None:
            wait = min(wait, remaining - DEADLINE_RESERVE_SECONDS)
        with self._lock:
            queue_full = self._waiting >= self.concurrency
            if not queue_full and wait > 0:
                self._waiting += 1
        if queue_full or wait <= 0:
            raise self._busy()
        try:
            acquired = self._slots.acquire(timeout=wait)
        finally:
            with self._lock:
                self._waiting -= 1
        if not acquired:
            raise self._busy()

    def _busy(self) -> ResourceExhausted:
        _LOGGER.debug("rejected a password hash: all %d slots taken", self.concurrency)
        return ResourceExhausted(
            f"all {self.concurrency} slots for computing a password hash "
            "(auth_password_hash_concurrency) are taken and none became free in "
            f"time. Retry in {RETRY_DELAY_SECONDS:g} s. An operator with spare "
            "CPUs and memory (64 MiB per hash) may raise "
            "auth_password_hash_concurrency, or turn on the sign-in lockout "
            "and rate limit against floods",
            reason=PASSWORD_HASHING_BUSY,
            metadata={
                "limit": "auth_password_hash_concurrency",
                "auth_password_hash_concurrency": str(self.concurrency),
            },
            retry_delay=RETRY_DELAY_SECONDS,
        )
