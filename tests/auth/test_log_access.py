"""Who may read and write logs and change retention, end to end.

A real user_service, a real log cluster (two shards of one node) and a real
gateway with `auth_required` on listen on 127.0.0.1. Users sign up through
the gateway; an administrator is made the way an operator makes one, with
`splitlog admin-key`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_pb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2 as otlp_logs_pb
from opentelemetry.proto.resource.v1 import resource_pb2

from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from tests.auth.support import operator_admin_key, sign_up_user
from tests.cli.test_logs_cli import LogsGateway, logs_gateway_with_auth
from tests.gateway.support import error_details
from tests.rich_errors import fails

SECRET = "log-access-test-secret-" + "q" * 40
PASSWORD = "correct horse battery staple"
TIMEOUT = 10.0
DENIED = grpc.StatusCode.PERMISSION_DENIED
HOUR = 3600
EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


@pytest.fixture(scope="module")
def live(loop_thread, tmp_path_factory) -> Iterator[LogsGateway]:
    with logs_gateway_with_auth(loop_thread, tmp_path_factory, SECRET) as running:
        yield running


@pytest.fixture(scope="module")
def channel(live: LogsGateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(live.address) as opened:
        yield opened


@pytest.fixture(scope="module")
def http(live: LogsGateway) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{live.gateway.http_port}", timeout=TIMEOUT
    ) as client:
        yield client


@dataclass
class Caller:
    """One credential against the gateway: an access token or an API key."""

    channel: grpc.Channel
    user: str
    credential: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)

    def logs(self, method: str, request):
        stub = logs_grpc.LogsServiceStub(self.channel)
        return getattr(stub, method)(request, metadata=self.metadata, timeout=TIMEOUT)

    def create_key(self, scopes: list[str]) -> Caller:
        created = auth_grpc.AuthServiceStub(self.channel).CreateApiKey(
            auth_pb.CreateApiKeyRequest(
                parent=self.user,
                api_key=auth_pb.ApiKey(display_name="shipper", scopes=scopes),
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return Caller(self.channel, self.user, created.secret)

    def export(self, service: str) -> otlp_pb.ExportLogsServiceResponse:
        return otlp_grpc.LogsServiceStub(self.channel).Export(
            _otlp_request(service), metadata=self.metadata, timeout=TIMEOUT
        )


def _sign_up(channel: grpc.Channel, label: str) -> Caller:
    reply = sign_up_user(channel, label, PASSWORD, TIMEOUT)
    return Caller(channel, reply.user.name, reply.tokens.access_token)


def _administrator(live: LogsGateway, channel: grpc.Channel) -> Caller:
    """Sign up a user and make it an administrator with `splitlog admin-key`.

    Returns the user's access token, which the admin key makes an
    administrator's token.
    """
    caller = _sign_up(channel, "root")
    operator_admin_key(live.gateway.config.data_dir, caller.user)
    return caller


def _entry(service: str, message: str) -> logs_pb.LogEntry:
    entry = logs_pb.LogEntry(
        service=service, severity=logs_pb.SEVERITY_INFO, message=message
    )
    entry.timestamp.GetCurrentTime()
    return entry


def _write(service: str) -> logs_pb.WriteLogEntriesRequest:
    return logs_pb.WriteLogEntriesRequest(
        entries=[_entry(service, "hello")], request_id=str(uuid.uuid4())
    )


def _list(service: str) -> logs_pb.ListLogEntriesRequest:
    return logs_pb.ListLogEntriesRequest(services=[service])


def _retention_update(hours: int) -> logs_pb.UpdateRetentionPolicyRequest:
    policy = logs_pb.RetentionPolicy(name="retentionPolicy")
    policy.service_retentions["log-access-test"].seconds = hours * HOUR
    return logs_pb.UpdateRetentionPolicyRequest(
        retention_policy=policy,
        update_mask=field_mask_pb2.FieldMask(paths=["service_retentions"]),
    )


def _otlp_request(service: str) -> otlp_pb.ExportLogsServiceRequest:
    name = common_pb2.KeyValue(
        key="service.name", value=common_pb2.AnyValue(string_value=service)
    )
    record = otlp_logs_pb.LogRecord(
        body=common_pb2.AnyValue(string_value="exported"),
        severity_number=otlp_logs_pb.SEVERITY_NUMBER_INFO,
    )
    return otlp_pb.ExportLogsServiceRequest(
        resource_logs=[
            otlp_logs_pb.ResourceLogs(
                resource=resource_pb2.Resource(attributes=[name]),
                scope_logs=[otlp_logs_pb.ScopeLogs(log_records=[record])],
            )
        ]
    )


def _tail_first(caller: Caller, service: str):
    stream = logs_grpc.LogsServiceStub(caller.channel).TailLogEntries(
        logs_pb.TailLogEntriesRequest(services=[service]),
        metadata=caller.metadata,
        timeout=TIMEOUT,
    )
    try:
        return next(iter(stream))
    finally:
        stream.cancel()


def _service_name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


# A plain user's access token


@pytest.mark.parametrize(
    ("method", "request_of", "scope"),
    [
        ("ListLogEntries", _list, "logs:read"),
        ("WriteLogEntries", _write, "logs:write"),
        ("GetLogStats", lambda _: logs_pb.GetLogStatsRequest(), "logs:read"),
        (
            "GetRetentionPolicy",
            lambda _: logs_pb.GetRetentionPolicyRequest(name="retentionPolicy"),
            "logs:read",
        ),
    ],
)
def test_plain_token_denied_logs(channel, method, request_of, scope):
    ann = _sign_up(channel, "ann")
    error = fails(lambda: ann.logs(method, request_of(_service_name())))
    assert error.code() == DENIED
    assert ann.user in error.details()
    assert repr(scope) in error.details()
    assert "only for an administrator" in error.details()
    assert "splitlog admin-key USER_ID" in error.details()
    assert "splitlog auth keys create" in error.details()


def test_plain_token_denied_tail(channel):
    ann = _sign_up(channel, "ann")
    error = fails(lambda: _tail_first(ann, _service_name()))
    assert error.code() == DENIED
    assert "'logs:read'" in error.details()


def test_plain_token_denied_retention_update(live, channel):
    ann = _sign_up(channel, "ann")
    error = fails(lambda: ann.logs("UpdateRetentionPolicy", _retention_update(2)))
    assert error.code() == DENIED
    assert "needs an administrator" in error.details()
    assert "splitlog admin-key USER_ID" in error.details()
    assert error_details(error)["ErrorInfo"].reason == "ADMIN_REQUIRED"
    reader = _administrator(live, channel)
    policy = reader.logs(
        "GetRetentionPolicy",
        logs_pb.GetRetentionPolicyRequest(name="retentionPolicy"),
    ).retention_policy
    assert "log-access-test" not in policy.service_retentions


def test_plain_token_denied_rest_retention(channel, http):
    ann = _sign_up(channel, "ann")
    reply = http.patch(
        "/v1/retentionPolicy",
        params={"updateMask": "defaultRetention"},
        json={"defaultRetention": "3600s"},
        headers={"authorization": f"Bearer {ann.credential}"},
    )
    assert reply.status_code == 403
    assert "needs an administrator" in reply.json()["error"]["message"]


def test_plain_token_denied_otlp_export(channel):
    ann = _sign_up(channel, "ann")
    error = fails(lambda: ann.export(_service_name()))
    assert error.code() == DENIED
    assert "'logs:write'" in error.details()


@pytest.mark.parametrize(
    "scopes", [["logs:read"], ["logs:write"], ["logs:read", "logs:write"]]
)
def test_plain_user_cannot_create_log_key(channel, scopes):
    eve = _sign_up(channel, "eve")
    error = fails(lambda: eve.create_key(scopes))
    assert error.code() == DENIED
    assert "only an administrator may create an API key" in error.details()
    for scope in scopes:
        assert repr(scope) in error.details()
    assert "splitlog admin-key USER_ID" in error.details()
    listed = auth_grpc.AuthServiceStub(channel).ListApiKeys(
        auth_pb.ListApiKeysRequest(parent=eve.user),
        metadata=eve.metadata,
        timeout=TIMEOUT,
    )
    assert list(listed.api_keys) == []


def test_plain_token_keeps_own_account(channel):
    ann = _sign_up(channel, "ann")
    reply = users_grpc.UsersServiceStub(channel).GetUser(
        users_pb.GetUserRequest(name=ann.user), metadata=ann.metadata, timeout=TIMEOUT
    )
    assert reply.user.name == ann.user


# Administrators


def test_admin_token_reads_and_writes(live, channel):
    root = _administrator(live, channel)
    service = _service_name()
    root.logs("WriteLogEntries", _write(service))
    listed = root.logs("ListLogEntries", _list(service))
    assert [entry.message for entry in listed.entries] == ["hello"]
    stats = root.logs("GetLogStats", logs_pb.GetLogStatsRequest())
    assert stats is not None
    root.export(service)


def test_admin_token_updates_retention(live, channel):
    root = _administrator(live, channel)
    updated = root.logs("UpdateRetentionPolicy", _retention_update(5))
    retention = updated.retention_policy.service_retentions["log-access-test"]
    assert retention.seconds == 5 * HOUR


def test_admin_key_updates_retention(live, channel):
    root = _administrator(live, channel)
    admin_key = root.create_key(["admin"])
    updated = admin_key.logs("UpdateRetentionPolicy", _retention_update(6))
    retention = updated.retention_policy.service_retentions["log-access-test"]
    assert retention.seconds == 6 * HOUR


def test_revoked_admin_key_ends_admin_token(live, channel):
    caller = _sign_up(channel, "root")
    name, _ = operator_admin_key(live.gateway.config.data_dir, caller.user)
    caller.logs("ListLogEntries", _list(_service_name()))
    auth_grpc.AuthServiceStub(channel).RevokeApiKey(
        auth_pb.RevokeApiKeyRequest(name=name), metadata=caller.metadata
    )
    error = fails(lambda: caller.logs("ListLogEntries", _list(_service_name())))
    assert error.code() == DENIED
    assert "'logs:read'" in error.details()


# Keys with log scopes


def test_write_key_writes_only(live, channel):
    writer = _administrator(live, channel).create_key(["logs:write"])
    service = _service_name()
    written = writer.logs("WriteLogEntries", _write(service))
    assert written is not None
    writer.export(service)
    read = fails(lambda: writer.logs("ListLogEntries", _list(service)))
    assert read.code() == DENIED
    assert "the API key" in read.details()
    assert "'logs:read'" in read.details()
    retention = fails(
        lambda: writer.logs("UpdateRetentionPolicy", _retention_update(2))
    )
    assert retention.code() == DENIED
    assert error_details(retention)["ErrorInfo"].reason == "ADMIN_REQUIRED"
    assert "needs an administrator" in retention.details()


def test_same_export_from_two_keys_stored_twice(live, channel):
    # The router takes a resent export for a retry only from the same
    # caller, so two keys that send the same bytes each store their records.
    root = _administrator(live, channel)
    first_key = root.create_key(["logs:write"])
    second_key = root.create_key(["logs:write"])
    service = _service_name()
    request = _otlp_request(service)
    request.resource_logs[0].scope_logs[0].log_records[
        0
    ].observed_time_unix_nano = time.time_ns()
    body = request.SerializeToString()

    for caller in (first_key, first_key, second_key, second_key):
        channel.unary_unary(EXPORT_METHOD)(
            body, metadata=caller.metadata, timeout=TIMEOUT
        )
    listed = root.logs("ListLogEntries", _list(service))

    assert [entry.message for entry in listed.entries] == ["exported", "exported"]


def test_read_key_reads_only(live, channel):
    root = _administrator(live, channel)
    reader = root.create_key(["logs:read"])
    service = _service_name()
    root.logs("WriteLogEntries", _write(service))
    listed = reader.logs("ListLogEntries", _list(service))
    assert [entry.message for entry in listed.entries] == ["hello"]
    policy = reader.logs(
        "GetRetentionPolicy",
        logs_pb.GetRetentionPolicyRequest(name="retentionPolicy"),
    )
    assert policy.retention_policy.name == "retentionPolicy"
    write = fails(lambda: reader.logs("WriteLogEntries", _write(service)))
    assert write.code() == DENIED
    assert "'logs:write'" in write.details()
    export = fails(lambda: reader.export(service))
    assert export.code() == DENIED
    assert "'logs:write'" in export.details()


# OTLP over HTTP


def _otlp_http(
    http: httpx.Client, credential: str | None, service: str
) -> httpx.Response:
    headers = {"content-type": "application/x-protobuf"}
    if credential is not None:
        headers["authorization"] = f"Bearer {credential}"
    body = _otlp_request(service).SerializeToString()
    return http.post("/v1/logs", content=body, headers=headers)


def test_otlp_http_needs_credential(http):
    binary = _otlp_http(http, None, _service_name())
    as_json = http.post(
        "/v1/logs", json={}, headers={"content-type": "application/json"}
    )

    assert binary.status_code == 401
    assert as_json.status_code == 401
    status = status_pb2.Status.FromString(binary.content)
    assert status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert "authorization: Bearer <token>" in status.message
    assert as_json.json()["message"] == status.message


def test_otlp_http_needs_write_scope(live, channel, http):
    root = _administrator(live, channel)
    reader = root.create_key(["logs:read"])
    writer = root.create_key(["logs:write"])
    service = _service_name()

    denied = _otlp_http(http, reader.credential, service)
    stored = _otlp_http(http, writer.credential, service)

    assert denied.status_code == 403
    status = status_pb2.Status.FromString(denied.content)
    assert status.code == DENIED.value[0]
    assert "'logs:write'" in status.message
    assert stored.status_code == 200
    listed = reader.logs("ListLogEntries", _list(service))
    assert [entry.message for entry in listed.entries] == ["exported"]
