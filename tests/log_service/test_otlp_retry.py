"""OTLP exports resent after a shard failed: a router and 2 one-node shards.

An export whose records span both shards fails with UNAVAILABLE while one
shard's node is down, after the other shard stored its part. OTLP has no
request id, so the router recognises a resend of the same bytes from the
same caller, and each record is stored once.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_pb
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from log_service.node import build_node
from log_service.otlp import export_batch_id
from log_service.router import OTLP_SERVICE
from log_service.sharding import sharder_from_config
from splitlog.logs.v1 import logs_service_pb2 as pb
from tests.log_service.test_router_cluster import (
    Cluster,
    cluster_config,
    list_all,
    ts,
)

EXPORT_METHOD = f"/{OTLP_SERVICE}/Export"
RECORDS_PER_SERVICE = 5


@pytest.fixture
def cluster(base_config):
    running = Cluster(cluster_config(base_config).replace(log_replicas=1))
    yield running
    running.close()


def services_on_both_shards(cluster) -> dict[str, str]:
    """Return a service name for each shard, shard to service."""
    sharder = sharder_from_config(cluster.router_config, cluster.topology)
    found: dict[str, str] = {}
    for number in range(1000):
        service = f"otlp-retry-{number}"
        found.setdefault(sharder.shard_for(service, time.time_ns()), service)
        if len(found) == 2:
            return found
    raise AssertionError(f"no services found on 2 shards: {found}")


def export_bytes(services: list[str], observed: bool = True) -> bytes:
    """Serialize one export with RECORDS_PER_SERVICE records per service."""
    now_ns = time.time_ns()
    request = otlp_pb.ExportLogsServiceRequest()
    for service in services:
        resource_logs = request.resource_logs.add(
            resource=resource_pb2.Resource(
                attributes=[
                    common_pb2.KeyValue(
                        key="service.name",
                        value=common_pb2.AnyValue(string_value=service),
                    )
                ]
            )
        )
        scope_logs = resource_logs.scope_logs.add()
        for index in range(RECORDS_PER_SERVICE):
            scope_logs.log_records.append(
                logs_pb2.LogRecord(
                    observed_time_unix_nano=now_ns if observed else 0,
                    body=common_pb2.AnyValue(string_value=f"{service}.{index}"),
                )
            )
    return request.SerializeToString()


def export_call(cluster):
    """Return a callable that sends serialized exports unchanged."""
    return cluster.channel.unary_unary(
        EXPORT_METHOD,
        request_serializer=None,
        response_deserializer=otlp_pb.ExportLogsServiceResponse.FromString,
    )


def stored_messages(cluster, services) -> collections.Counter:
    return collections.Counter(
        entry.message for entry in list_all(cluster.stub, services=list(services))
    )


def duplicate_count(cluster, start_ns: int) -> int:
    """Return the router's count of duplicate entries since `start_ns`."""
    window = pb.GetLogStatsRequest(
        start_time=ts(start_ns), end_time=ts(time.time_ns() + 10**9)
    )
    return cluster.stub.GetLogStats(window).ingest_counters.duplicate_count


def stop_shard(cluster, shard: str):
    """Stop the only node of `shard` and return its spec, for `restart_node`."""
    (spec,) = [item for item in cluster.topology.shards if item.shard == shard]
    (node,) = spec.nodes
    cluster.node_host(node.node_id).stop(0)
    return node


def restart_node(cluster, node) -> None:
    """Start a stopped node again on its port and data, and wait for its shard."""
    host = build_node(
        cluster.router_config, node.node_id, node.shard, address=node.address
    )
    cluster.hosts[node.node_id] = host
    cluster.nodes.append(host)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        route = cluster.coordinator.route(node.shard)
        if route.leader_address is not None:
            return
        time.sleep(0.1)
    raise AssertionError(f"shard {node.shard} has no leader 15 s after its restart")


