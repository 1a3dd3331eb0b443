"""The default settings require a credential at the gateway.

A real user_service and a real gateway run on `config.load` defaults: no
auth_required and no auth_secret given, so the secret is created in the data
directory. Health and reflection stay open, as do the calls that get a first
credential.
"""

from __future__ import annotations

import stat
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from gateway.app import build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from tests.gateway.support import LoopThread
from tests.ports import closed_address
from user_service import app as user_app
from user_service.guards import AllowAllBalanceGuard

USERS_SERVICE = "splitlog.users.v1.UsersService"
CALL_TIMEOUT = 10


@pytest.fixture(scope="module")
def default_config(tmp_path_factory):
    """Return the default settings with only the data directory and peers changed."""
    return config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path_factory.mktemp("defaults") / "data",
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
            "log_self_ship": False,
        },
    )


@pytest.fixture(scope="module")
def gateway(default_config):
    loop_thread = LoopThread()
    users = user_app.build(default_config, "127.0.0.1:0", guard=AllowAllBalanceGuard())
    config = default_config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    running = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))
    users.stop(0)
    loop_thread.close()
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as opened:
        yield opened


def _health(channel, service: str) -> int:
    """Return the health of a service, waiting up to CALL_TIMEOUT for SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + CALL_TIMEOUT
    while True:
        status = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT
        ).status
        if status == health_pb2.HealthCheckResponse.SERVING:
            return status
        if time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_auth_required_by_default():
    config = config_module.load(environ={})

    assert config.auth_required is True
    assert config.auth_secret == ""
    assert config.auth_open_health is True
    assert config.auth_open_reflection is True


def test_default_gateway_rejects_anonymous_call(channel):
    with pytest.raises(grpc.RpcError) as caught:
        users_grpc.UsersServiceStub(channel).GetUser(
            users_pb.GetUserRequest(name="users/ana"), timeout=CALL_TIMEOUT
        )

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in caught.value.details()
    assert "SignIn" in caught.value.details()


def test_default_rest_front_rejects_anonymous_call(gateway):
    url = f"http://127.0.0.1:{gateway.http_port}/v1/users/ana"

    response = httpx.get(url, timeout=CALL_TIMEOUT)

    assert response.status_code == 401
    assert "authorization: Bearer" in response.json()["error"]["message"]


def test_default_health_is_open(channel):
    assert _health(channel, USERS_SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_default_reflection_is_open(channel):
    services = ProtoReflectionDescriptorDatabase(channel).get_services()

    assert USERS_SERVICE in services
    assert "splitlog.auth.v1.AuthService" in services


def test_default_sign_up_needs_no_credential(channel):
    signed_up = auth_grpc.AuthServiceStub(channel).SignUp(
        auth_pb.SignUpRequest(
            user=users_pb.User(email="ana@example.com", display_name="Ana"),
            user_id="ana-lima",
            password="correct horse battery staple",
        ),
        timeout=CALL_TIMEOUT,
    )
    bearer = (("authorization", f"Bearer {signed_up.tokens.access_token}"),)

    reply = users_grpc.UsersServiceStub(channel).GetUser(
        users_pb.GetUserRequest(name="users/ana-lima"),
        metadata=bearer,
        timeout=CALL_TIMEOUT,
    )

    assert reply.user.email == "ana@example.com"


def test_default_secret_file_is_private(gateway, default_config):
    path = default_config.data_dir / auth.SECRET_FILE_NAME

    assert len(path.read_text().strip()) >= auth.MIN_SECRET_LENGTH
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
