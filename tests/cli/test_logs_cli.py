"""`splitlog logs` and `splitlog demo logs` against a real log service.

A log router with two shards of one node each and a gateway in front of it
listen on 127.0.0.1. The commands run in this process and talk to the
gateway, as they do in use. The tests write and read entries through the
router directly to set up and check what the commands did. The demo also
runs with authentication on, against a second set of servers that adds a
real user_service.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2

from gateway.app import build as build_gateway
from log_service.app import build_router
from log_service.logfiles import parse_numbered_file
from splitlog.auth.v1 import auth_service_pb2 as auth_pb2
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog.logs.v1 import node_service_pb2 as node_pb2
from splitlog.logs.v1 import node_service_pb2_grpc as node_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import logs as logs_commands
from splitlog_cli.client import ship_input, ship_positions
from splitlog_cli.client.credentials import TOKEN_ENV
from splitlog_cli.client.demo_tour import random_suffix
from splitlog_cli.client.logs import _cluster_table, safe_text
from splitlog_cli.main import main
from splitlog_runtime import auth, logship
from splitlog_runtime import config as config_module
from splitlog_runtime.channels import insecure_channel
from tests.auth.support import operator_admin_key
from tests.cli.conftest import run_splitlog
from tests.gateway.support import LoopThread
from tests.log_service.test_router_cluster import Cluster, list_all, ts
from tests.log_service.test_streams import as_entries
from tests.log_service.test_tail import with_sequence
from tests.output import command_lines
from tests.ports import closed_address
from tests.proxy import DroppingProxy
from tests.system.conftest import SPLITLOG
from user_service import app as user_app

SECOND = 10**9
HOUR = 3600
AUTH_SECRET = "demo-logs-test-secret-" + "z" * 40


class _AllowGuard:
    """Lets user_service remove members without asking balance_service."""

    def check_settled(self, *args, **kwargs) -> None:
        return None

    def close(self) -> None:
        return None


class LogsGateway:
    """A real log cluster and a real gateway that forwards LogsService to it."""

    def __init__(
        self,
        base_config,
        tmp_path,
        loop: LoopThread,
        with_users: bool = False,
        gateway_settings: dict | None = None,
        **log_settings,
    ):
        """Start the servers; `with_users` adds a real user_service.

        `gateway_settings` are settings of the gateway and user_service,
        such as `auth_cache_seconds`.
        """
        settings = {"log_shards": 2, "log_replicas": 1, **log_settings}
        self.cluster = Cluster(
            base_config.replace(log_node_port=0, log_fsync=False, workers=4, **settings)
        )
        self._loop = loop
        self.users = None
        try:
            config = config_module.load(
                environ={},
                overrides={
                    "auth_required": base_config.auth_required,
                    "auth_secret": base_config.auth_secret,
                    "data_dir": tmp_path,
                    "log_service_addr": f"127.0.0.1:{self.cluster.router.port}",
                    "user_service_addr": closed_address(),
                    "expense_service_addr": closed_address(),
                    "balance_service_addr": closed_address(),
                    "grace_seconds": 1.0,
                    "workers": 4,
                    "max_message_bytes": self.cluster.router_config.max_message_bytes,
                    **(gateway_settings or {}),
                },
            )
            if with_users:
                self.users = user_app.build(config, "127.0.0.1:0", guard=_AllowGuard())
                config = config.replace(
                    user_service_addr=f"127.0.0.1:{self.users.port}"
                )
            self.gateway = loop.run(build_gateway(config, "127.0.0.1:0", "127.0.0.1:0"))
            self.config = config
        except BaseException:
            if self.users is not None:
                self.users.stop(0)
            self.cluster.close()
            raise
        self.address = f"127.0.0.1:{self.gateway.grpc_port}"
        self.stub = self.cluster.stub

    def close(self) -> None:
        self._loop.run(self.gateway.stop(0))
        if self.users is not None:
            self.users.stop(0)
        self.cluster.close()


@pytest.fixture(scope="module")
def live(loop_thread, tmp_path_factory):
    """One log service and gateway for the module; each test uses own services."""
    base = config_module.load(
        environ={},
        overrides={"auth_required": False, "data_dir": tmp_path_factory.mktemp("logs")},
    )
    running = LogsGateway(base, tmp_path_factory.mktemp("gateway"), loop_thread)
    yield running
    running.close()


@contextlib.contextmanager
def logs_gateway_with_auth(
    loop: LoopThread,
    tmp_path_factory,
    secret: str = AUTH_SECRET,
    gateway_settings: dict | None = None,
    **log_settings,
) -> Iterator[LogsGateway]:
    """Run a log service, user_service and gateway that require a credential.

    `gateway_settings` and `log_settings` are as for `LogsGateway`.
    """
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": True,
            "auth_secret": secret,
            "data_dir": tmp_path_factory.mktemp("logs-auth"),
        },
    )
    running = LogsGateway(
        base,
        tmp_path_factory.mktemp("gateway-auth"),
        loop,
        with_users=True,
        gateway_settings=gateway_settings,
        **log_settings,
    )
    try:
        yield running
    finally:
        running.close()
        # The components installed the signer of their outgoing calls for
        # the whole process; later modules start their own.
        auth.install_process_signer(None)


@pytest.fixture(scope="module")
def live_with_auth(loop_thread, tmp_path_factory):
    """A log service, user_service and gateway that require a credential."""
    with logs_gateway_with_auth(loop_thread, tmp_path_factory) as running:
        yield running


@pytest.fixture
def no_credential(tmp_path, monkeypatch):
    """Run the commands without a token and without a saved session."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def run(capsys, address: str, *args: str) -> tuple[int, str, str]:
    status = main([*args, "--gateway", address])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_log(tmp_path, *lines: str):
    path = tmp_path / "app.log"
    path.write_text("\r\n".join(lines))
    return path


def line_time(seconds_ago: int) -> str:
    """Return the UTC wall-clock time `seconds_ago` seconds back, as in a log file."""
    moment = datetime.fromtimestamp(int(time.time()) - seconds_ago, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def rfc3339(ns: int) -> str:
    return ts(ns).ToJsonString()


def duration(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


# ship


def test_ship_advice_for_each_rejection_reason(live, tmp_path, capsys):
    path = write_log(
        tmp_path,
        "2099-01-01 00:00:00 INFO from a clock set ahead",
        "1999-01-01 00:00:00 INFO from before the retention",
        f"{line_time(60)} INFO fine",
    )

    status, _, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-advice",
        "--no-positions",
    )  # fmt: skip
    text = " ".join(err.split())

    assert status == 3, err
    assert "rejected 2 of 3 entries" in text
    assert "timestamp_too_old 1" in text
    assert "timestamp_in_future 1" in text
    assert "timestamp_too_old: these entries are older than" in text
    assert "splitlog logs retention set --service" in text
    assert "timestamp_in_future: these entries are more than" in text
    assert "log_max_future_seconds" in text
    assert "Check the clock of the host that wrote them" in text
    assert "--zone" in text


def test_ship_advice_names_only_reasons_seen(live, tmp_path, capsys):
    path = write_log(tmp_path, "2099-01-01 00:00:00 INFO from a clock set ahead")

    status, _, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-advice",
        "--no-positions",
    )  # fmt: skip
    text = " ".join(err.split())

    assert status == 3, err
    assert "timestamp_in_future: these entries are more than" in text
    assert "timestamp_too_old:" not in text
    assert "retention set" not in text


def test_ship_counts_and_batches(live, tmp_path, capsys):
    too_old = 30 * 24 * 3600
    path = write_log(
        tmp_path,
        f"{line_time(600)} INFO one",
        f"{line_time(590)} WARN two",
        f"{line_time(too_old)} ERROR three",
        f"{line_time(570)} INFO four",
        f"{line_time(560)} INFO five",
    )

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-batches",
        "--batch-size", "2", "--format", "json",
    )  # fmt: skip
    summary = json.loads(out)
    stored = list_all(live.stub, services=["ship-batches"], order_by="timestamp")

    assert status == 3, err
    assert "rejected 1 of 5 entries (timestamp_too_old 1)" in err
    assert "splitlog logs retention set --service" in err
    assert summary["batchCount"] == "3"
    assert summary["acceptedCount"] == "4"
    assert summary["rejectedCount"] == "1"
    assert summary["duplicateCount"] == "0"
    assert summary["rejectedEntries"][0]["index"] == "2"
    assert summary["rejectedEntries"][0]["file"] == str(path)
    assert summary["rejectedEntries"][0]["line"] == 3
    assert (
        summary["rejectedEntries"][0]["reason"] == "REJECTION_REASON_TIMESTAMP_TOO_OLD"
    )
    # Each batch has its own request id: a shared one would store only the
    # first batch and skip the others as resends.
    assert [entry.message.rsplit(" ", 1)[1] for entry in stored] == [
        "one",
        "two",
        "four",
        "five",
    ]
    assert [entry.severity for entry in stored[:2]] == [
        logs_pb2.SEVERITY_INFO,
        logs_pb2.SEVERITY_WARN,
    ]
    assert {entry.service for entry in stored} == {"ship-batches"}


def test_ship_sends_runs_as_streams(live, tmp_path, capsys):
    # Syslog lines name their host, and a line without a time gets the
    # attribute time_inferred, so the lines form four runs.
    moment = datetime.fromtimestamp(int(time.time()) - 60, UTC)
    stamp = f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"
    lines = [
        f"{stamp} web-1 sshd[7]: accepted",
        f"{stamp} web-1 sshd[7]: closed",
        f"{stamp} web-2 cron[9]: ERROR job failed",
        "continuation without a time",
        f"{stamp} web-2 cron[9]: done",
    ]
    path = write_log(tmp_path, *lines)
    entries = [entry for _, entry in parse_numbered_file(path, service="runs")]
    batch = logs_commands._Batch(str(path))
    for number, entry in enumerate(entries, 1):
        batch.add(number, entry, logs_commands._field_bytes(entry.ByteSize()))

    request = logship.stream_request(batch.entries, str(uuid.uuid4()))
    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-runs",
        "--zone", "UTC", "--format", "json",
    )  # fmt: skip
    stored = list_all(live.stub, services=["ship-runs"], order_by="timestamp")

    assert [len(stream.messages) for stream in request.streams] == [2, 1, 1, 1]
    assert [stream.host for stream in request.streams] == [
        "web-1",
        "web-2",
        "",
        "web-2",
    ]
    assert [as_entries(stream) for stream in request.streams] == [
        [without_severity_text(entry) for entry in entries[:2]],
        [without_severity_text(entries[2])],
        [without_severity_text(entries[3])],
        [without_severity_text(entries[4])],
    ]
    assert request.ByteSize() <= batch.size
    assert status == 0, err
    assert json.loads(out)["acceptedCount"] == "5"
    assert sorted(entry.message for entry in stored) == sorted(lines)
    assert sorted(entry.host for entry in stored) == [
        "",
        "web-1",
        "web-1",
        "web-2",
        "web-2",
    ]
    assert {e.message: e.severity for e in stored} == {
        e.message: e.severity for e in entries
    }


def without_severity_text(entry: logs_pb2.LogEntry) -> logs_pb2.LogEntry:
    """Return a copy without `severity_text`, which a stream does not carry.

    The server would not store it for these lines either, because a level
    word parsed from a line names the entry's own severity.
    """
    copy = logs_pb2.LogEntry()
    copy.CopyFrom(entry)
    copy.ClearField("severity_text")
    return copy


def test_ship_undated_severity_matches_rest(live, tmp_path, capsys):
    messages = [
        "ERROR plain no date",
        "WARN: with colon",
        "level=error something",
        "[ERROR] bracketed",
        "no error named here",
    ]
    path = write_log(tmp_path, *messages)
    url = f"http://127.0.0.1:{live.gateway.http_port}/logs"

    status, _, err = run(
        capsys, live.address, "logs", "ship", str(path),
        "--service", "ship-undated",
    )  # fmt: skip
    with httpx.Client(timeout=10) as client:
        posted = [
            client.post(url, json={"service": "rest-undated", "message": message})
            for message in messages
        ]
    shipped = list_all(live.stub, services=["ship-undated"])
    sent = list_all(live.stub, services=["rest-undated"])

    assert status == 0, err
    assert [response.status_code for response in posted] == [200] * 5
    by_message = {entry.message: entry.severity for entry in shipped}
    assert by_message == {entry.message: entry.severity for entry in sent}
    assert by_message == {
        "ERROR plain no date": logs_pb2.SEVERITY_ERROR,
        "WARN: with colon": logs_pb2.SEVERITY_WARN,
        "level=error something": logs_pb2.SEVERITY_ERROR,
        "[ERROR] bracketed": logs_pb2.SEVERITY_ERROR,
        "no error named here": logs_pb2.SEVERITY_INFO,
    }


def test_ship_syslog_level_after_tag(live, tmp_path, capsys):
    moment = datetime.fromtimestamp(int(time.time()) - 600, UTC)
    stamp = f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"
    path = write_log(
        tmp_path,
        f"{stamp} host-a app[1]: ERROR card declined",
        f"{stamp} host-a app[1]: Error returned by a helper",
        f"{stamp} host-b kernel: WARN disk slow",
    )

    status, _, err = run(
        capsys, live.address, "logs", "ship", str(path),
        "--service", "ship-syslog", "--zone", "UTC", "--year", str(moment.year),
    )  # fmt: skip
    stored = list_all(live.stub, services=["ship-syslog"])

    assert status == 0, err
    by_message = {entry.message.split(": ", 1)[1]: entry for entry in stored}
    assert by_message["ERROR card declined"].severity == logs_pb2.SEVERITY_ERROR
    assert by_message["ERROR card declined"].host == "host-a"
    assert by_message["WARN disk slow"].severity == logs_pb2.SEVERITY_WARN
    assert by_message["WARN disk slow"].host == "host-b"
    # A capitalised first word of the program's message is prose, not a level.
    assert by_message["Error returned by a helper"].severity == logs_pb2.SEVERITY_INFO


def test_ship_table_output(live, tmp_path, capsys):
    path = write_log(tmp_path, f"{line_time(60)} INFO one")

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-table"
    )

    assert status == 0, err
    assert re.search(r"^stored: +1$", out, re.M), out
    assert re.search(r"^already stored: +0$", out, re.M), out
    assert re.search(r"^rejected: +0$", out, re.M), out


def test_ship_counts_empty_lines(live, tmp_path, capsys):
    path = tmp_path / "gaps.log"
    positions = str(tmp_path / "positions.json")
    path.write_text(f"{line_time(60)} INFO one\n\n\r\n{line_time(50)} INFO two\n")

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-empty",
        "--positions", positions,
    )  # fmt: skip
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"\n{line_time(40)} INFO three\n\n")
    # The rerun counts only the empty lines after those acknowledged.
    rerun_status, rerun_out, rerun_err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-empty",
        "--positions", positions, "--format", "json",
    )  # fmt: skip
    stored = list_all(live.stub, services=["ship-empty"], order_by="timestamp")

    assert status == 0, err
    assert re.search(r"^skipped empty lines: +2$", out, re.M), out
    assert rerun_status == 0, rerun_err
    assert json.loads(rerun_out)["skippedEmptyLines"] == 2
    assert [entry.message.split()[-1] for entry in stored] == ["one", "two", "three"]


def test_ship_all_rejected_counts_reasons(live, tmp_path, capsys):
    too_old = 30 * 24 * 3600
    lines = [f"{line_time(too_old + i)} INFO old {i}" for i in range(30)]
    path = write_log(tmp_path, *lines)

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-old",
        "--batch-size", "7",
    )  # fmt: skip

    assert status == 3
    assert re.search(r"^stored: +0$", out, re.M), out
    assert re.search(r"^rejected: +30$", out, re.M), out
    assert re.search(r"^timestamp_too_old +30$", out, re.MULTILINE), out
    assert "(20 more rejected entries not shown)" in out
    # Rejections name the file and line, not an index across the run.
    assert re.search(rf"^{re.escape(str(path))} +1 +timestamp_too_old", out, re.M)
    assert re.search(rf"^{re.escape(str(path))} +10 +timestamp_too_old", out, re.M)
    # The system under test runs in this process, so its own log lines can
    # land on stderr too; look for the command's line among them.
    assert any(
        line.startswith("splitlog logs ship: error: the server rejected 30 of 30")
        for line in err.splitlines()
    ), err
    assert list_all(live.stub, services=["ship-old"]) == []


def test_ship_rejection_table_fills_descriptions(live, tmp_path, capsys):
    too_old = 30 * 24 * 3600
    lines = [f"{line_time(too_old + i)} INFO old {i}" for i in range(5)]
    path = write_log(tmp_path, *lines)

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service",
        "ship-old-described", "--batch-size", "3",
    )  # fmt: skip
    rows = {
        int(match[1]): match[2]
        for match in re.finditer(
            rf"^{re.escape(str(path))} +(\d+) +timestamp_too_old +timestamp +(.*)$",
            out,
            re.M,
        )
    }

    assert status == 3, err
    assert sorted(rows) == [1, 2, 3, 4, 5], out
    # Each batch's response describes its first rejection of a reason.
    assert "is 30.0 days old" in rows[1]
    assert rows[2] == "same as line 1"
    assert rows[3] == "same as line 1"
    assert "is 30.0 days old" in rows[4]
    assert rows[5] == "same as line 4"


def test_ship_counts_use_singular(live, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logs_commands, "SHIP_RETRY_SECONDS", 0.5)
    too_old = 30 * 24 * 3600
    one = tmp_path / "one.log"
    one.write_text(f"{line_time(too_old)} INFO old\n")
    eleven = tmp_path / "eleven.log"
    eleven.write_text(
        "".join(f"{line_time(too_old + i)} INFO old {i}\n" for i in range(11))
    )

    single = run(
        capsys, live.address, "logs", "ship", str(one), "--service", "ship-singular"
    )
    many = run(
        capsys, live.address, "logs", "ship", str(eleven), "--service", "ship-singular"
    )
    unreachable = run(
        capsys, closed_address(), "logs", "ship", str(one), "--service", "web"
    )
    unreachable_text = " ".join(unreachable[2].split())

    assert single[0] == 3
    assert "the server rejected 1 of 1 entry (timestamp_too_old 1)" in single[2]
    assert many[0] == 3
    assert "the server rejected 11 of 11 entries" in many[2]
    assert "(1 more rejected entry not shown)" in many[1]
    assert unreachable[0] == 1
    assert "It read 1 line and stored 0 entries (0 rejected)." in unreachable_text


def test_ship_stopped_counts_empty_lines_read(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logs_commands, "SHIP_RETRY_SECONDS", 0.5)
    lines = [f"{line_time(60)} INFO line {i}" for i in range(5)]
    path = write_log(tmp_path, *lines[:2], "", *lines[2:])

    status, _, err = run(
        capsys, closed_address(), "logs", "ship", str(path), "--service", "web",
        "--no-positions",
    )  # fmt: skip
    text = " ".join(err.split())

    assert status == 1, text
    assert f"stopped at line 1 of {path}" in text
    # Line numbers count the empty line 3, so the count of lines read does too.
    assert "It read 6 lines and stored 0 entries (0 rejected)." in text


