"""Helpers for the hostile-input tests: a seeded system, request strategies, checks.

`request_strategy` builds hypothesis strategies for any request message from
its protobuf descriptor, so a new public RPC is fuzzed without a change here.
Values mix the hostile (boundary numbers, empty, 100 KB and non-ASCII strings,
SQL-injection text, unknown enum numbers, duplicates in repeated fields) with
names of resources that exist, so some requests get past the first checks.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.type import date_pb2
from hypothesis import strategies as st

from gateway.services import gateway_services, public_services
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from tests.system.money_support import (
    CALL_TIMEOUT,
    Clients,
    create_group,
    money_of,
    random_content,
)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1

HUGE_TEXT = "x" * 100_000
SQL_INJECTIONS = ("' OR 1=1 --", "'; DROP TABLE users; --", "%' --")
HOSTILE_TEXT = (
    "",
    " ",
    HUGE_TEXT,
    "é漢字🙂",
    "\x00",
    "\u202e\u200b",
    "a\nb\r\nc",
    "\x1b[31mred\x1b[0m",
    "../../etc/passwd",
    "users/",
    "groups//expenses/",
    "*",
    "-",
    "%",
    "\\",
    "{}",
    *SQL_INJECTIONS,
)

# Status codes that mean the server failed, whatever the request was.
SERVER_FAILURES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

# Lines of a server log that show an exception that no handler caught.
_PROBLEM_LINE = re.compile(r"Traceback|unexpected error|Exception (calling|servic)")


def public_unary_methods() -> list[MethodDescriptor]:
    """Return every unary method of every service that the gateway exposes."""
    services = [service.descriptor for service in public_services()]
    services += gateway_services()
    return [
        method
        for service in services
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    ]


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def call_unary(
    channel: grpc.Channel,
    method: MethodDescriptor,
    request: Message,
    timeout: float = 20.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[grpc.StatusCode, str]:
    """Send one request and return the status code and its message."""
    callable_ = channel.unary_unary(
        method_path(method),
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=message_class(method.output_type).FromString,
    )
    try:
        callable_(request, timeout=timeout, metadata=metadata)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def log_problems(text: str) -> list[str]:
    """Return the lines of a server log that show an unhandled exception."""
    return [line for line in text.splitlines() if _PROBLEM_LINE.search(line)]


# The seeded system


@dataclass
class Seed:
    """Resources created before the fuzzing, whose names the strategies reuse."""

    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    expenses: list[str] = field(default_factory=list)
    templates: dict[str, list[Message]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [*self.users, *self.groups, *self.expenses]


def seed_system(address: str) -> Seed:
    """Create users, two groups and expenses in three currencies."""
    rng = random.Random(7)
    clients = Clients.connect(address)
    seed = Seed()
    try:
        for _ in range(2):
            group_id, user_ids = create_group(clients, 3)
            seed.groups.append(f"groups/{group_id}")
            seed.users += [f"users/{user_id}" for user_id in user_ids]
            members = list(user_ids)
            for currency in ("EUR", "JPY", "BHD"):
                content = random_content(rng, members, currency, f"seed {currency}")
                content.creator = f"users/{members[0]}"
                request = expenses_pb.CreateExpenseRequest(
                    parent=f"groups/{group_id}", expense=content
                )
                created = clients.expenses.CreateExpense(
                    request, timeout=CALL_TIMEOUT
                ).expense
                seed.expenses.append(created.name)
                seed.templates.setdefault("CreateExpense", []).append(request)
            _add_templates(seed, group_id, members)
    finally:
        clients.close()
    return seed


def _add_templates(seed: Seed, group_id: str, members: list[str]) -> None:
    """Keep valid requests of the writing methods for mutation."""
    templates = seed.templates
    settlement = balances_pb.Settlement(
        payer=f"users/{members[1]}",
        payee=f"users/{members[0]}",
        amount=money_of(1250, "EUR"),
        settlement_date=date_pb2.Date(year=2024, month=5, day=1),
        creator=f"users/{members[1]}",
    )
    templates.setdefault("CreateSettlement", []).append(
        balances_pb.CreateSettlementRequest(
            parent=f"groups/{group_id}", settlement=settlement
        )
    )
    templates.setdefault("CreateGroup", []).append(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Fuzz", creator=f"users/{members[0]}")
        )
    )
    templates.setdefault("CreateUser", []).append(
        users_pb.CreateUserRequest(
            user=users_pb.User(email="fuzz@example.com", display_name="Fuzz")
        )
    )
    templates.setdefault("AddGroupMember", []).append(
        users_pb.AddGroupMemberRequest(
            parent=f"groups/{group_id}", user=f"users/{members[2]}"
        )
    )
    entry = logs_pb.LogEntry(
        service="security-fuzz",
        severity=logs_pb.SEVERITY_WARN,
        message="fuzz template",
        attributes={"user": members[0]},
    )
    entry.timestamp.GetCurrentTime()
    templates.setdefault("WriteLogEntry", []).append(
        logs_pb.WriteLogEntryRequest(entry=entry)
    )
    templates.setdefault("WriteLogEntries", []).append(
        logs_pb.WriteLogEntriesRequest(entries=[entry, entry])
    )


# Log entries with markers


@dataclass
class MarkerLog:
    """Unique markers of the log entries that the server acknowledged."""

    acknowledged: list[str] = field(default_factory=list)

    def write(self, channel: grpc.Channel) -> None:
        """Write one entry with a fresh marker and keep the marker if acknowledged."""
        marker = f"marker{uuid.uuid4().hex}"
        entry = logs_pb.LogEntry(
            service="security-fuzz",
            severity=logs_pb.SEVERITY_INFO,
            message=f"fuzz run {marker}",
        )
        entry.timestamp.GetCurrentTime()
        stub = logs_grpc.LogsServiceStub(channel)
        try:
            stub.WriteLogEntry(
                logs_pb.WriteLogEntryRequest(entry=entry), timeout=CALL_TIMEOUT
            )
        except grpc.RpcError:
            return
        self.acknowledged.append(marker)


# Strategies


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({low, high, 0, -1, 1, 2, 100, 1000, 10_000, INT32_MAX})
    edges = [value for value in edges if low <= value <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


_INTEGER_RANGES = {
    FieldDescriptor.TYPE_INT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SINT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SFIXED32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_INT64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SINT64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SFIXED64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_UINT32: (0, UINT32_MAX),
    FieldDescriptor.TYPE_FIXED32: (0, UINT32_MAX),
    FieldDescriptor.TYPE_UINT64: (0, UINT64_MAX),
    FieldDescriptor.TYPE_FIXED64: (0, UINT64_MAX),
}


def text_strategy(names: list[str]) -> st.SearchStrategy[str]:
    """Strings: hostile ones, names that exist, codes and plain random text."""
    common = [
        "EUR",
        "JPY",
        "BHD",
        "XXX",
        "eur",
        "ada@example.com",
        "retentionPolicy",
        "display_name",
        "email",
        "create_time desc",
        "service=security-fuzz",
        "1",
        "-1",
    ]
    choices = [st.sampled_from(HOSTILE_TEXT), st.sampled_from(common), st.text()]
    if names:
        choices.append(st.sampled_from(names))
        suffixes = st.sampled_from(["/", "/x", "/expenses/none", "/members/", "%00"])
        choices.append(st.tuples(st.sampled_from(names), suffixes).map("".join))
    return st.one_of(*choices)


def _scalar(field_descriptor: FieldDescriptor, names: list[str]) -> st.SearchStrategy:
    kind = field_descriptor.type
    if kind in _INTEGER_RANGES:
        return _integers(*_INTEGER_RANGES[kind])
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32)
    if kind == FieldDescriptor.TYPE_STRING:
        return text_strategy(names)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field_descriptor.enum_type.values]
        unknown = st.sampled_from([-1, max(known) + 1, 999, INT32_MAX, INT32_MIN])
        return st.one_of(st.sampled_from(known), unknown)
    raise AssertionError(f"no strategy for field type {kind}")


def _field_paths(descriptor: Descriptor, names: list[str]) -> st.SearchStrategy:
    # Field mask paths: real field names of the request's resource and junk.
    field_names = [item.name for item in descriptor.fields]
    return st.one_of(st.sampled_from(field_names or ["name"]), text_strategy(names))


def _well_known(
    descriptor: Descriptor, names: list[str], parent: Descriptor | None
) -> st.SearchStrategy[dict] | None:
    name = descriptor.full_name
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return st.fixed_dictionaries(
            {},
            optional={
                "seconds": st.one_of(
                    st.sampled_from(
                        [0, -1, 3600, 1_700_000_000, 253402300800, INT64_MAX, INT64_MIN]
                    ),
                    st.integers(INT64_MIN, INT64_MAX),
                ),
                "nanos": _integers(INT32_MIN, INT32_MAX),
            },
        )
    if name == "google.type.Date":
        return st.fixed_dictionaries(
            {},
            optional={
                "year": st.sampled_from([0, -1, 1, 2024, 9999, 10000, INT32_MAX]),
                "month": st.sampled_from([0, -1, 1, 2, 12, 13, INT32_MIN]),
                "day": st.sampled_from([0, -1, 1, 29, 31, 32, INT32_MAX]),
            },
        )
    if name == "google.type.Money":
        return st.fixed_dictionaries(
            {},
            optional={
                "currency_code": text_strategy(names),
                "units": _integers(INT64_MIN, INT64_MAX),
                "nanos": _integers(INT32_MIN, INT32_MAX),
            },
        )
    if name == "google.protobuf.FieldMask":
        fields = parent if parent is not None else descriptor
        resource = [
            item.message_type
            for item in fields.fields
            if item.message_type is not None
            and not item.message_type.full_name.startswith("google.")
        ]
        target = resource[0] if resource else fields
        return st.fixed_dictionaries(
            {}, optional={"paths": st.lists(_field_paths(target, names), max_size=4)}
        )
    return None


def message_dict(
    descriptor: Descriptor,
    names: list[str],
    depth: int = 0,
    parent: Descriptor | None = None,
) -> st.SearchStrategy[dict]:
    """Draw a dict of field name -> value for `descriptor`, any field unset."""
    special = _well_known(descriptor, names, parent)
    if special is not None:
        return special
    optional = {}
    for item in descriptor.fields:
        value = _field_value(item, names, depth, descriptor)
        if value is not None:
            optional[item.name] = value
    return st.fixed_dictionaries({}, optional=optional)


def _field_value(
    item: FieldDescriptor, names: list[str], depth: int, owner: Descriptor
) -> st.SearchStrategy | None:
    is_message = item.type == FieldDescriptor.TYPE_MESSAGE
    if is_message and depth >= 3:
        return None
    if is_message and item.message_type.GetOptions().map_entry:
        key = item.message_type.fields_by_name["key"]
        value = item.message_type.fields_by_name["value"]
        return st.dictionaries(
            _scalar(key, names),
            _element(value, names, depth, owner),
            max_size=4,
        )
    element = _element(item, names, depth, owner)
    if _is_repeated(item):
        # Duplicates on purpose: each list repeats its first element sometimes.
        return st.lists(element, max_size=4).flatmap(
            lambda values: st.sampled_from([values, values + values[:1]])
        )
    return element


def _is_repeated(item: FieldDescriptor) -> bool:
    return item.is_repeated


def _element(
    item: FieldDescriptor, names: list[str], depth: int, owner: Descriptor
) -> st.SearchStrategy:
    if item.type == FieldDescriptor.TYPE_MESSAGE:
        return st.deferred(
            lambda: message_dict(item.message_type, names, depth + 1, owner)
        )
    return _scalar(item, names)


def build_message(descriptor: Descriptor, values: dict) -> Message:
    """Build a message of `descriptor` from a dict that `message_dict` drew."""
    message = message_class(descriptor)()
    _fill(message, values)
    return message


def _fill(message: Message, values: dict) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        item = fields[name]
        target = getattr(message, name)
        if item.type == FieldDescriptor.TYPE_MESSAGE:
            if item.message_type.GetOptions().map_entry:
                value_field = item.message_type.fields_by_name["value"]
                for key, entry in value.items():
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        _fill(target[key], entry)
                    else:
                        target[key] = entry
            elif _is_repeated(item):
                for entry in value:
                    _fill(target.add(), entry)
            else:
                target.SetInParent()
                _fill(target, value)
        elif _is_repeated(item):
            target.extend(value)
        else:
            setattr(message, name, value)


def _mutable_paths(message: Message, depth: int = 0) -> list[tuple[str, ...]]:
    # Every field of the message, and the fields of its set singular messages.
    paths = []
    for item in message.DESCRIPTOR.fields:
        paths.append((item.name,))
        nested = item.type == FieldDescriptor.TYPE_MESSAGE and not _is_repeated(item)
        if nested and depth < 2 and message.HasField(item.name):
            child = getattr(message, item.name)
            paths += [(item.name, *path) for path in _mutable_paths(child, depth + 1)]
    return paths


def _mutation(template: Message, names: list[str]) -> st.SearchStrategy[Message]:
    """Copy a valid request and overwrite one of its fields, maybe nested, with fuzz."""

    def override(path: tuple[str, ...]) -> st.SearchStrategy[Message]:
        owner = template
        for name in path[:-1]:
            owner = getattr(owner, name)
        item = owner.DESCRIPTOR.fields_by_name[path[-1]]
        value = _field_value(item, names, 1, owner.DESCRIPTOR)
        if value is None:
            return st.just(template)
        return value.map(lambda drawn: _replaced(template, path, drawn))

    return st.sampled_from(_mutable_paths(template)).flatmap(override)


def _replaced(template: Message, path: tuple[str, ...], value) -> Message:
    message = message_class(template.DESCRIPTOR)()
    message.CopyFrom(template)
    owner = message
    for name in path[:-1]:
        owner = getattr(owner, name)
    owner.ClearField(path[-1])
    _fill(owner, {path[-1]: value})
    return message


def request_strategy(
    method: MethodDescriptor, seed: Seed
) -> st.SearchStrategy[Message]:
    """Requests for `method`: random ones, and mutated valid ones when known."""
    names = seed.names()
    descriptor = method.input_type
    random_requests = message_dict(descriptor, names).map(
        lambda drawn: build_message(descriptor, drawn)
    )
    templates = seed.templates.get(method.name, [])
    if not templates:
        return random_requests
    mutated = st.sampled_from(templates).flatmap(
        lambda template: _mutation(template, names)
    )
    return st.one_of(random_requests, mutated, st.sampled_from(templates))
