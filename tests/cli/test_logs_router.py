"""`splitlog logs` against a real log router with one real log node.

The commands run in this process; the router and the node listen on
127.0.0.1. The tests check how the commands read times without an offset
and how they print stats.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog_cli.main import main
from tests.log_service.test_router_cluster import Cluster

ZONE = "Asia/Kolkata"
ZONE_OFFSET = timedelta(hours=5, minutes=30)


@pytest.fixture
def router(base_config):
    config = base_config.replace(
        log_shards=1, log_replicas=1, log_node_port=0, log_fsync=False, workers=4
    )
    running = Cluster(config)
    yield running
    running.close()


def _an_hour_ago() -> datetime:
    """Return a whole second about an hour ago, in UTC."""
    return datetime.fromtimestamp(int(time.time()) - 3600, UTC)


def _local(moment: datetime) -> str:
    """Return `moment` as wall-clock time in ZONE, without an offset."""
    return (moment + ZONE_OFFSET).strftime("%Y-%m-%dT%H:%M:%S")


def test_query_range_in_default_zone(router, monkeypatch, capsys):
    monkeypatch.setenv("SPLITLOG_LOG_DEFAULT_TIME_ZONE", ZONE)
    moment = _an_hour_ago()
    stamp = pb.LogEntry().timestamp
    stamp.FromDatetime(moment)
    router.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[pb.LogEntry(service="zoned", message="local", timestamp=stamp)]
        ),
        timeout=5,
    )
    since = _local(moment - timedelta(seconds=1))
    end = _local(moment + timedelta(seconds=1))

    status = main(
        ["logs", "query", "--service", "zoned", f"--since={since}", f"--end={end}"]
        + ["--format", "json", "--gateway", f"127.0.0.1:{router.router.port}"]
    )

    out = capsys.readouterr().out
    assert status == 0
    assert '"local"' in out


def test_ship_reads_lines_in_default_zone(router, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPLITLOG_LOG_DEFAULT_TIME_ZONE", ZONE)
    moment = _an_hour_ago()
    log = tmp_path / "app.log"
    log.write_text(f"{_local(moment).replace('T', ' ')} INFO shipped\n")

    status = main(
        ["logs", "ship", str(log), "--service", "shipped-zone"]
        + ["--gateway", f"127.0.0.1:{router.router.port}"]
    )

    assert status == 0, capsys.readouterr().err
    (stored,) = router.stub.ListLogEntries(
        pb.ListLogEntriesRequest(services=["shipped-zone"]), timeout=5
    ).entries
    assert stored.timestamp.ToDatetime(tzinfo=UTC) == moment


def test_stats_labels_counters_of_all_services(router, capsys):
    old = pb.LogEntry().timestamp
    old.FromDatetime(datetime.now(UTC) - timedelta(days=30))
    router.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[
                pb.LogEntry(service="counted", message="kept"),
                pb.LogEntry(service="other", message="too old", timestamp=old),
            ]
        ),
        timeout=5,
    )

    status = main(
        ["logs", "stats", "--service", "counted", "--since=-1h"]
        + ["--gateway", f"127.0.0.1:{router.router.port}"]
    )

    out = capsys.readouterr().out
    assert status == 0
    assert "entries:                       1\n" in out
    assert "accepted (all services):       1\n" in out
    assert "rejected (all services):       1\n" in out
    assert "timestamp_too_old" in out
