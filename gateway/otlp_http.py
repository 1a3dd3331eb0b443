"""OTLP/HTTP log export at `POST /v1/logs`: decoding bodies, encoding replies.

The REST front (`gateway.rest`) serves the route: it authenticates the call
like the other log writes (`logs:write`), applies the rate limit and the
concurrency cap, and forwards the export to the log router's OTLP
`LogsService/Export`, as the gRPC front does. This module contains what is
particular to OTLP over HTTP:

- The body is an `ExportLogsServiceRequest`, binary with `Content-Type:
  application/x-protobuf` or in OTLP's JSON encoding with `application/json`.
  Any other type gets 415. A binary body goes to the router as it came, once
  its wire format has been checked, so the router repairs invalid UTF-8 in
  its strings as for a gRPC export.
- `Content-Encoding: gzip` is inflated, at most to the same byte limit as
  an uncompressed body (`max_message_bytes`), so a small body that inflates
  to gigabytes is refused after that many bytes. Other encodings get 415.
- OTLP's JSON encoding is proto3 JSON with three differences, which
  `json_to_request` handles. `traceId` and `spanId` are hex, not base64.
  A non-hex or odd-length id rejects the body, but whole bytes of the wrong
  length go to the router, which rejects only that record.
  Unknown fields are ignored, except that a body with no resourceLogs but
  with top-level fields of splitlog's own log bodies (`entries`, `message`)
  is rejected, because it was meant for `POST /logs` or `/logs/batch`.
  Enums are numbers (names are accepted too). Keys may be lowerCamelCase or
  the proto field names, and 64-bit integers JSON numbers or strings.
- The reply has the request's encoding: an `ExportLogsServiceResponse` with
  200, or a `google.rpc.Status` with an error code. In JSON, that Status is
  its proto3 JSON (`{"code": 3, "message": ..., "details": [...]}`), not the
  `{"error": ...}` body of the other REST routes, because OTLP clients read
  the Status. 429, 502, 503 and 504 tell an OTLP client to retry, with the
  delay of `Retry-After` when present; every other error code tells it not to.
"""

from __future__ import annotations

import base64
import enum
import json
import re
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from gateway import json_check, transcode
from log_service.otlp_parse import check_wire_format
from splitlog.logs.v1 import logs_service_pb2 as splitlog_logs_pb2
from splitlog_runtime.errors import InvalidArgument, ResourceExhausted, invalid_field

LOGS_PATH = "/v1/logs"
EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

_REQUEST = logs_service_pb2.ExportLogsServiceRequest
_RESPONSE = logs_service_pb2.ExportLogsServiceResponse
_LOG_RECORD = logs_pb2.LogRecord.DESCRIPTOR

# Bytes of each id of a log record, which OTLP's JSON writes as hex.
_ID_BYTES = {"trace_id": 16, "span_id": 8}
_NOT_HEX = re.compile(r"[^0-9a-fA-F]")
# Base64 as proto3 JSON accepts it: the standard or the URL-safe alphabet,
# with or without padding.
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*|[A-Za-z0-9_-]*")
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def _field_names(*descriptors: Descriptor) -> frozenset[str]:
    return frozenset(
        name
        for descriptor in descriptors
        for field in descriptor.fields
        for name in (field.name, field.json_name)
    )


# Top-level keys of splitlog's own log bodies (`POST /logs` and
# `POST /logs/batch`). OTLP would ignore them as unknown fields and store
# nothing, so a JSON body with one of them and no resourceLogs is rejected.
_SPLITLOG_BODY_FIELDS = _field_names(
    splitlog_logs_pb2.LogEntry.DESCRIPTOR,
    splitlog_logs_pb2.WriteLogEntriesRequest.DESCRIPTOR,
)
_REQUEST_FIELDS = _field_names(_REQUEST.DESCRIPTOR)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class Encoding(enum.Enum):
    """The two encodings of OTLP/HTTP, by the media type of their replies."""

    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


# Media types read as each encoding. `application/protobuf` is the newer,
# registered name of the binary form.
_ENCODING_BY_MEDIA_TYPE = {
    "application/x-protobuf": Encoding.PROTOBUF,
    "application/protobuf": Encoding.PROTOBUF,
    "application/json": Encoding.JSON,
}


