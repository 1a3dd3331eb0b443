"""Tests of TailLogEntries: skipped entries, resume tokens and failovers.

A router and its log nodes run in this process over real gRPC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from log_service.app import build_router
from log_service.clients import NodeClients
from log_service.node import LogNode, start_node
from log_service.pages import RESPONSE_MARGIN_BYTES
from log_service.query import EntrySelection
from log_service.sharding import ServiceRing
from log_service.tail import (
    FOLLOW_TIMEOUT_SECONDS,
    MAX_PENDING_ENTRIES,
    MAX_RESPONSE_BYTES,
    OPEN_WAIT_SECONDS,
    RETRY_DELAY_SECONDS,
    Tail,
)
from log_service.topology import NodeSpec
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc, node_service_pb2
from splitlog_runtime.errors import NotFound, Unavailable
from tests.log_service.node_support import (
    SHARD,
    append,
    configure,
    error_reason,
    has_retry_info,
    query_sequences,
    start,
    wait_for,
)
from tests.log_service.router_support import (
    encode_payload,
    encode_rehashed,
    token_payload,
)
from tests.log_service.test_router_cluster import Cluster, entry


def start_cluster(base_config, shards: int) -> Cluster:
    """Start a router and `shards` shards of one log node each."""
    config = base_config.replace(
        log_shards=shards, log_replicas=1, log_node_port=0, log_fsync=False, workers=8
    )
    return Cluster(config)


@pytest.fixture
def cluster(base_config):
    running = start_cluster(base_config, 1)
    yield running
    running.close()


@pytest.fixture
def clients(cluster):
    opened = NodeClients(cluster.config.max_message_bytes)
    yield opened
    opened.close()


def write(cluster, label: str, count: int) -> None:
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[entry("tailed", f"{label} {i}") for i in range(count)]
        ),
        timeout=5,
    )


def open_tail(
    cluster,
    clients,
    max_pending: int = MAX_PENDING_ENTRIES,
    *,
    positions: dict[str, int] | None = None,
    fingerprint: str = "fingerprint",
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    follow_timeout: float = FOLLOW_TIMEOUT_SECONDS,
    services: tuple[str, ...] = ("tailed",),
) -> Tail:
    """Open a tail of `services`, by default after the newest entry."""
    selection = EntrySelection(services, (), "", ())
    if positions is None:
        positions = dict.fromkeys(cluster.topology.shard_ids, -1)
    return Tail(
        cluster.coordinator,
        lambda address: clients.stubs(address).node,
        selection,
        fingerprint,
        positions,
        max_pending=max_pending,
        max_response_bytes=max_response_bytes,
        follow_timeout=follow_timeout,
    )


def parsed(tail: Tail) -> Iterator[pb.TailLogEntriesResponse]:
    """Yield the tail's serialized responses as messages."""
    responses = tail.responses()
    try:
        for response in responses:
            yield pb.TailLogEntriesResponse.FromString(response)
    finally:
        responses.close()


def read_entries(responses, count: int) -> tuple[list[str], int]:
    """Read responses until `count` entries arrived; return them and the
    skipped count."""
    received: list[str] = []
    skipped = 0
    while len(received) < count:
        response = next(responses)
        skipped += response.skipped_count
        received.extend(e.message for e in response.entries)
    return received, skipped


def test_slow_reader_skips_oldest_entries(cluster, clients):
    tail = open_tail(cluster, clients, max_pending=10)
    responses = parsed(tail)
    try:
        first = next(responses)
        assert first.skipped_count == 0
        assert list(first.unopened_shards) == []

        # One batch of 25 reaches the tail as one message, over the bound of 10.
        write(cluster, "burst", 25)
        response = next(responses)
        assert response.skipped_count == 15
        assert [e.message for e in response.entries] == [
            f"burst {i}" for i in range(15, 25)
        ]

        write(cluster, "later", 2)
        response = next(responses)
        assert response.skipped_count == 0
        assert [e.message for e in response.entries] == ["later 0", "later 1"]
    finally:
        responses.close()


def test_skipping_spans_several_messages(cluster, clients):
    tail = open_tail(cluster, clients, max_pending=10)
    responses = parsed(tail)
    try:
        next(responses)
        for batch in range(3):
            write(cluster, f"b{batch}", 6)
        # Private state, read only to check that all 18 entries arrived
        # before the reader requests them.
        assert wait_for(lambda: tail._live_entries + tail._skipped == 18)

        received, skipped = read_entries(responses, 10)

        assert skipped == 8
        assert received == ["b1 2", "b1 3", "b1 4", "b1 5"] + [
            f"b2 {i}" for i in range(6)
        ]
    finally:
        responses.close()


