"""Domain errors and their mapping to gRPC status codes.

Services raise one of the classes below. The error interceptor turns it into a
status with `google.rpc` details: an ErrorInfo always, plus BadRequest,
ResourceInfo, PreconditionFailure or RetryInfo when the error carries them.
Each class is registered once against its canonical code in `ERROR_CLASSES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "splitlog.dev"

#: Trailer with which a server tells a client's retry policy how many
#: milliseconds to wait before a retry; a negative value means no retry.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
#: Trailing metadata key of the google.rpc.Status with a failed call's details.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# gRPC sends the message twice in trailers (grpc-message and inside
# grpc-status-details-bin), and peers reject trailers over 8 to 16 KiB. Texts
# that echo a huge client value are shortened in the middle to stay well below.
MAX_TEXT_LENGTH = 1024

#: Estimated trailer bytes that one status may fill: grpc-message and
#: grpc-status-details-bin together. grpcio 1.85 rejects received metadata
#: over 8 KiB (`grpc.max_metadata_size`) with RESOURCE_EXHAUSTED "Stream
#: removed", so a status stays at half of that and leaves room for other keys.
MAX_STATUS_TRAILER_BYTES = 4096

#: Violations listed in each BadRequest or PreconditionFailure detail. The
#: rest are counted in the ErrorInfo metadata (`OMITTED_VIOLATIONS_KEY`).
MAX_LISTED_VIOLATIONS = 20

#: ErrorInfo metadata key that counts the violations left out of the details.
OMITTED_VIOLATIONS_KEY = "omitted_violations"

#: Characters of each metadata value and each text of a violation or
#: ResourceInfo that a status keeps whole; `DomainError.to_status` shortens
#: longer ones in the middle. A text made of entries stays whole when it is
#: built with `join_whole` to this length.
MAX_DETAIL_TEXT_LENGTH = 256

# Character limits of the texts in a status, tried in turn until the status
# fits MAX_STATUS_TRAILER_BYTES: the message, then each metadata value and
# each text of a violation or ResourceInfo.
_TEXT_LIMITS = ((MAX_TEXT_LENGTH, MAX_DETAIL_TEXT_LENGTH), (512, 128), (128, 64))


def clip(text: str, limit: int = MAX_TEXT_LENGTH) -> str:
    """Shorten text over `limit` characters in the middle, keeping both ends.

    The start usually names the field and the end gives the fix, so both stay.
    """
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    omitted = len(text) - 2 * keep
    return f"{text[:keep]}…({omitted} characters omitted)…{text[-keep:]}"


#: Items that a message lists before it counts the rest, as in `join_some`.
MAX_LISTED_IN_MESSAGE = 5


def join_some(
    items: Sequence[str], separator: str = ", ", limit: int = MAX_LISTED_IN_MESSAGE
) -> str:
    """Join the first `limit` items and count the rest, such as `a, b and 3 more`.

    A message that names every item of a long list would be clipped in the
    middle, so it names a few and the error's details list more.
    """
    if len(items) <= limit:
        return separator.join(items)
    return f"{separator.join(items[:limit])} and {len(items) - limit} more"


def join_whole(
    items: Sequence[str],
    separator: str,
    max_length: int,
    singular: str = "",
    plural: str = "",
    limit: int | None = None,
) -> str:
    """Join as many whole items as fit `max_length` characters, and count the rest.

    The result, such as `a; b and 3 more groups`, is cut only between items,
    so no item loses its middle as in `clip`. The first item is always
    listed, whatever its length.

    Args:
      items: the texts to list, in order.
      separator: put between two listed items.
      max_length: characters the result may have, the count included.
      singular: the noun after a count of 1, such as "group"; may be empty.
      plural: the noun after a larger count, such as "groups"; may be empty.
      limit: most items listed, if not all that fit.
    """

    def more(count: int) -> str:
        noun = singular if count == 1 else plural
        return f" and {count} more" + (f" {noun}" if noun else "")

    max_listed = len(items) if limit is None else min(limit, len(items))
    listed = 1 if items else 0
    length = len(items[0]) if items else 0
    while listed < max_listed:
        longer = length + len(separator) + len(items[listed])
        rest = len(items) - listed - 1
        if longer + (len(more(rest)) if rest else 0) > max_length:
            break
        listed, length = listed + 1, longer
    text = separator.join(items[:listed])
    if listed < len(items):
        text += more(len(items) - listed)
    return text


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: its path in the request and what is wrong with it."""

    field: str
    description: str
    reason: str = ""


