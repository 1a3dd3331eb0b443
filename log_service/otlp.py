"""Conversion of OTLP log exports into normalised log entry columns.

`export_request_to_batch` reads an `ExportLogsServiceRequest` straight into a
`model.BatchBuilder`, without building `LogEntry` messages first, so OTLP
records follow exactly the entry rules of `model.normalize_batch` at the cost
of one pass. Records are indexed from 0 across every resource and scope, in
request order, and rejections carry that index.

Mapping of an OTLP log record to an entry:

- resource attribute `service.name` → `service`, or `unknown_service` when
  it is missing or empty.
- resource attribute `host.name` → `host`.
- `body` → `message`: a string as is, bytes through `model.repair_utf8`,
  other kinds as compact JSON. Strings with invalid UTF-8 were already
  repaired the same way while parsing (`otlp_parse`).
- `time_unix_nano` → `timestamp`; 0 takes the observed time.
- `observed_time_unix_nano` → `observed_timestamp`; 0 takes the receive time.
- `severity_number` → severity by range (1-8 DEBUG, 9-12 INFO, 13-16 WARN,
  17-20 ERROR, 21-24 FATAL). A number outside 1-24 does not decide: it is
  kept in the attribute `severity_number`, and `severity_text` decides as
  for a `LogEntry`.
- `severity_text` → the attribute `severity_text` when the number decided
  and `model.SEVERITY_WORDS` does not map the text to the same severity,
  such as `notice` or `AUDIT` with 13 (WARN). `WARNING` with 13 is not
  kept, because it adds nothing to the severity. Without a number in 1-24,
  the text follows the `LogEntry` rules.
- `trace_id`, `span_id` → lower-case hex; all zero bytes become empty.
- record attributes and the other resource attributes → attributes. A record
  attribute replaces a resource attribute with the same key.
- scope name and `event_name` → attributes `scope.name` and `event.name`.
  The scope name replaces a resource attribute of that key, and a record
  attribute replaces the scope name, as for resource attributes.
- `dropped_attributes_count` → added to `dropped_attributes_count`, with one
  more for each value that the conversion drops: an earlier value of a key
  that repeats among the resource's or the record's attributes (keys that
  differ only in invalid UTF-8 repeat after the repair), and a record
  attribute `event.name` or `severity_number` whose value the record's
  `event_name` or out-of-range severity number replaced with another.

Attribute values become strings: strings as is, booleans as `true` or
`false`, numbers in JSON notation, arrays and key-value lists as compact JSON.
A bytes value goes through `repair_utf8`, like a bytes body. Bytes nested
inside an array or key-value list become base64 text, as in OTLP's JSON
encoding.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Mapping

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from log_service.model import (
    BatchBuilder,
    Limits,
    NormalizedBatch,
    repair_utf8,
    severity_from_number,
)
from log_service.request_ids import DIGEST_BYTES
from splitlog_runtime.errors import ResourceExhausted, clip
from splitlog_runtime.limits import expanded_too_large

# Service name for resources without `service.name`. OpenTelemetry's resource
# conventions use it, and SDKs may append `:<executable name>`.
UNKNOWN_SERVICE = "unknown_service"
SERVICE_NAME_KEY = "service.name"
HOST_NAME_KEY = "host.name"
SCOPE_NAME_KEY = "scope.name"
EVENT_NAME_KEY = "event.name"
# Attribute that keeps a severity number outside OpenTelemetry's 1-24.
SEVERITY_NUMBER_KEY = "severity_number"

# Path in an OTLP request of each entry field, named in rejections.
OTLP_FIELDS: Mapping[str, str] = {
    "service": f"resource.attributes[{SERVICE_NAME_KEY}]",
    "host": f"resource.attributes[{HOST_NAME_KEY}]",
    "severity": "severity_number",
    "timestamp": "time_unix_nano",
    "observed_timestamp": "observed_time_unix_nano",
    "trace_id": "trace_id",
    "span_id": "span_id",
    "attributes": "attributes",
}

# Rejections described one by one in a partial-success error message.
MAX_LISTED_REJECTIONS = 3

_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _any_to_json_value(value: common_pb2.AnyValue) -> object:
    """Convert an AnyValue to a value that `json` can encode."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        # JSON has no NaN or infinity, so those travel as text.
        return number if math.isfinite(number) else str(number)
    if kind == "array_value":
        return [_any_to_json_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {
            pair.key: _any_to_json_value(pair.value)
            for pair in value.kvlist_value.values
        }
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def any_to_text(value: common_pb2.AnyValue) -> tuple[str, bool]:
    """Convert an AnyValue to the text stored for a body or attribute.

    Returns the text and whether invalid UTF-8 in a bytes value was repaired.
    An empty AnyValue, or one of a kind this module does not know, is "".
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value, False
    if kind == "bytes_value":
        return repair_utf8(value.bytes_value)
    if kind == "bool_value":
        return ("true" if value.bool_value else "false"), False
    if kind == "int_value":
        return str(value.int_value), False
    if kind in ("double_value", "array_value", "kvlist_value"):
        return _compact_json(_any_to_json_value(value)), False
    return "", False


def count_log_records(request: logs_service_pb2.ExportLogsServiceRequest) -> int:
    """Count the log records of a request across every resource and scope."""
    return sum(
        len(scope_logs.log_records)
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
    )


# Start of the batch ids that the router derives for OTLP exports.
EXPORT_ID_PREFIX = "otlp"


def every_record_timed(request: logs_service_pb2.ExportLogsServiceRequest) -> bool:
    """Return whether every record has `time_unix_nano` or `observed_time_unix_nano`.

    A record with neither takes the receive time, so two byte-identical
    exports of such records can be two events rather than a retry.
    """
    return all(
        record.time_unix_nano or record.observed_time_unix_nano
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    )


def export_batch_id(request_digest: bytes, caller: str) -> str:
    """Return the batch id of an export: `otlp/` and a digest in hex.

    `request_digest` is the digest of the serialized export
    (`otlp_parse.ParsedExport.digest`), and `caller` names who sent it, such
    as `users/u1/apiKeys/k1`. The same bytes from two callers get two ids, so
    one caller's export never counts as a retry of another's.
    """
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    digest.update(caller.encode("utf-8", "surrogatepass"))
    # The NUL keeps a caller name from running into the digest's bytes.
    digest.update(b"\0")
    digest.update(request_digest)
    return f"{EXPORT_ID_PREFIX}/{digest.hexdigest()}"


# Bytes that the attribute `scope.name` adds to an entry besides the name.
# They are the map entry's tag and length (up to 1 + 5), the key with its tag
# and length, and the value's tag and length (up to 1 + 5).
_SCOPE_ATTRIBUTE_BYTES = (1 + 5) + (1 + 1 + len(SCOPE_NAME_KEY)) + (1 + 5)


def export_size_error(
    request: logs_service_pb2.ExportLogsServiceRequest, max_message_bytes: int
) -> ResourceExhausted | None:
    """Return the error for an export too large once its records are entries.

    Each record becomes an entry with its resource's attributes and its
    scope's name copied in, so a small export can make a large batch. The
    estimate adds, per record, the serialized resource and the `scope.name`
    attribute to the request's own size, and it must fit in
    `max_message_bytes`, as a `WriteLogEntriesRequest` with the same
    entries must.
    NOTE: array and key-value attribute values become JSON text, which can
    be a little longer than their protobuf form, so the estimate can be low
    by that difference.
    """
    request_bytes = request.ByteSize()
    total = request_bytes
    largest_number = 0
    largest_bytes = 0
    for number, resource_logs in enumerate(request.resource_logs):
        resource_bytes = resource_logs.resource.ByteSize()
        copied = 0
        for scope_logs in resource_logs.scope_logs:
            per_record = resource_bytes
            scope_name = scope_logs.scope.name
            if scope_name:
                per_record += len(scope_name.encode()) + _SCOPE_ATTRIBUTE_BYTES
            copied += per_record * len(scope_logs.log_records)
        total += copied
        if copied > largest_bytes:
            largest_number, largest_bytes = number, copied
    if total <= max_message_bytes:
        return None
    field = f"resource_logs[{largest_number}]"
    return expanded_too_large(
        f"the export is {request_bytes} bytes, but its log records with the "
        f"resource attributes and scope name copied into every record are about "
        f"{total} bytes, over max_message_bytes ({max_message_bytes}); "
        f"{field} adds the most, {largest_bytes} bytes. Export fewer records "
        "per resource, fewer or shorter resource attributes, or smaller batches",
        field,
        f"its copied attributes add about {largest_bytes} bytes",
        request_bytes=request_bytes,
        expanded_bytes=total,
        max_message_bytes=max_message_bytes,
    )


def export_request_to_batch(
    request: logs_service_pb2.ExportLogsServiceRequest,
    *,
    now_ns: int,
    limits: Limits,
    retention_cutoff: Callable[[str], int],
    repaired_records: frozenset[int] = frozenset(),
) -> NormalizedBatch:
    """Validate and normalise the log records of an OTLP export request.

    The mapping is in the module docstring; every other rule is that of
    `model.normalize_batch`. Check the size first with
    `model.batch_error_for_size(count_log_records(request), limits)`.
    `repaired_records` lists the records, by index, whose strings had
    invalid UTF-8 replaced while parsing (`otlp_parse.ParsedExport`); their
    entries get `utf8_repaired=true` too.
    """
    builder = BatchBuilder(
        now_ns=now_ns,
        limits=limits,
        retention_cutoff=retention_cutoff,
        fields=OTLP_FIELDS,
    )
    add = builder.add
    index = 0
    for resource_logs in request.resource_logs:
        service = ""
        host = ""
        resource_attributes: dict[str, str] = {}
        resource_repaired = False
        resource_pairs = resource_logs.resource.attributes
        # A key that repeats, also one that only the repair of invalid UTF-8
        # made equal, keeps its last value, and each earlier one counts as
        # dropped.
        resource_dropped = len(resource_pairs) - len({p.key for p in resource_pairs})
        for pair in resource_pairs:
            text, repaired = any_to_text(pair.value)
            resource_repaired = resource_repaired or repaired
            key = pair.key
            if key == SERVICE_NAME_KEY:
                service = text
            elif key == HOST_NAME_KEY:
                host = text
            else:
                resource_attributes[key] = text
        service = service or UNKNOWN_SERVICE

        for scope_logs in resource_logs.scope_logs:
            scope_attributes = resource_attributes
            scope_name = scope_logs.scope.name
            if scope_name:
                scope_attributes = {
                    **resource_attributes,
                    SCOPE_NAME_KEY: scope_name,
                }

            for record in scope_logs.log_records:
                body = record.body
                if body.WhichOneof("value") == "string_value":
                    message = body.string_value
                    repaired = resource_repaired
                else:
                    message, repaired = any_to_text(body)
                    repaired = repaired or resource_repaired

                attributes = scope_attributes
                dropped = record.dropped_attributes_count + resource_dropped
                event_name = record.event_name
                number = record.severity_number
                severity = severity_from_number(number) if number else 0
                if record.attributes or event_name or severity is None:
                    attributes = dict(scope_attributes)
                    pairs = record.attributes
                    keys = {pair.key for pair in pairs}
                    dropped += len(pairs) - len(keys)
                    for pair in pairs:
                        text, bad = any_to_text(pair.value)
                        repaired = repaired or bad
                        attributes[pair.key] = text
                    if event_name:
                        dropped += _replaced(
                            attributes, keys, EVENT_NAME_KEY, event_name
                        )
                        attributes[EVENT_NAME_KEY] = event_name
                    if severity is None:
                        text = str(number)
                        dropped += _replaced(
                            attributes, keys, SEVERITY_NUMBER_KEY, text
                        )
                        attributes[SEVERITY_NUMBER_KEY] = text
                        severity = 0

                trace_id = record.trace_id
                span_id = record.span_id
                add(
                    index,
                    service=service,
                    host=host,
                    message=message,
                    severity=severity,
                    severity_text=record.severity_text,
                    timestamp=record.time_unix_nano,
                    observed_timestamp=record.observed_time_unix_nano,
                    attributes=attributes,
                    trace_id=trace_id.hex() if trace_id else "",
                    span_id=span_id.hex() if span_id else "",
                    dropped_attributes=dropped,
                    utf8_repaired=repaired or index in repaired_records,
                )
                index += 1
    return builder.build()


def _replaced(
    attributes: Mapping[str, str], record_keys: set[str], key: str, value: str
) -> int:
    """Return 1 when setting `key` to `value` drops a record attribute's value.

    A resource attribute that it replaces is not counted, as a record
    attribute that replaces one is not.
    """
    return int(key in record_keys and attributes[key] != value)


def export_response(
    batch: NormalizedBatch,
) -> logs_service_pb2.ExportLogsServiceResponse:
    """Build the OTLP response for a normalised export.

    When every record was accepted, `partial_success` stays unset, which OTLP
    senders read as full success. Otherwise it counts the rejected records, and its
    error message describes the first few by index.
    """
    rejections = batch.rejections
    if not rejections:
        return logs_service_pb2.ExportLogsServiceResponse()
    listed = "; ".join(
        f"record {rejection.index}: {rejection.description}"
        for rejection in rejections[:MAX_LISTED_REJECTIONS]
    )
    message = f"rejected {len(rejections)} of {batch.entry_count} log records: {listed}"
    unlisted = len(rejections) - MAX_LISTED_REJECTIONS
    if unlisted > 0:
        message += f"; and {unlisted} more"
    return logs_service_pb2.ExportLogsServiceResponse(
        partial_success=logs_service_pb2.ExportLogsPartialSuccess(
            rejected_log_records=len(rejections),
            error_message=clip(message, 2048),
        )
    )
