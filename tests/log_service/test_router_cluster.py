"""End-to-end tests: a router and 2 shards x 2 log nodes in this process."""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from log_service.app import build_router
from log_service.sharding import sharder_from_config
from log_service.tokens import Cursor, PageToken, encode_page_token
from log_service.topology import topology_from_config
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import (
    logs_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
)
from splitlog_cli.components import start_log_nodes
from tests.log_service.router_support import (
    details_of,
    encode_payload,
    encode_rehashed,
    token_payload,
)

NANOS = 1_000_000_000


class Cluster:
    def __init__(self, config):
        self.config = config
        self.hosts = {}
        try:
            self.router_config = start_log_nodes(config, self.hosts)
        except BaseException:
            for host in self.hosts.values():
                host.stop(0)
            raise
        self.nodes = list(self.hosts.values())
        self.topology = topology_from_config(self.router_config)
        self.router, self.coordinator = build_router(self.router_config, "127.0.0.1:0")
        assert self.coordinator.wait_until_ready(15)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.router.port}")
        self.stub = logs_service_pb2_grpc.LogsServiceStub(self.channel)

    def node_host(self, node_id):
        return self.hosts[node_id]

    def restart_router(self):
        """Replace the router by a new one, which has forgotten every request."""
        self.channel.close()
        self.router.stop(0)
        self.coordinator.stop()
        self.router, self.coordinator = build_router(self.router_config, "127.0.0.1:0")
        assert self.coordinator.wait_until_ready(15)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.router.port}")
        self.stub = logs_service_pb2_grpc.LogsServiceStub(self.channel)

    def close(self):
        self.channel.close()
        self.router.stop(0)
        for host in self.nodes:
            host.stop(0)


def cluster_config(base_config, **settings):
    """Return the settings of 2 shards x 2 log nodes on free ports, and `settings`."""
    return base_config.replace(
        log_shards=2,
        log_replicas=2,
        log_node_port=0,
        log_failover_seconds=1.0,
        log_fsync=False,
        workers=8,
        **settings,
    )


@pytest.fixture
def cluster(base_config):
    running = Cluster(cluster_config(base_config))
    yield running
    running.close()


def ts(ns):
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def entry(service="expenses", message="hello", at=None, **kwargs):
    if at is not None:
        kwargs["timestamp"] = ts(at)
    return pb.LogEntry(service=service, message=message, **kwargs)


def list_all(stub, **fields):
    entries, token = [], ""
    while True:
        page = stub.ListLogEntries(pb.ListLogEntriesRequest(page_token=token, **fields))
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries


def test_write_then_list_and_stats(cluster):
    now = time.time_ns()
    services = ["expenses", "users", "balances", "gateway"]
    entries = [
        entry(
            services[i % 4],
            f"message {i}",
            at=now - i * NANOS,
            severity=pb.SEVERITY_WARN if i % 3 == 0 else pb.SEVERITY_INFO,
        )
        for i in range(40)
    ]
    entries.append(pb.LogEntry(message="no service"))

    written = cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))
    listed = list_all(cluster.stub, page_size=7)
    stats = cluster.stub.GetLogStats(
        pb.GetLogStatsRequest(start_time=ts(now - 60 * NANOS), end_time=ts(now + NANOS))
    )

    assert written.accepted_count == 40
    assert written.rejected_count == 1
    assert written.rejected_entries[0].index == 40
    assert [e.message for e in listed] == [f"message {i}" for i in range(40)]
    assert stats.total_count == 40
    assert [c.severity for c in stats.severity_counts] == [
        pb.SEVERITY_WARN,
        pb.SEVERITY_INFO,
    ]
    assert stats.severity_counts[0].count == 14
    assert {c.service: c.count for c in stats.service_counts} == dict.fromkeys(
        services, 10
    )
    assert sum(b.count for b in stats.histogram) == 40
    assert stats.ingest_counters.accepted_count == 40
    assert stats.ingest_counters.rejected_count == 1


def test_list_oldest_first_and_filters(cluster):
    now = time.time_ns()
    entries = [
        entry(
            "expenses",
            f"m{i}",
            at=now - (10 - i) * NANOS,
            attributes={"rpc": "Get" if i % 2 else "Put"},
        )
        for i in range(10)
    ]
    entries.append(
        entry("users", "Disk FULL", at=now - NANOS, severity=pb.SEVERITY_ERROR)
    )
    cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))

    oldest = list_all(cluster.stub, services=["expenses"], order_by="timestamp")
    gets = list_all(cluster.stub, attribute_filters=["rpc=Get"])
    errors = list_all(cluster.stub, min_severity=pb.SEVERITY_WARN)
    keyword = list_all(cluster.stub, keyword="disk full")

    assert [e.message for e in oldest] == [f"m{i}" for i in range(10)]
    assert len(gets) == 5
    assert [e.message for e in errors] == ["Disk FULL"]
    assert [e.message for e in keyword] == ["Disk FULL"]