def test_resumed_slow_reader_gets_whole_backlog(cluster, clients):
    write(cluster, "backlog", 300)
    tail = open_tail(
        cluster,
        clients,
        max_pending=10,
        positions=dict.fromkeys(cluster.topology.shard_ids, 0),
    )
    responses = parsed(tail)
    try:
        next(responses)
        # Private state: the shard thread keeps a backlog beyond max_pending
        # and waits for the reader.
        assert wait_for(lambda: tail._backlog_entries >= 10)
        received, skipped = read_entries(responses, 300)

        # Live entries after the backlog follow the slow-reader rule again.
        write(cluster, "live", 25)
        assert wait_for(lambda: tail._live_entries + tail._skipped == 25)
        live = next(responses)
    finally:
        responses.close()

    assert skipped == 0
    assert received == [f"backlog {i}" for i in range(300)]
    assert live.skipped_count == 15
    assert [e.message for e in live.entries] == [f"live {i}" for i in range(15, 25)]


def test_silent_streams_reopen_without_gaps(cluster, clients, caplog):
    caplog.set_level(logging.INFO, logger="log_service.tail")
    # Below the node's keep-alive interval of 1 s, so the pauses between
    # batches end node streams and the tail opens new ones.
    tail = open_tail(cluster, clients, follow_timeout=0.3)
    responses = parsed(tail)
    try:
        next(responses)
        for batch in range(8):
            write(cluster, f"batch-{batch}", 20)
            time.sleep(0.6)
        received, skipped = read_entries(responses, 160)
    finally:
        responses.close()
    reopened = [r for r in caplog.records if "no message arrived for" in r.message]

    assert skipped == 0
    assert received == [f"batch-{b} {i}" for b in range(8) for i in range(20)]
    assert reopened, "no node stream was left for its silence"


def test_large_message_splits_into_resumable_responses(cluster, clients):
    token = first_token(cluster)
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[entry("tailed", f"{i:03d} " + "x" * 1000) for i in range(40)]
        ),
        timeout=5,
    )
    # 4 KiB of entries per response beyond the margin for the other fields.
    tail = open_tail(
        cluster,
        clients,
        positions=token_positions(token),
        fingerprint=token_payload(token)["f"],
        max_response_bytes=RESPONSE_MARGIN_BYTES + 4096,
    )
    responses = parsed(tail)
    try:
        next(responses)
        split = [next(responses) for _ in range(3)]
    finally:
        responses.close()
    resumed = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(
            services=["tailed"], resume_token=split[1].resume_token
        ),
        timeout=10,
    )
    rest = read_messages(resumed, 40 - 6)
    resumed.cancel()

    assert [len(response.entries) for response in split] == [3, 3, 3]
    assert [e.message[:3] for r in split[:2] for e in r.entries] == [
        f"{i:03d}" for i in range(6)
    ]
    assert [m[:3] for m in rest] == [f"{i:03d}" for i in range(6, 40)]


@pytest.fixture
def two_shards(base_config):
    running = start_cluster(base_config, 2)
    yield running
    running.close()


def test_resume_delivers_backlog_of_both_shards_once(two_shards):
    services = [f"svc-{i}" for i in range(12)]
    call = two_shards.stub.TailLogEntries(pb.TailLogEntriesRequest(), timeout=60)
    token = next(call).resume_token
    call.cancel()
    # More than a node's page and than MAX_PENDING_ENTRIES, so the backlog
    # takes several pages and waits for the reader. The padding makes the
    # backlog larger than what gRPC buffers for a client that pauses.
    padding = "x" * 1000
    written = [f"{services[i % 12]} {i} {padding}" for i in range(24_000)]
    for first in range(0, len(written), 2000):
        two_shards.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=[
                    entry(message.split()[0], message)
                    for message in written[first : first + 2000]
                ]
            ),
            timeout=30,
        )

    resumed = two_shards.stub.TailLogEntries(
        pb.TailLogEntriesRequest(resume_token=token), timeout=60
    )
    received: list[str] = []
    skipped = 0
    last_token = token
    # A reader that pauses lets the backlog pile up in the router, which must
    # wait for it rather than drop entries. Passing does not depend on the
    # pause's length.
    next(resumed)
    time.sleep(1.0)
    for response in resumed:
        received.extend(e.message for e in response.entries)
        skipped += response.skipped_count
        last_token = response.resume_token
        if len(received) + skipped >= len(written):
            break
    resumed.cancel()

    start, end = token_positions(token), token_positions(last_token)
    assert sorted(start) == sorted(two_shards.topology.shard_ids)
    assert skipped == 0
    assert sorted(received) == sorted(written)
    assert len(set(received)) == len(written)
    for service in services:
        of_service = [m for m in received if m.split()[0] == service]
        assert of_service == [m for m in written if m.split()[0] == service]
    assert sorted(end) == sorted(two_shards.topology.shard_ids)
    assert all(end[shard] > start[shard] for shard in end)
    assert sum(end[shard] - start[shard] for shard in end) == len(written)


def service_of_shard(cluster, shard: str) -> str:
    """Return a service name whose entries go to `shard`."""
    ring = ServiceRing(cluster.topology.shard_ids)
    return next(
        name
        for name in (f"svc-{i}" for i in range(100))
        if ring.shard_for(name) == shard
    )


def waits_behind(pending, first: str, behind: str) -> bool:
    """Return whether a message of shard `behind` waits after one of `first`."""
    shards = [item.shard for item in pending]
    return shards[:1] == [first] and behind in shards[1:]


