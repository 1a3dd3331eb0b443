"""HTTP `ETag` and `If-Match` on the REST front, mapped onto the etag fields.

A GET whose response is one resource with an etag, or has an etag itself,
sends that etag as the `ETag` header, unchanged, so it has the quotes that
the body's etag has. A view that combines a resource with other data, such
as a group's overview, sends none, because the resource's etag does not
cover the rest.

Writes that name the resource in their path send its new etag the same
way (`sends_etag`), so the next write can send it back in `If-Match`.

A write route has an etag field when its request message has a top-level
`etag` (Delete and custom methods such as `:deactivate`), or, for PATCH and
PUT, when the resource in the body has one (`user.etag` of UpdateUser). On
such a route, `If-Match: <etag>` sets that field when the body leaves it
empty, so a stale value gets the same ABORTED (HTTP 409) as a stale etag
field. `If-Match: *` adds no check. A body etag that differs from
If-Match is rejected, and so is If-Match on a route without an etag field,
where the gateway could not honour it.

If-Match compares entity tags strongly (RFC 9110, section 13.1.1), so a
weak tag (`W/"3"`) never matches: a header of weak tags only gets the
ABORTED of a stale etag. The header may list several tags, and repeated
headers form one list. Weak members are dropped, and the strong ones must
all be the same tag, because the backend checks one etag. The gateway
rejects a list of two different strong tags rather than read the current
etag first and pick the member that matches.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.http_rules import HttpRoute
from splitlog_runtime.errors import Aborted, invalid_field

IF_MATCH = "If-Match"
ETAG_FIELD = "etag"
# One entity tag (RFC 9110, section 8.8.3), weak or strong. RFC 9110 also
# allows the bytes 0x80-0xff, but splitlog's etags are ASCII, and such bytes
# would reach the backend as Latin-1 text that no etag equals.
_ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e]*"\Z')
# One member of an If-Match list and the comma after it. RFC 9110 (section
# 5.6.1) lets a list have empty members, which count for nothing.
_LIST_MEMBER = re.compile(r'[ \t]*((?:W/)?"[\x21\x23-\x7e]*")?[ \t]*(?:,|\Z)')
# Whitespace around a header value (RFC 9110, section 5.6.3).
_HTTP_WHITESPACE = " \t"
_UPDATE_METHODS = frozenset({"PATCH", "PUT"})


_ETAG_WRITES = (
    "writes that change an existing resource (PATCH, DELETE and POST actions "
    "such as :undelete)"
)


def _unsupported_message(http_method: str) -> str:
    """Describe If-Match on a route without an etag field, with the fix."""
    if http_method == "GET":
        # A GET returns an ETag header, so the message names where to send it.
        return (
            f"applies to {_ETAG_WRITES}, not to reads; remove it from this "
            "GET, and send a resource's ETag in If-Match on the write that "
            "changes it"
        )
    return (
        "this route takes no etag, so the gateway cannot check If-Match; "
        f"remove the header. If-Match applies to {_ETAG_WRITES}"
    )


def _has_etag(descriptor: Descriptor) -> bool:
    field = descriptor.fields_by_name.get(ETAG_FIELD)
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


def _resource_fields(descriptor: Descriptor) -> list[FieldDescriptor]:
    """Return the singular message fields whose type has an etag."""
    return [
        field
        for field in descriptor.fields
        if field.message_type is not None
        and not field.is_repeated
        and _has_etag(field.message_type)
    ]


def etag_path(route: HttpRoute) -> tuple[str, ...] | None:
    """Return the request field that If-Match sets on a route, or None."""
    if route.http_method == "GET":
        return None
    request = route.method.input_type
    if _has_etag(request):
        return (ETAG_FIELD,)
    if route.http_method not in _UPDATE_METHODS:
        # A Create's resource has an etag field too, but nothing to match.
        return None
    resources = _resource_fields(request)
    if len(resources) != 1:
        return None
    return (resources[0].name, ETAG_FIELD)


def apply_if_match(
    message: Message,
    path: tuple[str, ...] | None,
    header: str | None,
    http_method: str,
) -> None:
    """Set the etag field of a request from an `If-Match` header.

    Args:
      message: the request built from the path, query and body.
      path: the route's etag field, from `etag_path`.
      header: the If-Match header, with repeated headers joined by commas,
        or None when the request has none.
      http_method: the route's HTTP method, for the error of a route
        without an etag field.

    Raises:
      InvalidArgument: the route has no etag field, the header is not `*`
        or a list of entity tags, it lists two different strong tags, or
        its tag differs from the etag in the body.
      Aborted: the header has weak tags only, which never match.
    """
    if header is None:
        return
    value = header.strip(_HTTP_WHITESPACE)
    if path is None:
        raise invalid_field(
            IF_MATCH, _unsupported_message(http_method), reason="IF_MATCH_UNSUPPORTED"
        )
    if value == "*":
        return
    etag = _strong_etag(value)
    holder = message
    for name in path[:-1]:
        holder = getattr(holder, name)
    body_etag = getattr(holder, path[-1])
    field_path = ".".join(path)
    if body_etag and body_etag != etag:
        raise invalid_field(
            IF_MATCH,
            f"{shown(etag)} differs from {field_path} {shown(body_etag)} in the "
            "request; send the etag in one place, or the same value in both",
            reason="ETAG_CONFLICT",
            metadata={"etag_field": field_path},
        )
    setattr(holder, path[-1], etag)


def _strong_etag(value: str) -> str:
    """Return the one strong entity tag of an If-Match value other than `*`.

    Raises:
      InvalidArgument: the value is not a list of entity tags, or lists two
        different strong tags.
      Aborted: the value lists weak tags only.
    """
    tags = _entity_tags(value)
    strong = list(dict.fromkeys(tag for tag in tags if not tag.startswith("W/")))
    if not strong:
        raise Aborted(
            f"If-Match {shown(value)} has only weak entity tags, and If-Match "
            "compares tags strongly (RFC 9110, section 13.1.1), so a weak tag "
            "never matches; send the etag of the latest read without W/, such "
            "as '\"3\"'",
            reason="ETAG_MISMATCH",
            metadata={"header": IF_MATCH},
        )
    if len(strong) > 1:
        raise invalid_field(
            IF_MATCH,
            f"{shown(value)} lists {len(strong)} different entity tags, but "
            "the gateway supports only one, because the service checks one "
            "etag; send the etag of the latest read alone",
            reason="IF_MATCH_LIST_UNSUPPORTED",
        )
    return strong[0]


def _entity_tags(value: str) -> list[str]:
    """Split an If-Match value into its entity tags.

    Raises:
      InvalidArgument: the value has a byte outside printable ASCII, or is
        not a comma-separated list of at least one entity tag.
    """
    if any(not " " <= char <= "~" and char != "\t" for char in value):
        raise invalid_field(
            IF_MATCH,
            f"{shown(value)} has characters outside printable ASCII, which "
            "no etag contains; send the etag of the latest read, quotes "
            "included, such as '\"3\"', or *",
            reason="INVALID_ETAG",
        )
    tags: list[str] = []
    position = 0
    while position < len(value):
        member = _LIST_MEMBER.match(value, position)
        if member is None or member.end() == position:
            tags = []
            break
        if member.group(1):
            tags.append(member.group(1))
        position = member.end()
    if not tags:
        raise invalid_field(
            IF_MATCH,
            f"{shown(value)} is not an entity tag or a list of them; send the "
            "etag of the latest read, quotes included, such as '\"3\"', or *",
            reason="INVALID_ETAG",
        )
    return tags


def shown(text: str) -> str:
    """Quote a header value for a message, escaping what is not printable ASCII.

    Backslashes stay single, so an ASCII value reads as it was sent.
    """
    return "'" + "".join(map(_printable, text)) + "'"


def _printable(char: str) -> str:
    if " " <= char <= "~":
        return char
    # Starlette decodes header bytes as Latin-1, so \xNN is the byte sent.
    return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"


def sends_etag(route: HttpRoute) -> bool:
    """Return whether a route's response carries the `ETag` header.

    A GET does, and so does a write whose path names the resource it
    changes: the routes with an etag field, such as PATCH, DELETE and
    `:undelete`. A create does not, because its path names the collection,
    and RFC 9110 ties an ETag to the resource that the path names.
    """
    return route.http_method == "GET" or etag_path(route) is not None


def response_etag(response: Message) -> str:
    """Return the etag of a response that is one resource, or empty.

    The etag is the response's own `etag`, else that of its only field when
    that field is a resource with an etag, such as `user` in GetUserResponse.
    A response with more fields, such as GetGroupOverviewResponse beside its
    `group`, gets none: the group's etag does not change when its balances or
    expenses do, so a cache would keep a stale view. An etag that is not a
    valid entity tag is not returned, because the ETag header could not
    carry it unchanged.
    """
    descriptor = response.DESCRIPTOR
    etag = ""
    if _has_etag(descriptor):
        etag = getattr(response, ETAG_FIELD)
    elif len(descriptor.fields) == 1:
        resources = _resource_fields(descriptor)
        if resources and response.HasField(resources[0].name):
            etag = getattr(getattr(response, resources[0].name), ETAG_FIELD)
    return etag if _ENTITY_TAG.match(etag) else ""
