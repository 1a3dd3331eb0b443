"""Tests of what a node's QueryEntries returns while records await the applier.

The applier's linger is raised to 60 s here, so a record reaches the store
only when a read waits for it or a test ends the linger itself.
"""

from __future__ import annotations

import grpc
import pytest

from log_service import node as node_module
from splitlog.logs.v1 import node_service_pb2, replication_service_pb2
from tests.log_service.node_support import (
    SHARD,
    append_columns,
    columns,
    columns_at,
    configure,
    error_reason,
    query_messages,
    start,
    wait_for,
)

BASE_NS = 1_700_000_000 * 1_000_000_000


@pytest.fixture(autouse=True)
def long_linger(monkeypatch):
    monkeypatch.setattr(node_module, "APPLY_LINGER_SECONDS", 60.0)


def interleaved(label: str, count: int, offset: int) -> node_service_pb2.EntryColumns:
    """Return `count` entries at BASE_NS + 2*i + offset, messages `<label> i`."""
    return columns_at(label, [BASE_NS + 2 * i + offset for i in range(count)])


def test_follower_query_returns_durable_entries(base_config, tmp_path):
    follower = start(base_config, tmp_path, "n1")
    try:
        # The leader n0 sends a record, receives the follower's reply and
        # acknowledges the write. It dies before its next message, which
        # would have carried the new commit sequence.
        request = replication_service_pb2.ReplicateEntriesRequest(
            shard=SHARD,
            leader="n0",
            leader_epoch=1,
            commit_sequence=0,
            records=[
                node_service_pb2.LogRecord(
                    first_sequence=1,
                    epoch=1,
                    batch_id="batch-a",
                    entries=columns(3, "acked"),
                )
            ],
        )
        replies = list(
            follower.replication.ReplicateEntries(iter([request]), timeout=5)
        )
        messages = query_messages(follower)
    finally:
        follower.stop()

    assert [reply.last_sequence for reply in replies] == [3]
    assert sorted(messages) == ["acked 0", "acked 1", "acked 2"]


def query_page(handle, limit: int, max_sequence: int = 0, after=None):
    request = node_service_pb2.QueryEntriesRequest(
        shard=SHARD,
        limit=limit,
        filter=node_service_pb2.EntryFilter(max_sequence=max_sequence),
    )
    if after is not None:
        request.after.timestamp, request.after.sequence = after
    return handle.stub.QueryEntries(request, timeout=5)


def test_query_bound_excludes_unapplied_record(base_config, tmp_path, monkeypatch):
    absent = start(base_config, tmp_path, "n9")
    absent.stop()
    leader = start(base_config, tmp_path, "n0")
    try:
        configure(leader, epoch=1, leader=leader)
        append_columns(leader, 1, "committed", interleaved("committed", 20, 0))
        assert len(query_messages(leader)) == 20
        # An in-sync follower that never responds: the next record becomes
        # durable on the leader but is never committed, so no read waits for
        # it and it stays out of the store for the 60 s linger.
        configure(
            leader,
            epoch=1,
            leader=leader,
            in_sync=[absent],
            followers=[absent],
            version=2,
        )
        with pytest.raises(grpc.RpcError) as timed_out:
            append_columns(leader, 1, "pending", interleaved("pending", 20, 1))

        first = query_page(leader, 10)
        # End the linger: the pending record reaches the store between pages.
        monkeypatch.setattr(node_module, "APPLY_GROUP_ENTRIES", 1)
        leader.node.notify()
        applied = wait_for(lambda: leader.node._applied >= 40)
        listed = list(first.entries.messages)
        page = first
        while len(page.sequences) == 10:
            cursor = (page.entries.timestamps[-1], page.sequences[-1])
            page = query_page(leader, 10, first.last_sequence, cursor)
            listed.extend(page.entries.messages)
        later = query_messages(leader)
    finally:
        leader.stop()

    assert error_reason(timed_out.value) == "REPLICATION_TIMEOUT"
    assert applied
    assert sorted(listed) == sorted(f"committed {i}" for i in range(20))
    assert first.last_sequence == 20
    assert len(later) == 40
