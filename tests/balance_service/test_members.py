"""UserDirectory against a real user service: fresh and cached membership
responses, and the time limit of the cache."""

from __future__ import annotations

import logging

import pytest

from balance_service.members import UserDirectory
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime.errors import NotFound, Unavailable
from tests.balance_service.support import create_group, open_users, unique_id
from tests.ports import closed_address


class _Clock:
    """Monotonic seconds that change only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def users(users_host):
    channel, stub = open_users(users_host.port)
    yield stub
    channel.close()


@pytest.fixture
def clock():
    return _Clock()


@pytest.fixture
def directory(users_host, clock):
    found = UserDirectory(
        f"127.0.0.1:{users_host.port}", 10.0, 4 * 1024 * 1024, clock=clock
    )
    yield found
    found.close()


def _add_member(users, group_id: str) -> str:
    _, (user_id,) = create_group(users, 1)
    users.AddGroupMember(
        users_pb.AddGroupMemberRequest(
            parent=f"groups/{group_id}", user=f"users/{user_id}"
        ),
        timeout=10,
    )
    return user_id


def _create_user(users) -> str:
    """Create a user who belongs to no group yet."""
    user_id = unique_id("user")
    users.CreateUser(
        users_pb.CreateUserRequest(
            user=users_pb.User(email=f"{user_id}@example.com", display_name=user_id),
            user_id=user_id,
        ),
        timeout=10,
    )
    return user_id


def test_recent_members_reused_within_window(users, directory, clock):
    group_id, members = create_group(users, 2)
    assert directory.recent_members(group_id, None) == set(members)
    newcomer = _add_member(users, group_id)

    clock.now += 4.9
    reused = directory.recent_members(group_id, None)

    assert reused == set(members)
    assert newcomer not in reused


def test_recent_members_fetched_after_window(users, directory, clock):
    group_id, members = create_group(users, 2)
    directory.recent_members(group_id, None)
    newcomer = _add_member(users, group_id)

    clock.now += 5.0
    refreshed = directory.recent_members(group_id, None)

    assert refreshed == {*members, newcomer}


def test_fresh_members_replace_cached(users, directory):
    group_id, members = create_group(users, 2)
    directory.recent_members(group_id, None)
    newcomer = _add_member(users, group_id)

    fresh = directory.members(group_id, None)
    reused = directory.recent_members(group_id, None)

    assert fresh == {*members, newcomer}
    assert reused == {*members, newcomer}


def test_unknown_group_is_not_remembered(users, directory):
    group_id = unique_id("group")
    with pytest.raises(NotFound) as caught:
        directory.recent_members(group_id, None)
    creator = _create_user(users)
    users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Late", creator=f"users/{creator}"),
            group_id=group_id,
        ),
        timeout=10,
    )

    found = directory.recent_members(group_id, None)

    assert caught.value.reason == "GROUP_NOT_FOUND"
    assert found == {creator}


def test_oldest_group_dropped_beyond_cap(users_host, users, clock):
    directory = UserDirectory(
        f"127.0.0.1:{users_host.port}",
        10.0,
        4 * 1024 * 1024,
        max_cached_entries=1,
        clock=clock,
    )
    first, members = create_group(users, 1)
    second, _ = create_group(users, 1)
    directory.recent_members(first, None)
    directory.recent_members(second, None)
    newcomer = _add_member(users, first)

    refreshed = directory.recent_members(first, None)
    directory.close()

    assert refreshed == {*members, newcomer}


def test_zero_window_never_caches(users_host, users, clock):
    directory = UserDirectory(
        f"127.0.0.1:{users_host.port}",
        10.0,
        4 * 1024 * 1024,
        cache_seconds=0,
        clock=clock,
    )
    group_id, members = create_group(users, 1)
    directory.recent_members(group_id, None)
    newcomer = _add_member(users, group_id)

    refreshed = directory.recent_members(group_id, None)
    directory.close()

    assert refreshed == {*members, newcomer}


def test_deleted_group_found_until_window_ends(users, directory, clock):
    group_id, members = create_group(users, 1)
    directory.recent_members(group_id, None)
    users.DeleteGroup(
        users_pb.DeleteGroupRequest(name=f"groups/{group_id}"), timeout=10
    )

    reused = directory.recent_members(group_id, None)
    clock.now += 5.0
    with pytest.raises(NotFound) as caught:
        directory.recent_members(group_id, None)

    assert reused == set(members)
    assert caught.value.reason == "GROUP_NOT_FOUND"


def test_unknown_user_is_not_remembered(users, directory):
    user_id = unique_id("user")
    with pytest.raises(NotFound) as caught:
        directory.require_user(user_id, None)
    users.CreateUser(
        users_pb.CreateUserRequest(
            user=users_pb.User(email=f"{user_id}@example.com", display_name="Late"),
            user_id=user_id,
        ),
        timeout=10,
    )

    directory.require_user(user_id, None)

    assert caught.value.reason == "USER_NOT_FOUND"
    # The advice also fits a caller who is not an administrator.
    assert "ListGroupMembers lists the members of a group you are in" in str(
        caught.value
    )


def test_unreachable_user_service_is_unavailable(clock):
    directory = UserDirectory(closed_address(), 2.0, 4 * 1024 * 1024, clock=clock)

    with pytest.raises(Unavailable) as caught:
        directory.recent_members("some-group", None)
    directory.close()

    assert caught.value.reason == "USER_SERVICE_UNAVAILABLE"


def test_unreachable_user_service_message_hides_address(clock, caplog):
    address = closed_address()
    directory = UserDirectory(address, 2.0, 4 * 1024 * 1024, clock=clock)
    caplog.set_level(logging.INFO, logger="balance_service.members")

    failures = []
    for _ in range(5):
        with pytest.raises(Unavailable) as caught:
            directory.recent_members("some-group", None)
        failures.append(caught.value.message)
    directory.close()

    assert "user_service" in failures[0]
    assert "retry" in failures[0]
    assert address not in failures[0]
    assert "failed to connect" not in failures[0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert address in warnings[0]
