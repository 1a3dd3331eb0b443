"""Tests that the applier's wait for larger groups never delays a reader.

The linger is raised to 60 s here, far past every read's wait (at most 5 s),
so a read or tail that receives its entries proves it cut the wait short.
"""

from __future__ import annotations

import threading

import pytest

from log_service import node as node_module
from splitlog.logs.v1 import node_service_pb2
from tests.log_service.node_support import (
    SHARD,
    append,
    configure,
    query_messages,
    start,
    wait_for,
)


@pytest.fixture
def lingering_leader(base_config, tmp_path, monkeypatch):
    monkeypatch.setattr(node_module, "APPLY_LINGER_SECONDS", 60.0)
    handle = start(base_config, tmp_path, "n0")
    configure(handle, epoch=1, leader=handle)
    yield handle
    handle.stop()


def test_query_ends_the_linger(lingering_leader):
    append(lingering_leader, 1, "small", 2)

    messages = query_messages(lingering_leader)

    assert sorted(messages) == ["small 0", "small 1"]


def test_open_tail_ends_the_linger(lingering_leader):
    # From sequence 0, not -1 ("from now"): the node may see the call only
    # after the append below, and would then skip its entries. Either way
    # the tail gets them only if it cuts the 60 s linger short.
    stream = lingering_leader.stub.FollowEntries(
        node_service_pb2.FollowEntriesRequest(shard=SHARD, after_sequence=0),
        timeout=10,
    )
    received: list[str] = []

    def reader() -> None:
        for message in stream:
            received.extend(message.entries.messages)
            if len(received) >= 2:
                return

    thread = threading.Thread(target=reader)
    thread.start()
    append(lingering_leader, 1, "tailed", 2)
    thread.join(timeout=8)
    stream.cancel()

    assert received == ["tailed 0", "tailed 1"]


def test_full_group_ends_the_linger(lingering_leader, monkeypatch):
    monkeypatch.setattr(node_module, "APPLY_GROUP_ENTRIES", 3)
    append(lingering_leader, 1, "first", 2)
    append(lingering_leader, 1, "second", 2)
    node = lingering_leader.node

    applied = wait_for(lambda: node._applied >= 4)

    assert applied