def test_ship_json_rejections_name_file_and_line(live, tmp_path, capsys, monkeypatch):
    too_old = 30 * 24 * 3600
    first = tmp_path / "first.log"
    first.write_text(
        f"{line_time(60)} INFO fine\n\n{line_time(too_old)} INFO old in first\n"
    )
    second = tmp_path / "second.log"
    second.write_text(
        f"{line_time(too_old)} INFO old in second\n{line_time(60)} INFO fine\n"
    )
    _pipe_stdin(
        monkeypatch, f"{line_time(60)} INFO fine", f"{line_time(too_old)} INFO old"
    )

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(first), "-", str(second),
        "--service", "ship-json-lines", "--format", "json",
    )  # fmt: skip
    _pipe_stdin(monkeypatch, f"{line_time(too_old)} INFO old")
    # Without --no-positions, the rerun would skip the lines of `first`.
    table_status, table, _ = run(
        capsys, live.address, "logs", "ship", str(first), "-",
        "--service", "ship-json-lines", "--no-positions",
    )  # fmt: skip
    rejected = json.loads(out)["rejectedEntries"]

    assert status == 3, err
    assert [(r["file"], r["line"]) for r in rejected] == [
        (str(first), 3),
        ("-", 2),
        (str(second), 1),
    ]
    # The run-wide index stays for scripts that use it.
    assert [r["index"] for r in rejected] == ["1", "3", "4"]
    assert {r["reason"] for r in rejected} == {"REJECTION_REASON_TIMESTAMP_TOO_OLD"}
    assert table_status == 3
    assert re.search(rf"^{re.escape(str(first))} +3 +timestamp_too_old", table, re.M)
    assert re.search(r"^standard input +1 +timestamp_too_old", table, re.M), table


def test_ship_help_lists_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["logs", "ship", "--help"])
    text = " ".join(capsys.readouterr().out.split())

    assert "3 when the server rejected some entries" in text
    assert "or the year before for a date more than a day in the future" in text
    assert "--batch-bytes" in text
    assert "(default 4194304, 4 MiB)" in text
    assert "--fresh-ids" in text
    assert "stores each batch once" in text
    assert "141 when the reader of the output closed it early" in text
    assert "130 after Ctrl-C" in text
    assert "log file to ship, or - for standard input" in text
    assert "A FILE of - reads standard input" in text
    assert "--source-name" in text
    assert "--flush-seconds" in text


def test_ship_missing_file(live, tmp_path, capsys):
    status, out, err = run(
        capsys, live.address, "logs", "ship", str(tmp_path / "nope.log"),
        "--service", "ship-missing",
    )  # fmt: skip

    assert status == 2
    assert "nope.log" in err
    assert list_all(live.stub, services=["ship-missing"]) == []


@pytest.mark.parametrize("path", ["/dev/zero", "."])
def test_ship_rejects_device_and_directory(live, path, capsys):
    status, out, err = run(
        capsys, live.address, "logs", "ship", path, "--service", "ship-device"
    )

    assert status == 2
    assert f"cannot read {path}: it is " in err
    assert list_all(live.stub, services=["ship-device"]) == []


def test_ship_unknown_zone(live, tmp_path, capsys):
    path = write_log(tmp_path, f"{line_time(60)} INFO one")

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-zone",
        "--zone", "Nowhere",
    )  # fmt: skip

    assert status == 2
    assert "--zone" in err
    assert "Nowhere" in err
    assert list_all(live.stub, services=["ship-zone"]) == []


def test_ship_json_time_out_of_range(live, tmp_path, capsys):
    recent = int(time.time()) - 60
    bad_times = ["NaN", "Infinity", "1e999", "-1e30"]
    path = write_log(
        tmp_path,
        f'{{"time":{recent},"msg":"first"}}',
        *(f'{{"time":{value},"msg":"bad {value}"}}' for value in bad_times),
        f'{{"time":{recent + 1},"msg":"last"}}',
    )

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-bad-time",
    )  # fmt: skip
    stored = list_all(live.stub, services=["ship-bad-time"], order_by="timestamp")

    assert status == 0, err
    assert "--zone" not in err
    assert len(stored) == 6
    assert stored[0].message == f'{{"time":{recent},"msg":"first"}}'
    assert stored[-1].message == f'{{"time":{recent + 1},"msg":"last"}}'
    inferred = [entry for entry in stored if entry.attributes.get("time_inferred")]
    assert len(inferred) == len(bad_times)
    assert all(entry.timestamp.seconds == recent for entry in inferred)


def test_ship_json_epoch_zero_inferred(live, tmp_path, capsys):
    recent = int(time.time()) - 60
    zero_times = ["0", "0.0", '"1970-01-01T00:00:00Z"']
    path = write_log(
        tmp_path,
        f'{{"time":{recent},"msg":"first"}}',
        *(f'{{"time":{value},"msg":"zero"}}' for value in zero_times),
    )

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-zero-time",
    )  # fmt: skip
    stored = list_all(live.stub, services=["ship-zero-time"], order_by="timestamp")

    assert status == 0, err
    assert len(stored) == 4
    inferred = [entry for entry in stored if entry.attributes.get("time_inferred")]
    assert len(inferred) == len(zero_times)
    assert all(entry.timestamp.seconds == recent for entry in inferred)


def _wait_for_health(stub, health: int, timeout: float = 20.0) -> None:
    """Wait until the cluster status reports `health`."""
    deadline = time.monotonic() + timeout
    request = logs_pb2.GetClusterStatusRequest()
    while stub.GetClusterStatus(request).health != health:
        assert time.monotonic() < deadline, f"health never became {health}"
        time.sleep(0.1)


def test_ship_resends_batch_after_unavailable(
    loop_thread, base_config, tmp_path, capsys
):
    running = LogsGateway(base_config, tmp_path / "gateway", loop_thread, log_shards=1)
    try:
        # With the router stopped, the gateway fails each write at once with
        # UNAVAILABLE, and the command resends the batch until one passes.
        port = running.cluster.router.port
        running.cluster.router.stop(0)
        path = write_log(tmp_path, f"{line_time(60)} INFO one")
        outcome = {}

        def ship():
            outcome["status"] = main(
                ["logs", "ship", str(path), "--service", "resent"]
                + ["--gateway", running.address]
            )

        shipper = threading.Thread(target=ship)
        shipper.start()
        # Start the router only once the first attempt failed, however long a
        # loaded machine takes to get there.
        err = _wait_for_stderr(capsys, "retrying this batch", timeout=30.0)
        running.cluster.router, running.cluster.coordinator = build_router(
            running.cluster.router_config, f"127.0.0.1:{port}"
        )
        shipper.join(60)
        err += capsys.readouterr().err
        stored = list_all(running.stub, services=["resent"])
    finally:
        running.close()

    assert not shipper.is_alive()
    assert outcome["status"] == 0, err
    assert "retrying this batch for up to 60 s" in err
    assert len(stored) == 1
    assert stored[0].message.endswith("INFO one")


def test_ship_retries_until_gateway_starts(loop_thread, base_config, tmp_path, capsys):
    running = LogsGateway(base_config, tmp_path / "gateway", loop_thread, log_shards=1)
    try:
        port = running.gateway.grpc_port
        loop_thread.run(running.gateway.stop(0))
        path = write_log(tmp_path, f"{line_time(60)} INFO late")
        outcome = {}

        def ship():
            outcome["status"] = main(
                ["logs", "ship", str(path), "--service", "gateway-late"]
                + ["--gateway", running.address]
            )

        shipper = threading.Thread(target=ship)
        shipper.start()
        # Start the gateway only once the first attempt failed, however long
        # a loaded machine takes to get there.
        err = _wait_for_stderr(capsys, "retrying this batch", timeout=30.0)
        running.gateway = loop_thread.run(
            build_gateway(running.config, f"127.0.0.1:{port}", "127.0.0.1:0")
        )
        shipper.join(60)
        err += capsys.readouterr().err
        stored = list_all(running.stub, services=["gateway-late"])
    finally:
        running.close()

    assert not shipper.is_alive()
    assert outcome["status"] == 0, err
    notice = (
        f"splitlog logs ship: splitlog at {running.address} is not reachable; "
        "retrying this batch for up to 60 s"
    )
    assert notice in err
    # The advice for a gateway that never starts is for the final error.
    assert "cannot reach" not in err
    assert "make up" not in err
    assert [entry.message.endswith("INFO late") for entry in stored] == [True]


def test_ship_notice_when_first_connection_drops(
    loop_thread, base_config, tmp_path, capsys
):
    running = LogsGateway(base_config, tmp_path / "gateway", loop_thread, log_shards=1)
    # The proxy closes the first connection, as a port forwarder does while
    # the gateway behind it starts. The next connection reaches the gateway
    # before the command has printed why the first attempt failed.
    proxy = DroppingProxy(("127.0.0.1", running.gateway.grpc_port), drops=1)
    address = f"127.0.0.1:{proxy.port}"
    try:
        path = write_log(tmp_path, f"{line_time(60)} INFO dropped once")
        status, _, err = run(
            capsys, address, "logs", "ship", str(path), "--service", "dropped-once"
        )
        stored = list_all(running.stub, services=["dropped-once"])
    finally:
        proxy.close()
        running.close()

    assert status == 0, err
    notice = (
        f"splitlog logs ship: splitlog at {address} is not reachable; "
        "retrying this batch for up to 60 s"
    )
    assert notice in err
    # grpc's own text, which the gateway's log lines may also contain.
    assert "splitlog logs ship: failed to connect" not in err
    assert proxy.dropped == 1
    assert len(stored) == 1


def _wait_for_stderr(capsys, text: str, timeout: float) -> str:
    """Return the stderr captured until it contains `text`."""
    deadline = time.monotonic() + timeout
    err = ""
    while text not in err:
        assert time.monotonic() < deadline, f"{text!r} never printed: {err!r}"
        time.sleep(0.05)
        err += capsys.readouterr().err
    return err


def test_ship_gives_up_on_absent_gateway(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logs_commands, "SHIP_RETRY_SECONDS", 1.0)
    address = closed_address()
    path = write_log(tmp_path, f"{line_time(60)} INFO never")

    status = main(
        ["logs", "ship", str(path), "--service", "no-gateway", "--gateway", address]
    )
    err = capsys.readouterr().err

    assert status == 1
    assert f"splitlog at {address} is not reachable; retrying this batch" in err
    assert f"cannot reach splitlog at {address}; start it with `make up`" in err


def test_ship_rerun_stores_each_batch_once(live, tmp_path, capsys):
    path = write_log(tmp_path, *[f"{line_time(60)} INFO line {i}" for i in range(5)])
    command = ["logs", "ship", str(path), "--service", "ship-rerun"]
    command += ["--batch-size", "2"]

    first = run(capsys, live.address, *command)
    # Without the positions file, the request ids alone store each batch once.
    second = run(capsys, live.address, *command, "--no-positions")
    after_rerun = list_all(live.stub, services=["ship-rerun"])
    fresh = run(capsys, live.address, *command, "--fresh-ids")
    after_fresh = list_all(live.stub, services=["ship-rerun"])

    assert first[0] == 0, first[2]
    assert re.search(r"^stored: +5$", first[1], re.M), first[1]
    assert re.search(r"^already stored: +0$", first[1], re.M), first[1]
    assert second[0] == 0, second[2]
    assert re.search(r"^stored: +0$", second[1], re.M), second[1]
    assert re.search(r"^already stored: +5$", second[1], re.M), second[1]
    assert len(after_rerun) == 5
    assert fresh[0] == 0, fresh[2]
    assert re.search(r"^stored: +5$", fresh[1], re.M), fresh[1]
    assert re.search(r"^already stored: +0$", fresh[1], re.M), fresh[1]
    assert len(after_fresh) == 10


def test_ship_rerun_reports_duplicates(live, tmp_path, capsys):
    too_old = 30 * 24 * 3600
    lines = [f"{line_time(60)} INFO line {i}" for i in range(5)]
    lines[1] = f"{line_time(too_old)} INFO line 1 too old"
    path = write_log(tmp_path, *lines)
    command = ["logs", "ship", str(path), "--service", "ship-rerun-duplicates"]
    command += ["--batch-size", "2", "--format", "json"]

    first = run(capsys, live.address, *command)
    # With --no-positions, two more lines turn the last, partly filled batch
    # [5] into a new batch [5, 6], so line 5 is stored again: the request ids
    # alone cannot prevent it. The batches [1, 2] and [3, 4] are duplicates.
    write_log(tmp_path, *lines, *[f"{line_time(60)} INFO line {i}" for i in (5, 6)])
    second = run(capsys, live.address, *command, "--no-positions")
    first_summary = json.loads(first[1])
    second_summary = json.loads(second[1])
    stored = list_all(live.stub, services=["ship-rerun-duplicates"])

    # The exit status still reports the rejected entry.
    assert first[0] == 3, first[2]
    assert second[0] == 3, second[2]
    assert first_summary["acceptedCount"] == "4"
    assert first_summary["duplicateCount"] == "0"
    assert second_summary["acceptedCount"] == "6"
    assert second_summary["duplicateCount"] == "3"
    assert second_summary["rejectedCount"] == "1"
    assert second_summary["rejectedEntries"][0]["line"] == 2
    assert len(stored) == 7
    assert "rejected 1 of 7 entries" in second[2]


def test_ship_rerun_after_retention_raised(live, tmp_path, capsys):
    ten_days = 10 * 24 * 3600
    lines = [f"{line_time(ten_days - i)} INFO old {i}" for i in range(5)]
    lines += [f"{line_time(600 - i)} INFO new {i}" for i in range(5)]
    path = write_log(tmp_path, *lines)
    command = ["logs", "ship", str(path), "--service", "ship-raised"]

    first = run(capsys, live.address, *command)
    raised = run(
        capsys, live.address, "logs", "retention", "set",
        "--service", "ship-raised=30d",
    )  # fmt: skip
    # The positions file records the batch with rejected lines to be sent
    # again, so the rerun that the error advises sends it.
    second = run(capsys, live.address, *command)
    skipped = run(capsys, live.address, *command)
    again = run(capsys, live.address, *command, "--no-positions")
    stored = list_all(live.stub, services=["ship-raised"], order_by="timestamp")

    assert first[0] == 3, first[2]
    assert re.search(r"^stored: +5$", first[1], re.M), first[1]
    assert re.search(r"^rejected: +5$", first[1], re.M), first[1]
    assert "Then run the same command again" in first[2]
    assert raised[0] == 0, raised[2]
    # The rerun stores the old lines that the raised retention now lets in,
    # and reports only the others as already stored.
    assert second[0] == 0, second[2]
    assert "except the batches with lines that it rejected" in second[2]
    assert re.search(r"^stored: +5$", second[1], re.M), second[1]
    assert re.search(r"^already stored: +5$", second[1], re.M), second[1]
    assert re.search(r"^rejected: +0$", second[1], re.M), second[1]
    assert skipped[0] == 0, skipped[2]
    assert re.search(r"^batches: +0$", skipped[1], re.M), skipped[1]
    assert "skipping lines 1 to 10 of" in skipped[2]
    assert again[0] == 0, again[2]
    assert re.search(r"^stored: +0$", again[1], re.M), again[1]
    assert re.search(r"^already stored: +10$", again[1], re.M), again[1]
    assert [entry.message.split("INFO ")[1] for entry in stored] == [
        *[f"old {i}" for i in range(5)],
        *[f"new {i}" for i in range(5)],
    ]


def test_ship_rerun_after_retention_sends_rejected_lines(live, tmp_path, capsys):
    ten_days = 10 * 24 * 3600
    service = "ship-raised-batches"
    numbered = [(60, 1), (60, 2), (60, 3), (ten_days, 4), (ten_days, 5)]
    numbered += [(ten_days, 6), (60, 7), (60, 8), (60, 9)]
    path = tmp_path / "app.log"
    path.write_text("".join(f"{line_time(age)} INFO line {n}\n" for age, n in numbered))
    command = ["logs", "ship", str(path), "--service", service]
    command += ["--batch-size", "2"]

    # Batches [1, 2], [3, 4], [5, 6], [7, 8] and [9]: lines 4 to 6 are
    # rejected, so the record names them to be sent again.
    first = run(capsys, live.address, *command)
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"{line_time(60)} INFO line 10\n")
    raised = run(
        capsys, live.address, "logs", "retention", "set",
        "--service", f"{service}=30d",
    )  # fmt: skip
    # The rerun sends [3, 4], [5, 6] and [10], and not [7, 8] and [9].
    second = run(capsys, live.address, *command)
    third = run(capsys, live.address, *command)

    assert first[0] == 3, first[2]
    assert re.search(r"^stored: +6$", first[1], re.M), first[1]
    assert re.search(r"^rejected: +3$", first[1], re.M), first[1]
    assert raised[0] == 0, raised[2]
    assert second[0] == 0, second[2]
    assert "skipping lines 1 to 9 of" in second[2]
    assert re.search(r"^batches: +3$", second[1], re.M), second[1]
    assert re.search(r"^stored: +4$", second[1], re.M), second[1]
    assert re.search(r"^already stored: +1$", second[1], re.M), second[1]
    assert third[0] == 0, third[2]
    assert re.search(r"^batches: +0$", third[1], re.M), third[1]
    assert _stored_numbers(live, service) == list(range(1, 11))


def _ship_counts(output: str) -> dict[str, int]:
    """Return the counts of a `logs ship` summary table, such as `batches`."""
    names = ("batches", "stored", "already stored", "rejected")
    counts = {}
    for name in names:
        found = re.search(rf"^{name}: +(\d+)$", output, re.M)
        assert found, output
        counts[name] = int(found[1])
    return counts


def _write_numbered(path, numbered: list[tuple[int, int]], mode: str = "w") -> None:
    """Write or append lines `<time age seconds ago> INFO line <n>`."""
    with open(path, mode, encoding="utf-8") as file:
        file.writelines(f"{line_time(age)} INFO line {n}\n" for age, n in numbered)


def test_ship_rerun_skips_stored_batches(live, tmp_path, capsys):
    ten_days, sixty_days = 10 * 24 * 3600, 60 * 24 * 3600
    service = "ship-rerun-rejected"
    # Line 3 stays older than the raised retention, and lines 4 and 6 fit.
    numbered = [(60, 1), (60, 2), (sixty_days, 3), (ten_days, 4), (60, 5)]
    numbered += [(ten_days, 6), (60, 7), (60, 8), (60, 9)]
    path = tmp_path / "app.log"
    _write_numbered(path, numbered)
    command = ["logs", "ship", str(path), "--service", service, "--batch-size", "2"]
    positions = ship_positions.PositionsFile(
        Path(os.environ["XDG_CONFIG_HOME"]) / "splitlog" / "ship-positions.json"
    )

    # Batches [1, 2], [3, 4], [5, 6], [7, 8] and [9]: 3, 4 and 6 are rejected.
    first = run(capsys, live.address, *command)
    raised = run(
        capsys, live.address, "logs", "retention", "set",
        "--service", f"{service}=30d",
    )  # fmt: skip
    _write_numbered(path, [(60, 10)], "a")
    # [3, 4], [5, 6] and [10]: the batches that the server stored whole,
    # [1, 2], [7, 8] and [9], are not sent again.
    second = run(capsys, live.address, *command)
    _write_numbered(path, [(60, 11)], "a")
    # [3, 4], because line 3 stays too old, and [11].
    third = run(capsys, live.address, *command)
    fourth = run(capsys, live.address, *command)
    record = positions.load(service, os.path.realpath(path))

    assert first[0] == 3, first[2]
    assert _ship_counts(first[1]) == {
        "batches": 5, "stored": 6, "already stored": 0, "rejected": 3,
    }  # fmt: skip
    assert raised[0] == 0, raised[2]
    assert second[0] == 3, second[2]
    assert _ship_counts(second[1]) == {
        "batches": 3, "stored": 3, "already stored": 1, "rejected": 1,
    }  # fmt: skip
    assert "skipping lines 1 to 9 of" in second[2]
    assert third[0] == 3, third[2]
    assert _ship_counts(third[1]) == {
        "batches": 2, "stored": 1, "already stored": 1, "rejected": 1,
    }  # fmt: skip
    assert "skipping lines 1 to 10 of" in third[2]
    assert fourth[0] == 3, fourth[2]
    assert _ship_counts(fourth[1]) == {
        "batches": 1, "stored": 0, "already stored": 1, "rejected": 1,
    }  # fmt: skip
    assert record is not None
    assert (record.line, record.cuts, record.retry) == (11, [], [[3, 4]])
    assert _stored_numbers(live, service) == [1, 2, *range(4, 12)]