@dataclass(frozen=True)
class Resource:
    """The resource an error is about, for ResourceInfo details."""

    resource_type: str
    resource_name: str
    description: str = ""


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition, for PreconditionFailure details."""

    type: str
    subject: str
    description: str


class DomainError(Exception):
    """An expected failure that the caller should see as a status code.

    Args:
      message: English text for the caller that names the value and the fix.
      reason: UPPER_SNAKE_CASE ErrorInfo reason; defaults to the class reason.
      metadata: extra ErrorInfo metadata (string keys and values).
      field_violations: invalid request fields, sent as BadRequest.
      resource: the resource involved, sent as ResourceInfo.
      preconditions: failed preconditions, sent as PreconditionFailure.
      retry_delay: seconds the caller should wait before retrying, sent as
        RetryInfo.
      final_attempt: the call already waited as long as its deadline
        allowed, so a retry policy of the caller's channel must not send it
        again within the same deadline: it would only end in
        DEADLINE_EXCEEDED instead of this error. The status then carries
        the trailer `RETRY_PUSHBACK_KEY` with a negative value, which tells
        grpc not to retry. The caller may still retry later.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        resource: Resource | None = None,
        preconditions: Iterable[PreconditionViolation] = (),
        retry_delay: float | None = None,
        final_attempt: bool = False,
    ) -> None:
        message = clip(message)
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {
            key: clip(value, 256) for key, value in (metadata or {}).items()
        }
        self.field_violations = [
            FieldViolation(clip(v.field, 256), clip(v.description), v.reason)
            for v in field_violations
        ]
        self.resource = resource
        self.preconditions = list(preconditions)
        self.retry_delay = retry_delay
        self.final_attempt = final_attempt

    def to_status(self) -> status_pb2.Status:
        """Build the google.rpc.Status that carries this error.

        The status fits MAX_STATUS_TRAILER_BYTES. It lists at most
        MAX_LISTED_VIOLATIONS violations of each kind, fewer when their
        texts are long, and counts the others in the ErrorInfo metadata under
        OMITTED_VIOLATIONS_KEY. When even the status without violations is too
        large, the message and the other texts are shortened further.
        """
        for message_limit, text_limit in _TEXT_LIMITS:
            status = self._bounded_status(message_limit, text_limit)
            if status_trailer_bytes(status) <= MAX_STATUS_TRAILER_BYTES:
                return status
        # Only a service-made metadata map with many keys gets here. The
        # reason and the shortened message still name what failed.
        return self._bounded_status(*_TEXT_LIMITS[-1], keep_metadata=False)

    def _bounded_status(
        self, message_limit: int, text_limit: int, keep_metadata: bool = True
    ) -> status_pb2.Status:
        """Build the status with texts clipped to the limits, adding as many
        violations as fit MAX_STATUS_TRAILER_BYTES."""
        fields = [
            error_details_pb2.BadRequest.FieldViolation(
                field=clip(v.field, text_limit),
                description=clip(v.description, text_limit),
                reason=v.reason,
            )
            for v in self.field_violations[:MAX_LISTED_VIOLATIONS]
        ]
        preconditions = [
            error_details_pb2.PreconditionFailure.Violation(
                type=v.type,
                subject=clip(v.subject, text_limit),
                description=clip(v.description, text_limit),
            )
            for v in self.preconditions[:MAX_LISTED_VIOLATIONS]
        ]
        metadata = {}
        if keep_metadata:
            metadata = {
                key: clip(value, text_limit) for key, value in self.metadata.items()
            }
        message = clip(self.message, message_limit)
        status = self._status(message, metadata, fields, preconditions, text_limit)
        # Drop violations from the end until the status fits, or none is left.
        while status_trailer_bytes(status) > MAX_STATUS_TRAILER_BYTES and (
            fields or preconditions
        ):
            longer = fields if len(fields) >= len(preconditions) else preconditions
            longer.pop()
            status = self._status(message, metadata, fields, preconditions, text_limit)
        return status

    def _status(
        self,
        message: str,
        metadata: Mapping[str, str],
        fields: list[error_details_pb2.BadRequest.FieldViolation],
        preconditions: list[error_details_pb2.PreconditionFailure.Violation],
        text_limit: int,
    ) -> status_pb2.Status:
        omitted = (
            len(self.field_violations)
            - len(fields)
            + len(self.preconditions)
            - len(preconditions)
        )
        if omitted:
            metadata = {**metadata, OMITTED_VIOLATIONS_KEY: str(omitted)}
        details = [
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=metadata
            )
        ]
        if fields:
            details.append(error_details_pb2.BadRequest(field_violations=fields))
        if self.resource is not None:
            details.append(
                error_details_pb2.ResourceInfo(
                    resource_type=self.resource.resource_type,
                    resource_name=clip(self.resource.resource_name, text_limit),
                    description=clip(self.resource.description, text_limit),
                )
            )
        if preconditions:
            details.append(
                error_details_pb2.PreconditionFailure(violations=preconditions)
            )
        if self.retry_delay is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_delay * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        packed = []
        for detail in details:
            wrapper = any_pb2.Any()
            wrapper.Pack(detail)
            packed.append(wrapper)
        return status_pb2.Status(
            code=self.code.value[0], message=message, details=packed
        )


