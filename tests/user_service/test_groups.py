"""UsersService group and member RPCs against a real server on both backends."""

from __future__ import annotations

import uuid

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2
from sqlalchemy import create_engine

from splitlog.users.v1 import users_service_pb2 as pb
from splitlog_runtime.database import normalise_url
from tests.user_service.support import (
    assert_key_reused,
    create_group,
    create_user,
    error_details,
    reason_of,
    resource_of,
    unique_id,
    violated_fields,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _get_group(stub, name: str) -> pb.Group:
    return stub.GetGroup(pb.GetGroupRequest(name=name), timeout=10).group


def _add(stub, group: str, user: str) -> pb.Member:
    request = pb.AddGroupMemberRequest(parent=group, user=user)
    return stub.AddGroupMember(request, timeout=10).member


def _members(stub, group: str) -> list[str]:
    request = pb.ListGroupMembersRequest(parent=group)
    return [m.user for m in stub.ListGroupMembers(request, timeout=10).members]


def _groups_of(stub, user: str) -> list[str]:
    request = pb.ListGroupsRequest(member=user)
    return [g.name for g in stub.ListGroups(request, timeout=10).groups]


def _deactivated_user(stub) -> pb.User:
    user = create_user(stub)
    request = pb.DeactivateUserRequest(name=user.name)
    return stub.DeactivateUser(request, timeout=10).user


def _update_group(stub, group: pb.Group, *paths: str) -> pb.Group:
    mask = field_mask_pb2.FieldMask(paths=list(paths))
    request = pb.UpdateGroupRequest(group=group, update_mask=mask)
    return stub.UpdateGroup(request, timeout=10).group


# CreateGroup


def test_create_group_makes_creator_first_member(stub):
    creator = create_user(stub, currency_code="EUR")

    group = create_group(stub, creator.name, display_name="  Lisbon trip ")

    assert group.name.startswith("groups/")
    assert group.display_name == "Lisbon trip"
    assert group.creator == creator.name
    assert group.currency_code == "EUR"
    assert group.member_count == 1
    assert group.etag
    assert group.update_time == group.create_time
    assert _members(stub, group.name) == [creator.name]
    assert _get_group(stub, group.name) == group


def test_create_group_with_chosen_id_and_currency(stub):
    creator = create_user(stub)
    group_id = unique_id("trip")

    group = create_group(stub, creator.name, group_id=group_id, currency_code="CHF")

    assert group.name == f"groups/{group_id}"
    assert group.currency_code == "CHF"


def test_create_group_duplicate_id_returns_already_exists(stub):
    creator = create_user(stub)
    group_id = unique_id("trip")
    create_group(stub, creator.name, group_id=group_id)

    with pytest.raises(grpc.RpcError) as caught:
        create_group(stub, creator.name, group_id=group_id, display_name="Other")

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "GROUP_ALREADY_EXISTS"
    assert resource_of(caught.value) == ("splitlog.dev/Group", f"groups/{group_id}")
    assert _get_group(stub, f"groups/{group_id}").display_name == "Lisbon trip"


def test_create_group_unknown_creator_returns_not_found(stub):
    creator = f"users/{unique_id('ghost')}"
    group_id = unique_id("trip")

    with pytest.raises(grpc.RpcError) as caught:
        create_group(stub, creator, group_id=group_id)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "USER_NOT_FOUND"
    assert resource_of(caught.value) == ("splitlog.dev/User", creator)
    with pytest.raises(grpc.RpcError) as lookup:
        _get_group(stub, f"groups/{group_id}")
    assert lookup.value.code() == grpc.StatusCode.NOT_FOUND


def test_create_group_deactivated_creator_fails_precondition(stub):
    creator = _deactivated_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        create_group(stub, creator.name)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "USER_DEACTIVATED"
    violation = error_details(caught.value)["PreconditionFailure"].violations[0]
    assert violation.type == "USER_DEACTIVATED"
    assert violation.subject == creator.name
    assert _groups_of(stub, creator.name) == []


def test_create_group_fund_currency_named(stub):
    creator = create_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        create_group(stub, creator.name, currency_code="CLF")

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["group.currency_code"]
    message = caught.value.details()
    assert "'CLF' is an ISO 4217 fund code" in message
    assert "use 'CLP'" in message


def test_create_group_withdrawn_currency_named(stub):
    creator = create_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        create_group(stub, creator.name, currency_code="HRK")

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["group.currency_code"]
    message = caught.value.details()
    assert "'HRK' is a withdrawn ISO 4217 currency, replaced by 'EUR'" in message
    assert "use 'EUR'" in message


@pytest.mark.parametrize(
    ("group_fields", "request_fields", "violated"),
    [
        ({"display_name": ""}, {}, ["group.display_name"]),
        ({"display_name": "\u200b\ufeff"}, {}, ["group.display_name"]),
        ({"display_name": "\u3164\u2800"}, {}, ["group.display_name"]),
        ({"display_name": "\u200b\u0301"}, {}, ["group.display_name"]),
        ({"creator": ""}, {}, ["group.creator"]),
        ({"creator": "groups/abcd"}, {}, ["group.creator"]),
        ({"currency_code": "EURO"}, {}, ["group.currency_code"]),
        ({}, {"group_id": "Trip"}, ["group_id"]),
        ({}, {"request_id": "1234"}, ["request_id"]),
        (
            {"display_name": "\t", "creator": "x"},
            {},
            ["group.display_name", "group.creator"],
        ),
    ],
)
def test_create_group_invalid_field(stub, group_fields, request_fields, violated):
    creator = create_user(stub)
    group = pb.Group(display_name="Trip", creator=creator.name)
    for key, value in group_fields.items():
        setattr(group, key, value)

    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateGroup(
            pb.CreateGroupRequest(group=group, **request_fields), timeout=10
        )

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == violated
    assert _groups_of(stub, creator.name) == []


def test_create_group_request_id_replay_returns_first_group(stub):
    creator = create_user(stub)
    request_id = str(uuid.uuid4())
    first = create_group(stub, creator.name, request_id=request_id)

    again = create_group(stub, creator.name, request_id=request_id)

    assert again == first
    assert _groups_of(stub, creator.name) == [first.name]


@pytest.mark.parametrize(
    "field", ["display_name", "creator", "group_id", "currency_code"]
)
def test_create_group_request_id_with_other_values_rejected(stub, field):
    creator = create_user(stub)
    other = create_user(stub)
    request_id = str(uuid.uuid4())
    values = {"group_id": unique_id("g"), "currency_code": "EUR"}
    first = create_group(stub, creator.name, request_id=request_id, **values)
    creator_name, display_name = creator.name, first.display_name
    if field == "display_name":
        display_name = "Other"
    elif field == "creator":
        creator_name = other.name
    elif field == "group_id":
        values["group_id"] = unique_id("g")
    else:
        values["currency_code"] = "JPY"

    with pytest.raises(grpc.RpcError) as caught:
        create_group(stub, creator_name, display_name, request_id=request_id, **values)

    assert_key_reused(caught.value, request_id, "group")
    assert _groups_of(stub, creator.name) == [first.name]
    assert _groups_of(stub, other.name) == []


def _set_default_currency(stub, user: pb.User, currency: str) -> None:
    mask = field_mask_pb2.FieldMask(paths=["currency_code"])
    user = pb.User(name=user.name, currency_code=currency)
    stub.UpdateUser(pb.UpdateUserRequest(user=user, update_mask=mask), timeout=10)


@pytest.mark.parametrize(
    ("first_currency", "retry_currency"), [("", "USD"), ("USD", "")]
)
def test_create_group_default_currency_retry_replays(
    stub, first_currency, retry_currency
):
    # The creator's default currency is USD, so both calls ask for a USD group.
    creator = create_user(stub)
    request_id = str(uuid.uuid4())
    first = create_group(
        stub, creator.name, request_id=request_id, currency_code=first_currency
    )

    again = create_group(
        stub, creator.name, request_id=request_id, currency_code=retry_currency
    )

    assert first.currency_code == "USD"
    assert again == first
    assert _groups_of(stub, creator.name) == [first.name]


@pytest.mark.parametrize(
    ("first_currency", "default_currency", "retry_currency"),
    [
        # The retry names another currency than the group got.
        ("", "USD", "EUR"),
        # The creator's default changed, so the retry requests a EUR group.
        ("USD", "EUR", ""),
    ],
)
def test_create_group_other_currency_retry_rejected(
    stub, first_currency, default_currency, retry_currency
):
    creator = create_user(stub)
    request_id = str(uuid.uuid4())
    first = create_group(
        stub, creator.name, request_id=request_id, currency_code=first_currency
    )
    _set_default_currency(stub, creator, default_currency)

    with pytest.raises(grpc.RpcError) as caught:
        create_group(
            stub, creator.name, request_id=request_id, currency_code=retry_currency
        )

    assert_key_reused(caught.value, request_id, "group")
    assert _groups_of(stub, creator.name) == [first.name]


def test_create_group_retry_after_default_change(stub):
    creator = create_user(stub)
    request_id = str(uuid.uuid4())
    first = create_group(stub, creator.name, request_id=request_id)
    _set_default_currency(stub, creator, "EUR")

    again = create_group(stub, creator.name, request_id=request_id)

    assert again == first
    assert again.currency_code == "USD"


def _group_changed_to_eur(stub, first_currency: str) -> tuple[pb.User, str, pb.Group]:
    """Create a group under a request_id, then change its currency to EUR.

    The creator's default currency is USD, so the group starts in USD."""
    creator = create_user(stub)
    request_id = str(uuid.uuid4())
    first = create_group(
        stub, creator.name, request_id=request_id, currency_code=first_currency
    )
    assert first.currency_code == "USD"
    changed = _update_group(stub, pb.Group(name=first.name, currency_code="EUR"))
    assert changed.currency_code == "EUR"
    return creator, request_id, changed


@pytest.mark.parametrize(
    ("first_currency", "retry_currency"),
    [("", ""), ("", "USD"), ("USD", "USD"), ("USD", "")],
)
def test_create_group_retry_after_currency_update_replays(
    stub, first_currency, retry_currency
):
    creator, request_id, changed = _group_changed_to_eur(stub, first_currency)

    again = create_group(
        stub, creator.name, request_id=request_id, currency_code=retry_currency
    )

    # The replay returns the group as it is now, as CreateExpense does.
    assert again == changed
    assert _groups_of(stub, creator.name) == [changed.name]


@pytest.mark.parametrize("first_currency", ["", "USD"])
def test_create_group_retry_naming_updated_currency_rejected(stub, first_currency):
    # The first request asked for a USD group; a retry that asks for a EUR
    # group is another request, whatever the group's currency is now.
    creator, request_id, changed = _group_changed_to_eur(stub, first_currency)

    with pytest.raises(grpc.RpcError) as caught:
        create_group(stub, creator.name, request_id=request_id, currency_code="EUR")

    assert_key_reused(caught.value, request_id, "group")
    assert _groups_of(stub, creator.name) == [changed.name]


def test_create_group_key_without_resolved_hash_replays(stub, module_db_url):
    """A key stored before the filled-in currency was hashed still lets a
    retry name the currency that the empty field gave the group."""
    creator = create_user(stub)
    request_id = str(uuid.uuid4())
    first = create_group(stub, creator.name, request_id=request_id)
    engine = create_engine(normalise_url(module_db_url))
    try:
        with engine.begin() as connection:
            cleared = connection.execute(
                sa.text(
                    "UPDATE user_service_request_ids SET resolved_hash = NULL "
                    "WHERE request_id = :key"
                ),
                {"key": request_id},
            )
            assert cleared.rowcount == 1
    finally:
        engine.dispose()

    again = create_group(stub, creator.name, request_id=request_id, currency_code="USD")

    assert again == first


def test_create_group_replay_after_delete_returns_not_found(stub):
    creator = create_user(stub)
    request_id = str(uuid.uuid4())
    group = create_group(stub, creator.name, request_id=request_id)
    stub.DeleteGroup(pb.DeleteGroupRequest(name=group.name), timeout=10)

    with pytest.raises(grpc.RpcError) as caught:
        create_group(stub, creator.name, request_id=request_id)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"
    assert _groups_of(stub, creator.name) == []


def test_request_ids_of_users_and_groups_are_separate(stub):
    request_id = str(uuid.uuid4())
    creator = create_user(stub, request_id=request_id)

    group = create_group(stub, creator.name, request_id=request_id)

    assert group.creator == creator.name


# GetGroup


def test_get_group_counts_members(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name)
    _add(stub, group.name, create_user(stub).name)

    assert _get_group(stub, group.name).member_count == 2


def test_get_group_unknown_returns_not_found(stub):
    name = f"groups/{unique_id('none')}"

    with pytest.raises(grpc.RpcError) as caught:
        _get_group(stub, name)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"
    assert resource_of(caught.value) == ("splitlog.dev/Group", name)


@pytest.mark.parametrize("name", ["", "groups", "users/abcd", "groups/a_b1"])
def test_get_group_malformed_name(stub, name):
    with pytest.raises(grpc.RpcError) as caught:
        _get_group(stub, name)

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["name"]


# ListGroups


def test_list_groups_pages_newest_membership_first(stub):
    user = create_user(stub)
    created = [create_group(stub, user.name, display_name=f"G{i}") for i in range(5)]
    other = create_user(stub)
    older = create_group(stub, other.name)
    _add(stub, older.name, user.name)

    names, pages, token = [], 0, ""
    while True:
        request = pb.ListGroupsRequest(member=user.name, page_size=2, page_token=token)
        response = stub.ListGroups(request, timeout=10)
        names.extend(group.name for group in response.groups)
        pages += 1
        token = response.next_page_token
        if not token:
            break

    assert names == [older.name, *[g.name for g in reversed(created)]]
    assert pages == 3


def test_list_groups_token_for_other_member_rejected(stub):
    user, other = create_user(stub), create_user(stub)
    for _ in range(2):
        create_group(stub, user.name)
    first = stub.ListGroups(pb.ListGroupsRequest(member=user.name, page_size=1))

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListGroups(
            pb.ListGroupsRequest(member=other.name, page_token=first.next_page_token)
        )

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "PAGE_TOKEN_MISMATCH"


def test_list_groups_unknown_user_returns_not_found(stub):
    with pytest.raises(grpc.RpcError) as caught:
        _groups_of(stub, f"users/{unique_id('ghost')}")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "USER_NOT_FOUND"


@pytest.mark.parametrize(
    ("request_fields", "violated"),
    [
        ({"member": ""}, ["member"]),
        ({"member": "groups/abcd"}, ["member"]),
        ({"member": "users/abcd", "page_size": -5}, ["page_size"]),
    ],
)
def test_list_groups_invalid_request(stub, request_fields, violated):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListGroups(pb.ListGroupsRequest(**request_fields), timeout=10)

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == violated


def test_list_groups_of_deactivated_user_still_works(stub):
    user = create_user(stub)
    group = create_group(stub, user.name)
    stub.DeactivateUser(pb.DeactivateUserRequest(name=user.name), timeout=10)

    assert _groups_of(stub, user.name) == [group.name]


# UpdateGroup


def test_update_group_renames_with_mask(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name, display_name="Before")
    change = pb.Group(name=group.name, display_name="After", currency_code="SEK")

    updated = _update_group(stub, change, "display_name")

    assert updated.display_name == "After"
    assert updated.currency_code == group.currency_code
    assert updated.etag != group.etag
    assert _get_group(stub, group.name) == updated


def test_update_group_empty_mask_changes_populated_fields(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name, display_name="Before")

    updated = _update_group(stub, pb.Group(name=group.name, currency_code="NOK"))

    assert updated.currency_code == "NOK"
    assert updated.display_name == "Before"


def test_update_group_empty_currency_restores_creator_currency(stub):
    creator = create_user(stub, currency_code="CAD")
    group = create_group(stub, creator.name, currency_code="EUR")

    updated = _update_group(stub, pb.Group(name=group.name), "currency_code")

    assert updated.currency_code == "CAD"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("creator", "FIELD_NOT_MUTABLE"),
        ("member_count", "FIELD_NOT_MUTABLE"),
        ("name", "FIELD_NOT_MUTABLE"),
        ("members", "UNKNOWN_FIELD_PATH"),
    ],
)
def test_update_group_bad_mask_rejected(stub, path, reason):
    creator = create_user(stub)
    group = create_group(stub, creator.name)
    other = create_user(stub)
    change = pb.Group(name=group.name, display_name="After", creator=other.name)

    with pytest.raises(grpc.RpcError) as caught:
        _update_group(stub, change, "display_name", path)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == reason
    assert violated_fields(caught.value) == ["update_mask.paths[1]"]
    assert path in caught.value.details()
    assert _get_group(stub, group.name) == group


