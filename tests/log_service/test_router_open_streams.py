"""The router's limits on open TailLogEntries and StreamLogEntries calls.

A router with two shards of one node each listens on 127.0.0.1, with 2
handler threads for short calls and `log_max_open_streams` 3. Each test keeps
long-lived calls open and checks that short calls still succeed, that one
call over the limit fails at once, and that the slots come back. The tests of
`log_max_streams_per_caller` run auth off and name their callers with the
`x-splitlog-client` metadata, as the gateway does for its clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2

from log_service.app import build_router
from log_service.open_streams import OpenStreams
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import logs_service_pb2_grpc
from tests.log_service.router_support import details_of
from tests.log_service.test_router_cluster import Cluster, entry
from tests.log_service.test_tail import with_sequence

MAX_OPEN = 3
# Seconds a short call may take. It is far above what the call needs, so a
# call stuck behind the open ones fails instead of hanging the test.
CALL_TIMEOUT = 10.0
# Deadline of the held calls, so that a tail that never opens fails the test.
HELD_TIMEOUT = 30.0
TAIL_METHOD = "/splitlog.logs.v1.LogsService/TailLogEntries"


def cluster_config(base_config, **settings):
    """Return the settings of a test cluster: 2 handler threads, MAX_OPEN streams."""
    return base_config.replace(
        **{
            "log_shards": 2,
            "log_replicas": 1,
            "log_node_port": 0,
            "log_fsync": False,
            "workers": 2,
            "log_max_open_streams": MAX_OPEN,
            **settings,
        }
    )


@pytest.fixture
def cluster(base_config):
    running = Cluster(cluster_config(base_config))
    yield running
    running.close()


def open_streams_of(cluster: Cluster) -> OpenStreams:
    """Return the router's count of open long-lived calls."""
    handler = cluster.router.handlers.lookup(TAIL_METHOD)
    return handler.unary_stream.__self__.open_streams


def wait_until(condition: Callable[[], bool], timeout: float = CALL_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def idle_requests(release: threading.Event) -> Iterator[pb.StreamLogEntriesRequest]:
    """Send no request message until `release` is set, then end the stream."""
    release.wait()
    yield from ()


def open_tail(stub, metadata=()) -> grpc.Call:
    """Start a tail and wait for its first response, which it sends once open."""
    call = stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["held"]),
        timeout=HELD_TIMEOUT,
        metadata=metadata,
    )
    next(call)
    return call


def check_short_calls(stub) -> None:
    written = stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(entries=[entry("short", "while held")]),
        timeout=CALL_TIMEOUT,
    )
    listed = stub.ListLogEntries(
        pb.ListLogEntriesRequest(services=["short"]), timeout=CALL_TIMEOUT
    )
    status = stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=CALL_TIMEOUT)

    assert written.accepted_count == 1
    assert "while held" in [e.message for e in listed.entries]
    assert len(status.shards) == 2


def check_too_many(error: grpc.RpcError) -> None:
    infos = details_of(error, error_details_pb2.ErrorInfo)
    retries = details_of(error, error_details_pb2.RetryInfo)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "log_max_open_streams is 3" in error.details()
    assert "raise log_max_open_streams" in error.details()
    assert [info.reason for info in infos] == ["TOO_MANY_OPEN_STREAMS"]
    assert infos[0].metadata["limit"] == "log_max_open_streams"
    assert len(retries) == 1
    assert retries[0].retry_delay.seconds > 0


def test_tails_at_limit_leave_short_calls(cluster):
    open_streams = open_streams_of(cluster)
    tails = [open_tail(cluster.stub) for _ in range(MAX_OPEN)]

    assert open_streams.open_count == MAX_OPEN
    check_short_calls(cluster.stub)
    extra = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["held"]), timeout=CALL_TIMEOUT
    )
    with pytest.raises(grpc.RpcError) as rejected:
        next(extra)
    check_too_many(rejected.value)

    for tail in tails:
        tail.cancel()
    assert wait_until(lambda: open_streams.open_count == 0)
    again = [open_tail(cluster.stub) for _ in range(MAX_OPEN)]
    assert open_streams.open_count == MAX_OPEN
    for tail in again:
        tail.cancel()
    assert wait_until(lambda: open_streams.open_count == 0)


def test_rejections_warn_once_per_interval(cluster, caplog):
    caplog.set_level(logging.WARNING, logger="log_service.open_streams")
    open_streams = open_streams_of(cluster)
    tails = [open_tail(cluster.stub) for _ in range(MAX_OPEN)]

    for _ in range(2):
        extra = cluster.stub.TailLogEntries(
            pb.TailLogEntriesRequest(services=["held"]), timeout=CALL_TIMEOUT
        )
        with pytest.raises(grpc.RpcError):
            next(extra)
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "log_service.open_streams"
    ]

    assert len(warnings) == 1
    assert warnings[0].startswith("rejected 1 long-lived call(s), the last a ")
    assert "3 are open, at most 3 in total" in warnings[0]
    for tail in tails:
        tail.cancel()
    assert wait_until(lambda: open_streams.open_count == 0)


