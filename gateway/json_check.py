"""Check a proto3 JSON tree against a message type before it is parsed.

`json_format.ParseDict` reports a wrong value with text from Python internals
("invalid literal for int() with base 10", "time data ... does not match
format") and often without the field. `check_message` walks the tree first and
raises an InvalidArgument whose message names the field path, the JSON value
received and the JSON form that the field expects.

Field paths in errors use the proto field names, as the gRPC API's errors do
(`user.create_time`, `splits[2].amount`), whichever of the two JSON names the
client sent. A key that names no field is written as sent, and a map key in
brackets (`attributes["k"]`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from itertools import accumulate
from typing import Any

from google.protobuf import duration_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    OneofDescriptor,
)

from log_service import timefmt
from splitlog_runtime.errors import InvalidArgument, invalid_field

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
# Largest finite value of a 32-bit float.
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})
_DIGITS = re.compile(r"-?[0-9]+\Z")
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_MONEY = "google.type.Money"
_BASIS_POINTS = "splitlog.expenses.v1.SplitParticipant.basis_points"
_NANOS_PER_UNIT = 10**9
# Digits of Decimal precision for adding nanos to a units value.
_DECIMAL_DIGITS = 100
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_FIELD_MASK = "google.protobuf.FieldMask"
# The JSON form of a Duration, with the digits of the fraction in group 1.
_DURATION_FORM = re.compile(r"-?[0-9]+(?:\.([0-9]*))?s")
# The range of google.protobuf.Timestamp in ns since the Unix epoch:
# 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
# A calendar date alone, which a Timestamp needs a time and a zone added to.
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP_MIN_NS = -62_135_596_800 * _NANOS_PER_UNIT
_TIMESTAMP_MAX_NS = 253_402_300_800 * _NANOS_PER_UNIT - 1
TIMESTAMP_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z"
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool")
    + ("String", "Bytes")
)
# Well-known types whose JSON form is any value or a special object; the
# parser checks them itself.
_FREE_FORM = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
    }
)
_SHOWN_CHARACTERS = 40


class JsonNumber(float):
    """A JSON number with a fraction or exponent, which keeps its source text.

    Pass the class as `parse_float` to `json.loads`. The value acts as the
    float that `json.loads` would return, but `text` lets an integer field
    read the exact value, which a float rounds above 2**53.
    """

    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


# Digits an integer may have before it is kept as text. Every integer field
# ends below 2**64 (20 digits); Python refuses to convert more than 4,300.
_MAX_INT_DIGITS = 40


def parse_json_int(text: str) -> int | JsonNumber:
    """Return a JSON integer, or a `JsonNumber` when it has too many digits.

    Pass it as `parse_int` to `json.loads`, so that a number of thousands of
    digits fails the field checks instead of Python's conversion limit.
    """
    if len(text) > _MAX_INT_DIGITS:
        return JsonNumber(text)
    return int(text)


class _NonJsonConstant:
    """A `NaN`, `Infinity` or `-Infinity` literal, which `json.loads` accepts."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _Pairs(list):
    """The key-value pairs of one JSON object in order, repeated keys kept."""


#: Deepest nesting of arrays and objects that a JSON body may have: the
#: depth at which protobuf's json_format stops by default, far beyond any
#: request message. `decode_json` checks it before it decodes anything.
MAX_JSON_DEPTH = 100

# A JSON string, or an unterminated one up to the end of the text, whose
# brackets do not nest anything.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_CHANGE = {"[": 1, "{": 1, "]": -1, "}": -1}
_DEPTH_CHUNK = 64 * 1024