@pytest.mark.parametrize("paths", [[], ["*"]])
def test_update_group_changed_creator_rejected(stub, paths):
    creator, other = create_user(stub), create_user(stub)
    group = create_group(stub, creator.name, display_name="Before")
    change = pb.Group(name=group.name, display_name="After", creator=other.name)

    with pytest.raises(grpc.RpcError) as caught:
        _update_group(stub, change, *paths)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "FIELD_IMMUTABLE"
    assert violated_fields(caught.value) == ["group.creator"]
    assert other.name in caught.value.details()
    assert creator.name in caught.value.details()
    assert _get_group(stub, group.name) == group


@pytest.mark.parametrize("paths", [[], ["*"]])
def test_update_group_same_creator_accepted(stub, paths):
    creator = create_user(stub)
    group = create_group(stub, creator.name, display_name="Before")
    change = pb.Group()
    change.CopyFrom(group)
    change.display_name = "After"

    updated = _update_group(stub, change, *paths)

    assert updated.display_name == "After"
    assert updated.creator == creator.name


@pytest.mark.parametrize(
    ("fields", "paths"),
    [
        ({}, []),
        ({"display_name": "Same"}, []),
        ({"display_name": "Same"}, ["display_name"]),
        ({"currency_code": "USD"}, ["currency_code"]),
    ],
)
def test_update_group_same_values_keep_etag(stub, fields, paths):
    creator = create_user(stub)
    group = create_group(stub, creator.name, display_name="Same")

    updated = _update_group(stub, pb.Group(name=group.name, **fields), *paths)

    assert updated == group
    assert _get_group(stub, group.name) == group