def test_skip_waits_for_older_message_of_shard(two_shards):
    dropping, other = two_shards.topology.shard_ids
    live, backlog = (
        service_of_shard(two_shards, dropping),
        service_of_shard(two_shards, other),
    )
    two_shards.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[entry(backlog, f"b{i}") for i in range(5)]),
        timeout=5,
    )
    clients = NodeClients(two_shards.config.max_message_bytes)
    tail = open_tail(
        two_shards,
        clients,
        max_pending=3,
        positions=dict.fromkeys(two_shards.topology.shard_ids, 0),
        services=(live, backlog),
    )
    responses = parsed(tail)
    try:
        next(responses)
        # Private state: the other shard's backlog waits for the reader, and a
        # message of the dropping shard without entries (the node's first or
        # a keep-alive) waits behind it.
        assert wait_for(lambda: waits_behind(list(tail._pending), other, dropping))
        # Live entries behind that message: 7 of the 10 are dropped, but the
        # dropping shard's position moves only when that message is taken.
        two_shards.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=[entry(live, f"l{i}") for i in range(10)]
            ),
            timeout=5,
        )
        assert wait_for(lambda: tail._live_entries == 3)
        first = next(responses)
        second = next(responses)
    finally:
        responses.close()
        clients.close()

    assert [e.message for e in first.entries] == [f"b{i}" for i in range(5)]
    assert first.skipped_count == 0
    assert token_positions(first.resume_token)[dropping] == 0
    assert [e.message for e in second.entries] == ["l7", "l8", "l9"]
    assert second.skipped_count == 7
    assert token_positions(second.resume_token)[dropping] == 10


@pytest.mark.parametrize(
    ("position", "method"), [(-1, "FollowEntries"), (0, "QueryEntries")]
)
def test_node_rejection_ends_tail(two_shards, position, method):
    wrong, right = two_shards.topology.shard_ids
    node = two_shards.topology.shard(right).nodes[0]
    clients = NodeClients(two_shards.config.max_message_bytes)
    # Every shard's calls go to a node of `right`, which rejects those of
    # `wrong` with NOT_FOUND. With a position, the first call is the
    # QueryEntries that reads the shard's last sequence; without one, it is
    # FollowEntries.
    tail = Tail(
        two_shards.coordinator,
        lambda address: clients.stubs(node.address).node,
        EntrySelection(("tailed",), (), "", ()),
        "fingerprint",
        dict.fromkeys(two_shards.topology.shard_ids, position),
    )
    responses = parsed(tail)
    started = time.monotonic()
    try:
        with pytest.raises(NotFound) as caught:
            for _ in range(2):
                next(responses)
    finally:
        responses.close()
        clients.close()

    message = caught.value.message
    leader = two_shards.coordinator.route(wrong).leader_address
    assert time.monotonic() - started < OPEN_WAIT_SECONDS
    assert caught.value.reason == "SHARD_NOT_ON_NODE"
    assert caught.value.metadata["shard"] == wrong
    assert message.startswith(
        f"log shard {wrong}: node {leader} rejected {method} with NOT_FOUND: "
    )
    assert f"stores shard {right!r}, not {wrong!r}" in message


def closing_stub_for(clients: NodeClients, before_close: Callable[[], None]):
    """Return a stub_for that closes every channel just after it takes a stub.

    The shard thread then calls a closed channel, as when the router closes
    its node channels between the thread's choice of a node and its call.
    `before_close` runs first.
    """

    def stub_for(address: str):
        stub = clients.stubs(address).node
        before_close()
        clients.close()
        return stub

    return stub_for


class FailingStub:
    """A node stub whose `method` raises a ValueError that no closed channel
    raises, as a bug of the router would."""

    def __init__(self, stub, method: str) -> None:
        self._stub = stub
        self._method = method

    def __getattr__(self, name: str):
        if name != self._method:
            return getattr(self._stub, name)

        def fail(*args, **kwargs):
            raise ValueError(f"{name} got a request of the wrong shape")

        return fail


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(
    ("position", "method"),
    [(-1, "FollowEntries"), (0, "QueryEntries"), (0, "stub_for")],
)
def test_other_value_error_ends_tail(cluster, position, method):
    clients = NodeClients(cluster.config.max_message_bytes)

    def stub_for(address: str):
        if method == "stub_for":
            raise ValueError(f"invalid node address {address!r}")
        return FailingStub(clients.stubs(address).node, method)

    tail = Tail(
        cluster.coordinator,
        stub_for,
        EntrySelection(("tailed",), (), "", ()),
        "fingerprint",
        dict.fromkeys(cluster.topology.shard_ids, position),
    )
    responses = parsed(tail)
    try:
        # The ValueError itself, not the UNAVAILABLE of a stopping router,
        # so that the interceptor logs it and returns INTERNAL.
        with pytest.raises(ValueError) as caught:
            next(responses)
    finally:
        responses.close()
        clients.close()

    assert tail.join(5)
    if method == "stub_for":
        assert "invalid node address" in str(caught.value)
    else:
        assert f"{method} got a request of the wrong shape" in str(caught.value)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("position", [-1, 0])