def nests_too_deeply(text: str) -> bool:
    """Return whether JSON text nests deeper than `MAX_JSON_DEPTH`, undecoded.

    On text that is not JSON, the brackets outside strings are counted.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        # Too few brackets to pass the limit, whatever the nesting.
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    # Chunks let a body of millions of brackets stop at the first one.
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        chunk = brackets[start : start + _DEPTH_CHUNK]
        levels = list(accumulate(map(_DEPTH_CHANGE.__getitem__, chunk), initial=depth))
        if max(levels) > MAX_JSON_DEPTH:
            return True
        depth = levels[-1]
    return False


def too_deep() -> InvalidArgument:
    """Build the error for a JSON body nested deeper than `MAX_JSON_DEPTH`."""
    return invalid_field(
        "body",
        f"the request body nests arrays and objects more than {MAX_JSON_DEPTH} "
        "levels deep, the gateway's limit for JSON bodies; send a body that "
        f"nests at most {MAX_JSON_DEPTH} levels deep",
        reason="MALFORMED_JSON",
    )


def decode_json(text: str, path: str = "", descriptor: Descriptor | None = None) -> Any:
    """Decode JSON text with exact numbers, rejecting repeated object keys.

    `path` is the field path of the whole text in the request, if any, and
    `descriptor` its message type, which turns the keys of error paths into
    proto field names.

    `json.loads` keeps the last of two equal keys, so `{"units": "1",
    "units": "1000"}` would silently mean 1000. A repeated key is rejected at
    any depth, whatever field it names. `json.loads` also reads the literals
    `NaN`, `Infinity` and `-Infinity`, which RFC 8259 does not allow.

    Raises:
      json.JSONDecodeError: the text is not JSON.
      InvalidArgument: the text nests deeper than `MAX_JSON_DEPTH`, an
        object repeats a key (reason DUPLICATE_FIELD), or a value is a NaN
        or Infinity literal (reason MALFORMED_JSON). The message names the
        path, such as `expense.total.units`.
    """
    if nests_too_deeply(text):
        raise too_deep()
    invalid = False

    def constant(literal: str) -> _NonJsonConstant:
        nonlocal invalid
        invalid = True
        return _NonJsonConstant(literal)

    def object_from_pairs(pairs: list[tuple[str, Any]]) -> dict:
        nonlocal invalid
        decoded = dict(pairs)
        if len(decoded) < len(pairs):
            invalid = True
        return decoded

    tree = _loads(text, object_from_pairs, constant)
    if invalid:
        raise _first_invalid_value(text, path, descriptor)
    return tree


def _loads(
    text: str,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any],
    parse_constant: Callable[[str], Any],
) -> Any:
    """Decode JSON text with exact numbers (`JsonNumber`, `parse_json_int`)."""
    return json.loads(
        text,
        parse_float=JsonNumber,
        parse_int=parse_json_int,
        object_pairs_hook=object_pairs_hook,
        parse_constant=parse_constant,
    )


def _first_invalid_value(
    text: str, path: str, descriptor: Descriptor | None
) -> InvalidArgument:
    """Build the error for the first repeated key or NaN literal in the text.

    The text is decoded again with every pair of every object kept, because
    a later repeat of a key replaces the object that held the first problem,
    and its path would be lost.
    """
    tree = _loads(text, _Pairs, _NonJsonConstant)
    located = _find_invalid(tree, [])
    # The first decode found a repeated key or a literal, so this one does.
    assert located is not None
    segments, found = located
    where = proto_path(descriptor, segments, path)
    if isinstance(found, _NonJsonConstant):
        return invalid_field(
            where or "body",
            f"the request body is not valid JSON: {found.literal} at "
            f"{where or 'the top level'} is not a JSON value (RFC 8259 has no "
            "NaN or Infinity); send a number, or for a floating-point field "
            f'the string "{found.literal}"',
            reason="MALFORMED_JSON",
        )
    return invalid_field(
        where,
        f"{found!r} appears more than once in one JSON object, and the "
        "gateway does not guess which value is meant; send each field once",
        reason="DUPLICATE_FIELD",
    )


def _find_invalid(
    node: Any, segments: list[str | int]
) -> tuple[list[str | int], _NonJsonConstant | str] | None:
    """Find the first repeated key or NaN literal under `node`, in text order.

    Returns:
      the path of the literal and the literal, or the path of the repeated
      key, ending with the key, and the key; None when there is neither.
      `node` nests at most `MAX_JSON_DEPTH` levels, so the recursion stays
      shallow.
    """
    if isinstance(node, _NonJsonConstant):
        return segments, node
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            if key in seen:
                return [*segments, key], key
            seen.add(key)
            found = _find_invalid(value, [*segments, key])
            if found is not None:
                return found
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found = _find_invalid(item, [*segments, index])
            if found is not None:
                return found
    return None


def proto_path(
    descriptor: Descriptor | None, segments: list[str | int], base: str = ""
) -> str:
    """Write a path of JSON keys and array indexes with proto field names.

    Args:
      descriptor: the message type at the start of the path, or None to
        write every key as it is.
      segments: the JSON object keys and array indexes, in order.
      base: the path of the start, prefixed to the result.

    A key that is no field of its message is written as it is, and so is
    every key below it.
    """
    path = base
    message = descriptor
    map_field: FieldDescriptor | None = None
    for segment in segments:
        if isinstance(segment, int):
            path += f"[{segment}]"
            continue
        if map_field is not None:
            path += f"[{json.dumps(segment, ensure_ascii=False)}]"
            message = map_field.message_type.fields_by_name["value"].message_type
            map_field = None
            continue
        field = None
        if message is not None and message.full_name not in _FREE_FORM:
            field = message.fields_by_name.get(segment) or _by_json_name(
                message, segment
            )
        path = _join_key(path, segment if field is None else field.name)
        message = None if field is None else field.message_type
        if field is not None and _is_map(field):
            map_field = field
    return path


_PATH_SEGMENT = re.compile(r'\[([0-9]+)\]|\[("(?:[^"\\]|\\.)*")\]|\.?([^.\[\]]+)')


def split_path(text: str) -> list[str | int]:
    """Split a field path such as `a.b[0]["k"]` into its keys and indexes."""
    segments: list[str | int] = []
    for index, quoted, key in _PATH_SEGMENT.findall(text):
        if index:
            segments.append(int(index))
        elif quoted:
            segments.append(json.loads(quoted))
        else:
            segments.append(key)
    return segments


def _join_key(path: str, key: str) -> str:
    """Append an object key to a path, in brackets unless it is an identifier."""
    if _IDENTIFIER.match(key):
        return _join(path, key)
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def check_message(tree: Any, descriptor: Descriptor, path: str = "") -> None:
    """Check that `tree` is a JSON object that parses as `descriptor`.

    Args:
      tree: the decoded JSON value.
      descriptor: the message type it should parse as.
      path: the field path of `tree` in the request, empty for the request.

    An integer written with a fraction or exponent (`1.0`, `"5e2"`) is
    replaced in `tree` by its exact int, because `json_format.ParseDict`
    converts it through a float.

    Raises:
      InvalidArgument: a field is unknown, has a value of the wrong JSON
        type or format, or is a second member of a oneof. The field
        violation names the field path.
    """
    if not isinstance(tree, dict):
        raise _wrong_type(path or "body", expected_json(descriptor), tree)
    if descriptor.full_name == _MONEY:
        _check_money_units(tree, descriptor, path)
    seen: dict[str, str] = {}
    # The member set so far of each oneof, by oneof name; null sets none.
    oneof_members: dict[str, FieldDescriptor] = {}
    for key, value in list(tree.items()):
        field = descriptor.fields_by_name.get(key) or _by_json_name(descriptor, key)
        if field is None:
            known = ", ".join(f.name for f in descriptor.fields)
            raise invalid_field(
                _join_key(path, key),
                f"unknown field {key!r} in {descriptor.full_name}; known fields: "
                f"{known}",
                reason="UNKNOWN_FIELD",
            )
        if field.name in seen:
            raise invalid_field(
                _join(path, field.name),
                f"{key!r} and {seen[field.name]!r} name the same field of "
                f"{descriptor.full_name}; send only one of them",
                reason="DUPLICATE_FIELD",
            )
        seen[field.name] = key
        oneof = field.containing_oneof
        if oneof is not None and value is not None:
            if oneof.name in oneof_members:
                raise _oneof_conflict(path, tree, descriptor, oneof)
            oneof_members[oneof.name] = field
        tree[key] = _check_field(value, field, _join(path, field.name))


def _oneof_conflict(
    path: str, tree: dict[str, Any], descriptor: Descriptor, oneof: OneofDescriptor
) -> InvalidArgument:
    """Build the error for a oneof with two or more members set in `tree`.

    The message names every member that `tree` sets to a value other than
    null, in the order of the object's keys.
    """
    chosen = []
    for key, value in tree.items():
        field = descriptor.fields_by_name.get(key) or _by_json_name(descriptor, key)
        if field is not None and field.containing_oneof == oneof and value is not None:
            chosen.append(field.name)
    if len(chosen) == 2:
        sets = f"sets both {chosen[0]} and {chosen[1]}"
    else:
        sets = "sets " + ", ".join(chosen[:-1]) + f" and {chosen[-1]}"
    members = [field.name for field in oneof.fields]
    choices = ", ".join(members[:-1]) + f" or {members[-1]}"
    return invalid_field(
        path or "body",
        f"{sets}, which are members of the oneof {oneof.name} of "
        f"{oneof.containing_type.full_name} and exclude each other; give "
        f"exactly one of {choices}",
        reason="MULTIPLE_ONEOF_FIELDS",
    )


def expected_json(descriptor: Descriptor) -> str:
    """Describe the JSON form of a message, e.g. for an error message."""
    return f"a JSON object with the fields of {descriptor.full_name}"


def describe_json(value: Any) -> str:
    """Describe a decoded JSON value briefly: its JSON type and a short excerpt."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonNumber):
        return f"the number {value.text}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        excerpt = value[:_SHOWN_CHARACTERS] + (
            "..." if len(value) > _SHOWN_CHARACTERS else ""
        )
        return f"the string {json.dumps(excerpt, ensure_ascii=False)}"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    return "an object"


