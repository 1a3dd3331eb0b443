"""Tests of the port check that runs before `splitlog up` and `serve` start."""

from __future__ import annotations

import socket

import pytest

from splitlog_cli.errors import StartupError
from splitlog_cli.ports import check_ports_free
from splitlog_cli.topology import COMPONENTS_BY_NAME, Component
from tests.ports import EPHEMERAL_RANGE_FILE

USER_SERVICE = COMPONENTS_BY_NAME["user_service"]


def port_error(base_config, port, component=USER_SERVICE):
    config = base_config.replace(host="127.0.0.1", user_service_port=port)
    with pytest.raises(StartupError) as busy:
        check_ports_free(config, [component])
    return str(busy.value)


def test_listener_is_in_use(base_config):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        message = port_error(base_config, port)

    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert "stop the program using it" in message
    assert "--user-service-port or SPLITLOG_USER_SERVICE_PORT" in message
    assert "does not listen" not in message


def test_bound_socket_without_listener(base_config):
    low, high = map(int, EPHEMERAL_RANGE_FILE.read_text().split())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        # A bind to port 0 takes a port from the ephemeral range, as the
        # local end of an outgoing connection does.
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        message = port_error(base_config, port)

    assert low <= port <= high
    assert f"port {port} on 127.0.0.1 is taken by a socket that does not listen" in (
        message
    )
    assert "already in use" not in message
    assert "stop the program" not in message
    assert "--user-service-port or SPLITLOG_USER_SERVICE_PORT" in message
    assert f"{low}-{high} (net.ipv4.ip_local_port_range" in message
    assert f"net.ipv4.ip_local_reserved_ports={port}" in message


def test_outgoing_connection_port(base_config):
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as client,
    ):
        accepted, _ = listener.accept()
        with accepted:
            port = client.getsockname()[1]
            message = port_error(base_config, port)

    assert f"port {port} on 127.0.0.1 is taken by a socket that does not listen" in (
        message
    )
    assert "outgoing connection" in message


def test_log_node_port_without_listener(base_config):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        node = Component(
            name="log_node",
            port_settings=(),
            peers=(),
            depends_on=(),
            has_database=False,
            node_id="shard-0-a",
            node_port=port,
        )
        config = base_config.replace(host="127.0.0.1")
        with pytest.raises(StartupError) as busy:
            check_ports_free(config, [node])

    message = str(busy.value)
    assert message.startswith(f"log node shard-0-a: port {port} on 127.0.0.1 is ")
    assert "taken by a socket that does not listen" in message
    assert "--log-node-port or --log-nodes" in message


def test_accepted_connection_in_time_wait_is_free(base_config):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            # The server's end closes first, so it stays in TIME_WAIT.
            accepted.close()
            client.recv(1)
    config = base_config.replace(host="127.0.0.1", user_service_port=port)

    check_ports_free(config, [USER_SERVICE])
