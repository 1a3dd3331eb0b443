"""Wiring of the gateway: the gRPC front and the REST front on one event loop.

`build(config)` discovers the public services, opens one channel per backend,
starts an asyncio gRPC server that forwards every public method, and starts
uvicorn with the REST app on the same loop. `Gateway.stop(grace)` reverses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvicorn
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from starlette.middleware.cors import CORSMiddleware

from gateway.aggregate import GatewayViews
from gateway.auth import AuthInterceptor, GatewayAuth
from gateway.client_address import ClientAddressMiddleware
from gateway.health import (
    NOT_SERVING,
    OVERALL,
    SERVING,
    BackendHealthWatcher,
    HealthServicer,
)
from gateway.http_rules import routes_for_method
from gateway.limits import (
    CappedServer,
    ConcurrencyInterceptor,
    ConcurrencyLimit,
    RateLimitInterceptor,
    limiter_from_config,
)
from gateway.proxy import BackendPool, ProxyHandlers
from gateway.rest import RestFront
from gateway.services import (
    GATEWAY_SERVICE,
    PublicService,
    gateway_services,
    public_services,
)
from log_service.model import Limits
from splitlog_runtime import reflection as server_reflection
from splitlog_runtime.config import Config, cors_origins, trusted_proxies
from splitlog_runtime.errors import DomainError, Unimplemented
from splitlog_runtime.interceptor import AsyncErrorInterceptor
from splitlog_runtime.server import server_options
from splitlog_runtime.tls import ServerTls

_LOGGER = logging.getLogger(__name__)

_HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_STARTUP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple = ()


async def _with_error_mapping(
    service_name: str,
    handlers: dict[str, grpc.RpcMethodHandler],
    max_message_bytes: int,
) -> dict[str, grpc.RpcMethodHandler]:
    """Wrap the gateway's own handlers in the shared error interceptor.

    The wrapping happens once here rather than as a server interceptor, so
    forwarded calls, which produce every status themselves, pay nothing.
    """
    interceptor = AsyncErrorInterceptor(max_message_bytes)
    wrapped = {}
    for name, handler in handlers.items():

        async def continuation(_details, handler=handler):
            return handler

        details = _CallDetails(f"/{service_name}/{name}")
        wrapped[name] = await interceptor.intercept_service(continuation, details)
    return wrapped


def _health_handlers(servicer: HealthServicer) -> dict[str, grpc.RpcMethodHandler]:
    """Build the Health service's handlers, as `add_HealthServicer_to_server` does.

    They go through `_with_error_mapping`, so an unexpected exception becomes
    INTERNAL with an incident id rather than grpcio's message with its type.
    """
    request = health_pb2.HealthCheckRequest.FromString
    response = health_pb2.HealthCheckResponse.SerializeToString
    return {
        "Check": grpc.unary_unary_rpc_method_handler(
            servicer.Check, request_deserializer=request, response_serializer=response
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.Watch, request_deserializer=request, response_serializer=response
        ),
    }


def _unimplemented_handlers(
    descriptor: ServiceDescriptor,
) -> dict[str, grpc.RpcMethodHandler]:
    """Return handlers that reject every method of a service as unimplemented."""
    handlers = {}
    for method in descriptor.methods:
        error = Unimplemented(
            f"{method.full_name} is not implemented yet; until it is, read the "
            "same data from the users, expenses and balances services",
            metadata={"method": method.full_name},
        )
        handlers[method.name] = _rejecting_handler(method, error)
    return handlers


def _rejecting_handler(method, error: DomainError) -> grpc.RpcMethodHandler:
    if method.server_streaming:

        async def reject_stream(request: Any, context: grpc.aio.ServicerContext):
            raise error
            yield  # Makes this an async generator, as streaming handlers must be.

        behavior: Callable = reject_stream
    else:

        async def reject(request: Any, context: grpc.aio.ServicerContext):
            raise error

        behavior = reject
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(method.client_streaming, method.server_streaming)]
    return factory(behavior)


class _EmbeddedUvicorn(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the hosting process."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"invalid address {address!r}; expected host:port")
    return host.strip("[]"), int(port)


def _bind_http_socket(address: str) -> socket.socket:
    host, port = _split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(
            f"gateway: cannot bind HTTP address {address}: {exc}"
        ) from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass
class Gateway:
    """A running gateway: its two fronts, its health and its backend channels.

    Attributes:
      grpc_port: the port of the gRPC front.
      http_port: the port of the REST front.
      services: the public services that the gateway forwards.
      health: the gateway's health servicer.
      tls: the certificate that both fronts serve; None means plaintext.
    """

    config: Config
    grpc_server: grpc.aio.Server
    grpc_port: int
    http_port: int
    services: list[PublicService]
    health: HealthServicer
    pool: BackendPool
    rest: RestFront
    _watcher: BackendHealthWatcher
    _uvicorn: _EmbeddedUvicorn
    _uvicorn_task: asyncio.Task
    auth: GatewayAuth | None = None
    tls: ServerTls | None = None
    _stopped: bool = field(default=False)

    async def stop(self, grace: float | None = None) -> None:
        """Flip health, stop accepting, let calls finish within grace, then close.

        The backend watchers stop first, so that their Watch calls do not keep
        the backends busy, and the gateway's own Watch streams end right after
        they report NOT_SERVING, so that they do not hold the grace period.

        Args:
          grace: seconds that in-flight calls get; defaults to the configured
            `grace_seconds`.

        Safe to call more than once; later calls return at once.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_seconds if grace is None else grace
        _LOGGER.info("gateway stopping, grace %.1fs", grace)
        await self._watcher.stop()
        await self.health.enter_graceful_shutdown()
        self._uvicorn.config.timeout_graceful_shutdown = grace
        self._uvicorn.should_exit = True
        await asyncio.gather(self.grpc_server.stop(grace), self._wait_uvicorn(grace))
        await self.pool.close()
        if self.auth is not None:
            await self.auth.close()
        _LOGGER.info("gateway stopped")

    async def _wait_uvicorn(self, grace: float) -> None:
        # uvicorn checks should_exit every 0.1 s and then waits up to `grace`.
        try:
            await asyncio.wait_for(self._uvicorn_task, grace + 2.0)
        except TimeoutError:
            _LOGGER.error("gateway: the HTTP server did not stop in time")
        except Exception:
            _LOGGER.exception("gateway: the HTTP server failed while stopping")