def export_until_stored(call, body: bytes, timeout: float = 20.0):
    """Send `body` until the router stores it, as an OTLP exporter retries."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(body, timeout=5)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_resent_export_stored_once(cluster):
    shard_services = services_on_both_shards(cluster)
    healthy, failing = sorted(shard_services)
    services = [shard_services[healthy], shard_services[failing]]
    body = export_bytes(services)
    call = export_call(cluster)
    start_ns = time.time_ns()
    node = stop_shard(cluster, failing)

    with pytest.raises(grpc.RpcError) as failed:
        call(body, timeout=10)
    # With the other shard down, only the healthy shard can be listed.
    partial = stored_messages(cluster, [shard_services[healthy]])
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            call(body, timeout=10)
    restart_node(cluster, node)
    export_until_stored(call, body)
    stored = stored_messages(cluster, services)
    duplicates = duplicate_count(cluster, start_ns)

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "request_id" not in failed.value.details()
    assert "resend the same export" in failed.value.details()
    assert sum(partial.values()) == RECORDS_PER_SERVICE
    assert len(stored) == 2 * RECORDS_PER_SERVICE
    assert set(stored.values()) == {1}
    # Each of the 4 failed resends and the last one found the healthy
    # shard's records stored.
    assert duplicates >= 4 * RECORDS_PER_SERVICE


def test_export_without_times_not_deduplicated(cluster):
    # Byte-identical exports of records without any time can be two events,
    # such as a heartbeat sent every minute, so each is stored.
    service = "otlp-untimed"
    body = export_bytes([service], observed=False)
    call = export_call(cluster)

    call(body, timeout=10)
    call(body, timeout=10)
    stored = stored_messages(cluster, [service])

    assert sum(stored.values()) == 2 * RECORDS_PER_SERVICE
    assert set(stored.values()) == {2}


def test_export_batch_id_differs_by_caller():
    digest = bytes(16)

    first = export_batch_id(digest, "users/u1/apiKeys/k1")
    again = export_batch_id(digest, "users/u1/apiKeys/k1")
    other_key = export_batch_id(digest, "users/u1/apiKeys/k2")
    other_bytes = export_batch_id(bytes(15) + b"\x01", "users/u1/apiKeys/k1")

    assert first == again
    assert first.startswith("otlp/")
    assert other_key != first
    assert other_bytes != first


def test_sdk_exporter_retry_stored_once(cluster):
    # The SDK's exporter retries an export after UNAVAILABLE with the same
    # bytes, so records that the healthy shard stored before are not stored
    # again once the other shard is back.
    shard_services = services_on_both_shards(cluster)
    healthy, failing = sorted(shard_services)
    start_ns = time.time_ns()
    node = stop_shard(cluster, failing)
    exporter = OTLPLogExporter(
        endpoint=f"127.0.0.1:{cluster.router.port}", insecure=True, timeout=30
    )
    processor = BatchLogRecordProcessor(exporter, schedule_delay_millis=60_000)
    providers = {
        shard: LoggerProvider(
            resource=Resource.create({"service.name": shard_services[shard]})
        )
        for shard in shard_services
    }
    # One processor for both providers, so that one export carries both
    # services' records.
    for provider in providers.values():
        provider.add_log_record_processor(processor)
    python_logger = logging.getLogger("tests.otlp_retry")
    python_logger.propagate = False
    for shard in (healthy, failing):
        handler = LoggingHandler(level=logging.INFO, logger_provider=providers[shard])
        python_logger.addHandler(handler)
        for index in range(RECORDS_PER_SERVICE):
            python_logger.warning("%s.%d", shard, index)
        python_logger.removeHandler(handler)

    restarter = _restart_later(cluster, node, delay=3.0)
    try:
        processor.force_flush(timeout_millis=30_000)
    finally:
        restarter.join()
    processor.shutdown()
    stored = list_all(cluster.stub, services=list(shard_services.values()))
    counts = collections.Counter(entry.message for entry in stored)
    duplicates = duplicate_count(cluster, start_ns)

    # A resend found the healthy shard's records stored.
    assert duplicates >= RECORDS_PER_SERVICE
    assert len(counts) == 2 * RECORDS_PER_SERVICE
    assert set(counts.values()) == {1}


def _restart_later(cluster, node, delay: float) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: (time.sleep(delay), restart_node(cluster, node)), daemon=True
    )
    thread.start()
    return thread


@pytest.mark.parametrize("request_id", ["", "write-advice-1"])
def test_failed_write_advice_depends_on_request_id(cluster, request_id):
    shard_services = services_on_both_shards(cluster)
    healthy, failing = sorted(shard_services)
    stop_shard(cluster, failing)
    request = pb.WriteLogEntriesRequest(
        request_id=request_id,
        entries=[
            pb.LogEntry(service=shard_services[shard], message="advice")
            for shard in (healthy, failing)
        ],
    )

    with pytest.raises(grpc.RpcError) as failed:
        cluster.stub.WriteLogEntries(request, timeout=10)

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    if request_id:
        assert "with the same request_id" in failed.value.details()
    else:
        assert "set request_id on every write" in failed.value.details()
