"""The log router's limit per caller on open tails, through the gateway.

A real log cluster (two shards of one node) and a real gateway listen on
127.0.0.1, with `log_max_streams_per_caller` 2. With `auth_required` on, a
real user_service checks the credentials, and the router must count each API
key on its own although the gateway is the peer of every call. With it off,
the gateway passes the client's host in place of any value a client sends.
"""

from __future__ import annotations

import grpc

from gateway.proxy import forwardable
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from tests.auth.support import operator_admin_key, sign_up_user
from tests.cli.test_logs_cli import LogsGateway, logs_gateway_with_auth
from tests.log_service.test_router_open_streams import (
    check_caller_full,
    open_streams_of,
    open_tail,
    rejected_tail,
    wait_until,
)

SECRET = "stream-callers-test-secret-" + "s" * 40
PASSWORD = "correct horse battery staple"
PER_CALLER = 2
TIMEOUT = 10.0
SPOOFED = "10.9.9.9"


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def create_log_key(channel: grpc.Channel, admin_user: str, token: str):
    return auth_grpc.AuthServiceStub(channel).CreateApiKey(
        auth_pb.CreateApiKeyRequest(
            parent=admin_user,
            api_key=auth_pb.ApiKey(display_name="tailer", scopes=["logs:read"]),
        ),
        metadata=bearer(token),
        timeout=TIMEOUT,
    )


def test_each_api_key_has_own_limit(loop_thread, tmp_path_factory):
    with logs_gateway_with_auth(
        loop_thread, tmp_path_factory, SECRET, log_max_streams_per_caller=PER_CALLER
    ) as live:
        open_streams = open_streams_of(live.cluster)
        with grpc.insecure_channel(live.address) as channel:
            stub = logs_grpc.LogsServiceStub(channel)
            admin = sign_up_user(channel, "root", PASSWORD, TIMEOUT)
            operator_admin_key(live.gateway.config.data_dir, admin.user.name)
            token = admin.tokens.access_token
            first = create_log_key(channel, admin.user.name, token)
            second = create_log_key(channel, admin.user.name, token)

            open_tails = [open_tail(stub, bearer(first.secret)) for _ in range(2)]
            error = rejected_tail(stub, bearer(first.secret))
            open_tails += [open_tail(stub, bearer(second.secret)) for _ in range(2)]
            open_tails.append(open_tail(stub, bearer(token)))
            counts = {
                name: open_streams.open_count_of(name)
                for name in (first.api_key.name, second.api_key.name, admin.user.name)
            }
            for call in open_tails:
                call.cancel()
            assert wait_until(lambda: open_streams.open_count == 0)

    check_caller_full(error, first.api_key.name)
    assert counts == {
        first.api_key.name: 2,
        second.api_key.name: 2,
        admin.user.name: 1,
    }


def test_gateway_replaces_client_host(loop_thread, tmp_path_factory):
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("stream-callers"),
        },
    )
    live = LogsGateway(
        base,
        tmp_path_factory.mktemp("gateway"),
        loop_thread,
        log_max_streams_per_caller=PER_CALLER,
    )
    spoofed = ((auth.CLIENT_KEY, SPOOFED),)
    try:
        open_streams = open_streams_of(live.cluster)
        with grpc.insecure_channel(live.address) as channel:
            stub = logs_grpc.LogsServiceStub(channel)
            open_tails = [open_tail(stub, spoofed) for _ in range(2)]
            error = rejected_tail(stub, spoofed)
            spoofed_count = open_streams.open_count_of(f"peer/{SPOOFED}")
            for call in open_tails:
                call.cancel()
            assert wait_until(lambda: open_streams.open_count == 0)
    finally:
        live.close()

    check_caller_full(error, "peer/127.0.0.1")
    assert spoofed_count == 0


def test_forwardable_adds_client_without_auth():
    metadata = [(auth.CLIENT_KEY, SPOOFED), ("x-request-id", "r1")]

    forwarded = forwardable(metadata, "192.0.2.7")

    assert forwarded == (("x-request-id", "r1"), (auth.CLIENT_KEY, "192.0.2.7"))
    assert forwardable(metadata) == (("x-request-id", "r1"),)


def test_forwardable_signs_client_with_auth():
    signer = auth.PrincipalSigner(SECRET.encode())
    principal = auth.Principal("users/ada", client="192.0.2.7")
    auth.install_process_signer(signer)
    try:
        with auth.acting_as(principal):
            forwarded = forwardable([(auth.CLIENT_KEY, SPOOFED)], "192.0.2.8")
    finally:
        auth.install_process_signer(None)

    assert [value for key, value in forwarded if key == auth.CLIENT_KEY] == [
        "192.0.2.7"
    ]
    assert signer.verify(forwarded) == principal
