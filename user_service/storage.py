"""Tables of the user service and the queries on them.

Every function takes the caller's Session and neither opens nor commits one:
the servicer runs each RPC in one `Database.transaction()`, so an error
anywhere leaves nothing half-written. Users and groups carry an integer
`version` that SQLAlchemy checks on every UPDATE and DELETE
(`version_id_col`); it is also the resource's etag.

Times are stored as naive UTC datetimes, because SQLite has no time zone
type and both backends then compare them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    and_,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from splitlog_runtime.errors import NotFound, Resource
from splitlog_runtime.groups import group_not_found
from user_service import domain


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    """A user. `email_normalised` contains the uniqueness key of the email
    (`domain.normalise_email`) and carries the unique index, so the stored
    `email` keeps the form the user typed."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    email_normalised: Mapped[str] = mapped_column(String(1024))
    display_name: Mapped[str] = mapped_column(String(100))
    display_name_normalised: Mapped[str] = mapped_column(String(1024))
    currency_code: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(16))
    create_time: Mapped[datetime] = mapped_column(DateTime())
    update_time: Mapped[datetime] = mapped_column(DateTime())
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("uq_users_email_normalised", "email_normalised", unique=True),
        Index("ix_users_create_time_id", "create_time", "id"),
        CheckConstraint("state IN ('ACTIVE', 'DEACTIVATED')", name="ck_users_state"),
    )

    def set_email(self, email: str) -> None:
        self.email = email
        self.email_normalised = domain.normalise_email(email)

    def set_display_name(self, display_name: str) -> None:
        self.display_name = display_name
        self.display_name_normalised = domain.normalise_text(display_name)


class GroupRow(Base):
    """A group. Its etag covers its own fields, not the member list."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(100))
    creator_id: Mapped[str] = mapped_column(String(63), ForeignKey("users.id"))
    currency_code: Mapped[str] = mapped_column(String(3))
    create_time: Mapped[datetime] = mapped_column(DateTime())
    update_time: Mapped[datetime] = mapped_column(DateTime())
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}


class MemberRow(Base):
    """A user's membership of a group, with the time the user joined."""

    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("users.id"), primary_key=True
    )
    join_time: Mapped[datetime] = mapped_column(DateTime())

    __table_args__ = (
        Index("ix_group_members_group_join", "group_id", "join_time", "user_id"),
        Index("ix_group_members_user_join", "user_id", "join_time", "group_id"),
    )


class DeletedGroupRow(Base):
    """The id of a deleted group, kept so that no new group takes it.

    expense_service and balance_service keep a deleted group's expenses,
    settlements and balances under its id, and a new group with that id
    would show them to its members.
    """

    __tablename__ = "deleted_groups"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    delete_time: Mapped[datetime] = mapped_column(DateTime())


class PendingRemovalRow(Base):
    """A removal that is checking balances: the leaving mark of one member, or
    of every member when `user_id` is empty (a group deletion).

    `token` identifies the RPC that wrote the mark, so that it finishes or
    clears only its own. A mark older than the removal's time limit counts
    for nothing, so a crash between the two steps leaves no member stuck.
    """

    __tablename__ = "pending_removals"

    group_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
    start_time: Mapped[datetime] = mapped_column(DateTime())


class PendingDeactivationRow(Base):
    """A deactivation that is checking balances: the deactivating mark of a user.

    While the mark counts, the user cannot join a group, so the deactivation
    checks every group the user belongs to. `token` and the time limit work
    as for `PendingRemovalRow`.
    """

    __tablename__ = "pending_deactivations"

    user_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[str] = mapped_column(String(32))
    start_time: Mapped[datetime] = mapped_column(DateTime())


class RequestIdRow(Base):
    """An idempotency key: which resource a create with this request_id made,
    and the hash of that request (`splitlog_runtime.idempotency`).

    `resolved_hash` is the hash of the request with its defaults filled in as
    the create filled them, kept by CreateGroup (`user_service.request_hashes`).
    """

    __tablename__ = "user_service_request_ids"

    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resource_name: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime] = mapped_column(DateTime())
    # None for keys stored before the hash was kept; those replay any request.
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # None for keys stored before it was kept, and for other methods than
    # CreateGroup.
    resolved_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


def utc_now() -> datetime:
    """Return the current time as the naive UTC datetime the tables store."""
    return datetime.now(UTC).replace(tzinfo=None)


# Users


def get_user(session: Session, user_id: str) -> UserRow | None:
    return session.get(UserRow, user_id)


def require_user(session: Session, user_id: str, lock: bool = False) -> UserRow:
    """Return a user; with `lock`, lock its row until the transaction ends.

    Raises:
      NotFound: no user has this id (reason USER_NOT_FOUND).
    """
    user = session.get(UserRow, user_id, with_for_update=lock)
    if user is None:
        name = domain.user_name(user_id)
        raise NotFound(
            f"user {name!r} does not exist; check the id: ListGroupMembers "
            "lists the members of a group you are in, and an administrator "
            "can list every user with ListUsers",
            reason="USER_NOT_FOUND",
            resource=Resource(domain.USER_TYPE, name),
        )
    return user


