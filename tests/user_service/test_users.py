"""UsersService user RPCs against a real server on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import unicodedata
import uuid
from datetime import datetime, timedelta

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError

from splitlog.users.v1 import users_service_pb2 as pb
from splitlog_runtime import pagination
from splitlog_runtime.database import normalise_url, upgrade
from tests.conftest import run_alembic
from tests.page_tokens import FORGED_KEYS, with_key
from tests.user_service.support import (
    assert_key_reused,
    create_user,
    error_details,
    open_stub,
    reason_of,
    resource_of,
    unique_email,
    unique_id,
    violated_fields,
)
from user_service.app import MIGRATIONS_DIR, build

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


def test_create_user_trims_zero_width_characters(stub):
    user = create_user(stub, display_name="\u200b\ufeff Ada Lovelace\u200d\u2060")

    assert user.display_name == "Ada Lovelace"


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
    assert resource_of(caught.value) == ("splitlog.dev/User", "")
    assert _users_with_email(stub, email) == [first]


def _look_alikes(tag: str) -> list[tuple[str, str]]:
    return [
        (f"ben.{tag}@example.com", f"ｂｅｎ.{tag}@example.com"),
        (f"ben.{tag}@example.com", f"ben.{tag}@ｅxample.com"),
        (f"ben.{tag}@example.com", f"BEN.{tag}@example.com"),
        (f"ｂｅｎ.{tag}@example.com", f"BEN.{tag}@EXAMPLE.COM"),
        (f"straße.{tag}@x.com", f"STRASSE.{tag}@x.com"),
        (f"STRASSE.{tag}@x.com", f"straße.{tag}@x.com"),
    ]


@pytest.mark.parametrize("case", range(len(_look_alikes(""))))
def test_create_user_look_alike_email_taken(stub, case):
    first_email, second_email = _look_alikes(uuid.uuid4().hex[:8])[case]
    first = create_user(stub, email=first_email)

    with pytest.raises(grpc.RpcError) as caught:
        create_user(stub, email=second_email, display_name="Someone Else")

    assert first.email == first_email
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "EMAIL_TAKEN"
    assert _users_with_email(stub, second_email) == [first]


def test_email_taken_does_not_reveal_owner(stub):
    owner = create_user(stub, user_id=unique_id("owner"), email=unique_email("ana"))

    with pytest.raises(grpc.RpcError) as caught:
        create_user(stub, email=owner.email.upper())

    details = error_details(caught.value)
    owner_id = owner.name.split("/")[1]
    assert reason_of(caught.value) == "EMAIL_TAKEN"
    assert resource_of(caught.value) == ("splitlog.dev/User", "")
    assert owner.email.upper() in details["ResourceInfo"].description
    assert details["ResourceInfo"].owner == ""
    assert details["ErrorInfo"].metadata["email"] == owner.email.upper()
    assert owner_id not in caught.value.details()
    for detail in details.values():
        assert owner_id not in str(detail)


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
        ({"display_name": "\u200b\u200d"}, "user.display_name", "REQUIRED"),
        ({"display_name": "\ufeff \u2060"}, "user.display_name", "REQUIRED"),
        ({"display_name": "\u0301"}, "user.display_name", "INVALID_DISPLAY_NAME"),
        (
            {"display_name": "\u200c\u0308\u200c"},
            "user.display_name",
            "INVALID_DISPLAY_NAME",
        ),
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

    assert again == first
    assert _users_with_email(stub, email) == [first]


@pytest.mark.parametrize(
    "change",
    [
        {"display_name": "Other"},
        {"email": "other"},
        {"currency_code": "JPY"},
        {"user_id": "other"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_create_user_request_id_with_other_values_rejected(stub, change):
    request_id = str(uuid.uuid4())
    values = {"email": unique_email(), "user_id": unique_id()}
    first = create_user(stub, request_id=request_id, **values)
    field, value = next(iter(change.items()))
    changed = {**values, field: value}
    if field == "email":
        changed["email"] = unique_email()
    elif field == "user_id":
        changed["user_id"] = unique_id()

    with pytest.raises(grpc.RpcError) as caught:
        create_user(stub, request_id=request_id, **changed)

    assert_key_reused(caught.value, request_id, "user")
    assert _users_with_email(stub, changed["email"]) == (
        [first] if changed["email"] == first.email else []
    )


def test_create_user_request_id_is_case_insensitive(stub):
    request_id = str(uuid.uuid4())
    email = unique_email()
    first = create_user(stub, email=email, request_id=request_id)

    again = create_user(stub, email=email, request_id=request_id.upper())

    assert again.name == first.name


def test_create_user_key_without_hash_replays(stub, module_db_url):
    """A key stored before request hashes were kept replays any request."""
    request_id = str(uuid.uuid4())
    first = create_user(stub, request_id=request_id)
    engine = create_engine(normalise_url(module_db_url))
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE user_service_request_ids SET request_hash = NULL "
                    "WHERE request_id = :key"
                ),
                {"key": request_id},
            )
    finally:
        engine.dispose()

    again = create_user(stub, display_name="Other", request_id=request_id)

    assert again == first


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
    email = unique_email()
    names: list[str] = []
    start = threading.Barrier(4)

    def attempt() -> None:
        start.wait()
        names.append(create_user(stub, email=email, request_id=request_id).name)

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
    ("first_filter", "next_filter"),
    [
        (" ", ""),
        ("", "  "),
        ("state=ACTIVE", "  state = ACTIVE "),
        (
            'display_name:"{tag}" AND state=ACTIVE',
            'state = ACTIVE AND display_name : "{tag}"',
        ),
        ('display_name : "{tag}"', 'display_name : "{upper}"'),
    ],
)
def test_list_users_token_accepts_equivalent_filter(stub, first_filter, next_filter):
    tag = uuid.uuid4().hex[:8]
    for i in range(3):
        create_user(stub, display_name=f"Spelling {tag} {i}")
    first_filter = first_filter.format(tag=tag)
    next_filter = next_filter.format(tag=tag, upper=tag.upper())
    first = stub.ListUsers(
        pb.ListUsersRequest(filter=first_filter, page_size=2), timeout=10
    )
    expected = stub.ListUsers(
        pb.ListUsersRequest(
            filter=first_filter, page_size=2, page_token=first.next_page_token
        ),
        timeout=10,
    )

    response = stub.ListUsers(
        pb.ListUsersRequest(
            filter=next_filter, page_size=2, page_token=first.next_page_token
        ),
        timeout=10,
    )

    assert first.next_page_token
    assert list(response.users) == list(expected.users)
    assert response.next_page_token == expected.next_page_token


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


@pytest.mark.parametrize("key", FORGED_KEYS)
def test_list_users_forged_key_quotes_token(stub, key):
    create_user(stub)
    create_user(stub)
    first = stub.ListUsers(pb.ListUsersRequest(page_size=1), timeout=10)
    token = with_key(first.next_page_token, key)

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListUsers(pb.ListUsersRequest(page_token=token), timeout=10)

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "INVALID_PAGE_TOKEN"
    assert repr(token[:40] + "…") in caught.value.details()


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


def test_update_user_empty_keeps_etag(stub):
    user = create_user(stub)

    updated = _update(stub, pb.User(name=user.name))

    assert updated == user
    assert _get(stub, user.name) == user


def test_update_user_star_resent_keeps_etag(stub):
    user = create_user(stub)

    updated = _update(stub, user, "*")

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


def test_update_user_invisible_display_name_rejected(stub):
    user = create_user(stub, display_name="Before")

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, pb.User(name=user.name, display_name="\u034f\u0301"))

    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "INVALID_DISPLAY_NAME"
    assert violated_fields(caught.value) == ["user.display_name"]
    assert "user.display_name" in caught.value.details()
    assert _get(stub, user.name) == user


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("DisplayName", "'DisplayName'"),
        (
            "_display_name",
            "'DisplayName' (received as '_display_name' after the JSON mapping)",
        ),
    ],
)
def test_update_user_mask_path_error_quotes_sent_path(stub, path, quoted):
    user = create_user(stub, display_name="Before")

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, pb.User(name=user.name, display_name="After"), path)

    message = caught.value.details()
    assert caught.value.code() == INVALID
    assert reason_of(caught.value) == "UNKNOWN_FIELD_PATH"
    assert violated_fields(caught.value) == ["update_mask.paths[0]"]
    assert f"unknown field path {quoted}; did you mean 'display_name'?" in message
    assert "valid paths of a user are email, display_name, currency_code" in message
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
    assert caught.value.details().startswith(
        f'user.etag "1" does not match the current etag "2" of {user.name!r}: '
        "it is stale, because the user has changed since it was read."
    )
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
    assert resource_of(caught.value) == ("splitlog.dev/User", "")
    assert other.name not in caught.value.details()
    assert _get(stub, user.name) == user


def test_update_user_look_alike_email_taken(stub):
    tag = uuid.uuid4().hex[:8]
    create_user(stub, email=f"straße.{tag}@example.com")
    user = create_user(stub)

    with pytest.raises(grpc.RpcError) as caught:
        _update(stub, pb.User(name=user.name, email=f"STRASSE.{tag}@ｅxample.com"))

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "EMAIL_TAKEN"
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


# Migration 0002: the email key becomes NFKC, casefold, NFKC


_VERSION_TABLE = "alembic_version_user_service"
_USER_COLUMNS = (
    "id",
    "email",
    "email_normalised",
    "display_name",
    "display_name_normalised",
    "currency_code",
    "state",
    "create_time",
    "update_time",
    "version",
)
_OLD_EMAILS = [
    "Ana@Example.com",
    "ben@example.com",
    "straße@x.com",
    "ｂｅｎ@example.com",
    "STRASSE@x.com",
    "ＣＡＲＬ@example.com",
]


def _migrate(engine, command_name: str, revision: str) -> None:
    """Run one Alembic command on the user service's migrations."""
    run_alembic(engine, MIGRATIONS_DIR, _VERSION_TABLE, command_name, revision)


