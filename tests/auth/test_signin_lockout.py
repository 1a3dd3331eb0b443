"""The sign-in lockout: a real user_service behind a real gateway, auth on.

Clients at two loopback addresses (127.0.0.1 and 127.0.0.2) stand for a
guesser and the account's owner. The lockout's timing is checked on
`SignInThrottle` itself with a clock that the test moves.
"""

from __future__ import annotations

import logging

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.app import build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from tests.gateway.support import LoopThread
from tests.ports import closed_address
from user_service import app as user_app
from user_service.signin_throttle import SignInThrottle, email_tag

SECRET = "lockout-secret-" + "l" * 40
PASSWORD = "correct horse battery staple"
WRONG = "not the password 42"
NEW_PASSWORD = "a brand new password 7"
MAX_FAILURES = 3


class _AllowGuard:
    def check_settled(self, *args, **kwargs) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    loop_thread = LoopThread()
    config = config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path_factory.mktemp("lockout") / "data",
            "auth_required": True,
            "auth_secret": SECRET,
            "auth_signin_max_failures": MAX_FAILURES,
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
        },
    )
    users = user_app.build(config, "127.0.0.1:0", guard=_AllowGuard())
    config = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield users, gateway
    loop_thread.run(gateway.stop(0))
    users.stop(0)
    loop_thread.close()
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def stub(system):
    _, gateway = system
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield auth_grpc.AuthServiceStub(channel)


