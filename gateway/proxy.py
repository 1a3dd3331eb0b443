"""The gRPC front: forwards every public RPC to its backend as raw bytes.

Messages are never parsed. Each method gets one server handler and one client
multicallable, both with identity serializers, created when the gateway
starts. A forwarded call carries the caller's metadata (minus hop-by-hop and
gRPC-reserved headers and the caller's credential) and the caller's remaining
deadline, less a margin for a create that the gateway gave a request_id
(`ProxyHandlers._timeout`). The backend's
status, message and trailing metadata come back unchanged, so rich errors in
`grpc-status-details-bin` reach the client as the backend sent them.

The gateway checks each request message against `max_message_bytes` itself,
because it forwards the bytes without a deserializer. A message over the setting gets
RESOURCE_EXHAUSTED naming it and is never forwarded. In a request stream, the
backend call is cancelled at that message.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from google.protobuf.descriptor import MethodDescriptor
from grpc_status import rpc_status

from gateway import idempotency
from gateway.auth import AUTHORIZATION
from gateway.http_rules import routes_for_method
from gateway.limits import GRPC_CONCURRENCY_MESSAGE, too_many_calls
from gateway.services import PublicService
from splitlog_runtime import auth
from splitlog_runtime.channels import aio_insecure_channel, answer_before
from splitlog_runtime.errors import STATUS_DETAILS_KEY, DomainError, Unavailable
from splitlog_runtime.failure_log import FailureLogs
from splitlog_runtime.limits import message_too_large

if TYPE_CHECKING:
    from gateway.inprocess import InProcessDispatcher

_LOGGER = logging.getLogger(__name__)


# Retry delay in seconds that the RetryInfo of an unreachable backend carries.
BACKEND_RETRY_DELAY = 1.0

# The text of grpc's RESOURCE_EXHAUSTED for a received reply whose metadata
# is over the channel's `grpc.max_metadata_size`, such as "Stream removed
# (received metadata size exceeds soft limit (9049 vs. 8192) ...)" in grpcio
# 1.85.
METADATA_TOO_LARGE_TEXT = "metadata size exceeds"

# ErrorInfo reason of a backend reply that the gateway dropped for its size.
BACKEND_REPLY_TOO_LARGE = "BACKEND_REPLY_TOO_LARGE"

# Minimum seconds between two warnings about the same unreachable backend.
UNREACHABLE_LOG_INTERVAL = 10.0

# Headers that describe one hop or that gRPC itself sets; never forwarded.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)
# gRPC-reserved keys that carry the caller's trace context end to end.
_FORWARDED_GRPC_KEYS = frozenset({"grpc-trace-bin", "grpc-tags-bin"})

Metadata = tuple[tuple[str, str | bytes], ...]


def forwardable(
    metadata: Iterable[tuple[str, str | bytes]] | None, client: str = ""
) -> Metadata:
    """Drop pseudo-headers, hop-by-hop headers and gRPC-reserved keys.

    A client's own principal keys and its `authorization` credential are
    dropped too, because backends trust only the principal that the gateway
    signs, and none of them reads a credential from metadata. With
    `auth_required`, the gateway's signed principal of the current call is
    added in their place.
    Without it, `client` (the caller's host) goes out unsigned as
    `x-splitlog-client`, because the log router counts open streams per
    client and would otherwise see only the gateway.
    """
    kept = tuple(
        (key, value)
        for key, value in metadata or ()
        if key not in _HOP_HEADERS
        and key not in auth.AUTH_METADATA_KEYS
        and key != AUTHORIZATION
        and not key.startswith(":")
        and (not key.startswith("grpc-") or key in _FORWARDED_GRPC_KEYS)
    )
    signed = auth.outgoing_metadata()
    if signed or not client:
        return kept + signed
    return kept + ((auth.CLIENT_KEY, client),)


def forwarded_metadata(context: grpc.aio.ServicerContext) -> Metadata:
    """Return what a call of the gRPC front forwards to its backend."""
    return forwardable(context.invocation_metadata(), auth.peer_host(context.peer()))


def returned_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
    """Keep what a backend returns, including `grpc-status-details-bin`."""
    if not metadata:
        return ()
    return tuple(
        (key, value)
        for key, value in metadata
        if key not in _HOP_HEADERS
        and key not in ("grpc-status", "grpc-message")
        and not key.startswith(":")
    )


@dataclass
class Backend:
    """One component behind the gateway and the channel that reaches it."""

    name: str
    address: str
    channel: grpc.aio.Channel


class BackendPool:
    """The channels to the backends and one raw-bytes multicallable per method.

    Both fronts call the backends through this pool, so each method's
    multicallable is created once and shared. When `in_process` is set (by
    `gateway.inprocess.install`), the gRPC front runs unary calls to backends
    that live in this process without the network.
    """

    def __init__(
        self,
        services: Iterable[PublicService],
        address_of: Callable[[str], str],
        max_message_bytes: int,
    ) -> None:
        self.backends: dict[str, Backend] = {}
        self.backend_by_method: dict[str, Backend] = {}
        self.method_by_path: dict[str, MethodDescriptor] = {}
        self.callables: dict[str, grpc.aio.MultiCallable] = {}
        self._unreachable_log = FailureLogs(
            _LOGGER, lambda backend: f"calls to {backend}", UNREACHABLE_LOG_INTERVAL
        )
        self.in_process: InProcessDispatcher | None = None
        # Names of the backends that left `health.PROBE_MISSES` health checks
        # in a row without a reply and have not replied since. The health
        # watcher keeps the set. Calls to these backends fail at once unless
        # the backend completed a call within `progress_window_seconds`.
        self.unresponsive: set[str] = set()
        # Seconds within which a completed call shows that a backend in
        # `unresponsive` still runs calls. The health watcher sets it.
        self.progress_window_seconds = 0.0
        # Backend name to the time.monotonic() at which the backend last
        # completed a forwarded call, with any status of its own.
        self._last_completed: dict[str, float] = {}
        for service in services:
            backend = self.backends.get(service.backend)
            if backend is None:
                address = address_of(service.backend)
                channel = aio_insecure_channel(address, max_message_bytes)
                backend = Backend(service.backend, address, channel)
                self.backends[service.backend] = backend
            for method in service.descriptor.methods:
                path = f"/{service.full_name}/{method.name}"
                self.backend_by_method[path] = backend
                self.method_by_path[path] = method
                self.callables[path] = _multicallable(backend.channel, method, path)

    async def close(self) -> None:
        """Close every channel; calls still running on them are cancelled."""
        for backend in self.backends.values():
            await backend.channel.close()

    def unresponsive_error(self, path: str) -> Unavailable | None:
        """Return the error of a call to a backend that is not responding, or None.

        A backend that stopped (SIGSTOP) or whose handlers are all blocked
        keeps its connections open, so a call forwarded to it would wait
        for its whole deadline. While the health checks find it so, and it
        completed no call within `progress_window_seconds`, the gateway
        returns UNAVAILABLE at once instead. A backend whose handler threads
        are all busy with slow calls leaves the checks waiting too, but it
        still completes calls, so its calls are forwarded.

        NOTE: a busy backend whose calls each take longer than the window
        completes none within it, so its calls are still rejected. A stream
        counts only when it ends with a status that the backend sent, not
        when it ends with OK.
        """
        backend = self.backend_by_method.get(path)
        if backend is None or backend.name not in self.unresponsive:
            return None
        last_completed = self._last_completed.get(backend.name)
        if (
            last_completed is not None
            and time.monotonic() - last_completed < self.progress_window_seconds
        ):
            return None
        return backend_not_responding(backend)

    def translate_error(
        self,
        error: grpc.aio.AioRpcError,
        path: str,
        filled_request_id: str | None = None,
    ) -> grpc.Status:
        """Return the status to send a client for a failed backend call.

        A status with rich details comes from the backend application and
        passes unchanged. UNAVAILABLE without details means the gateway could
        not reach the backend (or the backend's gRPC runtime refused the call),
        so the client gets a message that names the backend, an ErrorInfo
        and a RetryInfo. `filled_request_id` is the request_id that the
        gateway filled in for the call, if it did.
        """
        return self.translate_status(
            error.code(),
            error.details() or "",
            error.trailing_metadata(),
            path,
            filled_request_id,
        )

    def translate_status(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
        path: str,
        filled_request_id: str | None = None,
    ) -> grpc.Status:
        """Return the status to send a client for a backend's non-OK status."""
        trailing = returned_metadata(trailing_metadata)
        if _sent_by_backend(code, details, trailing):
            self._record_completed(self.backend_by_method.get(path))
        if code == grpc.StatusCode.UNAVAILABLE and not any(
            key == STATUS_DETAILS_KEY for key, _ in trailing
        ):
            backend = self.backend_by_method[path]
            self._log_unreachable(backend, details)
            return rpc_status.to_status(backend_unavailable(backend).to_status())
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not any(
            key == STATUS_DETAILS_KEY for key, _ in trailing
        ):
            # grpc's own "Deadline Exceeded" names neither the backend nor
            # what a client may assume about the call.
            backend = self.backend_by_method[path]
            error = backend_deadline_exceeded(
                backend, self.method_by_path[path], filled_request_id
            )
            return rpc_status.to_status(error.to_status())
        if (
            code == grpc.StatusCode.RESOURCE_EXHAUSTED
            and METADATA_TOO_LARGE_TEXT in details
            and not any(key == STATUS_DETAILS_KEY for key, _ in trailing)
        ):
            # The gateway's channel dropped a reply whose metadata exceeded
            # its limit. This is a fault of the backend, not a quota of the
            # client, so the client gets no RESOURCE_EXHAUSTED.
            backend = self.backend_by_method[path]
            _LOGGER.error(
                "%s sent %s a reply it dropped: %s", backend.name, path, details
            )
            return rpc_status.to_status(backend_reply_too_large(backend).to_status())
        if (
            code == grpc.StatusCode.RESOURCE_EXHAUSTED
            and details == GRPC_CONCURRENCY_MESSAGE
        ):
            # grpc rejected the call over the backend's max_concurrent_rpcs
            # with a message that does not name the setting, so replace it.
            backend = self.backend_by_method[path]
            return rpc_status.to_status(too_many_calls(backend.name, None).to_status())
        return _Status(code, details, trailing)

    def call_succeeded(self, path: str) -> None:
        """Record a successful call of `path` for the log of unreachable backends.

        The first success after the backend was unreachable writes an INFO
        line and ends that run of failures. Otherwise it costs two dict
        look-ups. A path that no backend serves, such as a view that the
        gateway serves itself, is ignored.
        """
        backend = self.backend_by_method.get(path)
        if backend is not None:
            self._unreachable_log.succeeded(backend.name)
            self._record_completed(backend)

    def _record_completed(self, backend: Backend | None) -> None:
        if backend is not None:
            self._last_completed[backend.name] = time.monotonic()

    def _log_unreachable(self, backend: Backend, cause: str) -> None:
        self._unreachable_log.failed(
            backend.name,
            "%s at %s is unreachable: %s",
            backend.name,
            backend.address,
            cause,
        )


def _sent_by_backend(code: grpc.StatusCode, details: str, trailing: Metadata) -> bool:
    """Return whether a backend call ended with a status that the backend sent.

    DEADLINE_EXCEEDED, CANCELLED and UNAVAILABLE without rich details come
    from the gateway's side of the call, or from a backend that did not run
    it. So does grpc's RESOURCE_EXHAUSTED over the backend's
    max_concurrent_rpcs, which a backend with blocked handlers sends too.
    """
    if any(key == STATUS_DETAILS_KEY for key, _ in trailing):
        return True
    if code in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAVAILABLE,
    ):
        return False
    return not (
        code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and details == GRPC_CONCURRENCY_MESSAGE
    )


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: Metadata):
        self.code = code
        self.details = details
        self.trailing_metadata = trailing


