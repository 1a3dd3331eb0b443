"""Conversion of Splitwise export rows into splitlog expenses and settlements.

A row only carries each member's net change (paid minus owed), so the paid
and owed amounts are reconstructed. Every rule below keeps each member's net
exactly, so the converted rows add up to the file's summary row to the cent.
The rules, with examples from real exports, are in docs/splitwise-import.md.

1. Rows whose member cells do not add up to zero involved people missing
   from the export. The difference is booked on one placeholder member,
   `UNKNOWN_MEMBER`, so that each row, like every splitlog expense, nets to
   zero.
2. Payments become settlements from each member with a positive net to the
   members with a negative net. A row is a payment when its category is
   Payment, or when its category is General, the amount moved equals the
   cost, and the description reads "<someone> paid <someone>", "Settle all
   balances" or one of `PAYMENT_DESCRIPTIONS` ("Zelle", "Settlement", ...).
3. Other rows become expenses with the row's full cost. The members with a
   positive net are the payers. The part of the cost that the others do not
   owe (cost minus the sum of the positive nets) is the payers' own share.
   With one payer that is the cost minus the payer's net. With several, it
   is divided equally between them, and the extra minor units go to the
   first payers in column order. Each payer paid their net plus their own
   share, and every member with a negative net owes its absolute value. A
   negative cost (refund) is handled with every sign reversed.
4. When the cost is zero, or smaller than the amount moved between members,
   the expense total is the amount moved and the cost is kept in the notes.
5. A row in which no exported member's net changes is booked on the
   placeholder alone, paid and owed by it, so that it stays on record. The
   exception is a row whose description ends with the note that
   `self_paid_suffix` writes, such as " [paid and owed by Ana]": the members
   it names paid and owe the cost, as they did before the export.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from expense_service.money import MoneyError, format_amount, parse_decimal_amount
from splitlog_cli.splitwise import categories
from splitlog_cli.splitwise.csvformat import (
    MAX_PROBLEMS,
    Problem,
    Row,
    SplitwiseFile,
    SplitwiseFormatError,
)
from splitlog_runtime.limits import DEFAULTS, RequestLimits
from splitlog_runtime.validation import find_control_character

#: Placeholder member that stands for everyone missing from the export.
UNKNOWN_MEMBER = "Unknown (missing from export)"
#: Maximum description length that the expense service accepts.
MAX_DESCRIPTION = 200
#: Maximum notes length of the expense and settlement services.
MAX_NOTES = 2000
#: Description used when the export has none.
NO_DESCRIPTION = "(no description)"

# Notes lines that carry what the splitlog fields cannot hold. The export reads
# them back, so an exported file shows the original values.
CATEGORY_NOTE = "Splitwise category: "
COST_NOTE = "Splitwise cost: "
DESCRIPTION_NOTE = "Splitwise description: "

# Description suffix of an expense whose every payer owes what they paid, as
# `self_paid_suffix` writes it.
_SELF_PAID = re.compile(r"(?P<text>.*) \[paid and owed by (?P<shares>.+)\]", re.DOTALL)
_SHARE_SEPARATOR = "; "
# Characters that the suffix reader splits or matches on. A member name that
# contains one is written as a JSON string, with its brackets escaped too, so
# that the last " [paid and owed by " of a description starts the suffix.
_QUOTED_NAME_CHARACTERS = frozenset(';"[]')
_NAME_DECODER = json.JSONDecoder()
_PAYMENT_TEXT = re.compile(r"\S.*\spaid\s+\S|settle all balances$")
#: Whole descriptions (case-folded) that mark a General row as a payment.
PAYMENT_DESCRIPTIONS = frozenset(
    {"payment", "settlement", "settle up", "zelle", "venmo", "paypal", "ödeme"}
)


@dataclass(frozen=True)
class ExpensePlan:
    """An expense to create, in splitlog terms.

    Amounts are minor units of `currency`, negative for a refund. Members are
    named by their column header, or `UNKNOWN_MEMBER`.

    Attributes:
      key: identifies the entry within its file; the import derives the
        expense id and the request id from it.
      line: line of the row in the export.
      category: splitlog `Category` name, such as "CATEGORY_DINING_OUT".
      payers: (member, amount paid), adding up to `total`.
      owed: (member, amount owed) of an EXACT split, adding up to `total`.
    """

    key: str
    line: int
    description: str
    category: str
    date: datetime.date
    currency: str
    total: int
    payers: tuple[tuple[str, int], ...]
    owed: tuple[tuple[str, int], ...]
    notes: str

    def nets(self) -> dict[str, int]:
        """Return each member's paid minus owed amount."""
        nets: dict[str, int] = {}
        for member, amount in self.payers:
            nets[member] = nets.get(member, 0) + amount
        for member, amount in self.owed:
            nets[member] = nets.get(member, 0) - amount
        return nets


