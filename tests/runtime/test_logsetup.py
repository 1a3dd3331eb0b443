"""The process log set-up of `splitlog_runtime.logsetup`."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from splitlog_runtime import logsetup


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_handler_follows_replaced_stderr(restore_root, monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logsetup.configure("INFO", "text")
    logging.getLogger("splitlog.test").warning("to the first")
    first.close()
    monkeypatch.setattr(sys, "stderr", second)

    logging.getLogger("splitlog.test").warning("to the second")

    assert "to the second" in second.getvalue()
    assert "splitlog.test" in second.getvalue()


def test_json_format_one_object_per_line(restore_root, monkeypatch):
    output = io.StringIO()
    monkeypatch.setattr(sys, "stderr", output)
    logsetup.configure("DEBUG", "json")

    logging.getLogger("splitlog.test").info("hello %s", "there")

    (line,) = output.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "hello there"
    assert entry["severity"] == "INFO"
    assert entry["logger"] == "splitlog.test"


@pytest.mark.parametrize(
    ("level", "fmt", "fragment"),
    [("LOUD", "text", "unknown log level 'LOUD'"), ("INFO", "xml", "'xml'")],
)
def test_unknown_level_or_format_rejected(restore_root, level, fmt, fragment):
    with pytest.raises(ValueError) as caught:
        logsetup.configure(level, fmt)
    assert fragment in str(caught.value)


def test_configured_restores_after_error(restore_root, monkeypatch):
    output = io.StringIO()
    monkeypatch.setattr(sys, "stderr", output)
    before = restore_root.handlers[:]
    restore_root.setLevel(logging.ERROR)

    with pytest.raises(RuntimeError), logsetup.configured("DEBUG", "text"):
        logging.getLogger("splitlog.test").info("inside")
        raise RuntimeError("command failed")
    logging.getLogger("splitlog.test").warning("outside")

    assert "inside" in output.getvalue()
    assert "outside" not in output.getvalue()
    assert restore_root.handlers == before
    assert restore_root.level == logging.ERROR


def test_configured_bad_level_changes_nothing(restore_root):
    before = restore_root.handlers[:]

    with pytest.raises(ValueError), logsetup.configured("LOUD", "text"):
        pass

    assert restore_root.handlers == before