def test_attribute_key_with_equals_sign(cluster):
    now = time.time_ns()
    entries = [
        entry("eq-keys", "key a=b", at=now - 3 * NANOS, attributes={"a=b": "c"}),
        entry("eq-keys", "key a", at=now - 2 * NANOS, attributes={"a": "b=c"}),
        entry("eq-keys", "key a\\", at=now - NANOS, attributes={"a\\": "b=c"}),
    ]
    cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))
    escaped = pb.AttributeCondition(key="a=b", value="c")

    def listed(**fields) -> list[str]:
        found = list_all(cluster.stub, services=["eq-keys"], **fields)
        return [e.message for e in found]

    def counted(**fields) -> int:
        request = pb.GetLogStatsRequest(services=["eq-keys"], **fields)
        return cluster.stub.GetLogStats(request).total_count

    by_escape = listed(attribute_filters=["a\\=b=c"])
    by_condition = listed(attribute_conditions=[escaped])
    by_plain_key = listed(attribute_filters=["a=b=c"])
    by_backslash_key = listed(attribute_filters=["a\\\\=b=c"])
    both_forms = listed(attribute_filters=["a\\=b=c"], attribute_conditions=[escaped])
    contradicting = listed(attribute_filters=["a=b=c"], attribute_conditions=[escaped])

    assert by_escape == ["key a=b"]
    assert by_condition == ["key a=b"]
    assert by_plain_key == ["key a"]
    assert by_backslash_key == ["key a\\"]
    assert both_forms == ["key a=b"]
    assert contradicting == []
    assert counted(attribute_filters=["a\\=b=c"]) == 1
    assert counted(attribute_conditions=[escaped]) == 1
    assert counted(attribute_filters=["a=b=c"]) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"attribute_filters": ["a\\=b=c"]},
        {"attribute_conditions": [pb.AttributeCondition(key="a=b", value="c")]},
    ],
)
def test_tail_attribute_key_with_equals_sign(cluster, fields):
    call = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["eq-tail"], **fields), timeout=30
    )
    next(call)
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[
                entry("eq-tail", "other key", attributes={"a": "b=c"}),
                entry("eq-tail", "key a=b", attributes={"a=b": "c"}),
            ]
        )
    )
    received = []
    for response in call:
        received.extend(e.message for e in response.entries)
        if received:
            break
    call.cancel()

    assert received == ["key a=b"]


def test_write_entry_returns_stored_entry(cluster):
    response = cluster.stub.WriteLogEntry(
        pb.WriteLogEntryRequest(
            entry=pb.LogEntry(service="users", message="ERROR: boom")
        )
    )

    assert response.entry.severity == pb.SEVERITY_ERROR
    assert response.entry.timestamp.seconds > 0
    assert response.entry.observed_timestamp == response.entry.timestamp


def test_pagination_with_ties_and_ongoing_ingest(cluster):
    moment = time.time_ns() - 5 * NANOS
    services = [f"svc-{i}" for i in range(8)]
    batch = [entry(services[i % 8], f"tie {i}", at=moment) for i in range(1000)]
    cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=batch))

    seen, token, pages = [], "", 0
    fields = {"end_time": ts(moment + NANOS), "page_size": 90}
    while True:
        page = cluster.stub.ListLogEntries(
            pb.ListLogEntriesRequest(page_token=token, **fields)
        )
        seen.extend(e.message for e in page.entries)
        pages += 1
        # More entries with the same timestamp arrive between pages.
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=[entry(s, "late", at=moment) for s in services]
            )
        )
        token = page.next_page_token
        if not token:
            break

    assert pages == 12
    assert len(seen) == 1000
    assert sorted(seen) == sorted(f"tie {i}" for i in range(1000))


@pytest.fixture(params=["service", "time"])
def cluster_by_sharding(request, base_config):
    config = cluster_config(
        base_config, log_sharding=request.param, log_time_bucket_seconds=600
    )
    running = Cluster(config)
    yield running
    running.close()


def spread_batch(label: str, count: int, start: int, span: int) -> list[pb.LogEntry]:
    """Return `count` entries of one service, spread evenly over `span` ns."""
    step = span // count
    return [
        entry("spread", f"{label} {i}", at=start + i * step + len(label))
        for i in range(count)
    ]


def test_pages_list_concurrent_batches_whole(cluster_by_sharding):
    cluster = cluster_by_sharding
    sharder = sharder_from_config(cluster.router_config, cluster.topology)
    hour = 3600 * NANOS
    start = time.time_ns() - hour - 60 * NANOS
    seeded = []
    for index in range(3):
        batch = spread_batch(f"seed-{index}", 1000, start, hour)
        cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=batch))
        seeded += [e.message for e in batch]
    # Entries of each batch on each shard, which a listing returns whole or
    # not at all.
    part_sizes: collections.Counter = collections.Counter()
    stop = threading.Event()
    stored: list[str] = []
    errors: list[grpc.RpcError] = []

    def write_batches() -> None:
        try:
            while not stop.is_set():
                label = f"batch-{len(stored)}"
                batch = spread_batch(label, 200, start, hour)
                for item in batch:
                    at = item.timestamp.ToNanoseconds()
                    part_sizes[(label, sharder.shard_for(item.service, at))] += 1
                cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=batch))
                stored.append(label)
        except grpc.RpcError as error:
            errors.append(error)

    writer = threading.Thread(target=write_batches)
    writer.start()
    listings = []
    try:
        for _ in range(2):
            listing = list_all(cluster.stub, page_size=200, services=["spread"])
            listings.append(listing)
    finally:
        stop.set()
        writer.join(timeout=30)

    assert errors == []
    assert stored, "the writer stored no batch during the listings"
    for listing in listings:
        messages = [e.message for e in listing]
        parts = collections.Counter(
            (
                e.message.rsplit(" ", 1)[0],
                sharder.shard_for(e.service, e.timestamp.ToNanoseconds()),
            )
            for e in listing
            if e.message.startswith("batch-")
        )
        cut = {key: n for key, n in parts.items() if n != part_sizes[key]}
        assert len(messages) == len(set(messages))
        assert set(seeded) <= set(messages)
        assert cut == {}


