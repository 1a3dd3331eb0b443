"""Settling what remains of a former member's balance.

A member leaves a group only with settled balances, but a former member can
still end up with a balance: deleting an old expense that names them moves
it, as does any change to such an expense. Their balance then keeps the
group from being deleted, and it could not be settled, because a settlement
names members only.

So `CreateSettlement` accepts a payer or payee who is no longer a member of
the group when the settlement brings their balance in that currency closer
to zero without passing it. A former member who owes money may pay at most
what they owe, and one who is owed money may be paid at most that. The
creator must still be an active member. A user who is leaving is still a
member, so the leaving rule applies to them instead.

A deactivated user is in the same position: deactivation requires settled
balances, but a later change to an old expense can give them a balance
again. So the same rule admits a deactivated payer or payee, member or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from balance_service import domain
from splitlog_runtime import authz
from splitlog_runtime.errors import FailedPrecondition, PreconditionViolation

NOT_A_MEMBER = "NOT_A_GROUP_MEMBER"
USER_DEACTIVATED = "USER_DEACTIVATED"


@dataclass(frozen=True)
class Named:
    """A user that a settlement names, and its role in it."""

    user_id: str
    field_path: str
    #: True for the payer, False for the payee.
    pays: bool
    #: True for a deactivated member, who may settle as a former member may.
    deactivated_member: bool = False


def not_a_member(
    group_id: str,
    user_id: str,
    field_path: str,
    problem: str = "",
    filled: bool = False,
    fix: str = "",
) -> FailedPrecondition:
    """Build the NOT_A_GROUP_MEMBER error.

    Args:
      problem: why the user, a former member, cannot settle their balance
        with this settlement, such as `has no balance in EUR`. Empty when
        only membership would allow the user.
      filled: whether the request left `field_path` empty and
        `authz.author_or_caller` set it to the caller.
      fix: what to do instead, for a request that cannot pick another
        user, such as a delete. Empty for the fix of a new settlement:
        add the user, or name a member.
    """
    user, group = domain.user_name(user_id), domain.group_name(group_id)
    message = f"{field_path} {user!r} is not a member of {group!r}; "
    if filled:
        message += authz.filled_author_hint([field_path], user)
    elif fix:
        message += fix
    else:
        if problem:
            message += (
                "a former member can only pay what they still owe, or be paid "
                f"what they are still owed, but {user!r} {problem}. Otherwise, "
            )
        message += (
            "add the user to the group with AddGroupMember first, or pick a member"
        )
    return FailedPrecondition(
        message,
        reason=NOT_A_MEMBER,
        metadata={"user": user, "group": group},
        preconditions=[
            PreconditionViolation(
                NOT_A_MEMBER,
                f"{group}/members/{user_id}",
                f"{user} is not a member of {group}",
            )
        ],
    )


def deactivated_user(
    group_id: str, user_id: str, field_path: str, problem: str, settled: bool
) -> FailedPrecondition:
    """Build the USER_DEACTIVATED error for a deactivated member.

    Args:
      problem: why the user cannot settle their balance with this
        settlement, such as `has no balance in EUR in the group`.
      settled: whether the user has no balance at all, so that only another
        member can be named.
    """
    user, group = domain.user_name(user_id), domain.group_name(group_id)
    fix = ". Name an active member instead" if settled else ""
    return FailedPrecondition(
        f"{user!r} ({field_path}) is deactivated; a deactivated user can only "
        "pay what they still owe, or be paid what they are still owed, but "
        f"{user!r} {problem}{fix}",
        reason=USER_DEACTIVATED,
        metadata={"group": group, "users": user, "fields": field_path},
        preconditions=[
            PreconditionViolation(
                USER_DEACTIVATED, user, f"{field_path} {user} is deactivated"
            )
        ],
    )


def settling_problem(named: Named, net: int, amount: int, currency: str) -> str:
    """Return why paying `amount` does not settle part of a former member's
    `net` balance, or an empty string when it does.

    A payer's net amount rises by the amount and a payee's falls, so a payer
    must owe (net below zero) and a payee must be owed.
    """
    if net == 0:
        return f"has no balance in {currency} in the group"
    remaining = -net if named.pays else net
    balance_text = domain.format_money(abs(net), currency)
    if remaining < 0:
        if named.pays:
            return f"is owed {balance_text}, so they can only be the payee"
        return f"owes {balance_text}, so they can only be the payer"
    if amount > remaining:
        verb = "owes" if named.pays else "is owed"
        requested = domain.format_money(amount, currency)
        return (
            f"{verb} {balance_text}, less than {requested}; "
            f"record at most {balance_text}"
        )
    return ""


def check_settles(
    group_id: str,
    former: list[Named],
    nets: dict[str, int],
    amount: int,
    currency: str,
) -> None:
    """Check that a settlement only settles part of each named user's balance.

    Args:
      former: the payer or payee, or both, who are not members or are
        deactivated members.
      nets: their net amounts in the group and `currency`.

    Raises:
      FailedPrecondition: a user has no balance to settle with this
        settlement (reason NOT_A_GROUP_MEMBER, or USER_DEACTIVATED for a
        deactivated member).
    """
    for named in former:
        problem = settling_problem(named, nets[named.user_id], amount, currency)
        if not problem:
            continue
        if named.deactivated_member:
            settled = nets[named.user_id] == 0
            raise deactivated_user(
                group_id, named.user_id, named.field_path, problem, settled
            )
        raise not_a_member(group_id, named.user_id, named.field_path, problem)
