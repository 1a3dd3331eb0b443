"""The gRPC connection from the client commands to the gateway.

Every call carries a deadline. A failed call becomes a `ServerError` whose
message is one line built from the status message and its google.rpc details,
or `Unreachable` when nothing listens at the gateway address.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitlog.auth.v1 import auth_service_pb2 as auth_pb2
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.client.credentials import BearerInterceptor, Credential
from splitlog_runtime.channels import insecure_channel
from splitlog_runtime.tls import ClientTls, secure_channel

DEFAULT_TIMEOUT = 10.0
# How long a failed call waits for the channel to connect before the command
# reports the gateway as unreachable rather than passing on the error.
_CONNECT_PROBE_SECONDS = 1.0

Response = TypeVar("Response", bound=Message)


class ServerError(Exception):
    """A call that the gateway or a service failed.

    The message is one line, unless a command added lines about what it did
    before the failure. `reason` and `metadata` are those of the status's
    ErrorInfo, empty without one.
    """

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.metadata = dict(metadata or {})

    def extended(self, text: str) -> ServerError:
        """Return the same error with `text` added as a new line."""
        return ServerError(f"{self}\n{text}", self.code, self.reason, self.metadata)


class Unreachable(ServerError):
    """No connection to the gateway address could be set up.

    Without TLS, nothing listens there or the gateway serves TLS. With TLS,
    nothing listens there, the gateway serves plaintext, or the TLS handshake
    failed.
    """

    def __init__(self, address: str, tls: bool = False) -> None:
        if tls:
            message = (
                f"cannot connect to splitlog at {address} over TLS; check that a "
                "gateway with tls_cert_file set listens there, that --ca-file "
                "names the CA that signed its certificate, that the certificate "
                "names the host you connect to, and, if it requires client "
                "certificates, pass --cert-file and --key-file"
            )
        else:
            message = (
                f"cannot reach splitlog at {address}; start it with `make up`, "
                "pass the address of a running gateway with --gateway HOST:PORT, "
                "or add --tls if the gateway serves TLS"
            )
        super().__init__(message, grpc.StatusCode.UNAVAILABLE)
        self.address = address


# The credential of the running command, which `open_channel` adds to every
# channel to its address; set by `sending`.
_current: Credential | None = None


@contextmanager
def sending(credential: Credential | None) -> Iterator[None]:
    """Send `credential` on the channels that open to its address meanwhile."""
    global _current
    previous, _current = _current, credential
    try:
        yield
    finally:
        _current = previous


def current_credential(address: str) -> Credential | None:
    """Return the credential that `sending` set, if it belongs to `address`."""
    if _current is not None and _current.address == address:
        return _current
    return None


def open_channel(
    address: str, tls: ClientTls | None, credential: Credential | None = None
) -> grpc.Channel:
    """Open a channel to the gateway, with TLS unless `tls` is None.

    Calls on the channel carry `credential`, or else the one that `sending`
    set when it belongs to `address`; a credential is never sent elsewhere.

    Raises:
      splitlog_runtime.tls.TlsConfigError: a TLS file cannot be read.
    """
    if credential is None:
        credential = current_credential(address)
    return with_credential(_plain_channel(address, tls), address, tls, credential)


def with_credential(
    channel: grpc.Channel,
    address: str,
    tls: ClientTls | None,
    credential: Credential | None,
) -> grpc.Channel:
    """Return `channel` with `credential` added to each call, if there is one.

    An expired saved session is renewed with RefreshToken at `address`.
    """
    if credential is None or not credential.present:
        return channel
    if credential.refresh is None:
        credential.refresh = lambda token: _refresh(address, tls, token)
    return grpc.intercept_channel(channel, BearerInterceptor(credential))


def _plain_channel(address: str, tls: ClientTls | None) -> grpc.Channel:
    if tls is None:
        return insecure_channel(address)
    return secure_channel(address, tls.channel_credentials())


def _refresh(
    address: str, tls: ClientTls | None, refresh_token: str
) -> auth_pb2.RefreshTokenResponse:
    """Exchange a refresh token on a channel of its own, without a credential."""
    with _plain_channel(address, tls) as channel:
        return auth_grpc.AuthServiceStub(channel).RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=refresh_token),
            timeout=DEFAULT_TIMEOUT,
        )


class Gateway:
    """Stubs of the public services over one channel to the gateway.

    Raises:
      splitlog_runtime.tls.TlsConfigError: a TLS file cannot be read.
    """

    def __init__(
        self,
        address: str,
        timeout: float = DEFAULT_TIMEOUT,
        tls: ClientTls | None = None,
        credential: Credential | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.tls = tls
        self._channel = open_channel(address, tls, credential)
        # Whether a call got a response, so that a later UNAVAILABLE does not
        # mean that no gateway runs.
        self.responded = False
        self.auth = auth_grpc.AuthServiceStub(self._channel)
        self.users = users_grpc.UsersServiceStub(self._channel)
        self.expenses = expenses_grpc.ExpensesServiceStub(self._channel)
        self.balances = balances_grpc.BalancesServiceStub(self._channel)

    def call(self, method: Callable[..., Response], request: Message) -> Response:
        """Call a unary method with the deadline.

        Raises:
          Unreachable: the gateway does not accept connections.
          ServerError: the call failed; the message describes the status.
        """
        try:
            response = method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            unavailable = exc.code() == grpc.StatusCode.UNAVAILABLE
            # After a response, only the probe detects a gateway that went away.
            went_away = unavailable and self.responded and not self._reachable()
            if went_away or never_reached(exc, self.responded, self._reachable):
                raise Unreachable(self.address, self.tls is not None) from None
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServerError(
                    f"neither the gateway at {self.address} nor the service "
                    f"behind it sent a response within {self.timeout:g} s "
                    f"(DEADLINE_EXCEEDED); `splitlog health {self.address}` "
                    "shows which one is not serving, and the log of "
                    "`splitlog up` why",
                    exc.code(),
                ) from None
            raise server_error(exc) from None
        self.responded = True
        return response

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _reachable(self) -> bool:
        return channel_reachable(self._channel)


def channel_reachable(
    channel: grpc.Channel, timeout: float = _CONNECT_PROBE_SECONDS
) -> bool:
    """Return whether `channel` connects within `timeout` seconds.

    The CLI's clients use this probe to distinguish a gateway that went
    away, or never ran, from a call that failed for another reason.
    """
    ready = grpc.channel_ready_future(channel)
    try:
        ready.result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return False
    finally:
        ready.cancel()
    return True


def never_reached(
    error: grpc.RpcError, responded: bool, reachable: Callable[[], bool]
) -> bool:
    """Return whether a failed call means that no gateway accepts connections.

    Only an UNAVAILABLE before any response to the command counts. One
    without status details never reached a gateway, which attaches details
    to each UNAVAILABLE it sends. Only for one with details does
    `reachable`, a connection probe, decide. The probe alone would miss a
    gateway that starts while the probe waits, and a refused connection
    would then be reported in grpc's own words.
    """
    if responded or error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return from_transport(error) or not reachable()


def from_transport(error: grpc.RpcError) -> bool:
    """Return whether `error`'s status has no google.rpc details.

    Such a status comes from grpc, such as for a refused or broken
    connection, or from a server that sends no details with it.
    """
    return rpc_status.from_call(error) is None


def server_error(error: grpc.RpcError) -> ServerError:
    """Return the ServerError of a failed call, with its ErrorInfo."""
    info = error_info(error)
    return ServerError(describe(error), error.code(), info.reason, info.metadata)


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """Return the status's ErrorInfo, or an empty one when it has none."""
    info = error_details_pb2.ErrorInfo()
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else []:
        if detail.Unpack(info):
            break
    return info


