"""Assembling request messages from path, query and body; rendering responses.

The cases run against a small message built here from a descriptor, so that
every field type is covered whatever the project's protos contain.
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    timestamp_pb2,
    wrappers_pb2,
)

from gateway.http_rules import HttpRoute, parse_template
from gateway.transcode import (
    build_request,
    message_class,
    parse_query_string,
    response_json,
)
from splitlog_runtime.errors import InvalidArgument

_F = descriptor_pb2.FieldDescriptorProto


def _field(name, number, kind, type_name="", repeated=False):
    field = _F(
        name=name,
        number=number,
        type=kind,
        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
    )
    if type_name:
        field.type_name = type_name
    return field


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for dependency in (duration_pb2, field_mask_pb2, timestamp_pb2, wrappers_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="transcode_test.proto",
        package="transcode.test",
        syntax="proto3",
        dependency=[
            "google/protobuf/duration.proto",
            "google/protobuf/field_mask.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/wrappers.proto",
        ],
    )

    color = file.enum_type.add(name="Color")
    color.value.add(name="COLOR_UNSPECIFIED", number=0)
    color.value.add(name="COLOR_RED", number=1)
    inner = file.message_type.add(name="Inner")
    inner.field.extend(
        [
            _field("name", 1, _F.TYPE_STRING),
            _field("flag", 2, _F.TYPE_BOOL),
            _field("counts", 3, _F.TYPE_INT64, repeated=True),
        ]
    )
    request = file.message_type.add(name="Request")
    by_id = request.nested_type.add(name="ByIdEntry")
    by_id.options.map_entry = True
    by_id.field.extend(
        [_field("key", 1, _F.TYPE_INT32), _field("value", 2, _F.TYPE_STRING)]
    )
    limits = request.nested_type.add(name="LimitsEntry")
    limits.options.map_entry = True
    limits.field.extend(
        [
            _field("key", 1, _F.TYPE_BOOL),
            _field("value", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        ]
    )
    request.field.extend(
        [
            _field("name", 1, _F.TYPE_STRING),
            _field("inner", 2, _F.TYPE_MESSAGE, ".transcode.test.Inner"),
            _field("enabled", 3, _F.TYPE_BOOL),
            _field("color", 4, _F.TYPE_ENUM, ".transcode.test.Color"),
            _field("tags", 5, _F.TYPE_STRING, repeated=True),
            _field("update_mask", 6, _F.TYPE_MESSAGE, ".google.protobuf.FieldMask"),
            _field("start_time", 7, _F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
            _field("ratio", 8, _F.TYPE_DOUBLE),
            _field("big", 9, _F.TYPE_INT64),
            _field("maybe", 10, _F.TYPE_MESSAGE, ".google.protobuf.BoolValue"),
            _field("blob", 11, _F.TYPE_BYTES),
            _field(
                "by_id",
                12,
                _F.TYPE_MESSAGE,
                ".transcode.test.Request.ByIdEntry",
                repeated=True,
            ),
            _field(
                "limits",
                13,
                _F.TYPE_MESSAGE,
                ".transcode.test.Request.LimitsEntry",
                repeated=True,
            ),
            _field("step", 14, _F.TYPE_MESSAGE, ".google.protobuf.Duration"),
        ]
    )
    response = file.message_type.add(name="Response")
    response.field.extend(
        [
            _field("inner", 1, _F.TYPE_MESSAGE, ".transcode.test.Inner"),
            _field("tags", 2, _F.TYPE_STRING, repeated=True),
        ]
    )

    service = file.service.add(name="TestService")
    service.method.add(
        name="Call",
        input_type=".transcode.test.Request",
        output_type=".transcode.test.Response",
    )
    pool.Add(file)
    return pool


_POOL = _build_pool()
_METHOD = _POOL.FindServiceByName("transcode.test.TestService").methods_by_name["Call"]
Request = message_class(_METHOD.input_type)
Response = message_class(_METHOD.output_type)


def _route(template: str, body: str = "", method: str = "POST", response_body=""):
    return HttpRoute(method, parse_template(template), body, response_body, _METHOD)


def _build(route, path=None, query=(), body=b""):
    return build_request(route, Request, path or {}, query, body)


def _rejected(route, path=None, query=(), body=b"") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        _build(route, path, query, body)
    return caught.value


def test_path_and_whole_body():
    route = _route("/v1/{name=things/*}", body="*")

    request = _build(
        route, {"name": "things/t1"}, body=json.dumps({"tags": ["a"]}).encode()
    )

    assert request.name == "things/t1"
    assert list(request.tags) == ["a"]


def test_path_into_body_field():
    route = _route("/v1/{inner.name=things/*}", body="inner", method="PATCH")

    request = _build(route, {"inner.name": "things/t1"}, body=b'{"flag": true}')

    assert request.inner.name == "things/t1"
    assert request.inner.flag is True


def test_path_equal_to_body_accepted():
    route = _route("/v1/{name=things/*}", body="*")

    request = _build(route, {"name": "things/t1"}, body=b'{"name": "things/t1"}')

    assert request.name == "things/t1"


def test_path_conflicting_with_body_rejected():
    route = _route("/v1/{inner.name=things/*}", body="inner", method="PATCH")

    error = _rejected(route, {"inner.name": "things/t1"}, body=b'{"name": "things/t2"}')

    assert error.reason == "PATH_BODY_MISMATCH"
    assert error.field_violations[0].field == "inner.name"
    assert "things/t2" in error.message


def test_query_parameters_by_type():
    route = _route("/v1/things", method="GET")
    query = [
        ("tags", "a"),
        ("tags", "b"),
        ("inner.name", "nested"),
        ("inner.flag", "true"),
        ("inner.counts", "1"),
        ("inner.counts", "-2"),
        ("enabled", "1"),
        ("color", "COLOR_RED"),
        ("updateMask", "inner.name,start_time"),
        ("startTime", "2026-01-02T03:04:05Z"),
        ("ratio", "0.25"),
        ("big", "9007199254740993"),
        ("maybe", "false"),
        ("blob", "aGk="),
    ]

    request = _build(route, query=query)

    assert list(request.tags) == ["a", "b"]
    assert request.inner.name == "nested"
    assert request.inner.flag is True
    assert list(request.inner.counts) == [1, -2]
    assert request.enabled is True
    assert request.color == 1
    assert list(request.update_mask.paths) == ["inner.name", "start_time"]
    assert request.start_time.seconds == 1767323045
    assert request.ratio == 0.25
    assert request.big == 9007199254740993
    assert request.HasField("maybe")
    assert request.maybe.value is False
    assert request.blob == b"hi"


def test_query_original_and_json_names_equivalent():
    route = _route("/v1/things", method="GET")

    by_json = _build(route, query=[("startTime", "2026-01-02T03:04:05Z")])
    by_proto = _build(route, query=[("start_time", "2026-01-02T03:04:05Z")])

    assert by_json == by_proto


def test_enum_query_by_number():
    request = _build(_route("/v1/things", method="GET"), query=[("color", "1")])

    assert request.color == 1


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ([("nope", "1")], "nope", "UNKNOWN_FIELD"),
        ([("inner.nope", "1")], "inner.nope", "UNKNOWN_FIELD"),
        ([("tags.x", "1")], "tags.x", "UNKNOWN_FIELD"),
        ([("big", "12x")], "big", "INVALID_FIELD_TYPE"),
        ([("big", "1_000")], "big", "INVALID_FIELD_TYPE"),
        ([("enabled", "maybe")], "enabled", "INVALID_FIELD_TYPE"),
        ([("ratio", "fast")], "ratio", "INVALID_FIELD_TYPE"),
        ([("inner", "x")], "inner", "INVALID_FIELD_TYPE"),
        ([("name", "a"), ("name", "b")], "name", "DUPLICATE_FIELD"),
        ([("color", "COLOR_BLUE")], "color", "INVALID_FIELD_VALUE"),
    ],
)
def test_bad_query_parameter(query, field, reason):
    error = _rejected(_route("/v1/things", method="GET"), query=query)

    assert error.reason == reason
    assert error.field_violations[0].field == field


def test_query_message_parameter_lists_fields():
    error = _rejected(_route("/v1/things", method="GET"), query=[("inner", "x")])

    assert "transcode.test.Inner message" in error.message
    assert "inner.name, inner.flag, inner.counts" in error.message


def test_query_cannot_override_path():
    route = _route("/v1/{name=things/*}", method="GET")

    error = _rejected(route, {"name": "things/t1"}, query=[("name", "things/t2")])

    assert error.reason == "DUPLICATE_FIELD"


def test_repeated_query_parameter_named_with_value():
    error = _rejected(
        _route("/v1/things", method="GET"), query=[("name", "a"), ("name", "b")]
    )

    assert error.reason == "DUPLICATE_FIELD"
    assert "name is given more than once, last as 'b'" in str(error)
    assert "send the query parameter once" in str(error)


def test_query_cannot_set_body_field():
    route = _route("/v1/things", body="inner")

    error = _rejected(route, query=[("inner.name", "x")], body=b"{}")

    assert error.reason == "DUPLICATE_FIELD"


def test_whole_body_route_rejects_query():
    error = _rejected(_route("/v1/things", body="*"), query=[("name", "x")])

    assert error.reason == "UNEXPECTED_QUERY_PARAMETER"


def test_body_on_route_without_body_rejected():
    error = _rejected(_route("/v1/things", method="GET"), body=b'{"name": "x"}')

    assert error.reason == "UNEXPECTED_BODY"


@pytest.mark.parametrize("body", [b"{", b"[1, 2", b"\xff\xfe"])
def test_malformed_whole_body(body):
    error = _rejected(_route("/v1/things", body="*"), body=body)

    assert error.reason == "MALFORMED_JSON"


def test_body_invalid_utf8_names_bytes():
    error = _rejected(_route("/v1/things", body="*"), body=b'{"name": "a\xed\xa0\x80"}')

    assert error.reason == "MALFORMED_JSON"
    assert "not valid UTF-8: bytes 0xed" in error.message
    assert "at byte 11" in error.message


@pytest.mark.parametrize(
    ("body", "body_field", "field", "shown"),
    [
        (rb'{"name": "a\ud800b"}', "*", "name", "the string"),
        (rb'{"tags": ["ok", "\udc00"]}', "*", "tags[1]", "the string"),
        (
            rb'{"name": "x", "inner": {"name": "\udbff"}}',
            "*",
            "inner.name",
            "the string",
        ),
        (rb'{"name": "\ude00\ud83d"}', "inner", "inner.name", "the string"),
        (rb'{"a\ud800": 1}', "*", "body", r'the object key "a\ud800"'),
        (rb'{"inner": {"k\ud800": 1}}', "*", "inner", r'the object key "k\ud800"'),
        (rb'"\ud800"', "*", "body", "the string"),
    ],
)
def test_lone_surrogate_rejected(body, body_field, field, shown):
    error = _rejected(_route("/v1/things", body=body_field), body=body)

    assert error.reason == "INVALID_UNICODE"
    assert error.field_violations[0].field == field
    assert f"{field}: {shown} is not valid Unicode" in error.message
    assert "half of a surrogate pair" in error.message
    assert "send the character itself in UTF-8" in error.message


def test_surrogate_pair_accepted():
    message = _build(_route("/v1/things", body="*"), body=rb'{"name": "\ud83d\ude00"}')

    assert message.name == "\U0001f600"


@pytest.mark.parametrize(
    ("raw", "items"),
    [
        (b"", []),
        (b"a=1&b=x+y%20z", [("a", "1"), ("b", "x y z")]),
        (b"a=%C3%A9&a=\xc3\xa9", [("a", "\u00e9"), ("a", "\u00e9")]),
        (b"flag&&b=&c=%3D%26", [("flag", ""), ("b", ""), ("c", "=&")]),
        (b"na%6De=v", [("name", "v")]),
    ],
)
def test_query_string_decoded(raw, items):
    assert parse_query_string(raw) == items


@pytest.mark.parametrize(
    ("raw", "field", "bad", "offset"),
    [
        (b"services=k-spark&keyword=%FF%FE", "keyword", "%FF", 0),
        (b"services=%C3", "services", "%C3", 0),
        (b"keyword=%ED%A0%80", "keyword", "%ED", 0),
        (b"keyword=ab\xff", "keyword", "%FF", 2),
        (b"ke%FFy=1", "ke%FFy", "%FF", 2),
    ],
)
def test_query_string_invalid_utf8(raw, field, bad, offset):
    with pytest.raises(InvalidArgument) as caught:
        parse_query_string(raw)

    error = caught.value
    assert error.reason == "INVALID_UTF8"
    assert error.field_violations[0].field == field
    assert f"{field!r} is not valid UTF-8" in error.message
    assert f"the bytes {bad}" in error.message
    assert f"at byte {offset} " in error.message
    assert "percent-encode the text as UTF-8" in error.message


@pytest.mark.parametrize(
    ("body", "received"),
    [
        (b'"str"', 'the string "str"'),
        (b"[1, 2]", "an array of 2 items"),
        (b"42", "the number 42"),
        (b"null", "null"),
    ],
)
@pytest.mark.parametrize(("body_field", "field"), [("*", "body"), ("inner", "inner")])
def test_body_not_object(body, received, body_field, field):
    error = _rejected(_route("/v1/things", body=body_field), body=body)

    assert error.reason == "BODY_NOT_OBJECT"
    assert error.field_violations[0].field == field
    assert "request body must be a JSON object" in error.message
    assert received in error.message


@pytest.mark.parametrize(
    ("body", "field", "reason", "expected"),
    [
        (
            b'{"startTime": "yesterday"}',
            "start_time",
            "INVALID_FIELD_VALUE",
            "RFC 3339",
        ),
        (b'{"startTime": 5}', "start_time", "INVALID_FIELD_TYPE", "RFC 3339"),
        (b'{"big": "x"}', "big", "INVALID_FIELD_TYPE", "an integer"),
        (b'{"big": "99999999999999999999"}', "big", "INVALID_FIELD_VALUE", "integer"),
        (b'{"ratio": "abc"}', "ratio", "INVALID_FIELD_TYPE", "a number"),
        (b'{"color": "BLUE"}', "color", "INVALID_FIELD_VALUE", "COLOR_RED"),
        (b'{"enabled": "yes"}', "enabled", "INVALID_FIELD_TYPE", "true or false"),
        (b'{"tags": "one"}', "tags", "INVALID_FIELD_TYPE", "a JSON array"),
        (b'{"tags": ["a", 2]}', "tags[1]", "INVALID_FIELD_TYPE", "a string"),
        (b'{"inner": 5}', "inner", "INVALID_FIELD_TYPE", "transcode.test.Inner"),
        (b'{"inner": {"counts": ["a"]}}', "inner.counts[0]", "INVALID_FIELD_TYPE", "a"),
        (b'{"name": 5}', "name", "INVALID_FIELD_TYPE", "a string"),
        (b'{"updateMask": 3}', "update_mask", "INVALID_FIELD_TYPE", "field paths"),
        (b'{"maybe": "x"}', "maybe", "INVALID_FIELD_TYPE", "true or false"),
        (
            b'{"byId": [1]}',
            "by_id",
            "INVALID_FIELD_TYPE",
            "a JSON object with integer keys, each value a string, got an array",
        ),
        (
            b'{"limits": "x"}',
            "limits",
            "INVALID_FIELD_TYPE",
            'a JSON object with "true" or "false" keys, each value an integer '
            "from -9223372036854775808 to 9223372036854775807, as a JSON number "
            "or string, or null, got",
        ),
        (b'{"byId": {"x": "a"}}', 'by_id["x"]', "INVALID_FIELD_TYPE", "integer"),
        (
            b'{"startTime": "2026-12-06T14:00:00+25:00"}',
            "start_time",
            "INVALID_FIELD_VALUE",
            "offset +25:00 is out of range",
        ),
        (
            b'{"startTime": "2026-12-06T14:00:00-00:61"}',
            "start_time",
            "INVALID_FIELD_VALUE",
            "offset -00:61 is out of range",
        ),
        (
            b'{"startTime": "2026-12-06T14:00:00.Z"}',
            "start_time",
            "INVALID_FIELD_VALUE",
            "the '.' has no digits after it",
        ),
        (b'{"step": "1.0000000001s"}', "step", "INVALID_FIELD_VALUE", "9 digits"),
        (b'{"step": "1.s"}', "step", "INVALID_FIELD_VALUE", "no digits after it"),
        (b'{"step": "+1s"}', "step", "INVALID_FIELD_VALUE", "1 to 9 fraction"),
        (b'{"step": "315576000001s"}', "step", "INVALID_FIELD_VALUE", "315576000000s"),
    ],
)
def test_wrong_value_names_field_and_type(body, field, reason, expected):
    error = _rejected(_route("/v1/things", body="*"), body=body)

    violation = error.field_violations[0]
    assert violation.field == field
    assert error.reason == reason
    assert expected in violation.description
    for internal in ("invalid literal", "does not match format", "object is not"):
        assert internal not in error.message


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-12-06T14:00:00+23:59", "2026-12-05T14:01:00Z"),
        ("2026-12-06T14:00:00-23:59", "2026-12-07T13:59:00Z"),
        ("2026-12-06t14:00:00.000000001z", "2026-12-06T14:00:00.000000001Z"),
    ],
)
@pytest.mark.parametrize("where", ["body", "query"])
def test_timestamp_read_as_its_instant(text, utc, where):
    if where == "body":
        body = json.dumps({"startTime": text}).encode()
        request = _build(_route("/v1/things", body="*"), body=body)
    else:
        request = _build(
            _route("/v1/things", method="GET"), query=[("startTime", text)]
        )

    assert request.start_time.ToJsonString() == utc


def test_proto_and_json_name_together_rejected():
    body = (
        b'{"startTime": "2026-01-31T12:00:00Z", "start_time": "2026-01-31T12:00:00Z"}'
    )

    error = _rejected(_route("/v1/things", body="*"), body=body)

    assert error.reason == "DUPLICATE_FIELD"
    assert error.field_violations[0].field == "start_time"


def test_valid_values_of_every_type_accepted():
    body = json.dumps(
        {
            "startTime": "2026-01-31T12:00:00Z",
            "big": "9223372036854775807",
            "ratio": "NaN",
            "color": "COLOR_RED",
            "tags": ["a", "b"],
            "inner": {"counts": [1, "2"], "flag": True},
            "updateMask": "name,startTime",
            "maybe": None,
            "blob": "aGk=",
        }
    ).encode()

    request = _build(_route("/v1/things", body="*"), body=body)

    assert request.big == 2**63 - 1
    assert request.start_time.seconds > 0
    assert list(request.inner.counts) == [1, 2]
    assert request.blob == b"hi"


def test_unknown_body_field_named():
    error = _rejected(_route("/v1/things", body="inner"), body=b'{"colour": 1}')

    assert error.reason == "UNKNOWN_FIELD"
    assert error.field_violations[0].field == "inner.colour"
    assert "counts" in error.message


def test_empty_body_means_empty_message():
    request = _build(_route("/v1/things", body="*"), body=b"  ")

    assert request == Request()


def test_response_json_whole_and_field():
    response = Response(inner={"name": "n", "counts": [5]}, tags=["t"])

    whole = response_json(_route("/v1/things"), response)
    inner = response_json(_route("/v1/things", response_body="inner"), response)
    tags = response_json(_route("/v1/things", response_body="tags"), response)

    assert whole == {"inner": {"name": "n", "counts": ["5"]}, "tags": ["t"]}
    assert inner == {"name": "n", "counts": ["5"]}
    assert tags == ["t"]


EXACT = 1796454162487453497


@pytest.mark.parametrize(
    "written",
    [
        b"1796454162487453497.0",
        b"1796454162487453497e0",
        b"17964541624874534.97e2",
        b'"1796454162487453497.0"',
        b'"1.796454162487453497E18"',
    ],
)
def test_int64_with_fraction_or_exponent_exact(written):
    body = b'{"big": %s, "inner": {"counts": [%s, 2.0]}}' % (written, written)

    request = _build(_route("/v1/things", body="*"), body=body)

    assert request.big == EXACT
    assert list(request.inner.counts) == [EXACT, 2]


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        (b"1796454162487453497.5", "the number 1796454162487453497.5"),
        (b'"1796454162487453497.5"', 'the string "1796454162487453497.5"'),
        (b"1.5", "the number 1.5"),
        (b"9.3e18", "the number 9.3e18"),
        (b'"1e999999999"', 'the string "1e999999999"'),
        (b"-1e999999999", "the number -1e999999999"),
    ],
)
def test_int64_not_exact_integer_rejected(written, shown):
    error = _rejected(_route("/v1/things", body="*"), body=b'{"big": %s}' % written)

    assert error.reason == "INVALID_FIELD_VALUE"
    assert error.field_violations[0].field == "big"
    assert shown in error.message
    assert "an integer from" in error.message


@pytest.mark.parametrize(
    "written",
    [b"9" * 5000, b'"%s"' % (b"9" * 5000), b"-" + b"1" * 4400],
    ids=["number", "string", "negative"],
)
def test_int64_of_thousands_of_digits_rejected(written):
    error = _rejected(_route("/v1/things", body="*"), body=b'{"big": %s}' % written)

    assert error.reason == "INVALID_FIELD_VALUE"
    assert error.field_violations[0].field == "big"
    assert "an integer from" in error.message


def test_unknown_field_of_thousands_of_digits_rejected():
    error = _rejected(
        _route("/v1/things", body="*"), body=b'{"junk": %s}' % (b"9" * 5000)
    )

    assert error.reason == "UNKNOWN_FIELD"


def test_double_with_exponent_still_float():
    request = _build(_route("/v1/things", body="*"), body=b'{"ratio": 1.5e3}')

    assert request.ratio == 1500.0