def find_user_by_email(session: Session, email: str) -> UserRow | None:
    """Return the user whose email has the same uniqueness key as `email`."""
    normalised = domain.normalise_email(email)
    return session.scalars(
        select(UserRow).where(UserRow.email_normalised == normalised)
    ).one_or_none()


def add_user(session: Session, user: UserRow) -> None:
    """Insert a user; the flush raises IntegrityError on a duplicate id or email."""
    session.add(user)
    session.flush()


def list_users(
    session: Session,
    user_filter: domain.UserFilter,
    after: tuple[datetime, str] | None,
    limit: int,
    only_id: str | None = None,
) -> Sequence[UserRow]:
    """Return up to `limit` users ordered by (create_time, id), after a key.

    With `only_id`, the result is at most that one user.
    """
    query = select(UserRow)
    if only_id is not None:
        query = query.where(UserRow.id == only_id)
    if user_filter.state is not None:
        query = query.where(UserRow.state == user_filter.state)
    if user_filter.email is not None:
        query = query.where(UserRow.email_normalised == user_filter.email)
    if user_filter.display_name_contains is not None:
        query = query.where(
            UserRow.display_name_normalised.contains(
                user_filter.display_name_contains, autoescape=True
            )
        )
    if after is not None:
        after_time, after_id = after
        query = query.where(
            or_(
                UserRow.create_time > after_time,
                and_(UserRow.create_time == after_time, UserRow.id > after_id),
            )
        )
    query = query.order_by(UserRow.create_time, UserRow.id).limit(limit)
    return session.scalars(query).all()


# Groups


def require_group(session: Session, group_id: str, lock: bool = False) -> GroupRow:
    """Return a group; `lock` locks its row until the transaction ends.

    NOTE: SQLite has no row locks, so `lock` does nothing there. SQLite runs
    one writing transaction at a time, but reads before the first write take
    no lock.

    Raises:
      NotFound: no group has this id (reason GROUP_NOT_FOUND). For a deleted
        group the ErrorInfo metadata has `deleted: "true"`.
    """
    group = session.get(GroupRow, group_id, with_for_update=lock)
    if group is None:
        raise group_not_found(
            domain.group_name(group_id), deleted=is_deleted_group(session, group_id)
        )
    return group


def is_deleted_group(session: Session, group_id: str) -> bool:
    return session.get(DeletedGroupRow, group_id) is not None


def add_group(session: Session, group: GroupRow) -> None:
    """Insert a group; the flush raises IntegrityError on a duplicate id."""
    session.add(group)
    session.flush()


def delete_group(session: Session, group: GroupRow) -> None:
    """Delete a group, its memberships and its leaving marks, and keep its id
    from being reused.

    A stale version raises StaleDataError.
    """
    session.execute(delete(MemberRow).where(MemberRow.group_id == group.id))
    session.execute(
        delete(PendingRemovalRow).where(PendingRemovalRow.group_id == group.id)
    )
    session.add(DeletedGroupRow(id=group.id, delete_time=utc_now()))
    session.delete(group)
    session.flush()


def member_counts(session: Session, group_ids: Sequence[str]) -> dict[str, int]:
    """Return the number of members of each group, 0 for groups without any."""
    if not group_ids:
        return {}
    rows = session.execute(
        select(MemberRow.group_id, func.count())
        .where(MemberRow.group_id.in_(group_ids))
        .group_by(MemberRow.group_id)
    ).all()
    counts = dict.fromkeys(group_ids, 0)
    counts.update({group_id: count for group_id, count in rows})
    return counts


