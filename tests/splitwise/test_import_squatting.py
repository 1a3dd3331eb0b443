"""An import with auth on adopts no user or group that someone else created.

The import's ids are predictable from the file, so any user can sign up
with a member's user id or create a group with the file's group id first.
These tests run `splitlog up` on its defaults (auth on), import as an
administrator, and check that such an account or group stops the import.
"""

from __future__ import annotations

import io
import uuid

import grpc
import pytest

from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.client.credentials import Credential
from splitlog_cli.splitwise import identity
from splitlog_cli.splitwise.commands import Access, run_import
from tests.auth.support import operator_admin_key
from tests.splitwise.conftest import lookup_code, running_splitlog

pytestmark = pytest.mark.system

TIMEOUT = 10.0
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def splitlog(tmp_path_factory):
    """A `splitlog up` with no SPLITLOG_* settings, so auth is on."""
    with running_splitlog(tmp_path_factory.mktemp("squatting"), {}) as running:
        yield running


@pytest.fixture(scope="module")
def admin_key(splitlog) -> str:
    """The secret of an API key with the `admin` scope."""
    with grpc.insecure_channel(splitlog.grpc_address) as channel:
        admin = _sign_up(channel, f"ops-{uuid.uuid4().hex[:8]}")
    return operator_admin_key(splitlog.data_dir, admin.user.name)[1]


@pytest.fixture(scope="module")
def admin_channel(splitlog, admin_key):
    """A channel to the gateway whose calls carry the admin key."""
    access = Access(credential=Credential(splitlog.grpc_address, admin_key, None))
    with access.open(splitlog.grpc_address) as channel:
        yield channel


def _sign_up(channel, user_id: str, email: str = "") -> auth_pb.SignUpResponse:
    return auth_grpc.AuthServiceStub(channel).SignUp(
        auth_pb.SignUpRequest(
            user=users_pb.User(
                email=email or f"{user_id}@example.com", display_name="Mallory"
            ),
            user_id=user_id,
            password=PASSWORD,
        ),
        timeout=TIMEOUT,
    )


def _csv(first: str, second: str) -> str:
    return (
        f"Date,Description,Category,Cost,Currency,{first},{second}\n\n"
        "2024-05-01,Dinner,Dining out,20.00,EUR,10.00,-10.00\n\n"
        "2024-05-10,Total balance, , ,EUR,10.00,-10.00\n"
    )


