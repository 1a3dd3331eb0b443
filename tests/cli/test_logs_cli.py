"""`splitlog logs` and `splitlog demo logs` against a LogsService on 127.0.0.1.

The peer is a small in-memory LogsService that stores written entries and
records every request. It replaces the log router, so these tests check
what the commands send and how they print the responses.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog_cli.client.logs import safe_text
from splitlog_cli.main import main


def _unavailable_with_retry_delay():
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(50)
    detail = any_pb2.Any()
    detail.Pack(retry)
    status = status_pb2.Status(
        code=code_pb2.UNAVAILABLE, message="shard has no leader", details=[detail]
    )
    return rpc_status.to_status(status)


class MemoryLogs(logs_grpc.LogsServiceServicer):
    """In-memory LogsService that serves every read from a list of entries."""

    def __init__(self) -> None:
        self.entries: list[logs_pb2.LogEntry] = []
        self.requests: list[object] = []
        self.reject_messages_with = "REJECT-ME"
        # Whether a tail stays open for new entries until the client cancels.
        self.tail_follows = False
        self.lock = threading.Lock()
        # How many write calls to fail with UNAVAILABLE, as in a failover.
        self.unavailable_responses = 0

    def WriteLogEntries(self, request, context):
        response = logs_pb2.WriteLogEntriesResponse()
        with self.lock:
            self.requests.append(request)
            if self.unavailable_responses:
                self.unavailable_responses -= 1
                context.abort_with_status(_unavailable_with_retry_delay())
            for index, entry in enumerate(request.entries):
                if self.reject_messages_with in entry.message:
                    response.rejected_entries.add(
                        index=index,
                        reason=logs_pb2.REJECTION_REASON_INVALID_FIELD,
                        field="message",
                        description="planned rejection",
                    )
                    continue
                self.entries.append(entry)
        response.rejected_count = len(response.rejected_entries)
        response.accepted_count = len(request.entries) - response.rejected_count
        return response

    def WriteLogEntry(self, request, context):
        with self.lock:
            self.entries.append(request.entry)
        return logs_pb2.WriteLogEntryResponse(entry=request.entry)

    def ListLogEntries(self, request, context):
        with self.lock:
            self.requests.append(request)
            start = int(request.page_token or 0)
            page = self.entries[start : start + request.page_size]
        token = str(start + len(page)) if start + len(page) < len(self.entries) else ""
        return logs_pb2.ListLogEntriesResponse(entries=page, next_page_token=token)

    def TailLogEntries(self, request, context):
        with self.lock:
            self.requests.append(request)
            entries = list(self.entries)
        yield logs_pb2.TailLogEntriesResponse(entries=entries, resume_token="t1")
        sent = len(entries)
        while self.tail_follows and context.is_active():
            time.sleep(0.05)
            with self.lock:
                entries = self.entries[sent:]
            sent += len(entries)
            if entries:
                yield logs_pb2.TailLogEntriesResponse(entries=entries)

    def GetLogStats(self, request, context):
        with self.lock:
            self.requests.append(request)
        response = logs_pb2.GetLogStatsResponse(total_count=3)
        response.severity_counts.add(severity=logs_pb2.SEVERITY_ERROR, count=1)
        response.severity_counts.add(severity=logs_pb2.SEVERITY_INFO, count=2)
        response.service_counts.add(service="shop", count=3)
        response.histogram_step.FromSeconds(60)
        bucket = response.histogram.add(count=3)
        bucket.start_time.FromSeconds(1_700_000_000)
        response.ingest_counters.accepted_count = 3
        return response

    def GetClusterStatus(self, request, context):
        response = logs_pb2.GetClusterStatusResponse(health=logs_pb2.HEALTH_DEGRADED)
        shard = response.shards.add(
            shard="shard-0",
            health=logs_pb2.HEALTH_DEGRADED,
            leader="node-a",
            leader_epoch=3,
            last_sequence=42,
        )
        shard.followers.add(node="node-b", reachable=False, lag_entries=7)
        behind = shard.followers.add(node="node-c", reachable=True, lag_entries=40)
        behind.snapshot.last_sequence = 30
        behind.snapshot.received_entries = 1200
        return response


@pytest.fixture
def peer():
    servicer = MemoryLogs()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def run(capsys, address: str, *args: str) -> tuple[int, str, str]:
    status = main([*args, "--gateway", address])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_log(tmp_path, *lines: str):
    path = tmp_path / "app.log"
    path.write_text("\r\n".join(lines))
    return path


def test_ship_counts_and_batches(peer, tmp_path, capsys):
    servicer, address = peer
    path = write_log(
        tmp_path,
        "2024-05-01 10:00:00 INFO one",
        "2024-05-01 10:00:01 WARN two",
        "2024-05-01 10:00:02 ERROR REJECT-ME three",
        "2024-05-01 10:00:03 INFO four",
        "2024-05-01 10:00:04 INFO five",
    )

    status, out, err = run(
        capsys, address, "logs", "ship", str(path), "--service", "shop",
        "--batch-size", "2", "--format", "json",
    )  # fmt: skip
    summary = json.loads(out)

    assert status == 0, err
    assert summary["batchCount"] == "3"
    assert summary["acceptedCount"] == "4"
    assert summary["rejectedCount"] == "1"
    assert summary["rejectedEntries"][0]["index"] == "2"
    assert [len(request.entries) for request in servicer.requests] == [2, 2, 1]
    assert len({request.request_id for request in servicer.requests}) == 3
    assert [entry.severity for entry in servicer.entries[:2]] == [
        logs_pb2.SEVERITY_INFO,
        logs_pb2.SEVERITY_WARN,
    ]
    assert {entry.service for entry in servicer.entries} == {"shop"}


def test_ship_resends_batch_after_unavailable(peer, tmp_path, capsys):
    servicer, address = peer
    servicer.unavailable_responses = 2
    path = write_log(tmp_path, "2024-05-01 10:00:00 INFO one")

    status, out, err = run(capsys, address, "logs", "ship", str(path), "--service", "s")

    assert status == 0, err
    assert [entry.message for entry in servicer.entries] == [
        "2024-05-01 10:00:00 INFO one"
    ]
    assert len(servicer.requests) == 3
    assert len({request.request_id for request in servicer.requests}) == 1


def test_ship_table_output(peer, tmp_path, capsys):
    servicer, address = peer
    path = write_log(tmp_path, "2024-05-01 10:00:00 INFO one")

    status, out, err = run(capsys, address, "logs", "ship", str(path), "--service", "s")

    assert status == 0, err
    assert "accepted: 1" in out
    assert "rejected: 0" in out


def test_ship_missing_file(peer, tmp_path, capsys):
    servicer, address = peer

    status, out, err = run(
        capsys, address, "logs", "ship", str(tmp_path / "nope.log"), "--service", "s"
    )

    assert status == 2
    assert "nope.log" in err
    assert servicer.requests == []


@pytest.mark.parametrize("path", ["/dev/zero", "."])
def test_ship_rejects_device_and_directory(peer, path, capsys):
    servicer, address = peer

    status, out, err = run(capsys, address, "logs", "ship", path, "--service", "s")

    assert status == 2
    assert f"cannot read {path}: it is " in err
    assert servicer.requests == []


def test_ship_unknown_zone(peer, tmp_path, capsys):
    servicer, address = peer
    path = write_log(tmp_path, "2024-05-01 10:00:00 INFO one")

    status, out, err = run(
        capsys,
        address,
        "logs",
        "ship",
        str(path),
        "--service",
        "s",
        "--zone",
        "Nowhere",
    )

    assert status == 2
    assert "--zone" in err
    assert "Nowhere" in err


def test_query_builds_request(peer, capsys):
    servicer, address = peer

    status, out, err = run(
        capsys, address, "logs", "query", "--service", "a", "--service", "b",
        "--min-severity", "warning", "--keyword", "timeout", "--attr", "rpc=Get",
        "--since", "2024-05-01T00:00:00Z", "--end", "2024-05-02T00:00:00Z",
        "--newest-first", "--limit", "5",
    )  # fmt: skip
    (request,) = servicer.requests

    assert status == 0, err
    assert list(request.services) == ["a", "b"]
    assert request.min_severity == logs_pb2.SEVERITY_WARN
    assert request.keyword == "timeout"
    assert list(request.attribute_filters) == ["rpc=Get"]
    assert request.start_time.seconds == 1714521600
    assert request.end_time.seconds == 1714608000
    assert request.order_by == "timestamp desc"
    assert request.page_size == 5


def test_query_follows_pages_to_limit(peer, capsys):
    servicer, address = peer
    servicer.entries = [
        logs_pb2.LogEntry(service="s", message=f"m{number}") for number in range(7)
    ]

    status, out, err = run(
        capsys, address, "logs", "query", "--limit", "5", "--format", "json"
    )
    messages = [entry["message"] for entry in json.loads(out)["entries"]]

    assert status == 0, err
    assert messages == ["m0", "m1", "m2", "m3", "m4"]


def test_query_table_escapes_terminal_codes(peer, capsys):
    servicer, address = peer
    forged = "ok\n2024-01-01T00:00:00Z  fatal  bank  -  forged\x1b[31mred\u202e"
    servicer.entries = [
        logs_pb2.LogEntry(service="s", message=forged, severity=logs_pb2.SEVERITY_INFO)
    ]

    status, out, err = run(capsys, address, "logs", "query")
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
        (("--attr", "novalue"), "--attr"),
        (("--since", "yesterday-ish"), "--since"),
        (("--limit", "0"), "--limit"),
        (("--since", "2024-05-02T00:00:00Z", "--end", "2024-05-01T00:00:00Z"), "--end"),
    ],
)
def test_query_invalid_values(peer, capsys, args, option):
    servicer, address = peer

    status, out, err = run(capsys, address, "logs", "query", *args)

    assert status == 2
    assert option in err
    assert servicer.requests == []


def test_tail_prints_entries(peer, capsys):
    servicer, address = peer
    servicer.entries = [logs_pb2.LogEntry(service="s", message="line\x07one")]

    status, out, err = run(
        capsys, address, "logs", "tail", "--keyword", "line", "--duration", "2s"
    )
    (request,) = servicer.requests

    assert status == 0, err
    assert "line\\x07one" in out
    assert request.keyword == "line"


def test_tail_json_lines(peer, capsys):
    servicer, address = peer
    servicer.entries = [logs_pb2.LogEntry(service="s", message=f"m{n}") for n in (1, 2)]

    status, out, err = run(capsys, address, "logs", "tail", "--format", "json")
    messages = [json.loads(line)["message"] for line in out.splitlines()]

    assert status == 0, err
    assert messages == ["m1", "m2"]


def test_stats_step_and_table(peer, capsys):
    servicer, address = peer

    status, out, err = run(capsys, address, "logs", "stats", "--step", "5m")
    (request,) = servicer.requests

    assert status == 0, err
    assert request.histogram_step.seconds == 300
    assert "entries:" in out
    assert "error" in out
    assert "shop" in out
    assert "step 1m" in out


def test_cluster_table(peer, capsys):
    servicer, address = peer

    status, out, err = run(capsys, address, "logs", "cluster")

    assert status == 0, err
    assert "cluster health: degraded" in out
    assert "node-b (lag 7, unreachable)" in out
    assert "node-c (lag 40, receiving snapshot through 30: 1200 entries)" in out


def test_unreachable_gateway(capsys):
    status = main(["logs", "cluster", "--gateway", "127.0.0.1:9"])

    assert status == 1
    assert "cannot reach splitlog at 127.0.0.1:9" in capsys.readouterr().err


def test_demo_logs_runs_every_step(peer, capsys):
    servicer, address = peer
    servicer.tail_follows = True

    status, out, err = run(capsys, address, "demo", "logs")

    assert status == 0, err
    assert "$ splitlog logs ship" in out
    assert "$ splitlog logs query" in out
    assert "$ splitlog logs stats" in out
    assert "$ splitlog logs tail" in out
    assert "$ splitlog logs cluster" in out
    assert any("heartbeat" in entry.message for entry in servicer.entries)
    assert "heartbeat 1 from the demo" in out


def test_safe_text_keeps_printable():
    assert safe_text("plain ü 日本 text") == "plain ü 日本 text"
    assert safe_text("a\tb\rc\x00d\x9be") == "a\\tb\\rc\\x00d\\x9be"
