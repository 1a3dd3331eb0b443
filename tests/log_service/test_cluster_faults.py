"""Failures of a log cluster whose router and nodes are real processes.

Each test runs one shard on `splitlog serve log_node` processes and the
router on `splitlog serve log_service`. It kills some of them with SIGKILL,
or stops them with SIGSTOP, and checks the promise of docs/logs.md: with the
write quorum `all`, no acknowledged entry is lost or stored twice, and a tail
receives each of them once. With quorum `leader`, a tail receives every entry
that the new leader stores after a failover.
"""

from __future__ import annotations

import collections
import json
import signal
import threading
import time

import grpc
import pytest
from google.protobuf import timestamp_pb2

from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from tests.log_service.cluster_support import (
    ROUTER,
    SERVICE,
    SERVING,
    SHARD,
    UNAVAILABLE,
    BatchWriter,
    LogCluster,
    messages_of,
)
from tests.log_service.node_support import columns

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

BATCH_SIZE = 20


@pytest.fixture
def make_cluster(tmp_path):
    """Create log clusters under tmp_path and kill their processes afterwards."""
    created: list[LogCluster] = []

    def make(node_ids: tuple[str, ...], **options) -> LogCluster:
        cluster = LogCluster.create(tmp_path, node_ids, **options)
        created.append(cluster)
        return cluster

    yield make
    for cluster in created:
        cluster.stop_all()


def expected_messages(labels: list[str], size: int = BATCH_SIZE) -> set[str]:
    return {message for label in labels for message in messages_of(label, size)}


def repeated(found: collections.Counter) -> dict[str, int]:
    return {message: count for message, count in found.items() if count > 1}


def leader_is(node: str, epoch: int | None = None):
    def check(shard: logs_service_pb2.ShardStatus) -> bool:
        return shard.leader == node and (epoch is None or shard.leader_epoch == epoch)

    return check


def follower_caught_up(node: str):
    """Return a check that `node` has stored up to the leader's last sequence."""

    def check(shard: logs_service_pb2.ShardStatus) -> bool:
        for follower in shard.followers:
            if follower.node == node:
                return (
                    follower.reachable
                    and shard.last_sequence > 0
                    and follower.last_sequence == shard.last_sequence
                )
        return False

    return check


def wait_same_entries(cluster: LogCluster, nodes: tuple[str, ...]) -> list:
    """Wait until every node in `nodes` stores the same (sequence, message) list."""
    deadline = time.monotonic() + 20
    stored: list[list] = []
    while time.monotonic() < deadline:
        try:
            stored = [cluster.node_entries(node) for node in nodes]
        except grpc.RpcError:
            stored = []
        if stored and all(item == stored[0] for item in stored):
            return stored[0]
        time.sleep(0.2)
    counts = ", ".join(f"{len(item)} entries" for item in stored)
    raise AssertionError(f"nodes {nodes} store different entries: {counts}")


