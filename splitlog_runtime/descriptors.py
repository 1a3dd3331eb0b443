"""Copies of protobuf descriptors, and message types with strings as bytes.

`copy_pool` builds a descriptor pool of chosen files and their imports,
such as the gateway's reflection pool.

Protobuf requires string fields to contain valid UTF-8, and the Python
runtime rejects a whole message when one string does not. A copy of a
message type in which every string field is a bytes field has the same wire
format, so it parses the messages that failed only on UTF-8. Map entries
become plain nested messages in the copy, because a map's key cannot be
bytes, and a map is a repeated entry message on the wire.

`log_service.otlp_parse` repairs OTLP exports with such a copy. The server
interceptor uses `find_invalid_utf8` to name the string field of a request
that failed to parse, on the failure path only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

# Most invalid strings counted in one message.
_MAX_COUNTED = 1000


def _strings_to_bytes(message: descriptor_pb2.DescriptorProto) -> None:
    message.options.ClearField("map_entry")
    for field_proto in message.field:
        if field_proto.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field_proto.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    for nested in message.nested_type:
        _strings_to_bytes(nested)


def copy_pool(
    files: Iterable[FileDescriptor],
    edit: Callable[[descriptor_pb2.DescriptorProto], None] | None = None,
) -> descriptor_pool.DescriptorPool:
    """Build a pool with copies of `files` and their imports.

    `edit`, when given, changes each top-level message type of every copy
    before it is added.
    """
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        if edit is not None:
            for message in proto.message_type:
                edit(message)
        pool.Add(proto)
        added.add(file.name)

    for file in files:
        add(file)
    return pool


@functools.cache
def bytes_message_class(descriptor: Descriptor) -> type[Message]:
    """Return the copy of a message type whose string fields are bytes."""
    pool = copy_pool([descriptor.file], _strings_to_bytes)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(descriptor.full_name)
    )


@dataclass(frozen=True)
class InvalidUtf8:
    """The first string field of a message that is not valid UTF-8.

    Attributes:
      path: the field's path, such as `entries[1].message` or
        `entries[0].attributes['k']`; a map key that is not UTF-8 is named
        as `attributes (a key)`.
      offset: the offset in the field of the first byte that is not valid
        UTF-8.
      byte: that byte.
      count: how many string fields are invalid, counting at most
        `_MAX_COUNTED`.
    """

    path: str
    offset: int
    byte: int
    count: int


def find_invalid_utf8(descriptor: Descriptor, data: bytes) -> InvalidUtf8 | None:
    """Return the first string field of `data` that is not valid UTF-8.

    Returns None when `data` has no such field, or does not parse as the
    message of `descriptor` even with every string read as bytes.
    """
    try:
        message = bytes_message_class(descriptor).FromString(data)
    except DecodeError:
        return None
    found: list[tuple[str, int, int]] = []
    _walk(message, descriptor, "", found)
    if not found:
        return None
    path, offset, byte = found[0]
    return InvalidUtf8(path, offset, byte, len(found))


def _walk(
    message: Message,
    descriptor: Descriptor,
    prefix: str,
    found: list[tuple[str, int, int]],
) -> None:
    """Add the path, offset and first invalid byte of each invalid string of
    `message` to `found`, up to `_MAX_COUNTED`. `descriptor` is the original
    type."""
    for copy_field, value in message.ListFields():
        if len(found) >= _MAX_COUNTED:
            return
        field = descriptor.fields_by_name[copy_field.name]
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _walk_map(value, field.message_type, path, found)
        elif field.type == FieldDescriptor.TYPE_STRING:
            items = value if field.is_repeated else [value]
            for index, item in enumerate(items):
                name = f"{path}[{index}]" if field.is_repeated else path
                _check(item, name, found)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for index, item in enumerate(value):
                    _walk(item, field.message_type, f"{path}[{index}].", found)
            else:
                _walk(value, field.message_type, f"{path}.", found)


def _walk_map(
    entries: list[Message],
    entry_type: Descriptor,
    path: str,
    found: list[tuple[str, int, int]],
) -> None:
    key_field = entry_type.fields_by_name["key"]
    value_field = entry_type.fields_by_name["value"]
    for entry in entries:
        key = entry.key
        if key_field.type == FieldDescriptor.TYPE_STRING:
            if _check(key, f"{path} (a key)", found):
                continue
            key = key.decode()
        name = f"{path}[{key!r}]"
        if value_field.type == FieldDescriptor.TYPE_STRING:
            _check(entry.value, name, found)
        elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
            _walk(entry.value, value_field.message_type, f"{name}.", found)


def _check(value: bytes, path: str, found: list[tuple[str, int, int]]) -> bool:
    """Add `value` to `found` when it is not UTF-8; return whether it was added."""
    try:
        value.decode()
    except UnicodeDecodeError as error:
        found.append((path, error.start, value[error.start]))
        return True
    return False