def test_page_token_with_changed_filter_is_invalid(cluster):
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[entry(message=str(i)) for i in range(3)])
    )
    page = cluster.stub.ListLogEntries(pb.ListLogEntriesRequest(page_size=1))

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.ListLogEntries(
            pb.ListLogEntriesRequest(
                page_size=1, keyword="x", page_token=page.next_page_token
            )
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in caught.value.details()


def test_page_token_missing_shard_is_invalid(cluster):
    shards = cluster.topology.shard_ids
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[entry(f"svc-{i}", str(i)) for i in range(8)])
    )
    page = cluster.stub.ListLogEntries(pb.ListLogEntriesRequest(page_size=1))
    payload = token_payload(page.next_page_token)
    assert sorted(payload["s"]) == sorted(shards)
    dropped = shards[1]
    del payload["s"][dropped]
    token = encode_rehashed(payload, "page token")

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.ListLogEntries(
            pb.ListLogEntriesRequest(page_size=1, page_token=token)
        )
    following = cluster.stub.ListLogEntries(
        pb.ListLogEntriesRequest(page_size=1, page_token=page.next_page_token)
    )

    details = caught.value.details()
    infos = details_of(caught.value, error_details_pb2.ErrorInfo)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert infos[0].reason == "INVALID_PAGE_TOKEN"
    assert infos[0].metadata["field"] == "page_token"
    assert details.startswith("page_token: ")
    assert f"no position for shard(s) {dropped}" in details
    assert "start the listing again without a page token" in details
    assert len(following.entries) == 1


def ten_seconds_of_entries(cluster) -> tuple[int, dict]:
    """Write m0..m9 one second apart, ending a second ago; return the time and
    a listing request of m0..m4 two per page."""
    now = time.time_ns()
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[
                entry("svc", f"m{i}", at=now - (10 - i) * NANOS) for i in range(10)
            ]
        ),
        timeout=10,
    )
    request = {
        "services": ["svc"],
        "start_time": ts(now - 20 * NANOS),
        "end_time": ts(now - 5 * NANOS),
        "order_by": "timestamp",
        "page_size": 2,
    }
    return now, request


@pytest.mark.parametrize("with_end_time", [True, False])
def test_page_token_with_edited_end_is_invalid(cluster, with_end_time):
    now, request = ten_seconds_of_entries(cluster)
    if not with_end_time:
        del request["end_time"]
    page = cluster.stub.ListLogEntries(pb.ListLogEntriesRequest(**request))
    payload = token_payload(page.next_page_token)
    payload["e"] = now + NANOS if with_end_time else now - 5 * NANOS

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.ListLogEntries(
            pb.ListLogEntriesRequest(page_token=encode_payload(payload), **request)
        )

    infos = details_of(caught.value, error_details_pb2.ErrorInfo)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert infos[0].reason == "INVALID_PAGE_TOKEN"
    assert caught.value.details().startswith("page_token: ")
    assert "does not match its check hash, so it was altered" in (
        caught.value.details()
    )


def test_page_token_end_must_match_request(cluster):
    now, request = ten_seconds_of_entries(cluster)
    page = cluster.stub.ListLogEntries(pb.ListLogEntriesRequest(**request))
    payload = token_payload(page.next_page_token)
    # A token rebuilt with a later end time and its own check hash, as a
    # caller who read the router's code could build it.
    timestamp, shard, sequence = payload["c"]
    rebuilt = encode_page_token(
        PageToken(
            payload["f"], Cursor(timestamp, shard, sequence), payload["s"], now + NANOS
        )
    )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.ListLogEntries(
            pb.ListLogEntriesRequest(page_token=rebuilt, **request)
        )
    listed = list_all(cluster.stub, **request)

    infos = details_of(caught.value, error_details_pb2.ErrorInfo)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert infos[0].reason == "INVALID_PAGE_TOKEN"
    assert caught.value.details().startswith("page_token: ")
    assert f"differs from the request's end_time {now - 5 * NANOS} ns" in (
        caught.value.details()
    )
    assert [e.message for e in listed] == [f"m{i}" for i in range(5)]


def test_page_token_lists_empty_shards(cluster):
    shards = cluster.topology.shard_ids
    # One service's entries all go to one shard, so the other stays empty.
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[entry("one", str(i)) for i in range(5)])
    )

    page = cluster.stub.ListLogEntries(pb.ListLogEntriesRequest(page_size=2))
    snapshot = token_payload(page.next_page_token)["s"]
    listed = list_all(cluster.stub, page_size=2)

    assert sorted(snapshot) == sorted(shards)
    assert sorted(snapshot.values())[0] == 0
    assert sorted(e.message for e in listed) == [str(i) for i in range(5)]


def test_time_window_start_inclusive_end_exclusive(cluster):
    # An hour ago at hh:mm:ss.590180708, like 17:05:00.590180708Z.
    hour_ago = time.time_ns() - 3600 * NANOS
    at = hour_ago - hour_ago % NANOS + 590_180_708
    second = at - at % NANOS
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[entry(message="x", at=at)])
    )

    def count(start, end):
        return len(list_all(cluster.stub, start_time=ts(start), end_time=ts(end)))

    assert count(at, at + 1) == 1
    assert count(at - 1, at) == 0
    assert count(second - 60 * NANOS, second) == 0
    assert count(second, second + 600_000_000) == 1
    assert count(at + 1, second + NANOS) == 0


