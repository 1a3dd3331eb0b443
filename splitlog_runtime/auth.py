"""Credentials: password hashes, access tokens and the gateway's signature.

Clients authenticate at the gateway. The gateway then passes the caller's
identity to a service in three metadata keys: the principal (`users/{user}`, or
`users/{user}/apiKeys/{key}` for an API key), the API key's scopes, and an
HMAC-SHA256 signature over both and a Unix timestamp. A fourth key, the
client's host, is signed too when the gateway passes it. A service
with `auth_required` on accepts a call only with a valid signature that is at
most `SIGNATURE_MAX_AGE_SECONDS` old, so a client that reaches a service port
directly cannot claim a principal. Calls between services are signed the same
way, with the caller's principal when there is one.

One secret (`auth_secret`, or a random one kept in the data directory) gives
two keys through HMAC with a fixed label: one signs access tokens (JWT,
HS256), the other signs principals. A leak of either key does not give the
other.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2
import grpc
from grpc_status import rpc_status

from splitlog_runtime import private_files
from splitlog_runtime.errors import DomainError, PermissionDenied, Unauthenticated
from splitlog_runtime.handlers import handler_parts

_LOGGER = logging.getLogger(__name__)

PRINCIPAL_KEY = "x-splitlog-principal"
SCOPES_KEY = "x-splitlog-scopes"
SIGNATURE_KEY = "x-splitlog-signature"
# The address of the client that the gateway served, when it passes one.
CLIENT_KEY = "x-splitlog-client"
AUTH_METADATA_KEYS = frozenset({PRINCIPAL_KEY, SCOPES_KEY, SIGNATURE_KEY, CLIENT_KEY})

SCOPE_LOGS_WRITE = "logs:write"
SCOPE_LOGS_READ = "logs:read"
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_LOGS_WRITE, SCOPE_LOGS_READ, SCOPE_ADMIN)
# Scopes over operator data: a user's access token carries them only when the
# user is an administrator, and only an administrator may put them on a key.
LOG_SCOPES = frozenset({SCOPE_LOGS_WRITE, SCOPE_LOGS_READ})
# ErrorInfo reason of a credential that lacks the scope that a method needs.
SCOPE_MISSING = "SCOPE_MISSING"
# ErrorInfo reason of a credential, or a sign-in, of a deactivated user.
USER_DEACTIVATED = "USER_DEACTIVATED"
# ErrorInfo metadata key in which the gateway passes on user_service's reason
# for rejecting a credential, such as USER_DEACTIVATED.
CREDENTIAL_REASON_KEY = "credential_reason"

TOKEN_ISSUER = "splitlog"
TOKEN_AUDIENCE = "splitlog"
SECRET_FILE_NAME = "auth_secret"
MIN_SECRET_LENGTH = 32
# A signed call older than this, or this far in the future, is rejected.
SIGNATURE_MAX_AGE_SECONDS = 300
# The principal of a call that a component makes on its own behalf.
SERVICE_PRINCIPAL = "services/splitlog"
# The principal of a call that the gateway let through without a credential.
ANONYMOUS_PRINCIPAL = "anonymous"

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


# Secrets


def load_secret(configured: str, data_dir: Path) -> bytes:
    """Return the auth secret: the configured one, else the one in the data dir.

    The file is created once with 32 random bytes (hex) and mode 0600. Every
    process that shares the data directory reads the same file.

    Raises:
      ValueError: the configured secret is shorter than 32 characters.
    """
    if configured:
        if len(configured) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"auth_secret is {len(configured)} characters long; use at least "
                f"{MIN_SECRET_LENGTH}, for example the output of "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        return configured.encode()
    path = private_files.private_directory(Path(data_dir)) / SECRET_FILE_NAME
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
        _LOGGER.info("created a new auth secret in %s", path)
    # A process that lost the creation race may find the file still empty.
    for _ in range(50):
        text = path.read_text().strip()
        if text:
            return text.encode()
        time.sleep(0.01)
    raise ValueError(f"the auth secret file {path} is empty; delete it and restart")


def derive_key(secret: bytes, purpose: str) -> bytes:
    """Derive a key for one purpose from the auth secret."""
    return hmac.new(secret, f"splitlog {purpose}".encode(), hashlib.sha256).digest()


def new_secret() -> str:
    """Return a URL-safe string with 32 random bytes."""
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """Return the SHA-256 hex digest under which a random secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


# Passwords

_PASSWORD_HASHER = argon2.PasswordHasher()


