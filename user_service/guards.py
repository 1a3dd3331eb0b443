"""The check that stops a member from leaving, or a group from being deleted,
while money is still owed.

Balances live in the balance service. `build()` takes a `BalanceGuard`, and
the servicer calls it between the two steps of RemoveGroupMember and
DeleteGroup: after it has committed the leaving mark (`user_service.removals`)
and before it deletes anything. The default, `BalanceServiceGuard`, calls
balance_service's CheckSettled over gRPC and fails the call with UNAVAILABLE
when balance_service does not respond, so nothing is removed unchecked.
CheckSettled first has expense_service wait for the group's writes in
flight, then waits until balance_service has applied every expense change
that expense_service acknowledged. So it counts an expense created just
before the removal, and one whose membership check ran before the leaving
mark, while later writes reject the leaving member. It also waits for the
settlement writes to the group that started before it.

`AllowAllBalanceGuard` permits everything, for tests that need no balances.
"""

from __future__ import annotations

import logging
from typing import Protocol

import grpc
from grpc_status import rpc_status

from expense_service.currencies import UnknownCurrencyError
from expense_service.money import MoneyError, format_amount, to_minor_units
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog_runtime.channels import (
    ANSWER_MARGIN_SECONDS,
    downstream_timeout,
    insecure_channel,
)
from splitlog_runtime.errors import (
    MAX_DETAIL_TEXT_LENGTH,
    MAX_LISTED_IN_MESSAGE,
    MAX_TEXT_LENGTH,
    DeadlineExceeded,
    FailedPrecondition,
    PreconditionViolation,
    Unavailable,
    ended_its_attempts,
    join_whole,
)

_LOGGER = logging.getLogger(__name__)

#: Seconds a balance check gets at least, besides ANSWER_MARGIN_SECONDS. A
#: removal with less time left fails at once instead of calling a check that
#: cannot finish.
MIN_CHECK_SECONDS = 0.1

UNSETTLED_BALANCE = "UNSETTLED_BALANCE"


class BalanceGuard(Protocol):
    """Decides whether balances allow a membership or a group to go away.

    Both methods run after the leaving mark has committed and before anything
    is deleted, outside any database transaction, and return None to allow
    the change. Any exception stops the removal and clears the mark.
    """

    def check_member_removable(
        self, group_name: str, user_name: str, context: grpc.ServicerContext
    ) -> None:
        """Raise FailedPrecondition if the member's balance in the group is not
        zero; `unsettled_balance()` builds the error. `context` is the
        removal's call, whose deadline the check must keep."""

    def check_group_deletable(
        self, group_name: str, context: grpc.ServicerContext
    ) -> None:
        """Raise FailedPrecondition if any balance in the group is not zero;
        `unsettled_balance()` builds the error. `context` is the deletion's
        call, whose deadline the check must keep."""


class AllowAllBalanceGuard:
    """A guard that permits every removal, used while no balances exist.

    NOTE: with this guard, a member with debts can leave and a group with
    debts can be deleted. Pass the balance service's guard to `build()`.
    """

    def check_member_removable(
        self, group_name: str, user_name: str, context: grpc.ServicerContext
    ) -> None:
        return None

    def check_group_deletable(
        self, group_name: str, context: grpc.ServicerContext
    ) -> None:
        return None


#: The fix that ends the description of every unsettled balance.
SETTLE_ADVICE = "record settlements until every balance is zero"


def unsettled_balance(
    subject: str, description: str, violation_description: str | None = None
) -> FailedPrecondition:
    """Build the error a guard raises when a balance is not settled.

    Args:
      subject: the resource whose balance is not zero, such as
        `groups/g1/members/alice` or `groups/g1`.
      description: what is owed and how to settle it, for the message.
      violation_description: the same for the PreconditionFailure violation,
        when the message's text is too long for it (MAX_DETAIL_TEXT_LENGTH);
        `description` when None.
    """
    return FailedPrecondition(
        f"{subject} has an unsettled balance: {description}",
        reason=UNSETTLED_BALANCE,
        metadata={"subject": subject},
        preconditions=[
            PreconditionViolation(
                UNSETTLED_BALANCE, subject, violation_description or description
            )
        ],
    )