def test_closed_channel_ends_stopped_tail(cluster, position):
    clients = NodeClients(cluster.config.max_message_bytes)
    # The order of the router's stop: first the tail, then the channels.
    tail = Tail(
        cluster.coordinator,
        closing_stub_for(clients, lambda: tail.stop()),
        EntrySelection(("tailed",), (), "", ()),
        "fingerprint",
        dict.fromkeys(cluster.topology.shard_ids, position),
    )
    responses = parsed(tail)
    try:
        next(responses)
    finally:
        responses.close()
        clients.close()

    # A shard thread that raised would fail the test through the filter
    # above, once the thread has ended.
    assert tail.join(5)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(
    ("position", "method"), [(-1, "FollowEntries"), (0, "QueryEntries")]
)
def test_closed_channel_ends_open_tail_unavailable(cluster, position, method):
    clients = NodeClients(cluster.config.max_message_bytes)
    tail = Tail(
        cluster.coordinator,
        closing_stub_for(clients, lambda: None),
        EntrySelection(("tailed",), (), "", ()),
        "fingerprint",
        dict.fromkeys(cluster.topology.shard_ids, position),
    )
    responses = parsed(tail)
    try:
        with pytest.raises(Unavailable) as caught:
            next(responses)
    finally:
        responses.close()
        clients.close()

    shard = cluster.topology.shard_ids[0]
    leader = cluster.coordinator.route(shard).leader_address
    assert tail.join(5)
    assert caught.value.reason == "ROUTER_STOPPING"
    assert caught.value.retry_delay == RETRY_DELAY_SECONDS
    assert caught.value.metadata["shard"] == shard
    assert caught.value.message.startswith(
        f"log shard {shard}: {method} to node {leader} failed because the router "
        "closed its channel"
    )
    assert "Retry the tail with the last resume_token" in caught.value.message


def stop_router_with_open_tails(cluster: Cluster, count: int) -> list[str]:
    """Open `count` tails of every shard, stop the router while most are still
    opening, and return the names of their threads that outlived the stop."""
    first = cluster.stub.TailLogEntries(pb.TailLogEntriesRequest(), timeout=10)
    token = next(first).resume_token
    first.cancel()
    earlier_threads = set(threading.enumerate())
    # Tails resumed from a token call QueryEntries before FollowEntries, so
    # shard threads that are still opening may call FollowEntries after the
    # router closed its node channels.
    calls = [
        cluster.stub.TailLogEntries(
            pb.TailLogEntriesRequest(resume_token=token), timeout=30
        )
        for _ in range(count)
    ]
    for call in calls[:4]:
        next(call)

    cluster.router.stop(0)
    running = [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("log-tail-") and thread not in earlier_threads
    ]
    # Let every such thread end within the test, so that an exception that
    # one raises fails the test through its warning filter.
    for thread in running:
        thread.join(5)
    return [thread.name for thread in running]


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_router_stop_ends_open_tails(base_config):
    config = base_config.replace(log_max_open_streams=64, log_max_streams_per_caller=64)
    # A round shows the race between the router's stop and its tails'
    # threads often but not always, so the test runs three.
    for _ in range(3):
        cluster = start_cluster(config, 2)
        try:
            outlived = stop_router_with_open_tails(cluster, 60)
        finally:
            cluster.close()

        assert outlived == []


def token_positions(token: str) -> dict[str, int]:
    return token_payload(token)["p"]


def read_messages(call, count: int) -> list[str]:
    messages: list[str] = []
    for response in call:
        messages.extend(e.message for e in response.entries)
        if len(messages) >= count:
            break
    return messages


def test_resume_token_past_retention_is_rejected(cluster, clients):
    request = pb.TailLogEntriesRequest(services=["tailed"])
    call = cluster.stub.TailLogEntries(request, timeout=10)
    old_token = next(call).resume_token
    write(cluster, "expired", 3)
    assert read_messages(call, 3) == [f"expired {i}" for i in range(3)]
    call.cancel()

    for address in cluster.coordinator.node_addresses():
        clients.stubs(address).node.ApplyRetention(
            node_service_pb2.ApplyRetentionRequest(
                default_cutoff=time.time_ns() + 1_000_000_000
            ),
            timeout=5,
        )
    resumed = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["tailed"], resume_token=old_token),
        timeout=10,
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(resumed)

    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "resume_token" in caught.value.details()
    assert "without resume_token" in caught.value.details()


def test_resume_token_after_retention_is_accepted(cluster, clients):
    call = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["tailed"]), timeout=10
    )
    next(call)
    write(cluster, "expired", 3)
    token = ""
    received = 0
    for response in call:
        received += len(response.entries)
        token = response.resume_token
        if received >= 3:
            break
    call.cancel()

    for address in cluster.coordinator.node_addresses():
        clients.stubs(address).node.ApplyRetention(
            node_service_pb2.ApplyRetentionRequest(
                default_cutoff=time.time_ns() + 1_000_000_000
            ),
            timeout=5,
        )
    write(cluster, "kept", 2)
    resumed = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["tailed"], resume_token=token),
        timeout=10,
    )

    assert read_messages(resumed, 2) == ["kept 0", "kept 1"]
    resumed.cancel()


