"""Unary calls to a backend in the same process, without the network hop.

In `splitlog up` the gateway and every service share one process, so the
gateway's gRPC front calls the handler of a unary-unary method directly. The
handler runs on a thread of a pool sized like the service's own, with a
`LocalServicerContext` in place of the gRPC server's context. Streaming
methods, services in other processes and methods the service does not
register keep going over the network.

The client sees what network forwarding would send. The request goes through
the method's deserializer and the response through its serializer. The
service's interceptors, the error interceptor among them, run around the
handler. The handler receives the forwarded metadata and the caller's remaining
deadline (or `deadline_seconds`). A non-OK status passes through
`BackendPool.translate_status`, as a backend's status does. The status codes
and messages for failures outside the handler are those of grpcio's sync
server (1.85), such as "Exception calling application: ...".

NOTE: a handler can tell the two paths apart. `peer()` returns the gateway's
caller rather than the gateway, the invocation metadata lacks the
`user-agent` of the gateway's channel, and after `context.cancel()` the
client gets CANCELLED only once the handler returns. The REST front and the
gateway's own views still call the services over the network.

Once a service's host begins to stop, its calls go over the network again,
where the stopping server rejects them with UNAVAILABLE. The host's stop then
waits, up to `grace_seconds`, for the calls already running here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from gateway import idempotency
from gateway.proxy import BackendPool, forwardable, returned_metadata
from splitlog_runtime.config import Config
from splitlog_runtime.server import MethodHandlers, ServiceHost

_LOGGER = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str | bytes]]

# The status messages of a call whose deadline passed or that was cancelled.
_DEADLINE_EXCEEDED = b"Deadline Exceeded"
_CANCELLED = b"Cancelled"


# One metadata entry, shaped as grpcio's server hands them out.
_Metadatum = collections.namedtuple("_Metadatum", ("key", "value"))


@dataclass
class _Outcome:
    """The status, response and metadata that one handler call produced."""

    code: grpc.StatusCode
    details: bytes
    response: bytes | None = None
    initial_metadata: Metadata | None = None
    trailing_metadata: Metadata | None = None


def _encode(details: str | bytes) -> bytes:
    return details if isinstance(details, bytes) else details.encode("utf-8")


def _decode(details: bytes | str) -> str:
    if isinstance(details, str):
        return details
    try:
        return details.decode("utf-8")
    except UnicodeDecodeError:
        return details.decode("latin-1")


class LocalServicerContext(grpc.ServicerContext):
    """The servicer context of a call run in process.

    It behaves as grpcio's sync server context does: `abort()` sets the status
    and raises, `details()` returns bytes, `is_active()` turns False once the
    status is set or the caller has gone, and callbacks run once when the call
    ends.

    Args:
      metadata: the forwarded invocation metadata.
      deadline: the call's deadline on the `time.monotonic()` clock.
      peer: the address of the gateway's caller.
    """

    def __init__(self, metadata: Metadata, deadline: float, peer: str) -> None:
        self._lock = threading.Lock()
        self._metadata = tuple(_Metadatum(key, value) for key, value in metadata)
        self._deadline = deadline
        self._peer = peer
        self._code: grpc.StatusCode | None = None
        self._details: bytes | None = None
        self._initial_metadata: Metadata | None = None
        self._trailing_metadata: Metadata | None = None
        self._aborted = False
        self._statused = False
        self._cancelled = False
        self._callbacks: list[Callable[[], None]] | None = []

    # Reads of the call.

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def time_remaining(self) -> float:
        return max(self._deadline - time.monotonic(), 0.0)

    def is_active(self) -> bool:
        with self._lock:
            return not (self._statused or self._cancelled)

    # Status and metadata that the handler sets.

    def set_code(self, code: grpc.StatusCode) -> None:
        with self._lock:
            self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        with self._lock:
            self._details = _encode(details)

    def details(self) -> bytes | None:
        return self._details

    def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        with self._lock:
            if self._cancelled:
                raise grpc.RpcError("the call was cancelled")
            if self._initial_metadata is not None or self._statused:
                raise ValueError("Initial metadata no longer allowed!")
            self._initial_metadata = tuple(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        with self._lock:
            self._trailing_metadata = trailing_metadata

    def trailing_metadata(self) -> Metadata | None:
        return self._trailing_metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        if code == grpc.StatusCode.OK:
            _LOGGER.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code, details = grpc.StatusCode.UNKNOWN, ""
        with self._lock:
            self._code = code
            self._details = _encode(details)
            self._aborted = True
        # grpcio's sync server raises a bare Exception here too; the caller
        # then sees the status set above.
        raise Exception()  # noqa: TRY002

    def abort_with_status(self, status: grpc.Status) -> None:
        self._trailing_metadata = status.trailing_metadata
        self.abort(status.code, status.details)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._callbacks is None:
                return False
            self._callbacks.append(callback)
            return True

    def cancel(self) -> None:
        _run_callbacks(self.cancel_call())

    def set_compression(self, compression: grpc.Compression) -> None:
        """Do nothing: a call in process sends no bytes to compress."""

    def disable_next_message_compression(self) -> None:
        """Do nothing: a call in process sends no bytes to compress."""

    # Used by the dispatcher.

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel_call(self) -> list[Callable[[], None]]:
        """Mark the caller gone and return the callbacks that are now due."""
        with self._lock:
            self._cancelled = True
            return self._take_callbacks()

    def fail(self, code: grpc.StatusCode, details: bytes) -> _Outcome:
        """End the call with an error; a code or details the handler set win."""
        with self._lock:
            self._statused = True
            return _Outcome(
                self._code or code,
                details if self._details is None else self._details,
                trailing_metadata=self._trailing_metadata,
            )

    def reject(self, code: grpc.StatusCode, details: bytes) -> _Outcome:
        """End a call that no handler took, ignoring what the context holds."""
        with self._lock:
            self._statused = True
        return _Outcome(code, details)

    def complete(self, response: bytes) -> _Outcome:
        """End the call with the handler's response and the status it set."""
        with self._lock:
            self._statused = True
            return _Outcome(
                self._code or grpc.StatusCode.OK,
                self._details or b"",
                response,
                self._initial_metadata,
                self._trailing_metadata,
            )

    def finish(self) -> list[Callable[[], None]]:
        """Return the callbacks due now that the handler has returned."""
        with self._lock:
            return self._take_callbacks()

    @property
    def aborted(self) -> bool:
        return self._aborted

    def _take_callbacks(self) -> list[Callable[[], None]]:
        callbacks, self._callbacks = self._callbacks, None
        return callbacks or []


