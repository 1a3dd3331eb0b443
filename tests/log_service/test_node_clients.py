"""Tests of the router's node channels, without a node behind them.

Opening a channel does not connect, so these tests need no server.
"""

from __future__ import annotations

import pytest

from log_service.clients import LeaderReplacedError, NodeClients
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
