"""Build, start and gracefully stop gRPC servers.

`create_server` builds a sync server with the error interceptor, the standard
health service and (optionally) reflection, binds it and returns the bound
port, so tests can bind port 0. `ServiceHost` owns one running server and the
resources that must close after it.

Health Watch streams never end on their own, so a stopping server would wait
out its whole grace period for them. `ClosingHealthServicer` ends every open
Watch stream right after sending it NOT_SERVING, and `stop(grace)` then waits
only for the calls that do real work.

`create_server` also records every method handler it registers in a
`MethodHandlers`, so that a component in the same process can run a handler
without a network hop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitlog_runtime import limits, reflection
from splitlog_runtime.interceptor import ErrorInterceptor

_LOGGER = logging.getLogger(__name__)

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def server_options(
    max_message_bytes: int, headroom_bytes: int = 0
) -> list[tuple[str, int]]:
    """Return the channel arguments every splitlog server uses.

    grpc's core accepts request messages up to `limits.receive_ceiling`, above
    `max_message_bytes`, so that splitlog code can reject a message over the
    setting with an error that names it. Responses stay within the setting,
    which is the receive limit of splitlog's channels. `headroom_bytes` raises
    both limits, for a server that only other components call.
    """
    max_message_bytes = limits.with_headroom(max_message_bytes, headroom_bytes)
    return [
        # NOTE: a request message over the ceiling gets grpc's own
        # RESOURCE_EXHAUSTED "Received message larger than max", which does
        # not name max_message_bytes.
        ("grpc.max_receive_message_length", limits.receive_ceiling(max_message_bytes)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        # Accept the keepalive pings that splitlog's own channels send (every
        # 30 s, also while idle). gRPC's default would reply with GOAWAY
        # "too_many_pings" and drop the connection.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


class _WatchSender:
    """Send the statuses of one Watch stream, newest last, until it is ended.

    Each status carries the servicer's version number at the time it was
    read, and a status older than one already sent is dropped, so two
    threads that send out of order still leave the newest status last. The
    sender's own lock is held during the send, which may wait for grpcio's
    polling thread. That thread never takes this lock: it only runs close
    callbacks, which take the servicer's lock.
    """

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._version = -1
        self._ended = False

    def send(self, response: health_pb2.HealthCheckResponse, version: int) -> None:
        with self._lock:
            if self._ended or version < self._version:
                return
            self._version = version
            self._send(response)

    def end(self) -> None:
        """End the stream with status OK; later sends are dropped."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._send(None)