@dataclass(frozen=True)
class SettlementPlan:
    """A payment from `payer` to `payee` to create, `amount` > 0 minor units."""

    key: str
    line: int
    date: datetime.date
    currency: str
    payer: str
    payee: str
    amount: int
    note: str

    def nets(self) -> dict[str, int]:
        """Return the change of each member's net: + for the payer, - for the payee."""
        return {self.payer: self.amount, self.payee: -self.amount}


Entry = ExpensePlan | SettlementPlan


@dataclass(frozen=True)
class Mismatch:
    """A member whose converted net differs from the file's summary row."""

    currency: str
    member: str
    expected: int
    actual: int

    def __str__(self) -> str:
        expected = format_amount(self.expected, self.currency)
        actual = format_amount(self.actual, self.currency)
        return (
            f"{self.member}: the summary row says {expected} {self.currency}, "
            f"the rows add up to {actual} {self.currency}"
        )


@dataclass(frozen=True)
class ImportPlan:
    """Everything an import creates, computed before anything is written.

    Attributes:
      members: the exported members in column order, then `UNKNOWN_MEMBER`
        when some row needs it.
      entries: expenses and settlements in file order.
      skipped: lines of rows left out because they change nothing (cost and
        every member cell zero).
    """

    source: SplitwiseFile
    members: tuple[str, ...]
    entries: tuple[Entry, ...]
    skipped: tuple[int, ...]

    @property
    def uses_placeholder(self) -> bool:
        """Whether some entry involves `UNKNOWN_MEMBER`."""
        return UNKNOWN_MEMBER in self.members

    def balances(self) -> dict[str, dict[str, int]]:
        """Return each member's net per currency after every entry."""
        return balances_of(self.entries)

    def expected_balances(self) -> dict[str, dict[str, int]]:
        """Return the nets of the summary rows, with the placeholder's share.

        The placeholder is owed whatever the exported members' nets do not
        cancel out, so every currency adds up to zero.
        """
        expected = {}
        for summary in self.source.summaries:
            nets = dict(zip(self.source.members, summary.nets, strict=True))
            if self.uses_placeholder:
                nets[UNKNOWN_MEMBER] = -sum(summary.nets)
            expected[summary.currency] = nets
        return expected

    def mismatches(self) -> list[Mismatch]:
        """Return every member whose converted net differs from the summary row."""
        return compare_balances(self.expected_balances(), self.balances())


def convert(source: SplitwiseFile, limits: RequestLimits = DEFAULTS) -> ImportPlan:
    """Convert every row of an export into expenses and settlements.

    Args:
      source: the parsed export.
      limits: the server's limits; only the payer and participant counts of
        one expense are checked here.

    Raises:
      SplitwiseFormatError: a member column has the placeholder's name, a
        description is so long that its notes would exceed the limit of the
        expense and settlement services, or an expense would have more
        payers or participants than `limits` allow.
    """
    # A name that differs only in case would show as a second placeholder.
    like_placeholder = [
        member
        for member in source.members
        if member.casefold() == UNKNOWN_MEMBER.casefold()
    ]
    if like_placeholder:
        member = like_placeholder[0]
        raise SplitwiseFormatError(
            [
                Problem(
                    source.header_line,
                    member,
                    f"member name {member!r} is the name of the placeholder "
                    f"{UNKNOWN_MEMBER!r} that the import adds for people missing "
                    "from the export (letter case is ignored); rename this column "
                    "in the header, for example to 'Unknown member'",
                )
            ]
        )
    entries: list[Entry] = []
    skipped: list[int] = []
    problems: list[Problem] = []
    for row in source.rows:
        converted = list(_convert_row(row, source.members))
        if not converted:
            skipped.append(row.line)
        for entry in converted:
            problems.extend(_entry_problems(row, entry, limits))
        entries.extend(converted)
    if problems:
        raise SplitwiseFormatError(problems[:MAX_PROBLEMS])
    members = list(source.members)
    if any(UNKNOWN_MEMBER in entry.nets() for entry in entries):
        members.append(UNKNOWN_MEMBER)
    return ImportPlan(source, tuple(members), tuple(entries), tuple(skipped))


