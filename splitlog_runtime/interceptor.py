"""The server interceptors that turn exceptions into canonical status codes.

A DomainError becomes its status with google.rpc details, and one raised as
a final attempt also gets a trailer that stops the caller's channel from
retrying it (`DomainError.final_attempt`). A database that
does not respond (server down, connection dropped, lock timeout) becomes
UNAVAILABLE, which clients may retry. A connection lost while a write's
COMMIT was on its way (`CommitOutcomeUnknown`) leaves the write stored or
not: it becomes UNAVAILABLE only for a request that carries a `request_id`,
whose retry returns what was stored, and UNKNOWN otherwise, with a message
that says the write may be stored and how to check. Any other exception
is logged with its traceback and becomes INTERNAL with a message that names a
correlation id but no internals. There is one interceptor for `grpc.server`
and one for `grpc.aio.server`.

Both also wrap each handler's request deserializer. A request message over
`max_message_bytes` becomes RESOURCE_EXHAUSTED with a message that names the
setting, before any parsing. grpc's core accepts messages up to a higher
ceiling (`splitlog_runtime.limits.receive_ceiling`) so that this check sees
them. Request bytes that are not a valid message of the method's request type
become INVALID_ARGUMENT with a message that names the type, and a warning at
most every `_UNDECODABLE_LOG_SECONDS`, instead of grpcio's INTERNAL and a
traceback per call. When the bytes fail only because a string field is not
valid UTF-8, the message names that field. Each message of a request stream
is checked on its own.
"""

from __future__ import annotations

import collections
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from grpc_status import rpc_status
from sqlalchemy import exc as sqlalchemy_exc

from splitlog_runtime.database import CommitOutcomeUnknown
from splitlog_runtime.descriptors import find_invalid_utf8
from splitlog_runtime.errors import (
    RETRY_PUSHBACK_KEY,
    DomainError,
    FieldViolation,
    InvalidArgument,
    Unavailable,
    internal_status,
)
from splitlog_runtime.failure_log import FailureLog
from splitlog_runtime.handlers import handler_parts
from splitlog_runtime.limits import message_too_large, with_headroom

_LOGGER = logging.getLogger(__name__)

#: Minimum seconds between two warnings about undecodable requests.
_UNDECODABLE_LOG_SECONDS = 60.0


#: The warnings about undecodable requests, of every server in the process.
_undecodable_log = FailureLog(
    _LOGGER, "request decoding", interval=_UNDECODABLE_LOG_SECONDS
)


class _Rejected:
    """A placeholder for a request message that is too large or does not parse."""

    __slots__ = ("error",)

    def __init__(self, error: DomainError) -> None:
        self.error = error


def _raw_bytes(data: bytes) -> bytes:
    return data


def _type_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", None) or "request message"


def _undecodable_error(
    deserializer: Callable[[bytes], Any], type_name: str, data: bytes
) -> InvalidArgument:
    """Return the error for request bytes that do not parse.

    When the bytes parse with every string read as bytes, the error names the
    first string field that is not valid UTF-8.
    """
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    invalid = None
    if isinstance(descriptor, Descriptor):
        invalid = find_invalid_utf8(descriptor, data)
    if invalid is None:
        return InvalidArgument(
            f"the request body is not a valid {type_name}: {len(data)} bytes "
            "that do not parse as that protobuf message; send a serialized "
            f"{type_name}",
            reason="MALFORMED_REQUEST",
            metadata={"message_type": type_name},
        )
    description = (
        f"is not valid UTF-8: byte {invalid.offset} (0x{invalid.byte:02x}) "
        "starts no UTF-8 character"
    )
    others = invalid.count - 1
    if others:
        description += (
            f", and {others} more string field{'s' if others > 1 else ''} "
            f"{'are' if others > 1 else 'is'} not valid UTF-8 either"
        )
    return InvalidArgument(
        f"the request body is not a valid {type_name}: {invalid.path} "
        f"{description}. A protobuf string field must contain UTF-8 text, so "
        "the whole request message was rejected; encode the text as UTF-8, "
        "replacing or escaping the bytes that are not text",
        reason="MALFORMED_REQUEST",
        metadata={"message_type": type_name, "field": invalid.path},
        field_violations=[
            FieldViolation(invalid.path, description, "INVALID_UTF8"),
        ],
    )


