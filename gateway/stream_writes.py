"""Response streams that the gateway writes itself, so that a client may leave.

grpc.aio (1.85) iterates a handler's async generator in the call's task and
writes each response. When the client leaves mid-stream, as a tail with
`--duration` or a killed client does, that write fails, and two things go
wrong:

- grpc logs the failed write at ERROR ("ExecuteBatchError raised in core")
  unless it has already seen the client's cancellation, which is a race.
- grpc leaves the generator suspended at its `yield`. Python closes it later
  from a task of its own, in another contextvars Context, so a `with` block
  around the `yield`, such as `auth.acting_as`, fails to exit, and asyncio
  logs "Task exception was never retrieved" at ERROR.

The gateway ships its log records to log_service, where these became
errors of the gateway and false alarms. The gateway's wrappers therefore
turn a response generator into a coroutine that writes each response with
`context.write()` (`writing`). A failed write ends the call as cancelled,
which grpc logs at DEBUG, and the generator is closed in the task that runs
it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc._cython import cygrpc

_LOGGER = logging.getLogger(__name__)


async def write(context: grpc.aio.ServicerContext, response: Any, method: str) -> None:
    """Write one response of a stream to the client.

    Raises:
      asyncio.CancelledError: the write failed because the client left or
        rejected the message, so the call is over.
    """
    try:
        await context.write(response)
    except grpc.aio.InternalError as error:
        raise _client_left(method, error) from error


async def write_all(
    responses: AsyncIterator[Any], context: grpc.aio.ServicerContext, method: str
) -> None:
    """Write every response of a stream to the client, then close the stream.

    A failed batch on the client's call, whether a write or a status that the
    stream sends with `context.abort()`, means that the client left. Any
    other error of the stream passes on, so grpc ends the call with it. The
    stream is closed in this task either way, so that its cleanup runs in
    the call's context.

    Raises:
      asyncio.CancelledError: the client left.
    """
    try:
        async for response in responses:
            await write(context, response, method)
    except cygrpc.ExecuteBatchError as error:
        # NOTE: grpc.aio (1.85) exports no name for this subclass of
        # InternalError, which it raises when a batch such as abort's status
        # fails. A plain InternalError of the stream is a fault, not a leave.
        raise _client_left(method, error) from error
    finally:
        await responses.aclose()


def writing(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    """Return a coroutine handler that writes what a generator handler yields.

    A coroutine handler, such as Health/Watch, which writes with
    `context.write()` itself, is returned as it is.
    """
    if not inspect.isasyncgenfunction(behavior):
        return behavior

    async def write_responses(
        request_or_iterator: Any, context: grpc.aio.ServicerContext
    ) -> None:
        await write_all(behavior(request_or_iterator, context), context, method)

    return write_responses


def _client_left(method: str, error: Exception) -> asyncio.CancelledError:
    # grpc.aio ends a call whose task raises CancelledError without a status
    # and logs it at DEBUG, as when it cancels the call itself.
    _LOGGER.debug("the client of a %s call left during its stream: %s", method, error)
    return asyncio.CancelledError(f"the client of {method} left")
