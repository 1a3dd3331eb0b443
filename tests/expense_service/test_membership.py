"""The membership client's reuse of member lists, against a real user_service.

A list is reused when a removed member is still accepted; that is how these
tests see whether user_service was asked again.
"""

from __future__ import annotations

import logging
import time
import uuid

import grpc
import pytest

from expense_service.membership import CACHE_SECONDS, MembershipClient
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime.errors import FailedPrecondition, NotFound, Unavailable
from tests.expense_service.conftest import make_config
from tests.expense_service.support import (
    TIMEOUT,
    Group,
    create_group,
    create_outsider,
)
from tests.ports import free_ports
from user_service.app import build as build_users
from user_service.guards import AllowAllBalanceGuard


class FakeClock:
    """Monotonic seconds that only move when a test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def users_host(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("membership")
    config = make_config(data_dir, f"sqlite:///{data_dir / 'expenses.db'}")
    host = build_users(config, "127.0.0.1:0", guard=AllowAllBalanceGuard())
    yield host
    host.stop(0)


@pytest.fixture(scope="module")
def users(users_host):
    with grpc.insecure_channel(f"127.0.0.1:{users_host.port}") as channel:
        yield users_grpc.UsersServiceStub(channel)


@pytest.fixture
def clock():
    return FakeClock()


def _client(users_host, clock, **options) -> MembershipClient:
    return MembershipClient(
        f"127.0.0.1:{users_host.port}", TIMEOUT, clock=clock, **options
    )


@pytest.fixture
def membership(users_host, clock):
    client = _client(users_host, clock)
    yield client
    client.close()


def _remove(users, group: Group, user: str) -> None:
    users.RemoveGroupMember(
        users_pb.RemoveGroupMemberRequest(
            name=f"{group.name}/members/{user.removeprefix('users/')}"
        ),
        timeout=TIMEOUT,
    )


def test_removed_member_accepted_until_window_ends(users, membership, clock):
    group = create_group(users, size=2)
    leaver = group.members[1]
    membership.require_members(group.name, group.members, None)
    _remove(users, group, leaver)

    membership.require_members(group.name, [leaver], None)
    clock.now += CACHE_SECONDS
    with pytest.raises(FailedPrecondition) as caught:
        membership.require_members(group.name, [leaver], None)

    assert caught.value.reason == "NOT_A_GROUP_MEMBER"
    assert caught.value.metadata["users"] == leaver


def test_new_member_accepted_at_once(users, membership):
    group = create_group(users, size=1)
    membership.require_members(group.name, group.members, None)
    newcomer = create_outsider(users)
    users.AddGroupMember(
        users_pb.AddGroupMemberRequest(parent=group.name, user=newcomer),
        timeout=TIMEOUT,
    )

    membership.require_members(group.name, [group.members[0], newcomer], None)


def test_outsider_rejected_with_cached_list(users, membership):
    group = create_group(users, size=2)
    membership.require_members(group.name, group.members, None)
    outsider = create_outsider(users)

    with pytest.raises(FailedPrecondition) as caught:
        membership.require_members(group.name, [group.members[0], outsider], None)

    assert caught.value.reason == "NOT_A_GROUP_MEMBER"
    assert caught.value.metadata["users"] == outsider


def test_unknown_group_not_remembered(users, membership):
    group_id = f"late-{uuid.uuid4().hex[:8]}"
    creator = create_outsider(users)
    with pytest.raises(NotFound) as caught:
        membership.require_members(f"groups/{group_id}", [creator], None)
    users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Late", creator=creator),
            group_id=group_id,
        ),
        timeout=TIMEOUT,
    )

    membership.require_members(f"groups/{group_id}", [creator], None)

    assert caught.value.reason == "GROUP_NOT_FOUND"


def test_deleted_group_drops_cached_list(users, membership):
    group = create_group(users, size=2)
    membership.require_members(group.name, group.members, None)
    users.DeleteGroup(users_pb.DeleteGroupRequest(name=group.name), timeout=TIMEOUT)

    with pytest.raises(NotFound) as refetched:
        membership.require_members(group.name, [create_outsider(users)], None)
    with pytest.raises(NotFound) as after:
        membership.require_members(group.name, group.members, None)

    assert refetched.value.reason == "GROUP_NOT_FOUND"
    assert after.value.reason == "GROUP_NOT_FOUND"


def test_least_recently_used_group_evicted(users, users_host, clock):
    client = _client(users_host, clock, max_cached_groups=2)
    first, second, third = (create_group(users, size=2) for _ in range(3))
    for group in (first, second, third):
        client.require_members(group.name, group.members, None)
    for group in (first, third):
        _remove(users, group, group.members[1])

    client.require_members(third.name, [third.members[1]], None)
    with pytest.raises(FailedPrecondition) as caught:
        client.require_members(first.name, [first.members[1]], None)
    cached = client.cached_groups
    client.close()

    assert caught.value.reason == "NOT_A_GROUP_MEMBER"
    assert cached == 2


def test_zero_window_asks_every_time(users, users_host, clock):
    client = _client(users_host, clock, cache_seconds=0)
    group = create_group(users, size=2)
    client.require_members(group.name, group.members, None)
    _remove(users, group, group.members[1])

    with pytest.raises(FailedPrecondition) as caught:
        client.require_members(group.name, [group.members[1]], None)
    cached = client.cached_groups
    client.close()

    assert caught.value.reason == "NOT_A_GROUP_MEMBER"
    assert cached == 0


def test_down_user_service_warns_once_then_recovers(tmp_path, caplog):
    """Checks while user_service is down log one warning, not one per check,
    and the first check after it is back logs that checks succeed again."""
    (port,) = free_ports(1)
    client = MembershipClient(f"127.0.0.1:{port}", 2.0)
    caplog.set_level(logging.INFO, logger="expense_service.membership")
    try:
        for _ in range(5):
            with pytest.raises(Unavailable):
                client.group_exists("groups/some-group", None)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert f"127.0.0.1:{port}" in warnings[0].getMessage()

        config = make_config(tmp_path, f"sqlite:///{tmp_path / 'expenses.db'}")
        users_host = build_users(
            config, f"127.0.0.1:{port}", guard=AllowAllBalanceGuard()
        )
        try:
            _wait_until_answered(client)
        finally:
            users_host.stop(0)
    finally:
        client.close()
    recovered = [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
    assert len(recovered) == 1, recovered
    assert "membership checks with user_service succeed again" in recovered[0]


def _wait_until_answered(client: MembershipClient) -> None:
    """Check until user_service answers; its channel reconnects with backoff."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client.group_exists("groups/some-group", None)
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