def _tolerant_deserializer(
    deserializer: Callable[[bytes], Any] | None,
    method: str,
    max_message_bytes: int,
    headroom_bytes: int = 0,
) -> Callable[[bytes], Any]:
    """Wrap a request deserializer so that rejected bytes give a marker, not a raise.

    When a deserializer raises, grpcio returns INTERNAL and logs a
    traceback. The marker lets the wrapped behaviour return RESOURCE_EXHAUSTED
    for a message over `max_message_bytes` plus `headroom_bytes` and
    INVALID_ARGUMENT for bytes that do not parse. A handler without a
    deserializer gets the raw bytes.
    """
    if deserializer is None:
        deserializer = _raw_bytes
    type_name = _type_name(deserializer)
    limit = with_headroom(max_message_bytes, headroom_bytes)

    def deserialize(data: bytes) -> Any:
        if len(data) > limit:
            return _Rejected(
                message_too_large(len(data), max_message_bytes, headroom_bytes)
            )
        try:
            return deserializer(data)
        except Exception as exc:
            _undecodable_log.failed(
                "rejected a request to %s: its %d bytes are not a valid %s (%s)",
                method,
                len(data),
                type_name,
                exc,
            )
            return _Rejected(_undecodable_error(deserializer, type_name, data))

    return deserialize


def _checked(request: Any) -> Any:
    if isinstance(request, _Rejected):
        raise request.error
    return request


def _checked_stream(requests: Any) -> Any:
    for request in requests:
        yield _checked(request)


async def _checked_aio_stream(requests: Any) -> Any:
    async for request in requests:
        yield _checked(request)


def _checked_aio_input(request_or_iterator: Any, client_streaming: bool) -> Any:
    if client_streaming:
        return _checked_aio_stream(request_or_iterator)
    return _checked(request_or_iterator)


#: Database failures that a later attempt of the same call may not meet:
#: the server is down or restarting, a connection dropped, a lock timed out.
_TRANSIENT_DATABASE_ERRORS = (
    sqlalchemy_exc.OperationalError,
    sqlalchemy_exc.DisconnectionError,
)


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")),
    grpc.Status,
):
    """A status with trailers beyond the rich status details."""


def _domain_status(exc: DomainError) -> grpc.Status:
    status = rpc_status.to_status(exc.to_status())
    if not exc.final_attempt:
        return status
    return _Status(
        status.code,
        status.details,
        (*status.trailing_metadata, (RETRY_PUSHBACK_KEY, "-1")),
    )


class _OutcomeUnknown(DomainError):
    """A write whose COMMIT may or may not have taken effect."""

    code = grpc.StatusCode.UNKNOWN
    default_reason = "COMMIT_OUTCOME_UNKNOWN"


#: Seconds a client should wait before it retries a write whose commit was lost.
COMMIT_RETRY_DELAY = 1.0


def commit_outcome_unknown(request: Any) -> DomainError:
    """Build the client's error for a write whose COMMIT got no reply.

    A request with a `request_id` may be sent again as it was: the retry
    returns what the first call stored, or stores it once. So it gets
    UNAVAILABLE, which channels retry. Any other write gets UNKNOWN, which
    no retry policy repeats, and a message that the write may be stored.
    """
    start = (
        "the database connection dropped while the change was being committed, "
        "so it may or may not be stored"
    )
    request_id = getattr(request, "request_id", None)
    if request_id:
        return Unavailable(
            f"{start}; send the call again with the same request_id "
            f"{request_id!r}: it returns what the first call stored, or stores "
            "it once",
            reason="COMMIT_OUTCOME_UNKNOWN",
            retry_delay=COMMIT_RETRY_DELAY,
        )
    if request_id is not None:
        advice = (
            "list or read what the call creates to check before you send it "
            "again, because the same call without a request_id would store it "
            "twice; give each create a request_id (a UUID) so that a retry "
            "returns the stored result instead"
        )
    else:
        advice = (
            "read what the call changes to check whether it took effect before "
            "you send it again"
        )
    return _OutcomeUnknown(f"{start}: {advice}")


def _status_for(exc: BaseException, method: str, request: Any = None) -> grpc.Status:
    if isinstance(exc, DomainError):
        return _domain_status(exc)
    if isinstance(exc, CommitOutcomeUnknown):
        _LOGGER.warning(
            "the database connection dropped at the commit of %s, whose outcome "
            "is unknown: %s",
            method,
            exc.orig,
        )
        return rpc_status.to_status(commit_outcome_unknown(request).to_status())
    if isinstance(exc, _TRANSIENT_DATABASE_ERRORS):
        _LOGGER.warning(
            "database unavailable in %s: %s", method, getattr(exc, "orig", None) or exc
        )
        unavailable = Unavailable(
            "the service's database did not respond; retry the call shortly",
            reason="DATABASE_UNAVAILABLE",
            retry_delay=1.0,
        )
        return rpc_status.to_status(unavailable.to_status())
    incident = uuid.uuid4().hex[:12]
    _LOGGER.error(
        "unexpected error in %s (incident %s)", method, incident, exc_info=exc
    )
    return rpc_status.to_status(
        internal_status(f"internal error (incident {incident}); see the server log")
    )