def test_idle_streams_at_limit_leave_short_calls(cluster):
    open_streams = open_streams_of(cluster)
    release = threading.Event()
    try:
        streams = [
            cluster.stub.StreamLogEntries.future(
                idle_requests(release), timeout=HELD_TIMEOUT
            )
            for _ in range(MAX_OPEN)
        ]
        assert wait_until(lambda: open_streams.open_count == MAX_OPEN)

        check_short_calls(cluster.stub)
        extra = cluster.stub.StreamLogEntries.future(
            idle_requests(release), timeout=CALL_TIMEOUT
        )
        check_too_many(extra.exception(timeout=CALL_TIMEOUT))

        for stream in streams:
            stream.cancel()
        assert wait_until(lambda: open_streams.open_count == 0)
    finally:
        release.set()
    response = cluster.stub.StreamLogEntries(
        iter([pb.StreamLogEntriesRequest(entries=[entry("short", "after")])]),
        timeout=CALL_TIMEOUT,
    )

    assert response.accepted_count == 1
    assert wait_until(lambda: open_streams.open_count == 0)


def test_slots_return_when_channel_closes(cluster):
    open_streams = open_streams_of(cluster)
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.router.port}")
    stub = logs_service_pb2_grpc.LogsServiceStub(channel)
    release = threading.Event()
    try:
        # Held in names, because a call that is garbage collected is cancelled.
        tail = open_tail(stub)
        stream = stub.StreamLogEntries.future(
            idle_requests(release), timeout=HELD_TIMEOUT
        )
        assert wait_until(lambda: open_streams.open_count == 2)

        channel.close()

        assert wait_until(lambda: open_streams.open_count == 0)
        assert tail.code() == grpc.StatusCode.CANCELLED
        assert stream.cancelled() or stream.exception() is not None
    finally:
        release.set()
        channel.close()


def test_failed_calls_return_slots(cluster):
    open_streams = open_streams_of(cluster)
    first_tail = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["held"])
    )
    token = next(first_tail).resume_token
    first_tail.cancel()
    assert wait_until(lambda: open_streams.open_count == 0)
    ahead = with_sequence(token, 999_999_999)
    too_many = cluster.router_config.log_max_batch_entries + 1
    oversized = pb.StreamLogEntriesRequest(entries=[entry("short", "x")] * too_many)

    with pytest.raises(grpc.RpcError) as tail_error:
        next(
            cluster.stub.TailLogEntries(
                pb.TailLogEntriesRequest(services=["held"], resume_token=ahead),
                timeout=CALL_TIMEOUT,
            )
        )
    with pytest.raises(grpc.RpcError) as stream_error:
        cluster.stub.StreamLogEntries(iter([oversized]), timeout=CALL_TIMEOUT)

    assert tail_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stream_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert wait_until(lambda: open_streams.open_count == 0)


def test_max_open_streams_below_one(base_config):
    config = base_config.replace(log_max_open_streams=0)

    with pytest.raises(ValueError, match="log_max_open_streams must be 1 or more"):
        build_router(config, "127.0.0.1:0")


def test_tails_at_limit_keep_replicated_leaders(base_config):
    # Each tail follows each shard's leader node with a call of its own, so
    # the nodes hold as many open calls as the router.
    cluster = Cluster(cluster_config(base_config, log_replicas=2))
    try:
        epochs = {
            shard.shard: shard.leader_epoch
            for shard in cluster.stub.GetClusterStatus(
                pb.GetClusterStatusRequest(), timeout=CALL_TIMEOUT
            ).shards
        }
        tails = [open_tail(cluster.stub) for _ in range(MAX_OPEN)]
        # Several of the coordinator's polls, each with a short deadline,
        # run meanwhile; a node out of threads would miss them and lose its
        # leadership.
        for _ in range(10):
            check_short_calls(cluster.stub)
            time.sleep(0.2)
        after = {
            shard.shard: shard.leader_epoch
            for shard in cluster.stub.GetClusterStatus(
                pb.GetClusterStatusRequest(), timeout=CALL_TIMEOUT
            ).shards
        }
        for tail in tails:
            tail.cancel()
    finally:
        cluster.close()

    assert after == epochs


PER_CALLER = 2
CALLER_A = (("x-splitlog-client", "10.0.0.1"),)
CALLER_B = (("x-splitlog-client", "10.0.0.2"),)
CALLER_C = (("x-splitlog-client", "10.0.0.3"),)


@pytest.fixture
def capped_cluster(base_config):
    config = cluster_config(
        base_config,
        log_max_open_streams=2 * PER_CALLER,
        log_max_streams_per_caller=PER_CALLER,
    )
    running = Cluster(config)
    yield running
    running.close()


