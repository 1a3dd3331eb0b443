"""Errors that stop a command with a message instead of a traceback."""

from __future__ import annotations


class StartupError(Exception):
    """A component cannot start. The message gives the cause and the fix."""
