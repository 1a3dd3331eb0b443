"""Ask a component for its health over the standard gRPC health protocol.

Both functions take the TLS settings of a gateway that serves TLS; None
connects in plaintext, as every internal service port expects. A gateway
with `auth_open_health` off answers health calls only with a credential:
`check` sends a client's bearer credential, and `wait_until_serving` sends
the metadata that its caller builds for each attempt, such as a principal
signed with the auth secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitlog_cli.client.connection import with_credential
from splitlog_cli.client.credentials import Credential
from splitlog_runtime.tls import ClientTls

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _open_channel(address: str, tls: ClientTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, tls.channel_credentials())


def check(
    address: str,
    service: str = "",
    timeout: float = 3.0,
    tls: ClientTls | None = None,
    credential: Credential | None = None,
) -> str:
    """Return the health status name of `service` at `address`.

    Returns `SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN` or `UNKNOWN`, or the
    name of the gRPC status code when the call fails (`UNAVAILABLE` while the
    server is down or the TLS handshake fails, `NOT_FOUND` for a service it
    does not report on, `UNAUTHENTICATED` from a gateway that needs a
    credential for health calls).

    Raises:
      splitlog_runtime.tls.TlsConfigError: a TLS file cannot be read.
    """
    with _open_channel(address, tls) as plain:
        channel = with_credential(plain, address, tls, credential)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def not_serving(
    address: str,
    services: Sequence[str],
    timeout: float,
    tls: ClientTls | None = None,
    credential: Credential | None = None,
) -> list[str]:
    """Return those of `services` that `address` reports NOT_SERVING, in order.

    The checks go out at once on one channel, each with the deadline
    `timeout`, so the whole call takes about `timeout` at most. A service
    whose check fails, such as one the server does not report on, is left
    out.

    Raises:
      splitlog_runtime.tls.TlsConfigError: a TLS file cannot be read.
    """
    down = []
    with _open_channel(address, tls) as plain:
        channel = with_credential(plain, address, tls, credential)
        stub = health_pb2_grpc.HealthStub(channel)
        calls = [
            (
                service,
                stub.Check.future(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout
                ),
            )
            for service in services
        ]
        for service, call in calls:
            try:
                response = call.result()
            except grpc.RpcError:
                continue
            if response.status == NOT_SERVING:
                down.append(service)
    return down


def wait_until_serving(
    address: str,
    timeout: float,
    service: str = "",
    abort: Callable[[], str | None] = lambda: None,
    tls: ClientTls | None = None,
    metadata: Callable[[], Sequence[tuple[str, str]]] = tuple,
) -> None:
    """Poll `address` until it reports SERVING.

    Args:
      address: host:port of the server.
      timeout: seconds to wait in total.
      service: the service to ask about; empty means the whole server.
      abort: called between attempts; a non-empty return stops the wait with
        that message (for example, the process serving `address` exited).
      tls: how to connect to a server that serves TLS; None is plaintext.
      metadata: called before each attempt for the metadata to send, so that
        a signature made for one attempt is never too old to verify.

    Raises:
      TimeoutError: the server did not report SERVING within `timeout`.
      RuntimeError: `abort` returned a message.
      splitlog_runtime.tls.TlsConfigError: a TLS file cannot be read.
    """
    deadline = time.monotonic() + timeout
    status = "UNAVAILABLE"
    with _open_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            message = abort()
            if message:
                raise RuntimeError(message)
            try:
                response = stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=1.0,
                    metadata=metadata(),
                )
            except grpc.RpcError as exc:
                status = exc.code().name
            else:
                if response.status == SERVING:
                    return
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(
                    response.status
                )
            time.sleep(0.1)
    raise TimeoutError(
        f"{address} did not report SERVING within {timeout:g}s (last status {status})"
    )
