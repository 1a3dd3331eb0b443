"""Path templates, HTTP rules and the route table, without any server."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.http_rules import (
    MethodNotAllowed,
    RouteNotFound,
    RouteTable,
    TemplateError,
    parse_template,
    routes_for_method,
    split_path,
)
from splitlog.auth.v1 import auth_service_pb2, credential_service_pb2
from splitlog.balances.v1 import balances_service_pb2
from splitlog.expenses.v1 import expenses_service_pb2
from splitlog.gateway.v1 import gateway_service_pb2
from splitlog.logs.v1 import logs_service_pb2
from splitlog.users.v1 import users_service_pb2 as pb

USERS = pb.DESCRIPTOR.services_by_name["UsersService"]


def _match(template: str, path: str) -> dict[str, str] | None:
    segments, verb = split_path(path)
    return parse_template(template).match(segments, verb)


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/users", "/v1/users", {}),
        ("/v1/{name=users/*}", "/v1/users/u1", {"name": "users/u1"}),
        ("/v1/{name}", "/v1/u1", {"name": "u1"}),
        ("/v1/{user.name=users/*}", "/v1/users/u1", {"user.name": "users/u1"}),
        (
            "/v1/{parent=groups/*}/members",
            "/v1/groups/g1/members",
            {"parent": "groups/g1"},
        ),
        (
            "/v1/{name=groups/*/members/*}",
            "/v1/groups/g1/members/u1",
            {"name": "groups/g1/members/u1"},
        ),
        (
            "/v1/{name=users/*}:deactivate",
            "/v1/users/u1:deactivate",
            {"name": "users/u1"},
        ),
        ("/v1/{name=files/**}", "/v1/files/a/b/c", {"name": "files/a/b/c"}),
        ("/v1/{name=files/**}", "/v1/files", {"name": "files"}),
        ("/v1/*/items", "/v1/anything/items", {}),
    ],
)
def test_template_matches(template, path, expected):
    assert _match(template, path) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/users", "/v1/users/u1"),
        ("/v1/{name=users/*}", "/v1/groups/g1"),
        ("/v1/{name=users/*}", "/v1/users/"),
        ("/v1/{name=users/*}", "/v1/users/u1/extra"),
        ("/v1/{name=users/*}", "/v1/users/u1:deactivate"),
        ("/v1/{name=users/*}:deactivate", "/v1/users/u1"),
        ("/v1/{name=users/*}:deactivate", "/v1/users/u1:activate"),
        ("/v1/{name=groups/*/members/*}", "/v1/groups/g1/members"),
    ],
)
def test_template_rejects(template, path):
    assert _match(template, path) is None


def test_single_segment_variable_fully_decoded():
    assert _match("/v1/{id}", "/v1/a%2Fb%20c") == {"id": "a/b c"}


def test_multi_segment_variable_keeps_encoded_slash():
    assert _match("/v1/{name=users/*}", "/v1/users/a%2Fb") == {"name": "users/a%2Fb"}


def test_encoded_colon_is_not_a_verb():
    assert _match("/v1/{name=users/*}", "/v1/users/a%3Ab") == {"name": "users/a:b"}


def test_literal_segment_compared_decoded():
    assert _match("/v1/users", "/v1/%75sers") == {}


@pytest.mark.parametrize(
    "template",
    [
        "v1/users",
        "/v1/{name=users/*",
        "/v1/{na-me}",
        "/v1/{a={b}}",
        "/v1/**/tail",
        "/v1/{name}/{name}",
        "/v1/users:",
        "/v1/us*ers",
        "/v1//users",
    ],
)
def test_malformed_template_rejected(template):
    with pytest.raises(TemplateError, match="invalid path template"):
        parse_template(template)


def test_routes_from_annotations():
    routes = {
        route.method.name: route
        for method in USERS.methods
        for route in routes_for_method(method)
    }

    assert routes["CreateUser"].http_method == "POST"
    assert routes["CreateUser"].body == "user"
    assert routes["GetUser"].template.text == "/v1/{name=users/*}"
    assert routes["GetUser"].body == ""
    assert routes["UpdateUser"].http_method == "PATCH"
    assert routes["UpdateUser"].template.variables[0].name == "user.name"
    assert routes["DeactivateUser"].template.verb == "deactivate"
    assert routes["DeactivateUser"].body == "*"
    assert routes["DeleteGroup"].http_method == "DELETE"
    assert routes["GetUser"].full_method == "/splitlog.users.v1.UsersService/GetUser"


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable(
        route for method in USERS.methods for route in routes_for_method(method)
    )


@pytest.mark.parametrize(
    ("method", "path", "rpc", "values"),
    [
        ("POST", "/v1/users", "CreateUser", {}),
        ("GET", "/v1/users", "ListUsers", {}),
        ("GET", "/v1/users/u1", "GetUser", {"name": "users/u1"}),
        ("PATCH", "/v1/users/u1", "UpdateUser", {"user.name": "users/u1"}),
        ("POST", "/v1/users/u1:deactivate", "DeactivateUser", {"name": "users/u1"}),
        ("GET", "/v1/groups/g1/members", "ListGroupMembers", {"parent": "groups/g1"}),
        ("POST", "/v1/groups/g1/members", "AddGroupMember", {"parent": "groups/g1"}),
        (
            "DELETE",
            "/v1/groups/g1/members/u1",
            "RemoveGroupMember",
            {"name": "groups/g1/members/u1"},
        ),
    ],
)
def test_route_table_match(table, method, path, rpc, values):
    route, found = table.match(method, path)

    assert route.method.name == rpc
    assert found == values


def test_route_table_unknown_path(table):
    with pytest.raises(RouteNotFound):
        table.match("GET", "/v1/nothing")


def test_route_table_wrong_method_lists_allowed(table):
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("PUT", "/v1/users/u1")

    assert sorted(caught.value.allowed) == ["GET", "PATCH"]


def test_route_table_rejects_duplicate_binding():
    get_user = USERS.methods_by_name["GetUser"]
    get_group = USERS.methods_by_name["GetGroup"]
    routes = routes_for_method(get_user)
    clash = routes_for_method(get_group)[0]
    clashing = type(clash)(
        clash.http_method, routes[0].template, clash.body, "", get_group
    )

    with pytest.raises(TemplateError, match="both bind GET"):
        RouteTable([*routes, clashing])


def test_literal_route_preferred_over_variable():
    get_user = USERS.methods_by_name["GetUser"]
    list_users = USERS.methods_by_name["ListUsers"]
    variable = routes_for_method(get_user)[0]
    literal = type(variable)("GET", parse_template("/v1/users/me"), "", "", list_users)

    route, _ = RouteTable([variable, literal]).match("GET", "/v1/users/me")

    assert route.method.name == "ListUsers"


# Property: expanding a template the way a client does (percent-encoding each
# value as http.proto prescribes) and matching the result gives back the
# values that went in.

_IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
_LITERAL = st.from_regex(r"[a-z][a-z0-9\-]{0,6}", fullmatch=True)
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12
)
_RESOURCE_ID = _TEXT.filter(lambda text: "/" not in text)


@st.composite
def _template_with_values(draw):
    parts: list[str] = []
    expanded: list[str] = []
    values: dict[str, str] = {}
    for index in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["literal", "single", "collection"]))
        if kind == "literal":
            literal = draw(_LITERAL)
            parts.append(literal)
            expanded.append(literal)
        elif kind == "single":
            name, value = f"{draw(_IDENT)}{index}", draw(_TEXT)
            parts.append(f"{{{name}}}")
            expanded.append(quote(value, safe=""))
            values[name] = value
        else:
            name, collection = f"{draw(_IDENT)}{index}", draw(_LITERAL)
            resource_id = draw(_RESOURCE_ID)
            parts.append(f"{{{name}={collection}/*}}")
            expanded.append(f"{collection}/{quote(resource_id, safe='/')}")
            values[name] = f"{collection}/{resource_id}"
    verb = draw(st.one_of(st.just(""), _LITERAL))
    suffix = f":{verb}" if verb else ""
    return "/" + "/".join(parts) + suffix, "/" + "/".join(expanded) + suffix, values


@given(_template_with_values())
def test_expanded_template_matches_back(case):
    template, path, values = case

    assert _match(template, path) == values


def test_no_client_streaming_method_has_a_route():
    # REST has no stream of requests, so such a route could only return 501.
    modules = [auth_service_pb2, credential_service_pb2, balances_service_pb2]
    modules += [expenses_service_pb2, gateway_service_pb2, logs_service_pb2, pb]
    routed = [
        method.full_name
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if method.client_streaming and routes_for_method(method)
    ]

    assert routed == []