def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            _LOGGER.exception("Exception calling callback!")


def run_handler(
    handlers: MethodHandlers,
    path: str,
    request: bytes,
    context: LocalServicerContext,
) -> _Outcome:
    """Run one unary call through a server's interceptors and handler.

    Every failure becomes the status that grpcio's sync server would send.
    """
    try:
        handler = handlers.find(path, context.invocation_metadata())
    except Exception:
        _LOGGER.exception("Exception servicing handler of %s", path)
        return context.reject(grpc.StatusCode.UNKNOWN, b"Error in service handler!")
    if handler is None or handler.unary_unary is None:
        return context.reject(grpc.StatusCode.UNIMPLEMENTED, b"Method not found!")

    try:
        message = (
            handler.request_deserializer(request)
            if handler.request_deserializer
            else request
        )
    except Exception:
        _LOGGER.exception("Exception deserializing message!")
        return context.fail(
            grpc.StatusCode.INTERNAL, b"Exception deserializing request!"
        )

    try:
        response = handler.unary_unary(message, context)
    except Exception as exc:
        if context.aborted:
            return context.fail(grpc.StatusCode.UNKNOWN, b"RPC Aborted")
        _LOGGER.exception("Exception calling application: %s", exc)
        details = f"Exception calling application: {exc}"
        return context.fail(grpc.StatusCode.UNKNOWN, details.encode("utf-8"))

    try:
        serialized = (
            handler.response_serializer(response)
            if handler.response_serializer
            else response
        )
    except Exception:
        _LOGGER.exception("Exception serializing message!")
        serialized = None
    if serialized is None:
        return context.fail(grpc.StatusCode.INTERNAL, b"Failed to serialize response!")
    return context.complete(serialized)


