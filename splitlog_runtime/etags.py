"""Etags of stored versions, and the error of a write with another etag."""

from __future__ import annotations

import re

from splitlog_runtime.errors import Aborted, Resource, invalid_field

_ETAG = re.compile(r'"([0-9]{1,18})"')


def format_etag(version: int) -> str:
    """Return the etag of a stored version, quoted as RFC 7232 requires."""
    return f'"{version}"'


def parse_etag(value: str, field: str = "etag") -> int | None:
    """Return the version inside an etag, or None when no etag was sent.

    Raises:
      InvalidArgument: the etag was not issued by this service.
    """
    if not value:
        return None
    match = _ETAG.fullmatch(value)
    if match is None:
        raise invalid_field(
            field,
            f"{value!r} is not an etag issued by this service; send the etag "
            "of the latest read, quotes included, such as '\"3\"', or none",
            reason="INVALID_ETAG",
        )
    return int(match.group(1))


def stale_etag(field: str, expected: int, current: int, resource: Resource) -> Aborted:
    """Build the ETAG_MISMATCH error of a write whose etag is not the current one.

    Every service raises this one error, so the message always starts with
    the etag sent and the current etag, as does the ErrorInfo metadata
    (`current_etag`). Versions count up from 1, so an etag below the current
    one was issued for an older version, and the message calls it stale and
    asks the caller to read again. Any other etag, such as `"9"` for a
    resource at `"1"`, was never issued for the resource, and the message
    names where to find the right one.
    """
    name = resource.resource_name
    noun = resource.resource_type.rsplit("/", 1)[-1].lower()
    message = (
        f"{field} {format_etag(expected)} does not match the current etag "
        f"{format_etag(current)} of {name!r}: "
    )
    if 0 < expected < current:
        message += (
            f"it is stale, because the {noun} has changed since it was read. "
            "Read it again and retry with the current etag"
        )
    else:
        message += (
            f"the {noun} never had that etag. Send the etag of a read of it "
            "(the etag field, or the ETag header of a REST GET)"
        )
    return Aborted(
        message,
        reason="ETAG_MISMATCH",
        metadata={"current_etag": format_etag(current)},
        resource=resource,
    )
