"""Opaque page tokens for ListLogEntries and resume tokens for TailLogEntries.

Both are URL-safe base64 of compact JSON and carry a hash of the request's
filters, so a token sent with other filters is rejected as INVALID_ARGUMENT
instead of continuing another listing.

A page token contains the position of the last entry returned, as
(timestamp, shard, sequence), plus what the first page fixed: the highest
sequence number of every shard it read and the end of the time range. Later
pages read only up to those sequence numbers, so entries written between
pages neither shift nor repeat the pages.

Both tokens carry a check hash `h` of every other key, computed over
canonical JSON (sorted keys, no whitespace), and the decoders reject unknown
keys and values of the wrong type. So a token edited by hand is rejected
rather than resumed at another position. The hash has no key: anyone can
compute it, so it catches edits, not forgery. Signing tokens would need a key
shared by every router and kept across restarts, and would protect nothing,
because a caller allowed to read entries can list any time range with any
filters. A token changed on purpose changes only its caller's own listing or
tail (see `check_page_token_end`). Tokens of version 1, issued before the
hash covered every key, are rejected (see `TOKEN_VERSION`).

A token must account for every shard that the request reads. A page token
without a shard's sequence number, or a resume token without a shard's
position, was issued by a router with other shards or was altered. Such a
token is rejected rather than resumed with the shard skipped, which would
leave out its entries without an error (see `missing_shards_error`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from splitlog_runtime.errors import InvalidArgument, invalid_field

# Every number in a token is an int64 of the node API: a time in Unix
# nanoseconds or a sequence number.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Format of the tokens that this module issues. Version 1 page tokens hashed
# only their end time and version 1 resume tokens had no hash, so stripping
# the hash would pass any edit as version 1. Tokens of another version are
# rejected, and the message's fix is to start again without a token.
TOKEN_VERSION = 2

# Every key of a token's JSON payload. Each is always present.
_PAGE_TOKEN_KEYS = frozenset({"v", "f", "c", "s", "e", "h"})
_RESUME_TOKEN_KEYS = frozenset({"v", "f", "p", "u", "e", "h"})


def filter_hash(filters: Mapping[str, Any]) -> str:
    """Hash the fields that select the entries, independent of key order."""
    encoded = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(encoded.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Cursor:
    """Position of an entry in the merged order of every shard."""

    timestamp: int
    shard: str
    sequence: int


@dataclass(frozen=True)
class PageToken:
    """Position and fixed bounds that the next ListLogEntries page continues from.

    Attributes:
      filters: hash of the selecting fields of the first request.
      cursor: the last entry returned.
      snapshot: highest sequence number of each shard that the first page
        read, at that time. It is 0 for a shard that held no entry then.
      end_time: exclusive end of the time range in Unix nanoseconds.
    """

    filters: str
    cursor: Cursor
    snapshot: dict[str, int] = field(default_factory=dict)
    end_time: int = 0


@dataclass(frozen=True)
class ResumeToken:
    """Resume point of a TailLogEntries stream.

    Attributes:
      filters: hash of the selecting fields of the tail.
      positions: the last sequence number sent, per shard.
      unopened: the shards whose stream had not opened yet, so they have no
        position. A tail resumed from the token starts them after their
        newest entry.
      epochs: per shard, the epoch of the entry at its position in the log
        it was read from. A shard without one, such as a shard read at
        position 0 with no entry, resumes at its position unchecked.
    """

    filters: str
    positions: dict[str, int] = field(default_factory=dict)
    unopened: frozenset[str] = frozenset()
    epochs: dict[str, int] = field(default_factory=dict)


def check_hash(kind: str, payload: Mapping[str, Any]) -> str:
    """Hash every key of a token's payload but `h`, for the `h` key.

    The payload is serialized with sorted keys and no whitespace, so the hash
    does not depend on key order. `kind` ("page token" or "resume token") is
    hashed too, so that one kind's hash never fits the other.
    """
    body = {key: value for key, value in payload.items() if key != "h"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(f"{kind}\n{canonical}".encode(), digest_size=8).hexdigest()


def _encode(kind: str, payload: dict[str, Any]) -> str:
    """Serialize a token's payload with its check hash."""
    payload = {"v": TOKEN_VERSION, **payload}
    payload["h"] = check_hash(kind, payload)
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unchanged_advice(kind: str) -> str:
    if kind == "resume token":
        source = "an earlier response"
    else:
        source = "the previous response"
    return f"send the {kind} of {source} unchanged, or {_restart_advice(kind)}"


def _not_issued_error(token: str, field_name: str, kind: str) -> InvalidArgument:
    return invalid_field(
        field_name,
        f"{token!r} is not a {kind} returned by this method; {_unchanged_advice(kind)}",
        reason="INVALID_PAGE_TOKEN",
    )


