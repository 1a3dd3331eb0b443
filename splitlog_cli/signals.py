"""Turn SIGTERM and SIGINT into a graceful stop, and a second one into an exit."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

_LOGGER = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Set by `splitlog up --processes` in each child's environment to its own pid.
# A child whose parent process is no longer the supervisor stops itself, so a
# supervisor killed with SIGKILL leaves no servers behind.
SUPERVISOR_PID_ENV = "SPLITLOG_SUPERVISOR_PID"


class StopSignals:
    """Records the first stop request and exits the process on the second.

    The first SIGTERM or SIGINT sets `requested` and wakes every waiter. A
    second one runs the `on_force` callbacks and exits at once with status
    128 + signal number, without waiting for in-flight work.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._wakers: list[Callable[[], None]] = []
        self._force_callbacks: list[Callable[[], None]] = []
        self.reason = ""

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def install(self) -> None:
        """Handle the stop signals with plain `signal.signal` handlers."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def attach(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """Handle the stop signals in `loop` and return an event set on stop."""
        event = asyncio.Event()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum, None)
        self._wakers.append(lambda: loop.call_soon_threadsafe(event.set))
        if self.requested:
            event.set()
        return event

    def on_force(self, callback: Callable[[], None]) -> None:
        """Register a callback to run before a forced exit."""
        self._force_callbacks.append(callback)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested or the timeout passes."""
        return self._event.wait(timeout)

    def request(self, reason: str) -> None:
        """Request a graceful stop; safe to call from any thread."""
        if self._event.is_set():
            return
        self.reason = reason
        self._event.set()
        for wake in self._wakers:
            wake()

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self._event.is_set():
            _LOGGER.warning("received %s again; exiting without waiting", name)
            for callback in self._force_callbacks:
                callback()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        _LOGGER.info(
            "received %s; stopping gracefully (send it again to exit at once)", name
        )
        self.request(f"received {name}")


def watch_supervisor(signals: StopSignals, interval: float = 1.0) -> None:
    """Request a stop when the supervising `splitlog up --processes` is gone.

    Does nothing unless the process was started by a supervisor.
    """
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor:
        return

    def watch() -> None:
        while not signals.wait(interval):
            if os.getppid() != int(supervisor):
                _LOGGER.warning("supervisor %s exited; stopping", supervisor)
                signals.request("supervisor exited")

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
