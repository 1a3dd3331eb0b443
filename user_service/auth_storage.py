"""Tables of the user service's credentials: passwords, sessions, API keys.

Passwords are stored as Argon2id hashes. Refresh tokens and API key secrets
are random 32-byte strings, so a SHA-256 hash of each is enough to store and
find them. Neither is ever stored in clear. Times are naive UTC, as in
`user_service.storage`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    String,
    and_,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from splitlog_runtime import auth
from user_service.storage import Base


class PasswordRow(Base):
    """The Argon2id hash of one user's password."""

    __tablename__ = "user_passwords"

    user_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("users.id"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    update_time: Mapped[datetime] = mapped_column(DateTime())


class SessionRow(Base):
    """A signed-in session: its current refresh token and its access tokens."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(63), ForeignKey("users.id"))
    refresh_hash: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(DateTime())
    refresh_expire_time: Mapped[datetime] = mapped_column(DateTime())
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)

    __table_args__ = (
        Index("uq_auth_sessions_refresh_hash", "refresh_hash", unique=True),
        Index("ix_auth_sessions_user", "user_id"),
    )


class RotatedRefreshTokenRow(Base):
    """A refresh token that RefreshToken replaced, kept to detect its reuse.

    An expired token is never treated as reused, so the session's next
    refresh deletes the rows of its expired tokens.
    """

    __tablename__ = "auth_rotated_refresh_tokens"

    refresh_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(32), ForeignKey("auth_sessions.id"))
    rotate_time: Mapped[datetime] = mapped_column(DateTime())
    expire_time: Mapped[datetime] = mapped_column(DateTime())

    __table_args__ = (Index("ix_auth_rotated_refresh_tokens_session", "session_id"),)


class ApiKeyRow(Base):
    """An API key of a user; `scopes` is a comma-separated list."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(63), ForeignKey("users.id"))
    display_name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(DateTime())
    expire_time: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)

    __table_args__ = (
        Index("uq_api_keys_secret_hash", "secret_hash", unique=True),
        Index("ix_api_keys_user_create", "user_id", "create_time", "id"),
    )

    @property
    def scope_list(self) -> list[str]:
        return [scope for scope in self.scopes.split(",") if scope]


def get_password(session: Session, user_id: str) -> PasswordRow | None:
    return session.get(PasswordRow, user_id)


def find_session(session: Session, refresh_hash: str) -> SessionRow | None:
    """Find and lock the session whose current refresh token has this hash.

    On PostgreSQL the row lock makes a concurrent RefreshToken with the same
    token wait, then find no session and go to the reuse check. SQLite
    already runs one write transaction at a time.
    """
    return session.scalars(
        select(SessionRow)
        .where(SessionRow.refresh_hash == refresh_hash)
        .with_for_update()
    ).one_or_none()


def get_session(session: Session, session_id: str) -> SessionRow | None:
    return session.get(SessionRow, session_id)


def record_rotation(session: Session, row: SessionRow, now: datetime) -> None:
    """Keep a session's current refresh token as rotated before it is replaced.

    The session's rotated tokens that have expired by `now` are deleted.
    """
    # NOTE: only the refreshed session is pruned, so the rows of a session
    # that is never refreshed again stay until a cleanup job exists.
    session.execute(
        delete(RotatedRefreshTokenRow).where(
            RotatedRefreshTokenRow.session_id == row.id,
            RotatedRefreshTokenRow.expire_time <= now,
        )
    )
    session.add(
        RotatedRefreshTokenRow(
            refresh_hash=row.refresh_hash,
            session_id=row.id,
            rotate_time=now,
            expire_time=row.refresh_expire_time,
        )
    )


def find_rotated(session: Session, refresh_hash: str) -> RotatedRefreshTokenRow | None:
    return session.get(RotatedRefreshTokenRow, refresh_hash)


def revoke_sessions_of_user(session: Session, user_id: str, now: datetime) -> int:
    """Revoke every open session of a user; return the count."""
    return _revoke_rows_of_user(session, SessionRow, user_id, now)


def revoke_api_keys_of_user(session: Session, user_id: str, now: datetime) -> int:
    """Revoke every API key of a user that is not revoked yet; return the count."""
    return _revoke_rows_of_user(session, ApiKeyRow, user_id, now)


def _revoke_rows_of_user(
    session: Session,
    row_type: type[SessionRow] | type[ApiKeyRow],
    user_id: str,
    now: datetime,
) -> int:
    result = session.execute(
        update(row_type)
        .where(row_type.user_id == user_id, row_type.revoke_time.is_(None))
        .values(revoke_time=now)
    )
    return result.rowcount


def find_api_key(session: Session, secret_hash: str) -> ApiKeyRow | None:
    return session.scalars(
        select(ApiKeyRow).where(ApiKeyRow.secret_hash == secret_hash)
    ).one_or_none()


def has_active_admin_key(session: Session, user_id: str, now: datetime) -> bool:
    """Return whether a user has an unrevoked, unexpired key with `admin`."""
    query = select(ApiKeyRow.scopes).where(
        ApiKeyRow.user_id == user_id,
        ApiKeyRow.revoke_time.is_(None),
        or_(ApiKeyRow.expire_time.is_(None), ApiKeyRow.expire_time > now),
    )
    return any(
        auth.SCOPE_ADMIN in scopes.split(",") for scopes in session.scalars(query)
    )


def get_api_key(session: Session, user_id: str, key_id: str) -> ApiKeyRow | None:
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.user_id != user_id:
        return None
    return row


def list_api_keys(
    session: Session,
    user_id: str,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[ApiKeyRow]:
    """Return a user's keys, newest first, after the page key `before`."""
    query = select(ApiKeyRow).where(ApiKeyRow.user_id == user_id)
    if before is not None:
        when, key_id = before
        query = query.where(
            or_(
                ApiKeyRow.create_time < when,
                and_(ApiKeyRow.create_time == when, ApiKeyRow.id < key_id),
            )
        )
    query = query.order_by(ApiKeyRow.create_time.desc(), ApiKeyRow.id.desc())
    return list(session.scalars(query.limit(limit)))
