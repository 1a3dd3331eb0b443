"""Authentication at the gateway, on both fronts, when `auth_required` is on.

Every call must carry `authorization: Bearer <credential>` (gRPC metadata or
HTTP header), where the credential is an access token from SignIn or an API
key. A call with two such entries is rejected as ambiguous. On the REST
front, a `Grpc-Metadata-Authorization` header is such an entry too.
user_service's internal CredentialService checks the credential, including
whether its session was signed out or the key revoked, on the credential's
first call and again once the gateway's cached result goes stale (see
below). A check takes at most `deadline_seconds`. It also ends a margin
before the caller's deadline (`splitlog_runtime.channels.answer_before`) and
then fails with DEADLINE_EXCEEDED (reason CREDENTIAL_CHECK_DEADLINE_EXCEEDED,
REST 504). A client that set a deadline thus receives this error rather than
its own.
Methods that cannot have a credential yet (SignUp, SignIn, RefreshToken)
and, by default, health and reflection are open. With `auth_open_health`
off, a health call may carry a principal signed with the auth secret in
place of a credential, as `splitlog up --processes` sends.

API keys are limited by their scopes: LogsService writes and OTLP's
LogsService/Export need `logs:write`, LogsService reads `logs:read`, and every
other method needs `admin`, which also allows everything. An access token acts
as its user on every method outside LogsService and OTLP. Logs are operator
data, so there the token needs the scope too, which user_service gives it only
when the user is an administrator (`admin`). UpdateRetentionPolicy deletes
everyone's old entries and needs an administrator, whatever the credential.

The principal is current (`splitlog_runtime.auth.current_principal()`) while
the call runs, so `gateway.proxy.forwardable` signs it for the backend. The
credential itself stays at the gateway: `forwardable` drops it.

An accepted credential is kept for `auth_cache_seconds` (see
`gateway.credential_cache`), so most calls need no CheckCredential. The calls
that revoke credentials drop what they affect once they end, before their
reply reaches the client, on both fronts (`call_ended`):
- SignOut ends a session, whose access tokens the gateway cannot tell from
  the refresh token, so it drops every credential. So does a RefreshToken or
  SignOut that fails with reason REFRESH_TOKEN_REUSED, because user_service
  then revokes the session of the reused refresh token.
- SetPassword (ends the user's sessions), RevokeApiKey, CreateApiKey (an
  `admin` key makes the user's tokens administrators) and DeactivateUser
  drop the credentials of the user that the request names, whatever the
  outcome.
Other gateways keep their entries until they go stale.

A call with a stream on either side has its credential checked again while
it runs, bypassing the cache, and ends when a check fails
(`gateway.stream_auth`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway import stream_auth, stream_writes
from gateway.credential_cache import Checked, CredentialCache, checked_reply
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import credential_service_pb2 as cred_pb
from splitlog.auth.v1 import credential_service_pb2_grpc as cred_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime import auth, authz
from splitlog_runtime.channels import aio_insecure_channel, answer_before
from splitlog_runtime.config import Config
from splitlog_runtime.errors import (
    STATUS_DETAILS_KEY,
    DeadlineExceeded,
    DomainError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    status_reason,
)

_LOGGER = logging.getLogger(__name__)

_AUTH = "/splitlog.auth.v1.AuthService/"
OPEN_METHODS = frozenset({_AUTH + "SignUp", _AUTH + "SignIn", _AUTH + "RefreshToken"})

_USERS = "/splitlog.users.v1.UsersService/"

# Calls that may revoke a session, after which every kept credential is dropped.
SIGN_OUT = _AUTH + "SignOut"
SESSION_METHODS = frozenset({SIGN_OUT, _AUTH + "RefreshToken"})
# The ErrorInfo reason of a refresh token presented again, which revokes
# its session.
REFRESH_TOKEN_REUSED = "REFRESH_TOKEN_REUSED"

# Calls that change the credentials of one user, by request type and the
# field that names the user or one of its keys.
USER_METHODS: dict[str, tuple[type[Message], str]] = {
    _AUTH + "SetPassword": (auth_pb.SetPasswordRequest, "name"),
    _AUTH + "CreateApiKey": (auth_pb.CreateApiKeyRequest, "parent"),
    _AUTH + "RevokeApiKey": (auth_pb.RevokeApiKeyRequest, "name"),
    _USERS + "DeactivateUser": (users_pb.DeactivateUserRequest, "name"),
}
REVOKING_METHODS = SESSION_METHODS | USER_METHODS.keys()

_LOGS = "/splitlog.logs.v1.LogsService/"
SCOPE_BY_METHOD: dict[str, str] = {
    _LOGS + "WriteLogEntry": auth.SCOPE_LOGS_WRITE,
    _LOGS + "WriteLogEntries": auth.SCOPE_LOGS_WRITE,
    _LOGS + "StreamLogEntries": auth.SCOPE_LOGS_WRITE,
    _LOGS + "ListLogEntries": auth.SCOPE_LOGS_READ,
    _LOGS + "TailLogEntries": auth.SCOPE_LOGS_READ,
    _LOGS + "GetLogStats": auth.SCOPE_LOGS_READ,
    _LOGS + "GetClusterStatus": auth.SCOPE_LOGS_READ,
    _LOGS + "GetRetentionPolicy": auth.SCOPE_LOGS_READ,
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export": (
        auth.SCOPE_LOGS_WRITE
    ),
}

# Methods that need an administrator (a key with `admin`, or an
# administrator's access token) rather than a user acting as themselves.
ADMIN_METHODS = frozenset({_LOGS + "UpdateRetentionPolicy"})

ANONYMOUS = auth.Principal(auth.ANONYMOUS_PRINCIPAL)

AUTHORIZATION = "authorization"
# ErrorInfo reasons of the credential errors that the gateway raises itself.
CREDENTIAL_MISSING = "CREDENTIAL_MISSING"
CREDENTIAL_MALFORMED = "CREDENTIAL_MALFORMED"
CREDENTIAL_AMBIGUOUS = "CREDENTIAL_AMBIGUOUS"
CREDENTIAL_INVALID = stream_auth.CREDENTIAL_INVALID
CREDENTIAL_CHECK_DEADLINE_EXCEEDED = "CREDENTIAL_CHECK_DEADLINE_EXCEEDED"


def required_scope(method: str) -> str:
    """Return the API key scope that a method path needs."""
    return SCOPE_BY_METHOD.get(method, auth.SCOPE_ADMIN)


def bearer_credential(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """Return the credential of an `authorization: Bearer` entry.

    Raises:
      Unauthenticated: the entry is missing, repeated, or not a Bearer
        credential.
    """
    metadata = list(metadata or ())
    entries = [value for key, value in metadata if key == AUTHORIZATION]
    if len(entries) > 1:
        # Proxies and libraries disagree on which copy wins, so a second
        # header could make the gateway check another credential than the
        # one that a proxy in front of it logged or checked.
        raise Unauthenticated(
            f"the call has {len(entries)} authorization headers, and the "
            "gateway accepts exactly one; send a single `authorization: "
            "Bearer <token>` header",
            reason=CREDENTIAL_AMBIGUOUS,
            metadata={"header": AUTHORIZATION},
        )
    header = auth.metadata_value(metadata, AUTHORIZATION).strip()
    if not header:
        raise Unauthenticated(
            "this call needs a credential; send `authorization: Bearer <token>` "
            "with an access token from SignIn or an API key",
            reason=CREDENTIAL_MISSING,
        )
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated(
            "the authorization header must be `Bearer <token>`; other schemes "
            "are not supported",
            reason=CREDENTIAL_MALFORMED,
        )
    if not credential.strip():
        raise Unauthenticated(
            "the authorization header has the Bearer scheme but an empty token; "
            "send `authorization: Bearer <token>` with an access token from "
            "SignIn or an API key after `Bearer `",
            reason=CREDENTIAL_MALFORMED,
        )
    return credential.strip()


class GatewayAuth:
    """Authenticate the calls of both fronts and sign their principals."""

    def __init__(self, config: Config) -> None:
        self.signer = auth.PrincipalSigner(
            auth.load_secret(config.auth_secret, config.data_dir)
        )
        auth.install_process_signer(self.signer)
        self._open_services = auth.open_services(
            config.auth_open_health, config.auth_open_reflection
        )
        self._timeout = config.deadline_seconds
        self._channel = aio_insecure_channel(
            config.service_address("user_service"), config.max_message_bytes
        )
        self._stub = cred_grpc.CredentialServiceStub(self._channel)
        self.cache = CredentialCache(config.auth_cache_seconds)

    async def close(self) -> None:
        await self._channel.close()

    def is_open(self, method: str) -> bool:
        service = method.lstrip("/").split("/", 1)[0]
        return method in OPEN_METHODS or service in self._open_services

    async def authenticate(
        self,
        method: str,
        metadata: Iterable[tuple[str, Any]] | None,
        client: str = "",
        time_left: float | None = None,
    ) -> auth.Principal:
        """Return the principal of a call to `method`.

        `client` is the caller's host. It travels signed with the principal,
        so that user_service can count failed sign-ins per client.
        `time_left` is the seconds left of the caller's deadline, or None
        when it set none.

        Raises:
          Unauthenticated: the credential is missing, malformed, invalid,
            expired or revoked.
          PermissionDenied: the credential lacks the method's scope, or the
            method needs an administrator.
          Unavailable: user_service cannot check the credential.
          DeadlineExceeded: user_service did not check the credential a
            margin before the caller's deadline.
        """
        principal, _ = await self.authenticate_stream(
            method, metadata, client, watch=False, time_left=time_left
        )
        return principal

    async def authenticate_stream(
        self,
        method: str,
        metadata: Iterable[tuple[str, Any]] | None,
        client: str = "",
        watch: bool = True,
        time_left: float | None = None,
    ) -> tuple[auth.Principal, asyncio.Task[DomainError] | None]:
        """Return the principal of a long-lived call and a check of its credential.

        The task (see `gateway.stream_auth`) checks the credential again
        while the call runs and returns the error that must end the call once
        the credential is revoked, has expired or lacks the method's scope.
        The caller cancels it when the call ends. It is None when `watch` is
        false or the call has no credential to check: an open method, or a
        health call signed by splitlog's components.

        Raises:
          the errors of `authenticate`.
        """
        if self.is_open(method):
            return dataclasses.replace(ANONYMOUS, client=client), None
        metadata = list(metadata or ())
        if _is_health(method) and auth.metadata_value(metadata, auth.SIGNATURE_KEY):
            # `splitlog up --processes` waits for the gateway with health
            # checks signed like calls between components, since it has the
            # auth secret but no credential.
            principal = self.signer.verify(
                metadata,
                signers="splitlog's components",
                advice="send `authorization: Bearer <token>` instead",
            )
            return principal, None
        credential = bearer_credential(metadata)
        checked = await self._check_cached(credential, time_left)
        principal = _authorized(method, checked, client)
        if not watch:
            return principal, None

        async def recheck() -> Checked:
            # The cache is skipped, so that a revocation ends the call within
            # one interval even while other calls keep the entry fresh.
            rechecked = checked_reply(await self._check(credential))
            _authorized(method, rechecked, client)
            return rechecked

        interval = self.cache.seconds or stream_auth.MIN_RECHECK_SECONDS
        task = asyncio.ensure_future(
            stream_auth.watch_credential(method, checked, recheck, interval)
        )
        return principal, task

    async def _check_cached(self, credential: str, time_left: float | None) -> Checked:
        """Check a credential through the cache and return the result.

        A cached result is returned at once. A new check must end a margin
        before the caller's deadline, `time_left` seconds away. When this
        caller gives up, a check that the cache shares with other callers
        continues for them.

        Raises:
          Any error of `_check`.
          DeadlineExceeded: the check did not end a margin before the
            caller's deadline.
        """
        limit = None
        if time_left is not None and time_left <= 1e9:
            limit = answer_before(time_left)
            if limit >= self._timeout:
                # The check's own timeout expires first, so set no limit.
                limit = None
        # A cached result is returned without suspending, so even a deadline
        # that has passed does not interrupt it.
        timeout = asyncio.timeout(limit)
        try:
            async with timeout:
                return await self.cache.check(credential, self._check)
        except TimeoutError:
            if not timeout.expired():
                raise
            raise DeadlineExceeded(
                "user_service did not check the credential within the call's "
                "deadline. Retry the call, and set a longer deadline if it "
                "times out again.",
                reason=CREDENTIAL_CHECK_DEADLINE_EXCEEDED,
                retry_delay=1.0,
            ) from None

    async def _check(self, credential: str) -> cred_pb.CheckCredentialResponse:
        """Ask user_service for the principal of a credential.

        Raises:
          Unauthenticated: user_service rejected the credential.
          Unavailable: user_service cannot check it.
        """
        try:
            return await self._stub.CheckCredential(
                cred_pb.CheckCredentialRequest(credential=credential),
                timeout=self._timeout,
                metadata=self.signer.metadata(auth.Principal(auth.SERVICE_PRINCIPAL)),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                # Every rejection keeps the reason CREDENTIAL_INVALID. The
                # metadata adds user_service's reason, so that a client can
                # tell USER_DEACTIVATED, where signing in again fails too.
                cause = trailing_reason(error.trailing_metadata())
                raise Unauthenticated(
                    error.details() or "the credential is not valid",
                    reason=CREDENTIAL_INVALID,
                    metadata={auth.CREDENTIAL_REASON_KEY: cause} if cause else None,
                ) from None
            _LOGGER.warning(
                "checking a credential failed: %s %s", error.code(), error.details()
            )
            raise Unavailable(
                "the gateway cannot check credentials right now; retry shortly",
                reason="CREDENTIAL_CHECK_UNAVAILABLE",
                retry_delay=1.0,
            ) from None

    def watches(self, method: str) -> bool:
        """Return whether `call_ended` must run when a call of `method` ends."""
        return self.cache.enabled and method in REVOKING_METHODS

    def call_ended(
        self, method: str, request: Message | bytes, ok: bool, reason: str
    ) -> None:
        """Drop the kept credentials that a call may have revoked.

        Args:
          method: the call's method path.
          request: the request message, or its bytes.
          ok: whether the call succeeded.
          reason: the ErrorInfo reason of a failed call, or empty.
        """
        if not self.watches(method):
            return
        if method in SESSION_METHODS:
            if (ok and method == SIGN_OUT) or reason == REFRESH_TOKEN_REUSED:
                self.cache.clear()
            return
        message_class, field = USER_METHODS[method]
        if isinstance(request, bytes):
            try:
                request = message_class.FromString(request)
            except DecodeError:
                # user_service cannot read it either, so nothing changed.
                return
        name = getattr(request, field)
        if name.startswith("users/"):
            self.cache.forget_user("/".join(name.split("/")[:2]))


def _authorized(method: str, checked: Checked, client: str) -> auth.Principal:
    """Return the principal of a checked credential if it may call `method`.

    Raises:
      PermissionDenied: the credential lacks the method's scope, or the
        method needs an administrator.
    """
    principal = auth.Principal(checked.principal, checked.scopes, client)
    # An administrator-only method returns ADMIN_REQUIRED whatever scopes
    # the credential has, so that the reason matches the fix.
    if method in ADMIN_METHODS:
        require_administrator(principal, method.lstrip("/"))
    else:
        auth.require_scope(principal, required_scope(method), method.lstrip("/"))
    return principal


def _is_health(method: str) -> bool:
    return method.lstrip("/").split("/", 1)[0] == auth.HEALTH_SERVICE


def trailing_reason(trailing_metadata: Iterable[tuple[str, Any]] | None) -> str:
    """Return the ErrorInfo reason in a call's trailing metadata, or empty."""
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_reason(status_pb2.Status.FromString(value))
            except DecodeError:
                return ""
    return ""


