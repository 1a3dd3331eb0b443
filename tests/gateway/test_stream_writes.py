"""Errors that a response generator raises pass through `stream_writes.writing`.

A real grpc.aio server on 127.0.0.1 runs a server-streaming handler wrapped
by `writing`, and a real client reads its stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway import stream_writes

METHOD = "/splitlog.test.Streams/Count"


async def _failing_stream(
    request: bytes, context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    yield b"first"
    raise grpc.aio.InternalError("handler bug after the first response")


async def _read_stream() -> tuple[list[bytes], grpc.StatusCode]:
    handler = grpc.unary_stream_rpc_method_handler(
        stream_writes.writing(_failing_stream, METHOD)
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "splitlog.test.Streams", {"Count": handler}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    received: list[bytes] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream(METHOD)(b"", timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for response in call:
                    received.append(response)
            return received, raised.value.code()
    finally:
        await server.stop(None)


def test_generator_internal_error_not_cancel():
    received, code = asyncio.run(_read_stream())

    assert received == [b"first"]
    # The handler's own error ends the call as UNKNOWN and is logged by
    # grpc, instead of passing for a client that left.
    assert code == grpc.StatusCode.UNKNOWN