def test_update_group_star_resent_keeps_etag(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name, display_name="Same")

    updated = _update_group(stub, group, "*")

    assert updated == group


def test_update_group_creator_outside_mask_ignored(stub):
    creator, other = create_user(stub), create_user(stub)
    group = create_group(stub, creator.name, display_name="Before")
    change = pb.Group(name=group.name, display_name="After", creator=other.name)

    updated = _update_group(stub, change, "display_name")

    assert updated.display_name == "After"
    assert updated.creator == creator.name


def test_update_group_invalid_name_value_rejected(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name)

    with pytest.raises(grpc.RpcError) as caught:
        _update_group(stub, pb.Group(name=group.name, display_name="x" * 101))

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["group.display_name"]
    assert _get_group(stub, group.name) == group


def test_update_group_stale_etag_returns_aborted(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name, display_name="Before")
    _update_group(stub, pb.Group(name=group.name, display_name="First"))

    with pytest.raises(grpc.RpcError) as caught:
        _update_group(
            stub, pb.Group(name=group.name, display_name="Late", etag=group.etag)
        )

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "ETAG_MISMATCH"
    assert _get_group(stub, group.name).display_name == "First"


def test_update_group_unknown_returns_not_found(stub):
    name = f"groups/{unique_id('none')}"

    with pytest.raises(grpc.RpcError) as caught:
        _update_group(stub, pb.Group(name=name, display_name="X"))

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"


