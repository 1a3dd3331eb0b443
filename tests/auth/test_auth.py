"""Authentication end to end: a real user_service behind a real gateway."""

from __future__ import annotations

import logging
import time

import grpc
import httpx
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import create_engine, text

from gateway import inprocess
from gateway.app import build
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from tests.auth.support import operator_admin_key
from tests.gateway.support import error_details
from tests.ports import closed_address
from tests.rich_errors import fails, reason_of
from user_service import app as user_app

SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct horse battery staple"


class _AllowGuard:
    def check_settled(self, *args, **kwargs) -> None:
        return None

    def close(self) -> None:
        return None


def _config(tmp_path, required: bool, **overrides):
    return config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path / "data",
            "auth_required": required,
            "auth_secret": SECRET,
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
            **overrides,
        },
    )


def _start(loop_thread, tmp_path, required: bool):
    config = _config(tmp_path, required)
    users = user_app.build(config, "127.0.0.1:0", guard=_AllowGuard())
    config = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    return users, gateway


@pytest.fixture(scope="module")
def root_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("on")


@pytest.fixture(scope="module")
def system(loop_thread, root_dir):
    users, gateway = _start(loop_thread, root_dir, True)
    yield users, gateway
    loop_thread.run(gateway.stop(0))
    users.stop(0)
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def channel(system):
    _, gateway = system
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def http(system):
    _, gateway = system
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.http_port}") as client:
        yield client


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


_COUNTER = iter(range(10_000))


def _sign_up(channel) -> auth_pb.SignUpResponse:
    number = next(_COUNTER)
    return auth_grpc.AuthServiceStub(channel).SignUp(
        auth_pb.SignUpRequest(
            user=users_pb.User(email=f"user{number}@example.com", display_name="Ana"),
            user_id=f"user-{number}",
            password=PASSWORD,
        )
    )


def _get_user(channel, name: str, metadata=()):
    return users_grpc.UsersServiceStub(channel).GetUser(
        users_pb.GetUserRequest(name=name), metadata=metadata
    )