def describe(error: grpc.RpcError) -> str:
    """Return one line with the status message, code, ErrorInfo reason and fields.

    Details that the message already states are not repeated.
    """
    message = error.details() or "(no message)"
    code = error.code().name
    reason = ""
    notes: list[str] = []
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations = bad_request.field_violations
            notes += [
                f"{violation.field}: {violation.description}"
                for violation in violations
                if not _states_field(message, violation, len(violations))
            ]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            notes += [
                f"{violation.subject}: {violation.description}"
                for violation in failure.violations
                if violation.description
                and not _states_precondition(message, violation)
            ]
    label = f"{code}, {reason}" if reason else code
    line = f"{message} ({label})"
    if notes:
        line += "; " + "; ".join(notes)
    return " ".join(line.split())


def _states_field(
    message: str, violation: error_details_pb2.BadRequest.FieldViolation, count: int
) -> bool:
    """Return whether the status message already states a field violation.

    A message about several fields states the first and counts the others,
    which may have the same description, so the field must be named too.
    """
    if violation.description not in message:
        return False
    return count == 1 or violation.field in message


def _states_precondition(
    message: str, violation: error_details_pb2.PreconditionFailure.Violation
) -> bool:
    """Return whether the status message already states a failed precondition.

    The services' messages describe each failed precondition in their own
    words and name its subject. A group member, `groups/G/members/U`, is
    named by its user, `users/U`. A message about many subjects names the
    first few and counts the rest, whose violations are then listed.
    """
    if violation.description in message:
        return True
    subject = violation.subject
    _, member, user = subject.partition("/members/")
    names = [subject, f"users/{user}"] if member else [subject]
    return any(_names_resource(message, name) for name in names)


def _names_resource(message: str, name: str) -> bool:
    """Return whether `message` contains the resource name `name` as a whole."""
    pattern = rf"(?<![\w./-]){re.escape(name)}(?![\w/-])"
    return re.search(pattern, message) is not None
