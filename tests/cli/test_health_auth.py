"""Health checks at a gateway with `auth_open_health` off.

A real user_service runs behind a real gateway. `splitlog health` sends
the credential of `--token`, `SPLITLOG_TOKEN` or the saved session. A
principal signed with the auth secret, which `splitlog up --processes`
sends while it waits for the gateway, opens the health service and nothing
else.
"""

from __future__ import annotations

import io
import os

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.health import wait_until_serving
from splitlog_cli.main import main
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from tests.auth.support import sign_up_user, users_behind_gateway
from tests.gateway.support import error_details
from tests.ports import closed_address

SECRET = "closed-health-secret-" + "h" * 40
TIMEOUT = 5.0
PASSWORD = "correct horse battery staple"
USERS_SERVICE = "splitlog.users.v1.UsersService"


# A log record of the gateway, which runs in the test's process and can log
# to the same stderr while the command runs.
@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    config = config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path_factory.mktemp("closed-health") / "data",
            "auth_required": True,
            "auth_secret": SECRET,
            "auth_open_health": False,
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
        },
    )
    with users_behind_gateway(config) as (_, running):
        yield running


@pytest.fixture(scope="module")
def address(gateway) -> str:
    """The gateway's gRPC address, once it reports UsersService SERVING."""
    address = f"127.0.0.1:{gateway.grpc_port}"
    wait_until_serving(
        address, TIMEOUT, USERS_SERVICE, metadata=lambda: _signed(SECRET)
    )
    return address


@pytest.fixture(scope="module")
def prober(address) -> auth_pb.SignUpResponse:
    with grpc.insecure_channel(address) as channel:
        return sign_up_user(channel, "prober", PASSWORD, TIMEOUT)


@pytest.fixture(scope="module")
def access_token(prober) -> str:
    return prober.tokens.access_token


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """Remove SPLITLOG_* variables and point the saved sessions at `tmp_path`."""
    for key in list(os.environ):
        if key.startswith("SPLITLOG_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return monkeypatch


def _check(address: str, metadata=()) -> health_pb2.HealthCheckResponse:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=USERS_SERVICE),
            metadata=metadata,
            timeout=TIMEOUT,
        )


def _signed(secret: str) -> tuple[tuple[str, str], ...]:
    signer = auth.PrincipalSigner(secret.encode())
    return signer.metadata(auth.Principal(auth.SERVICE_PRINCIPAL))


def test_signature_opens_health_only(address):
    reply = _check(address, _signed(SECRET))
    with (
        grpc.insecure_channel(address) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        users_grpc.UsersServiceStub(channel).ListUsers(
            users_pb.ListUsersRequest(), metadata=_signed(SECRET), timeout=TIMEOUT
        )

    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_secret_signature_rejected(address):
    with pytest.raises(grpc.RpcError) as caught:
        _check(address, _signed("another-secret-" + "x" * 40))

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_details(caught.value)["ErrorInfo"]
    assert info.reason == "GATEWAY_SIGNATURE_INVALID"


def test_health_with_token_option(clean_env, capsys, address, access_token):
    status = main(["health", address, USERS_SERVICE, "--token", access_token])

    assert status == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_health_with_token_variable(clean_env, capsys, address, access_token):
    clean_env.setenv("SPLITLOG_TOKEN", access_token)

    status = main(["health", address, USERS_SERVICE])

    assert status == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_health_with_saved_session(clean_env, capsys, monkeypatch, address, prober):
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    signed_in = main(
        ["auth", "signin", "--gateway", address, "--password-stdin"]
        + ["--email", prober.user.email]
    )
    capsys.readouterr()

    status = main(["health", address, USERS_SERVICE])

    assert signed_in == 0
    assert status == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_health_without_token_names_option(clean_env, capsys, address):
    status = main(["health", address, USERS_SERVICE])

    error = capsys.readouterr().err.splitlines()
    assert status == 1
    assert error[0] == "UNAUTHENTICATED"
    assert "auth_open_health" in error[1]
    assert "--token" in error[1]
    assert "SPLITLOG_TOKEN" in error[1]


def test_health_rejected_token_named(clean_env, capsys, address):
    status = main(["health", address, USERS_SERVICE, "--token", "not-a-real-token"])

    error = capsys.readouterr().err.splitlines()
    assert status == 1
    assert error[0] == "UNAUTHENTICATED"
    assert "rejected the credential" in error[1]
    assert "--token" in error[1]


def test_health_empty_token_is_usage_error(clean_env, capsys, address):
    status = main(["health", address, "--token", ""])

    assert status == 2
    assert "--token is empty" in capsys.readouterr().err


@pytest.fixture(scope="module")
def open_address(tmp_path_factory) -> str:
    """A gateway with auth on and its health service open, as by default."""
    config = config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path_factory.mktemp("open-health") / "data",
            "auth_required": True,
            "auth_secret": SECRET,
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
        },
    )
    with users_behind_gateway(config) as (_, running):
        address = f"127.0.0.1:{running.grpc_port}"
        wait_until_serving(address, TIMEOUT, USERS_SERVICE)
        yield address


def test_open_health_sends_no_credential(clean_env, capsys, open_address):
    # An open health service needs no credential, so none is read or sent:
    # an empty or bad token does not fail the check.
    clean_env.setenv("SPLITLOG_TOKEN", "")

    empty = main(["health", open_address, USERS_SERVICE])
    bad = main(["health", open_address, USERS_SERVICE, "--token", "not-a-token"])

    assert empty == 0
    assert bad == 0
    assert capsys.readouterr().out.split() == ["SERVING", "SERVING"]


def test_health_names_backends_down(clean_env, capsys, open_address):
    # The gateway reaches user_service, while the expense, balance and log
    # service addresses are closed.
    status = main(["health", open_address])

    error = capsys.readouterr().err.splitlines()
    assert status == 1
    assert error[0] == "NOT_SERVING"
    assert "reports these backends NOT_SERVING:" in error[1]
    assert "expense_service (splitlog.expenses.v1.ExpensesService)" in error[1]
    assert "balance_service (splitlog.balances.v1.BalancesService)" in error[1]
    assert "log_service (" in error[1]
    assert "splitlog.logs.v1.LogsService" in error[1]
    assert error[1].count("log_service") == 1
    assert "user_service" not in error[1]


def test_health_with_token_names_backends_down(
    clean_env, capsys, address, access_token
):
    status = main(["health", address, "--token", access_token])

    error = capsys.readouterr().err.splitlines()
    assert status == 1
    assert error[0] == "NOT_SERVING"
    assert "expense_service (splitlog.expenses.v1.ExpensesService)" in error[1]
    assert "user_service" not in error[1]