def backend_unavailable(backend: Backend) -> Unavailable:
    """Build the client's error for a backend that the gateway cannot reach.

    The backend's address and grpc's cause stay out of it because they
    describe the internal network. `_log_unreachable` writes them to the
    gateway's log.
    """
    return Unavailable(
        f"{backend.name} is unavailable; retry in {BACKEND_RETRY_DELAY:g}s",
        reason="BACKEND_UNAVAILABLE",
        metadata={"backend": backend.name},
        retry_delay=BACKEND_RETRY_DELAY,
    )


def backend_not_responding(backend: Backend) -> Unavailable:
    """Build the client's error for a backend that leaves health checks unanswered."""
    return Unavailable(
        f"{backend.name} is not responding: it left the gateway's latest health "
        "checks without a reply, so the gateway forwards no calls to it until it "
        f"replies again; retry in {BACKEND_RETRY_DELAY:g}s",
        reason="BACKEND_UNAVAILABLE",
        metadata={"backend": backend.name},
        retry_delay=BACKEND_RETRY_DELAY,
    )


class _BackendTimeout(DomainError):
    """A backend that did not respond within the call's deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "BACKEND_DEADLINE_EXCEEDED"


def backend_deadline_exceeded(
    backend: Backend, method: MethodDescriptor, filled_request_id: str | None = None
) -> DomainError:
    """Build the client's error for a backend call that ran out of time.

    What the message advises depends on the method: a read can simply be
    retried, a write with a `request_id` field can be retried with the same
    id, and any other write may have taken effect, so the client checks first.
    A client that sent no `request_id` has no id to repeat, so when the gateway
    filled one in (`filled_request_id`), the message and the ErrorInfo
    metadata entry `request_id` give it.
    """
    metadata = {"backend": backend.name, "method": method.full_name}
    if filled_request_id and not is_read(method):
        metadata["request_id"] = filled_request_id
        return _BackendTimeout(
            f"{backend.name} did not answer within the call's deadline, so the "
            "call may or may not have taken effect. The request had no "
            f"request_id, so the gateway sent it with request_id "
            f"{filled_request_id!r}: send it again with that request_id, and a "
            "longer deadline if needed, to get its result without storing a "
            "second copy",
            metadata=metadata,
            retry_delay=BACKEND_RETRY_DELAY,
        )
    if is_read(method):
        advice = "the call only reads, so retry it"
    elif "request_id" in method.input_type.fields_by_name:
        # NOTE: this also covers a create that came without a request_id and
        # that the gateway left without one, because the key would have taken
        # it over max_message_bytes.
        advice = (
            "the call may or may not have taken effect, so retry it with the "
            "same request id"
        )
    else:
        advice = (
            "the call may or may not have taken effect, so read what it changes "
            "before you retry it"
        )
    return _BackendTimeout(
        f"{backend.name} did not answer within the call's deadline; {advice}, "
        "or retry with a longer deadline",
        metadata=metadata,
        retry_delay=BACKEND_RETRY_DELAY,
    )


def is_read(method: MethodDescriptor) -> bool:
    """Return whether a method only reads.

    A method reads when every HTTP route of it is a GET, or when it sends a
    response stream for one request, such as TailLogEntries.
    """
    if method.server_streaming and not method.client_streaming:
        return True
    routes = routes_for_method(method)
    return bool(routes) and all(route.http_method == "GET" for route in routes)


class _BackendFault(DomainError):
    """A backend's reply that the gateway could not pass on; retrying gets the
    same reply."""

    code = grpc.StatusCode.INTERNAL
    default_reason = BACKEND_REPLY_TOO_LARGE


def backend_reply_too_large(backend: Backend) -> DomainError:
    """Build the client's error for a backend reply that the gateway dropped.

    The REST front returns it with HTTP status 502.
    """
    return _BackendFault(
        f"{backend.name} sent a reply whose metadata is over the gateway's "
        "limit, so the gateway dropped it; the call may have taken effect. "
        "This is a server fault: see the gateway log",
        metadata={"backend": backend.name},
    )


def _multicallable(channel: grpc.aio.Channel, method, path: str):
    kind = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    return kind(path, _registered_method=True)


class _CheckedRequests:
    """A client's request stream whose messages are checked against the limit.

    At a message over `max_message_bytes`, iteration raises, so grpc cancels
    the backend call that reads the stream, and `error` stores the error for
    the client.
    """

    def __init__(self, requests: AsyncIterator[bytes], max_message_bytes: int):
        self._requests = requests
        self._max_message_bytes = max_message_bytes
        self.error: DomainError | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for request in self._requests:
            if len(request) > self._max_message_bytes:
                self.error = message_too_large(len(request), self._max_message_bytes)
                raise self.error
            yield request


async def _abort(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    await context.abort_with_status(rpc_status.to_status(error.to_status()))


class ProxyHandlers:
    """Build the server handlers that forward each public method.

    Args:
      pool: the backends and their multicallables.
      default_timeout: seconds given to a unary-response call whose caller set
        no deadline.
      max_message_bytes: largest request message forwarded.
    """

    def __init__(
        self, pool: BackendPool, default_timeout: float, max_message_bytes: int
    ) -> None:
        self._pool = pool
        self._default_timeout = default_timeout
        self._max_message_bytes = max_message_bytes

    def method_handlers(
        self, service: PublicService
    ) -> dict[str, grpc.RpcMethodHandler]:
        """Return the handler of each method of a service, keyed by method name."""
        handlers = {}
        for method in service.descriptor.methods:
            path = f"/{service.full_name}/{method.name}"
            build = {
                (False, False): self._unary_unary,
                (False, True): self._unary_stream,
                (True, False): self._stream_unary,
                (True, True): self._stream_stream,
            }[(method.client_streaming, method.server_streaming)]
            handlers[method.name] = build(path)
        return handlers

    def _timeout(
        self, context: grpc.aio.ServicerContext, takes_request_id: bool = False
    ) -> float | None:
        """Return the backend deadline of a unary-response call.

        `takes_request_id` is true for a create whose request has a
        `request_id` field, whether the client set the key or the gateway
        filled it in. The backend call then ends a margin before the client's
        deadline (`answer_before`).
        The gateway's error, whose message names that key for a retry, thus
        reaches the client before the client's own
        DEADLINE_EXCEEDED.
        """
        remaining = context.time_remaining()
        if remaining is None or remaining > 1e9:
            return self._default_timeout
        if takes_request_id:
            return answer_before(remaining)
        return max(remaining, 0.0)

    @staticmethod
    def _streaming_timeout(context: grpc.aio.ServicerContext) -> float | None:
        # A stream without a caller deadline, such as a tail or a write
        # stream, runs for as long as the client keeps it open. Client
        # cancellation still ends the backend call.
        remaining = context.time_remaining()
        if remaining is None or remaining > 1e9:
            return None
        return max(remaining, 0.0)

    async def _fail(
        self,
        context,
        error: grpc.aio.AioRpcError,
        path: str,
        filled_request_id: str | None = None,
    ):
        status = self._pool.translate_error(error, path, filled_request_id)
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def _check_responding(
        self, path: str, context: grpc.aio.ServicerContext
    ) -> None:
        error = self._pool.unresponsive_error(path)
        if error is not None:
            await _abort(context, error)

    async def _check_size(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> None:
        if len(request) > self._max_message_bytes:
            await _abort(
                context, message_too_large(len(request), self._max_message_bytes)
            )

    def _unary_unary(self, path: str) -> grpc.RpcMethodHandler:
        multicallable = self._pool.callables[path]
        request_class = idempotency.filled_request_class(
            self._pool.method_by_path[path]
        )

        async def forward(request: bytes, context: grpc.aio.ServicerContext):
            await self._check_size(request, context)
            await self._check_responding(path, context)
            filled_key = None
            if request_class is not None:
                # A call in process is never retried. It still gets a key,
                # because a client whose call times out needs the key to send
                # the create again, as over the network.
                key = str(uuid.uuid4())
                filled = idempotency.with_request_id(
                    request, request_class, self._max_message_bytes, key
                )
                if filled is not request:
                    request, filled_key = filled, key
            if self._pool.in_process is not None:
                response = await self._pool.in_process.call(
                    path,
                    request,
                    context,
                    self._timeout(context, request_class is not None),
                    filled_key,
                )
                if response is not None:
                    return response
            metadata = forwarded_metadata(context)
            if filled_key is not None:
                metadata = metadata + idempotency.FILLED
            call = multicallable(
                request,
                timeout=self._timeout(context, request_class is not None),
                metadata=metadata,
            )
            try:
                response = await call
            except grpc.aio.AioRpcError as error:
                await self._fail(context, error, path, filled_key)
            except asyncio.CancelledError:
                call.cancel()
                raise
            self._pool.call_succeeded(path)
            await _relay_headers(call, context)
            await _relay_trailers(call, context)
            return response

        return grpc.unary_unary_rpc_method_handler(forward)

    def _unary_stream(self, path: str) -> grpc.RpcMethodHandler:
        multicallable = self._pool.callables[path]

        async def forward(
            request: bytes, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            await self._check_size(request, context)
            await self._check_responding(path, context)
            call = multicallable(
                request,
                timeout=self._streaming_timeout(context),
                metadata=forwarded_metadata(context),
            )
            _cancel_when_done(context, call)
            try:
                await _relay_headers(call, context)
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as error:
                await self._fail(context, error, path)
            except asyncio.CancelledError:
                call.cancel()
                raise
            await _relay_trailers(call, context)

        return grpc.unary_stream_rpc_method_handler(forward)

    def _stream_unary(self, path: str) -> grpc.RpcMethodHandler:
        multicallable = self._pool.callables[path]

        async def forward(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ):
            await self._check_responding(path, context)
            checked = _CheckedRequests(requests, self._max_message_bytes)
            call = multicallable(
                checked,
                timeout=self._streaming_timeout(context),
                metadata=forwarded_metadata(context),
            )
            try:
                response = await call
            except grpc.aio.AioRpcError as error:
                await self._fail(context, error, path)
            except asyncio.CancelledError:
                # The client cancelled, or `checked` met an oversized message.
                call.cancel()
                if checked.error is None:
                    raise
                await _abort(context, checked.error)
            await _relay_headers(call, context)
            await _relay_trailers(call, context)
            return response

        return grpc.stream_unary_rpc_method_handler(forward)

    def _stream_stream(self, path: str) -> grpc.RpcMethodHandler:
        multicallable = self._pool.callables[path]

        async def forward(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            await self._check_responding(path, context)
            checked = _CheckedRequests(requests, self._max_message_bytes)
            call = multicallable(
                checked,
                timeout=self._streaming_timeout(context),
                metadata=forwarded_metadata(context),
            )
            _cancel_when_done(context, call)
            try:
                await _relay_headers(call, context)
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as error:
                await self._fail(context, error, path)
            except asyncio.CancelledError:
                # The client cancelled, or `checked` met an oversized message.
                call.cancel()
                if checked.error is None:
                    raise
                await _abort(context, checked.error)
            await _relay_trailers(call, context)

        return grpc.stream_stream_rpc_method_handler(forward)


def _cancel_when_done(context: grpc.aio.ServicerContext, call) -> None:
    """Cancel the backend call once the client's call ends, however it ends.

    When a write to the client fails, because the client left or rejected a
    message, the gateway closes this handler's generator at its `yield` (see
    `gateway.stream_writes`), so no CancelledError reaches it. Without this
    callback the backend call would stay open; for a tail, it would keep a
    router stream slot.
    """
    context.add_done_callback(lambda _context: call.cancel())


async def _relay_headers(call, context: grpc.aio.ServicerContext) -> None:
    headers = returned_metadata(await call.initial_metadata())
    if headers:
        await context.send_initial_metadata(headers)


async def _relay_trailers(call, context: grpc.aio.ServicerContext) -> None:
    trailers = returned_metadata(await call.trailing_metadata())
    if trailers:
        context.set_trailing_metadata(trailers)
