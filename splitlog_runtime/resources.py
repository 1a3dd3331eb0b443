"""Resource names and ids, such as `users/alice` and `groups/g1/members/u2`."""

from __future__ import annotations

import functools
import re
import secrets
import threading
import time

from splitlog_runtime.errors import invalid_field

# \Z, not $, so that an id with a trailing newline does not match.
ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{2,61}[a-z0-9]\Z")
_GENERATED_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_id(prefix: str = "") -> str:
    """Return a fresh random id (a letter then 15 letters or digits)."""
    # One read of the system's random source, not one per character: each
    # read releases the GIL, and in a busy process every reacquisition can
    # wait a whole thread switch interval.
    number = int.from_bytes(secrets.token_bytes(10), "big")
    number, letter = divmod(number, 26)
    characters = []
    for _ in range(15):
        number, digit = divmod(number, 36)
        characters.append(_GENERATED_ALPHABET[digit])
    first = prefix or "abcdefghijklmnopqrstuvwxyz"[letter % 26]
    return first + "".join(characters)


class OrderedIds:
    """Make ids of `new_id`'s form that sort in the order they were made.

    An id is a letter and 15 digits in base 36 of one number: the time in
    milliseconds times 36**7, plus a random part below 36**7. The digits are
    0-9 then a-z, so ids compare like their numbers. A new id is above every
    id made before it by the same instance, even when the clock stops
    or goes back. The random part keeps ids of separate processes
    apart.

    Rows keyed by such ids are added at the end of their index, so a
    transaction that inserts many of them writes a few pages of the
    database, not one page per row as with random ids.
    """

    _RANDOM_SPAN = 36**7
    _DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def new(self) -> str:
        # One read of the system's random source per id, as in `new_id`.
        random_bits = int.from_bytes(secrets.token_bytes(8), "big")
        number = time.time_ns() // 1_000_000 * self._RANDOM_SPAN + (
            random_bits % self._RANDOM_SPAN
        )
        with self._lock:
            if number <= self._last:
                # A small random step keeps the next id hard to name in advance.
                number = self._last + 1 + (random_bits >> 48)
            self._last = number
        letter, number = divmod(number, 36**15)
        characters = []
        for _ in range(15):
            number, digit = divmod(number, 36)
            characters.append(self._DIGITS[digit])
        return "abcdefghijklmnopqrstuvwxyz"[letter % 26] + "".join(reversed(characters))


def check_id(value: str, field: str) -> str:
    """Validate a client-chosen id.

    Raises:
      InvalidArgument: the id is not 4 to 63 characters of lower-case
        letters, digits and hyphens that start with a letter and do not end
        with a hyphen.
    """
    if not ID_PATTERN.match(value):
        raise invalid_field(
            field,
            f"{value!r} is not a valid id; use 4 to 63 lower-case letters, digits "
            "and hyphens, starting with a letter and not ending with a hyphen",
            reason="INVALID_ID",
        )
    return value


@functools.lru_cache(maxsize=256)
def _template(pattern: str) -> tuple[tuple[str, ...], str]:
    """Return the pieces of a name pattern and an example name for errors."""
    template = tuple(pattern.split("/"))
    example = "/".join(
        "example-id" if piece.startswith("{") else piece for piece in template
    )
    return template, example


def parse_name(name: str, pattern: str, field: str) -> tuple[str, ...]:
    """Split a resource name by a pattern such as `groups/{group}/members/{member}`.

    Returns:
      The ids, in the order of the pattern's variables.

    Raises:
      InvalidArgument: the name is empty or does not follow the pattern.
    """
    parts = name.split("/")
    template, example = _template(pattern)
    if not name:
        raise invalid_field(
            field, f"is required; give a name such as {example!r}", reason="REQUIRED"
        )
    if len(parts) != len(template):
        raise invalid_field(
            field,
            f"{name!r} is not a valid resource name; expected the form "
            f"{pattern!r}, such as {example!r}",
            reason="INVALID_RESOURCE_NAME",
        )
    ids = []
    for piece, expected in zip(parts, template, strict=True):
        if expected.startswith("{"):
            if not piece:
                raise invalid_field(
                    field,
                    f"{name!r} has an empty id; expected the form {pattern!r}",
                    reason="INVALID_RESOURCE_NAME",
                )
            ids.append(piece)
        elif piece != expected:
            raise invalid_field(
                field,
                f"{name!r} is not a valid resource name; expected the form "
                f"{pattern!r}, such as {example!r}",
                reason="INVALID_RESOURCE_NAME",
            )
    return tuple(ids)


def parse_name_ids(name: str, pattern: str, field: str) -> tuple[str, ...]:
    """Split a resource name by a pattern, as `parse_name` does, and check its ids.

    Returns:
      The ids, in the order of the pattern's variables.

    Raises:
      InvalidArgument: the name does not follow the pattern, or one of its
        ids is invalid. The message of an invalid id shows an example name of
        the same pattern, such as `groups/example-id/expenses/example-id`.
    """
    ids = parse_name(name, pattern, field)
    for resource_id in ids:
        if not ID_PATTERN.match(resource_id):
            _, example = _template(pattern)
            raise invalid_field(
                field,
                f"{name!r} contains the invalid id {resource_id!r}; ids are 4 to "
                "63 lower-case letters, digits and hyphens, starting with a "
                f"letter and not ending with a hyphen, as in {example!r}",
                reason="INVALID_RESOURCE_NAME",
            )
    return ids
