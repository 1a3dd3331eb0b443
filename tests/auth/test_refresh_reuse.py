"""Refresh token reuse detection through a real gateway and user_service.

RefreshToken replaces the refresh token. Presenting a replaced one again
revokes its session, except within `auth_refresh_reuse_grace_seconds` of
the rotation, where it is only rejected.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
import pytest

from gateway.app import build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog_runtime import auth
from tests.auth.test_auth import (
    PASSWORD,
    _AllowGuard,
    _bearer,
    _config,
    _get_user,
    _sign_up,
)
from tests.rich_errors import fails, reason_of
from user_service import app as user_app


def _gateway_channel(loop_thread, tmp_path_factory, grace_seconds: float, **overrides):
    config = _config(
        tmp_path_factory.mktemp("reuse"),
        True,
        auth_refresh_reuse_grace_seconds=grace_seconds,
        **overrides,
    )
    users = user_app.build(config, "127.0.0.1:0", guard=_AllowGuard())
    config = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")

    def stop() -> None:
        channel.close()
        loop_thread.run(gateway.stop(0))
        users.stop(0)
        auth.install_process_signer(None)

    return channel, stop


@pytest.fixture(scope="module")
def strict(loop_thread, tmp_path_factory):
    """A gateway channel to a user_service without reuse grace."""
    channel, stop = _gateway_channel(loop_thread, tmp_path_factory, 0.0)
    yield channel
    stop()


@pytest.fixture(scope="module")
def lenient(loop_thread, tmp_path_factory):
    """A gateway channel to a user_service with a 60-second reuse grace."""
    channel, stop = _gateway_channel(loop_thread, tmp_path_factory, 60.0)
    yield channel
    stop()


@pytest.fixture(scope="module")
def short_lived(loop_thread, tmp_path_factory):
    """A gateway channel to a user_service whose refresh tokens last 1 second."""
    channel, stop = _gateway_channel(
        loop_thread, tmp_path_factory, 0.0, auth_refresh_token_seconds=1
    )
    yield channel
    stop()


def _refresh(channel, token: str) -> auth_pb.RefreshTokenResponse:
    return auth_grpc.AuthServiceStub(channel).RefreshToken(
        auth_pb.RefreshTokenRequest(refresh_token=token)
    )


def test_reused_token_revokes_session(strict):
    signed_up = _sign_up(strict)
    first = signed_up.tokens.refresh_token
    second = _refresh(strict, first)

    reused = fails(lambda: _refresh(strict, first))
    assert reused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(reused) == "REFRESH_TOKEN_REUSED"
    assert "signed out" in reused.details()

    current = fails(lambda: _refresh(strict, second.tokens.refresh_token))
    assert current.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(current) == "SESSION_REVOKED"
    for access_token in (signed_up.tokens.access_token, second.tokens.access_token):
        denied = fails(
            lambda token=access_token: _get_user(
                strict, signed_up.user.name, _bearer(token)
            )
        )
        assert denied.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "signed out" in denied.details()


def test_reuse_spares_other_sessions(strict):
    signed_up = _sign_up(strict)
    other = auth_grpc.AuthServiceStub(strict).SignIn(
        auth_pb.SignInRequest(email=signed_up.user.email, password=PASSWORD)
    )
    _refresh(strict, signed_up.tokens.refresh_token)
    fails(lambda: _refresh(strict, signed_up.tokens.refresh_token))

    reply = _get_user(strict, signed_up.user.name, _bearer(other.tokens.access_token))
    assert reply.user.name == signed_up.user.name
    refreshed = _refresh(strict, other.tokens.refresh_token)
    assert refreshed.user == signed_up.user.name


def test_older_generation_reuse_revokes(strict):
    signed_up = _sign_up(strict)
    first = signed_up.tokens.refresh_token
    second = _refresh(strict, first).tokens.refresh_token
    third = _refresh(strict, second).tokens.refresh_token

    reused = fails(lambda: _refresh(strict, first))
    assert reason_of(reused) == "REFRESH_TOKEN_REUSED"
    current = fails(lambda: _refresh(strict, third))
    assert reason_of(current) == "SESSION_REVOKED"


def test_sign_out_with_reused_token_revokes(strict):
    signed_up = _sign_up(strict)
    first = signed_up.tokens.refresh_token
    second = _refresh(strict, first).tokens.refresh_token

    error = fails(
        lambda: auth_grpc.AuthServiceStub(strict).SignOut(
            auth_pb.SignOutRequest(refresh_token=first),
            metadata=_bearer(signed_up.tokens.access_token),
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error) == "REFRESH_TOKEN_REUSED"
    current = fails(lambda: _refresh(strict, second))
    assert reason_of(current) == "SESSION_REVOKED"


def test_unknown_token_is_invalid(strict):
    error = fails(lambda: _refresh(strict, "slr_" + auth.new_secret()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error) == "REFRESH_TOKEN_INVALID"


def test_reuse_logged_without_token(strict, caplog):
    caplog.set_level(logging.INFO)
    signed_up = _sign_up(strict)
    first = signed_up.tokens.refresh_token
    second = _refresh(strict, first).tokens.refresh_token
    fails(lambda: _refresh(strict, first))

    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING
        and "presented again" in record.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert signed_up.user.name in warnings[0]
    assert "revoked" in warnings[0]
    assert first not in caplog.text
    assert second not in caplog.text


def test_reuse_within_grace_keeps_session(lenient):
    signed_up = _sign_up(lenient)
    first = signed_up.tokens.refresh_token
    second = _refresh(lenient, first)

    retried = fails(lambda: _refresh(lenient, first))
    assert retried.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(retried) == "REFRESH_TOKEN_ROTATED"
    assert "already exchanged" in retried.details()

    reply = _get_user(lenient, signed_up.user.name, _bearer(second.tokens.access_token))
    assert reply.user.name == signed_up.user.name
    third = _refresh(lenient, second.tokens.refresh_token)
    assert third.user == signed_up.user.name


def _check_concurrent_refreshes(channel) -> None:
    signed_up = _sign_up(channel)
    token = signed_up.tokens.refresh_token
    start = threading.Barrier(6)

    def refresh_once():
        start.wait()
        try:
            return _refresh(channel, token)
        except grpc.RpcError as error:
            return error

    with futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: refresh_once(), range(6)))

    winners = [r for r in results if isinstance(r, auth_pb.RefreshTokenResponse)]
    losers = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(winners) == 1
    assert len(losers) == 5
    assert {reason_of(error) for error in losers} == {"REFRESH_TOKEN_ROTATED"}
    refreshed = _refresh(channel, winners[0].tokens.refresh_token)
    assert refreshed.user == signed_up.user.name


def test_concurrent_refreshes_one_wins(lenient):
    _check_concurrent_refreshes(lenient)


@pytest.mark.postgres
def test_concurrent_refreshes_postgres(loop_thread, tmp_path_factory, postgres_url):
    channel, stop = _gateway_channel(
        loop_thread, tmp_path_factory, 60.0, user_service_db_url=postgres_url
    )
    try:
        _check_concurrent_refreshes(channel)
    finally:
        stop()


def test_expired_rotated_token_revokes_nothing(short_lived):
    signed_up = _sign_up(short_lived)
    first = signed_up.tokens.refresh_token
    _refresh(short_lived, first)
    time.sleep(1.2)

    error = fails(lambda: _refresh(short_lived, first))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error) == "REFRESH_TOKEN_INVALID"
    # The session stays open, so its access token still works.
    reply = _get_user(
        short_lived, signed_up.user.name, _bearer(signed_up.tokens.access_token)
    )
    assert reply.user.name == signed_up.user.name
