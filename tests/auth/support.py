"""Helpers shared by the authentication and authorization tests."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc

from gateway.app import Gateway, build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_cli.main import main
from splitlog_runtime import auth
from splitlog_runtime.config import Config
from splitlog_runtime.server import ServiceHost
from tests.gateway.support import LoopThread
from user_service import app as user_app


class AllowGuard:
    """A balance guard that allows every removal, for tests without balances."""

    def check_settled(self, *args, **kwargs) -> None:
        return None

    def close(self) -> None:
        return None


@contextlib.contextmanager
def users_behind_gateway(config: Config) -> Iterator[tuple[ServiceHost, Gateway]]:
    """Run a real user_service and a real gateway in front of it.

    Both listen on free loopback ports. `config` gives every other setting,
    such as the addresses of the other backends.
    """
    loop_thread = LoopThread()
    users = user_app.build(config, "127.0.0.1:0", guard=AllowGuard())
    config = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    try:
        gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
        try:
            yield users, gateway
        finally:
            loop_thread.run(gateway.stop(0))
    finally:
        users.stop(0)
        loop_thread.close()
        auth.install_process_signer(None)


def operator_admin_key(
    data_dir: Path, user: str, name: str = "admin"
) -> tuple[str, str]:
    """Create an admin key as an operator does, with `splitlog admin-key`.

    Returns the key's resource name and its secret.
    """
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(
            ["admin-key", user, "--name", name, "--output", "json"]
            + ["--data-dir", str(data_dir)]
        )
    assert status == 0, output.getvalue()
    created = json.loads(output.getvalue())
    return created["name"], created["secret"]


def sign_up_user(
    channel: grpc.Channel, label: str, password: str, timeout: float
) -> auth_pb.SignUpResponse:
    """Sign up a user with the id `label-` and eight random hex digits."""
    user_id = f"{label}-{uuid.uuid4().hex[:8]}"
    return auth_grpc.AuthServiceStub(channel).SignUp(
        auth_pb.SignUpRequest(
            user=users_pb.User(email=f"{user_id}@example.com", display_name=label),
            user_id=user_id,
            password=password,
        ),
        timeout=timeout,
    )
