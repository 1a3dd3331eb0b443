"""`load_plan` reads only regular files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitlog_cli.splitwise.commands import run_import
from splitlog_cli.splitwise.importer import load_plan


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "export.csv"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("name", ["/dev/zero", "/dev/null"])
def test_device_is_not_read(name):
    with pytest.raises(OSError, match="not a regular file"):
        load_plan(Path(name))


def test_fifo_is_not_opened(fifo):
    with pytest.raises(OSError, match="not a regular file"):
        load_plan(fifo)


def test_directory_is_not_read(tmp_path):
    with pytest.raises(OSError, match="not a regular file"):
        load_plan(tmp_path)


def test_import_of_device_fails_cleanly(capsys):
    status = run_import(Path("/dev/zero"), "127.0.0.1:1", 1.0, None)

    err = capsys.readouterr().err
    assert status != 0
    assert "cannot read /dev/zero: not a regular file" in err
