"""The parts of a gRPC method handler that an interceptor wraps."""

from __future__ import annotations

from collections.abc import Callable

import grpc


def handler_parts(handler: grpc.RpcMethodHandler) -> tuple[Callable, Callable]:
    """Return a handler's behavior and the factory that builds one of its kind.

    The factory is `grpc.unary_unary_rpc_method_handler` or its streaming
    sibling, so that a wrapper around the behavior keeps the handler's kind.
    """
    if handler.unary_unary:
        return handler.unary_unary, grpc.unary_unary_rpc_method_handler
    if handler.unary_stream:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    if handler.stream_unary:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    return handler.stream_stream, grpc.stream_stream_rpc_method_handler
