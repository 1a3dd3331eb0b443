"""Domain errors and their mapping to gRPC status codes.

Services raise one of the classes below. The error interceptor turns it into a
status with `google.rpc` details: an ErrorInfo always, plus BadRequest,
ResourceInfo, PreconditionFailure or RetryInfo when the error carries them.
Each class is registered once against its canonical code in `ERROR_CLASSES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "splitlog.dev"

# gRPC sends the message twice in trailers (grpc-message and inside
# grpc-status-details-bin), and peers reject trailers over 8 to 16 KiB. Texts
# that echo a huge client value are shortened in the middle to stay well below.
MAX_TEXT_LENGTH = 1024


def clip(text: str, limit: int = MAX_TEXT_LENGTH) -> str:
    """Shorten text over `limit` characters in the middle, keeping both ends.

    The start usually names the field and the end gives the fix, so both stay.
    """
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    omitted = len(text) - 2 * keep
    return f"{text[:keep]}…({omitted} characters omitted)…{text[-keep:]}"


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

    def to_status(self) -> status_pb2.Status:
        """Build the google.rpc.Status that carries this error."""
        details = [
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            )
        ]
        if self.field_violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in self.field_violations
                    ]
                )
            )
        if self.resource is not None:
            details.append(
                error_details_pb2.ResourceInfo(
                    resource_type=self.resource.resource_type,
                    resource_name=self.resource.resource_name,
                    description=self.resource.description,
                )
            )
        if self.preconditions:
            details.append(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in self.preconditions
                    ]
                )
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
            code=self.code.value[0], message=self.message, details=packed
        )


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
        Unauthenticated,
        PermissionDenied,
        Unimplemented,
    )
}


def internal_status(message: str) -> status_pb2.Status:
    """Build the INTERNAL status sent for an unexpected exception."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))
    return status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[info])


def invalid_field(field: str, description: str, reason: str = "INVALID_FIELD"):
    """Build an InvalidArgument for one bad field, with a matching violation."""
    return InvalidArgument(
        f"{field}: {description}",
        reason=reason,
        metadata={"field": field},
        field_violations=[FieldViolation(field, description, reason)],
    )
