"""ListLogEntries pages of long entries over 2 shards at a 64 KiB limit.

The router and one replica of each of 2 shards run in this process with a
64 KiB `max_message_bytes`. Entries of 5 KB each make a node's response to a
default page of 100 far larger than that, so nodes and the router return
fewer entries, and the pages must still list every entry once, in order.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from log_service.clients import node_channel_options
from log_service.sharding import sharder_from_config
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import node_service_pb2, node_service_pb2_grpc
from splitlog_runtime import config as config_module
from tests.log_service.test_router_cluster import Cluster

LIMIT = 64 * 1024
TIMEOUT = 30
LONG_BYTES = 5000
ENTRIES = 40
BASE_NS = int(time.time() - 600) * 1_000_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("pagebytes"),
            "grace_seconds": 1.0,
            "log_shards": 2,
            "log_replicas": 1,
            "log_node_port": 0,
            "log_fsync": False,
            "log_self_ship": False,
            "max_message_bytes": LIMIT,
        },
    )
    running = Cluster(config)
    yield running
    running.close()


def services_per_shard(cluster: Cluster, prefix: str) -> list[str]:
    """Return one service name for each shard, in shard order."""
    sharder = sharder_from_config(cluster.router_config, cluster.topology)
    shards = [spec.shard for spec in cluster.topology.shards]
    found: dict[str, str] = {}
    index = 0
    while len(found) < len(shards):
        service = f"{prefix}-{index}"
        found.setdefault(sharder.shard_for(service, BASE_NS), service)
        index += 1
    return [found[shard] for shard in shards]


def timestamp(ns: int) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(ns)
    return value


def write(cluster: Cluster, entries: list[pb.LogEntry]) -> None:
    for start in range(0, len(entries), 5):
        response = cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(entries=entries[start : start + 5]),
            timeout=TIMEOUT,
        )
        assert response.accepted_count == len(entries[start : start + 5])


def interleaved(services: list[str], sizes: list[int], label: str) -> list[str]:
    """Build ENTRIES entries alternating over `services`, one ms apart."""
    entries = []
    for index in range(ENTRIES):
        slot = index % len(services)
        text = f"{label}-{index:03d}:"
        entries.append(
            pb.LogEntry(
                service=services[slot],
                message=text + "x" * max(sizes[slot] - len(text), 0),
                timestamp=timestamp(BASE_NS + index * 1_000_000),
            )
        )
    return entries


def list_pages(
    cluster: Cluster, services: list[str], **fields
) -> list[pb.ListLogEntriesResponse]:
    pages = []
    request = pb.ListLogEntriesRequest(services=services, **fields)
    while True:
        response = cluster.stub.ListLogEntries(request, timeout=TIMEOUT)
        pages.append(response)
        if not response.next_page_token:
            return pages
        request.page_token = response.next_page_token
        assert len(pages) < 4 * ENTRIES


def labels(pages: list[pb.ListLogEntriesResponse]) -> list[str]:
    return [e.message.split(":")[0] for page in pages for e in page.entries]


@pytest.fixture(scope="module")
def long_entries(cluster):
    services = services_per_shard(cluster, "long")
    entries = interleaved(services, [LONG_BYTES, LONG_BYTES], "long")
    write(cluster, entries)
    return services, [e.message.split(":")[0] for e in entries]


@pytest.fixture(scope="module")
def mixed_entries(cluster):
    # One shard stores long entries and the other short ones, so the shard
    # of long entries stops short of the page while the other sends a full
    # one with later entries.
    services = services_per_shard(cluster, "mixed")
    entries = interleaved(services, [LONG_BYTES, 40], "mixed")
    write(cluster, entries)
    return services, [e.message.split(":")[0] for e in entries]


@pytest.mark.parametrize("data", ["long_entries", "mixed_entries"])
@pytest.mark.parametrize("order_by", ["timestamp", "timestamp desc"])
def test_default_pages_list_each_entry_once(cluster, request, data, order_by):
    services, expected = request.getfixturevalue(data)

    pages = list_pages(cluster, services, order_by=order_by)

    if order_by == "timestamp desc":
        expected = expected[::-1]
    assert labels(pages) == expected
    assert len(pages) > 1
    assert all(page.ByteSize() <= LIMIT for page in pages)
    assert all(page.entries for page in pages)


def test_page_size_one_lists_each_entry(cluster, long_entries):
    services, expected = long_entries

    pages = list_pages(cluster, services, order_by="timestamp", page_size=1)

    assert labels(pages) == expected
    assert [len(page.entries) for page in pages] == [1] * ENTRIES


def test_short_entries_pages_unchanged(cluster):
    services = services_per_shard(cluster, "short")
    entries = interleaved(services, [30, 30], "short")
    write(cluster, entries)

    pages = list_pages(cluster, services, order_by="timestamp", page_size=15)

    assert labels(pages) == [e.message.split(":")[0] for e in entries]
    assert [len(page.entries) for page in pages] == [15, 15, 10]


def test_node_response_within_limit(cluster, long_entries):
    services, _ = long_entries
    shard = cluster.topology.shards[0].shard
    node_id = cluster.topology.shards[0].nodes[0].node_id
    channel = grpc.insecure_channel(
        f"127.0.0.1:{cluster.hosts[node_id].port}",
        options=node_channel_options(LIMIT),
    )
    stub = node_service_pb2_grpc.LogNodeServiceStub(channel)
    request = node_service_pb2.QueryEntriesRequest(
        shard=shard,
        filter=node_service_pb2.EntryFilter(services=services),
        limit=101,
    )

    response = stub.QueryEntries(request, timeout=TIMEOUT)
    request.limit = 1
    single = stub.QueryEntries(request, timeout=TIMEOUT)
    channel.close()

    assert response.size_limited
    assert 1 < len(response.sequences) < ENTRIES // 2
    assert response.ByteSize() <= LIMIT
    assert not single.size_limited
    assert len(single.sequences) == 1