def test_ship_rerun_migrates_old_record(live, tmp_path, capsys):
    ten_days, sixty_days = 10 * 24 * 3600, 60 * 24 * 3600
    service = "ship-rerun-old-record"
    numbered = [(60, 1), (60, 2), (sixty_days, 3), (ten_days, 4), (60, 5)]
    numbered += [(60, 6), (60, 7)]
    path = tmp_path / "app.log"
    _write_numbered(path, numbered)
    real_path = os.path.realpath(path)
    command = ["logs", "ship", str(path), "--service", service, "--batch-size", "2"]
    positions_path = tmp_path / "positions.json"

    # Batches [1, 2], [3, 4], [5, 6] and [7]: 3 and 4 are rejected.
    first = run(capsys, live.address, *command, "--no-positions")
    command += ["--positions", str(positions_path)]
    # The record that the previous version wrote after that run: it stays
    # before batch [3, 4] and keeps the cut after line 7, the end of the file.
    info = os.stat(real_path)
    head, _ = ship_positions.read_head(real_path)
    old_record = {
        "device": info.st_dev, "inode": info.st_ino, "head": head, "line": 2,
        "line_digest": ship_positions.line_digest(path.read_text().split("\n")[1]),
        "pending_first": 0, "pending_last": 0, "head_bytes": 0, "line_bytes": 0,
        "cuts": [7],
    }  # fmt: skip
    files = {ship_positions.PositionsFile.key(service, real_path): old_record}
    positions_path.write_text(json.dumps({"version": 1, "files": files}))
    raised = run(
        capsys, live.address, "logs", "retention", "set",
        "--service", f"{service}=30d",
    )  # fmt: skip
    _write_numbered(path, [(60, 8)], "a")
    # The old record gives [3, 4], [5, 6], [7] and [8] once more, with the
    # request ids of the first run.
    second = run(capsys, live.address, *command)
    _write_numbered(path, [(60, 9)], "a")
    # [3, 4], because line 3 stays too old, and [9].
    third = run(capsys, live.address, *command)

    assert first[0] == 3, first[2]
    assert _ship_counts(first[1])["rejected"] == 2
    assert raised[0] == 0, raised[2]
    assert second[0] == 3, second[2]
    assert "skipping lines 1 to 2 of" in second[2]
    assert _ship_counts(second[1]) == {
        "batches": 4, "stored": 2, "already stored": 3, "rejected": 1,
    }  # fmt: skip
    assert third[0] == 3, third[2]
    assert _ship_counts(third[1]) == {
        "batches": 2, "stored": 1, "already stored": 1, "rejected": 1,
    }  # fmt: skip
    assert _stored_numbers(live, service) == [1, 2, *range(4, 10)]


def test_ship_retry_across_rewrite_and_rotation(live, tmp_path, capsys):
    sixty_days = 60 * 24 * 3600
    service = "ship-rerun-rotated"
    path = tmp_path / "app.log"
    # A first line without a time, the same in each version of the file.
    banner = "== app started ==\n"
    path.write_text(banner)
    _write_numbered(path, [(sixty_days, 2), (60, 3)], "a")
    command = ["logs", "ship", str(path), "--service", service, "--batch-size", "1"]

    # Line 2 is too old for any retention that a rerun may find.
    first = run(capsys, live.address, *command)
    second = run(capsys, live.address, *command)
    # Truncated and written again: line 3, the recorded line, has changed.
    path.write_text(banner)
    _write_numbered(path, [(60, 4), (60, 5), (60, 6)], "a")
    rewritten = run(capsys, live.address, *command)
    after_rewrite = run(capsys, live.address, *command)
    # Rotated by rename: the new file is shipped from line 1.
    path.rename(tmp_path / "app.log.1")
    path.write_text(banner)
    _write_numbered(path, [(sixty_days, 7), (60, 8)], "a")
    rotated = run(capsys, live.address, *command)
    after_rotation = run(capsys, live.address, *command)
    stored = list_all(live.stub, services=[service])

    assert first[0] == 3, first[2]
    assert _ship_counts(first[1]) == {
        "batches": 3, "stored": 2, "already stored": 0, "rejected": 1,
    }  # fmt: skip
    # Only batch [2] goes again, not [3].
    assert second[0] == 3, second[2]
    assert _ship_counts(second[1]) == {
        "batches": 1, "stored": 0, "already stored": 0, "rejected": 1,
    }  # fmt: skip
    assert rewritten[0] == 0, rewritten[2]
    assert "has changed before line 3" in rewritten[2]
    # The banner's batch has the request id of the first run's.
    assert _ship_counts(rewritten[1]) == {
        "batches": 4, "stored": 3, "already stored": 1, "rejected": 0,
    }  # fmt: skip
    assert after_rewrite[0] == 0, after_rewrite[2]
    assert _ship_counts(after_rewrite[1])["batches"] == 0
    assert rotated[0] == 3, rotated[2]
    assert "is not the file that an earlier run shipped" in rotated[2]
    assert _ship_counts(rotated[1]) == {
        "batches": 3, "stored": 1, "already stored": 1, "rejected": 1,
    }  # fmt: skip
    assert after_rotation[0] == 3, after_rotation[2]
    assert _ship_counts(after_rotation[1]) == {
        "batches": 1, "stored": 0, "already stored": 0, "rejected": 1,
    }  # fmt: skip
    assert sorted(entry.message.split("INFO ")[-1] for entry in stored) == [
        "== app started ==", *(f"line {n}" for n in (3, 4, 5, 6, 8)),
    ]  # fmt: skip


def test_ship_rerun_other_batch_size(live, tmp_path, capsys):
    sixty_days = 60 * 24 * 3600
    service = "ship-rerun-batch-size"
    path = tmp_path / "app.log"
    _write_numbered(path, [(60, 1), (sixty_days, 2), (60, 3), (sixty_days, 4)])
    _write_numbered(path, [(60, 5), (60, 6)], "a")
    command = ["logs", "ship", str(path), "--service", service]

    # Batches [1, 2, 3, 4] and [5, 6]: lines 2 and 4 are rejected.
    first = run(capsys, live.address, *command, "--batch-size", "4")
    # Batch [1, 2, 3, 4] goes again whole, so it keeps its request id.
    second = run(capsys, live.address, *command, "--batch-size", "2")
    _write_numbered(path, [(60, 7), (60, 8), (60, 9)], "a")
    third = run(capsys, live.address, *command, "--batch-size", "2")

    assert first[0] == 3, first[2]
    assert _ship_counts(first[1]) == {
        "batches": 2, "stored": 4, "already stored": 0, "rejected": 2,
    }  # fmt: skip
    assert second[0] == 3, second[2]
    assert _ship_counts(second[1]) == {
        "batches": 1, "stored": 0, "already stored": 2, "rejected": 2,
    }  # fmt: skip
    assert third[0] == 3, third[2]
    assert _ship_counts(third[1]) == {
        "batches": 3, "stored": 3, "already stored": 2, "rejected": 2,
    }  # fmt: skip
    assert _stored_numbers(live, service) == [1, 3, 5, 6, 7, 8, 9]


def test_ship_rerun_table_counts_duplicates(live, tmp_path, capsys):
    lines = [f"{line_time(60)} INFO line {i}" for i in range(4)]
    path = write_log(tmp_path, *lines)
    command = ["logs", "ship", str(path), "--service", "ship-rerun-table"]
    command += ["--batch-size", "3"]

    first = run(capsys, live.address, *command)
    again = run(capsys, live.address, *command, "--no-positions")

    assert first[0] == 0, first[2]
    assert again[0] == 0, again[2]
    assert re.search(r"^stored: +0$", again[1], re.M), again[1]
    assert re.search(r"^already stored: +4$", again[1], re.M), again[1]
    assert len(list_all(live.stub, services=["ship-rerun-table"])) == 4


def test_ship_through_symlink_stores_nothing_twice(live, tmp_path, capsys):
    path = write_log(tmp_path, *[f"{line_time(60)} INFO line {i}" for i in range(5)])
    link = tmp_path / "link.log"
    link.symlink_to(path)
    command = ["--service", "ship-link", "--batch-size", "2"]

    first = run(capsys, live.address, "logs", "ship", str(path), *command)
    linked = run(capsys, live.address, "logs", "ship", str(link), *command)

    assert first[0] == 0, first[2]
    assert linked[0] == 0, linked[2]
    assert len(list_all(live.stub, services=["ship-link"])) == 5


def _append_lines(path, first: int, count: int) -> None:
    """Append the lines `INFO line N` for N from `first`, each ended by LF."""
    with open(path, "a", encoding="utf-8") as file:
        for number in range(first, first + count):
            file.write(f"{line_time(60)} INFO line {number}\n")


def _stored_numbers(live, service: str) -> list[int]:
    entries = list_all(live.stub, services=[service])
    return sorted(int(re.search(r"line (\d+)", e.message)[1]) for e in entries)


@pytest.mark.parametrize(
    ("batch_size", "growths"),
    [(1, (1, 2)), (3, (4, 1, 2, 3)), (4, (3, 1, 4, 9)), (500, (7, 1, 600, 3))],
)
def test_ship_growing_file_stores_each_line_once(
    live, tmp_path, capsys, batch_size, growths
):
    service = f"ship-grow-{batch_size}"
    path = tmp_path / "grow.log"
    command = ["logs", "ship", str(path), "--service", service]
    command += ["--batch-size", str(batch_size)]
    total = 0
    for growth in growths:
        _append_lines(path, total, growth)
        total += growth
        status, out, err = run(capsys, live.address, *command)

        assert status == 0, err
        assert re.search(rf"^stored: +{growth}$", out, re.M), out
        assert re.search(r"^already stored: +0$", out, re.M), out
        assert _stored_numbers(live, service) == list(range(total))


def test_ship_positions_default_under_config_home(live, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "grow.log"
    command = ["logs", "ship", str(path), "--service", "ship-grow-default"]
    command += ["--batch-size", "3"]

    _append_lines(path, 0, 4)
    first = run(capsys, live.address, *command)
    _append_lines(path, 4, 1)
    second = run(capsys, live.address, *command)

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert (tmp_path / "config" / "splitlog" / "ship-positions.json").is_file()
    assert "skipping lines 1 to 4 of" in second[2]
    assert _stored_numbers(live, "ship-grow-default") == [0, 1, 2, 3, 4]


def test_ship_no_positions_sends_every_line(live, tmp_path, capsys):
    path = tmp_path / "grow.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", "ship-no-positions"]

    _append_lines(path, 0, 2)
    first = run(capsys, live.address, *command, "--no-positions")
    conflict = run(
        capsys, live.address, *command, "--no-positions", "--positions",
        str(positions),
    )  # fmt: skip

    assert first[0] == 0, first[2]
    assert not (tmp_path / "config").exists()
    assert conflict[0] == 2
    assert "--no-positions turns the positions file off" in conflict[2]


def test_ship_rotated_file_starts_over(live, tmp_path, capsys):
    path = tmp_path / "rotate.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", "ship-rotate"]
    command += ["--batch-size", "3", "--positions", str(positions)]

    _append_lines(path, 0, 5)
    first = run(capsys, live.address, *command)
    # Rotation by rename: a new file with other lines takes the path.
    path.rename(tmp_path / "rotate.log.1")
    _append_lines(path, 100, 2)
    renamed = run(capsys, live.address, *command)
    # Rotation by copy and truncate: the same inode gets other lines.
    with open(path, "w", encoding="utf-8"):
        pass
    _append_lines(path, 200, 6)
    truncated = run(capsys, live.address, *command)
    # A file written again with the same first line but fewer lines.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + f"{line_time(60)} INFO line 300\n")
    rewritten = run(capsys, live.address, *command)

    assert first[0] == 0, first[2]
    assert renamed[0] == 0, renamed[2]
    assert "it was rotated or replaced" in renamed[2]
    assert truncated[0] == 0, truncated[2]
    assert "it was rotated or replaced" in truncated[2]
    assert rewritten[0] == 0, rewritten[2]
    assert "shipped from line 1" in rewritten[2]
    # Line 200 is stored twice: by the run after the truncation and by the
    # run after the file was written again.
    assert _stored_numbers(live, "ship-rotate") == sorted(
        [*range(5), 100, 101, *range(200, 206), 200, 300]
    )


def test_ship_lost_response_of_last_batch(live, tmp_path, capsys):
    path = tmp_path / "lost.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", "ship-lost"]
    command += ["--batch-size", "4", "--positions", str(positions)]

    _append_lines(path, 0, 6)
    first = run(capsys, live.address, *command)
    # Make the record what a run leaves when the response of its last,
    # partly filled batch [5, 6] is lost: line 4 stored, [5, 6] pending.
    saved = json.loads(positions.read_text())
    (record,) = saved["files"].values()
    lines = path.read_text().splitlines()
    first_four = "".join(f"{line}\n" for line in lines[:4]).encode()
    record.update(
        line=4,
        line_digest=ship_positions.line_digest(lines[3]),
        pending_first=5,
        pending_last=6,
        offset=len(first_four),
        prefix=ship_positions.bytes_digest(first_four),
    )
    positions.write_text(json.dumps(saved))
    _append_lines(path, 6, 3)
    second = run(capsys, live.address, *command)

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    # The batch [5, 6] is sent again under its request id, then [7, 8, 9].
    assert re.search(r"^batches: +2$", second[1], re.M), second[1]
    assert re.search(r"^already stored: +2$", second[1], re.M), second[1]
    assert _stored_numbers(live, "ship-lost") == list(range(9))


def test_ship_unterminated_last_line_rerun(live, tmp_path, capsys):
    path = tmp_path / "partial.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", "ship-partial-last"]
    command += ["--batch-size", "2", "--positions", str(positions)]

    _append_lines(path, 0, 3)
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"{line_time(60)} INFO line 3")
    first = run(capsys, live.address, *command)
    # The writer finishes line 4, then writes line 5.
    with open(path, "a", encoding="utf-8") as file:
        file.write(" finished\n")
    _append_lines(path, 4, 1)
    second = run(capsys, live.address, *command)

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert "shipped from line 1" not in second[2]
    assert "skipping lines 1 to 4 of" in second[2]
    assert re.search(r"^stored: +1$", second[1], re.M), second[1]
    # Line 4 is stored as the first run read it, without " finished".
    assert _stored_numbers(live, "ship-partial-last") == [0, 1, 2, 3, 4]


def test_ship_unterminated_first_line_rerun(live, tmp_path, capsys):
    path = tmp_path / "partial-first.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", "ship-partial-first"]
    command += ["--positions", str(positions)]

    path.write_text(f"{line_time(60)} INFO line 0")
    first = run(capsys, live.address, *command)
    with open(path, "a", encoding="utf-8") as file:
        file.write(" finished\n")
    _append_lines(path, 1, 2)
    second = run(capsys, live.address, *command)

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert "it was rotated or replaced" not in second[2]
    assert "shipped from line 1" not in second[2]
    assert re.search(r"^stored: +2$", second[1], re.M), second[1]
    assert _stored_numbers(live, "ship-partial-first") == [0, 1, 2]


def test_ship_unterminated_line_rewritten(live, tmp_path, capsys):
    path = tmp_path / "partial-other.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", "ship-partial-other"]
    command += ["--batch-size", "2", "--positions", str(positions)]

    _append_lines(path, 0, 1)
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"{line_time(60)} INFO line 1")
    first = run(capsys, live.address, *command)
    # Line 2 no longer starts with the bytes that the first run read.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + f"{line_time(60)} INFO line 20\n")
    second = run(capsys, live.address, *command)

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert "has changed before line 2" in second[2]
    assert _stored_numbers(live, "ship-partial-other") == [0, 0, 1, 20]


def test_ship_recorded_line_now_empty(live, tmp_path, capsys):
    path = tmp_path / "emptied.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", "ship-emptied"]
    command += ["--batch-size", "2", "--positions", str(positions)]

    _append_lines(path, 0, 4)
    first = run(capsys, live.address, *command)
    # The file is written again with the same first lines, but the
    # recorded line 4 is now empty and other lines follow it.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + "\n")
    _append_lines(path, 10, 2)
    second = run(capsys, live.address, *command)

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert "has changed before line 4" in second[2]
    # Only the run from line 1 sends lines: batches [1, 2] (stored before),
    # [3, 5] and [6]. Lines 5 and 6 are not sent before it as well.
    assert re.search(r"^batches: +3$", second[1], re.M), second[1]
    assert _stored_numbers(live, "ship-emptied") == [0, 1, 2, 2, 3, 10, 11]


def test_ship_rewritten_file_record_moves_back(live, tmp_path, capsys):
    path = tmp_path / "shorter.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", "ship-shorter"]
    command += ["--batch-size", "2", "--positions", str(positions)]

    _append_lines(path, 0, 6)
    first = run(capsys, live.address, *command)
    # The file is written again with the same first line and 2 lines.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + f"{line_time(60)} INFO line 10\n")
    second = run(capsys, live.address, *command)
    third = run(capsys, live.address, *command)

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert "shipped from line 1" in second[2]
    assert third[0] == 0, third[2]
    # The record moved back to line 2, so the third run skips both lines.
    assert "shipped from line 1" not in third[2]
    assert "skipping lines 1 to 2 of" in third[2]
    # Line 1 is in a batch with other lines, so the second run stores it again.
    assert _stored_numbers(live, "ship-shorter") == [0, *range(6), 10]


