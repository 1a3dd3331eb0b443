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
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.http_rules import HttpRoute
from splitlog_runtime.errors import invalid_field

IF_MATCH = "If-Match"
ETAG_FIELD = "etag"
# One entity tag (RFC 9110, section 8.8.3), weak or strong.
_ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]*"\Z')
_UPDATE_METHODS = frozenset({"PATCH", "PUT"})


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
    message: Message, path: tuple[str, ...] | None, header: str | None
) -> None:
    """Set the etag field of a request from an `If-Match` header.

    Args:
      message: the request built from the path, query and body.
      path: the route's etag field, from `etag_path`.
      header: the If-Match header, or None when the request has none.

    Raises:
      InvalidArgument: the route has no etag field, the header is not one
        entity tag or `*`, or it differs from the etag in the body.
    """
    if header is None:
        return
    value = header.strip()
    if path is None:
        raise invalid_field(
            IF_MATCH,
            "this route has no etag to check, so the gateway cannot honour "
            "If-Match; remove the header",
            reason="IF_MATCH_UNSUPPORTED",
        )
    if value == "*":
        return
    if _ENTITY_TAG.match(value) is None:
        raise invalid_field(
            IF_MATCH,
            f"{value!r} is not one entity tag; send the etag of the latest read, "
            "quotes included, such as '\"3\"', or *",
            reason="INVALID_ETAG",
        )
    holder = message
    for name in path[:-1]:
        holder = getattr(holder, name)
    body_etag = getattr(holder, path[-1])
    field_path = ".".join(path)
    if body_etag and body_etag != value:
        raise invalid_field(
            IF_MATCH,
            f"If-Match {value!r} differs from {field_path} {body_etag!r} in the "
            "request; send the etag in one place, or the same value in both",
            reason="ETAG_CONFLICT",
            metadata={"etag_field": field_path},
        )
    setattr(holder, path[-1], value)


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
