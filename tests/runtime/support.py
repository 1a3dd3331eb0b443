"""Real servers for the tests of raw request bytes: a user service, a log
router with one node, and a gateway in front of both, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gateway.app import build as build_gateway
from splitlog_runtime import config as config_module
from tests.log_service.test_router_cluster import Cluster
from tests.loop_thread import LoopThread
from tests.ports import closed_address
from user_service.app import build as build_users


@contextmanager
def running_servers(tmp_path_factory, **settings) -> Iterator[dict[str, int]]:
    """Run the servers, each with `settings` added to its own; yield the port
    of each: `user_service`, `log_node`, `log_router` and `gateway`."""
    users_config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("users"),
            "balance_service_addr": closed_address(),
            "workers": 4,
            **settings,
        },
    )
    users = build_users(users_config, "127.0.0.1:0")

    logs_config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("logs"),
            "log_shards": 1,
            "log_replicas": 1,
            "log_node_port": 0,
            "log_fsync": False,
            "log_self_ship": False,
            "workers": 4,
            **settings,
        },
    )
    logs = Cluster(logs_config)

    loop = LoopThread()
    gateway_config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("gateway"),
            "user_service_addr": f"127.0.0.1:{users.port}",
            "log_service_addr": f"127.0.0.1:{logs.router.port}",
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "grace_seconds": 1.0,
            **settings,
        },
    )
    gateway = loop.run(build_gateway(gateway_config, "127.0.0.1:0", "127.0.0.1:0"))

    yield {
        "user_service": users.port,
        "log_node": logs.nodes[0].port,
        "log_router": logs.router.port,
        "gateway": gateway.grpc_port,
    }
    loop.run(gateway.stop(0))
    loop.close()
    logs.close()
    users.stop(0)