# DeleteGroup


def test_delete_group_removes_group_and_memberships(stub):
    creator, member = create_user(stub), create_user(stub)
    group = create_group(stub, creator.name)
    _add(stub, group.name, member.name)

    stub.DeleteGroup(pb.DeleteGroupRequest(name=group.name, etag=group.etag))

    with pytest.raises(grpc.RpcError) as caught:
        _get_group(stub, group.name)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert _groups_of(stub, creator.name) == []
    assert _groups_of(stub, member.name) == []


def test_delete_group_stale_etag_returns_aborted(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name)
    _update_group(stub, pb.Group(name=group.name, display_name="Renamed"))

    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteGroup(pb.DeleteGroupRequest(name=group.name, etag=group.etag))

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "ETAG_MISMATCH"
    assert _get_group(stub, group.name).display_name == "Renamed"


def test_delete_group_unknown_returns_not_found(stub):
    name = f"groups/{unique_id('none')}"

    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteGroup(pb.DeleteGroupRequest(name=name), timeout=10)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"
    assert resource_of(caught.value) == ("splitlog.dev/Group", name)


def test_delete_group_malformed_request_rejected(stub):
    request = pb.DeleteGroupRequest(name="groups/x", etag="1")

    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteGroup(request, timeout=10)

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["name", "etag"]