# The `error` of the WWW-Authenticate challenge (RFC 6750, section 3.1) by the
# reason of an UNAUTHENTICATED status. Other reasons get no error code, which
# RFC 6750 recommends when a request lacks any credential or uses another
# scheme. RFC 6750 suggests HTTP 400 for invalid_request, but the gateway
# keeps 401 so that REST and gRPC agree on UNAUTHENTICATED.
_CHALLENGE_ERRORS = {
    CREDENTIAL_INVALID: "invalid_token",
    CREDENTIAL_AMBIGUOUS: "invalid_request",
}
REALM = "splitlog"


def bearer_challenge(status: status_pb2.Status) -> dict[str, str]:
    """Return the WWW-Authenticate header for an HTTP error reply, or none.

    Every UNAUTHENTICATED status (HTTP 401) gets a Bearer challenge, because
    a 401 response must have one (RFC 7235, section 3.1). A missing scope
    (HTTP 403) gets the `insufficient_scope` challenge that names the scope.
    """
    info = error_info(status)
    reason = info.reason if info is not None else ""
    if status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]:
        parameters = [f'realm="{REALM}"']
        error = _CHALLENGE_ERRORS.get(reason)
        if error is not None:
            parameters.append(f'error="{error}"')
        return {"WWW-Authenticate": "Bearer " + ", ".join(parameters)}
    if reason == auth.SCOPE_MISSING and info.metadata.get("scope") in auth.SCOPES:
        scope = info.metadata["scope"]
        return {
            "WWW-Authenticate": f'Bearer realm="{REALM}", '
            f'error="insufficient_scope", scope="{scope}"'
        }
    return {}


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """Return the ErrorInfo detail of a status, or None."""
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return info
    return None


