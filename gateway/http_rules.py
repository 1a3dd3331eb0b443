"""HTTP rules from `google.api.http` annotations, and the path matcher.

Path templates follow the grammar in `google/api/http.proto`:

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

`{name}` means `{name=*}`. `*` matches one non-empty segment and `**` matches
any number of segments, so it may only come last. A variable that covers one
`*` is fully percent-decoded. A variable that covers several segments or `**`
is decoded except for `%2F`, which stays encoded so that the value keeps the
segment boundaries of the request.

Everything here is pure: no I/O, no gRPC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor

from splitlog_runtime.errors import invalid_field

WILDCARD = "*"
DOUBLE_WILDCARD = "**"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Characters that may appear unescaped in a literal segment or a verb.
_LITERAL = re.compile(r"[A-Za-z0-9\-._~%!$&'()+,;=@]+\Z")


class TemplateError(ValueError):
    """A path template or an HTTP rule is malformed."""


@dataclass(frozen=True)
class Variable:
    """A variable of a template: the field it sets and the segments it covers.

    Attributes:
      field_path: the request field, split on dots, e.g. `("user", "name")`.
      start: index of the first covered segment.
      end: index after the last covered segment; None when the variable ends
        in `**` and so takes every remaining segment.
      single: True when the variable covers exactly one `*`.
    """

    field_path: tuple[str, ...]
    start: int
    end: int | None
    single: bool

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclass(frozen=True)
class PathTemplate:
    """A parsed path template.

    Attributes:
      text: the template as written in the proto.
      segments: each segment is a literal, `*` or `**`.
      verb: the custom verb after the last `:`, or "" when there is none.
      variables: the variables in order of appearance.
    """

    text: str
    segments: tuple[str, ...]
    verb: str
    variables: tuple[Variable, ...]

    @property
    def has_double_wildcard(self) -> bool:
        return bool(self.segments) and self.segments[-1] == DOUBLE_WILDCARD

    def specificity(self) -> tuple[int, ...]:
        """Return a sort key: literal segments before wildcards, left to right."""
        rank = {WILDCARD: 1, DOUBLE_WILDCARD: 2}
        return tuple(rank.get(segment, 0) for segment in self.segments)

    def match(self, segments: list[str], verb: str) -> dict[str, str] | None:
        """Match percent-encoded path segments and return the variable values.

        Args:
          segments: the request path split on "/", still percent-encoded,
            without the leading empty segment and without the verb.
          verb: the request's custom verb, or "".

        Returns:
          The decoded value of each variable, keyed by its field path, or
          None when the path does not match.
        """
        if verb != self.verb:
            return None
        if self.has_double_wildcard:
            if len(segments) < len(self.segments) - 1:
                return None
        elif len(segments) != len(self.segments):
            return None
        for pattern, segment in zip(self.segments, segments, strict=False):
            if pattern == DOUBLE_WILDCARD:
                break
            if pattern == WILDCARD:
                if not segment:
                    return None
            elif unquote(segment) != pattern:
                return None
        values = {}
        for variable in self.variables:
            raw = "/".join(segments[variable.start : variable.end])
            values[variable.name] = _decode_variable(variable, raw)
        return values


def _decode_variable(variable: Variable, raw: str) -> str:
    """Percent-decode a path variable as UTF-8.

    Raises:
      InvalidArgument: the decoded bytes are not valid UTF-8.
    """
    if not variable.single:
        # An encoded slash stays encoded inside a multi-segment value.
        raw = re.sub("%2[Ff]", lambda m: "%25" + m.group(0)[1:], raw)
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError as exc:
        raise invalid_field(
            variable.name,
            f"the path segment {raw!r} is not valid UTF-8 once percent-decoded "
            f"({exc.reason}); percent-encode the text as UTF-8, e.g. é as %C3%A9",
            reason="INVALID_UTF8",
        ) from None


class _TemplateParser:
    """A recursive-descent parser over one template string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0
        self.segments: list[str] = []
        self.variables: list[Variable] = []

    def fail(self, problem: str) -> TemplateError:
        return TemplateError(
            f"invalid path template {self.text!r} at offset {self.position}: {problem}"
        )

    def peek(self) -> str:
        return self.text[self.position : self.position + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}")
        self.position += 1

    def take_while(self, stop: str) -> str:
        start = self.position
        while self.position < len(self.text) and self.text[self.position] not in stop:
            self.position += 1
        return self.text[start : self.position]

    def parse(self) -> PathTemplate:
        self.expect("/")
        self.parse_segments(inside_variable=False)
        verb = ""
        if self.peek() == ":":
            self.position += 1
            verb = self.take_while("")
            if not _LITERAL.match(verb):
                raise self.fail(f"invalid verb {verb!r}")
        if self.position != len(self.text):
            raise self.fail("unexpected character")
        if DOUBLE_WILDCARD in self.segments[:-1]:
            raise self.fail("'**' must be the last segment")
        names = [variable.name for variable in self.variables]
        if len(set(names)) != len(names):
            raise self.fail("a field is bound by more than one variable")
        return PathTemplate(
            self.text, tuple(self.segments), verb, tuple(self.variables)
        )

    def parse_segments(self, inside_variable: bool) -> None:
        while True:
            self.parse_segment(inside_variable)
            if self.peek() != "/":
                return
            self.position += 1

    def parse_segment(self, inside_variable: bool) -> None:
        if self.peek() == "{":
            if inside_variable:
                raise self.fail("variables cannot nest")
            self.parse_variable()
            return
        segment = self.take_while("/:{}=")
        if segment in (WILDCARD, DOUBLE_WILDCARD):
            self.segments.append(segment)
        elif _LITERAL.match(segment) and "*" not in segment:
            self.segments.append(unquote(segment))
        else:
            raise self.fail(f"invalid segment {segment!r}")

    def parse_variable(self) -> None:
        self.expect("{")
        field_path = self.take_while("=}")
        parts = tuple(field_path.split("."))
        if not all(_IDENT.match(part) for part in parts):
            raise self.fail(f"invalid field path {field_path!r}")
        start = len(self.segments)
        if self.peek() == "=":
            self.position += 1
            self.parse_segments(inside_variable=True)
        else:
            self.segments.append(WILDCARD)
        self.expect("}")
        covered = self.segments[start:]
        end = None if covered[-1] == DOUBLE_WILDCARD else len(self.segments)
        single = covered == [WILDCARD]
        self.variables.append(Variable(parts, start, end, single))


