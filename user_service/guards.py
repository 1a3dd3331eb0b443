"""The check that stops a member from leaving, or a group from being deleted,
while money is still owed.

Balances live in the balance service, which the user service does not know
about. `build()` therefore takes a `BalanceGuard`, and the servicer calls it
before RemoveGroupMember and DeleteGroup write anything. The default,
`AllowAllBalanceGuard`, permits every removal: it is the right behaviour
only until the balance service provides a guard that asks it for the
group's balances.
"""

from __future__ import annotations

from typing import Protocol

from splitlog_runtime.errors import FailedPrecondition, PreconditionViolation

UNSETTLED_BALANCE = "UNSETTLED_BALANCE"


class BalanceGuard(Protocol):
    """Decides whether balances allow a membership or a group to go away.

    Both methods run inside the RPC's database transaction, before anything is
    deleted, and return None to allow the change.
    """

    def check_member_removable(self, group_name: str, user_name: str) -> None:
        """Raise FailedPrecondition if the member's balance in the group is not
        zero; `unsettled_balance()` builds the error."""

    def check_group_deletable(self, group_name: str) -> None:
        """Raise FailedPrecondition if any balance in the group is not zero;
        `unsettled_balance()` builds the error."""


class AllowAllBalanceGuard:
    """A guard that permits every removal, used while no balances exist.

    NOTE: with this guard, a member with debts can leave and a group with
    debts can be deleted. Pass the balance service's guard to `build()`.
    """

    def check_member_removable(self, group_name: str, user_name: str) -> None:
        return None

    def check_group_deletable(self, group_name: str) -> None:
        return None


def unsettled_balance(subject: str, description: str) -> FailedPrecondition:
    """Build the error a guard raises when a balance is not settled.

    Args:
      subject: the resource whose balance is not zero, such as
        `groups/g1/members/alice` or `groups/g1`.
      description: what is owed and how to settle it.
    """
    return FailedPrecondition(
        f"{subject} has an unsettled balance: {description}",
        reason=UNSETTLED_BALANCE,
        metadata={"subject": subject},
        preconditions=[PreconditionViolation(UNSETTLED_BALANCE, subject, description)],
    )