def require_administrator(principal: auth.Principal, method: str) -> None:
    """Raise PERMISSION_DENIED unless the principal is an administrator."""
    if principal.is_administrator:
        return
    raise PermissionDenied(
        f"{method} needs an administrator, and {principal.name} is not one; "
        f"{auth.scope_grant_advice(auth.SCOPE_ADMIN)}",
        reason=authz.ADMIN_REQUIRED,
        metadata={"method": method, "principal": principal.name},
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticate every call of the gateway's gRPC front before it runs."""

    def __init__(self, gateway_auth: GatewayAuth) -> None:
        self._auth = gateway_auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _authenticating_handler(handler, handler_call_details.method, self._auth)


async def _abort(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    await context.abort_with_status(rpc_status.to_status(error.to_status()))


def _authenticating_handler(
    handler: grpc.RpcMethodHandler, method: str, gateway_auth: GatewayAuth
) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    elif handler.unary_stream:
        behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    elif handler.stream_unary:
        behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    else:
        behavior = handler.stream_stream
        factory = grpc.stream_stream_rpc_method_handler

    async def principal_of(
        context: grpc.aio.ServicerContext, watch: bool = False
    ) -> tuple[auth.Principal, asyncio.Task[DomainError] | None]:
        try:
            return await gateway_auth.authenticate_stream(
                method,
                context.invocation_metadata(),
                auth.peer_host(context.peer()),
                watch=watch,
                time_left=context.time_remaining(),
            )
        except DomainError as error:
            await _abort(context, error)
            raise AssertionError("context.abort_with_status() returned") from None

    # A call with a stream on either side can stay open for long, so its
    # credential is checked again while it runs (see `gateway.stream_auth`).
    streaming = handler.unary_unary is None

    # A streaming handler either yields its responses or is a coroutine that
    # sends them with `await context.write()`, as Health/Watch does. A
    # generator becomes such a coroutine, so that no generator stays suspended
    # inside `acting_as` when the client leaves mid-stream (see
    # `gateway.stream_writes`). A failed credential check then also ends a
    # write that waits for a stalled client.
    behavior = stream_writes.writing(behavior, method)

    if gateway_auth.watches(method):

        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext):
            principal, _ = await principal_of(context)
            ok = False
            try:
                with auth.acting_as(principal):
                    response = await behavior(request_or_iterator, context)
                ok = True
                return response
            finally:
                reason = "" if ok else trailing_reason(context.trailing_metadata())
                gateway_auth.call_ended(method, request_or_iterator, ok, reason)

    else:

        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext):
            principal, watch = await principal_of(context, watch=streaming)
            with auth.acting_as(principal):
                if watch is None:
                    return await behavior(request_or_iterator, context)
                try:
                    return await stream_auth.run_until_failed(
                        behavior(request_or_iterator, context), watch
                    )
                except stream_auth.CredentialRejected as rejected:
                    await _abort(context, rejected.error)
                finally:
                    watch.cancel()

    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
