"""Writing expenses and settlements back as a Splitwise export.

The output uses the current layout, so Splitwise users and the importer read
it alike. Each expense becomes a row whose member cells are paid minus owed;
each settlement becomes a Payment row "<payer> paid <payee>". Values that
the import kept in the notes (the original category, cost or description)
are written back in place of the splitlog ones. The placeholder member that
stands for people missing from an import gets no column: its share is
exactly what the other cells do not cancel out, so importing the file again
books it on the placeholder again. An expense whose payers owe exactly what
they paid leaves every cell at zero, so its description ends with the
members and amounts (`self_paid_suffix`), which the import reads back.
An expense whose row the import would read as a payment, such as a General
"Ben paid Ana" with one payer and one participant, gets the category
"Other", which the import maps to CATEGORY_GENERAL and never reads as a
payment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Sequence

from expense_service.money import MoneyError, parse_decimal_amount
from splitlog_cli.splitwise import categories
from splitlog_cli.splitwise.convert import (
    CATEGORY_NOTE,
    COST_NOTE,
    DESCRIPTION_NOTE,
    UNKNOWN_MEMBER,
    Entry,
    ExpensePlan,
    balances_of,
    is_payment,
    self_paid_suffix,
    unquote_text,
)
from splitlog_cli.splitwise.csvformat import Row, Summary, write_text

SUMMARY_LABEL = "Total balance"
#: Category of an expense whose row would otherwise read as a payment.
EXPENSE_NOT_PAYMENT_CATEGORY = "Other"


def export_text(
    members: Sequence[str],
    entries: Sequence[Entry],
    export_date: datetime.date,
    placeholder: str = UNKNOWN_MEMBER,
) -> str:
    """Write entries as a Splitwise export in the current layout.

    Args:
      members: column names in order. `placeholder` is left out if present.
      entries: expenses and settlements, written in the given order.
      export_date: date of the summary rows.
      placeholder: the member that stands for people missing from the export.

    Raises:
      ValueError: an entry names a member that is not in `members`.
    """
    columns = [member for member in members if member != placeholder]
    known = set(columns) | {placeholder}
    rows = []
    for entry in entries:
        nets = entry.nets()
        unknown = sorted(set(nets) - known)
        if unknown:
            raise ValueError(
                f"entry {entry.key!r} names {', '.join(unknown)}, who is not among "
                "the members to export"
            )
        row = _row(entry, [nets.get(member, 0) for member in columns])
        if placeholder not in nets and _is_self_paid(entry):
            suffix = self_paid_suffix(entry.payers, entry.currency)
            row = dataclasses.replace(row, description=row.description + suffix)
        if isinstance(entry, ExpensePlan) and _reads_as_payment(row, nets):
            row = dataclasses.replace(row, category=EXPENSE_NOT_PAYMENT_CATEGORY)
        rows.append(row)
    balances = balances_of(entries)
    summaries = [
        Summary(
            0,
            export_date,
            SUMMARY_LABEL,
            currency,
            tuple(balances[currency].get(member, 0) for member in columns),
        )
        for currency in sorted(balances)
    ]
    return write_text(columns, rows, summaries)


def _row(entry: Entry, nets: list[int]) -> Row:
    if isinstance(entry, ExpensePlan):
        notes = _note_values(entry.notes)
        description = entry.description
        category = notes.get(CATEGORY_NOTE, categories.to_splitwise(entry.category))
        cost = entry.total
    else:
        notes = _note_values(entry.note)
        first_line = entry.note.split("\n", 1)[0].strip()
        description = first_line or f"{entry.payer} paid {entry.payee}"
        category = notes.get(CATEGORY_NOTE, categories.PAYMENT)
        cost = entry.amount
    if DESCRIPTION_NOTE in notes:
        description = unquote_text(notes[DESCRIPTION_NOTE])
    # A cost line edited by hand into something unreadable leaves the
    # splitlog amount in place.
    with contextlib.suppress(MoneyError):
        if COST_NOTE in notes:
            cost = parse_decimal_amount(notes[COST_NOTE], entry.currency)
    return Row(0, entry.date, description, category, cost, entry.currency, tuple(nets))


def _reads_as_payment(row: Row, nets: dict[str, int]) -> bool:
    """Return whether the import would turn a row into settlements.

    `nets` are the entry's nets, placeholder included, as the import
    rebuilds them from the row.
    """
    if not any(nets.values()):
        return False
    return is_payment(row, sum(net for net in nets.values() if net > 0))


def _is_self_paid(entry: Entry) -> bool:
    """Return whether an expense moves no money: each payer owes what they paid."""
    if not isinstance(entry, ExpensePlan) or not entry.total or not entry.payers:
        return False
    payers = [member for member, _ in entry.payers]
    if len(set(payers)) != len(payers):
        return False
    return not any(entry.nets().values())


def _note_values(notes: str) -> dict[str, str]:
    """Return the values of the notes lines that an import writes."""
    values = {}
    for line in notes.split("\n"):
        for prefix in (CATEGORY_NOTE, COST_NOTE, DESCRIPTION_NOTE):
            if line.startswith(prefix):
                values.setdefault(prefix, line[len(prefix) :])
    return values
