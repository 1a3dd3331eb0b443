"""UsersService user RPCs against a real server on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from splitlog.users.v1 import users_service_pb2 as pb
from splitlog_runtime import pagination
from tests.user_service.support import (
    create_user,
    reason_of,
    resource_of,
    unique_email,
    unique_id,
    violated_fields,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# The selector that ListUsers puts in its tokens when no filter is set.
_SELECTOR = ["ListUsers", ""]


def _get(stub, name: str) -> pb.User:
    return stub.GetUser(pb.GetUserRequest(name=name), timeout=10).user


def _users_with_email(stub, email: str) -> list[pb.User]:
    request = pb.ListUsersRequest(filter=f'email = "{email}"')
    return list(stub.ListUsers(request, timeout=10).users)


def _update(stub, user: pb.User, *paths: str) -> pb.User:
    mask = field_mask_pb2.FieldMask(paths=list(paths))
    request = pb.UpdateUserRequest(user=user, update_mask=mask)
    return stub.UpdateUser(request, timeout=10).user


# CreateUser


def test_create_user_returns_stored_fields(stub):
    email = unique_email("Ada.Mixed")

    user = create_user(stub, display_name="  Ada Lovelace  ", email=email)

    assert user.name.startswith("users/")
    assert user.email == email
    assert user.display_name == "Ada Lovelace"
    assert user.currency_code == "USD"
    assert user.state == pb.User.STATE_ACTIVE
    assert user.etag
    assert user.create_time.seconds > 0
    assert user.update_time == user.create_time
    assert _get(stub, user.name) == user


def test_create_user_ignores_output_only_fields(stub):
    user = pb.User(
        name="users/chosen-by-client",
        email=unique_email(),
        display_name="Ada",
        state=99,
        etag='"42"',
    )

    created = stub.CreateUser(pb.CreateUserRequest(user=user), timeout=10).user

    assert created.name != user.name
    assert created.state == pb.User.STATE_ACTIVE
    assert created.etag != user.etag


def test_create_user_with_chosen_id_and_currency(stub):
    user_id = unique_id("ada")

    user = create_user(stub, user_id=user_id, currency_code="EUR")

    assert user.name == f"users/{user_id}"
    assert user.currency_code == "EUR"


def test_create_user_duplicate_id_returns_already_exists(stub):
    user_id = unique_id()
    create_user(stub, user_id=user_id)
    email = unique_email()

    with pytest.raises(grpc.RpcError) as caught:
        create_user(stub, user_id=user_id, email=email)

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "USER_ALREADY_EXISTS"
    assert resource_of(caught.value) == ("splitlog.dev/User", f"users/{user_id}")
    assert _users_with_email(stub, email) == []


def test_create_user_email_taken_in_other_case(stub):
    email = unique_email("grace")
    first = create_user(stub, email=email)

    with pytest.raises(grpc.RpcError) as caught:
        create_user(stub, email=email.upper(), display_name="Someone Else")

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "EMAIL_TAKEN"
    assert resource_of(caught.value) == ("splitlog.dev/User", first.name)
    assert _users_with_email(stub, email) == [first]


@pytest.mark.parametrize(
    ("fields", "violated", "reason"),
    [
        ({"email": ""}, "user.email", "REQUIRED"),
        ({"email": "no-at-sign.example.com"}, "user.email", "INVALID_EMAIL"),
        ({"email": "a@b"}, "user.email", "INVALID_EMAIL"),
        ({"email": "a b@example.com"}, "user.email", "INVALID_EMAIL"),
        ({"email": "a" * 250 + "@x.io"}, "user.email", "INVALID_EMAIL"),
        ({"display_name": "   "}, "user.display_name", "REQUIRED"),
        ({"display_name": "x" * 101}, "user.display_name", "DISPLAY_NAME_TOO_LONG"),
        ({"display_name": "Ada\nL"}, "user.display_name", "INVALID_DISPLAY_NAME"),
        ({"currency_code": "usd"}, "user.currency_code", "INVALID_CURRENCY_CODE"),
        ({"currency_code": "XXX"}, "user.currency_code", "INVALID_CURRENCY_CODE"),
        ({"user_id": "Ada"}, "user_id", "INVALID_ID"),
        ({"user_id": "ab"}, "user_id", "INVALID_ID"),
        ({"request_id": "not-a-uuid"}, "request_id", "INVALID_REQUEST_ID"),
    ],
)
def test_create_user_invalid_field(stub, fields, violated, reason):
    fields = dict(fields)
    email = fields.pop("email", unique_email())

    with pytest.raises(grpc.RpcError) as caught:
        create_user(stub, email=email, **fields)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == reason
    assert violated_fields(caught.value) == [violated]
    if email:
        assert _users_with_email(stub, email) == []


def test_create_user_reports_every_invalid_field(stub):
    request = pb.CreateUserRequest(
        user=pb.User(email="bad", display_name="", currency_code="EURO"),
        user_id="9lives",
    )

    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateUser(request, timeout=10)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "INVALID_EMAIL"
    assert violated_fields(caught.value) == [
        "user.email",
        "user.display_name",
        "user.currency_code",
        "user_id",
    ]
    assert "bad" in caught.value.details()


def test_create_user_request_id_replay_returns_first_user(stub):
    request_id = str(uuid.uuid4())
    email = unique_email()
    first = create_user(stub, email=email, request_id=request_id)

    again = create_user(stub, email=email, request_id=request_id)
    changed = create_user(
        stub, email=unique_email(), display_name="Other", request_id=request_id
    )

    assert again == first
    assert changed == first
    assert _users_with_email(stub, email) == [first]


def test_create_user_request_id_is_case_insensitive(stub):
    request_id = str(uuid.uuid4())
    first = create_user(stub, request_id=request_id)

    again = create_user(stub, request_id=request_id.upper())

    assert again.name == first.name


def test_create_user_racing_email_one_wins(stub):
    email = unique_email("race")
    codes: list[grpc.StatusCode] = []
    reasons: list[str] = []
    start = threading.Barrier(6)

    def attempt(index: int) -> None:
        start.wait()
        try:
            create_user(stub, email=email, display_name=f"Racer {index}")
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
            reasons.append(reason_of(error))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert codes.count(grpc.StatusCode.OK) == 1
    assert codes.count(grpc.StatusCode.ALREADY_EXISTS) == 5
    assert set(reasons) == {"EMAIL_TAKEN"}
    assert len(_users_with_email(stub, email)) == 1


def test_create_user_racing_request_id_replays(stub):
    request_id = str(uuid.uuid4())
    names: list[str] = []
    start = threading.Barrier(4)

    def attempt() -> None:
        start.wait()
        names.append(create_user(stub, request_id=request_id).name)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(names) == 4
    assert len(set(names)) == 1


# GetUser


def test_get_user_unknown_returns_not_found(stub):
    name = f"users/{unique_id('ghost')}"

    with pytest.raises(grpc.RpcError) as caught:
        _get(stub, name)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "USER_NOT_FOUND"
    assert resource_of(caught.value) == ("splitlog.dev/User", name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "REQUIRED"),
        ("users/", "INVALID_RESOURCE_NAME"),
        ("groups/abcd", "INVALID_RESOURCE_NAME"),
        ("users/abcd/extra", "INVALID_RESOURCE_NAME"),
        ("users/Upper-Case", "INVALID_RESOURCE_NAME"),
        ("abcd", "INVALID_RESOURCE_NAME"),
    ],
)
def test_get_user_malformed_name(stub, name, reason):
    with pytest.raises(grpc.RpcError) as caught:
        _get(stub, name)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == reason
    assert violated_fields(caught.value) == ["name"]


# ListUsers


def _list_all(stub, filter_text: str, page_size: int) -> tuple[list[pb.User], int]:
    users, pages, token = [], 0, ""
    while True:
        request = pb.ListUsersRequest(
            filter=filter_text, page_size=page_size, page_token=token
        )
        response = stub.ListUsers(request, timeout=10)
        users.extend(response.users)
        pages += 1
        token = response.next_page_token
        if not token:
            return users, pages


def test_list_users_pages_without_skips_or_repeats(stub):
    tag = uuid.uuid4().hex[:8]
    created = [create_user(stub, display_name=f"Pager {tag} {i}") for i in range(7)]

    listed, pages = _list_all(stub, f'display_name : "{tag}"', page_size=3)

    assert [user.name for user in listed] == [user.name for user in created]
    assert pages == 3


def test_list_users_honours_changed_page_size(stub):
    tag = uuid.uuid4().hex[:8]
    created = [create_user(stub, display_name=f"Resize {tag} {i}") for i in range(5)]
    filter_text = f'display_name : "{tag}"'

    first = stub.ListUsers(pb.ListUsersRequest(filter=filter_text, page_size=2))
    rest = stub.ListUsers(
        pb.ListUsersRequest(
            filter=filter_text, page_size=10, page_token=first.next_page_token
        )
    )

    assert len(first.users) == 2
    assert [u.name for u in [*first.users, *rest.users]] == [u.name for u in created]
    assert rest.next_page_token == ""


def test_list_users_token_with_other_filter_rejected(stub):
    tag = uuid.uuid4().hex[:8]
    for i in range(2):
        create_user(stub, display_name=f"Token {tag} {i}")
    first = stub.ListUsers(
        pb.ListUsersRequest(filter=f'display_name : "{tag}"', page_size=1)
    )

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListUsers(
            pb.ListUsersRequest(
                filter="state = ACTIVE", page_token=first.next_page_token
            )
        )

    assert first.next_page_token
    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "PAGE_TOKEN_MISMATCH"
    assert violated_fields(caught.value) == ["page_token"]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("garbage!", "INVALID_PAGE_TOKEN"),
        ("eyJrIjpbMV0sInMiOiJ4In0", "PAGE_TOKEN_MISMATCH"),
        (
            pagination.encode_token(["2026-01-01T00:00:00", "x\x00"], _SELECTOR),
            "INVALID_PAGE_TOKEN",
        ),
        (
            pagination.encode_token(["yesterday", "abcd"], _SELECTOR),
            "INVALID_PAGE_TOKEN",
        ),
        (pagination.encode_token([1], _SELECTOR), "INVALID_PAGE_TOKEN"),
    ],
)
def test_list_users_malformed_token_rejected(stub, token, reason):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListUsers(pb.ListUsersRequest(page_token=token), timeout=10)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == reason
    assert violated_fields(caught.value) == ["page_token"]


def test_list_users_negative_page_size_rejected(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListUsers(pb.ListUsersRequest(page_size=-1), timeout=10)

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["page_size"]


def test_list_users_filters_by_state_email_and_name(stub):
    tag = uuid.uuid4().hex[:8]
    active = create_user(stub, display_name=f"Filter {tag} Active")
    gone = create_user(stub, display_name=f"filter {tag.upper()} Gone")
    stub.DeactivateUser(pb.DeactivateUserRequest(name=gone.name), timeout=10)

    def names(filter_text: str) -> list[str]:
        request = pb.ListUsersRequest(filter=filter_text)
        return [user.name for user in stub.ListUsers(request, timeout=10).users]

    by_name = f'display_name : "FILTER {tag}"'
    assert names(by_name) == [active.name, gone.name]
    assert names(f"{by_name} AND state = ACTIVE") == [active.name]
    assert names(f"state = DEACTIVATED AND {by_name}") == [gone.name]
    assert names(f'email = "{active.email.upper()}"') == [active.name]
    assert names(f'email = "{active.email}" AND state = DEACTIVATED') == []


def test_list_users_filter_wildcards_are_literal(stub):
    tag = uuid.uuid4().hex[:8]
    percent = create_user(stub, display_name=f"{tag} 100% sure")
    create_user(stub, display_name=f"{tag} 100 sure")

    response = stub.ListUsers(
        pb.ListUsersRequest(filter=f'display_name : "{tag} 100%"')
    )

    assert [user.name for user in response.users] == [percent.name]


@pytest.mark.parametrize(
    "filter_text",
    [
        "state = ACTIVE OR state = DEACTIVATED",
        "NOT state = ACTIVE",
        "(state = ACTIVE)",
        "state = active",
        'state = "ACTIVE"',
        "state != ACTIVE",
        "create_time > 0",
        'email : "example.com"',
        "email = a@example.com",
        'display_name = "Ada"',
        "state = ACTIVE AND",
        "state = ACTIVE AND state = DEACTIVATED",
        'display_name : "unterminated',
        'email = "nul\x00@example.com"',
        "state = ACTIVE and state = ACTIVE",
        "state",
    ],
)
def test_list_users_unsupported_filter_rejected(stub, filter_text):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListUsers(pb.ListUsersRequest(filter=filter_text), timeout=10)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "INVALID_FILTER"
    assert violated_fields(caught.value) == ["filter"]


# UpdateUser


def test_update_user_with_mask_changes_only_masked_fields(stub):
    user = create_user(stub, display_name="Before", currency_code="EUR")
    change = pb.User(name=user.name, display_name="After", currency_code="GBP")

    updated = _update(stub, change, "display_name")

    assert updated.display_name == "After"
    assert updated.currency_code == "EUR"
    assert updated.email == user.email
    assert updated.etag != user.etag
    assert updated.update_time.ToDatetime() > user.update_time.ToDatetime()
    assert _get(stub, user.name) == updated


def test_update_user_empty_mask_changes_populated_fields(stub):
    user = create_user(stub, display_name="Before")
    new_email = unique_email("moved")
    change = pb.User(name=user.name, email=new_email, currency_code="JPY")

    updated = _update(stub, change)

    assert updated.email == new_email
    assert updated.currency_code == "JPY"
    assert updated.display_name == "Before"


def test_update_user_empty_mask_ignores_output_only_fields(stub):
    user = create_user(stub, display_name="Before")
    change = pb.User()
    change.CopyFrom(user)
    change.display_name = "After"
    change.state = pb.User.STATE_DEACTIVATED

    updated = _update(stub, change)

    assert updated.display_name == "After"
    assert updated.state == pb.User.STATE_ACTIVE


def test_update_user_star_mask_replaces_every_mutable_field(stub):
    user = create_user(stub, display_name="Before", currency_code="EUR")
    new_email = unique_email()
    change = pb.User(name=user.name, email=new_email, display_name="After")

    updated = _update(stub, change, "*")

    assert updated.email == new_email
    assert updated.display_name == "After"
    assert updated.currency_code == "USD"


def test_update_user_star_mask_with_empty_email_rejected(stub):
    user = create_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, pb.User(name=user.name, display_name="After"), "*")

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["user.email"]
    assert _get(stub, user.name) == user


def test_update_user_no_change_keeps_etag(stub):
    user = create_user(stub, display_name="Same")

    updated = _update(stub, pb.User(name=user.name, display_name="Same"))

    assert updated == user


@pytest.mark.parametrize(
    ("paths", "violated", "reason"),
    [
        (["nickname"], ["update_mask.paths[0]"], "UNKNOWN_FIELD_PATH"),
        (["display_name", "state"], ["update_mask.paths[1]"], "FIELD_NOT_MUTABLE"),
        (["create_time"], ["update_mask.paths[0]"], "FIELD_NOT_MUTABLE"),
        (["name"], ["update_mask.paths[0]"], "FIELD_NOT_MUTABLE"),
        (["etag"], ["update_mask.paths[0]"], "FIELD_NOT_MUTABLE"),
        (["*", "email"], ["update_mask.paths[0]"], "INVALID_UPDATE_MASK"),
        (
            ["bogus", "update_time"],
            ["update_mask.paths[0]", "update_mask.paths[1]"],
            "UNKNOWN_FIELD_PATH",
        ),
    ],
)
def test_update_user_bad_mask_rejected(stub, paths, violated, reason):
    user = create_user(stub, display_name="Before")
    change = pb.User(name=user.name, display_name="After")

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, change, *paths)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == reason
    assert violated_fields(caught.value) == violated
    assert paths[int(violated[0][-2])] in caught.value.details()
    assert _get(stub, user.name) == user


def test_update_user_invalid_value_writes_nothing(stub):
    user = create_user(stub, display_name="Before")
    change = pb.User(name=user.name, display_name="After", currency_code="ABC")

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, change, "display_name", "currency_code")

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "INVALID_CURRENCY_CODE"
    assert _get(stub, user.name) == user


def test_update_user_stale_etag_returns_aborted(stub):
    user = create_user(stub, display_name="Before")
    _update(stub, pb.User(name=user.name, display_name="Concurrent"))
    stale = pb.User(name=user.name, display_name="Late", etag=user.etag)

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, stale, "display_name")

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "ETAG_MISMATCH"
    assert resource_of(caught.value) == ("splitlog.dev/User", user.name)
    assert _get(stub, user.name).display_name == "Concurrent"


def test_update_user_current_etag_accepted(stub):
    user = create_user(stub, display_name="Before")

    updated = _update(
        stub, pb.User(name=user.name, display_name="After", etag=user.etag)
    )

    assert updated.display_name == "After"


def test_update_user_malformed_etag_rejected(stub):
    user = create_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, pb.User(name=user.name, display_name="X", etag="abc"))

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "INVALID_ETAG"
    assert violated_fields(caught.value) == ["user.etag"]


def test_update_user_email_of_other_user_rejected(stub):
    other = create_user(stub)
    user = create_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, pb.User(name=user.name, email=other.email.upper()), "email")

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "EMAIL_TAKEN"
    assert resource_of(caught.value) == ("splitlog.dev/User", other.name)
    assert _get(stub, user.name) == user


def test_update_user_own_email_in_new_case_accepted(stub):
    user = create_user(stub, email=unique_email("lower"))

    updated = _update(stub, pb.User(name=user.name, email=user.email.upper()))

    assert updated.email == user.email.upper()


def test_update_user_unknown_returns_not_found(stub):
    name = f"users/{unique_id('ghost')}"

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, pb.User(name=name, display_name="X"))

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "USER_NOT_FOUND"


def test_update_user_malformed_name_rejected(stub):
    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, pb.User(name="people/x", display_name="X"))

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["user.name"]


# DeactivateUser


def test_deactivate_user_changes_state_and_etag(stub):
    user = create_user(stub)

    request = pb.DeactivateUserRequest(name=user.name, etag=user.etag)
    deactivated = stub.DeactivateUser(request, timeout=10).user

    assert deactivated.state == pb.User.STATE_DEACTIVATED
    assert deactivated.etag != user.etag
    assert _get(stub, user.name) == deactivated


def test_deactivate_user_twice_is_idempotent(stub):
    user = create_user(stub)
    request = pb.DeactivateUserRequest(name=user.name, etag=user.etag)
    first = stub.DeactivateUser(request, timeout=10).user

    second = stub.DeactivateUser(request, timeout=10).user

    assert second == first


def test_deactivate_user_stale_etag_returns_aborted(stub):
    user = create_user(stub)
    _update(stub, pb.User(name=user.name, display_name="Changed"))

    with pytest.raises(grpc.RpcError) as caught:
        stub.DeactivateUser(
            pb.DeactivateUserRequest(name=user.name, etag=user.etag), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "ETAG_MISMATCH"
    assert _get(stub, user.name).state == pb.User.STATE_ACTIVE


def test_deactivate_user_unknown_returns_not_found(stub):
    name = f"users/{unique_id('ghost')}"

    with pytest.raises(grpc.RpcError) as caught:
        stub.DeactivateUser(pb.DeactivateUserRequest(name=name), timeout=10)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "USER_NOT_FOUND"
    assert resource_of(caught.value) == ("splitlog.dev/User", name)


def test_deactivate_user_malformed_name_rejected(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeactivateUser(pb.DeactivateUserRequest(name="users/"), timeout=10)

    assert caught.value.code() == INVALID
    assert violated_fields(caught.value) == ["name"]
