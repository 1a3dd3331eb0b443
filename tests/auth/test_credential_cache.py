"""The gateway's credential cache, against a real user_service and gateway.

A server interceptor on user_service counts its CheckCredential calls, so the
tests see which calls the gateway checks with user_service and which
it serves from the cache.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import httpx
import pytest

from gateway.app import Gateway, build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from splitlog_runtime.server import ServiceHost
from tests.auth.support import AllowGuard, operator_admin_key
from tests.ports import closed_address
from tests.rich_errors import fails, reason_of
from user_service import app as user_app

SECRET = "test-secret-" + "c" * 40
PASSWORD = "correct horse battery staple"
CHECK_CREDENTIAL = "/splitlog.auth.v1.CredentialService/CheckCredential"


class _CountChecks(grpc.ServerInterceptor):
    """Count the CheckCredential calls that user_service receives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method == CHECK_CREDENTIAL:
            with self._lock:
                self._count += 1
        return continuation(handler_call_details)


@dataclass
class _System:
    users: ServiceHost
    gateway: Gateway
    checks: _CountChecks
    data_dir: object
    channel: grpc.Channel
    http: httpx.Client


def _system(loop_thread, tmp_path_factory, **overrides):
    root = tmp_path_factory.mktemp("cache")
    config = config_module.load(
        environ={},
        overrides={
            "data_dir": root / "data",
            "auth_required": True,
            "auth_secret": SECRET,
            "auth_refresh_reuse_grace_seconds": 0.0,
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
            **overrides,
        },
    )
    checks = _CountChecks()
    users = user_app.build(
        config, "127.0.0.1:0", guard=AllowGuard(), interceptors=[checks]
    )
    config = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    http = httpx.Client(base_url=f"http://127.0.0.1:{gateway.http_port}")
    return _System(users, gateway, checks, root / "data", channel, http)


def _stop(loop_thread, system: _System) -> None:
    system.http.close()
    system.channel.close()
    loop_thread.run(system.gateway.stop(0))
    system.users.stop(0)
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def cached(loop_thread, tmp_path_factory):
    # Long enough that no entry goes stale while a test runs.
    system = _system(loop_thread, tmp_path_factory, auth_cache_seconds=600.0)
    yield system
    _stop(loop_thread, system)


@pytest.fixture(scope="module")
def uncached(loop_thread, tmp_path_factory):
    system = _system(loop_thread, tmp_path_factory, auth_cache_seconds=0.0)
    yield system
    _stop(loop_thread, system)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _sign_up(system: _System) -> auth_pb.SignUpResponse:
    user_id = f"cache-{uuid.uuid4().hex[:8]}"
    return auth_grpc.AuthServiceStub(system.channel).SignUp(
        auth_pb.SignUpRequest(
            user=users_pb.User(email=f"{user_id}@example.com", display_name="Ana"),
            user_id=user_id,
            password=PASSWORD,
        ),
        timeout=10,
    )


def _get_user(system: _System, name: str, credential: str):
    return users_grpc.UsersServiceStub(system.channel).GetUser(
        users_pb.GetUserRequest(name=name), metadata=_bearer(credential), timeout=10
    )


def _get_user_rest(system: _System, name: str, credential: str) -> httpx.Response:
    return system.http.get(
        f"/v1/{name}", headers={"authorization": f"Bearer {credential}"}
    )


def _rejected(system: _System, name: str, credential: str) -> grpc.RpcError:
    """Call GetUser with a credential that the gateway must reject."""
    error = fails(lambda: _get_user(system, name, credential))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    return error


def _signed_up_and_kept(system: _System) -> tuple[auth_pb.SignUpResponse, str]:
    """Sign up a user and make one call, so that its access token is kept."""
    signed_up = _sign_up(system)
    token = signed_up.tokens.access_token
    _get_user(system, signed_up.user.name, token)
    return signed_up, token


def test_kept_token_not_checked_again(cached):
    signed_up = _sign_up(cached)
    token = signed_up.tokens.access_token
    before = cached.checks.count
    _get_user(cached, signed_up.user.name, token)
    _get_user(cached, signed_up.user.name, token)
    assert _get_user_rest(cached, signed_up.user.name, token).status_code == 200
    assert cached.checks.count == before + 1