def with_sequence(token: str, sequence: int) -> str:
    """Return `token` with every shard's sequence number set to `sequence`."""
    payload = token_payload(token)
    payload["p"] = dict.fromkeys(payload["p"], sequence)
    return encode_rehashed(payload, "resume token")


def first_token(cluster) -> str:
    """Return the token of a new tail's first message, after some entries."""
    write(cluster, "before", 3)
    call = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["tailed"]), timeout=10
    )
    token = next(call).resume_token
    call.cancel()
    return token


def resume_error(cluster, token: str) -> grpc.RpcError:
    """Resume a tail of `tailed` from `token` and return the error it fails with."""
    resumed = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["tailed"], resume_token=token),
        timeout=10,
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(resumed)
    return caught.value


@pytest.mark.parametrize(
    ("sequence", "problem"),
    [(999_999_999, "is beyond the shard's last sequence 3"), (-1, "is negative")],
)
def test_resume_token_with_invalid_sequence_is_rejected(cluster, sequence, problem):
    token = with_sequence(first_token(cluster), sequence)
    shard = cluster.topology.shard_ids[0]

    error = resume_error(cluster, token)

    details = error.details()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "INVALID_PAGE_TOKEN"
    assert details.startswith("resume_token: ")
    assert f"sequence {sequence} of shard {shard} {problem}" in details
    assert "start a new tail without a resume token" in details


def test_resume_token_unknown_shard_rejected(cluster):
    payload = token_payload(first_token(cluster))
    payload["p"]["shard-9"] = 0

    error = resume_error(cluster, encode_payload(payload))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "INVALID_PAGE_TOKEN"
    assert "is not a resume token returned by this method" in error.details()


def test_resume_token_missing_shard_rejected(cluster):
    payload = token_payload(first_token(cluster))
    shard = cluster.topology.shard_ids[0]
    assert list(payload["p"]) == [shard]
    payload["p"] = {}
    payload["e"] = {}

    error = resume_error(cluster, encode_rehashed(payload, "resume token"))

    details = error.details()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "INVALID_PAGE_TOKEN"
    assert details.startswith("resume_token: ")
    assert f"no position for shard(s) {shard}" in details
    assert "start a new tail without a resume token" in details


def test_resume_token_has_late_shard_start(base_config):
    config = base_config.replace(
        log_shards=2, log_replicas=1, log_node_port=0, log_fsync=False, workers=8
    )
    cluster = Cluster(config)
    try:
        first, down = cluster.topology.shard_ids
        ring = ServiceRing(cluster.topology.shard_ids)
        service = next(
            name
            for name in (f"svc-{i}" for i in range(100))
            if ring.shard_for(name) == first
        )
        node = cluster.topology.shard(down).nodes[0].node_id
        cluster.node_host(node).stop(0)

        # The stopped shard's stream never opens, so the first message comes
        # after the wait for it. It carries the shard's commit sequence from
        # the coordinator's last poll, which is 0 because the shard has no
        # entries.
        call = cluster.stub.TailLogEntries(pb.TailLogEntriesRequest(), timeout=30)
        first_response = next(call)
        token = first_response.resume_token
        call.cancel()
        payload = token_payload(token)
        cluster.stub.WriteLogEntries(
            pb.WriteLogEntriesRequest(entries=[entry(service, "after")]), timeout=5
        )
        resumed = cluster.stub.TailLogEntries(
            pb.TailLogEntriesRequest(resume_token=token), timeout=30
        )
        messages = read_messages(resumed, 1)
        resumed.cancel()
    finally:
        cluster.close()

    assert list(first_response.unopened_shards) == [down]
    assert payload["p"] == {first: 0, down: 0}
    assert payload.get("u", []) == []
    assert messages == ["after"]


def test_resume_token_at_last_sequence_is_accepted(cluster):
    token = first_token(cluster)
    assert with_sequence(token, 3) == token

    resumed = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["tailed"], resume_token=token),
        timeout=10,
    )
    next(resumed)
    write(cluster, "after", 2)

    assert read_messages(resumed, 2) == ["after 0", "after 1"]
    resumed.cancel()