def test_stats_buckets_add_up_with_unaligned_window(cluster):
    now = time.time_ns()
    base = now - 600 * NANOS
    entries = [
        entry(f"s{i % 3}", str(i), at=base + i * 7_300_000_001) for i in range(70)
    ]
    cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))
    start = base + 1_234_567_890
    end = base + 70 * 7_300_000_001 - 2_345_678_901

    stats = cluster.stub.GetLogStats(
        pb.GetLogStatsRequest(
            start_time=ts(start),
            end_time=ts(end),
            histogram_step=duration_pb2.Duration(seconds=60),
        )
    )
    auto = cluster.stub.GetLogStats(
        pb.GetLogStatsRequest(start_time=ts(start), end_time=ts(end))
    )

    inside = sum(1 for i in range(70) if start <= base + i * 7_300_000_001 < end)
    assert stats.total_count == inside
    assert sum(b.count for b in stats.histogram) == inside
    assert stats.histogram[0].start_time.ToNanoseconds() == start
    assert all(
        b.start_time.ToNanoseconds() % (60 * NANOS) == 0 for b in stats.histogram[1:]
    )
    assert stats.histogram_step.seconds == 60
    assert sum(b.count for b in auto.histogram) == inside
    assert len(auto.histogram) <= 61


def test_list_and_stats_accept_extreme_valid_times(cluster):
    cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=[entry()]))
    year_1 = timestamp_pb2.Timestamp(seconds=-62_135_596_800)
    year_9999 = timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999)
    step = duration_pb2.Duration(seconds=100 * 365 * 86400)

    everything = cluster.stub.ListLogEntries(
        pb.ListLogEntriesRequest(start_time=year_1, end_time=year_9999)
    )
    future = cluster.stub.ListLogEntries(pb.ListLogEntriesRequest(start_time=year_9999))
    stats = cluster.stub.GetLogStats(
        pb.GetLogStatsRequest(
            start_time=year_1, end_time=year_9999, histogram_step=step
        )
    )

    assert [item.message for item in everything.entries] == ["hello"]
    assert list(future.entries) == []
    assert stats.total_count == 1
    assert sum(bucket.count for bucket in stats.histogram) == 1


def test_retried_entry_returns_stored_times(cluster):
    request = pb.WriteLogEntryRequest(
        entry=entry("timeless", "no time of its own"), request_id=str(uuid.uuid4())
    )

    first = cluster.stub.WriteLogEntry(request).entry
    time.sleep(0.05)
    retried = cluster.stub.WriteLogEntry(request).entry

    stored = list_all(cluster.stub, services=["timeless"])
    assert len(stored) == 1
    assert retried.timestamp == first.timestamp
    assert retried.observed_timestamp == first.observed_timestamp
    assert retried.timestamp == stored[0].timestamp
    assert retried.observed_timestamp == stored[0].observed_timestamp


def test_retry_with_same_request_id_stores_once(cluster):
    request_id = str(uuid.uuid4())
    entries = [entry(f"svc-{i}", f"once {i}") for i in range(20)]

    first = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=entries, request_id=request_id)
    )
    second = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=entries, request_id=request_id)
    )

    assert first.accepted_count == second.accepted_count == 20
    assert first.duplicate_count == 0
    assert second.duplicate_count == 20
    assert len(list_all(cluster.stub, keyword="once")) == 20


def test_retry_counts_duplicates_not_accepted(cluster):
    request_id = str(uuid.uuid4())
    # Twenty services, so the write has a part for each of the two shards.
    entries = [entry(f"svc-{i}", f"counted {i}") for i in range(20)]
    request = pb.WriteLogEntriesRequest(entries=entries, request_id=request_id)
    start = time.time_ns()

    def counters():
        window = pb.GetLogStatsRequest(
            start_time=ts(start), end_time=ts(time.time_ns() + NANOS)
        )
        return cluster.stub.GetLogStats(window).ingest_counters

    cluster.stub.WriteLogEntries(request)
    after_first = counters()
    retried = cluster.stub.WriteLogEntries(request)
    after_retry = counters()
    cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries[:3]))
    after_new = counters()

    assert retried.accepted_count == 20  # a retry gets the first write's response
    assert after_first.accepted_count == 20
    assert after_first.duplicate_count == 0
    assert after_retry.accepted_count == 20
    assert after_retry.duplicate_count == 20
    # Without a request id the same entries are new entries.
    assert after_new.accepted_count == 23
    assert after_new.duplicate_count == 20
    assert len(list_all(cluster.stub, keyword="counted")) == 23


DAY_SECONDS = 24 * 3600


def set_service_retentions(stub, services: list[str], days: int) -> None:
    """Replace the per-service retentions with `days` for each of `services`."""
    update = pb.RetentionPolicy(name="retentionPolicy")
    for service in services:
        update.service_retentions[service].seconds = days * DAY_SECONDS
    stub.UpdateRetentionPolicy(
        pb.UpdateRetentionPolicyRequest(
            retention_policy=update,
            update_mask=field_mask_pb2.FieldMask(paths=["service_retentions"]),
        )
    )


