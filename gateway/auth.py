"""Authentication at the gateway, on both fronts, when `auth_required` is on.

Every call must carry `authorization: Bearer <credential>` (gRPC metadata or
HTTP header), where the credential is an access token from SignIn or an API
key. user_service's internal CredentialService checks it, including whether
its session was signed out or the key revoked, on every call. Methods that
cannot have a credential yet (SignUp, SignIn, RefreshToken) and, by default,
health and reflection are open.

API keys are limited by their scopes: LogsService writes and OTLP's
LogsService/Export need `logs:write`, LogsService reads `logs:read`, and every
other method needs `admin`, which also allows everything. An access token acts
as its user on every method outside LogsService and OTLP. Logs are operator
data, so there the token needs the scope too, which user_service gives it only
when the user is an administrator (`admin`). UpdateRetentionPolicy deletes
everyone's old entries and needs an administrator, whatever the credential.

The principal is current (`splitlog_runtime.auth.current_principal()`) while
the call runs, so `gateway.proxy.forwardable` signs it for the backend.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_status import rpc_status

from splitlog.auth.v1 import credential_service_pb2 as cred_pb
from splitlog.auth.v1 import credential_service_pb2_grpc as cred_grpc
from splitlog_runtime import auth, authz
from splitlog_runtime.channels import aio_insecure_channel
from splitlog_runtime.config import Config
from splitlog_runtime.errors import (
    DomainError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

_LOGGER = logging.getLogger(__name__)

_AUTH = "/splitlog.auth.v1.AuthService/"
OPEN_METHODS = frozenset({_AUTH + "SignUp", _AUTH + "SignIn", _AUTH + "RefreshToken"})

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

ANONYMOUS = auth.Principal("anonymous")


def required_scope(method: str) -> str:
    """Return the API key scope that a method path needs."""
    return SCOPE_BY_METHOD.get(method, auth.SCOPE_ADMIN)


def bearer_credential(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """Return the credential of an `authorization: Bearer` entry.

    Raises:
      Unauthenticated: the entry is missing or not a Bearer credential.
    """
    header = auth.metadata_value(metadata, "authorization").strip()
    if not header:
        raise Unauthenticated(
            "this call needs a credential; send `authorization: Bearer <token>` "
            "with an access token from SignIn or an API key",
            reason="CREDENTIAL_MISSING",
        )
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated(
            "the authorization header must be `Bearer <token>`; other schemes "
            "are not supported",
            reason="CREDENTIAL_MALFORMED",
        )
    if not credential.strip():
        raise Unauthenticated(
            "the authorization header has the Bearer scheme but an empty token; "
            "send `authorization: Bearer <token>` with an access token from "
            "SignIn or an API key after `Bearer `",
            reason="CREDENTIAL_MALFORMED",
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
    ) -> auth.Principal:
        """Return the principal of a call to `method`.

        `client` is the caller's host. It travels signed with the principal,
        so that user_service can count failed sign-ins per client.

        Raises:
          Unauthenticated: the credential is missing, malformed, invalid,
            expired or revoked.
          PermissionDenied: the credential lacks the method's scope, or the
            method needs an administrator.
          Unavailable: user_service cannot check the credential.
        """
        if self.is_open(method):
            return dataclasses.replace(ANONYMOUS, client=client)
        credential = bearer_credential(metadata)
        try:
            reply = await self._stub.CheckCredential(
                cred_pb.CheckCredentialRequest(credential=credential),
                timeout=self._timeout,
                metadata=self.signer.metadata(auth.Principal(auth.SERVICE_PRINCIPAL)),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(
                    error.details() or "the credential is not valid",
                    reason="CREDENTIAL_INVALID",
                ) from None
            _LOGGER.warning(
                "checking a credential failed: %s %s", error.code(), error.details()
            )
            raise Unavailable(
                "the gateway cannot check credentials right now; retry shortly",
                reason="CREDENTIAL_CHECK_UNAVAILABLE",
                retry_delay=1.0,
            ) from None
        principal = auth.Principal(reply.principal, frozenset(reply.scopes), client)
        # An administrator-only method returns ADMIN_REQUIRED whatever scopes
        # the credential has, so that the reason matches the fix.
        if method in ADMIN_METHODS:
            require_administrator(principal, method.lstrip("/"))
        else:
            auth.require_scope(principal, required_scope(method), method.lstrip("/"))
        return principal


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

    async def principal_of(context: grpc.aio.ServicerContext) -> auth.Principal:
        try:
            return await gateway_auth.authenticate(
                method, context.invocation_metadata(), auth.peer_host(context.peer())
            )
        except DomainError as error:
            await context.abort_with_status(rpc_status.to_status(error.to_status()))
            raise AssertionError("context.abort_with_status() returned") from None

    if handler.response_streaming:

        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext):
            principal = await principal_of(context)
            with auth.acting_as(principal):
                async for response in behavior(request_or_iterator, context):
                    yield response

    else:

        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext):
            principal = await principal_of(context)
            with auth.acting_as(principal):
                return await behavior(request_or_iterator, context)

    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