def _passes_through(exc: Exception, context: grpc.ServicerContext) -> bool:
    """Return whether grpc itself must handle an exception of a sync handler."""
    # The request iterator raises grpc.RpcError once the client has cancelled.
    # grpcio recognizes its own error and ends the call without logging it.
    if isinstance(exc, grpc.RpcError) and not context.is_active():
        return True
    # A sync handler that calls context.abort() raises a bare Exception after
    # the status is set; that exception must pass through untouched.
    try:
        return context.code() is not None
    except AttributeError:
        return False


def _wrap_handler(
    handler: grpc.RpcMethodHandler,
    method: str,
    max_message_bytes: int,
    headroom_bytes: int = 0,
):
    behavior, factory = handler_parts(handler)
    streaming = handler.response_streaming
    client_streaming = handler.request_streaming

    def checked(request_or_iterator: Any) -> Any:
        if client_streaming:
            return _checked_stream(request_or_iterator)
        return _checked(request_or_iterator)

    if streaming and getattr(behavior, "experimental_non_blocking", False):
        # A non-blocking streaming handler (the health Watch) returns at once
        # and sends its responses through a callback later, so it holds no
        # worker thread while the stream is open. Keep it that way.

        def wrapped(request_or_iterator: Any, context, send_response_callback=None):
            try:
                return behavior(
                    checked(request_or_iterator),
                    context,
                    send_response_callback=send_response_callback,
                )
            except Exception as exc:
                if _passes_through(exc, context):
                    raise
                context.abort_with_status(_status_for(exc, method))

        wrapped.experimental_non_blocking = True

    elif streaming:

        def wrapped(request_or_iterator: Any, context: grpc.ServicerContext):
            try:
                yield from behavior(checked(request_or_iterator), context)
            except Exception as exc:
                if _passes_through(exc, context):
                    raise
                context.abort_with_status(_status_for(exc, method))

    else:

        def wrapped(request_or_iterator: Any, context: grpc.ServicerContext):
            try:
                return behavior(checked(request_or_iterator), context)
            except Exception as exc:
                if _passes_through(exc, context):
                    raise
                request = None if client_streaming else request_or_iterator
                context.abort_with_status(_status_for(exc, method, request))

    return factory(
        wrapped,
        request_deserializer=_tolerant_deserializer(
            handler.request_deserializer, method, max_message_bytes, headroom_bytes
        ),
        response_serializer=handler.response_serializer,
    )


class ErrorInterceptor(grpc.ServerInterceptor):
    """Map exceptions raised by sync servicers to status codes.

    Args:
      max_message_bytes: largest request message accepted; the setting of
        that name.
      headroom_bytes: bytes a request message may exceed the setting by, on
        a server that only other components call.
    """

    def __init__(self, max_message_bytes: int, headroom_bytes: int = 0) -> None:
        self._max_message_bytes = max_message_bytes
        self._headroom_bytes = headroom_bytes
        # The last handler wrapped for each method path, with its wrapper. A
        # registered handler is the same object on every call, so its
        # wrapper is built once. Concurrent calls may both build one, which
        # is harmless because the two behave the same.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap_handler(
            handler, method, self._max_message_bytes, self._headroom_bytes
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap_aio_handler(
    handler: grpc.RpcMethodHandler, method: str, max_message_bytes: int
):
    behavior, factory = handler_parts(handler)
    client_streaming = handler.request_streaming

    # A streaming handler that sends with `await context.write()` is a
    # coroutine, so it takes the coroutine wrapper.
    if inspect.isasyncgenfunction(behavior):

        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext):
            try:
                requests = _checked_aio_input(request_or_iterator, client_streaming)
                async for response in behavior(requests, context):
                    yield response
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await context.abort_with_status(_status_for(exc, method))

    else:

        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext):
            try:
                requests = _checked_aio_input(request_or_iterator, client_streaming)
                return await behavior(requests, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                request = None if client_streaming else request_or_iterator
                await context.abort_with_status(_status_for(exc, method, request))

    return factory(
        wrapped,
        request_deserializer=_tolerant_deserializer(
            handler.request_deserializer, method, max_message_bytes
        ),
        response_serializer=handler.response_serializer,
    )


class AsyncErrorInterceptor(grpc.aio.ServerInterceptor):
    """Map exceptions raised by asyncio servicers to status codes.

    Args:
      max_message_bytes: largest request message accepted; the setting of
        that name.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self._max_message_bytes = max_message_bytes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap_aio_handler(
            handler, handler_call_details.method, self._max_message_bytes
        )
