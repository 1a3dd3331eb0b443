"""`splitlog up` on its defaults, auth on: logs flow through signed internal calls.

The whole system runs as `splitlog up` does it, in one process and with
`--processes`. A signed-up user, made an administrator with `splitlog
admin-key` as an operator does, writes log entries through the gateway and
reads them back, which needs the router's signed calls to the log nodes and
the leaders' signed replication streams. A log node's port refuses a call
that carries no signature.
"""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_pb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as otlp_grpc
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog.logs.v1 import replication_service_pb2, replication_service_pb2_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_cli.main import main
from tests.auth.support import operator_admin_key, sign_up_user
from tests.system.conftest import START_TIMEOUT, wait_for_health

CALL_TIMEOUT = 15


def _api_key(channel, parent: str, bearer, scope: str) -> str:
    created = auth_grpc.AuthServiceStub(channel).CreateApiKey(
        auth_pb.CreateApiKeyRequest(
            parent=parent,
            api_key=auth_pb.ApiKey(display_name=scope, scopes=[scope]),
        ),
        metadata=bearer,
        timeout=CALL_TIMEOUT,
    )
    return created.secret


def _export_with_sdk(address: str, key: str, message: str) -> None:
    """Send one record with the OpenTelemetry SDK's OTLP/gRPC exporter."""
    exporter = OTLPLogExporter(
        endpoint=address, insecure=True, headers={"authorization": f"Bearer {key}"}
    )
    provider = LoggerProvider(resource=Resource.create({"service.name": "otel-app"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    python_logger = logging.getLogger("tests.otlp_through_gateway")
    python_logger.propagate = False
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    python_logger.addHandler(handler)
    try:
        python_logger.warning(message)
    finally:
        provider.shutdown()
        python_logger.removeHandler(handler)


def wait_for_entries(logs, bearer, service: str, timeout: float = 20.0) -> list:
    """List the entries of `service` once there are any, or return [] at the end."""
    deadline = time.monotonic() + timeout
    while True:
        listed = logs.ListLogEntries(
            logs_pb.ListLogEntriesRequest(services=[service], page_size=1000),
            metadata=bearer,
            timeout=CALL_TIMEOUT,
        )
        if listed.entries or time.monotonic() > deadline:
            return list(listed.entries)
        time.sleep(0.5)


def _node_addresses(running) -> list[str]:
    members = running.ports["--log-nodes"].replace(";", ",").split(",")
    return [member.split("@", 1)[1] for member in members]


@pytest.mark.parametrize("mode", [(), ("--processes",)], ids=["one", "processes"])
def test_logs_flow_with_auth_on(splitlog_factory, mode):
    # No SPLITLOG_* variables and no auth flag: auth is on by default.
    running = splitlog_factory(*mode, settings={})
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
        operator_admin_key(running.data_dir, signed_up.user.name)
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

        # OTLP export through the gateway, with an API key's scopes.
        writer = _api_key(channel, signed_up.user.name, bearer, "logs:write")
        reader = _api_key(channel, signed_up.user.name, bearer, "logs:read")
        _export_with_sdk(running.grpc_address, writer, "exported through gateway")
        exported = logs.ListLogEntries(
            logs_pb.ListLogEntriesRequest(services=["otel-app"]),
            metadata=bearer,
            timeout=CALL_TIMEOUT,
        )
        # The launcher's records, and under --processes the supervisor's,
        # such as "started user_service", are signed like calls between
        # components, so the log router stores them.
        launcher = wait_for_entries(logs, bearer, "splitlog")
        with pytest.raises(grpc.RpcError) as denied:
            otlp_grpc.LogsServiceStub(channel).Export(
                otlp_pb.ExportLogsServiceRequest(),
                metadata=(("authorization", f"Bearer {reader}"),),
                timeout=CALL_TIMEOUT,
            )

    assert written.accepted_count == 4
    assert sorted(e.message for e in listed.entries) == [f"event {i}" for i in range(4)]
    assert [e.message for e in exported.entries] == ["exported through gateway"]
    assert exported.entries[0].severity == logs_pb.SEVERITY_WARN
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "logs:write" in denied.value.details()
    assert launcher
    if mode:
        assert any("started user_service" in e.message for e in launcher)
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


def test_processes_start_with_closed_health(splitlog_factory, capsys):
    settings = {"SPLITLOG_AUTH_OPEN_HEALTH": "false"}
    running = splitlog_factory("--processes", settings=settings)
    # The ready line follows the supervisor's health checks of every child.
    deadline = time.monotonic() + START_TIMEOUT
    while not running.ready.wait(0.1):
        assert running.process.poll() is None, running.log()[-4000:]
        assert time.monotonic() < deadline, running.log()[-4000:]
    with grpc.insecure_channel(running.grpc_address) as channel:
        signed_up = sign_up_user(channel, "prober", "correct horse battery", 15)
    token = signed_up.tokens.access_token

    status = main(["health", running.grpc_address, "--token", token])

    assert status == 0
    assert capsys.readouterr().out.strip() == "SERVING"
