"""Failed gRPC calls in tests: the error of a call that must fail, and the
google.rpc details that the tests check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

_DETAIL_TYPES = {
    "ErrorInfo": error_details_pb2.ErrorInfo,
    "BadRequest": error_details_pb2.BadRequest,
    "ResourceInfo": error_details_pb2.ResourceInfo,
    "PreconditionFailure": error_details_pb2.PreconditionFailure,
    "RetryInfo": error_details_pb2.RetryInfo,
}


def fails(call: Callable[[], object]) -> grpc.RpcError:
    """Run `call`, which must raise `grpc.RpcError`, and return the error."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def error_details(error: grpc.RpcError) -> dict[str, Any]:
    """Unpack the google.rpc details of a failed call, keyed by type name."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    found: dict[str, Any] = {}
    for packed in status.details:
        for name, message_type in _DETAIL_TYPES.items():
            if packed.Is(message_type.DESCRIPTOR):
                message = message_type()
                packed.Unpack(message)
                found[name] = message
    return found


def reason_of(error: grpc.RpcError) -> str:
    """Return the ErrorInfo reason of a failed call."""
    return error_details(error)["ErrorInfo"].reason


def violated_fields(error: grpc.RpcError) -> list[str]:
    """Return the fields that the BadRequest of a failed call names."""
    return [v.field for v in error_details(error)["BadRequest"].field_violations]
