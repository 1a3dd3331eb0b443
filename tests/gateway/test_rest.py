"""The REST front end to end: HTTP client → gateway → real user service."""

from __future__ import annotations

import gzip
import json
import uuid

import httpx
import pytest

from balance_service.app import build as build_balance_service
from gateway.app import build
from gateway.rest import MAX_TIMEOUT_SECONDS, parse_timeout
from splitlog_runtime import config as config_module
from tests.balance_service.support import LedgerPeer
from tests.ports import closed_address
from user_service.app import build as build_user_service

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.fixture(scope="module")
def balances_host(tmp_path_factory):
    """The balance service that the user service asks before removing a member.

    An empty `LedgerPeer` replaces expense_service, because CheckSettled
    requests the ledger position from it.
    """
    peer = LedgerPeer()
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("balances"),
            "expense_service_addr": peer.address,
            # No user_service runs for it here. A closed port, not the
            # default one, keeps it away from a system on the default ports.
            "user_service_addr": closed_address(),
            "workers": 4,
        },
    )
    host = build_balance_service(config, "127.0.0.1:0")
    yield host
    host.stop(0)
    peer.stop()


@pytest.fixture(scope="module")
def users_host(tmp_path_factory, balances_host):
    data = tmp_path_factory.mktemp("users")
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": data,
            "user_service_db_url": f"sqlite:///{data / 'users.db'}",
            "balance_service_addr": f"127.0.0.1:{balances_host.port}",
            "workers": 8,
        },
    )
    host = build_user_service(config, "127.0.0.1:0")
    yield host
    host.stop(0)


@pytest.fixture(scope="module")
def gateway(loop_thread, users_host, tmp_path_factory):
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("gateway"),
            "user_service_addr": f"127.0.0.1:{users_host.port}",
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
            "grace_seconds": 1.0,
        },
    )
    running = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(
        base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=10
    ) as opened:
        yield opened


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def _create_user(client, display_name: str = "Ada") -> dict:
    response = client.post(
        "/v1/users", json={"email": _email(), "displayName": display_name}
    )
    assert response.status_code == 200, response.text
    return response.json()["user"]


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def _detail(error: dict, type_url: str) -> dict:
    matches = [d for d in error.get("details", []) if d["@type"] == type_url]
    assert matches, f"no {type_url} in {error}"
    return matches[0]