def test_node_rejects_follow_below_first_stored(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    try:
        configure(leader, epoch=1, leader=leader)
        append(leader, 1, "expired", 3)
        # A query waits until the store has applied the entries.
        assert sorted(query_sequences(leader)) == [1, 2, 3]
        leader.stub.ApplyRetention(
            node_service_pb2.ApplyRetentionRequest(
                default_cutoff=time.time_ns() + 1_000_000_000
            ),
            timeout=5,
        )
        append(leader, 1, "kept", 2)

        stream = leader.stub.FollowEntries(
            node_service_pb2.FollowEntriesRequest(shard=SHARD, after_sequence=2),
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "after_sequence 2" in caught.value.details()
        assert "sequence 4" in caught.value.details()

        stream = leader.stub.FollowEntries(
            node_service_pb2.FollowEntriesRequest(shard=SHARD, after_sequence=3),
            timeout=5,
        )
        sequences: list[int] = []
        for message in stream:
            sequences.extend(message.sequences)
            if len(sequences) >= 2:
                break
        stream.cancel()
        assert sequences == [4, 5]
    finally:
        leader.stop()


def follow_error(handle, leader_epoch: int) -> grpc.RpcError:
    """Open a FollowEntries stream that expects the leader of `leader_epoch`."""
    stream = handle.stub.FollowEntries(
        node_service_pb2.FollowEntriesRequest(
            shard=SHARD, after_sequence=0, leader_epoch=leader_epoch
        ),
        timeout=5,
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    return caught.value


def test_node_follow_requires_leader_epoch(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    follower = start(base_config, tmp_path, "n1")
    try:
        for handle in (leader, follower):
            configure(
                handle, epoch=1, leader=leader, in_sync=[follower], followers=[follower]
            )
        not_leader = follow_error(follower, leader_epoch=1)
        stale = follow_error(leader, leader_epoch=2)
        stream = leader.stub.FollowEntries(
            node_service_pb2.FollowEntriesRequest(
                shard=SHARD, after_sequence=0, leader_epoch=1
            ),
            timeout=5,
        )
        opened = next(stream)
        stream.cancel()
    finally:
        follower.stop()
        leader.stop()

    assert not_leader.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(not_leader) == "NOT_LEADER"
    assert has_retry_info(not_leader)
    assert "node n1 is not the leader of shard" in not_leader.details()
    assert stale.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(stale) == "STALE_EPOCH"
    assert has_retry_info(stale)
    assert opened.last_sequence == 0


def test_node_follow_start_reads_no_partition(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    try:
        configure(leader, epoch=1, leader=leader)
        append(leader, 1, "kept", 3)
        assert sorted(query_sequences(leader)) == [1, 2, 3]
        # Private state: the store's count of partition scans.
        store = leader.node._store
        before = store.partition_scans

        stream = leader.stub.FollowEntries(
            node_service_pb2.FollowEntriesRequest(shard=SHARD, after_sequence=3),
            timeout=5,
        )
        opened = next(stream)
        stream.cancel()
        scans = store.partition_scans - before
    finally:
        leader.stop()

    assert opened.last_sequence == 3
    assert scans == 0


def test_node_follow_rejects_after_other_service_expired(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    try:
        configure(leader, epoch=1, leader=leader)
        append(leader, 1, "expired", 3)
        between = time.time_ns()
        append(leader, 1, "kept", 2)
        assert sorted(query_sequences(leader)) == [1, 2, 3, 4, 5]
        # Every entry is of service "checkout", whose retention deletes 1-3.
        leader.stub.ApplyRetention(
            node_service_pb2.ApplyRetentionRequest(
                default_cutoff=0, service_cutoffs={"checkout": between}
            ),
            timeout=5,
        )

        stream = leader.stub.FollowEntries(
            node_service_pb2.FollowEntriesRequest(
                shard=SHARD,
                after_sequence=0,
                filter=node_service_pb2.EntryFilter(services=["other"]),
            ),
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
    finally:
        leader.stop()

    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "deleted every entry below sequence 4, of any service" in (
        caught.value.details()
    )


def test_node_follows_sparse_matches_over_long_backlog(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    try:
        configure(leader, epoch=1, leader=leader)
        for batch in range(4):
            append(leader, 1, f"noise-{batch}", 9_000, label="noise")
            append(leader, 1, f"needle-{batch}", 1, label=f"needle {batch}")
        stream = leader.stub.FollowEntries(
            node_service_pb2.FollowEntriesRequest(
                shard=SHARD,
                filter=node_service_pb2.EntryFilter(keyword="needle"),
                after_sequence=0,
            ),
            timeout=30,
        )
        messages: list[str] = []
        sequences: list[int] = []
        for message in stream:
            messages.extend(message.entries.messages)
            sequences.extend(message.sequences)
            if len(messages) >= 4:
                break
        stream.cancel()
    finally:
        leader.stop()

    assert messages == [f"needle {batch} 0" for batch in range(4)]
    assert sequences == [9_001 * (batch + 1) for batch in range(4)]


# A tail resumed while a failover is in progress.

# The follower stays in the in-sync set while it is down for less than this,
# so it is promoted although it lacks entries that only the leader stored.
PROMOTION_FAILOVER_SECONDS = 6.0


def start_replicated(base_config, **settings) -> Cluster:
    """Start a router and one shard of two nodes, with `settings`."""
    config = base_config.replace(
        log_shards=1,
        log_replicas=2,
        log_node_port=0,
        log_fsync=False,
        workers=8,
        **settings,
    )
    return Cluster(config)


@pytest.fixture
def leader_quorum(base_config):
    """A router and one shard of two nodes whose leader acknowledges alone."""
    running = start_replicated(
        base_config,
        log_write_quorum="leader",
        log_failover_seconds=PROMOTION_FAILOVER_SECONDS,
    )
    yield running
    running.close()


def follower_last_sequence(cluster) -> int:
    (shard,) = cluster.stub.GetClusterStatus(pb.GetClusterStatusRequest()).shards
    (follower,) = shard.followers
    return follower.last_sequence


def replicate_first_entry(cluster) -> tuple[str, NodeSpec, NodeSpec]:
    """Write "ready 0" and wait until the follower stores it.

    Returns:
      The shard, its leader and its follower.
    """
    (shard,) = cluster.topology.shard_ids
    leader, follower = cluster.topology.shard(shard).nodes
    write(cluster, "ready", 1)
    assert wait_for(lambda: follower_last_sequence(cluster) == 1, timeout=10)
    return shard, leader, follower


def start_again(cluster, shard: str, spec: NodeSpec) -> LogNode:
    """Start a stopped node of the cluster on its address; return the node."""
    host, node = start_node(
        cluster.router_config, spec.node_id, shard, address=spec.address
    )
    cluster.hosts[spec.node_id] = host
    cluster.nodes.append(host)
    return node


def write_until_stored(cluster, label: str, count: int) -> None:
    """Write entries, retrying while the shard's new leader is not ready."""
    deadline = time.monotonic() + 30
    while True:
        try:
            write(cluster, label, count)
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            assert time.monotonic() < deadline, f"writes still fail: {error!r}"
            time.sleep(0.2)


def test_resume_waits_for_promoted_leader(leader_quorum):
    cluster = leader_quorum
    shard, leader, follower = replicate_first_entry(cluster)
    cluster.node_host(follower.node_id).stop(0)
    write(cluster, "only-leader", 5)
    call = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["tailed"]), timeout=10
    )
    # Its position, 6, lies beyond the follower's last entry.
    token = next(call).resume_token
    call.cancel()
    cluster.node_host(leader.node_id).stop(0)
    node = start_again(cluster, shard, follower)

    # Private state: ConfigureShard waits for the replication lock. While the
    # test has it, the coordinator already routes to the follower at epoch
    # 2, but the follower still has epoch 1 and lacks the leader's last
    # entries.
    with node._replicate_lock:
        promoted = wait_for(
            lambda: cluster.coordinator.route(shard).epoch == 2, timeout=30
        )
        route = cluster.coordinator.route(shard)
        unconfigured_epoch = node.state.epoch
        resumed = cluster.stub.TailLogEntries(
            pb.TailLogEntriesRequest(services=["tailed"], resume_token=token),
            timeout=60,
        )
        first = next(resumed)
    write_until_stored(cluster, "on-follower", 3)
    messages = read_messages(resumed, 3)
    resumed.cancel()

    assert promoted
    assert route.leader_address == follower.address
    assert unconfigured_epoch == 1
    assert token_positions(token) == {shard: 6}
    assert token_positions(first.resume_token) == {shard: 6}
    assert list(first.entries) == []
    assert messages == ["on-follower 0", "on-follower 1", "on-follower 2"]


# A live tail opened while a failover is in progress.


@pytest.fixture
def failover_pair(base_config):
    """A router and one shard of two nodes that fails over after 1 s."""
    running = start_replicated(base_config, log_failover_seconds=1.0)
    yield running
    running.close()


def follower_in_sync(cluster, shard: str, address: str) -> bool:
    return address in cluster.coordinator.route(shard).readable


def read_entries_until(responses, count: int, timeout: float) -> list[str]:
    """Read responses until `count` entries arrived or `timeout` seconds
    passed; return the entries.

    The timeout holds only when the tail sends keep-alives more often.
    """
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        received.extend(e.message for e in next(responses).entries)
    return received


def keepalive_tail(
    cluster, shard: str, stub_for: Callable[[str], object]
) -> Iterator[pb.TailLogEntriesResponse]:
    """Return the parsed responses of a tail after `shard`'s newest entry.

    The tail follows `tailed`, sends a keep-alive every 0.2 s, and its shard
    thread takes its stubs from `stub_for`.
    """
    tail = Tail(
        cluster.coordinator,
        stub_for,
        EntrySelection(("tailed",), (), "", ()),
        "fingerprint",
        {shard: -1},
        keepalive=0.2,
    )
    return parsed(tail)


def tail_across_restart(
    cluster, shard: str, spec: NodeSpec
) -> tuple[pb.TailLogEntriesResponse, list[str]]:
    """Tail `shard` while its stopped node `spec` starts again, and write 3
    entries; return the first response and the entries read after it.

    After the first response, each FollowEntries call waits until the test
    has written, so the stream opens only after the entries are stored. A
    tail that starts the shard after its newest entry then misses them all.
    """
    clients = NodeClients(cluster.config.max_message_bytes)
    first_sent = threading.Event()
    written = threading.Event()

    def stub_for(address: str):
        if first_sent.is_set():
            written.wait(10)
        return clients.stubs(address).node

    responses = keepalive_tail(cluster, shard, stub_for)
    try:
        first = next(responses)
        first_sent.set()
        start_again(cluster, shard, spec)
        write_until_stored(cluster, "after", 3)
        written.set()
        # Keep-alives come every 0.2 s, so a tail that missed the entries
        # ends the read after 5 s.
        messages = read_entries_until(responses, 3, timeout=5)
    finally:
        written.set()
        responses.close()
        clients.close()
    return first, messages


def test_live_tail_opens_on_unconfigured_leader(failover_pair):
    cluster = failover_pair
    shard, leader, follower = replicate_first_entry(cluster)
    # The test restarts the follower to get its LogNode object.
    cluster.node_host(follower.node_id).stop(0)
    node = start_again(cluster, shard, follower)
    # The restarted follower learns from the leader's heartbeats that "ready"
    # is committed. Otherwise a stream it opens would start before "ready".
    assert wait_for(
        lambda: (
            node.commit_sequence == 1
            and follower_in_sync(cluster, shard, follower.address)
        ),
        timeout=10,
    )

    clients = NodeClients(cluster.config.max_message_bytes)
    # The shard thread takes a stub before each FollowEntries call. Every call
    # after the first waits until the entry is stored, so a tail that lost its
    # first stream can only start after the entry. A tail that keeps its
    # first stream receives the entry whenever the node stores it.
    stubs_taken = 0
    stored = threading.Event()

    def stub_for(address: str):
        nonlocal stubs_taken
        stubs_taken += 1
        if stubs_taken > 1:
            stored.wait(10)
        return clients.stubs(address).node

    responses = keepalive_tail(cluster, shard, stub_for)
    try:
        cluster.node_host(leader.node_id).stop(0)
        # Private state: ConfigureShard waits for the replication lock. While
        # the test has the lock, the coordinator already routes to the
        # follower at epoch 2, but the follower still has epoch 1 and the
        # follower's role.
        with node._replicate_lock:
            promoted = wait_for(
                lambda: cluster.coordinator.route(shard).epoch == 2, timeout=10
            )
            route = cluster.coordinator.route(shard)
            unconfigured_epoch = node.state.epoch
            # The first response waits until the shard's stream opened, which
            # takes the node's first message, or until OPEN_WAIT_SECONDS
            # passed. Either way the node has processed the first
            # FollowEntries call by then, while it is still unconfigured.
            first = next(responses)
        write_until_stored(cluster, "between", 1)
        stored.set()
        # Keep-alives come every 0.2 s, so a tail that missed the entry ends
        # the read after 3 s.
        messages = read_entries_until(responses, 1, timeout=3)
    finally:
        stored.set()
        responses.close()
        clients.close()

    assert promoted
    assert route.leader_address == follower.address
    assert unconfigured_epoch == 1
    assert messages == ["between 0"]
    assert shard in token_positions(first.resume_token)


# A live tail opened while a shard's leader does not respond.


def test_late_shard_sends_later_entries(cluster):
    (shard,) = cluster.topology.shard_ids
    (spec,) = cluster.topology.shard(shard).nodes
    write(cluster, "before", 3)
    cluster.coordinator.wait_for_poll(5)
    cluster.coordinator.wait_for_poll(5)
    cluster.node_host(spec.node_id).stop(0)

    first, messages = tail_across_restart(cluster, shard, spec)

    assert messages == ["after 0", "after 1", "after 2"]
    assert token_positions(first.resume_token) == {shard: 3}
    assert list(first.unopened_shards) == [shard]


def test_unpolled_shard_sends_later_entries(cluster):
    # A new router has polled no node of the shard when the tail begins, so
    # the first response has no commit sequence to start the shard from.
    (shard,) = cluster.topology.shard_ids
    (spec,) = cluster.topology.shard(shard).nodes
    write(cluster, "before", 3)
    cluster.node_host(spec.node_id).stop(0)
    cluster.channel.close()
    cluster.router.stop(0)
    cluster.coordinator.stop()
    cluster.router, cluster.coordinator = build_router(
        cluster.router_config, "127.0.0.1:0"
    )
    cluster.channel = grpc.insecure_channel(f"127.0.0.1:{cluster.router.port}")
    cluster.stub = logs_service_pb2_grpc.LogsServiceStub(cluster.channel)
    unpolled = cluster.coordinator.known_commit(shard)

    first, messages = tail_across_restart(cluster, shard, spec)

    assert unpolled is None
    assert list(first.unopened_shards) == [shard]
    assert token_positions(first.resume_token) == {}
    assert messages == ["after 0", "after 1", "after 2"]


def test_late_opened_stream_restarts(cluster):
    (shard,) = cluster.topology.shard_ids
    write(cluster, "before", 3)
    cluster.coordinator.wait_for_poll(5)
    cluster.coordinator.wait_for_poll(5)

    clients = NodeClients(cluster.config.max_message_bytes)
    # The first FollowEntries call, which starts after the newest entry,
    # waits until the test has written after the first response.
    written = threading.Event()
    calls = 0

    def stub_for(address: str):
        nonlocal calls
        calls += 1
        if calls == 1:
            written.wait(10)
        return clients.stubs(address).node

    responses = keepalive_tail(cluster, shard, stub_for)
    try:
        first = next(responses)
        write(cluster, "after", 3)
        written.set()
        messages = read_entries_until(responses, 3, timeout=5)
    finally:
        written.set()
        responses.close()
        clients.close()

    assert messages == ["after 0", "after 1", "after 2"]
    assert calls == 2
    assert token_positions(first.resume_token) == {shard: 3}
    assert list(first.unopened_shards) == [shard]