def integer_range(field: FieldDescriptor) -> tuple[int, int]:
    """Return the lowest and highest value of an integer field."""
    return _INT_RANGES[field.type]


def _by_json_name(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    for field in descriptor.fields:
        if field.json_name == name:
            return field
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _check_field(value: Any, field: FieldDescriptor, path: str) -> Any:
    """Check the value of a field and return it, with integers made exact."""
    if value is None:
        # null leaves a field unset, as the proto3 JSON mapping prescribes.
        return value
    if _is_map(field):
        _check_map(value, field, path)
    elif field.is_repeated:
        if not isinstance(value, list):
            raise _wrong_type(
                path, f"a JSON array, each item {_expected(field)}", value
            )
        for index, item in enumerate(value):
            value[index] = _check_single(item, field, f"{path}[{index}]")
    else:
        value = _check_single(value, field, path)
    return value


def _check_map(value: Any, field: FieldDescriptor, path: str) -> None:
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    if not isinstance(value, dict):
        expected = (
            f"a JSON object with {_key_kind(key_field)} keys, each value "
            f"{_expected(value_field)}"
        )
        raise _wrong_type(path, expected, value)
    for key, item in value.items():
        item_path = f"{path}[{json.dumps(key, ensure_ascii=False)}]"
        if key_field.type in _INT_RANGES and _integer(key) is None:
            raise _wrong_type(item_path, "a key that is an integer", key)
        if key_field.type == FieldDescriptor.TYPE_BOOL and key not in (
            "true",
            "false",
        ):
            raise _wrong_type(item_path, 'a key "true" or "false"', key)
        value[key] = _check_single(item, value_field, item_path)


def _key_kind(key_field: FieldDescriptor) -> str:
    """Describe the keys of a map field, which JSON writes as strings."""
    if key_field.type in _INT_RANGES:
        return "integer"
    if key_field.type == FieldDescriptor.TYPE_BOOL:
        return '"true" or "false"'
    return "string"


def _check_single(value: Any, field: FieldDescriptor, path: str) -> Any:
    """Check one value of a field (for a repeated field, one element); return it.

    An integer with a fraction or exponent comes back as its exact int.
    """
    message = field.message_type
    if message is not None:
        return _check_message_value(value, field, message, path)
    if field.enum_type is not None:
        _check_enum(value, field.enum_type, path)
        return value
    return _check_scalar(value, field, path)


def _check_message_value(
    value: Any, field: FieldDescriptor, message: Descriptor, path: str
) -> Any:
    name = message.full_name
    if name in _FREE_FORM:
        return value
    if name in _WRAPPERS:
        if value is None:
            return value
        return _check_scalar(value, message.fields_by_name["value"], path)
    if name in (_TIMESTAMP, _DURATION, _FIELD_MASK):
        if not isinstance(value, str):
            raise _wrong_type(path, _expected(field), value)
        if name == _TIMESTAMP:
            return _check_timestamp(value, field, path)
        if name == _DURATION:
            _check_duration(value, field, path)
        return value
    if value is None:
        raise _wrong_type(path, _expected(field), value)
    check_message(value, message, path)
    return value


def timestamp_in_range(ns: int) -> bool:
    """Return whether an instant in ns since the Unix epoch fits a Timestamp."""
    return _TIMESTAMP_MIN_NS <= ns <= _TIMESTAMP_MAX_NS


def _check_timestamp(value: str, field: FieldDescriptor, path: str) -> str:
    """Check an RFC 3339 timestamp and return it in UTC with `Z`.

    protobuf's own parser (7.36) reads `+25:00` as 25 hours, `-00:61` as 61
    minutes and `14:00:00.Z` as whole seconds. The gateway reads the text
    with `timefmt.parse_rfc3339` instead and passes on the instant in the
    one form that both parsers read alike.
    """
    try:
        ns = timefmt.parse_rfc3339(value)
    except timefmt.TimeFormatError as error:
        raise _wrong_value(
            path, _expected(field), value, _timestamp_fix(value, error.detail)
        ) from None
    if not timestamp_in_range(ns):
        raise _wrong_value(
            path,
            _expected(field),
            value,
            "; that is outside the range of a google.protobuf.Timestamp, "
            f"{TIMESTAMP_RANGE}",
        )
    return timefmt.format_time(ns)


def _timestamp_fix(value: str, detail: str) -> str:
    """Return the part of a timestamp error that follows the value.

    When the text has another form, `detail` only restates the form that
    `_expected` already gives, so it is left out.
    """
    if _DATE_ONLY.fullmatch(value):
        return f"; add a time and a zone, such as {value}T00:00:00Z"
    if detail == f"expected {timefmt.RFC3339_FORM}":
        return ""
    return f"; {detail}"


def _check_duration(value: str, field: FieldDescriptor, path: str) -> None:
    """Check the JSON form of a duration, which protobuf reads too loosely.

    protobuf (7.36) cuts a fraction beyond nanoseconds and takes `1.s`, `+1s`
    and ` 1s`, so the form is checked here and the range by protobuf.
    """
    match = _DURATION_FORM.fullmatch(value)
    if match is None:
        raise _wrong_value(path, _expected(field), value)
    fraction = match[1]
    if fraction == "":
        raise _wrong_value(
            path, _expected(field), value, "; the '.' has no digits after it"
        )
    if fraction is not None and len(fraction) > 9:
        raise _wrong_value(
            path,
            _expected(field),
            value,
            "; the fraction of a second has more than 9 digits, and nanoseconds "
            "are the finest unit",
        )
    try:
        duration_pb2.Duration().FromJsonString(value)
    except ValueError:
        raise _wrong_value(path, _expected(field), value) from None


def _check_enum(value: Any, enum: EnumDescriptor, path: str) -> None:
    if isinstance(value, str):
        # A query parameter carries an enum number as a string.
        if value not in enum.values_by_name and not _DIGITS.match(value):
            raise _wrong_value(path, _enum_expected(enum), value)
        number = None if value in enum.values_by_name else _integer(value)
    elif not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(path, _enum_expected(enum), value)
    else:
        number = value
    # An enum is an int32 on the wire, so json_format rejects other numbers.
    low, high = _INT_RANGES[FieldDescriptor.TYPE_INT32]
    if number is not None and not low <= number <= high:
        values = ", ".join(f"{item.name} = {item.number}" for item in enum.values)
        raise _wrong_value(
            path,
            f"one of the {enum.full_name} values ({values}) by name or number",
            value,
        )


def _check_scalar(value: Any, field: FieldDescriptor, path: str) -> Any:
    """Check a scalar value and return it, or the exact int of an integer field."""
    kind = field.type
    if value is None:
        raise _wrong_type(path, _expected(field), value)
    if kind in _INT_RANGES:
        if not _is_number(value):
            raise _wrong_type(path, _expected(field), value)
        number = _integer(value)
        low, high = _INT_RANGES[kind]
        if number is None:
            fix = _basis_points_fix(value) if field.full_name == _BASIS_POINTS else ""
            raise _wrong_value(path, _expected(field), value, fix)
        if not low <= number <= high:
            raise _wrong_value(path, _expected(field), value)
        return value if isinstance(value, int) else number
    if kind in _FLOAT_TYPES:
        _check_float(value, field, path)
    elif kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _wrong_type(path, _expected(field), value)
    elif not isinstance(value, str):
        raise _wrong_type(path, _expected(field), value)
    return value


def _basis_points_fix(value: Any) -> str:
    """Return how to write a percentage that was sent with a fraction of a
    basis point, such as 3333.3 for a third."""
    exact = _exact_decimal(value)
    if exact is None or exact.adjusted() >= 19:
        return ""
    rounded = exact.to_integral_value(rounding=ROUND_HALF_EVEN)
    fix = (
        "; basis_points is hundredths of a percent, a whole number from 0 to "
        "10000 (33.33 % is 3333)"
    )
    if 0 <= rounded <= 10000:
        # Half-even rounding keeps the sign, so -0.5 would read "send -0".
        fix += f", so send {abs(rounded)}"
    percent = exact * 100
    if 0 < exact <= 100 and percent == percent.to_integral_value():
        fix += f", or {int(percent)} if {exact} is the percentage"
    return (
        f"{fix}. A participant without a value takes an equal part of what the "
        "others leave, and SPLIT_TYPE_SHARES with equal shares splits into thirds"
    )


def _check_float(value: Any, field: FieldDescriptor, path: str) -> None:
    if isinstance(value, str):
        if value in _FLOAT_WORDS:
            return
        if not _NUMBER.match(value):
            raise _wrong_type(path, _expected(field), value)
        number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise _wrong_type(path, _expected(field), value)
    limit = _FLOAT32_MAX if field.type == FieldDescriptor.TYPE_FLOAT else math.inf
    if not abs(number) <= limit:
        raise _wrong_value(path, _expected(field), value)


def _check_money_units(tree: dict[str, Any], descriptor: Descriptor, path: str) -> None:
    """Reject a `google.type.Money` whose units has a fraction, with the fix.

    The fix combines the fraction with any `nanos` in the same object, so
    that it gives the whole amount the client wrote.

    A units string must also be a plain integer such as "-1000". The proto3
    JSON parser also reads "1e3", "10.0" and "+1000" as integers, but other
    clients of the gRPC API, such as grpcurl, reject them, and an amount
    should read the same everywhere.
    """
    units = tree.get("units")
    if units is None or not _is_number(units):
        return
    field = descriptor.fields_by_name["units"]
    whole = _integer(units)
    if whole is None:
        fix = _money_units_fix(units, tree.get("nanos"))
        raise _wrong_value(_join(path, "units"), _expected(field), units, fix)
    if isinstance(units, str) and not _DIGITS.match(units):
        low, high = _INT_RANGES[field.type]
        fix = f', such as "{whole}"' if low <= whole <= high else ""
        raise invalid_field(
            _join(path, "units"),
            f"expected a plain integer string of whole units, got "
            f"{describe_json(units)}; write it with digits and an optional "
            f"leading minus sign only, without exponent, fraction or plus "
            f"sign{fix}",
            reason="INVALID_FIELD_VALUE",
        )


def _exact_decimal(value: Any) -> Decimal | None:
    """Return a JSON number, or a string that writes one, as an exact Decimal."""
    if not _is_number(value):
        return None
    text = value.text if isinstance(value, JsonNumber) else str(value)
    try:
        exact = Decimal(text)
    except InvalidOperation:
        return None
    return exact if exact.is_finite() else None


def _money_units_fix(units_value: Any, nanos_value: Any) -> str:
    """Return how to write a `google.type.Money` whose units has a fraction.

    `units` contains whole units and `nanos` the fraction in billionths,
    from -999,999,999 to 999,999,999, with the same sign as `units`. A
    `nanos` that the client sent is added to the amount, so a fraction of
    nanos beyond one unit carries into units. Returns an empty string when
    the whole part is beyond int64, because the range in the message is
    then the fix.
    """
    units = _exact_decimal(units_value)
    if units is None or units.adjusted() >= 19:
        return ""
    amount = units
    if nanos_value is not None:
        nanos = _exact_decimal(nanos_value)
        if nanos is None or nanos != nanos.to_integral_value():
            return (
                f"; put the fraction in nanos, which must be an integer number "
                f"of billionths of a unit, but nanos is {describe_json(nanos_value)}"
            )
        if abs(nanos) >= _NANOS_PER_UNIT:
            return (
                f"; put the fraction in nanos, which must be from -999999999 "
                f"to 999999999, but nanos is {int(nanos)}"
            )
        if units * nanos < 0:
            return (
                f"; units {units} and nanos {int(nanos)} have "
                "opposite signs, but they must have the same sign, so send the "
                "amount as whole units in units and the fraction in nanos"
            )
        # Units is below 10**19 here, so 100 digits keep the sum exact for a
        # units written with up to 80 digits after the point.
        with localcontext(prec=_DECIMAL_DIGITS):
            amount = units + nanos / _NANOS_PER_UNIT
    if amount.adjusted() >= 19:
        return ""
    whole = int(amount)  # Truncates toward zero, so nanos keeps the sign.
    fraction = (amount - whole) * _NANOS_PER_UNIT
    if fraction != fraction.to_integral_value():
        return (
            "; put the fraction in nanos, in billionths of a unit, which "
            "holds at most 9 decimal digits"
        )
    if nanos_value is None:
        return f"; put the fraction in nanos: units {whole}, nanos {int(fraction)}"
    return (
        f"; put the fraction in nanos, added to the nanos sent: units {whole}, "
        f"nanos {int(fraction)}"
    )


def _is_number(value: Any) -> bool:
    """Return whether a JSON value is a number, or a string that writes one."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and _NUMBER.match(value) is not None


def _integer(value: Any) -> int | None:
    """Return the exact integer that a JSON number or string is, or None.

    The value is read from its text, without a float, so that
    `1796454162487453497.0` and `"17964541624874534.97e2"` give exact
    integers. None means a value that is not a number or not an integer (`1.5`).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, JsonNumber):
        text = value.text
    elif isinstance(value, float):
        # A float from elsewhere than `json.loads` with JsonNumber.
        return int(value) if value.is_integer() else None
    elif isinstance(value, str) and _NUMBER.match(value):
        text = value
    else:
        return None
    if _DIGITS.match(text):
        # Too many digits for any integer field, and for Python's `int`.
        return int(text) if len(text) <= _MAX_INT_DIGITS else 2**64
    try:
        exact = Decimal(text)
    except InvalidOperation:
        return None
    # `int` of a large exponent such as 1e999999999 would build a huge
    # integer. Every integer field type ends below 2**64, so 2**64 is
    # returned for any integer of more than 40 digits, and fails the range check.
    if exact.adjusted() >= 40:
        return 2**64
    if exact != exact.to_integral_value():
        return None
    return int(exact)


