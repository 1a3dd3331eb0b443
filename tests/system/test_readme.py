"""The grpcurl and curl examples of the README, run verbatim against `splitlog up`.

The REST example of docs/logs.md's *Stream form* runs after them, with the
README's `LOGS_KEY`.

`splitlog up` runs on its default settings, so authentication is on. Only
the addresses change: the test's free ports replace the defaults, and
SPLITLOG_DATA_DIR points `splitlog admin-key` at the test's data directory.
A line `export NAME=...` sets NAME for the commands after it, as in one
shell.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.system.conftest import GRPCURL, start_splitlog

pytestmark = pytest.mark.system

README = Path(__file__).resolve().parents[2] / "README.md"
LOGS_DOC = README.parent / "docs" / "logs.md"


def _code_block(heading: str) -> list[str]:
    """Return the commands in the first sh block under a heading, joined."""
    section = README.read_text().split(f"## {heading}\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [
        line.strip()
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip() and not line.startswith("export PATH=")
    ]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    running = start_splitlog(tmp_path_factory.mktemp("readme"), settings={})
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.kill_everything()


def _localise(command: str, system) -> str:
    http = system.http_url.removeprefix("http://")
    command = command.replace("127.0.0.1:50051", system.grpc_address)
    return command.replace("127.0.0.1:8080", http)


def _export(command: str, environment: dict[str, str]) -> None:
    """Run an `export NAME=VALUE` line and store NAME in `environment`."""
    name = command.removeprefix("export ").split("=", 1)[0]
    result = subprocess.run(
        ["bash", "-c", f'{command}\nprintf %s "${name}"'],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
    )
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert result.stdout, f"{command}\nset {name} to an empty value\n{result.stderr}"
    environment[name] = result.stdout


def test_readme_examples_work_verbatim(system):
    grpc_commands = _code_block("Explore it with grpcurl")
    curl_commands = _code_block("Call it over REST")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the REST examples need it")
    environment = {
        "PATH": f"{GRPCURL.parent}:/usr/bin:/bin",
        "SPLITLOG_DATA_DIR": str(system.data_dir),
    }

    for command in grpc_commands:
        if command.startswith("export "):
            _export(_localise(command, system), environment)
            continue
        result = subprocess.run(
            ["bash", "-c", _localise(command, system)],
            capture_output=True,
            text=True,
            timeout=30,
            env=environment,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    for command in curl_commands:
        expected = re.search(r"#\s*(\d{3})", command)
        command = command.split("#", 1)[0].strip()
        result = subprocess.run(
            ["bash", "-c", _localise(command, system) + " -w '\\n%{http_code}'"],
            capture_output=True,
            text=True,
            timeout=30,
            env=environment,
        )
        status = result.stdout.rsplit("\n", 1)[-1]
        assert status == (expected.group(1) if expected else "200"), (
            f"{command}\n{result.stdout}"
        )

    # The stream example runs as one script, because it ends in a here-document.
    section = LOGS_DOC.read_text().split("## Stream form\n", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    streamed = subprocess.run(
        ["bash", "-c", _localise(script, system)],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
    )
    assert streamed.returncode == 0, f"{script}\n{streamed.stderr}"
    assert json.loads(streamed.stdout) == {"acceptedCount": 2}, streamed.stdout
