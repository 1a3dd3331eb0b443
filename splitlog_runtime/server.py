"""Build, start and gracefully stop gRPC servers.

`create_server` builds a sync server with the error interceptor, the standard
health service and (optionally) reflection, binds it and returns the bound
port, so tests can bind port 0. `ServiceHost` owns one running server and the
resources that must close after it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from splitlog_runtime.interceptor import ErrorInterceptor

_LOGGER = logging.getLogger(__name__)

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Return the channel arguments every splitlog server uses."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        # Accept the keepalive pings that splitlog's own channels send (every
        # 30 s, also while idle); gRPC's default would answer them with
        # GOAWAY "too_many_pings" and drop the connection.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


@dataclass
class ServiceHost:
    """A running gRPC server with its health servicer and closing callbacks.

    Attributes:
      name: the component name used in logs, e.g. `user_service`.
      server: the gRPC server.
      port: the port the server is bound to.
      health: the health servicer; services are NOT_SERVING until
        `mark_serving()`.
      service_names: full names of the services that health reports on.
    """

    name: str
    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: list[str]
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def on_stop(self, closer: Callable[[], None]) -> None:
        """Register a callback (close a channel, dispose an engine) run after stop."""
        self._closers.append(closer)

    def start(self) -> None:
        self.server.start()
        _LOGGER.info("%s listening on port %d", self.name, self.port)

    def mark_serving(self) -> None:
        """Report SERVING for the whole server and each of its services."""
        for service in ["", *self.service_names]:
            self.health.set(service, SERVING)

    def mark_not_serving(self) -> None:
        for service in ["", *self.service_names]:
            self.health.set(service, NOT_SERVING)

    def stop(self, grace: float, reason: str = "stop requested") -> None:
        """Flip health, let in-flight RPCs finish within grace, then close.

        Safe to call more than once; later calls return at once.
        """
        if self._stopped.is_set():
            return
        self._stopped.set()
        _LOGGER.info("%s stopping (%s), grace %.1fs", self.name, reason, grace)
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                _LOGGER.exception("%s: closing a resource failed", self.name)
        _LOGGER.info("%s stopped", self.name)


def create_server(
    name: str,
    register: Iterable[Callable[[grpc.Server], None]],
    service_names: Iterable[str],
    address: str = "127.0.0.1:0",
    *,
    workers: int = 16,
    max_message_bytes: int = 16 * 1024 * 1024,
    reflection_enabled: bool = True,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
) -> ServiceHost:
    """Build a sync gRPC server, bind it and return its host (not yet started).

    Args:
      name: component name for logs.
      register: callables that add servicers, e.g.
        `lambda s: add_UsersServiceServicer_to_server(servicer, s)`.
      service_names: full names of the registered services, for health and
        reflection.
      address: host:port to bind; port 0 picks a free port.
      workers: size of the handler thread pool.
      max_message_bytes: largest message accepted and sent.
      reflection_enabled: whether to serve server reflection.
      interceptors: interceptors that run before the error interceptor.

    Raises:
      RuntimeError: the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name),
        interceptors=[*interceptors, ErrorInterceptor()],
        options=server_options(max_message_bytes),
    )
    names = list(service_names)
    for add in register:
        add(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ["", *names]:
        health_servicer.set(service, NOT_SERVING)
    if reflection_enabled:
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"{name}: cannot bind {address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"{name}: cannot bind {address}; is the port in use?")
    return ServiceHost(name, server, port, health_servicer, names)
