"""Deterministic ids that make a repeated import create nothing twice.

Every id that an import sends is derived from the file's bytes or from a
member name, never from the clock or a random source:

- the group id from the SHA-256 of the file, so the same file always lands in
  the same group and a changed file in a new one;
- user ids from the member name, so a person keeps one user across imports
  of every group that names them the same way;
- expense and settlement ids from the row's line, and request ids (UUID
  version 5) from the file digest and that line.

Before it writes entries, the import lists the group's expenses and
settlements (deleted ones too) and skips every entry whose id exists. A
create that reached the server but whose response was lost is caught by its
request id, which returns the first result. A repeated CreateUser,
CreateGroup or AddGroupMember fails with ALREADY_EXISTS. The import treats
that as done only for a user whose email is `email(id)` and a group that the
file's first user created and whose members are all the file's users,
because anyone can sign up or create a group with one of these ids first.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from collections.abc import Iterator

#: Namespace of the import's version 5 UUIDs. Changing it changes every
#: request id, so repeated imports would no longer be recognized.
REQUEST_NAMESPACE = uuid.UUID("7a0d3f52-4b8e-5c1a-9e2f-6d4c3b2a1f00")
#: Domain of the email addresses of imported users; `.invalid` never resolves.
EMAIL_DOMAIN = "import.invalid"
MAX_ID_LENGTH = 63
_NOT_ID = re.compile(r"[^a-z0-9]+")


def file_digest(data: bytes) -> str:
    """Return the SHA-256 of the file as 64 hex digits."""
    return hashlib.sha256(data).hexdigest()


# How many groups one file can be imported into, one after another, when
# each earlier group was deleted.
MAX_GROUP_IDS = 100


def group_id(digest: str) -> str:
    """Return the group id of the first import of a file."""
    return f"splitwise-{digest[:20]}"


def group_ids(digest: str) -> Iterator[str]:
    """Yield the group ids a file's import tries, in order.

    The first is `group_id(digest)`. The id of a deleted group is never used
    again, so once the file's group was deleted, the next import of the same
    file goes into `<first id>-2`, then `-3`, and so on.
    """
    first = group_id(digest)
    yield first
    for number in range(2, MAX_GROUP_IDS + 1):
        yield f"{first}-{number}"


def user_id(member: str) -> str:
    """Return the user id of a member name: slug plus 6 hex digits of its hash.

    The hash keeps names apart whose slugs are the same ("Zoë" and "Zoe",
    "ann" and "Ann"), and names without Latin letters still get an id.
    """
    suffix = hashlib.sha256(member.encode("utf-8")).hexdigest()[:6]
    ascii_name = unicodedata.normalize("NFKD", member).encode("ascii", "ignore")
    slug = _NOT_ID.sub("-", ascii_name.decode("ascii").lower()).strip("-")
    prefix = "sw-"
    room = MAX_ID_LENGTH - len(prefix) - len(suffix) - 1
    slug = slug[:room].rstrip("-")
    return f"{prefix}{slug}-{suffix}" if slug else f"{prefix}{suffix}"


def placeholder_user_id(digest: str) -> str:
    """Return the id of the placeholder member of one file's import."""
    return f"sw-unknown-{digest[:20]}"


def email(user: str) -> str:
    """Return the email address of an imported user id."""
    return f"{user}@{EMAIL_DOMAIN}"


def entry_id(key: str) -> str:
    """Return the expense or settlement id of an entry key such as "12" or "12-2"."""
    return f"row-{key}"


def request_id(digest: str, kind: str, key: str) -> str:
    """Return the request id of one create call of an import."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, f"{digest}/{kind}/{key}"))