# AddGroupMember


def test_add_group_member_returns_membership(stub):
    creator = create_user(stub)
    member = create_user(stub, display_name="Grace Hopper")
    group = create_group(stub, creator.name)

    added = _add(stub, group.name, member.name)

    group_id = group.name.split("/")[1]
    member_id = member.name.split("/")[1]
    assert added.name == f"groups/{group_id}/members/{member_id}"
    assert added.user == member.name
    assert added.display_name == "Grace Hopper"
    assert added.join_time.ToDatetime() >= group.create_time.ToDatetime()
    assert _members(stub, group.name) == [creator.name, member.name]


def test_add_group_member_twice_returns_already_exists(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name)

    with pytest.raises(grpc.RpcError) as caught:
        _add(stub, group.name, creator.name)

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "MEMBER_ALREADY_EXISTS"
    creator_id = creator.name.split("/")[1]
    assert resource_of(caught.value) == (
        "splitlog.dev/Member",
        f"{group.name}/members/{creator_id}",
    )


def test_add_group_member_deactivated_user_fails_precondition(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name)
    gone = _deactivated_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        _add(stub, group.name, gone.name)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "USER_DEACTIVATED"
    assert _members(stub, group.name) == [creator.name]


def test_add_group_member_unknown_user_returns_not_found(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name)
    ghost = f"users/{unique_id('ghost')}"

    with pytest.raises(grpc.RpcError) as caught:
        _add(stub, group.name, ghost)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "USER_NOT_FOUND"
    assert resource_of(caught.value) == ("splitlog.dev/User", ghost)