def _earlier_version_error(field_name: str, kind: str) -> InvalidArgument:
    description = (
        f"the {kind} was issued by an earlier version of the router, before "
        f"{kind}s carried a check hash of every field, and is no longer "
        f"accepted; {_restart_advice(kind)}"
    )
    if kind == "resume token":
        description += ", and read the entries in between with ListLogEntries"
    return invalid_field(field_name, description, reason="INVALID_PAGE_TOKEN")


def _altered_error(field_name: str, kind: str) -> InvalidArgument:
    return invalid_field(
        field_name,
        f"the {kind} does not match its check hash, so it was altered; "
        f"{_unchanged_advice(kind)}",
        reason="INVALID_PAGE_TOKEN",
    )


def _decode(
    token: str, field_name: str, kind: str, keys: frozenset[str]
) -> dict[str, Any]:
    """Parse a token's JSON payload and check its version and keys.

    Raises:
      InvalidArgument: the token is not base64 of a JSON object, is of
        another version than `TOKEN_VERSION`, or its keys are not `keys`.
    """
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        raise _not_issued_error(token, field_name, kind)
    version = payload.get("v")
    # `True == 1` in Python, so the type is checked first.
    if type(version) is int and 0 < version < TOKEN_VERSION:
        raise _earlier_version_error(field_name, kind)
    if type(version) is not int or version != TOKEN_VERSION:
        raise _not_issued_error(token, field_name, kind)
    unknown = sorted(set(payload) - keys)
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise invalid_field(
            field_name,
            f"the {kind} has unknown key(s) {names}, so it was altered; "
            f"{_unchanged_advice(kind)}",
            reason="INVALID_PAGE_TOKEN",
        )
    if set(payload) != keys:
        raise _not_issued_error(token, field_name, kind)
    return payload


def _check_filters(payload: dict[str, Any], expected: str, field_name: str) -> None:
    if payload.get("f") != expected:
        raise invalid_field(
            field_name,
            "the token was issued for a request with other filters; keep every "
            "filter unchanged when you continue, or start again without a token",
            reason="INVALID_PAGE_TOKEN",
        )


