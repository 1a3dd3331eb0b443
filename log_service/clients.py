"""gRPC stubs for the log nodes, one channel per node address.

The router and its coordinator share these channels. They do not retry on
their own: the callers retry after they refreshed the shard's leader, and a
channel reconnects within a second after a node comes back, instead of gRPC's
default backoff of up to two minutes.

With `sign` set (the router's `auth_required`), every call carries the
process's signed principal, which the nodes check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import grpc

from splitlog.logs.v1 import node_service_pb2_grpc, replication_service_pb2_grpc
from splitlog_runtime import auth
from splitlog_runtime.channels import channel_options


def node_channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    """Return the channel arguments for calls from the router to a node."""
    options = [
        option
        for option in channel_options(max_message_bytes)
        if option[0] not in ("grpc.enable_retries", "grpc.service_config")
    ]
    options += [
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    return options


@dataclass(frozen=True)
class NodeStubs:
    """The stubs of one node address."""

    node: node_service_pb2_grpc.LogNodeServiceStub
    replication: replication_service_pb2_grpc.ReplicationServiceStub


class NodeClients:
    """Opens one channel per node address on first use and closes them all."""

    def __init__(self, max_message_bytes: int, *, sign: bool = False) -> None:
        self._options = node_channel_options(max_message_bytes)
        self._sign = sign
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, NodeStubs] = {}

    def stubs(self, address: str) -> NodeStubs:
        """Return the stubs for a node address."""
        with self._lock:
            stubs = self._stubs.get(address)
            if stubs is None:
                channel = grpc.insecure_channel(address, options=self._options)
                self._channels[address] = channel
                calls = auth.signing_channel(channel) if self._sign else channel
                stubs = NodeStubs(
                    node_service_pb2_grpc.LogNodeServiceStub(calls),
                    replication_service_pb2_grpc.ReplicationServiceStub(calls),
                )
                self._stubs[address] = stubs
            return stubs

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._stubs.clear()
        for channel in channels:
            channel.close()