class _ResponseQueue:
    """The responses of one Watch stream in blocking mode; None ends the stream."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, response: Any) -> None:
        self._queue.put(response)

    def __iter__(self) -> _ResponseQueue:
        return self

    def __next__(self) -> Any:
        response = self._queue.get()
        if response is None:
            raise StopIteration
        return response


class ClosingHealthServicer(health_pb2_grpc.HealthServicer):
    """The standard health service, with Watch streams that end at shutdown.

    `enter_graceful_shutdown()` reports NOT_SERVING for every service, sends
    it to every open Watch stream and then ends each stream with status OK.
    A Watch that arrives later gets NOT_SERVING and ends at once, and later
    `set()` calls change nothing.

    Watch runs in grpcio's non-blocking mode, so an open stream holds no
    handler thread. An interceptor that replaces the handler runs it in
    blocking mode instead, with one handler thread per open stream. No lock
    of this class is held while a response is sent. grpcio's send waits for
    the server's polling thread, which also runs the close callbacks of
    ended streams, so a close callback that waited for a lock held by a
    sender would stop the whole server. The servicer of
    grpcio-health-checking 1.85 sends while it holds its lock, which is why
    this class does not extend it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: dict[str, int] = {"": SERVING}
        self._watchers: dict[str, set[_WatchSender]] = {}
        self._version = 0
        self._closing = False

    def Check(self, request, context):
        with self._lock:
            status = self._statuses.get(request.service)
        if status is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(
                f"no health status for service {request.service!r}; send a "
                "full service name, or an empty one for the whole server"
            )
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request, context, send_response_callback=None):
        responses = None
        if send_response_callback is None:
            responses = _ResponseQueue()
            send_response_callback = responses.put
        sender = _WatchSender(send_response_callback)
        service = request.service
        with self._lock:
            status = self._statuses.get(service, SERVICE_UNKNOWN)
            version = self._version
            closing = self._closing
            if not closing:
                self._watchers.setdefault(service, set()).add(sender)
        sender.send(health_pb2.HealthCheckResponse(status=status), version)
        if closing:
            sender.end()
            return responses

        def on_close() -> None:
            self._forget(service, sender)
            if responses is not None:
                # Wake the handler thread that waits on the queue.
                responses.put(None)

        if not context.add_callback(on_close):
            on_close()
        return responses

    # grpcio passes a send callback to a handler marked non-blocking.
    Watch.experimental_non_blocking = True
    Watch.experimental_thread_pool = None

    def _forget(self, service: str, sender: _WatchSender) -> None:
        with self._lock:
            watchers = self._watchers.get(service)
            if watchers is not None:
                watchers.discard(sender)

    def set(self, service: str, status: int) -> None:
        """Record a service's status and send it to the service's watchers."""
        with self._lock:
            if self._closing:
                return
            self._statuses[service] = status
            self._version += 1
            version = self._version
            senders = list(self._watchers.get(service, ()))
        response = health_pb2.HealthCheckResponse(status=status)
        for sender in senders:
            sender.send(response, version)

    def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for every service, then end every Watch stream."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            for service in self._statuses:
                self._statuses[service] = NOT_SERVING
            self._version += 1
            version = self._version
            senders = [
                sender for watchers in self._watchers.values() for sender in watchers
            ]
            self._watchers.clear()
        response = health_pb2.HealthCheckResponse(status=NOT_SERVING)
        for sender in senders:
            sender.send(response, version)
            sender.end()


@dataclass
class ServiceHost:
    """A running gRPC server with its health servicer and closing callbacks.

    Attributes:
      name: the component name used in logs, e.g. `user_service`.
      server: the gRPC server.
      port: the port the server is bound to.
      health: the health servicer; services are NOT_SERVING until
        `mark_serving()`, and its Watch streams end when `stop()` begins.
      service_names: full names of the services that health reports on.
      handlers: the method handlers registered on the server, for calls made
        in this process.
    """

    name: str
    server: grpc.Server
    port: int
    health: ClosingHealthServicer
    service_names: list[str]
    handlers: MethodHandlers | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def on_stop(self, closer: Callable[[], None]) -> None:
        """Register a callback (close a channel, dispose an engine) run after stop."""
        self._closers.append(closer)

    @property
    def _component(self) -> dict[str, str]:
        # Names the component in its log records, for a shared process.
        return {"component": self.name}

    @property
    def stopped(self) -> bool:
        """Whether `stop()` has begun; the server then takes no new calls."""
        return self._stopped.is_set()

    def start(self) -> None:
        self.server.start()
        _LOGGER.info(
            "%s listening on port %d", self.name, self.port, extra=self._component
        )

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
        _LOGGER.info(
            "%s stopping (%s), grace %.1fs",
            self.name,
            reason,
            grace,
            extra=self._component,
        )
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                _LOGGER.exception(
                    "%s: closing a resource failed", self.name, extra=self._component
                )
        _LOGGER.info("%s stopped", self.name, extra=self._component)