def _insert_users_at_0001(engine, emails: list[str]) -> list[str]:
    """Insert users as revision 0001 keyed them, one second apart."""
    users = sa.table("users", *(sa.column(name) for name in _USER_COLUMNS))
    start = datetime(2026, 1, 1)
    rows = [
        {
            "id": f"old-user-{index}",
            "email": email,
            "email_normalised": unicodedata.normalize("NFC", email).lower(),
            "display_name": f"Old {index}",
            "display_name_normalised": f"old {index}",
            "currency_code": "USD",
            "state": "ACTIVE",
            "create_time": start + timedelta(seconds=index),
            "update_time": start + timedelta(seconds=index),
            "version": 1,
        }
        for index, email in enumerate(emails)
    ]
    with engine.begin() as connection:
        connection.execute(users.insert(), rows)
    return [row["id"] for row in rows]


def _keys(engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, email_normalised FROM users"))
        return dict(rows.all())


@pytest.fixture
def engine_at_0001(db_url):
    engine = create_engine(normalise_url(db_url))
    _migrate(engine, "upgrade", "0001")
    yield engine
    engine.dispose()


def test_migration_0002_recomputes_email_keys(engine_at_0001, db_url, base_config):
    ids = _insert_users_at_0001(engine_at_0001, _OLD_EMAILS)

    upgrade(engine_at_0001, MIGRATIONS_DIR, _VERSION_TABLE)

    keys = _keys(engine_at_0001)
    assert keys[ids[0]] == "ana@example.com"
    assert keys[ids[1]] == "ben@example.com"
    assert keys[ids[2]] == "strasse@x.com"
    assert keys[ids[3]] == f"#{ids[3]}"
    assert keys[ids[4]] == f"#{ids[4]}"
    assert keys[ids[5]] == "carl@example.com"
    indexes = {
        index["name"]: index
        for index in sa.inspect(engine_at_0001).get_indexes("users")
    }
    assert indexes["uq_users_email_normalised"]["unique"]
    with pytest.raises(IntegrityError), engine_at_0001.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE users SET email_normalised = 'ben@example.com' WHERE id = :id"
            ),
            {"id": ids[0]},
        )

    host = build(base_config.replace(user_service_db_url=db_url), "127.0.0.1:0")
    channel, migrated = open_stub(host.port)
    try:
        with pytest.raises(grpc.RpcError) as taken:
            create_user(migrated, email="carl@EXAMPLE.com")
        found = _users_with_email(migrated, "ＢＥＮ@example.com")
        later_ben = _get(migrated, f"users/{ids[3]}")
    finally:
        channel.close()
        host.stop(0)

    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(taken.value) == "EMAIL_TAKEN"
    assert [user.name for user in found] == [f"users/{ids[1]}"]
    assert later_ben.email == "ｂｅｎ@example.com"


def test_migration_0002_downgrade_restores_old_keys(engine_at_0001):
    ids = _insert_users_at_0001(engine_at_0001, _OLD_EMAILS)
    upgrade(engine_at_0001, MIGRATIONS_DIR, _VERSION_TABLE)

    _migrate(engine_at_0001, "downgrade", "0001")

    keys = _keys(engine_at_0001)
    expected = {
        user_id: unicodedata.normalize("NFC", email).lower()
        for user_id, email in zip(ids, _OLD_EMAILS, strict=True)
    }
    assert keys == expected