def test_ship_server_gone_midway(
    loop_thread, base_config, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(logs_commands, "SHIP_RETRY_SECONDS", 1.0)
    running = LogsGateway(base_config, tmp_path / "gateway", loop_thread, log_shards=1)
    path = tmp_path / "gone.log"
    _append_lines(path, 0, 5000)
    command = ["logs", "ship", str(path), "--service", "ship-gone"]
    command += ["--batch-size", "5", "--gateway", running.address]
    outcome = {}
    gateway_stopped = False
    try:

        def ship():
            outcome["status"] = main(command)

        shipper = threading.Thread(target=ship)
        shipper.start()
        request = logs_pb2.ListLogEntriesRequest(services=["ship-gone"])
        while not running.stub.ListLogEntries(request).entries:
            time.sleep(0.01)
        loop_thread.run(running.gateway.stop(0))
        gateway_stopped = True
        shipper.join(60)
        err = capsys.readouterr().err
    finally:
        if not gateway_stopped:
            loop_thread.run(running.gateway.stop(0))
        running.cluster.close()

    assert not shipper.is_alive()
    assert outcome["status"] == 1
    assert f"the server at {running.address} went away" in err, err
    assert "make up" not in err
    assert re.search(r"stopped at line \d+ of ", err), err
    assert "Run the same command again to ship the rest. That is safe" in err


def _pipe_stdin(monkeypatch, *lines: str, data: bytes | None = None) -> None:
    """Make standard input a closed pipe of the given lines, ended by LF."""
    if data is None:
        data = "".join(f"{line}\n" for line in lines).encode()
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as writer:
        writer.write(data)
    monkeypatch.setattr(sys, "stdin", open(read_end, encoding="utf-8"))  # noqa: SIM115


def test_ship_stdin_batches_and_random_ids(live, capsys, monkeypatch):
    lines = [f"{line_time(60)} INFO line {i}" for i in range(5)]
    command = ["logs", "ship", "-", "--service", "ship-stdin", "--batch-size", "2"]

    _pipe_stdin(monkeypatch, *lines)
    first = run(capsys, live.address, *command, "--format", "json")
    _pipe_stdin(monkeypatch, *lines)
    second = run(capsys, live.address, *command)
    stored = list_all(live.stub, services=["ship-stdin"], order_by="timestamp")

    assert first[0] == 0, first[2]
    assert json.loads(first[1])["batchCount"] == "3"
    assert second[0] == 0, second[2]
    # Without --source-name every batch gets a random id, so the second run
    # stores the lines again.
    assert len(stored) == 10
    assert {entry.message.rsplit(" ", 1)[1] for entry in stored} == {
        "0",
        "1",
        "2",
        "3",
        "4",
    }
    assert all("log.file.name" not in entry.attributes for entry in stored)


def test_ship_stdin_source_name_ids(live, capsys, monkeypatch):
    lines = [f"{line_time(60)} INFO line {i}" for i in range(5)]
    command = ["logs", "ship", "-", "--service", "ship-stdin-named"]
    command += ["--batch-size", "2", "--source-name", "web.log"]

    _pipe_stdin(monkeypatch, *lines)
    first = run(capsys, live.address, *command)
    _pipe_stdin(monkeypatch, *lines)
    second = run(capsys, live.address, *command)
    _pipe_stdin(monkeypatch, *lines)
    fresh = run(capsys, live.address, *command, "--fresh-ids")
    stored = list_all(live.stub, services=["ship-stdin-named"])

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert fresh[0] == 0, fresh[2]
    assert len(stored) == 10
    assert {entry.attributes["log.file.name"] for entry in stored} == {"web.log"}


def test_ship_stdin_untimed_rerun_stores_once(live, capsys, monkeypatch):
    # Lines without a time take the time they are read, which differs in
    # every run; the request ids and digests must not.
    command = ["logs", "ship", "-", "--service", "ship-stdin-untimed"]
    command += ["--source-name", "app.log", "--batch-size", "2"]
    statuses = []
    for _ in range(3):
        _pipe_stdin(monkeypatch, "alpha", "beta", "gamma")
        statuses.append(run(capsys, live.address, *command))
        time.sleep(0.01)
    stored = list_all(live.stub, services=["ship-stdin-untimed"])

    assert [status for status, _, _ in statuses] == [0, 0, 0], statuses
    assert sorted(entry.message for entry in stored) == ["alpha", "beta", "gamma"]
    assert all(entry.attributes["time_inferred"] == "true" for entry in stored)


def test_ship_file_untimed_rerun_stores_once(live, tmp_path, capsys):
    # Leading lines without a time take the file's modification time, which
    # changes when the file is touched or appended to.
    lines = ["starting", "no time yet", f"{line_time(60)} INFO a"]
    path = write_log(tmp_path, *lines)
    command = ["logs", "ship", str(path), "--service", "ship-file-untimed"]
    command += ["--batch-size", "2"]

    first = run(capsys, live.address, *command)
    touched = time.time_ns() - 30 * SECOND
    os.utime(path, ns=(touched, touched))
    second = run(capsys, live.address, *command)
    stored = list_all(live.stub, services=["ship-file-untimed"])

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert sorted(entry.message for entry in stored) == sorted(lines)


def test_ship_stdin_and_file_together(live, tmp_path, capsys, monkeypatch):
    path = write_log(tmp_path, f"{line_time(60)} INFO from file")
    _pipe_stdin(monkeypatch, f"{line_time(60)} INFO from stdin")

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "-",
        "--service", "ship-stdin-mixed", "--format", "json",
    )  # fmt: skip
    stored = list_all(live.stub, services=["ship-stdin-mixed"], order_by="timestamp")

    assert status == 0, err
    assert json.loads(out)["acceptedCount"] == "2"
    assert sorted(entry.message.split(" INFO ")[1] for entry in stored) == [
        "from file",
        "from stdin",
    ]


def test_ship_stdin_sends_batch_after_pause(live):
    command = [str(SPLITLOG), "logs", "ship", "-", "--service", "ship-stdin-pause"]
    command += ["--flush-seconds", "0.2", "--gateway", live.address]
    shipper = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("SPLITLOG_")},
    )
    try:
        # One line, far below --batch-size, while the pipe stays open, as
        # `tail -F` keeps it.
        shipper.stdin.write(f"{line_time(60)} INFO first\n".encode())
        shipper.stdin.flush()
        deadline = time.monotonic() + 30
        while not list_all(live.stub, services=["ship-stdin-pause"]):
            assert time.monotonic() < deadline, "the paused batch was not sent"
            time.sleep(0.05)
        running_after_flush = shipper.poll() is None
        # communicate() writes the last line and closes the pipe.
        last = f"{line_time(60)} INFO second\n".encode()
        out, err = shipper.communicate(last, timeout=60)
    finally:
        if shipper.poll() is None:
            shipper.kill()
            shipper.wait()
    stored = list_all(live.stub, services=["ship-stdin-pause"], order_by="timestamp")

    assert running_after_flush
    assert shipper.returncode == 0, err
    assert re.search(rb"^stored: +2$", out, re.M), out
    assert [entry.message.rsplit(" ", 1)[1] for entry in stored] == [
        "first",
        "second",
    ]


def _shipper_process(address: str, *args: str) -> subprocess.Popen:
    """Start `splitlog logs ship ARGS` with a pipe as its standard input."""
    command = [str(SPLITLOG), "logs", "ship", *args, "--gateway", address]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("SPLITLOG_")},
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _wait_until_stored(live, service: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(list_all(live.stub, services=[service])) < count:
        assert time.monotonic() < deadline, f"{count} entries were not stored"
        time.sleep(0.01)


def _interrupt(shipper: subprocess.Popen) -> tuple[bytes, str]:
    """Send SIGINT, as Ctrl-C does; return stdout and stderr, spaces joined."""
    shipper.send_signal(signal.SIGINT)
    out, err = shipper.communicate(timeout=60)
    return out, " ".join(err.decode().split())


def test_ship_stdin_flushes_steady_slow_writer(live):
    # A line every 0.5 s never leaves a second of silence, so a batch must
    # be sent because its first line is old, not because the input paused.
    service = "ship-stdin-slow"
    shipper = _shipper_process(live.address, "-", "--service", service)
    written = 9
    try:
        # Line 0, alone in the pipe, is sent once the command runs, so the
        # later lines are read as they are written, not at its start.
        shipper.stdin.write(b"slow line 0\n")
        shipper.stdin.flush()
        _wait_until_stored(live, service, 1)
        for i in range(1, written):
            shipper.stdin.write(f"slow line {i}\n".encode())
            shipper.stdin.flush()
            time.sleep(0.5)
        stored_while_open = len(list_all(live.stub, services=[service]))
        out, err = shipper.communicate(timeout=60)
    finally:
        _stop(shipper)
    stored = list_all(live.stub, services=[service], order_by="timestamp")
    times = [entry.timestamp.ToNanoseconds() for entry in stored[1:]]

    assert stored_while_open > 1, "no line after the first was sent in time"
    assert shipper.returncode == 0, err
    assert [entry.message for entry in stored] == [
        f"slow line {i}" for i in range(written)
    ]
    # Each line without a time gets the time it was read, 0.5 s apart.
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= SECOND // 4 for gap in gaps), gaps


def test_ship_stdin_ctrl_c_sends_read_lines(live):
    service = "ship-stdin-sigint"
    shipper = _shipper_process(
        live.address, "-", "--service", service, "--batch-size", "2",
        "--flush-seconds", "600",
    )  # fmt: skip
    try:
        for i in range(3):
            shipper.stdin.write(f"{line_time(60)} INFO line {i}\n".encode())
        shipper.stdin.flush()
        # Lines 1 and 2 fill a batch, which shows that the command runs and
        # has read line 3 with them. Line 3 waits for a flush far off.
        _wait_until_stored(live, service, 2)
        time.sleep(0.2)
        out, text = _interrupt(shipper)
    finally:
        _stop(shipper)
    stored = list_all(live.stub, services=[service])

    assert shipper.returncode == 130, text
    assert "Traceback" not in text
    assert "Fatal Python error" not in text
    assert re.search(rb"^stored: +3$", out, re.M), out
    assert "stopped by Ctrl-C (SIGINT) at line 3 of standard input" in text
    assert "It read 3 lines and stored 3 entries (0 rejected)" in text
    assert "sent every line it read" in text
    assert len(stored) == 3


def test_ship_file_ctrl_c_then_rerun(live, tmp_path):
    service = "ship-file-sigint"
    # 1,000 batches of 5: enough to stop in the middle, and few enough that
    # the rerun ends within the command limit on a loaded machine.
    count = 5_000
    path = write_log(
        tmp_path, *[f"{line_time(60)} INFO line {i}" for i in range(count)]
    )
    args = [str(path), "--service", service, "--batch-size", "5"]
    shipper = _shipper_process(live.address, *args)
    try:
        _wait_until_stored(live, service, 1)
        out, text = _interrupt(shipper)
    finally:
        _stop(shipper)
    stored_after_interrupt = len(list_all(live.stub, services=[service]))
    rerun = run_splitlog("logs", "ship", *args, gateway=live.address)
    stored = list_all(live.stub, services=[service])

    assert shipper.returncode == 130, text
    assert "Traceback" not in text
    assert "stopped by Ctrl-C (SIGINT) at line" in text
    assert f"of {path}" in text
    assert "Run the same command again to ship the rest" in text
    accepted = int(re.search(rb"^stored: +(\d+)$", out, re.M)[1])
    assert 0 < accepted < count
    assert stored_after_interrupt == accepted
    assert rerun.status == 0, rerun.stderr
    assert len(stored) == count
    assert len({entry.message for entry in stored}) == count


def test_ship_sigterm_before_connecting(tmp_path):
    path = write_log(tmp_path, f"{line_time(60)} INFO line 0")
    # Reading a FIFO as the CA file blocks the command after argument parsing
    # and before its channel opens, until the test closes the writing end.
    ca_file = tmp_path / "ca.pem"
    os.mkfifo(ca_file)
    args = [str(path), "--service", "ship-early-sigterm", "--no-positions"]
    shipper = _shipper_process(closed_address(), *args, "--ca-file", str(ca_file))
    writer = None
    try:
        deadline = time.monotonic() + 60
        while writer is None and time.monotonic() < deadline:
            try:
                writer = os.open(ca_file, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                # ENXIO: the command has not opened the FIFO for reading yet.
                time.sleep(0.02)
        assert writer is not None, "splitlog never opened the CA file"
        shipper.send_signal(signal.SIGTERM)
        # A grpc thread may take the signal, so the read in the main thread
        # goes on until the FIFO ends, and only then does the handler run.
        time.sleep(0.2)
        os.close(writer)
        writer = None
        out, err = shipper.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        _stop(shipper)
    text = err.decode()

    assert shipper.returncode == 143, text
    assert "Traceback" not in text
    assert "stopped by SIGTERM before shipping started" in text
    assert "nothing was sent" in text
    assert out == b""


def test_ship_file_sigterm_then_rerun(live, tmp_path):
    service = "ship-file-sigterm"
    count = 5_000
    path = write_log(
        tmp_path, *[f"{line_time(60)} INFO line {i}" for i in range(count)]
    )
    positions = tmp_path / "positions.json"
    args = [str(path), "--service", service, "--batch-size", "5"]
    args += ["--positions", str(positions)]
    shipper = _shipper_process(live.address, *args)
    try:
        _wait_until_stored(live, service, 1)
        # timeout(1), kill and service managers stop a command with SIGTERM.
        shipper.send_signal(signal.SIGTERM)
        out, err = shipper.communicate(timeout=60)
    finally:
        _stop(shipper)
    text = " ".join(err.decode().split())
    stored_after_signal = len(list_all(live.stub, services=[service]))
    rerun = run_splitlog("logs", "ship", *args, gateway=live.address)
    stored = list_all(live.stub, services=[service])

    assert shipper.returncode == 143, text
    assert "Traceback" not in text
    assert "stopped by SIGTERM at line" in text
    assert "Ctrl-C" not in text
    assert f"of {path}" in text
    assert "Run the same command again to ship the rest" in text
    accepted = int(re.search(rb"^stored: +(\d+)$", out, re.M)[1])
    assert 0 < accepted < count
    assert stored_after_signal == accepted
    assert positions.exists()
    assert rerun.status == 0, rerun.stderr
    assert "skipping lines 1 to" in " ".join(rerun.stderr.split())
    assert len(stored) == count
    assert len({entry.message for entry in stored}) == count


@pytest.mark.parametrize(
    "stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"]
)
def test_ship_stop_records_last_stored_line(live, tmp_path, stop):
    # Each stop lands at a random point of the read, send and record cycle,
    # such as while the positions file is written, so several runs each
    # check that the record ends at the last line stored.
    count = 300_000
    path = write_log(
        tmp_path, *[f"{line_time(60)} INFO line {i}" for i in range(count)]
    )
    positions = tmp_path / "positions.json"
    for attempt in range(4):
        service = f"ship-stop-record-{stop.name.lower()}-{attempt}"
        args = [str(path), "--service", service, "--positions", str(positions)]
        shipper = _shipper_process(live.address, *args)
        try:
            _wait_until_stored(live, service, 1)
            time.sleep(0.5 + attempt * 0.37)
            shipper.send_signal(stop)
            out, err = shipper.communicate(timeout=60)
        finally:
            _stop(shipper)
        text = " ".join(err.decode().split())
        stored = int(re.search(rb"^stored: +(\d+)$", out, re.M)[1])
        record = ship_positions.PositionsFile(positions).load(
            service, os.path.realpath(path)
        )

        assert shipper.returncode == 128 + stop, text
        assert 0 < stored < count, text
        assert f"stored {stored} entries" in text
        assert record is not None, text
        # Every line gives an entry and batches are stored in file order.
        assert record.line == stored, text
        assert len(list_all(live.stub, services=[service])) == stored


@pytest.mark.parametrize(
    ("source", "advice"),
    [
        ([], "Standard input cannot be read again, and its batches had random"),
        (["--source-name", "web.log"], "send the same input again with the same"),
    ],
)
def test_ship_stdin_failure_summary(capsys, monkeypatch, source, advice):
    monkeypatch.setattr(logs_commands, "SHIP_RETRY_SECONDS", 0.5)
    _pipe_stdin(monkeypatch, *[f"{line_time(60)} INFO line {i}" for i in range(3)])

    status, _, err = run(
        capsys, closed_address(), "logs", "ship", "-", "--service", "web", *source
    )
    text = " ".join(err.split())

    assert status == 1
    assert "stopped at line 1 of standard input, the first line not stored" in text
    assert "It read 3 lines and stored 0 entries (0 rejected)." in text
    assert advice in text
    assert "Run the same command again" not in text


@pytest.mark.parametrize(
    ("args", "option", "problem"),
    [
        (["-", "-"], "FILE", "given 2 times"),
        (["-", "--flush-seconds", "0"], "'0' for --flush-seconds", "above 0"),
        (["-", "--flush-seconds", "-1"], "'-1' for --flush-seconds", "above 0"),
        (["-", "--flush-seconds", "inf"], "'inf' for --flush-seconds", "finite"),
        (["-", "--flush-seconds", "nan"], "'nan' for --flush-seconds", "finite"),
        (["-", "--flush-seconds", "1s"], "'1s' for --flush-seconds", "such as 0.5"),
        (["-", "--flush-seconds", "1e10"], "'1e10' for --flush-seconds", "86,400"),
        (["app.log", "--year", "0"], "'0' for --year", "from 1678 to 2261"),
        (["app.log", "--year", "2262"], "'2262' for --year", "from 1678 to 2261"),
        (["app.log", "--year", "99999"], "'99999' for --year", "from 1678 to 2261"),
        (["app.log", "--source-name", "web"], "--source-name", "give - as a FILE"),
        (["-", "--source-name", " "], "--source-name", "the name is empty"),
    ],
)
def test_ship_stdin_invalid_options(capsys, args, option, problem):
    status = main(
        ["logs", "ship", *args, "--service", "web", "--gateway", "127.0.0.1:9"]
    )
    err = capsys.readouterr().err

    assert status == 2, err
    assert option in err
    assert problem in err


INVALID_SERVICES = ["a\nb", "a\tb", "a\x7fb", "x" * 257, "\u00e9" * 129]


@pytest.mark.parametrize("service", INVALID_SERVICES)
def test_ship_invalid_service_sends_nothing(live, tmp_path, capsys, service):
    path = write_log(tmp_path, f"{line_time(60)} INFO one")

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", service
    )

    assert status == 2, err
    assert f"invalid value {service!r} for --service" in err
    assert "1 to 256 bytes in UTF-8 without control characters" in err
    assert out == ""
    # The router rejects a filter on such a name, so every entry is listed.
    assert service not in {entry.service for entry in list_all(live.stub)}


def test_ship_closed_stdin_is_usage_error(capsys, monkeypatch):
    # Python sets sys.stdin to None when file descriptor 0 is closed (`<&-`).
    monkeypatch.setattr(sys, "stdin", None)

    status = main(["logs", "ship", "-", "--service", "web", "--gateway", "127.0.0.1:9"])
    err = capsys.readouterr().err

    assert status == 2, err
    assert "cannot read standard input: it is closed" in err
    assert "Traceback" not in err


_STOPPED = re.compile(
    r"stopped at line (\d+) of (\S+), the first line not stored\. It read "
    r"(\d+) lines and stored (\d+) entries \(0 rejected\)\. Run the same "
    r"command again"
)


def test_ship_failure_summary_then_rerun(
    loop_thread, base_config, tmp_path, capsys, monkeypatch
):
    retry_seconds = logs_commands.SHIP_RETRY_SECONDS
    monkeypatch.setattr(logs_commands, "SHIP_RETRY_SECONDS", 1.0)
    running = LogsGateway(base_config, tmp_path / "gateway", loop_thread, log_shards=1)
    count = 5000
    lines = [f"{line_time(60)} INFO line {i:04}" for i in range(count)]
    path = write_log(tmp_path, *lines)
    command = ["logs", "ship", str(path), "--service", "ship-stopped"]
    command += ["--batch-size", "5", "--gateway", running.address]
    outcome = {}
    try:

        def ship():
            outcome["status"] = main(command)

        shipper = threading.Thread(target=ship)
        shipper.start()
        # Stop the router once the first batches are stored, so that the
        # command fails partway through the file.
        request = logs_pb2.ListLogEntriesRequest(services=["ship-stopped"])
        while not running.stub.ListLogEntries(request).entries:
            time.sleep(0.01)
        port = running.cluster.router.port
        running.cluster.router.stop(0)
        shipper.join(60)
        err = capsys.readouterr().err
        running.cluster.router, running.cluster.coordinator = build_router(
            running.cluster.router_config, f"127.0.0.1:{port}"
        )
        stored_before = len(list_all(running.stub, services=["ship-stopped"]))
        # The rerun waits for the new router's shard leader as a user's would.
        monkeypatch.setattr(logs_commands, "SHIP_RETRY_SECONDS", retry_seconds)
        rerun = main(command)
        rerun_err = capsys.readouterr().err
        stored = stored_line_numbers(running.stub, "ship-stopped")
    finally:
        running.close()
    stopped = _STOPPED.search(err)

    assert not shipper.is_alive()
    assert outcome["status"] == 1
    # The server's error comes first; its code depends on the moment the
    # router stopped (UNAVAILABLE or CANCELLED), so only the error is checked.
    assert "error: " in err, err
    assert stopped, err
    first_not_stored, lines_read, reported = map(int, stopped.group(1, 3, 4))
    assert stopped[2] == str(path)
    assert 0 < reported < count
    assert first_not_stored == reported + 1
    assert lines_read >= reported
    # The batch in flight when the router stopped may have been stored
    # without its response reaching the command.
    assert reported <= stored_before <= reported + 5
    assert rerun == 0, rerun_err
    assert stored == list(range(count))