def _expected(field: FieldDescriptor) -> str:
    """Describe the JSON form of one value of a field (an element if repeated)."""
    message = field.message_type
    if message is not None:
        name = message.full_name
        if name == _TIMESTAMP:
            return (
                'an RFC 3339 timestamp string such as "2026-01-31T12:00:00Z" or '
                '"2026-01-31T13:30:00.5+01:30", with 1 to 9 fraction digits if '
                "any, and Z or an offset from -23:59 to +23:59"
            )
        if name == _DURATION:
            # The range of google.protobuf.Duration, about 10,000 years.
            return (
                'a duration string in seconds such as "1.5s", with 1 to 9 '
                'fraction digits if any, from "-315576000000s" to "315576000000s"'
            )
        if name == _FIELD_MASK:
            return 'a string of comma-separated field paths such as "displayName"'
        if name in _WRAPPERS:
            return _expected(message.fields_by_name["value"]) + ", or null"
        return expected_json(message)
    if field.enum_type is not None:
        return _enum_expected(field.enum_type)
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return f"an integer from {low} to {high}, as a JSON number or string"
    if kind == FieldDescriptor.TYPE_FLOAT:
        return 'a 32-bit floating-point number, or "NaN", "Infinity", "-Infinity"'
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return 'a number, or "NaN", "Infinity", "-Infinity"'
    if kind == FieldDescriptor.TYPE_BOOL:
        return "true or false"
    if kind == FieldDescriptor.TYPE_BYTES:
        return "a base64-encoded string"
    return "a string"


def _enum_expected(enum: EnumDescriptor) -> str:
    names = ", ".join(value.name for value in enum.values)
    return f"one of the {enum.full_name} names ({names}) or its number"


def _wrong_type(path: str, expected: str, value: Any) -> InvalidArgument:
    return invalid_field(
        path,
        f"expected {expected}, got {describe_json(value)}",
        reason="INVALID_FIELD_TYPE",
    )


def _wrong_value(
    path: str, expected: str, value: Any, fix: str = ""
) -> InvalidArgument:
    return invalid_field(
        path,
        f"expected {expected}, got {describe_json(value)}{fix}",
        reason="INVALID_FIELD_VALUE",
    )
