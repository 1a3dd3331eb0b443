"""Conversion between HTTP requests and protobuf messages for one route.

A request message is assembled from three sources, as `google/api/http.proto`
prescribes: the path variables, the JSON body (the whole request for
`body: "*"`, one field for `body: "field"`, nothing otherwise) and the query
parameters, which may set any field that neither the path nor the body sets.
Everything is gathered into one proto3 JSON tree and parsed once with
`json_format.ParseDict`, so the JSON rules (names in lowerCamelCase or as in
the proto, Timestamp as RFC 3339, int64 as a string or number) apply equally
to every source.

A path variable that contradicts the body is rejected with INVALID_ARGUMENT
rather than silently overriding it: the mismatch usually means the client
addressed the wrong resource. The same value in both places is accepted.

Everything here is pure: no I/O, no gRPC.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway import json_check
from gateway.http_rules import HttpRoute
from log_service import timefmt
from splitlog_runtime import limits
from splitlog_runtime.errors import InvalidArgument, invalid_field

_LOGGER = logging.getLogger(__name__)

_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})
_TRUE_WORDS = frozenset({"true", "1"})
_FALSE_WORDS = frozenset({"false", "0"})

# Well-known message types whose JSON form is a string, so a query parameter
# can carry them whole.
_STRING_MESSAGES = frozenset(
    {
        "google.protobuf.FieldMask",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
    }
)
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool")
    + ("String", "Bytes")
)

_INTEGER = re.compile(r"[-+]?[0-9]+\Z")
_DATE = "google.type.Date"
# The day shown in the query parameters of a date that the request did not
# write as YYYY-MM-DD.
_EXAMPLE_DAY = datetime.date(2024, 5, 31)
# Maximum length of a path or query integer that is converted to an int.
_MAX_INTEGER_CHARACTERS = 40
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A JSON escape of a surrogate. Only such an escape can decode to one, so a
# body without it needs no search for lone surrogates.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_UNKNOWN_FIELD = re.compile(
    r'Message type "([^"]+)" has no field named "([^"]+)" at "([^"]+)"'
)
_BAD_FIELD = re.compile(r"Failed to parse (\S+) field:?")


def message_class(descriptor: Descriptor) -> type[Message]:
    """Return the generated message class for a descriptor."""
    return message_factory.GetMessageClass(descriptor)


def parse_query_string(
    raw: bytes, descriptor: Descriptor | None = None
) -> list[tuple[str, str]]:
    """Split a raw query string into decoded (key, value) pairs, in order.

    Keys and values are percent-decoded, with `+` read as a space, and must
    then be valid UTF-8. A pair without `=` has an empty value, and empty
    pairs (`a=1&&b=2`) are skipped. `descriptor`, the request's message
    type, lets an error name a parameter's field by its proto name.

    Raises:
      splitlog_runtime.errors.InvalidArgument: a key or a value is not valid
        UTF-8 once decoded. The message names the parameter and the bytes.
    """
    items = []
    for pair in raw.split(b"&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition(b"=")
        key = _decode_query_part(raw_key, None, descriptor)
        items.append((key, _decode_query_part(raw_value, key, descriptor)))
    return items


def _query_field_path(descriptor: Descriptor | None, key: str) -> str:
    """Return the proto field path of a query parameter, or the key if unknown."""
    if descriptor is None:
        return key
    try:
        fields = _resolve_query_key(descriptor, key)
    except InvalidArgument:
        return key
    return ".".join(field.name for field in fields)


def _decode_query_part(
    raw: bytes, key: str | None, descriptor: Descriptor | None
) -> str:
    """Percent-decode a query key (`key` None) or the value of `key` as UTF-8."""
    data = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = quote_from_bytes(data[exc.start : exc.end], safe="")
        if key is None:
            shown = quote_from_bytes(data, safe="")
            field, subject = shown, f"the query parameter name {shown!r}"
        else:
            field = _query_field_path(descriptor, key)
            subject = f"the value of query parameter {key!r}"
        raise invalid_field(
            field,
            f"{subject} is not valid UTF-8: the bytes {bad} at byte {exc.start} "
            f"of the decoded text ({exc.reason}); percent-encode the text as "
            "UTF-8, e.g. é as %C3%A9",
            reason="INVALID_UTF8",
        ) from None


def build_request(
    route: HttpRoute,
    request_class: type[Message],
    path_values: dict[str, str],
    query_items: Iterable[tuple[str, str]],
    body: bytes,
    check_body: Callable[[Any], None] | None = None,
) -> Message:
    """Assemble the request message of a route from an HTTP request.

    Args:
      route: the matched route.
      request_class: the message class of the route's request type.
      path_values: decoded path variable values, keyed by field path.
      query_items: query parameters in order; a key may repeat.
      body: the raw request body.
      check_body: called with the decoded JSON body before any other check,
        so that a route can reject a body without walking all of it.

    Raises:
      splitlog_runtime.errors.InvalidArgument: the body is not JSON, a value
        has the wrong type, a field is unknown or set twice, or the path and
        the body disagree. The message and the BadRequest violation name the
        field.
    """
    descriptor = route.method.input_type
    tree = _body_tree(route, descriptor, body, check_body)
    for name, text in path_values.items():
        _assign_path_value(tree, descriptor, name, text)
    items = list(query_items)
    if items and route.body == "*":
        names = ", ".join(sorted({key for key, _ in items}))
        raise invalid_field(
            names,
            f"query parameters are not accepted by {route.http_method} "
            f"{route.template.text}, which reads every field from the body; "
            "move them into the JSON body",
            reason="UNEXPECTED_QUERY_PARAMETER",
        )
    for key, text in items:
        _assign_query_value(tree, route, descriptor, path_values, key, text)

    json_check.check_message(tree, descriptor)
    request = request_class()
    try:
        json_format.ParseDict(tree, request)
    except json_format.ParseError as exc:
        raise _parse_error(exc, descriptor) from None
    return request


def _body_tree(
    route: HttpRoute,
    descriptor: Descriptor,
    body: bytes,
    check_body: Callable[[Any], None] | None,
) -> dict:
    if not route.body:
        if body.strip():
            raise invalid_field(
                "body",
                f"{route.http_method} {route.template.text} takes no request body; "
                "send the fields as query parameters",
                reason="UNEXPECTED_BODY",
            )
        return {}
    if not body.strip():
        return {}
    body_field = None if route.body == "*" else descriptor.fields_by_name[route.body]
    body_path = "" if body_field is None else body_field.name
    body_type = descriptor if body_field is None else body_field.message_type
    value = load_json_body(body, body_path, body_type)
    if check_body is not None:
        check_body(value)
    if SURROGATE_ESCAPE.search(body) is not None:
        _reject_lone_surrogates(value, body_path, body_type)
    if body_field is None:
        _require_object(value, "body", descriptor)
        return value
    if body_field.message_type is not None and not body_field.is_repeated:
        _require_object(value, body_field.name, body_field.message_type)
        _reject_request_fields(route, body_field, value)
    return {body_field.json_name: value}


def _reject_request_fields(
    route: HttpRoute, body_field: FieldDescriptor, value: dict
) -> None:
    """Reject a body key that is not a field of the body's message but one of
    the request beside it, which the route reads from the query string or
    the URL path."""
    message = body_field.message_type
    request = body_field.containing_type
    for key in value:
        if message.fields_by_name.get(key) or _by_json_name(message, key):
            continue
        field = request.fields_by_name.get(key) or _by_json_name(request, key)
        if field is None or field is body_field:
            continue
        if any(v.field_path == (field.name,) for v in route.template.variables):
            where = "the URL path"
            fix = f"put it in the path as {route.template.text} shows"
        else:
            where = "the query string"
            fix = f"send it as ?{field.json_name}=VALUE"
        raise invalid_field(
            f"{body_field.name}.{key}",
            f"unknown field {key!r} in {message.full_name}; {field.name} is a "
            f"field of {request.full_name}, which {route.http_method} "
            f"{route.template.text} reads from {where}, not the body: {fix}",
            reason="UNKNOWN_FIELD",
        )


def load_json_body(
    body: bytes, path: str = "", descriptor: Descriptor | None = None
) -> Any:
    """Decode a JSON request body, with exact numbers (`json_check.JsonNumber`).

    `path` is the request field that the body sets, empty for the whole
    request. Error messages put it before the field paths inside the body,
    which name fields of `descriptor`, the body's message type, by their
    proto names.

    Raises:
      InvalidArgument: the body is not UTF-8, not JSON, nests deeper than
        `json_check.MAX_JSON_DEPTH`, or repeats a key in an object
        (DUPLICATE_FIELD). The message names the byte, the position or the
        field path.
    """
    try:
        # JSON exchanged between systems is UTF-8 (RFC 8259). `json.loads` on
        # bytes would also read UTF-16 and let encoded surrogates through.
        return json_check.decode_json(body.decode("utf-8-sig"), path, descriptor)
    except UnicodeDecodeError as exc:
        bad = " ".join(f"0x{byte:02x}" for byte in exc.object[exc.start : exc.end])
        raise invalid_field(
            "body",
            f"the request body is not valid UTF-8: bytes {bad} at byte "
            f"{exc.start} ({exc.reason}); send the JSON encoded as UTF-8",
            reason="MALFORMED_JSON",
        ) from None
    except json.JSONDecodeError as exc:
        raise invalid_field(
            "body",
            f"the request body is not valid JSON ({exc}); send a JSON object",
            reason="MALFORMED_JSON",
        ) from None


def any_json(detail: Any) -> dict[str, Any]:
    """Render a google.protobuf.Any, such as an error detail, as JSON.

    A type that is not in this process's descriptor pool is rendered as its
    type URL and its bytes in hex.
    """
    try:
        return json_format.MessageToDict(detail)
    except (json_format.Error, TypeError, KeyError):
        return {"@type": detail.type_url, "value": detail.value.hex()}


@dataclasses.dataclass(frozen=True)
class LoneSurrogate:
    """A JSON string or key that contains half of a surrogate pair.

    Attributes:
      field: the field path of the string, or of the object with the key,
        with proto field names; empty for a key of the top-level object.
      subject: what contains it, such as `the string` or `the object key "a"`.
      escape: the surrogate as a JSON escape, such as `\\ud800`.
      position: the character index of the surrogate in the string.
    """

    field: str
    subject: str
    escape: str
    position: int

    def description(self) -> str:
        return (
            f"{self.subject} is not valid Unicode: the escape {self.escape} at "
            f"character {self.position} is half of a surrogate pair without its "
            "other half; send the character itself in UTF-8, or both escapes of "
            "its pair (\\ud800-\\udbff, then \\udc00-\\udfff)"
        )


def find_lone_surrogate(
    value: Any, base: str = "", descriptor: Descriptor | None = None
) -> LoneSurrogate | None:
    """Find the first string or key in document order with a lone surrogate.

    `json.loads` accepts an escape such as `\\ud800` that is not part of a
    surrogate pair, but the code point it yields is not a Unicode character,
    so no protobuf string can hold it. `base` is the JSON path of `value`,
    and `descriptor` its message type, whose proto field names the path uses.
    """
    pending: list[tuple[Any, list[str | int]]] = [(value, [])]
    while pending:
        node, segments = pending.pop()
        if isinstance(node, str):
            found = _lone_surrogate_in(node, "the string")
            if found is not None:
                return _located(found, descriptor, segments, base)
            continue
        if isinstance(node, dict):
            children = []
            for key, child in node.items():
                subject = f"the object key {_json_quoted(key)}"
                found = _lone_surrogate_in(key, subject)
                if found is not None:
                    return _located(found, descriptor, segments, base)
                children.append((child, [*segments, key]))
        elif isinstance(node, list):
            children = [(item, [*segments, index]) for index, item in enumerate(node)]
        else:
            continue
        pending.extend(reversed(children))
    return None


def _lone_surrogate_in(text: str, subject: str) -> LoneSurrogate | None:
    match = _SURROGATE.search(text)
    if match is None:
        return None
    escape = f"\\u{ord(match.group()):04x}"
    return LoneSurrogate("", subject, escape, match.start())


def _located(
    found: LoneSurrogate,
    descriptor: Descriptor | None,
    segments: list[str | int],
    base: str,
) -> LoneSurrogate:
    path = json_check.proto_path(descriptor, segments, base)
    return dataclasses.replace(found, field=path)


def _reject_lone_surrogates(
    value: Any, base: str, descriptor: Descriptor | None
) -> None:
    found = find_lone_surrogate(value, base, descriptor)
    if found is not None:
        raise invalid_field(
            found.field or "body", found.description(), reason="INVALID_UNICODE"
        )


def _json_quoted(key: str) -> str:
    """Quote a key as JSON, with non-ASCII escaped so that any key prints."""
    return json.dumps(key)


def _require_object(value: Any, field: str, descriptor: Descriptor) -> None:
    """Reject a body that is not a JSON object, naming what was received."""
    if not isinstance(value, dict):
        raise invalid_field(
            field,
            f"request body must be a JSON object with the fields of "
            f"{descriptor.full_name}, got {json_check.describe_json(value)}",
            reason="BODY_NOT_OBJECT",
        )


def _child(tree: dict, field: FieldDescriptor) -> Any:
    if field.json_name in tree:
        return tree[field.json_name]
    return tree.get(field.name)


def _assign_path_value(tree: dict, descriptor: Descriptor, name: str, text: str):
    *parents, leaf_name = name.split(".")
    node = tree
    for part in parents:
        field = descriptor.fields_by_name[part]
        child = _child(node, field)
        if child is None:
            child = node[field.json_name] = {}
        elif not isinstance(child, dict):
            raise invalid_field(
                part,
                f"expected a JSON object, got {type(child).__name__}",
                reason="INVALID_FIELD_TYPE",
            )
        node, descriptor = child, field.message_type
    leaf = descriptor.fields_by_name[leaf_name]
    value = _convert(leaf, text, name, f"path variable {name!r}")
    present = _child(node, leaf)
    if present is not None and present != value:
        raise invalid_field(
            name,
            f"the body sets {present!r} but the path sets {value!r}; "
            "send the same value or leave it out of the body",
            reason="PATH_BODY_MISMATCH",
        )
    node.pop(leaf.name, None)
    node[leaf.json_name] = value


def _resolve_query_key(descriptor: Descriptor, key: str) -> list[FieldDescriptor]:
    fields = []
    for part in key.split("."):
        if descriptor is None:
            raise invalid_field(
                key,
                f"unknown query parameter {key!r}: {fields[-1].name} has no subfields",
                reason="UNKNOWN_FIELD",
            )
        field = descriptor.fields_by_name.get(part) or _by_json_name(descriptor, part)
        if field is None:
            known = ", ".join(f.name for f in descriptor.fields)
            raise invalid_field(
                key,
                f"unknown query parameter {key!r}; fields of "
                f"{descriptor.full_name}: {known}",
                reason="UNKNOWN_FIELD",
            )
        fields.append(field)
        descriptor = (
            field.message_type
            if field.message_type is not None
            and field.message_type.full_name not in _STRING_MESSAGES | _WRAPPERS
            and not field.message_type.GetOptions().map_entry
            else None
        )
    return fields


def _by_json_name(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    for field in descriptor.fields:
        if field.json_name == name:
            return field
    return None


def _assign_query_value(
    tree: dict,
    route: HttpRoute,
    descriptor: Descriptor,
    path_values: dict[str, str],
    key: str,
    text: str,
) -> None:
    fields = _resolve_query_key(descriptor, key)
    proto_path = ".".join(field.name for field in fields)
    if proto_path in path_values:
        raise invalid_field(
            proto_path,
            f"{proto_path} is already set by the path {route.template.text}; "
            "remove the query parameter",
            reason="DUPLICATE_FIELD",
        )
    if route.body and fields[0].name == route.body:
        raise invalid_field(
            proto_path,
            f"{fields[0].name} is read from the request body; set it there",
            reason="DUPLICATE_FIELD",
        )
    _reject_message_list(fields, proto_path)
    leaf = fields[-1]
    if leaf.message_type is not None and (
        leaf.message_type.full_name not in _STRING_MESSAGES | _WRAPPERS
    ):
        raise invalid_field(
            proto_path,
            _message_parameter_problem(key, leaf.message_type, text),
            reason="INVALID_FIELD_TYPE",
        )
    node = tree
    for field in fields[:-1]:
        node = node.setdefault(field.json_name, {})
    value = _convert(leaf, text, proto_path, f"query parameter {key!r}")
    if leaf.is_repeated:
        node.setdefault(leaf.json_name, []).append(value)
    elif leaf.json_name in node:
        raise invalid_field(
            proto_path,
            f"{key} is given more than once, last as {text!r}, but takes one "
            "value; send the query parameter once",
            reason="DUPLICATE_FIELD",
        )
    else:
        node[leaf.json_name] = value


def _message_parameter_problem(key: str, message: Descriptor, text: str) -> str:
    """Describe how query parameters set the message field `key` given as `text`.

    A query string sets a message one field at a time, and a date written
    as YYYY-MM-DD is shown split into those fields.
    """
    if message.full_name == _DATE:
        try:
            day = datetime.date.fromisoformat(text)
        except ValueError:
            day = _EXAMPLE_DAY
        return (
            f"{key} is a {_DATE}, which a query string sets one field at a "
            f"time; send {key}.year={day.year}&{key}.month={day.month}&"
            f"{key}.day={day.day}"
        )
    fields = ", ".join(f"{key}.{field.json_name}" for field in message.fields)
    return (
        f"{key} is a {message.full_name} message, which a query string sets one "
        f"field at a time; send its fields as parameters: {fields}"
    )


def _reject_message_list(fields: list[FieldDescriptor], proto_path: str) -> None:
    """Reject a query parameter in a repeated message field, which it cannot set.

    `a.b=1&a.c=2` could mean one message or two, so no query parameter sets
    a list of messages.
    """
    for index, field in enumerate(fields):
        message = field.message_type
        if (
            not field.is_repeated
            or message is None
            or message.GetOptions().map_entry
            or message.full_name in _STRING_MESSAGES | _WRAPPERS
        ):
            continue
        where = ".".join(f.name for f in fields[: index + 1])
        hint = _MESSAGE_LIST_HINTS.get(
            field.name, "set it in the JSON body of a route that takes one"
        )
        raise invalid_field(
            proto_path,
            f"{where} is a list of {message.full_name} messages, which cannot be "
            f"sent as query parameters; {hint}",
            reason="QUERY_PARAMETER_UNSUPPORTED",
        )


# Hints for a list of messages sent as query parameters, by field name.
_MESSAGE_LIST_HINTS = {
    "attribute_conditions": (
        "send attributeFilters=KEY=VALUE instead, writing \\= for an = and "
        "\\\\ for a backslash in the key, or attributeConditions in the JSON "
        "body of a POST route such as POST /v1/logs:tail"
    ),
}


def _convert(field: FieldDescriptor, text: str, name: str, subject: str) -> Any:
    """Convert one path or query value to its proto3 JSON form.

    `name` is the field path of the error, and `subject` names the value in
    its message, such as `query parameter 'pageSize'`.
    """
    if field.message_type is not None:
        full_name = field.message_type.full_name
        if full_name == "google.protobuf.FieldMask":
            return ",".join(_lower_camel(path) for path in text.split(","))
        if full_name in _WRAPPERS:
            value_field = field.message_type.fields_by_name["value"]
            return _convert(value_field, text, name, subject)
        if full_name == "google.protobuf.Timestamp":
            _check_offset_sign(text, name, subject)
        return text
    if field.type in _INTEGER_TYPES:
        return _convert_integer(field, text, name, subject)
    if field.type in _FLOAT_TYPES:
        if text in _FLOAT_WORDS:
            return text
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise invalid_field(
                name,
                f"{text!r} is not a number; use digits, NaN, Infinity or -Infinity",
                reason="INVALID_FIELD_TYPE",
            )
        return number
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE_WORDS:
            return True
        if lowered in _FALSE_WORDS:
            return False
        raise invalid_field(
            name, f"{text!r} is not a boolean; use true or false", "INVALID_FIELD_TYPE"
        )
    return text


# An RFC 3339 time whose offset lost its sign: the `+` of `+02:00` that a
# query string decodes to a space, as in `2017-06-09T22:10:40 02:00`.
_SPACE_FOR_PLUS = re.compile(r"^(\S+T\S+) (\d\d:\d\d)$")


def _check_offset_sign(text: str, name: str, subject: str) -> None:
    """Reject a timestamp whose `+` offset sign arrived as a space.

    In a query string `+` stands for a space, so an unencoded
    `...T22:10:40+02:00` arrives as `...T22:10:40 02:00`. The parse error
    alone would not explain it, so the message shows how to send the `+`.
    """
    match = _SPACE_FOR_PLUS.match(text)
    if match is None:
        return
    intended = f"{match[1]}+{match[2]}"
    try:
        ns = timefmt.parse_rfc3339(intended)
    except ValueError:
        return
    problem = (
        f"expected an RFC 3339 timestamp string in {subject}, got "
        f"{json_check.describe_json(text)}, which has a space where the "
        "offset's sign should be"
    )
    if not json_check.timestamp_in_range(ns):
        # format_time cannot write such an instant, so no UTC form is offered.
        raise invalid_field(
            name,
            f"{problem}; even with the sign, {intended} is outside the range "
            f"of a google.protobuf.Timestamp, {json_check.TIMESTAMP_RANGE}",
            reason="INVALID_FIELD_VALUE",
        )
    raise invalid_field(
        name,
        f"{problem}; a `+` in a URL query string stands for a space, so encode "
        f"it as %2B ({quote(intended, safe=':')}), or give the time in UTC "
        f"with Z ({timefmt.format_time(ns)})",
        reason="INVALID_FIELD_VALUE",
    )


def _convert_integer(field: FieldDescriptor, text: str, name: str, subject: str) -> int:
    low, high = json_check.integer_range(field)
    allowed = f"an integer from {low} to {high}"
    if field.name == "page_size":
        # The services reject a negative size and lower one above their
        # max_page_size to it, so int32's negative half is never valid.
        allowed = (
            f"an integer from 0 to {high}; 0 means the default page size, and "
            "a larger size than the server's max_page_size (default "
            f"{limits.DEFAULTS.max_page_size}) is lowered to it"
        )
    if not _INTEGER.match(text):
        raise invalid_field(
            name,
            f"{text!r} is not an integer; set {subject} to {allowed}",
            reason="INVALID_FIELD_TYPE",
        )
    # Every integer field ends below 2**64 (20 digits), and Python refuses to
    # read more than 4,300 digits.
    number = int(text) if len(text) <= _MAX_INTEGER_CHARACTERS else None
    if number is None or not low <= number <= high:
        shown = text
        if number is None:
            shown = f"{text[:_MAX_INTEGER_CHARACTERS]}... ({len(text)} characters)"
        raise invalid_field(
            name,
            f"{shown} is out of range for {subject}; use {allowed}",
            reason="INVALID_FIELD_VALUE",
        )
    return number


def _lower_camel(path: str) -> str:
    parts = path.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def _parse_error(exc: json_format.ParseError, descriptor: Descriptor):
    text = str(exc)
    summary = text.split("\n", 1)[0]
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        type_name, name, location = unknown.groups()
        parent = location.split(".", 1)
        segments = json_check.split_path(parent[1]) if len(parent) > 1 else []
        field = json_check.proto_path(descriptor, [*segments, name])
        try:
            owner = descriptor.file.pool.FindMessageTypeByName(type_name)
            known = ", ".join(f.json_name for f in owner.fields)
        except KeyError:
            known = "see the API reference"
        return invalid_field(
            field,
            f"unknown field {name!r} in {type_name}; known fields: {known}",
            reason="UNKNOWN_FIELD",
        )
    # `json_check.check_message` has already caught wrong JSON types, so this
    # is a rarer case, such as an unknown type in a google.protobuf.Any. The
    # parser's own text can quote Python internals, so it goes to the log only.
    # Nested failures read "Failed to parse a field: Failed to parse b field: why".
    names: list[str | int] = list(_BAD_FIELD.findall(summary))
    field = json_check.proto_path(descriptor, names) or "body"
    _LOGGER.debug("request JSON for %s rejected: %s", descriptor.full_name, text)
    return invalid_field(
        field,
        f"invalid value for {field} in {descriptor.full_name}; it does not follow "
        "the proto3 JSON mapping of that field's type",
        reason="INVALID_FIELD_VALUE",
    )


def response_json(route: HttpRoute, response: Message) -> Any:
    """Render a response, or its `response_body` field, as proto3 JSON."""
    if not route.response_body:
        return _message_json(response)
    field = response.DESCRIPTOR.fields_by_name[route.response_body]
    value = getattr(response, field.name)
    if field.message_type is not None and not field.is_repeated:
        return _message_json(value)
    rendered = _message_json(response, always_print_fields_with_no_presence=True)
    return rendered.get(field.json_name)


# Fields that a response prints even at their default, by message type.
# proto3 JSON leaves out a field at its default, so the first rejected entry
# of a batch, at index 0, would be listed without the index that names it.
_ALWAYS_PRINTED = {"splitlog.logs.v1.LogEntryRejection": ("index",)}


def _message_json(message: Message, **options: bool) -> dict[str, Any]:
    """Render a message as proto3 JSON, with the fields of _ALWAYS_PRINTED."""
    rendered = json_format.MessageToDict(message, **options)
    _print_always(message, rendered)
    return rendered


def _print_always(message: Message, rendered: dict[str, Any]) -> None:
    """Add the fields of _ALWAYS_PRINTED that `rendered` left out, in place."""
    if not _may_contain_always_printed(message.DESCRIPTOR):
        return
    for name in _ALWAYS_PRINTED.get(message.DESCRIPTOR.full_name, ()):
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.json_name not in rendered:
            default = json_format.MessageToDict(
                message, always_print_fields_with_no_presence=True
            )
            rendered[field.json_name] = default[field.json_name]
    for field, value in message.ListFields():
        if field.message_type is None or field.json_name not in rendered:
            continue
        if field.message_type.GetOptions().map_entry:
            continue
        if field.is_repeated:
            for item, item_json in zip(value, rendered[field.json_name], strict=True):
                if isinstance(item_json, dict):
                    _print_always(item, item_json)
        elif isinstance(rendered[field.json_name], dict):
            _print_always(value, rendered[field.json_name])


@functools.cache
def _may_contain_always_printed(descriptor: Descriptor) -> bool:
    """Return whether a message type is or may contain one of _ALWAYS_PRINTED.

    Responses without such a type, such as pages of log entries, are then
    not walked at all.
    """
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if current.full_name in _ALWAYS_PRINTED:
            return True
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        pending.extend(
            field.message_type
            for field in current.fields
            if field.message_type is not None
        )
    return False