def test_create_user(client):
    email = _email()

    response = client.post(
        "/v1/users",
        json={"email": email, "displayName": "Ada", "currencyCode": "EUR"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    user = response.json()["user"]
    assert user["name"].startswith("users/")
    assert user["email"] == email
    assert user["displayName"] == "Ada"
    assert user["currencyCode"] == "EUR"
    assert user["state"] == "STATE_ACTIVE"
    assert user["createTime"].endswith("Z")


def test_create_user_with_query_id(client):
    user_id = f"u-{uuid.uuid4().hex[:12]}"

    response = client.post(
        f"/v1/users?userId={user_id}",
        json={"email": _email(), "display_name": "Original Names"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["user"]["name"] == f"users/{user_id}"
    assert response.json()["user"]["displayName"] == "Original Names"


def test_get_user(client):
    created = _create_user(client)

    response = client.get(f"/v1/{created['name']}")

    assert response.status_code == 200
    assert response.json()["user"] == created


def test_list_users_pages(client):
    names = {_create_user(client)["name"] for _ in range(3)}
    seen: list[str] = []
    token = ""

    for _ in range(50):
        params = {"pageSize": "2"}
        if token:
            params["pageToken"] = token
        response = client.get("/v1/users", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page.get("users", [])) <= 2
        seen += [user["name"] for user in page.get("users", [])]
        token = page.get("nextPageToken", "")
        if not token:
            break

    assert names <= set(seen)
    assert len(seen) == len(set(seen))


def test_list_users_filter_with_original_name(client):
    created = _create_user(client, display_name="Filterable Person")

    response = client.get(
        "/v1/users",
        params={"filter": f'email = "{created["email"]}"', "page_size": "10"},
    )

    assert response.status_code == 200, response.text
    assert [u["name"] for u in response.json()["users"]] == [created["name"]]


def test_update_user_with_mask(client):
    created = _create_user(client)

    response = client.patch(
        f"/v1/{created['name']}?updateMask=displayName",
        json={"displayName": "Renamed", "email": "ignored@example.com"},
    )

    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert user["displayName"] == "Renamed"
    assert user["email"] == created["email"]


def test_update_user_snake_case_mask(client):
    created = _create_user(client)

    response = client.patch(
        f"/v1/{created['name']}",
        params={"update_mask": "display_name"},
        json={"displayName": "Snake"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["user"]["displayName"] == "Snake"


@pytest.mark.parametrize(
    ("mask", "index"), [(",,displayName", 0), ("displayName,", 1), (",", 0)]
)
def test_update_mask_empty_path_400(client, mask, index):
    created = _create_user(client)

    response = client.patch(
        f"/v1/{created['name']}?updateMask={mask}", json={"displayName": "B"}
    )

    assert response.status_code == 400, response.text
    error = _error(response)
    field = f"update_mask.paths[{index}]"
    assert error["message"].startswith(f"{field}: is empty; ")
    violations = _detail(error, BAD_REQUEST)["fieldViolations"]
    assert violations[0]["field"] == field
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_UPDATE_MASK"


def test_deactivate_custom_verb(client):
    created = _create_user(client)

    response = client.post(f"/v1/{created['name']}:deactivate")

    assert response.status_code == 200, response.text
    assert response.json()["user"]["state"] == "STATE_DEACTIVATED"


def test_deactivate_stale_etag_conflict(client):
    created = _create_user(client)

    response = client.post(f"/v1/{created['name']}:deactivate", json={"etag": '"999"'})

    assert response.status_code == 409
    error = _error(response)
    assert error["status"] == "ABORTED"
    assert _detail(error, ERROR_INFO)["reason"] == "ETAG_MISMATCH"


def test_get_sends_etag_header(client):
    created = _create_user(client)

    response = client.get(f"/v1/{created['name']}")

    assert response.status_code == 200
    assert response.headers["ETag"] == response.json()["user"]["etag"]
    assert response.headers["ETag"].startswith('"')


def test_list_sends_no_etag_header(client):
    _create_user(client)

    response = client.get("/v1/users")

    assert response.status_code == 200
    assert "ETag" not in response.headers


def test_writes_send_etag_header(client):
    created = client.post("/v1/users", json={"email": _email(), "displayName": "A"})
    name = created.json()["user"]["name"]

    renamed = client.patch(
        f"/v1/{name}?updateMask=displayName", json={"displayName": "B"}
    )
    deactivated = client.post(
        f"/v1/{name}:deactivate",
        headers={"If-Match": renamed.headers.get("ETag", "*")},
    )

    # A create's path names the collection, not the user that it returns.
    assert created.status_code == 200, created.text
    assert "ETag" not in created.headers
    assert renamed.status_code == 200, renamed.text
    assert renamed.headers["ETag"] == renamed.json()["user"]["etag"]
    assert deactivated.status_code == 200, deactivated.text
    assert deactivated.headers["ETag"] == deactivated.json()["user"]["etag"]
    assert deactivated.headers["ETag"] != renamed.headers["ETag"]


def test_patch_if_match_stale_409(client):
    created = _create_user(client)
    stale = created["etag"]
    renamed = client.patch(
        f"/v1/{created['name']}?updateMask=displayName", json={"displayName": "B"}
    )
    assert renamed.status_code == 200, renamed.text

    response = client.patch(
        f"/v1/{created['name']}?updateMask=displayName",
        json={"displayName": "C"},
        headers={"If-Match": stale},
    )

    assert response.status_code == 409, response.text
    error = _error(response)
    assert error["status"] == "ABORTED"
    assert _detail(error, ERROR_INFO)["reason"] == "ETAG_MISMATCH"


def test_patch_if_match_never_issued_409(client):
    created = _create_user(client)

    response = client.patch(
        f"/v1/{created['name']}?updateMask=displayName",
        json={"displayName": "C"},
        headers={"If-Match": '"9"'},
    )

    assert response.status_code == 409, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "ETAG_MISMATCH"
    assert "stale" not in error["message"]
    assert "has changed" not in error["message"]
    assert (
        f'user.etag "9" does not match the current etag {created["etag"]}'
        in error["message"]
    )
    assert "ETag header of a REST GET" in error["message"]


def test_patch_if_match_current_or_star(client):
    created = _create_user(client)
    etag = client.get(f"/v1/{created['name']}").headers["ETag"]

    current = client.patch(
        f"/v1/{created['name']}?updateMask=displayName",
        json={"displayName": "B"},
        headers={"If-Match": etag},
    )
    star = client.patch(
        f"/v1/{created['name']}?updateMask=displayName",
        json={"displayName": "C"},
        headers={"If-Match": "*"},
    )

    assert current.status_code == 200, current.text
    assert star.status_code == 200, star.text
    assert star.json()["user"]["displayName"] == "C"


def test_if_match_differs_from_body_400(client):
    created = _create_user(client)

    response = client.patch(
        f"/v1/{created['name']}?updateMask=displayName",
        json={"displayName": "B", "etag": created["etag"]},
        headers={"If-Match": '"999"'},
    )

    assert response.status_code == 400, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "ETAG_CONFLICT"
    assert error["message"].startswith("""If-Match: '"999"' differs from""")
    assert "user.etag" in error["message"]
    assert created["etag"] in error["message"]


def test_deactivate_if_match_stale_409(client):
    created = _create_user(client)

    response = client.post(
        f"/v1/{created['name']}:deactivate", headers={"If-Match": '"999"'}
    )

    assert response.status_code == 409, response.text
    assert _detail(_error(response), ERROR_INFO)["reason"] == "ETAG_MISMATCH"


def _rename(client, name: str, if_match) -> httpx.Response:
    """PATCH a user's display name with the given If-Match header or headers."""
    headers = [("If-Match", value) for value in if_match]
    return client.patch(
        f"/v1/{name}?updateMask=displayName",
        json={"displayName": "B"},
        headers=headers,
    )


def test_if_match_weak_tag_409(client):
    created = _create_user(client)

    response = _rename(client, created["name"], ["W/" + created["etag"]])

    # A weak tag never matches, even one equal to the current etag.
    assert response.status_code == 409, response.text
    error = _error(response)
    assert error["status"] == "ABORTED"
    assert _detail(error, ERROR_INFO)["reason"] == "ETAG_MISMATCH"
    assert "If-Match" in error["message"]
    assert "weak" in error["message"]
    assert "user.etag" not in error["message"]


def test_if_match_list_of_one_tag(client):
    created = _create_user(client)
    etag = created["etag"]

    listed = _rename(client, created["name"], [f"W/{etag}, {etag}, {etag}"])
    repeated = _rename(client, created["name"], [listed.headers["ETag"]] * 2)

    assert listed.status_code == 200, listed.text
    assert repeated.status_code == 200, repeated.text


@pytest.mark.parametrize(
    "if_match", [['"1", "2"'], ['"1"', '"2"']], ids=["list", "headers"]
)
def test_if_match_two_tags_400(client, if_match):
    created = _create_user(client)

    response = _rename(client, created["name"], if_match)

    assert response.status_code == 400, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "IF_MATCH_LIST_UNSUPPORTED"
    assert _detail(error, BAD_REQUEST)["fieldViolations"][0]["field"] == "If-Match"
    assert "only one" in error["message"]


@pytest.mark.parametrize(
    ("suffix", "shown"),
    [(b"\xa0", "\\xa0"), (b"\xc2\x85", "\\xc2\\x85"), ("é".encode(), "\\xc3\\xa9")],
    ids=["nbsp", "nel", "utf8"],
)
def test_if_match_non_ascii_400(client, suffix, shown):
    created = _create_user(client)

    response = _rename(client, created["name"], [created["etag"].encode() + suffix])

    assert response.status_code == 400, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_ETAG"
    assert _detail(error, BAD_REQUEST)["fieldViolations"][0]["field"] == "If-Match"
    assert shown in error["message"]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/users"), ("POST", "/v1/groups")]
)
def test_if_match_without_etag_400(client, method, path):
    response = client.request(
        method, path, json={} if method == "POST" else None, headers={"If-Match": "*"}
    )

    assert response.status_code == 400, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "IF_MATCH_UNSUPPORTED"
    assert _detail(error, BAD_REQUEST)["fieldViolations"][0]["field"] == "If-Match"
    assert "PATCH, DELETE and POST actions such as :undelete" in error["message"]


def test_if_match_on_get_rejected(client):
    created = _create_user(client)

    response = client.get(
        f"/v1/{created['name']}", headers={"If-Match": created["etag"]}
    )

    assert response.status_code == 400, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "IF_MATCH_UNSUPPORTED"
    assert error["message"] == (
        "If-Match: applies to writes that change an existing resource (PATCH, "
        "DELETE and POST actions such as :undelete), not to reads; remove it "
        "from this GET, and send a resource's ETag in If-Match on the write "
        "that changes it"
    )


def test_group_member_routes(client):
    creator = _create_user(client)
    other = _create_user(client)
    group = client.post(
        "/v1/groups",
        json={"displayName": "Trip", "creator": creator["name"]},
    ).json()["group"]

    added = client.post(f"/v1/{group['name']}/members", json={"user": other["name"]})
    listed = client.get(f"/v1/{group['name']}/members")
    removed = client.delete(f"/v1/{added.json()['member']['name']}")

    assert added.status_code == 200, added.text
    assert listed.status_code == 200, listed.text
    members = {m["user"] for m in listed.json()["members"]}
    assert members == {creator["name"], other["name"]}
    assert removed.status_code == 200, removed.text
    assert removed.json() == {}


def test_not_found_error_shape(client):
    response = client.get("/v1/users/no-such-user")

    assert response.status_code == 404
    error = _error(response)
    assert error["code"] == 404
    assert error["status"] == "NOT_FOUND"
    assert "users/no-such-user" in error["message"]
    info = _detail(error, ERROR_INFO)
    assert info["reason"] == "USER_NOT_FOUND"
    assert info["domain"] == "splitlog.dev"


def test_invalid_argument_from_backend(client):
    response = client.post("/v1/users", json={"email": "not-an-email"})

    assert response.status_code == 400
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    violations = _detail(error, BAD_REQUEST)["fieldViolations"]
    assert {v["field"] for v in violations} >= {"user.email", "user.display_name"}


def test_already_exists_conflict(client):
    created = _create_user(client)

    response = client.post(
        "/v1/users", json={"email": created["email"], "displayName": "Twin"}
    )

    assert response.status_code == 409
    error = _error(response)
    assert error["status"] == "ALREADY_EXISTS"
    assert _detail(error, ERROR_INFO)["reason"] == "EMAIL_TAKEN"


def test_malformed_json(client):
    response = client.post(
        "/v1/users", content=b'{"email": ', headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert "not valid JSON" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "MALFORMED_JSON"


@pytest.mark.parametrize(
    "body",
    [
        # Deep enough to exhaust the JSON decoder's recursion.
        b"[" * 100_000,
        # Parses, but nests far deeper than any message of the API.
        b'{"email": "deep@example.com", "displayName": '
        + b'{"a": ' * 150
        + b"1"
        + b"}" * 150
        + b"}",
    ],
    ids=["unparsable", "parsable"],
)
def test_deeply_nested_body(client, body):
    response = client.post(
        "/v1/users", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert "more than 100 levels deep" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "MALFORMED_JSON"


def test_depth_limit_checked_before_decoding(client):
    # Decodable, and the repeated key would be found if it were decoded.
    deep = b'{"a": ' * 500 + b'{"b": 1, "b": 2}' + b"}" * 500
    # Brackets inside a string nest nothing: this body nests one level.
    bracketed = json.dumps({"email": _email(), "displayName": "[{" * 50})

    too_deep = client.post(
        "/v1/users", content=deep, headers={"content-type": "application/json"}
    )
    accepted = client.post(
        "/v1/users", content=bracketed, headers={"content-type": "application/json"}
    )

    assert too_deep.status_code == 400, too_deep.text
    error = _error(too_deep)
    assert _detail(error, ERROR_INFO)["reason"] == "MALFORMED_JSON"
    assert "more than 100 levels deep" in error["message"]
    assert accepted.status_code == 200, accepted.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/users", '{"displayName":"a","displayName":"b"}', "user.display_name"),
        (
            "/v1/groups/g1/expenses",
            '{"description":"x","total":{"currencyCode":"EUR",'
            '"units":"1","units":"1000"}}',
            "expense.total.units",
        ),
        (
            "/v1/groups/g1/expenses",
            '{"splits":[{"user":"users/a"},{"user":"users/b","user":"users/c"}]}',
            "expense.splits[1].user",
        ),
        (
            # The later "total" replaces the object with the repeated key.
            "/v1/groups/g1/expenses",
            '{"total":{"units":"1","units":"2"},"total":{}}',
            "expense.total.units",
        ),
    ],
)
def test_duplicate_json_key_rejected(client, path, body, field):
    response = client.post(
        path, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert _detail(error, ERROR_INFO)["reason"] == "DUPLICATE_FIELD"
    violation = _detail(error, BAD_REQUEST)["fieldViolations"][0]
    assert violation["field"] == field


def test_unknown_body_field(client):
    response = client.post(
        "/v1/users", json={"email": _email(), "displayName": "A", "nickname": "x"}
    )

    assert response.status_code == 400
    error = _error(response)
    assert "nickname" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "UNKNOWN_FIELD"
    violation = _detail(error, BAD_REQUEST)["fieldViolations"][0]
    assert violation["field"] == "user.nickname"


def test_unknown_query_parameter(client):
    response = client.get("/v1/users", params={"pageSise": "2"})

    assert response.status_code == 400
    error = _error(response)
    assert "pageSise" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "UNKNOWN_FIELD"


def test_query_parameter_wrong_type(client):
    response = client.get("/v1/users", params={"pageSize": "ten"})

    assert response.status_code == 400
    error = _error(response)
    assert "'ten' is not an integer" in error["message"]
    assert _detail(error, BAD_REQUEST)["fieldViolations"][0]["field"] == "page_size"


def test_path_body_mismatch(client):
    created = _create_user(client)

    response = client.patch(
        f"/v1/{created['name']}",
        json={"name": "users/someone-else", "displayName": "X"},
    )

    assert response.status_code == 400
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "PATH_BODY_MISMATCH"


def test_unknown_route(client):
    response = client.get("/v2/nothing/here")

    assert response.status_code == 404
    error = _error(response)
    assert error["status"] == "NOT_FOUND"
    assert _detail(error, ERROR_INFO)["reason"] == "ROUTE_NOT_FOUND"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/logs/stats", "GET /logs/stats"),
        ("/clusterStatus", "GET /v1/clusterStatus"),
    ],
)
def test_unknown_route_hints_v1_prefix(client, path, expected):
    response = client.get(path)

    assert response.status_code == 404
    error = _error(response)
    assert f"did you mean {expected}?" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "ROUTE_NOT_FOUND"


def test_wrong_method(client):
    response = client.put("/v1/users")

    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
    error = _error(response)
    assert error["code"] == 405
    assert error["status"] == "INVALID_ARGUMENT"
    assert _detail(error, ERROR_INFO)["reason"] == "METHOD_NOT_ALLOWED"


def test_unsupported_media_type_415(client):
    response = client.post(
        "/v1/users", content=b"<user/>", headers={"content-type": "application/xml"}
    )

    assert response.status_code == 415
    error = _error(response)
    assert error["code"] == 415
    assert error["status"] == "INVALID_ARGUMENT"
    assert _detail(error, ERROR_INFO)["reason"] == "UNSUPPORTED_MEDIA_TYPE"


def test_form_content_type_read_as_json(client):
    # What `curl -d hello` sends: the form type is read as JSON, so not 415.
    response = client.post(
        "/v1/users",
        content=b"hello",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 400
    assert _detail(_error(response), ERROR_INFO)["reason"] == "MALFORMED_JSON"


def test_unusual_http_method_json_405(client):
    response = client.request("OPTIONS", "/v1/users")

    assert response.status_code == 405
    assert _detail(_error(response), ERROR_INFO)["reason"] == "METHOD_NOT_ALLOWED"


def test_head_served_like_get(client):
    created = _create_user(client)

    response = client.head(f"/v1/{created['name']}")

    assert response.status_code == 200
    assert response.content == b""


def test_non_ascii_path_json_404(client):
    response = client.get("/v1/caf\u00e9/x")

    assert response.status_code == 404
    assert _error(response)["status"] == "NOT_FOUND"


def test_body_over_limit_413(loop_thread, gateway):
    config = gateway.config.replace(max_message_bytes=1024)
    small = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        response = httpx.post(
            f"http://127.0.0.1:{small.http_port}/v1/users",
            json={"email": _email(), "displayName": "x" * 2000},
            timeout=10,
        )
    finally:
        loop_thread.run(small.stop(0))

    assert response.status_code == 413
    error = _error(response)
    assert error["code"] == 413
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert "max_message_bytes" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "REQUEST_TOO_LARGE"


def test_unreachable_backend_503(client):
    response = client.get("/v1/groups/g123/expenses")

    assert response.status_code == 503
    error = _error(response)
    assert error["status"] == "UNAVAILABLE"
    assert "expense_service" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "BACKEND_UNAVAILABLE"


def test_gateway_service_route_reaches_backends(client):
    response = client.get("/v1/groups/g123/overview")

    assert response.status_code == 404
    error = _error(response)
    assert error["status"] == "NOT_FOUND"
    assert _detail(error, ERROR_INFO)["reason"] == "GROUP_NOT_FOUND"


def test_invalid_timeout_header(client):
    response = client.get("/v1/users", headers={"grpc-timeout": "soon"})

    assert response.status_code == 400
    assert _detail(_error(response), ERROR_INFO)["reason"] == "INVALID_TIMEOUT"


@pytest.mark.parametrize("header", ["99999999H", "9999999H", "99999999S"])
def test_huge_timeout_header_clamped(client, header):
    response = client.get("/v1/users", headers={"grpc-timeout": header})

    assert response.status_code == 200, response.text


def test_parse_timeout_clamps_to_maximum():
    assert parse_timeout("500m") == 0.5
    assert parse_timeout("60M") == 3600.0
    assert parse_timeout("61M") == MAX_TIMEOUT_SECONDS
    assert parse_timeout("99999999H") == MAX_TIMEOUT_SECONDS


@pytest.mark.parametrize(
    ("body", "received"),
    [
        (b'"str"', 'the string "str"'),
        (b"[1,2]", "an array of 2 items"),
        (b"42", "the number 42"),
        (b"null", "null"),
    ],
)
@pytest.mark.parametrize(
    ("path", "field"), [("/v1/users", "user"), ("/v1/users/u1:deactivate", "body")]
)
def test_body_not_json_object_400(client, body, received, path, field):
    response = client.post(
        path, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert "request body must be a JSON object" in error["message"]
    assert received in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "BODY_NOT_OBJECT"
    violation = _detail(error, BAD_REQUEST)["fieldViolations"][0]
    assert violation["field"] == field


def test_wrong_timestamp_names_field_and_format(client):
    response = client.post(
        "/v1/users",
        json={"email": _email(), "displayName": "A", "createTime": "yesterday"},
    )

    assert response.status_code == 400, response.text
    error = _error(response)
    assert "user.create_time" in error["message"]
    assert "RFC 3339" in error["message"]
    assert "does not match format" not in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_FIELD_VALUE"
    violation = _detail(error, BAD_REQUEST)["fieldViolations"][0]
    assert violation["field"] == "user.create_time"


@pytest.mark.parametrize(
    ("url", "parameter", "field", "bad"),
    [
        ("/logs?services=k-spark&keyword=%FF%FE", "keyword", "keyword", "%FF"),
        ("/logs?services=%C3", "services", "services", "%C3"),
        ("/logs?keyword=%ED%A0%80", "keyword", "keyword", "%ED"),
        ("/logs/stats?services=a%E9b", "services", "services", "%E9"),
        ("/v1/users?pageToken=%C0%AF", "pageToken", "page_token", "%C0"),
    ],
)
def test_query_invalid_utf8_rejected(client, url, parameter, field, bad):
    response = client.get(url)

    assert response.status_code == 400
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert f"query parameter {parameter!r} is not valid UTF-8" in error["message"]
    assert f"the bytes {bad}" in error["message"]
    assert "percent-encode the text as UTF-8" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_UTF8"
    assert _detail(error, BAD_REQUEST)["fieldViolations"][0]["field"] == field


def test_query_utf8_value_decoded(client):
    response = client.get("/v1/users?page%53ize=%C3%A9+1")

    assert response.status_code == 400
    error = _error(response)
    assert "'é 1' is not an integer" in error["message"]
    assert _detail(error, BAD_REQUEST)["fieldViolations"][0]["field"] == "page_size"


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/v1/users", r'{"email": "a\ud800@example.com"}', "user.email"),
        (
            # An entry with one is rejected on its own, a request field not.
            "/logs/batch",
            r'{"entries": [{"service": "s"}], "requestId": "\udfff"}',
            "request_id",
        ),
        (
            "/logs",
            r'{"service": "s", "attributes": {"k\udbff": "v"}}',
            "entry.attributes",
        ),
    ],
)
def test_body_lone_surrogate_rejected(client, url, body, field):
    response = client.post(
        url, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith(f"{field}: ")
    assert "is not valid Unicode" in error["message"]
    assert "send the character itself in UTF-8" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_UNICODE"
    assert _detail(error, BAD_REQUEST)["fieldViolations"][0]["field"] == field


@pytest.mark.parametrize("segment", ["%FF", "ab%C3", "%ED%A0%80"])
def test_path_invalid_utf8_rejected(client, segment):
    response = client.get(f"/v1/users/{segment}")

    assert response.status_code == 400
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert (
        f"the path segment 'users/{segment}' is not valid UTF-8" in (error["message"])
    )
    assert "percent-encode the text as UTF-8" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_UTF8"
    assert _detail(error, BAD_REQUEST)["fieldViolations"][0]["field"] == "name"


def test_path_utf8_decoded(client):
    response = client.get("/v1/users/z%C3%B6e")

    assert response.status_code == 400, response.text
    error = _error(response)
    assert "contains the invalid id 'z\u00f6e'" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_RESOURCE_NAME"


@pytest.mark.parametrize(
    ("body", "literal", "field"),
    [
        (b'{"email": "a@example.com", "displayName": NaN}', "NaN", "user.display_name"),
        (b'{"displayName": "A", "extra": [1, Infinity]}', "Infinity", "user.extra[1]"),
        (b"-Infinity", "-Infinity", "user"),
    ],
)
def test_json_nan_literal_malformed(client, body, literal, field):
    response = client.post(
        "/v1/users", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert "not valid JSON" in error["message"]
    assert f"{literal} at {field}" in error["message"]
    assert "got the number" not in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "MALFORMED_JSON"


@pytest.mark.parametrize("header", ["0S", "00000000m", "0n", "123456789S", "1s"])
def test_zero_or_malformed_timeout_400(client, header):
    response = client.get("/v1/users", headers={"grpc-timeout": header})

    assert response.status_code == 400, response.text
    error = _error(response)
    assert "grpc-timeout" in error["message"]
    assert "positive integer" in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_TIMEOUT"


@pytest.mark.parametrize("values", [("1S", "20S"), ("5S", "5S"), ("1n", "2S")])
def test_repeated_timeout_header_400(client, values):
    headers = [("grpc-timeout", value) for value in values]

    response = client.get("/v1/users", headers=headers)

    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert "grpc-timeout header is sent 2 times" in error["message"]
    assert f"('{values[0]}', '{values[1]}')" in error["message"]
    assert "send it once" in error["message"]
    info = _detail(error, ERROR_INFO)
    assert info["reason"] == "INVALID_TIMEOUT"
    assert info["metadata"]["header"] == "grpc-timeout"
    assert info["metadata"]["values"] == f"{values[0]}, {values[1]}"


@pytest.mark.parametrize("header", ["1n", "1u"])
def test_timeout_expired_before_call_504(client, header):
    for _ in range(5):
        response = client.get("/v1/users", headers={"grpc-timeout": header})

        assert response.status_code == 504, response.text
        error = _error(response)
        assert error["status"] == "DEADLINE_EXCEEDED"
        assert f"grpc-timeout {header}" in error["message"]
        assert "expired before the gateway called" in error["message"]
        assert "did not answer" not in error["message"]
        reason = _detail(error, ERROR_INFO)["reason"]
        assert reason == "DEADLINE_EXPIRED_BEFORE_CALL"


@pytest.mark.parametrize("value", ["99999999999", "-2147483649"])
def test_query_integer_out_of_range(client, value):
    response = client.get("/v1/users", params={"pageSize": value})

    assert response.status_code == 400, response.text
    error = _error(response)
    assert (
        f"{value} is out of range for query parameter 'pageSize'" in (error["message"])
    )
    assert "use an integer from 0 to 2147483647;" in error["message"]
    assert "lowered to it" in error["message"]
    assert "-2147483648" not in error["message"]
    assert "JSON" not in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_FIELD_VALUE"


def test_query_not_integer_names_range(client):
    response = client.get("/v1/users", params={"pageSize": "ten"})

    error = _error(response)
    assert "set query parameter 'pageSize' to an integer" in error["message"]
    assert "from 0 to 2147483647" in error["message"]


@pytest.mark.parametrize("coding", ["gzip", "br", "identity, gzip"])
def test_content_encoding_415(client, coding):
    body = gzip.compress(json.dumps({"email": _email(), "displayName": "Z"}).encode())

    response = client.post(
        "/v1/users",
        content=body,
        headers={"content-type": "application/json", "content-encoding": coding},
    )

    assert response.status_code == 415, response.text
    assert response.headers["accept-encoding"] == "identity"
    error = _error(response)
    assert error["code"] == 415
    assert error["status"] == "INVALID_ARGUMENT"
    assert "POST /v1/users" in error["message"]
    assert "only POST /v1/logs accepts gzip" in error["message"]
    assert "UTF-8" not in error["message"]
    assert _detail(error, ERROR_INFO)["reason"] == "UNSUPPORTED_CONTENT_ENCODING"


def test_identity_content_encoding_accepted(client):
    response = client.post(
        "/v1/users",
        json={"email": _email(), "displayName": "Plain"},
        headers={"content-encoding": "identity"},
    )

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        (
            "POST",
            "/v1/groups/g1/expenses",
            {"split": {"participants": [{"basisPoints": "half"}]}},
            "expense.split.participants[0].basis_points",
        ),
        (
            "POST",
            "/v1/groups/g1/expenses",
            {"expenseDate": {"year": "soon"}},
            "expense.expense_date.year",
        ),
        ("GET", "/v1/users?pageSize=ten", None, "page_size"),
        ("GET", "/v1/users?page_size=ten", None, "page_size"),
        ("POST", "/v1/users", {"email": "x@example.com"}, "user.display_name"),
    ],
)
def test_error_paths_use_proto_names(client, method, url, body, field):
    response = client.request(method, url, json=body)

    assert response.status_code == 400, response.text
    error = _error(response)
    fields = [v["field"] for v in _detail(error, BAD_REQUEST)["fieldViolations"]]
    assert field in fields
    assert f"{field}: " in error["message"]


@pytest.mark.parametrize(
    ("participants", "field", "members"),
    [
        (
            [{"user": "users/a", "basisPoints": 5000, "shares": 1}],
            "expense.split.participants[0]",
            "both basis_points and shares",
        ),
        (
            [
                {"user": "users/a", "shares": 1},
                {"user": "users/b", "exact_amount": {"units": "1"}, "shares": 1},
            ],
            "expense.split.participants[1]",
            "both exact_amount and shares",
        ),
        (
            [
                {
                    "user": "users/a",
                    "exactAmount": {"units": "1"},
                    "basis_points": 5000,
                    "shares": 1,
                },
            ],
            "expense.split.participants[0]",
            "exact_amount, basis_points and shares",
        ),
    ],
)
def test_oneof_members_all_named(client, participants, field, members):
    body = {"split": {"type": "SPLIT_TYPE_MIXED", "participants": participants}}

    response = client.post("/v1/groups/g1/expenses", json=body)

    assert response.status_code == 400, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "MULTIPLE_ONEOF_FIELDS"
    (violation,) = _detail(error, BAD_REQUEST)["fieldViolations"]
    assert violation["field"] == field
    assert error["message"].startswith(f"{field}: sets {members}, which")
    assert (
        "give exactly one of exact_amount, basis_points or shares" in (error["message"])
    )


def test_oneof_null_member_not_counted(client):
    participant = {"user": "users/a", "basisPoints": 5000, "shares": None}
    body = {"split": {"type": "SPLIT_TYPE_MIXED", "participants": [participant]}}

    response = client.post("/v1/groups/g1/expenses", json=body)

    # The body passes the JSON checks and reaches expense_service, which is
    # not running here.
    assert response.status_code == 503, response.text


@pytest.mark.parametrize(
    ("units", "nanos", "fix"),
    [
        (10.5, None, "put the fraction in nanos: units 10, nanos 500000000"),
        ("-10.25", None, "put the fraction in nanos: units -10, nanos -250000000"),
        (0.0000000001, None, "at most 9 decimal digits"),
        (10.5, 250000000, "added to the nanos sent: units 10, nanos 750000000"),
        (10.5, 750000000, "added to the nanos sent: units 11, nanos 250000000"),
        ("-10.5", -750000000, "added to the nanos sent: units -11, nanos -250000000"),
        (-0.5, "-250000000", "added to the nanos sent: units 0, nanos -750000000"),
        (
            10.5,
            -250000000,
            "but they must have the same sign, so send the amount "
            "as whole units in units and the fraction in nanos",
        ),
        (
            10.5,
            1000000000,
            "must be from -999999999 to 999999999, but nanos is 1000000000",
        ),
        (
            10.5,
            0.5,
            "must be an integer number of billionths of a unit, but "
            "nanos is the number 0.5",
        ),
        (10.5, 1, "added to the nanos sent: units 10, nanos 500000001"),
        ("10.0000000001", 1, "holds at most 9 decimal digits"),
    ],
)
def test_money_units_fraction_says_fix(client, units, nanos, fix):
    body = {"total": {"currencyCode": "USD", "units": units, "nanos": nanos}}

    response = client.post("/v1/groups/g1/expenses", json=body)

    assert response.status_code == 400, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_FIELD_VALUE"
    assert error["message"].startswith("expense.total.units: expected an integer")
    assert error["message"].endswith(fix)


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        (3333.3, "33.33 % is 3333), so send 3333. "),
        ("2550.5", "so send 2550. "),
        (33.33, "so send 33, or 3333 if 33.33 is the percentage. "),
        (-0.5, "33.33 % is 3333), so send 0. "),
        (-7.5, "33.33 % is 3333). "),
    ],
)
def test_basis_points_fraction_says_fix(client, value, fix):
    participants = [
        {"user": "users/ann-1", "basisPoints": value},
        {"user": "users/ben-1"},
    ]
    body = {"split": {"type": "SPLIT_TYPE_PERCENTAGE", "participants": participants}}

    response = client.post("/v1/groups/g1/expenses", json=body)

    assert response.status_code == 400, response.text
    message = _error(response)["message"]
    field = "expense.split.participants[0].basis_points"
    assert message.startswith(f"{field}: expected an integer from ")
    assert "basis_points is hundredths of a percent, a whole number from 0" in message
    assert fix in message


@pytest.mark.parametrize(
    ("units", "plain"),
    [("1e3", "1000"), ("10.0", "10"), ("+1000", "1000"), ("-2E1", "-20")],
)
def test_money_units_string_must_be_plain(client, units, plain):
    body = {"total": {"currencyCode": "USD", "units": units}}

    response = client.post("/v1/groups/g1/expenses", json=body)

    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_FIELD_VALUE"
    (violation,) = _detail(error, BAD_REQUEST)["fieldViolations"]
    assert violation["field"] == "expense.total.units"
    assert error["message"].startswith(
        "expense.total.units: expected a plain integer string of whole units, "
        f'got the string "{units}"'
    )
    assert error["message"].endswith(f'such as "{plain}"')


@pytest.mark.parametrize("units", ["1000", "-25", "0", 1000, 1e3])
def test_money_units_plain_forms_pass_check(client, units):
    body = {"total": {"currencyCode": "USD", "units": units}}

    response = client.post("/v1/groups/g1/expenses", json=body)

    # The JSON checks pass, so the call goes on to expense_service, which is
    # not running here.
    assert response.status_code == 503, response.text


def _post_units_text(client, units: str) -> httpx.Response:
    """POST an expense whose total.units is the raw JSON text `units`."""
    body = '{"total": {"currencyCode": "USD", "units": ' + units + "}}"
    return client.post(
        "/v1/groups/g1/expenses",
        content=body.encode(),
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize("units", ["1e1", "1E1", "10.0", "10.000", "-2E1", "1.5e1"])
def test_money_units_integral_number_passes_check(client, units):
    response = _post_units_text(client, units)

    # The gateway reads an integral JSON number as an integer, as protobuf's
    # JSON mapping does. The call thus goes on to expense_service, which is
    # not running here.
    assert response.status_code == 503, response.text


@pytest.mark.parametrize("units", ["10.5", "1.05e1", "1e-1"])
def test_money_units_fractional_number_rejected(client, units):
    response = _post_units_text(client, units)

    assert response.status_code == 400, response.text
    error = _error(response)
    assert _detail(error, ERROR_INFO)["reason"] == "INVALID_FIELD_VALUE"
    assert error["message"].startswith("expense.total.units: expected an integer")


def test_money_units_fix_accepted_by_check(client):
    body = {"total": {"currencyCode": "USD", "units": 10, "nanos": 500000000}}

    response = client.post("/v1/groups/g1/expenses", json=body)

    # The JSON checks pass, so the call goes on to expense_service, which is
    # not running here.
    assert response.status_code == 503, response.text
