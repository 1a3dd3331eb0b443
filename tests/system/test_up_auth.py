"""`splitlog up` with auth_required: logs flow through signed internal calls.

The whole system runs as `splitlog up` does it, in one process and with
`--processes`. A signed-up user writes log entries through the gateway and
reads them back, which needs the router's signed calls to the log nodes and
the leaders' signed replication streams. A log node's port refuses a call
that carries no signature.
"""

from __future__ import annotations

import grpc
import pytest

from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog.logs.v1 import replication_service_pb2, replication_service_pb2_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from tests.system.conftest import wait_for_health

CALL_TIMEOUT = 15


def _node_addresses(running) -> list[str]:
    members = running.ports["--log-nodes"].replace(";", ",").split(",")
    return [member.split("@", 1)[1] for member in members]


@pytest.mark.parametrize("mode", [(), ("--processes",)], ids=["one", "processes"])
def test_logs_flow_with_auth_on(splitlog_factory, mode):
    running = splitlog_factory(*mode, "--auth-required", "true")
    running.wait_until_ready()
    with grpc.insecure_channel(running.grpc_address) as channel:
        signed_up = auth_grpc.AuthServiceStub(channel).SignUp(
            auth_pb.SignUpRequest(
                user=users_pb.User(email="ops@example.com", display_name="Ops"),
                user_id="ops-team",
                password="correct horse battery staple",
            ),
            timeout=CALL_TIMEOUT,
        )
        bearer = (("authorization", f"Bearer {signed_up.tokens.access_token}"),)
        logs = logs_grpc.LogsServiceStub(channel)
        written = logs.WriteLogEntries(
            logs_pb.WriteLogEntriesRequest(
                entries=[
                    logs_pb.LogEntry(service="audit-trail", message=f"event {i}")
                    for i in range(4)
                ]
            ),
            metadata=bearer,
            timeout=CALL_TIMEOUT,
        )
        listed = logs.ListLogEntries(
            logs_pb.ListLogEntriesRequest(services=["audit-trail"]),
            metadata=bearer,
            timeout=CALL_TIMEOUT,
        )

    assert written.accepted_count == 4
    assert sorted(e.message for e in listed.entries) == [f"event {i}" for i in range(4)]
    for address in _node_addresses(running):
        wait_for_health(address, CALL_TIMEOUT)
        with grpc.insecure_channel(address) as direct:
            stub = replication_service_pb2_grpc.ReplicationServiceStub(direct)
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetNodeStatus(
                    replication_service_pb2.GetNodeStatusRequest(),
                    timeout=CALL_TIMEOUT,
                )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
