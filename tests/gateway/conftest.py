"""A gateway per test module in front of the test backend.

The users and logs areas are forwarded to the test backend. The expenses and
balances areas point at loopback ports where nothing listens, so their calls
fail as unreachable. Tests of log writes use `live`: a real log cluster with
a real gateway.
"""

from __future__ import annotations

import grpc
import pytest

from gateway.app import build
from splitlog_runtime import config as config_module
from tests.cli.test_logs_cli import LogsGateway
from tests.gateway.support import BackendLog, LoopThread, start_backend
from tests.ports import closed_address

DEFAULT_DEADLINE_SECONDS = 3.0


@pytest.fixture(scope="module")
def backend_log() -> BackendLog:
    return BackendLog()


@pytest.fixture(scope="module")
def backend(backend_log):
    host = start_backend(backend_log)
    yield host
    host.stop(0)


@pytest.fixture(scope="module")
def gateway_config(backend, tmp_path_factory):
    backend_address = f"127.0.0.1:{backend.port}"
    return config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("data"),
            "user_service_addr": backend_address,
            "log_service_addr": backend_address,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "deadline_seconds": DEFAULT_DEADLINE_SECONDS,
            "grace_seconds": 1.0,
        },
    )


@pytest.fixture(scope="module")
def gateway(loop_thread, gateway_config):
    running = loop_thread.run(build(gateway_config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as opened:
        yield opened


def logs_gateway(tmp_path_factory, loop: LoopThread, **settings) -> LogsGateway:
    """Start a real log cluster of 2 shards and a real gateway, auth off.

    `settings` go to the cluster's settings, such as log_max_open_streams.
    """
    base = config_module.load(
        environ={},
        overrides={"auth_required": False, "data_dir": tmp_path_factory.mktemp("logs")},
    )
    return LogsGateway(base, tmp_path_factory.mktemp("gateway"), loop, **settings)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real log cluster of 2 shards and a real gateway in front of it."""
    loop = LoopThread()
    running = logs_gateway(tmp_path_factory, loop)
    yield running
    running.close()
    loop.close()