def _http(gateway, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(
        base_url=f"http://127.0.0.1:{gateway.http_port}", transport=transport
    )


_COUNTER = iter(range(10_000))


def _sign_up(stub) -> str:
    number = next(_COUNTER)
    email = f"locked{number}@example.com"
    stub.SignUp(
        auth_pb.SignUpRequest(
            user=users_pb.User(email=email, display_name="Lou"),
            user_id=f"locked-{number}",
            password=PASSWORD,
        )
    )
    return email


def _sign_in(stub, email: str, password: str, metadata=()) -> grpc.RpcError | None:
    try:
        stub.SignIn(
            auth_pb.SignInRequest(email=email, password=password), metadata=metadata
        )
    except grpc.RpcError as error:
        return error
    return None


def _retry_seconds(error: grpc.RpcError) -> float:
    for detail in rpc_status.from_call(error).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo in the error")


def _reason(error: grpc.RpcError) -> str:
    for detail in rpc_status.from_call(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def test_wrong_passwords_lock_the_email(stub):
    email = _sign_up(stub)
    failures = [_sign_in(stub, email, WRONG) for _ in range(MAX_FAILURES)]
    locked = _sign_in(stub, email, PASSWORD)

    assert [e.code() for e in failures] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert locked is not None
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _reason(locked) == "SIGN_IN_THROTTLED"
    assert "auth_signin_max_failures" in locked.details()
    assert "auth_signin_lockout_seconds" in locked.details()
    assert 800 < _retry_seconds(locked) <= 900


def test_unknown_email_answers_the_same(stub):
    known = _sign_up(stub)
    unknown = f"nobody-{next(_COUNTER)}@example.com"
    answers = {}
    for email in (known, unknown):
        errors = [_sign_in(stub, email, WRONG) for _ in range(MAX_FAILURES + 1)]
        answers[email] = [(e.code(), e.details(), _reason(e)) for e in errors]

    assert answers[known] == answers[unknown]
    assert answers[known][-1][0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_success_clears_the_count(stub):
    email = _sign_up(stub)
    for _ in range(MAX_FAILURES - 1):
        assert _sign_in(stub, email, WRONG).code() == grpc.StatusCode.UNAUTHENTICATED
    assert _sign_in(stub, email, PASSWORD) is None
    for _ in range(MAX_FAILURES - 1):
        assert _sign_in(stub, email, WRONG).code() == grpc.StatusCode.UNAUTHENTICATED

    assert _sign_in(stub, email, PASSWORD) is None


def test_owner_elsewhere_still_signs_in(system, stub):
    _, gateway = system
    email = _sign_up(stub)
    body = {"email": email, "password": WRONG}
    with _http(gateway, "127.0.0.1") as guesser, _http(gateway, "127.0.0.2") as owner:
        codes = [guesser.post("/v1/auth:signIn", json=body).status_code for _ in "abc"]
        locked = guesser.post(
            "/v1/auth:signIn", json={"email": email, "password": PASSWORD}
        )
        allowed = owner.post(
            "/v1/auth:signIn", json={"email": email, "password": PASSWORD}
        )

    assert codes == [401, 401, 401]
    assert locked.status_code == 429
    assert locked.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert 800 < int(locked.headers["Retry-After"]) <= 900
    assert allowed.status_code == 200


def test_client_header_cannot_dodge_lock(stub):
    email = _sign_up(stub)
    for number in range(MAX_FAILURES):
        forged = ((auth.CLIENT_KEY, f"10.0.0.{number}"),)
        _sign_in(stub, email, WRONG, forged)
    error = _sign_in(stub, email, PASSWORD, ((auth.CLIENT_KEY, "10.0.0.99"),))

    assert error is not None
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _sign_up_with_token(stub) -> tuple[str, str, str]:
    """Sign up a user and return its email, its name and an access token."""
    number = next(_COUNTER)
    email = f"changer{number}@example.com"
    reply = stub.SignUp(
        auth_pb.SignUpRequest(
            user=users_pb.User(email=email, display_name="Cy"),
            user_id=f"changer-{number}",
            password=PASSWORD,
        )
    )
    return email, reply.user.name, reply.tokens.access_token


def _set_password(stub, name: str, old: str, token: str) -> grpc.RpcError | None:
    request = auth_pb.SetPasswordRequest(
        name=name, old_password=old, new_password=NEW_PASSWORD
    )
    try:
        stub.SetPassword(request, metadata=(("authorization", f"Bearer {token}"),))
    except grpc.RpcError as error:
        return error
    return None


def test_wrong_old_passwords_lock(stub):
    email, name, token = _sign_up_with_token(stub)
    failures = [_set_password(stub, name, WRONG, token) for _ in range(MAX_FAILURES)]
    locked = _set_password(stub, name, PASSWORD, token)
    sign_in = _sign_in(stub, email, PASSWORD)

    assert all(error is not None for error in failures)
    assert [_reason(error) for error in failures] == ["WRONG_PASSWORD"] * 3
    assert locked is not None
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _reason(locked) == "SIGN_IN_THROTTLED"
    assert "auth_signin_max_failures" in locked.details()
    assert 800 < _retry_seconds(locked) <= 900
    assert sign_in is not None
    assert sign_in.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_wrong_old_password_is_forbidden(system, stub):
    _, gateway = system
    email, name, token = _sign_up_with_token(stub)
    error = _set_password(stub, name, WRONG, token)
    with _http(gateway, "127.0.0.2") as client:
        reply = client.post(
            f"/v1/{name}:setPassword",
            json={"oldPassword": WRONG, "newPassword": NEW_PASSWORD},
            headers={"Authorization": f"Bearer {token}"},
        )
    body = reply.json()["error"]
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))

    assert error is not None
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(error) == "WRONG_PASSWORD"
    assert "old_password" in error.details()
    assert reply.status_code == 403
    assert "WWW-Authenticate" not in reply.headers
    assert body["status"] == "PERMISSION_DENIED"
    assert info["reason"] == "WRONG_PASSWORD"
    assert info["metadata"]["field"] == "old_password"


def test_sign_in_lockout_blocks_set_password(stub):
    email, name, token = _sign_up_with_token(stub)
    for _ in range(MAX_FAILURES):
        _sign_in(stub, email, WRONG)
    locked = _set_password(stub, name, PASSWORD, token)

    assert locked is not None
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _reason(locked) == "SIGN_IN_THROTTLED"


def test_set_password_success_clears_count(stub):
    email, name, token = _sign_up_with_token(stub)
    for _ in range(MAX_FAILURES - 1):
        _sign_in(stub, email, WRONG)
    changed = _set_password(stub, name, PASSWORD, token)
    wrong = [_sign_in(stub, email, WRONG) for _ in range(MAX_FAILURES - 1)]
    signed_in = _sign_in(stub, email, NEW_PASSWORD)

    assert changed is None
    assert [e.code() for e in wrong] == [grpc.StatusCode.UNAUTHENTICATED] * 2
    assert signed_in is None


def test_lockout_log_hides_email_and_password(stub, caplog):
    caplog.set_level(logging.INFO)
    email = _sign_up(stub)
    for _ in range(MAX_FAILURES):
        _sign_in(stub, email, WRONG)

    assert "sign-in locked for " + email_tag(email) in caplog.text
    assert email not in caplog.text
    assert WRONG not in caplog.text


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(clock: _Clock) -> SignInThrottle:
    return SignInThrottle(3, window_seconds=60, lockout_seconds=30, clock=clock)


def _locked(throttle: SignInThrottle, email="a@example.com", client="h") -> bool:
    try:
        throttle.check(email, client)
    except Exception:
        return True
    return False


def test_lockout_ends_on_time():
    clock = _Clock()
    throttle = _throttle(clock)
    for _ in range(3):
        throttle.failed("a@example.com", "h")
    clock.now += 29
    still_locked = _locked(throttle)
    clock.now += 1.5

    assert still_locked
    assert not _locked(throttle)


def test_checks_while_locked_do_not_extend():
    clock = _Clock()
    throttle = _throttle(clock)
    for _ in range(3):
        throttle.failed("a@example.com", "h")
    # 31 seconds of calls, one every quarter second, against a 30 s lockout.
    for _ in range(124):
        clock.now += 0.25
        _locked(throttle)

    assert not _locked(throttle)


def test_old_failures_leave_the_window():
    clock = _Clock()
    throttle = _throttle(clock)
    throttle.failed("a@example.com", "h")
    throttle.failed("a@example.com", "h")
    clock.now += 61
    throttle.failed("a@example.com", "h")

    assert not _locked(throttle)


def test_email_case_shares_a_count():
    clock = _Clock()
    throttle = _throttle(clock)
    for email in ("A@example.com", "a@EXAMPLE.com", "a@example.com"):
        throttle.failed(email, "h")

    assert _locked(throttle, "a@example.com")
    assert not _locked(throttle, "a@example.com", client="other")


def test_zero_turns_lockout_off():
    throttle = SignInThrottle(0, 0, 0)
    for _ in range(50):
        throttle.failed("a@example.com", "h")

    assert not _locked(throttle)
    assert len(throttle) == 0


@pytest.mark.parametrize(
    ("arguments", "setting"),
    [
        ((-1, 900, 900), "auth_signin_max_failures"),
        ((5, 0, 900), "auth_signin_window_seconds"),
        ((5, 900, -1), "auth_signin_lockout_seconds"),
    ],
)
def test_bad_settings_are_named(arguments, setting):
    with pytest.raises(ValueError, match=setting):
        SignInThrottle(*arguments)
