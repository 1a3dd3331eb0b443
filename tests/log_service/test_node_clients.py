"""Tests of the router's node channels, without a node behind them.

Opening a channel does not connect, so these tests need no server. The
closed-channel errors come from grpc itself, on channels closed here.
"""

from __future__ import annotations

import grpc
import pytest

from log_service.clients import (
    ClientsClosed,
    LeaderReplacedError,
    NodeClients,
    is_closed_channel_error,
)
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
        clients.append_calls(address)
        clients.reset_append_channel(address)

        with pytest.raises(LeaderReplacedError) as caught:
            clients.append_calls(address)
        clients.note_leaders([address])
        calls = clients.append_calls(address)
    finally:
        clients.close()

    assert address in str(caught.value)
    assert calls is not None


def test_append_calls_of_other_nodes_unaffected():
    clients = NodeClients(MAX_MESSAGE_BYTES)
    replaced = closed_address()
    other = closed_address()
    try:
        clients.append_calls(replaced)
        clients.reset_append_channel(replaced)

        calls = clients.append_calls(other)
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
