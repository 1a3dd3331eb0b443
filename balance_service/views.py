"""Group and user balance messages, built from stored running totals.

These functions only reshape rows that storage returned; they never read
the database or call another service, and never convert between currencies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Set
from datetime import datetime

from google.protobuf import timestamp_pb2

from balance_service import domain
from expense_service import money
from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog_runtime.errors import OutOfRange


def timestamp_message(value: datetime) -> timestamp_pb2.Timestamp:
    """Convert a naive UTC datetime, as the tables store it, to a Timestamp."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)  # naive datetimes are read as UTC
    return stamp


def group_balance(
    name: str,
    nets: Iterable[tuple[str, str, int]],
    members: Set[str],
    update_time: datetime | None,
) -> pb.GroupBalance:
    """Build a group's balance.

    Args:
      name: the resource name, `groups/{group}/balance`.
      nets: `(currency_code, user_id, net)` rows of the group.
      members: ids of the current members; each is listed in every currency
        of the group, with zero when it has no row.
      update_time: when an expense or settlement of the group last changed.
    """
    by_currency: dict[str, dict[str, int]] = defaultdict(dict)
    for currency, user_id, net in nets:
        by_currency[currency][user_id] = net
    balance = pb.GroupBalance(name=name, settled=True)
    for currency in sorted(by_currency):
        amounts = by_currency[currency]
        # Former members are listed only while they hold a non-zero amount.
        listed = set(members) | {user for user, net in amounts.items() if net}
        entry = balance.currency_balances.add(currency_code=currency)
        for user_id in sorted(listed):
            net = amounts.get(user_id, 0)
            entry.member_balances.add(
                user=domain.user_name(user_id),
                net_amount=domain.to_money(net, currency),
            )
            if net:
                balance.settled = False
    if update_time is not None:
        balance.update_time.CopyFrom(timestamp_message(update_time))
    return balance


def user_balance(
    name: str,
    nets: Iterable[tuple[str, str, int]],
    pairs: Iterable[tuple[str, str, str, int]],
) -> pb.UserBalance:
    """Build a user's balance across groups, with totals and counterparties.

    Args:
      name: the resource name, `users/{user}/balance`.
      nets: `(group_id, currency_code, net)` of the user's non-zero net
        amounts.
      pairs: `(group_id, currency_code, counterparty_id, amount)` of the
        user's pairwise lines, with circular debts cancelled
        (`pair_cache.NettedLines.counterparties`); positive when the
        counterparty owes the user.
    """
    balance = pb.UserBalance(name=name)
    totals: dict[str, int] = defaultdict(int)
    by_group: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for group_id, currency, net in nets:
        totals[currency] += net
        by_group[group_id].append((currency, net))
    for currency in sorted(totals):
        balance.total_net_amounts.append(
            _sum_money(totals[currency], currency, name, "total_net_amounts")
        )
    for group_id in sorted(by_group):
        balance.group_balances.add(
            group=domain.group_name(group_id),
            net_amounts=[
                domain.to_money(net, currency)
                for currency, net in sorted(by_group[group_id])
            ],
        )

    by_counterparty: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for group_id, currency, counterparty, amount in pairs:
        by_counterparty[currency, counterparty].append((group_id, amount))
    for currency, counterparty in sorted(by_counterparty):
        parts = sorted(by_counterparty[currency, counterparty])
        balance.counterparty_balances.add(
            user=domain.user_name(counterparty),
            net_amount=_sum_money(
                sum(amount for _, amount in parts),
                currency,
                name,
                f"counterparty_balances ({domain.user_name(counterparty)})",
            ),
            group_amounts=[
                pb.CounterpartyGroupAmount(
                    group=domain.group_name(group_id),
                    net_amount=domain.to_money(amount, currency),
                )
                for group_id, amount in parts
            ],
        )
    return balance


def _sum_money(amount_minor: int, currency: str, name: str, field: str):
    """Build the Money of a sum across groups, which may not fit its int64 units.

    Each group's amounts fit, because every group's volume is capped (see
    `expense_service.volumes`), but a sum over many groups in a currency
    without minor unit, such as JPY, may not.

    Raises:
      OutOfRange: the sum has more units than `google.type.Money` holds.
    """
    try:
        return domain.to_money(amount_minor, currency)
    except money.MoneyError:
        shown = domain.format_money(amount_minor, currency)
        raise OutOfRange(
            f"{field} of {name!r} adds up to {shown} across groups, more than "
            f"google.type.Money holds (units up to {money.MAX_UNITS}); read the "
            "balance of each group with GetGroupBalance instead",
            reason="TOTAL_OUT_OF_RANGE",
            metadata={"field": field, "currency_code": currency},
        ) from None
