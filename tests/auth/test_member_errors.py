"""Errors that a member without `admin` gets, with auth on: settlements,
reports and deletes over the gateway's REST API, and a Splitwise import.

Real user, expense and balance services sit behind a real gateway with
`auth_required` on, as in `test_authorization`. Users sign up through the
gateway and send their access tokens with every request.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_cli.client.credentials import TOKEN_ENV
from splitlog_cli.main import main
from splitlog_cli.splitwise import identity
from tests.auth.support import operator_admin_key
from tests.auth.test_authorization import (
    TIMEOUT,
    Caller,
    Stack,
    _sign_up,
    _start_stack,
    _stop_stack,
)
from tests.splitwise.conftest import FIXTURES as SPLITWISE_FIXTURES

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.fixture(scope="module")
def stack(loop_thread, tmp_path_factory) -> Iterator[Stack]:
    started = _start_stack(loop_thread, tmp_path_factory.mktemp("rest"), True)
    yield started
    _stop_stack(loop_thread, started)


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.gateway.http_port}", timeout=TIMEOUT
    ) as client:
        yield client


def _headers(caller: Caller) -> dict[str, str]:
    return {"authorization": f"Bearer {caller.credential}"}


def _settlement(payer: Caller, payee: Caller, units: str, nanos: int = 0) -> dict:
    return {
        "payer": payer.user,
        "payee": payee.user,
        "creator": payer.user,
        "amount": {"currencyCode": "EUR", "units": units, "nanos": nanos},
        "settlementDate": {"year": 2024, "month": 6, "day": 1},
    }


def _post_settlement(
    http: httpx.Client, group: str, caller: Caller, body: dict, key: str
) -> httpx.Response:
    return http.post(
        f"/v1/{group}/settlements",
        params={"requestId": key},
        json=body,
        headers=_headers(caller),
    )


def _error(response: httpx.Response) -> tuple[dict, dict]:
    """Return the error of a response and its ErrorInfo detail."""
    error = response.json()["error"]
    infos = [d for d in error.get("details", []) if d["@type"] == ERROR_INFO]
    assert len(infos) == 1, error
    return error, infos[0]


def _violated_fields(error: dict) -> list[str]:
    found = [d for d in error.get("details", []) if d["@type"] == BAD_REQUEST]
    assert len(found) == 1, error
    return [violation["field"] for violation in found[0]["fieldViolations"]]


def _settlement_names(http: httpx.Client, group: str, caller: Caller) -> list[str]:
    listed = http.get(f"/v1/{group}/settlements", headers=_headers(caller))
    assert listed.status_code == 200, listed.text
    return [settlement["name"] for settlement in listed.json().get("settlements", [])]


def _group_of(*callers: Caller) -> str:
    group = callers[0].create_group()
    for caller in callers[1:]:
        callers[0].add_member(group, caller.user)
    return group


def test_settlement_key_reused_with_other_values(channel, http):
    ann, ben, cat = (_sign_up(channel, label) for label in ("ann", "ben", "cat"))
    group = _group_of(ann, ben, cat)
    key = str(uuid.uuid4())

    first = _post_settlement(
        http, group, ben, _settlement(ben, ann, "156", 980_000_000), key
    )
    resent = _post_settlement(
        http, group, ben, _settlement(ben, ann, "156", 980_000_000), key
    )
    smaller = _post_settlement(http, group, ben, _settlement(ben, ann, "1"), key)
    other_user = _post_settlement(http, group, ann, _settlement(ann, cat, "3"), key)

    assert first.status_code == 200, first.text
    assert resent.status_code == 200, resent.text
    assert resent.json() == first.json()
    for rejected in (smaller, other_user):
        assert rejected.status_code == 400, rejected.text
        error, info = _error(rejected)
        assert error["status"] == "INVALID_ARGUMENT"
        assert info["reason"] == "REQUEST_ID_REUSED"
        assert _violated_fields(error) == ["request_id"]
        assert key in error["message"]
        assert "Send a new UUID" in error["message"]
    assert _settlement_names(http, group, ann) == [first.json()["settlement"]["name"]]


def test_key_reused_across_groups_names_only_visible_group(channel, http):
    ann, ben, eve = (_sign_up(channel, label) for label in ("ann", "ben", "eve"))
    group = _group_of(ann, ben)
    key = str(uuid.uuid4())
    first = _post_settlement(http, group, ben, _settlement(ben, ann, "10"), key)
    assert first.status_code == 200, first.text
    eve_group = _group_of(eve, ann)
    ben_group = _group_of(ben, ann)

    hidden = _post_settlement(http, eve_group, eve, _settlement(eve, ann, "3"), key)
    named = _post_settlement(http, ben_group, ben, _settlement(ben, ann, "3"), key)

    assert hidden.status_code == 400, hidden.text
    error, info = _error(hidden)
    assert info["reason"] == "REQUEST_ID_REUSED"
    assert "in another group" in error["message"]
    assert group.removeprefix("groups/") not in hidden.text
    assert named.status_code == 400, named.text
    error, info = _error(named)
    assert info["reason"] == "REQUEST_ID_REUSED"
    assert f"in {group!r}" in error["message"]
    assert _settlement_names(http, eve_group, eve) == []
    assert _settlement_names(http, ben_group, ben) == []


@pytest.mark.parametrize(
    ("path", "params"),
    [("/report", {}), ("/balance:explain", {"user": "self"})],
    ids=["report", "explain"],
)
def test_missing_currency_code_is_required(channel, http, path, params):
    ann = _sign_up(channel, "ann")
    group = _group_of(ann)
    params = {
        key: ann.user if value == "self" else value for key, value in params.items()
    }

    response = http.get(f"/v1/{group}{path}", params=params, headers=_headers(ann))

    assert response.status_code == 400, response.text
    error, info = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert info["reason"] == "REQUIRED"
    assert _violated_fields(error) == ["currency_code"]
    assert "currency_code: is required" in error["message"]
    assert "'EUR'" in error["message"]
    assert "unknown currency" not in error["message"]


def test_delete_twice_succeeds_for_settlements_and_expenses(channel, http):
    ann, ben = _sign_up(channel, "ann"), _sign_up(channel, "ben")
    group = _group_of(ann, ben)
    expense = ann.create_expense(group, [ann.user, ben.user])
    created = _post_settlement(
        http, group, ben, _settlement(ben, ann, "15"), str(uuid.uuid4())
    )
    assert created.status_code == 200, created.text
    settlement = created.json()["settlement"]["name"]

    for name in (settlement, expense):
        first = http.delete(f"/v1/{name}", headers=_headers(ann))
        again = http.delete(f"/v1/{name}", headers=_headers(ann))

        assert first.status_code == 200, first.text
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        (deleted,) = first.json().values()
        assert deleted["deleteTime"]


def test_import_without_admin_reports_nothing_created(
    stack, channel, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    ann, root = _sign_up(channel, "ann"), _sign_up(channel, "root")
    path = SPLITWISE_FIXTURES / "current_flat.csv"
    group = f"groups/{identity.group_id(identity.file_digest(path.read_bytes()))}"

    status = main(
        ["import", "splitwise", str(path), "--token", ann.credential]
        + ["--gateway", f"127.0.0.1:{stack.gateway.grpc_port}"]
    )

    error = capsys.readouterr().err
    assert status == 1
    assert "while creating the users: PERMISSION_DENIED" in error
    assert "Nothing was created: neither the group nor any user exists yet." in error
    assert "stays in" not in error
    assert "run the same command again" in error
    _, secret = operator_admin_key(stack.data_dir, root.user)
    admin = Caller(channel, root.user, secret)
    with pytest.raises(grpc.RpcError) as missing:
        admin.users("GetGroup", users_pb.GetGroupRequest(name=group))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