def create_server(
    name: str,
    register: Iterable[Callable[[grpc.Server], None]],
    service_names: Iterable[str],
    address: str = "127.0.0.1:0",
    *,
    workers: int = 16,
    stream_workers: int = 0,
    max_message_bytes: int = 16 * 1024 * 1024,
    message_headroom_bytes: int = 0,
    reflection_enabled: bool = True,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
    max_concurrent_rpcs: int = 0,
) -> ServiceHost:
    """Build a sync gRPC server, bind it and return its host (not yet started).

    Args:
      name: component name for logs.
      register: callables that add servicers, e.g.
        `lambda s: add_UsersServiceServicer_to_server(servicer, s)`.
      service_names: full names of the registered services, for health and
        reflection.
      address: host:port to bind; port 0 picks a free port.
      workers: size of the handler thread pool, and of the gateway's pool
        for in-process calls of the server's unary methods.
      stream_workers: threads added to the handler pool for long-lived
        calls, which the servicers must limit to that many at once.
      max_message_bytes: largest request message accepted and largest
        response sent (see `server_options`).
      message_headroom_bytes: bytes by which request and response messages
        may exceed `max_message_bytes`, for a server that only other
        components call.
      reflection_enabled: whether to serve server reflection.
      interceptors: interceptors that run before the error interceptor.
      max_concurrent_rpcs: maximum calls that run or wait for a handler
        thread at once. grpc rejects further calls with RESOURCE_EXHAUSTED
        and grpc's own message, which the gateway rewrites to name the
        `max_concurrent_rpcs` setting. 0 means no limit.

    Raises:
      RuntimeError: the address cannot be bound.
    """
    all_interceptors = [
        *interceptors,
        ErrorInterceptor(max_message_bytes, message_headroom_bytes),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=workers + stream_workers, thread_name_prefix=name
        ),
        interceptors=all_interceptors,
        options=server_options(max_message_bytes, message_headroom_bytes),
        maximum_concurrent_rpcs=max_concurrent_rpcs or None,
    )
    names = list(service_names)
    handlers = MethodHandlers(all_interceptors, workers)
    recording = _RecordingServer(server, handlers)
    for add in register:
        add(recording)
    health_servicer = ClosingHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ["", *names]:
        health_servicer.set(service, NOT_SERVING)
    if reflection_enabled:
        reflection.enable_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
            server,
            reflection.reflection_pool(reflection.files_of_services(names)),
        )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"{name}: cannot bind {address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"{name}: cannot bind {address}; is the port in use?")
    return ServiceHost(name, server, port, health_servicer, names, handlers)


class _HandlerCallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple


class MethodHandlers:
    """The method handlers registered on one server, found as the server finds them.

    `find()` looks a method up among the registered handlers, then the generic
    handlers, and runs the server's interceptors around the lookup, the error
    interceptor last. The server does the same for every call it receives.

    Attributes:
      workers: the size of the server's handler thread pool.
    """

    def __init__(
        self, interceptors: Iterable[grpc.ServerInterceptor], workers: int
    ) -> None:
        self.workers = workers
        self._interceptors = tuple(interceptors)
        self._registered: dict[str, grpc.RpcMethodHandler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []

    def record_generic(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def record_registered(
        self, service_name: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for method, handler in handlers.items():
            self._registered[f"/{service_name}/{method}"] = handler

    def lookup(self, method: str) -> grpc.RpcMethodHandler | None:
        """Return the handler of a method path, such as `/pkg.Service/Method`.

        The handler is the one registered, without the interceptors, and a
        generic handler is asked with empty invocation metadata. None means
        that the server does not serve the method.
        """
        return self._query(_HandlerCallDetails(method, ()))

    def find(
        self, method: str, invocation_metadata: Iterable[tuple[str, Any]]
    ) -> grpc.RpcMethodHandler | None:
        """Return the handler for one call, wrapped by the server's interceptors."""
        return self._intercept(
            0, _HandlerCallDetails(method, tuple(invocation_metadata))
        )

    def _intercept(
        self, index: int, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if index == len(self._interceptors):
            return self._query(details)
        return self._interceptors[index].intercept_service(
            lambda next_details: self._intercept(index + 1, next_details), details
        )

    def _query(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._registered.get(details.method)
        if handler is not None:
            return handler
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


class _RecordingServer:
    """A server that also records each registered handler in `MethodHandlers`."""

    def __init__(self, server: grpc.Server, handlers: MethodHandlers) -> None:
        self._server = server
        self._handlers = handlers

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]
    ) -> None:
        generic_rpc_handlers = tuple(generic_rpc_handlers)
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)
        self._handlers.record_generic(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(service_name, method_handlers)
        self._handlers.record_registered(service_name, method_handlers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)