def _reflection_pool(
    descriptors: list[ServiceDescriptor],
) -> descriptor_pool.DescriptorPool:
    """Build a descriptor pool of the files that declare the exposed services.

    Reflection resolves symbols in this pool only, so a client can neither
    list nor describe an internal service, unless an exposed file imports the
    file that declares it.
    """
    return server_reflection.reflection_pool(
        [descriptor.file for descriptor in descriptors]
    )


def _http_routes(descriptors: list[ServiceDescriptor]):
    return [
        route
        for descriptor in descriptors
        for method in descriptor.methods
        for route in routes_for_method(method)
    ]


async def build(
    config: Config, grpc_address: str | None = None, http_address: str | None = None
) -> Gateway:
    """Start the gateway and return it once both fronts accept calls.

    Args:
      config: resolved settings; the backend addresses come from
        `config.service_address(name)`.
      grpc_address: host:port of the gRPC front; defaults to the configured
        host and `gateway_port`. Port 0 picks a free port.
      http_address: host:port of the REST front; defaults to the configured
        host and `http_port`. Port 0 picks a free port.

    Raises:
      RuntimeError: an address cannot be bound or the HTTP server fails to
        start.
      splitlog_runtime.tls.TlsConfigError: a TLS setting names a file that is
        missing, unreadable or not a certificate and its key.
      gateway.http_rules.TemplateError: an HTTP annotation is malformed.
      ValueError: max_concurrent_rpcs or a gateway_rate_limit setting is out
        of range.
    """
    tls = ServerTls.from_config(config)
    grpc_address = grpc_address or f"{config.host}:{config.gateway_port}"
    http_address = http_address or f"{config.host}:{config.http_port}"
    services = public_services()
    own_services = gateway_services()
    names = [service.full_name for service in services]
    names += [descriptor.full_name for descriptor in own_services]
    rest_routes = _http_routes([s.descriptor for s in services] + own_services)

    concurrency = ConcurrencyLimit(config.max_concurrent_rpcs)
    rate_limiter = limiter_from_config(
        config.gateway_rate_limit_per_second, config.gateway_rate_limit_burst
    )
    pool = BackendPool(services, config.service_address, config.max_message_bytes)
    gateway_auth = GatewayAuth(config) if config.auth_required else None
    # The concurrency cap goes first, so a call over it costs no credential
    # check. The rate limit goes after authentication, which makes the
    # principal of the call current.
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if gateway_auth is not None:
        interceptors.append(AuthInterceptor(gateway_auth))
    if rate_limiter is not None:
        interceptors.append(RateLimitInterceptor(rate_limiter))
    if interceptors:
        interceptors.insert(0, ConcurrencyInterceptor(concurrency))
    aio_server = grpc.aio.server(
        interceptors=interceptors, options=server_options(config.max_message_bytes)
    )
    # Without other interceptors, the cap wraps each handler once instead.
    server = aio_server if interceptors else CappedServer(aio_server, concurrency)
    proxy = ProxyHandlers(pool, config.deadline_seconds, config.max_message_bytes)
    for service in services:
        server.add_registered_method_handlers(
            service.full_name, proxy.method_handlers(service)
        )
    views = GatewayViews(pool, config.deadline_seconds)
    # The REST front looks up each route's callable in the pool, so the views
    # join it there and REST calls run them in process.
    pool.callables.update(views.local_callables())
    for descriptor in own_services:
        if descriptor.full_name == GATEWAY_SERVICE:
            handlers = views.method_handlers()
        else:
            handlers = _unimplemented_handlers(descriptor)
        server.add_registered_method_handlers(
            descriptor.full_name,
            await _with_error_mapping(
                descriptor.full_name, handlers, config.max_message_bytes
            ),
        )
    health_servicer = HealthServicer()
    server.add_registered_method_handlers(
        _HEALTH_SERVICE,
        await _with_error_mapping(
            _HEALTH_SERVICE, _health_handlers(health_servicer), config.max_message_bytes
        ),
    )
    for name in [OVERALL, *names]:
        await health_servicer.set(name, NOT_SERVING)
    if config.reflection:
        server_reflection.enable_reflection(
            [*names, _HEALTH_SERVICE],
            server,
            _reflection_pool([s.descriptor for s in services] + own_services),
        )

    try:
        if tls is None:
            grpc_port = server.add_insecure_port(grpc_address)
        else:
            grpc_port = server.add_secure_port(grpc_address, tls.server_credentials())
    except RuntimeError as exc:
        await pool.close()
        raise RuntimeError(f"gateway: cannot bind {grpc_address}: {exc}") from exc
    try:
        http_socket = _bind_http_socket(http_address)
    except RuntimeError:
        await server.stop(None)
        await pool.close()
        raise
    http_port = http_socket.getsockname()[1]

    rest = RestFront(
        rest_routes,
        pool,
        config.deadline_seconds,
        config.max_message_bytes,
        gateway_auth,
        rate_limiter=rate_limiter,
        concurrency=concurrency,
        log_limits=Limits.from_config(config),
        health=health_servicer,
    )
    uvicorn_server = _EmbeddedUvicorn(
        uvicorn.Config(
            ClientAddressMiddleware(
                _with_cors(rest.app, config.http_cors_origins),
                trusted_proxies(config.http_trusted_proxies),
            ),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=config.grace_seconds,
            # ClientAddressMiddleware reads the proxy headers, and only from
            # http_trusted_proxies. uvicorn (0.55) on its own reads them from
            # loopback by default, so any local process could choose its
            # address and escape the sign-in lockout and rate limits.
            proxy_headers=False,
            **(tls.uvicorn_options() if tls is not None else {}),
        )
    )
    await server.start()
    uvicorn_task = asyncio.create_task(
        uvicorn_server.serve(sockets=[http_socket]), name="gateway-http"
    )
    try:
        await _wait_started(uvicorn_server, uvicorn_task)
    except BaseException:
        uvicorn_server.should_exit = True
        await server.stop(0)
        await pool.close()
        http_socket.close()
        raise

    watcher = BackendHealthWatcher(
        health_servicer, pool, services, config.gateway_health_probe_seconds
    )
    # The public services, and with them the whole server, stay NOT_SERVING
    # until the watchers have heard from their backends.
    for descriptor in own_services:
        await health_servicer.set(descriptor.full_name, SERVING)
    watcher.start()
    if gateway_auth is not None:
        _LOGGER.info("gateway requires a credential on every call (auth_required)")
    if rate_limiter is not None:
        _LOGGER.info(
            "gateway limits each principal to %g calls per second, bursts of %d",
            rate_limiter.rate,
            rate_limiter.burst,
        )
    if tls is not None:
        _LOGGER.info(
            "gateway serves TLS on both fronts with %s%s",
            tls.cert_file,
            ", requiring client certificates" if tls.mutual else "",
        )
    _LOGGER.info(
        "gateway listening: gRPC on port %d, REST on port %d; %d public services, "
        "%d REST routes",
        grpc_port,
        http_port,
        len(services),
        len(rest.table.routes),
    )
    for backend in pool.backends.values():
        _LOGGER.info("gateway forwards %s to %s", backend.name, backend.address)
    return Gateway(
        config,
        aio_server,
        grpc_port,
        http_port,
        services,
        health_servicer,
        pool,
        rest,
        watcher,
        uvicorn_server,
        uvicorn_task,
        gateway_auth,
        tls,
    )


# Request headers that a page may send to the REST port, and response
# headers it may read.
CORS_REQUEST_HEADERS = ("authorization", "content-type", "grpc-timeout", "if-match")
CORS_EXPOSED_HEADERS = ("etag", "retry-after", "www-authenticate")


def _with_cors(app: Any, origins: str) -> Any:
    """Wrap the REST app so that it handles CORS requests from `origins`.

    Credentials travel in the Authorization header, never in cookies, so the
    responses do not allow credentials and `*` is safe to give.
    """
    allowed = cors_origins(origins)
    if not allowed:
        return app
    return CORSMiddleware(
        app,
        allow_origins=allowed,
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=list(CORS_REQUEST_HEADERS),
        expose_headers=list(CORS_EXPOSED_HEADERS),
        max_age=600,
    )


async def _wait_started(server: uvicorn.Server, task: asyncio.Task) -> None:
    deadline = asyncio.get_running_loop().time() + _STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if task.done():
            raise RuntimeError("gateway: the HTTP server exited during startup")
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("gateway: the HTTP server did not start in time")
        await asyncio.sleep(0.005)
