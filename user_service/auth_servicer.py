"""The gRPC handlers of `splitlog.auth.v1.AuthService` and `CredentialService`.

Who may call what, when the gateway signed a principal (`auth_required`):
- SignUp, SignIn, RefreshToken and SignOut need no principal; the refresh
  token or the password is the credential.
- SetPassword and the API key methods act on one user. The caller must be
  that user's access token, one of that user's API keys with `admin`, or an
  administrator. A non-administrator who names another user gets
  PERMISSION_DENIED whether that user exists or not; an administrator gets
  NOT_FOUND for a missing user.
- An administrator may create keys of any scope for any active user, and the
  secret goes to the administrator. An `admin` key makes its owner an
  administrator, so this is how an administrator promotes another user.
- Only an administrator or a service may create a key with any scope
  (`admin`, `logs:read` or `logs:write`); the first administrator key comes
  from `splitlog admin-key` on the database.
- An access token carries the `admin` scope while its user holds an active
  key with `admin`, so that user is an administrator on every call. Other
  users' tokens carry no scope, so they cannot read or write logs.
With `auth_required` off, no principal arrives and these checks are skipped,
as for every other method.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy.orm import Session

from splitlog.auth.v1 import auth_service_pb2 as pb
from splitlog.auth.v1 import auth_service_pb2_grpc as pb_grpc
from splitlog.auth.v1 import credential_service_pb2 as cred_pb
from splitlog.auth.v1 import credential_service_pb2_grpc as cred_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime import auth, authz, limits, pagination
from splitlog_runtime.database import Database
from splitlog_runtime.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Resource,
    Unauthenticated,
    invalid_field,
)
from splitlog_runtime.resources import new_id, parse_name
from user_service import auth_storage, domain, storage
from user_service.password_hashing import PasswordHashing, resolve_concurrency
from user_service.servicer import (
    UsersServicer,
    _next_token,
    _page_key,
    require_active,
    transaction,
)
from user_service.signin_throttle import SignInThrottle, email_tag

_LOGGER = logging.getLogger(__name__)

AUTH_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuthService"].full_name
CREDENTIAL_SERVICE_NAME = cred_pb.DESCRIPTOR.services_by_name[
    "CredentialService"
].full_name

API_KEY_TYPE = "splitlog.dev/ApiKey"
API_KEY_PATTERN = "users/{user}/apiKeys/{api_key}"
API_KEY_PREFIX = "slk_"
REFRESH_TOKEN_PREFIX = "slr_"
MAX_PASSWORD_LENGTH = 1024
ANONYMOUS = "anonymous"
USER_DEACTIVATED = "USER_DEACTIVATED"

# Password hash that SignIn verifies against when the email is unknown, so a
# sign-in takes as long for an unknown email as for a wrong password.
_DUMMY_HASH = auth.hash_password(uuid.uuid4().hex)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _validate_password(value: str, field: str) -> str:
    minimum = limits.current().auth_min_password_length
    if not minimum <= len(value) <= MAX_PASSWORD_LENGTH:
        raise invalid_field(
            field,
            f"must be {minimum} (auth_min_password_length) to "
            f"{MAX_PASSWORD_LENGTH} characters long, got {len(value)}; choose "
            "a passphrase within those lengths",
            reason="INVALID_PASSWORD",
        )
    return value


def _client_of(context: grpc.ServicerContext) -> str:
    """Return the key of the caller's host, under which sign-ins are throttled.

    The host is the one that the gateway signed into the call. With
    auth_required off, no principal arrives, and the host is the one in the
    gateway's `x-splitlog-client` metadata. Without either, it is the peer.
    `auth.client_key` counts an IPv6 host by its /64 network.
    """
    principal = auth.current_principal()
    host = principal.client if principal is not None else ""
    if principal is None:
        # NOTE: with auth off nothing signs this metadata, so a client that
        # calls user_service directly, not through the gateway, can name
        # any host in it and so escape the lockout.
        metadata = context.invocation_metadata()
        host = auth.metadata_value(metadata, auth.CLIENT_KEY)
    return auth.client_key(host or auth.peer_host(context.peer() or ""))


def _caller_name() -> str:
    """Return the name of the current principal, for the log."""
    principal = auth.current_principal()
    if principal is None:
        return "a caller without a credential (auth_required is off)"
    return principal.name


def api_key_message(row: auth_storage.ApiKeyRow) -> pb.ApiKey:
    message = pb.ApiKey(
        name=f"users/{row.user_id}/apiKeys/{row.id}",
        display_name=row.display_name,
        scopes=row.scope_list,
        create_time=_timestamp(row.create_time),
    )
    if row.expire_time is not None:
        message.expire_time.CopyFrom(_timestamp(row.expire_time))
    if row.revoke_time is not None:
        message.revoke_time.CopyFrom(_timestamp(row.revoke_time))
    return message


def authorize_owner(user_id: str, method: str) -> None:
    """Check that the current principal may act for a user.

    Administrators and services pass. Others are checked before the user is
    looked up, so they cannot tell a missing user from another one.

    Raises:
      Unauthenticated: the gateway passed the call on without a credential.
      PermissionDenied: the principal is another user who is no
        administrator, or an API key without `admin`.
    """
    principal = auth.current_principal()
    if authz.is_unrestricted(principal):
        return
    if principal.name == ANONYMOUS:
        raise Unauthenticated(
            f"{method} needs a credential; send `authorization: Bearer <token>`",
            reason="CREDENTIAL_MISSING",
        )
    owner = domain.user_name(user_id)
    if principal.user != owner:
        raise PermissionDenied(
            f"{principal.name} may not call {method} for {owner}; only the user "
            "itself or an administrator may",
            reason="NOT_OWNER",
            metadata={"principal": principal.name, "user": owner},
        )
    auth.require_scope(principal, auth.SCOPE_ADMIN, method)


def _require_admin_for_scopes(scopes: list[str]) -> None:
    """Let only an administrator or a service hand out `admin` or a log scope.

    Without this check any signed-up user could make themselves an
    administrator, or read every service's logs and write entries under any
    service name. The first administrator key comes from an operator with
    access to the user database, through `splitlog admin-key`.
    """
    guarded = sorted(set(scopes) & (auth.LOG_SCOPES | {auth.SCOPE_ADMIN}))
    principal = auth.current_principal()
    if not guarded or authz.is_unrestricted(principal):
        return
    raise PermissionDenied(
        f"only an administrator may create an API key with "
        f"{' or '.join(map(repr, guarded))}; ask an administrator for such a "
        "key, or have an operator run `splitlog admin-key USER_ID` on the user "
        "database to make USER_ID an administrator",
        reason=authz.ADMIN_REQUIRED,
        metadata={"principal": principal.name if principal else ANONYMOUS},
    )


def insert_api_key(
    session: Session,
    user_id: str,
    display_name: str,
    scopes: list[str],
    expire_time: datetime | None,
) -> tuple[auth_storage.ApiKeyRow, str]:
    """Add an API key of an existing user and return its row and its secret.

    Only the secret's hash is stored, so the returned secret is the one
    chance to show it.

    Raises:
      NotFound: the user does not exist.
      FailedPrecondition: the user is deactivated, so the key would not work.
    """
    require_active(storage.require_user(session, user_id), "own an API key")
    secret = API_KEY_PREFIX + auth.new_secret()
    row = auth_storage.ApiKeyRow(
        id=new_id(),
        user_id=user_id,
        display_name=display_name,
        scopes=",".join(sorted(set(scopes))),
        secret_hash=auth.secret_hash(secret),
        create_time=storage.utc_now(),
        expire_time=expire_time,
    )
    session.add(row)
    session.flush()
    return row, secret


class AuthServicer(pb_grpc.AuthServiceServicer):
    """Passwords, sessions and API keys of the users in one database."""

    def __init__(
        self,
        database: Database,
        users: UsersServicer,
        tokens: auth.TokenIssuer,
        refresh_lifetime_seconds: int,
        throttle: SignInThrottle | None = None,
        refresh_reuse_grace_seconds: float = 0.0,
        hashing: PasswordHashing | None = None,
    ) -> None:
        self._database = database
        self._users = users
        self._tokens = tokens
        self._refresh_lifetime = timedelta(seconds=refresh_lifetime_seconds)
        self._reuse_grace = timedelta(seconds=refresh_reuse_grace_seconds)
        self._throttle = SignInThrottle(0, 0, 0) if throttle is None else throttle
        # Every password hash and check runs within a slot of `_hashing`.
        self._hashing = hashing or PasswordHashing(resolve_concurrency(0, 16), 0.5)

    def _open_session(self, session: Session, user_id: str) -> pb.SessionTokens:
        now = storage.utc_now()
        refresh_token = REFRESH_TOKEN_PREFIX + auth.new_secret()
        row = auth_storage.SessionRow(
            id=uuid.uuid4().hex,
            user_id=user_id,
            refresh_hash=auth.secret_hash(refresh_token),
            create_time=now,
            refresh_expire_time=now + self._refresh_lifetime,
        )
        session.add(row)
        return self._tokens_for(row, refresh_token)

    def _tokens_for(
        self, row: auth_storage.SessionRow, refresh_token: str
    ) -> pb.SessionTokens:
        access_token, expire = self._tokens.issue(domain.user_name(row.user_id), row.id)
        access_expire = datetime.fromtimestamp(expire, UTC).replace(tzinfo=None)
        return pb.SessionTokens(
            access_token=access_token,
            access_token_expire_time=_timestamp(access_expire),
            refresh_token=refresh_token,
            refresh_token_expire_time=_timestamp(row.refresh_expire_time),
            token_type="Bearer",
        )

    def SignUp(
        self, request: pb.SignUpRequest, context: grpc.ServicerContext
    ) -> pb.SignUpResponse:
        # CreateUser runs as a service below, so it would accept an address
        # that only administrators may set.
        domain.check_email_not_reserved(request.user.email, "user.email")
        password = _validate_password(request.password, "password")
        with self._hashing.slot(context):
            password_hash = auth.hash_password(password)
        # CreateUser needs an administrator when called from outside; SignUp
        # is the way for anyone to create their own account.
        with authz.as_service():
            created = self._users.CreateUser(
                users_pb.CreateUserRequest(user=request.user, user_id=request.user_id),
                context,
            ).user
        user_id = domain.parse_user_name(created.name, "user.name")
        # NOTE: the user is committed before its password. If this second
        # transaction fails, the user exists without a password and can get
        # one through SetPassword while auth_required is off.
        with transaction(self._database) as session:
            session.add(
                auth_storage.PasswordRow(
                    user_id=user_id,
                    password_hash=password_hash,
                    update_time=storage.utc_now(),
                )
            )
            tokens = self._open_session(session, user_id)
        _LOGGER.info("user %s signed up", created.name)
        return pb.SignUpResponse(user=created, tokens=tokens)

    def SetPassword(
        self, request: pb.SetPasswordRequest, context: grpc.ServicerContext
    ) -> pb.SetPasswordResponse:
        user_id = domain.parse_user_name(request.name, "name")
        new_password = _validate_password(request.new_password, "new_password")
        authorize_owner(user_id, "SetPassword")
        client = _client_of(context)
        checked_email = None
        # One slot covers the new hash and the check of old_password. It is
        # acquired before the transaction, so no waiter keeps a database
        # connection open.
        with self._hashing.slot(context):
            new_hash = auth.hash_password(new_password)
            with transaction(self._database) as session:
                user = storage.require_user(session, user_id)
                row = auth_storage.get_password(session, user_id)
                now = storage.utc_now()
                if row is None:
                    session.add(
                        auth_storage.PasswordRow(
                            user_id=user_id, password_hash=new_hash, update_time=now
                        )
                    )
                else:
                    if not request.old_password:
                        raise invalid_field(
                            "old_password",
                            f"is required because {request.name} already has a "
                            "password; send the current one",
                            reason="OLD_PASSWORD_REQUIRED",
                        )
                    # A wrong old_password counts in the sign-in lockout of the
                    # user's email, so a stolen token cannot guess the password.
                    self._throttle.check(user.email, client)
                    if not auth.verify_password(
                        row.password_hash, request.old_password
                    ):
                        _LOGGER.info(
                            "failed password change for %s from %s: wrong old_password",
                            request.name,
                            client,
                        )
                        self._throttle.failed(user.email, client)
                        # PERMISSION_DENIED, not UNAUTHENTICATED: the caller's
                        # credential is valid, and HTTP clients take a 401 to mean
                        # that their session ended. Not INVALID_ARGUMENT either,
                        # because whether old_password is right depends on state.
                        raise PermissionDenied(
                            "old_password is wrong; send the current password",
                            reason="WRONG_PASSWORD",
                            metadata={"field": "old_password"},
                        )
                    row.password_hash = new_hash
                    row.update_time = now
                    # A changed password ends every session, in case the old
                    # one leaked.
                    auth_storage.revoke_sessions_of_user(session, user_id, now)
                    checked_email = user.email
        # Only a committed change clears the failed guesses.
        if checked_email is not None:
            self._throttle.succeeded(checked_email, client)
        _LOGGER.info("password of %s set", request.name)
        return pb.SetPasswordResponse()

    def SignIn(
        self, request: pb.SignInRequest, context: grpc.ServicerContext
    ) -> pb.SignInResponse:
        if not request.email:
            raise invalid_field("email", "is required; send the user's email")
        if not request.password:
            raise invalid_field("password", "is required; send the user's password")

        client = _client_of(context)
        self._throttle.check(request.email, client)
        wrong = Unauthenticated(
            "the email or the password is wrong; check both and try again",
            reason="WRONG_CREDENTIALS",
        )
        # The slot covers the check and a rehash. It is acquired before the
        # transaction, so no waiter keeps a database connection open.
        with self._hashing.slot(context), transaction(self._database) as session:
            user = storage.find_user_by_email(session, request.email)
            row = auth_storage.get_password(session, user.id) if user else None
            if row is None:
                auth.verify_password(_DUMMY_HASH, request.password)
                _LOGGER.info(
                    "failed sign-in for %s from %s: no such account",
                    email_tag(request.email),
                    client,
                )
                self._throttle.failed(request.email, client)
                raise wrong
            if not auth.verify_password(row.password_hash, request.password):
                _LOGGER.info(
                    "failed sign-in for %s from %s: wrong password",
                    domain.user_name(user.id),
                    client,
                )
                self._throttle.failed(request.email, client)
                raise wrong
            if user.state != domain.STATE_ACTIVE:
                raise Unauthenticated(
                    f"{domain.user_name(user.id)} is deactivated and cannot sign in",
                    reason=USER_DEACTIVATED,
                )
            if auth.password_needs_rehash(row.password_hash):
                row.password_hash = auth.hash_password(request.password)
            tokens = self._open_session(session, user.id)
        self._throttle.succeeded(request.email, client)
        _LOGGER.info("user %s signed in", domain.user_name(user.id))
        return pb.SignInResponse(user=domain.user_name(user.id), tokens=tokens)

    def _live_session(
        self, session: Session, refresh_token: str, require_active_user: bool
    ) -> auth_storage.SessionRow:
        """Return the session whose current refresh token is `refresh_token`.

        Args:
          require_active_user: reject the session of a deactivated user. This
            comes before the check for a signed-out session, because
            deactivation signs out every session, and "sign in again" would
            be the wrong fix.

        Raises:
          InvalidArgument: the token is empty.
          _UnknownRefreshToken: no session has this token now; the caller
            checks for reuse after its transaction ends.
          Unauthenticated: the session was signed out, the token expired, or
            `require_active_user` is set and the user is deactivated.
        """
        if not refresh_token:
            raise invalid_field(
                "refresh_token", "is required; send the refresh token from SignIn"
            )
        row = auth_storage.find_session(session, auth.secret_hash(refresh_token))
        if row is None:
            raise _UnknownRefreshToken(
                "the refresh token is not valid (unknown, or expired and "
                "forgotten); sign in again",
                reason="REFRESH_TOKEN_INVALID",
            )
        if require_active_user:
            _require_active_user(session, row.user_id)
        if row.revoke_time is not None:
            raise Unauthenticated(
                "the session was signed out; sign in again",
                reason="SESSION_REVOKED",
            )
        if row.refresh_expire_time <= storage.utc_now():
            raise Unauthenticated(
                "the refresh token has expired; sign in again",
                reason="REFRESH_TOKEN_EXPIRED",
            )
        return row

    def _check_reuse(
        self,
        refresh_token: str,
        unknown: Unauthenticated,
        context: grpc.ServicerContext,
    ) -> Unauthenticated:
        """Return the error for a refresh token that no session has now.

        A token that RefreshToken already replaced was presented a second
        time, by the client or by someone who copied it. Because the two
        cannot be distinguished, the whole session is revoked: its refresh
        token and, through CheckCredential, its access tokens. Within
        `auth_refresh_reuse_grace_seconds` of the rotation the session is
        kept, because a client that retries a refresh whose response it
        lost, or refreshes from two tabs at once, would otherwise sign
        itself out.
        """
        now = storage.utc_now()
        with transaction(self._database) as session:
            rotated = auth_storage.find_rotated(
                session, auth.secret_hash(refresh_token)
            )
            # An expired token would be rejected even as the current one, so
            # its reuse is not treated as a theft.
            if rotated is None or rotated.expire_time <= now:
                return unknown
            row = auth_storage.get_session(session, rotated.session_id)
            user = domain.user_name(row.user_id)
            age = (now - rotated.rotate_time).total_seconds()
            if age <= self._reuse_grace.total_seconds():
                _LOGGER.info(
                    "replaced refresh token of session %s of %s presented again "
                    "%.1fs after its rotation, within the grace; session kept",
                    row.id,
                    user,
                    age,
                )
                return Unauthenticated(
                    f"the refresh token was already exchanged by RefreshToken "
                    f"{age:.1f}s ago; use the tokens that call returned",
                    reason="REFRESH_TOKEN_ROTATED",
                )
            if row.revoke_time is None:
                row.revoke_time = now
        _LOGGER.warning(
            "replaced refresh token of session %s of %s presented again from %s "
            "%.0fs after its rotation; the session is revoked in case the token "
            "was stolen",
            row.id,
            user,
            _client_of(context),
            age,
        )
        return Unauthenticated(
            "the refresh token was already used once, so it may have been "
            "copied; its session is now signed out for safety. Sign in again",
            reason="REFRESH_TOKEN_REUSED",
        )

    def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: grpc.ServicerContext
    ) -> pb.RefreshTokenResponse:
        try:
            with transaction(self._database) as session:
                row = self._live_session(
                    session, request.refresh_token, require_active_user=True
                )
                now = storage.utc_now()
                auth_storage.record_rotation(session, row, now)
                refresh_token = REFRESH_TOKEN_PREFIX + auth.new_secret()
                row.refresh_hash = auth.secret_hash(refresh_token)
                row.refresh_expire_time = now + self._refresh_lifetime
                tokens = self._tokens_for(row, refresh_token)
                user = domain.user_name(row.user_id)
        except _UnknownRefreshToken as unknown:
            raise self._check_reuse(request.refresh_token, unknown, context) from None
        return pb.RefreshTokenResponse(user=user, tokens=tokens)

    def SignOut(
        self, request: pb.SignOutRequest, context: grpc.ServicerContext
    ) -> pb.SignOutResponse:
        try:
            with transaction(self._database) as session:
                row = self._live_session(
                    session, request.refresh_token, require_active_user=False
                )
                row.revoke_time = storage.utc_now()
                user = domain.user_name(row.user_id)
        except _UnknownRefreshToken as unknown:
            raise self._check_reuse(request.refresh_token, unknown, context) from None
        _LOGGER.info("user %s signed out of session %s", user, row.id)
        return pb.SignOutResponse()

    def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        user_id = domain.parse_user_name(request.parent, "parent")
        key = request.api_key
        violations = domain.Violations()
        display_name = violations.check(
            domain.validate_display_name, key.display_name, "api_key.display_name"
        )
        violations.check(_validate_scopes, list(key.scopes), "api_key.scopes")

        expire_time = None
        if key.HasField("expire_time"):
            try:
                expire_time = key.expire_time.ToDatetime()
            except ValueError as exc:
                # Seconds outside years 1 to 9999, or nanos outside
                # [0, 999999999], which the protobuf library rejects.
                violations.check(
                    _reject,
                    "api_key.expire_time",
                    f"seconds={key.expire_time.seconds} "
                    f"nanos={key.expire_time.nanos} is not a valid timestamp "
                    f"({exc}); send an RFC 3339 time between years 1 and 9999",
                )
        if expire_time is not None and expire_time <= storage.utc_now():
            violations.check(
                _reject,
                "api_key.expire_time",
                f"{key.expire_time.ToJsonString()} is in the past; send a "
                "future time, or none for a key that does not expire",
            )
        violations.raise_if_any()
        authorize_owner(user_id, "CreateApiKey")
        _require_admin_for_scopes(list(key.scopes))

        with transaction(self._database) as session:
            row, secret = insert_api_key(
                session, user_id, display_name, list(key.scopes), expire_time
            )
            message = api_key_message(row)
        _LOGGER.info(
            "API key %s with scopes %s created by %s",
            message.name,
            ",".join(message.scopes),
            _caller_name(),
        )
        return pb.CreateApiKeyResponse(api_key=message, secret=secret)

    def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListApiKeysResponse:
        user_id = domain.parse_user_name(request.parent, "parent")
        size = pagination.page_size(request.page_size)
        selector = ["ListApiKeys", request.parent]
        before = _page_key(
            pagination.decode_token(request.page_token, selector), request.page_token
        )
        authorize_owner(user_id, "ListApiKeys")
        with transaction(self._database, read_only=True) as session:
            storage.require_user(session, user_id)
            rows = auth_storage.list_api_keys(session, user_id, before, size + 1)
            keys = [api_key_message(row) for row in rows[:size]]
        return pb.ListApiKeysResponse(
            api_keys=keys,
            next_page_token=_next_token(
                rows, size, lambda row: (row.create_time, row.id), selector
            ),
        )

    def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        user_id, key_id = parse_name(request.name, API_KEY_PATTERN, "name")
        authorize_owner(user_id, "RevokeApiKey")
        with transaction(self._database) as session:
            storage.require_user(session, user_id)
            row = auth_storage.get_api_key(session, user_id, key_id)
            if row is None:
                raise NotFound(
                    f"API key {request.name!r} does not exist; list the keys with "
                    "ListApiKeys",
                    reason="API_KEY_NOT_FOUND",
                    resource=Resource(API_KEY_TYPE, request.name),
                )
            if row.revoke_time is None:
                row.revoke_time = storage.utc_now()
            message = api_key_message(row)
        _LOGGER.info("API key %s revoked by %s", request.name, _caller_name())
        return pb.RevokeApiKeyResponse(api_key=message)


class _UnknownRefreshToken(Unauthenticated):
    """No session has the refresh token as its current one."""


def _reject(field: str, description: str) -> None:
    raise invalid_field(field, description)


def _validate_scopes(scopes: list[str], field: str) -> list[str]:
    if not scopes:
        raise invalid_field(
            field, f"is empty; send one or more of {', '.join(auth.SCOPES)}"
        )
    for scope in scopes:
        if scope not in auth.SCOPES:
            raise invalid_field(
                field,
                f"{scope!r} is not a scope; use {', '.join(auth.SCOPES)}",
                reason="INVALID_SCOPE",
            )
    return scopes


class CredentialServicer(cred_grpc.CredentialServiceServicer):
    """Check access tokens and API keys for the gateway."""

    def __init__(self, database: Database, tokens: auth.TokenIssuer) -> None:
        self._database = database
        self._tokens = tokens

    def CheckCredential(
        self, request: cred_pb.CheckCredentialRequest, context: grpc.ServicerContext
    ) -> cred_pb.CheckCredentialResponse:
        credential = request.credential
        if not credential:
            raise InvalidArgument("credential is required")
        if credential.startswith(API_KEY_PREFIX):
            return self._check_api_key(credential)
        return self._check_access_token(credential)

    def _check_api_key(self, secret: str) -> cred_pb.CheckCredentialResponse:
        with transaction(self._database, read_only=True) as session:
            row = auth_storage.find_api_key(session, auth.secret_hash(secret))
            if row is None:
                raise Unauthenticated(
                    "the API key is not valid; check it, or create a new one",
                    reason="API_KEY_INVALID",
                )
            # Deactivation revokes the user's keys, so the user's state comes
            # first: "create a new one" would be the wrong fix.
            _require_active_user(session, row.user_id)
            name = f"users/{row.user_id}/apiKeys/{row.id}"
            if row.revoke_time is not None:
                raise Unauthenticated(
                    f"the API key {name} was revoked; create a new one",
                    reason="API_KEY_REVOKED",
                )
            if row.expire_time is not None and row.expire_time <= storage.utc_now():
                raise Unauthenticated(
                    f"the API key {name} has expired; create a new one",
                    reason="API_KEY_EXPIRED",
                )
            reply = cred_pb.CheckCredentialResponse(
                principal=name, scopes=row.scope_list
            )
            if row.expire_time is not None:
                reply.expire_time.CopyFrom(_timestamp(row.expire_time))
            return reply

    def _check_access_token(self, token: str) -> cred_pb.CheckCredentialResponse:
        """Check an access token and return its user with the user's scopes."""
        claims = self._tokens.verify(token)
        with transaction(self._database, read_only=True) as session:
            row = auth_storage.get_session(session, claims.session_id)
            if row is None or domain.user_name(row.user_id) != claims.subject:
                raise Unauthenticated(
                    "the access token names an unknown session; sign in again",
                    reason="TOKEN_INVALID",
                )
            # Deactivation signs out every session of the user, so the
            # user's state comes first: "sign in again" would not work.
            _require_active_user(session, row.user_id)
            if row.revoke_time is not None:
                raise Unauthenticated(
                    "the access token's session was signed out; sign in again",
                    reason="SESSION_REVOKED",
                )
            admin = auth_storage.has_active_admin_key(
                session, row.user_id, storage.utc_now()
            )
        scopes = [auth.SCOPE_ADMIN] if admin else []
        reply = cred_pb.CheckCredentialResponse(principal=claims.subject, scopes=scopes)
        reply.expire_time.FromSeconds(int(claims.expire_time))
        return reply


def _require_active_user(session: Session, user_id: str) -> None:
    user = storage.get_user(session, user_id)
    if user is None or user.state != domain.STATE_ACTIVE:
        raise Unauthenticated(
            f"{domain.user_name(user_id)} is deactivated or deleted; its "
            "credentials no longer work",
            reason=USER_DEACTIVATED,
        )