@contextlib.contextmanager
def limited_gateway(
    loop: LoopThread, tmp_path_factory, name: str, **settings
) -> Iterator[LogsGateway]:
    """Run a log service and gateway without auth, with `settings` changed."""
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp(f"logs-{name}"),
        },
    )
    running = LogsGateway(
        base, tmp_path_factory.mktemp(f"gateway-{name}"), loop, **settings
    )
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def small_limit(loop_thread, tmp_path_factory):
    """A log service and gateway with a max_message_bytes of 64 KiB."""
    with limited_gateway(
        loop_thread, tmp_path_factory, "small", max_message_bytes=SMALL_LIMIT
    ) as running:
        yield running


SMALL_LIMIT = 64 * 1024


def long_lines(count: int, length: int) -> list[str]:
    return [f"{line_time(60)} INFO line {i:03} " + "x" * length for i in range(count)]


def stored_line_numbers(stub, service: str) -> list[int]:
    # Pages of 5 entries of 5 KB stay within the limit.
    entries = list_all(stub, services=[service], page_size=5)
    return sorted(int(re.search(r"line (\d+)", e.message)[1]) for e in entries)


def test_ship_bounds_batches_by_bytes(small_limit, tmp_path, capsys):
    # 40 lines of 5 KB are 200 KB, over the limit in one batch of 500.
    path = write_log(tmp_path, *long_lines(40, 5000))

    status, out, err = run(
        capsys, small_limit.address, "logs", "ship", str(path),
        "--service", "ship-bytes", "--batch-bytes", "32768", "--format", "json",
    )  # fmt: skip
    summary = json.loads(out)

    assert status == 0, err
    assert "halves" not in err
    assert summary["acceptedCount"] == "40"
    assert summary["batchCount"] == "7"
    assert stored_line_numbers(small_limit.stub, "ship-bytes") == list(range(40))


def test_ship_splits_too_large_batch(small_limit, tmp_path, capsys):
    # The default --batch-bytes of 4 MiB lets the 200 KB batch through; the
    # gateway rejects it, and its halves of 100 KB, and stores quarters.
    path = write_log(tmp_path, *long_lines(40, 5000))

    status, out, err = run(
        capsys, small_limit.address, "logs", "ship", str(path),
        "--service", "ship-halves", "--format", "json",
    )  # fmt: skip
    summary = json.loads(out)

    assert status == 0, err
    assert "a batch of 40 entries is over the server's max_message_bytes" in err
    assert "resending" not in err
    assert summary["acceptedCount"] == "40"
    assert summary["batchCount"] == "4"
    assert stored_line_numbers(small_limit.stub, "ship-halves") == list(range(40))


def test_ship_split_rejections_count_across_halves(small_limit, tmp_path, capsys):
    too_old = 30 * 24 * 3600
    lines = long_lines(40, 5000)
    lines[25] = f"{line_time(too_old)} INFO line 025 " + "x" * 5000

    status, out, err = run(
        capsys, small_limit.address, "logs", "ship", str(write_log(tmp_path, *lines)),
        "--service", "ship-split-rejected", "--format", "json",
    )  # fmt: skip
    summary = json.loads(out)

    assert status == 3, err
    assert summary["acceptedCount"] == "39"
    assert summary["rejectedCount"] == "1"
    assert summary["rejectedEntries"][0]["index"] == "25"


@pytest.fixture(scope="module")
def few_entries(loop_thread, tmp_path_factory):
    """A log service and gateway that take at most 10 entries per batch."""
    with limited_gateway(
        loop_thread, tmp_path_factory, "few", log_max_batch_entries=10
    ) as running:
        yield running


def test_ship_recorded_batch_over_lowered_limit(live, few_entries, tmp_path, capsys):
    # The first run goes to a server that takes 12 entries per batch, the
    # rerun to one that takes 10, as after log_max_batch_entries was lowered.
    sixty_days = 60 * 24 * 3600
    service = "ship-recorded-over-limit"
    path = tmp_path / "app.log"
    _write_numbered(path, [(60, 1), (sixty_days, 2)] + [(60, n) for n in range(3, 13)])
    command = ["logs", "ship", str(path), "--service", service]
    command += ["--positions", str(tmp_path / "positions.json")]

    first = run(capsys, live.address, *command, "--batch-size", "12")
    status, _, err = run(capsys, few_entries.address, *command, "--batch-size", "5")

    assert first[0] == 3, first[2]
    assert status == 2, err
    assert "a batch of 12 entries" in err
    assert "the server's limit of 10 (log_max_batch_entries)" in err
    assert "records these lines" in err
    assert "Raise log_max_batch_entries to 12 or more for one rerun" in err
    assert "--batch-size 10 or less" not in err
    assert list_all(few_entries.stub, services=[service]) == []


def test_ship_batch_size_over_server_limit(few_entries, tmp_path, capsys):
    path = write_log(tmp_path, *long_lines(30, 10))

    status, out, err = run(
        capsys, few_entries.address, "logs", "ship", str(path),
        "--service", "ship-batch-limit", "--batch-size", "12",
    )  # fmt: skip

    assert status == 2, err
    assert "invalid value '12' for --batch-size" in err
    assert "a batch of 12 entries" in err
    assert "the server's limit of 10 (log_max_batch_entries)" in err
    assert "use --batch-size 10 or less" in err
    assert "Run the same command again" not in err
    assert "Traceback" not in err
    assert list_all(few_entries.stub, services=["ship-batch-limit"]) == []


def test_ship_batch_limit_after_stored_batches(few_entries, tmp_path, capsys):
    # --batch-bytes cuts the first batches of long lines below 12 entries.
    # The short lines after them fill a batch of 12, which the server rejects.
    lines = long_lines(16, 300) + long_lines(20, 1)
    path = write_log(tmp_path, *lines)

    status, out, err = run(
        capsys, few_entries.address, "logs", "ship", str(path),
        "--service", "ship-batch-later", "--batch-size", "12",
        "--batch-bytes", "3000",
    )  # fmt: skip
    stored = list_all(few_entries.stub, services=["ship-batch-later"])

    assert status == 2, err
    assert "use --batch-size 10 or less" in err
    assert f"stored {len(stored)} entries" in err
    assert "ship only the lines from line" in err
    assert 0 < len(stored) < len(lines)


def test_ship_entry_over_limit_fails(small_limit, tmp_path, capsys):
    path = write_log(tmp_path, *long_lines(1, 70_000))

    status, out, err = run(
        capsys, small_limit.address, "logs", "ship", str(path),
        "--service", "ship-over-limit",
    )  # fmt: skip

    assert status == 1
    assert "line 1 is too large to send on its own" in err
    assert "REQUEST_TOO_LARGE" in err
    assert "resending" not in err
    assert list_all(small_limit.stub, services=["ship-over-limit"]) == []


def test_ship_line_over_client_send_limit(live, tmp_path, capsys):
    # The line is just within the 16 MiB that the reader keeps, but its
    # request, with the entry's other fields, is over the send limit of the
    # client's channel, so the call fails before anything is sent.
    prefix = f"{line_time(60)} INFO "
    length = logs_commands.CLIENT_MAX_MESSAGE_BYTES - 16
    lines = [f"{line_time(60)} INFO short", prefix + "x" * (length - len(prefix))]
    path = write_log(tmp_path, *lines)
    started = time.monotonic()

    status, out, err = run(
        capsys, live.address, "logs", "ship", str(path), "--service", "ship-huge"
    )
    elapsed = time.monotonic() - started
    text = " ".join(err.split())

    assert status == 1, err
    assert "line 2 is too large to send on its own" in text
    assert "RESOURCE_EXHAUSTED" in text
    assert "Sent message larger than max" in text
    assert f"stopped at line 2 of {path}" in text
    assert "larger than the 16 MiB that splitlog logs ship sends" in text
    assert "It read 2 lines and stored 1 entry (0 rejected)." in text
    assert "remove line 2, or split it into lines shorter" in text
    # The default --batch-bytes of 4 MiB puts the long line in a batch of
    # its own.
    assert "Batches sent in halves" not in text
    assert "resending" not in text
    assert "Run the same command again" not in text
    # A retry loop would wait SHIP_RETRY_SECONDS (60 s) before failing.
    assert elapsed < 30
    stored = list_all(live.stub, services=["ship-huge"])
    assert [entry.message for entry in stored] == [lines[0]]


MIB = 1024 * 1024


def _lines_with_long_third(length: int) -> list[bytes]:
    """Return four log lines, the third of `length` bytes, each ended by LF."""
    lines = [f"{line_time(60)} INFO line {i}\n".encode() for i in (1, 2, 3, 4)]
    lines[2] = lines[2][:-1] + b"x" * (length - len(lines[2])) + b"\n"
    return lines


def test_ship_long_line_read_in_bounded_memory(live, tmp_path, capsys, monkeypatch):
    # With a send limit of 1 MiB, a line of 48 MiB is refused after its
    # first 1 MiB + 1 bytes, without reading the rest into memory.
    monkeypatch.setattr(logs_commands, "CLIENT_MAX_MESSAGE_BYTES", MIB)
    lines = _lines_with_long_third(48 * MIB)
    path = tmp_path / "app.log"
    path.write_bytes(b"".join(lines))
    del lines[2]
    command = ["logs", "ship", str(path), "--service", "ship-long-line"]

    tracemalloc.start()
    try:
        status, out, err = run(capsys, live.address, *command)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = " ".join(err.split())
    stored_after_failure = list_all(live.stub, services=["ship-long-line"])
    path.write_bytes(b"".join(lines))
    rerun = run(capsys, live.address, *command)
    stored = list_all(live.stub, services=["ship-long-line"])

    assert status == 1, err
    assert peak < 16 * MIB, peak
    assert "line 3 is too large to send on its own" in text
    assert "more than 1,048,576 bytes, the client's send limit" in text
    assert "RESOURCE_EXHAUSTED" in text
    assert f"stopped at line 3 of {path}" in text
    assert "larger than the 1 MiB that splitlog logs ship sends" in text
    assert "It read 3 lines and stored 0 entries (0 rejected)." in text
    assert "It did not send lines 1 to 2, read before line 3" in text
    assert "remove line 3, or split it into lines shorter" in text
    assert "Batches sent in halves" not in text
    # Lines 1 and 2 share a batch with line 3 in the rerun, so they were
    # left to it.
    assert stored_after_failure == []
    assert rerun[0] == 0, rerun[2]
    assert sorted(entry.message for entry in stored) == sorted(
        line.decode().rstrip("\n") for line in lines
    )


@pytest.mark.parametrize("size", [-1, 1, 7, 100, 70_000])
def test_descriptor_lines_match_file_readline(tmp_path, size):
    # Lines longer and shorter than one os.read of 64 KiB, and no final LF.
    data = b"a\n\r\n" + b"x" * 150_000 + b"\nshort\n" + b"y" * 70_001
    path = tmp_path / "input.log"
    path.write_bytes(data)
    expected = io.BytesIO(data)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        reader = ship_input.DescriptorLines(descriptor)
        while True:
            line = reader.readline(size)
            assert line == expected.readline(size)
            if not line:
                break
    finally:
        os.close(descriptor)


def _file_stdin(monkeypatch, path) -> None:
    """Make standard input the file at `path`, as `< path` does."""
    monkeypatch.setattr(sys, "stdin", open(path, encoding="utf-8"))  # noqa: SIM115


def test_ship_stdin_long_line_random_ids(live, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logs_commands, "CLIENT_MAX_MESSAGE_BYTES", MIB)
    path = tmp_path / "input.log"
    path.write_bytes(b"".join(_lines_with_long_third(2 * MIB)))
    _file_stdin(monkeypatch, path)

    status, out, err = run(
        capsys, live.address, "logs", "ship", "-", "--service", "ship-stdin-long"
    )
    text = " ".join(err.split())
    stored = list_all(live.stub, services=["ship-stdin-long"])

    assert status == 1, err
    assert "line 3 is too large to send on its own" in text
    assert "stopped at line 3 of standard input" in text
    assert "It read 3 lines and stored 2 entries (0 rejected)." in text
    assert (
        "To ship the rest, send the lines after line 3 again, with the parts of "
        "line 3 first if you split it into lines shorter than that limit"
    ) in text
    assert "lines before line 3 that are sent again are stored twice" in text
    assert "remove line 3" not in text
    assert "from line 3 on" not in text
    assert "fails there again" not in text
    assert "It did not send" not in text
    assert len(stored) == 2


def test_ship_stdin_long_line_source_name(live, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logs_commands, "CLIENT_MAX_MESSAGE_BYTES", MIB)
    lines = _lines_with_long_third(2 * MIB)
    path = tmp_path / "input.log"
    path.write_bytes(b"".join(lines))
    command = ["logs", "ship", "-", "--service", "ship-stdin-long-named"]
    command += ["--source-name", "input.log"]

    _file_stdin(monkeypatch, path)
    status, out, err = run(capsys, live.address, *command)
    text = " ".join(err.split())
    stored_after_failure = list_all(live.stub, services=["ship-stdin-long-named"])
    # The fix that the message gives: the same input without line 3.
    del lines[2]
    path.write_bytes(b"".join(lines))
    _file_stdin(monkeypatch, path)
    fixed = run(capsys, live.address, *command)
    _file_stdin(monkeypatch, path)
    again = run(capsys, live.address, *command)
    stored = list_all(live.stub, services=["ship-stdin-long-named"])

    assert status == 1, err
    assert "stopped at line 3 of standard input" in text
    assert "It read 3 lines and stored 0 entries (0 rejected)." in text
    assert "It did not send lines 1 to 2, read before line 3" in text
    assert (
        "To ship the rest, leave out line 3 of the input or split it into lines "
        "shorter than that limit"
    ) in text
    assert "send the input again with the same --source-name" in text
    assert "send the lines after line 3" not in text
    assert stored_after_failure == []
    assert fixed[0] == 0, fixed[2]
    assert re.search(r"^stored: +3$", fixed[1], re.M), fixed[1]
    assert again[0] == 0, again[2]
    assert re.search(r"^stored: +0$", again[1], re.M), again[1]
    assert re.search(r"^already stored: +3$", again[1], re.M), again[1]
    assert len(stored) == 3


@pytest.mark.parametrize(
    ("source", "advice", "halves"),
    [
        (
            [],
            "To ship the rest, send the lines after line 2 again, with line 2 "
            "first if you raise the server's max_message_bytes or shorten the line.",
            False,
        ),
        (
            ["--source-name", "big.log"],
            "To ship the rest, raise the server's max_message_bytes, or leave out "
            "or shorten line 2 of the input, and send the input again with the "
            "same --source-name.",
            True,
        ),
    ],
)
def test_ship_stdin_line_over_server_limit(
    small_limit, tmp_path, capsys, monkeypatch, source, advice, halves
):
    # Lines of 5 KB and 70 KB: their batch is over the limit of 64 KiB, so
    # it is sent in halves, and the second half, line 2, fails alone.
    lines = long_lines(2, 5000)
    lines[1] = f"{line_time(60)} INFO line 001 " + "x" * 70_000
    path = tmp_path / "input.log"
    path.write_text("".join(f"{line}\n" for line in lines))
    _file_stdin(monkeypatch, path)
    service = f"ship-stdin-over-limit-{len(source)}"

    status, out, err = run(
        capsys, small_limit.address, "logs", "ship", "-", "--service", service,
        *source,
    )  # fmt: skip
    text = " ".join(err.split())

    assert status == 1, err
    assert "line 2 is too large to send on its own" in text
    assert "REQUEST_TOO_LARGE" in text
    assert (
        "stopped at line 2 of standard input: the line alone is larger than the "
        "server's max_message_bytes. It read 2 lines and stored 1 entry "
        "(0 rejected)."
    ) in text
    assert advice in text
    assert ("Batches sent in halves are an exception" in text) == halves
    assert "remove or shorten line 2" not in text
    assert stored_line_numbers(small_limit.stub, service) == [0]


def test_ship_line_over_limit_after_split(small_limit, tmp_path, capsys):
    # The batch of 10 lines is 120 KB. Its first half (lines 1-5) is stored,
    # and the second half splits until line 6 of 70 KB goes alone.
    lines = long_lines(10, 5000)
    lines[5] = f"{line_time(60)} INFO line 005 " + "x" * 70_000
    path = write_log(tmp_path, *lines)

    status, out, err = run(
        capsys, small_limit.address, "logs", "ship", str(path),
        "--service", "ship-line-over-limit",
    )  # fmt: skip

    assert status == 1
    assert "line 6 is too large to send on its own" in err
    assert f"stopped at line 6 of {path}" in err
    assert "line alone is larger than the server's max_message_bytes" in err
    assert "fails there again" in err
    assert "raise the server's max_message_bytes" in err
    assert "remove or shorten line 6" in err
    assert "request ids derive from the split" in err
    assert "Run the same command again to ship the rest" not in err
    stored = stored_line_numbers(small_limit.stub, "ship-line-over-limit")
    assert stored == [0, 1, 2, 3, 4]

    # Shortening the line changes the batch's id and so its halves' ids:
    # the rerun stores the first half again, as the message warns.
    lines[5] = f"{line_time(60)} INFO line 005 short"
    write_log(tmp_path, *lines)
    status, out, err = run(
        capsys, small_limit.address, "logs", "ship", str(path),
        "--service", "ship-line-over-limit",
    )  # fmt: skip

    assert status == 0, err
    stored = stored_line_numbers(small_limit.stub, "ship-line-over-limit")
    assert stored == sorted([*range(10), *range(5)])


# query


def _write_query_entries(stub, base: int) -> None:
    def entry(service, severity, message, rpc, at):
        return logs_pb2.LogEntry(
            service=service,
            severity=severity,
            message=message,
            attributes={"rpc": rpc},
            timestamp=ts(at),
        )

    warn, error = logs_pb2.SEVERITY_WARN, logs_pb2.SEVERITY_ERROR
    entries = [
        entry(("qa", "qb")[n % 2], (warn, error)[n % 2], f"upstream timeout {n}",
              "Get", base + n * 10 * SECOND)
        for n in range(1, 7)
    ]  # fmt: skip
    entries += [
        entry("qc", warn, "upstream timeout c", "Get", base + 15 * SECOND),
        entry("qa", logs_pb2.SEVERITY_INFO, "upstream timeout i", "Get", base + SECOND),
        entry("qa", warn, "upstream slow", "Get", base + 2 * SECOND),
        entry("qa", warn, "upstream timeout put", "Put", base + 3 * SECOND),
        entry("qa", warn, "upstream timeout early", "Get", base - 10 * SECOND),
        entry("qb", warn, "upstream timeout late", "Get", base + 100 * SECOND),
    ]
    response = stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))
    assert response.rejected_count == 0


