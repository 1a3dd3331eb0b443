"""Helpers for reading what a command run in the test process printed."""

from __future__ import annotations

import re

#: The start of a log record in the text format. While a command runs in the
#: test process, its stderr handler also writes the records of the servers
#: that run in that process.
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def command_lines(text: str) -> list[str]:
    """Return the lines that the command wrote, without log records."""
    return [line for line in text.splitlines() if not LOG_RECORD.match(line)]
