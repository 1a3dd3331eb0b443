"""Parsing of OTLP export requests, with repair of invalid UTF-8 in strings.

Protobuf requires string fields to hold valid UTF-8, and the Python runtime
rejects a whole message when one string does not. OTLP senders in languages
without that check (and the Collector, which forwards what it got) do send
such strings, and one bad attribute must not cost every other record of an
export. `ParsedExport.FromString` therefore parses a request that fails the
normal parse a second time with a copy of the OTLP message types in which
every string field is a bytes field (`splitlog_runtime.descriptors`). That
copy has the same wire format, so it parses exactly the requests that failed
only on UTF-8. Each string is then decoded with `model.repair_utf8`, which
replaces every invalid sequence with U+FFFD, and the records whose stored
text changed are listed so that their entries get the attribute
`utf8_repaired=true`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from log_service.model import repair_utf8
from log_service.request_ids import DIGEST_BYTES
from splitlog_runtime.descriptors import bytes_message_class

_REQUEST = logs_service_pb2.ExportLogsServiceRequest
_BYTES_REQUEST: type[Message] = bytes_message_class(_REQUEST.DESCRIPTOR)


def _copy_repaired(
    source: Message, target: Message, skip: frozenset[str] = frozenset()
) -> bool:
    """Copy a bytes-typed message into its normal type, repairing UTF-8.

    Fields named in `skip` are left out. Returns whether any string had an
    invalid UTF-8 sequence.
    """
    repaired = False
    fields = target.DESCRIPTOR.fields_by_name
    for source_field, value in source.ListFields():
        name = source_field.name
        if name in skip:
            continue
        target_field: FieldDescriptor = fields[name]
        repeated = target_field.is_repeated
        if target_field.type == FieldDescriptor.TYPE_STRING:
            items = value if repeated else [value]
            texts = []
            for item in items:
                text, bad = repair_utf8(item)
                texts.append(text)
                repaired = repaired or bad
            if repeated:
                getattr(target, name).extend(texts)
            else:
                setattr(target, name, texts[0])
        elif target_field.type == FieldDescriptor.TYPE_MESSAGE:
            if repeated:
                for item in value:
                    repaired = _copy_repaired(item, getattr(target, name).add()) or (
                        repaired
                    )
            else:
                child = getattr(target, name)
                child.SetInParent()
                repaired = _copy_repaired(value, child) or repaired
        elif repeated:
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)
    return repaired


def _repair_request(
    source: Message,
) -> tuple[logs_service_pb2.ExportLogsServiceRequest, frozenset[int]]:
    """Convert a bytes-typed export into a normal one, repairing UTF-8.

    Returns the request and the indexes of the records, counted across every
    resource and scope, whose entries carry repaired text. A record's entry
    contains its own strings, its resource's attributes and its scope's
    name, so a repair in any of those marks it. A repair in a string that no
    entry stores, such as a schema URL or a scope version, marks none.
    """
    request = _REQUEST()
    repaired_records: set[int] = set()
    index = 0
    for source_resource in source.resource_logs:
        resource_logs = request.resource_logs.add()
        _copy_repaired(
            source_resource, resource_logs, frozenset({"resource", "scope_logs"})
        )
        resource_repaired = False
        if source_resource.HasField("resource"):
            resource_logs.resource.SetInParent()
            resource_repaired = _copy_repaired(
                source_resource.resource, resource_logs.resource
            )
        for source_scope in source_resource.scope_logs:
            scope_logs = resource_logs.scope_logs.add()
            _copy_repaired(source_scope, scope_logs, frozenset({"log_records"}))
            scope_repaired = (
                resource_repaired or repair_utf8(source_scope.scope.name)[1]
            )
            for source_record in source_scope.log_records:
                record = scope_logs.log_records.add()
                if _copy_repaired(source_record, record) or scope_repaired:
                    repaired_records.add(index)
                index += 1
    return request, frozenset(repaired_records)


@dataclass(frozen=True)
class ParsedExport:
    """An OTLP export request, with the records whose UTF-8 was repaired.

    `FromString` is the request deserializer of the router's OTLP Export.
    `DESCRIPTOR` names the request type in the message of a parse failure.
    `digest` is the blake2b digest (DIGEST_BYTES) of the serialized request
    as it arrived, or empty for a request built in memory.
    """

    DESCRIPTOR: ClassVar[Descriptor] = _REQUEST.DESCRIPTOR

    request: logs_service_pb2.ExportLogsServiceRequest
    repaired_records: frozenset[int] = field(default_factory=frozenset)
    digest: bytes = b""

    @classmethod
    def FromString(cls, data: bytes) -> ParsedExport:  # noqa: N802 - protobuf's name
        """Parse a serialized export, repairing strings of invalid UTF-8.

        Raises:
          DecodeError: the bytes are not an ExportLogsServiceRequest even
            with every string read as bytes.
        """
        digest = hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()
        try:
            return cls(_REQUEST.FromString(data), digest=digest)
        except DecodeError as error:
            try:
                source = _BYTES_REQUEST.FromString(data)
            except DecodeError:
                raise error from None
        request, repaired_records = _repair_request(source)
        return cls(request, repaired_records, digest)


def check_wire_format(data: bytes) -> None:
    """Check that bytes parse as an export, as `ParsedExport.FromString` needs.

    It reads every string as bytes, so it accepts exactly the exports that
    `ParsedExport.FromString` accepts, with one parse and no repair. The
    gateway uses it to reject a malformed OTLP/HTTP body with 400 before it
    forwards the bytes.

    Raises:
      DecodeError: the bytes are not an ExportLogsServiceRequest.
    """
    _BYTES_REQUEST.FromString(data)