def test_query_sends_every_filter(live, capsys):
    base = (time.time_ns() // SECOND - 7200) * SECOND
    _write_query_entries(live.stub, base)

    status, out, err = run(
        capsys, live.address, "logs", "query", "--service", "qa", "--service", "qb",
        "--min-severity", "warning", "--keyword", "TIMEOUT", "--attr", "rpc=Get",
        f"--since={rfc3339(base)}", f"--end={rfc3339(base + 70 * SECOND)}",
        "--limit", "5", "--format", "json",
    )  # fmt: skip
    messages = [entry["message"] for entry in json.loads(out)["entries"]]

    assert status == 0, err
    assert messages == [f"upstream timeout {n}" for n in (6, 5, 4, 3, 2)]


_FIXED_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def test_query_times_have_nine_digits(live, capsys):
    base = (time.time_ns() // SECOND - 600) * SECOND
    # Fractions with 0, 6, 8 and 9 significant digits.
    offsets = [0, 732_104_000, SECOND + 732_104_980, 2 * SECOND + 123_456_789]
    entries = [
        logs_pb2.LogEntry(service="q-fixed", message=f"m{n}", timestamp=ts(base + o))
        for n, o in enumerate(offsets)
    ]
    live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))

    status, out, err = run(
        capsys, live.address, "logs", "query", "--service", "q-fixed",
        f"--since={rfc3339(base)}", "--oldest-first",
    )  # fmt: skip
    times = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]

    assert status == 0, err
    assert len(times) == 4, out
    for text in times:
        assert _FIXED_TIME.match(text), text
    assert times[0].endswith(".000000000Z")
    assert times[1].endswith(".732104000Z")
    assert times[2].endswith(".732104980Z")


def _write_pages_entries(live, service: str, count: int) -> None:
    base = time.time_ns() - 600 * SECOND
    entries = [
        logs_pb2.LogEntry(service=service, message=f"m{n}", timestamp=ts(base + n))
        for n in range(count)
    ]
    live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))


def test_query_newest_first_to_limit(live, capsys):
    _write_pages_entries(live, "pages", 7)

    status, out, err = run(
        capsys, live.address, "logs", "query", "--service", "pages", "--limit", "5",
        "--format", "json",
    )  # fmt: skip
    shown = json.loads(out)
    messages = [entry["message"] for entry in shown["entries"]]

    assert status == 0, err
    assert messages == ["m6", "m5", "m4", "m3", "m2"]
    assert shown["nextPageToken"]
    assert "showing 5 entries; more may match" in err
    assert f"--page-token {shown['nextPageToken']}" in err


def test_query_note_counts_one_entry(live, capsys):
    _write_pages_entries(live, "pages-one", 2)

    status, _, err = run(
        capsys, live.address, "logs", "query", "--service", "pages-one",
        "--limit", "1",
    )  # fmt: skip

    assert status == 0, err
    assert "showing 1 entry; more may match" in err


def test_query_oldest_first_to_limit(live, capsys):
    _write_pages_entries(live, "pages-oldest", 7)

    status, out, err = run(
        capsys, live.address, "logs", "query", "--service", "pages-oldest",
        "--limit", "5", "--oldest-first", "--format", "json",
    )  # fmt: skip
    messages = [entry["message"] for entry in json.loads(out)["entries"]]

    assert status == 0, err
    assert messages == ["m0", "m1", "m2", "m3", "m4"]


def test_query_page_token_continues(live, capsys):
    _write_pages_entries(live, "pages-next", 7)
    # A relative --since changes from run to run, so the note repeats the
    # time that it stood for.
    filters = ["--service", "pages-next", "--since=-1h", "--limit", "4"]

    status, first_out, first_err = run(capsys, live.address, "logs", "query", *filters)
    note = first_err.split(" or run the same command with ", 1)[1]
    again = note.removesuffix(" to see the next ones\n").split()
    status_next, out, err = run(
        capsys, live.address, "logs", "query", *filters, *again, "--format", "json"
    )
    shown = json.loads(out)

    assert status == 0, first_err
    assert again[0].startswith("--since=")
    assert again[1] == "--page-token"
    assert "m6" in first_out
    assert status_next == 0, err
    assert [entry["message"] for entry in shown["entries"]] == ["m2", "m1", "m0"]
    assert shown["nextPageToken"] == ""
    assert err == ""


@pytest.mark.parametrize(
    "time_range",
    [
        ("--since", "-15m"),
        ("--since=-15m",),
        ("--start", "-15m", "--until", "now"),
        ("--since", "-.25h", "--end", "-1ms"),
        ("--since", "-15m", "--until", "-1ms"),
    ],
)
def test_query_relative_time_after_space(live, capsys, time_range):
    # The entries are 10 minutes old, inside every range above.
    service = f"relative-space-{random_suffix()}"
    _write_pages_entries(live, service, 2)

    status, out, err = run(
        capsys, live.address, "logs", "query", "--service", service,
        *time_range, "--format", "json",
    )  # fmt: skip

    assert status == 0, err
    assert [entry["message"] for entry in json.loads(out)["entries"]] == ["m1", "m0"]


def test_until_bounds_query_and_stats(live, capsys):
    # The entries are 10 minutes old.
    _write_pages_entries(live, "relative-until", 2)
    service = ("--service", "relative-until")
    before = ("--since", "-1h", "--until", "-30m")
    around = ("--since", "-1h", "--until", "-1s")

    list_status, listed, list_err = run(
        capsys, live.address, "logs", "query", *service, *before, "--format", "json"
    )
    none_status, none_counted, none_err = run(
        capsys, live.address, "logs", "stats", *service, *before
    )
    count_status, counted, count_err = run(
        capsys, live.address, "logs", "stats", *service, *around
    )

    assert list_status == 0, list_err
    assert json.loads(listed).get("entries", []) == []
    assert none_status == 0, none_err
    assert re.search(r"entries: +0\n", none_counted), none_counted
    assert count_status == 0, count_err
    assert re.search(r"entries: +2\n", counted), counted


def test_stats_negative_step_is_value(capsys):
    # No server listens at the address: the command must stop before calling.
    status, out, err = run(capsys, closed_address(), "logs", "stats", "--step", "-5m")

    assert status == 2
    assert "--step: invalid duration '-5m'" in err
    assert out == ""


def test_query_help_names_until(capsys):
    with pytest.raises(SystemExit):
        main(["logs", "query", "--help"])
    out = capsys.readouterr().out

    assert "--end END, --until END" in out
    assert "--since=-1h" not in out


def test_tail_format_help_says_one_object_per_line(capsys):
    with pytest.raises(SystemExit):
        main(["logs", "tail", "--help"])
    tail_help = " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["logs", "query", "--help"])
    query_help = " ".join(capsys.readouterr().out.split())

    assert "one proto3 JSON object per line for each item as it arrives" in tail_help
    assert "one response with the items of every page" not in tail_help
    assert "one response with the items of every page" in query_help


def test_query_all_shown_prints_no_note(live, capsys):
    _write_pages_entries(live, "pages-all", 3)

    status, out, err = run(
        capsys, live.address, "logs", "query", "--service", "pages-all",
        "--limit", "3", "--format", "json",
    )  # fmt: skip

    assert status == 0, err
    assert len(json.loads(out)["entries"]) == 3
    assert json.loads(out)["nextPageToken"] == ""
    assert err == ""


def test_query_table_escapes_terminal_codes(live, capsys):
    forged = "ok\n2024-01-01T00:00:00Z  fatal  bank  -  forged\x1b[31mred\u202e"
    live.stub.WriteLogEntries(
        logs_pb2.WriteLogEntriesRequest(
            entries=[
                logs_pb2.LogEntry(
                    service="forged", message=forged, severity=logs_pb2.SEVERITY_INFO
                )
            ]
        )
    )

    status, out, err = run(capsys, live.address, "logs", "query", "--service", "forged")
    lines = out.splitlines()

    assert status == 0, err
    assert len(lines) == 2
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\\n2024-01-01T00:00:00Z" in lines[1]
    assert "\\e[31mred\\u202e" in lines[1]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--min-severity", "loud"), "--min-severity"),
        (("--severity", "loud"), "--severity"),
        (("--min-severity", "warn", "--severity", "error"), "--severity"),
        (("--attr", "novalue"), "--attr"),
        (("--attr", "=value"), "--attr"),
        (("--attr", "a\\b=c"), "--attr"),
        (("--since", "yesterday-ish"), "--since"),
        (("--since", ""), "--since"),
        (("--end", ""), "--end"),
        (("--min-severity", ""), "--min-severity"),
        (("--limit", "0"), "--limit"),
        (("--since", "2024-05-02T00:00:00Z", "--end", "2024-05-01T00:00:00Z"), "--end"),
    ],
)
def test_query_invalid_values(capsys, args, option):
    # Nothing listens at the address, so a command that sent a request would
    # fail with status 1 instead of 2.
    status, out, err = run(capsys, closed_address(), "logs", "query", *args)

    assert status == 2
    assert option in err


def test_attr_error_shows_typed_text(capsys):
    status, out, err = run(
        capsys, closed_address(), "logs", "query", "--attr", "a\\x=1"
    )

    assert status == 2
    assert "--attr: 'a\\x=1' has a backslash before 'x'" in err


@pytest.mark.parametrize("command", ["query", "stats", "tail"])
@pytest.mark.parametrize("service", ["", *INVALID_SERVICES])
def test_filter_invalid_service_name(capsys, command, service):
    # No server listens at the address: the command must stop before calling.
    status, out, err = run(
        capsys,
        closed_address(),
        "logs",
        command,
        "--service",
        "web",
        "--service",
        service,
    )

    assert status == 2, err
    assert f"invalid value {service!r} for --service" in err
    assert "1 to 256 bytes in UTF-8 without control characters" in err
    assert out == ""


@pytest.mark.parametrize(
    ("command", "option", "value", "side"),
    [
        ("query", "--since", "253402300800s", "after the year 9999"),
        ("query", "--since", "now-1000000d", "before the year 1"),
        ("query", "--since", "-99999999999h", "before the year 1"),
        ("query", "--end", "now+100000000d", "after the year 9999"),
        ("stats", "--end", "99999999999999999999s", "after the year 9999"),
        ("stats", "--since", "now-3000000d", "before the year 1"),
    ],
)
def test_time_outside_timestamp_range(capsys, command, option, value, side):
    # No server listens at the address: the command must stop before calling.
    status, out, err = run(
        capsys, closed_address(), "logs", command, f"{option}={value}"
    )

    assert status == 2, err
    assert f"invalid value {value!r} for {option}: the time is {side}" in err
    assert "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z" in err
    assert "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize(
    "bounds",
    [
        ("--since=0001-01-01T00:00:00Z", "--end=0001-01-02T00:00:00Z"),
        ("--since=9999-12-31T00:00:00Z", "--end=9999-12-31T23:59:59.999999999Z"),
    ],
)
def test_times_at_timestamp_range_ends(live, capsys, bounds):
    status, out, err = run(
        capsys, live.address, "logs", "query", "--service", "range-ends", *bounds
    )

    assert status == 0, err


# tail


def _keep_writing(stub, entries, stop: threading.Event) -> threading.Thread:
    """Write `entries` every 0.2 s until `stop` is set, from a thread."""

    def write():
        while not stop.wait(0.2):
            stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_tail_prints_entries(live, capsys):
    stop = threading.Event()
    writer = _keep_writing(
        live.stub,
        [
            logs_pb2.LogEntry(service="tail-a", message="line\x07one"),
            logs_pb2.LogEntry(service="tail-a", message="other text"),
        ],
        stop,
    )
    try:
        status, out, err = run(
            capsys, live.address, "logs", "tail", "--service", "tail-a",
            "--keyword", "line", "--duration", "2s",
        )  # fmt: skip
    finally:
        stop.set()
        writer.join()

    assert status == 0, err
    assert "line\\x07one" in out
    assert "other text" not in out


def test_tail_times_have_nine_digits(live, capsys):
    stop = threading.Event()
    now = time.time_ns()
    # A time to the microsecond, as many writers send.
    entry = logs_pb2.LogEntry(
        service="tail-fixed", message="m", timestamp=ts(now - now % 1000)
    )
    writer = _keep_writing(live.stub, [entry], stop)
    try:
        status, out, err = run(
            capsys, live.address, "logs", "tail", "--service", "tail-fixed",
            "--duration", "2s",
        )  # fmt: skip
    finally:
        stop.set()
        writer.join()
    times = [line.split()[0] for line in out.splitlines() if line.strip()]

    assert status == 0, err
    assert times, out
    for text in times:
        assert _FIXED_TIME.match(text), text
        assert text.endswith("000Z"), text


def test_tail_json_lines(live, capsys):
    stop = threading.Event()
    entries = [logs_pb2.LogEntry(service="tail-json", message=f"m{n}") for n in (1, 2)]
    writer = _keep_writing(live.stub, entries, stop)
    try:
        status, out, err = run(
            capsys, live.address, "logs", "tail", "--service", "tail-json",
            "--format", "json", "--duration", "2s",
        )  # fmt: skip
    finally:
        stop.set()
        writer.join()
    messages = [json.loads(line)["message"] for line in out.splitlines()]

    assert status == 0, err
    assert messages[:2] == ["m1", "m2"]
    assert set(messages) == {"m1", "m2"}


def test_tail_resume_token_continues(live, capsys):
    def write(*messages: str) -> None:
        entries = [
            logs_pb2.LogEntry(service="tail-resume", message=m) for m in messages
        ]
        live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))

    filters = ["--service", "tail-resume", "--format", "json"]
    written = ["before 1", "before 2", "before 3"]

    def write_while_tailing() -> None:
        # On a loaded machine the tail may open after the first write, so
        # entries keep coming for a while; it prints those after its open.
        for message in written:
            time.sleep(0.5)
            write(message)

    writer = threading.Thread(target=write_while_tailing)
    writer.start()
    try:
        status, out, err = run(
            capsys, live.address, "logs", "tail", *filters, "--duration", "4s"
        )
    finally:
        writer.join()
    token = re.search(r"--resume-token (\S+)", err)
    write("after 1", "after 2")
    resumed_status, resumed_out, resumed_err = run(
        capsys, live.address, "logs", "tail", *filters, "--duration", "2s",
        "--resume-token", token[1] if token else "",
    )  # fmt: skip

    assert status == 0, err
    printed = [json.loads(line)["message"] for line in out.splitlines()]
    assert printed and printed == written[-len(printed) :], out
    assert token, err
    assert resumed_status == 0, resumed_err
    resumed = [json.loads(line)["message"] for line in resumed_out.splitlines()]
    assert resumed == ["after 1", "after 2"]


def test_tail_reconnects_after_restart(live, loop_thread, capsys):
    def write(message: str) -> None:
        entry = logs_pb2.LogEntry(service="tail-restart", message=message)
        live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=[entry]))

    def start(address: str):
        # The port was just released, but another process may take it for
        # a moment as an outgoing port, so the restart tries again.
        for _ in range(50):
            try:
                return loop_thread.run(
                    build_gateway(live.gateway.config, address, "127.0.0.1:0")
                )
            except RuntimeError:
                time.sleep(0.1)
        raise AssertionError(f"cannot start the gateway again at {address}")

    gateways = [start("127.0.0.1:0")]
    # The tail reconnects to the address of the stopped gateway.
    address = f"127.0.0.1:{gateways[0].grpc_port}"

    def restart_meanwhile() -> None:
        time.sleep(1.5)
        write("before")
        time.sleep(1.0)
        loop_thread.run(gateways[0].stop(0))
        # Written while no gateway listens: the tail must not miss it.
        write("during")
        time.sleep(2.0)
        gateways.append(start(address))
        time.sleep(1.0)
        write("after")

    restarter = threading.Thread(target=restart_meanwhile)
    restarter.start()
    try:
        status, out, err = run(
            capsys, address, "logs", "tail", "--service",
            "tail-restart", "--format", "json", "--duration", "12s",
        )  # fmt: skip
    finally:
        restarter.join()
        loop_thread.run(gateways[-1].stop(0))
    messages = [json.loads(line)["message"] for line in out.splitlines()]

    assert status == 0, err
    assert messages == ["before", "during", "after"]
    assert "reconnecting with the last resume token for up to 60 s" in err
    assert "reconnected" in err


@pytest.mark.parametrize("duration", ["3651d", "100000d", "1000000d"])
def test_tail_duration_over_maximum(live, capsys, duration):
    started = time.monotonic()
    status, out, err = run(capsys, live.address, "logs", "tail", "--duration", duration)

    assert status == 2, err
    assert f"invalid value '{duration}' for --duration" in err
    assert "maximum of 3650d" in err
    assert out == ""
    assert time.monotonic() - started < 5


def _signal_running_tail(
    address: str, signum: int, *args: str
) -> tuple[bool, int, bytes]:
    """Run `splitlog logs tail ARGS` for 4 s, then send it `signum`.

    Returns whether it still ran at that time, its exit status and its stderr.
    """
    command = [str(SPLITLOG), "logs", "tail", *args, "--gateway", address]
    tail = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("SPLITLOG_")},
    )
    try:
        time.sleep(4)
        running = tail.poll() is None
        tail.send_signal(signum)
        _, err = tail.communicate(timeout=30)
    finally:
        _stop(tail)
    return running, tail.returncode, err


def test_tail_longest_duration_keeps_running(live):
    # Ctrl-C is the normal end of a tail that still runs.
    running, status, err = _signal_running_tail(
        live.address, signal.SIGINT, "--service", "tail-longest", "--duration", "3650d"
    )

    assert running, err.decode()
    assert status == 0, err.decode()
    assert b"--resume-token " in err


def test_tail_sigterm_prints_resume_token(live):
    # timeout(1), kill and service managers stop a tail with SIGTERM.
    running, status, err = _signal_running_tail(
        live.address, signal.SIGTERM, "--service", "tail-sigterm"
    )

    assert running, err.decode()
    assert status == 0, err.decode()
    assert b"--resume-token " in err


@pytest.mark.parametrize(
    ("duration", "seconds"), [("1ms", "0.001s"), ("1ns", "0.000000001s")]
)
def test_tail_short_duration_token_or_error(live, capsys, duration, seconds):
    status, out, err = run(
        capsys, live.address, "logs", "tail", "--service", "tail-short",
        "--duration", duration,
    )  # fmt: skip

    assert out == ""
    # The call may end before or after the first response. Before it, the
    # stream never opened, which is an error with the fix.
    if status == 0:
        assert "--resume-token " in err
    else:
        assert status == 1, err
        assert f"sent no response within the --duration of {seconds} " in err
        assert "e-0" not in err


def test_tail_resume_token_other_filters(live, capsys):
    status, _, err = run(
        capsys, live.address, "logs", "tail", "--service", "tail-token-a",
        "--duration", "1s",
    )  # fmt: skip
    token = re.search(r"--resume-token (\S+)", err)

    other_status, _, other_err = run(
        capsys, live.address, "logs", "tail", "--service", "tail-token-b",
        "--duration", "1s", "--resume-token", token[1] if token else "",
    )  # fmt: skip

    assert status == 0, err
    assert token, err
    assert other_status == 1
    assert "INVALID_ARGUMENT" in other_err
    assert "resume_token" in other_err
    assert "to continue after the last entry printed" not in other_err


def test_tail_resume_token_ahead_of_shards(live, capsys):
    status, _, err = run(
        capsys, live.address, "logs", "tail", "--service", "tail-token-ahead",
        "--duration", "1s",
    )  # fmt: skip
    token = re.search(r"--resume-token (\S+)", err)
    ahead = with_sequence(token[1], 999_999_999) if token else ""

    resumed_status, resumed_out, resumed_err = run(
        capsys, live.address, "logs", "tail", "--service", "tail-token-ahead",
        "--duration", "2s", "--resume-token", ahead,
    )  # fmt: skip

    assert status == 0, err
    assert token, err
    assert resumed_status == 1
    assert resumed_out == ""
    assert "INVALID_ARGUMENT" in resumed_err
    assert "sequence 999999999 of shard" in resumed_err
    assert "start a new tail without a resume token" in resumed_err
    assert "to continue after the last entry printed" not in resumed_err


