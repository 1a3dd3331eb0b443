"""Recompute the email uniqueness key with NFKC and case folding.

Revision 0001 keyed emails by NFC and `lower()`, so look-alike addresses such
as 'ｂｅｎ@example.com' and 'ben@example.com', or 'straße@x.com' and
'STRASSE@x.com', could belong to two users. This revision rewrites
`users.email_normalised` as NFKC(casefold(NFKC(email))); the unique index
`uq_users_email_normalised` stays in place and checks every new key.

Users that now share a key keep their accounts and emails: the earliest
created (by create_time, then id) gets the key, and each later one gets
'#<user id>' and is logged as a warning. No address produces such a key,
because every real key contains '@', so the earlier user owns the address
for lookups and uniqueness checks. A key longer than 1024 UTF-8 bytes, which
only compatibility ligatures can produce, is handled the same way.

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01
"""

import logging
import unicodedata
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LOGGER = logging.getLogger("user_service.migrations")

# The size limit of a key, as user_service.domain.MAX_EMAIL_KEY_BYTES. The two
# key functions are frozen copies: the migration must compute the same keys
# when the service code changes later.
_MAX_KEY_BYTES = 1024

_USERS = sa.table(
    "users",
    sa.column("id", sa.String),
    sa.column("email", sa.String),
    sa.column("email_normalised", sa.String),
    sa.column("create_time", sa.DateTime),
)


def _nfkc_casefold_key(email: str) -> str:
    folded = unicodedata.normalize("NFKC", email).casefold()
    return unicodedata.normalize("NFKC", folded)


def _nfc_lower_key(email: str) -> str:
    return unicodedata.normalize("NFC", email).lower()


def _recompute_keys(key_of: Callable[[str], str]) -> None:
    """Give every user the key `key_of(email)`, or '#<id>' when it is taken.

    Every key is loaded into memory, which is fine for the user counts this
    service is built for (tens of bytes per user).
    """
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_USERS.c.id, _USERS.c.email, _USERS.c.email_normalised).order_by(
            _USERS.c.create_time, _USERS.c.id
        )
    ).all()
    owners: dict[str, str] = {}
    changes: dict[str, str] = {}
    for user_id, email, current in rows:
        key = key_of(email)
        if key in owners:
            _LOGGER.warning(
                "users/%s and the earlier users/%s now share the email key %r, "
                "so users/%s keeps its email under the placeholder key '#%s'",
                user_id,
                owners[key],
                key,
                user_id,
                user_id,
            )
            key = f"#{user_id}"
        elif len(key.encode()) > _MAX_KEY_BYTES:
            _LOGGER.warning(
                "the email key of users/%s exceeds %d bytes, so it gets the "
                "placeholder key '#%s'",
                user_id,
                _MAX_KEY_BYTES,
                user_id,
            )
            key = f"#{user_id}"
        else:
            owners[key] = user_id
        if key != current:
            changes[user_id] = key
    if not changes:
        return

    update = (
        _USERS.update()
        .where(_USERS.c.id == sa.bindparam("user_id"))
        .values(email_normalised=sa.bindparam("key"))
    )
    # The unique index checks each row as it is written. Moving every changed
    # row to its placeholder first stops a new key from meeting the old key of
    # a row that has not been rewritten yet.
    placeholders = [{"user_id": user_id, "key": f"#{user_id}"} for user_id in changes]
    connection.execute(update, placeholders)
    connection.execute(
        update, [{"user_id": user_id, "key": key} for user_id, key in changes.items()]
    )
    _LOGGER.info("recomputed the email key of %d users", len(changes))


def upgrade() -> None:
    _recompute_keys(_nfkc_casefold_key)


def downgrade() -> None:
    _recompute_keys(_nfc_lower_key)
