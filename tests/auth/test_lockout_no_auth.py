"""Which client a sign-in lockout counts with auth off, on both fronts.

With auth off, no principal carries the client's address, so user_service
reads the address that the gateway passes in metadata. A real user_service
runs behind a real gateway, reached over the network or in process.
Clients at 127.0.0.1 and 127.0.0.2 stand for a guesser and the account's
owner.
"""

from __future__ import annotations

import grpc
import pytest

from gateway import inprocess
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from tests.auth.support import users_behind_gateway
from tests.auth.test_lockout_clients import (
    MAX_FAILURES,
    PASSWORD,
    SIGN_IN,
    TIMEOUT,
    WRONG,
    http_client,
    lockout_config,
    signed_up_email,
)


@pytest.fixture(scope="module", params=["network", "in_process"])
def without_auth(request, tmp_path_factory):
    config = lockout_config(tmp_path_factory, auth_required=False)
    with users_behind_gateway(config) as (users, gateway):
        if request.param == "in_process":
            inprocess.install(gateway.pool, {"user_service": users}, config)
        yield gateway


def test_no_auth_counts_end_clients(without_auth):
    email = signed_up_email(without_auth)
    address = f"127.0.0.1:{without_auth.grpc_port}"
    with grpc.insecure_channel(address) as channel:
        stub = auth_grpc.AuthServiceStub(channel)
        for _ in range(MAX_FAILURES):
            with pytest.raises(grpc.RpcError):
                stub.SignIn(
                    auth_pb.SignInRequest(email=email, password=WRONG),
                    timeout=TIMEOUT,
                )
    body = {"email": email, "password": PASSWORD}
    with http_client(without_auth, "127.0.0.1") as guesser:
        locked = guesser.post(SIGN_IN, json=body)
    with http_client(without_auth, "127.0.0.2") as owner:
        allowed = owner.post(SIGN_IN, json=body)

    assert locked.status_code == 429
    assert allowed.status_code == 200