def test_tail_over_open_stream_limit(loop_thread, tmp_path_factory, capsys):
    base = config_module.load(
        environ={},
        overrides={"auth_required": False, "data_dir": tmp_path_factory.mktemp("one")},
    )
    running = LogsGateway(
        base, tmp_path_factory.mktemp("gateway-one"), loop_thread,
        log_max_open_streams=1,
    )  # fmt: skip
    held = running.stub.TailLogEntries(
        logs_pb2.TailLogEntriesRequest(services=["tail-held"]), timeout=60
    )
    try:
        next(held)
        status, out, err = run(
            capsys, running.address, "logs", "tail", "--service", "tail-held",
            "--duration", "5s",
        )  # fmt: skip
        with httpx.Client(timeout=10) as client:
            rest = client.post(
                f"http://127.0.0.1:{running.gateway.http_port}/v1/logs:tail",
                json={"services": ["tail-held"]},
            )
    finally:
        held.cancel()
        running.close()

    assert status == 1
    assert out == ""
    assert "RESOURCE_EXHAUSTED" in err
    assert "log_max_open_streams is 1" in err
    assert rest.status_code == 429, rest.text[:500]
    assert rest.headers["retry-after"] == "5"
    assert "TOO_MANY_OPEN_STREAMS" in rest.text


def test_tail_without_first_message_fails(loop_thread, tmp_path_factory, capsys):
    base = config_module.load(
        environ={},
        overrides={"auth_required": False, "data_dir": tmp_path_factory.mktemp("down")},
    )
    running = LogsGateway(base, tmp_path_factory.mktemp("gateway-down"), loop_thread)
    try:
        # With its nodes gone, the router waits 2 s for the shard streams
        # before the first message, longer than the --duration.
        for node in running.cluster.nodes:
            node.stop(0)
        status, out, err = run(
            capsys, running.address, "logs", "tail", "--duration", "1s"
        )
    finally:
        running.close()

    assert status == 1
    assert out == ""
    assert "sent no response within the --duration of 1s " in err


def test_tail_notes_unopened_shard(loop_thread, tmp_path_factory, capsys):
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("one-down"),
        },
    )
    running = LogsGateway(
        base, tmp_path_factory.mktemp("gateway-one-down"), loop_thread
    )
    try:
        up, down = running.cluster.topology.shard_ids
        (node,) = running.cluster.topology.shard(down).nodes
        running.cluster.node_host(node.node_id).stop(0)
        status, _, err = run(
            capsys, running.address, "logs", "tail", "--duration", "3s"
        )
    finally:
        running.close()

    # The servers run in this process and may log to the same stderr.
    notes = "\n".join(command_lines(err))
    assert status == 0, err
    assert f"log shard(s) {down} have no responding leader yet" in notes
    assert up not in notes.split("have no responding leader")[0]


# stats


def test_stats_step_and_table(live, capsys):
    entries = [
        logs_pb2.LogEntry(service="shop", message="ERROR card declined"),
        logs_pb2.LogEntry(service="shop", message="INFO paid"),
        logs_pb2.LogEntry(service="shop", message="INFO shipped"),
    ]
    live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))

    status, out, err = run(
        capsys, live.address, "logs", "stats", "--service", "shop", "--since=-1h",
        "--step", "5m",
    )  # fmt: skip

    assert status == 0, err
    assert re.search(r"entries: +3\n", out), out
    # The ingest counters ignore the service filter, as their labels state.
    assert re.search(r"duplicates \(all services\): +\d+\n", out), out
    assert "error" in out
    assert "shop" in out
    assert "step 5m" in out


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ("1ns", "shorter than the minimum of 1s"),
        ("999ms", "shorter than the minimum of 1s"),
        ("200000d", "longer than the maximum of 4611686018.427387904s"),
        ("4611686018.427387905s", "give 4611686018.427387904s or less"),
    ],
)
def test_stats_step_out_of_bounds(capsys, step, problem):
    # No server listens at the address: the command must stop before calling.
    status, out, err = run(capsys, closed_address(), "logs", "stats", "--step", step)

    assert status == 2
    assert f"invalid value '{step}' for --step" in err
    assert problem in err
    assert out == ""


@pytest.mark.parametrize(
    ("args", "counted"),
    [
        (
            ("--since=2026-01-01T00:00:00Z", "--end=2026-01-31T00:00:00Z"),
            "gives 2,592,000 buckets from --since to --end",
        ),
        (("--since=-30d",), "buckets from --since to now"),
    ],
)
def test_stats_step_too_many_buckets(capsys, args, counted):
    # No server listens at the address: the command must stop before calling.
    status, out, err = run(
        capsys, closed_address(), "logs", "stats", *args, "--step", "1s"
    )

    assert status == 2, err
    assert "invalid value '1s' for --step" in err
    assert counted in err
    assert "more than the limit of 10,000" in err
    assert "give --step 260s or more" in err
    assert out == ""


def test_stats_step_too_short_without_since(live, capsys):
    # Without --since the range starts at the oldest matching entry, which
    # only the server can find.
    service = f"oldest-{uuid.uuid4().hex[:8]}"
    entry = logs_pb2.LogEntry(service=service, message="two days old")
    entry.timestamp.FromNanoseconds(time.time_ns() - 2 * 86400 * 10**9)
    live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=[entry]))

    status, out, err = run(
        capsys, live.address, "logs", "stats", "--service", service, "--step", "1s"
    )
    fitting = re.search(r"give --step (\d+s) or more", err)
    with pytest.raises(grpc.RpcError) as raised:
        live.stub.GetLogStats(
            logs_pb2.GetLogStatsRequest(
                services=[service], histogram_step=duration_pb2.Duration(seconds=1)
            )
        )
    refit_status, _, refit_err = run(
        capsys, live.address, "logs", "stats", "--service", service,
        "--step", fitting.group(1) if fitting else "1s",
    )  # fmt: skip

    assert status == 2, err
    assert "invalid value '1s' for --step" in err
    assert "buckets from the oldest matching entry (" in err
    assert "more than the limit of 10,000" in err
    assert fitting is not None, err
    assert out == ""
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "from the oldest matching entry (" in raised.value.details()
    assert f"send a histogram_step of {fitting.group(1)} or more" in (
        raised.value.details()
    )
    assert refit_status == 0, refit_err


def test_stats_smallest_fitting_step(live, capsys):
    status, out, err = run(
        capsys, live.address, "logs", "stats", "--service", "buckets",
        "--since=2026-01-01T00:00:00Z", "--end=2026-01-31T00:00:00Z",
        "--step", "260s",
    )  # fmt: skip

    assert status == 0, err


def test_stats_filters_match_query(live, capsys):
    entries = [
        logs_pb2.LogEntry(service="filtered", message="ERROR disk full"),
        logs_pb2.LogEntry(service="filtered", message="ERROR card declined"),
        logs_pb2.LogEntry(service="filtered", message="WARN disk slow"),
        logs_pb2.LogEntry(service="filtered", message="INFO disk ok"),
    ]
    live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))
    filters = ["--service", "filtered", "--keyword", "disk", "--since=-1h"]
    filters += ["--severity", "error", "--severity", "warn"]

    status, out, err = run(
        capsys, live.address, "logs", "stats", *filters, "--format", "json"
    )
    stats = json.loads(out)
    status_query, out_query, err_query = run(
        capsys, live.address, "logs", "query", *filters, "--format", "json"
    )

    assert status == 0, err
    assert status_query == 0, err_query
    assert stats["totalCount"] == "2"
    assert len(json.loads(out_query)["entries"]) == 2
    assert sum(int(bucket.get("count", 0)) for bucket in stats["histogram"]) == 2


def test_rest_stats_takes_query_filters(live):
    entries = [
        logs_pb2.LogEntry(service="rest-stats", message="ERROR card declined"),
        logs_pb2.LogEntry(service="rest-stats", message="WARN card declined"),
        logs_pb2.LogEntry(
            service="rest-stats", message="ERROR disk full", attributes={"a": "b"}
        ),
    ]
    live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))
    url = f"http://127.0.0.1:{live.gateway.http_port}/logs/stats"
    params = {
        "services": "rest-stats",
        "keyword": "declined",
        "severities": "SEVERITY_ERROR",
        "histogramStep": "60s",
    }

    with httpx.Client(timeout=10) as client:
        by_keyword = client.get(url, params=params)
        by_attribute = client.get(
            url, params={"services": "rest-stats", "attributeFilters": "a=b"}
        )

    assert by_keyword.status_code == 200, by_keyword.text
    assert by_keyword.json()["totalCount"] == "1"
    assert by_attribute.status_code == 200, by_attribute.text
    assert by_attribute.json()["totalCount"] == "1"


def test_rest_cluster_status_lists_placements(live):
    url = f"http://127.0.0.1:{live.gateway.http_port}/v1/clusterStatus"

    with httpx.Client(timeout=10) as client:
        response = client.get(url)

    assert response.status_code == 200, response.text
    (placement,) = response.json()["placements"]
    assert placement["strategy"] == "SHARDING_STRATEGY_SERVICE"
    assert placement["shards"] == ["shard-0", "shard-1"]
    # The only placement applies to every timestamp, so it has no start.
    assert "startTime" not in placement
    assert "timeBucketWidth" not in placement


@pytest.mark.parametrize("path", ["/logs", "/logs/stats"])
@pytest.mark.parametrize(
    ("query", "field", "text"),
    [
        (
            "startTime=2026-01-01T00:00:00Z&endTime=2026-01-01T00:00:00Z",
            "end_time",
            "2026-01-01T00:00:00Z equals start_time",
        ),
        (
            "startTime=2026-01-02T00:00:00Z&endTime=2026-01-01T00:00:00Z",
            "end_time",
            "2026-01-01T00:00:00Z is before start_time",
        ),
        ("services=a%0Ab", "services[0]", "'a\\nb' contains a control character"),
    ],
)
def test_rest_query_invalid_filter_rejected(live, path, query, field, text):
    url = f"http://127.0.0.1:{live.gateway.http_port}{path}?{query}"

    with httpx.Client(timeout=10) as client:
        response = client.get(url)
    error = response.json()["error"]
    violations = [
        violation["field"]
        for detail in error["details"]
        for violation in detail.get("fieldViolations", ())
    ]

    assert response.status_code == 400, response.text
    assert error["status"] == "INVALID_ARGUMENT"
    assert text in error["message"]
    assert violations == [field]


def _write_equals_keys(live, service: str) -> None:
    entries = [
        logs_pb2.LogEntry(service=service, message="key a=b", attributes={"a=b": "c"}),
        logs_pb2.LogEntry(service=service, message="key a", attributes={"a": "b=c"}),
    ]
    live.stub.WriteLogEntries(logs_pb2.WriteLogEntriesRequest(entries=entries))


def test_rest_attribute_key_with_equals_sign(live):
    _write_equals_keys(live, "rest-eq")
    base = f"http://127.0.0.1:{live.gateway.http_port}"
    escaped = {"services": "rest-eq", "attributeFilters": "a\\=b=c"}
    plain = {"services": "rest-eq", "attributeFilters": "a=b=c"}

    with httpx.Client(timeout=10) as client:
        listed = client.get(f"{base}/logs", params=escaped)
        listed_plain = client.get(f"{base}/logs", params=plain)
        counted = client.get(f"{base}/logs/stats", params=escaped)

    assert listed.status_code == 200, listed.text
    assert [e["message"] for e in listed.json()["entries"]] == ["key a=b"]
    assert listed_plain.status_code == 200, listed_plain.text
    assert [e["message"] for e in listed_plain.json()["entries"]] == ["key a"]
    assert counted.status_code == 200, counted.text
    assert counted.json()["totalCount"] == "1"


def test_rest_invalid_attribute_escape(live):
    url = f"http://127.0.0.1:{live.gateway.http_port}/logs"

    with httpx.Client(timeout=10) as client:
        response = client.get(url, params={"attributeFilters": "a\\b=c"})

    assert response.status_code == 400, response.text
    assert "attribute_filters[0]" in response.text
    assert "backslash" in response.text


def test_query_attr_key_with_equals_sign(live, capsys):
    _write_equals_keys(live, "cli-eq")

    status, out, err = run(
        capsys, live.address, "logs", "query", "--service", "cli-eq",
        "--attr", "a\\=b=c", "--format", "json",
    )  # fmt: skip
    messages = [entry["message"] for entry in json.loads(out)["entries"]]

    assert status == 0, err
    assert messages == ["key a=b"]


def test_rest_batch_many_rejections_returns_ok(small_limit):
    # 250 entries older than the retention, about 45 KB of JSON: a description
    # of each rejection would make a response over the 64 KiB limit.
    url = f"http://127.0.0.1:{small_limit.gateway.http_port}/logs/batch"
    old = [
        {
            "service": "rest-rejected",
            "message": f"old {i} " + "x" * 100,
            "timestamp": "2001-09-09T01:46:40Z",
        }
        for i in range(250)
    ]
    fresh = [{"service": "rest-rejected", "message": f"fresh {i}"} for i in range(5)]

    with httpx.Client(timeout=10) as client:
        response = client.post(url, json={"entries": old + fresh})

    stored = list_all(small_limit.stub, services=["rest-rejected"])
    assert response.status_code == 200, response.text[:500]
    assert response.json()["acceptedCount"] == 5
    assert response.json()["rejectedCount"] == 250
    assert sorted(entry.message for entry in stored) == [f"fresh {i}" for i in range(5)]


def test_rest_batch_rejects_reused_request_id(live):
    url = f"http://127.0.0.1:{live.gateway.http_port}/logs/batch"
    request_id = str(uuid.uuid4())

    def body(message: str, attributes: dict) -> dict:
        entry = {"service": "rest-reuse", "message": message}
        return {
            "entries": [{**entry, "attributes": attributes}],
            "requestId": request_id,
        }

    with httpx.Client(timeout=10) as client:
        first = client.post(url, json=body("first", {"a": "1", "b": "2"}))
        # The same entry with its attributes in another order is a resend.
        resent = client.post(url, json=body("first", {"b": "2", "a": "1"}))
        other = client.post(url, json=body("other", {}))

    stored = list_all(live.stub, services=["rest-reuse"])
    assert first.status_code == 200, first.text
    assert resent.status_code == 200, resent.text
    # A resend gets the first write's response, with its entry counted as
    # already stored.
    assert resent.json() == {**first.json(), "duplicateCount": 1}
    assert first.json().get("duplicateCount", 0) == 0
    assert other.status_code == 400, other.text
    assert "REQUEST_ID_REUSED" in other.text
    assert request_id in other.json()["error"]["message"]
    assert [entry.message for entry in stored] == ["first"]


# cluster


def test_cluster_table(loop_thread, base_config, tmp_path, capsys):
    running = LogsGateway(
        base_config,
        tmp_path / "gateway",
        loop_thread,
        log_shards=1,
        log_replicas=2,
        log_failover_seconds=1.0,
    )
    try:
        status_now = running.stub.GetClusterStatus(logs_pb2.GetClusterStatusRequest())
        (follower,) = status_now.shards[0].followers
        running.cluster.hosts[follower.node].stop(0)
        _wait_for_health(running.stub, logs_pb2.HEALTH_DEGRADED)

        status, out, err = run(capsys, running.address, "logs", "cluster")
    finally:
        running.close()

    assert status == 0, err
    assert "cluster health: degraded" in out
    assert f"{follower.node} (lag unknown, unreachable)" in out


def test_cluster_table_without_leader(loop_thread, base_config, tmp_path, capsys):
    # With a long failover time, the stopped leader stays the shard's leader,
    # so no node reports a last sequence to measure the follower against.
    running = LogsGateway(
        base_config,
        tmp_path / "gateway",
        loop_thread,
        log_shards=1,
        log_replicas=2,
        log_failover_seconds=600.0,
    )
    try:
        running.stub.WriteLogEntries(
            logs_pb2.WriteLogEntriesRequest(
                entries=[
                    logs_pb2.LogEntry(service="no-leader", message=f"m{i}")
                    for i in range(5)
                ]
            )
        )
        status_now = running.stub.GetClusterStatus(logs_pb2.GetClusterStatusRequest())
        leader = status_now.shards[0].leader
        (follower,) = status_now.shards[0].followers
        running.cluster.hosts[leader].stop(0)
        _wait_for_health(running.stub, logs_pb2.HEALTH_UNAVAILABLE)

        status, out, err = run(capsys, running.address, "logs", "cluster")
    finally:
        running.close()

    assert status == 0, err
    assert "cluster health: unavailable" in out
    assert f"{follower.node} (lag unknown, no leader)" in out
    assert "(lag 0" not in out


def test_cluster_timeout_names_log_service(capsys, monkeypatch):
    # A listening socket that never accepts behaves as a stopped (SIGSTOP)
    # gateway or router does: connections open, and no response comes.
    frozen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    frozen.bind(("127.0.0.1", 0))
    frozen.listen()
    monkeypatch.setattr(logs_commands, "DEFAULT_TIMEOUT", 1.0)
    address = f"127.0.0.1:{frozen.getsockname()[1]}"
    try:
        status, _, err = run(capsys, address, "logs", "cluster")
    finally:
        frozen.close()

    assert status == 1
    assert f"neither the gateway at {address} nor the log_service behind it" in err
    assert "within 1 s (DEADLINE_EXCEEDED)" in err
    assert "splitlog health" in err


def test_cluster_table_shows_snapshot_progress():
    status = logs_pb2.GetClusterStatusResponse(health=logs_pb2.HEALTH_DEGRADED)
    shard = status.shards.add(
        shard="shard-0", health=logs_pb2.HEALTH_DEGRADED, leader="node-a"
    )
    behind = shard.followers.add(node="node-c", reachable=True, lag_entries=40)
    behind.snapshot.last_sequence = 30
    behind.snapshot.received_entries = 1200

    table = _cluster_table(status)

    assert "node-c (lag 40, receiving snapshot through 30: 1200 entries)" in table


def test_cluster_table_shows_log_damage():
    status = logs_pb2.GetClusterStatusResponse(health=logs_pb2.HEALTH_DEGRADED)
    shard = status.shards.add(
        shard="shard-0", health=logs_pb2.HEALTH_DEGRADED, leader="node-a"
    )
    shard.leader_log_damage.first_lost_sequence = 1998
    shard.leader_log_damage.last_lost_sequence = 2002
    follower = shard.followers.add(node="node-b", reachable=True, lag_entries=5)
    follower.log_damage.first_lost_sequence = 71
    follower.log_damage.last_lost_sequence = 70

    table = _cluster_table(status)

    assert "node-a (lost entries 1998..2002 to WAL damage)" in table
    assert "node-b (lag 5, lost entries from 71 on to WAL damage)" in table


def test_cluster_table_shows_placement_states():
    status = logs_pb2.GetClusterStatusResponse(health=logs_pb2.HEALTH_SERVING)
    status.observe_time.FromSeconds(1_800_000_000)
    status.placements.add(
        strategy=logs_pb2.SHARDING_STRATEGY_TIME, shards=["shard-0"]
    ).time_bucket_width.FromSeconds(3600)
    current = status.placements.add(
        strategy=logs_pb2.SHARDING_STRATEGY_TIME, shards=["shard-0", "shard-1"]
    )
    current.time_bucket_width.FromSeconds(3600)
    current.start_time.FromSeconds(1_799_996_400)
    pending = status.placements.add(
        strategy=logs_pb2.SHARDING_STRATEGY_TIME,
        shards=["shard-0", "shard-1", "shard-2"],
    )
    pending.time_bucket_width.FromSeconds(3600)
    pending.start_time.FromSeconds(1_800_003_600)

    table = _cluster_table(status)
    rows = [
        re.split(r"\s{2,}", line)
        for line in table.split("placements, oldest first:\n")[1].splitlines()[1:]
    ]

    assert rows == [
        ["(oldest)", "earlier", "time", "1h", "shard-0"],
        [
            "2027-01-15T07:00:00.000000000Z",
            "in effect",
            "time",
            "1h",
            "shard-0, shard-1",
        ],
        [
            "2027-01-15T09:00:00.000000000Z",
            "pending, starts in 1h",
            "time",
            "1h",
            "shard-0, shard-1, shard-2",
        ],
    ]