def parse_template(text: str) -> PathTemplate:
    """Parse a path template.

    Raises:
      TemplateError: the template does not follow the grammar; the message
        names the offset and the problem.
    """
    return _TemplateParser(text).parse()


def split_path(raw_path: str) -> tuple[list[str], str]:
    """Split a percent-encoded request path into segments and a custom verb.

    The verb is whatever follows the last ":" of the last segment. An encoded
    colon (`%3A`) is data, never a verb separator.
    """
    segments = raw_path[1:].split("/") if raw_path.startswith("/") else [raw_path]
    last = segments[-1]
    colon = last.rfind(":")
    if colon < 0:
        return segments, ""
    segments[-1] = last[:colon]
    return segments, last[colon + 1 :]


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP binding of an RPC.

    Attributes:
      http_method: upper-case HTTP method, e.g. "GET".
      template: the parsed path template.
      body: "" for no body, "*" for the whole request, or the name of the
        request field that the body fills.
      response_body: "" for the whole response, or the response field that
        becomes the HTTP body.
      method: the RPC's descriptor.
    """

    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    method: MethodDescriptor = field(compare=False)

    @property
    def full_method(self) -> str:
        """Return the gRPC method path, e.g. `/pkg.Service/Method`."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


def _pattern_of(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise TemplateError("the HTTP rule sets no verb or path")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), getattr(rule, kind)