def _entry_problems(row: Row, entry: Entry, limits: RequestLimits) -> list[Problem]:
    """Return what the expense or settlement services would reject in an entry."""
    problems = []
    notes = entry.notes if isinstance(entry, ExpensePlan) else entry.note
    if len(notes) > MAX_NOTES:
        problems.append(
            Problem(
                row.line,
                "Description",
                f"description of {len(row.description)} characters is too "
                f"long to keep in the notes (at most {MAX_NOTES} "
                "characters); shorten it",
            )
        )
    if not isinstance(entry, ExpensePlan):
        return problems
    for count, limit, setting, action in [
        (len(entry.payers), limits.expense_max_payers, "expense_max_payers", "paid"),
        (
            len(entry.owed),
            limits.expense_max_participants,
            "expense_max_participants",
            "owe a share",
        ),
    ]:
        if count > limit:
            problems.append(
                Problem(
                    row.line,
                    None,
                    f"{count} members {action} in this row, and an expense takes at "
                    f"most {limit} ({setting}); raise {setting} on the server and "
                    f"in the environment of this command "
                    f"(SPLITLOG_{setting.upper()}), or split the row",
                )
            )
    return problems


def balances_of(entries: Sequence[Entry]) -> dict[str, dict[str, int]]:
    """Return each member's net per currency after the entries."""
    balances: dict[str, dict[str, int]] = {}
    for entry in entries:
        currency = balances.setdefault(entry.currency, {})
        for member, net in entry.nets().items():
            currency[member] = currency.get(member, 0) + net
    return balances


def compare_balances(
    expected: dict[str, dict[str, int]], actual: dict[str, dict[str, int]]
) -> list[Mismatch]:
    """Return the (currency, member) pairs whose nets differ; absent means zero."""
    mismatches = []
    for currency in sorted(expected.keys() | actual.keys()):
        want = expected.get(currency, {})
        have = actual.get(currency, {})
        for member in sorted(want.keys() | have.keys()):
            if want.get(member, 0) != have.get(member, 0):
                mismatches.append(
                    Mismatch(currency, member, want.get(member, 0), have.get(member, 0))
                )
    return mismatches


def is_payment(row: Row, moved: int) -> bool:
    """Return whether a row records money handed from member to member.

    Args:
      row: the row.
      moved: sum of the positive nets of the row, placeholder included.
    """
    category = row.category.strip().lower()
    if category == categories.PAYMENT.lower():
        return True
    if category != "general" or moved != abs(row.cost):
        return False
    description = row.description.strip().casefold()
    return (
        _PAYMENT_TEXT.match(description) is not None
        or description in PAYMENT_DESCRIPTIONS
    )


def _convert_row(row: Row, members: Sequence[str]) -> Iterator[Entry]:
    nets = {member: net for member, net in zip(members, row.nets, strict=True) if net}
    imbalance = sum(row.nets)
    if imbalance:
        nets[UNKNOWN_MEMBER] = -imbalance
    notes = _Notes(row)
    if imbalance:
        notes.add(
            "People missing from the export took part. Their combined net, "
            f"{format_amount(-imbalance, row.currency)}, is booked on "
            f"{UNKNOWN_MEMBER!r}."
        )
    if not nets:
        if row.cost:
            yield _self_paid_expense(row, members) or _placeholder_expense(row, notes)
        return
    moved = sum(net for net in nets.values() if net > 0)
    if is_payment(row, moved):
        yield from _settlements(row, nets, moved, notes)
    else:
        yield _expense(row, nets, moved, notes)


def self_paid_suffix(shares: Sequence[tuple[str, int]], currency: str) -> str:
    """Return the description suffix that names who paid and owes an expense.

    Splitwise exports only nets, so an expense whose payers owe exactly what
    they paid (a member who paid for themselves alone) leaves every member
    cell at zero. The suffix keeps who it was, such as " [paid and owed by
    Ana]", or " [paid and owed by Ana 60.00; Ben 40.00]" for several members.

    Args:
      shares: (member, amount paid and owed) in order, at least one.
      currency: ISO 4217 code of the amounts.
    """
    if len(shares) == 1:
        named = _suffix_name(shares[0][0])
    else:
        named = _SHARE_SEPARATOR.join(
            f"{_suffix_name(member)} {format_amount(amount, currency)}"
            for member, amount in shares
        )
    return f" [paid and owed by {named}]"


