"""gRPC stubs for the log nodes, one channel per node address.

The router and its coordinator share these channels. They do not retry on
their own: the callers retry after they refreshed the shard's leader, and a
channel reconnects within a second after a node comes back, instead of gRPC's
default backoff of up to two minutes.

Appends go over a second channel per node (`append_calls`), which the router
closes when the coordinator replaces that node as a shard's leader
(`reset_append_channel`). Each reset also marks the routes of that shard to
that node up to the replaced epoch as stale, and `append_calls` rejects them
under the same lock, so a thread with an older route opens no channel that
no later reset would close. A stopped (SIGSTOP) or cut-off leader keeps its TCP
connection open, so without that an append to it would wait for its whole
deadline, and every part queued behind it too, although a follower has
already taken over.

With `sign` set (the router's `auth_required`), every call carries the
process's signed principal, which the nodes check.

Calls to a node may exceed `max_message_bytes` by `NODE_HEADROOM_BYTES`, and
the nodes' servers accept that much, because a write that the router accepted
at the limit gains a batch id and sequence numbers on its way to the
followers. The router keeps each request to a node within
`ROUTED_HEADROOM_BYTES` of the setting, so the rest is left for the framing
of the replication and snapshot messages (docs/logs.md, "Message sizes").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import grpc

from splitlog.logs.v1 import (
    node_service_pb2,
    node_service_pb2_grpc,
    replication_service_pb2_grpc,
)
from splitlog_runtime import auth
from splitlog_runtime.channels import channel_options
from splitlog_runtime.limits import with_headroom

# Bytes by which a message between log components may exceed
# max_message_bytes.
NODE_HEADROOM_BYTES = 64 * 1024
# Bytes by which a request from the router to a node may exceed
# max_message_bytes. A one-entry batch serializes up to about 100 bytes larger
# than the same entry in a client's request: every column of an entry is
# framed, and the router adds timestamps, the shard and the batch id. The
# rest covers entries that grow more when they are checked, such as
# attributes with characters that JSON escapes. The remaining 32 KiB of
# NODE_HEADROOM_BYTES is for what replication adds: sequence numbers, the
# epoch, the shard, and the leader's id and address.
ROUTED_HEADROOM_BYTES = 32 * 1024

# The reason of the UNAVAILABLE error of a call that the router's stop ended.
ROUTER_STOPPING = "ROUTER_STOPPING"

_NODE_SERVICE = node_service_pb2.DESCRIPTOR.services_by_name["LogNodeService"]


def node_message_bytes(max_message_bytes: int) -> int:
    """Return the largest message between log components, in bytes."""
    return with_headroom(max_message_bytes, NODE_HEADROOM_BYTES)


def routed_message_bytes(max_message_bytes: int) -> int:
    """Return the largest request that the router sends a node, in bytes."""
    return with_headroom(max_message_bytes, ROUTED_HEADROOM_BYTES)


def node_channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    """Return the channel arguments for calls from the router to a node.

    Messages may be `NODE_HEADROOM_BYTES` larger than `max_message_bytes`.
    """
    options = [
        option
        for option in channel_options(node_message_bytes(max_message_bytes))
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
class AppendCalls:
    """AppendEntries and AppendBatches of one node, sending serialized requests.

    The router serializes each batch once to learn its size, and these calls
    send those bytes as they are.
    """

    append_entries: grpc.UnaryUnaryMultiCallable
    append_batches: grpc.UnaryUnaryMultiCallable

    @classmethod
    def on(cls, channel: grpc.Channel) -> AppendCalls:
        def call(method: str, response) -> grpc.UnaryUnaryMultiCallable:
            return channel.unary_unary(
                f"/{_NODE_SERVICE.full_name}/{method}",
                request_serializer=None,
                response_deserializer=response.FromString,
            )

        return cls(
            call("AppendEntries", node_service_pb2.AppendEntriesResponse),
            call("AppendBatches", node_service_pb2.AppendBatchesResponse),
        )


@dataclass(frozen=True)
class NodeStubs:
    """The stubs of one node address."""

    node: node_service_pb2_grpc.LogNodeServiceStub
    replication: replication_service_pb2_grpc.ReplicationServiceStub


class ClientsClosed(ValueError):
    """`NodeClients.stubs` was called after `close`, so the router is stopping.

    It extends ValueError, which gRPC raises for a call on a closed channel,
    so one `except ValueError` handles channels closed both before and after
    a caller took its stubs.
    """


# The messages of the ValueError that grpcio 1.85 raises for a call on a
# closed channel: from a blocking call, and from `future()`.
CLOSED_CHANNEL_MESSAGES = frozenset(
    {"Cannot invoke RPC on closed channel!", "Cannot invoke RPC: Channel closed!"}
)


def is_closed_channel_error(error: BaseException) -> bool:
    """Return whether `error` comes from a call on a closed node channel.

    That is `ClientsClosed`, or grpc's ValueError for a channel that
    `NodeClients` closed after the caller took its calls. Any other
    ValueError is a bug of the caller.
    """
    if isinstance(error, ClientsClosed):
        return True
    return type(error) is ValueError and str(error) in CLOSED_CHANNEL_MESSAGES


class LeaderReplacedError(Exception):
    """`NodeClients.append_calls` was called with a route to a node that the
    coordinator replaced as the shard's leader.

    The caller read the route before the router recorded that replacement
    (`NodeClients.reset_append_channel`).
    """


class NodeClients:
    """Opens one channel per node address on first use and closes them all.

    After `close`, `stubs` raises `ClientsClosed` instead of opening a
    channel that nothing would close.
    """

    def __init__(self, max_message_bytes: int, *, sign: bool = False) -> None:
        self._options = node_channel_options(max_message_bytes)
        self._sign = sign
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, NodeStubs] = {}
        self._append_channels: dict[str, grpc.Channel] = {}
        self._appends: dict[str, AppendCalls] = {}
        # (address, shard) -> the highest epoch at which the coordinator
        # replaced that node as the shard's leader (`reset_append_channel`).
        self._replaced: dict[tuple[str, str], int] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        return self._closed

    def stubs(self, address: str) -> NodeStubs:
        """Return the stubs for a node address, opening its channel on first use.

        Raises:
          ClientsClosed: `close` has been called.
        """
        with self._lock:
            if self._closed:
                raise ClientsClosed(
                    f"the router closed its node channels because it is stopping, "
                    f"so it calls node {address} no more"
                )
            stubs = self._stubs.get(address)
            if stubs is None:
                calls = self._open(address, self._channels)
                stubs = NodeStubs(
                    node_service_pb2_grpc.LogNodeServiceStub(calls),
                    replication_service_pb2_grpc.ReplicationServiceStub(calls),
                )
                self._stubs[address] = stubs
            return stubs

    def append_calls(self, address: str, *, shard: str, epoch: int) -> AppendCalls:
        """Return the append calls of a shard's leader, on the node's own channel.

        `address` and `epoch` come from a route of `shard`. A route at a
        higher epoch than the node's last replacement in that shard, as after
        the node was promoted again, gets the calls.

        Raises:
          ClientsClosed: `close` has been called.
          LeaderReplacedError: `reset_append_channel` recorded that the
            coordinator replaced `address` as the leader of `shard` at
            `epoch` or a later epoch.
        """
        with self._lock:
            if self._closed:
                raise ClientsClosed(
                    f"the router closed its node channels because it is stopping, "
                    f"so it sends node {address} no more entries"
                )
            replaced = self._replaced.get((address, shard))
            if replaced is not None and epoch <= replaced:
                raise LeaderReplacedError(
                    f"the coordinator replaced node {address} as the leader of "
                    f"log shard {shard} at epoch {replaced}, so the router sends "
                    f"it no entries of epoch {epoch}; read the shard's route again"
                )
            calls = self._appends.get(address)
            if calls is None:
                calls = AppendCalls.on(self._open(address, self._append_channels))
                self._appends[address] = calls
            return calls

    def reset_append_channel(
        self, address: str, shard: str, epoch: int, *, close: bool = True
    ) -> None:
        """Record that `address` no longer leads `shard` at `epoch`.

        From then on, `append_calls` raises LeaderReplacedError for routes
        of `shard` to `address` at `epoch` or below. With `close`, it also
        closes the node's append channel, which ends its calls: those in
        flight fail with CANCELLED, and a call that took the closed
        channel's stubs just before fails with ValueError. Both steps take
        the lock that `append_calls` takes, so a thread that read an older
        route either opened its channel before, and the close ends it, or
        gets LeaderReplacedError. It thus opens no channel to the replaced
        node that no later reset would close.
        """
        with self._lock:
            key = (address, shard)
            self._replaced[key] = max(epoch, self._replaced.get(key, epoch))
            channel = self._append_channels.pop(address, None) if close else None
            if close:
                self._appends.pop(address, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        """Close every channel, which cancels their calls in flight."""
        with self._lock:
            self._closed = True
            channels = [*self._channels.values(), *self._append_channels.values()]
            self._channels.clear()
            self._stubs.clear()
            self._append_channels.clear()
            self._appends.clear()
        for channel in channels:
            channel.close()

    def _open(self, address: str, channels: dict[str, grpc.Channel]) -> grpc.Channel:
        """Open a channel to `address`, record it in `channels`, return its calls."""
        channel = grpc.insecure_channel(address, options=self._options)
        channels[address] = channel
        return auth.signing_channel(channel) if self._sign else channel
