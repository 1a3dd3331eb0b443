"""Reads of a shard whose node process is stopped with SIGSTOP.

A stopped node keeps its TCP connections open, so a query sent to it gets no
error until its deadline. These tests run the router and the nodes as real
processes, with a `log_failover_seconds` of 60 s so that the stopped leader
stays the shard's leader throughout. They check that ListLogEntries and
GetLogStats then read the in-sync follower, and that a shard with no
replica that responds fails with the router's UNAVAILABLE before the
caller's deadline. Before, such a read waited for the caller's whole
deadline on the stopped leader and failed with DEADLINE_EXCEEDED.

The bounds are loose on purpose: the checks only need to tell a response or
the router's own error from the caller's DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import signal
import time

import grpc
import pytest
from google.protobuf import timestamp_pb2

from splitlog.logs.v1 import logs_service_pb2
from tests.log_service.cluster_support import SERVICE, SHARD, LogCluster
from tests.log_service.node_support import error_reason, has_retry_info

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

# The caller's deadline of each read.
CLIENT_TIMEOUT = 5.0
# Keeps a stopped leader the shard's leader for the whole test.
NO_FAILOVER_SECONDS = 60.0


@pytest.fixture
def make_cluster(tmp_path):
    """Create log clusters under tmp_path; resume and kill their processes after."""
    created: list[LogCluster] = []

    def make(node_ids: tuple[str, ...], **options) -> LogCluster:
        cluster = LogCluster.create(
            tmp_path, node_ids, failover_seconds=NO_FAILOVER_SECONDS, **options
        )
        created.append(cluster)
        return cluster

    yield make
    for cluster in created:
        for name in cluster.processes:
            if cluster.processes[name].poll() is None:
                cluster.resume(name)
        cluster.stop_all()


def list_page(
    cluster: LogCluster, page_size: int = 1000, page_token: str = ""
) -> logs_service_pb2.ListLogEntriesResponse:
    """List SERVICE oldest first, with the caller deadline CLIENT_TIMEOUT."""
    return cluster.logs.ListLogEntries(
        logs_service_pb2.ListLogEntriesRequest(
            services=[SERVICE],
            order_by="timestamp",
            page_size=page_size,
            page_token=page_token,
        ),
        timeout=CLIENT_TIMEOUT,
    )


def list_rest(cluster: LogCluster, page_size: int, page_token: str) -> list[str]:
    """Return the messages of every page from `page_token` on."""
    messages = []
    while page_token:
        response = list_page(cluster, page_size, page_token)
        messages += [entry.message for entry in response.entries]
        page_token = response.next_page_token
    return messages


def stats(cluster: LogCluster, **fields) -> logs_service_pb2.GetLogStatsResponse:
    return cluster.logs.GetLogStats(
        logs_service_pb2.GetLogStatsRequest(services=[SERVICE], **fields),
        timeout=CLIENT_TIMEOUT,
    )


def timed(call, *args, **kwargs) -> tuple[object, float]:
    """Run `call`; return its response or RpcError, and the seconds it took."""
    started = time.monotonic()
    try:
        outcome = call(*args, **kwargs)
    except grpc.RpcError as error:
        outcome = error
    return outcome, time.monotonic() - started


def hour_ago() -> timestamp_pb2.Timestamp:
    start = timestamp_pb2.Timestamp()
    start.FromSeconds(int(time.time()) - 3600)
    return start


def test_reads_use_follower_of_stopped_leader(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("e0", 6, "e0")
    written = [f"e0.{index}" for index in range(6)]

    cluster.kill("a", signal.SIGSTOP)
    # Right after the stop, before a poll has found node a silent.
    listed, list_seconds = timed(list_page, cluster)
    # The stats without start_time read every shard twice: the oldest
    # entry first, then the counts.
    counted, count_seconds = timed(stats, cluster)
    ranged, _ = timed(stats, cluster, start_time=hour_ago())
    # Once a poll has found node a silent, reads go to b first.
    time.sleep(1.0)
    later, later_seconds = timed(list_page, cluster)
    status = cluster.shard_status()

    assert isinstance(listed, logs_service_pb2.ListLogEntriesResponse), (
        f"{listed!r}\n{cluster.all_stderr()}"
    )
    assert [entry.message for entry in listed.entries] == written
    assert list_seconds < CLIENT_TIMEOUT
    assert isinstance(counted, logs_service_pb2.GetLogStatsResponse), repr(counted)
    assert counted.total_count == 6
    assert count_seconds < CLIENT_TIMEOUT
    assert isinstance(ranged, logs_service_pb2.GetLogStatsResponse), repr(ranged)
    assert ranged.total_count == 6
    assert isinstance(later, logs_service_pb2.ListLogEntriesResponse), repr(later)
    assert [entry.message for entry in later.entries] == written
    assert later_seconds < CLIENT_TIMEOUT
    # No failover happened, so the entries came from the follower.
    assert status.leader == "a"


def test_pages_continue_on_follower(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("e0", 7, "e0")
    first = list_page(cluster, page_size=2)

    cluster.kill("a", signal.SIGSTOP)
    rest = list_rest(cluster, 2, first.next_page_token)

    messages = [entry.message for entry in first.entries] + rest
    assert messages == [f"e0.{index}" for index in range(7)]


def test_stopped_only_node_unavailable_before_deadline(make_cluster):
    cluster = make_cluster(("solo",))
    cluster.start_all()
    cluster.write("e0", 2, "e0")

    cluster.kill("solo", signal.SIGSTOP)
    listed, list_seconds = timed(list_page, cluster)
    counted, count_seconds = timed(stats, cluster)
    cluster.resume("solo")
    again = list_page(cluster)

    for error, seconds in ((listed, list_seconds), (counted, count_seconds)):
        assert isinstance(error, grpc.RpcError), repr(error)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert SHARD in error.details()
        assert error_reason(error) == "SHARD_UNAVAILABLE"
        assert has_retry_info(error)
        assert seconds < CLIENT_TIMEOUT
    assert [entry.message for entry in again.entries] == ["e0.0", "e0.1"]


def test_follower_behind_page_token_not_read(make_cluster):
    cluster = make_cluster(("a", "b"))
    # With quorum `leader`, a acknowledges the entries that b misses while
    # it is down.
    cluster.settings["SPLITLOG_LOG_WRITE_QUORUM"] = "leader"
    cluster.start_all()
    cluster.write("e0", 2, "e0")
    cluster.wait_status(
        lambda shard: any(
            f.node == "b" and f.last_sequence > 0 for f in shard.followers
        ),
        "b holding e0",
    )
    cluster.kill("b")
    cluster.write("e1", 4, "e1")
    # The page token's sequence bound covers e1, which only a stores.
    first = list_page(cluster, page_size=2)
    cluster.kill("a", signal.SIGSTOP)
    cluster.start("b")
    cluster.wait_status(
        lambda shard: any(f.node == "b" and f.reachable for f in shard.followers),
        "the router to reach b",
    )

    behind, seconds = timed(list_page, cluster, 2, first.next_page_token)
    cluster.resume("a")
    cluster.wait_status(
        lambda shard: any(
            f.node == "b" and f.last_sequence == shard.last_sequence
            for f in shard.followers
        ),
        "b catching up with a",
    )
    rest = list_rest(cluster, 2, first.next_page_token)

    # b lacks e1, so a page from it would skip e1's entries.
    assert isinstance(behind, grpc.RpcError), repr(behind)
    assert behind.code() == grpc.StatusCode.UNAVAILABLE, behind.details()
    assert "page token" in behind.details()
    assert error_reason(behind) == "SHARD_UNAVAILABLE"
    assert has_retry_info(behind)
    assert seconds < CLIENT_TIMEOUT
    messages = [entry.message for entry in first.entries] + rest
    assert messages == ["e0.0", "e0.1", "e1.0", "e1.1", "e1.2", "e1.3"]
