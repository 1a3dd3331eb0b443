"""Writes to a shard whose leader process is stopped with SIGSTOP.

A stopped leader keeps its TCP connections open, so nothing but the
coordinator's polls shows the router that it is gone. These tests run the
router and the nodes as real processes and check that a write then ends
soon after the coordinator's decision: stored by the promoted follower, or
UNAVAILABLE with a message that names the shard. Before, every write to the
shard waited for its whole deadline (`deadline_seconds`, 5 s, without a
caller deadline), and the parts queued behind it too.

The time bounds are loose on purpose: a failover takes about
`log_failover_seconds` (1 s here) plus a poll round, and the bounds only
tell that from the old wait for the whole deadline.
"""

from __future__ import annotations

import signal
import time
from concurrent import futures

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2
from tests.log_service.cluster_support import SERVING, SHARD, LogCluster, entries
from tests.log_service.node_support import error_reason, has_retry_info

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

# A client deadline far above the failover time, so that only the router's
# own handling can end the write early.
CLIENT_TIMEOUT = 10.0
# Seconds within which a write to a stopped leader must end. The router
# waited for the whole client deadline (CLIENT_TIMEOUT) before.
FAST_ANSWER_SECONDS = 5.0


@pytest.fixture
def make_cluster(tmp_path):
    """Create log clusters under tmp_path; resume and kill their processes after."""
    created: list[LogCluster] = []

    def make(node_ids: tuple[str, ...], **options) -> LogCluster:
        cluster = LogCluster.create(tmp_path, node_ids, **options)
        created.append(cluster)
        return cluster

    yield make
    for cluster in created:
        for name in cluster.processes:
            if cluster.processes[name].poll() is None:
                cluster.resume(name)
        cluster.stop_all()


def timed_write(
    cluster: LogCluster, label: str, timeout: float = CLIENT_TIMEOUT
) -> tuple[logs_service_pb2.WriteLogEntriesResponse | grpc.RpcError, float]:
    """Write 2 entries under request id `label`; return the outcome and seconds."""
    started = time.monotonic()
    try:
        response = cluster.write(label, 2, label, timeout=timeout)
    except grpc.RpcError as error:
        return error, time.monotonic() - started
    return response, time.monotonic() - started


def test_writes_move_to_promoted_follower(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("e0", 2, "e0")

    cluster.kill("a", signal.SIGSTOP)
    # Several writes at once: the first blocks the shard's queue in a call
    # to the stopped leader, and the others wait behind it.
    with futures.ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(
            pool.map(lambda label: timed_write(cluster, label), ["e1", "e2", "e3"])
        )
    status = cluster.shard_status()
    cluster.resume("a")
    cluster.wait_status(lambda shard: shard.health == SERVING, "a in sync again")
    found = cluster.listed_messages()

    for response, seconds in outcomes:
        assert isinstance(response, logs_service_pb2.WriteLogEntriesResponse), (
            f"{response!r}\n{cluster.all_stderr()}"
        )
        assert response.accepted_count == 2
        assert seconds < FAST_ANSWER_SECONDS
    assert status.leader == "b"
    expected = {f"{label}.{i}" for label in ("e0", "e1", "e2", "e3") for i in (0, 1)}
    assert set(found) == expected
    assert max(found.values()) == 1
    assert "the coordinator replaced leader" in cluster.stderr_tail("router", 100_000)


def test_write_to_stopped_only_node_fails_fast(make_cluster):
    cluster = make_cluster(("solo",))
    cluster.start_all()
    cluster.write("e0", 2, "e0")

    cluster.kill("solo", signal.SIGSTOP)
    error, seconds = timed_write(cluster, "e1")
    later, later_seconds = timed_write(cluster, "e2")
    cluster.resume("solo")
    cluster.wait_status(lambda shard: shard.health == SERVING, "solo leading again")
    retried = cluster.write_until_acknowledged("e1", 2, "e1")

    assert isinstance(error, grpc.RpcError), repr(error)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert SHARD in error.details()
    assert "retry" in error.details()
    assert error_reason(error) == "SHARD_UNAVAILABLE"
    assert has_retry_info(error)
    assert seconds < FAST_ANSWER_SECONDS
    # While the shard has no leader, a write fails after one poll round.
    assert isinstance(later, grpc.RpcError), repr(later)
    assert later.code() == grpc.StatusCode.UNAVAILABLE
    assert later_seconds < FAST_ANSWER_SECONDS
    assert retried.accepted_count == 2


def test_stopped_leader_answers_before_caller_deadline(make_cluster):
    # No failover within the test, so the write can only end by its deadline.
    cluster = make_cluster(("a", "b"), failover_seconds=60.0)
    cluster.start_all()
    cluster.write("e0", 2, "e0")

    cluster.kill("a", signal.SIGSTOP)
    error, _ = timed_write(cluster, "e1", timeout=3.0)
    cluster.resume("a")
    retried = cluster.write_until_acknowledged("e1", 2, "e1")

    # The router ends its call to the leader a margin before the caller's
    # deadline, so the caller gets the router's error, which names the
    # shard, and not its own DEADLINE_EXCEEDED.
    assert isinstance(error, grpc.RpcError), repr(error)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert SHARD in error.details()
    assert "same request_id" in error.details()
    assert has_retry_info(error)
    assert retried.accepted_count == 2
    assert set(cluster.listed_messages()) == {"e0.0", "e0.1", "e1.0", "e1.1"}


# Seconds between sending the write and resuming the follower that the
# coordinator then promotes: long enough for the router to find no leader
# first, and short against a poll round, which takes POLL_DEADLINE_SECONDS
# (0.5 s) while a node is stopped.
RESUME_AFTER_WRITE_SECONDS = 0.01


def test_write_waits_for_promotion_without_leader(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("e0", 2, "e0")
    cluster.kill("a")
    cluster.wait_status(lambda shard: shard.leader == "b", "b promoted")
    cluster.write_until_acknowledged("e1", 2, "e1")
    cluster.kill("b", signal.SIGSTOP)
    cluster.wait_status(lambda shard: shard.leader == "", "no leader")

    # The router finds no leader. Once b, the only in-sync replica, resumes,
    # it replies to the poll round in flight, and the coordinator promotes it.
    started = time.monotonic()
    call = cluster.logs.WriteLogEntries.future(
        logs_service_pb2.WriteLogEntriesRequest(
            entries=entries("e2", 2), request_id="e2"
        ),
        timeout=CLIENT_TIMEOUT,
    )
    time.sleep(RESUME_AFTER_WRITE_SECONDS)
    cluster.resume("b")
    try:
        response = call.result()
    except grpc.RpcError as error:
        response = error
    seconds = time.monotonic() - started
    status = cluster.shard_status()

    assert isinstance(response, logs_service_pb2.WriteLogEntriesResponse), (
        f"{response!r}\n{cluster.all_stderr()}"
    )
    assert response.accepted_count == 2
    assert seconds < FAST_ANSWER_SECONDS
    assert status.leader == "b"
