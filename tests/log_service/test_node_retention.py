"""Tests that retention deletes the same entries on every replica of a shard.

Real nodes on 127.0.0.1 over gRPC. The applier's linger is raised to 60 s, so
a record reaches the store only when a call waits for it.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from log_service import node as node_module
from log_service.coordinator import ShardReplicas
from log_service.index_runs import runs_of
from log_service.retention import MissedPasses, RetentionEnforcer, RetentionStore
from log_service.wal import slice_columns
from splitlog.logs.v1 import (
    logs_service_pb2,
    node_service_pb2,
    node_service_pb2_grpc,
)
from tests.log_service.node_support import (
    SHARD,
    append_columns,
    columns_at,
    configure,
    query_messages,
    start,
    wait_for,
)
from tests.log_service.test_replication import form_pair

HOUR_NS = 3600 * 1_000_000_000


@pytest.fixture(autouse=True)
def long_linger(monkeypatch):
    monkeypatch.setattr(node_module, "APPLY_LINGER_SECONDS", 60.0)


def append_aged(handle, batch_id: str, count: int, age_ns: int) -> None:
    """Append `count` entries whose timestamps lie `age_ns` in the past."""
    then = time.time_ns() - age_ns
    entries = columns_at(batch_id, [then + i for i in range(count)])
    append_columns(handle, 1, batch_id, entries)


def retention(handle, cutoff: int, max_sequence: int = 0):
    return handle.stub.ApplyRetention(
        node_service_pb2.ApplyRetentionRequest(
            default_cutoff=cutoff, max_sequence=max_sequence
        ),
        timeout=10,
    )


def test_retention_covers_unapplied_record(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    try:
        configure(leader, epoch=1, leader=leader)
        # Committed at once, then left to the applier's 60 s linger.
        append_aged(leader, "old", 3, 2 * HOUR_NS)
        response = retention(leader, time.time_ns() - HOUR_NS)
        # A looser policy: a pass that reaches the record now keeps it.
        retention(leader, time.time_ns() - 3 * HOUR_NS)
        messages = query_messages(leader)
    finally:
        leader.stop()

    assert response.deleted_count == 3
    assert response.max_sequence == 3
    assert messages == []


def test_bounded_retention_keeps_later_entries(base_config, tmp_path):
    node = start(base_config, tmp_path, "n0")
    try:
        configure(node, epoch=1, leader=node)
        append_aged(node, "covered", 2, 2 * HOUR_NS)
        append_aged(node, "later", 2, 2 * HOUR_NS)
        response = retention(node, time.time_ns() - HOUR_NS, max_sequence=2)
        messages = query_messages(node)
        with pytest.raises(grpc.RpcError) as negative:
            retention(node, time.time_ns() - HOUR_NS, max_sequence=-1)
    finally:
        node.stop()

    assert response.deleted_count == 2
    assert response.max_sequence == 2
    assert sorted(messages) == ["later 0", "later 1"]
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_sequence" in negative.value.details()


def set_default_retention(policies: RetentionStore, hours: int) -> None:
    policies.update(
        logs_service_pb2.RetentionPolicy(
            name="retentionPolicy",
            default_retention=duration_pb2.Duration(seconds=hours * 3600),
        ),
        field_mask_pb2.FieldMask(paths=["default_retention"]),
    )


def test_enforcer_resends_missed_pass(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    follower = start(base_config, tmp_path, "n1")
    handles = [leader, follower]
    channels: dict[str, grpc.Channel] = {}

    def stub_for(address: str) -> node_service_pb2_grpc.LogNodeServiceStub:
        if address not in channels:
            channels[address] = grpc.insecure_channel(address)
        return node_service_pb2_grpc.LogNodeServiceStub(channels[address])

    policies = RetentionStore(tmp_path / "retention.json", default_hours=1)
    enforcer = RetentionEnforcer(
        policies,
        lambda: [ShardReplicas(SHARD, leader.address, (follower.address,))],
        stub_for,
    )
    try:
        form_pair(leader, follower)
        append_aged(leader, "old", 3, 2 * HOUR_NS)
        append_aged(leader, "new", 2, 0)
        port = follower.host.port
        follower.stop()
        # The leader deletes the old entries; the follower misses the pass.
        strict = enforcer.apply_once()
        set_default_retention(policies, 24)
        follower = start(base_config, tmp_path, "n1", port=port)
        handles.append(follower)
        # The enforcer's channel reconnects with a backoff after the failure.
        grpc.channel_ready_future(channels[follower.address]).result(timeout=20)
        # The follower receives the missed pass before the looser one.
        loose = enforcer.apply_once()
        on_leader = sorted(query_messages(leader))
        on_follower = sorted(query_messages(follower))
    finally:
        for channel in channels.values():
            channel.close()
        for handle in handles:
            if not handle.host.stopped:
                handle.stop()

    assert strict == {leader.address: 3}
    assert loose == {leader.address: 0, follower.address: 3}
    assert on_leader == ["new 0", "new 1"]
    assert on_follower == on_leader


def test_enforcer_survives_failed_pass(base_config, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="log_service.retention")
    leader = start(base_config, tmp_path, "n0")
    channel = grpc.insecure_channel(leader.address)
    calls = []
    second_pass = threading.Event()

    def stub_for(address: str) -> node_service_pb2_grpc.LogNodeServiceStub:
        calls.append(address)
        if len(calls) == 1:
            raise ValueError(f"invalid node address {address!r}")
        second_pass.set()
        return node_service_pb2_grpc.LogNodeServiceStub(channel)

    policies = RetentionStore(tmp_path / "retention.json", default_hours=1)
    enforcer = RetentionEnforcer(
        policies,
        lambda: [ShardReplicas(SHARD, leader.address, ())],
        stub_for,
        interval=0.2,
    )
    try:
        configure(leader, epoch=1, leader=leader)
        append_aged(leader, "old", 2, 2 * HOUR_NS)
        enforcer.start()
        passed_again = second_pass.wait(10)
        # The second pass deletes the old entries.
        deleted = wait_for(lambda: query_messages(leader) == [], timeout=10)
    finally:
        enforcer.stop()
        channel.close()
        leader.stop()

    failures = [
        record
        for record in caplog.records
        if record.name == "log_service.retention" and record.levelno == logging.ERROR
    ]
    assert passed_again
    assert deleted
    assert len(failures) == 1
    assert failures[0].getMessage().startswith("log retention: a pass failed")
    assert failures[0].exc_info[0] is ValueError


def test_failed_resend_keeps_pass_schedule(base_config, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="log_service.retention")
    leader = start(base_config, tmp_path, "n0")
    channel = grpc.insecure_channel(leader.address)
    returned = "127.0.0.1:1"
    missed_path = tmp_path / "retention_missed.json"
    MissedPasses(missed_path).save(
        {returned: [node_service_pb2.ApplyRetentionRequest(default_cutoff=1)]}
    )
    leader_calls: list[float] = []

    def stub_for(address: str) -> node_service_pb2_grpc.LogNodeServiceStub:
        if address == returned:
            raise ValueError(f"invalid node address {address!r}")
        leader_calls.append(time.monotonic())
        return node_service_pb2_grpc.LogNodeServiceStub(channel)

    interval = 4.0
    policies = RetentionStore(tmp_path / "retention.json", default_hours=1)
    enforcer = RetentionEnforcer(
        policies,
        lambda: [ShardReplicas(SHARD, leader.address, ())],
        stub_for,
        interval=interval,
        missed_path=missed_path,
    )
    try:
        configure(leader, epoch=1, leader=leader)
        started = time.monotonic()
        enforcer.start()
        # The poll reaches the node with missed passes shortly before the
        # first regular pass is due, and their resend raises.
        time.sleep(interval - 0.5)
        enforcer.nodes_polled([returned])
        passed = wait_for(lambda: leader_calls, timeout=interval * 2)
    finally:
        enforcer.stop()
        channel.close()
        leader.stop()

    failures = [
        record.getMessage()
        for record in caplog.records
        if record.name == "log_service.retention" and record.levelno == logging.ERROR
    ]
    assert passed
    # Rescheduled by the failure, the pass would start about `interval`
    # after it, 3.5 s late.
    assert leader_calls[0] - started < interval + 1.75
    assert len(failures) == 1
    assert failures[0].startswith("log retention: sending missed passes again")


def test_missed_passes_file_round_trip(tmp_path):
    path = tmp_path / "retention_missed.json"
    missed = {
        "127.0.0.1:1": [
            node_service_pb2.ApplyRetentionRequest(
                default_cutoff=10, service_cutoffs={"billing": 5}, max_sequence=7
            )
        ]
    }

    MissedPasses(path).save(missed)
    loaded = MissedPasses(path).load()
    path.write_text("{not json")
    after_damage = MissedPasses(path).load()

    assert loaded == missed
    assert after_damage == {}


def straddling_batch(
    batch_id: str, timestamps: list[int], indexes: list[int], epoch: int = 1
) -> node_service_pb2.AppendEntriesRequest:
    """Return an AppendEntries request with the entries `indexes` of a batch.

    The batch has one entry per item of `timestamps`. Entry `i` has the
    message `<batch_id> <i>` and the time `timestamps[i]`.
    """
    entries = columns_at(batch_id, timestamps)
    picked = node_service_pb2.EntryColumns()
    for index in indexes:
        picked.MergeFrom(slice_columns(entries, index, index + 1))
    return node_service_pb2.AppendEntriesRequest(
        shard=SHARD,
        leader_epoch=epoch,
        batch_id=batch_id,
        entries=picked,
        index_runs=runs_of(indexes),
    )


def test_resend_restores_entries_retention_deleted(base_config, tmp_path):
    leader = start(base_config, tmp_path, "n0")
    follower = start(base_config, tmp_path, "n1")
    now = time.time_ns()
    # Entries 0-2 are three hours old, and entries 3-5 are new.
    timestamps = [now - 3 * HOUR_NS + i for i in range(3)] + [now + i for i in range(3)]
    whole = list(range(6))
    batch_id = "r/d/s0"
    try:
        form_pair(leader, follower)
        first = leader.stub.AppendEntries(
            straddling_batch(batch_id, timestamps, whole), timeout=5
        )
        # A pass with a 2-hour retention deletes entries 0-2 on both replicas.
        bound = retention(leader, now - 2 * HOUR_NS).max_sequence
        retention(follower, now - 2 * HOUR_NS, max_sequence=bound)
        after_pass = sorted(query_messages(leader))
        # The router resends entries 3-5 while the retention is still 2 hours.
        within = leader.stub.AppendEntries(
            straddling_batch(batch_id, timestamps, [3, 4, 5]), timeout=5
        )
        # The router resends the whole batch once the retention is longer.
        resent = leader.stub.AppendEntries(
            straddling_batch(batch_id, timestamps, whole), timeout=5
        )
        again = leader.stub.AppendEntries(
            straddling_batch(batch_id, timestamps, whole), timeout=5
        )
        on_leader = sorted(query_messages(leader))
        follower_caught_up = wait_for(lambda: len(query_messages(follower)) == 6)
        on_follower = sorted(query_messages(follower))
        # The follower takes over with the same batch index.
        configure(follower, epoch=2, leader=follower)
        after_failover = follower.stub.AppendEntries(
            straddling_batch(batch_id, timestamps, whole, epoch=2), timeout=5
        )
        on_new_leader = sorted(query_messages(follower))
    finally:
        leader.stop()
        follower.stop()

    messages = [f"{batch_id} {i}" for i in range(6)]
    assert first.count == 6
    assert after_pass == messages[3:]
    assert within.duplicate
    assert within.duplicate_count == 3
    assert not resent.duplicate
    assert resent.count == 3
    assert resent.duplicate_count == 3
    assert again.duplicate
    assert again.duplicate_count == 6
    assert on_leader == messages
    assert follower_caught_up
    assert on_follower == messages
    assert after_failover.duplicate
    assert after_failover.duplicate_count == 6
    assert on_new_leader == messages


def test_batch_without_runs_counts_as_unit(base_config, tmp_path):
    node = start(base_config, tmp_path, "n0")
    now = time.time_ns()
    timestamps = [now - 3 * HOUR_NS, now - 3 * HOUR_NS + 1, now]
    try:
        configure(node, epoch=1, leader=node)
        append_columns(node, 1, "partly", columns_at("partly", timestamps))
        append_columns(node, 1, "wholly", columns_at("wholly", timestamps[:2]))
        retention(node, now - 2 * HOUR_NS)
        partly = append_columns(node, 1, "partly", columns_at("partly", timestamps))
        wholly = append_columns(node, 1, "wholly", columns_at("wholly", timestamps[:2]))
        messages = sorted(query_messages(node))
    finally:
        node.stop()

    # A batch without index runs counts as one unit, so it is a duplicate
    # while the store still contains any of its entries.
    assert partly.duplicate
    assert partly.duplicate_count == 3
    assert not wholly.duplicate
    assert wholly.count == 2
    assert messages == ["partly 2", "wholly 0", "wholly 1"]