class HttpError(Exception):
    """A request that gets an HTTP status that its gRPC code does not imply.

    Attributes:
      status: the google.rpc.Status of the reply body.
      http_status: the HTTP status code, such as 413 or 415.
      headers: extra response headers.
    """

    def __init__(
        self,
        error: InvalidArgument | ResourceExhausted,
        http_status: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(str(error))
        self.status = error.to_status()
        self.http_status = http_status
        self.headers = headers or {}


def request_encoding(content_type: str) -> Encoding | None:
    """Return the encoding of a body with this Content-Type, or None if neither."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return _ENCODING_BY_MEDIA_TYPE.get(media_type)


def unsupported_media_type(content_type: str) -> HttpError:
    media_type = content_type.split(";", 1)[0].strip()
    if media_type:
        problem = f"unsupported Content-Type {media_type!r} on {LOGS_PATH}"
    else:
        problem = f"the request to {LOGS_PATH} has no Content-Type"
    error = InvalidArgument(
        f"{problem}; send an OTLP ExportLogsServiceRequest with Content-Type "
        "application/x-protobuf (binary) or application/json (OTLP's JSON "
        "encoding)",
        reason="UNSUPPORTED_MEDIA_TYPE",
        metadata={"content_type": media_type},
    )
    return HttpError(error, 415)


def body_too_large(limit: int, inflated: bool) -> HttpError:
    subject = "the body inflates to" if inflated else "the body is"
    error = ResourceExhausted(
        f"{subject} more than {limit} bytes (max_message_bytes); export fewer log "
        "records per request, or raise max_message_bytes",
        reason="REQUEST_TOO_LARGE",
        metadata={"limit": "max_message_bytes", "max_message_bytes": str(limit)},
    )
    return HttpError(error, 413)


def decode_content(body: bytes, content_encoding: str, limit: int) -> bytes:
    """Undo the Content-Encoding of a body: none, identity or gzip.

    Raises:
      HttpError: 415 for another encoding, 413 when the body inflates to
        more than `limit` bytes.
      InvalidArgument: the body is not valid gzip.
    """
    codings = [coding.strip().lower() for coding in content_encoding.split(",")] or [""]
    for coding in codings:
        if coding not in ("", "identity", "gzip", "x-gzip"):
            error = InvalidArgument(
                f"Content-Encoding {coding!r} is not supported on {LOGS_PATH}; "
                "send the body uncompressed or with Content-Encoding gzip",
                reason="UNSUPPORTED_CONTENT_ENCODING",
                metadata={"content_encoding": coding},
            )
            raise HttpError(error, 415, {"Accept-Encoding": "gzip"})
    # Codings apply in the order listed, so they come off in reverse.
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            body = inflate_gzip(body, limit)
    return body


def inflate_gzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip data of one or more members, stopping past `limit` bytes.

    At most `limit` + 1 inflated bytes are held at once, so a small body
    that inflates to gigabytes costs no more memory than a large plain one.

    Raises:
      HttpError: 413 once the data inflates to more than `limit` bytes.
      InvalidArgument: the data is not gzip, is corrupt or ends early.
    """
    out = bytearray()
    pending = data
    while True:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        try:
            # Output stops at `limit` + 1 bytes. Short of that, either the
            # member ended or the input ran out.
            out += inflater.decompress(pending, limit + 1 - len(out))
        except zlib.error as exc:
            raise _bad_gzip(f"inflating it failed ({exc})") from None
        if len(out) > limit:
            raise body_too_large(limit, inflated=True)
        if not inflater.eof:
            raise _bad_gzip(f"it ends early, after {len(data)} bytes")
        # Another gzip member may follow, as RFC 1952 allows.
        pending = inflater.unused_data
        if not pending:
            return bytes(out)


def _bad_gzip(cause: str) -> InvalidArgument:
    return invalid_field(
        "body",
        f"the body has Content-Encoding gzip but is not valid gzip: {cause}; "
        "compress the whole body with gzip, or send it uncompressed without "
        "Content-Encoding",
        reason="INVALID_GZIP",
    )


def check_protobuf(body: bytes) -> None:
    """Check that a binary body is an ExportLogsServiceRequest.

    Raises:
      InvalidArgument: its wire format is corrupt.
    """
    try:
        check_wire_format(body)
    except DecodeError:
        hint = ""
        if body.lstrip()[:1] in (b"{", b"["):
            hint = (
                "; the body looks like JSON, which needs Content-Type application/json"
            )
        raise invalid_field(
            "body",
            f"the body is not a binary OTLP ExportLogsServiceRequest: its "
            f"protobuf wire format is corrupt{hint}",
            reason="MALFORMED_PROTOBUF",
        ) from None


def json_to_request(body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
    """Read a body in OTLP's JSON encoding as an ExportLogsServiceRequest.

    Unknown fields are dropped, `traceId` and `spanId` are read as hex, and
    each half of a surrogate pair without its other half (`\\ud800`) becomes
    U+FFFD, as invalid UTF-8 in a binary export does.
    NOTE: unlike a record with invalid UTF-8 in a binary export, a record
    with such a replacement does not get `utf8_repaired=true`.

    Raises:
      InvalidArgument: the body is not JSON, nests too deeply, or a value
        has the wrong type or form; the message names the field path.
    """
    if not body.strip():
        return _REQUEST()
    tree = transcode.load_json_body(body, descriptor=_REQUEST.DESCRIPTOR)
    if not isinstance(tree, dict):
        raise invalid_field(
            "body",
            "expected a JSON object with the fields of ExportLogsServiceRequest "
            f"(resourceLogs), got {json_check.describe_json(tree)}",
            reason="INVALID_FIELD_TYPE",
        )
    _check_not_splitlog_body(tree)
    _prepare(tree, _REQUEST.DESCRIPTOR)
    json_check.check_message(tree, _REQUEST.DESCRIPTOR)
    request = _REQUEST()
    try:
        json_format.ParseDict(tree, request)
    except json_format.ParseError as exc:
        raise _parse_error(exc) from None
    return request


def _check_not_splitlog_body(tree: dict) -> None:
    """Reject a body of splitlog's own log routes sent to the OTLP path.

    Raises:
      InvalidArgument: the body has no OTLP field but has top-level fields of
        a splitlog log entry or batch, which OTLP would ignore.
    """
    if not _REQUEST_FIELDS.isdisjoint(tree):
        return
    found = sorted(_SPLITLOG_BODY_FIELDS.intersection(tree))
    if not found:
        return
    raise invalid_field(
        "body",
        f"POST {LOGS_PATH} takes OTLP JSON (an ExportLogsServiceRequest with "
        f"resourceLogs), but the body has no resourceLogs and has the fields "
        f"{', '.join(found)} of a splitlog log entry, which OTLP would ignore, "
        "storing nothing; send splitlog entries to POST /logs (one entry) or "
        'POST /logs/batch ({"entries": [...]})',
        reason="NOT_OTLP_REQUEST",
        metadata={"fields": ",".join(found)},
    )


def _prepare(tree: dict, descriptor: Descriptor) -> None:
    """Make OTLP JSON proto3 JSON in place, walking without recursion.

    Drops unknown fields, turns hex ids into base64 and replaces lone
    surrogates. Values of the wrong JSON type are left for
    `json_check.check_message` to name. The decoder has already rejected a
    tree deeper than `json_check.MAX_JSON_DEPTH`, which allows an AnyValue
    nested in arrays or key-value lists about 30 times.
    """
    pending: list[tuple[Any, Descriptor | None, str]] = [(tree, descriptor, "")]
    while pending:
        node, message, path = pending.pop()
        if isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = _without_lone_surrogates(item)
                else:
                    pending.append((item, message, f"{path}[{index}]"))
            continue
        if not isinstance(node, dict):
            continue
        for key in list(node):
            field = None
            if message is not None:
                field = message.fields_by_name.get(key) or _by_json_name(message, key)
                if field is None:
                    # OTLP receivers ignore fields that they do not know.
                    del node[key]
                    continue
            value = node[key]
            name = key if field is None else field.name
            child_path = f"{path}.{name}" if path else name
            if message is _LOG_RECORD and field.name in _ID_BYTES:
                node[key] = _id_to_base64(value, child_path, _ID_BYTES[field.name])
            elif (
                field is not None
                and field.type == FieldDescriptor.TYPE_BYTES
                and isinstance(value, str)
            ):
                # protobuf's parser skips characters outside the alphabet,
                # so "aGVs$bG8=" would be read as "hello".
                _check_base64(value, child_path)
            elif isinstance(value, str):
                node[key] = _without_lone_surrogates(value)
            else:
                child = field.message_type if field is not None else None
                pending.append((value, child, child_path))


def _by_json_name(descriptor: Descriptor, name: str):
    for field in descriptor.fields:
        if field.json_name == name:
            return field
    return None


def _without_lone_surrogates(text: str) -> str:
    if _LONE_SURROGATE.search(text) is None:
        return text
    # A valid pair decodes to one character, so what is left is lone.
    return _LONE_SURROGATE.sub("\ufffd", text)


def _id_to_base64(value: Any, path: str, size: int) -> Any:
    """Return the proto3 JSON (base64) of a hex id, or raise naming the problem."""
    if value is None or value == "":
        return value
    name = path.rsplit(".", 1)[-1]
    digits = 2 * size
    expected = (
        f"{digits} hexadecimal digits ({size} bytes), as OTLP's JSON encoding "
        f"writes a {name}"
    )
    if not isinstance(value, str):
        raise invalid_field(
            path,
            f"expected {expected} in a JSON string, got "
            f"{json_check.describe_json(value)}",
            reason="INVALID_FIELD_TYPE",
        )
    received = json_check.describe_json(value)
    bad = _NOT_HEX.search(value)
    if bad is not None:
        hint = ""
        if len(value) == 4 * ((size + 2) // 3):
            hint = "; it looks like base64, which OTLP's JSON does not use for ids"
        raise invalid_field(
            path,
            f"expected {expected}, got {received}, whose character "
            f"{bad.start()} ({bad.group()!r}) is not a hexadecimal digit{hint}",
            reason="INVALID_FIELD_VALUE",
        )
    if len(value) % 2:
        raise invalid_field(
            path,
            f"expected {expected}, got {received}, which has {len(value)} digits, "
            "an odd number, so it does not encode whole bytes",
            reason="INVALID_FIELD_VALUE",
        )
    # Bytes of another length go on, and the router rejects only this record,
    # as it does for such bytes in a binary export.
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _check_base64(value: str, path: str) -> None:
    """Raise InvalidArgument naming `path` unless `value` is base64."""
    text = value.rstrip("=")
    padding = len(value) - len(text)
    if (
        _BASE64_TEXT.fullmatch(text) is None
        or len(text) % 4 == 1
        or padding > 2
        or (padding and (len(text) + padding) % 4)
    ):
        raise invalid_field(
            path,
            f"expected base64 (RFC 4648, standard or URL-safe alphabet) in a "
            f"JSON string, got {json_check.describe_json(value)}; encode the "
            "bytes with base64",
            reason="INVALID_FIELD_VALUE",
        )


_FIELD_AT = re.compile(r" at ExportLogsServiceRequest\.(\S+?)\.*$", re.MULTILINE)
_FAILED_FIELD = re.compile(r"Failed to parse (\S+) field: ")


def _parse_error(exc: json_format.ParseError) -> InvalidArgument:
    """Name the field and the cause of a json_format failure."""
    text = str(exc).split("\n", 1)[0]
    at = _FIELD_AT.search(text)
    # Without a location, the chain "Failed to parse a field: Failed to
    # parse b field: why" names the fields without their indexes.
    segments = json_check.split_path(at.group(1)) if at else _FAILED_FIELD.findall(text)
    field = json_check.proto_path(_REQUEST.DESCRIPTOR, segments) or "body"
    cause = _FAILED_FIELD.sub("", text)
    cause = cause.split(" at ExportLogsServiceRequest", 1)[0].rstrip(". ")
    return invalid_field(
        field,
        f"invalid value for {field}: {cause or 'it does not follow OTLP JSON'}; "
        "bytes values other than traceId and spanId are base64",
        reason="INVALID_FIELD_VALUE",
    )


def encode_response(reply: bytes, encoding: Encoding) -> bytes:
    """Encode the router's ExportLogsServiceResponse in the request's encoding."""
    if encoding is Encoding.PROTOBUF:
        return reply
    response = _RESPONSE.FromString(reply)
    return _json_bytes(json_format.MessageToDict(response))


def encode_status(status: status_pb2.Status, encoding: Encoding) -> bytes:
    """Encode a google.rpc.Status as the body of an OTLP/HTTP error reply."""
    if encoding is Encoding.PROTOBUF:
        return status.SerializeToString()
    content: dict[str, Any] = {"code": status.code, "message": status.message}
    if status.details:
        content["details"] = [transcode.any_json(detail) for detail in status.details]
    return _json_bytes(content)


def _json_bytes(content: Any) -> bytes:
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")