def _suffix_name(member: str) -> str:
    """Write a member name for the suffix: as it is, or as a JSON string when
    the reader could split it or take it for a quoted name.

    The JSON string also escapes brackets (as `\\u005b` and `\\u005d`), so the
    suffix contains no bracket but its own.
    """
    plain = (
        bool(member)
        and member == member.strip()
        and _QUOTED_NAME_CHARACTERS.isdisjoint(member)
        and find_control_character(member) is None
    )
    if plain:
        return member
    quoted = json.dumps(member, ensure_ascii=False)
    return quoted.replace("[", "\\u005b").replace("]", "\\u005d")


def _split_shares(named: str) -> list[tuple[str, str]] | None:
    """Split the shares of a suffix, such as `Ana 6.00; "Bo; Li" 4.00`, into
    (member, amount text) pairs, or return None when a quoted name is malformed.

    A name that starts with a double quote is read as a JSON string. Any
    other name runs up to the last space before the next "; ".
    """
    pairs = []
    position = 0
    while True:
        quoted = named.startswith('"', position)
        if quoted:
            try:
                member, position = _NAME_DECODER.raw_decode(named, position)
            except json.JSONDecodeError:
                return None
            if not named.startswith(" ", position):
                return None
            position += 1
        end = named.find(_SHARE_SEPARATOR, position)
        if end < 0:
            end = len(named)
        if quoted:
            amount = named[position:end]
        else:
            member, _, amount = named[position:end].rpartition(" ")
        pairs.append((member, amount))
        if end == len(named):
            return pairs
        position = end + len(_SHARE_SEPARATOR)


def _single_name(named: str, members: Sequence[str]) -> str | None:
    """Return the one member that a suffix names without an amount, or None."""
    if named in members:
        return named
    if not named.startswith('"'):
        return None
    try:
        member, end = _NAME_DECODER.raw_decode(named)
    except json.JSONDecodeError:
        return None
    return member if end == len(named) and member in members else None


def _self_paid_shares(
    row: Row, members: Sequence[str]
) -> tuple[str, tuple[tuple[str, int], ...]] | None:
    """Read the suffix of `self_paid_suffix` from a row's description.

    Returns the description without the suffix and the shares, or None when
    the description has no such suffix, names someone who has no column, or
    gives amounts that do not add up to the cost or whose sign differs from
    the cost's. expense_service rejects a payer or share of the opposite
    sign, so such a row is booked on the placeholder instead.
    """
    found = _SELF_PAID.fullmatch(row.description)
    if found is None:
        return None
    text, named = found["text"], found["shares"]
    single = _single_name(named, members)
    if single is not None:
        return text, ((single, row.cost),)
    pairs = _split_shares(named)
    if pairs is None:
        return None
    shares: dict[str, int] = {}
    for member, amount in pairs:
        if member not in members or member in shares:
            return None
        try:
            shares[member] = parse_decimal_amount(amount, row.currency)
        except MoneyError:
            return None
    if len(shares) < 2 or sum(shares.values()) != row.cost:
        return None
    if any(amount == 0 or (amount > 0) != (row.cost > 0) for amount in shares.values()):
        return None
    return text, tuple(shares.items())


def _self_paid_expense(row: Row, members: Sequence[str]) -> ExpensePlan | None:
    """Convert a row that names the members who paid and owe its cost, or None."""
    found = _self_paid_shares(row, members)
    if found is None:
        return None
    text, shares = found
    notes = _Notes(dataclasses.replace(row, description=text))
    notes.add(
        "The members named at the end of the description paid the cost and owe "
        "it, so no member's net changed."
    )
    return _expense_plan(row, row.cost, shares, shares, notes)


def _placeholder_expense(row: Row, notes: _Notes) -> ExpensePlan:
    notes.add(
        "No exported member's net changed, so the row is booked on "
        f"{UNKNOWN_MEMBER!r} alone."
    )
    share = ((UNKNOWN_MEMBER, row.cost),)
    return _expense_plan(row, row.cost, share, share, notes)


def _settlements(
    row: Row, nets: dict[str, int], moved: int, notes: _Notes
) -> Iterator[SettlementPlan]:
    if moved != abs(row.cost):
        notes.add_cost()
    if row.category != categories.PAYMENT:
        notes.add(CATEGORY_NOTE + row.category)
    payers = [[member, net] for member, net in nets.items() if net > 0]
    payees = [[member, -net] for member, net in nets.items() if net < 0]
    transfers = []
    while payers and payees:
        amount = min(payers[0][1], payees[0][1])
        transfers.append((payers[0][0], payees[0][0], amount))
        for queue in (payers, payees):
            queue[0][1] -= amount
            if not queue[0][1]:
                queue.pop(0)
    if len(transfers) > 1:
        notes.add(
            f"The payment is split into {len(transfers)} settlements, one per "
            "pair of members."
        )
    note = "\n".join([notes.description, *notes.lines])
    for index, (payer, payee, amount) in enumerate(transfers, start=1):
        key = str(row.line) if len(transfers) == 1 else f"{row.line}-{index}"
        yield SettlementPlan(
            key, row.line, row.date, row.currency, payer, payee, amount, note
        )