def test_retry_stores_entries_valid_after_retention_raised(cluster):
    now = time.time_ns()
    ten_days_ago = now - 10 * DAY_SECONDS * NANOS
    services = [f"raised-{i}" for i in range(10)]
    # Old and recent entries alternate, on services of both shards, so each
    # shard's part has gaps where the old entries were rejected.
    entries = []
    for i, service in enumerate(services):
        entries.append(entry(service, f"raised old {i}", at=ten_days_ago + i))
        entries.append(entry(service, f"raised new {i}", at=now - i))
    # A stream with an old entry is stored entry by entry, and once every
    # entry is valid, as one block of columns.
    stream = pb.LogStream(
        service="raised-stream",
        timestamps_unix_nano=[ten_days_ago] * 4 + [now - i for i in range(16)],
        messages=[f"raised stream {i}" for i in range(20)],
    )
    request = pb.WriteLogEntriesRequest(
        entries=entries, streams=[stream], request_id=str(uuid.uuid4())
    )
    window = pb.GetLogStatsRequest(
        start_time=ts(now - NANOS), end_time=ts(time.time_ns() + 60 * NANOS)
    )

    first = cluster.stub.WriteLogEntries(request)
    set_service_retentions(cluster.stub, [*services, "raised-stream"], days=30)
    retry = cluster.stub.WriteLogEntries(request)
    again = cluster.stub.WriteLogEntries(request)
    stored = list_all(cluster.stub, keyword="raised", start_time=ts(ten_days_ago))
    counters = cluster.stub.GetLogStats(window).ingest_counters

    assert (first.accepted_count, first.rejected_count) == (26, 14)
    assert first.duplicate_count == 0
    assert (retry.accepted_count, retry.rejected_count) == (40, 0)
    assert retry.duplicate_count == 26
    assert again.accepted_count == 40
    assert again.duplicate_count == 40
    assert sorted(e.message for e in stored) == sorted(
        [e.message for e in entries] + list(stream.messages)
    )
    assert counters.accepted_count == 40
    assert counters.duplicate_count == 66


def reason_of(error: grpc.RpcError) -> str:
    return details_of(error, error_details_pb2.ErrorInfo)[0].reason


def test_reused_request_id_other_entries_rejected(cluster):
    request_id = str(uuid.uuid4())
    first = [entry(f"svc-{i}", f"first {i}") for i in range(20)]
    other = [entry(f"svc-{i}", f"other {i}") for i in range(20)]
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=first, request_id=request_id)
    )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(entries=other, request_id=request_id)
        )
    resent = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=first, request_id=request_id)
    )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "REQUEST_ID_REUSED"
    assert caught.value.details().startswith(f"request_id: '{request_id}'")
    assert "new UUID" in caught.value.details()
    assert resent.accepted_count == 20
    assert list_all(cluster.stub, keyword="other") == []
    assert len(list_all(cluster.stub, keyword="first")) == 20


def test_request_ids_after_router_restart(cluster):
    retried, reused = str(uuid.uuid4()), str(uuid.uuid4())
    first = [entry(f"svc-{i}", f"retried {i}") for i in range(20)]
    before = [entry(f"svc-{i}", f"before {i}") for i in range(20)]
    after = [entry(f"svc-{i}", f"after {i}") for i in range(20)]
    for entries, request_id in ((first, retried), (before, reused)):
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(entries=entries, request_id=request_id)
        )

    cluster.restart_router()
    resent = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=first, request_id=retried)
    )
    other = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=after, request_id=reused)
    )

    # The new router has no record of either id. The nodes still find the
    # resend's batches, so it is stored once. The other entries under a used
    # id are not taken for a retry, so they are stored, not silently dropped.
    assert resent.accepted_count == other.accepted_count == 20
    assert len(list_all(cluster.stub, keyword="retried")) == 20
    assert len(list_all(cluster.stub, keyword="before")) == 20
    assert len(list_all(cluster.stub, keyword="after")) == 20


def test_reused_request_id_one_entry_rejected(cluster):
    request_id = str(uuid.uuid4())
    cluster.stub.WriteLogEntry(
        pb.WriteLogEntryRequest(entry=entry(message="single a"), request_id=request_id)
    )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.WriteLogEntry(
            pb.WriteLogEntryRequest(
                entry=entry(message="single b"), request_id=request_id
            )
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "REQUEST_ID_REUSED"
    assert list_all(cluster.stub, keyword="single b") == []


def test_reused_request_id_in_stream_rejected(cluster):
    request_id = str(uuid.uuid4())
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[entry(message="streamed a")], request_id=request_id
        )
    )

    def requests():
        yield pb.StreamLogEntriesRequest(
            entries=[entry(message="streamed b")], request_id=request_id
        )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.StreamLogEntries(requests())

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "REQUEST_ID_REUSED"
    assert list_all(cluster.stub, keyword="streamed b") == []


def test_request_id_digest_ignores_attribute_order(cluster):
    request_id = str(uuid.uuid4())
    forward = entry(message="ordered")
    forward.attributes["a"] = "1"
    forward.attributes["b"] = "2"
    backward = entry(message="ordered")
    backward.attributes["b"] = "2"
    backward.attributes["a"] = "1"

    first = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[forward], request_id=request_id)
    )
    second = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[backward], request_id=request_id)
    )

    assert first.accepted_count == second.accepted_count == 1
    assert len(list_all(cluster.stub, keyword="ordered")) == 1


def test_rejected_batch_leaves_request_id_free(cluster):
    request_id = str(uuid.uuid4())
    too_many = [entry(message="big")] * (cluster.config.log_max_batch_entries + 1)

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(entries=too_many, request_id=request_id)
        )
    response = cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[entry(message="small")], request_id=request_id
        )
    )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert response.accepted_count == 1