def test_cluster_table_unavailable_shard():
    status = logs_pb2.GetClusterStatusResponse(health=logs_pb2.HEALTH_UNAVAILABLE)
    shard = status.shards.add(
        shard="shard-0", health=logs_pb2.HEALTH_UNAVAILABLE, leader_epoch=3
    )
    shard.followers.add(node="node-b", reachable=False, lag_entries=63477)

    table = _cluster_table(status)
    (row,) = [line for line in table.splitlines() if line.startswith("shard-0")]

    assert row.split()[:5] == ["shard-0", "unavailable", "-", "3", "-"]
    assert "node-b (lag unknown, unreachable)" in row
    assert "63477" not in row


def test_unreachable_gateway(capsys):
    status = main(["logs", "cluster", "--gateway", "127.0.0.1:9"])

    assert status == 1
    assert "cannot reach splitlog at 127.0.0.1:9" in capsys.readouterr().err


# retention


def _policy(stub) -> logs_pb2.RetentionPolicy:
    request = logs_pb2.GetRetentionPolicyRequest(name="retentionPolicy")
    return stub.GetRetentionPolicy(request).retention_policy


def _node_messages(running: LogsGateway, node: str, service: str) -> list[str]:
    """Return the messages of `service` that one log node stores."""
    address = f"127.0.0.1:{running.cluster.hosts[node].port}"
    with insecure_channel(address) as channel:
        response = node_grpc.LogNodeServiceStub(channel).QueryEntries(
            node_pb2.QueryEntriesRequest(
                shard="shard-0",
                limit=1_000_000,
                filter=node_pb2.EntryFilter(services=[service]),
            ),
            timeout=10,
        )
    return list(response.entries.messages)


def _wait_for_node_count(running, node: str, service: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while len(_node_messages(running, node, service)) != count:
        assert time.monotonic() < deadline, f"{node} never held {count} entries"
        time.sleep(0.1)


def test_ship_rerun_after_retention_deleted(
    loop_thread, base_config, tmp_path, capsys, shared_data
):
    running = LogsGateway(
        base_config,
        tmp_path / "gateway",
        loop_thread,
        log_shards=1,
        log_replicas=2,
        log_failover_seconds=1.0,
    )
    path = shared_data / "logs" / "Hadoop_2k.log"
    ship = ["logs", "ship", str(path), "--service", "hadoop2", "--batch-size", "20"]
    ship += ["--no-positions"]
    nodes = ["shard-0-a", "shard-0-b"]
    try:
        # The lines are from 2015, older than the default retention.
        kept = run(
            capsys, running.address, "logs", "retention", "set", "--default", "36500d"
        )
        first = run(capsys, running.address, *ship)
        expired = run(
            capsys, running.address, "logs", "retention", "set",
            "--service", "hadoop2=24h",
        )  # fmt: skip
        for node in nodes:
            _wait_for_node_count(running, node, "hadoop2", 0)
        cleared = run(
            capsys, running.address, "logs", "retention", "set",
            "--clear-service", "hadoop2",
        )  # fmt: skip
        second = run(capsys, running.address, *ship)
        again = run(capsys, running.address, *ship)
        held = {node: _node_messages(running, node, "hadoop2") for node in nodes}
        # The follower takes over, and its batch ids must match the leader's.
        leader = running.stub.GetClusterStatus(
            logs_pb2.GetClusterStatusRequest()
        ).shards[0]
        running.cluster.hosts[leader.leader].stop(0)
        _wait_for_health(running.stub, logs_pb2.HEALTH_DEGRADED)
        after_failover = run(capsys, running.address, *ship)
        stored = list_all(running.stub, services=["hadoop2"])
    finally:
        running.close()

    assert kept[0] == 0, kept[2]
    assert first[0] == 0, first[2]
    assert re.search(r"^stored: +2000$", first[1], re.M), first[1]
    assert expired[0] == 0, expired[2]
    assert cleared[0] == 0, cleared[2]
    assert second[0] == 0, second[2]
    assert re.search(r"^stored: +2000$", second[1], re.M), second[1]
    assert re.search(r"^already stored: +0$", second[1], re.M), second[1]
    assert re.search(r"^stored: +0$", again[1], re.M), again[1]
    assert re.search(r"^already stored: +2000$", again[1], re.M), again[1]
    assert [len(messages) for messages in held.values()] == [2000, 2000]
    assert held["shard-0-a"] == held["shard-0-b"]
    assert after_failover[0] == 0, after_failover[2]
    assert re.search(r"^stored: +0$", after_failover[1], re.M), after_failover[1]
    assert len(stored) == 2000


def test_retention_show_and_set(loop_thread, base_config, tmp_path, capsys):
    running = LogsGateway(base_config, tmp_path / "gateway", loop_thread)
    try:
        printed_status, printed, _ = run(capsys, running.address, "logs", "retention")
        set_status, changed, set_err = run(
            capsys, running.address, "logs", "retention", "set",
            "--default", "30d", "--service", "billing=90d", "--service", "audit=2h",
        )  # fmt: skip
        after_set = _policy(running.stub)
        cleared_status, _, cleared_err = run(
            capsys, running.address, "logs", "retention", "set",
            "--clear-service", "audit", "--service", "billing=1h",
        )  # fmt: skip
        after_clear = _policy(running.stub)
        json_status, as_json, _ = run(
            capsys, running.address, "logs", "retention", "--format", "json"
        )
    finally:
        running.close()

    assert printed_status == 0
    assert "default retention:" in printed
    assert "no service has a retention of its own" in printed
    assert set_status == 0, set_err
    assert "default retention: 30d" in changed
    assert re.search(r"^billing +90d$", changed, re.MULTILINE), changed
    assert after_set.default_retention.ToSeconds() == 30 * 24 * HOUR
    assert after_set.service_retentions["audit"].ToSeconds() == 2 * HOUR
    assert cleared_status == 0, cleared_err
    assert after_clear.default_retention.ToSeconds() == 30 * 24 * HOUR
    assert dict(after_clear.service_retentions) == {
        "billing": duration(HOUR),
    }
    assert json.loads(as_json)["serviceRetentions"] == {"billing": "3600s"}


def test_retention_shows_fraction_exactly(loop_thread, base_config, tmp_path, capsys):
    running = LogsGateway(base_config, tmp_path / "gateway", loop_thread)
    try:
        set_status, changed, set_err = run(
            capsys, running.address, "logs", "retention", "set",
            "--default", "86400.5s", "--service", "billing=3600.25s",
        )  # fmt: skip
        shown_status, shown, shown_err = run(
            capsys, running.address, "logs", "retention"
        )
        stored = _policy(running.stub)
    finally:
        running.close()

    assert set_status == 0, set_err
    assert shown_status == 0, shown_err
    assert stored.default_retention.ToNanoseconds() == 86400_500_000_000
    assert "default retention: 86400.5s" in changed
    assert "default retention: 86400.5s" in shown
    assert re.search(r"^billing +3600.25s$", shown, re.MULTILINE), shown


@pytest.mark.parametrize(
    ("args", "option"),
    [
        ([], "give --default, --service or --clear-service"),
        (["--default", "30m"], "--default"),
        (["--default", "soon"], "--default"),
        (["--service", "billing"], "--service"),
        (["--service", "a=1h", "--service", "a=2h"], "--service"),
        (["--service", "a=1h", "--clear-service", "a"], "--clear-service"),
    ],
)
def test_retention_set_invalid_values(capsys, args, option):
    status = main(["logs", "retention", "set", *args, "--gateway", "127.0.0.1:9"])
    err = capsys.readouterr().err

    assert status == 2
    assert option in err


@pytest.mark.parametrize("value", ["30m", "0s", "soon", "101y"])
def test_retention_set_names_minimum(capsys, value):
    status = main(
        ["logs", "retention", "set", "--service", f"billing={value}"]
        + ["--gateway", "127.0.0.1:9"]
    )
    err = capsys.readouterr().err

    assert status == 2
    assert "at least 1h" in err
    assert "90s" not in err


@pytest.mark.parametrize("service", INVALID_SERVICES)
def test_retention_set_invalid_service_name(live, capsys, service):
    before = live.stub.GetRetentionPolicy(
        logs_pb2.GetRetentionPolicyRequest(name="retentionPolicy")
    )

    status, _, err = run(
        capsys, live.address, "logs", "retention", "set", "--service",
        f"{service}=5d",
    )  # fmt: skip
    after = live.stub.GetRetentionPolicy(
        logs_pb2.GetRetentionPolicyRequest(name="retentionPolicy")
    )

    assert status == 2, err
    assert f"invalid value {service + '=5d'!r} for --service" in err
    assert "without control characters" in err
    assert after == before


def test_retention_set_service_with_equals(live, capsys):
    status, _, err = run(
        capsys, live.address, "logs", "retention", "set", "--service", "a=b=5d"
    )
    retentions = dict(_policy(live.stub).service_retentions)
    cleared, _, _ = run(
        capsys, live.address, "logs", "retention", "set", "--clear-service", "a=b"
    )

    assert status == 0, err
    assert retentions["a=b"].ToSeconds() == 5 * 24 * HOUR
    assert cleared == 0


def test_retention_clear_unknown_service(live, capsys):
    status, _, err = run(
        capsys, live.address, "logs", "retention", "set", "--clear-service", "nobody"
    )

    assert status == 2
    assert "nobody" in err
    assert "has no retention of its own" in err


def test_retention_set_needs_admin(live_with_auth, capsys, no_credential):
    plain = _sign_up(live_with_auth.address, "plain")
    admin = _sign_up(live_with_auth.address, "retention")
    _, admin_key = operator_admin_key(
        live_with_auth.gateway.config.data_dir, admin.user.name
    )
    # An administrator's own key with the log scopes only.
    with insecure_channel(live_with_auth.address) as channel:
        created = auth_grpc.AuthServiceStub(channel).CreateApiKey(
            auth_pb2.CreateApiKeyRequest(
                parent=admin.user.name,
                api_key=auth_pb2.ApiKey(
                    display_name="log-reader", scopes=["logs:write", "logs:read"]
                ),
            ),
            metadata=(("authorization", f"Bearer {admin_key}"),),
            timeout=10,
        )
    logs_key = created.secret

    read_status, shown, read_err = run(
        capsys, live_with_auth.address, "logs", "retention", "--token", logs_key
    )
    user_status, _, user_err = run(
        capsys, live_with_auth.address, "logs", "retention", "set",
        "--service", "retention-auth=48h", "--token", plain.tokens.access_token,
    )  # fmt: skip
    key_status, _, key_err = run(
        capsys, live_with_auth.address, "logs", "retention", "set",
        "--service", "retention-auth=48h", "--token", logs_key,
    )  # fmt: skip
    admin_status, changed, admin_err = run(
        capsys, live_with_auth.address, "logs", "retention", "set",
        "--service", "retention-auth=48h", "--token", admin_key,
    )  # fmt: skip

    assert read_status == 0, read_err
    assert "default retention:" in shown
    assert user_status == 1
    assert "PERMISSION_DENIED" in user_err
    assert key_status == 1
    assert "PERMISSION_DENIED" in key_err
    assert "admin" in key_err
    assert admin_status == 0, admin_err
    assert re.search(r"^retention-auth +2d$", changed, re.MULTILINE), changed


# closed output


def test_closed_stdout_ends_quietly(live):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        completed = subprocess.run(
            [str(SPLITLOG), "logs", "query", "--gateway", live.address],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("SPLITLOG_")},
        )
    finally:
        os.close(write_end)

    assert completed.returncode == 141
    assert completed.stderr == ""


# demo


def test_demo_logs_runs_every_step(live, capsys, no_credential, tmp_path):
    status, out, err = run(capsys, live.address, "demo", "logs")
    service = re.search(r"belong to the service (shop-\w+)", out)[1]
    stats = out.split("$ splitlog logs stats")[1].split("$ splitlog logs tail")[0]
    histogram = stats.split("START (step 1m)")[1].split("\n\n")[0]
    tail = out.split("$ splitlog logs tail")[1].split("$ splitlog logs cluster")[0]
    shown = re.findall(r"heartbeat \d from the demo", tail)
    stored = list_all(live.stub, services=[service], keyword="heartbeat")

    assert status == 0, err
    assert "send no credential" in out
    assert "$ splitlog auth" not in out
    assert "$ splitlog logs ship" in out
    assert "$ splitlog logs query" in out
    assert "$ splitlog logs stats" in out
    assert "$ splitlog logs tail" in out
    assert "$ splitlog logs cluster" in out
    # Minutes of the last 6, with the first and last clipped to the range.
    assert 6 <= len(histogram.strip().splitlines()[1:]) <= 7, histogram
    assert "writes 3 heartbeat entries, one a second" in " ".join(out.split())
    assert len(stored) == 3
    assert shown == [f"heartbeat {n} from the demo" for n in (1, 2, 3)], tail
    # The temporary sample file leaves no record in the user's positions file.
    assert not (tmp_path / "config" / "splitlog" / "ship-positions.json").exists()


def _sign_up(address: str, label: str) -> auth_pb2.SignUpResponse:
    with insecure_channel(address) as channel:
        return auth_grpc.AuthServiceStub(channel).SignUp(
            auth_pb2.SignUpRequest(
                user=users_pb2.User(
                    email=f"demo-{label}-{random_suffix()}@example.com",
                    display_name=label,
                ),
                password="a long enough passphrase",
            ),
            timeout=10,
        )


def _assert_logs_key_advice(err: str) -> None:
    assert "needs a credential with the logs:write and logs:read scopes" in err
    assert "splitlog admin-key USER_ID" in err
    assert (
        "splitlog auth keys create --name log-shipper --scope logs:write "
        "--scope logs:read"
    ) in err


def test_demo_logs_without_credential_stops(live_with_auth, capsys, no_credential):
    status, out, err = run(capsys, live_with_auth.address, "demo", "logs")

    assert status == 1
    assert "send no credential" in out
    assert "$ splitlog auth" not in out
    assert "UNAUTHENTICATED" in err
    _assert_logs_key_advice(err)


def test_demo_logs_plain_token_stops(live_with_auth, capsys, no_credential):
    token = _sign_up(live_with_auth.address, "plain").tokens.access_token

    status, out, err = run(
        capsys, live_with_auth.address, "demo", "logs", "--token", token
    )

    assert status == 1
    assert f"access token or API key of --token or {TOKEN_ENV}" in out
    assert "PERMISSION_DENIED" in err
    assert "'logs:read'" in err
    _assert_logs_key_advice(err)
    assert token not in out + err


def _create_key(
    running: LogsGateway, scopes: list[str]
) -> auth_pb2.CreateApiKeyResponse:
    """Create an API key with `scopes` for a new administrator."""
    signed_up = _sign_up(running.address, "admin")
    operator_admin_key(running.gateway.config.data_dir, signed_up.user.name)
    # The admin key makes the user's access token an administrator's, which
    # may create a key with the log scopes.
    with insecure_channel(running.address) as channel:
        return auth_grpc.AuthServiceStub(channel).CreateApiKey(
            auth_pb2.CreateApiKeyRequest(
                parent=signed_up.user.name,
                api_key=auth_pb2.ApiKey(display_name="log-shipper", scopes=scopes),
            ),
            metadata=(("authorization", f"Bearer {signed_up.tokens.access_token}"),),
            timeout=10,
        )


def test_demo_logs_sends_logs_key(live_with_auth, capsys, no_credential, monkeypatch):
    created = _create_key(live_with_auth, ["logs:write", "logs:read"])
    monkeypatch.setenv(TOKEN_ENV, created.secret)

    status, out, err = run(capsys, live_with_auth.address, "demo", "logs")

    assert status == 0, err
    assert f"access token or API key of --token or {TOKEN_ENV}" in out
    assert re.search(r"^stored: +10$", out, re.M), out
    assert "heartbeat 1 from the demo" in out
    assert created.secret not in out


def test_demo_logs_write_only_key_writes_nothing(
    live_with_auth, capsys, no_credential, monkeypatch
):
    created = _create_key(live_with_auth, ["logs:write"])
    monkeypatch.setenv(TOKEN_ENV, created.secret)

    status, out, err = run(capsys, live_with_auth.address, "demo", "logs")
    service = re.search(r"belong to the service (shop-\S+?),", out)

    assert status == 1
    assert "PERMISSION_DENIED" in err
    assert "'logs:read'" in err
    _assert_logs_key_advice(err)
    assert "$ splitlog logs ship" not in out
    assert service, out
    reader = _create_key(live_with_auth, ["logs:read"])
    with insecure_channel(live_with_auth.address) as channel:
        page = logs_grpc.LogsServiceStub(channel).ListLogEntries(
            logs_pb2.ListLogEntriesRequest(services=[service[1]]),
            metadata=(("authorization", f"Bearer {reader.secret}"),),
            timeout=10,
        )
    assert list(page.entries) == []


def test_ship_revoked_key_advice_order(live_with_auth, tmp_path, capsys, no_credential):
    admin = _sign_up(live_with_auth.address, "revoker")
    _, admin_key = operator_admin_key(
        live_with_auth.gateway.config.data_dir, admin.user.name
    )
    bearer = (("authorization", f"Bearer {admin_key}"),)
    with insecure_channel(live_with_auth.address) as channel:
        stub = auth_grpc.AuthServiceStub(channel)
        created = stub.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(
                parent=admin.user.name,
                api_key=auth_pb2.ApiKey(display_name="old", scopes=["logs:write"]),
            ),
            metadata=bearer,
            timeout=10,
        )
        stub.RevokeApiKey(
            auth_pb2.RevokeApiKeyRequest(name=created.api_key.name),
            metadata=bearer,
            timeout=10,
        )
    path = write_log(tmp_path, f"{line_time(5)} INFO one", f"{line_time(4)} INFO two")

    status, out, err = run(
        capsys, live_with_auth.address, "logs", "ship", str(path),
        "--service", "revoked-key", "--token", created.secret,
    )  # fmt: skip
    # The servers run in this process, so their log lines come first.
    lines = err[err.index("splitlog: error: ") :].splitlines()

    # The advice about the token follows the error it explains, and the
    # progress of the command comes last.
    assert status == 1
    assert len(lines) == 3, err
    assert "(UNAUTHENTICATED, CREDENTIAL_INVALID)" in lines[0]
    assert lines[1] == f"Check the token given by --token or {TOKEN_ENV}."
    assert lines[2].startswith("splitlog logs ship stopped at line 1 of ")
    assert lines[2].endswith("That is safe: what this run stored is not stored twice.")
    assert out == ""


def test_auth_servers_refuse_anonymous_call(live_with_auth, capsys, no_credential):
    # Checks that the demo tests above ran against servers that need a
    # credential.
    status, _, err = run(capsys, live_with_auth.address, "logs", "cluster")

    assert status == 1
    assert "UNAUTHENTICATED" in err


def test_safe_text_keeps_printable():
    assert safe_text("plain ü 日本 text") == "plain ü 日本 text"
    assert safe_text("a\tb\rc\x00d\x9be") == "a\\tb\\rc\\x00d\\x9be"
