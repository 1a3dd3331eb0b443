"""Failover of a shard's reads between its replicas (`ShardReader`).

Each test runs real log nodes and a real coordinator in this process. Each
node sits behind a `NodeProxy`, a gRPC server that forwards the node's
unary calls and lets a test slow down its reads or fail its polls. The
coordinator and the reader reach the nodes only through the proxies.
Streams are not forwarded, so a follower receives no replicated entries.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from log_service.clients import NodeClients
from log_service.coordinator import Coordinator
from log_service.node import start_node
from log_service.replica_reads import ShardReader
from log_service.topology import NodeSpec, ShardSpec, Topology
from splitlog.logs.v1 import node_service_pb2
from splitlog_runtime.errors import Unavailable
from splitlog_runtime.server import ServiceHost
from tests.log_service.node_support import columns

pytestmark = pytest.mark.timeout(60)

# Poll interval of a coordinator whose test runs each poll round itself.
MANUAL_POLLS = 3600.0
# Read seconds of a node that does not finish any read within a test.
STUCK_SECONDS = 60.0
_READS = ("QueryEntries", "CountEntries")
_STREAMS = ("FollowEntries", "ReplicateEntries", "FetchSnapshot")


class NodeProxy(grpc.GenericRpcHandler):
    """A gRPC server on 127.0.0.1 that forwards one node's unary calls.

    Attributes:
      read_seconds: how long each QueryEntries or CountEntries waits before
        it is forwarded, unless the caller cancels it first.
      miss_polls: fail every GetNodeStatus with UNAVAILABLE.
      miss_polls_while_reading: fail GetNodeStatus while a read waits.
      stall_polls: hold every GetNodeStatus until the caller's deadline
        passes, so the poll times out.
      fail_reads: fail every read with UNAVAILABLE.
      reads: `time.monotonic()` time at which each read arrived.
    """

    def __init__(self, target: str) -> None:
        self.read_seconds = 0.0
        self.miss_polls = False
        self.miss_polls_while_reading = False
        self.stall_polls = False
        self.fail_reads = False
        self.reads: list[float] = []
        self._waiting_reads = 0
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(target)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16), handlers=[self]
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self._server.start()

    def service(self, handler_call_details):
        method = handler_call_details.method
        name = method.rsplit("/", 1)[-1]
        if name in _STREAMS:
            return None
        return grpc.unary_unary_rpc_method_handler(
            functools.partial(self._forward, method, name)
        )

    def _forward(self, method: str, name: str, request: bytes, context) -> bytes:
        if name == "GetNodeStatus" and (
            self.miss_polls or (self.miss_polls_while_reading and self._waiting_reads)
        ):
            context.abort(grpc.StatusCode.UNAVAILABLE, "the test drops this poll")
        if name == "GetNodeStatus" and self.stall_polls:
            while context.is_active():
                time.sleep(0.01)
            return b""
        if name in _READS:
            self.reads.append(time.monotonic())
            if self.fail_reads:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the test fails this read")
            self._wait(context)
            if not context.is_active():
                # The caller cancelled the read, or the proxy is stopping.
                return b""
        try:
            return self._channel.unary_unary(method)(
                request, timeout=context.time_remaining()
            )
        except grpc.RpcError as error:
            context.abort(error.code(), error.details())

    def _wait(self, context) -> None:
        with self._lock:
            self._waiting_reads += 1
        try:
            end = time.monotonic() + self.read_seconds
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.01)
        finally:
            with self._lock:
                self._waiting_reads -= 1

    def stop(self) -> None:
        self._server.stop(0)
        self._channel.close()


@dataclass
class Replicas:
    """Log nodes behind proxies, their coordinator and a reader."""

    coordinator: Coordinator
    reader: ShardReader
    clients: NodeClients
    proxies: dict[str, NodeProxy]
    hosts: list[ServiceHost] = field(default_factory=list)

    def read(self, seconds: float, shards: tuple[str, ...] = ("s0",)):
        """List each shard's entries, with `seconds` for the node calls."""
        requests = {
            shard: node_service_pb2.QueryEntriesRequest(shard=shard, limit=100)
            for shard in shards
        }
        return self.reader.call("QueryEntries", requests, time.monotonic() + seconds)

    def poll(self) -> None:
        """Run one poll round now, with a coordinator made with MANUAL_POLLS."""
        self.coordinator.poll_once()