def test_concurrent_writes_and_resends_store_once(cluster):
    # Many writes at once make the router send several of them to a shard
    # in one call. Each keeps its own request id on the nodes.
    request_ids = [str(uuid.uuid4()) for _ in range(24)]
    accepted = []
    lock = threading.Lock()

    def write(index: int) -> None:
        # Writes index and index + 12 are the same request: one is a resend.
        key = index % 12
        entries = [entry(f"svc-{i}", f"group {key} {i}") for i in range(5)]
        request = pb.WriteLogEntriesRequest(
            entries=entries, request_id=request_ids[key]
        )
        response = cluster.stub.WriteLogEntries(request, timeout=30)
        with lock:
            accepted.append(response.accepted_count)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stored = list_all(cluster.stub, keyword="group")
    assert accepted == [5] * 24
    assert len(stored) == 60
    assert len({e.message for e in stored}) == 60


def test_small_writes_start_no_threads(cluster, monkeypatch):
    # gRPC waits for a call's future on a thread that it starts whenever no
    # other call of the channel runs, so calls made one at a time would
    # each start one. The router sends small parts from a thread per shard
    # in blocking calls instead.
    started = []
    start = threading.Thread.start

    def counting_start(thread):
        started.append(thread.name)
        start(thread)

    request = pb.WriteLogEntriesRequest(
        entries=[entry(f"svc-{i}", f"one at a time {i}") for i in range(8)]
    )
    cluster.stub.WriteLogEntries(request, timeout=30)
    monkeypatch.setattr(threading.Thread, "start", counting_start)
    began = time.monotonic()
    for _ in range(40):
        cluster.stub.WriteLogEntries(request, timeout=30)
    elapsed = time.monotonic() - began
    by_writes = list(started)
    # The coordinator's polls of the four nodes start threads of their own,
    # more on a slow machine, where the writes take longer: count those for
    # as long again without writes.
    started.clear()
    time.sleep(elapsed)
    by_polls = list(started)
    monkeypatch.undo()

    # 40 writes to both shards would start 80 threads.
    assert len(by_writes) - len(by_polls) < 20, (by_writes, by_polls)


def test_stream_counts_indexes_across_messages(cluster):
    def requests():
        yield pb.StreamLogEntriesRequest(entries=[entry(message="a"), pb.LogEntry()])
        yield pb.StreamLogEntriesRequest(entries=[pb.LogEntry(), entry(message="b")])

    response = cluster.stub.StreamLogEntries(requests())

    assert response.batch_count == 2
    assert response.accepted_count == 2
    assert [r.index for r in response.rejected_entries] == [1, 2]


def test_stream_resent_counts_duplicates(cluster):
    # Many one-entry messages in flight at once, so parts of several of them
    # share one AppendBatches call.
    requests = [
        pb.StreamLogEntriesRequest(
            entries=[entry(f"svc-{i % 4}", f"resent {i}")], request_id=f"resent-{i}"
        )
        for i in range(64)
    ]
    start = time.time_ns()

    first = cluster.stub.StreamLogEntries(iter(requests))
    again = cluster.stub.StreamLogEntries(iter(requests))
    window = pb.GetLogStatsRequest(
        start_time=ts(start), end_time=ts(time.time_ns() + NANOS)
    )
    counters = cluster.stub.GetLogStats(window).ingest_counters

    assert first.accepted_count == again.accepted_count == 64
    assert first.duplicate_count == 0
    assert again.duplicate_count == 64
    assert counters.accepted_count == 64
    assert counters.duplicate_count == 64
    assert len(list_all(cluster.stub, keyword="resent")) == 64


def test_tail_receives_new_entries_and_resumes(cluster):
    call = cluster.stub.TailLogEntries(pb.TailLogEntriesRequest(services=["tailed"]))
    first = next(call)
    received = []

    def write_later():
        time.sleep(0.3)
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=[entry("tailed", f"t{i}") for i in range(5)]
            )
        )

    writer = threading.Thread(target=write_later)
    writer.start()
    token = first.resume_token
    for response in call:
        received.extend(e.message for e in response.entries)
        token = response.resume_token
        if len(received) >= 5:
            break
    call.cancel()
    writer.join()
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[entry("tailed", "after")])
    )
    resumed = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["tailed"], resume_token=token)
    )
    later = []
    for response in resumed:
        later.extend(e.message for e in response.entries)
        if later:
            break
    resumed.cancel()

    assert received == [f"t{i}" for i in range(5)]
    assert later == ["after"]


def test_cluster_status_serving(cluster):
    status = cluster.stub.GetClusterStatus(pb.GetClusterStatusRequest())

    assert status.health == pb.HEALTH_SERVING
    assert [s.leader for s in status.shards] == ["shard-0-a", "shard-1-a"]
    assert [f.node for f in status.shards[1].followers] == ["shard-1-b"]


def test_failover_keeps_every_acknowledged_entry(cluster):
    acked = []
    for i in range(10):
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=[entry(f"svc-{j}", f"before {i}-{j}") for j in range(4)]
            )
        )
        acked += [f"before {i}-{j}" for j in range(4)]
    leader = cluster.coordinator.state("shard-0").leader
    cluster.node_host(leader).stop(0)

    saw_unavailable = False
    deadline = time.monotonic() + 15
    i = 0
    while time.monotonic() < deadline:
        batch = [entry(f"svc-{j}", f"after {i}-{j}") for j in range(8)]
        try:
            cluster.stub.WriteLogEntries(
                pb.WriteLogEntriesRequest(entries=batch, request_id=f"fo-{i}")
            )
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert details_of(error, error_details_pb2.RetryInfo)
            saw_unavailable = True
            time.sleep(0.2)
            continue
        acked += [e.message for e in batch]
        i += 1
        if saw_unavailable and i >= 3:
            break

    stored = [e.message for e in list_all(cluster.stub, page_size=1000)]
    assert cluster.coordinator.state("shard-0").leader != leader
    assert cluster.coordinator.state("shard-0").epoch == 2
    assert saw_unavailable
    assert i >= 3
    assert sorted(stored) == sorted(acked)


