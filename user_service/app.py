"""Wiring of the user service: its database, servicer, guard and server."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import grpc

from splitlog.auth.v1 import auth_service_pb2_grpc, credential_service_pb2_grpc
from splitlog.users.v1 import users_service_pb2_grpc
from splitlog_runtime import auth
from splitlog_runtime.config import Config
from splitlog_runtime.database import Database
from splitlog_runtime.server import ServiceHost
from splitlog_runtime.service import start_service
from user_service.auth_servicer import (
    AUTH_SERVICE_NAME,
    CREDENTIAL_SERVICE_NAME,
    AuthServicer,
    CredentialServicer,
)
from user_service.guards import BalanceGuard, BalanceServiceGuard
from user_service.password_hashing import PasswordHashing
from user_service.servicer import SERVICE_NAME, UsersServicer
from user_service.signin_throttle import SignInThrottle

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def build(
    config: Config,
    address: str | None = None,
    guard: BalanceGuard | None = None,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
    hashing: PasswordHashing | None = None,
) -> ServiceHost:
    """Start the user service and return its host once it reports SERVING.

    Args:
      config: resolved settings; `config.database_url("user_service")` picks
        the database.
      address: host:port to bind; defaults to the configured host and port.
      guard: decides whether balances allow removing a member or deleting a
        group; defaults to `BalanceServiceGuard`, which calls balance_service
        at `config.service_address("balance_service")`.
      interceptors: server interceptors that run before the service's own,
        such as a test's count of calls.
      hashing: the bound on password hashes at once; defaults to one made
        from auth_password_hash_concurrency and
        auth_password_hash_max_wait_seconds. A test passes its own to read
        its `peak`.
    """
    throttle = SignInThrottle(
        config.auth_signin_max_failures,
        config.auth_signin_window_seconds,
        config.auth_signin_lockout_seconds,
    )
    database = Database(config.database_url("user_service"))
    own_guard = None
    if guard is None:
        own_guard = BalanceServiceGuard(
            config.service_address("balance_service"),
            config.deadline_seconds,
            config.max_message_bytes,
        )
    servicer = UsersServicer(database, guard or own_guard)
    tokens = auth.TokenIssuer(
        lambda: auth.load_secret(config.auth_secret, config.data_dir),
        config.auth_access_token_seconds,
    )
    auth_servicer = AuthServicer(
        database,
        servicer,
        tokens,
        config.auth_refresh_token_seconds,
        throttle,
        config.auth_refresh_reuse_grace_seconds,
        hashing or PasswordHashing.from_config(config),
    )
    credential_servicer = CredentialServicer(database, tokens)
    try:
        host = start_service(
            "user_service",
            config,
            [
                lambda server: (
                    users_service_pb2_grpc.add_UsersServiceServicer_to_server(
                        servicer, server
                    )
                ),
                lambda server: auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
                    auth_servicer, server
                ),
                lambda server: (
                    credential_service_pb2_grpc.add_CredentialServiceServicer_to_server(
                        credential_servicer, server
                    )
                ),
            ],
            [SERVICE_NAME, AUTH_SERVICE_NAME, CREDENTIAL_SERVICE_NAME],
            address=address,
            database=database,
            migrations_dir=MIGRATIONS_DIR,
            interceptors=interceptors,
        )
    except Exception:
        # start_service disposes the database only once the server is up.
        database.dispose()
        if own_guard is not None:
            own_guard.close()
        raise
    if own_guard is not None:
        host.on_stop(own_guard.close)
    return host
