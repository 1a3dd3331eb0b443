"""A one-line progress bar on a text stream, such as stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
#: Minimum seconds between two redraws, so that a fast import does not spend its
#: time writing to the terminal.
REDRAW_SECONDS = 0.1


class ProgressBar:
    """Draws `label [#####.....] done/total` and redraws it in place.

    On a terminal the line is redrawn with a carriage return. On anything else
    (a file, a pipe, a test's captured stream) only the finished line is
    written, so logs get one line instead of hundreds.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self._label = label
        self._total = max(total, 0)
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = self._stream.isatty()
        self._done = 0
        self._last_draw = 0.0
        self._finished = False

    def advance(self, count: int = 1) -> None:
        """Count `count` more items as done and redraw when due."""
        self._done = min(self._done + count, self._total)
        now = time.monotonic()
        if self._interactive and now - self._last_draw >= REDRAW_SECONDS:
            self._last_draw = now
            self._stream.write("\r" + self.render())
            self._stream.flush()

    def finish(self) -> None:
        """Write the final state of the bar and end its line, once."""
        if self._finished:
            return
        self._finished = True
        prefix = "\r" if self._interactive else ""
        self._stream.write(prefix + self.render() + "\n")
        self._stream.flush()

    def render(self) -> str:
        """Return the bar as text, without a line ending."""
        filled = WIDTH if not self._total else WIDTH * self._done // self._total
        bar = "#" * filled + "." * (WIDTH - filled)
        return f"{self._label} [{bar}] {self._done}/{self._total}"