def start_nodes(
    config, directory: Path, shards: dict[str, tuple[str, ...]]
) -> tuple[list[ServiceHost], dict[str, NodeProxy], Topology]:
    """Start each shard's nodes and a proxy for each; return the proxies' topology."""
    hosts, proxies, specs = [], {}, []
    for shard, node_ids in shards.items():
        nodes = []
        for node_id in node_ids:
            host, _ = start_node(
                config, node_id, shard, "127.0.0.1:0", directory=directory / node_id
            )
            hosts.append(host)
            proxies[node_id] = NodeProxy(f"127.0.0.1:{host.port}")
            nodes.append(NodeSpec(node_id, shard, proxies[node_id].address))
        specs.append(ShardSpec(shard, tuple(nodes)))
    return hosts, proxies, Topology(tuple(specs))


def wait_ready(coordinator: Coordinator, manual_polls: bool) -> None:
    """Wait until the coordinator has configured every leader."""
    ready = False
    for _ in range(100):
        coordinator.wait_for_poll(1.0)
        ready = coordinator.wait_until_ready(0.1)
        if ready:
            break
        if manual_polls:
            coordinator.poll_once()
    assert ready, "the coordinator did not configure the leaders"
    if not manual_polls:
        # A round that the nodes responded to after they took their roles.
        coordinator.wait_for_poll(2.0)


@pytest.fixture
def make_replicas(base_config, tmp_path):
    """Start nodes, proxies and a coordinator; stop them after the test."""
    created: list[Replicas] = []

    def make(
        shards: dict[str, tuple[str, ...]],
        *,
        leader_only_ack: bool = False,
        poll_interval: float = 0.25,
    ) -> Replicas:
        hosts, proxies, topology = start_nodes(base_config, tmp_path, shards)
        clients = NodeClients(base_config.max_message_bytes)
        coordinator = Coordinator(
            topology,
            clients,
            tmp_path / "router",
            failover_seconds=60.0,
            leader_only_ack=leader_only_ack,
            poll_interval=poll_interval,
        )
        reader = ShardReader(
            coordinator, lambda address: clients.stubs(address).node, 5.0
        )
        replicas = Replicas(coordinator, reader, clients, proxies, hosts)
        created.append(replicas)

        coordinator.start()
        wait_ready(coordinator, manual_polls=poll_interval == MANUAL_POLLS)
        return replicas

    yield make
    for replicas in created:
        replicas.coordinator.stop()
        for proxy in replicas.proxies.values():
            proxy.stop()
        replicas.clients.close()
        for host in replicas.hosts:
            host.stop(0)


def read_in_thread(replicas: Replicas, seconds: float) -> dict:
    """Start `replicas.read` in a thread; the dict receives its outcome."""
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["responses"] = replicas.read(seconds)
        except Unavailable as error:
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    outcome["thread"] = threading.Thread(target=run, name="test-read")
    outcome["thread"].start()
    return outcome