def test_kept_api_key_not_checked_again(cached):
    signed_up = _sign_up(cached)
    _, secret = operator_admin_key(cached.data_dir, signed_up.user.name)
    before = cached.checks.count
    for _ in range(3):
        _get_user(cached, signed_up.user.name, secret)
    assert cached.checks.count == before + 1


def test_concurrent_calls_share_check(cached):
    signed_up = _sign_up(cached)
    token = signed_up.tokens.access_token
    before = cached.checks.count
    with ThreadPoolExecutor(16) as pool:
        replies = list(
            pool.map(lambda _: _get_user(cached, signed_up.user.name, token), range(32))
        )
    assert {reply.user.name for reply in replies} == {signed_up.user.name}
    assert cached.checks.count == before + 1


def test_rejected_credential_checked_each_time(cached):
    signed_up = _sign_up(cached)
    bogus = "slk_" + "0" * 43
    before = cached.checks.count
    for _ in range(3):
        _rejected(cached, signed_up.user.name, bogus)
    assert cached.checks.count == before + 3


def test_grpc_sign_out_ends_token(cached):
    signed_up, token = _signed_up_and_kept(cached)
    auth_grpc.AuthServiceStub(cached.channel).SignOut(
        auth_pb.SignOutRequest(refresh_token=signed_up.tokens.refresh_token),
        metadata=_bearer(token),
        timeout=10,
    )
    error = _rejected(cached, signed_up.user.name, token)
    assert reason_of(error) == "CREDENTIAL_INVALID"
    assert "signed out" in error.details()


def test_rest_sign_out_ends_token(cached):
    signed_up = _sign_up(cached)
    token = signed_up.tokens.access_token
    assert _get_user_rest(cached, signed_up.user.name, token).status_code == 200
    signed_out = cached.http.post(
        "/v1/auth:signOut",
        json={"refreshToken": signed_up.tokens.refresh_token},
        headers={"authorization": f"Bearer {token}"},
    )
    assert signed_out.status_code == 200, signed_out.text
    response = _get_user_rest(cached, signed_up.user.name, token)
    assert response.status_code == 401
    assert "signed out" in response.json()["error"]["message"]


def test_failed_sign_out_keeps_cache(cached):
    signed_up, token = _signed_up_and_kept(cached)
    before = cached.checks.count
    error = fails(
        lambda: auth_grpc.AuthServiceStub(cached.channel).SignOut(
            auth_pb.SignOutRequest(refresh_token="slr_not-a-token"),
            metadata=_bearer(token),
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    _get_user(cached, signed_up.user.name, token)
    assert cached.checks.count == before


def test_grpc_refresh_token_reuse_ends_token(cached):
    signed_up, token = _signed_up_and_kept(cached)
    stub = auth_grpc.AuthServiceStub(cached.channel)
    request = auth_pb.RefreshTokenRequest(refresh_token=signed_up.tokens.refresh_token)
    stub.RefreshToken(request, timeout=10)
    reused = fails(lambda: stub.RefreshToken(request, timeout=10))
    assert reason_of(reused) == "REFRESH_TOKEN_REUSED"
    _rejected(cached, signed_up.user.name, token)


def test_rest_refresh_token_reuse_ends_token(cached):
    signed_up, token = _signed_up_and_kept(cached)
    body = {"refreshToken": signed_up.tokens.refresh_token}
    assert cached.http.post("/v1/auth:refreshToken", json=body).status_code == 200
    reused = cached.http.post("/v1/auth:refreshToken", json=body)
    assert reused.status_code == 401
    assert "REFRESH_TOKEN_REUSED" in reused.text
    _rejected(cached, signed_up.user.name, token)


@pytest.mark.parametrize("front", ["grpc", "rest"])
def test_revoke_api_key_ends_key(cached, front):
    signed_up = _sign_up(cached)
    name, secret = operator_admin_key(cached.data_dir, signed_up.user.name)
    _get_user(cached, signed_up.user.name, secret)
    if front == "grpc":
        auth_grpc.AuthServiceStub(cached.channel).RevokeApiKey(
            auth_pb.RevokeApiKeyRequest(name=name),
            metadata=_bearer(signed_up.tokens.access_token),
            timeout=10,
        )
    else:
        revoked = cached.http.post(
            f"/v1/{name}:revoke",
            json={},
            headers={"authorization": f"Bearer {signed_up.tokens.access_token}"},
        )
        assert revoked.status_code == 200, revoked.text
    error = _rejected(cached, signed_up.user.name, secret)
    assert "revoked" in error.details()


def test_revoke_admin_key_ends_token_rights(cached):
    signed_up = _sign_up(cached)
    token = signed_up.tokens.access_token
    name, _ = operator_admin_key(cached.data_dir, signed_up.user.name)
    users = users_grpc.UsersServiceStub(cached.channel)

    def create_user():
        user_id = f"made-{uuid.uuid4().hex[:8]}"
        return users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(email=f"{user_id}@example.com", display_name="B"),
                user_id=user_id,
            ),
            metadata=_bearer(token),
            timeout=10,
        )

    create_user()
    auth_grpc.AuthServiceStub(cached.channel).RevokeApiKey(
        auth_pb.RevokeApiKeyRequest(name=name), metadata=_bearer(token), timeout=10
    )
    error = fails(create_user)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_set_password_ends_token(cached):
    signed_up, token = _signed_up_and_kept(cached)
    auth_grpc.AuthServiceStub(cached.channel).SetPassword(
        auth_pb.SetPasswordRequest(
            name=signed_up.user.name,
            old_password=PASSWORD,
            new_password=PASSWORD + " again",
        ),
        metadata=_bearer(token),
        timeout=10,
    )
    error = _rejected(cached, signed_up.user.name, token)
    assert "signed out" in error.details()