def hash_password(password: str) -> str:
    """Hash a password with Argon2id (argon2-cffi's default parameters)."""
    return _PASSWORD_HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Return whether a password matches its stored Argon2 hash."""
    try:
        return _PASSWORD_HASHER.verify(stored_hash, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        _LOGGER.error("a stored password hash is malformed")
        return False


def password_needs_rehash(stored_hash: str) -> bool:
    """Return whether a hash was made with weaker parameters than today's."""
    return _PASSWORD_HASHER.check_needs_rehash(stored_hash)


# Access tokens


@dataclass(frozen=True)
class AccessClaims:
    """The claims of a verified access token."""

    subject: str
    session_id: str
    token_id: str
    expire_time: float


class TokenIssuer:
    """Issue and verify access tokens: JWTs signed with HS256."""

    def __init__(
        self, secret: bytes | Callable[[], bytes], lifetime_seconds: int
    ) -> None:
        # A callable secret is read on first use, so that a service with
        # auth_required off creates no secret file until a token is needed.
        self._secret = secret
        self._derived: bytes | None = None
        self.lifetime_seconds = lifetime_seconds

    @property
    def _key(self) -> bytes:
        if self._derived is None:
            secret = self._secret() if callable(self._secret) else self._secret
            self._derived = derive_key(secret, "access tokens")
        return self._derived

    def issue(
        self, subject: str, session_id: str, now: float | None = None
    ) -> tuple[str, float]:
        """Return a new access token and its expiry as a Unix time."""
        # PyJWT loads the cryptography package, which takes a noticeable part
        # of a CLI start, so it is imported where a token is signed or read.
        import jwt

        issued = int(time.time() if now is None else now)
        expire = issued + self.lifetime_seconds
        claims = {
            "iss": TOKEN_ISSUER,
            "aud": TOKEN_AUDIENCE,
            "sub": subject,
            "sid": session_id,
            "iat": issued,
            "exp": expire,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="HS256"), float(expire)

    def encode_claims(self, claims: dict[str, Any]) -> str:
        """Sign arbitrary claims with the token key, for tests of bad tokens."""
        import jwt

        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str) -> AccessClaims:
        """Return the claims of a valid access token.

        Raises:
          Unauthenticated: the token is malformed, badly signed, expired, or
            for another issuer or audience; the message names which.
        """
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=TOKEN_AUDIENCE,
                issuer=TOKEN_ISSUER,
                options={"require": ["iss", "aud", "sub", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated(
                "the access token has expired; get a new one with RefreshToken "
                "or SignIn",
                "TOKEN_EXPIRED",
            ) from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated(
                f"the access token is not meant for splitlog (audience must be "
                f"{TOKEN_AUDIENCE!r}); use a token from SignIn",
                "TOKEN_WRONG_AUDIENCE",
            ) from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated(
                f"the access token was not issued by splitlog (issuer must be "
                f"{TOKEN_ISSUER!r}); use a token from SignIn",
                "TOKEN_WRONG_ISSUER",
            ) from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated(
                "the access token's signature is invalid; it was changed or "
                "signed with another secret; sign in again",
                "TOKEN_INVALID",
            ) from None
        except jwt.DecodeError as exc:
            # PyJWT's message quotes decoder internals, so it goes to the
            # log only. InvalidSignatureError, a subclass, is handled above.
            _LOGGER.debug("rejected a malformed access token: %s", exc)
            raise _unauthenticated(
                "the access token is malformed (not a JWT from SignIn or "
                "RefreshToken); sign in again and send the new access token",
                "TOKEN_MALFORMED",
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(
                f"the access token lacks the {exc.claim!r} claim; sign in again",
                "TOKEN_INVALID",
            ) from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated(
                "the access token's issue time (iat) is in the future; check "
                "the clocks of the client and the server, then sign in again",
                "TOKEN_INVALID",
            ) from None
        except jwt.InvalidTokenError as exc:
            _LOGGER.debug("rejected an invalid access token: %s", exc)
            raise _unauthenticated(
                "the access token is invalid; sign in again", "TOKEN_INVALID"
            ) from None
        subject, session_id = claims.get("sub"), claims.get("sid")
        if not isinstance(subject, str) or not isinstance(session_id, str):
            raise _unauthenticated(
                "the access token lacks its subject or session; sign in again",
                "TOKEN_INVALID",
            )
        return AccessClaims(subject, session_id, str(claims["jti"]), claims["exp"])


def _unauthenticated(message: str, reason: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason)


# Principals


@dataclass(frozen=True)
class Principal:
    """The identity that a call acts for.

    Attributes:
      name: `users/{user}`, `users/{user}/apiKeys/{key}`, or
        `services/splitlog` for a component acting on its own.
      scopes: an API key's scopes. For a user's access token, `admin` when
        the user is an administrator and empty otherwise.
      client: the host of the client that the gateway served the call to,
        or empty; user_service throttles failed sign-ins per client.
    """

    name: str
    scopes: frozenset[str] = frozenset()
    client: str = ""

    @property
    def is_api_key(self) -> bool:
        return "/apiKeys/" in self.name

    @property
    def is_service(self) -> bool:
        return self.name.startswith("services/")

    @property
    def is_administrator(self) -> bool:
        """Whether the principal is a service or carries the `admin` scope."""
        return self.is_service or SCOPE_ADMIN in self.scopes

    @property
    def user(self) -> str | None:
        """The user that the principal acts for, `users/{user}`, if any."""
        if not self.name.startswith("users/"):
            return None
        return "/".join(self.name.split("/")[:2])

    def allows(self, scope: str) -> bool:
        """Return whether the principal may call a method that needs `scope`.

        An API key needs the scope or `admin`. A user's access token acts as
        its user, which covers every method that needs `admin` of a key, but
        it has a log scope only when the user is an administrator.
        """
        if self.is_administrator or scope in self.scopes:
            return True
        if self.is_api_key:
            return False
        return scope not in LOG_SCOPES


_CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "splitlog_principal", default=None
)


def current_principal() -> Principal | None:
    """Return the principal of the call being served, or None."""
    return _CURRENT_PRINCIPAL.get()


@contextlib.contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """Make `principal` the current one inside the block."""
    token = _CURRENT_PRINCIPAL.set(principal)
    try:
        yield
    finally:
        _CURRENT_PRINCIPAL.reset(token)


def peer_host(peer: str) -> str:
    """Return the host of a gRPC peer string such as `ipv4:127.0.0.1:5000`.

    The port is dropped so that every connection from one host counts as one
    client, and the address is written as `canonical_address` does. grpc
    (1.85) writes an IPv6 peer with percent-encoded brackets, such as
    `ipv6:%5B::1%5D:5000`. Other peer kinds, such as `unix:/path`, are
    returned whole.
    """
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = urllib.parse.unquote(address.rpartition(":")[0] or address)
    return canonical_address(host) or host


def canonical_address(host: str) -> str | None:
    """Return an IP address in one canonical form, or None for other text.

    An IPv4-mapped IPv6 address, such as `::ffff:10.1.1.1`, becomes its IPv4
    address, and an IPv6 address is written compressed in lower case, with
    or without brackets around it. IPv4 text with leading zeros, such as
    `010.001.001.001`, is not an address: Python's ipaddress rejects it
    (since 3.9.5), because other parsers read it as octal.
    """
    text = host.strip().removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


# The prefix length of the IPv6 network that counts as one client.
IPV6_CLIENT_PREFIX = 64


def client_key(host: str) -> str:
    """Return the name under which per-client limits count a client host.

    An IPv4 address counts alone. An IPv6 address counts as its /64 network,
    because a site usually gets a whole /64 and could take a new address
    for each attempt. Text that is not an IP address, such as a Unix socket
    path, is returned as it is.
    """
    text = canonical_address(host)
    if text is None:
        return host
    address = ipaddress.ip_address(text)
    if address.version == 4:
        return text
    # int() drops an IPv6 zone id, which the network form cannot contain.
    network = ipaddress.IPv6Network((int(address), IPV6_CLIENT_PREFIX), strict=False)
    return str(network)


def caller_key(principal: Principal | None, client_host: str) -> str:
    """Return the name that per-caller limits count a call under.

    An authenticated principal is the name, so each user and each API key
    counts on its own. An anonymous call, or one without a principal, counts
    by the client's host, as `peer/{host}`, with an IPv6 host counted by its
    /64 network (see `client_key`).
    """
    if principal is not None and principal.name != ANONYMOUS_PRINCIPAL:
        return principal.name
    return f"peer/{client_key(client_host) or 'unknown'}"


def metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str:
    """Return the first value of a metadata key as text, or ''."""
    for item_key, value in metadata or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


class PrincipalSigner:
    """Sign and verify the principal metadata that the gateway sends."""

    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "principal signatures")

    def _mac(self, principal: str, scopes: str, stamp: str, client: str = "") -> str:
        # The client joins the signed text only when there is one, so
        # signatures without a client read the same as before it existed.
        parts = (
            (principal, scopes, stamp, client) if client else (principal, scopes, stamp)
        )
        message = "\n".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def metadata(
        self, principal: Principal, now: float | None = None
    ) -> tuple[tuple[str, str], ...]:
        """Return the three metadata entries for one call."""
        scopes = ",".join(sorted(principal.scopes))
        stamp = str(int(time.time() if now is None else now))
        mac = self._mac(principal.name, scopes, stamp, principal.client)
        entries = (
            (PRINCIPAL_KEY, principal.name),
            (SCOPES_KEY, scopes),
            (SIGNATURE_KEY, f"v1:{stamp}:{mac}"),
        )
        if principal.client:
            entries += ((CLIENT_KEY, principal.client),)
        return entries

    def verify(
        self,
        metadata: Iterable[tuple[str, Any]] | None,
        signers: str = "the gateway",
        advice: str = "call the gateway instead",
    ) -> Principal:
        """Return the signed principal of a call.

        Args:
          metadata: the call's invocation metadata.
          signers: who may sign calls to this server, for the messages.
          advice: what a rejected caller should do instead, for the messages.

        Raises:
          Unauthenticated: the signature is missing, malformed, too old or
            does not match.
        """
        metadata = tuple(metadata or ())
        name = metadata_value(metadata, PRINCIPAL_KEY)
        scopes = metadata_value(metadata, SCOPES_KEY)
        signature = metadata_value(metadata, SIGNATURE_KEY)
        client = metadata_value(metadata, CLIENT_KEY)
        if not name or not signature:
            raise _unauthenticated(
                f"this server accepts only calls signed by {signers}; the "
                f"{PRINCIPAL_KEY} or {SIGNATURE_KEY} metadata is missing; {advice}",
                "GATEWAY_SIGNATURE_MISSING",
            )
        version, _, rest = signature.partition(":")
        stamp, _, mac = rest.partition(":")
        if version != "v1" or not stamp.isdigit() or not mac:
            raise _unauthenticated(
                f"the {SIGNATURE_KEY} metadata is malformed (expected "
                f"v1:<unix time>:<hmac>); {advice}",
                "GATEWAY_SIGNATURE_INVALID",
            )
        if abs(time.time() - int(stamp)) > SIGNATURE_MAX_AGE_SECONDS:
            raise _unauthenticated(
                f"the call's signature is more than {SIGNATURE_MAX_AGE_SECONDS} "
                "seconds old or ahead; check that the clocks agree",
                "GATEWAY_SIGNATURE_EXPIRED",
            )
        expected = self._mac(name, scopes, stamp, client)
        if not hmac.compare_digest(expected, mac):
            raise _unauthenticated(
                f"the call's signature does not match; {signers} and this "
                "server must share the same auth_secret",
                "GATEWAY_SIGNATURE_INVALID",
            )
        return Principal(name, frozenset(filter(None, scopes.split(","))), client)


# The signer that outgoing calls between components use, once a component
# with auth_required has started in this process.
# NOTE: one signer per process, so every component of a process must share
# one auth_secret (as `splitlog up` and the settings make them).
_PROCESS_SIGNER: PrincipalSigner | None = None


def install_process_signer(signer: PrincipalSigner | None) -> None:
    """Sign every later call that components of this process make to others."""
    global _PROCESS_SIGNER
    _PROCESS_SIGNER = signer


def install_signer_from_settings(secret: str, data_dir: Path) -> PrincipalSigner:
    """Load the auth secret, sign this process's outgoing calls, return the signer.

    Raises:
      ValueError: the configured secret is too short.
    """
    signer = PrincipalSigner(load_secret(secret, data_dir))
    install_process_signer(signer)
    return signer


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Return signed metadata for the current principal, or () without a signer.

    Without a current principal the call is signed as `SERVICE_PRINCIPAL`.
    """
    signer = _PROCESS_SIGNER
    if signer is None:
        return ()
    principal = current_principal() or Principal(SERVICE_PRINCIPAL)
    return signer.metadata(principal)


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: Sequence) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = details.wait_for_ready
        self.compression = details.compression


class SigningClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Add the process signer's principal metadata to every outgoing call."""

    def _sign(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        extra = outgoing_metadata()
        if not extra:
            return details
        kept = [
            (key, value)
            for key, value in (details.metadata or ())
            if key not in AUTH_METADATA_KEYS
        ]
        return _ClientCallDetails(details, [*kept, *extra])

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._sign(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._sign(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, requests):
        return continuation(self._sign(client_call_details), requests)

    def intercept_stream_stream(self, continuation, client_call_details, requests):
        return continuation(self._sign(client_call_details), requests)


def signing_channel(channel: grpc.Channel) -> grpc.Channel:
    """Wrap a sync channel so that its calls carry the process's signature."""
    return grpc.intercept_channel(channel, SigningClientInterceptor())


# The service side


def open_services(open_health: bool, open_reflection: bool) -> frozenset[str]:
    """Return the services that need no credential under these settings."""
    names: set[str] = set()
    if open_health:
        names.add(HEALTH_SERVICE)
    if open_reflection:
        names.update(REFLECTION_SERVICES)
    return frozenset(names)


def _service_of(method: str) -> str:
    return method.lstrip("/").split("/", 1)[0]


class ServiceAuthInterceptor(grpc.ServerInterceptor):
    """Reject calls to a sync server that the gateway did not sign.

    The verified principal is current (`current_principal()`) while the
    handler runs. Health is always open, because the gateway and
    `splitlog health` watch it without a principal.
    """

    def __init__(
        self,
        signer: PrincipalSigner,
        open_service_names: Iterable[str] = (),
        *,
        signers: str = "the gateway",
        advice: str = "call the gateway instead",
    ) -> None:
        self._signer = signer
        self._open = frozenset({HEALTH_SERVICE, *open_service_names})
        self._signers = signers
        self._advice = advice

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if _service_of(method) in self._open:
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        try:
            principal = self._signer.verify(
                handler_call_details.invocation_metadata, self._signers, self._advice
            )
        except Unauthenticated as error:
            return _rejecting_handler(handler, error, method)
        return _with_principal(handler, principal)


def _rejecting_handler(
    handler: grpc.RpcMethodHandler, error: DomainError, method: str
) -> grpc.RpcMethodHandler:
    _, factory = handler_parts(handler)
    status = rpc_status.to_status(error.to_status())

    def reject(request_or_iterator: Any, context: grpc.ServicerContext):
        # The caller's address identifies the process that sent it, for example a
        # component started with another deployment's auth secret.
        _LOGGER.warning(
            "rejected an unsigned call to %s from %s: %s",
            method,
            context.peer(),
            error.reason,
        )
        context.abort_with_status(status)

    return factory(
        reject,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _with_principal(
    handler: grpc.RpcMethodHandler, principal: Principal
) -> grpc.RpcMethodHandler:
    behavior, factory = handler_parts(handler)
    if handler.response_streaming:

        def wrapped(request_or_iterator: Any, context: grpc.ServicerContext):
            with acting_as(principal):
                yield from behavior(request_or_iterator, context)

    else:

        def wrapped(request_or_iterator: Any, context: grpc.ServicerContext):
            with acting_as(principal):
                return behavior(request_or_iterator, context)

    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def require_scope(principal: Principal, scope: str, method: str) -> None:
    """Raise PERMISSION_DENIED unless the principal may use a scope.

    Raises:
      PermissionDenied: an API key without the scope or `admin`, or a
        non-administrator's access token on a method that needs a log scope.
    """
    if principal.allows(scope):
        return
    if principal.is_api_key:
        holder = (
            f"the API key {principal.name} lacks the scope {scope!r} that "
            f"{method} needs (it has {', '.join(sorted(principal.scopes)) or 'none'})"
        )
    else:
        holder = (
            f"{principal.name} lacks the scope {scope!r} that {method} needs, "
            "because an access token carries log scopes only for an administrator"
        )
    raise PermissionDenied(
        f"{holder}; {scope_grant_advice(scope)}",
        reason=SCOPE_MISSING,
        metadata={"scope": scope, "principal": principal.name},
    )


def scope_grant_advice(scope: str) -> str:
    """Return how a caller gets a credential with `scope`, for messages."""
    if scope == SCOPE_ADMIN:
        credential = f"an API key with {SCOPE_ADMIN!r}"
    else:
        credential = f"an API key with {scope!r} (or {SCOPE_ADMIN!r})"
    return (
        f"use {credential}, which only an administrator can create "
        f"(`splitlog auth keys create --name NAME --scope {scope}`); an operator "
        "makes a user an administrator with `splitlog admin-key USER_ID`"
    )