class BalanceServiceGuard:
    """A guard that calls balance_service's CheckSettled before every removal.

    Args:
      target: host:port of balance_service.
      timeout: maximum seconds of each CheckSettled call, retries included;
        a removal's earlier deadline shortens it.
      max_message_bytes: largest message the channel accepts.
    """

    def __init__(
        self, target: str, timeout: float, max_message_bytes: int = 16 * 1024 * 1024
    ) -> None:
        self._target = target
        self._timeout = timeout
        self._channel = insecure_channel(target, max_message_bytes)
        self._stub = balances_grpc.BalancesServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def check_member_removable(
        self, group_name: str, user_name: str, context: grpc.ServicerContext
    ) -> None:
        unsettled = self._unsettled(group_name, user_name, context)
        if unsettled:
            member = f"{group_name}/members/{user_name.split('/', 1)[1]}"
            raise _unsettled_error(member, unsettled, group_name)

    def check_group_deletable(
        self, group_name: str, context: grpc.ServicerContext
    ) -> None:
        unsettled = self._unsettled(group_name, "", context)
        if unsettled:
            raise _unsettled_error(group_name, unsettled, group_name)

    def _unsettled(
        self, group_name: str, user_name: str, context: grpc.ServicerContext
    ):
        request = balances_pb.CheckSettledRequest(
            name=f"{group_name}/balance", user=user_name
        )
        # The call, retries included, ends ANSWER_MARGIN_SECONDS before the
        # removal's deadline, so its caller receives the error below and not
        # DEADLINE_EXCEEDED. It never takes longer than `timeout`. An
        # UNAVAILABLE CheckSettled that waited its full deadline for the
        # ledger comes as a final attempt, which the channel does not retry.
        timeout = min(
            self._timeout,
            downstream_timeout(context, self._timeout, ANSWER_MARGIN_SECONDS),
        )
        if timeout < MIN_CHECK_SECONDS:
            remaining = context.time_remaining() if context is not None else 0.0
            raise DeadlineExceeded(
                f"cannot check the balances of {group_name!r}: the call's deadline "
                f"leaves {max(remaining or 0.0, 0.0):.2f} s, and the check "
                f"needs at least {MIN_CHECK_SECONDS + ANSWER_MARGIN_SECONDS:.1f} s "
                f"({ANSWER_MARGIN_SECONDS} s of it to return this answer in time); "
                "nothing was changed, retry with a longer deadline",
                metadata={"service": "balance_service", "group": group_name},
            )
        try:
            response = self._stub.CheckSettled(request, timeout=timeout)
        except grpc.RpcError as exc:
            _LOGGER.warning(
                "CheckSettled for %s at %s failed: %s %s",
                group_name,
                self._target,
                exc.code().name,
                exc.details(),
            )
            # balance_service's own errors explain themselves, but grpc's
            # connection errors name internal addresses, so only the log
            # shows those.
            cause = exc.code().name
            if rpc_status.from_call(exc) is not None:
                cause = f"{cause}: {exc.details()}"
            raise Unavailable(
                f"cannot check the balances of {group_name!r}: balance_service "
                f"failed the check ({cause}); nothing was changed, retry later",
                reason="BALANCE_SERVICE_UNAVAILABLE",
                metadata={"service": "balance_service", "group": group_name},
                retry_delay=1.0,
                final_attempt=ended_its_attempts(exc),
            ) from None
        return list(response.unsettled_balances)


def _unsettled_error(subject: str, unsettled, group_name: str) -> FailedPrecondition:
    """Build the error for non-zero balances, listing whole balances.

    The message lists as many as fit MAX_TEXT_LENGTH, and the violation as
    many as fit MAX_DETAIL_TEXT_LENGTH. Each counts the rest, so neither is
    shortened in the middle.
    """
    parts = _balance_texts(unsettled, group_name)
    start = f"{subject} has an unsettled balance: "
    return unsettled_balance(
        subject,
        _describe(parts, MAX_TEXT_LENGTH - len(start)),
        _describe(parts, MAX_DETAIL_TEXT_LENGTH),
    )


def _balance_texts(unsettled, group_name: str) -> list[str]:
    """Describe each non-zero balance, such as `users/bob owes 12.50 EUR in
    groups/g`."""
    parts = []
    for balance in unsettled:
        money = balance.net_amount
        try:
            minor = to_minor_units(money.units, money.nanos, money.currency_code)
            amount = format_amount(abs(minor), money.currency_code)
        except (MoneyError, UnknownCurrencyError):
            # Not expected from balance_service; show the raw fields instead.
            minor = money.units or money.nanos
            amount = f"(units={money.units}, nanos={money.nanos})"
        verb = "owes" if minor < 0 else "is owed"
        parts.append(
            f"{balance.user} {verb} {amount} {money.currency_code} in {group_name}"
        )
    return parts


def _describe(parts: list[str], max_length: int) -> str:
    """Join whole balance texts and the advice within `max_length` characters."""
    suffix = f"; {SETTLE_ADVICE}"
    listed = join_whole(
        parts,
        "; ",
        max_length - len(suffix),
        "balance",
        "balances",
        limit=MAX_LISTED_IN_MESSAGE,
    )
    return f"{listed}{suffix}"
