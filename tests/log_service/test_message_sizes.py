"""Writes near `max_message_bytes` through a router and a shard of 2 replicas.

The router, a leader and a follower run in this process with a 64 KiB
`max_message_bytes`. Requests to the nodes carry a batch id and the
replication stream carries sequence numbers on top of what a client sent, and
the router groups concurrent writes. Every write that the router accepts
must reach both replicas anyway.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from log_service.clients import ROUTED_HEADROOM_BYTES, node_channel_options
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import node_service_pb2, node_service_pb2_grpc
from splitlog_runtime import config as config_module
from tests.log_service.test_router_cluster import Cluster

LIMIT = 64 * 1024
SERVICE = "sizes"
TIMEOUT = 30
# Entries per node query: a node sends at most 128 KiB, about two of the
# largest entries here.
PAGE = 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("sizes"),
            "grace_seconds": 1.0,
            "log_shards": 1,
            "log_replicas": 2,
            "log_node_port": 0,
            "log_fsync": False,
            "log_self_ship": False,
            # Enough handler threads for many writes to wait for one shard.
            "workers": 32,
            "max_message_bytes": LIMIT,
        },
    )
    running = Cluster(config)
    yield running
    running.close()


def sized_request(size: int, label: str) -> pb.WriteLogEntriesRequest:
    """Return a one-entry write of exactly `size` bytes, its message padded."""
    request = pb.WriteLogEntriesRequest(
        entries=[pb.LogEntry(service=SERVICE, message=f"{label}:")],
        request_id=str(uuid.uuid4()),
    )
    while request.ByteSize() != size:
        missing = size - request.ByteSize()
        message = request.entries[0].message
        if missing > 0:
            request.entries[0].message = message + "x" * missing
        else:
            request.entries[0].message = message[:missing]
    return request


def node_stubs(cluster: Cluster) -> dict[str, node_service_pb2_grpc.LogNodeServiceStub]:
    stubs = {}
    for node_id, host in cluster.hosts.items():
        channel = grpc.insecure_channel(
            f"127.0.0.1:{host.port}", options=node_channel_options(LIMIT)
        )
        stubs[node_id] = node_service_pb2_grpc.LogNodeServiceStub(channel)
    return stubs


def stored_messages(stub, shard: str) -> list[str]:
    """Return the messages of SERVICE that a node stores, PAGE per query."""
    messages: list[str] = []
    request = node_service_pb2.QueryEntriesRequest(
        shard=shard,
        filter=node_service_pb2.EntryFilter(services=[SERVICE]),
        limit=PAGE,
    )
    while True:
        response = stub.QueryEntries(request, timeout=TIMEOUT)
        messages += response.entries.messages
        if len(response.sequences) < PAGE:
            return messages
        request.after.timestamp = response.entries.timestamps[-1]
        request.after.sequence = response.sequences[-1]


def only_shard(cluster: Cluster) -> str:
    (spec,) = cluster.topology.shards
    return spec.shard


def wait_until_stored(cluster: Cluster, expected: set[str]) -> dict[str, set[str]]:
    """Wait until every node stores `expected`; return what each node stores."""
    shard = only_shard(cluster)
    stubs = node_stubs(cluster)
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = {
            node: set(stored_messages(stub, shard)) & expected
            for node, stub in stubs.items()
        }
        if all(messages == expected for messages in found.values()):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_write_at_limit_reaches_both_replicas(cluster):
    request = sized_request(LIMIT, "at-limit")

    response = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)
    found = wait_until_stored(cluster, {request.entries[0].message})

    assert response.accepted_count == 1
    assert response.rejected_count == 0
    assert len(found) == 2
    for node, messages in found.items():
        assert messages == {request.entries[0].message}, node


def test_retry_at_limit_stores_once(cluster):
    request = sized_request(LIMIT, "retried")

    first = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)
    second = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)
    wait_until_stored(cluster, {request.entries[0].message})
    shard = only_shard(cluster)
    counts = {
        node: stored_messages(stub, shard).count(request.entries[0].message)
        for node, stub in node_stubs(cluster).items()
    }

    assert first.accepted_count == 1
    assert second.accepted_count == 1
    assert counts == dict.fromkeys(cluster.hosts, 1)


def test_concurrent_near_limit_writes_all_acknowledged(cluster):
    # Sizes from the limit down to a quarter of it: the smaller ones wait
    # while a call to the leader runs and then share the next call, which
    # must stay within the size limit of a node.
    sizes = [LIMIT, LIMIT - 100, LIMIT // 2, LIMIT // 3] + [LIMIT // 4] * 6
    requests = [
        sized_request(size, f"concurrent-{i}") for i, size in enumerate(sizes * 6)
    ]
    results: list[object] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def send(index: int) -> None:
        start.wait()
        try:
            results[index] = cluster.stub.WriteLogEntries(
                requests[index], timeout=TIMEOUT
            )
        except grpc.RpcError as error:
            results[index] = error

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {request.entries[0].message for request in requests}
    found = wait_until_stored(cluster, expected)

    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert errors == []
    assert [r.accepted_count for r in results] == [1] * len(requests)
    for node, messages in found.items():
        assert messages == expected, node


def stored_count(stub, shard: str, service: str) -> int:
    response = stub.CountEntries(
        node_service_pb2.CountEntriesRequest(
            shard=shard, filter=node_service_pb2.EntryFilter(services=[service])
        ),
        timeout=TIMEOUT,
    )
    return sum(item.count for item in response.severity_counts)


def wait_for_counts(cluster: Cluster, service: str, count: int) -> dict[str, int]:
    """Wait until every node stores `count` entries of `service`; return the counts."""
    shard = only_shard(cluster)
    stubs = node_stubs(cluster)
    deadline = time.monotonic() + TIMEOUT
    while True:
        counts = {
            node: stored_count(stub, shard, service) for node, stub in stubs.items()
        }
        if all(found >= count for found in counts.values()):
            return counts
        if time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def test_many_small_entries_split_across_requests(cluster):
    # 10,000 entries of 5 bytes each fit one client request, but in columns,
    # with timestamps and empty fields added, they take several times the
    # limit, so the router splits them into several batches.
    service = "q"
    entries = [pb.LogEntry(service=service)] * 10_000
    request = pb.WriteLogEntriesRequest(entries=entries, request_id="small-entries")
    assert request.ByteSize() <= LIMIT

    first = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)
    retried = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)
    counts = wait_for_counts(cluster, service, 10_000)

    assert first.accepted_count == 10_000
    assert first.rejected_count == 0
    assert retried.accepted_count == 10_000
    assert counts == dict.fromkeys(cluster.hosts, 10_000)


def test_entry_too_large_once_stored_is_rejected(cluster):
    # JSON writes each control character of an attribute as \u00XX, six
    # bytes for one, so this entry grows past what a node accepts.
    attributes = {f"key{i}": "\x01" * 8000 for i in range(7)}
    grown = pb.LogEntry(service=SERVICE, message="grown", attributes=attributes)
    small = pb.LogEntry(service=SERVICE, message="beside-grown")
    request = pb.WriteLogEntriesRequest(entries=[small, grown, small])
    assert request.ByteSize() <= LIMIT

    response = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)

    assert response.accepted_count == 2
    assert response.rejected_count == 1
    (rejection,) = response.rejected_entries
    assert rejection.index == 1
    assert rejection.reason == pb.REJECTION_REASON_TOO_LARGE
    assert f"max_message_bytes {LIMIT}" in rejection.description
    assert f"plus {ROUTED_HEADROOM_BYTES}" in rejection.description
    assert len(json.dumps(attributes)) > LIMIT + ROUTED_HEADROOM_BYTES


def test_single_entry_too_large_is_invalid(cluster):
    attributes = {f"key{i}": "\x01" * 8000 for i in range(7)}
    request = pb.WriteLogEntryRequest(
        entry=pb.LogEntry(service=SERVICE, message="grown", attributes=attributes)
    )

    with pytest.raises(grpc.RpcError) as failure:
        cluster.stub.WriteLogEntry(request, timeout=TIMEOUT)

    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raise max_message_bytes" in failure.value.details()


def old_and_fresh_request(old_count: int, label: str) -> pb.WriteLogEntriesRequest:
    """Return a write of exactly LIMIT bytes: `old_count` entries older than
    the retention, then 5 fresh ones, the old messages padded to fill it."""
    # 2001-09-09, older than the default retention of 168 hours.
    old_time = Timestamp(seconds=1_000_000_000)
    old = [
        pb.LogEntry(service=SERVICE, message=f"{label}-old-{i}", timestamp=old_time)
        for i in range(old_count)
    ]
    fresh = [
        pb.LogEntry(service=SERVICE, message=f"{label}-fresh-{i}") for i in range(5)
    ]
    request = pb.WriteLogEntriesRequest(
        entries=old + fresh, request_id=str(uuid.uuid4())
    )
    # Each entry's length prefix grows by a byte past 127 bytes.
    padding = (LIMIT - request.ByteSize()) // old_count - 2
    for entry in request.entries[:old_count]:
        entry.message += "x" * padding
    first = request.entries[0]
    while request.ByteSize() != LIMIT:
        missing = LIMIT - request.ByteSize()
        if missing > 0:
            first.message += "x" * missing
        else:
            first.message = first.message[:missing]
    return request


def test_many_rejections_at_limit_answer_fits(cluster):
    request = old_and_fresh_request(250, "rejected")
    fresh = {entry.message for entry in request.entries[250:]}

    response = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)
    found = wait_until_stored(cluster, fresh)

    assert response.accepted_count == 5
    assert response.rejected_count == 250
    assert response.ByteSize() <= LIMIT
    listed = response.rejected_entries
    assert [rejection.index for rejection in listed] == list(range(len(listed)))
    assert {r.reason for r in listed} == {pb.REJECTION_REASON_TIMESTAMP_TOO_OLD}
    assert "retention" in listed[0].description
    assert [r.description for r in listed[1:]] == [""] * (len(listed) - 1)
    for node, messages in found.items():
        assert messages == fresh, node


def test_stream_many_rejections_answer_fits(cluster):
    requests = [old_and_fresh_request(250, f"streamed-{i}") for i in range(6)]
    fresh = {entry.message for request in requests for entry in request.entries[250:]}

    response = cluster.stub.StreamLogEntries(iter(requests), timeout=TIMEOUT)
    found = wait_until_stored(cluster, fresh)

    assert response.accepted_count == 6 * 5
    assert response.rejected_count == 6 * 250
    assert response.ByteSize() <= LIMIT
    assert len(response.rejected_entries) == 1000
    # The 1000th rejection is the last old entry of the fourth message.
    assert response.rejected_entries[-1].index == 3 * 255 + 249
    for node, messages in found.items():
        assert messages == fresh, node


def test_retry_split_otherwise_stores_each_entry_once(cluster):
    # Small entries take several requests to the node once in columns. The
    # first write rejects the 5 old entries at the front. Once the retention
    # is raised, the retry has 5 more entries, so its requests split at
    # other entries, and the nodes store exactly the 5 that they lack.
    service = "sr"
    old = Timestamp()
    old.FromNanoseconds(time.time_ns() - 10 * 24 * 3600 * 10**9)
    entries = [
        pb.LogEntry(service=service, message=f"old {i}", timestamp=old)
        for i in range(5)
    ]
    entries += [pb.LogEntry(service=service)] * 8000
    request = pb.WriteLogEntriesRequest(entries=entries, request_id=str(uuid.uuid4()))
    assert request.ByteSize() <= LIMIT
    update = pb.RetentionPolicy(name="retentionPolicy")
    update.service_retentions[service].seconds = 30 * 24 * 3600

    first = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)
    cluster.stub.UpdateRetentionPolicy(
        pb.UpdateRetentionPolicyRequest(retention_policy=update), timeout=TIMEOUT
    )
    retry = cluster.stub.WriteLogEntries(request, timeout=TIMEOUT)
    counts = wait_for_counts(cluster, service, 8005)

    assert (first.accepted_count, first.rejected_count) == (8000, 5)
    assert (retry.accepted_count, retry.rejected_count) == (8005, 0)
    assert retry.duplicate_count == 8000
    assert counts == dict.fromkeys(cluster.hosts, 8005)
