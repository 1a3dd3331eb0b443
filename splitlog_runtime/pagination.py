"""Page sizes and opaque keyset page tokens for List methods.

A token contains the sort key of the last item returned and a hash of the request
fields that select the collection (parent, filter, ordering). A token replayed
with different fields is rejected as INVALID_ARGUMENT instead of returning a
page from another collection.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from splitlog_runtime import limits
from splitlog_runtime.errors import InvalidArgument, invalid_field

DEFAULT_PAGE_SIZE = 50
# The default of the `max_page_size` setting; `limits.current()` has the one
# in force.
MAX_PAGE_SIZE = limits.DEFAULTS.max_page_size

#: Characters of a rejected page token that the error message quotes. A
#: longer token is cut here and ends with "…".
MAX_QUOTED_TOKEN_LENGTH = 40


def page_size(requested: int, field: str = "page_size") -> int:
    """Apply the default and the maximum (`max_page_size`) to a page size.

    Raises:
      InvalidArgument: the size is negative.
    """
    if requested < 0:
        raise invalid_field(
            field,
            f"must be 0 or more, got {requested}; 0 means the default of "
            f"{DEFAULT_PAGE_SIZE}",
        )
    maximum = limits.current().max_page_size
    if requested == 0:
        return min(DEFAULT_PAGE_SIZE, maximum)
    return min(requested, maximum)


def quote_token(token: str) -> str:
    """Quote a page token for an error message, cut to MAX_QUOTED_TOKEN_LENGTH."""
    if len(token) > MAX_QUOTED_TOKEN_LENGTH:
        token = token[:MAX_QUOTED_TOKEN_LENGTH] + "…"
    return repr(token)


def invalid_token(token: str, field: str = "page_token") -> InvalidArgument:
    """Build the INVALID_PAGE_TOKEN error for a token this method did not issue."""
    return invalid_field(
        field,
        f"{quote_token(token)} is not a page token returned by this method; "
        "send the next_page_token of the previous response, or none",
        reason="INVALID_PAGE_TOKEN",
    )


def _fingerprint(selector: Sequence[Any]) -> str:
    encoded = json.dumps(list(selector), sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def encode_token(last_key: Sequence[Any], selector: Sequence[Any]) -> str:
    """Build the token for the page after the item whose sort key is last_key."""
    payload = {"k": list(last_key), "s": _fingerprint(selector)}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(
    token: str, selector: Sequence[Any], field: str = "page_token"
) -> list[Any] | None:
    """Return the last sort key stored in a token, or None for an empty token.

    Raises:
      InvalidArgument: the token is malformed, or was issued for a request
        with other selecting fields.
    """
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key, fingerprint = payload["k"], payload["s"]
        if not isinstance(key, list):
            raise ValueError("the sort key is not a list")
    except (
        binascii.Error,
        ValueError,
        KeyError,
        TypeError,
        UnicodeDecodeError,
        RecursionError,
    ):
        raise invalid_token(token, field) from None
    if fingerprint != _fingerprint(selector):
        raise invalid_field(
            field,
            f"{quote_token(token)} was issued for a request with other parameters; "
            "keep every field but page_size unchanged between pages, or start "
            "again without a token",
            reason="PAGE_TOKEN_MISMATCH",
        )
    return key
