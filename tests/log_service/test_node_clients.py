"""Tests of the router's node channels, without a node behind them.

Opening a channel does not connect, so these tests need no server. The
closed-channel errors come from grpc itself, on channels closed here.
"""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from log_service.clients import (
    ClientsClosed,
    LeaderReplacedError,
    NodeClients,
    is_closed_channel_error,
)
from log_service.coordinator import ShardRoute, ended_by_stop
from log_service.router import Writer, _ShardQueue
from splitlog_runtime import auth
from tests.ports import closed_address

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def test_append_calls_rejected_after_reset():
    # The poller resets a replaced leader's channel while a queue thread
    # still has its address from an older route. That thread must not open a
    # new channel to the replaced leader, which nothing would close.
    clients = NodeClients(MAX_MESSAGE_BYTES)
    address = closed_address()
    try:
        clients.append_calls(address, shard="s0", epoch=3)
        clients.reset_append_channel(address, "s0", 3)

        with pytest.raises(LeaderReplacedError) as caught:
            clients.append_calls(address, shard="s0", epoch=3)
        # Promoted again: a route at a higher epoch gets the calls.
        calls = clients.append_calls(address, shard="s0", epoch=4)
    finally:
        clients.close()

    assert address in str(caught.value)
    assert "s0" in str(caught.value)
    assert calls is not None


def test_reset_keeps_the_highest_epoch():
    clients = NodeClients(MAX_MESSAGE_BYTES)
    address = closed_address()
    try:
        clients.reset_append_channel(address, "s0", 6)
        clients.reset_append_channel(address, "s0", 4)

        with pytest.raises(LeaderReplacedError):
            clients.append_calls(address, shard="s0", epoch=5)
        # The mark covers only that shard's routes.
        calls = clients.append_calls(address, shard="s1", epoch=2)
    finally:
        clients.close()

    assert calls is not None


def test_append_calls_of_other_nodes_unaffected():
    clients = NodeClients(MAX_MESSAGE_BYTES)
    replaced = closed_address()
    other = closed_address()
    try:
        clients.append_calls(replaced, shard="s0", epoch=3)
        clients.reset_append_channel(replaced, "s0", 3)

        calls = clients.append_calls(other, shard="s0", epoch=3)
    finally:
        clients.close()

    assert calls is not None


def closed_channel_errors(channel: grpc.Channel, closed: grpc.Channel) -> list:
    """Return what a blocking call and a future raise on `closed`'s calls."""
    method = channel.unary_unary("/test.Closed/Call")
    closed.close()
    errors = []
    try:
        method(b"", timeout=1)
    except ValueError as error:
        errors.append(error)
    try:
        future = method.future(b"", timeout=1)
    except ValueError as error:
        errors.append(error)
    else:
        # Through an interceptor, future() returns the error as exception().
        errors.append(future.exception())
    return errors


@pytest.mark.parametrize("signed", [False, True])
def test_closed_channel_errors_recognised(signed):
    channel = grpc.insecure_channel(closed_address())
    calls = auth.signing_channel(channel) if signed else channel

    errors = closed_channel_errors(calls, channel)

    assert len(errors) == 2
    for error in errors:
        assert is_closed_channel_error(error), repr(error)


def test_other_value_errors_not_closed_channel():
    assert is_closed_channel_error(ClientsClosed("stopping"))
    assert not is_closed_channel_error(ValueError("invalid literal for int()"))
    assert not is_closed_channel_error(
        TypeError("Cannot invoke RPC on closed channel!")
    )


def test_stop_errors_of_poll_round():
    channel = grpc.insecure_channel(closed_address())
    closed = closed_channel_errors(channel, channel)
    clients = NodeClients(MAX_MESSAGE_BYTES)
    clients.close()
    with pytest.raises(ClientsClosed) as stopped:
        clients.stubs(closed_address())
    pool = futures.ThreadPoolExecutor(1)
    pool.shutdown()
    with pytest.raises(RuntimeError) as shut_down:
        pool.submit(print)

    for error in [*closed, stopped.value, shut_down.value, futures.CancelledError()]:
        assert ended_by_stop(error), repr(error)
    # Other ValueErrors are bugs of the round, even during a stop.
    assert not ended_by_stop(ValueError("invalid literal for int()"))
    assert not ended_by_stop(UnicodeEncodeError("ascii", "\xe9", 0, 1, "no"))
    assert not ended_by_stop(KeyError("s0"))


class ShardRoutes:
    """The routes of one poll round after another, as the writer reads them.

    `on_route` runs once, inside the next `route` call after it is set, for
    a poll round that lands while a queue thread reads the route.
    """

    def __init__(self, shard: str, address: str, epoch: int) -> None:
        self.leader = (shard, address, epoch)
        self.on_route = None

    def route(self, shard: str) -> ShardRoute:
        _, address, epoch = self.leader
        route = ShardRoute(shard, address, epoch, (address,))
        hook, self.on_route = self.on_route, None
        if hook is not None:
            hook()
        return route

    def leaders(self) -> dict[str, tuple[str | None, int]]:
        shard, address, epoch = self.leader
        return {shard: (address, epoch)}


def test_stale_route_gets_no_open_channel():
    # Node a led the shard, was replaced, and leads it again at epoch 7,
    # but the round's listener has not run yet. A queue thread reads the
    # route (a, 7). Before it takes a's append calls, a poll round replaces
    # a by b and resets a's append channel. The thread must then get no
    # open channel to a, which no later reset would close.
    clients = NodeClients(MAX_MESSAGE_BYTES)
    a, b = closed_address(), closed_address()
    routes = ShardRoutes("s0", a, 5)
    writer = Writer(routes, None, clients, None, None, None, 5.0, MAX_MESSAGE_BYTES)
    queue = _ShardQueue("s0", writer, 100, MAX_MESSAGE_BYTES)

    def replace_a() -> None:
        # The listener of the round that promoted a runs late, then the
        # next round replaces a by b.
        writer.leaders_polled()
        routes.leader = ("s0", b, 8)
        writer.leaders_polled()

    try:
        for leader in [(a, 5), (b, 6)]:
            routes.leader = ("s0", *leader)
            writer.leaders_polled()
        # The round that promotes a again has not run its listener yet.
        routes.leader = ("s0", a, 7)
        routes.on_route = replace_a
        try:
            calls = queue._append_calls(a, 7)
        except LeaderReplacedError:
            calls = None
        if routes.on_route is not None:
            routes.on_route = None
            replace_a()

        if calls is not None:
            with pytest.raises(ValueError) as caught:
                calls.append_entries(b"", timeout=1)
            assert is_closed_channel_error(caught.value)
        with pytest.raises(LeaderReplacedError):
            clients.append_calls(a, shard="s0", epoch=7)
        assert clients.append_calls(a, shard="s0", epoch=9) is not None
        assert clients.append_calls(b, shard="s0", epoch=8) is not None
    finally:
        clients.close()
