"""Helpers for the log node tests: real nodes on 127.0.0.1, real channels."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from log_service.index_runs import runs_of
from log_service.node import LogNode, start_node
from log_service.wal import slice_columns
from splitlog.logs.v1 import (
    logs_service_pb2,
    node_service_pb2,
    node_service_pb2_grpc,
    replication_service_pb2_grpc,
)
from splitlog_runtime.server import ServiceHost
from tests.ports import free_ports

SHARD = "s0"
LEADER = logs_service_pb2.REPLICA_ROLE_LEADER
FOLLOWER = logs_service_pb2.REPLICA_ROLE_FOLLOWER


def columns(count: int, label: str = "entry") -> node_service_pb2.EntryColumns:
    """Return `count` entries whose messages are `<label> 0`, `<label> 1`, ..."""
    now = time.time_ns()
    return node_service_pb2.EntryColumns(
        timestamps=[now + i for i in range(count)],
        observed_timestamps=[now] * count,
        severities=[9] * count,
        services=["checkout"] * count,
        hosts=["web-1"] * count,
        messages=[f"{label} {i}" for i in range(count)],
        attributes=[""] * count,
        trace_ids=[""] * count,
        span_ids=[""] * count,
        truncated=[False] * count,
        dropped_attributes_counts=[0] * count,
    )


@dataclass
class NodeHandle:
    """A running node with a channel to it."""

    node_id: str
    directory: Path
    host: ServiceHost
    node: LogNode
    channel: grpc.Channel
    stub: node_service_pb2_grpc.LogNodeServiceStub = field(init=False)
    replication: replication_service_pb2_grpc.ReplicationServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.stub = node_service_pb2_grpc.LogNodeServiceStub(self.channel)
        self.replication = replication_service_pb2_grpc.ReplicationServiceStub(
            self.channel
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.host.port}"

    @property
    def member(self) -> node_service_pb2.ShardMember:
        return node_service_pb2.ShardMember(node=self.node_id, address=self.address)

    def stop(self) -> None:
        self.channel.close()
        self.host.stop(0.5)


def start(
    config,
    directory: Path,
    node_id: str,
    *,
    port: int | None = None,
    append_timeout: float = 1.0,
) -> NodeHandle:
    """Start a node on 127.0.0.1 with its data in `directory/node_id`.

    Without a `port`, the node gets one from `free_ports`, so that a test can
    stop it and start it again on the same port. A port that the kernel
    picked for a port-0 bind could be taken by another process in between.
    """
    if port is None:
        (port,) = free_ports(1)
    host, node = start_node(
        config,
        node_id,
        SHARD,
        f"127.0.0.1:{port}",
        directory=directory / node_id,
        append_timeout=append_timeout,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{host.port}")
    return NodeHandle(node_id, directory / node_id, host, node, channel)


def configure(
    handle: NodeHandle,
    *,
    epoch: int,
    leader: NodeHandle,
    in_sync: Sequence[NodeHandle] = (),
    followers: Sequence[NodeHandle] = (),
    version: int = 1,
    leader_only_ack: bool = False,
) -> node_service_pb2.ConfigureShardResponse:
    """Send ConfigureShard to one node; its role follows from `leader`."""
    return handle.stub.ConfigureShard(
        node_service_pb2.ConfigureShardRequest(
            shard=SHARD,
            leader_epoch=epoch,
            role=LEADER if handle is leader else FOLLOWER,
            leader=leader.member,
            in_sync=[n.member for n in in_sync],
            followers=[n.member for n in followers],
            leader_only_ack=leader_only_ack,
            config_version=version,
        ),
        timeout=5,
    )


def columns_at(label: str, timestamps: Sequence[int]) -> node_service_pb2.EntryColumns:
    """Return entries at `timestamps` whose messages are `<label> 0`, ..."""
    entries = columns(len(timestamps), label)
    del entries.timestamps[:]
    entries.timestamps.extend(timestamps)
    return entries


def append(
    handle: NodeHandle, epoch: int, batch_id: str, count: int = 3, label: str = ""
) -> node_service_pb2.AppendEntriesResponse:
    return append_columns(handle, epoch, batch_id, columns(count, label or batch_id))


def append_columns(
    handle: NodeHandle,
    epoch: int,
    batch_id: str,
    entries: node_service_pb2.EntryColumns,
) -> node_service_pb2.AppendEntriesResponse:
    return handle.stub.AppendEntries(
        node_service_pb2.AppendEntriesRequest(
            shard=SHARD, leader_epoch=epoch, batch_id=batch_id, entries=entries
        ),
        timeout=5,
    )


def indexed_batch(
    batch_id: str, indexes: list[int], epoch: int = 1
) -> node_service_pb2.AppendEntriesRequest:
    """Return a batch of the request entries `indexes`, messages `<id> <index>`."""
    entries = columns(max(indexes) + 1, batch_id)
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


def query_messages(handle: NodeHandle, limit: int = 1000) -> list[str]:
    response = handle.stub.QueryEntries(
        node_service_pb2.QueryEntriesRequest(shard=SHARD, limit=limit), timeout=5
    )
    return list(response.entries.messages)


def query_sequences(handle: NodeHandle, limit: int = 1000) -> list[int]:
    response = handle.stub.QueryEntries(
        node_service_pb2.QueryEntriesRequest(shard=SHARD, limit=limit), timeout=5
    )
    return list(response.sequences)


def error_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def has_retry_info(error: grpc.RpcError) -> bool:
    status = rpc_status.from_call(error)
    return any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds; return whether it did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