def wait_until(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def reader_records(caplog, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "log_service.replica_reads" and record.levelno == level
    ]


def test_slow_scan_runs_on_one_replica(make_replicas):
    replicas = make_replicas({"s0": ("a", "b", "c")})
    for proxy in replicas.proxies.values():
        proxy.read_seconds = 2.0

    responses = replicas.read(3.5)

    # Every node responds to the polls, so each is alive and only slow. The
    # time share of each call is 3.5 s / 3, so a failover on the share
    # alone would start the same scan on b and on c.
    assert "s0" in responses
    assert len(replicas.proxies["a"].reads) == 1
    assert replicas.proxies["b"].reads == []
    assert replicas.proxies["c"].reads == []


def test_silent_leader_read_moves_to_follower(make_replicas):
    replicas = make_replicas({"s0": ("a", "b")})
    leader = replicas.proxies["a"]
    leader.read_seconds = STUCK_SECONDS
    leader.miss_polls_while_reading = True

    started = time.monotonic()
    responses = replicas.read(4.0)
    seconds = time.monotonic() - started

    assert "s0" in responses
    assert len(leader.reads) == 1
    assert len(replicas.proxies["b"].reads) == 1
    assert seconds < 3.0


def test_no_extra_call_when_time_short(make_replicas):
    replicas = make_replicas({"s0": ("a", "b")})
    leader = replicas.proxies["a"]
    leader.read_seconds = STUCK_SECONDS
    # The leader responds to polls during the first 2.2 s of the read, and
    # misses them after. An extra call would then have less than the
    # 2.2 s that the leader's call has used.
    threading.Timer(2.2, lambda: setattr(leader, "miss_polls", True)).start()

    with pytest.raises(Unavailable) as caught:
        replicas.read(3.5)

    assert len(leader.reads) == 1
    assert replicas.proxies["b"].reads == []
    assert "s0" in caught.value.message


def test_at_most_one_extra_call(make_replicas):
    replicas = make_replicas({"s0": ("a", "b", "c")})
    for proxy in replicas.proxies.values():
        proxy.read_seconds = STUCK_SECONDS
        proxy.miss_polls_while_reading = True

    with pytest.raises(Unavailable):
        replicas.read(3.0)

    called = sorted(
        node_id for node_id, proxy in replicas.proxies.items() if proxy.reads
    )
    # a missed polls while it read, so b was called. b then missed polls
    # too, but a third call would only add load.
    assert called == ["a", "b"]
    assert len(replicas.proxies["b"].reads) == 1


def test_slow_replicas_advise_longer_deadline(make_replicas):
    replicas = make_replicas({"s0": ("a",), "s1": ("b",)})
    for proxy in replicas.proxies.values():
        proxy.read_seconds = STUCK_SECONDS

    with pytest.raises(Unavailable) as caught:
        replicas.read(1.5, shards=("s0", "s1"))

    error = caught.value
    assert error.reason == "SHARD_UNAVAILABLE"
    assert "'s0'" in error.message
    assert "'s1'" in error.message
    assert error.metadata["shards"] == "s0,s1"
    assert "responded to polls but not to the read" in error.message
    # The node calls had 1.5 s, so the caller's deadline was about 2 s.
    assert "longer deadline, such as 4 s" in error.message
    assert "`grpc-timeout: 4S`" in error.message
    assert "retry shortly" not in error.message
    assert error.retry_delay is None
    assert error.final_attempt


def test_silent_replica_advises_retry(make_replicas):
    replicas = make_replicas({"s0": ("a",)})
    proxy = replicas.proxies["a"]
    proxy.read_seconds = STUCK_SECONDS
    proxy.miss_polls = True

    with pytest.raises(Unavailable) as caught:
        replicas.read(1.5)

    error = caught.value
    assert error.metadata["shards"] == "s0"
    assert "responded neither to the read nor to a poll" in error.message
    assert "retry shortly" in error.message
    assert "longer deadline" not in error.message
    assert error.retry_delay == 1.0
    # A retry by the caller's channel would have only the router's margin.
    assert error.final_attempt


def append_to_leader(replicas: Replicas, count: int) -> list[str]:
    """Append `count` entries to shard s0's leader; return their messages."""
    route = replicas.coordinator.route("s0")
    stub = replicas.clients.stubs(route.leader_address).node
    stub.AppendEntries(
        node_service_pb2.AppendEntriesRequest(
            shard="s0",
            leader_epoch=route.epoch,
            batch_id="batch-0",
            entries=columns(count, "acknowledged"),
        ),
        timeout=5,
    )
    return [f"acknowledged {index}" for index in range(count)]


def test_leader_quorum_prefers_leader_page(make_replicas):
    replicas = make_replicas(
        {"s0": ("a", "b")}, leader_only_ack=True, poll_interval=MANUAL_POLLS
    )
    # The leader acknowledges after its own flush, and b receives nothing.
    written = append_to_leader(replicas, 3)
    leader = replicas.proxies["a"]
    leader.miss_polls = True
    replicas.poll()
    leader.miss_polls = False

    # The leader missed the latest poll but serves reads.
    responses = replicas.read(4.0)

    assert list(responses["s0"].entries.messages) == written
    assert len(leader.reads) == 1


def test_leader_quorum_uses_follower_of_silent_leader(make_replicas):
    replicas = make_replicas(
        {"s0": ("a", "b")}, leader_only_ack=True, poll_interval=MANUAL_POLLS
    )
    append_to_leader(replicas, 3)
    leader = replicas.proxies["a"]
    follower = replicas.proxies["b"]
    leader.read_seconds = STUCK_SECONDS
    leader.miss_polls = True
    replicas.poll()

    outcome = read_in_thread(replicas, 8.0)
    assert wait_until(lambda: follower.reads), "b was not read"
    time.sleep(0.3)
    # b has responded, but the leader missed no poll since the read began.
    still_waiting = outcome["thread"].is_alive()
    replicas.poll()
    outcome["thread"].join(10)

    assert still_waiting
    assert "error" not in outcome, outcome.get("error")
    assert list(outcome["responses"]["s0"].entries.messages) == []
    assert outcome["seconds"] < 5.0
    # The leader was called too, although it had missed the latest poll.
    assert len(leader.reads) == 1
    assert len(follower.reads) == 1


def test_leader_quorum_blind_round_not_miss(make_replicas):
    replicas = make_replicas(
        {"s0": ("a", "b")}, leader_only_ack=True, poll_interval=MANUAL_POLLS
    )
    append_to_leader(replicas, 3)
    leader = replicas.proxies["a"]
    follower = replicas.proxies["b"]
    leader.read_seconds = STUCK_SECONDS
    leader.miss_polls = True
    replicas.poll()
    leader.miss_polls = False
    latest = replicas.coordinator.poll_responses().latest_sent_at

    outcome = read_in_thread(replicas, 8.0)
    assert wait_until(lambda: follower.reads), "b was not read"
    # Every node times out, which points at the coordinator's own process,
    # so the round shows nothing about the leader.
    for proxy in replicas.proxies.values():
        proxy.stall_polls = True
    replicas.poll()
    for proxy in replicas.proxies.values():
        proxy.stall_polls = False
    time.sleep(0.3)
    waiting_after_blind_round = outcome["thread"].is_alive()
    after_blind = replicas.coordinator.poll_responses().latest_sent_at
    # A round that b responds to and the leader misses lets b's page stand.
    leader.miss_polls = True
    replicas.poll()
    outcome["thread"].join(10)

    assert waiting_after_blind_round
    assert after_blind == latest
    assert "error" not in outcome, outcome.get("error")
    assert list(outcome["responses"]["s0"].entries.messages) == []
    assert len(leader.reads) == 1
    assert len(follower.reads) == 1


def test_fallback_lines_keep_warnings(make_replicas, caplog):
    caplog.set_level(logging.INFO, logger="log_service.replica_reads")
    replicas = make_replicas({"s0": ("a", "b")}, poll_interval=MANUAL_POLLS)
    leader = replicas.proxies["a"]
    leader.read_seconds = STUCK_SECONDS

    outcome = read_in_thread(replicas, 8.0)
    assert wait_until(lambda: leader.reads), "a was not read"
    leader.miss_polls = True
    replicas.poll()
    outcome["thread"].join(10)
    leader.miss_polls = False
    leader.read_seconds = 0.0
    leader.fail_reads = True
    replicas.poll()
    responses = replicas.read(4.0)

    assert "responses" in outcome, outcome.get("error")
    assert "s0" in responses
    infos = reader_records(caplog, logging.INFO)
    warnings = reader_records(caplog, logging.WARNING)
    assert any("missed the latest poll" in line for line in infos), infos
    assert any(
        f"read from node {leader.address} failed (UNAVAILABLE)" in line
        for line in warnings
    ), warnings