def test_deactivate_user_ends_token(cached):
    signed_up, token = _signed_up_and_kept(cached)
    users_grpc.UsersServiceStub(cached.channel).DeactivateUser(
        users_pb.DeactivateUserRequest(name=signed_up.user.name),
        metadata=_bearer(token),
        timeout=10,
    )
    error = _rejected(cached, signed_up.user.name, token)
    assert "deactivated" in error.details()


def test_rest_deactivate_sends_etag(cached):
    signed_up, token = _signed_up_and_kept(cached)

    response = cached.http.post(
        f"/v1/{signed_up.user.name}:deactivate",
        headers={"authorization": f"Bearer {token}"},
    )

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == response.json()["user"]["etag"]
    error = _rejected(cached, signed_up.user.name, token)
    assert "deactivated" in error.details()


def test_revocation_keeps_other_users(cached):
    kept = _sign_up(cached)
    _get_user(cached, kept.user.name, kept.tokens.access_token)
    other = _sign_up(cached)
    _get_user(cached, other.user.name, other.tokens.access_token)
    before = cached.checks.count
    users_grpc.UsersServiceStub(cached.channel).DeactivateUser(
        users_pb.DeactivateUserRequest(name=other.user.name),
        metadata=_bearer(other.tokens.access_token),
        timeout=10,
    )
    _get_user(cached, kept.user.name, kept.tokens.access_token)
    # Only the DeactivateUser call itself was checked, from the cache.
    assert cached.checks.count == before


def test_zero_seconds_checks_every_call(uncached):
    signed_up = _sign_up(uncached)
    token = signed_up.tokens.access_token
    before = uncached.checks.count
    for _ in range(3):
        _get_user(uncached, signed_up.user.name, token)
    assert _get_user_rest(uncached, signed_up.user.name, token).status_code == 200
    assert uncached.checks.count == before + 4


def test_stale_entry_checked_again(loop_thread, tmp_path_factory):
    system = _system(loop_thread, tmp_path_factory, auth_cache_seconds=0.5)
    try:
        signed_up = _sign_up(system)
        token = signed_up.tokens.access_token
        before = system.checks.count
        _get_user(system, signed_up.user.name, token)
        time.sleep(1.0)
        _get_user(system, signed_up.user.name, token)
        assert system.checks.count == before + 2
    finally:
        _stop(loop_thread, system)


def test_entry_ends_with_token_expiry(loop_thread, tmp_path_factory):
    system = _system(
        loop_thread,
        tmp_path_factory,
        auth_cache_seconds=600.0,
        auth_access_token_seconds=2,
    )
    try:
        signed_up = _sign_up(system)
        token = signed_up.tokens.access_token
        _get_user(system, signed_up.user.name, token)
        expire = signed_up.tokens.access_token_expire_time.seconds
        time.sleep(max(0.0, expire - time.time()) + 0.5)
        error = fails(lambda: _get_user(system, signed_up.user.name, token))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in error.details()
    finally:
        _stop(loop_thread, system)