def test_add_group_member_unknown_group_returns_not_found(stub):
    user = create_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        _add(stub, f"groups/{unique_id('none')}", user.name)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"
    assert _groups_of(stub, user.name) == []


def test_add_group_member_malformed_names_rejected(stub):
    with pytest.raises(grpc.RpcError) as caught:
        _add(stub, "users/abcd", "groups/abcd")

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["parent", "user"]


# ListGroupMembers


def test_list_group_members_pages_in_join_order(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name)
    joined = [creator.name]
    for i in range(6):
        user = create_user(stub, display_name=f"Member {i}")
        _add(stub, group.name, user.name)
        joined.append(user.name)

    listed, token = [], ""
    while True:
        request = pb.ListGroupMembersRequest(
            parent=group.name, page_size=3, page_token=token
        )
        response = stub.ListGroupMembers(request, timeout=10)
        listed.extend(member.user for member in response.members)
        token = response.next_page_token
        if not token:
            break

    assert listed == joined


def test_list_group_members_shows_current_display_name(stub):
    creator = create_user(stub, display_name="Old")
    group = create_group(stub, creator.name)
    stub.UpdateUser(
        pb.UpdateUserRequest(user=pb.User(name=creator.name, display_name="New"))
    )

    response = stub.ListGroupMembers(pb.ListGroupMembersRequest(parent=group.name))

    assert [m.display_name for m in response.members] == ["New"]


