"""Request limits come from the settings and their errors name the setting.

A real user_service on 127.0.0.1 checks display names, passwords and page
sizes under lowered limits. The expense checks run the expense domain's own
validators under the limits that a service start installs.
"""

from __future__ import annotations

import grpc
import pytest

from expense_service import domain as expense_domain
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expense_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime import limits
from splitlog_runtime.errors import InvalidArgument
from user_service.app import build as build_users
from user_service.guards import AllowAllBalanceGuard

LOWERED = {
    "max_page_size": 2,
    "max_display_name_length": 10,
    "max_notes_length": 20,
    "expense_max_description_length": 15,
    "expense_max_participants": 2,
    "auth_min_password_length": 16,
}


def _config(tmp_path, **overrides):
    return config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path / "data",
            "workers": 4,
            "grace_seconds": 0.5,
            "log_self_ship": False,
            **overrides,
        },
    )


@pytest.fixture
def users(tmp_path):
    host = build_users(
        _config(tmp_path, **LOWERED), "127.0.0.1:0", guard=AllowAllBalanceGuard()
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            yield channel
    finally:
        host.stop(0)
        limits.install(limits.DEFAULTS)


def _refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def _create_user(channel, number: int, name: str = "Ana"):
    return users_grpc.UsersServiceStub(channel).CreateUser(
        users_pb.CreateUserRequest(
            user=users_pb.User(email=f"u{number}@example.com", display_name=name)
        )
    )


def test_display_name_limit_is_named(users):
    error = _refused(lambda: _create_user(users, 1, "Bartholomew"))

    assert "max_display_name_length" in error.details()
    assert "maximum of 10" in error.details()


def test_page_size_is_lowered_to_setting(users):
    for number in range(3):
        _create_user(users, number)
    page = users_grpc.UsersServiceStub(users).ListUsers(
        users_pb.ListUsersRequest(page_size=100)
    )

    assert len(page.users) == 2
    assert page.next_page_token


def test_password_minimum_is_named(users):
    stub = auth_grpc.AuthServiceStub(users)
    error = _refused(
        lambda: stub.SignUp(
            auth_pb.SignUpRequest(
                user=users_pb.User(email="pw@example.com", display_name="Pat"),
                user_id="pw",
                password="fifteen chars!!",
            )
        )
    )

    assert "auth_min_password_length" in error.details()
    assert "must be 16" in error.details()


def _invalid(call) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        call()
    return caught.value


def test_expense_limits_are_named(users):
    split = expense_pb.Split(
        type=expense_pb.SPLIT_TYPE_EQUAL,
        participants=[
            expense_pb.SplitParticipant(user=f"users/u{number}") for number in range(3)
        ],
    )
    participants = _invalid(lambda: expense_domain.parse_split(split, True, "split"))
    description = _invalid(
        lambda: expense_domain.validate_description("a long dinner out", "d")
    )
    notes = _invalid(lambda: expense_domain.validate_notes("n" * 21, "notes"))

    assert "expense_max_participants" in str(participants)
    assert "expense_max_description_length" in str(description)
    assert "max_notes_length" in str(notes)


def test_defaults_apply_after_restart(tmp_path):
    limits.install(limits.from_config(_config(tmp_path, **LOWERED)))
    host = build_users(_config(tmp_path), "127.0.0.1:0", guard=AllowAllBalanceGuard())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            created = _create_user(channel, 9, "Bartholomew")
        assert created.user.display_name == "Bartholomew"
    finally:
        host.stop(0)


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("max_page_size", 0, "max_page_size must be 1 or more"),
        ("expense_max_participants", -1, "expense_max_participants must be 1"),
        ("max_display_name_length", 101, "max_display_name_length must be at most"),
        ("expense_max_description_length", 201, "at most 200"),
    ],
)
def test_bad_limit_stops_the_start(tmp_path, setting, value, expected):
    config = _config(tmp_path, **{setting: value})

    with pytest.raises(ValueError, match=expected):
        build_users(config, "127.0.0.1:0", guard=AllowAllBalanceGuard())