def _integer(value: Any) -> int:
    """Return a JSON integer of a token.

    Raises:
      ValueError: `value` is not an integer; `True`, `1.0` and `"1"` are not.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _sequence(value: Any, shard: str, field_name: str, kind: str) -> int:
    """Read one sequence number of a token.

    Raises:
      ValueError: `value` is not an integer.
      InvalidArgument: it is negative or over the int64 maximum, which no
        token returned by this service contains.
    """
    sequence = _integer(value)
    if sequence < 0:
        problem = f"sequence {sequence} of shard {shard} is negative"
        raise invalid_sequence_error(field_name, kind, shard, problem)
    if sequence > INT64_MAX:
        problem = f"sequence {sequence} of shard {shard} is over the int64 maximum"
        raise invalid_sequence_error(field_name, kind, shard, problem)
    return sequence


def _time(value: Any, name: str, field_name: str) -> int:
    """Read one time of a page token, in Unix nanoseconds.

    Raises:
      ValueError: `value` is not an integer.
      InvalidArgument: it is outside the int64 range, which no token returned
        by this service contains.
    """
    ns = _integer(value)
    if not INT64_MIN <= ns <= INT64_MAX:
        raise invalid_field(
            field_name,
            f"the {name} {ns} ns is outside the int64 range {INT64_MIN} to "
            f"{INT64_MAX}; start the listing again without a page token",
            reason="INVALID_PAGE_TOKEN",
        )
    return ns


def _positions(value: Any, field_name: str, kind: str) -> dict[str, int]:
    """Read the sequence number per shard of a token.

    Raises:
      ValueError: `value` is not a mapping of shard to integer.
      InvalidArgument: a sequence number is negative or over the int64
        maximum, which no token returned by this service contains.
    """
    if not isinstance(value, dict):
        raise ValueError("positions")
    return {
        str(shard): _sequence(sequence, str(shard), field_name, kind)
        for shard, sequence in value.items()
    }


def _restart_advice(kind: str) -> str:
    if kind == "resume token":
        return f"start a new tail without a {kind}"
    return f"start the listing again without a {kind}"


def invalid_sequence_error(
    field_name: str, kind: str, shard: str, problem: str
) -> InvalidArgument:
    """Build the error for a token whose sequence number of `shard` is invalid.

    Args:
      field_name: the request field that carried the token.
      kind: "page token" or "resume token".
      shard: the shard whose sequence number is invalid.
      problem: what is wrong with the sequence number, as a sentence.
    """
    return invalid_field(
        field_name,
        f"{problem}; {_restart_advice(kind)}",
        reason="INVALID_PAGE_TOKEN",
        metadata={"shard": shard},
    )


def missing_shards_error(
    field_name: str, kind: str, missing: Collection[str]
) -> InvalidArgument:
    """Build the error for a token that lacks shards the request reads.

    No shard can be resumed without its entry in the token. A page token's
    earlier pages were merged without the shard's entries, so reading it from
    the cursor on would lose those before the cursor, and reading it from the
    start of the time range would return entries out of order. A resume
    token would have to guess where the client stopped.

    Args:
      field_name: the request field that carried the token.
      kind: "page token" or "resume token".
      missing: the shards that the request reads and the token lacks.
    """
    shards = ", ".join(sorted(missing))
    reads = "this tail follows" if kind == "resume token" else "this listing reads"
    description = (
        f"the {kind} has no position for shard(s) {shards}, which {reads}, so "
        "it was issued by a router with other shards or was altered; "
        f"{_restart_advice(kind)}"
    )
    return invalid_field(
        field_name,
        description,
        reason="INVALID_PAGE_TOKEN",
        metadata={"shards": shards},
    )


def check_page_token_shards(
    token: PageToken, shards: Iterable[str], field_name: str = "page_token"
) -> None:
    """Check that a page token has a sequence number for each shard in `shards`.

    The first page stores one for every shard it reads, 0 for an empty shard,
    and later pages of the same request read the same shards.

    Raises:
      InvalidArgument: the token's snapshot lacks a shard of `shards`.
    """
    missing = [shard for shard in shards if shard not in token.snapshot]
    if missing:
        raise missing_shards_error(field_name, "page token", missing)


def resume_positions(
    token: ResumeToken,
    shards: Iterable[str],
    field_name: str = "resume_token",
    added_shards: Collection[str] = (),
) -> dict[str, int]:
    """Return the position to resume each shard of `shards` from.

    Args:
      added_shards: shards that a placement added after the cluster's first
        one (see log_service.placement). A token issued before the addition
        lacks them, and every entry they store came after it.

    Returns:
      The token's last sequence number per shard, -1 (after the newest
      entry) for a shard that the token lists as unopened, and 0 (from the
      first entry) for a shard of `added_shards` that the token lacks.

    Raises:
      InvalidArgument: the token has neither a position for a shard of
        `shards` nor lists it as unopened, and the shard is not an added one.
    """
    positions = {}
    missing = []
    for shard in shards:
        if shard in token.positions:
            positions[shard] = token.positions[shard]
        elif shard in token.unopened:
            positions[shard] = -1
        elif shard in added_shards:
            positions[shard] = 0
        else:
            missing.append(shard)
    if missing:
        raise missing_shards_error(field_name, "resume token", missing)
    return positions


def check_page_token_end(
    token: PageToken, end_time: int | None, field_name: str = "page_token"
) -> None:
    """Check that a page token keeps the end time of the request it continues.

    Args:
      end_time: the request's end_time in Unix nanoseconds, or None when the
        request has none. The first page then fixed the end at the router's
        current time, and only the token's check hash binds it.

    Raises:
      InvalidArgument: the token's end time differs from `end_time`.
    """
    if end_time is None or token.end_time == end_time:
        return
    raise invalid_field(
        field_name,
        f"the page token's end time {token.end_time} ns differs from the "
        f"request's end_time {end_time} ns; send the page token of the previous "
        "response unchanged with the same end_time, or start the listing again "
        "without a page token",
        reason="INVALID_PAGE_TOKEN",
    )


def encode_page_token(token: PageToken) -> str:
    """Serialize a page token."""
    cursor = token.cursor
    return _encode(
        "page token",
        {
            "f": token.filters,
            "c": [cursor.timestamp, cursor.shard, cursor.sequence],
            "s": token.snapshot,
            "e": token.end_time,
        },
    )


def _check_shards(named: Iterable[str], known_shards: Collection[str] | None) -> None:
    """Raise ValueError when a token names a shard the cluster does not have."""
    if known_shards is None:
        return
    unknown = sorted(set(named) - set(known_shards))
    if unknown:
        raise ValueError(f"unknown shards {unknown}")


def decode_page_token(
    text: str,
    filters: str,
    field_name: str = "page_token",
    known_shards: Collection[str] | None = None,
) -> PageToken:
    """Parse a page token issued for the same filters.

    Args:
      known_shards: the cluster's shard ids; a token that names another
        shard is rejected. None skips the check.

    Raises:
      InvalidArgument: the token is malformed, is of an earlier version, has
        a number that is not an int64 in range, names a shard outside
        `known_shards`, was issued for other filters, or does not match its
        check hash; the message names `field_name`.
    """
    payload = _decode(text, field_name, "page token", _PAGE_TOKEN_KEYS)
    _check_filters(payload, filters, field_name)
    try:
        if not isinstance(payload["c"], list):
            raise ValueError("the cursor is not a list")
        timestamp, shard, sequence = payload["c"]
        if not isinstance(shard, str):
            raise ValueError(f"shard {shard!r} is not a string")
        cursor = Cursor(
            _time(timestamp, "time of the last entry", field_name),
            shard,
            _sequence(sequence, shard, field_name, "page token"),
        )
        snapshot = _positions(payload["s"], field_name, "page token")
        _check_shards([shard, *snapshot], known_shards)
        end_time = _time(payload["e"], "end time", field_name)
    except (TypeError, ValueError):
        raise _not_issued_error(text, field_name, "page token") from None
    if payload["h"] != check_hash("page token", payload):
        raise _altered_error(field_name, "page token")
    return PageToken(filters, cursor, snapshot, end_time)


def encode_resume_token(token: ResumeToken) -> str:
    """Serialize a resume token.

    An epoch of 0 or less means that the position's epoch is unknown, so it
    is left out and the shard resumes at its position unchecked.
    """
    epochs = {shard: epoch for shard, epoch in token.epochs.items() if epoch > 0}
    return _encode(
        "resume token",
        {
            "f": token.filters,
            "p": token.positions,
            "u": sorted(token.unopened),
            "e": epochs,
        },
    )


def _epochs(
    value: Any, positions: Mapping[str, int], field_name: str
) -> dict[str, int]:
    """Read the epoch per shard of a resume token.

    Raises:
      ValueError: `value` is not a mapping of shard to an integer from 1 to
        the int64 maximum.
      InvalidArgument: a shard has an epoch but no position, which no token
        returned by this service contains.
    """
    if not isinstance(value, dict):
        raise ValueError("epochs")
    epochs = {str(shard): _integer(epoch) for shard, epoch in value.items()}
    if any(not 1 <= epoch <= INT64_MAX for epoch in epochs.values()):
        raise ValueError("an epoch is outside 1 to the int64 maximum")
    stray = sorted(set(epochs) - set(positions))
    if stray:
        shards = ", ".join(stray)
        raise invalid_field(
            field_name,
            f"the resume token has an epoch for shard(s) {shards}, which it has "
            f"no position for, so it was altered; {_restart_advice('resume token')}",
            reason="INVALID_PAGE_TOKEN",
            metadata={"shards": shards},
        )
    return epochs


def _unopened(
    value: Any, positions: Mapping[str, int], field_name: str
) -> frozenset[str]:
    """Read the unopened shards of a resume token.

    Raises:
      ValueError: `value` is not a list of distinct strings.
      InvalidArgument: a shard both has a position and is listed as
        unopened, which no token returned by this service contains.
    """
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError("unopened shards")
    if len(set(value)) != len(value):
        raise ValueError("an unopened shard is listed twice")
    both = sorted(set(value) & set(positions))
    if both:
        shards = ", ".join(both)
        raise invalid_field(
            field_name,
            f"shard(s) {shards} both have a position and are unopened in the "
            f"resume token, so it was altered; {_restart_advice('resume token')}",
            reason="INVALID_PAGE_TOKEN",
            metadata={"shards": shards},
        )
    return frozenset(value)


def decode_resume_token(
    text: str,
    filters: str,
    field_name: str = "resume_token",
    known_shards: Collection[str] | None = None,
) -> ResumeToken:
    """Parse a resume token issued for the same filters.

    Args:
      known_shards: the cluster's shard ids; a token that names another
        shard is rejected. None skips the check.

    Raises:
      InvalidArgument: the token is malformed, is of an earlier version,
        names a shard outside `known_shards`, or was issued for other
        filters. Also when it has a negative position, an epoch without a
        position, a shard both positioned and unopened, or does not match
        its check hash. The message names `field_name`.
    """
    payload = _decode(text, field_name, "resume token", _RESUME_TOKEN_KEYS)
    _check_filters(payload, filters, field_name)
    try:
        positions = _positions(payload["p"], field_name, "resume token")
        unopened = _unopened(payload["u"], positions, field_name)
        epochs = _epochs(payload["e"], positions, field_name)
        _check_shards([*positions, *unopened], known_shards)
    except ValueError:
        raise _not_issued_error(text, field_name, "resume token") from None
    if payload["h"] != check_hash("resume token", payload):
        raise _altered_error(field_name, "resume token")
    return ResumeToken(filters, positions, unopened, epochs)
