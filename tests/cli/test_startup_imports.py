"""The client commands start without loading the server-side libraries.

`splitlog --help`, `splitlog logs tail` and the other client commands build
the parser of every subcommand, so a module-level import of the database or
storage code in any of them would slow each start by about a second of CPU.
The commands run in a subprocess with `-X importtime`, which lists every
module that the interpreter loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Libraries that only the servers, `admin-key` and the migrations need.
SERVER_ONLY = ("sqlalchemy", "alembic", "numpy", "duckdb", "pyarrow")
# The log router's coordinator, which the query checks of the CLI do not need.
ROUTER_MODULE = "log_service.coordinator"

CLIENT_COMMANDS = [
    ["--help"],
    ["--version"],
    ["logs", "query", "--help"],
    ["logs", "tail", "--help"],
    ["logs", "ship", "--help"],
    ["auth", "--help"],
    ["groups", "--help"],
    ["expenses", "--help"],
    ["demo", "--help"],
    ["import", "splitwise", "--help"],
]


def loaded_modules(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime -m splitlog_cli ARGS` and return the modules."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "splitlog_cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
    return result, modules


@pytest.mark.parametrize("args", CLIENT_COMMANDS, ids=" ".join)
def test_client_command_skips_server_libraries(args):
    result, modules = loaded_modules(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "splitlog_cli.main" in modules
    for library in SERVER_ONLY:
        loaded = sorted(m for m in modules if m.split(".")[0] == library)
        assert not loaded, f"`splitlog {' '.join(args)}` loaded {loaded[:5]}"
    assert ROUTER_MODULE not in modules


def test_version_prints_to_stdout():
    result, _ = loaded_modules(["--version"])
    assert result.returncode == 0
    assert result.stdout.startswith("splitlog ")
    assert result.stdout.endswith("\n")