def status_trailer_bytes(status: status_pb2.Status) -> int:
    """Estimate the trailer bytes that gRPC sends for a status.

    grpc-message carries the message percent-encoded, with every byte outside
    printable ASCII as three characters, and grpc-status-details-bin carries
    the serialized status in base64.
    """
    encoded = status.message.encode("utf-8", "surrogatepass")
    message_bytes = sum(1 if 0x20 <= byte < 0x7F else 3 for byte in encoded)
    details_bytes = (status.ByteSize() + 2) // 3 * 4
    return message_bytes + details_bytes


class InvalidArgument(DomainError):
    """The request is wrong whatever the state of the system."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    """A named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the call; retrying will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrent change won; re-read and apply the change again."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class OutOfRange(DomainError):
    """A position past the end of the available data."""

    code = grpc.StatusCode.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class ResourceExhausted(DomainError):
    """Overload or a quota. With a RetryInfo, the call may succeed after its delay."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    """A transient condition; the same call may succeed when retried."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    """The caller's deadline is too short for the call to complete."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_TOO_SHORT"


class Unauthenticated(DomainError):
    """Missing or invalid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The caller may not perform the call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unimplemented(DomainError):
    """The method exists in the API but this server does not serve it yet."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"


ERROR_CLASSES: dict[grpc.StatusCode, type[DomainError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
        Unimplemented,
    )
}


def ended_its_attempts(exc: grpc.RpcError) -> bool:
    """Return whether a failed call to another component used up its deadline.

    That is a DEADLINE_EXCEEDED, or an error that the server sent as a final
    attempt (`DomainError.final_attempt`). An error built from such a
    failure should be a final attempt too.
    """
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == RETRY_PUSHBACK_KEY and str(value).startswith("-"):
            return True
    return False


def internal_status(message: str) -> status_pb2.Status:
    """Build the INTERNAL status sent for an unexpected exception."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))
    return status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[info])


def invalid_field(
    field: str,
    description: str,
    reason: str = "INVALID_FIELD",
    metadata: Mapping[str, str] | None = None,
):
    """Build an InvalidArgument for one bad field, with a matching violation.

    `metadata` is added to the ErrorInfo metadata beside the `field` key.
    """
    return InvalidArgument(
        f"{field}: {description}",
        reason=reason,
        metadata={"field": field, **(metadata or {})},
        field_violations=[FieldViolation(field, description, reason)],
    )


def status_reason(status: status_pb2.Status) -> str:
    """Return the ErrorInfo reason of a status, or empty."""
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return info.reason
    return ""