def list_groups_of_user(
    session: Session,
    user_id: str,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Sequence[tuple[GroupRow, datetime]]:
    """Return a user's groups with join times, newest membership first."""
    query = (
        select(GroupRow, MemberRow.join_time)
        .join(MemberRow, MemberRow.group_id == GroupRow.id)
        .where(MemberRow.user_id == user_id)
    )
    if after is not None:
        after_time, after_id = after
        query = query.where(
            or_(
                MemberRow.join_time < after_time,
                and_(MemberRow.join_time == after_time, MemberRow.group_id < after_id),
            )
        )
    query = query.order_by(MemberRow.join_time.desc(), MemberRow.group_id.desc())
    return [(group, joined) for group, joined in session.execute(query.limit(limit))]


def all_groups_of_user(session: Session, user_id: str) -> Sequence[GroupRow]:
    """Return every group the user is a member of, by id."""
    query = (
        select(GroupRow)
        .join(MemberRow, MemberRow.group_id == GroupRow.id)
        .where(MemberRow.user_id == user_id)
        .order_by(GroupRow.id)
    )
    return session.scalars(query).all()


# Members


def get_member(session: Session, group_id: str, user_id: str) -> MemberRow | None:
    return session.get(MemberRow, (group_id, user_id))


def require_member(session: Session, group_id: str, user_id: str) -> MemberRow:
    """Return a membership.

    Raises:
      NotFound: the user is not a member of the group (reason MEMBER_NOT_FOUND).
    """
    member = session.get(MemberRow, (group_id, user_id))
    if member is None:
        name = domain.member_name(group_id, user_id)
        raise NotFound(
            f"{domain.user_name(user_id)!r} is not a member of "
            f"{domain.group_name(group_id)!r}; list the members with "
            "ListGroupMembers",
            reason="MEMBER_NOT_FOUND",
            resource=Resource(domain.MEMBER_TYPE, name),
        )
    return member


def add_member(session: Session, member: MemberRow) -> None:
    """Insert a membership; the flush raises IntegrityError on a duplicate."""
    session.add(member)
    session.flush()


def remove_member(session: Session, member: MemberRow) -> None:
    session.delete(member)
    session.flush()


def list_members(
    session: Session,
    group_id: str,
    after: tuple[datetime, str] | None,
    limit: int,
    leaving_since: datetime,
) -> Sequence[tuple[MemberRow, UserRow, bool]]:
    """Return a group's members with their users, in the order they joined,
    and whether each carries a leaving mark written after `leaving_since`.

    One statement reads members and marks, so that under READ COMMITTED a
    removal that commits during the read cannot show a member whose mark is
    already gone as an ordinary member.
    """
    leaving = (
        select(PendingRemovalRow.user_id)
        .where(
            PendingRemovalRow.group_id == MemberRow.group_id,
            or_(
                PendingRemovalRow.user_id == MemberRow.user_id,
                PendingRemovalRow.user_id == "",
            ),
            PendingRemovalRow.start_time > leaving_since,
        )
        .exists()
    )
    query = (
        select(MemberRow, UserRow, leaving)
        .join(UserRow, UserRow.id == MemberRow.user_id)
        .where(MemberRow.group_id == group_id)
    )
    if after is not None:
        after_time, after_id = after
        query = query.where(
            or_(
                MemberRow.join_time > after_time,
                and_(MemberRow.join_time == after_time, MemberRow.user_id > after_id),
            )
        )
    query = query.order_by(MemberRow.join_time, MemberRow.user_id).limit(limit)
    return [
        (member, user, bool(marked)) for member, user, marked in session.execute(query)
    ]


# Leaving marks


def get_pending_removal(
    session: Session, group_id: str, user_id: str
) -> PendingRemovalRow | None:
    """Return the leaving mark of a member, or with `user_id` "" of the group."""
    return session.get(PendingRemovalRow, (group_id, user_id))


def put_pending_removal(
    session: Session, group_id: str, user_id: str, token: str, now: datetime
) -> None:
    """Write a leaving mark, replacing an expired one with the same key."""
    session.execute(
        delete(PendingRemovalRow).where(
            PendingRemovalRow.group_id == group_id,
            PendingRemovalRow.user_id == user_id,
        )
    )
    session.add(
        PendingRemovalRow(
            group_id=group_id, user_id=user_id, token=token, start_time=now
        )
    )
    session.flush()


def delete_pending_removal(
    session: Session, group_id: str, user_id: str, token: str
) -> bool:
    """Delete a leaving mark if `token` wrote it; return whether it did."""
    result = session.execute(
        delete(PendingRemovalRow).where(
            PendingRemovalRow.group_id == group_id,
            PendingRemovalRow.user_id == user_id,
            PendingRemovalRow.token == token,
        )
    )
    return result.rowcount > 0


def get_pending_deactivation(
    session: Session, user_id: str
) -> PendingDeactivationRow | None:
    """Return the deactivating mark of a user, expired or not."""
    return session.get(PendingDeactivationRow, user_id)


def put_pending_deactivation(
    session: Session, user_id: str, token: str, now: datetime
) -> None:
    """Write a deactivating mark, replacing an expired one of the same user."""
    session.execute(
        delete(PendingDeactivationRow).where(PendingDeactivationRow.user_id == user_id)
    )
    session.add(PendingDeactivationRow(user_id=user_id, token=token, start_time=now))
    session.flush()


def delete_pending_deactivation(session: Session, user_id: str, token: str) -> bool:
    """Delete a deactivating mark if `token` wrote it; return whether it did."""
    result = session.execute(
        delete(PendingDeactivationRow).where(
            PendingDeactivationRow.user_id == user_id,
            PendingDeactivationRow.token == token,
        )
    )
    return result.rowcount > 0


# Idempotency keys


def find_request(session: Session, method: str, request_id: str) -> RequestIdRow | None:
    """Return the record of an earlier request with this key, if any."""
    return session.get(RequestIdRow, (method, request_id))


def remember_request(
    session: Session,
    method: str,
    request_id: str,
    resource_name: str,
    request_hash: str,
    resolved_hash: str | None = None,
) -> None:
    """Record a request_id in the transaction that creates its resource."""
    session.add(
        RequestIdRow(
            method=method,
            request_id=request_id,
            resource_name=resource_name,
            create_time=utc_now(),
            request_hash=request_hash,
            resolved_hash=resolved_hash,
        )
    )
    session.flush()