def _expense(row: Row, nets: dict[str, int], moved: int, notes: _Notes) -> ExpensePlan:
    own_share = abs(row.cost) - moved
    if row.cost == 0 or own_share < 0:
        return _moved_only_expense(row, nets, moved, notes)
    sign = 1 if row.cost > 0 else -1
    mirrored = {member: net * sign for member, net in nets.items()}
    payers = [member for member, net in mirrored.items() if net > 0]
    shares = _equal_parts(own_share, len(payers))
    if len(payers) > 1:
        notes.add(
            f"{len(payers)} members paid. Splitwise exports only net amounts, so "
            f"the {format_amount(own_share, row.currency)} that the others do not "
            "owe is divided equally between the payers as their own shares."
        )
    own_shares = dict(zip(payers, shares, strict=True))
    paid = tuple(
        (member, sign * (mirrored[member] + own_shares[member])) for member in payers
    )
    owed = []
    for member, net in mirrored.items():
        amount = own_shares[member] if net > 0 else -net
        if amount:
            owed.append((member, sign * amount))
    return _expense_plan(row, row.cost, paid, tuple(owed), notes)


def _moved_only_expense(
    row: Row, nets: dict[str, int], moved: int, notes: _Notes
) -> ExpensePlan:
    notes.add_cost()
    notes.add(
        "The cost is smaller than the amount moved between members, so the "
        "expense total is the amount moved."
    )
    paid = tuple((member, net) for member, net in nets.items() if net > 0)
    owed = tuple((member, -net) for member, net in nets.items() if net < 0)
    return _expense_plan(row, moved, paid, owed, notes)


def _expense_plan(
    row: Row,
    total: int,
    paid: tuple[tuple[str, int], ...],
    owed: tuple[tuple[str, int], ...],
    notes: _Notes,
) -> ExpensePlan:
    if not categories.is_round_trip(row.category):
        notes.add(CATEGORY_NOTE + row.category)
    return ExpensePlan(
        key=str(row.line),
        line=row.line,
        description=notes.description,
        category=categories.to_splitlog(row.category),
        date=row.date,
        currency=row.currency,
        total=total,
        payers=paid,
        owed=owed,
        notes="\n".join(notes.lines),
    )


def clean_description(text: str) -> str:
    """Return `text` as the expense service stores it: 1 to 200 plain characters.

    Control, separator and bidirectional control characters become spaces,
    surrounding spaces are removed, and an empty result becomes
    `NO_DESCRIPTION`.
    """
    cleaned = "".join(" " if _is_forbidden(char) else char for char in text).strip()
    return cleaned[:MAX_DESCRIPTION].rstrip() or NO_DESCRIPTION


def quote_text(text: str) -> str:
    """Return `text` as a JSON string whose characters are all allowed in notes."""
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(f"\\u{ord(c):04x}" if _is_forbidden(c) else c for c in quoted)


def unquote_text(text: str) -> str:
    """Return the text of a `quote_text` result; other text is returned as is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def _is_forbidden(char: str) -> bool:
    """Return whether the expense service rejects `char` in free text."""
    return find_control_character(char) is not None


def _equal_parts(amount: int, count: int) -> list[int]:
    """Divide `amount` >= 0 into `count` parts; the first parts get the extra units."""
    base, extra = divmod(amount, count)
    return [base + 1 if index < extra else base for index in range(count)]


class _Notes:
    """Notes lines of one entry: where it came from and what was reconstructed.

    `description` is the row's description as the expense service accepts it.
    When that differs from the export, the original is kept in a notes line.
    """

    def __init__(self, row: Row) -> None:
        self._row = row
        self.lines = [f"Imported from a Splitwise export, line {row.line}."]
        self.description = clean_description(row.description)
        if self.description != row.description:
            self.lines.append(DESCRIPTION_NOTE + quote_text(row.description))

    def add(self, line: str) -> None:
        self.lines.append(line)

    def add_cost(self) -> None:
        cost = format_amount(self._row.cost, self._row.currency)
        self.lines.append(COST_NOTE + cost)
