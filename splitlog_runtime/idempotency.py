"""Request hashes and errors for creates retried with a `request_id`.

Each service stores, beside a create's `request_id`, a hash of the request
without its key. A retry with the same key and the same request returns the
resource that the first call created. The same key with any other value
fails with INVALID_ARGUMENT, reason REQUEST_ID_REUSED, because returning the
first resource would tell the caller that its new values were stored. Keys
stored before a service kept hashes have none and replay whatever comes.

Also the check of the key itself, which every service applies alike.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from splitlog_runtime.errors import InvalidArgument, invalid_field

REQUEST_ID_REUSED = "REQUEST_ID_REUSED"

#: JSON values a request hash is built from.
HashedValue = str | int | bool | None

_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def validate_request_id(value: str, field: str = "request_id") -> str:
    """Check an idempotency key and return it in lower case; empty stays empty.

    Raises:
      InvalidArgument: the key is not a UUID in its 36-character form.
    """
    if not value:
        return ""
    if not _UUID.fullmatch(value):
        raise invalid_field(
            field,
            f"{value!r} is not a UUID; send a fresh UUID in 8-4-4-4-12 form, such "
            "as '5f0c6d2e-8a41-4c3b-9a57-2f1e0b7d9c44', or leave it empty",
            reason="INVALID_REQUEST_ID",
        )
    return value.lower()


def values_hash(values: Sequence[HashedValue]) -> str:
    """Hash the checked values of a create, in a fixed order, without its key.

    Hash the values after validation rather than the request's bytes, so
    that fields the server ignores, such as `name` and the output-only ones,
    do not count.

    Returns:
      The SHA-256 of the values as compact JSON, in hex (64 characters).
    """
    encoded = json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def key_reused(
    request_id: str, problem: str, advice: str, field: str = "request_id"
) -> InvalidArgument:
    """Build the error for a `request_id` that an earlier, other request used.

    Args:
      request_id: the key.
      problem: what the key was used for, such as "was already used to
        create a settlement in another group".
      advice: the sentence that states what the caller should send instead.
      field: the request field that carries the key.
    """
    return invalid_field(
        field,
        f"{request_id!r} {problem}; a request_id may only be sent again with "
        f"exactly the same request. {advice}",
        reason=REQUEST_ID_REUSED,
        metadata={"request_id": request_id},
    )


def check_same_request(
    stored_hash: str | None, request_hash: str, request_id: str, what: str
) -> None:
    """Reject a key whose stored request hash differs from this request's.

    Args:
      stored_hash: the hash stored with the key; None for a key stored before
        hashes were kept, which any request may replay.
      request_hash: the hash of this request (`values_hash`).
      request_id: the key.
      what: the resource the key created, such as "user" or "group".

    Raises:
      InvalidArgument: with reason REQUEST_ID_REUSED.
    """
    if stored_hash is None or stored_hash == request_hash:
        return
    raise key_reused(
        request_id,
        f"was already used to create a {what} with other values",
        f"Send a new UUID for each new {what}",
    )


#: Metadata key that the gateway adds to a call whose request_id it filled in
#: (`gateway.idempotency`). Only the gateway's own retries can repeat such a
#: key, so a backend may skip its look-up of an earlier request before the
#: write: a retry whose first attempt was stored still fails on the key's
#: unique index and then replays. A client that sends the key itself only
#: gives up that early look-up.
FILLED_REQUEST_ID_KEY = "x-splitlog-request-id-filled"
