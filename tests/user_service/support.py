"""Helpers shared by the user service tests: clients, errors and factories."""

from __future__ import annotations

import uuid

import grpc

from splitlog.users.v1 import users_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2_grpc as pb_grpc
from tests.rich_errors import (  # noqa: F401 (re-exported)
    error_details,
    reason_of,
    violated_fields,
)


def open_stub(port: int) -> tuple[grpc.Channel, pb_grpc.UsersServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, pb_grpc.UsersServiceStub(channel)


def resource_of(error: grpc.RpcError) -> tuple[str, str]:
    info = error_details(error)["ResourceInfo"]
    return info.resource_type, info.resource_name


def assert_key_reused(error: grpc.RpcError, request_id: str, what: str) -> None:
    """Check the error of a create whose request_id came with other values."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert reason_of(error) == "REQUEST_ID_REUSED"
    assert violated_fields(error) == ["request_id"]
    assert request_id in error.details()
    assert f"Send a new UUID for each new {what}" in error.details()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}@example.com"


def unique_id(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_user(
    stub: pb_grpc.UsersServiceStub, display_name: str = "Ada Lovelace", **fields
) -> pb.User:
    """Create a user with a fresh email unless `email` is given."""
    request_fields = {
        key: fields.pop(key) for key in ("user_id", "request_id") if key in fields
    }
    fields.setdefault("email", unique_email())
    user = pb.User(display_name=display_name, **fields)
    request = pb.CreateUserRequest(user=user, **request_fields)
    return stub.CreateUser(request, timeout=10).user


def create_group(
    stub: pb_grpc.UsersServiceStub,
    creator: str,
    display_name: str = "Lisbon trip",
    **request_fields,
) -> pb.Group:
    group = pb.Group(
        display_name=display_name,
        creator=creator,
        currency_code=request_fields.pop("currency_code", ""),
    )
    request = pb.CreateGroupRequest(group=group, **request_fields)
    return stub.CreateGroup(request, timeout=10).group