@dataclass(eq=False)
class _LocalCall:
    """One call in flight: its context and the future that the loop awaits."""

    context: LocalServicerContext
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future

    def deliver(self, outcome: _Outcome) -> None:
        """Hand the outcome to the loop; called from a worker thread."""
        self.loop.call_soon_threadsafe(_set_result, self.future, outcome)

    def end_for_caller(self, exception: BaseException | None = None) -> None:
        """Mark the caller gone, run due callbacks off the loop, wake the loop."""
        callbacks = self.context.cancel_call()
        if callbacks:
            self.loop.run_in_executor(None, _run_callbacks, callbacks)
        if exception is not None and not self.future.done():
            self.future.set_exception(exception)


def _set_result(future: asyncio.Future, outcome: _Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


class _LocalHost:
    """The route to one service host: its handlers, its worker pool, its calls.

    Calls are admitted only while the host runs. `drain()`, run when the host
    stops, turns new calls away and waits for the admitted ones.
    """

    def __init__(self, host: ServiceHost, handlers: MethodHandlers) -> None:
        self.host = host
        self.handlers = handlers
        self._executor = ThreadPoolExecutor(
            max_workers=handlers.workers, thread_name_prefix=f"{host.name}-local"
        )
        self._condition = threading.Condition()
        self._calls: set[_LocalCall] = set()
        self._closed = False

    def submit(self, call: _LocalCall, path: str, request: bytes) -> bool:
        """Start a call on a worker thread; False when the host has stopped."""
        with self._condition:
            if self._closed or self.host.stopped:
                return False
            self._calls.add(call)
            self._executor.submit(self._work, call, path, request)
        return True

    def _work(self, call: _LocalCall, path: str, request: bytes) -> None:
        try:
            if not call.context.cancelled:
                outcome = run_handler(self.handlers, path, request, call.context)
                if call.context.cancelled:
                    # The handler called context.cancel(), or the caller left.
                    outcome = _Outcome(grpc.StatusCode.CANCELLED, _CANCELLED)
                call.deliver(outcome)
            _run_callbacks(call.context.finish())
        finally:
            with self._condition:
                self._calls.discard(call)
                self._condition.notify_all()

    def drain(self, timeout: float) -> None:
        """Turn new calls away and wait up to `timeout` for running ones.

        Calls still running after that are cancelled, as a stopping gRPC
        server cancels them when its grace period ends: their handlers see
        `is_active()` False, and their callers get CANCELLED.
        """
        with self._condition:
            self._closed = True
            self._condition.wait_for(lambda: not self._calls, timeout)
            left = list(self._calls)
        if left:
            _LOGGER.warning(
                "%s: %d in-process calls still running after %.1fs; cancelling them",
                self.host.name,
                len(left),
                timeout,
            )
        for call in left:
            # A closed loop means that the gateway, and with it the caller, is
            # gone already.
            with contextlib.suppress(RuntimeError):
                call.loop.call_soon_threadsafe(
                    call.end_for_caller, _Cancelled("the host stopped")
                )
        self._executor.shutdown(wait=False)


class _Cancelled(Exception):
    """Ends a call whose host stopped before the handler returned."""


class InProcessDispatcher:
    """Run unary calls of the public methods whose host is in this process.

    Args:
      pool: the gateway's backends; non-OK statuses go through its
        `translate_status`, as those of forwarded calls do.
      hosts: the running service hosts of this process, by component name.
      grace: seconds that running calls get when their host stops.
    """

    def __init__(
        self, pool: BackendPool, hosts: Mapping[str, ServiceHost], grace: float
    ) -> None:
        self._pool = pool
        self._routes: dict[str, _LocalHost] = {}
        local_hosts: dict[str, _LocalHost] = {}
        for path, backend in pool.backend_by_method.items():
            host = hosts.get(backend.name)
            if host is None or host.handlers is None:
                continue
            handler = host.handlers.lookup(path)
            if handler is None or handler.unary_unary is None:
                continue
            if backend.name not in local_hosts:
                local_hosts[backend.name] = _LocalHost(host, host.handlers)
            self._routes[path] = local_hosts[backend.name]
        for local in local_hosts.values():
            # Closers run last-registered first, so the drain runs before the
            # service closes its database.
            local.host.on_stop(lambda local=local: local.drain(grace))
        self.backends = sorted(local_hosts)

    @property
    def methods(self) -> list[str]:
        """The method paths that run in process, sorted."""
        return sorted(self._routes)

    async def call(
        self,
        path: str,
        request: bytes,
        context: grpc.aio.ServicerContext,
        timeout: float,
        filled_request_id: str | None = None,
    ) -> bytes | None:
        """Run a unary call in process and return the serialized response.

        A non-OK status aborts the gateway's call with what network forwarding
        would send.

        Args:
          path: the method path, such as `/splitlog.users.v1.UsersService/GetUser`.
          request: the serialized request.
          context: the gateway's context of the call.
          timeout: seconds the handler gets, from the caller's deadline or the
            default.
          filled_request_id: the request_id that the gateway filled into
            `request`, if it did. The handler then gets the metadata that
            marks a filled key, and a timeout names the key to the client.

        Returns:
          The serialized response, or None when the call must go over the
          network: the method is not served here or its host has stopped.
        """
        local = self._routes.get(path)
        if local is None:
            return None
        loop = asyncio.get_running_loop()
        metadata = forwardable(context.invocation_metadata())
        if filled_request_id is not None:
            metadata += idempotency.FILLED
        call = _LocalCall(
            LocalServicerContext(
                metadata,
                time.monotonic() + timeout,
                context.peer(),
            ),
            loop,
            loop.create_future(),
        )
        if not local.submit(call, path, request):
            return None
        expiry = loop.call_later(timeout, call.end_for_caller, TimeoutError())
        try:
            outcome = await call.future
        except TimeoutError:
            outcome = _Outcome(grpc.StatusCode.DEADLINE_EXCEEDED, _DEADLINE_EXCEEDED)
        except _Cancelled:
            outcome = _Outcome(grpc.StatusCode.CANCELLED, _CANCELLED)
        except asyncio.CancelledError:
            call.end_for_caller()
            raise
        finally:
            expiry.cancel()
        return await self._respond(outcome, path, context, filled_request_id)

    async def _respond(
        self,
        outcome: _Outcome,
        path: str,
        context: grpc.aio.ServicerContext,
        filled_request_id: str | None,
    ) -> bytes:
        if outcome.code == grpc.StatusCode.OK and outcome.response is not None:
            headers = returned_metadata(outcome.initial_metadata)
            if headers:
                await context.send_initial_metadata(headers)
            trailers = returned_metadata(outcome.trailing_metadata)
            if trailers:
                context.set_trailing_metadata(trailers)
            return outcome.response
        status = self._pool.translate_status(
            outcome.code,
            _decode(outcome.details),
            outcome.trailing_metadata,
            path,
            filled_request_id,
        )
        await context.abort(status.code, status.details, status.trailing_metadata)
        # Not reached: abort() raises. Returning None here would send the call
        # over the network a second time.
        raise AssertionError("context.abort() returned")


def install(
    pool: BackendPool, hosts: Mapping[str, ServiceHost], config: Config
) -> InProcessDispatcher:
    """Make the gateway run unary calls to the given hosts in process.

    A host whose `<service>_addr` setting is not empty is left out, because
    the gateway then forwards that service to the address given, which need
    not be this process.

    Args:
      pool: the running gateway's backend pool.
      hosts: the running service hosts of this process, by component name.
      config: resolved settings; `grace_seconds` bounds how long a stopping
        host waits for calls running in process.
    """
    local = {
        name: host
        for name, host in hosts.items()
        if not getattr(config, f"{name}_addr", "")
    }
    dispatcher = InProcessDispatcher(pool, local, config.grace_seconds)
    pool.in_process = dispatcher
    _LOGGER.info(
        "gateway runs %d unary methods of %s in process",
        len(dispatcher.methods),
        ", ".join(dispatcher.backends) or "no service",
    )
    return dispatcher
