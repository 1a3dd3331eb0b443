"""Tests of the password hash limit with a real user_service and gateway.

During a flood of sign-ins with made-up emails, user_service must compute at
most auth_password_hash_concurrency hashes at once. The flood must get quick
RESOURCE_EXHAUSTED errors with a retry delay instead of deadline errors, and
calls with an access token must stay fast.
"""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.app import build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from tests.auth.support import AllowGuard, sign_up_user
from tests.gateway.support import LoopThread
from tests.ports import closed_address
from user_service import app as user_app
from user_service.password_hashing import PASSWORD_HASHING_BUSY, PasswordHashing

SECRET = "hashing-secret-" + "h" * 40
PASSWORD = "correct horse battery staple"
MAX_WAIT = 0.2


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    loop_thread = LoopThread()
    config = config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path_factory.mktemp("hashing") / "data",
            "auth_required": True,
            "auth_secret": SECRET,
            # The gateway sends every token to user_service to check.
            "auth_cache_seconds": 0.0,
            "auth_signin_max_failures": 0,
            "auth_password_hash_concurrency": 1,
            "auth_password_hash_max_wait_seconds": MAX_WAIT,
            "grace_seconds": 0.5,
            "workers": 8,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
        },
    )

    hashing = PasswordHashing.from_config(config)
    users = user_app.build(config, "127.0.0.1:0", guard=AllowGuard(), hashing=hashing)
    config = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    yield channel, hashing

    channel.close()
    loop_thread.run(gateway.stop(0))
    users.stop(0)
    loop_thread.close()
    auth.install_process_signer(None)


def _details(error: grpc.RpcError):
    status = rpc_status.from_call(error)
    info = retry = None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
    return info, retry


def _sign_in(channel, email: str, password: str, timeout: float):
    return auth_grpc.AuthServiceStub(channel).SignIn(
        auth_pb.SignInRequest(email=email, password=password), timeout=timeout
    )


def test_sign_in_flood_bounded(system):
    channel, hashing = system
    created = sign_up_user(channel, "owner", PASSWORD, timeout=10)
    token = created.tokens.access_token
    metadata = [("authorization", f"Bearer {token}")]
    users = users_grpc.UsersServiceStub(channel)
    stop = time.monotonic() + 3.0
    outcomes: dict[grpc.StatusCode, int] = {}
    busy: list[grpc.RpcError] = []
    lock = threading.Lock()

    def flood() -> None:
        while time.monotonic() < stop:
            email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
            try:
                _sign_in(channel, email, "wrong password 123", timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    with lock:
                        busy.append(error)
            with lock:
                outcomes[code] = outcomes.get(code, 0) + 1

    threads = [threading.Thread(target=flood) for _ in range(16)]
    for thread in threads:
        thread.start()
    slowest = 0.0
    calls = 0
    while time.monotonic() < stop:
        started = time.monotonic()
        users.GetUser(
            users_pb.GetUserRequest(name=created.user.name),
            metadata=metadata,
            timeout=5,
        )
        slowest = max(slowest, time.monotonic() - started)
        calls += 1
        time.sleep(0.05)
    for thread in threads:
        thread.join()

    assert calls >= 10
    # Without the limit, these calls waited behind the hashes until their
    # deadline. The margin allows for a loaded test machine.
    assert slowest < 2.5, f"a call with a token took {slowest:.2f} s"
    assert set(outcomes) <= {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }, outcomes
    assert outcomes.get(grpc.StatusCode.UNAUTHENTICATED, 0) > 0, outcomes
    assert busy, outcomes
    info, retry = _details(busy[0])
    assert info.reason == PASSWORD_HASHING_BUSY
    assert info.metadata["limit"] == "auth_password_hash_concurrency"
    assert retry is not None
    assert retry.retry_delay.ToNanoseconds() > 0
    assert "auth_password_hash_concurrency" in busy[0].details()
    # At most the one configured hash ran at a time.
    assert hashing.peak == 1
    # Once the flood ends, the owner signs in.
    _sign_in(channel, created.user.email, PASSWORD, timeout=5)


def test_full_slots_short_deadline(system):
    channel, hashing = system
    with hashing.slot(None):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as short:
            _sign_in(channel, "short@example.com", "some password 123", timeout=0.4)
        short_took = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as waited:
            _sign_in(channel, "long@example.com", "some password 123", timeout=5)
        waited_took = time.monotonic() - started

    # Too little of the deadline is left for a wait and a hash, so the call
    # is rejected without a wait.
    assert short.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert short_took < 0.35
    # Otherwise the call waits up to the configured time, then gives up.
    assert waited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert MAX_WAIT <= waited_took < 2.0
    assert _details(waited.value)[0].reason == PASSWORD_HASHING_BUSY


def test_default_concurrency(tmp_path):
    config = config_module.load(
        environ={}, overrides={"workers": 4, "data_dir": tmp_path}
    )
    assert PasswordHashing.from_config(config).concurrency == 1
    config = config.replace(auth_password_hash_concurrency=3)
    assert PasswordHashing.from_config(config).concurrency == 3