def _resolve_field(message, path: Iterable[str], context: str) -> FieldDescriptor:
    descriptor = message
    found = None
    for part in path:
        if descriptor is None:
            raise TemplateError(f"{context}: {part!r} is inside a non-message field")
        found = descriptor.fields_by_name.get(part)
        if found is None:
            raise TemplateError(
                f"{context}: {descriptor.full_name} has no field {part!r}"
            )
        descriptor = found.message_type
    return found


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule) -> HttpRoute:
    http_method, path = _pattern_of(rule)
    template = parse_template(path)
    context = f"{method.full_name} rule {http_method} {path}"
    for variable in template.variables:
        bound = _resolve_field(method.input_type, variable.field_path, context)
        if bound.message_type is not None or bound.is_repeated:
            raise TemplateError(
                f"{context}: path variable {variable.name} must be a scalar field"
            )
    if rule.body not in ("", "*"):
        _resolve_field(method.input_type, [rule.body], context)
    if rule.response_body:
        _resolve_field(method.output_type, [rule.response_body], context)
    return HttpRoute(http_method, template, rule.body, rule.response_body, method)


def routes_for_method(method: MethodDescriptor) -> list[HttpRoute]:
    """Return the HTTP routes of one RPC: its rule and additional bindings.

    Raises:
      TemplateError: the annotation is malformed or names a missing field.
    """
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    routes = [_route(method, rule)]
    for binding in rule.additional_bindings:
        if binding.additional_bindings:
            raise TemplateError(
                f"{method.full_name}: additional bindings cannot nest further bindings"
            )
        routes.append(_route(method, binding))
    return routes


class RouteNotFound(LookupError):
    """No route has a template that matches the path."""


class MethodNotAllowed(LookupError):
    """Routes match the path, but none for the request's HTTP method.

    Attributes:
      allowed: the HTTP methods that do match the path.
    """

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


class RouteTable:
    """Every HTTP route, indexed for matching a request path.

    Routes are grouped by their number of segments, and within a group tried
    from the most specific (literal segments first) to the least, so that
    `/v1/users:search` wins over `/v1/{name=*}:search`. Templates that end in
    `**` are tried last.
    """

    def __init__(self, routes: Iterable[HttpRoute]) -> None:
        self.routes = sorted(routes, key=lambda r: r.template.specificity())
        self._by_length: dict[int, list[HttpRoute]] = {}
        self._open_ended: list[HttpRoute] = []
        seen: dict[tuple[str, str], HttpRoute] = {}
        for route in self.routes:
            key = (route.http_method, _canonical(route.template))
            if key in seen:
                raise TemplateError(
                    f"{route.method.full_name} and {seen[key].method.full_name} "
                    f"both bind {route.http_method} {route.template.text}"
                )
            seen[key] = route
            if route.template.has_double_wildcard:
                self._open_ended.append(route)
            else:
                length = len(route.template.segments)
                self._by_length.setdefault(length, []).append(route)

    def match(
        self, http_method: str, raw_path: str
    ) -> tuple[HttpRoute, dict[str, str]]:
        """Find the route for a request.

        Args:
          http_method: the request's method, upper case.
          raw_path: the request path, still percent-encoded, without the query.

        Returns:
          The route and the decoded values of its path variables.

        Raises:
          RouteNotFound: no template matches the path.
          MethodNotAllowed: templates match, but for other HTTP methods.
        """
        segments, verb = split_path(raw_path)
        candidates = self._by_length.get(len(segments), [])
        allowed: list[str] = []
        for route in [*candidates, *self._open_ended]:
            values = route.template.match(segments, verb)
            if values is None:
                continue
            if route.http_method == http_method:
                return route, values
            if route.http_method not in allowed:
                allowed.append(route.http_method)
        if allowed:
            raise MethodNotAllowed(allowed)
        raise RouteNotFound(raw_path)


def _canonical(template: PathTemplate) -> str:
    """Return the template's shape without variable names, to spot duplicates."""
    shape = "/" + "/".join(template.segments)
    return f"{shape}:{template.verb}" if template.verb else shape
