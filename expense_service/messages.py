"""Conversions between stored expenses, checked drafts and API messages."""

from __future__ import annotations

import datetime

from google.protobuf import timestamp_pb2

from expense_service import domain, splits, storage
from splitlog.expenses.v1 import expenses_service_pb2 as pb


def timestamp(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)  # naive datetimes are read as UTC
    return stamp


def expense_message(stored: storage.StoredExpense) -> pb.Expense:
    """Build the API view of a stored expense; owed amounts come from storage."""
    row, currency = stored.row, stored.row.currency_code
    expense = pb.Expense(
        name=row.name,
        description=row.description,
        category=row.category,
        expense_date=domain.date_message(row.expense_date),
        currency_code=currency,
        total=domain.money_message(row.total_minor, currency),
        payers=[
            pb.Payer(
                user=payer.user,
                amount=domain.money_message(payer.amount_minor, currency),
            )
            for payer in stored.payers
        ],
        split=pb.Split(
            type=row.split_type,
            participants=[
                _participant_message(participant, currency)
                for participant in stored.participants
            ],
        ),
        owed_amounts=[
            pb.OwedAmount(
                user=participant.user,
                amount=domain.money_message(participant.owed_minor, currency),
            )
            for participant in stored.participants
        ],
        notes=row.notes,
        creator=row.creator,
        last_modifier=row.last_modifier,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=domain.format_etag(row.revision),
    )
    if row.delete_time is not None:
        expense.delete_time.CopyFrom(timestamp(row.delete_time))
    return expense


#: The currency, paid amount and owed amount of each user of an expense, in
#: minor units, by user.
UserAmounts = dict[str, tuple[str, int, int]]


def stored_amounts(stored: storage.StoredExpense) -> UserAmounts:
    """Return what each payer and participant of a stored expense paid and owes.

    Users with nothing paid and nothing owed are left out, because the
    expense does not move their balance.
    """
    return _user_amounts(
        stored.row.currency_code,
        [(payer.user, payer.amount_minor) for payer in stored.payers],
        [(line.user, line.owed_minor) for line in stored.participants],
    )


def checked_amounts(checked: domain.CheckedExpense) -> UserAmounts:
    """Return what each payer and participant of a checked expense pays and owes."""
    return _user_amounts(
        checked.currency_code,
        [(payer.user, payer.amount.minor) for payer in checked.draft.payers],
        list(checked.owed.items()),
    )


def changed_users(before: UserAmounts, after: UserAmounts) -> set[str]:
    """Return the users whose currency, paid or owed amount differs."""
    return {
        user
        for user in before.keys() | after.keys()
        if before.get(user) != after.get(user)
    }


def _user_amounts(
    currency: str, paid: list[tuple[str, int]], owed: list[tuple[str, int]]
) -> UserAmounts:
    totals: dict[str, list[int]] = {}
    for user, amount in paid:
        totals.setdefault(user, [0, 0])[0] += amount
    for user, amount in owed:
        totals.setdefault(user, [0, 0])[1] += amount
    return {
        user: (currency, paid_minor, owed_minor)
        for user, (paid_minor, owed_minor) in totals.items()
        if paid_minor or owed_minor
    }


def _participant_message(
    participant: storage.ParticipantRow | storage.ParticipantValues, currency: str
) -> pb.SplitParticipant:
    message = pb.SplitParticipant(user=participant.user)
    if participant.exact_minor is not None:
        message.exact_amount.CopyFrom(
            domain.money_message(participant.exact_minor, currency)
        )
    elif participant.basis_points is not None:
        message.basis_points = participant.basis_points
    elif participant.shares is not None:
        message.shares = participant.shares
    return message


def stored_draft(stored: storage.StoredExpense) -> domain.Draft:
    """Rebuild the draft of a stored expense, so an update can change it."""
    row, currency = stored.row, stored.row.currency_code
    return domain.Draft(
        description=row.description,
        category=row.category,
        expense_date=row.expense_date,
        total=domain.Amount(row.total_minor, currency),
        payers=tuple(
            domain.Payer(payer.user, domain.Amount(payer.amount_minor, currency))
            for payer in stored.payers
        ),
        split_type=row.split_type,
        members=tuple(
            domain.SplitMember(
                splits.Participant(
                    user=participant.user,
                    exact_amount=participant.exact_minor,
                    basis_points=participant.basis_points,
                    shares=participant.shares,
                ),
                currency if participant.exact_minor is not None else None,
            )
            for participant in stored.participants
        ),
        notes=row.notes,
    )


def line_rows(
    name: str, checked: domain.CheckedExpense
) -> tuple[list[storage.PayerValues], list[storage.ParticipantValues]]:
    """Build the payer and participant rows of a checked expense."""
    payers = [
        storage.PayerValues(
            expense_name=name,
            user=payer.user,
            position=position,
            amount_minor=payer.amount.minor,
        )
        for position, payer in enumerate(checked.draft.payers)
    ]
    participants = [
        storage.ParticipantValues(
            expense_name=name,
            user=member.participant.user,
            position=position,
            exact_minor=member.participant.exact_amount,
            basis_points=member.participant.basis_points,
            shares=member.participant.shares,
            owed_minor=checked.owed[member.participant.user],
        )
        for position, member in enumerate(checked.draft.members)
    ]
    return payers, participants


def new_expense_values(
    name: str,
    group_id: str,
    creator: str,
    draft: domain.Draft,
    now: datetime.datetime,
) -> storage.ExpenseValues:
    """Build the row of a new expense from its checked draft."""
    return storage.ExpenseValues(
        name=name,
        group_id=group_id,
        description=draft.description,
        category=draft.category,
        expense_date=draft.expense_date,
        currency_code=draft.total.currency_code,
        total_minor=draft.total.minor,
        split_type=draft.split_type,
        notes=draft.notes,
        creator=creator,
        last_modifier=creator,
        create_time=now,
        update_time=now,
    )


def copy_fields(row: storage.ExpenseRow, draft: domain.Draft) -> None:
    """Copy the caller-set fields of a checked draft onto an expense row."""
    row.description = draft.description
    row.category = draft.category
    row.expense_date = draft.expense_date
    row.currency_code = draft.total.currency_code
    row.total_minor = draft.total.minor
    row.split_type = draft.split_type
    row.notes = draft.notes