def test_leader_sigkill_mid_stream(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    writer = BatchWriter(cluster, BATCH_SIZE, give_up_after=30)
    writer.start()

    writer.wait_for(15, timeout=20)
    leader = cluster.shard_status().leader
    cluster.kill(leader)
    killed_at = len(writer.acknowledged)
    writer.wait_for(killed_at + 15, timeout=40)
    writer.finish(timeout=20)
    survivor = cluster.wait_status(
        lambda shard: shard.leader not in ("", leader), "a new leader"
    )
    found = cluster.listed_messages()
    # The old leader returns as a follower and drops what it never got
    # acknowledged, so both replicas end up with the same entries.
    cluster.start(leader)
    cluster.wait_status(
        lambda shard: shard.health == SERVING, "the old leader in sync again"
    )
    stored = wait_same_entries(cluster, ("a", "b"))

    assert writer.error is None, repr(writer.error)
    assert survivor.leader_epoch > 1
    assert writer.retries > 0, "the kill did not interrupt any write"
    assert repeated(found) == {}
    assert set(found) == expected_messages(writer.acknowledged)
    assert sorted(message for _, message in stored) == sorted(
        expected_messages(writer.acknowledged)
    )


def test_list_right_after_leader_sigkill(make_cluster, tmp_path):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("warm-up", 1, "warm-up")
    cluster.wait_status(follower_caught_up("b"), "b holding the warm-up entry")
    state_file = tmp_path / "data" / "log_service" / "coordinator.json"
    saved = json.loads(state_file.read_text())["shards"][SHARD]
    cluster.write("acked", 3, "acked")
    # The router reads from b once a fails, before b learns from a that the
    # three entries are committed.
    cluster.kill("a")
    found = cluster.listed_messages()

    assert saved["leader"] == "a"
    assert "b" in saved["in_sync"]
    assert found == collections.Counter(
        messages_of("warm-up", 1) + messages_of("acked", 3)
    )


def test_follower_restart_catches_up(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write_until_acknowledged("before", BATCH_SIZE, "before")

    cluster.kill("b")
    labels = [f"while-down-{index}" for index in range(5)]
    for label in labels:
        cluster.write_until_acknowledged(label, BATCH_SIZE, label)
    degraded = cluster.wait_status(
        lambda shard: shard.health != SERVING, "the shard to notice b is gone"
    )
    cluster.start("b")
    caught_up = cluster.wait_status(follower_caught_up("b"), "b to catch up")
    serving = cluster.wait_status(
        lambda shard: shard.health == SERVING, "the shard serving again"
    )
    stored = wait_same_entries(cluster, ("a", "b"))

    assert degraded.leader == "a"
    assert serving.leader == "a"
    assert serving.leader_epoch == 1
    assert caught_up.last_sequence == BATCH_SIZE * 6
    assert sorted(message for _, message in stored) == sorted(
        expected_messages(["before", *labels])
    )
    assert [sequence for sequence, _ in sorted(stored)] == list(
        range(1, BATCH_SIZE * 6 + 1)
    )


def test_single_node_sigkill_keeps_entries(make_cluster):
    cluster = make_cluster(("solo",))
    cluster.start_all()
    labels = [f"solo-{index}" for index in range(10)]
    for label in labels:
        cluster.write(label, BATCH_SIZE, label)

    cluster.kill("solo")
    down = cluster.wait_status(
        lambda shard: shard.health == UNAVAILABLE, "the shard unavailable"
    )
    cluster.start("solo")
    cluster.wait_status(lambda shard: shard.health == SERVING, "the shard serving")
    found = cluster.listed_messages()
    after = cluster.write_until_acknowledged("after", 1, "after")

    assert down.leader in ("", "solo")
    assert repeated(found) == {}
    assert set(found) == expected_messages(labels)
    assert after.accepted_count == 1


@pytest.mark.parametrize("cut_off", ["sigkill", "sigstop"])
def test_stale_leader_waits_for_promoted_follower(make_cluster, cut_off):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("e0", 2, "e0")

    cluster.kill("a", signal.SIGKILL if cut_off == "sigkill" else signal.SIGSTOP)
    cluster.wait_status(leader_is("b", 2), "b promoted at epoch 2")
    cluster.write_until_acknowledged("e1", 2, "e1")
    cluster.kill("b")
    leaderless = cluster.wait_status(lambda shard: shard.leader == "", "no leader")
    if cut_off == "sigkill":
        cluster.start("a")
    else:
        cluster.resume("a")
    cluster.wait_status(
        lambda shard: any(f.node == "a" and f.reachable for f in shard.followers),
        "the router to reach a",
    )
    with pytest.raises(grpc.RpcError) as through_router:
        cluster.write("refused", 1, "refused")
    # a still believes it leads epoch 1. A write under that epoch must not be
    # acknowledged, because b, which stores e1, is in a's in-sync set.
    with pytest.raises(grpc.RpcError) as old_epoch:
        cluster.node("a").AppendEntries(
            node_service_pb2.AppendEntriesRequest(
                shard=SHARD,
                leader_epoch=1,
                batch_id="stale/s0",
                entries=columns(1, "stale"),
            ),
            timeout=3,
        )
    still_leaderless = cluster.shard_status()

    cluster.start("b")
    back = cluster.wait_status(leader_is("b"), "b leader again")
    found = cluster.listed_messages()
    cluster.write_until_acknowledged("e2", 2, "e2")
    cluster.wait_status(
        lambda shard: shard.health == SERVING, "a back in the in-sync set"
    )
    stored = wait_same_entries(cluster, ("a", "b"))

    assert leaderless.health == UNAVAILABLE
    assert through_router.value.code() == grpc.StatusCode.UNAVAILABLE
    assert old_epoch.value.code() == grpc.StatusCode.UNAVAILABLE
    assert still_leaderless.leader == ""
    assert back.leader_epoch > 2
    assert set(found) == expected_messages(["e0", "e1"], 2)
    assert repeated(found) == {}
    assert sorted(message for _, message in stored) == sorted(
        expected_messages(["e0", "e1", "e2"], 2)
    )


def test_all_nodes_frozen_keeps_leader(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("e0", 2, "e0")
    before = cluster.wait_status(
        lambda shard: shard.health == SERVING, "the shard in sync"
    )

    # Every node missing its deadline at once looks like a starved router,
    # so three failover periods of it must not move the leader.
    for node in ("a", "b"):
        cluster.kill(node, signal.SIGSTOP)
    time.sleep(3.0)
    for node in ("a", "b"):
        cluster.resume(node)
    cluster.write_until_acknowledged("e1", 2, "e1")
    after = cluster.wait_status(
        lambda shard: shard.health == SERVING, "the shard in sync again"
    )

    assert before.leader == "a"
    assert after.leader == "a"
    assert after.leader_epoch == before.leader_epoch
    assert set(cluster.listed_messages()) == expected_messages(["e0", "e1"], 2)
    assert "does not count towards failover" in cluster.stderr_tail(ROUTER, 100_000)


def test_resent_batch_stored_once_everywhere(make_cluster):
    # A long failover keeps b in the in-sync set while it is down, so the
    # leader cannot acknowledge. The nodes give up on an append after 1 s.
    cluster = make_cluster(
        ("a", "b"),
        failover_seconds=60.0,
        node_settings={"SPLITLOG_DEADLINE_SECONDS": "1.0"},
    )
    cluster.start_all()
    cluster.write("first", 2, "first")

    cluster.kill("b")
    with pytest.raises(grpc.RpcError) as unacknowledged:
        cluster.write("pair", 2, "pair", timeout=10)
    stored_by_leader = cluster.node_replica("a").last_sequence
    cluster.start("b")
    resent = cluster.write_until_acknowledged("pair", 2, "pair")
    stored = wait_same_entries(cluster, ("a", "b"))
    found = cluster.listed_messages()

    assert unacknowledged.value.code() == grpc.StatusCode.UNAVAILABLE
    assert stored_by_leader == 4
    assert resent.accepted_count == 2
    assert stored == [(1, "first.0"), (2, "first.1"), (3, "pair.0"), (4, "pair.1")]
    assert found == collections.Counter(expected_messages(["first", "pair"], 2))


def test_router_sigkill_keeps_leaders(make_cluster, tmp_path):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("before-failover", BATCH_SIZE, "before-failover")
    cluster.kill("a")
    cluster.wait_status(leader_is("b", 2), "b promoted at epoch 2")
    cluster.start("a")
    before = cluster.wait_status(
        lambda shard: shard.health == SERVING, "a back in the in-sync set"
    )
    writer = BatchWriter(cluster, BATCH_SIZE, give_up_after=30)
    writer.start()

    writer.wait_for(10, timeout=20)
    cluster.kill(ROUTER)
    killed_at = len(writer.acknowledged)
    state_file = tmp_path / "data" / "log_service" / "coordinator.json"
    saved = json.loads(state_file.read_text())["shards"][SHARD]
    cluster.start(ROUTER)
    after = cluster.wait_status(
        lambda shard: shard.health == SERVING, "the shard serving"
    )
    writer.wait_for(killed_at + 10, timeout=30)
    writer.finish(timeout=20)
    found = cluster.listed_messages()

    assert writer.error is None, repr(writer.error)
    assert writer.retries > 0, "the kill did not interrupt any write"
    assert saved["leader"] == "b"
    assert saved["epoch"] == 2
    assert (before.leader, before.leader_epoch) == ("b", 2)
    assert (after.leader, after.leader_epoch) == ("b", 2)
    assert cluster.node_replica("a").leader_epoch == 2
    assert cluster.node_replica("b").leader_epoch == 2
    assert repeated(found) == {}
    assert set(found) == expected_messages(["before-failover", *writer.acknowledged])


def test_lagging_follower_not_promoted(make_cluster, tmp_path):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    cluster.write("first", BATCH_SIZE, "first")
    cluster.kill("b")
    # Quorum `all` acknowledges this only once b has left the in-sync set.
    cluster.write_until_acknowledged("without-b", BATCH_SIZE, "without-b")
    state_file = tmp_path / "data" / "log_service" / "coordinator.json"
    saved = json.loads(state_file.read_text())["shards"][SHARD]

    cluster.kill("a")
    cluster.start("b")
    cluster.wait_status(
        lambda shard: (
            shard.leader == ""
            and any(f.node == "b" and f.reachable for f in shard.followers)
        ),
        "the router to reach b while the shard has no leader",
    )
    with pytest.raises(grpc.RpcError) as refused:
        cluster.write("refused", 1, "refused")
    without_leader = cluster.shard_status()
    cluster.start("a")
    back = cluster.wait_status(
        lambda shard: shard.health == SERVING, "a leading with b in sync"
    )
    found = cluster.listed_messages()
    stored = wait_same_entries(cluster, ("a", "b"))

    assert saved["in_sync"] == []
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert without_leader.leader == ""
    assert without_leader.health == UNAVAILABLE
    assert back.leader == "a"
    assert repeated(found) == {}
    assert set(found) == expected_messages(["first", "without-b"])
    assert sorted(message for _, message in stored) == sorted(
        expected_messages(["first", "without-b"])
    )


class TailReader(threading.Thread):
    """Collects the messages of a TailLogEntries call until it is cancelled."""

    def __init__(self, call) -> None:
        super().__init__(name="tail-reader", daemon=True)
        self._call = call
        self._lock = threading.Lock()
        self._messages: list[str] = []
        self.opened = threading.Event()
        self.error: grpc.RpcError | None = None

    def run(self) -> None:
        try:
            for response in self._call:
                with self._lock:
                    self._messages.extend(e.message for e in response.entries)
                self.opened.set()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    def wait_until(self, condition, description: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.messages):
            assert self.error is None, f"tail failed: {self.error!r}"
            assert time.monotonic() < deadline, (
                f"timed out after {timeout:.0f} s waiting for {description}; "
                f"the tail received {len(self.messages)} entries"
            )
            time.sleep(0.05)


def test_tail_follows_promoted_leader(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    call = cluster.logs.TailLogEntries(
        logs_service_pb2.TailLogEntriesRequest(services=[SERVICE]), timeout=110
    )
    reader = TailReader(call)
    reader.start()
    writer = BatchWriter(cluster, BATCH_SIZE, give_up_after=30)
    stopped = False
    try:
        assert reader.opened.wait(30), "the tail sent no first response"
        # The shard's stream may open after the first response on a busy
        # machine, so the batches start once the tail delivers an entry.
        cluster.write("ready", 1, "ready")
        reader.wait_until(lambda seen: "ready.0" in seen, "the ready entry", 30)
        writer.start()
        writer.wait_for(5, timeout=20)
        cluster.kill("a", signal.SIGSTOP)
        stopped = True
        promoted = cluster.wait_status(leader_is("b", 2), "b promoted at epoch 2")
        writer.wait_for(len(writer.acknowledged) + 10, timeout=40)
        writer.finish(timeout=20)
        expected = [
            message
            for label in writer.acknowledged
            for message in messages_of(label, BATCH_SIZE)
        ]
        # a stays stopped, so its stream to the router stays open and silent.
        reader.wait_until(
            lambda seen: len(seen) >= len(expected) + 1, "every batch", 60
        )
        a_still_stopped = cluster.processes["a"].poll() is None
        received = reader.messages
    finally:
        writer.stop_requested.set()
        if stopped:
            cluster.resume("a")
        call.cancel()
        reader.join(10)
    router_log = cluster.stderr_tail(ROUTER, 100_000)

    assert writer.error is None, repr(writer.error)
    assert reader.error is None, repr(reader.error)
    assert a_still_stopped
    assert promoted.leader_epoch == 2
    assert received[0] == "ready.0"
    assert repeated(collections.Counter(received)) == {}
    assert received[1:] == expected
    # The tail left a's stream for the new route or for its silence, and did
    # not wait for the channel's keepalive to fail the connection.
    assert (
        "the coordinator named" in router_log or "no message arrived for" in router_log
    )


def timestamp_at(ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def faults_entry(message: str, at_ns: int) -> logs_service_pb2.LogEntry:
    return logs_service_pb2.LogEntry(
        service=SERVICE, message=message, timestamp=timestamp_at(at_ns)
    )


def test_resend_after_router_sigkill(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.settings["SPLITLOG_LOG_MAX_FUTURE_SECONDS"] = "2"
    cluster.start_all()
    now = time.time_ns()
    ahead = now + 6 * 10**9
    request = logs_service_pb2.WriteLogEntriesRequest(
        entries=[faults_entry("now", now), faults_entry("ahead", ahead)],
        request_id="ahead-then-valid",
    )

    first = cluster.logs.WriteLogEntries(request, timeout=10)
    cluster.kill(ROUTER)
    cluster.start(ROUTER)
    cluster.wait_status(lambda shard: shard.health == SERVING, "the shard serving")
    # The new router has forgotten the request. From 2 s before its time on,
    # the entry "ahead" is no longer too far in the future.
    time.sleep(max(0.0, (ahead - time.time_ns()) / 1e9 - 1.5))
    resent = cluster.logs.WriteLogEntries(request, timeout=10)
    again = cluster.logs.WriteLogEntries(request, timeout=10)
    stored = wait_same_entries(cluster, ("a", "b"))

    assert (first.accepted_count, first.rejected_count) == (1, 1)
    assert first.rejected_entries[0].reason == (
        logs_service_pb2.REJECTION_REASON_TIMESTAMP_IN_FUTURE
    )
    assert (resent.accepted_count, resent.rejected_count) == (2, 0)
    assert resent.duplicate_count == 1
    assert again.duplicate_count == 2
    assert stored == [(1, "now"), (2, "ahead")]


def test_retry_after_failover_stores_rest_once(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    now = time.time_ns()
    ten_days_ago = now - 10 * 24 * 3600 * 10**9
    request = logs_service_pb2.WriteLogEntriesRequest(
        entries=[faults_entry(f"old {i}", ten_days_ago + i) for i in range(3)]
        + [faults_entry(f"new {i}", now + i) for i in range(3)],
        request_id="old-and-new",
    )
    first = cluster.logs.WriteLogEntries(request, timeout=10)
    cluster.wait_status(follower_caught_up("b"), "b holding the first entries")

    cluster.kill("a")
    cluster.wait_status(leader_is("b", 2), "b promoted at epoch 2")
    update = logs_service_pb2.RetentionPolicy(name="retentionPolicy")
    update.service_retentions[SERVICE].seconds = 30 * 24 * 3600
    cluster.logs.UpdateRetentionPolicy(
        logs_service_pb2.UpdateRetentionPolicyRequest(retention_policy=update),
        timeout=10,
    )
    # One call each: a failed call that stored entries would make the next
    # one count them as duplicates.
    retried = cluster.logs.WriteLogEntries(request, timeout=30)
    again = cluster.logs.WriteLogEntries(request, timeout=30)
    cluster.start("a")
    stored = wait_same_entries(cluster, ("a", "b"))

    assert (first.accepted_count, first.rejected_count) == (3, 3)
    assert (retried.accepted_count, retried.rejected_count) == (6, 0)
    assert retried.duplicate_count == 3
    assert again.duplicate_count == 6
    assert sorted(message for _, message in stored) == sorted(
        [f"old {i}" for i in range(3)] + [f"new {i}" for i in range(3)]
    )


def set_service_retention(cluster: LogCluster, days: int) -> None:
    update = logs_service_pb2.RetentionPolicy(name="retentionPolicy")
    update.service_retentions[SERVICE].seconds = days * 24 * 3600
    cluster.logs.UpdateRetentionPolicy(
        logs_service_pb2.UpdateRetentionPolicyRequest(retention_policy=update),
        timeout=10,
    )


def wait_for_log(cluster: LogCluster, name: str, text: str, count: int) -> None:
    """Wait until `text` occurs `count` times in the stderr of process `name`."""
    deadline = time.monotonic() + 20
    while cluster.stderr_tail(name, 1_000_000).count(text) < count:
        assert time.monotonic() < deadline, (
            f"{text!r} did not occur {count} times\n" + cluster.all_stderr()
        )
        time.sleep(0.1)


def test_missed_retention_pass_survives_router_restart(make_cluster):
    cluster = make_cluster(("a", "b"))
    cluster.start_all()
    set_service_retention(cluster, 30)
    now = time.time_ns()
    five_days_ago = now - 5 * 24 * 3600 * 10**9
    cluster.logs.WriteLogEntries(
        logs_service_pb2.WriteLogEntriesRequest(
            entries=[faults_entry(f"old {i}", five_days_ago + i) for i in range(3)]
            + [faults_entry(f"new {i}", now + i) for i in range(2)]
        ),
        timeout=10,
    )
    cluster.wait_status(follower_caught_up("b"), "b holding every entry")

    cluster.kill("b")
    failed = f"log retention on node {cluster.address('b')} failed"
    # a deletes the old entries and b misses the pass. Then the policy is
    # loosened, so only the missed pass would delete them on b.
    set_service_retention(cluster, 2)
    wait_for_log(cluster, ROUTER, failed, 1)
    set_service_retention(cluster, 30)
    wait_for_log(cluster, ROUTER, failed, 2)
    on_a = sorted(message for _, message in cluster.node_entries("a"))
    cluster.kill(ROUTER)
    cluster.start("b")
    cluster.start(ROUTER)
    cluster.wait_status(
        lambda shard: any(f.node == "b" and f.reachable for f in shard.followers),
        "the router to reach b",
    )
    # An update that changes the retention starts a pass at once, instead
    # of at the next minute.
    set_service_retention(cluster, 31)
    deadline = time.monotonic() + 20
    on_b = sorted(message for _, message in cluster.node_entries("b"))
    while on_b != on_a and time.monotonic() < deadline:
        time.sleep(0.2)
        on_b = sorted(message for _, message in cluster.node_entries("b"))

    assert on_a == ["new 0", "new 1"]
    assert on_b == on_a


def test_missed_retention_pass_sent_on_return(make_cluster):
    # A long failover time keeps a the leader and b a follower throughout.
    cluster = make_cluster(("a", "b"), failover_seconds=600.0)
    cluster.start_all()
    set_service_retention(cluster, 30)
    now = time.time_ns()
    five_days_ago = now - 5 * 24 * 3600 * 10**9
    cluster.logs.WriteLogEntries(
        logs_service_pb2.WriteLogEntriesRequest(
            entries=[faults_entry(f"old {i}", five_days_ago + i) for i in range(3)]
            + [faults_entry(f"new {i}", now + i) for i in range(2)]
        ),
        timeout=10,
    )
    cluster.wait_status(follower_caught_up("b"), "b holding every entry")

    cluster.kill("b")
    set_service_retention(cluster, 2)
    wait_for_log(
        cluster, ROUTER, f"log retention on node {cluster.address('b')} failed", 1
    )
    returned_at = time.monotonic()
    cluster.start("b")
    # No update follows, and the next timed pass is a minute after the
    # update, so only the resend on b's return deletes the entries there.
    deadline = time.monotonic() + 20
    on_b = sorted(message for _, message in cluster.node_entries("b"))
    while on_b != ["new 0", "new 1"] and time.monotonic() < deadline:
        time.sleep(0.2)
        on_b = sorted(message for _, message in cluster.node_entries("b"))
    waited = time.monotonic() - returned_at
    on_a = sorted(message for _, message in cluster.node_entries("a"))

    assert on_a == ["new 0", "new 1"]
    assert on_b == on_a
    assert waited < 30


def tail_messages(cluster: LogCluster, count: int, **fields) -> list[str]:
    """Open a tail of SERVICE and return the messages of its first `count` entries."""
    call = cluster.logs.TailLogEntries(
        logs_service_pb2.TailLogEntriesRequest(services=[SERVICE], **fields),
        timeout=30,
    )
    reader = TailReader(call)
    reader.start()
    try:
        reader.wait_until(lambda seen: len(seen) >= count, f"{count} entries", 25)
    finally:
        call.cancel()
        reader.join(10)
    return reader.messages


def test_leader_quorum_tail_after_failover(make_cluster):
    # b stays in the in-sync set while it is down for less than 10 s, so it
    # is promoted although it lacks the entries that only a acknowledged.
    cluster = make_cluster(("a", "b"), failover_seconds=10.0)
    cluster.settings["SPLITLOG_LOG_WRITE_QUORUM"] = "leader"
    cluster.start_all()
    call = cluster.logs.TailLogEntries(
        logs_service_pb2.TailLogEntriesRequest(services=[SERVICE]), timeout=110
    )
    live = TailReader(call)
    live.start()
    tokens: list[str] = []
    early_call = early = None
    try:
        cluster.write("ready", 1, "ready")
        live.wait_until(lambda seen: "ready.0" in seen, "the ready entry", 30)
        cluster.wait_status(follower_caught_up("b"), "b holding the ready entry")
        cluster.kill("b")
        cluster.write("only-a", 5, "only-a")
        live.wait_until(lambda seen: len(seen) == 6, "the entries of a alone", 20)
        # A resume token whose position lies beyond b's last entry.
        token_call = cluster.logs.TailLogEntries(
            logs_service_pb2.TailLogEntriesRequest(services=[SERVICE]), timeout=30
        )
        tokens.append(next(token_call).resume_token)
        token_call.cancel()
        cluster.kill("a")
        cluster.start("b")
        cluster.wait_status(leader_is("b", 2), "b promoted at epoch 2", timeout=40)
        # Resumed while b's last sequence is below the token's position.
        early_call = cluster.logs.TailLogEntries(
            logs_service_pb2.TailLogEntriesRequest(
                services=[SERVICE], resume_token=tokens[0]
            ),
            timeout=60,
        )
        early = TailReader(early_call)
        early.start()
        assert early.opened.wait(20), f"the resumed tail failed: {early.error!r}"
        cluster.write("on-b", 10, "on-b")
        live.wait_until(lambda seen: len(seen) >= 16, "the entries of b", 30)
        early.wait_until(lambda seen: len(seen) >= 10, "b's entries, resumed", 30)
        received = live.messages
        received_early = early.messages
    finally:
        call.cancel()
        live.join(10)
        if early_call is not None:
            early_call.cancel()
            early.join(10)
    resumed = tail_messages(cluster, 10, resume_token=tokens[0])
    stored_on_b = [message for _, message in cluster.node_entries("b")]

    assert live.error is None, repr(live.error)
    assert stored_on_b == ["ready.0", *messages_of("on-b", 10)]
    assert received == ["ready.0", *messages_of("only-a", 5), *messages_of("on-b", 10)]
    assert received_early == messages_of("on-b", 10)
    assert resumed == messages_of("on-b", 10)