def rejected_tail(stub, metadata=()) -> grpc.RpcError:
    extra = stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=["held"]),
        timeout=CALL_TIMEOUT,
        metadata=metadata,
    )
    with pytest.raises(grpc.RpcError) as rejected:
        next(extra)
    return rejected.value


def check_caller_full(error: grpc.RpcError, caller: str) -> None:
    infos = details_of(error, error_details_pb2.ErrorInfo)
    retries = details_of(error, error_details_pb2.RetryInfo)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{caller} already has 2 TailLogEntries" in error.details()
    assert "log_max_streams_per_caller is 2" in error.details()
    assert f"close a tail or stream of {caller}" in error.details()
    assert "raise log_max_streams_per_caller" in error.details()
    assert [info.reason for info in infos] == ["TOO_MANY_STREAMS_PER_CALLER"]
    assert infos[0].metadata["limit"] == "log_max_streams_per_caller"
    assert infos[0].metadata["caller"] == caller
    assert len(retries) == 1
    assert retries[0].retry_delay.seconds > 0


def test_caller_at_limit_leaves_others(capped_cluster):
    stub = capped_cluster.stub
    open_streams = open_streams_of(capped_cluster)
    open_tails = [open_tail(stub, CALLER_A) for _ in range(PER_CALLER)]

    rejected = rejected_tail(stub, CALLER_A)
    open_tails += [open_tail(stub, CALLER_B) for _ in range(PER_CALLER)]

    check_caller_full(rejected, "peer/10.0.0.1")
    assert open_streams.open_count_of("peer/10.0.0.1") == PER_CALLER
    assert open_streams.open_count_of("peer/10.0.0.2") == PER_CALLER
    check_short_calls(stub)
    for tail in open_tails:
        tail.cancel()
    assert wait_until(lambda: open_streams.open_count == 0)
    assert open_streams.open_count_of("peer/10.0.0.1") == 0


def test_caller_limit_counts_write_streams(capped_cluster):
    stub = capped_cluster.stub
    open_streams = open_streams_of(capped_cluster)
    release = threading.Event()
    try:
        stream = stub.StreamLogEntries.future(
            idle_requests(release), timeout=HELD_TIMEOUT, metadata=CALLER_A
        )
        assert wait_until(lambda: open_streams.open_count == 1)
        tail = open_tail(stub, CALLER_A)

        rejected_stream = stub.StreamLogEntries.future(
            idle_requests(release), timeout=CALL_TIMEOUT, metadata=CALLER_A
        )
        error = rejected_stream.exception(timeout=CALL_TIMEOUT)
        other = open_tail(stub, CALLER_B)

        check_caller_full(error, "peer/10.0.0.1")
        stream.cancel()
        assert wait_until(lambda: open_streams.open_count_of("peer/10.0.0.1") == 1)
        again = open_tail(stub, CALLER_A)
        for call in (tail, other, again):
            call.cancel()
    finally:
        release.set()
    assert wait_until(lambda: open_streams.open_count == 0)


def test_caller_without_metadata_is_peer_host(capped_cluster):
    stub = capped_cluster.stub
    open_tails = [open_tail(stub) for _ in range(PER_CALLER)]

    rejected = rejected_tail(stub)

    check_caller_full(rejected, "peer/127.0.0.1")
    for tail in open_tails:
        tail.cancel()


def test_total_limit_applies_across_callers(capped_cluster):
    stub = capped_cluster.stub
    open_streams = open_streams_of(capped_cluster)
    open_tails = [open_tail(stub, CALLER_A) for _ in range(PER_CALLER)]
    open_tails += [open_tail(stub, CALLER_B) for _ in range(PER_CALLER)]

    rejected = rejected_tail(stub, CALLER_C)

    infos = details_of(rejected, error_details_pb2.ErrorInfo)
    assert rejected.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [info.reason for info in infos] == ["TOO_MANY_OPEN_STREAMS"]
    assert "log_max_open_streams is 4" in rejected.details()
    assert open_streams.open_count_of("peer/10.0.0.3") == 0
    for tail in open_tails:
        tail.cancel()
    assert wait_until(lambda: open_streams.open_count == 0)


def test_max_streams_per_caller_below_zero(base_config):
    config = base_config.replace(log_max_streams_per_caller=-1)

    with pytest.raises(
        ValueError, match="log_max_streams_per_caller must be 0 \\(no limit\\) or more"
    ):
        build_router(config, "127.0.0.1:0")


def test_zero_per_caller_allows_one_caller_every_slot(base_config):
    cluster = Cluster(cluster_config(base_config, log_max_streams_per_caller=0))
    try:
        open_streams = open_streams_of(cluster)
        open_tails = [open_tail(cluster.stub, CALLER_A) for _ in range(MAX_OPEN)]

        assert open_streams.open_count == MAX_OPEN
        check_too_many(rejected_tail(cluster.stub, CALLER_A))
        for tail in open_tails:
            tail.cancel()
        assert wait_until(lambda: open_streams.open_count == 0)
    finally:
        cluster.close()
