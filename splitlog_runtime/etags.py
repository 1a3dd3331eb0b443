"""Etags of stored versions, and the error of a write with a stale one."""

from __future__ import annotations

from splitlog_runtime.errors import Aborted, Resource


def format_etag(version: int) -> str:
    """Return the etag of a stored version, quoted as RFC 7232 requires."""
    return f'"{version}"'


def stale_etag(field: str, expected: int, current: int, resource: Resource) -> Aborted:
    """Build the ETAG_MISMATCH error of a write that carries an old etag.

    The message and the ErrorInfo metadata (`current_etag`) name the current
    etag, so that the client sees how far the resource has moved.
    """
    return Aborted(
        f"{field} {format_etag(expected)} is stale: {resource.resource_name!r} "
        f"has changed since it was read, and its etag is now "
        f"{format_etag(current)}; read it again and retry with the new etag",
        reason="ETAG_MISMATCH",
        metadata={"current_etag": format_etag(current)},
        resource=resource,
    )