def test_call_without_token_is_unauthenticated(channel):
    error = fails(lambda: _get_user(channel, "users/nobody"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in error.details()


def test_sign_up_token_works(channel):
    signed_up = _sign_up(channel)
    reply = _get_user(
        channel, signed_up.user.name, _bearer(signed_up.tokens.access_token)
    )
    assert reply.user.name == signed_up.user.name
    assert signed_up.tokens.token_type == "Bearer"


def test_sign_up_email_taken_hides_owner(channel):
    owner = _sign_up(channel).user
    email = owner.email.upper()
    request = auth_pb.SignUpRequest(
        user=users_pb.User(email=email, display_name="Eve"), password=PASSWORD
    )

    error = fails(lambda: auth_grpc.AuthServiceStub(channel).SignUp(request))

    details = error_details(error)
    resource = details["ResourceInfo"]
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details["ErrorInfo"].reason == "EMAIL_TAKEN"
    assert details["ErrorInfo"].metadata["email"] == email
    assert resource.resource_type == "splitlog.dev/User"
    assert resource.resource_name == ""
    assert email in resource.description
    owner_id = owner.name.removeprefix("users/")
    assert owner_id not in error.details()
    for detail in details.values():
        assert owner_id not in str(detail)


def test_sign_in_and_refresh(channel):
    signed_up = _sign_up(channel)
    stub = auth_grpc.AuthServiceStub(channel)
    signed_in = stub.SignIn(
        auth_pb.SignInRequest(email=signed_up.user.email.upper(), password=PASSWORD)
    )
    assert signed_in.user == signed_up.user.name
    refreshed = stub.RefreshToken(
        auth_pb.RefreshTokenRequest(refresh_token=signed_in.tokens.refresh_token)
    )
    assert refreshed.tokens.refresh_token != signed_in.tokens.refresh_token
    _get_user(channel, signed_up.user.name, _bearer(refreshed.tokens.access_token))
    reused = fails(
        lambda: stub.RefreshToken(
            auth_pb.RefreshTokenRequest(refresh_token=signed_in.tokens.refresh_token)
        )
    )
    assert reused.code() == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_password_is_unauthenticated(channel):
    signed_up = _sign_up(channel)
    stub = auth_grpc.AuthServiceStub(channel)
    error = fails(
        lambda: stub.SignIn(
            auth_pb.SignInRequest(email=signed_up.user.email, password="not it at all")
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "email or the password is wrong" in error.details()


def test_sign_out_revokes_access_token(channel):
    signed_up = _sign_up(channel)
    token = signed_up.tokens.access_token
    auth_grpc.AuthServiceStub(channel).SignOut(
        auth_pb.SignOutRequest(refresh_token=signed_up.tokens.refresh_token),
        metadata=_bearer(token),
    )
    error = fails(lambda: _get_user(channel, signed_up.user.name, _bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signed out" in error.details()


def test_tampered_token_is_rejected(channel):
    signed_up = _sign_up(channel)
    header, payload, signature = signed_up.tokens.access_token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    error = fails(lambda: _get_user(channel, signed_up.user.name, _bearer(tampered)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def _claims(subject: str, **changes):
    now = int(time.time())
    claims = {
        "iss": auth.TOKEN_ISSUER,
        "aud": auth.TOKEN_AUDIENCE,
        "sub": subject,
        "sid": "unknown",
        "iat": now,
        "exp": now + 60,
        "jti": "test",
    }
    claims.update(changes)
    return auth.TokenIssuer(SECRET.encode(), 60).encode_claims(claims)


def test_expired_token_is_rejected(channel):
    past = int(time.time()) - 3600
    token = _claims("users/someone", iat=past - 60, exp=past)
    error = fails(lambda: _get_user(channel, "users/someone", _bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in error.details()


def test_wrong_audience_is_rejected(channel):
    token = _claims("users/someone", aud="another-service")
    error = fails(lambda: _get_user(channel, "users/someone", _bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "audience" in error.details()


# Tokens that are not JWTs: one segment, bad base64, a header that is not
# UTF-8 (byte 0xb7), and a header that is not JSON.
_MALFORMED_TOKENS = (
    "nonsense",
    "a.b.c",
    "t7e3.eyJ9.abc",
    "bm90IGpzb24.eyJ9.abc",
)


@pytest.mark.parametrize("token", _MALFORMED_TOKENS)
def test_malformed_token_has_own_message(channel, token):
    error = fails(lambda: _get_user(channel, "users/someone", _bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details().startswith("the access token is malformed")
    assert "sign in again" in error.details()
    assert "codec" not in error.details()
    assert "header" not in error.details()
    assert "segments" not in error.details()


def test_rest_malformed_token_message(http):
    reply = http.get("/v1/users/x", headers={"authorization": "Bearer t7e3.eyJ9.abc"})
    assert reply.status_code == 401
    message = reply.json()["error"]["message"]
    assert message.startswith("the access token is malformed")
    assert "codec" not in message


@pytest.mark.parametrize("header", ["Bearer ", "Bearer", "bearer   "])
def test_empty_bearer_token_message(channel, http, header):
    metadata = (("authorization", header),)
    error = fails(lambda: _get_user(channel, "users/someone", metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "has the Bearer scheme but an empty token" in error.details()
    assert "other schemes" not in error.details()

    # httpx rejects a header value that ends in whitespace, and HTTP servers
    # drop it, so REST sends the scheme alone.
    reply = http.get("/v1/users/x", headers={"authorization": header.strip()})
    assert reply.status_code == 401
    message = reply.json()["error"]["message"]
    assert "has the Bearer scheme but an empty token" in message


def test_other_scheme_message(channel):
    metadata = (("authorization", "Basic dXNlcjpwYXNz"),)
    error = fails(lambda: _get_user(channel, "users/someone", metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "other schemes are not supported" in error.details()
    assert "empty token" not in error.details()


def test_missing_claim_names_claim(channel):
    token = _claims("users/someone", jti=None)
    error = fails(lambda: _get_user(channel, "users/someone", _bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "lacks the 'jti' claim" in error.details()


def _administrator(channel, root_dir) -> auth_pb.SignUpResponse:
    """Sign up a user and make it an administrator, as an operator does."""
    signed_up = _sign_up(channel)
    operator_admin_key(root_dir / "data", signed_up.user.name)
    return signed_up


def _api_key(channel, root_dir, scopes: list[str]) -> auth_pb.CreateApiKeyResponse:
    """Create a key for an administrator, with that user's access token."""
    signed_up = _administrator(channel, root_dir)
    return auth_grpc.AuthServiceStub(channel).CreateApiKey(
        auth_pb.CreateApiKeyRequest(
            parent=signed_up.user.name,
            api_key=auth_pb.ApiKey(display_name="shipper", scopes=scopes),
        ),
        metadata=_bearer(signed_up.tokens.access_token),
    )


def _admin_key(channel, root_dir) -> auth_pb.CreateApiKeyResponse:
    """Sign up a user and give it an admin key, as an operator does."""
    signed_up = _sign_up(channel)
    name, secret = operator_admin_key(root_dir / "data", signed_up.user.name)
    return auth_pb.CreateApiKeyResponse(
        api_key=auth_pb.ApiKey(name=name), secret=secret
    )


def _write_log(channel, secret: str):
    return logs_grpc.LogsServiceStub(channel).WriteLogEntry(
        logs_pb.WriteLogEntryRequest(), metadata=_bearer(secret), timeout=3
    )


def test_api_key_scopes(channel, root_dir):
    writer = _api_key(channel, root_dir, ["logs:write"])
    # Allowed calls pass the gateway and reach the (closed) log_service port.
    allowed = fails(lambda: _write_log(channel, writer.secret))
    assert allowed.code() == grpc.StatusCode.UNAVAILABLE
    denied = fails(lambda: _get_user(channel, "users/x", _bearer(writer.secret)))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in denied.details()
    reader = _api_key(channel, root_dir, ["logs:read"])
    read_only = fails(lambda: _write_log(channel, reader.secret))
    assert read_only.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "logs:write" in read_only.details()


def test_admin_key_allows_everything(channel, root_dir):
    admin = _admin_key(channel, root_dir)
    owner = admin.api_key.name.rsplit("/apiKeys/", 1)[0]
    assert _get_user(channel, owner, _bearer(admin.secret)).user.name == owner


def test_revoked_key_is_rejected(channel, root_dir):
    created = _admin_key(channel, root_dir)
    stub = auth_grpc.AuthServiceStub(channel)
    stub.RevokeApiKey(
        auth_pb.RevokeApiKeyRequest(name=created.api_key.name),
        metadata=_bearer(created.secret),
    )
    error = fails(lambda: _get_user(channel, "users/x", _bearer(created.secret)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in error.details()


def test_key_secret_shown_once(channel, root_dir):
    created = _admin_key(channel, root_dir)
    assert created.secret.startswith("slk_")
    owner = created.api_key.name.rsplit("/apiKeys/", 1)[0]
    listed = auth_grpc.AuthServiceStub(channel).ListApiKeys(
        auth_pb.ListApiKeysRequest(parent=owner), metadata=_bearer(created.secret)
    )
    assert [key.name for key in listed.api_keys] == [created.api_key.name]
    assert created.secret not in str(listed)


def _key_with_expiry(channel, root_dir, seconds: int, nanos: int):
    signed_up = _administrator(channel, root_dir)
    return auth_grpc.AuthServiceStub(channel).CreateApiKey(
        auth_pb.CreateApiKeyRequest(
            parent=signed_up.user.name,
            api_key=auth_pb.ApiKey(
                display_name="timed",
                scopes=["logs:read"],
                expire_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
            ),
        ),
        metadata=_bearer(signed_up.tokens.access_token),
    )


def test_key_future_expiry_kept(channel, root_dir):
    created = _key_with_expiry(channel, root_dir, 4_000_000_000, 0)
    assert created.api_key.expire_time.seconds == 4_000_000_000


@pytest.mark.parametrize(
    ("seconds", "nanos", "fragment"),
    [
        (1, 0, "is in the past"),
        (4_000_000_000, -1, "nanos=-1 is not a valid timestamp"),
        (10**12, 0, "seconds=1000000000000 nanos=0 is not a valid timestamp"),
    ],
)
def test_key_invalid_expiry_rejected(channel, root_dir, seconds, nanos, fragment):
    error = fails(lambda: _key_with_expiry(channel, root_dir, seconds, nanos))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "api_key.expire_time" in error.details()
    assert fragment in error.details()


def test_other_user_cannot_list_keys(channel):
    first = _sign_up(channel)
    second = _sign_up(channel)
    error = fails(
        lambda: auth_grpc.AuthServiceStub(channel).ListApiKeys(
            auth_pb.ListApiKeysRequest(parent=first.user.name),
            metadata=_bearer(second.tokens.access_token),
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_rest_sign_in_and_call(http, channel):
    signed_up = _sign_up(channel)
    missing = http.get(f"/v1/{signed_up.user.name}")
    assert missing.status_code == 401
    signed_in = http.post(
        "/v1/auth:signIn", json={"email": signed_up.user.email, "password": PASSWORD}
    )
    assert signed_in.status_code == 200
    token = signed_in.json()["tokens"]["accessToken"]
    reply = http.get(
        f"/v1/{signed_up.user.name}", headers={"authorization": f"Bearer {token}"}
    )
    assert reply.status_code == 200
    assert reply.json()["user"]["name"] == signed_up.user.name


def test_rest_scope_denied_is_403(http, channel, root_dir):
    reader = _api_key(channel, root_dir, ["logs:read"])
    reply = http.get(
        "/v1/users/x", headers={"authorization": f"Bearer {reader.secret}"}
    )
    assert reply.status_code == 403


def test_rest_bad_token_is_401(http):
    reply = http.get("/v1/users/x", headers={"authorization": "Bearer nonsense"})
    assert reply.status_code == 401
    assert reply.json()["error"]["status"] == "UNAUTHENTICATED"


# Deactivated users


def _deactivate(channel, name: str, credential: str) -> None:
    users_grpc.UsersServiceStub(channel).DeactivateUser(
        users_pb.DeactivateUserRequest(name=name), metadata=_bearer(credential)
    )


def _rest_reason(reply: httpx.Response) -> str:
    details = reply.json()["error"]["details"]
    return next(detail["reason"] for detail in details if "reason" in detail)


def test_refresh_rejected_after_deactivation(channel, http):
    signed_up = _sign_up(channel)
    _deactivate(channel, signed_up.user.name, signed_up.tokens.access_token)
    stub = auth_grpc.AuthServiceStub(channel)
    request = auth_pb.RefreshTokenRequest(refresh_token=signed_up.tokens.refresh_token)

    # Every try is rejected, not only the first.
    for _ in range(2):
        error = fails(lambda: stub.RefreshToken(request))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(error) == "USER_DEACTIVATED"
        assert f"{signed_up.user.name} is deactivated" in error.details()
    reply = http.post(
        "/v1/auth:refreshToken",
        json={"refreshToken": signed_up.tokens.refresh_token},
    )
    assert reply.status_code == 401
    assert _rest_reason(reply) == "USER_DEACTIVATED"


def test_refresh_checks_state_of_open_session(channel, root_dir):
    # A user deactivated by a version that left its sessions open.
    signed_up = _sign_up(channel)
    user_id = signed_up.user.name.removeprefix("users/")
    engine = create_engine(f"sqlite:///{root_dir / 'data' / 'user_service.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE users SET state = 'DEACTIVATED' WHERE id = :id"),
                {"id": user_id},
            )
    finally:
        engine.dispose()
    request = auth_pb.RefreshTokenRequest(refresh_token=signed_up.tokens.refresh_token)

    error = fails(lambda: auth_grpc.AuthServiceStub(channel).RefreshToken(request))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error) == "USER_DEACTIVATED"


def test_deactivation_revokes_sessions_and_keys(channel, root_dir):
    signed_up = _sign_up(channel)
    key_name, key = operator_admin_key(root_dir / "data", signed_up.user.name)
    stub = auth_grpc.AuthServiceStub(channel)
    second = stub.SignIn(
        auth_pb.SignInRequest(email=signed_up.user.email, password=PASSWORD)
    )
    assert _get_user(channel, signed_up.user.name, _bearer(key)).user.name

    _deactivate(channel, signed_up.user.name, signed_up.tokens.access_token)

    refused_key = fails(lambda: _get_user(channel, "users/x", _bearer(key)))
    assert refused_key.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "deactivated" in refused_key.details()
    # The gateway's reason covers every rejected credential, and the
    # metadata tells why, so that a client does not advise signing in again.
    refused_info = error_details(refused_key)["ErrorInfo"]
    assert refused_info.reason == "CREDENTIAL_INVALID"
    assert refused_info.metadata["credential_reason"] == "USER_DEACTIVATED"
    # SignOut does not check the user's state, so it shows the revocation.
    # It needs a credential at the gateway, which the user no longer has.
    administrator = _admin_key(channel, root_dir)
    signed_out = fails(
        lambda: stub.SignOut(
            auth_pb.SignOutRequest(refresh_token=second.tokens.refresh_token),
            metadata=_bearer(administrator.secret),
        )
    )
    assert reason_of(signed_out) == "SESSION_REVOKED"
    listed = stub.ListApiKeys(
        auth_pb.ListApiKeysRequest(parent=signed_up.user.name),
        metadata=_bearer(administrator.secret),
    )
    assert [listed_key.name for listed_key in listed.api_keys] == [key_name]
    assert listed.api_keys[0].HasField("revoke_time")


def test_no_key_for_deactivated_user(channel, root_dir):
    signed_up = _sign_up(channel)
    _deactivate(channel, signed_up.user.name, signed_up.tokens.access_token)
    administrator = _admin_key(channel, root_dir)
    request = auth_pb.CreateApiKeyRequest(
        parent=signed_up.user.name,
        api_key=auth_pb.ApiKey(display_name="late", scopes=["logs:read"]),
    )

    error = fails(
        lambda: auth_grpc.AuthServiceStub(channel).CreateApiKey(
            request, metadata=_bearer(administrator.secret)
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "USER_DEACTIVATED"
    assert "cannot own an API key" in error.details()


# The authorization header


def test_two_authorization_entries_rejected(channel, http):
    token = _sign_up(channel).tokens.access_token
    entries = (("authorization", f"Bearer {token}"), ("authorization", "Bearer x"))

    error = fails(lambda: _get_user(channel, "users/x", entries))
    reply = http.get("/v1/users/x", headers=list(entries))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error) == "CREDENTIAL_AMBIGUOUS"
    assert "2 authorization headers" in error.details()
    assert "send a single `authorization: Bearer <token>` header" in error.details()
    assert reply.status_code == 401
    assert _rest_reason(reply) == "CREDENTIAL_AMBIGUOUS"


def test_same_credential_twice_rejected(channel):
    # Equal copies are rejected too, so a client learns of the second header.
    token = _sign_up(channel).tokens.access_token
    entries = _bearer(token) * 2
    error = fails(lambda: _get_user(channel, "users/x", entries))
    assert reason_of(error) == "CREDENTIAL_AMBIGUOUS"


_PLAIN_CHALLENGE = 'Bearer realm="splitlog"'


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ([], _PLAIN_CHALLENGE),
        ([("authorization", "Basic dXNlcjpwYXNz")], _PLAIN_CHALLENGE),
        ([("authorization", "Bearer")], _PLAIN_CHALLENGE),
        (
            [("authorization", "Bearer nonsense")],
            'Bearer realm="splitlog", error="invalid_token"',
        ),
        (
            [("authorization", "Bearer a"), ("authorization", "Bearer b")],
            'Bearer realm="splitlog", error="invalid_request"',
        ),
    ],
)
def test_rest_401_has_challenge(http, headers, challenge):
    reply = http.get("/v1/users/x", headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == challenge


def test_rest_401_from_service_has_challenge(http, channel):
    signed_up = _sign_up(channel)
    reply = http.post(
        "/v1/auth:signIn",
        json={"email": signed_up.user.email, "password": "not it at all"},
    )
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == _PLAIN_CHALLENGE


def test_otlp_401_has_challenge(http):
    reply = http.post(
        "/v1/logs", content=b"{}", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == _PLAIN_CHALLENGE


def test_rest_scope_denied_names_scope(http, channel, root_dir):
    reader = _api_key(channel, root_dir, ["logs:read"])
    reply = http.get(
        "/v1/users/x", headers={"authorization": f"Bearer {reader.secret}"}
    )
    assert reply.status_code == 403
    assert reply.headers["www-authenticate"] == (
        'Bearer realm="splitlog", error="insufficient_scope", scope="admin"'
    )


def test_rest_success_has_no_challenge(http, channel):
    signed_up = _sign_up(channel)
    reply = http.get(
        f"/v1/{signed_up.user.name}",
        headers={"authorization": f"Bearer {signed_up.tokens.access_token}"},
    )
    assert reply.status_code == 200
    assert "www-authenticate" not in reply.headers


def test_direct_service_call_without_signature_refused(system, channel):
    users, _ = system
    signed_up = _sign_up(channel)
    with grpc.insecure_channel(f"127.0.0.1:{users.port}") as direct:
        forged = (("x-splitlog-principal", signed_up.user.name),)
        error = fails(lambda: _get_user(direct, signed_up.user.name, forged))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signed by the gateway" in error.details()


def test_direct_call_with_wrong_secret_refused(system):
    users, _ = system
    other = auth.PrincipalSigner(b"another secret that is long enough....")
    metadata = other.metadata(auth.Principal("users/someone"))
    with grpc.insecure_channel(f"127.0.0.1:{users.port}") as direct:
        error = fails(lambda: _get_user(direct, "users/someone", metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_server_log_has_no_secrets(channel, root_dir, caplog):
    caplog.set_level(logging.DEBUG)
    signed_up = _administrator(channel, root_dir)
    created = auth_grpc.AuthServiceStub(channel).CreateApiKey(
        auth_pb.CreateApiKeyRequest(
            parent=signed_up.user.name,
            api_key=auth_pb.ApiKey(display_name="k", scopes=["logs:read"]),
        ),
        metadata=_bearer(signed_up.tokens.access_token),
    )
    fails(
        lambda: auth_grpc.AuthServiceStub(channel).SignIn(
            auth_pb.SignInRequest(email=signed_up.user.email, password="wrong pass 123")
        )
    )
    text = caplog.text
    assert "signed up" in text
    for secret in (
        PASSWORD,
        "wrong pass 123",
        signed_up.tokens.access_token,
        signed_up.tokens.refresh_token,
        created.secret,
        SECRET,
    ):
        assert secret not in text


def test_in_process_dispatch_checks_token(loop_thread, tmp_path):
    users, gateway = _start(loop_thread, tmp_path, True)
    try:
        config = _config(tmp_path, True)
        dispatcher = inprocess.install(gateway.pool, {"user_service": users}, config)
        assert "/splitlog.users.v1.UsersService/GetUser" in dispatcher.methods
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as local:
            signed_up = _sign_up(local)
            token = signed_up.tokens.access_token
            reply = _get_user(local, signed_up.user.name, _bearer(token))
            assert reply.user.name == signed_up.user.name
            error = fails(lambda: _get_user(local, signed_up.user.name))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        loop_thread.run(gateway.stop(0))
        users.stop(0)


def test_auth_off_behaves_as_before(loop_thread, tmp_path):
    auth.install_process_signer(None)
    users, gateway = _start(loop_thread, tmp_path, False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as plain:
            created = users_grpc.UsersServiceStub(plain).CreateUser(
                users_pb.CreateUserRequest(
                    user=users_pb.User(email="off@example.com", display_name="Off")
                )
            )
            assert _get_user(plain, created.user.name).user.email == "off@example.com"
        with grpc.insecure_channel(f"127.0.0.1:{users.port}") as direct:
            assert _get_user(direct, created.user.name).user.name == created.user.name
        assert not (tmp_path / "data" / "auth_secret").exists()
    finally:
        loop_thread.run(gateway.stop(0))
        users.stop(0)