def test_list_group_members_token_for_other_group_rejected(stub):
    creator = create_user(stub)
    group, other = create_group(stub, creator.name), create_group(stub, creator.name)
    _add(stub, group.name, create_user(stub).name)
    first = stub.ListGroupMembers(
        pb.ListGroupMembersRequest(parent=group.name, page_size=1)
    )

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListGroupMembers(
            pb.ListGroupMembersRequest(
                parent=other.name, page_token=first.next_page_token
            )
        )

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "PAGE_TOKEN_MISMATCH"


def test_list_group_members_unknown_group_returns_not_found(stub):
    with pytest.raises(grpc.RpcError) as caught:
        _members(stub, f"groups/{unique_id('none')}")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"


@pytest.mark.parametrize(
    ("request_fields", "violated"),
    [
        ({"parent": "groups/"}, ["parent"]),
        ({"parent": "groups/abcd", "page_size": -1}, ["page_size"]),
    ],
)
def test_list_group_members_invalid_request(stub, request_fields, violated):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListGroupMembers(pb.ListGroupMembersRequest(**request_fields))

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == violated


# RemoveGroupMember


def _member_name(group: pb.Group, user: pb.User) -> str:
    return f"{group.name}/members/{user.name.split('/')[1]}"


def test_remove_group_member_deletes_membership(stub):
    creator, member = create_user(stub), create_user(stub)
    group = create_group(stub, creator.name)
    _add(stub, group.name, member.name)

    stub.RemoveGroupMember(
        pb.RemoveGroupMemberRequest(name=_member_name(group, creator)), timeout=10
    )

    assert _members(stub, group.name) == [member.name]
    assert _groups_of(stub, creator.name) == []
    assert _get_group(stub, group.name).creator == creator.name


def test_remove_group_member_not_member_returns_not_found(stub):
    creator, stranger = create_user(stub), create_user(stub)
    group = create_group(stub, creator.name)
    name = _member_name(group, stranger)

    with pytest.raises(grpc.RpcError) as caught:
        stub.RemoveGroupMember(pb.RemoveGroupMemberRequest(name=name), timeout=10)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "MEMBER_NOT_FOUND"
    assert resource_of(caught.value) == ("splitlog.dev/Member", name)


def test_remove_group_member_unknown_group_returns_not_found(stub):
    name = f"groups/{unique_id('none')}/members/{unique_id()}"

    with pytest.raises(grpc.RpcError) as caught:
        stub.RemoveGroupMember(pb.RemoveGroupMemberRequest(name=name), timeout=10)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"


def test_remove_last_group_member_fails_precondition(stub):
    creator = create_user(stub)
    group = create_group(stub, creator.name)

    with pytest.raises(grpc.RpcError) as caught:
        stub.RemoveGroupMember(
            pb.RemoveGroupMemberRequest(name=_member_name(group, creator)), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "LAST_MEMBER"
    assert _members(stub, group.name) == [creator.name]


@pytest.mark.parametrize(
    "name", ["", "groups/abcd", "groups/abcd/members/", "groups/abcd/people/efgh"]
)
def test_remove_group_member_malformed_name_rejected(stub, name):
    with pytest.raises(grpc.RpcError) as caught:
        stub.RemoveGroupMember(pb.RemoveGroupMemberRequest(name=name), timeout=10)

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["name"]
