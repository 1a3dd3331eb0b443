"""Tests of the placement history: adding log shards to a cluster with data."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from log_service.app import build_router, router_data_dir
from log_service.placement import (
    CLOCK_MARGIN_SECONDS,
    PLACEMENT_FILE_NAME,
    Placement,
    PlacementHistory,
    PlacementRecord,
    check_placement,
)
from log_service.sharding import ServiceRing, ShardingHistory, TimeBuckets
from log_service.timefmt import format_time
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import (
    logs_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
)
from splitlog_cli.components import start_log_nodes
from splitlog_cli.main import main
from splitlog_runtime.config import SettingsError
from tests.ports import closed_address

NANOS = 1_000_000_000
MINUTE = 60 * NANOS
HOUR = 3600 * NANOS
# A Monday, 00:00 UTC, so that bucket boundaries fall on round numbers.
BASE = 1_767_571_200 * NANOS
SERVICES = [f"svc-{i}" for i in range(12)]


def timed(shards, bucket_seconds=60):
    return Placement("time", tuple(shards), time_bucket_seconds=bucket_seconds)


def ringed(shards):
    return Placement("service", tuple(shards), virtual_nodes=128)


# ShardingHistory.


def test_history_places_by_entry_timestamp():
    old = TimeBuckets(["a", "b"], MINUTE)
    new = TimeBuckets(["a", "b", "c"], MINUTE)
    history = ShardingHistory([old, new], [BASE], ["a", "b", "c"])

    for offset in range(-10, 10):
        stamp = BASE + offset * MINUTE + 5
        expected = (old if offset < 0 else new).shard_for("x", stamp)
        assert history.shard_for("x", stamp) == expected, offset
    assert history.shard_for("x", BASE - 1) == old.shard_for("x", BASE - 1)
    assert history.shard_for("x", BASE) == new.shard_for("x", BASE)


def test_history_runs_match_shard_for():
    history = ShardingHistory(
        [
            TimeBuckets(["a", "b"], MINUTE),
            TimeBuckets(["a", "b", "c"], MINUTE),
            TimeBuckets(["a", "b", "c", "d"], MINUTE),
        ],
        [BASE, BASE + 5 * MINUTE],
        ["a", "b", "c", "d"],
    )
    stamps = [BASE + offset * 20 * NANOS for offset in range(-30, 40)]
    stamps += [BASE - 1, BASE, BASE + 7, BASE - 3 * MINUTE]

    runs = history.shard_runs("x", stamps)

    assert runs[0][1] == 0
    assert runs[-1][2] == len(stamps)
    for (_, _, stop), (_, start, _) in zip(runs, runs[1:], strict=False):
        assert stop == start
    for (shard, _, _), (next_shard, _, _) in zip(runs, runs[1:], strict=False):
        assert shard != next_shard
    for shard, start, stop in runs:
        for index in range(start, stop):
            assert history.shard_for("x", stamps[index]) == shard, index


def test_history_query_reads_each_overlapping_placement():
    # Two shards before BASE, then three, with one bucket per minute.
    history = ShardingHistory(
        [TimeBuckets(["a", "b"], MINUTE), TimeBuckets(["a", "b", "c"], MINUTE)],
        [BASE],
        ["a", "b", "c"],
    )
    # BASE is minute bucket 29,459,520, which is even and a multiple of 3.
    assert (BASE // MINUTE) % 6 == 0

    before = history.shards_for_query([], BASE - MINUTE, BASE)
    after = history.shards_for_query([], BASE + 2 * MINUTE, BASE + 3 * MINUTE)
    across = history.shards_for_query([], BASE - MINUTE, BASE + MINUTE)
    unbounded = history.shards_for_query([], None, None)

    assert before == ["b"]
    assert after == ["c"]
    assert across == ["a", "b"]
    assert unbounded == ["a", "b", "c"]
    assert history.shards_for_query([], BASE, BASE) == []


def test_service_query_reads_each_ring():
    old = ServiceRing(["a", "b"])
    new = ServiceRing(["a", "b", "c"])
    history = ShardingHistory([old, new], [BASE], ["a", "b", "c"])
    moved = next(s for s in SERVICES if old.shard_for(s) != new.shard_for(s))

    both = history.shards_for_query([moved], BASE - HOUR, BASE + HOUR)
    before = history.shards_for_query([moved], BASE - HOUR, BASE)
    after = history.shards_for_query([moved], BASE, BASE + HOUR)

    assert set(both) == {old.shard_for(moved), new.shard_for(moved)}
    assert before == [old.shard_for(moved)]
    assert after == [new.shard_for(moved)]
    assert history.shard_for(moved, BASE - 1) == old.shard_for(moved)
    assert history.shard_for(moved, BASE) == new.shard_for(moved)


# check_placement.


def read_record(directory):
    return json.loads((directory / PLACEMENT_FILE_NAME).read_text())


def note_received(directory, history, timestamp):
    """Note the placements as a router does before it sends `timestamp`."""
    PlacementRecord(directory / PLACEMENT_FILE_NAME, history).note_timestamp(timestamp)


def test_first_start_records_one_placement(tmp_path):
    history = check_placement(tmp_path, timed(["s0", "s1"]), BASE, 600 * NANOS)

    assert history.placements == (timed(["s0", "s1"]),)
    assert history.starts == ()
    assert read_record(tmp_path)["version"] == 1
    assert read_record(tmp_path)["shards"] == ["s0", "s1"]
    assert read_record(tmp_path)["largest_log_max_future_seconds"] == 600


def test_added_shard_starts_after_future_limit(tmp_path):
    check_placement(tmp_path, timed(["s0", "s1"]), BASE, 600 * NANOS)
    now = BASE + 7 * NANOS

    history = check_placement(tmp_path, timed(["s0", "s1", "s2"]), now, 600 * NANOS)

    (start,) = history.starts
    earliest = now + (600 + CLOCK_MARGIN_SECONDS) * NANOS
    assert start >= earliest
    assert start - earliest < MINUTE
    assert start % MINUTE == 0
    assert history.placements == (timed(["s0", "s1"]), timed(["s0", "s1", "s2"]))
    record = read_record(tmp_path)
    assert record["version"] == 2
    assert [item["shards"] for item in record["placements"]] == [
        ["s0", "s1"],
        ["s0", "s1", "s2"],
    ]
    assert record["placements"][1]["effective_from_ns"] == start
    assert record["placements"][1]["effective_from"] == "2026-01-05T00:12:00Z"


def test_history_survives_later_starts(tmp_path):
    check_placement(tmp_path, ringed(["s0", "s1"]), BASE, 600 * NANOS)
    grown = check_placement(tmp_path, ringed(["s0", "s1", "s2"]), BASE, 600 * NANOS)
    recorded = (tmp_path / PLACEMENT_FILE_NAME).read_bytes()

    later = BASE + 2 * HOUR
    again = check_placement(tmp_path, ringed(["s2", "s0", "s1"]), later, 600 * NANOS)

    assert again.starts == grown.starts
    assert again.placements[0] == ringed(["s0", "s1"])
    assert again.latest == ringed(["s2", "s0", "s1"])
    assert (tmp_path / PLACEMENT_FILE_NAME).read_bytes() == recorded


def test_second_added_shard_appends_placement(tmp_path):
    check_placement(tmp_path, timed(["s0"]), BASE, 0)
    first = check_placement(tmp_path, timed(["s0", "s1"]), BASE, 0)
    note_received(tmp_path, first, first.starts[0])
    later = BASE + HOUR

    second = check_placement(tmp_path, timed(["s0", "s1", "s2"]), later, 0)

    assert len(second.placements) == 3
    assert second.starts[0] == first.starts[0]
    assert second.starts[1] > later
    assert second.received_entries == (True, False)
    assert PlacementHistory.from_json(read_record(tmp_path)) == second


def test_removed_shard_is_rejected(tmp_path):
    check_placement(tmp_path, timed(["s0", "s1"]), BASE, 0)
    grown = check_placement(tmp_path, timed(["s0", "s1", "s2"]), BASE, 0)
    note_received(tmp_path, grown, grown.starts[0])
    recorded = (tmp_path / PLACEMENT_FILE_NAME).read_bytes()
    later = BASE + HOUR

    with pytest.raises(SettingsError) as removed:
        check_placement(tmp_path, timed(["s0", "s1"]), later, 0)
    with pytest.raises(SettingsError) as replaced:
        check_placement(tmp_path, timed(["s0", "s2", "s3"]), later, 0)

    message = str(removed.value)
    assert "the recorded placements put entries on s2 as well" in message
    assert "The placement that added s2" in message
    assert "is in effect since 2026-01-05T00:01:00Z" in message
    assert "and it received entries." in message
    assert "A shard can be added but not removed" in message
    assert "every recorded shard (s0, s1, s2)" in message
    assert "Stored entries were placed on s1 by the first placement" in str(
        replaced.value
    )
    assert (tmp_path / PLACEMENT_FILE_NAME).read_bytes() == recorded


def test_pending_placement_with_entries_is_kept(tmp_path):
    check_placement(tmp_path, ringed(["s0", "s1"]), BASE, 600 * NANOS)
    grown = check_placement(tmp_path, ringed(["s0", "s1", "s2"]), BASE, 600 * NANOS)
    (start,) = grown.starts
    # 70 s later the router accepts timestamps past the start.
    later = BASE + 70 * NANOS
    note_received(tmp_path, grown, later + 600 * NANOS)
    recorded = (tmp_path / PLACEMENT_FILE_NAME).read_bytes()

    with pytest.raises(SettingsError) as removed:
        check_placement(tmp_path, ringed(["s0", "s1"]), later, 600 * NANOS)

    message = str(removed.value)
    assert "put entries on s2 as well" in message
    assert f"is pending until {format_time(start)} (in 590s)" in message
    assert "already received entries" in message
    assert "Stored entries were placed" not in message
    assert "every recorded shard (s0, s1, s2)" in message
    assert (tmp_path / PLACEMENT_FILE_NAME).read_bytes() == recorded


def test_pending_placement_of_older_record(tmp_path):
    check_placement(tmp_path, ringed(["s0", "s1"]), BASE, 600 * NANOS)
    grown = check_placement(tmp_path, ringed(["s0", "s1", "s2"]), BASE, 600 * NANOS)
    (start,) = grown.starts
    # A router version that noted no received entries wrote the record.
    record = read_record(tmp_path)
    del record["placements"][1]["received_entries"]
    (tmp_path / PLACEMENT_FILE_NAME).write_text(json.dumps(record))
    later = BASE + 70 * NANOS

    with pytest.raises(SettingsError) as removed:
        check_placement(tmp_path, ringed(["s0", "s1"]), later, 600 * NANOS)

    message = str(removed.value)
    assert f"is pending until {format_time(start)} (in 590s)" in message
    assert "may already contain entries" in message
    assert "up to 600s (log_max_future_seconds) ahead" in message
    assert "Stored entries were placed" not in message


def test_empty_placement_is_dropped_later(tmp_path):
    check_placement(tmp_path, ringed(["s0", "s1"]), BASE, 600 * NANOS)
    check_placement(tmp_path, ringed(["s0", "s1", "s2"]), BASE, 600 * NANOS)
    assert read_record(tmp_path)["placements"][1]["received_entries"] is False

    # Past the start, and past the window in which no timestamp can reach it.
    later = BASE + HOUR
    undone = check_placement(tmp_path, ringed(["s0", "s1"]), later, 600 * NANOS)

    assert undone.placements == (ringed(["s0", "s1"]),)
    assert undone.starts == ()
    assert read_record(tmp_path)["version"] == 1


def test_note_covers_each_started_placement(tmp_path):
    check_placement(tmp_path, timed(["s0"]), BASE, 0)
    check_placement(tmp_path, timed(["s0", "s1"]), BASE, 0)
    record = read_record(tmp_path)
    history = check_placement(tmp_path, timed(["s0", "s1"]), BASE, 0)
    note = PlacementRecord(tmp_path / PLACEMENT_FILE_NAME, history)
    (start,) = history.starts

    note.note_timestamp(start - 1)
    before = read_record(tmp_path)
    note.note_timestamp(start)
    after = read_record(tmp_path)

    assert before == record
    assert before["placements"][1]["received_entries"] is False
    assert after["placements"][1]["received_entries"] is True
    assert note.unreceived_from_ns is None


def test_pending_placement_can_be_undone(tmp_path):
    check_placement(tmp_path, timed(["s0", "s1"]), BASE, 600 * NANOS)
    check_placement(tmp_path, timed(["s0", "s1", "s2"]), BASE, 600 * NANOS)

    undone = check_placement(tmp_path, timed(["s0", "s1"]), BASE + NANOS, 600 * NANOS)

    assert undone.placements == (timed(["s0", "s1"]),)
    assert undone.starts == ()
    assert read_record(tmp_path)["version"] == 1


def test_lowered_future_limit_keeps_maximum(tmp_path):
    check_placement(tmp_path, timed(["s0", "s1"]), BASE, 600 * NANOS)
    grown = check_placement(tmp_path, timed(["s0", "s1", "s2"]), BASE, 600 * NANOS)
    # A start with a wider limit may accept entries past the new start.
    check_placement(tmp_path, timed(["s0", "s1", "s2"]), BASE, HOUR)
    # Only a record without received_entries notes depends on the limit.
    record = read_record(tmp_path)
    del record["placements"][1]["received_entries"]
    (tmp_path / PLACEMENT_FILE_NAME).write_text(json.dumps(record))

    with pytest.raises(ValueError) as removed:
        check_placement(tmp_path, timed(["s0", "s1"]), BASE + NANOS, NANOS)
    again = check_placement(
        tmp_path, timed(["s0", "s1", "s2", "s3"]), BASE + NANOS, NANOS
    )

    assert "put entries on s2 as well" in str(removed.value)
    assert again.starts[0] == grown.starts[0]
    assert again.starts[1] >= BASE + HOUR
    assert again.max_future_ns == HOUR
    assert read_record(tmp_path)["largest_log_max_future_seconds"] == 3600


@pytest.mark.parametrize(
    ("configured", "fragments"),
    [
        (
            ringed(["s0", "s1", "s2"]),
            ["log_sharding is 'service'", "placed with 'time'"],
        ),
        (
            timed(["s0", "s1", "s2"], bucket_seconds=600),
            ["log_time_bucket_seconds is 600", "placed with 60"],
        ),
    ],
)
def test_strategy_and_bucket_stay_fixed(tmp_path, configured, fragments):
    check_placement(tmp_path, timed(["s0", "s1"]), BASE, 0)

    with pytest.raises(ValueError) as changed:
        check_placement(tmp_path, configured, BASE, 0)

    message = str(changed.value)
    for fragment in fragments:
        assert fragment in message
    assert "Only shards can be added" in message
    assert "log_sharding=time, log_time_bucket_seconds=60" in message
    assert read_record(tmp_path)["version"] == 1


# A router and real log nodes, restarted with an added shard.


class Running:
    """Log nodes and a router started in this process on free ports."""

    def __init__(self, config):
        self.hosts = {}
        self.router = None
        try:
            self.config = start_log_nodes(config, self.hosts)
            self.router, self.coordinator = build_router(self.config, "127.0.0.1:0")
            assert self.coordinator.wait_until_ready(15)
        except BaseException:
            self.close()
            raise
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.router.port}")
        self.stub = logs_service_pb2_grpc.LogsServiceStub(self.channel)

    def node_messages(self, shard):
        """Return every message that the node of `shard` stores."""
        host = self.hosts[f"{shard}-a"]
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            response = node_service_pb2_grpc.LogNodeServiceStub(channel).QueryEntries(
                node_service_pb2.QueryEntriesRequest(shard=shard, limit=100_000),
                timeout=10,
            )
        return list(response.entries.messages)

    def close(self):
        if self.router is not None:
            self.channel.close()
            self.router.stop(0)
            self.coordinator.stop()
        for host in self.hosts.values():
            host.stop(0)


@contextlib.contextmanager
def running(config):
    cluster = Running(config)
    try:
        yield cluster
    finally:
        cluster.close()


def ts(ns):
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def entries(label, times):
    return [
        pb.LogEntry(
            service=SERVICES[index % len(SERVICES)],
            message=f"{label} {index}",
            timestamp=ts(at),
        )
        for index, at in enumerate(times)
    ]


def list_all(stub, page_token="", **fields):
    found, token = [], page_token
    while True:
        page = stub.ListLogEntries(
            pb.ListLogEntriesRequest(page_size=25, page_token=token, **fields)
        )
        found.extend(page.entries)
        token = page.next_page_token
        if not token:
            return found


def collect_tail(call, count, received):
    for response in call:
        received.extend(entry.message for entry in response.entries)
        if len(received) >= count:
            return


@pytest.mark.parametrize("strategy", ["time", "service"])
def test_added_shard_keeps_entries_once(base_config, strategy):
    config = base_config.replace(
        log_sharding=strategy,
        log_time_bucket_seconds=60,
        log_shards=2,
        log_replicas=1,
        log_node_port=0,
        log_failover_seconds=1.0,
        log_fsync=False,
        log_max_future_seconds=1,
    )
    record_path = router_data_dir(config) / PLACEMENT_FILE_NAME
    now = time.time_ns()
    first = pb.WriteLogEntriesRequest(
        entries=entries("old", [now - i * 20 * NANOS for i in range(36)]),
        request_id=str(uuid.uuid4()),
    )
    with running(config) as cluster:
        before = cluster.stub.TailLogEntries(pb.TailLogEntriesRequest(), timeout=30)
        resume_token = next(before).resume_token
        before.cancel()
        written = cluster.stub.WriteLogEntries(first)
        first_page = cluster.stub.ListLogEntries(
            pb.ListLogEntriesRequest(page_size=5, end_time=ts(now + 24 * HOUR))
        )

    grown = config.replace(log_shards=3)
    with running(grown) as cluster:
        resent = cluster.stub.WriteLogEntries(first)
        late = cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=entries("late", [now - i * 20 * NANOS - 7 for i in range(36)])
            )
        )
        status = cluster.stub.GetClusterStatus(pb.GetClusterStatusRequest())
    record = json.loads(record_path.read_text())
    start = record["placements"][1]["effective_from_ns"]

    # A wider future limit lets entries reach the new placement now.
    wider = grown.replace(log_max_future_seconds=3600)
    end = start + 40 * MINUTE
    with running(wider) as cluster:
        tail = cluster.stub.TailLogEntries(pb.TailLogEntriesRequest(), timeout=30)
        next(tail)
        tailed = []
        tail_reader = threading.Thread(target=collect_tail, args=(tail, 72, tailed))
        tail_reader.start()
        # Across the change, in one request and in one stream.
        across = cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=entries(
                    "new", [start + (i - 6) * 20 * NANOS for i in range(36)]
                )
            )
        )
        streamed = cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                streams=[
                    pb.LogStream(
                        service=SERVICES[0],
                        messages=[f"stream {i}" for i in range(36)],
                        timestamps_unix_nano=[
                            start + (i - 12) * 50 * NANOS for i in range(36)
                        ],
                    )
                ]
            )
        )
        tail_reader.join(20)
        tail.cancel()
        listed = list_all(cluster.stub, end_time=ts(end))
        by_service = {
            service: list_all(cluster.stub, services=[service], end_time=ts(end))
            for service in SERVICES
        }
        ranged = list_all(
            cluster.stub, start_time=ts(start - 5 * MINUTE), end_time=ts(end)
        )
        stats = cluster.stub.GetLogStats(
            pb.GetLogStatsRequest(start_time=ts(now - HOUR), end_time=ts(end))
        )
        resumed = cluster.stub.TailLogEntries(
            pb.TailLogEntriesRequest(resume_token=resume_token), timeout=30
        )
        replayed = []
        collect_tail(resumed, 144, replayed)
        resumed.cancel()
        rest = list_all(
            cluster.stub,
            end_time=ts(now + 24 * HOUR),
            page_token=first_page.next_page_token,
        )
        on_shard = {
            shard: cluster.node_messages(shard)
            for shard in ("shard-0", "shard-1", "shard-2")
        }
    stored = json.loads(record_path.read_text())

    with pytest.raises(ValueError) as removed:
        build_router(config, "127.0.0.1:0")

    assert written.accepted_count == 36
    assert resent.duplicate_count == 36
    assert late.accepted_count == 36
    assert [shard.shard for shard in status.shards] == [
        "shard-0",
        "shard-1",
        "shard-2",
    ]
    assert len(record["placements"]) == 2
    # Only old timestamps reached the router with three shards.
    assert record["placements"][1]["received_entries"] is False
    assert stored["placements"][1].pop("received_entries") is True
    record["placements"][1].pop("received_entries")
    assert stored["placements"] == record["placements"]
    assert stored["largest_log_max_future_seconds"] == 3600
    assert start > now + CLOCK_MARGIN_SECONDS * NANOS
    assert across.accepted_count == 36
    assert streamed.accepted_count == 36
    expected = collections.Counter(
        f"{label} {i}" for label in ("old", "late", "new", "stream") for i in range(36)
    )
    assert collections.Counter(e.message for e in listed) == expected
    assert stats.total_count == 144
    for service in SERVICES:
        messages = [e.message for e in by_service[service]]
        assert len(messages) == len(set(messages)), service
        assert all(e.service == service for e in by_service[service]), service
    assert sum(len(found) for found in by_service.values()) == 144
    assert collections.Counter(e.message for e in ranged) == collections.Counter(
        e.message for e in listed if e.timestamp.ToNanoseconds() >= start - 5 * MINUTE
    )
    assert collections.Counter(tailed) == collections.Counter(
        f"{label} {i}" for label in ("new", "stream") for i in range(36)
    )
    # The page token's snapshot contains only what was stored at the first page.
    paged = [e.message for e in first_page.entries] + [e.message for e in rest]
    assert collections.Counter(paged) == collections.Counter(
        f"old {i}" for i in range(36)
    )
    # A tail resumed from before the change reads the added shard from its
    # first entry.
    assert collections.Counter(replayed) == expected
    stored = collections.Counter(m for found in on_shard.values() for m in found)
    assert stored == expected
    # The new shard stores only entries from the new placement's start on.
    assert on_shard["shard-2"]
    new_times = {e.message: e.timestamp.ToNanoseconds() for e in listed}
    assert all(new_times[m] >= start for m in on_shard["shard-2"])
    message = str(removed.value)
    assert "put entries on shard-2 as well" in message
    assert "received entries" in message
    assert "can be added but not removed" in message


@pytest.mark.parametrize(
    ("strategy", "expected_strategy", "bucket_seconds"),
    [
        ("time", pb.SHARDING_STRATEGY_TIME, 60),
        ("service", pb.SHARDING_STRATEGY_SERVICE, 0),
    ],
)
def test_cluster_status_lists_placements(
    base_config, capsys, strategy, expected_strategy, bucket_seconds
):
    config = base_config.replace(
        log_sharding=strategy,
        log_time_bucket_seconds=60,
        log_shards=2,
        log_replicas=1,
        log_node_port=0,
        log_fsync=False,
        log_max_future_seconds=120,
    )
    with running(config) as cluster:
        before = cluster.stub.GetClusterStatus(pb.GetClusterStatusRequest())
    grown = config.replace(log_shards=3)
    with running(grown) as cluster:
        after = cluster.stub.GetClusterStatus(pb.GetClusterStatusRequest())
        # The CLI calls the router's LogsService as it calls the gateway's.
        address = f"127.0.0.1:{cluster.router.port}"
        exit_status = main(["logs", "cluster", "--gateway", address])
        out = capsys.readouterr().out
    record = json.loads((router_data_dir(config) / PLACEMENT_FILE_NAME).read_text())
    recorded_start = record["placements"][1]["effective_from_ns"]

    (only,) = before.placements
    first, added = after.placements
    assert only.strategy == expected_strategy
    assert list(only.shards) == ["shard-0", "shard-1"]
    assert only.time_bucket_width.seconds == bucket_seconds
    assert not only.HasField("start_time")
    assert first == only
    assert added.strategy == expected_strategy
    assert list(added.shards) == ["shard-0", "shard-1", "shard-2"]
    assert added.time_bucket_width.seconds == bucket_seconds
    assert added.start_time.ToNanoseconds() == recorded_start
    # The new placement waits for the future limit and the clock margin.
    assert (
        added.start_time.ToNanoseconds()
        > after.observe_time.ToNanoseconds() + (120 + CLOCK_MARGIN_SECONDS - 1) * NANOS
    )
    assert exit_status == 0
    placement_rows = [
        re.split(r"\s{2,}", line)
        for line in out.split("placements, oldest first:\n")[1].splitlines()[1:]
    ]
    bucket = "1m" if bucket_seconds else "-"
    oldest, pending = placement_rows
    assert oldest == ["(oldest)", "in effect", strategy, bucket, "shard-0, shard-1"]
    assert pending[0] == format_time(recorded_start, fixed_width=True)
    assert pending[1].startswith("pending, starts in ")
    assert pending[2:] == [strategy, bucket, "shard-0, shard-1, shard-2"]


def move_start(record_path, start):
    """Rewrite the start of the second placement in the record to `start`."""
    record = json.loads(record_path.read_text())
    record["placements"][1]["effective_from_ns"] = start
    record["placements"][1]["effective_from"] = format_time(start)
    record_path.write_text(json.dumps(record))


def ringed_config(base_config):
    return base_config.replace(
        log_sharding="service",
        log_shards=2,
        log_replicas=1,
        log_node_port=0,
        log_fsync=False,
        log_max_future_seconds=600,
    )


def test_router_drops_placement_without_entries(base_config):
    config = ringed_config(base_config)
    record_path = router_data_dir(config) / PLACEMENT_FILE_NAME
    with running(config):
        pass
    grown = config.replace(log_shards=3)
    with running(grown) as cluster:
        written = cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(entries=entries("now", [time.time_ns()] * 12))
        )
    # As after ten minutes: the router now accepts timestamps past the start.
    move_start(record_path, time.time_ns() + 30 * NANOS)

    with running(config) as cluster:
        status = cluster.stub.GetClusterStatus(pb.GetClusterStatusRequest())
        listed = list_all(cluster.stub)

    assert written.accepted_count == 12
    assert [list(placement.shards) for placement in status.placements] == [
        ["shard-0", "shard-1"]
    ]
    assert len(listed) == 12
    assert json.loads(record_path.read_text())["version"] == 1


def test_router_keeps_placement_with_entries(base_config):
    config = ringed_config(base_config)
    record_path = router_data_dir(config) / PLACEMENT_FILE_NAME
    with running(config):
        pass
    grown = config.replace(log_shards=3)
    with running(grown):
        pass
    start = time.time_ns() + 30 * NANOS
    move_start(record_path, start)
    with running(grown) as cluster:
        written = cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=entries("early", [start + i * NANOS for i in range(12)])
            )
        )
        on_added_shard = cluster.node_messages("shard-2")
    recorded = json.loads(record_path.read_text())

    with pytest.raises(SettingsError) as removed:
        build_router(config, "127.0.0.1:0")
    served = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitlog_cli",
            "serve",
            "log_service",
            "--data-dir",
            str(config.data_dir),
            "--log-service-port",
            "0",
            "--log-sharding",
            "service",
            "--log-nodes",
            f"shard-0=shard-0-a@{closed_address()};"
            f"shard-1=shard-1-a@{closed_address()}",
            "--auth-required",
            "false",
        ],
        env={
            key: value
            for key, value in os.environ.items()
            if not key.startswith("SPLITLOG_")
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        # Should the check fail, the router starts, and the timeout ends it.
        timeout=60,
    )

    assert written.accepted_count == 12
    assert on_added_shard
    assert recorded["placements"][1]["received_entries"] is True
    message = str(removed.value)
    assert "put entries on shard-2 as well" in message
    assert f"is pending until {format_time(start)} (in " in message
    assert "already received entries" in message
    assert served.returncode == 1
    assert "Traceback" not in served.stderr
    lines = served.stderr.splitlines()
    assert [line for line in lines if "shard-2" in line] == lines[-1:]
    assert lines[-1].startswith(
        "splitlog: error: log_service failed to start: the shards (log_shards or "
        "log_nodes) are shard-0, shard-1, but the recorded placements put entries "
        "on shard-2 as well."
    )
    assert "already received entries" in lines[-1]
