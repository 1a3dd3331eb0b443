"""Start-up, restart, migrations and the balance guard of the user service."""

from __future__ import annotations

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, inspect

from splitlog.users.v1 import users_service_pb2 as pb
from splitlog_runtime.database import normalise_url
from tests.user_service.support import (
    create_group,
    create_user,
    error_details,
    open_stub,
    reason_of,
)
from user_service.app import build
from user_service.guards import unsettled_balance
from user_service.storage import Base

SERVICE = "splitlog.users.v1.UsersService"


@pytest.fixture
def config(base_config, db_url):
    return base_config.replace(user_service_db_url=db_url)


def test_health_reports_serving_after_build(config):
    host = build(config, "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            response = health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
            )
    finally:
        host.stop(0)

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_data_survives_restart_and_migrations_run_twice(config, db_url):
    first = build(config, "127.0.0.1:0")
    channel, stub = open_stub(first.port)
    user = create_user(stub, user_id="kept-user")
    group = create_group(stub, user.name, group_id="kept-group")
    channel.close()
    first.stop(0)

    second = build(config, "127.0.0.1:0")
    channel, stub = open_stub(second.port)
    try:
        stored_user = stub.GetUser(pb.GetUserRequest(name=user.name), timeout=10)
        stored_group = stub.GetGroup(pb.GetGroupRequest(name=group.name), timeout=10)
    finally:
        channel.close()
        second.stop(0)

    assert stored_user.user == user
    assert stored_group.group == group
    engine = create_engine(normalise_url(db_url))
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {
        "users",
        "groups",
        "group_members",
        "user_service_request_ids",
        "alembic_version_user_service",
    } <= tables


class RefusingBalanceGuard:
    """Test double for the BalanceGuard slot: every balance is unsettled.

    It replaces the balance service's guard, which does not exist yet, and
    raises the same error that a real guard raises.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def check_member_removable(
        self, group_name: str, user_name: str, context: grpc.ServicerContext
    ) -> None:
        self.calls.append(("member", group_name, user_name))
        subject = f"{group_name}/members/{user_name.split('/')[1]}"
        raise unsettled_balance(subject, "owes 12.50 EUR; settle up first")

    def check_group_deletable(
        self, group_name: str, context: grpc.ServicerContext
    ) -> None:
        self.calls.append(("group", group_name))
        raise unsettled_balance(group_name, "3 balances are not zero; settle up")


def test_guard_refuses_member_removal_and_group_deletion(config):
    guard = RefusingBalanceGuard()
    host = build(config, "127.0.0.1:0", guard=guard)
    channel, stub = open_stub(host.port)
    try:
        creator, member = create_user(stub), create_user(stub)
        group = create_group(stub, creator.name)
        stub.AddGroupMember(
            pb.AddGroupMemberRequest(parent=group.name, user=member.name), timeout=10
        )
        member_name = f"{group.name}/members/{member.name.split('/')[1]}"

        with pytest.raises(grpc.RpcError) as removal:
            stub.RemoveGroupMember(
                pb.RemoveGroupMemberRequest(name=member_name), timeout=10
            )
        with pytest.raises(grpc.RpcError) as deletion:
            stub.DeleteGroup(pb.DeleteGroupRequest(name=group.name), timeout=10)

        stored = stub.GetGroup(pb.GetGroupRequest(name=group.name), timeout=10).group
        members = stub.ListGroupMembers(
            pb.ListGroupMembersRequest(parent=group.name), timeout=10
        ).members
    finally:
        channel.close()
        host.stop(0)

    assert removal.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(removal.value) == "UNSETTLED_BALANCE"
    violation = error_details(removal.value)["PreconditionFailure"].violations[0]
    assert violation.type == "UNSETTLED_BALANCE"
    assert violation.subject == member_name
    assert deletion.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(deletion.value) == "UNSETTLED_BALANCE"
    assert guard.calls == [
        ("member", group.name, member.name),
        ("group", group.name),
    ]
    unchanged = pb.Group()
    unchanged.CopyFrom(group)
    unchanged.member_count = 2
    assert stored == unchanged
    assert [m.user for m in members] == [creator.name, member.name]


def test_migrations_match_models(config, db_url):
    build(config, "127.0.0.1:0").stop(0)
    engine = create_engine(normalise_url(db_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": "alembic_version_user_service"}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()

    assert differences == []
