"""Tests of the coordinator's shard plans and of its durable state file."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from log_service.coordinator import (
    FOLLOWER,
    LEADER,
    NodeView,
    ShardState,
    StateFile,
    _log_change,
    bootstrap_state,
    plan_shard,
    reconcile,
)
from log_service.topology import default_topology
from splitlog.logs.v1 import replication_service_pb2

FAILOVER = 1.5


def replica(last, *, epoch=1, role=FOLLOWER, commit=0, ready=True):
    return replication_service_pb2.ShardReplica(
        shard="s",
        role=role,
        leader_epoch=epoch,
        last_sequence=last,
        commit_sequence=commit,
        ready=ready,
    )


def up(last, **kwargs):
    return NodeView(reachable=True, silent_for=0.1, replica=replica(last, **kwargs))


def receiving_snapshot(last):
    """A reachable follower that is fetching a snapshot ending at `last`."""
    view = up(last)
    view.replica.snapshot.last_sequence = last
    return view


def damaged(last, *, record_epoch=1, **kwargs):
    """A reachable node whose write-ahead log lost entries after `last`."""
    view = up(last, **kwargs)
    view.replica.last_record_epoch = record_epoch
    view.replica.log_damage.first_lost_sequence = last + 1
    view.replica.log_damage.last_lost_sequence = last + 5
    return view


def down(silent_for=FAILOVER + 0.1, last=0):
    return NodeView(reachable=False, silent_for=silent_for, replica=replica(last))


def three_nodes():
    return bootstrap_state("s", ["a", "b", "c"])


def test_bootstrap_makes_first_node_leader():
    state = three_nodes()

    assert state.leader == "a"
    assert state.epoch == 1
    assert state.in_sync == ("b", "c")
    assert state.followers == ("b", "c")


def test_plan_keeps_healthy_shard_unchanged():
    state = three_nodes()
    views = {"a": up(10, role=LEADER, commit=10), "b": up(10), "c": up(10)}

    assert plan_shard(state, views, FAILOVER) is state


def test_plan_waits_before_failover():
    state = three_nodes()
    views = {"a": down(silent_for=FAILOVER - 0.2), "b": up(5), "c": up(9)}

    assert plan_shard(state, views, FAILOVER) is state


def test_plan_promotes_follower_with_highest_sequence():
    state = three_nodes()
    views = {"a": down(), "b": up(5), "c": up(9)}

    planned = plan_shard(state, views, FAILOVER)

    assert planned.leader == "c"
    assert planned.epoch == 2
    assert planned.config_version == 2
    assert planned.in_sync == ("b",)
    assert planned.followers == ("a", "b")


def test_plan_skips_unfit_followers():
    state = ShardState("s", 3, 7, "a", ("b",), ("b", "c"))
    views = {"a": down(), "b": up(4, epoch=3, ready=False), "c": up(50, epoch=3)}

    planned = plan_shard(state, views, FAILOVER)

    assert planned.leader is None
    assert planned.epoch == 3
    assert planned.in_sync == ("a", "b")
    assert planned.followers == ("a", "b", "c")


def test_plan_restores_returning_leader():
    state = ShardState("s", 3, 8, None, ("a", "b"), ("a", "b", "c"))
    views = {"a": up(12, epoch=3, role=LEADER), "b": down(), "c": up(99, epoch=3)}

    planned = plan_shard(state, views, FAILOVER)

    assert planned.leader == "a"
    assert planned.epoch == 4
    assert planned.in_sync == ("b",)
    assert planned.followers == ("b", "c")


def test_plan_ignores_out_of_sync_node():
    state = ShardState("s", 3, 8, None, ("a", "b"), ("a", "b", "c"))
    views = {"a": down(), "b": down(), "c": up(99, epoch=3)}

    assert plan_shard(state, views, FAILOVER) is state


def test_plan_drops_silent_follower():
    state = three_nodes()
    views = {"a": up(10, role=LEADER, commit=10), "b": down(), "c": up(10)}

    planned = plan_shard(state, views, FAILOVER)

    assert planned.leader == "a"
    assert planned.epoch == 1
    assert planned.config_version == 2
    assert planned.in_sync == ("c",)


def test_plan_drops_unreachable_follower():
    state = three_nodes()
    cut_off = NodeView(True, 0.1, replica(3), reported_unreachable_for=FAILOVER)
    views = {"a": up(10, role=LEADER, commit=10), "b": cut_off, "c": up(10)}

    assert plan_shard(state, views, FAILOVER).in_sync == ("c",)


def test_plan_adds_caught_up_follower():
    state = ShardState("s", 1, 2, "a", ("c",), ("b", "c"))
    views = {"a": up(20, role=LEADER, commit=18), "b": up(18), "c": up(20)}

    planned = plan_shard(state, views, FAILOVER)

    assert planned.in_sync == ("c",)
    assert planned.joining == ("b",)
    assert planned.config_version == 3


def test_joining_follower_syncs_at_floor():
    # The leader took the configuration naming b when its log ended at 25,
    # so b may miss entries up to 25 that were acknowledged without it.
    state = ShardState("s", 1, 3, "a", ("c",), ("b", "c"), joining=("b",))
    behind = {"a": up(30, role=LEADER, commit=30), "b": up(24), "c": up(30)}
    caught_up = {"a": up(30, role=LEADER, commit=30), "b": up(25), "c": up(30)}

    assert plan_shard(state, behind, FAILOVER, {"b": 25}) is state
    assert plan_shard(state, caught_up, FAILOVER) is state
    planned = plan_shard(state, caught_up, FAILOVER, {"b": 25})
    assert planned.in_sync == ("b", "c")
    assert planned.joining == ()
    assert planned.config_version == 4


def test_follower_receiving_snapshot_is_never_promoted():
    state = ShardState("s", 1, 3, "a", ("b",), ("b",))
    views = {"a": NodeView(False, 5.0), "b": receiving_snapshot(40)}

    planned = plan_shard(state, views, FAILOVER)

    assert planned.leader is None


def test_joining_follower_is_never_promoted():
    state = ShardState("s", 1, 3, "a", (), ("b",), joining=("b",))
    views = {"a": NodeView(False, 5.0), "b": up(40)}

    planned = plan_shard(state, views, FAILOVER, {"b": 50})

    assert planned.leader is None
    assert planned.joining == ()


@pytest.mark.parametrize(
    "view",
    [
        up(17),
        up(30, epoch=0),
        NodeView(True, 0.1, replica(30), reported_unreachable_for=0.3),
        receiving_snapshot(30),
    ],
    ids=["behind", "old-epoch", "leader-cannot-reach", "receiving-snapshot"],
)
def test_plan_keeps_lagging_follower_out(view):
    state = ShardState("s", 1, 2, "a", ("c",), ("b", "c"))
    views = {"a": up(20, role=LEADER, commit=18), "b": view, "c": up(20)}

    assert plan_shard(state, views, FAILOVER) is state


def test_damaged_leader_yields_to_intact_follower():
    state = bootstrap_state("s", ["a", "b"])
    views = {"a": damaged(95), "b": up(100)}

    planned = plan_shard(state, views, FAILOVER)

    assert planned.leader == "b"
    assert planned.epoch == 2
    assert planned.in_sync == ()


def test_damaged_leader_waits_for_silent_in_sync_follower():
    state = bootstrap_state("s", ["a", "b"])
    views = {"a": damaged(95), "b": down(silent_for=0.2)}

    planned = plan_shard(state, views, FAILOVER)
    # Even after the failover delay, a is not promoted while b is away.
    later = plan_shard(planned, {"a": damaged(95), "b": down()}, FAILOVER)

    assert planned.leader is None
    assert planned.in_sync == ("a", "b")
    assert later is planned


def test_lone_damaged_node_leads_under_new_epoch():
    state = bootstrap_state("s", ["a"])

    planned = plan_shard(state, {"a": damaged(95)}, FAILOVER)

    assert planned.leader == "a"
    assert planned.epoch == 2


def test_follower_ahead_of_damaged_node_wins():
    state = replace(bootstrap_state("s", ["a", "b"]), in_sync=())
    views = {"a": damaged(95), "b": up(98)}
    views["b"].replica.last_record_epoch = 1

    planned = plan_shard(state, views, FAILOVER)

    assert planned.leader == "b"


def test_damaged_leader_that_took_the_lead_stays():
    state = bootstrap_state("s", ["a", "b"])
    state = replace(state, in_sync=())
    views = {"a": damaged(95, role=LEADER), "b": down(silent_for=0.2)}

    assert plan_shard(state, views, FAILOVER) is state


def test_failover_prefers_later_record_epoch():
    state = three_nodes()
    views = {"a": down(), "b": up(9), "c": up(7)}
    views["b"].replica.last_record_epoch = 1
    views["c"].replica.last_record_epoch = 2

    assert plan_shard(state, views, FAILOVER).leader == "c"


def test_damaged_follower_never_promoted():
    state = three_nodes()
    views = {"a": down(), "b": damaged(12), "c": up(10)}

    planned = plan_shard(state, views, FAILOVER)

    assert planned.leader == "c"
    assert planned.in_sync == ()


def test_state_file_round_trip(tmp_path):
    state_file = StateFile(tmp_path / "log_service" / "coordinator.json")
    states = {"s": ShardState("s", 4, 9, None, ("a",), ("a", "b"))}

    state_file.save(states)

    assert state_file.load() == states
    assert not list((tmp_path / "log_service").glob("*.tmp"))
    saved = json.loads(state_file.path.read_text())
    assert saved["shards"]["s"]["epoch"] == 4


def test_state_file_missing_loads_none(tmp_path):
    assert StateFile(tmp_path / "none.json").load() is None


def test_state_file_garbage_names_the_file(tmp_path):
    path = tmp_path / "coordinator.json"
    path.write_text('{"shards": {"s": {"epoch": 1}}}')

    with pytest.raises(ValueError, match="coordinator.json"):
        StateFile(path).load()


def test_reconcile_keeps_saved_shards():
    topology = default_topology(2, 2, "127.0.0.1", 50070)
    saved = {"shard-0": ShardState("shard-0", 5, 6, "shard-0-b", (), ("shard-0-a",))}

    states = reconcile(topology, saved)

    assert states["shard-0"] == saved["shard-0"]
    assert states["shard-1"] == bootstrap_state("shard-1", ["shard-1-a", "shard-1-b"])


@pytest.mark.parametrize(
    ("old_leader", "level"),
    [(None, logging.INFO), ("shard-0-a", logging.WARNING)],
)
def test_leader_change_log_level(caplog, old_leader, level):
    old = ShardState("shard-0", 1, 1, old_leader, (), ("shard-0-b",))
    new = ShardState("shard-0", 2, 2, "shard-0-b", (), ("shard-0-a",))
    caplog.set_level(logging.INFO, logger="log_service.coordinator")

    _log_change(old, new)

    (record,) = [r for r in caplog.records if "is leader at epoch 2" in r.message]
    assert record.levelno == level
