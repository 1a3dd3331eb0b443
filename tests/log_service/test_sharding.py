"""Tests of the topology setting and the two sharding strategies."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from log_service.sharding import (
    ServiceRing,
    TimeBuckets,
    sharder_from_config,
    stable_hash,
)
from log_service.topology import (
    default_topology,
    parse_log_nodes,
    topology_from_config,
)

SECOND = 1_000_000_000
HOUR = 3600 * SECOND


def test_parse_log_nodes_reads_shards_in_order():
    topology = parse_log_nodes(
        "shard-0=n0@10.0.0.1:7000,n1@10.0.0.2:7000; shard-1=n2@10.0.0.3:7001"
    )

    assert topology.shard_ids == ["shard-0", "shard-1"]
    assert [n.node_id for n in topology.shard("shard-0").nodes] == ["n0", "n1"]
    assert topology.shard("shard-1").nodes[0].address == "10.0.0.3:7001"
    assert topology.shard("shard-1").nodes[0].shard == "shard-1"


def test_parse_log_nodes_round_trips_through_setting():
    text = "a=x@h:1,y@h:2;b=z@h:3"

    assert parse_log_nodes(text).to_setting() == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "names no shard"),
        ("shard-0", "equals sign"),
        ("s=n0", "node@host:port"),
        ("s=n0@nohost", "host:port"),
        ("s=n0@h:99999", "host:port"),
        ("s=n0@h:1,n0@h:2", "listed twice"),
        ("s=n0@h:1;s=n1@h:2", "shard 's' is listed twice"),
        ("s=n0@h:1,n1@h:1", "given to two nodes"),
    ],
)
def test_parse_log_nodes_rejects_bad_text(text, fragment):
    with pytest.raises(ValueError, match="log_nodes") as caught:
        parse_log_nodes(text)

    assert fragment in str(caught.value)


def test_default_topology_uses_consecutive_ports():
    topology = default_topology(2, 2, "127.0.0.1", 50070)

    nodes = topology.nodes
    assert [n.node_id for n in nodes] == [
        "shard-0-a",
        "shard-0-b",
        "shard-1-a",
        "shard-1-b",
    ]
    assert [n.address for n in nodes] == [f"127.0.0.1:{p}" for p in range(50070, 50074)]


def test_default_topology_port_zero_binds_free_ports():
    topology = default_topology(1, 3, "127.0.0.1", 0)

    assert {n.address for n in topology.nodes} == {"127.0.0.1:0"}


def test_topology_from_config_prefers_log_nodes(base_config):
    config = base_config.replace(log_nodes="only=n@h:5")

    assert topology_from_config(config).shard_ids == ["only"]
    assert len(topology_from_config(base_config).nodes) == 4


def test_ring_keeps_a_service_on_one_shard():
    ring = ServiceRing(["s0", "s1", "s2"])

    assert {ring.shard_for("expenses", t) for t in range(0, 10 * HOUR, HOUR)} == {
        ring.shard_for("expenses", 0)
    }


def test_ring_spreads_services_evenly():
    ring = ServiceRing(["s0", "s1", "s2", "s3"])
    counts = {shard: 0 for shard in ["s0", "s1", "s2", "s3"]}

    for index in range(10_000):
        counts[ring.shard_for(f"service-{index}", 0)] += 1

    assert all(1500 < count < 3500 for count in counts.values()), counts


def test_ring_adding_a_shard_moves_about_one_nth():
    names = [f"service-{index}" for index in range(10_000)]
    before = ServiceRing(["s0", "s1", "s2", "s3"])
    after = ServiceRing(["s0", "s1", "s2", "s3", "s4"])

    moved = [n for n in names if before.shard_for(n, 0) != after.shard_for(n, 0)]

    # The ideal share is 1/5 of the names; every moved name goes to the new shard.
    assert 0.12 < len(moved) / len(names) < 0.28
    assert {after.shard_for(n, 0) for n in moved} == {"s4"}


def test_ring_query_prunes_to_the_services_shards():
    ring = ServiceRing(["s0", "s1", "s2", "s3"])

    assert ring.shards_for_query([], None, None) == ["s0", "s1", "s2", "s3"]
    assert ring.shards_for_query(["expenses"], 0, 1) == [ring.shard_for("expenses")]


def test_time_buckets_rotate_over_shards():
    buckets = TimeBuckets(["s0", "s1", "s2"], HOUR)

    assert buckets.shard_for("x", 0) == "s0"
    assert buckets.shard_for("x", HOUR - 1) == "s0"
    assert buckets.shard_for("x", HOUR) == "s1"
    assert buckets.shard_for("x", 3 * HOUR) == "s0"


def test_time_buckets_query_prunes_narrow_ranges():
    buckets = TimeBuckets(["s0", "s1", "s2"], HOUR)

    assert buckets.shards_for_query([], HOUR, HOUR + 5) == ["s1"]
    assert buckets.shards_for_query([], HOUR, 2 * HOUR) == ["s1"]
    assert buckets.shards_for_query([], HOUR, 2 * HOUR + 1) == ["s1", "s2"]
    assert buckets.shards_for_query([], 0, 30 * HOUR) == ["s0", "s1", "s2"]
    assert buckets.shards_for_query([], None, HOUR) == ["s0", "s1", "s2"]
    assert buckets.shards_for_query([], 5, 5) == []


def test_sharder_from_config_picks_strategy(base_config):
    topology = topology_from_config(base_config)

    assert isinstance(sharder_from_config(base_config, topology), ServiceRing)
    timed = base_config.replace(log_sharding="time")
    assert isinstance(sharder_from_config(timed, topology), TimeBuckets)
    with pytest.raises(ValueError, match="log_sharding"):
        sharder_from_config(base_config.replace(log_sharding="random"), topology)


def test_stable_hash_does_not_depend_on_the_process():
    # blake2b with an 8-byte digest, read big-endian: fixed across processes.
    assert stable_hash("expenses") == int.from_bytes(
        hashlib.blake2b(b"expenses", digest_size=8).digest(), "big"
    )
    assert stable_hash("expenses") != stable_hash("users")


@given(
    timestamps=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40),
    bucket_ns=st.sampled_from([1, 7, SECOND, HOUR]),
)
def test_time_bucket_runs_match_shard_for(timestamps, bucket_ns):
    buckets = TimeBuckets(["s0", "s1", "s2"], bucket_ns)

    runs = buckets.shard_runs("svc", timestamps)

    by_entry = [shard for shard, start, stop in runs for _ in range(start, stop)]
    assert by_entry == [buckets.shard_for("svc", t) for t in timestamps]
    assert [start for _, start, _ in runs] == [0] + [stop for _, _, stop in runs[:-1]]
    assert all(a[0] != b[0] for a, b in zip(runs, runs[1:], strict=False))


def test_service_ring_single_run():
    ring = ServiceRing(["s0", "s1", "s2"])

    assert ring.shard_runs("billing", [5, -3, 2**62]) == [
        (ring.shard_for("billing"), 0, 3)
    ]
