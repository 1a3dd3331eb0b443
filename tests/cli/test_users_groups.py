"""`splitlog users` and `splitlog groups` against a running `splitlog up`."""

from __future__ import annotations

import json
import secrets

import grpc
import pytest

from splitlog.users.v1 import users_service_pb2, users_service_pb2_grpc
from splitlog_cli.client.connection import never_reached
from tests.cli.conftest import run_splitlog
from tests.ports import closed_address


@pytest.fixture(scope="module")
def cli(splitlog_up):
    """Run a client command against the module's server."""

    def run(*args: str):
        return run_splitlog(*args, gateway=splitlog_up.grpc_address)

    return run


@pytest.fixture
def suffix():
    return secrets.token_hex(3)


def create_user(cli, user_id: str) -> dict:
    result = cli(
        "users", "create", "--email", f"{user_id}@example.com",
        "--name", user_id.title(), "--id", user_id, "--format", "json",
    )  # fmt: skip
    assert result.status == 0, result.stderr
    return json.loads(result.stdout)


def test_users_create_table(cli, suffix):
    result = cli(
        "users", "create", "--email", f"Ann-{suffix}@Example.com", "--name", "Ann",
        "--currency", "EUR", "--id", f"ann-{suffix}",
    )  # fmt: skip
    header, row = result.stdout.splitlines()

    assert result.status == 0, result.stderr
    assert header.split() == ["NAME", "EMAIL", "DISPLAY", "NAME", "CURRENCY", "STATE"]
    assert row.split() == [
        f"users/ann-{suffix}",
        f"Ann-{suffix}@Example.com",
        "Ann",
        "EUR",
        "active",
    ]


def test_users_get_json(cli, suffix):
    create_user(cli, f"bea-{suffix}")

    result = cli("users", "get", f"bea-{suffix}", "--format", "json")
    user = json.loads(result.stdout)

    assert result.status == 0, result.stderr
    assert user["name"] == f"users/bea-{suffix}"
    assert user["displayName"] == f"Bea-{suffix}".title()
    assert user["state"] == "STATE_ACTIVE"
    assert user["currencyCode"] == "USD"


def test_users_list_all_pages(cli, suffix):
    created = {create_user(cli, f"lis-{suffix}-{i}")["name"] for i in range(2)}

    result = cli("users", "list", "--format", "json")
    names = {user["name"] for user in json.loads(result.stdout)["users"]}
    table = cli("users", "list")

    assert result.status == 0, result.stderr
    assert created <= names
    assert table.status == 0
    assert all(name in table.stdout for name in created)


def test_users_duplicate_email_one_line(cli, suffix):
    create_user(cli, f"dup-{suffix}")

    result = cli(
        "users", "create", "--email", f"DUP-{suffix}@example.com", "--name", "Dup"
    )

    assert result.status == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("splitlog: error: ")
    assert f"DUP-{suffix}@example.com" in result.stderr
    assert "(ALREADY_EXISTS, EMAIL_TAKEN)" in result.stderr


def test_users_get_missing(cli):
    result = cli("users", "get", "nobody-here")

    assert result.status == 1
    assert "users/nobody-here" in result.stderr
    assert "(NOT_FOUND, USER_NOT_FOUND)" in result.stderr


def test_users_invalid_id_names_field(cli):
    result = cli("users", "create", "--email", "x@example.com", "--name", "X",
                 "--id", "Bad_Id")  # fmt: skip

    assert result.status == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "user_id" in result.stderr
    assert "Bad_Id" in result.stderr


def test_groups_lifecycle(cli, suffix):
    owner, guest = f"own-{suffix}", f"gst-{suffix}"
    group = f"grp-{suffix}"
    create_user(cli, owner)
    create_user(cli, guest)

    created = cli(
        "groups", "create", "--name", "Flat share", "--creator", owner,
        "--currency", "EUR", "--id", group,
    )  # fmt: skip
    added = cli("groups", "add-member", f"groups/{group}", f"users/{guest}")
    members = cli("groups", "members", group)
    listed = cli("groups", "list", "--member", guest, "--format", "json")
    shown = cli("groups", "get", group, "--format", "json")
    removed = cli("groups", "remove-member", group, guest)
    after_remove = cli("groups", "members", group, "--format", "json")
    deleted = cli("groups", "delete", group)
    gone = cli("groups", "get", group)

    assert created.status == 0, created.stderr
    assert created.stdout.splitlines()[1].split() == [
        f"groups/{group}", "Flat", "share", "EUR", "1", owner,
    ]  # fmt: skip
    assert added.status == 0, added.stderr
    assert added.stdout.splitlines()[1].split()[:2] == [guest, guest.title()]
    assert [line.split()[0] for line in members.stdout.splitlines()] == [
        "USER",
        owner,
        guest,
    ]
    assert [g["name"] for g in json.loads(listed.stdout)["groups"]] == [
        f"groups/{group}"
    ]
    assert json.loads(shown.stdout)["memberCount"] == 2
    assert removed.status == 0, removed.stderr
    assert removed.stdout.strip() == f"removed users/{guest} from groups/{group}"
    assert [m["user"] for m in json.loads(after_remove.stdout)["members"]] == [
        f"users/{owner}"
    ]
    assert deleted.status == 0, deleted.stderr
    assert deleted.stdout.strip() == f"deleted groups/{group}"
    assert gone.status == 1
    assert "NOT_FOUND" in gone.stderr


def test_groups_list_without_groups(cli, suffix):
    create_user(cli, f"lone-{suffix}")

    result = cli("groups", "list", "--member", f"lone-{suffix}")

    assert result.status == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "(none)"


def test_groups_add_unknown_user(cli, suffix):
    create_user(cli, f"solo-{suffix}")
    cli("groups", "create", "--name", "Solo", "--creator", f"solo-{suffix}",
        "--id", f"solo-{suffix}")  # fmt: skip

    result = cli("groups", "add-member", f"solo-{suffix}", "ghost-user")

    assert result.status == 1
    assert "users/ghost-user" in result.stderr
    assert "NOT_FOUND" in result.stderr


def test_refused_call_never_reached_though_probe_connects():
    # A gateway that starts while the connection probe waits makes the probe
    # succeed. A refused call is still reported as an unreachable gateway,
    # because its status carries no details, which the gateway always sends.
    with grpc.insecure_channel(closed_address()) as channel:
        stub = users_service_pb2_grpc.UsersServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListUsers(users_service_pb2.ListUsersRequest(), timeout=5)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert never_reached(caught.value, responded=False, reachable=lambda: True)
    assert not never_reached(caught.value, responded=True, reachable=lambda: True)
