"""Request ids that the gateway fills in, so that its own retries store once.

The gateway's channels retry a call that fails with UNAVAILABLE
(`splitlog_runtime.channels`). A create can fail that way after its row was
committed, for example when the database connection drops while the commit's
acknowledgement is on its way. Sent again without a `request_id`, the create
would be stored a second time. So the gateway gives every create that takes
a `request_id` and arrives without one a fresh UUID before it forwards the
call: each of its own retries then carries the same key and returns the row
that the first attempt stored.

A create whose request_id would take it over `max_message_bytes` goes
without one, because the backend would reject it for its size.

A client that sends the create again on its own, without a `request_id`,
gets a new key from the gateway for that call, so that create is stored
again, as without the gateway. Only a client's own `request_id` makes its
retries safe. When the backend misses the deadline of a create whose key the
gateway filled in, the error names that key (`proxy.backend_deadline_exceeded`),
so the client can send the create again with it and get the first result.
"""

from __future__ import annotations

import uuid

from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from splitlog_runtime.channels import NO_RETRY_METHODS
from splitlog_runtime.idempotency import FILLED_REQUEST_ID_KEY

#: The request field that carries an idempotency key.
REQUEST_ID_FIELD = "request_id"

#: Metadata that goes with a call whose request_id the gateway filled in.
FILLED = ((FILLED_REQUEST_ID_KEY, "1"),)

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5


def request_id_number(method: MethodDescriptor) -> int | None:
    """Return the field number of the request_id that the gateway fills in.

    That is a top-level string field `request_id` of a method that takes one
    request message, when the gateway's channels may retry the method.
    Methods that they never retry (`NO_RETRY_METHODS`) keep what the client
    sent.
    """
    if method.client_streaming:
        return None
    if (method.containing_service.full_name, method.name) in NO_RETRY_METHODS:
        return None
    field = method.input_type.fields_by_name.get(REQUEST_ID_FIELD)
    if field is None or field.type != FieldDescriptor.TYPE_STRING:
        return None
    return field.number


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """Decode a varint at `position`; return it and the position after it."""
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _has_value(data: bytes, number: int) -> bool:
    """Return whether the serialized message sets string field `number`.

    Only the top-level fields are walked; the contents of nested messages
    are skipped. Protobuf keeps the last occurrence of a field, so the
    field is set when its last occurrence is not empty.

    Raises:
      ValueError: the bytes are not a valid message.
    """
    position, found = 0, False
    while position < len(data):
        key, position = _varint(data, position)
        wire_type = key & 0x7
        if wire_type == _WIRE_VARINT:
            _, position = _varint(data, position)
        elif wire_type == _WIRE_FIXED64:
            position += 8
        elif wire_type == _WIRE_FIXED32:
            position += 4
        elif wire_type == _WIRE_BYTES:
            length, position = _varint(data, position)
            if key >> 3 == number:
                found = length > 0
            position += length
        else:
            raise ValueError(f"wire type {wire_type} is not expected here")
        if position > len(data):
            raise ValueError("truncated field")
    return found


def with_request_id(
    request: bytes, number: int, max_message_bytes: int, key: str | None = None
) -> bytes:
    """Return a serialized request with `key`, a fresh UUID by default, in `number`.

    A request that sets the field already, whose bytes do not parse, or
    that the field would take over `max_message_bytes`, is returned
    unchanged. The backend rejects one that does not parse with its own
    error. The field is appended, which protobuf reads as setting it, so the
    client's bytes stay as they were, unknown fields included.
    """
    try:
        if _has_value(request, number):
            return request
    except ValueError:
        return request
    encoded = (key or str(uuid.uuid4())).encode("utf-8")
    tag = _encode_varint(number << 3 | _WIRE_BYTES)
    filled = request + tag + _encode_varint(len(encoded)) + encoded
    return request if len(filled) > max_message_bytes else filled


def fill_request_id(message: Message, max_message_bytes: int) -> bool:
    """Give a parsed create without a request_id a fresh UUID, if it fits.

    Returns:
      Whether the message got one.
    """
    if getattr(message, REQUEST_ID_FIELD):
        return False
    setattr(message, REQUEST_ID_FIELD, str(uuid.uuid4()))
    if message.ByteSize() > max_message_bytes:
        message.ClearField(REQUEST_ID_FIELD)
        return False
    return True
