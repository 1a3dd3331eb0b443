"""Hostile HTTP requests against the REST front of a running `splitlog up`.

Every route of every public method gets malformed JSON, JSON of the wrong
type, unknown fields and the wrong content type. Huge bodies, unknown paths
and unknown methods are sent too. Each response must be a 4xx with a body in
the `google.rpc.Status` JSON shape, and never a 5xx.
"""

from __future__ import annotations

import re

import httpx
import pytest

from gateway.http_rules import HttpRoute, routes_for_method
from gateway.services import gateway_services, public_services
from tests.security.support import log_problems
from tests.system.conftest import start_splitlog, wait_for_health

pytestmark = pytest.mark.system

_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
JSON = {"content-type": "application/json"}


def _routes() -> list[HttpRoute]:
    services = [service.descriptor for service in public_services()]
    services += gateway_services()
    return [
        route
        for service in services
        for method in service.methods
        if not method.client_streaming
        for route in routes_for_method(method)
    ]


ROUTES = _routes()
BODY_ROUTES = [route for route in ROUTES if route.body]


def route_id(route: HttpRoute) -> str:
    return f"{route.http_method} {route.template.text}"


def concrete_path(route: HttpRoute) -> str:
    """Fill each path variable of the route with a name that exists nowhere."""

    def fill(match: re.Match[str]) -> str:
        pattern = match.group(2) or "*"
        return pattern.replace("**", "none").replace("*", "none")

    return _VARIABLE.sub(fill, route.template.text)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    running = start_splitlog(tmp_path_factory.mktemp("rest"))
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.kill_everything()


@pytest.fixture(scope="module")
def client(system):
    with httpx.Client(base_url=system.http_url, timeout=30) as opened:
        yield opened


def assert_status_body(response: httpx.Response, expected: int | None = None) -> None:
    """Check for a 4xx response whose body is a google.rpc.Status in JSON."""
    context = f"{response.request.method} {response.request.url}: {response.text[:300]}"
    assert 400 <= response.status_code < 500, context
    if expected is not None:
        assert response.status_code == expected, context
    error = response.json()["error"]
    assert error["code"] == response.status_code, context
    assert isinstance(error["message"], str), context
    assert error["message"], context
    assert error["status"].isupper(), context


def _wrong_values(field) -> list:
    """JSON values that the protobuf JSON mapping rejects for `field`."""
    if field.is_repeated:
        return [{"x": 1}, "not a list", 5]
    kind = field.type
    if kind == field.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return ["yesterday", {"seconds": 1}, 5]
        if field.message_type.full_name == "google.protobuf.Duration":
            return ["ten minutes", [], 5]
        if field.message_type.full_name == "google.protobuf.FieldMask":
            return [5, [], {"paths": 1}]
        return [5, "text", [1, 2]]
    if kind == field.TYPE_STRING:
        return [5, [], {"a": 1}, True]
    if kind == field.TYPE_BOOL:
        return ["yes", 2, []]
    if kind == field.TYPE_ENUM:
        return ["NOT_A_VALUE", 1.5, {}]
    return ["many", 1.5, [], {}, "1e999"]


def _body_message(route: HttpRoute):
    descriptor = route.method.input_type
    if route.body == "*":
        return descriptor
    return descriptor.fields_by_name[route.body].message_type


@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_malformed_json_is_400(client, route):
    path = concrete_path(route)
    for body in (b'{"a": ', b"{'single': 1}", b"\xff\xfe", b"[1, 2", b"{}}", b"NaN"):
        response = client.request(route.http_method, path, content=body, headers=JSON)

        assert_status_body(response, 400)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_wrong_json_types_are_400(client, route):
    path = concrete_path(route)
    # JSON null is left out on purpose: it is the empty request message.
    for body in ([], "text", 5, True):
        response = client.request(route.http_method, path, json=body)

        assert_status_body(response, 400)
    for field in _body_message(route).fields:
        for value in _wrong_values(field):
            response = client.request(
                route.http_method, path, json={field.json_name: value}
            )

            assert_status_body(response, 400)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_unknown_body_field_is_400(client, route):
    path = concrete_path(route)
    response = client.request(
        route.http_method, path, json={"noSuchField": 1, "__proto__": {}}
    )

    assert_status_body(response, 400)
    assert "noSuchField" in response.json()["error"]["message"]


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_unknown_query_parameter_is_400(client, route):
    path = concrete_path(route)
    response = client.request(
        route.http_method, path, params={"noSuchParameter": "1"}, headers=JSON
    )

    assert_status_body(response, 400)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/xml",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "application/x-protobuf",
        "image/png",
    ],
)
def test_wrong_content_type_is_415(client, content_type):
    body = b'{"email": "ctype@example.com", "displayName": "Ctype"}'

    response = client.post(
        "/v1/users", content=body, headers={"content-type": content_type}
    )

    assert_status_body(response, 415)
    assert content_type.split(";")[0] in response.json()["error"]["message"]


def test_json_content_types_accepted(client):
    for index, content_type in enumerate(
        ["application/json", "application/json; charset=utf-8", None]
    ):
        body = f'{{"email": "ok{index}@example.com", "displayName": "Ok"}}'
        headers = {"content-type": content_type} if content_type else {}

        response = client.post("/v1/users", content=body.encode(), headers=headers)

        assert response.status_code == 200, response.text


@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
def test_huge_body_is_4xx(client, route):
    body = b'{"description": "' + b"x" * (10 * 1024 * 1024) + b'"}'

    response = client.request(
        route.http_method, concrete_path(route), content=body, headers=JSON
    )

    assert_status_body(response)


def test_body_over_message_limit_is_413(client):
    # The gateway's limit is the max_message_bytes setting, 16 MiB by default.
    body = b'{"displayName": "' + b"x" * (17 * 1024 * 1024) + b'"}'

    response = client.post("/v1/users", content=body, headers=JSON)

    assert_status_body(response, 413)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v2/users",
        "/v1/users/a/b/c/d/e",
        "/v1/users/%00",
        "/v1/users/..%2f..%2fetc%2fpasswd",
        "/v1/../../etc/passwd",
        "/v1/" + "a" * 8000,
        "/v1/users:nosuchverb",
        "/v1/ユーザー",
        "/.env",
    ],
)
def test_unknown_path_is_404(client, path):
    response = client.get(path)

    assert_status_body(response)
    assert response.status_code in (400, 404)


@pytest.mark.parametrize("method", ["PUT", "TRACE", "PROPFIND", "CONNECT", "BREW"])
def test_unknown_method_is_405(client, method):
    response = client.request(method, "/v1/users")

    assert_status_body(response, 405)
    assert "Allow" in response.headers


def test_rest_system_healthy_after_attacks(system, client):
    wait_for_health(system.grpc_address, timeout=10)

    assert system.process.poll() is None
    assert log_problems(system.log()) == []
