"""Signed calls to the log nodes: a router and 1 shard x 2 nodes with auth on.

With `auth_required`, the nodes accept only calls that carry a valid signature
made with the shared auth secret. The router signs its calls, the leader signs
its replication stream, and anything else is refused with UNAUTHENTICATED.
"""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from log_service.app import build_router
from log_service.node import start_node
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog.logs.v1 import (
    logs_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
    replication_service_pb2,
    replication_service_pb2_grpc,
)
from splitlog_cli.components import start_log_nodes
from splitlog_runtime import auth
from splitlog_runtime.server import ServiceHost
from tests.log_service.node_support import error_reason, wait_for

SECRET = "node-auth-secret-" + "n" * 40
SHARD = "shard-0"


@pytest.fixture
def cluster(base_config):
    config = base_config.replace(
        auth_required=True,
        auth_secret=SECRET,
        log_shards=1,
        log_replicas=2,
        log_node_port=0,
        log_failover_seconds=1.0,
        log_fsync=False,
        log_self_ship=False,
    )
    hosts: dict[str, ServiceHost] = {}
    try:
        router_config = start_log_nodes(config, hosts)
        router, coordinator = build_router(router_config, "127.0.0.1:0")
    except BaseException:
        for host in hosts.values():
            host.stop(0)
        auth.install_process_signer(None)
        raise
    try:
        assert coordinator.wait_until_ready(15)
        yield router, hosts
    finally:
        router.stop(0)
        for host in hosts.values():
            host.stop(0)
        auth.install_process_signer(None)


def _signed(secret: str = SECRET, now: float | None = None):
    signer = auth.PrincipalSigner(secret.encode())
    return signer.metadata(auth.Principal(auth.SERVICE_PRINCIPAL), now=now)


def _query(port: int, metadata=()) -> node_service_pb2.QueryEntriesResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return node_service_pb2_grpc.LogNodeServiceStub(channel).QueryEntries(
            node_service_pb2.QueryEntriesRequest(shard=SHARD, limit=100),
            metadata=metadata,
            timeout=5,
        )


def _refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return caught.value


def test_router_and_replication_calls_are_signed(cluster):
    router, hosts = cluster
    with grpc.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        written = logs_service_pb2_grpc.LogsServiceStub(channel).WriteLogEntries(
            pb.WriteLogEntriesRequest(
                entries=[
                    pb.LogEntry(service="audit", message=f"m{i}") for i in range(5)
                ]
            ),
            metadata=_signed(),
            timeout=10,
        )
    assert written.accepted_count == 5
    # The default write quorum is `all`, so the follower stored the batch
    # before the router acknowledged it. A refused replication stream fails
    # the write or leaves the follower empty.
    for host in hosts.values():
        assert wait_for(lambda h=host: len(_query(h.port, _signed()).entries.messages))
        messages = list(_query(host.port, _signed()).entries.messages)
        assert sorted(messages) == [f"m{i}" for i in range(5)]


def test_unsigned_node_call_is_refused(cluster):
    _, hosts = cluster
    for host in hosts.values():
        error = _refused(lambda h=host: _query(h.port))
        assert "signed by the log router or another log node" in error.details()
        assert "through the gateway" in error.details()
        assert error_reason(error) == "GATEWAY_SIGNATURE_MISSING"


def test_unsigned_replication_stream_is_refused(cluster):
    _, hosts = cluster
    port = next(iter(hosts.values())).port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = replication_service_pb2_grpc.ReplicationServiceStub(channel)
        request = replication_service_pb2.ReplicateEntriesRequest(
            shard=SHARD, leader="intruder", leader_epoch=99
        )
        error = _refused(lambda: list(stub.ReplicateEntries(iter([request]))))
        assert error_reason(error) == "GATEWAY_SIGNATURE_MISSING"
        status = _refused(
            lambda: stub.GetNodeStatus(replication_service_pb2.GetNodeStatusRequest())
        )
        assert "signed by the log router" in status.details()


def test_forged_signature_is_refused(cluster):
    _, hosts = cluster
    port = next(iter(hosts.values())).port
    forged = _signed("another-secret-that-is-long-enough-" + "z" * 10)
    error = _refused(lambda: _query(port, forged))
    assert "does not match" in error.details()
    assert "auth_secret" in error.details()
    assert error_reason(error) == "GATEWAY_SIGNATURE_INVALID"


def test_expired_signature_is_refused(cluster):
    _, hosts = cluster
    port = next(iter(hosts.values())).port
    old = _signed(now=time.time() - 2 * auth.SIGNATURE_MAX_AGE_SECONDS)
    error = _refused(lambda: _query(port, old))
    assert "seconds old" in error.details()
    assert error_reason(error) == "GATEWAY_SIGNATURE_EXPIRED"


def test_node_health_stays_open(cluster):
    _, hosts = cluster
    for host in hosts.values():
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_router_port_refuses_unsigned_calls(cluster):
    router, _ = cluster
    with grpc.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        error = _refused(
            lambda: stub.WriteLogEntries(
                pb.WriteLogEntriesRequest(entries=[pb.LogEntry(message="forged")]),
                timeout=5,
            )
        )
    assert "signed by the gateway" in error.details()


def test_node_without_auth_accepts_unsigned_calls(base_config):
    config = base_config.replace(log_fsync=False)
    host, _ = start_node(config, "solo", SHARD, "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            status = replication_service_pb2_grpc.ReplicationServiceStub(
                channel
            ).GetNodeStatus(replication_service_pb2.GetNodeStatusRequest(), timeout=5)
        assert status.node == "solo"
    finally:
        host.stop(0)


def _update_retention(port: int, principal: auth.Principal):
    signer = auth.PrincipalSigner(SECRET.encode())
    policy = pb.RetentionPolicy(name="retentionPolicy")
    policy.service_retentions["audit"].FromSeconds(48 * 3600)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        return stub.UpdateRetentionPolicy(
            pb.UpdateRetentionPolicyRequest(retention_policy=policy),
            metadata=signer.metadata(principal),
            timeout=5,
        )


def test_router_retention_update_needs_admin(cluster):
    router, _ = cluster
    user = auth.Principal("users/plain")
    logs_key = auth.Principal(
        "users/plain/apiKeys/shipper",
        frozenset({auth.SCOPE_LOGS_READ, auth.SCOPE_LOGS_WRITE}),
    )
    admin_key = auth.Principal("users/ops/apiKeys/ops", frozenset({auth.SCOPE_ADMIN}))

    with pytest.raises(grpc.RpcError) as user_error:
        _update_retention(router.port, user)
    with pytest.raises(grpc.RpcError) as key_error:
        _update_retention(router.port, logs_key)
    updated = _update_retention(router.port, admin_key)

    assert user_error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(user_error.value) == "ADMIN_REQUIRED"
    assert key_error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert updated.retention_policy.service_retentions["audit"].ToSeconds() == 48 * 3600
