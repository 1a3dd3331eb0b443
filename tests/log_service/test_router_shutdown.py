"""Tests of the router's stop against a router and real log nodes in this process.

The router must stop its own threads, open no node channel after it closed
them, and end the node calls still in flight without an unhandled exception.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid

import grpc
import pytest

from log_service.clients import ROUTER_STOPPING, ClientsClosed, NodeClients
from log_service.replica_reads import ShardReader
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import node_service_pb2
from splitlog_runtime.errors import Unavailable
from tests.log_service.test_router_cluster import Cluster, cluster_config, entry

# Name prefixes of the threads that the router starts.
ROUTER_THREAD_PREFIXES = ("log-coord", "log-stream", "log-append-", "log-tail-")


def router_threads(earlier: set[threading.Thread]) -> list[str]:
    """Return the names of the router's live threads not in `earlier`."""
    return sorted(
        thread.name
        for thread in threading.enumerate()
        if thread not in earlier and thread.name.startswith(ROUTER_THREAD_PREFIXES)
    )


class Traffic:
    """Threads that write, stream and list through the router until it stops."""

    def __init__(self, cluster: Cluster) -> None:
        self._stub = cluster.stub
        self._stopping = threading.Event()
        self.calls = 0
        self.started = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(call,), name=f"traffic-{i}")
            for i, call in enumerate([self._write, self._stream, self._list] * 2)
        ]
        for thread in self._threads:
            thread.start()

    def _write(self) -> None:
        self._stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=[entry(message=f"write {i}") for i in range(20)],
                request_id=uuid.uuid4().hex,
            ),
            timeout=10,
        )

    def _stream(self) -> None:
        requests = [
            pb.WriteLogEntriesRequest(
                entries=[entry(message=f"stream {i}")], request_id=uuid.uuid4().hex
            )
            for i in range(20)
        ]
        self._stub.StreamLogEntries(iter(requests), timeout=10)

    def _list(self) -> None:
        self._stub.ListLogEntries(pb.ListLogEntriesRequest(page_size=50), timeout=10)

    def _loop(self, call) -> None:
        while not self._stopping.is_set():
            # The router's stop ends calls with UNAVAILABLE or CANCELLED.
            with contextlib.suppress(grpc.RpcError):
                call()
            self.calls += 1
            if self.calls >= 12:
                self.started.set()

    def finish(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(15)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_router_stop_under_traffic(base_config, caplog):
    earlier = set(threading.enumerate())
    cluster = Cluster(cluster_config(base_config))
    traffic = None
    try:
        traffic = Traffic(cluster)
        assert traffic.started.wait(30)
        running = router_threads(earlier)
        with caplog.at_level(logging.INFO, logger="log_service"):
            cluster.router.stop(0)
            cluster.coordinator.stop()
            outlived = router_threads(earlier)
        traffic.finish()
        address = cluster.coordinator.node_addresses()[0]
        with pytest.raises(ClientsClosed):
            cluster.coordinator.clients.stubs(address)
    finally:
        if traffic is not None:
            traffic.finish()
        cluster.close()

    # The pools start their threads on first use.
    assert any(name.startswith("log-stream") for name in running)
    assert any(name.startswith("log-coord_") for name in running)
    assert outlived == []
    errors = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and record.name.startswith("log_service")
    ]
    assert errors == []


def test_stubs_after_close_raise(base_config):
    cluster = Cluster(cluster_config(base_config))
    clients = NodeClients(cluster.config.max_message_bytes)
    try:
        address = cluster.coordinator.node_addresses()[0]
        clients.stubs(address)
        clients.close()

        with pytest.raises(ClientsClosed) as caught:
            clients.stubs(address)
    finally:
        clients.close()
        cluster.close()

    assert clients.closed
    assert address in str(caught.value)
    assert "stopping" in str(caught.value)


def test_read_after_close_router_stopping(base_config):
    cluster = Cluster(cluster_config(base_config))
    clients = NodeClients(cluster.config.max_message_bytes)
    reader = ShardReader(
        cluster.coordinator, lambda address: clients.stubs(address).node, 5.0
    )
    shard = cluster.topology.shard_ids[0]
    request = node_service_pb2.QueryEntriesRequest(shard=shard, limit=1)
    try:
        reader.call("QueryEntries", {shard: request})
        clients.close()

        with pytest.raises(Unavailable) as caught:
            reader.call("QueryEntries", {shard: request})
    finally:
        clients.close()
        cluster.close()

    assert caught.value.reason == ROUTER_STOPPING
    assert caught.value.retry_delay is not None
    assert caught.value.metadata["shard"] == shard
    assert "router is stopping" in caught.value.message


def test_read_other_value_error_raised(base_config):
    # A ValueError that no closed channel raises is a bug of the router. It
    # propagates, so the interceptor returns INTERNAL, not ROUTER_STOPPING.
    cluster = Cluster(cluster_config(base_config))

    def stub_for(address: str):
        raise ValueError(f"invalid node address {address!r}")

    reader = ShardReader(cluster.coordinator, stub_for, 5.0)
    shard = cluster.topology.shard_ids[0]
    request = node_service_pb2.QueryEntriesRequest(shard=shard, limit=1)
    try:
        with pytest.raises(ValueError) as caught:
            reader.call("QueryEntries", {shard: request})
    finally:
        cluster.close()

    assert "invalid node address" in str(caught.value)