def test_otlp_export_with_sdk_exporter(cluster):
    exporter = OTLPLogExporter(
        endpoint=f"127.0.0.1:{cluster.router.port}", insecure=True
    )
    provider = LoggerProvider(resource=Resource.create({"service.name": "otlp-app"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    python_logger = logging.getLogger("tests.otlp_export")
    python_logger.propagate = False
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    python_logger.addHandler(handler)

    python_logger.warning("exported by otlp", extra={"user": "7"})
    provider.shutdown()
    python_logger.removeHandler(handler)
    stored = list_all(cluster.stub, services=["otlp-app"])

    assert [e.message for e in stored] == ["exported by otlp"]
    assert stored[0].severity == pb.SEVERITY_WARN
    assert stored[0].attributes["user"] == "7"


def _placement_entries(now: int) -> list:
    # Several services across several hours, so that both strategies spread
    # them over both shards.
    return [
        entry(service=f"placed-{i % 5}", message=f"m{i}", at=now - i * 1_800 * NANOS)
        for i in range(20)
    ]


def _restart_router_with(cluster, config):
    """Stop the router and start one with `config` on the same data."""
    cluster.channel.close()
    cluster.router.stop(0)
    cluster.coordinator.stop()
    cluster.router_config = config
    cluster.router, cluster.coordinator = build_router(config, "127.0.0.1:0")
    assert cluster.coordinator.wait_until_ready(15)
    cluster.channel = grpc.insecure_channel(f"127.0.0.1:{cluster.router.port}")
    cluster.stub = logs_service_pb2_grpc.LogsServiceStub(cluster.channel)


def test_router_rejects_changed_sharding(cluster):
    now = time.time_ns()
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=_placement_entries(now))
    )
    before = sorted(e.message for e in list_all(cluster.stub, services=["placed-1"]))
    original = cluster.router_config
    cluster.channel.close()
    cluster.router.stop(0)
    cluster.coordinator.stop()

    with pytest.raises(ValueError) as by_time:
        build_router(
            original.replace(log_sharding="time", log_time_bucket_seconds=600),
            "127.0.0.1:0",
        )
    with pytest.raises(ValueError) as by_shards:
        build_router(
            original.replace(log_nodes=cluster.topology.to_setting().split(";")[0]),
            "127.0.0.1:0",
        )
    cluster.router_config = original
    cluster.router, cluster.coordinator = build_router(original, "127.0.0.1:0")
    assert cluster.coordinator.wait_until_ready(15)
    cluster.channel = grpc.insecure_channel(f"127.0.0.1:{cluster.router.port}")
    cluster.stub = logs_service_pb2_grpc.LogsServiceStub(cluster.channel)
    after = sorted(e.message for e in list_all(cluster.stub, services=["placed-1"]))

    message = str(by_time.value)
    assert "log_sharding is 'time'" in message
    assert "placed with 'service'" in message
    assert "log_sharding=service" in message
    assert "empty data directories" in message
    assert "Stored entries were placed on shard-1 by the first placement" in str(
        by_shards.value
    )
    assert before == sorted(f"m{i}" for i in range(1, 20, 5))
    assert after == before


def test_router_rejects_changed_time_bucket(base_config):
    config = cluster_config(
        base_config, log_sharding="time", log_time_bucket_seconds=3600
    )
    running = Cluster(config)
    try:
        _restart_router_with(running, running.router_config)
        with pytest.raises(ValueError) as changed:
            _restart_router_with(
                running, running.router_config.replace(log_time_bucket_seconds=60)
            )
    finally:
        running.close()

    message = str(changed.value)
    assert "log_time_bucket_seconds is 60" in message
    assert "placed with 3600" in message


def test_batch_stored_again_after_retention(base_config):
    # One shard, so that the pass that deletes one batch covers the other.
    config = base_config.replace(
        log_shards=1,
        log_replicas=2,
        log_node_port=0,
        log_failover_seconds=1.0,
        log_fsync=False,
        workers=8,
    )
    running = Cluster(config)
    two_days_ago = time.time_ns() - 2 * DAY_SECONDS * NANOS

    def request(service: str, request_id: str) -> pb.WriteLogEntriesRequest:
        entries = [
            entry(service=service, message=f"{service} {i}", at=two_days_ago + i)
            for i in range(5)
        ]
        return pb.WriteLogEntriesRequest(entries=entries, request_id=request_id)

    kept = request("kept", str(uuid.uuid4()))
    expiring = request("expiring", str(uuid.uuid4()))
    try:
        running.stub.WriteLogEntries(kept)
        running.stub.WriteLogEntries(expiring)
        set_service_retentions(running.stub, ["expiring"], 1)
        deadline = time.monotonic() + 20
        while list_all(running.stub, services=["expiring"]):
            assert time.monotonic() < deadline, "retention never deleted the batch"
            time.sleep(0.1)
        kept_again = running.stub.WriteLogEntries(kept)
        set_service_retentions(running.stub, [], 1)
        stored_again = running.stub.WriteLogEntries(expiring)
        resent = running.stub.WriteLogEntries(expiring)
        expiring_now = list_all(running.stub, services=["expiring"])
        kept_now = list_all(running.stub, services=["kept"])
    finally:
        running.close()

    # The kept batch still has its entries, so a resend stores nothing.
    assert kept_again.duplicate_count == 5
    assert len(kept_now) == 5
    assert stored_again.duplicate_count == 0
    assert stored_again.accepted_count == 5
    assert resent.duplicate_count == 5
    assert sorted(e.message for e in expiring_now) == [
        f"expiring {i}" for i in range(5)
    ]


def replica_messages(running: Cluster, service: str) -> dict[str, list[str]]:
    """Return the sorted messages of `service` that each log node stores."""
    stored = {}
    for node_id, host in running.hosts.items():
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            response = node_service_pb2_grpc.LogNodeServiceStub(channel).QueryEntries(
                node_service_pb2.QueryEntriesRequest(
                    shard="shard-0",
                    limit=1000,
                    filter=node_service_pb2.EntryFilter(services=[service]),
                ),
                timeout=10,
            )
        stored[node_id] = sorted(response.entries.messages)
    return stored


def one_shard_cluster(base_config) -> Cluster:
    """Start one shard of 2 replicas, so every pass covers every batch."""
    return Cluster(
        base_config.replace(
            log_shards=1,
            log_replicas=2,
            log_node_port=0,
            log_failover_seconds=1.0,
            log_fsync=False,
            workers=8,
        )
    )


def wait_for_count(stub, service: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while len(list_all(stub, services=[service])) != count:
        assert time.monotonic() < deadline, f"{service} never had {count} entries"
        time.sleep(0.1)


def test_resend_after_partial_retention(base_config):
    running = one_shard_cluster(base_config)
    now = time.time_ns()
    two_days_ago = now - 2 * DAY_SECONDS * NANOS
    # One request whose batch straddles a 1-day retention.
    entries = [
        entry("straddle", f"straddle {i}", at=two_days_ago + i) for i in range(5)
    ] + [entry("straddle", f"straddle {i}", at=now - i) for i in range(5, 10)]
    request = pb.WriteLogEntriesRequest(entries=entries, request_id=str(uuid.uuid4()))
    try:
        first = running.stub.WriteLogEntries(request)
        set_service_retentions(running.stub, ["straddle"], 1)
        wait_for_count(running.stub, "straddle", 5)
        within = running.stub.WriteLogEntries(request)
        set_service_retentions(running.stub, [], 1)
        loosened = running.stub.WriteLogEntries(request)
        again = running.stub.WriteLogEntries(request)
        stored = list_all(running.stub, services=["straddle"])
        replicas = replica_messages(running, "straddle")
    finally:
        running.close()

    messages = sorted(e.message for e in entries)
    assert first.accepted_count == 10
    # Under the 1-day retention the older half is rejected as too old, and
    # the newer half is still stored.
    assert within.rejected_count == 5
    assert {r.index for r in within.rejected_entries} == set(range(5))
    assert within.duplicate_count == 5
    # Once the retention is longer again, the deleted half is stored again.
    assert loosened.accepted_count == 10
    assert loosened.duplicate_count == 5
    assert again.duplicate_count == 10
    assert sorted(e.message for e in stored) == messages
    assert list(replicas.values()) == [messages, messages]


def set_service_retention_seconds(stub, service: str, seconds: int) -> None:
    update = pb.RetentionPolicy(name="retentionPolicy")
    update.service_retentions[service].seconds = seconds
    stub.UpdateRetentionPolicy(
        pb.UpdateRetentionPolicyRequest(
            retention_policy=update,
            update_mask=field_mask_pb2.FieldMask(paths=["service_retentions"]),
        )
    )


def test_retry_rejects_entries_retention_deleted(base_config):
    running = one_shard_cluster(base_config)
    hour = 3600
    try:
        # A minute longer than the retention set below, which is then a
        # change and so starts a retention pass at once.
        set_service_retention_seconds(running.stub, "edge", hour + 60)
        now = time.time_ns()
        # Within the 1-hour retention for two more seconds.
        edge = now - (hour - 2) * NANOS
        request = pb.WriteLogEntriesRequest(
            entries=[entry("edge", "edge 0", at=edge), entry("edge", "edge 1", at=now)],
            request_id=str(uuid.uuid4()),
        )
        first = running.stub.WriteLogEntries(request)
        time.sleep(max(0.0, (edge + hour * NANOS - time.time_ns()) / NANOS) + 0.5)
        set_service_retention_seconds(running.stub, "edge", hour)
        wait_for_count(running.stub, "edge", 1)
        retry = running.stub.WriteLogEntries(request)
        stored = list_all(running.stub, services=["edge"])
        replicas = replica_messages(running, "edge")
    finally:
        running.close()

    assert first.accepted_count == 2
    # The router's ledger still has the request id, and the retry is
    # checked against the retention at its own time, not the first write's.
    assert retry.rejected_count == 1
    assert retry.rejected_entries[0].index == 0
    assert retry.rejected_entries[0].reason == pb.REJECTION_REASON_TIMESTAMP_TOO_OLD
    assert retry.duplicate_count == 1
    assert [e.message for e in stored] == ["edge 1"]
    assert list(replicas.values()) == [["edge 1"], ["edge 1"]]