def _import(splitlog, admin_key, path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    access = Access(credential=Credential(splitlog.grpc_address, admin_key, None))
    status = run_import(
        path, splitlog.grpc_address, TIMEOUT, None, out=out, err=err, access=access
    )
    return status, out.getvalue(), err.getvalue()


def _group_of(path) -> str:
    return f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"


def test_signup_with_invalid_domain_rejected(splitlog):
    user_id = f"sw-x-{uuid.uuid4().hex[:6]}"
    with grpc.insecure_channel(splitlog.grpc_address) as channel:
        for email in (identity.email(user_id), f"{user_id}@Example.INVALID"):
            with pytest.raises(grpc.RpcError) as caught:
                _sign_up(channel, user_id, email)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "user.email" in caught.value.details()
            assert "reserved domain '.invalid'" in caught.value.details()
        assert lookup_code(channel, f"users/{user_id}") != grpc.StatusCode.OK


def test_update_to_invalid_domain_rejected(splitlog, admin_channel):
    user_id = f"upd-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(splitlog.grpc_address) as channel:
        signed_up = _sign_up(channel, user_id)
        bearer = (("authorization", f"Bearer {signed_up.tokens.access_token}"),)
        users = users_grpc.UsersServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            users.UpdateUser(
                users_pb.UpdateUserRequest(
                    user=users_pb.User(
                        name=signed_up.user.name, email=identity.email(user_id)
                    ),
                    update_mask={"paths": ["email"]},
                ),
                metadata=bearer,
                timeout=TIMEOUT,
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user.email" in caught.value.details()

    # An administrator may set it.
    updated = users_grpc.UsersServiceStub(admin_channel).UpdateUser(
        users_pb.UpdateUserRequest(
            user=users_pb.User(name=signed_up.user.name, email=identity.email(user_id)),
            update_mask={"paths": ["email"]},
        ),
        timeout=TIMEOUT,
    )
    assert updated.user.email == identity.email(user_id)


def test_squatted_user_stops_import(splitlog, admin_key, admin_channel, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    kept, victim = f"Kim {suffix}", f"Victim {suffix}"
    victim_id = identity.user_id(victim)
    with grpc.insecure_channel(splitlog.grpc_address) as channel:
        _sign_up(channel, victim_id)
    path = tmp_path / "squatted-user.csv"
    path.write_text(_csv(kept, victim), encoding="utf-8")

    status, out, err = _import(splitlog, admin_key, path)

    assert status == 1
    assert f"member {victim!r} would be the user users/{victim_id}" in err
    assert f"'{victim_id}@example.com'" in err
    assert f"rename the column in the file's header (for example to '{victim} 2')" in (
        err
    )
    assert "Nothing was created." in err
    kept_user = f"users/{identity.user_id(kept)}"
    assert lookup_code(admin_channel, kept_user) == grpc.StatusCode.NOT_FOUND
    assert lookup_code(admin_channel, _group_of(path)) == grpc.StatusCode.NOT_FOUND

    # With the column renamed, the member is imported as a new user.
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(_csv(kept, f"{victim} 2"), encoding="utf-8")
    status, out, err = _import(splitlog, admin_key, renamed)
    assert status == 0, out + err


def test_squatted_group_stops_import(splitlog, admin_key, admin_channel, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    path = tmp_path / "squatted-group.csv"
    path.write_text(_csv(f"Kim {suffix}", f"Lou {suffix}"), encoding="utf-8")
    group = _group_of(path)
    with grpc.insecure_channel(splitlog.grpc_address) as channel:
        mallory = _sign_up(channel, f"mallory-{suffix}")
        bearer = (("authorization", f"Bearer {mallory.tokens.access_token}"),)
        users_grpc.UsersServiceStub(channel).CreateGroup(
            users_pb.CreateGroupRequest(
                group=users_pb.Group(display_name="Trap", creator=mallory.user.name),
                group_id=group.removeprefix("groups/"),
            ),
            metadata=bearer,
            timeout=TIMEOUT,
        )

    status, out, err = _import(splitlog, admin_key, path)

    assert status == 1
    assert f"the group {group} was created by {mallory.user.name}, not by" in err
    assert "Change the file's bytes" in err
    members = users_grpc.UsersServiceStub(admin_channel).ListGroupMembers(
        users_pb.ListGroupMembersRequest(parent=group), timeout=TIMEOUT
    )
    assert [member.user for member in members.members] == [mallory.user.name]

    # Deleting the squatted group lets the same file go into the next id.
    users_grpc.UsersServiceStub(admin_channel).DeleteGroup(
        users_pb.DeleteGroupRequest(name=group), timeout=TIMEOUT
    )
    status, out, err = _import(splitlog, admin_key, path)
    assert status == 0, out + err
    assert f"{group}-2" in out


def test_group_with_foreign_member_stops_rerun(
    splitlog, admin_key, admin_channel, tmp_path
):
    suffix = uuid.uuid4().hex[:8]
    path = tmp_path / "rerun.csv"
    path.write_text(_csv(f"Kim {suffix}", f"Lou {suffix}"), encoding="utf-8")
    group = _group_of(path)
    status, out, err = _import(splitlog, admin_key, path)
    assert status == 0, out + err

    # A rerun of the import's own group succeeds and creates nothing.
    status, out, err = _import(splitlog, admin_key, path)
    assert status == 0, out + err
    assert (
        "1 of the entries were already stored (by an earlier or concurrent run" in out
    )

    with grpc.insecure_channel(splitlog.grpc_address) as channel:
        other = _sign_up(channel, f"other-{suffix}")
    users_grpc.UsersServiceStub(admin_channel).AddGroupMember(
        users_pb.AddGroupMemberRequest(parent=group, user=other.user.name),
        timeout=TIMEOUT,
    )
    status, out, err = _import(splitlog, admin_key, path)
    assert status == 1
    assert f"{group} has members who are not in the file: {other.user.name}" in err
